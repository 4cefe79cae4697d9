#!/usr/bin/env bash
# Lamina under Shadow (spec §16; README "Internet-scale experiments (Shadow)").
#
#   tests/shadow/run.sh SCENARIO [--relays N] [--clients M] [--minutes T] [--json FILE] [...]
#
# SCENARIO is bulk-wan, fair-share or network; `run.sh bulk-wan --help` lists
# every option. Builds the release binaries (unless LAMINA_BIN names a folder
# holding them), writes the configuration to tests/shadow/out/SCENARIO/, runs
# Shadow there and prints one last line of key=value figures.
# Shadow: $SHADOW, else ~/.local/shadow/bin/shadow (../shared/tools/shadow/build.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
shadow=${SHADOW:-$HOME/.local/shadow/bin/shadow}
if [ $# -eq 0 ]; then
    sed -n '2,12p' "$0"
    exit 2
fi
if [ ! -x "$shadow" ]; then
    echo "run.sh: no Shadow at $shadow: build it with shared/tools/shadow/build.sh or set SHADOW" >&2
    exit 2
fi
if [ -z "${LAMINA_BIN:-}" ]; then
    (cd "$root" && nice -n 10 cargo build --release -q -p lamina-relay -p lamina-client -p lamina-tests \
        --bin lamina-relay --bin lamina-client --bin lamina-shadow-server --bin lamina-shadow-fetch)
    LAMINA_BIN="${CARGO_TARGET_DIR:-$root/target}/release"
fi
exec python3 "$here/lamina_shadow.py" --bin "$LAMINA_BIN" --shadow "$shadow" "$@"
