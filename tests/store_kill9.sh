#!/usr/bin/env bash
# store_kill9.sh BIN SCRATCH [KILLS] - crash safety of `reap-scorer run --store`.
#
# Scores an 8-layer generated model on several calibration sets into one store, killing
# the scorer with SIGKILL at random moments (at least KILLS, default 20, landing while it
# runs). After every kill the store must open clean (mdb_stat of Debian's lmdb-utils, and
# `reap-scorer check`, which decodes and verifies every record); the rerun resumes from
# the newest hidden-state checkpoint (every 2 layers, so committed layers are also
# recomputed and compared with their records). When a calibration set completes, the
# next round starts on another set in the same store. At the end the statistics in that
# store - each calibration set alone and the merged view - must be byte-identical (cmp of
# the reap-stats/1 JSON) to uninterrupted runs in a fresh store, and to a run without a
# store.
set -u
set +m
bin=$1; tmp=$2; want_kills=${3:-20}
rm -rf "$tmp"; mkdir -p "$tmp"
fail() { echo "FAIL: $*"; exit 1; }
have_mdb_stat=1
command -v mdb_stat >/dev/null || { have_mdb_stat=0; echo "note: mdb_stat not found (lmdb-utils); using reap-scorer check only"; }

"$bin/reap-genmodel" --out "$tmp/m" --layers 8 --hidden 128 --heads 4 --kv-heads 2 \
  --head-dim 32 --experts 16 --top-k 4 --moe-inter 128 --vocab 512 --seed 21 >/dev/null \
  || fail "reap-genmodel"
for r in $(seq 0 11); do
  "$bin/reap-genmodel" --out "$tmp/junk" --layers 1 --vocab 512 --calib "$tmp/c$r.jsonl" \
    --samples 32 --min-len 40 --max-len 128 --calib-seed $((100 + r)) >/dev/null \
    || fail "calibration $r"
done
run() { # run STORE CALIB [extra args]
  local st=$1 c=$2; shift 2
  "$bin/reap-scorer" run --model "$tmp/m" --calib "$c" --seq-len 128 --store "$st" \
    --checkpoint-every 2 --backend cpu --threads 2 "$@"
}
now() { date +%s.%N; }

# Reference for set 0, uninterrupted; its duration sets the kill window.
t0=$(now)
run "$tmp/ref" "$tmp/c0.jsonl" --quiet 2>"$tmp/ref0.log" >/dev/null || fail "reference run: $(cat "$tmp/ref0.log")"
t_ref=$(echo "$(now) - $t0" | bc)
echo "uninterrupted run: ${t_ref} s"

kills=0; early=0; round=0; attempts=0; before_store=0
while [ $((kills - before_store)) -lt "$want_kills" ]; do
  [ $round -lt 12 ] || fail "only $((kills - before_store)) kills landed mid-run in 12 rounds"
  c="$tmp/c$round.jsonl"
  tries=0
  while :; do
    tries=$((tries + 1)); attempts=$((attempts + 1))
    [ $tries -le 30 ] || fail "round $round makes no progress"
    # The binary itself in the background (not a function: $! must be the scorer).
    "$bin/reap-scorer" run --model "$tmp/m" --calib "$c" --seq-len 128 --store "$tmp/st" \
      --checkpoint-every 2 --backend cpu --threads 2 2>>"$tmp/round$round.log" >/dev/null &
    pid=$!
    # Uniform in [0.02, w], w = 0.3 x the uninterrupted time, growing 30% per try of a
    # round (a loaded machine still gets each round done).
    delay=$(awk -v r=$RANDOM -v t="$t_ref" -v k=$tries \
      'BEGIN { printf "%.3f", 0.02 + r / 32768 * 0.3 * t * 1.3 ^ (k - 1) }')
    sleep "$delay"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null; rc=$?
    if [ $rc -eq 137 ]; then
      kills=$((kills + 1))
      if [ ! -s "$tmp/st/data.mdb" ]; then
        before_store=$((before_store + 1))   # killed before the store was created
        continue
      fi
      if [ $have_mdb_stat -eq 1 ]; then
        mdb_stat -a "$tmp/st" >/dev/null 2>"$tmp/mdb_stat.err" || fail "mdb_stat after kill $kills: $(cat "$tmp/mdb_stat.err")"
      fi
      if ! "$bin/reap-scorer" check --store "$tmp/st" >/dev/null 2>"$tmp/check.err"; then
        # Killed inside the store's creation: the next run completes it.
        grep -q "creation was interrupted" "$tmp/check.err" \
          || fail "store check after kill $kills (delay $delay s): $(cat "$tmp/check.err")"
        before_store=$((before_store + 1))
      fi
    elif [ $rc -eq 0 ]; then
      early=$((early + 1))
      break          # this calibration set is complete
    else
      fail "run exited $rc: $(tail -n 3 "$tmp/round$round.log")"
    fi
  done
  round=$((round + 1))
done
# Finish the set a kill may have interrupted last (a no-op when it completed).
for r in $(seq 0 $((round - 1))); do
  run "$tmp/st" "$tmp/c$r.jsonl" --quiet 2>>"$tmp/final.log" >/dev/null || fail "final run $r"
done
resumes=$(cat "$tmp"/round*.log | grep -c "resuming from a hidden-state checkpoint")
committed=$(cat "$tmp"/round*.log | grep -c "committed")
if grep -q "differ" "$tmp"/round*.log "$tmp/final.log"; then
  fail "a recomputed layer differs from its record: $(grep -h differ "$tmp"/round*.log | head -n 1)"
fi
[ "$resumes" -ge 1 ] || fail "no run resumed from a checkpoint"
left=$(find "$tmp/st/checkpoints" -name 'layer-*' 2>/dev/null | wc -l)
[ "$left" -eq 0 ] || fail "$left checkpoint files left after completion"

# Uninterrupted references for the other sets, then compare.
for r in $(seq 1 $((round - 1))); do
  run "$tmp/ref" "$tmp/c$r.jsonl" --quiet 2>>"$tmp/ref.log" >/dev/null || fail "reference run $r"
done
"$bin/reap-scorer" stats --store "$tmp/st" --model "$tmp/m" --stats-json "$tmp/st_all.json" 2>/dev/null || fail "stats st"
"$bin/reap-scorer" stats --store "$tmp/ref" --model "$tmp/m" --stats-json "$tmp/ref_all.json" 2>/dev/null || fail "stats ref"
cmp -s "$tmp/st_all.json" "$tmp/ref_all.json" || fail "merged statistics differ from the uninterrupted runs"
ids=$("$bin/reap-scorer" list --store "$tmp/ref" | awk '$1 == "calib" { print $2 }')
n_ids=0
for id in $ids; do
  n_ids=$((n_ids + 1))
  "$bin/reap-scorer" stats --store "$tmp/st" --model "$tmp/m" --calib-ids "$id" --stats-json "$tmp/st_$id.json" 2>/dev/null || fail "stats $id"
  "$bin/reap-scorer" stats --store "$tmp/ref" --model "$tmp/m" --calib-ids "$id" --stats-json "$tmp/ref_$id.json" 2>/dev/null || fail "stats ref $id"
  cmp -s "$tmp/st_$id.json" "$tmp/ref_$id.json" || fail "calibration set $id differs from its uninterrupted run"
done
[ $n_ids -eq $round ] || fail "$n_ids calibration sets in the reference store, $round rounds"
# Without a store: the same bytes for set 0 (same ids, same statistics).
"$bin/reap-scorer" run --model "$tmp/m" --calib "$tmp/c0.jsonl" --seq-len 128 --backend cpu \
  --threads 2 --quiet --stats-json "$tmp/nostore0.json" || fail "run without a store"
id0=$(awk -F'"' '/"calib_id"/ { print $4; exit }' "$tmp/nostore0.json")
cmp -s "$tmp/nostore0.json" "$tmp/st_$id0.json" || fail "set 0 differs from a run without a store"
echo "ok: $((kills - before_store)) kills landed mid-run (and $before_store before the store existed; $early runs completed, $attempts attempts, $round calibration sets, $resumes resumes from checkpoints, $committed layer commits); store clean after every kill; statistics bit-identical to uninterrupted runs (merged and per set) and to a run without a store"
