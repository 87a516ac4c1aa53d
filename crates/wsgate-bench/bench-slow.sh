#!/usr/bin/env bash
# Slow consumers (issue 28): the gateway's peak RSS while sockets never
# read what it sends them.
#
#   crates/wsgate-bench/bench-slow.sh GATEWAY_BINARY [GATEWAY_BINARY...]
#
# Per binary and scenario, a fresh gateway (configs/slow-hub.toml or
# slow-echo.toml, 127.0.0.1:18580, admin 19591) under the generator's
# `slow-consumers` mode for DURATION (10s); reported: its RSS before (VmRSS
# once ready), its peak (VmHWM) and the growth, in MB and per sloth.
# SCENARIOS is a list of BACKEND:SLOTHS:SIZE:RATE[:shared], RATE in
# messages/s over all publishers (hub) or all sloths (echo). Default:
#   hub:1:900000:50     issue 28's attack, one pair (900 KB at 50/s)
#   hub:2:900000:100    two pairs
#   hub:100:65536:2000  100 subscribers on their own channels, 64 KiB
#                       messages: each fills its byte budget
#   echo:100:900000:500 100 echo clients sending 900 KB, reading nothing
# Env: DURATION, HOLD (sloths are replaced after it, 3s), SCENARIOS,
# GATEWAY_ENV (e.g. "MIMALLOC_PURGE_DELAY=0": freed pages go back to the
# system at once, so the peak shows what was live rather than what the
# allocator kept).
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
[ $# -ge 1 ] || { echo "usage: $0 GATEWAY_BINARY [GATEWAY_BINARY...]" >&2; exit 1; }
DURATION=${DURATION:-10s}
HOLD=${HOLD:-3s}
read -r -a scenarios <<< "${SCENARIOS:-hub:1:900000:50 hub:2:900000:100 hub:100:65536:2000 echo:100:900000:500}"
for bin in "$@" "$B/wsgate-bench"; do [ -x "$bin" ] || { echo "$bin missing" >&2; exit 1; }; done
WSGATE_JWT_SECRET=$(random_hex 32)
export WSGATE_JWT_SECRET
"$B/wsgate-bench" mint --count 16 --mint-secret-env WSGATE_JWT_SECRET --out "$T/tok" >/dev/null
status() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
metric() { curl -sf http://127.0.0.1:19591/metrics | awk -v k="$1" '$1 == k { print $2 }'; }

echo -e "| binary | scenario | sloths opened | messages sent | RSS before (MB) | peak (MB) | growth (MB) | growth per sloth (MB) | slow closes |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
for sc in "${scenarios[@]}"; do
    IFS=: read -r backend n size rate shared <<< "$sc"
    for bin in "$@"; do
        # shellcheck disable=SC2086
        bg env ${GATEWAY_ENV:-} "$bin" serve --config "$here/configs/slow-$backend.toml" >"$T/gw.log" 2>&1
        gw=$last_pid
        for _ in $(seq 1 100); do curl -sf http://127.0.0.1:19591/readyz >/dev/null 2>&1 && break; sleep 0.1; done
        before=$(status "$gw" VmRSS)
        "$B/wsgate-bench" --json slow-consumers --url ws://127.0.0.1:18580/ws --token-file "$T/tok" \
            --backend "$backend" --connections "$n" --size "$size" --rate "$rate" \
            --duration "$DURATION" --hold "$HOLD" ${shared:+--shared-channel} >"$T/r.json" 2>"$T/r.err" \
            || { cat "$T/r.err" >&2; exit 1; }
        peak=$(status "$gw" VmHWM)
        slow=$(metric 'wsgate_slow_consumers_total{peer="client"}')
        stop "$gw"
        python3 - "$T/r.json" "$bin" "$sc" "$before" "$peak" "${slow:--}" "$n" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
bin_, sc, before, peak, slow, n = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], int(sys.argv[7])
mb = lambda kib: kib / 1024
print(f"| {bin_} | {sc} | {r['sloths_opened']} | {r['messages_sent']} | {mb(before):.1f} | {mb(peak):.1f} | {mb(peak - before):.1f} | {mb(peak - before) / n:.2f} | {slow} |")
PY
    done
done
