#!/usr/bin/env bash
# Upgrade benchmark: gateway pinned to one core, load generator to another.
#
#   run-upgrade-bench.sh GATEWAY_BIN CONFIG [URL] [-- extra `wsgate-bench upgrade` args]
#
# Starts `GATEWAY_BIN serve --config CONFIG` under `taskset -c $GATEWAY_CORE`,
# reads the gateway's CPU time (utime+stime from /proc/PID/stat) before and
# after one `wsgate-bench upgrade` run under `taskset -c $BENCH_CORE`, and
# prints upgrades/s and gateway CPU microseconds per upgrade attempt
# (rejections/s and CPU per rejection with EXPECT=rejected).
#
# URL defaults to ws://<[server] listen><[server] path> read from CONFIG
# (0.0.0.0 / [::] become loopback). Only loopback targets are accepted.
#
# Environment (all optional):
#   BENCH_BIN          wsgate-bench binary (default: $CARGO_TARGET_DIR or
#                      <repo>/target, then /release/wsgate-bench)
#   WSGATE_JWT_SECRET  HS secret the config's key reads; a random one is
#                      generated and exported if unset
#   TOKEN_FILE         tokens, one per line, rotated (UNIQUE=1: each used once).
#                      If unset, every attempt gets a token of its own: pools
#                      of WARMUP_POOL and POOL tokens are minted before the
#                      gateway starts with `wsgate-bench mint $MINT`, and the
#                      run ends early ("stopped by tokens") if POOL runs out
#   MINT               `wsgate-bench mint` args (default: HS256 under
#                      WSGATE_JWT_SECRET), e.g. "--mint-alg ES256 --mint-key-file
#                      k.pem", "--mint-invalid bad-signature",
#                      "--mint-claims '{\"aud\":\"api\"}'"
#   POOL               tokens for the measured run (default 100000)
#   WARMUP_POOL        tokens for the warm-up (default 3000)
#   TRANSPORT          bearer | subprotocol | none (default bearer)
#   CONCURRENCY        upgrade workers (default 32)
#   DURATION           measured run length (default 10s)
#   WARMUP             unmeasured run first (default 1s; 0 to skip)
#   EXPECT             accepted | rejected (default accepted)
#   GATEWAY_CORE       CPU for the gateway (default 0)
#   BENCH_CORE         CPU for the generator (default 1)
set -euo pipefail

usage() {
    sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
[ $# -ge 2 ] || usage
GW=$1
CONFIG=$2
shift 2
URL=""
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
    URL=$1
    shift
fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then
    shift
fi
EXTRA=("$@")

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
BENCH_BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-$repo/target}/${BENCH_PROFILE:-release}/wsgate-bench}
MINT=${MINT:---mint-secret-env WSGATE_JWT_SECRET}
POOL=${POOL:-100000}
WARMUP_POOL=${WARMUP_POOL:-3000}
UNIQUE=${UNIQUE:-0}
TRANSPORT=${TRANSPORT:-bearer}
CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
EXPECT=${EXPECT:-accepted}
GATEWAY_CORE=${GATEWAY_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}

die() {
    echo "run-upgrade-bench: $*" >&2
    exit 1
}
for tool in taskset getconf awk sed; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[ -x "$GW" ] || die "gateway binary $GW is not executable"
[ -r "$CONFIG" ] || die "cannot read config $CONFIG"
[ -x "$BENCH_BIN" ] || die "wsgate-bench not found at $BENCH_BIN (cargo build --release -p wsgate-bench, or set BENCH_BIN)"

if [ -z "$URL" ]; then
    # listen/path from the [server] table of the TOML config.
    read -r listen path < <(awk '
        /^[[:space:]]*\[/ { in_server = ($0 ~ /^[[:space:]]*\[server\][[:space:]]*(#.*)?$/) }
        in_server && /^[[:space:]]*listen[[:space:]]*=/ { split($0, a, "\""); listen = a[2] }
        in_server && /^[[:space:]]*path[[:space:]]*=/   { split($0, a, "\""); path = a[2] }
        END { print (listen == "" ? "127.0.0.1:8080" : listen), (path == "" ? "/ws" : path) }
    ' "$CONFIG")
    listen=${listen/#0.0.0.0:/127.0.0.1:}
    listen=${listen/#\[::\]:/[::1]:}
    URL="ws://$listen$path"
fi
# host:port for the readiness probe
hostport=${URL#ws://}
hostport=${hostport%%/*}
port=${hostport##*:}
host=${hostport%:*}
host=${host#[}
host=${host%]}

work=$(mktemp -d)
gw_pid=""
cleanup() {
    if [ -n "$gw_pid" ] && kill -0 "$gw_pid" 2>/dev/null; then
        kill "$gw_pid" 2>/dev/null || true
        wait "$gw_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${WSGATE_JWT_SECRET:-}" ]; then
    WSGATE_JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
fi
export WSGATE_JWT_SECRET

# Tokens: the given file, or a unique token per attempt from pools minted
# now, on every core, before anything is measured.
warm_args=()
token_args=()
if [ -n "${TOKEN_FILE:-}" ]; then
    token_args=(--token-file "$TOKEN_FILE")
    [ "$UNIQUE" = 1 ] && token_args+=(--unique)
    warm_args=("${token_args[@]}")
elif [ "$TRANSPORT" != none ]; then
    eval "mint_args=($MINT)" # MINT may quote a JSON argument
    if [ "$WARMUP" != 0 ] && [ "$WARMUP" != 0s ]; then
        "$BENCH_BIN" mint --count "$WARMUP_POOL" "${mint_args[@]}" --out "$work/warmup.tok" \
            || die "wsgate-bench mint $MINT failed"
    fi
    "$BENCH_BIN" mint --count "$POOL" "${mint_args[@]}" --out "$work/pool.tok" \
        || die "wsgate-bench mint $MINT failed"
    warm_args=(--token-file "$work/warmup.tok" --unique)
    token_args=(--token-file "$work/pool.tok" --unique)
fi

cpu_ticks() { # utime + stime of the whole process (all threads)
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

log=$work/gateway.log
taskset -c "$GATEWAY_CORE" "$GW" serve --config "$CONFIG" >"$log" 2>&1 &
gw_pid=$!
ready=0
for _ in $(seq 1 100); do
    kill -0 "$gw_pid" 2>/dev/null || { cat "$log" >&2; die "gateway exited during startup"; }
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
[ "$ready" = 1 ] || { cat "$log" >&2; die "gateway did not listen on $host:$port within 10s"; }

bench() {
    taskset -c "$BENCH_CORE" "$BENCH_BIN" upgrade --url "$URL" --transport "$TRANSPORT" \
        --concurrency "$CONCURRENCY" --expect "$EXPECT" ${EXTRA[@]+"${EXTRA[@]}"} "$@"
}

if [ "$WARMUP" != 0 ] && [ "$WARMUP" != 0s ]; then
    bench ${warm_args[@]+"${warm_args[@]}"} --duration "$WARMUP" --json >/dev/null 2>"$work/warmup.err" \
        || { cat "$work/warmup.err" >&2; die "warm-up run failed"; }
fi

clk_tck=$(getconf CLK_TCK)
rss_before=$(rss_kib "$gw_pid")
ticks_before=$(cpu_ticks "$gw_pid")
set +e
report=$(bench ${token_args[@]+"${token_args[@]}"} --duration "$DURATION" --json 2>"$work/bench.err")
rc=$?
set -e
ticks_after=$(cpu_ticks "$gw_pid")
rss_after=$(rss_kib "$gw_pid")
kill -0 "$gw_pid" 2>/dev/null || die "gateway died during the run"
[ -n "$report" ] || { cat "$work/bench.err" >&2; die "wsgate-bench produced no report (exit $rc)"; }

field() { # numeric field of the one-line JSON report
    printf '%s' "$report" | sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"
}
attempts=$(field attempts)
accepted=$(field accepted)
rate=$(field rate_per_s)
elapsed=$(field elapsed_s)
p50=$(field p50_us)
p99=$(field p99_us)
stopped=$(printf '%s' "$report" | sed -n 's/.*"stopped_by":"\([a-z]*\)".*/\1/p')
tokens=$(field tokens)
case "$tokens/${token_args[*]}" in
0/*) tokens="none" ;;
*--unique*) tokens="unique per attempt ($tokens in the pool)" ;;
*) tokens="$tokens, rotated" ;;
esac

awk -v url="$URL" -v tr="$TRANSPORT" -v c="$CONCURRENCY" -v n="$attempts" -v acc="$accepted" \
    -v rate="$rate" -v el="$elapsed" -v p50="$p50" -v p99="$p99" \
    -v dt="$((ticks_after - ticks_before))" -v hz="$clk_tck" \
    -v r0="$rss_before" -v r1="$rss_after" -v ex="$EXPECT" -v st="$stopped" -v tok="$tokens" 'BEGIN {
    cpu_us = dt * 1e6 / hz
    printf "target                      %s (transport %s, concurrency %s)\n", url, tr, c
    printf "attempts                    %d in %.3f s (accepted %d, stopped by %s)\n", n, el, acc, st
    printf "tokens                      %s\n", tok
    what = (ex == "rejected") ? "rejections" : "upgrades"
    printf "%-27s %.1f\n", what "/s", rate
    printf "latency p50 / p99           %d us / %d us\n", p50, p99
    printf "gateway CPU (utime+stime)   %.3f s (%d ticks at %d Hz)\n", cpu_us / 1e6, dt, hz
    if (n > 0) printf "%-27s %.1f us\n", "gateway CPU per " substr(what, 1, length(what) - 1), cpu_us / n
    printf "gateway VmRSS               %.1f MiB before, %.1f MiB after\n", r0 / 1024, r1 / 1024
}'
echo "bench report: $report"
if [ "$rc" != 0 ]; then
    cat "$work/bench.err" >&2
    die "wsgate-bench exited $rc (expectation '$EXPECT' not met?)"
fi
