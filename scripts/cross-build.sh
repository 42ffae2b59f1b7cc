#!/usr/bin/env bash
# Cross-builds midge for a Raspberry Pi from a Debian/x86_64 machine.
#   scripts/cross-build.sh aarch64   # Pi 3/4/5 with a 64-bit OS (Raspberry Pi OS 64-bit)
#   scripts/cross-build.sh armv7     # Pi 2/3/4 with a 32-bit OS
# The binaries land in target/<triple>/release/{midge,midge_passwd}; copy them to the Pi
# (scp) and install as in the README. Needs root for apt-get the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-aarch64}" in
  aarch64) triple=aarch64-unknown-linux-gnu; gcc=aarch64-linux-gnu-gcc; pkg=gcc-aarch64-linux-gnu ;;
  armv7)   triple=armv7-unknown-linux-gnueabihf; gcc=arm-linux-gnueabihf-gcc; pkg=gcc-arm-linux-gnueabihf ;;
  *) echo "usage: $0 aarch64|armv7" >&2; exit 1 ;;
esac

command -v "$gcc" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$pkg"; }
rustup target add "$triple"

# The C parts (SQLite, ring) are compiled with the cross compiler, and it links too.
upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
export "CARGO_TARGET_${upper}_LINKER=$gcc"
export "CC_${triple//-/_}=$gcc"
cargo build --release --target "$triple" --bin midge --bin midge_passwd
file "target/$triple/release/midge"
ls -l "target/$triple/release/midge" "target/$triple/release/midge_passwd"
