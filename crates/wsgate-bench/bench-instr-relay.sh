#!/usr/bin/env bash
# User-space instructions per relayed message, two gateway binaries side by
# side, under callgrind: the relay path's stable figure (bench-instr.sh does
# the same per upgrade). Kernel work is not counted.
#
#   crates/wsgate-bench/bench-instr-relay.sh OLD_BINARY NEW_BINARY
#
# Per binary, backend (echo; upstream: configs/proxy.toml in front of the
# example echo server, which is not under callgrind) and message, the
# gateway runs under callgrind with instrumentation off; CONNECTIONS
# sockets echo closed-loop for DURATION with instrumentation on; the
# figure is instructions / messages echoed (the sockets' upgrades fall in
# the window: ~0.1 % of it). Messages:
#   binary  64 bytes, never inspected
#   json    {"type":"msg","text":"hello, world"}: text, no control candidate
#   escaped {"type":"msg","text":"caf\u00e9"}: a \u escape, of no letter of
#           "auth": skipped too
#   auth    {"type":"msg","text":"auth"}: contains "auth", parsed in full
# Env: DURATION (5s), CONNECTIONS (4), ROUNDS (1), BACKENDS ("echo upstream"),
# MESSAGES ("binary json escaped auth").
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
[ $# = 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 1; }
A=$1 Bn=$2
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-4}
ROUNDS=${ROUNDS:-1}
read -r -a backends <<< "${BACKENDS:-echo upstream}"
read -r -a messages <<< "${MESSAGES:-binary json escaped auth}"
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
for bin in "$A" "$Bn" "$B/wsgate-bench" "$B/examples/echo_server"; do
    [ -x "$bin" ] || { echo "$bin missing" >&2; exit 1; }
done
WSGATE_JWT_SECRET=$(random_hex 32)
export WSGATE_JWT_SECRET
WSGATE_IDENTITY_SECRET=$(random_hex 32)
export WSGATE_IDENTITY_SECRET
for f in echo proxy; do
    sed 's/127.0.0.1:18080/127.0.0.1:28080/; s/127.0.0.1:19091/127.0.0.1:29091/' \
        "$here/configs/$f.toml" >"$T/$f.toml"
done
bg "$B/examples/echo_server" 127.0.0.1:19001 4096 >"$T/echo.log" 2>&1
"$B/wsgate-bench" mint --count "$((CONNECTIONS * 4))" --mint-secret-env WSGATE_JWT_SECRET --out "$T/good.tok" >/dev/null

payload() {
    case $1 in
    binary) ;;
    json) printf '%s' '--text={"type":"msg","text":"hello, world"}' ;;
    escaped) printf '%s' '--text={"type":"msg","text":"caf\u00e9"}' ;;
    auth) printf '%s' '--text={"type":"msg","text":"auth"}' ;;
    *) echo "bench-instr-relay: unknown message $1" >&2; exit 2 ;;
    esac
}

one() { # binary backend message -> "binary backend message messages instructions-per-message"
    local bin=$1 backend=$2 msg=$3 gw config text
    config=$T/echo.toml
    [ "$backend" = upstream ] && config=$T/proxy.toml
    text=$(payload "$msg")
    rm -f "$T/cg.out"
    bg valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$T/cg.out" \
        "$bin" serve --config "$config" >"$T/gw.log" 2>&1
    gw=$last_pid
    for _ in $(seq 1 300); do curl -sf http://127.0.0.1:29091/readyz >/dev/null 2>&1 && break; sleep 0.1; done
    # Warm-up, uninstrumented: first-use allocations, lazy statics.
    "$B/wsgate-bench" --json echo --url ws://127.0.0.1:28080/ws --token-file "$T/good.tok" \
        --connections "$CONNECTIONS" --duration 1s ${text:+"$text"} >/dev/null 2>&1
    callgrind_control -i on "$gw" >/dev/null 2>&1
    "$B/wsgate-bench" --json echo --url ws://127.0.0.1:28080/ws --token-file "$T/good.tok" \
        --connections "$CONNECTIONS" --duration "$DURATION" ${text:+"$text"} >"$T/e.json" 2>/dev/null
    callgrind_control -i off "$gw" >/dev/null 2>&1
    stop "$gw"
    local total n
    total=$(awk '/^totals:/ { print $2; exit }' "$T/cg.out")
    n=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["errors_total"]==0 and r["mismatched"]==0, r; print(r["messages"])' "$T/e.json")
    printf '%s\t%s\t%s\t%d\t%.0f\n' "$bin" "$backend" "$msg" "$n" "$(echo "$total / $n" | bc -l)" | tee -a "$T/rows"
}

echo -e "binary\tbackend\tmessage\tmessages\tinstructions per message"
for _ in $(seq 1 "$ROUNDS"); do
    for backend in "${backends[@]}"; do
        for msg in "${messages[@]}"; do
            for bin in "$A" "$Bn"; do one "$bin" "$backend" "$msg"; done
        done
    done
done
python3 - "$T/rows" "$A" "$Bn" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
a, b = sys.argv[2], sys.argv[3]
print("\n| backend | message | A instr/message | B instr/message | B/A |\n|---|---|---:|---:|---:|")
seen = []
for r in rows:
    if (r[1], r[2]) not in seen:
        seen.append((r[1], r[2]))
for backend, msg in seen:
    med = lambda bin: statistics.median(float(r[4]) for r in rows if r[0] == bin and r[1] == backend and r[2] == msg)
    ma, mb = med(a), med(b)
    print(f"| {backend} | {msg} | {ma:,.0f} | {mb:,.0f} | {mb / ma:.3f} |")
PY
