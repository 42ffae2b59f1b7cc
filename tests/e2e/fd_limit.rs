//! Running out of file descriptors: with its descriptor limit lowered by
//! `prlimit` while it runs, midge cannot accept more connections (EMFILE). It must log that,
//! pause accepting instead of spinning on the listening socket, and serve new clients again
//! once descriptors are free.

use crate::common::*;
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::Duration;

/// Open descriptors of process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// CPU time (user + system) of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let get = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

#[test]
fn emfile_is_logged_survived_without_spinning_and_recovered_from() {
    if skip_on_mosquitto("midge's own log wording") {
        return;
    }
    let mut b = Broker::start("");
    let pid = b.pid();
    let limit = open_fds(pid) + 3;
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("skipped: prlimit could not lower the broker's descriptor limit");
        return;
    }

    // Far more connections than descriptors left: the kernel completes them, midge cannot
    // accept most of them.
    let held: Vec<TcpStream> = (0..40)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", b.port())).ok())
        .collect();
    assert!(
        b.wait_for_log("Unable to accept new connection", WAIT),
        "no EMFILE log line; logs:\n{}",
        b.logs().join("\n")
    );

    // While out of descriptors, the loop must sleep between attempts, not spin.
    let before = cpu_ticks(pid);
    thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    // 2 s is 200 ticks; a busy loop would use nearly all of them.
    assert!(
        used < 40,
        "midge used {used} ticks of CPU in 2 s while out of descriptors"
    );
    let emfile_lines = b
        .logs()
        .iter()
        .filter(|l| l.contains("Unable to accept new connection"))
        .count();
    assert!(
        emfile_lines < 20,
        "{emfile_lines} EMFILE lines in ~2 s: not paced"
    );

    // Free the descriptors: new clients are served again.
    drop(held);
    let recovered = (0..50).any(|_| {
        thread::sleep(Duration::from_millis(100));
        open_fds(pid) + 3 <= limit
    });
    assert!(recovered, "midge still holds {} descriptors", open_fds(pid));
    b.assert_serves();
    assert!(b.alive());
}
