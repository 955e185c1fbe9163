#!/usr/bin/env bash
# run_vision_e2e.sh - image calibration end to end against the float64 oracles: a generated
# Qwen3-VL-MoE checkpoint with a vision tower (reap-genmodel --vision), generated PNG images
# and an image calibration file (tests/oracle/vision_e2e.py make), reap-scorer run on the
# CPU with --dump-vision, then vision_e2e.py oracle (grids against smart_resize, spans in
# the rows, the float64 vision tower on the dumped patches, reap_oracle.py --rows
# --images) and compare_stats.py (statistics <= rtol relative, counts exact).
# --genmodel-images N: the images (PNG and JPEG) and the calibration file come from
# reap-genmodel --images instead (vision_e2e.py index reads their sizes from the headers).
#
# usage: run_vision_e2e.sh BIN_DIR SCRATCH_DIR PYTHON TOKENIZER_DIR
#          (--case NAME | --genmodel-images N)
#          --seq-len N [--no-pack] [--min-pixels A] [--max-pixels B] [--vision-batch P]
#          [--rtol X]
#          -- [reap-genmodel args]
set -euo pipefail

die() { echo "run_vision_e2e: $*" >&2; exit 2; }
[ $# -ge 4 ] || die "usage: run_vision_e2e.sh BIN_DIR SCRATCH_DIR PYTHON TOKENIZER_DIR ..."
bin=$1; scratch=$2; py=$3; tok=$4
shift 4
here=$(cd "$(dirname "$0")" && pwd)
case_name=""; gen_images=""; seq_len=""; pack=(); px=(); vb=(); rtol=1e-5
while [ $# -gt 0 ]; do
  case $1 in
    --case) case_name=$2; shift 2 ;;
    --genmodel-images) gen_images=$2; shift 2 ;;
    --seq-len) seq_len=$2; shift 2 ;;
    --no-pack) pack=(--no-pack); shift ;;
    --min-pixels|--max-pixels) px+=("$1" "$2"); shift 2 ;;
    --vision-batch) vb=(--vision-batch "$2"); shift 2 ;;
    --rtol) rtol=$2; shift 2 ;;
    --) shift; break ;;
    *) die "unknown option '$1'" ;;
  esac
done
[ -n "$case_name" ] || [ -n "$gen_images" ] || die "--case or --genmodel-images is required"
[ -n "$seq_len" ] || die "--seq-len is required"
step() { echo "== $*" >&2; }

rm -rf "$scratch"
mkdir -p "$scratch"
model=$scratch/model

if [ -n "$gen_images" ]; then
  step "reap-genmodel --family qwen3_vl_moe --vision $* --images --n-images $gen_images"
  "$bin/reap-genmodel" --out "$model" --family qwen3_vl_moe --vision "$@" \
    --images "$scratch" --n-images "$gen_images"
  step "vision_e2e.py index"
  "$py" "$here/oracle/vision_e2e.py" index "$scratch"
  case_name="genmodel_images"
else
  step "reap-genmodel --family qwen3_vl_moe --vision $*"
  "$bin/reap-genmodel" --out "$model" --family qwen3_vl_moe --vision "$@"
  step "vision_e2e.py make --case $case_name"
  "$py" "$here/oracle/vision_e2e.py" make "$scratch" --case "$case_name"
fi

step "reap-scorer run --seq-len $seq_len ${pack[*]} ${px[*]} --dump-vision"
"$bin/reap-scorer" run --backend cpu --model "$model" --calib "$scratch/calib.jsonl" \
  --tokenizer "$tok" --seq-len "$seq_len" "${pack[@]}" "${px[@]}" "${vb[@]}" \
  --stats-json "$scratch/engine.json" --dump-vision "$scratch/dump" 2> "$scratch/scorer.err" \
  || { cat "$scratch/scorer.err" >&2; die "reap-scorer run failed"; }
cat "$scratch/scorer.err" >&2
batches=$(grep -c "vision tower: " "$scratch/scorer.err" || true)
echo "run_vision_e2e: $batches vision batch(es)" >&2
n_img=$("$py" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["order"]))' \
  "$scratch/images.json")
grep -q "vision tower: $n_img/$n_img images" "$scratch/scorer.err" \
  || die "no progress line 'vision tower: $n_img/$n_img images' on stderr"

step "vision_e2e.py oracle"
"$py" "$here/oracle/vision_e2e.py" oracle "$model" "$scratch" "$scratch/dump" \
  --seq-len "$seq_len" "${px[@]}" --out "$scratch/oracle.json"

step "compare_stats.py engine oracle --rtol $rtol"
"$py" "$here/oracle/compare_stats.py" "$scratch/engine.json" "$scratch/oracle.json" --rtol "$rtol"
echo "run_vision_e2e: $case_name: PASS"
