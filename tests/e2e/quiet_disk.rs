//! A quiet disk (docs/store.md): with `persistence true` an idle broker writes nothing, `$SYS`
//! is never stored, fsyncs come from the sync timer only, and a log line is in the log file by
//! the end of the loop turn that produced it, SIGKILL or not.

use crate::common::*;
use std::time::Duration;

/// One counter of `/proc/PID/io`: `wchar` (bytes passed to write calls on files) or
/// `write_bytes` (bytes the process sent towards the disk).
fn io_counter(pid: u32, name: &str) -> u64 {
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
