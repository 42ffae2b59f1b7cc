//! Damaged stores: moved aside, every readable row salvaged, the loss counted, never a panic.

use crate::common::store::*;
use midge::store::*;
use std::path::Path;

const PAGE: usize = 4096;

fn corrupt_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("midge.db.corrupt-"))
        .filter(|n| !n.ends_with("-wal") && !n.ends_with("-shm"))
        .collect();
    names.sort();
    names
}

fn print_report(what: &str, report: &RecoveryReport) {
    println!("{what}: {}", report.reason);
    for t in &report.tables {
        println!(
            "  {:<14} recovered {:>5}  lost {}{}",
            t.table,
            t.recovered,
            if t.lost_is_exact { "" } else { "at least " },
            t.lost
        );
    }
}

/// Checks the store reopens clean with what recovery returned.
fn reopens_clean(dir: &Path, recovered: &Snapshot) {
    let (store, again) = open(dir);
    assert!(again.recovery.is_none());
    let mut expected = recovered.clone();
    expected.recovery = None;
    assert_eq!(again, expected);
    store.close().unwrap();
}

#[test]
fn truncated_store_is_salvaged() {
    let dir = scratch("truncated");
    let original = populate(&dir, 2000);
    let path = dir.join("midge.db");
    let before = std::fs::read(&path).unwrap();
    let len = before.len() / PAGE * 6 / 10 * PAGE;
    std::fs::write(&path, &before[..len]).unwrap();

    let (store, snapshot) = open(&dir);
    store.close().unwrap();
    let report = snapshot.recovery.as_ref().expect("damage not noticed");
    print_report("truncated to 60%", report);
    assert_eq!(corrupt_files(&dir).len(), 1);
    assert_eq!(
        std::fs::read(&report.moved_to).unwrap(),
        &before[..len],
        "the damaged copy is kept as it was"
    );
    let retained = &report.tables[0];
    assert!(retained.recovered > 0, "nothing recovered");
    assert!(
        (retained.recovered as usize) < original.retained.len(),
        "a truncated file cannot hold every row"
    );
    // What came back is what was written.
    for m in &snapshot.retained {
        let i: usize = m.topic["sensors/".len()..].parse().unwrap();
        assert_eq!(m.payload, vec![i as u8; 300]);
    }
    for (t, n) in rows(&snapshot) {
        let r = report.tables.iter().find(|r| r.table == t).unwrap();
        assert!(
            n as u64 <= r.recovered,
            "{t}: {n} rows > {} recovered",
            r.recovered
        );
    }
    reopens_clean(&dir, &snapshot);
}

#[test]
fn overwritten_middle_is_salvaged() {
    let dir = scratch("overwritten");
    let original = populate(&dir, 2000);
    let path = dir.join("midge.db");
    let mut bytes = std::fs::read(&path).unwrap();
    let pages = bytes.len() / PAGE;
    // Three pages in the middle become garbage.
    let first = pages / 2;
    for (k, b) in bytes[first * PAGE..(first + 3) * PAGE]
        .iter_mut()
        .enumerate()
    {
        *b = (k * 131 % 251) as u8 ^ 0xa5;
    }
    std::fs::write(&path, &bytes).unwrap();

    let (store, snapshot) = open(&dir);
    store.close().unwrap();
    let report = snapshot.recovery.as_ref().expect("damage not noticed");
    print_report("3 pages overwritten in the middle", report);
    let total_before: usize = rows(&original).iter().map(|r| r.1).sum();
    let total_after: usize = rows(&snapshot).iter().map(|r| r.1).sum();
    println!("rows before {total_before}, after {total_after}");
    // Three pages of 4 KiB hold at most ~40 of these rows (or index entries only).
    assert!(total_after + 60 >= total_before, "lost too much");
    for m in &snapshot.retained {
        let i: usize = m.topic["sensors/".len()..].parse().unwrap();
        assert_eq!(m.payload, vec![i as u8; 300]);
    }
    reopens_clean(&dir, &snapshot);
}

#[test]
fn garbage_file_starts_an_empty_store() {
    let dir = scratch("garbage");
    let path = dir.join("midge.db");
    let garbage: Vec<u8> = (0..50_000u32).map(|i| (i * 17 % 253) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let (store, snapshot) = open(&dir);
    store.close().unwrap();
    let report = snapshot.recovery.as_ref().expect("damage not noticed");
    print_report("not a database", report);
    assert!(report.tables.iter().all(|t| t.recovered == 0));
    assert_eq!(std::fs::read(&report.moved_to).unwrap(), garbage);
    assert!(snapshot.retained.is_empty() && snapshot.sessions.is_empty());
    reopens_clean(&dir, &snapshot);
}

#[test]
fn damaged_header_page_is_handled() {
    let dir = scratch("header");
    populate(&dir, 400);
    let path = dir.join("midge.db");
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[100..PAGE] {
        *b = 0xff;
    }
    std::fs::write(&path, &bytes).unwrap();
    let (store, snapshot) = open(&dir);
    store.close().unwrap();
    let report = snapshot.recovery.as_ref().expect("damage not noticed");
    print_report("schema page overwritten", report);
    reopens_clean(&dir, &snapshot);
}

#[test]
fn second_damage_in_the_same_second_keeps_both_copies() {
    let dir = scratch("twice");
    for _ in 0..2 {
        std::fs::write(dir.join("midge.db"), vec![0x42; 8192]).unwrap();
        let (store, snapshot) = open(&dir);
        assert!(snapshot.recovery.is_some());
        store.close().unwrap();
    }
    assert_eq!(corrupt_files(&dir).len(), 2);
}

/// Rows whose values make no sense (written by hand with the sqlite3 CLI, say) are skipped
/// and deleted on a normal start; the rest loads.
#[test]
fn invalid_rows_are_skipped_not_fatal() {
    let dir = scratch("invalid");
    populate(&dir, 8);
    {
        let conn = rusqlite_conn(&dir);
        conn.execute_batch(
            "UPDATE retained SET qos = 7 WHERE topic = 'sensors/00003';
             UPDATE retained SET topic = CAST(x'ff00' AS TEXT) WHERE topic = 'sensors/00004';
             UPDATE deliveries SET state = 9
                 WHERE session = (SELECT rowid FROM sessions WHERE client_id = 'client-00001');
             INSERT INTO subscriptions VALUES ('nobody', '#', 0, 0);",
        )
        .unwrap();
    }
    let (store, snapshot) = open(&dir);
    store.close().unwrap();
    assert!(snapshot.recovery.is_none());
    assert_eq!(snapshot.retained.len(), 6);
    assert_eq!(snapshot.sessions.len(), 2);
    assert!(snapshot.sessions[1].messages.is_empty());
    let (store, again) = open(&dir);
    assert_eq!(again, snapshot);
    store.close().unwrap();
}

fn rusqlite_conn(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("midge.db")).unwrap()
}

/// A store damaged before it was migrated to version 3: its `messages` table (a copy of the
/// message per session) is salvaged into bodies and deliveries, each session's order kept.
#[test]
fn a_damaged_version_2_store_is_salvaged_into_bodies_and_deliveries() {
    let dir = scratch("damaged-v2");
    {
        let db = rusqlite_conn(&dir);
        db.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (2);
             CREATE TABLE sessions (client_id TEXT NOT NULL UNIQUE, protocol INTEGER NOT NULL,
                 expiry_interval INTEGER, expires_at INTEGER);
             CREATE TABLE messages (client_id TEXT NOT NULL, seq INTEGER NOT NULL,
                 packet_id INTEGER NOT NULL, state INTEGER NOT NULL, qos INTEGER NOT NULL,
                 retain INTEGER NOT NULL, sub_ids TEXT NOT NULL, topic TEXT NOT NULL,
                 payload BLOB NOT NULL, msg_qos INTEGER NOT NULL, msg_retain INTEGER NOT NULL,
                 properties BLOB NOT NULL, expires_at INTEGER, UNIQUE (client_id, seq));
             INSERT INTO sessions VALUES ('a', 4, NULL, NULL), ('b', 4, NULL, NULL);",
        )
        .unwrap();
        let mut insert = db
            .prepare(
                "INSERT INTO messages VALUES (?1, ?2, 0, 0, 1, 0, '', 'q', ?3, 1, 0, x'', NULL)",
            )
            .unwrap();
        for i in 1..=400u32 {
            let client = if i % 2 == 0 { "a" } else { "b" };
            insert
                // Numbered per session, as version 2 did.
                .execute(rusqlite::params![
                    client,
                    i.div_ceil(2),
                    i.to_be_bytes().repeat(75)
                ])
                .unwrap();
        }
    }
    let path = dir.join("midge.db");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / PAGE / 2;
    bytes[middle * PAGE..(middle + 1) * PAGE].fill(0xa5);
    std::fs::write(&path, &bytes).unwrap();

    let (store, snapshot) = open(&dir);
    store.close().unwrap();
    let report = snapshot.recovery.as_ref().expect("damage not noticed");
    print_report("a version 2 store with a page overwritten", report);
    let recovered = |t: &str| {
        report
            .tables
            .iter()
            .find(|r| r.table == t)
            .unwrap()
            .recovered
    };
    assert!(recovered("bodies") > 300, "{report:?}");
    assert_eq!(recovered("bodies"), recovered("deliveries"));
    assert_eq!(snapshot.sessions.len(), 2);
    for s in &snapshot.sessions {
        // Each delivery's body is the message it was, in the session's order.
        let numbers: Vec<u32> = s
            .messages
            .iter()
            .map(|m| {
                let payload = &snapshot.bodies[&m.body].payload;
                assert_eq!(payload.len(), 300);
                u32::from_be_bytes(payload[..4].try_into().unwrap())
            })
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        let odd = s.session.client_id == "b";
        assert!(numbers.iter().all(|n| (n % 2 == 1) == odd));
    }
    reopens_clean(&dir, &snapshot);
}
