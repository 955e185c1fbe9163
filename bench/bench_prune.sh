#!/bin/bash
# bench_prune.sh - rewrite throughput of reap-pruner against `cp` of the same bytes on the
# same disk, side by side (results in docs/benchmarks.md, "Pruning").
#
# usage: bench/bench_prune.sh BIN_DIR WORK_DIR [LAYERS (12)] [ROUNDS (3)]
#
# Model: generated Qwen3-VL-MoE, fused experts, H 1024, 64 experts top-8, I 768, BF16,
# 4 shards (12 layers: ~3.9 GB), kept in WORK_DIR between runs. Per round, in this order,
# each after dropping the page cache when the kernel lets us (else warm cache, said so):
#   cp       cp -r of the model directory, then `sync` of every copied file (the pruner
#            fsyncs everything it writes, so the baseline does too)
#   prune0   reap-pruner prune --n-prune 0: exactly the same bytes as cp
#   prune40  reap-pruner prune --ratio 0.4: 40% of the experts dropped
#   prune40s the same with --store: the input digests come from the score store's
#            file-hash cache, filled once before the rounds by a tiny scoring run, as
#            the scorer fills it in real use (the service path always works this way)
# Reported per run: bytes written, seconds and MB/s of the rewrite (tensor data + index +
# config + other files, fsynced; what the pruner reports) and of the whole command
# (adds the statistics read and the manifest: BLAKE2b-256 of every input file, unless
# known, and BLAKE2b-256 + SHA-256 of every output file, shards hashed in the background
# during the rewrite), and its peak RSS. Ratio = prune MB/s / cp MB/s.
set -u
BIN=$(cd "$1" && pwd) WORK=$2 LAYERS=${3:-12} ROUNDS=${4:-3}
mkdir -p "$WORK" && cd "$WORK" || exit 1
if [ ! -f model.complete-$LAYERS ]; then
    rm -rf model model.complete-*
    echo "generating a $LAYERS-layer model ..."
    "$BIN/reap-genmodel" --out model --family qwen3_vl_moe --layers "$LAYERS" --hidden 1024 \
        --heads 8 --kv-heads 2 --head-dim 128 --experts 64 --top-k 8 --moe-inter 768 \
        --inter 1024 --vocab 32000 --shards 4 --seed 3 > /dev/null || exit 1
    touch model.complete-$LAYERS
fi
python3 - "$LAYERS" > stats.json << 'PYEOF'
import json, random, sys
L, E = int(sys.argv[1]), 64
rnd = random.Random(1)
layers = []
for l in range(L):
    c = [rnd.randint(1, 1000) for _ in range(E)]
    s = [rnd.random() * n for n in c]
    layers.append({"layer": l, "n_experts": E, "top_k": 8, "tokens": sum(c) // 8,
                   "count": c, "sum_gate_norm": s, "sum_norm": [2 * x for x in s],
                   "sum_gate": [0.1 * n for n in c], "max_act": [rnd.random() for _ in c]})
print(json.dumps({"format": "reap-stats/1", "model_id": None, "calib_id": None,
                  "tokens": 0, "layers": layers}))
PYEOF

if [ ! -f store.complete-$LAYERS ]; then
    rm -rf st store.complete-*
    "$BIN/reap-genmodel" --out unused --calib calib1.jsonl --samples 1 --vocab 32000 \
        > /dev/null && rm -rf unused || exit 1
    sleep 3 # files written in the last 2 s are hashed but not cached (store/identity.h)
    "$BIN/reap-scorer" run --model model --calib calib1.jsonl --seq-len 8 --store st \
        --quiet > /dev/null || exit 1
    touch store.complete-$LAYERS
fi

drop_caches() {
    sync
    if echo 3 > /proc/sys/vm/drop_caches 2> /dev/null; then CACHE=cold; else CACHE=warm; fi
}
now() { date +%s.%N; }
mbps() { python3 -c "import sys; print('%.0f' % (int(sys.argv[1]) / 1e6 / float(sys.argv[2])))" "$@"; }

BYTES=$(du -sb model | cut -f1)
printf "%-8s %-5s %6s %12s %9s %8s %9s %8s %9s\n" run cache round bytes rewrite_s MB/s \
    total_s MB/s peak_RSS
for r in $(seq 1 "$ROUNDS"); do
    rm -rf cpout; drop_caches
    t0=$(now); cp -r model cpout && sync cpout/*; t1=$(now)
    cps=$(python3 -c "print($t1 - $t0)")
    printf "%-8s %-5s %6d %12d %9.2f %8s %9.2f %8s %9s\n" cp $CACHE "$r" "$BYTES" "$cps" \
        "$(mbps "$BYTES" "$cps")" "$cps" "$(mbps "$BYTES" "$cps")" -
    rm -rf cpout
    for mode in prune0 prune40 prune40s; do
        rm -rf out; drop_caches
        case $mode in
            prune0) arg="--n-prune 0" ;;
            prune40) arg="--ratio 0.4" ;;
            prune40s) arg="--ratio 0.4 --store st" ;;
        esac
        t0=$(now)
        /usr/bin/time -v "$BIN/reap-pruner" prune --model model --stats-json stats.json \
            --out out $arg --quiet > prune.txt 2> time.txt || { cat prune.txt time.txt; exit 1; }
        t1=$(now)
        tot=$(python3 -c "print($t1 - $t0)")
        rws=$(sed -n 's/.* in \([0-9.]*\) s (.*/\1/p' prune.txt)
        ob=$(du -sb out | cut -f1)
        rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' time.txt)
        printf "%-8s %-5s %6d %12d %9.2f %8s %9.2f %8s %7dMB\n" $mode $CACHE "$r" "$ob" "$rws" \
            "$(mbps "$ob" "$rws")" "$tot" "$(mbps "$ob" "$tot")" $((rss / 1024))
    done
    rm -rf out
done
