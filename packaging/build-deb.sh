#!/bin/bash
# Builds target/debian/layerguard_<version>_<arch>.deb from target/release/layerguard with
# dpkg-deb: the same layout `make install` gives, with /usr as the prefix. No debhelper:
# the package is one binary, one unit, one conffile and three small maintainer scripts.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/layerguard
[ -x "$bin" ] || { echo "build-deb: $bin missing: run 'make release' first" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
# The oldest glibc symbol version the binary needs, so the package says what it runs on.
glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)

root=target/debian/root
rm -rf "$root"
install -D -m 0755 "$bin" "$root/usr/bin/layerguard"
strip --strip-debug "$root/usr/bin/layerguard"
install -D -m 0644 systemd/layerguard.service "$root/lib/systemd/system/layerguard.service"
install -D -m 0644 packaging/layerguard.toml "$root/etc/layerguard/layerguard.toml"
install -D -m 0644 README.md "$root/usr/share/doc/layerguard/README.md"
printf 'layerguard %s\nLicense: Apache-2.0\n' "$version" >"$root/usr/share/doc/layerguard/copyright"
install -d -m 0755 "$root/DEBIAN"
for s in postinst prerm postrm; do install -m 0755 "packaging/debian/$s" "$root/DEBIAN/$s"; done
install -m 0644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
	-e "s/@DEPENDS@/libc6 (>= $glibc), libgcc-s1/" \
	packaging/debian/control.in >"$root/DEBIAN/control"
# Reproducible: file times from the last commit, not the build's clock.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
out="target/debian/layerguard_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
