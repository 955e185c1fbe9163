#!/usr/bin/env bash
# The built-in demo: installs the dependencies, builds reap, generates a tiny
# Qwen3-VL-MoE-shaped checkpoint with a small vision tower, generated PNG/JPEG images and a
# calibration set mixing image items with text, starts the two services on
# loopback (free ports, a temporary score store, a random bearer token) and drives the
# whole flow through reapctl: score (progress bar on a terminal), the statistics table
# and heatmap, keep sets, a signed prune, verification. Output lands in demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
B=build/bin
out=demo-out
rm -rf "$out"
mkdir -p "$out/models" "$out/calib" "$out/pruned"
out=$(cd "$out" && pwd)

echo "== generating a tiny qwen3_vl_moe checkpoint (8 layers x 16 experts, a 3-block vision tower),"
echo "   8 PNG/JPEG images, and a calibration file: 8 items (6 with images) then 96 text samples"
# The Qwen3 vocabulary (the tokenizer renders the image and text items), tied embeddings.
$B/reap-genmodel --out "$out/models/tiny-vl-moe" --family qwen3_vl_moe --layers 8 --hidden 128 \
  --heads 8 --kv-heads 2 --head-dim 16 --experts 16 --top-k 4 --moe-inter 64 --vocab 151936 \
  --tie 1 --shards 2 --seed 7 --vision --calib "$out/calib/text.jsonl" --samples 96 \
  --min-len 16 --max-len 200 --images "$out/calib" --n-images 8 >/dev/null
cp tests/fixtures/qwen3-tokenizer/tokenizer.json tests/fixtures/qwen3-tokenizer/tokenizer_config.json \
  "$out/models/tiny-vl-moe/"
# the image items (paths relative to the file's folder, under the scorer's --calib-root)
# first, then the text samples
cat "$out/calib/calib.jsonl" "$out/calib/text.jsonl" >"$out/calib/mixed.jsonl"
$B/reapctl keygen --out "$out/reap" >/dev/null
echo "   signing key: $out/reap.key (public: $out/reap.pub)"

echo "== starting reap-scorer serve and reap-pruner serve on 127.0.0.1 (temporary store)"
store=$(mktemp -d)
REAP_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export REAP_TOKEN
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$store"
}
trap cleanup EXIT
# serve NAME ARGS...: start a service on a free port; sets PORT.
serve() {
  local name=$1; shift
  "$@" --listen 127.0.0.1:0 >"$out/$name.port" 2>"$out/$name.log" &
  pids+=($!)
  for _ in $(seq 200); do grep -q '^port ' "$out/$name.port" 2>/dev/null && break; sleep 0.05; done
  PORT=$(awk '/^port /{print $2}' "$out/$name.port")
  [ -n "$PORT" ] || { cat "$out/$name.log"; exit 1; }
}
serve scorer $B/reap-scorer serve --store "$store" --model-root "$out/models" \
  --calib-root "$out/calib" --backend cpu
export REAP_SCORER_ADDR=127.0.0.1:$PORT
serve pruner $B/reap-pruner serve --store "$store" --model-root "$out/models" \
  --output-root "$out/pruned" --key "$out/reap.key"
export REAP_PRUNER_ADDR=127.0.0.1:$PORT
$B/reapctl health

echo "== reapctl score (images through the vision tower, then layer by layer; each layer committed)"
$B/reapctl score --model tiny-vl-moe --calib mixed.jsonl --seq-len 256
model=$($B/reapctl models --json | sed -n 's/.*"model_id": *"\([0-9a-f]\{64\}\)".*/\1/p' | head -1)

echo "== reapctl stats ${model:0:16} (per-layer REAP scores, image tokens and their share;"
echo "   drop@0.4 = experts a 40% prune removes)"
$B/reapctl stats "$model"
$B/reapctl stats "$model" --svg "$out/heatmap.svg" --ratio 0.4

echo "== reapctl keepset --ratio 0.4 (from the stored statistics; nothing written)"
$B/reapctl keepset --model-id "${model:0:16}" --ratio 0.4

echo "== reapctl prune --ratio 0.4 --verify (streamed rewrite, signed manifest)"
$B/reapctl prune --model tiny-vl-moe --out tiny-vl-moe-pruned --ratio 0.4 --verify

echo "== reapctl verify (here, independently of the service, with the public key)"
$B/reapctl verify "$out/pruned/tiny-vl-moe-pruned" --pubkey "$out/reap.pub"

echo "== reapctl runs"
$B/reapctl runs
echo "== done: pruned checkpoint in $out/pruned/tiny-vl-moe-pruned, heatmap in $out/heatmap.svg"
