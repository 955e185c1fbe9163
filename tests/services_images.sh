#!/bin/bash
# services_images.sh - image calibration through the scorer service, driven by reapctl
# (label integration): a generated Qwen3-VL checkpoint with a vision tower and the Qwen3
# tokenizer fixture under --model-root, the PNG/JPEG images and image calibration file of
# `reap-genmodel --images` under --calib-root.
#   * `reapctl score` scores it; its header line names the images and their image tokens,
#     and the count equals the sum over the images of smart_resize's grid / merge^2,
#     computed here from the image headers and preprocessor_config.json
#     (tests/oracle/vision_e2e.py); --json carries the same two numbers;
#   * `reapctl stats` shows that many image tokens in every layer's img_tok column;
#   * a calibration file under the root whose image lies outside it is refused, naming
#     the image.
#
# usage: services_images.sh BIN_DIR WORK_DIR PYTHON TOKENIZER_DIR ORACLE_DIR
set -u
BIN=$1 WORK=$2 PY=$3 TOK=$4 ORACLE=$5
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || exit 1
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
CTL="$BIN/reapctl"
unset REAP_SCORER_ADDR REAP_PRUNER_ADDR REAP_TOKEN REAP_TOKEN_FILE REAP_TLS_CA

mkdir -p models calib || exit 1
"$BIN/reap-genmodel" --out models/vl --family qwen3_vl_moe --vision --layers 2 --hidden 32 \
    --heads 4 --kv-heads 2 --head-dim 8 --experts 6 --top-k 2 --moe-inter 16 --vocab 151936 \
    --tie 1 --seed 41 --images calib/img --n-images 5 > /dev/null || exit 1
cp "$TOK/tokenizer.json" "$TOK/tokenizer_config.json" models/vl/ || exit 1
"$PY" "$ORACLE/vision_e2e.py" index calib/img > /dev/null || exit 1
# the expected image tokens, from the image headers and preprocessor_config.json
read -r n_img n_tok < <("$PY" - "$ORACLE" calib/img models/vl <<'PYEOF'
import json, os, sys
sys.path.insert(0, sys.argv[1])
import vision_e2e
ix = json.load(open(os.path.join(sys.argv[2], "images.json")))
pp = json.load(open(os.path.join(sys.argv[3], "preprocessor_config.json")))
p, m = pp["patch_size"], pp["merge_size"]
lo = pp.get("min_pixels", pp["size"]["shortest_edge"])
hi = pp.get("max_pixels", pp["size"]["longest_edge"])
tok = 0
for ref in ix["order"]:
    w, h = ix["sizes"][ref]
    hb, wb = vision_e2e.smart_resize(h, w, p * m, lo, hi)
    tok += (hb // p) * (wb // p) // (m * m)
print(len(ix["order"]), tok)
PYEOF
)
[ "${n_tok:-0}" -gt 0 ] || { bad "expected image tokens not computed"; exit 1; }
# an image outside the calibration root, referenced from a file under it
cp calib/img/img-000.png outside.png
echo '{"image": "../../outside.png", "text": "Where is it?"}' > calib/img/escape.jsonl

"$BIN/reap-scorer" serve --store store --model-root models --calib-root calib --backend cpu \
    --threads 1 --token T0K --listen 127.0.0.1:0 > scorer.out 2> scorer.log &
pid=$!
for _ in $(seq 2400); do grep -q '^port ' scorer.out 2> /dev/null && break; sleep 0.05; done
port=$(awk '/^port /{print $2}' scorer.out)
[ -n "$port" ] || { bad "scorer did not start"; cat scorer.log; kill "$pid"; exit 1; }
export REAP_SCORER_ADDR=127.0.0.1:$port REAP_TOKEN=T0K

"$CTL" score --model vl --calib img/calib.jsonl --seq-len 256 > score.txt 2>&1
rc=$?
want="($n_img images, $n_tok image tokens)"
[ $rc -eq 0 ] && grep -qF "$want" score.txt \
    && ok "reapctl score: exit 0, header names $want" \
    || { bad "reapctl score (exit $rc) has no '$want'"; cat score.txt; }

"$CTL" score --model vl --calib img/calib.jsonl --seq-len 256 --json > score.json 2>&1
"$PY" - "$n_img" "$n_tok" score.json <<'PYEOF' && ok "reapctl score --json: tokenized has images $n_img, image_tokens $n_tok" || bad "score --json: images / image_tokens"
import json, sys
n_img, n_tok = int(sys.argv[1]), int(sys.argv[2])
for line in open(sys.argv[3]):
    ev = json.loads(line)
    t = ev.get("tokenized")
    if t is not None:
        sys.exit(0 if int(t.get("images", 0)) == n_img and int(t.get("image_tokens", 0)) == n_tok else 1)
sys.exit(1)
PYEOF

model=$("$CTL" models --json | sed -n 's/.*"model_id": *"\([0-9a-f]\{64\}\)".*/\1/p' | head -1)
"$CTL" stats "$model" > stats.txt 2>&1
# every layer row: its img_tok column (the 8th) is the image tokens
awk -v n="$n_tok" '/^ *[0-9]+ / { rows++; if ($8 != n) badr++ } END { exit !(rows == 2 && badr == 0) }' stats.txt \
    && ok "reapctl stats: img_tok $n_tok in both layers" \
    || { bad "reapctl stats: img_tok is not $n_tok in every layer"; cat stats.txt; }

"$CTL" score --model vl --calib img/escape.jsonl --seq-len 256 > escape.txt 2>&1
rc=$?
[ $rc -ne 0 ] && grep -q "outside.png" escape.txt \
    && ok "an image outside --calib-root is refused (exit $rc), named: $(grep -m1 outside.png escape.txt | cut -c1-160)" \
    || { bad "image outside the root: exit $rc"; cat escape.txt; }

kill -TERM "$pid"; wait "$pid"
if [ $fails -gt 0 ]; then echo "$fails checks FAILED"; exit 1; fi
echo "all checks passed"
