#!/usr/bin/env bash
# run_oracle_compare.sh - one integration case: generate a tiny checkpoint, score it with
# the engine (reap-scorer run), compute the same statistics with the float64 oracle
# (tests/oracle/reap_oracle.py) and compare them (tests/oracle/compare_stats.py).
#
# usage: run_oracle_compare.sh BIN_DIR SCRATCH_DIR [options] -- [reap-genmodel args]
#   BIN_DIR           holds reap-genmodel and reap-scorer
#   SCRATCH_DIR       emptied and reused: model/, calib.jsonl, engine.json, oracle.json
# options:
#   --python PY       interpreter with numpy (default: $REAP_PYTHON, /usr/bin/python3, python3)
#   --seq-len N       row length (default 32)
#   --no-pack         one row per sample (scorer and oracle)
#   --max-samples N   use only the first N samples (scorer and oracle)
#   --samples N --min-len A --max-len B --calib-seed S   calibration file to generate
#   --scorer-arg ARG  extra argument for reap-scorer run (repeatable)
#   --recheck ARGS    score a second time with these extra scorer arguments (one word
#                     list, e.g. "--threads 1 --batch-size 1") and require statistics
#                     identical to the first run (determinism across threads/batches)
#   --rtol X          tolerance for compare_stats.py (default 1e-5)
# Exit status: 0 when everything matches, non-zero otherwise (the failing step is named).
set -euo pipefail

die() { echo "run_oracle_compare: $*" >&2; exit 2; }

[ $# -ge 2 ] || die "usage: run_oracle_compare.sh BIN_DIR SCRATCH_DIR [options] -- [genmodel args]"
bin=$1
scratch=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
py=${REAP_PYTHON:-}
if [ -z "$py" ]; then
  if [ -x /usr/bin/python3 ]; then py=/usr/bin/python3; else py=python3; fi
fi
seq_len=32
rtol=1e-5
pack=()
maxs=()
calib=(--samples 8 --min-len 4 --max-len 40)
scorer_extra=()
recheck=""
while [ $# -gt 0 ]; do
  case $1 in
    --python) py=$2; shift 2 ;;
    --seq-len) seq_len=$2; shift 2 ;;
    --no-pack) pack=(--no-pack); shift ;;
    --max-samples) maxs=(--max-samples "$2"); shift 2 ;;
    --samples|--min-len|--max-len|--calib-seed) calib+=("$1" "$2"); shift 2 ;;
    --scorer-arg) scorer_extra+=("$2"); shift 2 ;;
    --recheck) recheck=$2; shift 2 ;;
    --rtol) rtol=$2; shift 2 ;;
    --) shift; break ;;
    *) die "unknown option '$1'" ;;
  esac
done
gen_args=("$@")

step() { echo "== $*" >&2; }

rm -rf "$scratch"
mkdir -p "$scratch"
model=$scratch/model
cal=$scratch/calib.jsonl

step "reap-genmodel ${gen_args[*]}"
"$bin/reap-genmodel" --out "$model" "${gen_args[@]}" --calib "$cal" "${calib[@]}"

step "reap-scorer run --seq-len $seq_len ${pack[*]} ${maxs[*]} ${scorer_extra[*]}"
"$bin/reap-scorer" run --backend cpu --model "$model" --calib "$cal" --seq-len "$seq_len" "${pack[@]}" \
  "${maxs[@]}" "${scorer_extra[@]}" --stats-json "$scratch/engine.json"

step "reap_oracle.py"
"$py" "$here/oracle/reap_oracle.py" --model "$model" --calib "$cal" --seq-len "$seq_len" \
  "${pack[@]}" "${maxs[@]}" --out "$scratch/oracle.json"

step "compare_stats.py engine oracle --rtol $rtol"
"$py" "$here/oracle/compare_stats.py" "$scratch/engine.json" "$scratch/oracle.json" \
  --rtol "$rtol"

if [ -n "$recheck" ]; then
  # shellcheck disable=SC2206  # word splitting of the recheck list is intended
  again=($recheck)
  step "reap-scorer run again with ${again[*]}: statistics must be identical"
  "$bin/reap-scorer" run --backend cpu --model "$model" --calib "$cal" --seq-len "$seq_len" "${pack[@]}" \
    "${maxs[@]}" "${scorer_extra[@]}" "${again[@]}" --stats-json "$scratch/engine2.json"
  "$py" "$here/oracle/compare_stats.py" "$scratch/engine2.json" "$scratch/engine.json" \
    --rtol 0
fi
echo "run_oracle_compare: PASS ($scratch)"
