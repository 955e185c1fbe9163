#!/bin/bash
# services_reapctl.sh - the services driven by the real CLI (label integration): starts
# `reap-scorer serve` and `reap-pruner serve` on 127.0.0.1 port 0 with a temporary store
# and drives them with reapctl only:
#   health; score (plain lines and --json); score --detach + watch, a watcher killed
#   mid-run (the run goes on) and a second watch re-attaching; Ctrl-C during score
#   (the run is cancelled at a layer boundary, exit 11); cancel --wait; a run queued
#   behind a running one (its id at once, `runs` shows its place, Ctrl-C cancels it
#   before it starts, exit 11, the running run finishes); runs (table,
#   --state, --json); models; stats (table, reap-stats/1 --json, --svg heatmap); keepset
#   remote = keepset local on the same statistics; an explicit --ratio 0 / --n-prune 0
#   keeping every expert although the pruner has a default ratio (keepset and prune);
#   the pruner's start-up sweep of killed prunes' leftovers (a held lock kept);
#   prune --force / --overwrite (only a reap output or an empty directory); prune --verify; verify (local and --pruner) with
#   tampering (exit 3), local verify --json before and after DIR; keygen --json and the
#   key id of the .pub comment; keep sets of an incomplete calibration set (the run
#   cancelled by Ctrl-C) and n_prune beyond the experts refused as FAILED_PRECONDITION
#   (exit 19); the exit codes of usage and server errors; SIGTERM of both servers (exit 0).
#
# Runs are held at layer boundaries by the scorer's --layer-gate FIFO, never by timing.
#
# usage: services_reapctl.sh BIN_DIR WORK_DIR PYTHON
set -u
BIN=$1 WORK=$2 PY=${3:-python3}
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || exit 1
fails=0
ok()  { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
CTL="$BIN/reapctl"
unset REAP_SCORER_ADDR REAP_PRUNER_ADDR REAP_TOKEN REAP_TOKEN_FILE REAP_TLS_CA

mkdir -p models calib out
"$BIN/reap-genmodel" --out models/m --family qwen3_vl_moe --layers 6 --hidden 192 --heads 6 \
    --kv-heads 2 --head-dim 32 --experts 16 --top-k 4 --moe-inter 96 --vocab 800 --shards 2 \
    --seed 7 --calib calib/c1.jsonl --samples 48 --min-len 32 --max-len 200 > /dev/null || exit 1
for i in 2 3 4 5 6; do
    "$BIN/reap-genmodel" --out unused --layers 1 --vocab 800 --calib "calib/c$i.jsonl" \
        --samples 48 --min-len 32 --max-len 200 --calib-seed $((100 + i)) > /dev/null || exit 1
done
"$CTL" keygen --out k > /dev/null || exit 1

# The scorer's --layer-gate: each run waits before each layer for one byte of this FIFO,
# so that "mid-run" and "queued behind a running run" hold however fast the machine is.
# fd 3 is our end (read-write: neither side blocks in open).
mkfifo gate && exec 3<> gate || exit 1
gate_allow() { local i; for ((i = 0; i < $1; i++)); do printf g >&3; done; }
gate_unread() {  # bytes not yet taken by the server
    "$PY" -c 'import fcntl, struct, termios; print(struct.unpack("i", fcntl.ioctl(3, termios.FIONREAD, b"\0" * 4))[0])'
}
# wait_for FILE PATTERN: poll (up to 120 s) for a line that must come
wait_for() { for _ in $(seq 2400); do grep -q "$2" "$1" 2> /dev/null && return 0; sleep 0.05; done; return 1; }

# start NAME ARGS...: runs a service in the background, waits for its "port N" line.
start() {
    local name=$1; shift
    "$@" --listen 127.0.0.1:0 > "$name.out" 2> "$name.log" &
    eval "${name}_pid=$!"
    wait_for "$name.out" '^port ' 
    eval "${name}_port=$(awk '/^port /{print $2}' "$name.out")"
}
start scorer "$BIN/reap-scorer" serve --store store --model-root models --calib-root calib \
    --backend cpu --threads 1 --seq-len 64 --checkpoint-every 1 --token T0K --layer-gate gate
# Leftovers of killed prunes in the output root: at start-up the pruner removes one whose
# writer is dead (its lock is free) and reports it, and leaves one whose lock is held
# (here by this shell's fd 9, as a live prune in another container would hold it).
mkdir -p out/.gone.reap-tmp-1-aaaaaa out/.busy.reap-tmp-2-bbbbbb
head -c 5000 /dev/zero > out/.gone.reap-tmp-1-aaaaaa/model-00001-of-00002.safetensors
: > out/.gone.reap-tmp-1-aaaaaa.lock
: > out/.busy.reap-tmp-2-bbbbbb.lock
exec 9< out/.busy.reap-tmp-2-bbbbbb.lock
flock -x -n 9 || bad "could not lock out/.busy.reap-tmp-2-bbbbbb.lock"
# --ratio 0.4: the default of requests that give neither ratio nor n_prune (an explicit 0
# must not fall back to it)
start pruner "$BIN/reap-pruner" serve --store store --model-root models --output-root out \
    --key k.key --token T0K --ratio 0.4
[ -n "${scorer_port:-}" ] && [ -n "${pruner_port:-}" ] || { bad "servers did not start"; cat ./*.log; exit 1; }
export REAP_SCORER_ADDR=127.0.0.1:$scorer_port REAP_PRUNER_ADDR=127.0.0.1:$pruner_port
export REAP_TOKEN=T0K
grep -q "removed $PWD/out/.gone.reap-tmp-1-aaaaaa (0.00 GB, 5000 bytes), left by a prune that did not finish" pruner.log \
    && [ ! -e out/.gone.reap-tmp-1-aaaaaa ] && [ ! -e out/.gone.reap-tmp-1-aaaaaa.lock ] \
    && ok "pruner start-up: a dead writer's temporary output removed and logged with its size" \
    || bad "start-up sweep: $(cat pruner.log)"
grep -q "left $PWD/out/.busy.reap-tmp-2-bbbbbb: another prune is writing it" pruner.log \
    && [ -d out/.busy.reap-tmp-2-bbbbbb ] && ok "pruner start-up: a live writer's (lock held) left alone" \
    || bad "start-up sweep removed a live writer's directory: $(cat pruner.log)"
exec 9<&-
rm -rf out/.busy.reap-tmp-2-bbbbbb out/.busy.reap-tmp-2-bbbbbb.lock

# keygen --json: the key id, equal to the .pub comment's and to the id inside the key
# (bytes 2..9 of the decoded key, little-endian, upper-case hex, as minisign prints it)
"$CTL" keygen --out k2 --json > kg.json && "$PY" - kg.json <<'EOF' \
    && ok "reapctl keygen --json: key id = the .pub comment's = the key's own" || bad "keygen --json: $(cat kg.json)"
import base64, json, sys
d = json.load(open(sys.argv[1]))
comment, b64 = open(d["public_key"]).read().splitlines()[:2]
key_id = base64.b64decode(b64)[2:10][::-1].hex().upper()
assert d["secret_key"] == "k2.key" and d["public_key"] == "k2.pub" and d["public_key_b64"] == b64
assert d["key_id"] == key_id != "0" * 16, (d, key_id)
assert comment == "untrusted comment: minisign public key " + key_id, comment
EOF

"$CTL" health > h.txt && [ "$(grep -c SERVING h.txt)" = 2 ] && ok "reapctl health: both SERVING" \
    || bad "health: $(cat h.txt)"

# score, plain lines (stdout is not a terminal)
gate_allow 6
"$CTL" score --model m --calib c1.jsonl > s1.txt 2>&1 && grep -q '^finished: 6 layers' s1.txt \
    && [ "$(grep -c '^layer [1-6]/6 done' s1.txt)" = 6 ] && ok "reapctl score: one line per layer, finished" \
    || bad "score: $(cat s1.txt)"
RUN1=$(awk '/^run .* calib /{print $2; exit}' s1.txt)
grep -q "^run $RUN1 queued (position 1): reapctl watch $RUN1 / reapctl cancel $RUN1" s1.txt \
    && ok "reapctl score: 'run ID queued (position 1)' line first, the id it is accepted with" \
    || bad "queued line: $(head -2 s1.txt)"
# --json: one object per event
gate_allow 6
"$CTL" score --model m --calib c1.jsonl --force --json > s1.json 2>&1 \
    && "$PY" - s1.json <<'EOF' && ok "reapctl score --json: queued, accepted, tokenized, 6 layer_done, finished" || bad "score --json: $(head -3 s1.json)"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
kinds = [next(k for k in ("queued", "accepted", "tokenized", "layer_done", "finished", "error") if k in e) for e in ev]
assert kinds == ["queued", "accepted", "tokenized"] + ["layer_done"] * 6 + ["finished"], kinds
assert ev[3]["layer_done"]["tokens_per_s"] > 0 and len(ev[1]["accepted"]["run_id"]) == 32
assert ev[0]["queued"]["run_id"] == ev[1]["accepted"]["run_id"]
EOF

# score --detach, a watcher killed mid-run, a second watcher re-attaching
"$CTL" score --model m --calib c2.jsonl --detach > s2.txt 2>&1 && RUN2=$(awk '/^run /{print $2; exit}' s2.txt) \
    && [ ${#RUN2} = 32 ] && grep -q "^run $RUN2 goes on in the server" s2.txt \
    && ok "reapctl score --detach: run $RUN2 has its id, client gone" || bad "detach: $(cat s2.txt)"
"$CTL" watch "$RUN2" > w1.txt 2>&1 &
WPID=$!
gate_allow 1   # layer 0; the run then waits before layer 1
wait_for w1.txt '^layer '
kill -9 $WPID 2> /dev/null; wait $WPID 2> /dev/null
"$CTL" runs --json | "$PY" -c "
import json, sys
r = {x['run_id']: x for x in json.load(sys.stdin)['runs']}
assert r['$RUN2']['state'] == 'RUN_STATE_RUNNING' and r['$RUN2']['layers_done'] == 1
" && ok "the watcher was killed mid-run (1 of 6 layers, held by the gate)" || bad "run $RUN2 not mid-run"
gate_allow 5
"$CTL" watch "${RUN2:0:12}" > w2.txt 2>&1 && grep -q '^finished' w2.txt \
    && ok "watch killed mid-run, second watch re-attached and saw the run finish" \
    || bad "re-attach: $(cat w2.txt)"
"$CTL" runs --json | "$PY" -c "
import json, sys
r = {x['run_id']: x for x in json.load(sys.stdin)['runs']}
assert r['$RUN2']['state'] == 'RUN_STATE_DONE' and r['$RUN2']['layers_done'] == 6
" && ok "the detached run completed all 6 layers" || bad "run $RUN2 not done"

# Ctrl-C during score: cancel at the next layer boundary, follow to the end, exit 11
# (the gate lets layer 0 through; Ctrl-C comes while the run waits before layer 1, which
# is let through once the server has the cancel: it stops after it)
"$CTL" score --model m --calib c3.jsonl > s3.txt 2>&1 &
SPID=$!
gate_allow 1
wait_for s3.txt '^layer '
kill -INT $SPID
wait_for scorer.log "CancelRun $(awk '/^run /{print $2; exit}' s3.txt)"
gate_allow 1
wait $SPID; rc=$?
[ $rc = 11 ] && grep -q "cancelling run" s3.txt && grep -q "^error: cancelled after layer 1" s3.txt \
    && ok "Ctrl-C: run cancelled at a layer boundary, exit 11 (CANCELLED)" || bad "ctrl-c rc=$rc: $(cat s3.txt)"
"$CTL" runs --state cancelled > r3.txt && grep -q cancelled r3.txt \
    && ok "reapctl runs --state cancelled lists it" || bad "runs --state: $(cat r3.txt)"

# cancel --wait
# (the run waits before layer 0; once the server has the cancel, layer 0 is let through
# and the run stops after it)
"$CTL" score --model m --calib c4.jsonl --detach > s4.txt 2>&1
RUN4=$(awk '/^run /{print $2; exit}' s4.txt)
# --detach leaves at the run's first event, while the server may still be identifying the
# model; a cancel then ends it before scoring begins. Wait until it is accepted (its layer
# count is known): from then on it waits at the gate before layer 0.
accepted() { "$CTL" runs --json 2> /dev/null | "$PY" -c "
import json, sys
r = {x['run_id']: x for x in json.load(sys.stdin).get('runs', [])}
sys.exit(0 if r.get('$1', {}).get('n_layers', 0) else 1)"; }
for _ in $(seq 1200); do accepted "$RUN4" && break; sleep 0.1; done
"$CTL" cancel "$RUN4" --wait > c4.txt 2>&1 &
CPID=$!
wait_for scorer.log "CancelRun $RUN4"
gate_allow 1
wait $CPID; rc=$?
[ $rc = 0 ] && grep -q "cancel requested" c4.txt \
    && "$CTL" runs --json | "$PY" -c "
import json, sys
r = {x['run_id']: x for x in json.load(sys.stdin)['runs']}
assert r['$RUN4']['state'] == 'RUN_STATE_CANCELLED' and r['$RUN4']['layers_done'] == 1
" && ok "reapctl cancel --wait: returns once the run stopped (after 1 layer)" || bad "cancel rc=$rc: $(cat c4.txt)"

# a run queued behind a running one (held by the gate before its first layer): its id at
# once, `runs` shows its place, Ctrl-C cancels it before it starts (exit 11), the running
# run is unaffected
"$CTL" score --model m --calib c6.jsonl --detach > sl.txt 2>&1
RUNL=$(awk '/^run /{print $2; exit}' sl.txt)
"$CTL" score --model m --calib c5.jsonl > s5.txt 2>&1 &
SPID=$!
wait_for s5.txt '^run .* queued (position' 
RUN5=$(awk '/^run .* queued \(position/{print $2; exit}' s5.txt)
"$CTL" runs > rq.txt
kill -INT $SPID
wait $SPID; rc=$?
"$CTL" runs --state running > rr.txt
grep -q "^$RUN5 *queued #1 " rq.txt && grep -q "^$RUNL *running " rr.txt \
    && ok "reapctl runs: the queued run with its id and place (queued #1) behind the running one" \
    || bad "runs while queued: $(cat rq.txt)"
[ $rc = 11 ] && [ ${#RUN5} = 32 ] && grep -q "cancelling run $RUN5 before it starts" s5.txt \
    && grep -q "^error: cancelled before it started" s5.txt \
    && ok "Ctrl-C while queued: run $RUN5 cancelled before it started, exit 11" \
    || bad "ctrl-c while queued rc=$rc: $(cat s5.txt)"
"$CTL" cancel "$RUN5" > c5.txt 2>&1 \
    && grep -q "^run $RUN5: cancelled before it started (it was queued)" c5.txt \
    && ok "reapctl cancel of that run: cancelled before it started (Run.never_started)" \
    || bad "cancel of the run cancelled while queued: $(cat c5.txt)"
gate_allow 6
"$CTL" watch "$RUNL" > wl.txt 2>&1 && grep -q '^finished: 6 layers' wl.txt \
    && [ "$(gate_unread)" = 0 ] \
    && ok "the run it was queued behind finished all 6 layers" || bad "running run: $(cat wl.txt)"
"$CTL" runs > runs.txt && [ "$(grep -c '^[0-9a-f]\{32\}' runs.txt)" -ge 4 ] \
    && ok "reapctl runs: $(grep -c '^[0-9a-f]\{32\}' runs.txt) runs listed" || bad "runs: $(cat runs.txt)"

# models, stats
"$CTL" models > models.txt && grep -q "16 experts top-4" models.txt && grep -q complete models.txt \
    && ok "reapctl models" || bad "models: $(cat models.txt)"
MODEL=$("$CTL" models --json | "$PY" -c "import json,sys; print(json.load(sys.stdin)['models'][0]['model_id'])")
C1=$(awk '/^run .* calib /{print $6; exit}' s1.txt)
"$CTL" stats "${MODEL:0:8}" > st.txt && [ "$(grep -c '^ *[0-5] ' st.txt)" = 6 ] \
    && ok "reapctl stats: table of 6 layers" || bad "stats: $(cat st.txt)"
"$CTL" stats "$MODEL" --calib-ids "$C1" --json > stats.json && "$PY" -c "
import json; d = json.load(open('stats.json'))
assert d['format'] == 'reap-stats/1' and len(d['layers']) == 6 and d['model_id'] == '$MODEL'
" && ok "reapctl stats --json: reap-stats/1 document" || bad "stats --json"
"$CTL" stats "$MODEL" --svg heat.svg --ratio 0.25 > svg.txt && grep -q '<svg' heat.svg \
    && [ "$(grep -c 'class="pruned"' heat.svg)" = 24 ] && [ "$(grep -c '<rect x=' heat.svg)" -ge 96 ] \
    && ok "reapctl stats --svg: 6 x 16 heatmap, 4 experts per layer crossed at ratio 0.25" \
    || bad "svg: $(cat svg.txt)"

# keepset: the service's answer equals the local computation on the same statistics
"$CTL" keepset --model-id "$MODEL" --calib-ids "$C1" --ratio 0.4 --json > ks_remote.json \
    && "$CTL" keepset --stats-json stats.json --ratio 0.4 --json > ks_local.json \
    && "$PY" -c "
import json
a, b = json.load(open('ks_remote.json')), json.load(open('ks_local.json'))
assert a['experts_to_keep'] == b['experts_to_keep'] and a['n_keep'] == b['n_keep'] == 10
" && ok "reapctl keepset via the pruner = local keepset on the same statistics" || bad "keepset"

# pruning nothing: --ratio 0 / --n-prune 0 are sent as given, not as "unset" (which would
# be the server's --ratio 0.4: 16 -> 10)
for z in "--ratio 0" "--n-prune 0"; do
    # shellcheck disable=SC2086
    "$CTL" keepset --model-id "$MODEL" --calib-ids "$C1" $z --json > ks0.json 2> ks0.err \
        && "$PY" -c "
import json; d = json.load(open('ks0.json'))
assert d['n_experts'] == 16 and d['n_keep'] == 16 and d['n_prune'] == 0, d
assert all(v == list(range(16)) for v in d['experts_to_keep'].values()) and len(d['experts_to_keep']) == 6
" && ok "reapctl keepset $z: every expert kept (not the server's default ratio)" \
        || bad "keepset $z: $(cat ks0.json ks0.err)"
done
"$CTL" prune --model m --out pruned0 --ratio 0 --calib-ids "$C1" --verify > p0.txt 2>&1 \
    && grep -q "16 -> 16 experts per layer" p0.txt && grep -q "^OK pruned0" p0.txt \
    && grep -q '"num_experts": 16' out/pruned0/config.json \
    && "$PY" -c "
import json; d = json.load(open('out/pruned0/reap_metadata.json'))
assert d['n_prune'] == 0 and all(len(v) == 16 for v in d['experts_to_keep'].values()), d
" && ok "reapctl prune --ratio 0: every expert kept, verified" || bad "prune --ratio 0: $(cat p0.txt)"
"$CTL" prune --model m --out pruned0 --n-prune 0 --calib-ids "$C1" --force > p0f.txt 2>&1 \
    && grep -q "16 -> 16 experts per layer" p0f.txt \
    && ok "reapctl prune --n-prune 0 --force: replaces the output, every expert kept" \
    || bad "prune --n-prune 0 --force: $(cat p0f.txt)"
"$CTL" prune --model m --out pruned0 --ratio 0.25 --calib-ids "$C1" --overwrite > p0o.txt 2>&1 \
    && grep -q "16 -> 12 experts per layer" p0o.txt && ok "reapctl prune --overwrite (alias of --force)" \
    || bad "prune --overwrite: $(cat p0o.txt)"

# --force / --overwrite replace only an earlier reap output (above) or an empty directory
mkdir -p out/userdir && echo mine > out/userdir/notes.txt
"$CTL" prune --model m --out userdir --ratio 0.25 --calib-ids "$C1" --force > rc.txt 2>&1
rc=$?
[ $rc = 19 ] && ok "exit 19: prune --force onto a directory of user files (FAILED_PRECONDITION)" \
    || bad "prune --force onto userdir: exit $rc, want 19: $(cat rc.txt)"
grep -q "exists and is not a reap output: it has no reap-manifest.json and holds 1 entry ('notes.txt'); reap replaces only its own outputs" rc.txt \
    && [ "$(cat out/userdir/notes.txt)" = mine ] && [ "$(ls -A out/userdir)" = notes.txt ] \
    && ok "the refusal says why; the user's directory is untouched" || bad "userdir: $(cat rc.txt)"
mkdir -p out/emptydir
"$CTL" prune --model m --out emptydir --ratio 0.25 --calib-ids "$C1" --force > pe.txt 2>&1 \
    && "$CTL" verify out/emptydir --pubkey k.pub > /dev/null 2>&1 \
    && ok "reapctl prune --force into an empty directory" || bad "prune into emptydir: $(cat pe.txt)"

# prune --verify, verify locally and remotely, tampering
"$CTL" prune --model m --out pruned --ratio 0.25 --calib-ids "$C1" --verify > p.txt 2>&1 \
    && grep -q "(signed)" p.txt && grep -q "^OK pruned" p.txt && ok "reapctl prune --verify" \
    || bad "prune: $(cat p.txt)"
"$CTL" verify out/pruned --pubkey k.pub > v1.txt 2>&1 && ok "reapctl verify (local) of the service's output" \
    || bad "verify: $(cat v1.txt)"
"$CTL" verify pruned --pruner "$REAP_PRUNER_ADDR" > v2.txt 2>&1 && ok "reapctl verify --pruner" \
    || bad "verify --pruner: $(cat v2.txt)"
echo extra > out/pruned/extra.txt
"$CTL" verify pruned --pruner "$REAP_PRUNER_ADDR" > v3.txt 2>&1; rc=$?
[ $rc = 3 ] && grep -q "extra.txt" v3.txt && ok "tampered output: verify --pruner exit 3, names extra.txt" \
    || bad "tamper rc=$rc: $(cat v3.txt)"
"$CTL" verify out/pruned --pubkey k.pub > v4.txt 2>&1; rc=$?
[ $rc = 3 ] && ok "tampered output: local verify exit 3" || bad "local tamper rc=$rc"
# local verify --json, the option before and after DIR; a file whose name has a space and
# ": " is named whole (the problem's file comes typed from the check, not from its text)
echo extra > "out/pruned/my notes: v2.txt"
"$CTL" verify --json out/pruned --pubkey k.pub > v5.json 2> v5.err; rc5=$?
"$CTL" verify out/pruned --pubkey k.pub --json > v6.json 2> v6.err; rc6=$?
[ $rc5 = 3 ] && [ $rc6 = 3 ] && cmp -s v5.json v6.json && "$PY" -c "
import json; d = json.load(open('v5.json'))
assert d['ok'] is False and d['signature_checked'] is True and d['output_path'] == 'out/pruned'
assert any(p['file'] == 'extra.txt' for p in d['problems']), d
assert any(p['file'] == 'my notes: v2.txt' and p['message'] == 'extra file, not in the manifest'
           for p in d['problems']), d
" && ok "local verify --json (before or after DIR): ok false, extra.txt and 'my notes: v2.txt' named, exit 3" \
    || bad "verify --json rc=$rc5/$rc6: $(cat v5.json v5.err v6.json v6.err)"
rm out/pruned/extra.txt "out/pruned/my notes: v2.txt"
"$CTL" verify --json --pubkey k.pub out/pruned > v7.json 2>&1 && "$PY" -c "
import json; d = json.load(open('v7.json'))
assert d['ok'] is True and d['problems'] == [], d
" && ok "local verify --json of an intact output: ok true, exit 0" || bad "verify --json: $(cat v7.json)"
"$CTL" stats --calib-ids "$C1" "${MODEL:0:8}" > st2.txt && [ "$(grep -c '^ *[0-5] ' st2.txt)" = 6 ] \
    && ok "reapctl stats: MODEL_ID after the options" || bad "stats, id last: $(cat st2.txt)"

# exit codes
expect_rc() { # expect_rc RC what cmd...
    local want=$1 what=$2; shift 2
    "$@" > rc.txt 2>&1; local rc=$?
    [ $rc = "$want" ] && ok "exit $want: $what" || bad "$what: exit $rc, want $want: $(cat rc.txt)"
}
expect_rc 2 "unknown option" "$CTL" runs --bogus
expect_rc 2 "unknown global option" "$CTL" --bogus runs
expect_rc 2 "prune without --ratio" "$CTL" prune --model m --out x
expect_rc 15 "stats of an unknown model (NOT_FOUND)" "$CTL" stats 0123456789abcdef
expect_rc 17 "score outside the roots (PERMISSION_DENIED)" "$CTL" score --model /etc --calib c1.jsonl
expect_rc 19 "keepset n_prune beyond the model's experts (FAILED_PRECONDITION)" "$CTL" keepset --model-id "$MODEL" --n-prune 99
grep -q "16 experts" rc.txt || bad "n_prune 99: the message names the experts: $(cat rc.txt)"
expect_rc 19 "prune n_prune = the model's experts (FAILED_PRECONDITION)" "$CTL" prune --model m --out p16 --n-prune 16
# the run Ctrl-C cancelled left an incomplete calibration set: FAILED_PRECONDITION naming it
C3=$(awk '/^run .* calib /{print $6; exit}' s3.txt)
expect_rc 19 "keepset of an incomplete calibration set (FAILED_PRECONDITION)" "$CTL" keepset --model-id "$MODEL" --calib-ids "$C3" --ratio 0.4
grep -q "calibration set $C3.*has [1-5] of 6 MoE layers (missing: .*[0-9])" rc.txt \
    && ok "the message names the incomplete set and its missing layers" || bad "incomplete message: $(cat rc.txt)"
expect_rc 19 "prune from an incomplete calibration set (FAILED_PRECONDITION)" "$CTL" prune --model m --out p3 --ratio 0.25 --calib-ids "$C3"
expect_rc 16 "prune of an existing output (ALREADY_EXISTS)" "$CTL" prune --model m --out pruned --ratio 0.25
expect_rc 26 "wrong token (UNAUTHENTICATED)" "$CTL" --token wrong runs
expect_rc 24 "nothing listening (UNAVAILABLE)" "$CTL" --scorer 127.0.0.1:1 --timeout-ms 2000 runs
expect_rc 15 "health of an unknown service (NOT_FOUND)" "$CTL" health scorer --service no.such.Service

# SIGTERM: both exit 0
kill -TERM "$scorer_pid" "$pruner_pid"
wait "$scorer_pid"; rs=$?
wait "$pruner_pid"; rp=$?
[ $rs = 0 ] && [ $rp = 0 ] && grep -q "shut down cleanly" scorer.log pruner.log \
    && ok "SIGTERM: both servers exit 0" || bad "shutdown: scorer $rs pruner $rp"

if [ $fails -ne 0 ]; then
    echo "$fails checks FAILED"
    exit 1
fi
echo "all checks passed"
