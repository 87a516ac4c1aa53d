#!/usr/bin/env bash
# wss:// figures (issue 29), each beside its references, in one run. Three
# setups, each started fresh for every measurement, alternating:
#
#   ceiling   examples/echo_server in its TLS mode: rustls + WebSocket echo,
#             no authentication (the TLS ceiling)
#   haproxy   HAProxy terminating TLS (`ssl crt ... alpn http/1.1 curves
#             X25519:P-256`) with the jwt_verify checks of
#             references/haproxy/haproxy.cfg, proxying to the plain echo
#             server (Debian's haproxy; skipped if HAPROXY=0, or in smoke
#             mode when it is not installed)
#   wsgate    wsgate's TLS listener, HS256 bearer, echo backend
#             (configs/tls.toml)
#
# and four figures:
#
#   full      CPU per upgrade, every TLS handshake a full one (connect, TLS
#             1.3 handshake, 101, close; a unique token per attempt)
#   resumed   the same with `--tls-resume`: TLS sessions resumed from the
#             tickets the server sent (the share actually resumed is printed)
#   echo      CPU per message: CONNECTIONS sockets echoing SIZE-byte
#             messages, closed loop, for DURATION
#   idle      RSS per idle TLS socket: IDLE authenticated sockets held open;
#             VmRSS before and with them, per socket opened
#
# The certificate is a throwaway self-signed ECDSA P-256 one (openssl CLI,
# `localhost` and 127.0.0.1, not a CA: webpki refuses a CA certificate as
# the server's own), trusted by the generator through --ca-file;
# the generator offers X25519 then P-256 and ALPN http/1.1. CPU is
# utime+stime from /proc/PID/stat and RSS is VmRSS, both summed over the
# setup's processes (HAProxy + its echo server; the split is printed per
# run). Servers run on SERVER_CORE, the generator on BENCH_CORE.
#
#   cargo build --release -p wsgate -p wsgate-bench --bins --examples
#   crates/wsgate-bench/bench-tls.sh
#   SMOKE=1 crates/wsgate-bench/bench-tls.sh      # seconds: CI keeps it working
#
# Environment: ROUNDS (2), DURATION (10s), WARMUP (1s), CONCURRENCY (8: the
# generator keeps at most 8 session tickets per server, so more workers
# would make part of the "resumed" handshakes full ones),
# POOL (100000 unique tokens per upgrade run), CONNECTIONS (100), SIZE (64),
# IDLE (8000), HOLD (8s), SERVER_CORE (0), BENCH_CORE (1), HAPROXY (1; 0
# skips it), ONLY (a regular expression on "figure setup", e.g. ONLY=idle or
# ONLY='full|resumed'). SMOKE=1 sets short defaults for all of them.
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
    : "${ROUNDS:=1}" "${DURATION:=1s}" "${WARMUP:=0}" "${POOL:=3000}" "${CONNECTIONS:=10}"
    : "${IDLE:=100}" "${HOLD:=1s}" "${CONCURRENCY:=4}"
fi
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
CONCURRENCY=${CONCURRENCY:-8}
POOL=${POOL:-100000}
CONNECTIONS=${CONNECTIONS:-100}
SIZE=${SIZE:-64}
IDLE=${IDLE:-8000}
HOLD=${HOLD:-8s}
SERVER_CORE=${SERVER_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
HAPROXY=${HAPROXY:-1}
ONLY=${ONLY:-}

CEILING_ADDR=127.0.0.1:19443
HAPROXY_ADDR=127.0.0.1:18843
ECHO_ADDR=127.0.0.1:19001 # HAProxy's upstream
WSGATE_ADDR=127.0.0.1:18443 # configs/tls.toml

die() { echo "bench-tls: $*" >&2; exit 1; }
for bin in "$B/wsgate" "$B/wsgate-bench" "$B/examples/echo_server"; do
    [ -x "$bin" ] || die "$bin missing: cargo build --release -p wsgate -p wsgate-bench --bins --examples"
done
for tool in taskset openssl python3 getconf; do command -v "$tool" >/dev/null || die "$tool not found"; done
if [ "$HAPROXY" != 0 ] && ! command -v haproxy >/dev/null; then
    if [ "$SMOKE" = 1 ]; then
        echo "bench-tls: haproxy not installed: its rows are skipped" >&2
        HAPROXY=0
    else
        echo "== installing Debian's haproxy package" >&2
        sudo=""
        [ "$(id -u)" = 0 ] || sudo=sudo
        $sudo apt-get install -y haproxy >&2 || die "apt-get install haproxy failed"
    fi
fi
ulimit -n "$(ulimit -Hn)"

# --- certificate, secrets, configurations ---------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -addext basicConstraints=critical,CA:FALSE \
    -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null || die "openssl could not make a certificate"
cat "$T/cert.pem" "$T/key.pem" >"$T/haproxy.pem"
WSGATE_JWT_SECRET=$(random_hex 32)
export WSGATE_JWT_SECRET
sed -e "s|CERT_FILE|$T/cert.pem|; s|KEY_FILE|$T/key.pem|" "$here/configs/tls.toml" >"$T/wsgate.toml"
# The plain reference plus TLS on its listener, and room for the idle
# sockets: two descriptors per client, within the open-file limit.
maxconn=$(( ($(ulimit -n) - 100) / 2 ))
[ "$maxconn" -gt "$IDLE" ] || die "IDLE=$IDLE needs an open-file limit above $((2 * IDLE + 100)) for HAProxy"
sed -e 's|^    bind "${HAPROXY_LISTEN}"$|    bind "${HAPROXY_LISTEN}" ssl crt "${HAPROXY_CRT}" alpn http/1.1 curves X25519:P-256|' \
    -e "s|^    maxconn 8000\$|    maxconn $maxconn|" \
    "$here/references/haproxy/haproxy.cfg" >"$T/haproxy.cfg"
grep -q 'ssl crt' "$T/haproxy.cfg" && grep -q "maxconn $maxconn" "$T/haproxy.cfg" \
    || die "could not derive the TLS variant of references/haproxy/haproxy.cfg"
export HAPROXY_LISTEN=$HAPROXY_ADDR HAPROXY_UPSTREAM=$ECHO_ADDR HAPROXY_CRT=$T/haproxy.pem
if [ "$HAPROXY" != 0 ]; then
    haproxy -c -f "$T/haproxy.cfg" >/dev/null \
        || die "haproxy rejects the TLS reference (jwt_verify needs HAProxy >= 2.5): $(haproxy -v | head -1)"
fi

# --- servers ------------------------------------------------------------------------
servers=() # pids of the running setup
listening() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
start() { # name addr command...: pinned to SERVER_CORE, up within 10 s
    local name=$1 addr=$2
    shift 2
    ! listening "$addr" || die "$addr is already in use by another process"
    bg taskset -c "$SERVER_CORE" "$@" >"$T/$name.log" 2>&1
    servers+=("$last_pid")
    for _ in $(seq 1 100); do
        kill -0 "$last_pid" 2>/dev/null || { cat "$T/$name.log" >&2; die "$name exited during startup"; }
        listening "$addr" && return 0
        sleep 0.1
    done
    cat "$T/$name.log" >&2
    die "$name did not listen on $addr within 10s"
}
stop_servers() {
    local p
    for p in ${servers[@]+"${servers[@]}"}; do stop "$p"; done
    servers=()
}
s_ceiling() {
    start ceiling "$CEILING_ADDR" "$B/examples/echo_server" "$CEILING_ADDR" 4096 tls "$T/cert.pem" "$T/key.pem"
}
s_haproxy() {
    start echo-server "$ECHO_ADDR" "$B/examples/echo_server" "$ECHO_ADDR" 4096
    start haproxy "$HAPROXY_ADDR" haproxy -db -f "$T/haproxy.cfg"
}
s_wsgate() { start wsgate "$WSGATE_ADDR" "$B/wsgate" serve --config "$T/wsgate.toml"; }
url_of() {
    case $1 in
    ceiling) echo "wss://localhost:${CEILING_ADDR##*:}/ws" ;;
    haproxy) echo "wss://localhost:${HAPROXY_ADDR##*:}/ws" ;;
    wsgate) echo "wss://localhost:${WSGATE_ADDR##*:}/ws" ;;
    esac
}
ticks() { # utime+stime of the running setup's processes, each "u/s"
    local p out=""
    for p in "${servers[@]}"; do out+="$(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 "/" $13 }') "; done
    echo "${out% }"
}
rss() { # VmRSS KiB of the running setup's processes
    local p out=""
    for p in "${servers[@]}"; do out+="$(awk '/VmRSS/ { print $2 }' "/proc/$p/status") "; done
    echo "${out% }"
}
alive() { local p; for p in "${servers[@]}"; do kill -0 "$p" 2>/dev/null || die "$1: a server process died"; done; }
gen() { taskset -c "$BENCH_CORE" "$B/wsgate-bench" "$@"; }

# --- one measurement: a line of $T/results.tsv ------------------------------------------
# round figure setup before after report: "before"/"after" are ticks or RSS
record_row() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$T/results.tsv"; }
tls_flags=(--ca-file "$T/cert.pem")

upgrade_run() { # round figure setup
    local round=$1 figure=$2 setup=$3 url resume=() before
    url=$(url_of "$setup")
    [ "$figure" = resumed ] && resume=(--tls-resume)
    gen mint --count "$POOL" --mint-secret-env WSGATE_JWT_SECRET --out "$T/run.tok" >/dev/null
    "s_$setup"
    if [ "$WARMUP" != 0 ] && [ "$WARMUP" != 0s ]; then
        gen mint --count 20000 --mint-secret-env WSGATE_JWT_SECRET --out "$T/warm.tok" >/dev/null
        gen upgrade --url "$url" "${tls_flags[@]}" ${resume[@]+"${resume[@]}"} --token-file "$T/warm.tok" --unique \
            --concurrency "$CONCURRENCY" --duration "$WARMUP" >/dev/null 2>"$T/warm.err" \
            || { cat "$T/warm.err" >&2; die "$figure $setup: warm-up failed"; }
    fi
    before=$(ticks)
    gen --json upgrade --url "$url" "${tls_flags[@]}" ${resume[@]+"${resume[@]}"} --token-file "$T/run.tok" --unique \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --expect accepted >"$T/run.json" 2>"$T/run.err" \
        || { cat "$T/run.err" >&2; die "$figure $setup: wsgate-bench upgrade failed"; }
    alive "$figure $setup"
    record_row "$round" "$figure" "$setup" "$before" "$(ticks)" "$(cat "$T/run.json")"
    stop_servers
}

echo_run() { # round setup
    local round=$1 setup=$2 before
    gen mint --count "$CONNECTIONS" --mint-secret-env WSGATE_JWT_SECRET --out "$T/echo.tok" >/dev/null
    "s_$setup"
    before=$(ticks)
    gen --json echo --url "$(url_of "$setup")" "${tls_flags[@]}" --token-file "$T/echo.tok" \
        --connections "$CONNECTIONS" --size "$SIZE" --duration "$DURATION" >"$T/run.json" 2>"$T/run.err" \
        || { cat "$T/run.err" >&2; die "echo $setup: wsgate-bench echo failed"; }
    alive "echo $setup"
    record_row "$round" echo "$setup" "$before" "$(ticks)" "$(cat "$T/run.json")"
    stop_servers
}

idle_run() { # round setup
    local round=$1 setup=$2 before after opened gen_pid
    "s_$setup"
    sleep 1
    before=$(rss)
    rm -f "$T/ready"
    gen --json idle --url "$(url_of "$setup")" "${tls_flags[@]}" --mint-secret-env WSGATE_JWT_SECRET \
        --connections "$IDLE" --sources 127.3.0.1-127.3.0.64 --hold "$HOLD" --ready-file "$T/ready" \
        >"$T/run.json" 2>"$T/run.err" &
    gen_pid=$!
    for _ in $(seq 1 1200); do [ -s "$T/ready" ] && break; sleep 0.1; done
    [ -s "$T/ready" ] || { cat "$T/run.err" >&2; die "idle $setup: the sockets never opened"; }
    # Let the last sessions settle (buffers released once idle).
    sleep 2
    after=$(rss)
    wait "$gen_pid" || true
    opened=$(sed -n 's/^open=\([0-9]*\).*/\1/p' "$T/ready")
    [ "${opened:-0}" -gt 0 ] || { cat "$T/run.err" >&2; die "idle $setup: no socket opened"; }
    alive "idle $setup"
    record_row "$round" idle "$setup" "$before" "$after" "{\"opened\": $opened}"
    stop_servers
}

# --- the run --------------------------------------------------------------------------
setups=(ceiling)
[ "$HAPROXY" != 0 ] && setups+=(haproxy)
setups+=(wsgate)
note=""
[ "$SMOKE" = 1 ] && note="; SMOKE: not a measurement"
echo "bench-tls: $(date -u +%FT%TZ), $ROUNDS round(s), servers on core $SERVER_CORE, generator on core $BENCH_CORE;" \
    "upgrades: $DURATION per run (warm-up $WARMUP), concurrency $CONCURRENCY; echo: $CONNECTIONS x $SIZE B for $DURATION;" \
    "idle: $IDLE sockets$note"
[ "$HAPROXY" = 0 ] || echo "  $(haproxy -v | head -1 | cut -d' ' -f1-3), $(haproxy -vv | sed -n 's/^Running on OpenSSL version : //p')"
: >"$T/results.tsv"
for round in $(seq 1 "$ROUNDS"); do
    for figure in full resumed echo idle; do
        for setup in "${setups[@]}"; do
            [ -z "$ONLY" ] || [[ "$figure $setup" =~ $ONLY ]] || continue
            case $figure in
            full | resumed) upgrade_run "$round" "$figure" "$setup" ;;
            echo) echo_run "$round" "$setup" ;;
            idle) idle_run "$round" "$setup" ;;
            esac
            tail -n 1 "$T/results.tsv" | python3 "$here/bench-tls-report.py" line "$(getconf CLK_TCK)"
        done
    done
done
echo
python3 "$here/bench-tls-report.py" table "$(getconf CLK_TCK)" <"$T/results.tsv"
