# shellcheck shell=bash disable=SC2034
# Shared setup for the bench-*.sh scripts (sourced, not run):
#   here, repo, B (binaries of ${BENCH_PROFILE:-release}), T (scratch dir),
#   bg CMD... (start in the background, killed and waited for on exit; the
#   pid is in $last_pid), random_hex N, wait_ready LOG (the gateway's
#   /readyz on 127.0.0.1:19091, or print LOG and fail).
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
B=${CARGO_TARGET_DIR:-$repo/target}/${BENCH_PROFILE:-release}
T=$(mktemp -d)
pids=()
last_pid=
cleanup() {
    for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
    # A stopped gateway drains before it exits; the ports are free after.
    for p in ${pids[@]+"${pids[@]}"}; do wait "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT
bg() { "$@" & last_pid=$!; pids+=("$last_pid"); }
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
random_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
wait_ready() {
    for _ in $(seq 1 100); do curl -sf http://127.0.0.1:19091/readyz >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "gateway not ready (port 18080/19091 busy?)" >&2
    cat "$1" >&2
    exit 1
}
# A/B scripts: ROUNDS times, for binaries $A then $Bn, the caller's
# `one BINARY TOKENS OUTCOME` on $T/good.tok (accepted) and $T/bad.tok
# (rejected), alternating so drift hits both alike.
ab_rounds() {
    for _ in $(seq 1 "$ROUNDS"); do
        for bin in "$A" "$Bn"; do
            one "$bin" "$T/good.tok" accepted
            one "$bin" "$T/bad.tok" rejected
        done
    done
}
