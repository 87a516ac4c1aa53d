#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (policy in deny.toml):
# licences, bans (duplicates warn, wildcards and OpenSSL deny) and sources
# always; advisories (RustSec, fetched from GitHub) when the database can
# be fetched. WSGATE_DENY_ADVISORIES=required makes an unreachable database
# an error instead of a skip (for CI runners with network access).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null; then
  echo "== installing cargo-deny (cargo install --locked; ~5 min on 2 cores)"
  cargo install cargo-deny --locked --quiet
fi

echo "== cargo deny: licenses bans sources"
cargo deny --log-level error check licenses bans sources

echo "== cargo deny: advisories"
if timeout 60 cargo deny --log-level error fetch db >/dev/null 2>&1; then
  cargo deny --log-level error --offline check advisories
elif [ "${WSGATE_DENY_ADVISORIES:-}" = "required" ]; then
  echo "advisories: the RustSec database could not be fetched" >&2
  exit 1
else
  echo "advisories: SKIPPED: the RustSec database (github.com/rustsec/advisory-db) is unreachable from here;"
  echo "            set WSGATE_DENY_ADVISORIES=required where it is reachable."
fi
