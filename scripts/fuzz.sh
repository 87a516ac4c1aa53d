#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time: scripts/fuzz.sh [seconds]
# (per target, default 60). Works on stable Rust: RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz pass its -Z flags, and --sanitizer none avoids needing a
# nightly sanitizer runtime (the code under test forbids `unsafe`; the
# fuzzer hunts panics, overflows (-a: overflow checks on), hangs and memory
# blow-ups). See docs/fuzzing.md.
#
# Each target starts from its seeds in fuzz/corpus/<target> (read-only) and
# writes what it finds to a scratch corpus; a crash leaves the input in
# fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-60}"
RSS_LIMIT_MB="${WSGATE_FUZZ_RSS_MB:-2048}"
# WSGATE_FUZZ_TARGETS="a b" runs only those.
read -r -a TARGETS <<< "${WSGATE_FUZZ_TARGETS:-credential upgrade_head http_head client_ip verify_token verify_claims config hub_message control_message}"
export RUSTC_BOOTSTRAP=1
FLAGS=(-O -a --sanitizer none)
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  # Instrumented builds must not mix with the normal ones.
  FLAGS+=(--target-dir "${CARGO_TARGET_DIR}/fuzz")
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz (cargo install --locked; ~2 min on 2 cores)"
  cargo install cargo-fuzz --locked --quiet
fi

# The longest input worth trying per target (heads are capped at 16 KiB by
# default, tokens at 8 KiB).
max_len() {
  case "$1" in
    credential | upgrade_head | http_head | client_ip) echo 20000 ;;
    verify_token) echo 10000 ;;
    config) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

cd fuzz
echo "== cargo fuzz build"
cargo fuzz build "${FLAGS[@]}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${TARGETS[@]}"; do
  echo "== fuzz $t for ${SECONDS_PER_TARGET}s"
  mkdir -p "$scratch/$t" "corpus/$t"
  started=$(date +%s)
  set +e
  cargo fuzz run "${FLAGS[@]}" "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" \
    -rss_limit_mb="$RSS_LIMIT_MB" \
    -max_len="$(max_len "$t")" \
    -timeout=10 \
    -print_final_stats=1 2>&1 |
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|INFO: Seed|.*(panicked|ERROR|Crash|crash-|leak-|timeout-|oom-))'
  # grep hides libFuzzer's progress lines; the status is the fuzzer's.
  status=${PIPESTATUS[0]}
  set -e
  echo "   $t: exit $status after $(( $(date +%s) - started ))s"
  if [ "$status" -ne 0 ]; then
    echo "fuzz target $t failed: see fuzz/artifacts/$t/" >&2
    exit "$status"
  fi
done
