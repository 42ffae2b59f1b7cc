//! A message kept for several sessions is stored once (docs/store.md): its body is one row that
//! every session's delivery refers to, and it goes with the last of them; a store written by
//! the version 2 schema, which copied the message into every session's row, is migrated.

use crate::common::*;
use std::process::Command;
use std::time::Duration;

fn conf(dir: &TempDir) -> String {
    format!(
        "persistence true\npersistence_location {}",
        dir.path().display()
    )
}

/// Parks `n` persistent paho-mqtt sessions `fan-0`.. subscribed to `fan/#` at QoS 1.
fn park_with_paho(port: u16, n: usize) {
    let script = r#"
import sys, paho.mqtt.client as mqtt
port, n = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fan-{i}", clean_session=False)
    acked = []
    c.on_subscribe = lambda *a: acked.append(1)
    c.connect("127.0.0.1", port)
    c.subscribe("fan/#", qos=1)
    while not acked:
        c.loop(0.1)
    c.disconnect()
print("parked", n)
"#;
    let mut cmd = Command::new(python());
    cmd.args(["-c", script, &port.to_string(), &n.to_string()]);
    let out = run_with_timeout(cmd, None, Duration::from_secs(60));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("parked {n}")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (bodies, deliveries) in the store of `dir`, read with SQLite itself: a delivery names its
/// body by its place in the body log.
fn counts(dir: &TempDir) -> (i64, i64) {
    let db = rusqlite::Connection::open(dir.path().join("midge.db")).unwrap();
    let one = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    (
        one("SELECT count(DISTINCT body) FROM deliveries"),
        one("SELECT count(*) FROM deliveries"),
    )
}

/// Every byte of the body log's segments, one after the other.
fn body_log(dir: &TempDir) -> Vec<u8> {
    let mut names: Vec<_> = std::fs::read_dir(dir.path().join("midge.db-bodies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|p| std::fs::read(p).unwrap())
        .collect()
}

/// How many times `needle` occurs in `haystack`.
fn occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[test]
fn a_message_for_a_hundred_offline_sessions_is_stored_once() {
    if skip_on_mosquitto("midge's SQLite store") || !paho_available() {
        return;
    }
    let dir = TempDir::new();
    let mut b = Broker::start(&conf(&dir));
    park_with_paho(b.port(), 100);
    let payload = format!("fan-out-{}", "x".repeat(2000));
    mosquitto_pub(b.port(), &["-q", "1", "-t", "fan/one", "-m", &payload]);
    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some_and(|s| s.success()));
    assert_eq!(counts(&dir), (1, 100), "one body, a delivery per session");
    // The closed store is one file (its WAL checkpointed into it) and the body log: the
    // payload is in the log once, not in the file.
    let file = std::fs::read(dir.path().join("midge.db")).unwrap();
    assert_eq!(occurrences(&file, payload.as_bytes()), 0);
    assert_eq!(occurrences(&body_log(&dir), payload.as_bytes()), 1);

    // After a restart every session still has the message, and the body stays for the others.
    let mut b = Broker::start(&conf(&dir));
    assert!(b.wait_for_log("100 sessions and 100 queued messages", WAIT));
    for id in ["fan-7", "fan-99"] {
        let out = mosquitto_sub(
            b.port(),
            5,
            &["-c", "-i", id, "-q", "1", "-t", "fan/#", "-C", "1"],
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), payload, "{id}");
    }
    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some_and(|s| s.success()));
    assert_eq!(counts(&dir), (1, 98));
}

/// The version 2 schema, as the previous midge wrote it (the tables this test uses).
const V2_STORE: &str = "
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (2);
CREATE TABLE sessions (client_id TEXT NOT NULL UNIQUE, protocol INTEGER NOT NULL,
    expiry_interval INTEGER, expires_at INTEGER);
CREATE TABLE subscriptions (client_id TEXT NOT NULL, filter TEXT NOT NULL,
    options INTEGER NOT NULL, sub_id INTEGER NOT NULL, UNIQUE (client_id, filter));
CREATE TABLE messages (client_id TEXT NOT NULL, seq INTEGER NOT NULL,
    packet_id INTEGER NOT NULL, state INTEGER NOT NULL, qos INTEGER NOT NULL,
    retain INTEGER NOT NULL, sub_ids TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,
    msg_qos INTEGER NOT NULL, msg_retain INTEGER NOT NULL, properties BLOB NOT NULL,
    expires_at INTEGER, UNIQUE (client_id, seq));
INSERT INTO sessions VALUES ('old-a', 4, NULL, NULL), ('old-b', 4, NULL, NULL);
INSERT INTO subscriptions VALUES ('old-a', 'old/#', 1, 0), ('old-b', 'old/#', 1, 0);
INSERT INTO messages VALUES ('old-b', 1, 0, 0, 1, 0, '', 'old/t', x'6232', 1, 0, x'', NULL);
INSERT INTO messages VALUES ('old-a', 2, 0, 0, 1, 0, '', 'old/t', x'6132', 1, 0, x'', NULL);
INSERT INTO messages VALUES ('old-a', 1, 0, 0, 1, 0, '', 'old/t', x'6131', 1, 0, x'', NULL);
INSERT INTO messages VALUES ('gone', 1, 0, 0, 1, 0, '', 'old/t', x'6e6f', 1, 0, x'', NULL);
";

#[test]
fn a_version_2_store_is_migrated_and_its_queues_delivered_in_order() {
    if skip_on_mosquitto("midge's SQLite store") {
        return;
    }
    let dir = TempDir::new();
    {
        let db = rusqlite::Connection::open(dir.path().join("midge.db")).unwrap();
        db.execute_batch(V2_STORE).unwrap();
    }
    dir.open_to_all();
    let b = Broker::start(&conf(&dir));
    assert!(b.wait_for_log("2 sessions and 3 queued messages", WAIT));
    for (id, want) in [("old-a", "a1\na2"), ("old-b", "b2")] {
        let n = want.lines().count().to_string();
        let out = mosquitto_sub(
            b.port(),
            5,
            &["-c", "-i", id, "-q", "1", "-t", "old/#", "-C", &n],
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want, "{id}");
    }
    drop(b);
    let db = rusqlite::Connection::open(dir.path().join("midge.db")).unwrap();
    let version: i64 = db
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4);
    let old: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'messages'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(old, 0, "the old table is gone");
    // Rewritten once with the store's small pages (SQLite's default is 4 KiB).
    let page_size: i64 = db.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    assert_eq!(page_size, 1024);
}

/// An offline persistent subscriber's queue costs about its bytes on disk: the bodies go to
/// the body log once, each delivery is a small row of SQLite (docs/store.md, "The body log").
/// 20 000 QoS 1 messages of 256 bytes on a 13-byte topic, from mosquitto_pub with its usual
/// window of 20 in flight: at most 2.5 times (payload + topic) written per message
/// (`write_bytes` of /proc/PID/io, until 2 s after a SIGUSR1 checkpoint, WAL and checkpoint
/// included); every message then reaches the subscriber in order, after a SIGKILL and a
/// restart in between; and once they are acknowledged, the log's segments are deleted.
#[test]
fn an_offline_queue_is_written_about_once() {
    if skip_on_mosquitto("midge's body log") {
        return;
    }
    const N: usize = 20_000;
    const TOPIC: &str = "bench/offline";
    let dir = TempDir::new();
    let conf = format!("{}\nmax_queued_messages 0\n", conf(&dir));
    let mut b = Broker::start(&conf);
    let parked = mosquitto_sub(
        b.port(),
        5,
        &["-c", "-i", "parked", "-q", "1", "-t", TOPIC, "-E"],
    );
    assert!(parked.status.success(), "{parked:?}");
    let lines: String = (0..N)
        .map(|i| format!("{i:08}{}\n", "x".repeat(248)))
        .collect();
    let written = crate::quiet_disk::io_counter(b.pid(), "write_bytes");
    let out = mosquitto_pub_stdin(
        b.port(),
        &["-q", "1", "-i", "offline-pub", "-t", TOPIC, "-l"],
        Some(lines.clone().into_bytes()),
    );
    assert!(out.status.success(), "{out:?}");
    unsafe {
        libc::kill(b.pid() as libc::pid_t, libc::SIGUSR1);
    }
    std::thread::sleep(Duration::from_secs(2));
    let per_message = (crate::quiet_disk::io_counter(b.pid(), "write_bytes") - written) / N as u64;
    let bound = (256 + TOPIC.len() as u64) * 5 / 2;
    eprintln!("{per_message} bytes written per message (bound {bound})");
    assert!(
        per_message <= bound,
        "{per_message} bytes written per message > {bound}"
    );

    unsafe {
        libc::kill(b.pid() as libc::pid_t, libc::SIGKILL);
    }
    assert!(b.wait_exit(WAIT).is_some());
    let b = Broker::start(&conf);
    assert!(b.wait_for_log(&format!("1 sessions and {N} queued messages"), WAIT));
    let segments = || {
        std::fs::read_dir(dir.path().join("midge.db-bodies"))
            .unwrap()
            .count()
    };
    assert!(
        segments() >= 2,
        "20 000 bodies fill more than one 4 MiB segment"
    );
    let out = mosquitto_sub(
        b.port(),
        60,
        &[
            "-c",
            "-i",
            "parked",
            "-q",
            "1",
            "-t",
            TOPIC,
            "-C",
            &N.to_string(),
        ],
    );
    let got = String::from_utf8_lossy(&out.stdout);
    let want: Vec<&str> = lines.lines().collect();
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got.len(), N, "{:?}", got.last());
    assert!(got == want, "messages out of order or changed");
    // The bodies were released: the log's segments go at the next sync. (mosquitto_sub may
    // leave before its last PUBACK: that message stays, copied to a segment of its own by the
    // compaction of a segment that is almost all dead.)
    unsafe {
        libc::kill(b.pid() as libc::pid_t, libc::SIGUSR1);
    }
    let start = std::time::Instant::now();
    while segments() > 1 {
        assert!(start.elapsed() < WAIT, "{} segments left", segments());
        std::thread::sleep(Duration::from_millis(50));
    }
}
