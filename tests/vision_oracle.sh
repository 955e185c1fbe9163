#!/usr/bin/env bash
# vision_oracle.sh - one CPU vision tower case against the float64 oracle.
#   vision_oracle.sh BIN_DIR TEST_VISION PYTHON WORK "GENMODEL OPTIONS" "t,h,w t,h,w ..."
# Writes a --vision qwen3_vl_moe checkpoint with reap-genmodel, runs the tower on seeded
# random patches (test_vision --dump) and compares with tests/oracle/vision_oracle.py
# (relative L2 error <= 1e-5 for the merged features and every deepstack set).
set -euo pipefail
bin=$1 tv=$2 py=$3 work=$4 genopts=$5 grids=$6
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$work"
mkdir -p "$work"
# shellcheck disable=SC2086  # option lists are split on purpose
"$bin/reap-genmodel" --out "$work/model" --family qwen3_vl_moe --vision $genopts
# shellcheck disable=SC2086
"$tv" --dump "$work/model" "$work/dump" $grids
"$py" "$here/oracle/vision_oracle.py" "$work/model" "$work/dump" --tol 1e-5
