#!/usr/bin/env bash
# store_cli.sh BIN SCRATCH - the store commands on bad input: each case must exit
# non-zero (never crash: no exit status above 128) with a message naming the problem,
# and leave foreign files alone. Also: the store of a finished run is readable by
# Debian's mdb_stat / mdb_dump (lmdb-utils), and a read-only reader works beside it.
set -u
bin=$1; tmp=$2
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
"$bin/reap-genmodel" --out "$tmp/m" --layers 2 --vocab 100 --calib "$tmp/c.jsonl" --seed 3 \
  >/dev/null || exit 1

# expect NAME WANT_SUBSTRING -- COMMAND ARGS...
expect() {
  local name=$1 want=$2; shift 3
  local out rc
  out=$("$bin/reap-scorer" "$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 0 ] || [ $rc -gt 128 ]; then
    echo "FAIL $name: exit status $rc: $out"; fail=1
  elif ! grep -qF -- "$want" <<<"$out"; then
    echo "FAIL $name: message lacks '$want': $out"; fail=1
  else
    echo "ok   $name: $out"
  fi
}
score() { "$bin/reap-scorer" run --quiet --backend cpu --model "$tmp/m" --calib "$tmp/c.jsonl" "$@"; }

score --store "$tmp/st" >/dev/null 2>&1 || { echo "FAIL scoring into a store"; exit 1; }

# One run per (model, calibration) pair: a second one fails at once. The pair's lock
# file is held here with flock(1) as a running scorer would hold it.
if command -v flock >/dev/null; then
  score --store "$tmp/st" --stats-json "$tmp/ids.json" >/dev/null 2>&1
  mid=$(awk -F'"' '/"model_id"/ { print $4; exit }' "$tmp/ids.json")
  cid=$(awk -F'"' '/"calib_id"/ { print $4; exit }' "$tmp/ids.json")
  lockf="$tmp/st/checkpoints/$mid-$cid.lock"
  [ -f "$lockf" ] || { echo "FAIL no pair lock file $lockf"; fail=1; }
  echo 4242 > "$lockf"
  out=$(flock -n "$lockf" "$bin/reap-scorer" run --quiet --backend cpu --model "$tmp/m" \
        --calib "$tmp/c.jsonl" --store "$tmp/st" --force 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 0 ] && [ $rc -le 128 ] && grep -q "being scored by another run (process 4242)" <<<"$out"; then
    echo "ok   pair-locked: $out"
  else
    echo "FAIL pair-locked: exit $rc: $out"; fail=1
  fi

  # A hidden-state checkpoint that cannot be written (here: a plain file where the pair's
  # checkpoint folder goes) is a warning, not the end of the run: the rescore completes,
  # its records agree with the stored ones, and the merged statistics are unchanged.
  ckdir="$tmp/st/checkpoints/$mid-$cid"
  rm -rf "$ckdir"; echo "in the way" > "$ckdir"
  out=$(score --store "$tmp/st" --force --checkpoint-every 1 --stats-json "$tmp/ck.json" \
        2>&1 >/dev/null); rc=$?
  if [ $rc -eq 0 ] && grep -q "checkpoint after layer 0 not written" <<<"$out" \
     && ! grep -q "differ from the stored record" <<<"$out" && cmp -s "$tmp/ids.json" "$tmp/ck.json"; then
    echo "ok   checkpoint-unwritable: run completed with a warning, statistics unchanged"
  else
    echo "FAIL checkpoint-unwritable: exit $rc: $out"; fail=1
  fi
  [ "$(cat "$ckdir" 2>/dev/null)" = "in the way" ] || { echo "FAIL checkpoint-unwritable: the file in the way was touched"; fail=1; }
  rm -f "$ckdir"
fi

# A shard edited in place with its size and mtime put back (as `touch -d` or a restore
# tool can): the file-hash cache must not trust it. A copy of the model is scored into
# its own store with its files out of the cache's 2 s window (dated back; the touch sets
# their ctime to now, which nothing sets back, so the clock must pass 3 s beyond it),
# then the edit: the rerun is not "already scored" and has another model_id.
cp -r "$tmp/m" "$tmp/me"
touch -d "@$(( $(date +%s) - 60 ))" "$tmp/me"/*
settle=$(( $(date +%s) + 3 )); while [ "$(date +%s)" -le "$settle" ]; do sleep 0.2; done
me() { "$bin/reap-scorer" run --backend cpu --model "$tmp/me" --calib "$tmp/c.jsonl" --store "$tmp/st_edit" "$@"; }
me --quiet --stats-json "$tmp/me1.json" >/dev/null 2>&1 || { echo "FAIL scoring the copy"; fail=1; }
out=$(me 2>&1 >/dev/null)
grep -q "already scored" <<<"$out" || { echo "FAIL edit-in-place: the unchanged rerun was not a no-op: $out"; fail=1; }
shard=$(ls "$tmp/me"/*.safetensors | head -n 1)
python3 "$(cd "$(dirname "$0")" && pwd)/edit_keep_mtime.py" "$shard"
out=$(me --stats-json "$tmp/me2.json" 2>&1 >/dev/null); rc=$?
id1=$(awk -F'"' '/"model_id"/ { print $4; exit }' "$tmp/me1.json")
id2=$(awk -F'"' '/"model_id"/ { print $4; exit }' "$tmp/me2.json" 2>/dev/null)
if [ $rc -eq 0 ] && ! grep -q "already scored" <<<"$out" && [ -n "$id2" ] && [ "$id1" != "$id2" ]; then
  echo "ok   edit-in-place with the mtime restored: hashed again, new model_id ${id2:0:16}"
else
  echo "FAIL edit-in-place with the mtime restored: exit $rc, ids $id1 / $id2: $out"; fail=1
fi

mkdir -p "$tmp/foreign"; echo "keep me" > "$tmp/foreign/notes.txt"
expect foreign-dir "not a reap store" -- run --backend cpu --model "$tmp/m" --calib "$tmp/c.jsonl" --store "$tmp/foreign"
[ "$(cat "$tmp/foreign/notes.txt")" = "keep me" ] && [ ! -e "$tmp/foreign/data.mdb" ] \
  || { echo "FAIL foreign directory touched"; fail=1; }
expect store-is-file "not a directory" -- check --store "$tmp/foreign/notes.txt"
expect no-store "no such store directory" -- check --store "$tmp/none"
expect force-without-store "--force needs --store" -- run --model "$tmp/m" --calib "$tmp/c.jsonl" --force
expect bad-model-id "64 hex digits" -- stats --store "$tmp/st" --model-id 1234
expect unknown-model "no model" -- stats --store "$tmp/st" --model-id "$(printf 'ab%.0s' $(seq 32))"
expect unknown-calib "no complete statistics" -- stats --store "$tmp/st" --model "$tmp/m" --calib-ids "$(printf 'cd%.0s' $(seq 32))"
echo "not an export" > "$tmp/junk.reapx"
expect import-junk "not a reap export file" -- import --store "$tmp/st" --in "$tmp/junk.reapx"
expect import-missing "nope.reapx" -- import --store "$tmp/st" --in "$tmp/nope.reapx"

# Debian's tools read the store; a reader runs beside it.
if command -v mdb_stat >/dev/null; then
  mdb_stat -a "$tmp/st" | grep -q "Status of stats" || { echo "FAIL mdb_stat"; fail=1; }
  mdb_dump -s stats "$tmp/st" | grep -q "HEADER=END" || { echo "FAIL mdb_dump"; fail=1; }
  echo "ok   mdb_stat/mdb_dump read the store"
fi
"$bin/reap-scorer" check --store "$tmp/st" || fail=1

# Text calibration: tokenised only with --tokenizer; the tokenizer's digest is part of
# calib_id, so the same text and its pre-tokenised ids give the same statistics under
# different ids, and ids alone give the same calib_id with or without --tokenizer.
tok=$(cd "$(dirname "$0")" && pwd)/fixtures/tok-synth/gpt2style.json
if [ -x "$bin/reapctl" ] && [ -f "$tok" ]; then
  "$bin/reap-genmodel" --out "$tmp/mt" --layers 2 --vocab 3300 --seed 4 >/dev/null || exit 1
  for t in "the quick brown fox" "jumps over the lazy dog" "hello, world" "REAP prunes experts"; do
    printf '{"text": "%s"}\n' "$t"
  done > "$tmp/texts.jsonl"
  "$bin/reapctl" tokenize --tokenizer "$tok" < "$tmp/texts.jsonl" > "$tmp/ids.jsonl" || fail=1
  expect text-without-tokenizer "needs a tokenizer (--tokenizer)" -- run --backend cpu --model "$tmp/mt" --calib "$tmp/texts.jsonl"
  trun() { "$bin/reap-scorer" run --quiet --backend cpu --model "$tmp/mt" --seq-len 16 "$@"; }
  trun --calib "$tmp/texts.jsonl" --tokenizer "$tok" --stats-json "$tmp/t_text.json" >/dev/null || fail=1
  trun --calib "$tmp/ids.jsonl" --stats-json "$tmp/t_ids.json" >/dev/null || fail=1
  trun --calib "$tmp/ids.jsonl" --tokenizer "$tok" --stats-json "$tmp/t_ids2.json" >/dev/null || fail=1
  if grep -v calib_id "$tmp/t_text.json" | cmp -s - <(grep -v calib_id "$tmp/t_ids.json") &&
     ! cmp -s "$tmp/t_text.json" "$tmp/t_ids.json" && cmp -s "$tmp/t_ids.json" "$tmp/t_ids2.json"; then
    echo "ok   text calibration: same statistics as its token ids, calib_id covers the tokenizer"
  else
    echo "FAIL text calibration ids/statistics"; fail=1
  fi
  # The same text from a pipe: read once (a pipe cannot be read again to tokenise it),
  # the same statistics and calib_id as from the file.
  if timeout -k 5 60 "$bin/reap-scorer" run --quiet --backend cpu --model "$tmp/mt" \
       --seq-len 16 --calib <(cat "$tmp/texts.jsonl") --tokenizer "$tok" \
       --stats-json "$tmp/t_pipe.json" >/dev/null && cmp -s "$tmp/t_text.json" "$tmp/t_pipe.json"
  then
    echo "ok   text calibration from a pipe: same statistics and calib_id as from the file"
  else
    echo "FAIL text calibration from a pipe"; fail=1
  fi
fi

# Damaged stores.
cp -r "$tmp/st" "$tmp/trunc"
truncate -s 12288 "$tmp/trunc/data.mdb"
expect truncated "truncated" -- check --store "$tmp/trunc"
expect truncated-run "truncated" -- run --backend cpu --model "$tmp/m" --calib "$tmp/c.jsonl" --store "$tmp/trunc"
cp -r "$tmp/st" "$tmp/garbage"
head -c 65536 /dev/urandom > "$tmp/garbage/data.mdb"
expect garbage "damaged or not a reap store" -- check --store "$tmp/garbage"

# Damage inside pages: 16 bytes of 0xff at 4 places of every page of a copy of the store,
# then `check` and `stats`. LMDB keeps no page checksums, so some damage goes unseen and
# some sends LMDB's reads outside the file: every command must still end with a status
# of its own (never a signal death, never a hang), with a message when it fails; memory
# faults inside the store give the fault handler's message (exit 74).
pages=$(( $(stat -c %s "$tmp/st/data.mdb") / 4096 ))
n_cases=0 n_fault=0 n_err=0 swept_ok=1
for p in $(seq 0 $((pages - 1))); do
  for off in 4 8 16 40; do
    rm -rf "$tmp/dmg"; cp -r "$tmp/st" "$tmp/dmg"
    printf '\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377\377' |
      dd of="$tmp/dmg/data.mdb" bs=1 seek=$((p * 4096 + off)) conv=notrunc 2>/dev/null
    for cmd in "check --store $tmp/dmg" "stats --store $tmp/dmg --model $tmp/m"; do
      n_cases=$((n_cases + 1))
      out=$(timeout 30 "$bin/reap-scorer" $cmd 2>&1 >/dev/null); rc=$?
      if [ $rc -gt 128 ] || [ $rc -eq 124 ]; then
        echo "FAIL damaged page $p (+$off), $cmd: exit status $rc: $out"; fail=1; swept_ok=0
      elif [ $rc -eq 74 ]; then
        n_fault=$((n_fault + 1))
        grep -q "data.mdb is damaged" <<<"$out" \
          || { echo "FAIL damaged page $p (+$off): fault without the store message: $out"; fail=1; swept_ok=0; }
      elif [ $rc -ne 0 ]; then
        n_err=$((n_err + 1))
        [ -n "$out" ] || { echo "FAIL damaged page $p (+$off), $cmd: exit $rc without a message"; fail=1; swept_ok=0; }
      fi
    done
  done
done
rm -rf "$tmp/dmg"
[ $swept_ok -eq 1 ] && echo "ok   damaged pages: $n_cases commands on $pages pages, $n_fault memory faults reported (exit 74), $n_err other errors, no signal death"
[ $n_fault -gt 0 ] || echo "note: no damage reached a memory fault this time"
exit $fail
