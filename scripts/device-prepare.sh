#!/usr/bin/env bash
# device-prepare.sh - build the GPU test and benchmark HERE (where every library is
# installed) for sm_80 and sm_90, and gather them with the shared libraries the GPU
# machine may lack into .devlibs/ (git-ignored), which travels to the device run:
#   .devlibs/bin/   test_cuda_backend, test_awq_cuda, bench_cuda
#   .devlibs/lib/   libjansson, libopenblas + libgfortran/libquadmath (OpenBLAS is
#                   shipped xz-compressed to stay under the 64 MiB carry limit)
# libcublas/libcudart come from the device's own CUDA 13 install (cudart is static).
# Then run scripts/device-check.sh on the device (see that file).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-device
OUTD=.devlibs
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="80;90" >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target test_cuda_backend test_awq_cuda reap_cuda reap_model reap_gen reap_common
rm -rf "$OUTD"
mkdir -p "$OUTD/bin" "$OUTD/lib"
cp "$BUILD/tests/test_cuda_backend" "$BUILD/tests/test_awq_cuda" "$OUTD/bin/"
# The benchmark: built by CMake when bench/gpu is wired in, else linked here by hand.
if cmake --build "$BUILD" --target bench_cuda >/dev/null 2>&1; then
  cp "$BUILD/bin/bench_cuda" "$OUTD/bin/" 2>/dev/null || cp "$(find "$BUILD" -name bench_cuda -type f | head -1)" "$OUTD/bin/"
else
  CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  gcc -O2 -std=c11 -Wall -Wextra -D_GNU_SOURCE -I model -I common -I scorer -I "$CUDA_HOME/include" \
    bench/gpu/bench_cuda.c scorer/backend_cli.c "$BUILD/model/cuda/libreap_cuda.a" "$BUILD/model/libreap_model.a" \
    "$BUILD/common/libreap_common.a" -L"$CUDA_HOME/lib64" -lcublas -lcudart_static \
    $(pkg-config --libs jansson openblas) -lpthread -ldl -lrt -lm -lstdc++ \
    -o "$OUTD/bin/bench_cuda"
fi
strip --strip-debug "$OUTD"/bin/*
# Shared libraries outside glibc/libstdc++ and CUDA.
for b in "$OUTD"/bin/*; do
  ldd "$b" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
    libcublas*|libcudart*|libcuda.so*) ;;
    libopenblas*) xz -T0 -3 -c "$lib" > "$OUTD/lib/$(basename "$lib").xz" ;;
    *) cp -L "$lib" "$OUTD/lib/" ;;
  esac
done
# OpenBLAS's soname file (libopenblas.so.0) as ldd names it.
ls -la "$OUTD/bin" "$OUTD/lib"
du -sh "$OUTD"
