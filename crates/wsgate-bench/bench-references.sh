#!/usr/bin/env bash
# wsgate's upgrade figures against their references, in one run, alternating
# (issue 10). Each round measures, in this order, each setup started fresh:
#
#   echo-server        minimal Rust echo server, no auth       (examples/echo_server.rs)
#   node               Node http + ws + jsonwebtoken, HS256    (references/node)
#   wsgate             wsgate, echo backend, HS256             (configs/hs256.toml)
#   haproxy bad-sig    HAProxy 2.6 jwt_verify, bad signatures  (references/haproxy)
#   wsgate bad-sig     wsgate, bad signatures                  (configs/hs256.toml)
#   haproxy+upstream   HAProxy jwt_verify -> echo-server       (references/haproxy)
#   wsgate+upstream    wsgate upstream mode -> echo-server     (configs/proxy.toml)
#   haproxy+upstream h2  the same, HTTP/2 to the echo-server   (`proto h2`, `http-reuse always`)
#   wsgate+upstream h2   the same, HTTP/2 to the echo-server   (configs/proxy-h2.toml)
#
# In the two h2 rows the echo server runs in its HTTP/2 mode (RFC 8441:
# every client's upstream WebSocket is a stream of a shared connection);
# HAProxy gets the settings that make it share connections too (with its
# default `http-reuse safe` it opens a connection per client and costs
# more than over HTTP/1.1). H2=0 skips them.
#
# The server process(es) run on core $SERVER_CORE (a proxy and its upstream
# share it, as on one host), the load generator on $BENCH_CORE. After a
# warm-up, CPU time (utime+stime from /proc/PID/stat) of every server process
# is read around one `wsgate-bench upgrade` run (connect -> 101 -> close, or
# -> 401 for the bad-signature rows), and the script prints per-run lines and
# then a markdown table of the medians over rounds.
#
#   cargo build --release -p wsgate -p wsgate-bench --bins --examples
#   crates/wsgate-bench/bench-references.sh
#
# Needs node + npm (the Node reference's exact versions come from
# references/node/package-lock.json through `npm ci`) and Debian's haproxy
# package (installed with apt-get if missing).
#
# Environment: ROUNDS (2), DURATION (10s), WARMUP (1s), CONCURRENCY (32),
# SERVER_CORE (0), BENCH_CORE (1), POOL (150000 unique tokens per run),
# WARMUP_POOL (20000), H2 (1), ONLY (a regular expression: run only the
# setups whose name matches, e.g. ONLY='upstream' for the four proxy rows).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
B=${CARGO_TARGET_DIR:-$repo/target}/${BENCH_PROFILE:-release}
REFS=$here/references
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONCURRENCY=${CONCURRENCY:-32}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
POOL=${POOL:-150000}
WARMUP_POOL=${WARMUP_POOL:-20000}
H2=${H2:-1}
ONLY=${ONLY:-}

die() {
    echo "bench-references: $*" >&2
    exit 1
}

# --- prerequisites -----------------------------------------------------------
for bin in "$B/wsgate" "$B/wsgate-bench" "$B/examples/echo_server"; do
    [ -x "$bin" ] || die "$bin missing: cargo build --release -p wsgate -p wsgate-bench --bins --examples"
done
for tool in taskset getconf python3 node npm; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
if ! command -v haproxy >/dev/null; then
    echo "== installing Debian's haproxy package" >&2
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get install -y haproxy >&2 || die "apt-get install haproxy failed"
fi
HAPROXY_LISTEN=127.0.0.1:1 HAPROXY_UPSTREAM=127.0.0.1:1 WSGATE_JWT_SECRET=x \
    haproxy -c -f "$REFS/haproxy/haproxy.cfg" >/dev/null \
    || die "haproxy rejects references/haproxy/haproxy.cfg (jwt_verify needs HAProxy >= 2.5): $(haproxy -v | head -1)"
# npm ci only when node_modules does not match the lockfile.
if ! cmp -s "$REFS/node/package-lock.json" "$REFS/node/node_modules/.package-lock.stamp" 2>/dev/null; then
    echo "== npm ci (references/node)" >&2
    (cd "$REFS/node" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) || die "npm ci failed"
    cp "$REFS/node/package-lock.json" "$REFS/node/node_modules/.package-lock.stamp"
fi

# --- secrets and tokens --------------------------------------------------------
T=$(mktemp -d)
pids=()
stop_all() {
    local p
    for p in ${pids[@]+"${pids[@]}"}; do
        kill "$p" 2>/dev/null || true
    done
    for p in ${pids[@]+"${pids[@]}"}; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    pids=()
}
trap 'stop_all; rm -rf "$T"' EXIT
WSGATE_JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
WSGATE_IDENTITY_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export WSGATE_JWT_SECRET WSGATE_IDENTITY_SECRET
# Every attempt carries a token of its own (issue 10): before each
# measurement, with no server running, `wsgate-bench mint` signs a pool for
# the warm-up and one for the run (POOL tokens; the run ends early if the
# pool does, and CPU is divided by the attempts actually made). "bad" tokens
# are signed, then one character of their signature is changed.
pools() { # hs|bad
    local extra=()
    [ "$1" = bad ] && extra=(--mint-invalid bad-signature)
    "$B/wsgate-bench" mint --count "$WARMUP_POOL" --mint-secret-env WSGATE_JWT_SECRET \
        ${extra[@]+"${extra[@]}"} --out "$T/warmup.tok" \
        && "$B/wsgate-bench" mint --count "$POOL" --mint-secret-env WSGATE_JWT_SECRET \
            ${extra[@]+"${extra[@]}"} --out "$T/run.tok" \
        || die "wsgate-bench mint failed"
}

# --- one measurement -----------------------------------------------------------
ECHO_ADDR=127.0.0.1:19001 # configs/proxy.toml's upstream
ECHO_H2_ADDR=127.0.0.1:19002 # configs/proxy-h2.toml's upstream
NODE_ADDR=127.0.0.1:18780
HAPROXY_ADDR=127.0.0.1:18880
WSGATE_ADDR=127.0.0.1:18080 # configs/hs256.toml and proxy.toml

listening() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
start() { # log-name ready-addr command... ; pinned to SERVER_CORE
    local name=$1 addr=$2
    shift 2
    taskset -c "$SERVER_CORE" "$@" >"$T/$name.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { cat "$T/$name.log" >&2; die "$name exited during startup"; }
        listening "$addr" && return 0
        sleep 0.1
    done
    cat "$T/$name.log" >&2
    die "$name did not listen on $addr within 10s"
}
core_jiffies() { # "busy total" jiffies of one core, from /proc/stat
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat
}
ticks() { # "utime stime" of the whole process (all threads)
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'
}
bench() { # url tokens expect duration
    taskset -c "$BENCH_CORE" "$B/wsgate-bench" upgrade --url "$1" --token-file "$T/$2" --unique \
        --transport bearer --concurrency "$CONCURRENCY" --expect "$3" --duration "$4" --json
}
measure() { # round setup kind url tokens expect server-start...
    local round=$1 setup=$2 kind=$3 url=$4 tok=$5 expect=$6
    shift 6
    [ -z "$ONLY" ] || [[ "$setup" =~ $ONLY ]] || return 0
    for a in $ECHO_ADDR $ECHO_H2_ADDR $NODE_ADDR $HAPROXY_ADDR $WSGATE_ADDR; do
        ! listening "$a" || die "$a is already in use by another process"
    done
    pools "$tok"
    "$@" # start the server process(es); they land in pids
    if [ "$WARMUP" != 0 ] && [ "$WARMUP" != 0s ]; then
        bench "$url" warmup.tok "$expect" "$WARMUP" >/dev/null 2>"$T/warmup.err" \
            || { cat "$T/warmup.err" >&2; die "$setup: warm-up failed"; }
    fi
    local before=() after=() p rc=0
    for p in "${pids[@]}"; do before+=("$(ticks "$p")"); done
    local s0 b0 s1 b1
    s0=$(core_jiffies "$SERVER_CORE") b0=$(core_jiffies "$BENCH_CORE")
    bench "$url" run.tok "$expect" "$DURATION" >"$T/run.json" 2>"$T/run.err" || rc=$?
    for p in "${pids[@]}"; do after+=("$(ticks "$p")"); done
    s1=$(core_jiffies "$SERVER_CORE") b1=$(core_jiffies "$BENCH_CORE")
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || die "$setup: a server process died during the run"; done
    [ "$rc" = 0 ] || { cat "$T/run.err" >&2; die "$setup: wsgate-bench exited $rc (expected every attempt $expect)"; }
    # user and kernel ticks per process, in start order: "u/s u/s ..."
    local cpu=0 split="" i b a
    for i in "${!before[@]}"; do
        read -r -a b <<<"${before[i]}"
        read -r -a a <<<"${after[i]}"
        cpu=$((cpu + a[0] - b[0] + a[1] - b[1]))
        split+="$((a[0] - b[0]))/$((a[1] - b[1])) "
    done
    stop_all
    # one TSV line per run: round setup kind ticks report split
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$setup" "$kind" "$cpu" "$(cat "$T/run.json")" "${split% }" >>"$T/results.tsv"
    python3 - "$T/results.tsv" "$(getconf CLK_TCK)" "$s0 $s1 $b0 $b1" <<'PY'
import json, sys
line = open(sys.argv[1]).read().splitlines()[-1].split("\t")
r = json.loads(line[4]); hz = int(sys.argv[2])
per = lambda t: t / hz / max(r['attempts'], 1) * 1e6
# user + kernel µs per attempt of each process: upstream first, then the proxy
split = ", ".join("%.1f+%.1f" % tuple(per(int(x)) for x in us.split("/")) for us in line[5].split())
j = [int(x) for x in sys.argv[3].split()]  # busy/total jiffies of both cores, before and after
busy = lambda b0, t0, b1, t1: 100 * (b1 - b0) / max(t1 - t0, 1)
print(f"round {line[0]}  {line[1]:<22} {r['rate_per_s']:8.0f}/s  p50 {r['latency_us']['p50_us']:5d} us  "
      f"p99 {r['latency_us']['p99_us']:5d} us  CPU {int(line[3]) / hz / max(r['attempts'], 1) * 1e6:6.1f} us/attempt  "
      f"(attempts {r['attempts']}, stopped by {r['stopped_by']}, accepted {r['accepted']}, rejected {r['rejected']}, close errors {r['close_errors']}; "
      f"server core {busy(*j[0:4]):.0f}% busy, generator core {busy(*j[4:8]):.0f}% busy, all processes; "
      f"user+kernel µs per process, in start order: {split})",
      flush=True)
PY
}

s_echo() { start echo-server "$ECHO_ADDR" "$B/examples/echo_server" "$ECHO_ADDR" 4096; }
s_node() { start node "$NODE_ADDR" node "$REFS/node/server.mjs" "$NODE_ADDR"; }
s_wsgate() { start wsgate "$WSGATE_ADDR" "$B/wsgate" serve --config "$here/configs/hs256.toml"; }
s_haproxy() { HAPROXY_LISTEN=$HAPROXY_ADDR HAPROXY_UPSTREAM=$ECHO_ADDR start haproxy "$HAPROXY_ADDR" haproxy -db -f "$REFS/haproxy/haproxy.cfg"; }
s_haproxy_up() { s_echo && s_haproxy; }
s_wsgate_up() { s_echo && start wsgate-proxy "$WSGATE_ADDR" "$B/wsgate" serve --config "$here/configs/proxy.toml"; }
s_echo_h2() { start echo-server-h2 "$ECHO_H2_ADDR" "$B/examples/echo_server" "$ECHO_H2_ADDR" 4096 h2; }
# The reference configuration, its server line speaking HTTP/2 with shared connections.
sed -e 's|^\(    server echo "${HAPROXY_UPSTREAM}"\)$|\1 proto h2|' -e 's|^backend echo$|backend echo\n    http-reuse always|' \
    "$REFS/haproxy/haproxy.cfg" >"$T/haproxy-h2.cfg"
grep -q 'proto h2' "$T/haproxy-h2.cfg" && grep -q 'http-reuse always' "$T/haproxy-h2.cfg" \
    || die "could not derive the HTTP/2 variant of references/haproxy/haproxy.cfg"
s_haproxy_up_h2() {
    s_echo_h2 && HAPROXY_LISTEN=$HAPROXY_ADDR HAPROXY_UPSTREAM=$ECHO_H2_ADDR start haproxy "$HAPROXY_ADDR" haproxy -db -f "$T/haproxy-h2.cfg"
}
s_wsgate_up_h2() { s_echo_h2 && start wsgate-proxy "$WSGATE_ADDR" "$B/wsgate" serve --config "$here/configs/proxy-h2.toml"; }

echo "versions: $("$B/wsgate" --version 2>/dev/null || echo wsgate), node $(node --version)," \
    "ws $(node -p "require('$REFS/node/node_modules/ws/package.json').version")," \
    "jsonwebtoken $(node -p "require('$REFS/node/node_modules/jsonwebtoken/package.json').version")," \
    "$(haproxy -v | head -1 | cut -d' ' -f1-3)"
echo "duration $DURATION per run (warm-up $WARMUP), concurrency $CONCURRENCY, servers on core $SERVER_CORE, generator on core $BENCH_CORE, $ROUNDS round(s)"
: >"$T/results.tsv"
W=ws://$WSGATE_ADDR/ws
for round in $(seq 1 "$ROUNDS"); do
    measure "$round" "echo-server (no auth)" accepted "ws://$ECHO_ADDR/ws" hs accepted s_echo
    measure "$round" "node (HS256)" accepted "ws://$NODE_ADDR/ws" hs accepted s_node
    measure "$round" "wsgate (HS256)" accepted "$W" hs accepted s_wsgate
    measure "$round" "haproxy bad-sig" rejected "ws://$HAPROXY_ADDR/ws" bad rejected s_haproxy
    measure "$round" "wsgate bad-sig" rejected "$W" bad rejected s_wsgate
    measure "$round" "haproxy+upstream" upstream "ws://$HAPROXY_ADDR/ws" hs accepted s_haproxy_up
    measure "$round" "wsgate+upstream" upstream "$W" hs accepted s_wsgate_up
    if [ "$H2" != 0 ]; then
        measure "$round" "haproxy+upstream h2" upstream-h2 "ws://$HAPROXY_ADDR/ws" hs accepted s_haproxy_up_h2
        measure "$round" "wsgate+upstream h2" upstream-h2 "$W" hs accepted s_wsgate_up_h2
    fi
done

echo
python3 - "$T/results.tsv" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
hz = int(sys.argv[2])
rows = {}  # setup -> (kind, [(rate, p50, p99, cpu_us)])
for line in open(sys.argv[1]):
    rnd, setup, kind, ticks, rep, _split = line.rstrip("\n").split("\t")
    r = json.loads(rep)
    cpu = int(ticks) / hz / max(r["attempts"], 1) * 1e6
    rows.setdefault(setup, (kind, []))[1].append(
        (r["rate_per_s"], r["latency_us"]["p50_us"], r["latency_us"]["p99_us"], cpu))
med = lambda xs: statistics.median(xs)
wsgate = {"accepted": "wsgate (HS256)", "rejected": "wsgate bad-sig", "upstream": "wsgate+upstream",
          "upstream-h2": "wsgate+upstream h2"}
what = {"accepted": "upgrades/s", "rejected": "rejections/s", "upstream": "upgrades/s", "upstream-h2": "upgrades/s"}
print("| setup | figure | rate | p50 µs | p99 µs | server CPU µs per attempt | CPU per round | × wsgate CPU |")
print("|---|---|---:|---:|---:|---:|---|---:|")
for setup, (kind, runs) in rows.items():
    cpu = med([x[3] for x in runs])
    ref = rows.get(wsgate[kind])
    ratio = cpu / med([x[3] for x in ref[1]]) if ref else float("nan")
    per_round = " / ".join(f"{x[3]:.1f}" for x in runs)
    print(f"| {setup} | {kind} | {med([x[0] for x in runs]):.0f} {what[kind]} | {med([x[1] for x in runs]):.0f} "
          f"| {med([x[2] for x in runs]):.0f} | {cpu:.1f} | {per_round} | {ratio:.2f} |")
print()
print("Medians over rounds. CPU is utime+stime of the server process(es) from /proc/PID/stat "
      "(proxy + echo-server for the upstream rows) divided by attempts; "
      "\"× wsgate\" divides by the wsgate row of the same figure.")
PY
