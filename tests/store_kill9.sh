#!/usr/bin/env bash
# store_kill9.sh BIN SCRATCH [KILLS] - crash safety of `reap-scorer run --store`.
#
# Scores an 8-layer generated model on several calibration sets into one store, killing
# the scorer with SIGKILL at random moments, at least KILLS (default 20) of them mid-run:
# the attempt's own stderr log shows that scoring had begun (its "starting at layer" or
# "resuming from a hidden-state checkpoint" line, printed when the run starts scoring) and
# not that it had ended (its last layer's line, or "already scored"). Each attempt runs
# with `--layer-gate FIFO` holding it after a random number of layers short of the last,
# so a kill after scoring began is mid-run however fast the machine is; the moment of the
# kill stays random (uniform over the next two layer times, the layer time re-measured
# from every attempt's log). Every fifth attempt kills at a random moment of the start-up
# instead (process start, store creation, hashing, loading); those are counted
# separately. After every kill the store must
# open clean (mdb_stat of Debian's lmdb-utils, and `reap-scorer check`, which decodes and
# verifies every record; only a kill during start-up may leave an interrupted creation);
# the rerun resumes from the newest hidden-state checkpoint (every 2 layers, so committed
# layers are also recomputed and compared with their records). After 5 kills a round
# completes its calibration set without a gate and the next round starts on another set
# in the same store. At the end the statistics in that
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
# Each attempt runs with a --layer-gate FIFO that lets K layers through (K random, small
# enough that the run cannot reach its last layer) and then holds the run: it cannot
# finish, so a kill after scoring began
# lands mid-run whatever the speed of the machine (in one of the K layers, in a commit,
# or at the gate). Every fifth attempt kills at a random moment of the start-up instead.
# A round's first attempt lets 3 layers through and is killed at a random moment after
# the third is committed, so a checkpoint exists and the next attempt resumes from it.
# After KILLS_PER_ROUND kills the set is completed without a gate, and the next round
# starts on another set.
kills_per_round=5
max_rounds=$(( (want_kills * 5 / 4 + kills_per_round - 1) / kills_per_round + 1 ))
[ $max_rounds -le 12 ] || fail "KILLS $want_kills needs more than the 12 calibration sets"
while [ $mid -lt "$want_kills" ]; do
  [ $round -lt $max_rounds ] || fail "only $mid kills mid-run in $round rounds"
  c="$tmp/c$round.jsonl"
  for try in $(seq 1 $kills_per_round); do
    attempts=$((attempts + 1))
    log="$tmp/log/r${round}a$try.log"   # this attempt's stderr alone
    gate="$tmp/gate"
    rm -f "$gate"; mkfifo "$gate" || fail "mkfifo"
    exec 3<> "$gate"
    # K never lets the run finish: it resumes at or before the highest layer this round
    # has committed (done), so K <= layers - 1 - done keeps it short of the last layer
    # (K = 0: held before its first layer, after "starting" / "resuming" was logged).
    done=$(cat "$tmp"/log/r${round}a*.log 2>/dev/null | awk -v n=$layers \
      '$1 == "layer" { split($2, a, "/"); if (a[1] + 0 > m) m = a[1] + 0 } END { print m + 0 }')
    room=$((layers - 1 - done))
    if [ "$try" -eq 1 ]; then k=3; elif [ $room -gt 0 ]; then k=$((1 + RANDOM % room)); else k=0; fi
    for ((i = 0; i < k; i++)); do printf g >&3; done
    t0=$(now)
    # The binary itself in the background (not a function: $! must be the scorer).
    "$bin/reap-scorer" run --model "$tmp/m" --calib "$c" --seq-len 128 --store "$tmp/st" \
      --checkpoint-every 2 --backend cpu --threads 2 --layer-gate "$gate" 2>"$log" >/dev/null &
    pid=$!
    if [ $((attempts % 5)) -eq 0 ]; then
      # Uniform in the start-up (as last measured).
      delay=$(awk -v r=$RANDOM -v u="$t_up" 'BEGIN { printf "%.3f", r / 32768 * u }')
    else
      # Once scoring has begun (round's first attempt: once 3 layers are committed):
      # uniform in [0, 2 layer times] (the gate holds the run after its K layers).
      polls=0
      until grep -Eqs "$began" "$log" && { [ "$try" -ne 1 ] || grep -Eqs "^layer +3/$layers " "$log"; }; do
        kill -0 $pid 2>/dev/null || break       # ended (failed)
        polls=$((polls + 1))
        [ $polls -lt 30000 ] || fail "attempt $attempts: scoring never began: $(tail -n 3 "$log")"
        sleep 0.01
      done
      grep -Eqs "$began" "$log" && t_up=$(echo "$(now) - $t0" | bc)
      delay=$(awk -v r=$RANDOM -v l="$lt" 'BEGIN { printf "%.3f", r / 32768 * 2 * l }')
    fi
    sleep "$delay"
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null; rc=$?
    exec 3>&-
    l=$(layer_time "$log"); [ -z "$l" ] || lt=$l
    [ $rc -eq 137 ] || fail "attempt $attempts: the run exited $rc before the kill: $(tail -n 3 "$log")"
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
  done
  # Complete the set (no gate): resumes from the newest checkpoint.
  run "$tmp/st" "$c" 2>"$tmp/log/r${round}done.log" >/dev/null \
    || fail "completing set $round: $(tail -n 3 "$tmp/log/r${round}done.log")"
  early=$((early + 1))
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
