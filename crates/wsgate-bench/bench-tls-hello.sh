#!/usr/bin/env bash
# Issue 28: what one address costs a TLS listener by sending half a
# ClientHello on many connections. For each gateway binary given: a TLS
# listener (self-signed P-256 certificate, handshake_timeout 5s, the default
# limits.pending_handshakes_per_ip 64), then `slowloris --payload tls-hello
# --connections CONNS` from ONE source address (127.0.0.2) for HOLD; the
# gateway's open descriptors and resident memory are sampled every 200 ms.
#
#   crates/wsgate-bench/bench-tls-hello.sh OLD_BINARY NEW_BINARY
#
# Prints, per binary: descriptors before the attack, mean and max during the
# hold, max RSS, and what the attacker saw (sockets pending on average,
# dropped by EOF / reset). Goal: the attack holds the per-IP cap, not CONNS.
# Knobs: CONNS (600), HOLD (10s), REOPEN_DELAY (1s: a socket the gateway
# dropped is reopened after this, so a gateway that refuses at once sees
# ~CONNS/REOPEN_DELAY connects/s, not a busy loop), BENCH_BIN, GATEWAY_CORE
# (0), BENCH_CORE (1). Builds nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
B=${CARGO_TARGET_DIR:-$repo/target}/${BENCH_PROFILE:-release}
BENCH_BIN=${BENCH_BIN:-$B/wsgate-bench}
CONNS=${CONNS:-600}
HOLD=${HOLD:-10s}
REOPEN_DELAY=${REOPEN_DELAY:-1s}
GATEWAY_CORE=${GATEWAY_CORE:-0}
BENCH_CORE=${BENCH_CORE:-1}
PORT=18690
ADMIN=19701

die() { echo "bench-tls-hello: $*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: $0 GATEWAY_BINARY [GATEWAY_BINARY...]"
for tool in taskset openssl python3; do command -v "$tool" >/dev/null || die "$tool not found"; done
[ -x "$BENCH_BIN" ] || die "wsgate-bench not found at $BENCH_BIN (build it first)"
if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then die "port $PORT is already taken"; fi

T=$(mktemp -d)
gw=""
cleanup() {
    if [ -n "$gw" ]; then kill "$gw" 2>/dev/null || true; wait "$gw" 2>/dev/null || true; fi
    rm -rf "$T"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -keyout "$T/key.pem" -out "$T/cert.pem" 2>/dev/null
cat >"$T/gw.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
handshake_timeout = "5s"
[server.tls]
cert_file = "$T/cert.pem"
key_file = "$T/key.pem"
[admin]
listen = "127.0.0.1:$ADMIN"
[[auth.keys]]
alg = "HS256"
secret_env = "WSGATE_JWT_SECRET"
[origins]
allow_missing = true
[log]
level = "warn"
EOF
WSGATE_JWT_SECRET=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export WSGATE_JWT_SECRET

fds() { ls "/proc/$gw/fd" 2>/dev/null | wc -l; }
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$gw/status" 2>/dev/null || echo 0; }

for bin in "$@"; do
    [ -x "$bin" ] || die "gateway binary $bin not found"
    taskset -c "$GATEWAY_CORE" "$bin" serve --config "$T/gw.toml" >"$T/gateway.log" 2>&1 &
    gw=$!
    for _ in $(seq 1 100); do
        kill -0 "$gw" 2>/dev/null || { cat "$T/gateway.log" >&2; die "$bin exited during startup"; }
        if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then break; fi
        sleep 0.1
    done
    sleep 0.5
    before=$(fds)
    rss_before=$(rss_kb)
    taskset -c "$BENCH_CORE" "$BENCH_BIN" --json slowloris --url "ws://127.0.0.1:$PORT/ws" \
        --payload tls-hello --connections "$CONNS" --sources 127.0.0.2 --per-source "$CONNS" \
        --hold "$HOLD" --reopen-delay "$REOPEN_DELAY" --ready-file "$T/ready" \
        >"$T/slow.json" 2>"$T/slow.err" &
    slow=$!
    rm -f "$T/ready"
    while [ ! -e "$T/ready" ] && kill -0 "$slow" 2>/dev/null; do sleep 0.05; done
    : >"$T/samples"
    while kill -0 "$slow" 2>/dev/null; do
        echo "$(fds) $(rss_kb)" >>"$T/samples"
        sleep 0.2
    done
    wait "$slow" || true # exit 2 when the gateway would not hold the sockets: expected
    python3 - "$bin" "$before" "$rss_before" "$T/samples" "$T/slow.json" <<'PY'
import json, sys
bin_, before, rss_before, samples, report = sys.argv[1:]
rows = [tuple(map(int, l.split())) for l in open(samples) if l.strip()]
fds = [r[0] for r in rows] or [0]
rss = [r[1] for r in rows] or [0]
r = json.load(open(report))
print(f"{bin_}")
print(f"  gateway fds: before {before}, during the hold mean {sum(fds)/len(fds):.0f} max {max(fds)} "
      f"({len(fds)} samples); RSS before {int(rss_before)//1024} MiB, max {max(rss)//1024} MiB")
print(f"  attacker ({r['connections_requested']} sockets from 1 address): pending mean "
      f"{r['mean_open_during_hold']} min {r['min_open_during_hold']} max {r['max_open_during_hold']}; "
      f"connects {r['connects']}, dropped EOF {r['dropped_eof']} reset {r['dropped_reset']} "
      f"answered {r['answered_by_server']}; held p50 {r['held_by_server_us']['p50_us']} us")
PY
    kill "$gw" 2>/dev/null || true
    wait "$gw" 2>/dev/null || true
    gw=""
done
