#!/usr/bin/env bash
# Issue acceptance: six relays as separate processes on 127.60.0.1 … 127.65.0.1
# (three exits with "accept 127.0.0.0/8:*, reject *:*", every relay but the
# first seeded with the first) and `lamina-client proxy` seeded with three of
# them; curl fetches 20 MiB by name and by IPv4 literal; then two of the three
# exits are killed and new requests must succeed within seconds; a private
# destination gets a SOCKS failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/release
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
head -c $((20 * 1024 * 1024)) /dev/urandom > "$WORK/blob"
python3 -m http.server 18080 --bind 127.0.0.1 --directory "$WORK" >/dev/null 2>&1 &
PIDS+=($!)
EXIT_PIDS=()
for i in 0 1 2 3 4 5; do
    args=(--data-dir "$WORK/r$i" --listen "127.$((60 + i)).0.1:9001" --epoch-secs 5 --test-network --allow-private-exit)
    [ "$i" -gt 0 ] && args+=(--seed 127.60.0.1:9001)
    [ "$i" -ge 3 ] && args+=(--exit-policy "accept 127.0.0.0/8:*, reject *:*")
    "$BIN/lamina-relay" "${args[@]}" 2>"$WORK/r$i.log" &
    PIDS+=($!)
    [ "$i" -ge 3 ] && EXIT_PIDS+=($!)
done
for _ in $(seq 1 50); do curl -s -o /dev/null http://127.0.0.1:18080/ && break; sleep 0.1; done
start=$(date +%s%N)
"$BIN/lamina-client" proxy --socks 127.0.0.1:19055 --seed 127.60.0.1:9001 --seed 127.62.0.1:9001 \
    --seed 127.64.0.1:9001 --test-network --data-dir "$WORK/client" >"$WORK/client.out" 2>"$WORK/client.log" &
PIDS+=($!)
for _ in $(seq 1 600); do grep -q ready "$WORK/client.out" && break; sleep 0.05; done
echo "proxy: $(cat "$WORK/client.out") after $(( ($(date +%s%N) - start) / 1000000 )) ms (from proxy start)"
fetch() { rm -f "$WORK/got"; curl -s --max-time 30 --socks5-hostname 127.0.0.1:19055 "$1" -o "$WORK/got" && cmp -s "$WORK/got" "$WORK/blob"; }
fetch http://localhost:18080/blob && echo "20 MiB by name (resolved at the exit): intact" || { echo "FAIL by name"; exit 1; }
fetch http://127.0.0.1:18080/blob && echo "20 MiB by IPv4 literal: intact" || { echo "FAIL by literal"; exit 1; }
kill "${EXIT_PIDS[0]}" "${EXIT_PIDS[1]}"
start=$(date +%s%N)
for attempt in $(seq 1 20); do
    if fetch http://localhost:18080/blob; then
        echo "after killing two of three exits: request $attempt succeeded $(( ($(date +%s%N) - start) / 1000000 )) ms later"
        break
    fi
    sleep 0.5
done
start=$(date +%s%N)
if curl -s --max-time 20 --socks5-hostname 127.0.0.1:19055 http://10.0.0.1/ -o /dev/null; then
    echo "FAIL: private destination reached"; exit 1
else
    echo "private destination 10.0.0.1: SOCKS failure (curl exit $?) after $(( ($(date +%s%N) - start) / 1000000 )) ms"
fi
