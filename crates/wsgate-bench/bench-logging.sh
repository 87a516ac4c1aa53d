#!/usr/bin/env bash
# Cost of logging (and metrics) on the upgrade path: HS256 bearer upgrades
# with [log] level = "info" (a JSON handshake line and a close line per
# socket, written to a file as a collector would read them) against level
# "off", alternating twice in one run. Metrics are always on.
#   crates/wsgate-bench/bench-logging.sh   (after cargo build --release -p wsgate -p wsgate-bench)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
B=${CARGO_TARGET_DIR:-$repo/target}/${BENCH_PROFILE:-release}
GW=$B/wsgate
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
WSGATE_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export WSGATE_JWT_SECRET
for i in 1 2 3 4; do "$GW" token --sub "bench-$i" --ttl 1h; done >"$T/hs.tok"
cd "$here/configs"
for round in 1 2; do
    for level in info off; do
        echo "== round $round, log level $level"
        TOKEN_FILE="$T/hs.tok" \
            "$here/run-upgrade-bench.sh" "$GW" "hs256-log-$level.toml" 2>&1 \
            | grep -E "^(attempts|upgrades/s|gateway CPU per)"
    done
done
