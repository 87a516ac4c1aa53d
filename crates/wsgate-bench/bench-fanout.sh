#!/usr/bin/env bash
# Hub fan-out (issue 5): SIZES (default "1000 15000") sockets subscribe to one
# channel; PUBLISHES (default 20) admin publishes each report the time from
# the publish request to the first and to the last delivery. Gateway on
# core 0, generator on core 1.
#
#   crates/wsgate-bench/bench-fanout.sh     (after cargo build --release -p wsgate -p wsgate-bench)
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
WSGATE_JWT_SECRET=$(random_hex 32)
WSGATE_ADMIN_TOKEN=$(random_hex 16)
export WSGATE_JWT_SECRET WSGATE_ADMIN_TOKEN
for i in $(seq 1 4); do "$B/wsgate" token --sub "bench-$i" --ttl 1h; done >"$T/hs.tok"
for n in ${SIZES:-1000 15000}; do
    bg taskset -c 0 "$B/wsgate" serve --config "$here/configs/fanout.toml" >"$T/gw.log" 2>&1
    wait_ready "$T/gw.log"
    echo "== $n subscribers"
    taskset -c 1 "$B/wsgate-bench" fanout --url ws://127.0.0.1:18080/ws --token-file "$T/hs.tok" \
        --admin-url http://127.0.0.1:19091 --connections "$n" --publishes "${PUBLISHES:-20}" \
        --open-concurrency 64 2>/dev/null | sed 's/^/  /'
    stop "$last_pid"
done
