#!/bin/bash
# prune_cli.sh - the pruner end to end through its real binaries (label integration):
# reap-genmodel -> reap-scorer run -> reapctl keygen -> reap-pruner prune --key --verify
# -> the stock `minisign -Vm` and `reapctl verify` accept it -> tampering with a file,
# the manifest or the trusted comment is caught -> a key made by `minisign -G -W` signs
# too -> the errors a user can hit -> tests/prune_check.py checks names, shapes and
# values from Python (with the real safetensors library when it can be installed into a
# venv from PyPI; otherwise with the oracle's reader, and the output says so).
#
# usage: prune_cli.sh BIN_DIR WORK_DIR PYTHON
set -u
BIN=$1 WORK=$2 PY=${3:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || exit 1
fails=0
ok()   { echo "ok   $*"; }
bad()  { echo "FAIL $*"; fails=$((fails + 1)); }
expect_fail() { # expect_fail "needle" cmd...: non-zero exit and stderr/stdout containing needle
    local needle=$1; shift
    if "$@" > out.txt 2>&1; then bad "$* succeeded"; return; fi
    if grep -q -- "$needle" out.txt; then ok "refused: $needle"; else bad "$*: no '$needle' in: $(cat out.txt)"; fi
}

"$BIN/reap-genmodel" --out m --family qwen3_vl_moe --layers 3 --experts 10 --top-k 2 \
    --shards 3 --calib calib.jsonl --samples 12 --seed 5 > /dev/null || exit 1
"$BIN/reap-genmodel" --out unused --calib heldout.jsonl --samples 6 --vocab 128 \
    --calib-seed 99 > /dev/null || exit 1
echo '{"bos_token": "<s>"}' > m/tokenizer_config.json
echo '{"max_new_tokens": 8}' > m/generation_config.json
"$BIN/reap-scorer" run --model m --calib calib.jsonl --seq-len 48 --stats-json stats.json \
    --quiet --threads 2 || exit 1

"$BIN/reapctl" keygen --out reap > keygen.txt || exit 1
PUB=$(sed -n 's/.*-P //p' keygen.txt)
"$BIN/reapctl" keepset --stats-json stats.json --ratio 0.4 --model m --json > keep.json \
    && "$PY" -c "import json,sys; d=json.load(open('keep.json')); assert d['n_keep']==6 and len(d['experts_to_keep'])==3" \
    && ok "reapctl keepset --json: 10 -> 6 experts in 3 layers" || bad "keepset"
[ ! -e out ] || bad "keepset wrote something"

MID=$("$PY" -c "import json; print(json.load(open('stats.json'))['model_id'])")
"$BIN/reap-pruner" prune --model m --stats-json stats.json --out out --ratio 0.4 \
    --key reap.key --verify --verify-calib heldout.jsonl --verify-seq-len 32 \
    --calib-id calibA,calibB --model-id "$MID" --quiet > prune.txt 2>&1 \
    && ok "reap-pruner prune --verify" || { bad "prune: $(cat prune.txt)"; exit 1; }
cat prune.txt
grep -q "structural ok" prune.txt && grep -q "routing changed" prune.txt \
    && ok "verification report" || bad "no verification report"
minisign -Vm out/reap-manifest.json -P "$PUB" > mv.txt 2>&1 \
    && grep -q "manifest_blake2b256=" mv.txt && ok "stock minisign -Vm accepts the manifest" \
    || bad "minisign -Vm: $(cat mv.txt)"
minisign -Vm out/reap-manifest.json -p reap.pub > /dev/null 2>&1 && ok "minisign -p file" \
    || bad "minisign -p"
"$BIN/reapctl" verify out --pubkey reap.pub > v.txt 2>&1 && ok "reapctl verify" \
    || bad "reapctl verify: $(cat v.txt)"
grep -q '"calibB"' out/reap-manifest.json && grep -q "\"model_id\": \"$MID\"" out/reap_metadata.json \
    && grep -q "\"model_id\": \"$MID\"" out/reap-manifest.json \
    && ! grep -q stats_model_id out/reap-manifest.json \
    && ok "calibration and model ids recorded (the scorer's model_id)" || bad "ids missing"

# Tampering: a shard byte, an extra file, the manifest, the trusted comment.
SHARD=$(ls out/*.safetensors | head -1)
cp "$SHARD" shard.bak
printf '\x01' | dd of="$SHARD" bs=1 seek=100 conv=notrunc 2> /dev/null
expect_fail "$(basename "$SHARD"): content changed" "$BIN/reapctl" verify out --pubkey reap.pub
cp shard.bak "$SHARD"
echo x > out/extra.txt
expect_fail "extra.txt: extra file" "$BIN/reapctl" verify out --pubkey reap.pub
rm out/extra.txt
cp out/reap-manifest.json manifest.bak
sed -i 's/"n_keep": 6/"n_keep": 7/' out/reap-manifest.json
cmp -s out/reap-manifest.json manifest.bak && bad "manifest edit did nothing"
expect_fail "Signature verification failed" minisign -Vm out/reap-manifest.json -P "$PUB"
expect_fail "signature verification failed" "$BIN/reapctl" verify out --pubkey reap.pub
cp manifest.bak out/reap-manifest.json
cp out/reap-manifest.json.minisig sig.bak
sed -i 's/^trusted comment: reap-manifest model_id=/trusted comment: reap-manifest model_id=0/' \
    out/reap-manifest.json.minisig
expect_fail "Comment signature verification failed" minisign -Vm out/reap-manifest.json -P "$PUB"
expect_fail "trusted comment" "$BIN/reapctl" verify out --pubkey reap.pub
cp sig.bak out/reap-manifest.json.minisig
"$BIN/reapctl" verify out --pubkey "$PUB" > /dev/null && ok "restored output verifies again" \
    || bad "restored output"

# A key made by the stock minisign (-W: unencrypted) signs as well.
minisign -G -W -p ms.pub -s ms.key > /dev/null 2>&1 || bad "minisign -G -W"
"$BIN/reap-pruner" prune --model m --stats-json stats.json --out out2 --n-prune 3 \
    --criterion frequency --key ms.key --quiet > /dev/null 2>&1 || bad "prune with a minisign key"
minisign -Vm out2/reap-manifest.json -p ms.pub > /dev/null 2>&1 \
    && ok "manifest signed with a minisign -G -W key verifies" || bad "minisign key signature"
expect_fail "signed by key" "$BIN/reapctl" verify out2 --pubkey reap.pub

# --store: the input identified through the store's file-hash cache (filled by the
# scorer's run): the manifest's input digests are those of a prune that read the input
# itself, and statistics of another model are refused. (Files whose mtime or ctime is
# in the last 2 s are not cached: the model's are dated a minute back, and the touch sets
# their ctime to now, which nothing can set back: the clock must pass 3 s beyond it.)
touch -d "@$(( $(date +%s) - 60 ))" m/*
settle=$(( $(date +%s) + 3 ))
while [ "$(date +%s)" -le "$settle" ]; do sleep 0.2; done
"$BIN/reap-scorer" run --model m --calib calib.jsonl --seq-len 48 --store st \
    --stats-json stats_st.json --quiet --threads 2 > /dev/null 2>&1 || bad "scorer run --store"
"$BIN/reap-pruner" prune --model m --stats-json stats_st.json --out outst --n-prune 3 \
    --store st > st.txt 2>&1 \
    && grep -q "5 files, 5 digests from the store's cache (0.00 GB hashed now)" st.txt \
    && "$PY" - out2/reap-manifest.json outst/reap-manifest.json << 'PYEOF' \
    && ok "prune --store: input digests from the store's cache, equal to hashing the input" \
    || bad "prune --store: $(cat st.txt)"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["inputs"]["files"] == b["inputs"]["files"], (a["inputs"], b["inputs"])
assert len(b["inputs"]["files"]) == 5 and b["inputs"]["model_id"] == a["inputs"]["model_id"]
PYEOF
"$BIN/reapctl" verify outst --no-signature > /dev/null 2>&1 && ok "prune --store output verifies" \
    || bad "verify outst"
"$PY" -c "import json; d=json.load(open('stats_st.json')); d['model_id']='ab'*32; json.dump(d, open('stats_other.json','w'))"
expect_fail "are for model_id abababab" "$BIN/reap-pruner" prune --model m \
    --stats-json stats_other.json --out out3 --n-prune 3 --store st --quiet
# A shard edited in place with its size and mtime restored (same cache key; only the
# ctime moved): hashed again, so the identity is the new bytes' and the statistics of
# the old bytes are refused instead of a manifest signed with the old digest.
shard=$(ls m/*.safetensors | head -n 1)
flip_byte() { "$PY" "$HERE/edit_keep_mtime.py" "$1"; }
flip_byte "$shard" || bad "edit $shard"
expect_fail "they score another checkpoint's experts" "$BIN/reap-pruner" prune --model m \
    --stats-json stats_st.json --out out3 --n-prune 3 --store st --quiet
flip_byte "$shard" || bad "edit $shard back"

# Statistics of another checkpoint (same shape, other weights) without --store: refused,
# naming both ids; a --model-id that is not the input's too. --force-foreign-stats prunes
# by them and the signed manifest says so (stats_model_id, also in the trusted comment).
"$BIN/reap-genmodel" --out m2 --family qwen3_vl_moe --layers 3 --experts 10 --top-k 2 \
    --shards 3 --seed 6 > /dev/null || exit 1
"$BIN/reap-scorer" run --model m2 --calib calib.jsonl --seq-len 48 --stats-json stats_m2.json \
    --quiet --threads 2 || exit 1
MID2=$("$PY" -c "import json; print(json.load(open('stats_m2.json'))['model_id'])")
[ "$MID2" != "$MID" ] || bad "m2 has m's model_id"
expect_fail "are for model_id $MID2, but m is model_id $MID" "$BIN/reap-pruner" prune \
    --model m --stats-json stats_m2.json --out out3 --n-prune 3 --quiet
expect_fail "force-foreign-stats" "$BIN/reap-pruner" prune \
    --model m --stats-json stats_m2.json --out out3 --n-prune 3 --quiet
expect_fail "--model-id abcd is not this checkpoint's: m is model_id $MID" "$BIN/reap-pruner" \
    prune --model m --stats-json stats.json --out out3 --n-prune 3 --model-id abcd --quiet
"$BIN/reap-pruner" prune --model m --stats-json stats_m2.json --out outf --n-prune 3 \
    --force-foreign-stats --key reap.key --quiet > f.txt 2>&1 \
    && grep -q "warning: --force-foreign-stats" f.txt \
    && "$BIN/reapctl" verify outf --pubkey reap.pub > /dev/null 2>&1 \
    && minisign -Vm outf/reap-manifest.json -p reap.pub 2>&1 | grep -q "stats_model_id=$MID2" \
    && "$PY" - outf/reap-manifest.json "$MID" "$MID2" << 'PYEOF' \
    && ok "--force-foreign-stats: manifest model_id is the input's, stats_model_id the statistics', signed" \
    || bad "--force-foreign-stats: $(cat f.txt)"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["inputs"]["model_id"] == sys.argv[2] and d["inputs"]["stats_model_id"] == sys.argv[3], d["inputs"]
PYEOF

# Errors a user can hit.
expect_fail "already exists" "$BIN/reap-pruner" prune --model m --stats-json stats.json \
    --out out --ratio 0.4 --quiet
"$BIN/reap-pruner" prune --model m --stats-json stats.json --out out --ratio 0.2 --force \
    --key reap.key --quiet > /dev/null 2>&1 && "$BIN/reapctl" verify out --pubkey reap.pub \
    > /dev/null && ok "--force replaces the output" || bad "--force"
# --force replaces only an earlier reap output (above) or an empty directory: a directory
# of someone else's files is refused, saying why, and left as it was.
mkdir -p userdir/sub && echo "my notes" > userdir/notes.txt
expect_fail "output 'userdir' exists and is not a reap output: it has no reap-manifest.json and holds 2 entries" \
    "$BIN/reap-pruner" prune --model m --stats-json stats.json --out userdir --ratio 0.4 --force --quiet
grep -q "reap replaces only its own outputs" out.txt && grep -q "notes.txt" out.txt \
    && [ "$(cat userdir/notes.txt)" = "my notes" ] && [ -d userdir/sub ] \
    && ok "--force on a directory of user files: refused, nothing deleted" || bad "userdir: $(cat out.txt)"
echo '{"format": "not-reap"}' > userdir/reap-manifest.json
expect_fail "its reap-manifest.json is not a reap manifest" "$BIN/reap-pruner" prune --model m \
    --stats-json stats.json --out userdir --ratio 0.4 --force --quiet
[ -f userdir/notes.txt ] || bad "userdir lost its file"
mkdir emptydir
expect_fail "already exists" "$BIN/reap-pruner" prune --model m --stats-json stats.json \
    --out emptydir --ratio 0.4 --quiet
"$BIN/reap-pruner" prune --model m --stats-json stats.json --out emptydir --ratio 0.4 --force \
    --quiet > /dev/null 2>&1 && "$BIN/reapctl" verify emptydir --no-signature > /dev/null \
    && ok "--force on an empty directory: used" || bad "--force emptydir"
expect_fail "inside the input" "$BIN/reap-pruner" prune --model m --stats-json stats.json \
    --out m/pruned --ratio 0.4 --quiet
expect_fail "fewer than the 2 experts" "$BIN/reap-pruner" prune --model m \
    --stats-json stats.json --out out3 --ratio 0.9 --quiet
expect_fail "exactly one of --ratio" "$BIN/reap-pruner" prune --model m \
    --stats-json stats.json --out out3 --quiet
expect_fail "ean_ca" "$BIN/reapctl" keepset --stats-json stats.json --ratio 0.4 --criterion ean_ca
"$PY" - stats.json << 'PYEOF'
import json, sys
d = json.load(open(sys.argv[1])); d["layers"] = d["layers"][:-1]
json.dump(d, open("stats_missing.json", "w"))
PYEOF
expect_fail "has no statistics" "$BIN/reap-pruner" prune --model m \
    --stats-json stats_missing.json --out out3 --ratio 0.4 --quiet
[ ! -e out3 ] && ! ls -a | grep -q reap-tmp && ok "failed prunes leave nothing behind" \
    || bad "leftovers after failures"

# A prune killed mid-write leaves its temporary directory beside the output; the next
# prune of that output removes it and says so (name and size), but never the directory of
# a writer that is alive (its lock is held). The gate: the writer's stderr is a pipe
# filled to the brim, so its first progress line blocks it inside the rewrite, with the
# temporary directory made and a shard partly written, until it is killed.
"$PY" - "$BIN/reap-pruner" << 'PYEOF' && ok "killed prune: leftover kept while its writer lives, removed and reported by the next prune" || bad "killed prune leftover"
import glob, os, subprocess, sys, time
pruner = sys.argv[1]
def cmd(*extra):
    return [pruner, "prune", "--model", "m", "--stats-json", "stats.json", "--out", "killed",
            "--ratio", "0.4", *extra]
r, w = os.pipe()
os.set_blocking(w, False)
for chunk in (65536, 4096, 1):
    try:
        while True:
            os.write(w, b"x" * chunk)
    except BlockingIOError:
        pass
os.set_blocking(w, True)
a = subprocess.Popen(cmd(), stdout=subprocess.DEVNULL, stderr=w)
deadline, tmp = time.monotonic() + 120, None
while tmp is None:   # the gated writer cannot finish: poll until it has written data
    assert a.poll() is None, "the gated prune ended (rc %s)" % a.returncode
    assert time.monotonic() < deadline, "no temporary directory with data"
    for d in glob.glob(".killed.reap-tmp-*"):
        if os.path.isdir(d) and any(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)):
            tmp = d
    time.sleep(0.02)
print("gated writer", a.pid, "in", tmp)
b = subprocess.run(cmd("--quiet"), capture_output=True, text=True)
assert b.returncode == 0, b.stderr
assert os.path.isdir(tmp), "a live writer's directory was removed"
assert "left " + os.path.realpath(tmp) + ": another prune is writing it" in b.stderr, b.stderr
a.kill()
a.wait()
os.close(w)
os.close(r)
assert os.path.isdir(tmp), "the killed prune's directory vanished by itself"
size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
c = subprocess.run(cmd("--quiet", "--force"), capture_output=True, text=True)
print(c.stderr, end="")
assert c.returncode == 0, c.stderr
want = "removed %s (%.2f GB, %d bytes), left by a prune that did not finish" % (
    os.path.realpath(tmp), size / 1e9, size)
assert want in c.stderr, (want, c.stderr)
left = glob.glob(".killed.reap-tmp-*")
assert not left, left
PYEOF

# Python: the real safetensors library when it can be had, else the oracle's reader.
VENV="$WORK/../prune_venv"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import safetensors" 2> /dev/null; then
    rm -rf "$VENV"
    if "$PY" -m venv --system-site-packages "$VENV" > /dev/null 2>&1 && \
       timeout 120 "$VENV/bin/pip" install --quiet --timeout 15 --retries 0 safetensors \
           > pip.txt 2>&1; then
        ok "safetensors installed into a venv"
    else
        echo "note: safetensors could not be installed (offline?): checking with the oracle reader"
        rm -rf "$VENV"
    fi
fi
PYCHK=$PY
[ -x "$VENV/bin/python" ] && PYCHK="$VENV/bin/python"
"$PYCHK" "$HERE/prune_check.py" --out out2 --orig m && ok "prune_check.py out2" \
    || bad "prune_check.py out2"
"$PYCHK" "$HERE/prune_check.py" --out out --orig m && ok "prune_check.py out" \
    || bad "prune_check.py out"

# The per-expert (split) layout: renamed experts, checked the same way.
"$BIN/reap-genmodel" --out ms --family qwen3_moe --layout split --layers 2 --experts 8 \
    --top-k 2 --shards 2 --calib calib_s.jsonl --samples 8 > /dev/null \
    && "$BIN/reap-scorer" run --model ms --calib calib_s.jsonl --seq-len 32 \
        --stats-json stats_s.json --quiet --threads 2 \
    && "$BIN/reap-pruner" prune --model ms --stats-json stats_s.json --out outs --n-prune 3 \
        --verify --quiet > /dev/null \
    && "$PYCHK" "$HERE/prune_check.py" --out outs --orig ms && ok "prune_check.py split layout" \
    || bad "split layout"

echo "prune_cli: $fails failure(s)"
[ "$fails" -eq 0 ]
