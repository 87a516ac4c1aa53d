#!/usr/bin/env bash
# Builds a release tarball: dist/wsgate-VERSION-TARGET.tar.gz holding the
# binary, LICENSE, README, CHANGELOG, the example config and the systemd
# unit, plus dist/SHA256SUMS. Check a download with `sha256sum -c SHA256SUMS`.
#
#   scripts/release.sh            # build (cargo build --release --locked) and pack
#   NO_BUILD=1 scripts/release.sh # pack the binary already in target/release
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(cargo metadata --no-deps --format-version 1 --locked \
  | python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="wsgate"))')
target=$(rustc -vV | sed -n 's/^host: //p')
name="wsgate-${version}-${target}"
target_dir=${CARGO_TARGET_DIR:-target}
profile=${PROFILE:-release}

if [ "${NO_BUILD:-0}" != "1" ]; then
  cargo build --profile "$profile" --locked -p wsgate --bin wsgate
fi

rm -rf "dist/$name" "dist/$name.tar.gz"
mkdir -p "dist/$name"
install -m 0755 "$target_dir/$profile/wsgate" "dist/$name/wsgate"
install -m 0644 LICENSE README.md CHANGELOG.md "dist/$name/"
install -m 0644 crates/wsgate/packaging/wsgate.toml "dist/$name/wsgate.toml"
install -m 0644 crates/wsgate/packaging/wsgate.service "dist/$name/wsgate.service"
# Reproducible order, owner and times inside the archive.
mtime=$(git log -1 --format=%cI 2>/dev/null || date -u +%FT%TZ)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="$mtime" \
  -C dist -czf "dist/$name.tar.gz" "$name"
rm -rf "dist/$name"
(cd dist && sha256sum "$name.tar.gz" > SHA256SUMS && cat SHA256SUMS)
