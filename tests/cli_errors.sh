#!/usr/bin/env bash
# cli_errors.sh BIN SCRATCH - reap-scorer run on bad input: every case must exit non-zero
# (never crash: no exit status above 128) with a message naming the file, line or tensor.
# Files that are FIFOs (config.json, the index, a shard, tokenizer.json, a manifest's
# signature for reapctl verify) must be refused at once: every command runs under a
# timeout, so a command that waits on a FIFO fails the test instead of hanging it. A
# calibration FIFO is read (--calib /dev/stdin works), and SIGTERM ends a run waiting
# on one.
set -u
bin=$1; tmp=$2
rm -rf "$tmp"; mkdir -p "$tmp"
fail=0
"$bin/reap-genmodel" --out "$tmp/m" --layers 2 --vocab 100 --seed 3 >/dev/null || exit 1
printf '{"input_ids": [1, 2, 3]}\n' > "$tmp/ok.jsonl"

# expect NAME WANT_SUBSTRING -- ARGS...
expect() {
  local name=$1 want=$2; shift 3
  local out rc
  out=$(timeout -k 5 30 "$bin/reap-scorer" run --quiet --backend cpu "$@" 2>&1 >/dev/null)
  rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "FAIL $name: still running after 30 s (blocked)"; fail=1
  elif [ $rc -eq 0 ] || [ $rc -gt 128 ]; then
    echo "FAIL $name: exit status $rc"; fail=1
  elif ! grep -qF -- "$want" <<<"$out"; then
    echo "FAIL $name: message lacks '$want': $out"; fail=1
  else
    echo "ok   $name: $out"
  fi
}

: > "$tmp/empty.jsonl"
printf '{"input_ids": [1, 2]}\n{"input_ids": [1, oops]}\n' > "$tmp/badjson.jsonl"
printf '{"input_ids": [1, 2]}\n\n{"input_ids": [5, 100]}\n' > "$tmp/vocab.jsonl"
printf '{"text": "hello"}\n' > "$tmp/shape.jsonl"
expect missing-model "--model" -- --calib "$tmp/ok.jsonl"
expect no-such-dir "config.json" -- --model "$tmp/nope" --calib "$tmp/ok.jsonl"
expect empty-calib "empty.jsonl" -- --model "$tmp/m" --calib "$tmp/empty.jsonl"
expect bad-json "badjson.jsonl:2" -- --model "$tmp/m" --calib "$tmp/badjson.jsonl"
expect id-out-of-range "vocab.jsonl:3" -- --model "$tmp/m" --calib "$tmp/vocab.jsonl"
expect no-input-ids "shape.jsonl:1" -- --model "$tmp/m" --calib "$tmp/shape.jsonl"
expect bad-seq-len "seq-len" -- --model "$tmp/m" --calib "$tmp/ok.jsonl" --seq-len 0
expect bad-backend "backend" -- --model "$tmp/m" --calib "$tmp/ok.jsonl" --backend tpu
expect seed-without-shuffle "only applies with --shuffle" -- --model "$tmp/m" --calib "$tmp/ok.jsonl" --seed 3
expect bad-seed "not an integer >= 0" -- --model "$tmp/m" --calib "$tmp/ok.jsonl" --shuffle --seed -2

# A shard cut short: header validation names the shard.
cp -r "$tmp/m" "$tmp/trunc"
shard=$(ls "$tmp/trunc"/*.safetensors | head -n 1)
truncate -s -5 "$shard"
expect truncated-shard "$(basename "$shard")" -- --model "$tmp/trunc" --calib "$tmp/ok.jsonl"

# config.json that is not JSON.
cp -r "$tmp/m" "$tmp/badcfg"
echo '{"model_type": "qwen3_moe",' > "$tmp/badcfg/config.json"
expect bad-config "config.json" -- --model "$tmp/badcfg" --calib "$tmp/ok.jsonl"
# config.json values out of bounds or disagreeing with the shards: refused up front,
# naming config.json and the field. cfgvar NAME 'sed expression' makes a copy of the model.
cfgvar() { rm -rf "$tmp/$1"; cp -r "$tmp/m" "$tmp/$1"; sed -i "$2" "$tmp/$1/config.json"; }
# 2^31-1 layers: refused before anything is sized from it. The run gets 1 GiB of address
# space: a build that sized tables from the value first fails on memory instead (its
# message then lacks the field) rather than growing to gigabytes.
cfgvar huge-layers 's/"num_hidden_layers": 2,/"num_hidden_layers": 2147483647,/'
out=$( (ulimit -v 1048576; "$bin/reap-scorer" run --quiet --backend cpu --model "$tmp/huge-layers" \
        --calib "$tmp/ok.jsonl") 2>&1 >/dev/null); rc=$?
want="huge-layers/config.json: num_hidden_layers = 2147483647 is above the limit"
if [ $rc -eq 0 ] || [ $rc -gt 128 ] || ! grep -qF -- "$want" <<<"$out"; then
  echo "FAIL huge-layers: exit status $rc, message lacks '$want': $out"; fail=1
else
  echo "ok   huge-layers: $out"
fi
cfgvar more-layers 's/"num_hidden_layers": 2,/"num_hidden_layers": 40,/'
expect more-layers "more-layers/config.json: num_hidden_layers = 40, but the checkpoint holds 2 layers" \
  -- --model "$tmp/more-layers" --calib "$tmp/ok.jsonl"
cfgvar more-experts 's/"num_experts": 8,/"num_experts": 16,/'
expect more-experts "config.json: num_experts = 16 does not match the checkpoint" \
  -- --model "$tmp/more-experts" --calib "$tmp/ok.jsonl"
cfgvar hidden 's/"hidden_size": 64,/"hidden_size": 128,/'
expect hidden "config.json: hidden_size = 128 does not match the checkpoint" \
  -- --model "$tmp/hidden" --calib "$tmp/ok.jsonl"
cfgvar vocab-size 's/"vocab_size": 100/"vocab_size": 1000/'
expect vocab-size "config.json: vocab_size = 1000 does not match the checkpoint" \
  -- --model "$tmp/vocab-size" --calib "$tmp/ok.jsonl"
cfgvar top-k 's/"num_experts_per_tok": 2,/"num_experts_per_tok": 9,/'
expect top-k "config.json: num_experts_per_tok = 9 must be in [1, num_experts = 8]" \
  -- --model "$tmp/top-k" --calib "$tmp/ok.jsonl"
cfgvar huge-experts 's/"num_experts": 8,/"num_experts": 1000000000,/'
expect huge-experts "config.json: num_experts = 1000000000 is above the limit" \
  -- --model "$tmp/huge-experts" --calib "$tmp/ok.jsonl"

# FIFOs where regular files belong: refused at once, named, with their type.
"$bin/reap-genmodel" --out "$tmp/m2" --layers 2 --vocab 100 --seed 3 --shards 2 >/dev/null ||
  exit 1
fifo_model() {  # fifo_model NAME FILE: a copy of m2 with FILE replaced by a FIFO
  cp -r "$tmp/m2" "$tmp/$1"; rm -f "$tmp/$1/$2"; mkfifo "$tmp/$1/$2"
}
fifo_model fifo-config config.json
expect fifo-config "config.json: is a FIFO, not a regular file" -- \
  --model "$tmp/fifo-config" --calib "$tmp/ok.jsonl"
fifo_model fifo-index model.safetensors.index.json
expect fifo-index "model.safetensors.index.json: is a FIFO" -- \
  --model "$tmp/fifo-index" --calib "$tmp/ok.jsonl"
shard=$(cd "$tmp/m2" && ls *.safetensors | head -n 1)
fifo_model fifo-shard "$shard"
expect fifo-shard "$shard: is a FIFO" -- --model "$tmp/fifo-shard" --calib "$tmp/ok.jsonl"
fifo_model fifo-tok tokenizer.json
printf '{"text": "hello"}\n' > "$tmp/text.jsonl"
expect fifo-tokenizer "tokenizer.json: is a FIFO" -- \
  --model "$tmp/fifo-tok" --calib "$tmp/text.jsonl"
expect dir-calib "is a directory" -- --model "$tmp/m" --calib "$tmp/m2"

# A calibration FIFO is a stream: read to its end...
if out=$(timeout -k 5 30 "$bin/reap-scorer" run --quiet --backend cpu --model "$tmp/m" \
           --calib /dev/stdin < <(cat "$tmp/ok.jsonl") 2>&1 >/dev/null); then
  echo "ok   calib-pipe: scored from a pipe"
else
  echo "FAIL calib-pipe: exit status $?: $out"; fail=1
fi
# ...and SIGTERM ends a run that waits on one. The gate: the writer's open returns once
# the scorer has the FIFO open (its handler is installed by then); the writer stays open
# (no end of file) until the scorer has gone.
mkfifo "$tmp/calib.fifo"
"$bin/reap-scorer" run --quiet --backend cpu --model "$tmp/m" --calib "$tmp/calib.fifo" \
  2>"$tmp/sigterm.err" >/dev/null &
pid=$!
timeout -k 5 30 bash -c 'exec 3>"$0"; kill -TERM "$1"; while kill -0 "$1" 2>/dev/null; do
  sleep 0.1; done' "$tmp/calib.fifo" "$pid"
trc=$?
wait "$pid"; rc=$?
if [ $trc -ne 0 ]; then
  kill -KILL "$pid" 2>/dev/null
  echo "FAIL calib-fifo-sigterm: still running 30 s after SIGTERM (blocked)"; fail=1
elif [ $rc -eq 0 ] || [ $rc -gt 128 ] || ! grep -q "stopped on request" "$tmp/sigterm.err"; then
  echo "FAIL calib-fifo-sigterm: exit status $rc: $(cat "$tmp/sigterm.err")"; fail=1
else
  echo "ok   calib-fifo-sigterm: $(cat "$tmp/sigterm.err")"
fi

# reapctl verify of an output whose signature is a FIFO: a failed check (3), named.
"$bin/reap-scorer" run --quiet --backend cpu --model "$tmp/m2" --calib "$tmp/ok.jsonl" \
  --stats-json "$tmp/s.json" >/dev/null 2>&1 &&
  "$bin/reapctl" keygen --out "$tmp/k" >/dev/null 2>&1 &&
  "$bin/reap-pruner" prune --quiet --model "$tmp/m2" --stats-json "$tmp/s.json" \
    --out "$tmp/pruned" --ratio 0.25 --key "$tmp/k.key" >/dev/null 2>&1 || {
  echo "FAIL verify-fifo-sig: could not make a pruned output"; exit 1; }
rm "$tmp/pruned/reap-manifest.json.minisig"; mkfifo "$tmp/pruned/reap-manifest.json.minisig"
out=$(timeout -k 5 30 "$bin/reapctl" verify "$tmp/pruned" --pubkey "$tmp/k.pub" 2>&1); rc=$?
if [ $rc -ne 3 ] || ! grep -qF "reap-manifest.json.minisig: is a FIFO" <<<"$out"; then
  echo "FAIL verify-fifo-sig: exit status $rc (want 3): $out"; fail=1
else
  echo "ok   verify-fifo-sig: $(grep -F FIFO <<<"$out")"
fi

# reapctl's command lines (one parser for every command): --help prints the command's
# usage on stdout and exits 0; an unknown option exits 2 naming the command, with the
# usage on stderr; neither needs a server.
for c in keepset verify keygen tokenize score watch runs cancel models stats prune health; do
  out=$(timeout -k 5 30 "$bin/reapctl" "$c" --help 2>/dev/null); rc=$?
  if [ $rc -ne 0 ] || ! grep -qF "usage: reapctl $c" <<<"$out"; then
    echo "FAIL reapctl-$c-help: exit status $rc: $out"; fail=1
  fi
  out=$(timeout -k 5 30 "$bin/reapctl" "$c" --bogus 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 2 ] || ! grep -qF "reapctl $c: unknown option '--bogus'" <<<"$out" ||
     ! grep -qF "usage: reapctl $c" <<<"$out"; then
    echo "FAIL reapctl-$c-bogus: exit status $rc (want 2): $out"; fail=1
  else
    echo "ok   reapctl-$c: --help exits 0, --bogus exits 2 naming the command"
  fi
done
exit $fail
