#!/usr/bin/env bash
# deploy_scaleout.sh BIN SCRATCH PYTHON REPO - the Kubernetes scale-out path on one
# machine, through the very scripts the image runs (deploy/scripts/): a calibration set
# split into 3 shards (split-calib.sh, the Indexed Job's calib-shard-%d.jsonl names),
# 3 concurrent score-shard.sh processes with JOB_COMPLETION_INDEX=0..2, each into its
# own store and exporting to a shared directory, then merge-shards.sh importing the 3
# exports into one store. Against one reap-scorer run of the whole set (rows unpacked
# with --no-pack, so the shards score exactly the rows of one pass): token and expert
# counts exact, identical keep sets (compare_stats.py at ratios 0.5/0.25, reapctl
# keepset at 0.4), sums within REAP_MERGE_RTOL relative (default 1e-12, as
# tests/store_merge.sh: the CPU engine's token-wise GEMMs are row-independent).
# Also: merging with a shard missing is refused, merging again adds nothing.
set -u
bin=$1; tmp=$2; py=$3; repo=$4
rtol=${REAP_MERGE_RTOL:-1e-12}
scripts=$repo/deploy/scripts
compare=$repo/tests/oracle/compare_stats.py
rm -rf "$tmp"; mkdir -p "$tmp"
fail() { echo "FAIL: $*"; exit 1; }
export PATH="$bin:$PATH"
reap-genmodel --out "$tmp/m" --layers 4 --hidden 64 --heads 4 --kv-heads 2 --head-dim 16 \
  --experts 16 --top-k 4 --moe-inter 32 --vocab 300 --mlp-only 1 --seed 31 >/dev/null \
  || fail "reap-genmodel"
reap-genmodel --out "$tmp/junk" --layers 1 --vocab 300 --calib "$tmp/calib.jsonl" --samples 45 \
  --min-len 5 --max-len 60 --calib-seed 203 >/dev/null || fail "calibration"
args="--seq-len 64 --no-pack --backend cpu --threads 1 --quiet --max-samples 0"

sh "$scripts/split-calib.sh" "$tmp/calib.jsonl" 3 "$tmp/shards" || fail "split-calib.sh"
[ "$(cat "$tmp"/shards/calib-shard-{0,1,2}.jsonl | cmp - "$tmp/calib.jsonl" && echo same)" = same ] \
  || fail "the 3 shards are not the calibration file in order"

pids=""
for i in 0 1 2; do
  JOB_COMPLETION_INDEX=$i SHARD_MODEL=$tmp/m SHARD_CALIB_DIR=$tmp/shards \
  SHARD_EXPORT_DIR=$tmp/exports SHARD_STORE=$tmp/local$i SHARD_RUN_ARGS=$args \
    sh "$scripts/score-shard.sh" >"$tmp/shard$i.log" 2>&1 &
  pids="$pids $!"
done
for p in $pids; do wait "$p" || fail "a shard failed: $(cat "$tmp"/shard*.log)"; done
ls "$tmp/exports"/*.tmp >/dev/null 2>&1 && fail "temporary export left behind"

REAP_STORE_PATH=$tmp/main sh "$scripts/merge-shards.sh" "$tmp/exports" 4 >"$tmp/m4.log" 2>&1 \
  && fail "merge with shard 3 of 4 missing was not refused"
grep -q "shard-3.reapx is missing" "$tmp/m4.log" || fail "$(cat "$tmp/m4.log")"
[ -e "$tmp/main" ] && fail "the refused merge touched the store"
REAP_STORE_PATH=$tmp/main sh "$scripts/merge-shards.sh" "$tmp/exports" 3 >"$tmp/merge.log" 2>&1 \
  || fail "merge-shards.sh: $(cat "$tmp/merge.log")"
REAP_STORE_PATH=$tmp/main sh "$scripts/merge-shards.sh" "$tmp/exports" 3 >"$tmp/merge2.log" 2>&1 \
  || fail "second merge: $(cat "$tmp/merge2.log")"
[ "$(grep -c " 0 added" "$tmp/merge2.log")" -eq 3 ] || fail "merging again added records: $(cat "$tmp/merge2.log")"

reap-scorer stats --store "$tmp/main" --model "$tmp/m" --stats-json "$tmp/merged.json" \
  2>"$tmp/stats.log" || fail "stats: $(cat "$tmp/stats.log")"
grep -q "3 calibration set(s) merged" "$tmp/stats.log" || fail "$(cat "$tmp/stats.log")"
# shellcheck disable=SC2086
reap-scorer run --model "$tmp/m" --calib "$tmp/calib.jsonl" --store "$tmp/one" $args \
  --stats-json "$tmp/one.json" >/dev/null 2>"$tmp/one.log" || fail "one pass: $(cat "$tmp/one.log")"
"$py" "$compare" "$tmp/merged.json" "$tmp/one.json" --rtol "$rtol" >"$tmp/cmp.txt" \
  || { cat "$tmp/cmp.txt"; fail "3 merged shards differ from one pass beyond $rtol"; }
reapctl keepset --stats-json "$tmp/merged.json" --ratio 0.4 >"$tmp/keep_merged.txt" || fail "keepset"
reapctl keepset --stats-json "$tmp/one.json" --ratio 0.4 >"$tmp/keep_one.txt" || fail "keepset"
diff "$tmp/keep_merged.txt" "$tmp/keep_one.txt" || fail "keep sets at ratio 0.4 differ"
reap-scorer check --store "$tmp/main" >/dev/null || fail "check of the merged store"
echo "3 shards (Indexed Job scripts) merged vs one pass (rtol $rtol):"; cat "$tmp/cmp.txt"
echo "ok: split, 3 score-shard processes, merge-shards (refusal, idempotent), equal to one pass"
