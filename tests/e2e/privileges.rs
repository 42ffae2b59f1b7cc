//! Dropping root privileges as Mosquitto 2.0 does (`user`): the switch comes right after the
//! configuration is read, so the pid file, log files and store are created by that user with
//! Mosquitto's modes; `user root` keeps root; a named user that does not exist stops start-up.
//! Without a config file midge drops to `mosquitto` (or `nobody`, see the unit tests of
//! `privileges::choose` for that fallback) and listens on 127.0.0.1 and ::1.
//!
//! These tests need root; they create a throwaway system user and remove it afterwards.

use crate::common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// A system user that exists for the life of the value.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn create(tag: &str) -> TestUser {
        let name = format!("mt-{tag}-{}", std::process::id());
        let _guard = SYSTEM_USERS.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new("useradd")
            .args(["--system", "--no-create-home", "--user-group"])
            .args(["--shell", "/usr/sbin/nologin", &name])
            .output()
            .expect("run useradd");
        assert!(
            out.status.success(),
            "useradd {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = |flag: &str| -> u32 {
            let out = Command::new("id")
                .args([flag, &name])
                .output()
                .expect("run id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("numeric id")
        };
        let (uid, gid) = (id("-u"), id("-g"));
        TestUser { name, uid, gid }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _guard = SYSTEM_USERS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("userdel").arg(&self.name).output();
        // --user-group made a group of the same name; userdel removes it when it is empty.
        let _ = Command::new("groupdel").arg(&self.name).output();
    }
}

/// True (after saying why) when these tests cannot run here.
fn skip() -> bool {
    if skip_on_mosquitto("midge's own start-up order and messages") {
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: dropping privileges needs the tests to run as root");
        return true;
    }
    false
}

/// The real, effective, saved and file-system ids on a `Uid:` or `Gid:` line of
/// /proc/PID/status.
fn ids(pid: u32, key: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .expect("id line");
    line.split_whitespace()
        .skip(1)
        .map(|n| n.parse().expect("numeric id"))
        .collect()
}

/// Owner uid, group gid and permission bits of `path`.
fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.uid(), meta.gid(), meta.permissions().mode() & 0o777)
}

#[test]
fn drops_to_the_configured_user_before_creating_its_files() {
    if skip() {
        return;
    }
    let user = TestUser::create("files");
    // A directory only that user may write: every file below must be created after the drop.
    let dir = TempDir::new();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    std::os::unix::fs::chown(&files, Some(user.uid), Some(user.gid)).unwrap();
    std::fs::set_permissions(&files, std::fs::Permissions::from_mode(0o700)).unwrap();
    let log = files.join("midge.log");
    let pid_file = files.join("run/midge.pid");
    let store_dir = files.join("data");
    let mut b = Broker::start(&format!(
        "user {}\npersistence true\npersistence_location {}/\nlog_dest file {}\n\
         log_dest stderr\npid_file {}\n",
        user.name,
        store_dir.display(),
        log.display(),
        pid_file.display()
    ));
    let pid = b.pid();
    assert_eq!(ids(pid, "Uid:"), vec![user.uid; 4], "all four user ids");
    assert_eq!(ids(pid, "Gid:"), vec![user.gid; 4], "all four group ids");
    b.assert_serves();
    // A retained message makes the store write.
    let out = run_with_timeout(
        {
            let mut c = Command::new(MOSQUITTO_PUB);
            c.args(["-p", &b.port().to_string(), "-t", "r/t", "-m", "kept", "-r"]);
            c
        },
        None,
        WAIT,
    );
    assert!(out.status.success());

    let store = std::fs::read_dir(&store_dir)
        .expect("store directory created")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "db"))
        .expect("a .db file in the store directory");
    assert_eq!(owner_and_mode(&store), (user.uid, user.gid, 0o600), "store");
    assert_eq!(
        owner_and_mode(&log),
        (user.uid, user.gid, 0o644),
        "log file"
    );
    assert_eq!(
        owner_and_mode(&pid_file),
        (user.uid, user.gid, 0o644),
        "pid file"
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("starting"),
        "start-up lines reach the file: {text}"
    );

    // SIGHUP reopens the log file as the same user; a rotated-away file is created anew.
    std::fs::rename(&log, files.join("midge.log.1")).unwrap();
    // SAFETY: kill with the pid of our own child.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let t0 = std::time::Instant::now();
    while !log.exists() && t0.elapsed() < WAIT {
        std::thread::sleep(secs(0.02));
    }
    assert_eq!(
        owner_and_mode(&log),
        (user.uid, user.gid, 0o644),
        "reopened log"
    );
    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some_and(|s| s.success()));
    assert!(!pid_file.exists(), "the pid file is removed at exit");
}

#[test]
fn an_older_world_readable_store_is_made_owner_only() {
    if skip() {
        return;
    }
    let dir = TempDir::new();
    let store = dir.path().join("midge.db");
    std::fs::write(&store, b"").unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _b = Broker::start(&format!(
        "persistence true\npersistence_location {}/\n",
        dir.path().display()
    ));
    assert_eq!(owner_and_mode(&store).2, 0o600);
}

#[test]
fn a_named_user_that_does_not_exist_stops_start_up() {
    if skip() {
        return;
    }
    let dir = TempDir::new();
    let pid_file = dir.path().join("midge.pid");
    let conf = dir.write(
        "ghost.conf",
        &format!(
            "listener {} 127.0.0.1\nuser midge-no-such-user\npid_file {}\n",
            free_port(),
            pid_file.display()
        ),
    );
    let out = run_midge(&["-c", conf.to_str().unwrap()], WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "Error: Unable to drop privileges to 'midge-no-such-user' because this user \
             does not exist."
        ),
        "{stderr}"
    );
    assert!(!pid_file.exists(), "nothing is created before the drop");
}

#[test]
fn user_root_keeps_root_with_mosquittos_warning() {
    if skip() {
        return;
    }
    // The harness writes `user root`.
    let b = Broker::start("");
    assert_eq!(ids(b.pid(), "Uid:"), vec![0; 4]);
    assert!(b.wait_for_log(
        "Warning: midge should not be run as root/administrator.",
        WAIT
    ));
}

#[test]
fn without_a_config_midge_drops_to_mosquitto_and_listens_on_both_loopbacks() {
    if skip() {
        return;
    }
    let port = free_port();
    let mut cmd = Command::new(midge_bin());
    cmd.args(["-p", &port.to_string()]);
    let b = Broker::start_command(cmd, TempDir::new());
    // As Mosquitto: `mosquitto`, or `nobody` with a warning where that user does not exist.
    let expected = match Command::new("id").args(["-u", "mosquitto"]).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => {
            assert!(b.wait_for_log(
                "Warning: Unable to drop privileges to 'mosquitto' because this user does not \
                 exist. Trying 'nobody' instead.",
                WAIT
            ));
            "65534".to_string()
        }
    };
    assert_eq!(ids(b.pid(), "Uid:")[0].to_string(), expected);
    assert!(!b
        .logs()
        .iter()
        .any(|l| l.contains("should not be run as root")));

    assert!(b.wait_for_log(&format!("Opening ipv4 listen socket on port {port}."), WAIT));
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine: checked 127.0.0.1 only");
        return;
    }
    assert!(b.wait_for_log(&format!("Opening ipv6 listen socket on port {port}."), WAIT));
    // A real client on ::1: subscribe, publish, receive.
    let mut sub = Command::new(MOSQUITTO_SUB);
    sub.args([
        "-h",
        "::1",
        "-p",
        &port.to_string(),
        "-t",
        "v6/t",
        "-C",
        "1",
        "-W",
        "5",
    ]);
    let sub = std::thread::spawn(move || run_with_timeout(sub, None, secs(8.0)));
    let t0 = std::time::Instant::now();
    let out = loop {
        std::thread::sleep(secs(0.2));
        let mut publish = Command::new(MOSQUITTO_PUB);
        publish.args([
            "-h",
            "::1",
            "-p",
            &port.to_string(),
            "-t",
            "v6/t",
            "-m",
            "over ::1",
        ]);
        assert!(run_with_timeout(publish, None, WAIT).status.success());
        if sub.is_finished() || t0.elapsed() > secs(5.0) {
            break sub.join().unwrap();
        }
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over ::1");
}

#[test]
fn a_port_below_1024_fails_after_the_drop_with_a_hint() {
    if skip() {
        return;
    }
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024);
    if start <= 1023 {
        eprintln!("skipped: ports from {start} up need no privilege on this machine");
        return;
    }
    let user = TestUser::create("port");
    let dir = TempDir::new();
    let conf = dir.write(
        "low.conf",
        &format!("listener 1023 127.0.0.1\nuser {}\n", user.name),
    );
    let out = run_midge(&["-c", conf.to_str().unwrap()], WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Unable to listen on 127.0.0.1:1023: Permission denied")
            && stderr.contains("CAP_NET_BIND_SERVICE"),
        "{stderr}"
    );
}
