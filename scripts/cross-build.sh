#!/usr/bin/env bash
# Cross-builds midge for a Raspberry Pi (or any ARM Linux) from a Debian x86_64 machine, and
# makes a Debian package for each architecture:
#   scripts/cross-build.sh                 # arm64 and armhf, release profile
#   scripts/cross-build.sh arm64           # 64-bit Raspberry Pi OS (Pi 3/4/5)
#   scripts/cross-build.sh armhf           # 32-bit Raspberry Pi OS (Pi 2/3/4, Zero 2)
#   scripts/cross-build.sh --profile P ... # another cargo profile (tests use cross-test)
#   scripts/cross-build.sh --check         # say what is missing, install nothing
# Binaries: ${CARGO_TARGET_DIR:-target}/<triple>/<profile>/{midge,midge_passwd,midge_ctrl}; packages:
# ${CARGO_TARGET_DIR:-target}/deb/midge_VERSION_{arm64,armhf}.deb (paths printed at the end).
#
# Why cargo-zigbuild: zig links against the glibc version named in the target
# ("aarch64-unknown-linux-gnu.2.31"), so the binaries need nothing newer than glibc 2.31 and
# run on Raspberry Pi OS bullseye (2.31) as well as bookworm (2.36). A Debian cross gcc would
# link against bookworm's glibc and need 2.34. zig comes from PyPI's "ziglang" package in
# target/venv, cargo-zigbuild from crates.io; rusqlite's bundled SQLite and ring's C and
# assembly compile with zig cc. The script installs what is missing (no apt packages needed).
set -euo pipefail
source "$(dirname "$0")/setup-lib.sh"
cd "$MIDGE_ROOT"

GLIBC=2.31
profile=release check=0 arches=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?--profile needs a name}; shift 2 ;;
    --check) check=1; shift ;;
    arm64|armhf) arches+=("$1"); shift ;;
    *) sed -n '2,9s/^# \{0,1\}//p' "$0" >&2; exit 2 ;;
  esac
done
[ ${#arches[@]} -gt 0 ] || arches=(arm64 armhf)

triple_of() {
  case "$1" in
    arm64) echo aarch64-unknown-linux-gnu ;;
    armhf) echo armv7-unknown-linux-gnueabihf ;;
  esac
}

if [ $check -eq 1 ]; then
  missing=()
  command -v cargo-zigbuild >/dev/null || missing+=("cargo-zigbuild (cargo install cargo-zigbuild)")
  zig_on_path || missing+=("zig (pip install ziglang into $MIDGE_VENV)")
  installed=$(rustup target list --installed 2>/dev/null || true)
  for a in "${arches[@]}"; do
    t=$(triple_of "$a")
    grep -qx "$t" <<<"$installed" || missing+=("the Rust target $t (rustup target add $t)")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'cross-build.sh: missing %s\n' "${missing[@]}" >&2
    exit 1
  fi
  exit 0
fi

venv_setup
rust_setup
zig_on_path || { echo "cross-build.sh: no zig after installing ziglang" >&2; exit 1; }

targets=()
for a in "${arches[@]}"; do targets+=(--target "$(triple_of "$a").$GLIBC"); done
cargo zigbuild --profile "$profile" "${targets[@]}" --bin midge --bin midge_passwd --bin midge_ctrl

out=${CARGO_TARGET_DIR:-target}
[ "$profile" = dev ] && dir=debug || dir=$profile
for a in "${arches[@]}"; do
  bindir="$out/$(triple_of "$a")/$dir"
  # The point of the exercise: refuse binaries that a bullseye Pi could not run.
  newest=$(readelf -V --wide "$bindir/midge" "$bindir/midge_passwd" "$bindir/midge_ctrl" \
    | sed -n 's/.*Name: GLIBC_\([0-9][0-9.]*\).*/\1/p' | sort -V | tail -1)
  if [ "$(printf '%s\n%s\n' "$newest" "$GLIBC" | sort -V | tail -1)" != "$GLIBC" ]; then
    echo "cross-build.sh: $bindir/midge needs GLIBC_$newest, newer than $GLIBC" >&2
    exit 1
  fi
  scripts/package-deb.sh "$a" "$bindir" "$out/deb"
done
