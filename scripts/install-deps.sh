#!/usr/bin/env bash
# Installs every build and test dependency of reap from Debian 12 packages.
# Idempotent: does nothing when everything is already installed. Run as root (or with
# sudo available). The CUDA toolkit is optional and not installed here: when nvcc is
# present the CUDA backend is built too.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  libjansson-dev          # JSON (config.json, safetensors headers, calibration)
  libopenblas-dev         # CPU GEMMs
  liblmdb-dev lmdb-utils  # score store
  libsodium-dev minisign  # hashing, Ed25519 signatures
  libssl-dev              # SHA-256 with the CPU's SHA extensions (manifests)
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev  # services
  protobuf-compiler protobuf-compiler-grpc grpc-proto python3-grpcio python3-protobuf  # Python test client
  openssl                 # certificates for the TLS tests
  libpcre2-dev libutf8proc-dev  # tokenizer
  libjpeg62-turbo-dev libpng-dev libwebp-dev  # calibration images (JPEG, PNG, WebP)
  python3 python3-numpy   # float64 oracle in tests/
  python3-venv            # test-only tools from PyPI (safetensors, kustomize, schemas)
  clang libclang-rt-14-dev  # libFuzzer harnesses (tests/fuzz, scripts/fuzz.sh; libFuzzer is in the rt package)
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
