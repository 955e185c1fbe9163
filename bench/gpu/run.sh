#!/usr/bin/env bash
# bench/gpu/run.sh - the GPU benchmark in one command, for a machine with an NVIDIA GPU,
# the CUDA toolkit (nvcc, cuBLAS), a C compiler, PyTorch and CMake; no network and no
# Debian -dev packages needed. From the repository root (or anywhere):
#
#   bench/gpu/run.sh
#
# 1. builds what it needs: the CUDA backend, the conversion code and the layer benchmark
#    bench_cuda with nvcc/cc directly (no JSON, no BLAS; random weights in memory) into
#    build-gpu-bench/;
# 2. runs the `gpu` tests (CUDA vs CPU) when it can: a full CMake build when its libraries
#    are installed, else binaries prepared elsewhere by scripts/device-prepare.sh in
#    .devlibs/; otherwise it says why not;
# 3. benchmarks one Qwen3-VL-235B-shaped layer (H 4096, 128 experts top-8, I 1536, 64/4
#    heads of 128) on 32 rows x 2048 tokens of random data (bf16, fused experts, uploads
#    prefetched): ms per layer, useful TFLOP/s, the card's cuBLAS bf16 GEMM rate from the
#    same run, the projected full job (94 layers x 300 rows x 2048 tokens);
# 4. times the reference algorithm in PyTorch on the same shape (bench/gpu/torch_ref.py:
#    eager, every expert on every token as CerebrasResearch/reap does, the same
#    attention) and prints the ratio;
# 5. prints a short table last. Logs in $OUT (or build-gpu-bench/logs).
#
# Environment: LAYERS (4), ROWS (32), SEQ (2048), TORCH_LAYERS (2), GPU_TESTS (1; 0
# skips step 2), TEST_TIMEOUT (300 s), EXTRA_BENCH (more runs of the same layer benchmark, ';'-separated, each
# a list of VAR=value settings and bench_cuda flags, e.g.
# "REAP_CUDA_EXPERTS=grouped;REAP_CUDA_ATTN=gemm;--split;--parallel-layers 0"), ARCH (sm_XY;
# default: the GPU's).
# Time: about 1 min to build, 1-2 min of tests, 1 min of benchmarks (< 8 min in all).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
B=build-gpu-bench
LOGS=${OUT:-$B/logs}
mkdir -p "$B/obj" "$LOGS"
LAYERS=${LAYERS:-4}
ROWS=${ROWS:-32}
SEQ=${SEQ:-2048}
TORCH_LAYERS=${TORCH_LAYERS:-2}
T0=$(date +%s)
say() { printf '== %s (%ds)\n' "$*" $(($(date +%s) - T0)); }

# ---- the GPU and the toolkit --------------------------------------------------------
if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "run.sh: no NVIDIA GPU visible (nvidia-smi): nothing to benchmark" >&2
  exit 77
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv | tee "$LOGS/gpu.txt"
CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")}
NVCC=$CUDA_HOME/bin/nvcc
[ -x "$NVCC" ] || { echo "run.sh: nvcc not found (set CUDA_HOME)" >&2; exit 2; }
if [ -z "${ARCH:-}" ]; then
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
  ARCH=sm_${cc:-90}
fi
CC=${CC:-$(command -v cc || command -v gcc)}
CUDA_LIB=$CUDA_HOME/lib64
[ -d "$CUDA_LIB" ] || CUDA_LIB=$CUDA_HOME/lib
# cuBLAS: the toolkit's, else a pip wheel's (PyTorch ships one)
if ! ls "$CUDA_LIB"/libcublas.so* >/dev/null 2>&1; then
  CUDA_LIB=$(dirname "$(find / -name 'libcublas.so*' -not -path '/proc/*' 2>/dev/null | head -1)")
fi
export LD_LIBRARY_PATH="$CUDA_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
CUBLAS_LINK="-L$CUDA_LIB -lcublas"
if [ ! -e "$CUDA_LIB/libcublas.so" ]; then
  CUBLAS_LINK=$(ls "$CUDA_LIB"/libcublas.so.* 2>/dev/null | head -1)
fi

# ---- 1. GPU-only build -----------------------------------------------------------------
say "build: CUDA backend + layer benchmark for $ARCH (nvcc $("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'))"
INC="-I model -I model/cuda -I common -I scorer -I $CUDA_HOME/include"
GEN="-gencode arch=compute_${ARCH#sm_},code=$ARCH"
build_ok=1
{
  for f in model/cuda/*.cu; do
    f=$(basename "$f" .cu)
    "$NVCC" -O3 -std=c++17 $GEN $INC -Xcompiler -Wall -c "model/cuda/$f.cu" -o "$B/obj/$f.o" &
  done
  for f in model/cuda/cuda_plan.c model/weights_convert.c model/stats.c model/positions.c \
           common/reap_err.c common/parallel.c common/cli.c common/fsopen.c common/hex.c \
           scorer/backend_cli.c \
           bench/gpu/bench_cuda.c bench/gpu/gpu_only_shims.c; do
    "$CC" -O2 -std=c11 -Wall -Wextra -D_GNU_SOURCE -DREAP_VERSION='"gpu-bench"' $INC \
      -c "$f" -o "$B/obj/$(basename "${f%.c}").o" &
  done
  for j in $(jobs -p); do wait "$j" || exit 1; done
  # shellcheck disable=SC2086
  "$CC" -o "$B/bench_cuda" "$B"/obj/*.o $CUBLAS_LINK -L"$CUDA_HOME/lib64" \
    -lcudart_static -lstdc++ -lpthread -ldl -lrt -lm
} > "$LOGS/build.log" 2>&1 || build_ok=0
if [ $build_ok != 1 ]; then
  cat "$LOGS/build.log"
  echo "run.sh: the GPU-only build failed (log above)" >&2
  exit 1
fi
grep -i warning "$LOGS/build.log" || true

# ---- 2. gpu tests ----------------------------------------------------------------------------
tests_status="not run"
if [ "${GPU_TESTS:-1}" = 1 ]; then
  missing=""
  for p in jansson openblas lmdb libsodium libprotobuf-c grpc libpcre2-8 libutf8proc; do
    pkg-config --exists "$p" 2>/dev/null || missing="$missing $p"
  done
  if [ -z "$missing" ]; then
    say "gpu tests: full CMake build"
    if cmake -S . -B build-gpu-full -DCMAKE_BUILD_TYPE=Release \
         -DCMAKE_CUDA_ARCHITECTURES="${ARCH#sm_}" > "$LOGS/gpu_tests.log" 2>&1 &&
       cmake --build build-gpu-full -j"$(nproc)" --target test_cuda_backend >> "$LOGS/gpu_tests.log" 2>&1 &&
       (cd build-gpu-full && timeout "${TEST_TIMEOUT:-300}" ctest -L gpu --output-on-failure) >> "$LOGS/gpu_tests.log" 2>&1; then
      tests_status="passed (ctest -L gpu)"
    else
      tests_status="FAILED (see gpu_tests.log)"
    fi
  elif [ -x .devlibs/bin/test_cuda_backend ]; then
    say "gpu tests: prebuilt .devlibs/bin/test_cuda_backend (no$missing here)"
    for f in .devlibs/lib/*.xz; do [ -e "$f" ] && xz -dc "$f" > "${f%.xz}"; done
    if LD_LIBRARY_PATH="$ROOT/.devlibs/lib:$LD_LIBRARY_PATH" timeout "${TEST_TIMEOUT:-300}" \
         .devlibs/bin/test_cuda_backend /tmp/reap_gpu_tests > "$LOGS/gpu_tests.log" 2>&1; then
      tests_status="passed (prebuilt: $(grep -h 'checks passed' "$LOGS/gpu_tests.log"))"
    else
      tests_status="FAILED (see gpu_tests.log)"
    fi
  else
    tests_status="not run: the full build needs the -dev packages of$missing (install them, or build the test elsewhere with scripts/device-prepare.sh and bring .devlibs/)"
  fi
  tail -25 "$LOGS/gpu_tests.log" 2>/dev/null
  echo "gpu tests: $tests_status"
fi

# ---- 3. the layer benchmark ------------------------------------------------------------------
say "bench_cuda: large layer, bf16, $ROWS x $SEQ, $LAYERS layers"
timeout 240 "$B/bench_cuda" --model large --precision bf16 --layers "$LAYERS" --rows "$ROWS" \
  --seq "$SEQ" --no-fp32-gemm > "$LOGS/bench_cuda.log" 2>&1
bench_rc=$?
cat "$LOGS/bench_cuda.log"
if [ -n "${EXTRA_BENCH:-}" ]; then
  IFS=';' read -ra extra <<< "$EXTRA_BENCH"
  for cfg in "${extra[@]}"; do
    envs=(); args=()
    for word in $cfg; do
      case $word in *=*) envs+=("$word") ;; *) args+=("$word") ;; esac
    done
    say "bench_cuda ${cfg}"
    env "${envs[@]}" timeout 180 "$B/bench_cuda" --model large --precision bf16 \
      --layers "$LAYERS" --rows "$ROWS" --seq "$SEQ" --no-fp32-gemm "${args[@]}" \
      > "$LOGS/bench_extra.log" 2>&1
    grep -E "^RESULT model|mean over|% of the|rror|profile|cuda plan" "$LOGS/bench_extra.log"
  done
fi

# ---- 4. PyTorch reference ------------------------------------------------------------------
say "PyTorch reference (eager, all experts on all tokens), $ROWS x $SEQ, $TORCH_LAYERS layers"
PY=${PYTHON:-python3}
timeout 240 env PYTHONUNBUFFERED=1 "$PY" bench/gpu/torch_ref.py --rows "$ROWS" --seq "$SEQ" \
  --layers "$TORCH_LAYERS" > "$LOGS/torch_ref.log" 2>&1
torch_rc=$?
cat "$LOGS/torch_ref.log"

# ---- 5. summary --------------------------------------------------------------------------------
say "summary"
"$PY" - "$LOGS/bench_cuda.log" "$LOGS/torch_ref.log" "$tests_status" "$bench_rc" "$torch_rc" <<'EOF' | tee "$LOGS/summary.txt"
import re, sys
bench, torch_log, tests, brc, trc = sys.argv[1:6]
def kv(line):
    return dict(re.findall(r'(\w+)=([^\s]+)', line))
gemm = layer = ref = None
dev = ''
for l in open(bench, errors='replace'):
    if l.startswith('device:'): dev = l.split(':', 1)[1].split(',')[0].strip()
    if l.startswith('RESULT gemm'): gemm = kv(l)
    elif l.startswith('RESULT model=large'): layer = kv(l)
try:
    for l in open(torch_log, errors='replace'):
        if l.startswith('RESULT torch'): ref = kv(l)
except OSError:
    pass
rows = [('card', dev or '?'), ('gpu tests', tests)]
if gemm: rows.append(('cuBLAS bf16 GEMM', '%s TFLOP/s (best of 3072x16384x4096, 8192^3)' % gemm['bf16_best_tflops']))
if layer:
    fwd = float(layer['fwd_s']); lay = float(layer['layer_s'])
    rows += [('reap forward / layer', '%.1f ms (%s tokens)' % (fwd * 1e3, layer['tokens'])),
             ('reap wall / layer', '%.1f ms (upload of the next layer overlapped)' % (lay * 1e3)),
             ('useful TFLOP/s', '%s = %s%% of the GEMM rate (target >= 40%%)' % (layer['useful_tflops'], layer['pct_gemm'])),
             ('projected job', '%s min (94 layers x 300 x 2048 tokens)' % layer['job_min'])]
else:
    rows.append(('reap layer', 'FAILED (bench exit %s)' % brc))
if ref and layer:
    t = float(ref['layer_s'])
    rows += [('PyTorch reference / layer', '%.1f ms (%s)' % (t * 1e3, ref.get('note', 'eager'))),
             ('speed-up vs reference', '%.1fx forward, %.1fx wall (target >= 20x)' % (t / fwd, t / lay))]
else:
    rows.append(('PyTorch reference', 'not measured (exit %s)' % trc))
w = max(len(k) for k, _ in rows)
print('-' * 78)
for k, v in rows:
    print('%-*s  %s' % (w, k, v))
print('-' * 78)
EOF
say "done"
[ $bench_rc = 0 ] || exit 1
