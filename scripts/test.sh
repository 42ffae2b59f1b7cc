#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine that has only rustup (and on CI):
# installs whatever is missing, then runs the conformance check, rustfmt, clippy and cargo test.
#   scripts/test.sh                 # everything
#   scripts/test.sh --test e2e package::  # extra arguments go to cargo test
# Root or sudo is needed only when something must be installed. It never stops a process it
# did not start (Debian's mosquitto service is installed without being started).
set -euo pipefail
source "$(dirname "$0")/setup-lib.sh"
cd "$MIDGE_ROOT"

apt_install_missing \
  build-essential python3-venv openssl procps strace \
  mosquitto mosquitto-clients curl prometheus \
  dpkg-dev lintian man-db groff-base logrotate adduser \
  qemu-user libc6-arm64-cross libc6-armhf-cross
venv_setup
rust_setup
zig_on_path

# Tests find Python with paho-mqtt 2.x here, and must not skip the package and ARM tests.
export MIDGE_TEST_PYTHON="$MIDGE_VENV/bin/python"
export MIDGE_TEST_REQUIRE_ALL=1

# Every normative statement of MQTT 3.1.1 and 5.0 has a row, and every applicable one a test.
python3 scripts/conformance-check.py
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The ARM builds tests/e2e/cross.rs checks, made now: built during the test run they would take
# both cores for minutes while timing-bound tests of the same binary run beside them.
CARGO_TARGET_DIR=target/cross scripts/cross-build.sh --profile cross-test arm64 armhf
# The broker and the load generator in bench/ (fuzz/ is a workspace of its own).
cargo test --workspace "$@"
