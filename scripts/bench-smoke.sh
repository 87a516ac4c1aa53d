#!/usr/bin/env bash
# The benchmark scripts in a quick smoke mode (a few hundred connections,
# 1-2 s runs, debug binaries), so that CI keeps them working. These are not
# measurements: BENCHMARKS.md's figures come from release builds on a quiet
# machine (each script's header says how).
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_PROFILE=debug
cargo build --quiet -p wsgate -p wsgate-bench --bins --examples
B=crates/wsgate-bench
run() { # name command...
    local name=$1; shift
    local t0=$SECONDS
    if ! "$@" >"/tmp/bench-smoke-$name.log" 2>&1; then
        cat "/tmp/bench-smoke-$name.log" >&2
        echo "bench-smoke: $name FAILED" >&2
        exit 1
    fi
    echo "bench-smoke: $name ok ($((SECONDS - t0)) s)"
    # A stopped gateway drains before it exits: wait for the ports.
    for _ in $(seq 1 300); do
        ss -Hltn '( sport = :18080 or sport = :19091 or sport = :19001 )' | grep -q . || break
        sleep 0.1
    done
}
run upgrades env DURATION=1s WARMUP=0 POOL=2000 RSA_POOL=200 "$B/bench-upgrades.sh"
run algs env ROUNDS=1 SEGMENT=400 "$B/bench-algs.sh"
# The cookie transport with per-attempt CSRF claims, through the same runner.
run cookie env TRANSPORT=cookie MINT="--mint-secret-env WSGATE_JWT_SECRET --mint-csrf" POOL=300 \
    WARMUP=0 DURATION=1s "$B/run-upgrade-bench.sh" "${CARGO_TARGET_DIR:-target}/debug/wsgate" "$B/configs/cookie.toml" \
    -- --origin https://app.example
run echo env ROUNDS=1 DURATION=1s CONNECTIONS=20 "$B/bench-echo.sh"
run proxy env ROUNDS=1 DURATION=1s CONNECTIONS=20 "$B/bench-proxy.sh"
run fanout env SIZES=300 PUBLISHES=3 "$B/bench-fanout.sh"
run storm env CONNECTIONS=300 TTL=5 "$B/bench-storm.sh"
run memory env CONNECTIONS=300 "$B/bench-memory.sh"
# wss:// against the TLS ceiling (and HAProxy when it is installed).
run tls env SMOKE=1 "$B/bench-tls.sh"
