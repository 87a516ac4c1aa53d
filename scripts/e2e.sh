#!/usr/bin/env bash
# The browser client and the real-browser tests, on a fresh Debian machine:
# installs Chromium and the npm dev dependencies it needs, checks that the
# committed client build (clients/js/dist, embedded in the gateway for the
# demo page) matches its sources, runs the client's unit tests, checks its
# npm package (contents, and that apps compile against it under strict with
# both WebSocket types), builds the gateway, and drives Debian's Chromium
# against it (e2e/).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

need_root() { if [ "$(id -u)" -ne 0 ]; then echo "sudo"; fi; }
apt_install() {
  $(need_root) apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $(need_root) apt-get install -y -qq "$@"
}
started=$(date +%s)
phase_start=$started
phase() {
  local now
  now=$(date +%s)
  if [ -n "${phase_name:-}" ]; then echo "   (${phase_name}: $((now - phase_start)) s)"; fi
  phase_name=$1
  phase_start=$now
  echo "== e2e: $1"
}

phase "tools"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "error: Node >= 20 is needed (found $(node --version))" >&2
  exit 1
fi
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  apt_install chromium
fi
export CHROMIUM
echo "   node $(node --version), $("$CHROMIUM" --version 2>/dev/null | head -1)"

phase "npm ci"
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error)
(cd e2e && npm ci --no-audit --no-fund --loglevel=error)

phase "client: dist is current"
(cd clients/js && node scripts/check-dist.mjs)

phase "client: unit tests"
(cd clients/js && node --test test/*.test.mjs)

phase "client: npm package (npm pack; tsc --strict with the browser's and ws's WebSocket)"
(cd clients/js && node scripts/check-package.mjs)

phase "build the gateway"
cargo build -p wsgate --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
# A private copy: a shared target dir may be rebuilt by someone else meanwhile.
bin_dir=$(mktemp -d)
trap 'rm -rf "$bin_dir"' EXIT
cp "$target_dir/debug/wsgate" "$bin_dir/wsgate"
export WSGATE_BIN="$bin_dir/wsgate"

phase "real-browser tests (Chromium)"
rm -rf e2e/artifacts
(cd e2e && timeout 600 node --test --test-concurrency=1 tests/)
echo "   screenshots: $root/e2e/artifacts/"

phase "done"
echo "   scripts/e2e.sh took $(($(date +%s) - started)) s"
