#!/bin/sh
# split-calib.sh FILE.jsonl N OUTDIR - split a JSON Lines calibration file into N
# contiguous shards OUTDIR/calib-shard-0.jsonl .. calib-shard-(N-1).jsonl, the names the
# Indexed Job's pod i reads (deploy/scripts/score-shard.sh). Lines are kept in order and
# every line lands in exactly one shard (sizes differ by at most one line). JSON Lines
# only: convert a JSON array first (e.g. jq -c '.[]').
set -eu
[ $# -eq 3 ] || { echo "usage: split-calib.sh FILE.jsonl N OUTDIR" >&2; exit 2; }
file=$1; n=$2; dir=$3
case "$n" in ''|*[!0-9]*|0) echo "split-calib.sh: N must be a positive integer" >&2; exit 2 ;; esac
mkdir -p "$dir"
total=$(grep -c . "$file" || true)
[ "$total" -ge "$n" ] || { echo "split-calib.sh: $file has $total items, fewer than $n" >&2; exit 1; }
grep . "$file" | awk -v n="$n" -v total="$total" -v dir="$dir" '
  { i = int((NR - 1) * n / total); print > (dir "/calib-shard-" i ".jsonl") }'
echo "split-calib.sh: $total items -> $n shards in $dir"
