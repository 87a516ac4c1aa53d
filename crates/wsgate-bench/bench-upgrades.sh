#!/usr/bin/env bash
# The BENCHMARKS.md "upgrades" table in one run: the unauthenticated minimal
# echo server (reference), then wsgate with HS256, ES256 and bad-signature
# tokens, each with the gateway on core 0 and the generator on core 1.
#   crates/wsgate-bench/bench-upgrades.sh          (after cargo build --release --workspace --all-targets)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
B=${CARGO_TARGET_DIR:-$repo/target}/${BENCH_PROFILE:-release}
GW=$B/wsgate
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
WSGATE_JWT_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export WSGATE_JWT_SECRET
DATA=$repo/crates/wsgate/tests/data
for i in 1 2 3 4; do "$GW" token --sub "bench-$i" --ttl 1h; done >"$T/hs.tok"
for i in 1 2 3 4; do "$GW" token --sub "bench-$i" --ttl 1h --alg ES256 --key-file "$DATA/ec256.pem"; done >"$T/es.tok"
for i in 1 2 3 4; do "$GW" token --sub "bench-$i" --ttl 1h --alg RS256 --key-file "$DATA/rsa.pem"; done >"$T/rs.tok"
for i in 1 2 3 4; do "$GW" token --sub "bench-$i" --ttl 1h --alg EdDSA --key-file "$DATA/ed25519.pem"; done >"$T/ed.tok"
for i in 1 2 3 4; do WSGATE_JWT_SECRET=not-the-gateway-secret-not-the-gateway-secret "$GW" token --sub "bench-$i" --ttl 1h; done >"$T/bad.tok"

echo "== reference: minimal tokio-tungstenite echo server (no auth)"
taskset -c 0 "$B/examples/echo_server" 127.0.0.1:19001 4096 >/dev/null 2>&1 &
pid=$!
sleep 0.5
t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
taskset -c 1 "$B/wsgate-bench" upgrade --url ws://127.0.0.1:19001/ws --token-file "$T/hs.tok" \
    --concurrency 32 --duration "${DURATION:-10s}" --json >"$T/ref.json" 2>/dev/null
t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
kill "$pid"
python3 - "$T/ref.json" "$t0" "$t1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); cpu = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
print(f"upgrades/s {r['rate_per_s']:.0f}  server CPU per upgrade {cpu / r['attempts'] * 1e6:.1f} us")
PY
cd "$here/configs"
for run in "hs256.toml hs.tok accepted" "es256.toml es.tok accepted" "rs256.toml rs.tok accepted" \
    "eddsa.toml ed.tok accepted" "hs256.toml bad.tok rejected"; do
    set -- $run
    echo "== wsgate $1 tokens=$2 expect=$3"
    TOKEN_FILE="$T/$2" EXPECT=$3 "$here/run-upgrade-bench.sh" "$GW" "$1" 2>&1 \
        | grep -E "^(attempts|upgrades/s|rejections/s|latency|gateway CPU per)"
done
