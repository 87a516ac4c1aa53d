#!/usr/bin/env bash
# Hub fan-out (issue 5): SIZES (default "1000 15000") sockets subscribe to one
# channel; PUBLISHES (default 20) admin publishes each report the time from
# the publish request to the first and to the last delivery. Gateway on
# core 0, generator on core 1.
#
#   crates/wsgate-bench/bench-fanout.sh     (after cargo build --release -p wsgate -p wsgate-bench)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
B=${CARGO_TARGET_DIR:-$repo/target}/${BENCH_PROFILE:-release}
T=$(mktemp -d)
gw_pid=
cleanup() { if [ -n "$gw_pid" ]; then kill "$gw_pid" 2>/dev/null; wait "$gw_pid" 2>/dev/null; fi; rm -rf "$T"; }
trap cleanup EXIT
WSGATE_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
WSGATE_ADMIN_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export WSGATE_JWT_SECRET WSGATE_ADMIN_TOKEN
for i in $(seq 1 4); do "$B/wsgate" token --sub "bench-$i" --ttl 1h; done >"$T/hs.tok"
for n in ${SIZES:-1000 15000}; do
    taskset -c 0 "$B/wsgate" serve --config "$here/configs/fanout.toml" >"$T/gw.log" 2>&1 &
    gw_pid=$!
    for _ in $(seq 1 100); do curl -sf http://127.0.0.1:19091/readyz >/dev/null 2>&1 && break; sleep 0.1; done
    curl -sf http://127.0.0.1:19091/readyz >/dev/null || { echo "gateway not ready (port 18080/19091 busy?)" >&2; cat "$T/gw.log" >&2; exit 1; }
    echo "== $n subscribers"
    taskset -c 1 "$B/wsgate-bench" fanout --url ws://127.0.0.1:18080/ws --token-file "$T/hs.tok" \
        --admin-url http://127.0.0.1:19091 --connections "$n" --publishes "${PUBLISHES:-20}" \
        --open-concurrency 64 2>/dev/null | sed 's/^/  /'
    kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true; gw_pid=
done
