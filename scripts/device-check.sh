#!/usr/bin/env bash
# device-check.sh - the GPU checks, run ON the GPU machine from the repository root, with
# binaries prepared elsewhere by scripts/device-prepare.sh in .devlibs/ (no build and no
# network needed here). Runs the CUDA-vs-CPU backend test and the benchmark, and writes
# logs to $OUT (or ./device-out when OUT is unset):
#   nvidia-smi.txt, test_cuda_backend.log, bench_cuda.log, sanitizer.log, summary.txt
# Timeouts (seconds): TEST_TIMEOUT 150, BENCH_TIMEOUT 180, SANITIZE_TIMEOUT 60 (0: skip).
# REAP_CUDA_PROFILE=1 (or the bench argument --cuda-profile) makes bench_cuda ask the
# backend for per-phase GPU times per layer (stderr).
# Usage: scripts/device-check.sh [bench arguments...]
# Exit status: that of the test (the benchmark's failure is reported in summary.txt).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-device-out}
mkdir -p "$OUTDIR"
D=.devlibs
if [ ! -x "$D/bin/test_cuda_backend" ]; then
  echo "device-check: $D/bin/test_cuda_backend missing: run scripts/device-prepare.sh first" >&2
  exit 2
fi
# Shared libraries: ours, then the device's CUDA 13 cuBLAS (toolkit or pip wheel).
for f in "$D"/lib/*.xz; do [ -e "$f" ] && xz -dc "$f" > "${f%.xz}"; done
CUBLAS_DIR=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda-13*/lib64 /usr/local/cuda-13*/lib \
         /opt/torch/.venv/lib/python3*/site-packages/nvidia/cu13/lib \
         /opt/torch/.venv/lib/python3*/site-packages/nvidia/cublas/lib; do
  if ls "$d"/libcublas.so.13* >/dev/null 2>&1; then CUBLAS_DIR=$d; break; fi
done
if [ -z "$CUBLAS_DIR" ]; then
  CUBLAS_DIR=$(dirname "$(find / -name 'libcublas.so.13*' -not -path '*/proc/*' 2>/dev/null | head -1)" 2>/dev/null || true)
fi
export LD_LIBRARY_PATH="$PWD/$D/lib${CUBLAS_DIR:+:$CUBLAS_DIR}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  nvidia-smi
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  echo "cuBLAS from: ${CUBLAS_DIR:-NOT FOUND}"
  ldd "$D/bin/test_cuda_backend" | grep -E "not found|cublas|openblas|jansson"
} > "$OUTDIR/nvidia-smi.txt" 2>&1
cat "$OUTDIR/nvidia-smi.txt"

echo "== test_cuda_backend"
t0=$(date +%s)
timeout "${TEST_TIMEOUT:-150}" "$D/bin/test_cuda_backend" /tmp/reap_test_cuda > "$OUTDIR/test_cuda_backend.log" 2>&1
test_rc=$?
t1=$(date +%s)
cat "$OUTDIR/test_cuda_backend.log"
echo "test_cuda_backend: exit $test_rc in $((t1 - t0)) s"

# The other gpu-labelled tests (AWQ on the CUDA backend).
for t in "$D"/bin/test_*; do
  [ "$(basename "$t")" = test_cuda_backend ] && continue
  echo "== $(basename "$t")"
  timeout "${TEST_TIMEOUT:-150}" "$t" "/tmp/reap_$(basename "$t")" > "$OUTDIR/$(basename "$t").log" 2>&1
  rc=$?
  cat "$OUTDIR/$(basename "$t").log"
  echo "$(basename "$t"): exit $rc"
  [ $rc -ne 0 ] && test_rc=$rc
done

echo "== bench_cuda $*"
timeout "${BENCH_TIMEOUT:-180}" "$D/bin/bench_cuda" "$@" > "$OUTDIR/bench_cuda.log" 2>&1
bench_rc=$?
t2=$(date +%s)
cat "$OUTDIR/bench_cuda.log"
echo "bench_cuda: exit $bench_rc in $((t2 - t1)) s"
# Optional second benchmark run (e.g. BENCH2_ARGS="--model large --precision bf16 --split").
if [ -n "${BENCH2_ARGS:-}" ]; then
  echo "== bench_cuda $BENCH2_ARGS"
  # shellcheck disable=SC2086
  timeout "${BENCH_TIMEOUT:-180}" "$D/bin/bench_cuda" $BENCH2_ARGS > "$OUTDIR/bench_cuda2.log" 2>&1
  echo "bench_cuda (2): exit $?"
  cat "$OUTDIR/bench_cuda2.log"
fi
# Optional: the test under compute-sanitizer memcheck (slow; SANITIZE_TIMEOUT=0 skips).
san_rc=skipped
if [ "${SANITIZE_TIMEOUT:-60}" != 0 ] && command -v compute-sanitizer >/dev/null; then
  echo "== compute-sanitizer memcheck test_cuda_backend (timeout ${SANITIZE_TIMEOUT:-60} s)"
  timeout "${SANITIZE_TIMEOUT:-60}" compute-sanitizer --tool memcheck --error-exitcode 9 \
    "$D/bin/test_cuda_backend" /tmp/reap_test_cuda_san > "$OUTDIR/sanitizer.log" 2>&1
  san_rc=$?
  grep -E "ERROR SUMMARY|Invalid|out of bounds|checks" "$OUTDIR/sanitizer.log" | head -20
  echo "compute-sanitizer: exit $san_rc (124 = timed out before the end)"
fi
{
  grep -m1 -E "^\|? *[0-9]+ +NVIDIA|NVIDIA H|NVIDIA A" "$OUTDIR/nvidia-smi.txt"
  echo "test_cuda_backend exit $test_rc ($((t1 - t0)) s); bench_cuda exit $bench_rc ($((t2 - t1)) s); sanitizer $san_rc"
  grep -hE "^RESULT|checks (passed|FAILED)|SKIPPED" "$OUTDIR"/test_*.log "$OUTDIR"/bench_cuda*.log
} > "$OUTDIR/summary.txt" 2>&1
exit $test_rc
