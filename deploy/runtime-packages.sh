#!/usr/bin/env bash
# runtime-packages.sh BIN... - the distribution packages that provide the shared
# libraries the given executables load (ldd + dpkg -S), one a line, CUDA packages left
# out (the nvidia/cuda runtime base image has them). Used by the Dockerfiles: the build
# stage writes this list, the runtime stage installs exactly these packages, so the
# image carries the runtime libraries and none of the -dev packages or the compilers.
set -euo pipefail
for bin in "$@"; do
  ldd "$bin" | awk '/=> \//{ print $3 }'
done | sort -u | while read -r lib; do
  real=$(readlink -f "$lib")
  dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null || true
done | cut -d: -f1 | sort -u | grep -Ev '^(libc6|libgcc-s1|libstdc\+\+6)$|cuda|cublas|nvidia' || true
