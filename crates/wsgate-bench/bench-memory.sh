#!/usr/bin/env bash
# Memory per idle authenticated socket (issue 10): CONNECTIONS (default 10000)
# sockets opened through wsgate (echo backend, HS256 bearer, a token and a
# user of its own per socket, minted by the generator; each session's
# expiry timer armed, registry entry, ping timer) and held idle; the
# gateway's VmRSS before and with all of them open, per socket. The minimal
# echo server (no auth, 4 KiB read buffer) holds the same sockets in the same
# run as the reference. Gateway on core 0, generator on core 1.
# SEND_BYTES=N: each socket first sends one binary message of N bytes and
# waits for its echo, then idles (what a socket keeps after a big message;
# use fewer CONNECTIONS, e.g. 1000 for 1 MiB).
# UPSTREAM=1: also wsgate in upstream mode in front of the echo server
# (two files per client: CONNECTIONS=9000 under a 20,000-file limit).
# UPSTREAM_HTTP2=1: also upstream mode over HTTP/2 (backend.upstream_http2,
# the echo server in its h2 mode; one file per client).
#
#   crates/wsgate-bench/bench-memory.sh     (after cargo build --release -p wsgate -p wsgate-bench --bins --examples)
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
ulimit -n "$(ulimit -Hn)"
WSGATE_JWT_SECRET=$(random_hex 32)
export WSGATE_JWT_SECRET
N=${CONNECTIONS:-10000}
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
measure() { # name url
    local name=$1 url=$2 before after
    sleep 1
    before=$(rss "$srv")
    rm -f "$T/ready"
    taskset -c 1 "$B/wsgate-bench" idle --url "$url" --mint-secret-env WSGATE_JWT_SECRET --connections "$N" \
        --sources 127.3.0.1-127.3.0.64 \
        --hold 6s --ready-file "$T/ready" --send-bytes "${SEND_BYTES:-0}" >"$T/$name.out" 2>&1 &
    local gen=$!
    for _ in $(seq 1 600); do [ -s "$T/ready" ] && break; sleep 0.1; done
    sleep 3
    after=$(rss "$srv")
    wait "$gen" || true
    local opened
    opened=$(sed -n 's/^open=\([0-9]*\).*/\1/p' "$T/ready" 2>/dev/null)
    [ "${opened:-0}" -gt 0 ] || { cat "$T/$name.out" >&2; echo "bench-memory: $name: no socket opened" >&2; exit 1; }
    # Per socket actually open (a failed open holds nothing).
    echo "$name: $(cat "$T/ready" 2>/dev/null); VmRSS ${before} KiB -> ${after} KiB; $(( (after - before) * 1024 / opened )) bytes per socket"
    stop "$srv"
}
bg taskset -c 0 "$B/examples/echo_server" 127.0.0.1:19001 4096 >/dev/null 2>&1
srv=$last_pid
measure "minimal echo server (no auth)" ws://127.0.0.1:19001/ws
bg taskset -c 0 "$B/wsgate" serve --config "$here/configs/storm.toml" >"$T/gw.log" 2>&1
srv=$last_pid
wait_ready "$T/gw.log"
measure "wsgate (HS256, echo backend)" ws://127.0.0.1:18080/ws
# Upstream mode: the echo server on core 1 as the upstream, only the
# gateway's RSS measured.
upstream_row() { # name tag echo-port [h2]
    local name=$1 tag=$2 port=$3 h2=${4:-}
    bg taskset -c 1 "$B/examples/echo_server" "127.0.0.1:$port" 4096 ${h2:+"$h2"} >/dev/null 2>&1
    sleep 0.5
    sed "s|^kind = \"echo\"|kind = \"upstream\"\nupstream = \"ws://127.0.0.1:$port/ws\"${h2:+\nupstream_http2 = true}|" \
        "$here/configs/storm.toml" >"$T/storm-$tag.toml"
    bg taskset -c 0 "$B/wsgate" serve --config "$T/storm-$tag.toml" >"$T/gw-$tag.log" 2>&1
    srv=$last_pid
    wait_ready "$T/gw-$tag.log"
    measure "$name" ws://127.0.0.1:18080/ws
}
# Each client socket has its upstream socket (two files per client: keep
# CONNECTIONS under half the open-file limit).
[ "${UPSTREAM:-0}" != 1 ] || upstream_row "wsgate (HS256, upstream backend)" upstream 19001
# backend.upstream_http2: the clients' upstream WebSockets are streams of a
# few shared connections to the echo server in its HTTP/2 mode (one file
# per client).
[ "${UPSTREAM_HTTP2:-0}" != 1 ] || upstream_row "wsgate (HS256, upstream backend over h2)" upstream-h2 19002 h2
