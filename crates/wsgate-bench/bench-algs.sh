#!/usr/bin/env bash
# Gateway CPU per upgrade for each signature algorithm, as a ratio to HS256
# (issue 10: "ES256 <= 2x the HS256 cost"), measured interleaved in ONE
# gateway process (configs/algs.toml accepts all four): ROUNDS rounds, each
# running one segment per algorithm (HS256, ES256, RS256, EdDSA, in an order
# that rotates every round so that drift favours none), every attempt with a
# unique token. This machine's speed drifts by tens of percent over minutes;
# separate runs per algorithm (bench-upgrades.sh) carry that drift into the
# ratio, interleaved segments do not.
#
# Gateway on core 0, generator on core 1; CPU is utime+stime of the gateway
# from /proc around each segment.
#
#   crates/wsgate-bench/bench-algs.sh    (after cargo build --release -p wsgate -p wsgate-bench)
#
# Environment: ROUNDS (8), SEGMENT (8000 upgrades per segment; RS256 gets
# SEGMENT/4, its tokens take ~1.5 ms each to sign), CONCURRENCY (32),
# ALGS ("HS256 ES256 RS256 EdDSA"; HS256 must be in it).
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
ROUNDS=${ROUNDS:-8}
SEGMENT=${SEGMENT:-8000}
CONCURRENCY=${CONCURRENCY:-32}
ALGS=${ALGS:-HS256 ES256 RS256 EdDSA}
DATA=$repo/crates/wsgate/tests/data
WSGATE_JWT_SECRET=$(random_hex 32)
export WSGATE_JWT_SECRET
case " $ALGS " in *" HS256 "*) ;; *) echo "bench-algs: ALGS must include HS256" >&2; exit 2 ;; esac

segment_size() { case $1 in RS256) echo $((SEGMENT / 4)) ;; *) echo "$SEGMENT" ;; esac; }
mint_args() {
    case $1 in
    HS256) echo "--mint-secret-env WSGATE_JWT_SECRET" ;;
    ES256) echo "--mint-alg ES256 --mint-key-file $DATA/ec256.pem" ;;
    RS256) echo "--mint-alg RS256 --mint-key-file $DATA/rsa.pem" ;;
    EdDSA) echo "--mint-alg EdDSA --mint-key-file $DATA/ed25519.pem" ;;
    *) echo "bench-algs: unknown algorithm $1" >&2; exit 2 ;;
    esac
}
# Pools first (every core, nothing running yet): a warm-up segment's worth
# plus ROUNDS segments, split into one file per segment.
for alg in $ALGS; do
    n=$(segment_size "$alg")
    # shellcheck disable=SC2046 # mint_args is a list of words
    "$B/wsgate-bench" mint --count $((n * (ROUNDS + 1))) $(mint_args "$alg") --out "$T/$alg.pool"
    split -l "$n" -d -a 3 "$T/$alg.pool" "$T/$alg."
done

cd "$here/configs"
bg taskset -c 0 "$B/wsgate" serve --config algs.toml >"$T/gw.log" 2>&1
gw=$last_pid
wait_ready "$T/gw.log"
ticks() { sed 's/.*) //' "/proc/$gw/stat" | awk '{ print $12 + $13 }'; }
segment() { # alg index -> "alg attempts ticks"
    local before after
    before=$(ticks)
    taskset -c 1 "$B/wsgate-bench" upgrade --url ws://127.0.0.1:18080/ws --concurrency "$CONCURRENCY" \
        --token-file "$T/$1.$(printf %03d "$2")" --unique --expect accepted --json >"$T/seg.json" 2>"$T/seg.err" \
        || { cat "$T/seg.err" >&2; echo "bench-algs: $1 segment $2 failed" >&2; exit 1; }
    after=$(ticks)
    echo "$1 $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["attempts"])' "$T/seg.json") $((after - before))"
}
read -r -a order <<<"$ALGS"
for alg in "${order[@]}"; do segment "$alg" 0 >/dev/null; done # warm-up
for r in $(seq 1 "$ROUNDS"); do
    for k in $(seq 0 $((${#order[@]} - 1))); do
        alg=${order[$(((k + r) % ${#order[@]}))]}
        segment "$alg" "$r"
    done | sed "s/^/$r /"
done >"$T/segments"
kill -0 "$gw" 2>/dev/null || { cat "$T/gw.log" >&2; echo "bench-algs: the gateway died" >&2; exit 1; }
python3 - "$T/segments" "$(getconf CLK_TCK)" "$ALGS" <<'PY'
import statistics, sys
hz = int(sys.argv[2]); algs = sys.argv[3].split()
per = {}  # (round, alg) -> us per upgrade
tot = {a: [0, 0] for a in algs}
for line in open(sys.argv[1]):
    r, alg, n, t = line.split(); n, t = int(n), int(t)
    per[(int(r), alg)] = t * 1e6 / hz / n
    tot[alg][0] += n; tot[alg][1] += t
rounds = sorted({r for r, _ in per})
hs = tot["HS256"][1] * 1e6 / hz / tot["HS256"][0]
print(f"{len(rounds)} rounds, interleaved in one gateway; gateway CPU per upgrade, and ratio to HS256")
print("| algorithm | upgrades | CPU per upgrade | / HS256 (sums) | / HS256 per round: min / median / max |")
print("|---|---|---|---|---|")
for a in algs:
    n, t = tot[a]; us = t * 1e6 / hz / n
    rs = [per[(r, a)] / per[(r, "HS256")] for r in rounds]
    print(f"| {a} | {n} | {us:.1f} µs | {us / hs:.2f} | {min(rs):.2f} / {statistics.median(rs):.2f} / {max(rs):.2f} |")
PY
