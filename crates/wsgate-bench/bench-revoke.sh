#!/usr/bin/env bash
# Revocation latency (issue 4): the two figures, gateways pinned to one core
# and the generator to another.
#
#   crates/wsgate-bench/bench-revoke.sh [cross] [fanout]      (default: both)
#
# cross:  two nodes A and B on one Redis (configs/revoke-a.toml, revoke-b.toml,
#         a unique WSGATE_STORE__KEY_PREFIX per run). CROSS_SUBJECTS sockets
#         are opened to B, one per subject (bench-0, bench-1, ...); then, one
#         subject at a time, POST /admin/v1/revoke {"sub": S} goes to A and the
#         time until S's socket on B receives its close frame (4403) is
#         measured (Redis pub/sub A -> B).
# fanout: one node (configs/revoke-memory.toml, or revoke-a.toml alone with
#         FANOUT_STORE=redis) holding FANOUT_SUBJECTS x FANOUT_PER_SUBJECT
#         idle sockets; FANOUT_REVOCATIONS subjects (spread over the range) are
#         revoked one at a time, each closing its FANOUT_PER_SUBJECT sockets;
#         reports the time until all of them got 4403, the admin call's
#         latency, the gateway's CPU per revocation and its VmRSS with every
#         socket open.
#
# Both runs check that nothing else was closed (every socket is watched) and
# that ECHO_SAMPLE sockets of subjects not revoked yet still echo after each
# revocation; `wsgate-bench revoke` exits 2 otherwise, and so does this script.
#
# Builds nothing: expects release binaries in ${CARGO_TARGET_DIR:-<repo>/target}/release
# (cargo build --release -p wsgate -p wsgate-bench).
#
# Environment (all optional):
#   GW, BENCH_BIN        binaries (default: <release dir>/wsgate, wsgate-bench)
#   CROSS_SUBJECTS       sockets/subjects on B, all revoked (default 1000)
#   FANOUT_SUBJECTS      default 1500; FANOUT_PER_SUBJECT default 10
#   FANOUT_REVOCATIONS   subjects revoked in the fanout run (default 20)
#   FANOUT_STORE         memory (default) or redis
#   ECHO_SAMPLE          echo checks after each revocation (default 100)
#   TIMEOUT              per handshake / admin call / close wait (default 5s)
#   SETTLE               idle window before the first revocation (default 2s)
#   GATEWAY_CORE         default 0 (both nodes); BENCH_CORE default 1
#   KEEP_LOGS=1          keep the temporary directory (logs, tokens, JSON reports)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
REL=${CARGO_TARGET_DIR:-$repo/target}/${BENCH_PROFILE:-release}
GW=${GW:-$REL/wsgate}
BENCH_BIN=${BENCH_BIN:-$REL/wsgate-bench}
CROSS_SUBJECTS=${CROSS_SUBJECTS:-1000}
FANOUT_SUBJECTS=${FANOUT_SUBJECTS:-1500}
FANOUT_PER_SUBJECT=${FANOUT_PER_SUBJECT:-10}
FANOUT_REVOCATIONS=${FANOUT_REVOCATIONS:-20}
FANOUT_STORE=${FANOUT_STORE:-memory}
ECHO_SAMPLE=${ECHO_SAMPLE:-100}
TIMEOUT=${TIMEOUT:-5s}
SETTLE=${SETTLE:-2s}
GATEWAY_CORE=${GATEWAY_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}

die() {
    echo "bench-revoke: $*" >&2
    exit 1
}

runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(cross fanout)
for r in "${runs[@]}"; do
    case $r in
        cross | fanout) ;;
        *) die "unknown run '$r' (expected cross and/or fanout)" ;;
    esac
done
case $FANOUT_STORE in memory | redis) ;; *) die "FANOUT_STORE must be memory or redis" ;; esac
for v in CROSS_SUBJECTS FANOUT_SUBJECTS FANOUT_PER_SUBJECT FANOUT_REVOCATIONS ECHO_SAMPLE; do
    case ${!v} in '' | *[!0-9]*) die "$v must be a number" ;; esac
done
for tool in taskset getconf awk sed python3 od; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[ -x "$GW" ] || die "gateway binary $GW not found (cargo build --release -p wsgate -p wsgate-bench, or set GW)"
[ -x "$BENCH_BIN" ] || die "wsgate-bench not found at $BENCH_BIN (or set BENCH_BIN)"

# Both the gateway and the generator need one descriptor per socket.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
need=$((FANOUT_SUBJECTS * FANOUT_PER_SUBJECT + 256))
for r in "${runs[@]}"; do
    if [ "$r" = fanout ] && [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
        die "fanout needs about $need file descriptors per process, ulimit -n is $(ulimit -n)"
    fi
done

work=$(mktemp -d)
gw_pids=()
prefix=""
redis_cli=(redis-cli -h 127.0.0.1 -p 6379 -n 0)
stop_gateways() {
    local p
    for p in ${gw_pids[@]+"${gw_pids[@]}"}; do
        if kill -0 "$p" 2>/dev/null; then
            kill "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    gw_pids=()
    if [ -n "$prefix" ]; then
        # This run's keys only (revocations hash, epoch, ...). The prefix has
        # no blanks or quotes (xargs splits on blanks).
        "${redis_cli[@]}" --scan --pattern "${prefix}*" 2>/dev/null \
            | xargs -r -n 1000 "${redis_cli[@]}" unlink >/dev/null 2>&1 || true
    fi
    prefix=""
}
# shellcheck disable=SC2317 # invoked by the trap
on_exit() {
    stop_gateways
    if [ "${KEEP_LOGS:-0}" = 1 ]; then
        echo "bench-revoke: logs and reports kept in $work" >&2
    else
        rm -rf "$work"
    fi
}
trap on_exit EXIT

rand_hex() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
WSGATE_JWT_SECRET=${WSGATE_JWT_SECRET:-$(rand_hex)}
WSGATE_ADMIN_TOKEN=$(rand_hex)
WSGATE_TICKET_SECRET=$(rand_hex)
export WSGATE_JWT_SECRET WSGATE_ADMIN_TOKEN WSGATE_TICKET_SECRET

# `key = "value"` in [section] of a TOML file.
toml_get() {
    awk -v sec="$2" -v key="$3" '
        /^[[:space:]]*\[/ { in_sec = ($0 ~ "^[[:space:]]*\\[" sec "\\][[:space:]]*(#.*)?$") }
        in_sec && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" { split($0, a, "\""); print a[2]; exit }
    ' "$1"
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Prints the status code of GET PATH on 127.0.0.1:PORT (nothing if no answer).
http_status() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
        printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
        head -c 12 <&3 | awk '{ print $2 }'
    ) 2>/dev/null
}
cpu_ticks() { # utime + stime of the whole process (all threads)
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}
clk_tck=$(getconf CLK_TCK)

# Starts `wsgate serve --config $1` pinned to GATEWAY_CORE; sets `started`
# (pid), `ws_url`, `admin_url`. The gateway's output goes to $2.
start_gateway() {
    local config=$1 log=$2 listen path admin port admin_port ready
    [ -r "$config" ] || die "cannot read $config"
    listen=$(toml_get "$config" server listen)
    path=$(toml_get "$config" server path)
    admin=$(toml_get "$config" admin listen)
    [ "${listen%:*}" = 127.0.0.1 ] || die "$config: server.listen must be 127.0.0.1:PORT"
    [ "${admin%:*}" = 127.0.0.1 ] || die "$config: admin.listen must be 127.0.0.1:PORT"
    port=${listen##*:}
    admin_port=${admin##*:}
    # Never measure someone else's gateway.
    port_open "$port" && die "port $port is already in use (another gateway running?)"
    port_open "$admin_port" && die "port $admin_port is already in use (another gateway running?)"
    taskset -c "$GATEWAY_CORE" "$GW" serve --config "$config" >"$log" 2>&1 &
    started=$!
    gw_pids+=("$started")
    ready=""
    for _ in $(seq 1 100); do
        kill -0 "$started" 2>/dev/null || { cat "$log" >&2; die "$config: gateway exited during startup"; }
        ready=$(http_status "$admin_port" /readyz)
        [ "$ready" = 200 ] && break
        sleep 0.1
    done
    [ "$ready" = 200 ] || { cat "$log" >&2; die "$config: gateway not ready (/readyz: ${ready:-no answer}) within 10s"; }
    ws_url="ws://$listen${path:-/ws}"
    admin_url="http://$admin"
}

use_redis() {
    command -v redis-cli >/dev/null || die "redis-cli not found"
    [ "$("${redis_cli[@]}" ping 2>/dev/null)" = PONG ] || die "no PONG from Redis at 127.0.0.1:6379"
    redis_pid=$("${redis_cli[@]}" info server | tr -d '\r' | awk -F: '$1 == "process_id" { print $2 }')
    [ -n "$redis_pid" ] && [ -r "/proc/$redis_pid/stat" ] || redis_pid=""
    prefix="wsgate-bench-revoke-$(date +%s)-$$-$RANDOM:"
    export WSGATE_STORE__KEY_PREFIX=$prefix
}

# Tokens for bench-0 .. bench-(N-1), one per line, in order.
n_tokens=0
for r in "${runs[@]}"; do
    if [ "$r" = cross ] && [ "$CROSS_SUBJECTS" -gt "$n_tokens" ]; then n_tokens=$CROSS_SUBJECTS; fi
    if [ "$r" = fanout ] && [ "$FANOUT_SUBJECTS" -gt "$n_tokens" ]; then n_tokens=$FANOUT_SUBJECTS; fi
done
echo "bench-revoke: minting $n_tokens tokens…" >&2
for i in $(seq 0 $((n_tokens - 1))); do
    "$GW" token --sub "bench-$i" --ttl 1h --secret-env WSGATE_JWT_SECRET \
        || die "minting a token failed"
done >"$work/tokens"
[ "$(wc -l <"$work/tokens")" -eq "$n_tokens" ] || die "expected $n_tokens tokens in $work/tokens"

bench() {
    taskset -c "$BENCH_CORE" "$BENCH_BIN" revoke --json --echo-sample "$ECHO_SAMPLE" \
        --timeout "$TIMEOUT" --settle "$SETTLE" "$@"
}

summary() { # $1 report, $2 title, $3.. "name=pid:ticks0:ticks1" for the CPU lines
    python3 - "$@" "$clk_tck" <<'PY'
import json, sys
args = sys.argv[1:]
report, title, hz = args[0], args[1], int(args[-1])
r = json.load(open(report))
def ms(us): return f"{us / 1000:.2f} ms"
def lat(s): return (f"p50 {ms(s['p50_us'])}  p90 {ms(s['p90_us'])}  p99 {ms(s['p99_us'])}  "
                    f"max {ms(s['max_us'])}  (n={s['count']})")
print(f"== {title}")
print(f"sockets                     {r['sockets_open']}/{r['sockets_requested']} open "
      f"({r['subjects']} subjects x {r['per_subject']}) in {r['open_s']:.2f} s")
print(f"revocations                 {r['revocations']}/{r['revocations_requested']} in "
      f"{r['revoke_phase_s']:.2f} s; admin status {r['admin_status']}, closed on that node {r['admin_closed']}")
print(f"revoke -> all closed        {lat(r['all_closed_us'])}")
if r["per_subject"] > 1:
    print(f"revoke -> first close       {lat(r['first_close_us'])}")
print(f"admin call                  {lat(r['admin_latency_us'])}")
print(f"close codes                 {r['close_codes']}; not closed in time {r['not_closed_in_time']}, "
      f"other code {r['wrong_code']}")
print(f"other sockets               {r['other_sockets_open_at_end']}/{r['other_sockets_expected_open']} "
      f"still open at the end, {r['collateral_closes']} closed before their revocation; "
      f"echo checks {r['echo_ok']}/{r['echo_checked']} ok")
if r.get("gateway_rss_kib_all_open") is not None:
    print(f"gateway VmRSS               {r['gateway_rss_kib_before_open'] / 1024:.1f} MiB before opening, "
          f"{r['gateway_rss_kib_all_open'] / 1024:.1f} MiB with {r['sockets_open']} sockets "
          f"({r['gateway_rss_bytes_per_socket']:.0f} bytes/socket)")
for key, label in (("gateway_cpu", "socket node"), ("admin_node_cpu", "admin node")):
    c = r.get(key)
    if c:
        s = c["cpu_us_per_revocation"]
        print(f"CPU per revocation ({label:<11}) p50 {s['p50_us']} us  p99 {s['p99_us']} us  max {s['max_us']} us "
              f"(schedstat; background {c['background_cpu_us_per_s']:.0f} us/s, "
              f"total {c['cpu_us_total'] / 1000:.1f} ms, {c['cpu_us_total_net_of_background'] / 1000:.1f} ms net)")
for spec in args[2:-1]:
    name, rest = spec.split("=", 1)
    pid, t0, t1 = rest.split(":")
    print(f"CPU over the whole run      {name} (pid {pid}): {(int(t1) - int(t0)) / hz:.2f} s")
print(f"result                      {'ok' if r['ok'] else 'FAILED'}")
PY
}

failed=0
for run in "${runs[@]}"; do
    redis_pid=""
    if [ "$run" = cross ]; then
        use_redis
        start_gateway "$here/configs/revoke-a.toml" "$work/gateway-a.log"
        a_pid=$started
        a_admin=$admin_url
        start_gateway "$here/configs/revoke-b.toml" "$work/gateway-b.log"
        b_pid=$started
        b_url=$ws_url
        head -n "$CROSS_SUBJECTS" "$work/tokens" >"$work/tokens-cross"
        title="cross-node: $CROSS_SUBJECTS sockets on B ($b_url), revoked one at a time at A ($a_admin), Redis store"
        pids=("A=$a_pid" "B=$b_pid")
        [ -n "$redis_pid" ] && pids+=("redis=$redis_pid")
        args=(--url "$b_url" --admin-url "$a_admin" --token-file "$work/tokens-cross"
            --per-subject 1 --gateway-pid "$b_pid" --admin-pid "$a_pid")
    else
        if [ "$FANOUT_STORE" = redis ]; then
            use_redis
            config=$here/configs/revoke-a.toml
        else
            unset WSGATE_STORE__KEY_PREFIX
            config=$here/configs/revoke-memory.toml
        fi
        start_gateway "$config" "$work/gateway-fanout.log"
        g_pid=$started
        total=$((FANOUT_SUBJECTS * FANOUT_PER_SUBJECT))
        title="fanout: 1 of $FANOUT_SUBJECTS subjects x $FANOUT_PER_SUBJECT sockets ($total) on one node ($ws_url), $FANOUT_STORE store"
        pids=("gateway=$g_pid")
        [ -n "$redis_pid" ] && pids+=("redis=$redis_pid")
        head -n "$FANOUT_SUBJECTS" "$work/tokens" >"$work/tokens-fanout"
        args=(--url "$ws_url" --admin-url "$admin_url" --token-file "$work/tokens-fanout"
            --per-subject "$FANOUT_PER_SUBJECT" --revocations "$FANOUT_REVOCATIONS" --gateway-pid "$g_pid")
    fi
    specs0=()
    for p in "${pids[@]}"; do specs0+=("$p:$(cpu_ticks "${p#*=}")"); done
    load0=$(cut -d' ' -f1-3 /proc/loadavg)
    set +e
    bench "${args[@]}" >"$work/report-$run.json" 2>"$work/bench-$run.err"
    rc=$?
    set -e
    load1=$(cut -d' ' -f1-3 /proc/loadavg)
    specs=()
    for p in "${specs0[@]}"; do
        pid=${p#*=}
        pid=${pid%%:*}
        specs+=("$p:$(cpu_ticks "$pid" 2>/dev/null || echo 0)")
    done
    for p in ${gw_pids[@]+"${gw_pids[@]}"}; do
        kill -0 "$p" 2>/dev/null || die "$run: gateway pid $p died during the run"
    done
    [ -s "$work/report-$run.json" ] || { cat "$work/bench-$run.err" >&2; die "$run: no report (exit $rc)"; }
    summary "$work/report-$run.json" "$title" "${specs[@]}" || die "$run: cannot read the report"
    echo "load average                $load0 before, $load1 after (other work on the machine shows here)"
    echo "raw report: $(cat "$work/report-$run.json")"
    echo
    stop_gateways
    if [ "$rc" != 0 ]; then
        tail -n 20 "$work/bench-$run.err" >&2
        echo "bench-revoke: $run: wsgate-bench exited $rc (see above)" >&2
        failed=1
    fi
done
[ "$failed" = 0 ] || exit 2
