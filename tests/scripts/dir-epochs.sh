#!/usr/bin/env bash
# Issue 8 acceptance (spec §13): 20 relay processes on distinct loopback
# /16s (127.40.0.1 …), chain-seeded, 10 s epochs, queried with
# `lamina-client dir --json` from their first second on.
#  1. within 60 s every relay serves one 20-relay root;
#  2. a minute of churn: a relay restarts (same data dir) every 4 s and
#     three new relays join; no two relays may ever serve different roots
#     for the same epoch;
#  3. within 60 s after the churn every relay serves one root over all.
# Usage: tests/scripts/dir-epochs.sh   (BIN=target/release by default; build
#   first: cargo build --release -p lamina-relay -p lamina-client)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-20}
JOIN=${JOIN:-3}
EPOCH=${EPOCH:-10}
BIN=${BIN:-target/release}
WORK=$(mktemp -d)
declare -A PIDS
cleanup() {
    [ -n "${QPID:-}" ] && kill "$QPID" 2>/dev/null || true
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip() { echo "127.$((40 + $1)).0.1"; }
start_relay() {
    local i=$1 seed=()
    [ "$i" -gt 0 ] && seed=(--seed "$(ip $((i - 1))):9001")
    "$BIN/lamina-relay" --data-dir "$WORK/r$i" --listen "$(ip "$i"):9001" "${seed[@]}" \
        --epoch-secs "$EPOCH" --pow-bits 8 --test-network 2>>"$WORK/r$i.log" &
    PIDS[$i]=$!
}
ALIVE="$WORK/alive"
query_loop() {
    while true; do
        for i in $(cat "$ALIVE"); do
            out=$("$BIN/lamina-client" dir --json --pow-bits 8 --seed "$(ip "$i"):9001" 2>/dev/null) || continue
            printf '%s' "$out" | python3 -c "import json,sys,time; d=json.load(sys.stdin); print('%.1f %s %s %s %s' % (time.time(), sys.argv[1], d['epoch'], d['root'], d['count']))" "$i" \
                >>"$WORK/served" || true
        done
        sleep 0.5
    done
}
seq 0 $((N - 1)) >"$ALIVE"
t0=$(date +%s)
for i in $(seq 0 $((N - 1))); do start_relay "$i"; done
query_loop &
QPID=$!
# wait until the newest epoch served by every relay shows one N-relay root
converged() { # $1 = expected count; prints the root when all alive relays agree
    python3 - "$WORK/served" "$ALIVE" "$1" <<'PY'
import sys
served, alive, want = sys.argv[1], open(sys.argv[2]).read().split(), int(sys.argv[3])
last = {}
for line in open(served):
    t, r, e, root, c = line.split()
    last[r] = (root, int(c))
# The newest answer of every alive relay: one root over `want` relays
# (answers may come from neighbouring epochs: the same set has the same root).
vals = {last.get(r) for r in alive}
if None not in vals and len(vals) == 1 and next(iter(vals))[1] == want:
    print(next(iter(vals))[0]); sys.exit(0)
sys.exit(1)
PY
}
wait_converged() {
    local want=$1 limit=$(( $(date +%s) + 60 ))
    while [ "$(date +%s)" -lt "$limit" ]; do
        if root=$(converged "$want" 2>/dev/null); then echo "$root"; return 0; fi
        sleep 1
    done
    return 1
}
touch "$WORK/served"
if root=$(wait_converged "$N"); then
    echo "phase 1: one $N-relay root after $(( $(date +%s) - t0 )) s: $root"
else
    echo "phase 1: FAILED to converge within 60 s"; tail -n 40 "$WORK/served"; exit 1
fi
churn_start=$(date +%s)
joined=0
while [ $(( $(date +%s) - churn_start )) -lt 60 ]; do
    victim=$(( RANDOM % N ))
    kill "${PIDS[$victim]}" 2>/dev/null || true
    wait "${PIDS[$victim]}" 2>/dev/null || true
    start_relay "$victim"
    if [ "$joined" -lt "$JOIN" ] && [ $(( $(date +%s) - churn_start )) -ge $(( 15 * (joined + 1) )) ]; then
        start_relay $((N + joined))
        echo $((N + joined)) >>"$ALIVE"
        joined=$((joined + 1))
    fi
    sleep 4
done
echo "phase 2: churn done ($joined joined)"
total=$((N + joined))
if root=$(wait_converged "$total"); then
    echo "phase 3: one $total-relay root $(( $(date +%s) - churn_start - 60 )) s after the churn: $root"
    ok3=1
else
    echo "phase 3: FAILED to converge within 60 s after the churn"; ok3=0
fi
kill "$QPID" 2>/dev/null || true
python3 - "$WORK/served" <<'PY'
import sys, collections
roots = collections.defaultdict(set)
n = 0
for line in open(sys.argv[1]):
    t, r, e, root, c = line.split()
    roots[int(e)].add((root, int(c)))
    n += 1
split = {e: v for e, v in roots.items() if len(v) > 1}
print(f"queries answered: {n}; epochs served: {len(roots)}; epochs with two roots: {len(split)}")
for e, v in sorted(roots.items()):
    print(f"  epoch {e}: " + ", ".join(f"{root[:12]}…/{c}" for root, c in sorted(v)))
sys.exit(1 if split else 0)
PY
ok2=$?
[ "$ok2" -eq 0 ] && [ "$ok3" -eq 1 ]
