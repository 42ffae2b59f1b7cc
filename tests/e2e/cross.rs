//! The ARM builds of scripts/cross-build.sh: for arm64 and armhf, the binaries are ELF files for
//! that machine, need no glibc symbol newer than 2.31 (Raspberry Pi OS bullseye), run under
//! qemu-user (`-h`, and a retained publish and subscribe through the ARM broker) and come
//! packaged as .deb for that architecture.
//!
//! The build uses the `cross-test` profile (release code without LTO, quick to compile) in
//! target/cross, so it neither waits for nor disturbs the test build's own target directory.
//! Without cargo-zigbuild, zig, the Rust targets or qemu-user the tests skip, unless
//! `MIDGE_TEST_REQUIRE_ALL` is set (scripts/test.sh sets it after installing them all).

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The glibc of Raspberry Pi OS bullseye, the oldest the binaries must run on.
const MAX_GLIBC: (u32, u32) = (2, 31);

struct Arch {
    deb: &'static str,
    triple: &'static str,
    /// `Machine:` in `readelf -h`.
    machine: &'static str,
    qemu: &'static str,
    /// The Debian cross libc (libc6-arm64-cross, libc6-armhf-cross) qemu loads the binary with.
    sysroot: &'static str,
}

const ARM64: Arch = Arch {
    deb: "arm64",
    triple: "aarch64-unknown-linux-gnu",
    machine: "AArch64",
    qemu: "qemu-aarch64",
    sysroot: "/usr/aarch64-linux-gnu",
};

const ARMHF: Arch = Arch {
    deb: "armhf",
    triple: "armv7-unknown-linux-gnueabihf",
    machine: "ARM",
    qemu: "qemu-arm",
    sysroot: "/usr/arm-linux-gnueabihf",
};

fn target_dir() -> PathBuf {
    repo_root().join("target/cross")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs scripts/cross-build.sh once for both architectures. False (after saying why) when
/// the toolchain is missing and not required.
fn built() -> bool {
    static BUILT: OnceLock<bool> = OnceLock::new();
    *BUILT.get_or_init(|| {
        let script = repo_root().join("scripts/cross-build.sh");
        let check = Command::new(&script)
            .arg("--check")
            .output()
            .expect("cross-build.sh --check");
        let qemu = [ARM64, ARMHF].iter().all(|a| {
            Path::new(a.sysroot).join("lib").is_dir()
                && Command::new(a.qemu).arg("--version").output().is_ok()
        });
        if !check.status.success() || !qemu {
            let why = format!(
                "{}{}",
                text(&check),
                if qemu {
                    ""
                } else {
                    "missing qemu-user or libc6-arm64-cross/libc6-armhf-cross\n"
                }
            );
            assert!(
                std::env::var_os("MIDGE_TEST_REQUIRE_ALL").is_none(),
                "MIDGE_TEST_REQUIRE_ALL is set but the ARM toolchain is incomplete:\n{why}"
            );
            eprintln!("skipped: the ARM cross build needs tools scripts/test.sh installs:\n{why}");
            return false;
        }
        let t0 = Instant::now();
        let out = Command::new(&script)
            .args(["--profile", "cross-test", "arm64", "armhf"])
            .env("CARGO_TARGET_DIR", target_dir())
            .output()
            .expect("cross-build.sh");
        assert!(
            out.status.success(),
            "cross-build.sh failed:\n{}",
            text(&out)
        );
        eprintln!("cross build of arm64 and armhf: {:?}", t0.elapsed());
        true
    })
}

fn bin(arch: &Arch, name: &str) -> PathBuf {
    target_dir().join(arch.triple).join("cross-test").join(name)
}

/// Every `GLIBC_x.y[.z]` symbol version an ELF file names (`readelf -V`: the versions it
/// needs and the versions of its dynamic symbols), as (major, minor).
fn glibc_versions(path: &Path) -> Vec<(u32, u32)> {
    let out = Command::new("readelf")
        .args(["-V", "--wide"])
        .arg(path)
        .output()
        .expect("readelf");
    assert!(out.status.success(), "readelf -V {path:?}: {}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    let mut found = Vec::new();
    for (i, _) in s.match_indices("GLIBC_") {
        let v: String = s[i + 6..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut parts = v.split('.').map(|p| p.parse::<u32>());
        if let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) {
            found.push((major, minor));
        }
    }
    found.sort_unstable();
    found.dedup();
    found
}

fn machine(path: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-h")
        .arg(path)
        .output()
        .expect("readelf");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Machine:"))
        .map(|m| m.trim().to_string())
        .unwrap_or_default()
}

fn qemu(arch: &Arch, name: &str) -> Command {
    let mut cmd = Command::new(arch.qemu);
    cmd.arg("-L").arg(arch.sysroot).arg(bin(arch, name));
    cmd
}

/// A retained message published to the ARM broker comes back to a subscriber.
fn retained_round_trip(arch: &Arch) {
    let dir = TempDir::new();
    let port = free_port();
    let conf = dir.write(
        "arm.conf",
        &format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    );
    let mut broker = qemu(arch, "midge")
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the ARM midge under qemu");
    let what = format!("{} midge under qemu", arch.deb);
    wait_listening(&mut broker, port, Duration::from_secs(20), &what);
    let p = port.to_string();
    let payload = format!("hello from {}", arch.deb);
    let out = run_with_timeout(
        {
            let mut c = Command::new(MOSQUITTO_PUB);
            c.args(["-p", &p, "-t", "arm/test", "-q", "1", "-r", "-m", &payload]);
            c
        },
        None,
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "mosquitto_pub: {}", text(&out));
    let out = run_with_timeout(
        {
            let mut c = Command::new(MOSQUITTO_SUB);
            c.args([
                "-p", &p, "-t", "arm/#", "-q", "1", "-C", "1", "-W", "20", "-v",
            ]);
            c
        },
        None,
        Duration::from_secs(30),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("arm/test {payload}\n"),
        "{}",
        text(&out)
    );
    // SAFETY: kill(2) on our own child's pid (qemu runs the broker in its own process).
    unsafe { libc::kill(broker.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_child(&mut broker, Duration::from_secs(20)).expect("stops on SIGTERM");
    assert!(status.success(), "{} midge exited with {status}", arch.deb);
}

fn check_arch(arch: &Arch) {
    if skip_on_mosquitto("midge's ARM builds") || !built() {
        return;
    }
    for name in ["midge", "midge_passwd", "midge_ctrl"] {
        let path = bin(arch, name);
        assert_eq!(machine(&path), arch.machine, "{path:?}");
        let versions = glibc_versions(&path);
        assert!(!versions.is_empty(), "{path:?} names no GLIBC_ version");
        let newest = versions[versions.len() - 1];
        assert!(
            newest <= MAX_GLIBC,
            "{path:?} needs GLIBC_{}.{}; bullseye has {}.{}",
            newest.0,
            newest.1,
            MAX_GLIBC.0,
            MAX_GLIBC.1
        );
    }
    let out = run_with_timeout(
        {
            let mut c = qemu(arch, "midge");
            c.arg("-h");
            c
        },
        None,
        Duration::from_secs(20),
    );
    let help = text(&out);
    assert!(
        help.contains(&format!("midge version {}", env!("CARGO_PKG_VERSION"))),
        "{help}"
    );
    retained_round_trip(arch);

    let deb = target_dir().join(format!(
        "deb/midge_{}_{}.deb",
        env!("CARGO_PKG_VERSION"),
        arch.deb
    ));
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(&deb)
        .args(["Architecture", "Depends"])
        .output()
        .expect("dpkg-deb");
    let fields = text(&out);
    assert!(
        fields.starts_with(&format!(
            "Architecture: {}\nDepends: libc6 (>= 2.",
            arch.deb
        )),
        "{deb:?}: {fields}"
    );
}

#[test]
fn arm64_binaries_need_glibc_2_31_at_most_and_run_under_qemu() {
    check_arch(&ARM64);
}

#[test]
fn armhf_binaries_need_glibc_2_31_at_most_and_run_under_qemu() {
    check_arch(&ARMHF);
}

/// The check can fail: a host build on Debian 12 (glibc 2.36) names versions above 2.31.
#[test]
fn glibc_check_sees_a_bookworm_build_as_too_new() {
    if skip_on_mosquitto("midge's ARM builds") {
        return;
    }
    // SAFETY: gnu_get_libc_version returns a pointer to a static NUL-terminated string.
    let host = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    let host = host.to_string_lossy();
    let minor: u32 = host
        .strip_prefix("2.")
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if minor < 34 {
        eprintln!("skipped: this machine's glibc {host} is too old to give the check a failure");
        return;
    }
    let versions = glibc_versions(Path::new(midge_bin()));
    let newest = versions.last().copied().unwrap_or((0, 0));
    assert!(newest > MAX_GLIBC, "host build needs only GLIBC_{newest:?}");
}
