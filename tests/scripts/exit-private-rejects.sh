#!/usr/bin/env bash
# Issue 9 acceptance (process level, spec §15.1): an exit started with
# --exit-policy "accept *:*" refuses 127.0.0.1, 10.0.0.1, 169.254.169.254 and
# its own address with a SOCKS failure; the same network with
# --allow-private-exit on the exit reaches 127.0.0.1. Four relays per network
# (one exit) as separate processes on 127.17x.0.1 / 127.18x.0.1, a `lamina-client proxy`,
# curl. Loopback only. BIN defaults to target/release.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
echo hello > "$WORK/hello"
python3 -m http.server 18081 --bind 127.0.0.1 --directory "$WORK" >/dev/null 2>&1 &
PIDS+=($!)

# run_net NAME BASE EXTRA_EXIT_FLAG: start four relays (relay 3 the exit)
# and a proxy on 127.0.0.1:$((19000 + BASE)).
run_net() {
    local name=$1 base=$2 extra=$3 i args
    for i in 0 1 2 3; do
        args=(--data-dir "$WORK/$name-r$i" --listen "127.$((base + i)).0.1:9001" --epoch-secs 5 --test-network)
        [ "$i" -gt 0 ] && args+=(--seed "127.$base.0.1:9001")
        if [ "$i" -eq 3 ]; then args+=(--exit-policy "accept *:*"); [ -n "$extra" ] && args+=("$extra"); fi
        "$BIN/lamina-relay" "${args[@]}" 2>"$WORK/$name-r$i.log" &
        PIDS+=($!)
    done
    local port=$((19000 + base))
    "$BIN/lamina-client" proxy --socks "127.0.0.1:$port" --seed "127.$base.0.1:9001" --seed "127.$((base + 1)).0.1:9001" \
        --seed "127.$((base + 2)).0.1:9001" --data-dir "$WORK/$name-client" >"$WORK/$name-client.out" 2>"$WORK/$name-client.log" &
    PIDS+=($!)
    for _ in $(seq 1 1200); do grep -q ready "$WORK/$name-client.out" && break; sleep 0.05; done
    grep -q ready "$WORK/$name-client.out" || { echo "FAIL: $name proxy not ready"; tail -n 3 "$WORK/$name-client.log" "$WORK/$name-r0.log"; exit 1; }
}
try() { curl -s --max-time 20 --socks5-hostname "127.0.0.1:$1" "$2" -o /dev/null; }

run_net strict 170 ""
for url in http://127.0.0.1:18081/hello http://localhost:18081/hello http://10.0.0.1/ \
    http://169.254.169.254/latest/meta-data/ http://127.173.0.1:9001/; do
    rc=0; try 19170 "$url" || rc=$?
    [ "$rc" -eq 0 ] && { echo "FAIL: accept *:* exit reached $url"; exit 1; }
    echo "accept *:* exit: $url -> SOCKS failure (curl exit $rc)"
done
for p in "${PIDS[@]:1}"; do kill "$p" 2>/dev/null || true; done
run_net open 180 --allow-private-exit
try 19180 http://127.0.0.1:18081/hello && echo "with --allow-private-exit: http://127.0.0.1:18081/hello reached" \
    || { echo "FAIL: --allow-private-exit did not reach loopback"; exit 1; }
echo "PASS"
