#!/usr/bin/env bash
# Echo through the gateway (issue 10): 100 sockets, 64-byte messages, closed
# loop, 10 s; wsgate (echo backend, HS256 bearer) against the minimal echo
# server in the same run, alternating over 2 rounds; server CPU per message
# from /proc. Server on core 0, generator on core 1.
#   crates/wsgate-bench/bench-echo.sh   (after cargo build --release -p wsgate -p wsgate-bench --bins --examples)
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
WSGATE_JWT_SECRET=$(random_hex 32)
export WSGATE_JWT_SECRET
for i in 1 2 3 4; do "$B/wsgate" token --sub "bench-$i" --ttl 1h; done > "$T/hs.tok"
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
one() { # name pid url args
  local name=$1 pid=$2 url=$3; shift 3
  local a b; a=$(ticks "$pid")
  taskset -c 1 "$B/wsgate-bench" --json echo --url "$url" --connections "${CONNECTIONS:-100}" --size "${SIZE:-64}" --duration "${DURATION:-10s}" "$@" > "$T/e.json" 2>/dev/null
  b=$(ticks "$pid")
  python3 - "$name" $((b-a)) "$T/e.json" "$(getconf CLK_TCK)" <<'PY'
import json,sys
r=json.load(open(sys.argv[3])); n=r['messages']; t=int(sys.argv[2])/int(sys.argv[4])
print(f"{sys.argv[1]:28} {r['messages_per_s']:9.0f} msg/s  rtt p50 {r['rtt_us']['p50_us']:5d} us p99 {r['rtt_us']['p99_us']:5d} us  server CPU {t/n*1e6:5.2f} us/msg  errors {r['errors_total']}")
PY
}
for _ in $(seq 1 "${ROUNDS:-2}"); do
  bg taskset -c 0 "$B/examples/echo_server" 127.0.0.1:19001 4096 >/dev/null 2>&1; sleep 0.5
  one "echo-server (no auth)" "$last_pid" ws://127.0.0.1:19001/ws --transport none; stop "$last_pid"
  bg taskset -c 0 "$B/wsgate" serve --config "$here/configs/echo.toml" >"$T/gw.log" 2>&1
  wait_ready "$T/gw.log"
  one "wsgate echo (HS256 bearer)" "$last_pid" ws://127.0.0.1:18080/ws --token-file "$T/hs.tok"; stop "$last_pid"
done
