# shellcheck shell=bash
# Helpers for scripts that install what they need on a Debian machine (sourced, not run).
# Everything here installs only what is missing and uses sudo only when not already root.

# The repository root, whichever script sourced this file.
MIDGE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# A virtualenv for the Python packages Debian does not ship in the versions we need
# (paho-mqtt 2.x; Debian 12 has 1.6) or at all (ziglang), since pip refuses the system Python.
MIDGE_VENV="$MIDGE_ROOT/target/venv"

if [ "$(id -u)" -eq 0 ]; then SUDO=(); else SUDO=(sudo); fi

# Prints each Debian package of "$@" that is not installed.
missing_debs() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
  done
}

# Installs the Debian packages of "$@" that are missing. Package scripts may not start a
# service meanwhile (Debian's mosquitto would otherwise start on port 1883): a policy-rc.d
# that exits 101 says "not now" to invoke-rc.d and deb-systemd-invoke; it is removed
# afterwards unless it was there before.
apt_install_missing() {
  local need
  mapfile -t need < <(missing_debs "$@")
  [ ${#need[@]} -gt 0 ] || return 0
  echo "setup: installing ${need[*]}" >&2
  local policy=/usr/sbin/policy-rc.d ours=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# Written by midge scripts/setup-lib.sh during apt-get install.\nexit 101\n' \
      | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    ours=1
    # Even if the install is interrupted, no policy of ours stays behind.
    trap '"${SUDO[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  local rc=0
  "${SUDO[@]}" apt-get update -qq || rc=$?
  if [ $rc -eq 0 ]; then
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || rc=$?
  fi
  if [ $ours -eq 1 ]; then "${SUDO[@]}" rm -f "$policy"; trap - EXIT; fi
  return $rc
}

# Creates the virtualenv and installs paho-mqtt 2.x and ziglang into it when missing.
venv_setup() {
  [ -x "$MIDGE_VENV/bin/python" ] || python3 -m venv "$MIDGE_VENV"
  "$MIDGE_VENV/bin/python" - <<'PY' 2>/dev/null && return 0
import importlib.metadata as m, sys
ok = m.version("paho-mqtt").split(".")[0] == "2"
m.version("ziglang")
sys.exit(0 if ok else 1)
PY
  echo "setup: installing paho-mqtt 2.x and ziglang into $MIDGE_VENV" >&2
  "$MIDGE_VENV/bin/pip" install --quiet --disable-pip-version-check 'paho-mqtt>=2,<3' ziglang
}

# puppeteer-core, pinned, for the dashboard's browser test (tests/e2e/dashboard.rs drives
# Debian's chromium with it; puppeteer-core downloads no browser of its own).
MIDGE_NODE="$MIDGE_ROOT/target/node"
PUPPETEER_CORE_VERSION=24.43.1

# Installs Node.js and npm when missing (Debian's), then puppeteer-core into $MIDGE_NODE.
node_setup() {
  { command -v node && command -v npm; } >/dev/null || apt_install_missing nodejs npm
  local have
  have=$(node -p "require('$MIDGE_NODE/node_modules/puppeteer-core/package.json').version" \
    2>/dev/null || true)
  [ "$have" = "$PUPPETEER_CORE_VERSION" ] && return 0
  echo "setup: installing puppeteer-core $PUPPETEER_CORE_VERSION into $MIDGE_NODE" >&2
  mkdir -p "$MIDGE_NODE"
  npm install --prefix "$MIDGE_NODE" --no-save --no-audit --no-fund --loglevel=error \
    "puppeteer-core@$PUPPETEER_CORE_VERSION"
}

# The Rust pieces: rustfmt and clippy, the ARM targets, and cargo-zigbuild.
rust_setup() {
  local have
  have=$(rustup component list --installed 2>/dev/null || true)
  for c in rustfmt clippy; do
    grep -q "^$c" <<<"$have" || rustup component add "$c"
  done
  have=$(rustup target list --installed)
  for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
    grep -qx "$t" <<<"$have" || rustup target add "$t"
  done
  command -v cargo-zigbuild >/dev/null || cargo install --locked cargo-zigbuild
}

# Puts the venv's zig (from PyPI's ziglang) on PATH for cargo-zigbuild, unless a zig is there.
zig_on_path() {
  command -v zig >/dev/null && return 0
  [ -x "$MIDGE_VENV/bin/python" ] && "$MIDGE_VENV/bin/python" -c 'import ziglang' 2>/dev/null \
    || return 1
  mkdir -p "$MIDGE_ROOT/target/zig-bin"
  printf '#!/bin/sh\nexec "%s" -m ziglang "$@"\n' "$MIDGE_VENV/bin/python" \
    >"$MIDGE_ROOT/target/zig-bin/zig"
  chmod 755 "$MIDGE_ROOT/target/zig-bin/zig"
  export PATH="$MIDGE_ROOT/target/zig-bin:$PATH"
}
