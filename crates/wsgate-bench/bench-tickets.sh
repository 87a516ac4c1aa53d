#!/usr/bin/env bash
# Ticket round trips (POST /v1/tickets → upgrade with ?ticket= → close) with
# the memory store and with Redis, the gateway pinned to one core and the
# generator to another.
#
#   crates/wsgate-bench/bench-tickets.sh [memory] [redis]      (default: both)
#
# Builds nothing: expects release binaries in ${CARGO_TARGET_DIR:-<repo>/target}/release
# (cargo build --release -p wsgate -p wsgate-bench). For each store it starts
# `wsgate serve --config configs/tickets-<store>.toml` under taskset, runs an
# unmeasured warm-up that also checks that replayed tickets are refused
# (--replay-check, --strict), then reads the gateway's utime+stime from
# /proc/PID/stat (and redis-server's, when it is local) around one measured
# `wsgate-bench tickets --json` run, and prints round trips/s, gateway (and
# Redis) CPU µs per round trip, and mint/redeem latency p50/p99.
#
# Redis runs unpinned: on a small machine it shares the gateway's or the
# generator's core, which shows in both the rate and the latencies.
#
# Environment (all optional):
#   GW, BENCH_BIN      binaries (default: <release dir>/wsgate, wsgate-bench)
#   DURATION           measured run (default 10s); WARMUP (default 2s, 0 to skip)
#   CONCURRENCY        round-trip workers (default 16)
#   REPLAY_CHECK       replay checks in the measured run (default off; the
#                      warm-up always checks 100; with WARMUP=0 the default is 100)
#   MINT_FRESH_CONN=1  a new TCP connection per mint (default: keep-alive per worker)
#   GATEWAY_CORE       default 0; BENCH_CORE default 1
#   KEEP_LOGS=1        keep the temporary directory (gateway logs, JSON reports)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
REL=${CARGO_TARGET_DIR:-$repo/target}/${BENCH_PROFILE:-release}
GW=${GW:-$REL/wsgate}
BENCH_BIN=${BENCH_BIN:-$REL/wsgate-bench}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONCURRENCY=${CONCURRENCY:-16}
GATEWAY_CORE=${GATEWAY_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
if [ "$WARMUP" = 0 ] || [ "$WARMUP" = 0s ]; then
    REPLAY_CHECK=${REPLAY_CHECK:-100}
else
    REPLAY_CHECK=${REPLAY_CHECK:-off}
fi

die() {
    echo "bench-tickets: $*" >&2
    exit 1
}

stores=("$@")
[ ${#stores[@]} -gt 0 ] || stores=(memory redis)
for s in "${stores[@]}"; do
    case $s in
        memory | redis) ;;
        *) die "unknown store '$s' (expected memory and/or redis)" ;;
    esac
done
for tool in taskset getconf awk sed python3; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[ -x "$GW" ] || die "gateway binary $GW not found (cargo build --release -p wsgate -p wsgate-bench, or set GW)"
[ -x "$BENCH_BIN" ] || die "wsgate-bench not found at $BENCH_BIN (or set BENCH_BIN)"

work=$(mktemp -d)
gw_pid=""
prefix=""
redis_cli=()
cleanup() {
    if [ -n "$gw_pid" ] && kill -0 "$gw_pid" 2>/dev/null; then
        kill "$gw_pid" 2>/dev/null || true
        wait "$gw_pid" 2>/dev/null || true
    fi
    gw_pid=""
    if [ -n "$prefix" ] && [ ${#redis_cli[@]} -gt 0 ]; then
        # Keys of this run only (tickets expire by themselves; the epoch does not).
        # (The prefix has no spaces or quotes: xargs may split on blanks.)
        "${redis_cli[@]}" --scan --pattern "${prefix}*" 2>/dev/null \
            | xargs -r -n 1000 "${redis_cli[@]}" unlink >/dev/null 2>&1 || true
    fi
    prefix=""
}
# shellcheck disable=SC2317 # invoked by the trap
on_exit() {
    cleanup
    if [ "${KEEP_LOGS:-0}" = 1 ]; then
        echo "bench-tickets: logs and reports kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap on_exit EXIT

rand_hex() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
WSGATE_JWT_SECRET=${WSGATE_JWT_SECRET:-$(rand_hex)}
WSGATE_TICKET_SECRET=$(rand_hex)
[ "$WSGATE_TICKET_SECRET" != "$WSGATE_JWT_SECRET" ] || die "ticket secret equals the JWT secret"
export WSGATE_JWT_SECRET WSGATE_TICKET_SECRET

# Each round trip asks for its ticket with a session token of its own,
# minted by the generator (HS256, ~3 µs on its core), as real clients do.

clk_tck=$(getconf CLK_TCK)
cpu_ticks() { # utime + stime of the whole process (all threads)
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
# Prints the status code of GET PATH on 127.0.0.1:PORT (nothing if no answer).
http_status() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
        printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
        head -c 12 <&3 | awk '{ print $2 }'
    ) 2>/dev/null
}
# CPU seconds (user + sys) of this shell's waited-for children, from `times`
# (which must run in this shell: a subshell starts from zero).
children_cpu() {
    awk 'NR == 2 { split($1, u, "m"); split($2, s, "m"); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$1"
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# `key = "value"` in [section] of a TOML file.
toml_get() {
    awk -v sec="$2" -v key="$3" '
        /^[[:space:]]*\[/ { in_sec = ($0 ~ "^[[:space:]]*\\[" sec "\\][[:space:]]*(#.*)?$") }
        in_sec && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" { split($0, a, "\""); print a[2]; exit }
    ' "$1"
}

for store in "${stores[@]}"; do
    config=$here/configs/tickets-$store.toml
    [ -r "$config" ] || die "cannot read $config"
    listen=$(toml_get "$config" server listen)
    path=$(toml_get "$config" server path)
    admin=$(toml_get "$config" admin listen)
    url="ws://$listen${path:-/ws}"
    port=${listen##*:}
    admin_port=${admin##*:}
    [ "${listen%:*}" = 127.0.0.1 ] || die "$config: server.listen must be 127.0.0.1:PORT"
    # Never measure someone else's gateway.
    port_open "$port" && die "port $port is already in use (another gateway running?)"

    redis_pid=""
    redis_cli=()
    if [ "$store" = redis ]; then
        command -v redis-cli >/dev/null || die "redis-cli not found"
        rurl=$(toml_get "$config" store url)
        hostport=${rurl#redis://}
        hostport=${hostport%%/*}
        db=${rurl##*/}
        case $hostport in *@*) die "$config: store.url with credentials is not supported here" ;; esac
        redis_cli=(redis-cli -h "${hostport%:*}" -p "${hostport##*:}" -n "${db:-0}")
        [ "$("${redis_cli[@]}" ping 2>/dev/null)" = PONG ] || die "no PONG from Redis at $rurl"
        redis_pid=$("${redis_cli[@]}" info server | tr -d '\r' | awk -F: '$1 == "process_id" { print $2 }')
        [ -n "$redis_pid" ] && [ -r "/proc/$redis_pid/stat" ] || redis_pid=""
        prefix="wsgate-bench-$(date +%s)-$$-$RANDOM:"
        export WSGATE_STORE__KEY_PREFIX=$prefix
    else
        unset WSGATE_STORE__KEY_PREFIX
    fi

    log=$work/gateway-$store.log
    taskset -c "$GATEWAY_CORE" "$GW" serve --config "$config" >"$log" 2>&1 &
    gw_pid=$!
    ready=""
    for _ in $(seq 1 100); do
        kill -0 "$gw_pid" 2>/dev/null || { cat "$log" >&2; die "$store: gateway exited during startup"; }
        ready=$(http_status "$admin_port" /readyz)
        [ "$ready" = 200 ] && break
        sleep 0.1
    done
    [ "$ready" = 200 ] || { cat "$log" >&2; die "$store: gateway not ready (/readyz: ${ready:-no answer}) within 10s"; }

    bench() {
        local fresh=()
        [ "${MINT_FRESH_CONN:-0}" = 1 ] && fresh=(--mint-fresh-conn)
        taskset -c "$BENCH_CORE" "$BENCH_BIN" tickets --url "$url" --mint-secret-env WSGATE_JWT_SECRET \
            --concurrency "$CONCURRENCY" --strict --json ${fresh[@]+"${fresh[@]}"} "$@"
    }
    if [ "$WARMUP" != 0 ] && [ "$WARMUP" != 0s ]; then
        bench --duration "$WARMUP" --replay-check 100 >"$work/warmup-$store.json" 2>"$work/warmup-$store.err" \
            || { cat "$work/warmup-$store.err" "$work/warmup-$store.json" >&2; die "$store: warm-up failed"; }
    fi

    gw0=$(cpu_ticks "$gw_pid")
    r0=0
    [ -n "$redis_pid" ] && r0=$(cpu_ticks "$redis_pid")
    times >"$work/times0"
    set +e
    bench --duration "$DURATION" --replay-check "$REPLAY_CHECK" >"$work/report-$store.json" 2>"$work/bench-$store.err"
    rc=$?
    set -e
    times >"$work/times1"
    gw1=$(cpu_ticks "$gw_pid")
    r1=0
    [ -n "$redis_pid" ] && r1=$(cpu_ticks "$redis_pid")
    kill -0 "$gw_pid" 2>/dev/null || die "$store: gateway died during the run"
    [ -s "$work/report-$store.json" ] || { cat "$work/bench-$store.err" >&2; die "$store: no report (exit $rc)"; }

    echo "== $store store: $url (gateway on core $GATEWAY_CORE, generator on core $BENCH_CORE${redis_pid:+, redis-server pid $redis_pid unpinned})"
    gen_cpu=$(awk -v a="$(children_cpu "$work/times0")" -v b="$(children_cpu "$work/times1")" 'BEGIN { print b - a }')
    python3 - "$work/report-$store.json" "$((gw1 - gw0))" "$((r1 - r0))" "$clk_tck" "${redis_pid:+1}" "$store" \
        "$work/summary" "$gen_cpu" <<'PY' || die "$store: cannot read the report"
import json, sys
r = json.load(open(sys.argv[1]))
gw_ticks, redis_ticks, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
has_redis, store = sys.argv[5] == "1", sys.argv[6]
gen_cpu, el = float(sys.argv[8]), r["elapsed_s"]
n = r["round_trips"]
per = lambda ticks: ticks / hz * 1e6 / n if n else float("nan")
m, d = r["mint"]["latency_us"], r["redeem"]["latency_us"]
rp = r["replay"]
print(f"round trips                 {n} in {r['elapsed_s']:.3f} s ({r['round_trips_ok']} ok, "
      f"{r['errors_total']} errors{'' if not r['errors'] else ': ' + ', '.join(f'{k} {v}' for k, v in r['errors'].items())}; "
      f"mint connection {r['mint_connection']})")
print(f"round trips/s               {r['round_trips_per_s']:.1f}")
print(f"gateway CPU per round trip  {per(gw_ticks):.1f} us ({gw_ticks / hz:.2f} s at {hz} Hz)")
if has_redis:
    print(f"redis CPU per round trip    {per(redis_ticks):.1f} us ({redis_ticks / hz:.2f} s)")
gw_busy, gen_busy = gw_ticks / hz / el * 100, gen_cpu / el * 100
print(f"core use                    gateway {gw_busy:.0f}%, generator {gen_busy:.0f}% of the run"
      + ("  (generator >= 90% busy: it may be what limits the rate)" if gen_busy >= 90 else ""))
print(f"mint latency p50 / p99      {m['p50_us']} us / {m['p99_us']} us")
print(f"redeem latency p50 / p99    {d['p50_us']} us / {d['p99_us']} us")
if rp["checked"]:
    print(f"replay check                {rp['refused_ok']}/{rp['checked']} refused with ticket_replayed, "
          f"{rp['violations']} violations, {rp['accepted']} accepted")
redis_col = f"{per(redis_ticks):.1f}" if has_redis else "-"
with open(sys.argv[7], "a") as f:
    print(f"{store:<7} {r['round_trips_per_s']:>13.1f} {per(gw_ticks):>13.1f} {redis_col:>12} "
          f"{m['p50_us']:>8} / {m['p99_us']:<8} {d['p50_us']:>10} / {d['p99_us']:<8}", file=f)
PY
    if [ -f "$work/warmup-$store.json" ]; then
        python3 - "$work/warmup-$store.json" <<'PY'
import json, sys
rp = json.load(open(sys.argv[1]))["replay"]
print(f"warm-up replay check        {rp['refused_ok']}/{rp['checked']} refused with ticket_replayed, "
      f"{rp['violations']} violations, {rp['accepted']} accepted")
PY
    fi
    cleanup
    if [ "$rc" != 0 ]; then
        cat "$work/bench-$store.err" >&2
        die "$store: wsgate-bench exited $rc (errors, non-201/101 answers or replay violations; see the report above)"
    fi
done

echo
echo "store   round trips/s  gw CPU us/rt  redis us/rt  mint p50 / p99 us  redeem p50 / p99 us"
cat "$work/summary"
