#!/usr/bin/env bash
# Packaging tests (part of scripts/test.sh): `cargo install` from the source
# tree, the Debian package built with cargo-deb and installed with dpkg, its
# systemd unit verified, the installed binary's `check --strict` on the
# installed config, and the release tarball with its checksums.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() { if [ "$(id -u)" -ne 0 ]; then echo "sudo"; fi; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
# CI passes PROFILE=package-test (release semantics, cheaper codegen).
profile=${PROFILE:-release}

if ! command -v cargo-deb >/dev/null; then
  echo "== installing cargo-deb"
  cargo install --locked --quiet cargo-deb@3
fi

echo "== cargo install --locked --path crates/wsgate"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
# Shares the release build with cargo-deb below (same target dir and profile).
cargo install --locked --quiet --profile "$profile" --path crates/wsgate --root "$root"
"$root/bin/wsgate" --version
"$root/bin/wsgate" init "$root/etc" >/dev/null
"$root/bin/wsgate" check --strict --config "$root/etc/wsgate.toml" >/dev/null

echo "== cargo deb -p wsgate"
deb=$(cargo deb -p wsgate --profile "$profile" 2>/dev/null | tail -1)
[ -f "$deb" ] || deb=$(ls -t "$CARGO_TARGET_DIR"/debian/wsgate_*.deb | head -1)
dpkg-deb --info "$deb" | grep -E "Package|Version|Depends"
dpkg-deb --contents "$deb" | awk '{print $6}'
# conffiles: the example config survives upgrades and local edits.
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
grep -qx /etc/wsgate/wsgate.toml <<<"$conffiles"

echo "== dpkg -i"
if ! command -v adduser >/dev/null; then
  $(need_root) apt-get update -qq && $(need_root) apt-get install -y -qq adduser
fi
$(need_root) dpkg -i "$deb"
test -x /usr/bin/wsgate
getent passwd wsgate >/dev/null
for f in jwt.key ticket.key admin.token; do
  [ "$(stat -c '%a %U' /etc/wsgate/$f)" = "600 wsgate" ] || { echo "bad mode/owner on /etc/wsgate/$f"; exit 1; }
done
/usr/bin/wsgate check --strict --config /etc/wsgate/wsgate.toml >/dev/null
echo "installed config: check --strict passes"

unit=/lib/systemd/system/wsgate.service
[ -f "$unit" ] || unit=/usr/lib/systemd/system/wsgate.service
if command -v systemd-analyze >/dev/null; then
  out=$(systemd-analyze verify "$unit" 2>&1 || true)
  # Outside a booted systemd (containers, CI), verify may only complain
  # that it cannot talk to the manager; any other line is a unit problem.
  bad=$(printf '%s\n' "$out" | grep -v -E "^$|Failed to (connect|create).*bus|System has not been booted|Running in chroot" || true)
  if [ -n "$bad" ]; then echo "$bad"; exit 1; fi
  echo "systemd-analyze verify: clean"
  systemd-analyze security --offline=true "$unit" 2>/dev/null | tail -1 || true
fi

echo "== dpkg --purge"
$(need_root) dpkg --purge wsgate >/dev/null
[ ! -e /usr/bin/wsgate ] && [ ! -e /etc/wsgate/jwt.key ]

echo "== scripts/release.sh"
NO_BUILD=1 PROFILE="$profile" ./scripts/release.sh
(cd dist && sha256sum -c SHA256SUMS)
tarball=$(ls dist/wsgate-*.tar.gz)
# Listed once: `tar | grep -q` under pipefail fails when grep stops early.
listing=$(tar -tzf "$tarball" | sort)
echo "$listing"
for f in wsgate LICENSE README.md CHANGELOG.md wsgate.toml wsgate.service; do
  grep -qx "[^/]*/$f" <<<"$listing" || { echo "missing $f in $tarball"; exit 1; }
done
echo "packaging: ok"
