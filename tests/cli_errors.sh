#!/usr/bin/env bash
# cli_errors.sh BIN SCRATCH - reap-scorer run on bad input: every case must exit non-zero
# (never crash: no exit status above 128) with a message naming the file, line or tensor.
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
  out=$("$bin/reap-scorer" run --quiet --backend cpu "$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 0 ] || [ $rc -gt 128 ]; then
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
exit $fail
