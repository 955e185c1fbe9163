#!/usr/bin/env bash
# store_merge.sh BIN SCRATCH PYTHON TESTS_DIR - incremental scoring and shard merging.
#
# 1. Calibration set A, then B, scored into one store. The merged view is the exact
#    fold (integer counts, float64 sums, max) of the two stored records in calib-id
#    order (store_merge_check.py, equality). Against scoring the concatenation A+B as one
#    set (rows unpacked with --no-pack, so A+B is exactly the rows of A and of B): counts
#    exact, identical keep sets, sums within REAP_MERGE_RTOL relative (default 1e-12:
#    the CPU engine's token-wise GEMMs are row-independent, model/cpu/cpu_gemm.h, so a
#    token's values do not depend on which other tokens share a call; only the order of
#    the float64 additions differs).
# 2. A+B split into 3 shards, scored by 3 concurrent processes into 3 stores, exported,
#    imported into one fresh store: the merged view is the exact fold of the 3 shards'
#    records, and equals the one-pass run as in 1; importing again adds nothing.
# 3. Scoring a complete pair again is a no-op that says so; --force recomputes every
#    layer and finds each equal to its stored record.
set -u
bin=$1; tmp=$2; py=$3; tests=$4
compare=$tests/oracle/compare_stats.py
check=$tests/store_merge_check.py
rtol=${REAP_MERGE_RTOL:-1e-12}
rm -rf "$tmp"; mkdir -p "$tmp"
fail() { echo "FAIL: $*"; exit 1; }
"$bin/reap-genmodel" --out "$tmp/m" --layers 4 --hidden 64 --heads 4 --kv-heads 2 \
  --head-dim 16 --experts 16 --top-k 4 --moe-inter 32 --vocab 300 --mlp-only 1 \
  --seed 31 >/dev/null || fail "reap-genmodel"
gen_calib() { # FILE SEED N
  "$bin/reap-genmodel" --out "$tmp/junk" --layers 1 --vocab 300 --calib "$1" --samples "$3" \
    --min-len 5 --max-len 60 --calib-seed "$2" >/dev/null || fail "calibration $1"
}
gen_calib "$tmp/A.jsonl" 201 20
gen_calib "$tmp/B.jsonl" 202 25
cat "$tmp/A.jsonl" "$tmp/B.jsonl" > "$tmp/AB.jsonl"
run() { # STORE CALIB [args]
  local st=$1 c=$2; shift 2
  "$bin/reap-scorer" run --model "$tmp/m" --calib "$c" --seq-len 64 --no-pack --store "$st" \
    --backend cpu --threads 1 --quiet "$@"
}

# 1. A then B vs A+B.
run "$tmp/s1" "$tmp/A.jsonl" >/dev/null 2>"$tmp/a.log" || fail "score A: $(cat "$tmp/a.log")"
run "$tmp/s1" "$tmp/B.jsonl" --stats-json "$tmp/a_then_b.json" >/dev/null 2>"$tmp/b.log" \
  || fail "score B: $(cat "$tmp/b.log")"
grep -q "merged over 2 calibration sets" "$tmp/b.log" || fail "B's run did not print the merged view"
run "$tmp/s2" "$tmp/AB.jsonl" --stats-json "$tmp/ab.json" >/dev/null 2>&1 || fail "score A+B"
# parts_of MERGED.json STORE... : per-set JSONs in the merged view's order.
parts_of() {
  local merged=$1; shift
  local ids id st k=0
  ids=$(awk -F'"' '/"calib_id"/ { print $4; exit }' "$merged" | tr ',' ' ')
  for id in $ids; do
    for st in "$@"; do
      if "$bin/reap-scorer" stats --store "$st" --model "$tmp/m" --calib-ids "$id" \
           --stats-json "$tmp/part_$k.json" 2>/dev/null; then
        echo "$tmp/part_$k.json"; break
      fi
    done
    k=$((k + 1))
  done
}
parts=$(parts_of "$tmp/a_then_b.json" "$tmp/s1")
[ "$(echo $parts | wc -w)" -eq 2 ] || fail "per-set statistics of A and B"
"$py" "$check" "$tmp/a_then_b.json" $parts || fail "merged view is not the exact fold of A and B"
"$py" "$compare" "$tmp/a_then_b.json" "$tmp/ab.json" --rtol "$rtol" > "$tmp/cmp1.txt" \
  || { cat "$tmp/cmp1.txt"; fail "A then B merged differs from A+B beyond $rtol"; }
echo "A then B merged vs A+B in one pass:"; cat "$tmp/cmp1.txt"

# 2. Three shards in three processes and stores, exported and imported into one.
n=$(wc -l < "$tmp/AB.jsonl")
sed -n "1,15p" "$tmp/AB.jsonl" > "$tmp/sh0.jsonl"
sed -n "16,30p" "$tmp/AB.jsonl" > "$tmp/sh1.jsonl"
sed -n "31,${n}p" "$tmp/AB.jsonl" > "$tmp/sh2.jsonl"
pids=""
for i in 0 1 2; do
  run "$tmp/shard$i" "$tmp/sh$i.jsonl" >/dev/null 2>"$tmp/sh$i.log" &
  pids="$pids $!"
done
for p in $pids; do wait "$p" || fail "a shard run failed: $(cat "$tmp"/sh*.log)"; done
for i in 0 1 2; do
  "$bin/reap-scorer" export --store "$tmp/shard$i" --model "$tmp/m" --out "$tmp/sh$i.reapx" \
    2>"$tmp/ex$i.log" || fail "export $i: $(cat "$tmp/ex$i.log")"
  "$bin/reap-scorer" import --store "$tmp/merged" --in "$tmp/sh$i.reapx" 2>"$tmp/im$i.log" \
    || fail "import $i: $(cat "$tmp/im$i.log")"
done
"$bin/reap-scorer" import --store "$tmp/merged" --in "$tmp/sh1.reapx" 2>"$tmp/again.log" \
  || fail "second import"
grep -q " 0 added" "$tmp/again.log" || fail "second import added records: $(cat "$tmp/again.log")"
"$bin/reap-scorer" stats --store "$tmp/merged" --model "$tmp/m" --stats-json "$tmp/shards.json" \
  2>"$tmp/st.log" || fail "stats of the merged store: $(cat "$tmp/st.log")"
grep -q "3 calibration set(s) merged" "$tmp/st.log" || fail "$(cat "$tmp/st.log")"
rm -f "$tmp"/part_*.json
parts=$(parts_of "$tmp/shards.json" "$tmp/shard0" "$tmp/shard1" "$tmp/shard2")
[ "$(echo $parts | wc -w)" -eq 3 ] || fail "per-shard statistics"
"$py" "$check" "$tmp/shards.json" $parts || fail "imported view is not the exact fold of the shards"
"$py" "$compare" "$tmp/shards.json" "$tmp/ab.json" --rtol "$rtol" > "$tmp/cmp2.txt" \
  || { cat "$tmp/cmp2.txt"; fail "3 imported shards differ from one pass beyond $rtol"; }
echo "3 shards exported+imported vs one pass:"; cat "$tmp/cmp2.txt"
"$bin/reap-scorer" check --store "$tmp/merged" >/dev/null || fail "check of the merged store"

# 3. Complete pairs: a no-op; --force verifies.
run "$tmp/s1" "$tmp/A.jsonl" >/dev/null 2>"$tmp/again_a.log" || fail "rerun of A"
grep -q "already scored" "$tmp/again_a.log" || fail "no 'already scored': $(cat "$tmp/again_a.log")"
runs_before=$("$bin/reap-scorer" list --store "$tmp/s1" | grep -c "^  [0-9a-f]\{32\}")
run "$tmp/s1" "$tmp/A.jsonl" --force --stats-json "$tmp/forced.json" >/dev/null \
  2>"$tmp/force.log" || fail "--force: $(cat "$tmp/force.log")"
grep -q "differ" "$tmp/force.log" && fail "--force found differences: $(cat "$tmp/force.log")"
cmp -s "$tmp/forced.json" "$tmp/a_then_b.json" || fail "--force changed the merged view"
runs_after=$("$bin/reap-scorer" list --store "$tmp/s1" | grep -c "^  [0-9a-f]\{32\}")
[ "$runs_after" -eq $((runs_before + 1)) ] || fail "runs $runs_before -> $runs_after"
echo "ok: A+B merge, 3-shard export/import, no-op rerun and --force verification"
