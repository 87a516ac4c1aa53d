#!/usr/bin/env bash
# A/B of two gateway binaries on the upgrade path, alternating, in one run:
# per attempt, the gateway's CPU time (utime+stime) and, from `perf stat`,
# its user and kernel cycles and instructions. Instructions are the stable
# figure on this noisy machine (kernel *cycles* swing 2x between identical
# runs: spinlock waits against the generator's core); user cycles are
# usable; CPU time is the coarsest.
#
#   crates/wsgate-bench/bench-ab.sh OLD_BINARY NEW_BINARY
#
# Gateway on core 0, generator on core 1; configs/hs256.toml moved to ports
# 28080/29091 so a concurrently running bench on 18080 is not hit. Each round
# runs accepted upgrades (valid HS256 bearer) and rejected ones (bad
# signature) against both binaries. Env: ROUNDS (3), DURATION (3s).
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
[ $# = 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 1; }
A=$1 Bn=$2
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3s}
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 1; }
# Some VMs expose no hardware counters (perf prints "<not supported>"):
# then only the CPU µs column means anything.
if perf stat -x, -e instructions:u -- true 2>&1 | grep -q "not supported"; then
    echo "bench-ab: this machine has no hardware counters; cycles and instructions read 0, only CPU µs counts" >&2
fi
for bin in "$A" "$Bn" "$B/wsgate-bench"; do [ -x "$bin" ] || { echo "$bin missing" >&2; exit 1; }; done
WSGATE_JWT_SECRET=$(random_hex 32)
export WSGATE_JWT_SECRET
for i in 1 2 3 4; do "$A" token --sub "bench-$i" --ttl 1h; done >"$T/good.tok"
for i in 1 2 3 4; do
    WSGATE_JWT_SECRET=not-the-gateway-secret-not-the-gateway-secret "$A" token --sub "bench-$i" --ttl 1h
done >"$T/bad.tok"
sed 's/127.0.0.1:18080/127.0.0.1:28080/; s/127.0.0.1:19091/127.0.0.1:29091/' \
    "$here/configs/hs256.toml" >"$T/ab.toml"

one() { # binary tokens expect -> one result line (also appended to $T/rows)
    local bin=$1 tok=$2 expect=$3 gw perf_pid t0 t1
    bg taskset -c 0 "$bin" serve --config "$T/ab.toml" >"$T/gw.log" 2>&1
    gw=$last_pid
    for _ in $(seq 1 100); do curl -sf http://127.0.0.1:29091/readyz >/dev/null 2>&1 && break; sleep 0.1; done
    taskset -c 1 "$B/wsgate-bench" upgrade --url ws://127.0.0.1:28080/ws --token-file "$tok" \
        --concurrency 32 --duration 1s --expect "$expect" >/dev/null 2>&1
    perf stat -x, -e cycles:u,cycles:k,instructions:u,instructions:k -p "$gw" -o "$T/perf" &
    perf_pid=$!
    sleep 0.2
    t0=$(sed 's/.*) //' "/proc/$gw/stat" | awk '{ print $12 + $13 }')
    taskset -c 1 "$B/wsgate-bench" --json upgrade --url ws://127.0.0.1:28080/ws --token-file "$tok" \
        --concurrency 32 --duration "$DURATION" --expect "$expect" 2>/dev/null | tail -1 >"$T/run.json"
    t1=$(sed 's/.*) //' "/proc/$gw/stat" | awk '{ print $12 + $13 }')
    kill -INT "$perf_pid"; wait "$perf_pid" || true
    stop "$gw"
    python3 - "$T" "$bin" "$expect" "$t0" "$t1" "$(getconf CLK_TCK)" <<'PY' | tee -a "$T/rows"
import json, sys
d, name, expect, t0, t1, clk = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
r = json.loads(open(f"{d}/run.json").read())
n = r["attempts"]
c = {}
for line in open(f"{d}/perf"):
    f = line.strip().split(",")
    if len(f) > 2 and f[0].isdigit():
        c[f[2]] = int(f[0])
k = lambda e: c.get(e, 0) / n / 1000
print(f"{name}\t{expect}\t{n}\t{(t1 - t0) / clk * 1e6 / n:.2f}\t{k('cycles:u'):.1f}\t{k('cycles:k'):.1f}\t{k('instructions:u'):.1f}\t{k('instructions:k'):.1f}")
PY
}
echo -e "binary\toutcome\tattempts\tCPU µs\tkcycles user\tkcycles kernel\tkinstr user\tkinstr kernel"
ab_rounds
python3 - "$T/rows" "$A" "$Bn" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
a, b = sys.argv[2], sys.argv[3]
cols = ["CPU µs", "kcycles user", "kcycles kernel", "kinstr user", "kinstr kernel"]
print("\nMedians per attempt (B / A):")
print("| outcome | figure | A | B | B/A |\n|---|---|---:|---:|---:|")
for outcome in ("accepted", "rejected"):
    for i, col in enumerate(cols):
        med = lambda bin: statistics.median(float(r[3 + i]) for r in rows if r[0] == bin and r[1] == outcome)
        ma, mb = med(a), med(b)
        print(f"| {outcome} | {col} | {ma:.2f} | {mb:.2f} | {mb / ma:.3f} |")
PY
