#!/usr/bin/env bash
# store_kill9.sh BIN SCRATCH [KILLS] - crash safety of `reap-scorer run --store`.
#
# Scores an 8-layer generated model on several calibration sets into one store, killing
# the scorer with SIGKILL at random moments, at least KILLS (default 20) of them mid-run:
# the attempt's own stderr log shows that scoring had begun (its "starting at layer" or
# "resuming from a hidden-state checkpoint" line, printed when the run starts scoring) and
# not that it had ended (its last layer's line, or "already scored"). Kills during start-up
# (process start, store creation, hashing, loading) and after the last layer are counted
# separately and reported. Most attempts wait until their log shows that scoring began,
# then kill at a random moment of the next few layers (the layer time is re-measured from
# every attempt's log, so a machine whose load changes still lands its kills mid-run); one
# in five kills at a random moment of the start-up instead. After every kill the store must
# open clean (mdb_stat of Debian's lmdb-utils, and `reap-scorer check`, which decodes and
# verifies every record; only a kill during start-up may leave an interrupted creation);
# the rerun resumes from the newest hidden-state checkpoint (every 2 layers, so committed
# layers are also recomputed and compared with their records). When a calibration set completes, the
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

layers=8
began="starting at layer|resuming from a hidden-state checkpoint"
finished="^layer +$layers/$layers |is already scored"
# Mean seconds per layer in a log's "layer i/n ... x.xx s" lines (empty without any).
layer_time() { awk '/^layer / { s += $4; n++ } END { if (n) printf "%.4f", s / n }' "$1"; }

# Reference for set 0, uninterrupted (not --quiet: its layer lines give the first layer
# time; the rest of its duration, the first start-up estimate).
t0=$(now)
run "$tmp/ref" "$tmp/c0.jsonl" 2>"$tmp/ref0.log" >/dev/null || fail "reference run: $(cat "$tmp/ref0.log")"
t_ref=$(echo "$(now) - $t0" | bc)
lt=$(layer_time "$tmp/ref0.log")
[ -n "$lt" ] || fail "reference run printed no layer lines: $(cat "$tmp/ref0.log")"
t_up=$(awk -v t="$t_ref" -v l="$lt" -v n=$layers 'BEGIN { u = t - n * l; printf "%.3f", (u > 0.05 ? u : 0.05) }')
echo "uninterrupted run: ${t_ref} s, ${lt} s per layer"

mkdir -p "$tmp/log"
mid=0; startup=0; before_store=0; after=0; early=0; round=0; attempts=0
while [ $mid -lt "$want_kills" ]; do
  [ $round -lt 12 ] || fail "only $mid kills landed mid-run in 12 rounds ($startup during start-up, $after after the last layer)"
  c="$tmp/c$round.jsonl"
  tries=0
  while :; do
    tries=$((tries + 1)); attempts=$((attempts + 1))
    [ $tries -le 30 ] || fail "round $round makes no progress"
    log="$tmp/log/r${round}a$tries.log"   # this attempt's stderr alone
    t0=$(now)
    # The binary itself in the background (not a function: $! must be the scorer).
    "$bin/reap-scorer" run --model "$tmp/m" --calib "$c" --seq-len 128 --store "$tmp/st" \
      --checkpoint-every 2 --backend cpu --threads 2 2>"$log" >/dev/null &
    pid=$!
    if [ $((RANDOM % 5)) -eq 0 ]; then
      # Uniform in the start-up (as last measured).
      delay=$(awk -v r=$RANDOM -v u="$t_up" 'BEGIN { printf "%.3f", r / 32768 * u }')
    else
      # Once scoring has begun: uniform in [0, 2 layer times], growing 30% per try of a
      # round (each round ends).
      polls=0
      until grep -Eqs "$began" "$log"; do
        kill -0 $pid 2>/dev/null || break       # ended (already scored, or failed)
        polls=$((polls + 1))
        [ $polls -lt 6000 ] || fail "attempt $attempts: scoring never began: $(tail -n 3 "$log")"
        sleep 0.01
      done
      grep -Eqs "$began" "$log" && t_up=$(echo "$(now) - $t0" | bc)
      delay=$(awk -v r=$RANDOM -v l="$lt" -v k=$tries \
        'BEGIN { printf "%.3f", r / 32768 * 2 * l * 1.3 ^ (k - 1) }')
    fi
    sleep "$delay"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null; rc=$?
    l=$(layer_time "$log"); [ -z "$l" ] || lt=$l
    if [ $rc -eq 137 ]; then
      if ! grep -Eq "$began" "$log"; then
        startup=$((startup + 1)); what="during start-up"
      elif grep -Eq "$finished" "$log"; then
        after=$((after + 1)); what="after the last layer"
      else
        mid=$((mid + 1)); what="mid-run"
      fi
      if [ ! -s "$tmp/st/data.mdb" ]; then
        [ "$what" = "during start-up" ] || fail "kill $what (attempt $attempts) but no store"
        before_store=$((before_store + 1))   # killed before the store was created
        continue
      fi
      if [ $have_mdb_stat -eq 1 ]; then
        mdb_stat -a "$tmp/st" >/dev/null 2>"$tmp/mdb_stat.err" || fail "mdb_stat after a kill $what (attempt $attempts): $(cat "$tmp/mdb_stat.err")"
      fi
      if ! "$bin/reap-scorer" check --store "$tmp/st" >/dev/null 2>"$tmp/check.err"; then
        # Killed inside the store's creation (before scoring began): the next run completes it.
        [ "$what" = "during start-up" ] && grep -q "creation was interrupted" "$tmp/check.err" \
          || fail "store check after a kill $what (attempt $attempts): $(cat "$tmp/check.err")"
        before_store=$((before_store + 1))
      fi
    elif [ $rc -eq 0 ]; then
      early=$((early + 1))
      break          # this calibration set is complete
    else
      fail "run exited $rc: $(tail -n 3 "$log")"
    fi
  done
  round=$((round + 1))
done
# Finish the set a kill may have interrupted last (a no-op when it completed).
for r in $(seq 0 $((round - 1))); do
  run "$tmp/st" "$tmp/c$r.jsonl" --quiet 2>>"$tmp/final.log" >/dev/null || fail "final run $r"
done
resumes=$(cat "$tmp"/log/*.log | grep -c "resuming from a hidden-state checkpoint")
committed=$(cat "$tmp"/log/*.log | grep -c "committed")
if grep -q "differ" "$tmp"/log/*.log "$tmp/final.log"; then
  fail "a recomputed layer differs from its record: $(grep -h differ "$tmp"/log/*.log "$tmp/final.log" | head -n 1)"
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
echo "ok: $mid kills landed mid-run, $startup during start-up ($before_store of them before the store was complete), $after after the last layer; $early runs completed, $attempts attempts, $round calibration sets, $resumes resumes from checkpoints, $committed layer commits; store clean after every kill; statistics bit-identical to uninterrupted runs (merged and per set) and to a run without a store"
