#!/bin/bash
# awq_target.sh - the seed's target shape end to end (labels integration, slow): an AWQ
# int4 checkpoint with the real Qwen3-VL-235B-A22B language-model widths (H 4096, 64/4
# heads of 128, 128 experts top-8, I 1536, group 128, per-expert AWQ experts, AWQ
# attention) but 2 layers and a vocabulary of 1024 (about 2.4 GB of int4 experts), scored
# on 2 rows x 64 tokens and pruned at 0.40: 77 experts kept per layer, config
# text_config.num_experts 77, structural --verify passes, every shard valid and every kept
# qweight/qzeros/scales group byte-identical to its source (tests/oracle/awq_pack.py
# pruned). The times of the stages are printed. The 235B fixture config
# (tests/fixtures/qwen3-vl-235b-a22b-awq) goes through `reap-scorer plan` too.
#
# usage: awq_target.sh BIN_DIR WORK_DIR PYTHON
set -u
BIN=$(cd "$1" && pwd) WORK=$2 PY=${3:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || exit 1
# The model (2.6 GB) and its pruned copy (1.6 GB) are written here: without 5 GB free the
# test cannot say anything about the code, so it reports Skipped (ctest
# SKIP_RETURN_CODE 77) with the reason rather than failing on ENOSPC half-way.
free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((5 * 1024 * 1024)) ]; then
  echo "SKIPPED: awq_target needs 5 GB free under $WORK, the file system has $((free_kb / 1024)) MB"
  exit 77
fi
# The multi-GB files go whatever the outcome; the logs stay.
trap 'rm -rf "$WORK/m" "$WORK/p"' EXIT
fails=0
ok()   { echo "ok   $*"; }
bad()  { echo "FAIL $*"; fails=$((fails + 1)); }
t0=$SECONDS
stage() { echo "== $* ($((SECONDS - t0)) s)"; }

stage "reap-genmodel: real 235B widths, 2 layers, vocab 1024, AWQ group 128"
"$BIN/reap-genmodel" --out m --family qwen3_vl_moe --layout split --layers 2 --hidden 4096 \
    --heads 64 --kv-heads 4 --head-dim 128 --experts 128 --top-k 8 --moe-inter 1536 \
    --inter 12288 --vocab 1024 --dtype f16 --shards 4 --awq --group-size 128 --seed 3 \
    --calib calib.jsonl --samples 2 --min-len 64 --max-len 64 || exit 1
du -sh m

stage "reap-scorer run (CPU, 2 rows x 64)"
"$BIN/reap-scorer" run --backend cpu --model m --calib calib.jsonl --seq-len 64 --no-pack \
    --stats-json stats.json 2>&1 | grep -E "layer|model_id" || true
[ -s stats.json ] && ok "scored" || { bad "no statistics"; exit 1; }

stage "reap-pruner prune --ratio 0.4 --verify"
"$BIN/reap-pruner" prune --model m --stats-json stats.json --out p --ratio 0.4 --verify \
    --quiet > prune.txt 2>&1 && ok "prune --verify" || bad "prune: $(tail -5 prune.txt)"
cat prune.txt
grep -q "experts: 128 -> 77 per layer" prune.txt && grep -q "structural ok" prune.txt \
    && ok "128 -> 77 experts per layer, structural verification" || bad "prune report"
"$PY" -c "
import json; c = json.load(open('p/config.json'))
assert c['text_config']['num_experts'] == 77, c['text_config']['num_experts']
assert c['quantization_config'] == json.load(open('m/config.json'))['quantization_config']
" && ok "config: text_config.num_experts 77, quantization_config unchanged" || bad "config"

stage "awq_pack.py pruned (every shard, kept groups byte-identical)"
"$PY" "$HERE/oracle/awq_pack.py" pruned --orig m --out p && ok "awq_pack.py pruned" \
    || bad "awq_pack.py pruned"
du -sh p

stage "reap-scorer plan on the full-size fixture config"
"$BIN/reap-scorer" plan --model "$HERE/fixtures/qwen3-vl-235b-a22b-awq" --rows 300 \
    --seq-len 2048 --vram-gb 140 > plan.txt 2>&1 && ok "plan (H200 budget)" \
    || bad "plan: $(cat plan.txt)"
cat plan.txt

stage "done"
if [ $fails -ne 0 ]; then
  echo "awq_target: $fails failures"
  exit 1
fi
echo "awq_target: PASS ($((SECONDS - t0)) s)"
