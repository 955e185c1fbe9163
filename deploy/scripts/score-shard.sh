#!/bin/sh
# score-shard.sh - one pod of the scale-out Indexed Job (installed in the image as
# reap-score-shard). Pod i (JOB_COMPLETION_INDEX) scores SHARD_CALIB_DIR/calib-shard-i.jsonl
# (made by split-calib.sh) into its own node-local store SHARD_STORE, then exports the
# store's records of the model to SHARD_EXPORT_DIR/shard-i.reapx (written under a
# temporary name and renamed, so a file there is always complete).
#   JOB_COMPLETION_INDEX  shard index (set by Kubernetes for completionMode: Indexed)
#   SHARD_MODEL           checkpoint directory
#   SHARD_CALIB_DIR       directory of calib-shard-%d.jsonl
#   SHARD_EXPORT_DIR      shared directory the exports go to
#   SHARD_STORE           this pod's store (default /scratch/store: an emptyDir)
#   SHARD_RUN_ARGS        more reap-scorer run options (default --max-samples 0: every
#                         item of the shard; add --no-pack to make N shards score exactly
#                         the rows of one pass)
# REAP_* settings (REAP_BACKEND, REAP_SEQ_LEN, ...) apply as for reap-scorer run.
# A container restarted in the same pod resumes from the store's last committed layer.
set -eu
i=${JOB_COMPLETION_INDEX:?JOB_COMPLETION_INDEX is not set}
model=${SHARD_MODEL:?SHARD_MODEL is not set}
calib=$(printf '%s/calib-shard-%d.jsonl' "${SHARD_CALIB_DIR:?SHARD_CALIB_DIR is not set}" "$i")
exports=${SHARD_EXPORT_DIR:?SHARD_EXPORT_DIR is not set}
store=${SHARD_STORE:-/scratch/store}
out=$exports/shard-$i.reapx
mkdir -p "$exports"
echo "score-shard: shard $i: $calib -> $store -> $out" >&2
# shellcheck disable=SC2086  # SHARD_RUN_ARGS is a list of options
reap-scorer run --model "$model" --calib "$calib" --store "$store" ${SHARD_RUN_ARGS:---max-samples 0}
reap-scorer export --store "$store" --model "$model" --out "$out.tmp"
mv -f "$out.tmp" "$out"
echo "score-shard: shard $i exported to $out" >&2
