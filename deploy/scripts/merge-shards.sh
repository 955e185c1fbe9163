#!/bin/sh
# merge-shards.sh DIR N - the merge step of the scale-out (installed in the image as
# reap-merge-shards): imports DIR/shard-0.reapx .. shard-(N-1).reapx into the store
# REAP_STORE_PATH with reap-scorer import (verified and idempotent: a shard imported
# twice adds nothing). Refuses to start unless all N exports are present. Run it where
# the store lives and in the PID namespace of every other process using the store: in
# the scorer container (kubectl exec) or in the merge Job while the Deployment is
# scaled to 0 (LMDB reader slots are keyed by PID).
set -eu
[ $# -eq 2 ] || { echo "usage: merge-shards.sh DIR N" >&2; exit 2; }
dir=$1; n=$2
store=${REAP_STORE_PATH:?REAP_STORE_PATH is not set}
i=0
while [ "$i" -lt "$n" ]; do
  [ -f "$dir/shard-$i.reapx" ] || { echo "merge-shards: $dir/shard-$i.reapx is missing" >&2; exit 1; }
  i=$((i + 1))
done
i=0
while [ "$i" -lt "$n" ]; do
  reap-scorer import --store "$store" --in "$dir/shard-$i.reapx"
  i=$((i + 1))
done
echo "merge-shards: $n shards imported into $store" >&2
