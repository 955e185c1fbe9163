#!/usr/bin/env bash
# The built-in demo: installs the dependencies, builds reap, generates a tiny
# Qwen3-VL-MoE-shaped checkpoint and a calibration set, scores every MoE layer on the
# CPU engine and prints a per-layer table. Output lands in demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
out=demo-out
rm -rf "$out"
mkdir -p "$out"
echo "== generating a tiny qwen3_vl_moe checkpoint and 96 calibration samples"
build/bin/reap-genmodel --out "$out/model" --family qwen3_vl_moe --layers 4 --hidden 128 \
  --heads 8 --kv-heads 2 --head-dim 16 --experts 16 --top-k 4 --moe-inter 64 --vocab 1000 \
  --shards 2 --seed 7 --calib "$out/calib.jsonl" --samples 96 --min-len 16 --max-len 200
echo "== scoring (reap-scorer run)"
build/bin/reap-scorer run --model "$out/model" --calib "$out/calib.jsonl" --seq-len 256 \
  --backend cpu --stats-json "$out/stats.json" --table
echo "== statistics written to $out/stats.json"
