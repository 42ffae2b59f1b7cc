//! A quiet disk (docs/store.md): with `persistence true` an idle broker writes nothing, `$SYS`
//! is never stored, fsyncs come from the sync timer only, and a log line is in the log file by
//! the end of the loop turn that produced it, SIGKILL or not.

use crate::common::*;
use std::time::Duration;

/// One counter of `/proc/PID/io`: `wchar` (bytes passed to write calls on files) or
/// `write_bytes` (bytes the process sent towards the disk).
pub(crate) fn io_counter(pid: u32, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(": ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/io"))
}

/// Persistent clients stay connected and ping, `$SYS` is updated every second: none of it
/// reaches the disk, and the store holds no `$SYS` topic (Mosquitto never persists `$SYS`
/// either; its values are recomputed after a start).
#[test]
fn an_idle_broker_with_sys_and_persistent_clients_writes_nothing() {
    if skip_on_mosquitto("midge's SQLite store") {
        return;
    }
    let store = TempDir::new();
    let b = Broker::start(&format!(
        "persistence true\npersistence_location {}\nsys_interval 1",
        store.path().display()
    ));
    let subs: Vec<Sub> = (0..5)
        .map(|i| {
            let id = format!("quiet{i}");
            let topic = format!("quiet/{i}");
            Sub::spawn(
                b.port(),
                60,
                &["-c", "-i", &id, "-q", "1", "-t", &topic, "-k", "5"],
            )
        })
        .collect();
    let mut watcher = Raw::mqtt_connect(b.port(), "sys-watcher");
    watcher.subscribe(1, &[("$SYS/broker/uptime", 0)], &[0]);
    // Settled: every client connected and subscribed, and `$SYS` published at least once.
    let first = watcher.expect_packet(Duration::from_secs(3));
    assert_eq!(first.topic(), "$SYS/broker/uptime");
    std::thread::sleep(Duration::from_millis(500));
    let (wchar, written) = (
        io_counter(b.pid(), "wchar"),
        io_counter(b.pid(), "write_bytes"),
    );
    // `$SYS` updates and a keepalive round of every client (mosquitto_sub's shortest is 5 s).
    std::thread::sleep(Duration::from_millis(5500));
    let updates = watcher.collect_publishes(4, Duration::from_secs(2));
    assert!(updates.len() >= 4, "$SYS was not updated: {updates:?}");
    assert_eq!(
        io_counter(b.pid(), "wchar") - wchar,
        0,
        "bytes written while idle"
    );
    assert_eq!(io_counter(b.pid(), "write_bytes") - written, 0);
    drop(subs);
    b.sigterm();
    let mut b = b;
    assert!(b.wait_exit(WAIT).is_some());
    let db = rusqlite::Connection::open(store.path().join("midge.db")).unwrap();
    let sys: i64 = db
        .query_row(
            "SELECT count(*) FROM retained WHERE topic LIKE '$SYS%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sys, 0, "$SYS topics in the store");
    let sessions: i64 = db
        .query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sessions, 5, "the persistent sessions are stored");
}

/// A store written by an older midge holds `$SYS` values: they are not served again (the
/// uptime of another run would be a lie) and are deleted from the store.
#[test]
fn sys_topics_left_in_an_old_store_are_dropped() {
    if skip_on_mosquitto("midge's SQLite store") {
        return;
    }
    let store = TempDir::new();
    let conf = format!(
        "persistence true\npersistence_location {}\nsys_interval 0",
        store.path().display()
    );
    let b = Broker::start(&conf);
    let mut p = Raw::mqtt_connect(b.port(), "keeper");
    p.send(&publish("kept/topic", b"kept", 1, true, false, 1));
    p.expect_bytes(&puback(1), WAIT);
    b.sigterm();
    let mut b = b;
    assert!(b.wait_exit(WAIT).is_some());
    let path = store.path().join("midge.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO retained (topic, payload, qos, retain, properties) \
             VALUES ('$SYS/broker/uptime', CAST('999 seconds' AS BLOB), 0, 1, x'')",
            [],
        )
        .unwrap();
    let b = Broker::start(&conf);
    let mut s = Raw::mqtt_connect(b.port(), "reader");
    s.subscribe(1, &[("$SYS/#", 0), ("kept/#", 0)], &[0, 0]);
    let got = s.expect_packet(WAIT);
    assert_eq!(
        (got.topic(), got.payload()),
        ("kept/topic".into(), &b"kept"[..])
    );
    s.expect_silence(Duration::from_millis(300));
    b.sigterm();
    let mut b = b;
    assert!(b.wait_exit(WAIT).is_some());
    let topics: Vec<String> = {
        let db = rusqlite::Connection::open(&path).unwrap();
        let mut q = db.prepare("SELECT topic FROM retained").unwrap();
        let rows = q.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    };
    assert_eq!(topics, ["kept/topic"]);
}

/// Seconds since the Unix epoch, as `strace -ttt` prints them.
fn epoch_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The pid of the one child of `parent` (the broker strace started).
fn only_child(parent: u32) -> Option<u32> {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            return pid.parse().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Under a steady trickle of QoS 1 messages for persistent sessions (a commit every 100 ms,
/// `persistence_sync_interval 1`), the broker fsyncs once per interval: one `fdatasync` of
/// the body log and of the WAL per tick of the store's timer, never one per commit, and never the fsync SQLite
/// gives a restarted WAL at the first commit after a checkpoint. Counted with strace.
#[test]
fn fsyncs_come_from_the_sync_timer_only() {
    if skip_on_mosquitto("midge's SQLite store") {
        return;
    }
    if !std::path::Path::new("/usr/bin/strace").exists() {
        assert!(
            std::env::var_os("MIDGE_TEST_REQUIRE_ALL").is_none(),
            "MIDGE_TEST_REQUIRE_ALL is set but strace is missing"
        );
        eprintln!("skipped: strace is not installed");
        return;
    }
    let dir = TempDir::new();
    let trace = dir.path().join("fsyncs.txt");
    dir.write(
        "broker.conf",
        &format!(
            "listener 0 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n\
             persistence_location {}\npersistence_sync_interval 1\n",
            dir.path().display()
        ),
    );
    let mut cmd = std::process::Command::new("/usr/bin/strace");
    cmd.args(["-f", "-ttt", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .args([midge_bin(), "-c"])
        .arg(dir.path().join("broker.conf"));
    // The broker keeps `dir` (and the trace in it) until it is dropped.
    let mut b = Broker::start_command(cmd, dir);
    let Some(midge) = only_child(b.pid()) else {
        eprintln!("skipped: strace could not trace midge (ptrace refused?)");
        return;
    };
    let mut sub = Raw::mqtt_connect_with(
        b.port(),
        &Connect::v311("trickle-sub").clean(false),
        &CONNACK_OK,
    );
    sub.subscribe(1, &[("trickle/#", 1)], &[1]);
    let mut publisher = Raw::mqtt_connect(b.port(), "trickle-pub");
    let start = epoch_secs();
    for i in 1..=35u16 {
        publisher.send(&publish("trickle/x", b"m", 1, false, false, i));
        publisher.expect_bytes(&puback(i), WAIT);
        let got = sub.expect_packet(WAIT);
        sub.send(&puback(got.pid()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let end = epoch_secs();
    // The last commits' sync, then an idle second without any.
    std::thread::sleep(Duration::from_millis(2200));
    unsafe {
        libc::kill(midge as libc::pid_t, libc::SIGTERM);
    }
    assert!(b.wait_exit(WAIT).is_some(), "midge did not stop");
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls: Vec<f64> = text
        .lines()
        .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .filter(|&t| t > start && t < end + 2.0)
        .collect();
    // A sync is one group: the body log's segments (and its directory when a segment was
    // created), then the WAL, within a few milliseconds.
    let mut groups: Vec<f64> = Vec::new();
    for t in calls {
        if groups.last().is_none_or(|&first| t - first > 0.2) {
            groups.push(t);
        }
    }
    // About 3.7 s of commits and the sync after the last: 3 to 5 ticks of 1 s.
    assert!(
        (3..=5).contains(&groups.len()),
        "{} sync groups in {:.1} s of load:\n{text}",
        groups.len(),
        end - start
    );
    for pair in groups.windows(2) {
        assert!(
            pair[1] - pair[0] > 0.8,
            "two fsyncs within one interval:\n{text}"
        );
    }
}

/// A log line is in the log file and on stdout by the end of the loop turn that produced it:
/// a client that has its CONNACK knows the broker's "New client connected" line is written,
/// so a SIGKILL right after loses nothing (the moments before a crash stay visible).
#[test]
fn a_log_line_survives_a_sigkill_right_after_its_event() {
    if skip_on_mosquitto("SIGKILL timing of midge's own log") {
        return;
    }
    let logs = TempDir::new();
    let file = logs.path().join("midge.log");
    let b = Broker::start(&format!(
        "log_dest file {}\nlog_dest stdout",
        file.display()
    ));
    for i in 0..20 {
        let id = format!("killed-after-{i}");
        let _c = Raw::mqtt_connect(b.port(), &id);
    }
    let last = Raw::mqtt_connect(b.port(), "the-last-client");
    let want = format!(
        "New client connected from 127.0.0.1:{} as the-last-client",
        last.local_port()
    );
    let pid = b.pid();
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(&want),
        "missing {want:?} in the file:\n{text}"
    );
    // Whatever reached the stdout pipe before the kill is still read after it.
    assert!(
        b.wait_for_log(&want, WAIT),
        "missing {want:?} on stdout:\n{}",
        b.logs().join("\n")
    );
}

/// A QoS 1 message that every subscriber (connected, persistent) acknowledges at once is never
/// written: the store write of each copy is held, the acknowledgements cancel it, and the
/// publisher's PUBACK leaves at that completion (docs/store.md). Three persistent
/// `mosquitto_sub -c -q 1` take 300 messages from one `mosquitto_pub -l` burst (so most wait
/// behind the 20-message in-flight window); a few pages are allowed for a subscriber
/// descheduled on a busy machine, where writing every copy would take a megabyte.
#[test]
fn qos1_messages_acknowledged_by_online_persistent_subscribers_are_not_written() {
    if skip_on_mosquitto("midge's SQLite store") {
        return;
    }
    let store = TempDir::new();
    let b = Broker::start(&format!(
        "persistence true\npersistence_location {}",
        store.path().display()
    ));
    let subs: Vec<Sub> = (0..3)
        .map(|i| {
            let id = format!("held{i}");
            Sub::spawn(b.port(), 60, &["-c", "-i", &id, "-q", "1", "-t", "held/#"])
        })
        .collect();
    // Settled once every subscriber has a first message.
    let mut warm = 0;
    while subs
        .iter()
        .any(|s| s.wait_lines(1, Duration::from_millis(300)).is_empty())
    {
        warm += 1;
        assert!(warm < 30, "the subscribers never subscribed");
        mosquitto_pub(b.port(), &["-q", "1", "-t", "held/warm", "-m", "w"]);
    }
    let before: Vec<usize> = subs
        .iter()
        .map(|s| s.wait_lines(0, secs(0.0)).len())
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let written = io_counter(b.pid(), "write_bytes");
    let lines: String = (0..300).map(|i| format!("reading {i}\n")).collect();
    mosquitto_pub_stdin(
        b.port(),
        &["-q", "1", "-t", "held/x", "-l"],
        Some(lines.into_bytes()),
    );
    for (s, n) in subs.iter().zip(&before) {
        let got = s.wait_lines(n + 300, WAIT);
        assert!(got.len() >= n + 300, "{} of 300 delivered", got.len() - n);
    }
    // Past a sync interval, so that anything committed is counted.
    std::thread::sleep(Duration::from_millis(1500));
    let delta = io_counter(b.pid(), "write_bytes") - written;
    assert!(
        delta <= 64 * 1024,
        "{delta} bytes written for 300 messages to 3 online subscribers"
    );
}
