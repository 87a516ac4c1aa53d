#!/usr/bin/env bash
# Expiry storm (issue 10): CONNECTIONS (default 15000) sockets whose tokens
# all expire at the same second. Reports when each got its 4401 relative
# to the deadline, and the latency of probe upgrades (a long-lived token,
# one every 10 ms) from 1 s before the deadline until the storm is over.
# Gateway on core 0, generator on core 1.
#
#   crates/wsgate-bench/bench-storm.sh     (after cargo build --release -p wsgate -p wsgate-bench)
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
WSGATE_JWT_SECRET=$(random_hex 32)
export WSGATE_JWT_SECRET
N=${CONNECTIONS:-15000}
# Time to open N sockets at ~3k/s, plus margin.
TTL=${TTL:-$(( N / 2000 + 12 ))}
# One token per socket (each its own user), all with the same exp.
"$B/wsgate-bench" mint --count "$N" --mint-secret-env WSGATE_JWT_SECRET \
    --mint-exp "$(($(date +%s) + TTL))" --out "$T/storm.tok"
"$B/wsgate" token --sub probe --ttl 1h >"$T/probe.tok"
bg taskset -c 0 "$B/wsgate" serve --config "$here/configs/storm.toml" >"$T/gw.log" 2>&1
wait_ready "$T/gw.log"
taskset -c 1 "$B/wsgate-bench" storm --url ws://127.0.0.1:18080/ws --token-file "$T/storm.tok" --unique \
    --probe-token-file "$T/probe.tok" --connections "$N" 2>/dev/null
