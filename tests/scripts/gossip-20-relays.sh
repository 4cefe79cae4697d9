#!/usr/bin/env bash
# Issue acceptance: 20 relays as separate processes on 127.40.0.1 … 127.59.0.1,
# each seeded only with the previous one; report when every relay serves the
# same 20-relay directory with the same root (bounded: 60 s).
# Usage: tests/scripts/gossip-20-relays.sh [N] (build first:
#   cargo build --release -p lamina-relay -p lamina-client)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-20}
BIN=target/release
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
start=$(date +%s%N)
for i in $(seq 0 $((N - 1))); do
    ip="127.$((40 + i)).0.1"
    seed=()
    [ "$i" -gt 0 ] && seed=(--seed "127.$((39 + i)).0.1:9001")
    "$BIN/lamina-relay" --data-dir "$WORK/r$i" --listen "$ip:9001" "${seed[@]}" --epoch-secs 5 --test-network 2>"$WORK/r$i.log" &
    PIDS+=($!)
done
deadline=$(( $(date +%s) + 60 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
    roots=()
    for i in $(seq 0 $((N - 1))); do
        line=$("$BIN/lamina-client" dir --seed "127.$((40 + i)).0.1:9001" 2>/dev/null | tail -1 || true)
        roots+=("$line")
    done
    uniq=$(printf '%s\n' "${roots[@]}" | sort -u)
    if [ "$(printf '%s\n' "$uniq" | wc -l)" -eq 1 ] && [[ "$uniq" == "relays: $N root: "* ]]; then
        echo "converged after $(( ($(date +%s%N) - start) / 1000000 )) ms: $uniq"
        exit 0
    fi
    sleep 1
done
echo "did not converge within 60 s:"; printf '%s\n' "${roots[@]}" | sort | uniq -c
exit 1
