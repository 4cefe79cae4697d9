#!/usr/bin/env bash
# Issue 8 acceptance, default epoch length (3600 s, Δ = 900 s): relays
# queried in their first second serve nothing yet (no cut is frozen), and
# after the next boundary at least Δ after their start every relay serves
# the same N-relay root: the early query changed nothing.
# Usage: tests/scripts/dir-default-epoch.sh  (waits until that boundary + 60 s,
#   at most 76 minutes; BIN=target/release by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-5}
BIN=${BIN:-target/release}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
ip() { echo "127.$((80 + $1)).0.1"; }
query() { "$BIN/lamina-client" dir --json --pow-bits 8 --seed "$(ip "$1"):9001" 2>&1 | tr -d '\n' || true; }
for i in $(seq 0 $((N - 1))); do
    seed=()
    [ "$i" -gt 0 ] && seed=(--seed "$(ip $((i - 1))):9001")
    "$BIN/lamina-relay" --data-dir "$WORK/r$i" --listen "$(ip "$i"):9001" "${seed[@]}" --pow-bits 8 --test-network 2>"$WORK/r$i.log" &
    PIDS+=($!)
done
sleep 1
echo "first second:"
for i in $(seq 0 $((N - 1))); do echo "  relay $i: $(query "$i" | grep -o 'serves no snapshot[^"]*\|"root": "[0-9a-f]*"' | head -1)"; done
now=$(date +%s)
boundary=$(( (now / 3600 + 1) * 3600 ))
[ $(( boundary - now )) -lt 900 ] && boundary=$(( boundary + 3600 ))
echo "waiting for the boundary at $(date -u -d @"$boundary" +%H:%M:%S) + 60 s"
sleep $(( boundary + 60 - now ))
python3 - "$N" <<PY
import json, subprocess, sys
n = int(sys.argv[1]); seen = set()
for i in range(n):
    out = subprocess.run(["$BIN/lamina-client", "dir", "--json", "--pow-bits", "8", "--seed", f"127.{80 + i}.0.1:9001"],
                         capture_output=True, text=True).stdout
    d = json.loads(out); seen.add((d["epoch"], d["root"], d["count"]))
    print(f"  relay {i}: epoch {d['epoch']} root {d['root'][:16]}… count {d['count']}")
ok = len(seen) == 1 and next(iter(seen))[2] == n
print("one root over all relays" if ok else "DISAGREEMENT")
sys.exit(0 if ok else 1)
PY
