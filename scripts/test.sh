#!/usr/bin/env bash
# Runs the whole wsgate test suite on a fresh machine: installs what the
# tests need, then format, lint, unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() { if [ "$(id -u)" -ne 0 ]; then echo "sudo"; fi; }

# A real Redis on 127.0.0.1:6379 for the store and cluster tests.
if ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG); then
  if ! command -v redis-server >/dev/null; then
    $(need_root) apt-get update -qq && $(need_root) apt-get install -y -qq redis-server
  fi
  redis-server --daemonize yes --save "" --appendonly no --bind 127.0.0.1 --port 6379
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
fi

# promtool and prometheus (Debian's prometheus package) read /metrics as a
# scraper does (crates/wsgate/tests/hardening/metrics_format.rs).
if ! command -v promtool >/dev/null; then
  $(need_root) apt-get update -qq && $(need_root) apt-get install -y -qq --no-install-recommends prometheus
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace

# --- browser client and real-browser tests (clients/js, e2e/) ---
echo "== scripts/e2e.sh"
./scripts/e2e.sh
# --- end browser tests ---

# --- Autobahn|Testsuite (RFC 6455 conformance, sections 1-10; docs/conformance.md).
# ~80 s once installed, ~90 s more the first time; skipped without Python 2.7.
echo "== autobahn"
AUTOBAHN_NO_BUILD=1 ./scripts/autobahn.sh
# --- end Autobahn

# --- hardening (issue 9): supply chain and fuzzing. The hardening tests
# themselves (crates/wsgate/tests/hardening/, wsgate-core/tests/
# wycheproof.rs) ran with cargo test above. WSGATE_FUZZ_SECONDS=0 skips
# fuzzing (e.g. on a laptop); docs/fuzzing.md has the costs.
echo "== cargo deny"
./scripts/deny.sh
if [ "${WSGATE_FUZZ_SECONDS:-30}" != "0" ]; then
  echo "== fuzz (${WSGATE_FUZZ_SECONDS:-30}s per target)"
  ./scripts/fuzz.sh "${WSGATE_FUZZ_SECONDS:-30}"
fi
# --- end hardening

# --- benchmark scripts in smoke mode (issue 10): a few hundred connections,
# debug binaries, ~1.5 min; they must keep working, the figures are not read.
echo "== scripts/bench-smoke.sh"
./scripts/bench-smoke.sh
# --- end benchmark smoke

# --- packaging (issue 27): cargo install, the .deb installed with dpkg and
# its systemd unit verified, `check --strict` on the installed config, the
# release tarball and its checksums.
echo "== scripts/package.sh"
PROFILE=package-test ./scripts/package.sh
# --- end packaging
