#!/usr/bin/env bash
# Builds midge's Debian package around dpkg-deb (no debhelper or cargo-deb needed).
#   scripts/package-deb.sh ARCH BINDIR OUTDIR
#     ARCH    Debian architecture of the binaries: amd64, arm64 or armhf
#     BINDIR  directory holding the built midge, midge_passwd and midge_ctrl (e.g. target/release)
#     OUTDIR  where midge_VERSION_ARCH.deb is written; its path is printed on stdout
# Runs as any user: files in the package are owned by root through --root-owner-group.
# The package: /usr/bin/{midge,midge_passwd,midge_ctrl}; /etc/midge/midge.conf (a conffile, the shipped
# midge.conf); the systemd unit; /etc/logrotate.d/midge; man pages midge(8), midge.conf(5),
# midge_passwd(1), midge_ctrl(1), docs/options.md, docs/admin.md, docs/dynsec.md; maintainer scripts that create the midge user, /var/lib/midge (0700),
# /var/log/midge and an empty /etc/midge/passwd (see packaging/debian/).
set -euo pipefail

[ $# -eq 3 ] || { sed -n '2,6s/^# \{0,1\}//p' "$0" >&2; exit 2; }
arch=$1 bindir=$2 outdir=$3
root=$(cd "$(dirname "$0")/.." && pwd)
pk="$root/packaging"

case "$arch" in
  amd64) machine='X86-64' ;;
  arm64) machine='AArch64' ;;
  armhf) machine='ARM' ;;
  *) echo "package-deb.sh: unknown architecture '$arch' (amd64, arm64 or armhf)" >&2; exit 2 ;;
esac

die() { echo "package-deb.sh: $*" >&2; exit 1; }

version=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$root/Cargo.toml")
[ -n "$version" ] || die "no version in Cargo.toml's [package]"
head -1 "$pk/changelog" | grep -q "^midge ($version) " \
  || die "packaging/changelog's first entry is not version $version (Cargo.toml); add one"

for b in midge midge_passwd midge_ctrl; do
  [ -x "$bindir/$b" ] || die "$bindir/$b: no such executable (build it first)"
  readelf -h "$bindir/$b" | grep -q "Machine:.*$machine" \
    || die "$bindir/$b is not a $arch binary: $(readelf -h "$bindir/$b" | grep Machine:)"
done

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"
umask 022

# Binaries. A build with symbols (a debug build, e.g. in tests) is stripped here; the release
# profile already strips.
install -d "$stage/usr/bin"
for b in midge midge_passwd midge_ctrl; do
  install -m 0755 "$bindir/$b" "$stage/usr/bin/$b"
  if readelf -S "$stage/usr/bin/$b" | grep -q '\.symtab'; then
    strip --strip-unneeded --remove-section=.comment "$stage/usr/bin/$b" \
      || die "$bindir/$b has symbols and strip cannot remove them"
  fi
done

# Configuration (conffiles) and the unit, its ExecStart pointed at /usr/bin.
install -D -m 0644 "$root/midge.conf" "$stage/etc/midge/midge.conf"
install -D -m 0644 "$pk/midge.logrotate" "$stage/etc/logrotate.d/midge"
install -d "$stage/lib/systemd/system"
sed -e 's#^ExecStart=[^ ]*/midge\( \|$\)#ExecStart=/usr/bin/midge\1#' \
    -e 's|^Documentation=.*|Documentation=man:midge(8) man:midge.conf(5)|' \
    "$root/scripts/midge.service" >"$stage/lib/systemd/system/midge.service"
grep -q '^ExecStart=/usr/bin/midge ' "$stage/lib/systemd/system/midge.service" \
  || die "scripts/midge.service: no ExecStart= line running midge to rewrite"
chmod 0644 "$stage/lib/systemd/system/midge.service"

# Man pages and the documents Debian asks for.
for m in midge.8 midge.conf.5 midge_passwd.1 midge_ctrl.1; do
  sec=${m##*.}
  install -D -m 0644 "$root/docs/man/$m" "$stage/usr/share/man/man$sec/$m"
  gzip -9n "$stage/usr/share/man/man$sec/$m"
done
doc="$stage/usr/share/doc/midge"
install -D -m 0644 "$pk/copyright" "$doc/copyright"
install -m 0644 "$pk/changelog" "$doc/changelog"
# What midge does with each of Mosquitto's options; midge.conf(5) points here.
install -m 0644 "$root/docs/options.md" "$doc/options.md"
# The administration API midge_ctrl(1) uses.
install -m 0644 "$root/docs/admin.md" "$doc/admin.md"
# The built-in dynamic security (Mosquitto's plugin lines turn it on).
install -m 0644 "$root/docs/dynsec.md" "$doc/dynsec.md"
gzip -9n "$doc/changelog"

# Control files. Depends: the newest glibc symbol version the binaries use, and libgcc_s.
install -d -m 0755 "$stage/DEBIAN"
install -m 0644 "$pk/debian/conffiles" "$stage/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 0755 "$pk/debian/$s" "$stage/DEBIAN/$s"; done
glibc=$(readelf -V --wide "$stage/usr/bin/midge" "$stage/usr/bin/midge_passwd" "$stage/usr/bin/midge_ctrl" \
  | sed -n 's/.*Name: GLIBC_\([0-9][0-9.]*\).*/\1/p' | sort -V | tail -1)
[ -n "$glibc" ] || die "no GLIBC_ symbol versions found in the binaries"
depends="libc6 (>= $glibc)"
if readelf -d "$stage/usr/bin/midge" | grep -q 'NEEDED.*libgcc_s\.so\.1'; then
  depends="$depends, libgcc-s1"
fi
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    -e "s/@DEPENDS@/$depends/" "$pk/debian/control.in" >"$stage/DEBIAN/control"
(cd "$stage" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z \
  | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"

mkdir -p "$outdir"
deb="$(cd "$outdir" && pwd)/midge_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
