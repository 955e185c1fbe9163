#!/bin/bash
# awq_cli.sh - AWQ int4 checkpoints end to end through the real binaries (label
# integration), checked by the independent numpy packer tests/oracle/awq_pack.py:
#   1. the packer against hand-written words (selftest);
#   2. per model (Qwen3-VL per-expert AWQ with unquantised experts named by index and by
#      an index prefix; Qwen3-VL fused plain experts with AWQ attention; Qwen3-MoE with a
#      dense layer and plain attention): reap-genmodel --awq and --awq-twin from one seed;
#      the C reader's dequantisation (test_awq dump) equals numpy's bit for bit, numpy's
#      repacking reproduces the C packer's bytes, the twin holds exactly the dequantised
#      values; numpy-packed random codes, zeros and full-mantissa scales (scramble) are
#      read back bit for bit;
#   3. reap-scorer on the AWQ checkpoint and on its twin: statistics within 1e-5 relative
#      (they are identical), and within 1e-5 of the float64 oracle run on the twin;
#   4. reap-pruner prune --ratio 0.4 --verify (structural and functional) on the AWQ
#      checkpoints: awq_pack.py pruned (kept qweight/qzeros/scales groups byte-identical,
#      config changed only in the expert count and modules_to_not_convert, the same kept
#      modules unquantised), the pruned AWQ equals the pruned twin after dequantisation,
#      prune_check.py where modules_to_not_convert needs no rewrite, and the pruned AWQ
#      checkpoint scores;
#   5. refusals: a GPTQ and a compressed-tensors config are refused naming the method.
#
# usage: awq_cli.sh BIN_DIR TEST_AWQ WORK_DIR PYTHON
set -u
BIN=$(cd "$1" && pwd) TAWQ=$(realpath "$2") WORK=$3 PY=${4:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
AWQ="$HERE/oracle/awq_pack.py"
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || exit 1
fails=0
ok()   { echo "ok   $*"; }
bad()  { echo "FAIL $*"; fails=$((fails + 1)); }
run()  { # run "what" cmd...: ok / FAIL with the output on failure
    local what=$1; shift
    if "$@" > run.txt 2>&1; then ok "$what"; else bad "$what: $(tail -5 run.txt)"; fi
}

run "awq_pack.py selftest" "$PY" "$AWQ" selftest

# name | generator options (AWQ flags added below)
cases=(
  "vlsplit|--family qwen3_vl_moe --layout split --layers 2 --hidden 64 --heads 4 --kv-heads 2 --head-dim 16 --experts 16 --top-k 4 --moe-inter 32 --vocab 200 --dtype f16 --shards 3 --group-size 32 --awq-skip layers.1.mlp.experts.3.,experts.1"
  "vlfused|--family qwen3_vl_moe --layers 2 --hidden 64 --heads 4 --kv-heads 4 --head-dim 16 --experts 8 --top-k 2 --moe-inter 32 --vocab 150 --dtype bf16 --group-size 16"
  "dense|--family qwen3_moe --layout split --layers 3 --hidden 64 --heads 4 --kv-heads 1 --head-dim 16 --experts 10 --top-k 3 --moe-inter 32 --inter 48 --mlp-only 1 --vocab 180 --dtype bf16 --group-size 16 --awq-attn 0"
)
for c in "${cases[@]}"; do
  name=${c%%|*} opts=${c#*|}
  # shellcheck disable=SC2086  # opts is a word list
  "$BIN/reap-genmodel" --out "$name" $opts --awq --seed 21 --calib "$name.jsonl" \
      --samples 10 --min-len 8 --max-len 40 > /dev/null || { bad "genmodel $name"; continue; }
  # shellcheck disable=SC2086
  "$BIN/reap-genmodel" --out "$name-twin" $opts --awq-twin --seed 21 > /dev/null \
      || { bad "genmodel $name twin"; continue; }
  run "$name: C dequantisation == numpy (bit for bit), repacking == C packing" \
      bash -c "'$TAWQ' dump '$name' '$name.dump.safetensors' && '$PY' '$AWQ' check --model '$name' --dump '$name.dump.safetensors'"
  run "$name: the twin holds the dequantised weights" "$PY" "$AWQ" twin --model "$name" --twin "$name-twin"
  run "$name: numpy-packed random codes and scales read back" \
      bash -c "'$PY' '$AWQ' scramble --model '$name' --out '$name-scr' --seed 5 && '$TAWQ' dump '$name-scr' '$name-scr.dump.safetensors' && '$PY' '$AWQ' check --model '$name-scr' --dump '$name-scr.dump.safetensors'"

  for m in "$name" "$name-twin"; do
    "$BIN/reap-scorer" run --backend cpu --model "$m" --calib "$name.jsonl" --seq-len 32 \
        --threads 2 --quiet --stats-json "$m.stats.json" > /dev/null 2> score.txt \
        || bad "score $m: $(cat score.txt)"
  done
  run "$name: AWQ vs dequantised twin statistics (rtol 1e-5)" \
      "$PY" "$HERE/oracle/compare_stats.py" "$name.stats.json" "$name-twin.stats.json" --rtol 1e-5
  run "$name: AWQ vs twin statistics identical (rtol 0)" \
      "$PY" "$HERE/oracle/compare_stats.py" "$name.stats.json" "$name-twin.stats.json" --rtol 0
  run "$name: AWQ engine vs float64 oracle on the twin (rtol 1e-5)" \
      bash -c "'$PY' '$HERE/oracle/reap_oracle.py' --model '$name-twin' --calib '$name.jsonl' --seq-len 32 --out '$name.oracle.json' && '$PY' '$HERE/oracle/compare_stats.py' '$name.stats.json' '$name.oracle.json' --rtol 1e-5"

  # Both by the AWQ checkpoint's statistics (the same keep sets): for the twin they are
  # another checkpoint's, so --force-foreign-stats.
  for m in "$name" "$name-twin"; do
    "$BIN/reap-pruner" prune --model "$m" --stats-json "$name.stats.json" --out "$m-p40" \
        --ratio 0.4 --verify --verify-calib "$name.jsonl" --verify-seq-len 32 --quiet \
        $([ "$m" = "$name-twin" ] && echo --force-foreign-stats) \
        > "$m-prune.txt" 2>&1 || bad "prune $m: $(tail -3 "$m-prune.txt")"
  done
  grep -q "structural ok" "$name-prune.txt" && grep -q "routing changed" "$name-prune.txt" \
      && ok "$name: reap-pruner --verify (structural and functional)" \
      || bad "$name: no verification report: $(cat "$name-prune.txt")"
  run "$name: pruned AWQ checkpoint (groups, config, modules_to_not_convert)" \
      "$PY" "$AWQ" pruned --orig "$name" --out "$name-p40"
  run "$name: pruned AWQ == pruned twin after dequantisation" \
      "$PY" "$AWQ" twin --model "$name-p40" --twin "$name-twin-p40"
  if [ "$name" != vlsplit ]; then  # modules_to_not_convert unchanged: the generic checker
    run "$name: prune_check.py" "$PY" "$HERE/prune_check.py" --out "$name-p40" --orig "$name"
  fi
  run "$name: the pruned AWQ checkpoint scores" \
      "$BIN/reap-scorer" run --backend cpu --model "$name-p40" --calib "$name.jsonl" \
      --seq-len 32 --threads 2 --quiet --stats-json "$name-p40.stats.json"
done

# modules_to_not_convert of the per-expert case names kept experts by their new index
"$PY" - vlsplit vlsplit-p40 <<'EOF' && ok "vlsplit: modules_to_not_convert rewritten" || bad "modules_to_not_convert"
import json, sys
a = json.load(open(sys.argv[1] + "/config.json"))["quantization_config"]["modules_to_not_convert"]
b = json.load(open(sys.argv[2] + "/config.json"))
keep = json.load(open(sys.argv[2] + "/reap_metadata.json"))["experts_to_keep"]
m = b["quantization_config"]["modules_to_not_convert"]
assert b["text_config"]["num_experts"] == 10, b["text_config"]["num_experts"]
assert a != m and "model.visual" in m and "mlp.gate" in m, m
# layer 1 expert 3 ("layers.1.mlp.experts.3.") is listed under its new index, or dropped
k1 = keep["1"]
want = "layers.1.mlp.experts.%d." % k1.index(3) if 3 in k1 else None
assert (want in m) if want else not any(x.startswith("layers.1.mlp.experts.") and x.endswith(".") for x in m), m
print("modules_to_not_convert: %d entries" % len(m))
EOF

# refusals naming the method
mkdir -p gptq && cp vlfused/*.safetensors vlfused/*.json gptq/
"$PY" - gptq/config.json <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 128}
json.dump(c, open(sys.argv[1], "w"))
EOF
if "$BIN/reap-scorer" run --model gptq --calib vlfused.jsonl --quiet > r.txt 2>&1; then
  bad "a GPTQ checkpoint was scored"
else
  grep -q '"gptq" is not supported' r.txt && ok "GPTQ refused: $(grep -o 'quant_method.*' r.txt | head -1)" \
      || bad "GPTQ refusal message: $(cat r.txt)"
fi
sed -i 's/"gptq"/"compressed-tensors"/' gptq/config.json
if "$BIN/reap-scorer" run --model gptq --calib vlfused.jsonl --quiet > r.txt 2>&1; then
  bad "a compressed-tensors checkpoint was scored"
else
  grep -q '"compressed-tensors" is not supported' r.txt && ok "compressed-tensors refused" \
      || bad "compressed-tensors refusal message: $(cat r.txt)"
fi

if [ $fails -ne 0 ]; then
  echo "awq_cli: $fails failures"
  exit 1
fi
echo "awq_cli: PASS"
