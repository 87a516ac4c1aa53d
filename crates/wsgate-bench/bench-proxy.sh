#!/usr/bin/env bash
# Proxy overhead (issue 5): round-trip time and messages/s of 64-byte echo
# messages over 100 sockets, directly to the minimal echo server and through
# wsgate's upstream backend in front of the same server, alternating, in one
# run. Both server processes run on core 0 (they share it in the proxied run,
# as on one host), the generator on core 1. Reports each server process's
# CPU per message from /proc.
#
#   crates/wsgate-bench/bench-proxy.sh        (after cargo build --release -p wsgate -p wsgate-bench --bins --examples)
#
# Environment: ROUNDS (default 2), DURATION (default 10s), CONNECTIONS (100), SIZE (64).
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
WSGATE_JWT_SECRET=$(random_hex 32)
WSGATE_IDENTITY_SECRET=$(random_hex 32)
export WSGATE_JWT_SECRET WSGATE_IDENTITY_SECRET
for i in $(seq 1 4); do "$B/wsgate" token --sub "bench-$i" --ttl 1h; done >"$T/hs.tok"

bg taskset -c 0 "$B/examples/echo_server" 127.0.0.1:19001 4096 >/dev/null 2>&1
echo_pid=$last_pid
bg taskset -c 0 "$B/wsgate" serve --config "$here/configs/proxy.toml" >"$T/gw.log" 2>&1
gw_pid=$last_pid
wait_ready "$T/gw.log"

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
run() { # name url [args...]
    local name=$1 url=$2; shift 2
    local e0 g0 e1 g1
    e0=$(ticks "$echo_pid"); g0=$(ticks "$gw_pid")
    taskset -c 1 "$B/wsgate-bench" --json echo --url "$url" --connections "${CONNECTIONS:-100}" \
        --size "${SIZE:-64}" --duration "${DURATION:-10s}" "$@" >"$T/$name.json" 2>/dev/null
    e1=$(ticks "$echo_pid"); g1=$(ticks "$gw_pid")
    python3 - "$T/$name.json" "$name" "$((e1 - e0))" "$((g1 - g0))" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); name = sys.argv[2]
e, g, hz = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
n = max(r["messages"], 1); rtt = r["rtt_us"]
gw = f"{g / hz / n * 1e6:6.1f}" if name == "proxied" else "     -"
print(f"{name:8} {r['messages_per_s']:9.0f} msg/s  rtt p50 {rtt['p50_us']:5d} us  p99 {rtt['p99_us']:5d} us"
      f"  | CPU/msg: echo server {e / hz / n * 1e6:5.1f} us, gateway {gw} us"
      f"  | errors {r['errors_total']} mismatched {r['mismatched']}")
PY
}
for round in $(seq 1 "${ROUNDS:-2}"); do
    echo "== round $round"
    run direct ws://127.0.0.1:19001/ws --transport none
    run proxied ws://127.0.0.1:18080/ws --token-file "$T/hs.tok"
done
