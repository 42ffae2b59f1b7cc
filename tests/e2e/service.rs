//! Running as a service: daemonizing, pid files, signals (dropping privileges is in
//! privileges.rs, systemd's notifications in systemd.rs).

use crate::common::*;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn daemon_writes_pid_file_and_sigterm_removes_it() {
    if skip_on_mosquitto("midge's -d and pid file handling") {
        return;
    }
    let dir = TempDir::new();
    let pid_path = dir.path().join("midge.pid");
    let log_path = dir.path().join("midge.log");
    let conf = dir.write(
        "d.conf",
        &format!(
            "listener 0 127.0.0.1\nallow_anonymous true\nuser root\npid_file {}\nlog_dest file {}\n",
            pid_path.display(),
            log_path.display()
        ),
    );
    let out = run_midge(&["-c", conf.to_str().unwrap_or_default(), "-d"], WAIT);
    assert!(
        out.status.success(),
        "the foreground process exits 0 after forking"
    );
    let t0 = Instant::now();
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            break pid;
        }
        assert!(t0.elapsed() < WAIT, "pid file written");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    // The pid file is written before the listeners open (as Mosquitto does): wait for them.
    let opening = "Opening ipv4 listen socket on port";
    let log = wait_file_holds(&log_path, opening);
    assert!(log.contains(opening), "listener opened: {log}");
    let killed = Command::new("kill").arg(pid.to_string()).status();
    assert!(killed.is_ok_and(|s| s.success()));
    let t0 = Instant::now();
    while pid_path.exists() {
        assert!(t0.elapsed() < WAIT, "pid file removed at exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The last line is written right after the pid file is removed: wait for it.
    let log = wait_file_holds(&log_path, "terminating");
    assert!(log.contains("terminating"), "exit logged: {log}");
}

#[test]
fn sighup_reopens_a_moved_log_file() {
    if skip_on_mosquitto("midge's own log file handling") {
        return;
    }
    let dir = TempDir::new();
    let log_path = dir.path().join("a.log");
    let mut b = Broker::start(&format!(
        "log_dest file {}\nlog_dest stderr",
        log_path.display()
    ));
    std::fs::rename(&log_path, dir.path().join("a.log.1")).expect("rotate");
    let hup = Command::new("kill")
        .args(["-HUP", &b.pid().to_string()])
        .status();
    assert!(hup.is_ok_and(|s| s.success()));
    assert!(b.wait_for_log("Reloading config", WAIT));
    b.assert_serves();
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("New connection from") {
            break;
        }
        assert!(
            t0.elapsed() < WAIT,
            "new log file written after SIGHUP: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn pid_file_directory_is_created_like_debian_needs() {
    if skip_on_mosquitto("midge creates the pid file's directory") {
        return;
    }
    // Debian's mosquitto.conf names /run/mosquitto/mosquitto.pid, whose directory only exists
    // while Mosquitto's own systemd service runs.
    let dir = TempDir::new();
    let pid_path = dir
        .path()
        .join("run")
        .join("mosquitto")
        .join("mosquitto.pid");
    let mut b = Broker::start(&format!("pid_file {}", pid_path.display()));
    b.assert_serves();
    let written = std::fs::read_to_string(&pid_path).unwrap_or_default();
    assert_eq!(written.trim(), b.pid().to_string());
}
