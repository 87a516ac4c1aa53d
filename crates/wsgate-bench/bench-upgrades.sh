#!/usr/bin/env bash
# The BENCHMARKS.md "upgrades" table in one run: the unauthenticated minimal
# echo server (reference), then wsgate with HS256, ES256 and bad-signature
# tokens, each with the gateway on core 0 and the generator on core 1; every
# attempt has a unique token (POOL per run, default 100000; RSA_POOL 30000).
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
# Every attempt carries a token of its own, valid or forged (issue 10): pools
# are minted before each gateway starts (run-upgrade-bench.sh, POOL tokens;
# RSA signs at ~1.5 ms a token, so its pool is smaller and its run shorter).
"$B/wsgate-bench" mint --count "${POOL:-100000}" --mint-secret-env WSGATE_JWT_SECRET --out "$T/ref.tok"

echo "== reference: minimal tokio-tungstenite echo server (no auth)"
taskset -c 0 "$B/examples/echo_server" 127.0.0.1:19001 4096 >/dev/null 2>&1 &
pid=$!
sleep 0.5
t0=$(awk '{print $14+$15}' "/proc/$pid/stat")
taskset -c 1 "$B/wsgate-bench" upgrade --url ws://127.0.0.1:19001/ws --token-file "$T/ref.tok" --unique \
    --concurrency 32 --duration "${DURATION:-10s}" --json >"$T/ref.json" 2>/dev/null
t1=$(awk '{print $14+$15}' "/proc/$pid/stat")
kill "$pid"
python3 - "$T/ref.json" "$t0" "$t1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); cpu = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
print(f"upgrades/s {r['rate_per_s']:.0f}  server CPU per upgrade {cpu / r['attempts'] * 1e6:.1f} us")
PY
cd "$here/configs"
hs="--mint-secret-env WSGATE_JWT_SECRET"
for run in "hs256.toml accepted $hs" \
    "es256.toml accepted --mint-alg ES256 --mint-key-file $DATA/ec256.pem" \
    "rs256.toml accepted --mint-alg RS256 --mint-key-file $DATA/rsa.pem" \
    "eddsa.toml accepted --mint-alg EdDSA --mint-key-file $DATA/ed25519.pem" \
    "hs256.toml rejected $hs --mint-invalid bad-signature"; do
    set -- $run
    config=$1 expect=$2
    shift 2
    pool=${POOL:-100000}
    case "$*" in *RS256*) pool=${RSA_POOL:-30000} ;; esac
    echo "== wsgate $config expect=$expect tokens: $*"
    MINT="$*" POOL=$pool EXPECT=$expect "$here/run-upgrade-bench.sh" "$GW" "$config" 2>&1 \
        | grep -E "^(attempts|tokens|upgrades/s|rejections/s|latency|gateway CPU per)"
done
