#!/usr/bin/env bash
# User-space instructions per upgrade attempt, two gateway binaries side by
# side, under callgrind: the stable figure where the VM has no hardware
# counters (`perf stat` prints "<not supported>") and CPU time swings with
# the neighbours. Kernel work is not counted (valgrind sees user space only).
#
#   crates/wsgate-bench/bench-instr.sh OLD_BINARY NEW_BINARY
#
# Per binary and outcome (accepted: valid HS256 bearer; rejected: bad
# signature), the gateway runs under callgrind with instrumentation off,
# takes WARMUP attempts, then counts COUNT attempts (each token unique) and
# exits. valgrind has no SHA-NI, so HMAC rows overstate what hardware runs.
# Env: COUNT (2000), WARMUP (300), ROUNDS (1), UPSTREAM (empty: echo
# backend; `http1` or `h2`: configs/proxy.toml or proxy-h2.toml in front of
# the example echo server, not under callgrind, accepted upgrades only).
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
[ $# = 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 1; }
A=$1 Bn=$2
COUNT=${COUNT:-2000}
WARMUP=${WARMUP:-300}
ROUNDS=${ROUNDS:-1}
UPSTREAM=${UPSTREAM:-}
case $UPSTREAM in
"") config=hs256.toml ;;
http1) config=proxy.toml echo_args=(127.0.0.1:19001 4096) ;;
h2) config=proxy-h2.toml echo_args=(127.0.0.1:19002 4096 h2) ;;
*) echo "bench-instr: UPSTREAM is http1 or h2" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
for bin in "$A" "$Bn" "$B/wsgate-bench"; do [ -x "$bin" ] || { echo "$bin missing" >&2; exit 1; }; done
WSGATE_JWT_SECRET=$(random_hex 32)
export WSGATE_JWT_SECRET
WSGATE_IDENTITY_SECRET=$(random_hex 32)
export WSGATE_IDENTITY_SECRET
sed 's/127.0.0.1:18080/127.0.0.1:28080/; s/127.0.0.1:19091/127.0.0.1:29091/' \
    "$here/configs/$config" >"$T/instr.toml"
if [ -n "$UPSTREAM" ]; then
    [ -x "$B/examples/echo_server" ] || { echo "$B/examples/echo_server missing" >&2; exit 1; }
    bg "$B/examples/echo_server" "${echo_args[@]}" >"$T/echo.log" 2>&1
fi
n=$((COUNT + WARMUP))
"$B/wsgate-bench" mint --count "$n" --mint-secret-env WSGATE_JWT_SECRET --out "$T/good.tok" >/dev/null
"$B/wsgate-bench" mint --count "$n" --mint-secret-env WSGATE_JWT_SECRET \
    --mint-invalid bad-signature --out "$T/bad.tok" >/dev/null

one() { # binary tokens expect -> "binary outcome attempts instructions-per-attempt"
    local bin=$1 tok=$2 expect=$3 gw
    head -n "$WARMUP" "$tok" >"$T/warm.tok"
    tail -n "$COUNT" "$tok" >"$T/count.tok"
    rm -f "$T/cg.out"
    bg valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$T/cg.out" \
        "$bin" serve --config "$T/instr.toml" >"$T/gw.log" 2>&1
    gw=$last_pid
    for _ in $(seq 1 300); do curl -sf http://127.0.0.1:29091/readyz >/dev/null 2>&1 && break; sleep 0.1; done
    "$B/wsgate-bench" upgrade --url ws://127.0.0.1:28080/ws --token-file "$T/warm.tok" --unique \
        --concurrency 8 --count "$WARMUP" --expect "$expect" >/dev/null 2>&1
    callgrind_control -i on "$gw" >/dev/null
    "$B/wsgate-bench" upgrade --url ws://127.0.0.1:28080/ws --token-file "$T/count.tok" --unique \
        --concurrency 8 --count "$COUNT" --expect "$expect" >/dev/null 2>&1
    callgrind_control -i off "$gw" >/dev/null
    stop "$gw"
    local total
    total=$(awk '/^totals:/ { print $2; exit }' "$T/cg.out")
    printf '%s\t%s\t%d\t%.0f\n' "$bin" "$expect" "$COUNT" "$(echo "$total / $COUNT" | bc -l)" | tee -a "$T/rows"
}
echo -e "binary\toutcome\tattempts\tinstructions per attempt"
if [ -z "$UPSTREAM" ]; then
    ab_rounds
else
    for _ in $(seq 1 "$ROUNDS"); do
        for bin in "$A" "$Bn"; do one "$bin" "$T/good.tok" accepted; done
    done
fi
python3 - "$T/rows" "$A" "$Bn" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
a, b = sys.argv[2], sys.argv[3]
print("\n| outcome | A instr/attempt | B instr/attempt | B/A |\n|---|---:|---:|---:|")
for outcome in ("accepted", "rejected"):
    if not any(r[1] == outcome for r in rows):
        continue
    med = lambda bin: statistics.median(float(r[3]) for r in rows if r[0] == bin and r[1] == outcome)
    ma, mb = med(a), med(b)
    print(f"| {outcome} | {ma:,.0f} | {mb:,.0f} | {mb / ma:.3f} |")
PY
