//! The store on its own: round trips, group commit, fsync cadence, Mosquitto's file, speed.

use crate::common::store::*;
use midge::store::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn full_message() -> StoredMessage {
    StoredMessage {
        topic: "a/b".into(),
        payload: vec![0, 1, 2, 255],
        qos: 2,
        retain: true,
        properties: vec![0x02, 0, 0, 0, 60],
        expires_at: Some(1_900_000_000),
        source: None,
    }
}

/// A store of schema version 1 (before retained messages kept their publisher) is migrated in
/// place: its retained message is kept, with no publisher, and new ones keep theirs across a
/// restart.
#[test]
fn a_version_1_store_is_migrated_and_retained_publishers_survive_a_restart() {
    let dir = scratch("migrate-v1");
    {
        let db = rusqlite::Connection::open(dir.join("midge.db")).unwrap();
        db.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version (version) VALUES (1);
             CREATE TABLE retained (topic TEXT NOT NULL UNIQUE, payload BLOB NOT NULL,
                 qos INTEGER NOT NULL, retain INTEGER NOT NULL, properties BLOB NOT NULL,
                 expires_at INTEGER);
             INSERT INTO retained VALUES ('old/topic', x'6869', 1, 1, x'', NULL);",
        )
        .unwrap();
    }
    let (mut store, snapshot) = open(&dir);
    assert_eq!(snapshot.retained.len(), 1);
    assert_eq!(snapshot.retained[0].topic, "old/topic");
    assert_eq!(snapshot.retained[0].source, None);
    let source = MessageSource {
        client_id: "sensor-1".into(),
        username: Some("alice".into()),
        listener: 1,
    };
    let b = store.submit(vec![Change::RetainedSet {
        message: Box::new(StoredMessage {
            retain: true,
            source: Some(source.clone()),
            ..message("new/topic", b"x")
        }),
    }]);
    wait_committed(&store, b);
    drop(store);
    let (_store, snapshot) = open(&dir);
    let new = snapshot.retained.iter().find(|m| m.topic == "new/topic");
    assert_eq!(new.and_then(|m| m.source.clone()), Some(source));
    let db = rusqlite::Connection::open(dir.join("midge.db")).unwrap();
    let version: i64 = db
        .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 4);
}

#[test]
fn round_trip_every_kind_of_change() {
    let dir = scratch("roundtrip");
    let (mut store, snapshot) = open(&dir);
    assert_eq!(snapshot, Snapshot::default());
    let v5 = SessionRecord {
        client_id: "v5".into(),
        protocol: 5,
        expiry: SessionExpiry::After(3600),
        expires_at: Some(1_800_000_000),
    };
    let inflight = QueuedMessage {
        seq: 7,
        packet_id: 42,
        state: MessageState::AwaitPubrec,
        qos: 2,
        retain: true,
        sub_ids: vec![1, 268_435_455].into(),
        body: 7,
    };
    // A body keeps no publisher (only a retained message does).
    let inflight_body = StoredMessage {
        source: None,
        ..full_message()
    };
    let will = WillRecord {
        client_id: "v5".into(),
        topic: "wills/v5".into(),
        payload: b"gone".to_vec(),
        qos: 1,
        retain: true,
        properties: vec![1, 1],
        due_at: 1_700_000_123,
    };
    let b1 = store.submit(vec![
        Change::RetainedSet {
            message: full_message().into(),
        },
        Change::RetainedSet {
            message: message("gone/soon", b"x").into(),
        },
        Change::SessionUpsert {
            session: session("v3"),
        },
        Change::SessionUpsert {
            session: v5.clone(),
        },
        Change::SubscriptionSet {
            client_id: "v5".into(),
            subscription: Subscription {
                filter: "b/#".into(),
                options: 0x2e,
                sub_id: 9,
            },
        },
        Change::SubscriptionSet {
            client_id: "v5".into(),
            subscription: Subscription {
                filter: "a/+".into(),
                options: 1,
                sub_id: 0,
            },
        },
        body(8, "q/1", b"second"),
        Change::MessageAdd {
            client_id: "v5".into(),
            message: queued(8, 8),
        },
        Change::MessageBody {
            id: 7,
            message: inflight_body.clone().into(),
        },
        Change::MessageAdd {
            client_id: "v5".into(),
            message: QueuedMessage {
                state: MessageState::Queued,
                packet_id: 0,
                ..inflight.clone()
            },
        },
        Change::Qos2Add {
            client_id: "v5".into(),
            packet_id: 300,
        },
        Change::Qos2Add {
            client_id: "v5".into(),
            packet_id: 5,
        },
        Change::WillSet {
            will: will.clone().into(),
        },
    ]);
    let b2 = store.submit(vec![
        Change::RetainedClear {
            topic: "gone/soon".into(),
        },
        Change::MessageState {
            client_id: "v5".into(),
            seq: 7,
            packet_id: 42,
            state: MessageState::AwaitPubrec,
        },
        body(9, "q/2", b"acked"),
        Change::MessageAdd {
            client_id: "v5".into(),
            message: queued(9, 9),
        },
        Change::MessageDelete {
            client_id: "v5".into(),
            seq: 9,
        },
        Change::Qos2Delete {
            client_id: "v5".into(),
            packet_id: 300,
        },
        Change::SubscriptionSet {
            client_id: "v5".into(),
            subscription: Subscription {
                filter: "b/#".into(),
                options: 0x2e,
                sub_id: 10,
            },
        },
        Change::SubscriptionSet {
            client_id: "v3".into(),
            subscription: Subscription {
                filter: "x".into(),
                options: 0,
                sub_id: 0,
            },
        },
        Change::SubscriptionDelete {
            client_id: "v3".into(),
            filter: "x".into(),
        },
        // A session and everything hanging off it, gone in one change.
        Change::SessionUpsert {
            session: session("doomed"),
        },
        Change::SubscriptionSet {
            client_id: "doomed".into(),
            subscription: Subscription {
                filter: "#".into(),
                options: 0,
                sub_id: 0,
            },
        },
        body(100, "t", b"p"),
        Change::MessageAdd {
            client_id: "doomed".into(),
            message: queued(1, 100),
        },
        Change::Qos2Add {
            client_id: "doomed".into(),
            packet_id: 1,
        },
        Change::WillSet {
            will: Box::new(WillRecord {
                client_id: "doomed".into(),
                ..will.clone()
            }),
        },
        Change::SessionDelete {
            client_id: "doomed".into(),
        },
    ]);
    assert_eq!((b1, b2), (1, 2));
    assert_eq!(store.submit(Vec::new()), 2, "an empty batch gets no number");
    store.close().unwrap();

    let expected = Snapshot {
        retained: vec![full_message()],
        // Body 9 went with its delivery, body 100 with its session.
        bodies: [(7, inflight_body), (8, message("q/1", b"second"))].into(),
        last_body: 8,
        sessions: vec![
            SessionState {
                session: session("v3"),
                subscriptions: vec![],
                messages: vec![],
                more: QueueRest::default(),
                qos2_inbound: vec![],
            },
            SessionState {
                session: v5,
                subscriptions: vec![
                    Subscription {
                        filter: "a/+".into(),
                        options: 1,
                        sub_id: 0,
                    },
                    Subscription {
                        filter: "b/#".into(),
                        options: 0x2e,
                        sub_id: 10,
                    },
                ],
                messages: vec![inflight, queued(8, 8)],
                more: QueueRest::default(),
                qos2_inbound: vec![5],
            },
        ],
        wills: vec![will],
        recovery: None,
    };
    let (store, snapshot) = open(&dir);
    assert_eq!(with_ids(snapshot, &expected), expected);
    store.close().unwrap();
    // Reopening changes nothing.
    let (store, again) = open(&dir);
    assert_eq!(with_ids(again, &expected), expected);
    drop(store);
}

/// A long queue: the snapshot holds its head only, and the rest comes back a page at a time,
/// in order, read by the writer after the batches submitted before the request.
#[test]
fn a_long_queue_is_read_back_a_page_at_a_time_in_order() {
    let dir = scratch("pages");
    let notified = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&notified);
    let (mut store, _) = Store::open(
        &dir,
        None,
        Duration::from_secs(1),
        Box::new(move || {
            n.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .unwrap();
    let total = QUEUE_HEAD_MESSAGES as u64 + 500;
    let mut changes = vec![Change::SessionUpsert {
        session: session("long"),
    }];
    for seq in 1..=total {
        changes.push(body(seq, "q/é", format!("{seq:05}").as_bytes()));
        changes.push(Change::MessageAdd {
            client_id: "long".into(),
            message: queued(seq, seq),
        });
    }
    store.submit(changes);
    // No wait for the commit: the read comes after the batch all the same.
    store.read_messages(PageRequest {
        tag: 7,
        client_id: "long".into(),
        after: 990,
        max_messages: 100,
        max_bytes: usize::MAX,
    });
    let page = wait_page(&store);
    assert_eq!(page.tag, 7);
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (991..=1090).collect::<Vec<_>>());
    // With the bodies they refer to.
    let payloads: Vec<&[u8]> = page
        .messages
        .iter()
        .map(|m| page.bodies[&m.body].payload.as_slice())
        .collect();
    assert_eq!(payloads.first(), Some(&b"00991".as_slice()));
    assert_eq!(payloads.len(), 100);
    assert!(
        notified.load(Ordering::SeqCst) >= 2,
        "notify after the page"
    );
    // The byte bound: each message is 4 + 5 bytes ("q/é" is 4 bytes in UTF-8); at least one.
    for (max_bytes, want) in [(27, 3), (26, 2), (0, 1)] {
        store.read_messages(PageRequest {
            tag: 8,
            client_id: "long".into(),
            after: 0,
            max_messages: 100,
            max_bytes,
        });
        assert_eq!(wait_page(&store).messages.len(), want, "{max_bytes} bytes");
    }
    // Past the end: fewer than asked.
    store.read_messages(PageRequest {
        tag: 9,
        client_id: "long".into(),
        after: total - 2,
        max_messages: 100,
        max_bytes: usize::MAX,
    });
    assert_eq!(wait_page(&store).messages.len(), 2);
    store.close().unwrap();
    // After a restart the snapshot holds the head of the queue and counts the rest.
    let (store, snapshot) = open(&dir);
    let st = &snapshot.sessions[0];
    assert_eq!(st.messages.len(), QUEUE_HEAD_MESSAGES);
    assert_eq!(
        st.messages.last().map(|m| m.seq),
        Some(QUEUE_HEAD_MESSAGES as u64)
    );
    let more = st.more;
    assert_eq!(
        (more.count, more.bytes, more.last_seq),
        (500, 500 * 9, total)
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits for the page the writer reads.
fn wait_page(store: &Store) -> MessagePage {
    let start = Instant::now();
    loop {
        if let Some(page) = store.take_page() {
            return page;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no page");
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn notify_runs_after_commit_and_committed_only_grows() {
    let dir = scratch("notify");
    let notified = Arc::new(AtomicUsize::new(0));
    let n2 = Arc::clone(&notified);
    let (mut store, _) = Store::open(
        &dir,
        None,
        Duration::from_secs(1),
        Box::new(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .unwrap();
    let n = store.submit(vec![Change::RetainedClear { topic: "t".into() }]);
    wait_committed(&store, n);
    // notify runs right after the counter moves; give it a moment.
    let start = Instant::now();
    while notified.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(notified.load(Ordering::SeqCst), 1);
    store.close().unwrap();
}

/// Many small batches submitted back to back: some share a commit (fewer notifications than
/// batches), the last write wins, and nothing is lost or reordered.
#[test]
fn group_commit_keeps_batch_order() {
    let dir = scratch("group");
    let notified = Arc::new(AtomicUsize::new(0));
    let n2 = Arc::clone(&notified);
    let (mut store, _) = Store::open(
        &dir,
        None,
        Duration::from_secs(1),
        Box::new(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .unwrap();
    let batches = 2000u64;
    let mut seen = 0;
    store.submit(vec![Change::SessionUpsert {
        session: session("c"),
    }]);
    for i in 1..=batches {
        let mut changes = vec![
            Change::RetainedSet {
                message: message("last", i.to_string().as_bytes()).into(),
            },
            body(i, "q", &i.to_be_bytes()),
            Change::MessageAdd {
                client_id: "c".into(),
                message: queued(i, i),
            },
        ];
        // Every other message is acknowledged in the next batch.
        if i % 2 == 0 {
            changes.push(Change::MessageDelete {
                client_id: "c".into(),
                seq: i - 1,
            });
        }
        store.submit(changes);
        let c = store.committed();
        assert!(c >= seen, "committed went backwards");
        seen = c;
    }
    wait_committed(&store, batches + 1);
    let commits = notified.load(Ordering::SeqCst);
    println!("{} batches, {commits} commits", batches + 1);
    assert!(commits as u64 <= batches + 1);
    store.close().unwrap();

    let (store, snapshot) = open(&dir);
    assert_eq!(snapshot.retained[0].payload, batches.to_string().as_bytes());
    let seqs: Vec<u64> = snapshot.sessions[0]
        .messages
        .iter()
        .map(|m| m.seq)
        .collect();
    let expected: Vec<u64> = (1..=batches).filter(|i| i % 2 == 0).collect();
    assert_eq!(seqs, expected);
    drop(store);
}

#[test]
fn mosquitto_db_is_never_touched() {
    let dir = scratch("mosquitto");
    let mosquitto = dir.join("mosquitto.db");
    let mut content = MOSQUITTO_SIGNATURE.to_vec();
    content.extend((0..10_000u32).map(|i| (i * 7 % 251) as u8));
    std::fs::write(&mosquitto, &content).unwrap();
    let modified = std::fs::metadata(&mosquitto).unwrap().modified().unwrap();

    let (mut store, snapshot) = Store::open(
        &dir,
        Some("mosquitto.db"),
        Duration::from_secs(1),
        Box::new(|| {}),
    )
    .unwrap();
    assert_eq!(snapshot, Snapshot::default());
    assert_eq!(store.path(), dir.join("midge.db"));
    let n = store.submit(vec![Change::RetainedSet {
        message: message("t", b"p").into(),
    }]);
    wait_committed(&store, n);
    store.close().unwrap();

    assert_eq!(std::fs::read(&mosquitto).unwrap(), content);
    assert_eq!(
        std::fs::metadata(&mosquitto).unwrap().modified().unwrap(),
        modified
    );
    let (store, snapshot) = open(&dir);
    assert_eq!(snapshot.retained.len(), 1);
    drop(store);
    assert_eq!(std::fs::read(&mosquitto).unwrap(), content);
}

#[test]
fn midge_db_with_mosquittos_signature_is_refused_untouched() {
    let dir = scratch("mosquitto-named-midge");
    let path = dir.join("midge.db");
    let mut content = MOSQUITTO_SIGNATURE.to_vec();
    content.extend_from_slice(&[9; 100]);
    std::fs::write(&path, &content).unwrap();
    match Store::open(&dir, None, Duration::from_secs(1), Box::new(|| {})) {
        Err(StoreError::MosquittoFile(p)) => assert_eq!(p, path),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a Mosquitto file"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), content);
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(names.len(), 1, "nothing created beside it");
}

#[test]
fn the_name_mosquitto_db_gets_midge_db_beside_it() {
    let dir = scratch("othername");
    let (store, _) = Store::open(
        &dir,
        Some("mosquitto.db"),
        Duration::from_secs(1),
        Box::new(|| {}),
    )
    .unwrap();
    assert_eq!(store.path(), dir.join("midge.db"));
    store.close().unwrap();
    assert!(!dir.join("mosquitto.db").exists(), "left for Mosquitto");
}

#[test]
fn persistence_file_names_the_store() {
    let dir = scratch("named");
    let open_named =
        |name| Store::open(&dir, Some(name), Duration::from_secs(1), Box::new(|| {})).unwrap();
    let (mut store, _) = open_named("broker.db");
    assert_eq!(store.path(), dir.join("broker.db"));
    let n = store.submit(vec![Change::RetainedSet {
        message: message("t", b"p").into(),
    }]);
    wait_committed(&store, n);
    store.close().unwrap();
    assert!(!dir.join("midge.db").exists());
    let (store, snapshot) = open_named("broker.db");
    assert_eq!(snapshot.retained.len(), 1, "read back from broker.db");
    drop(store);
    let (store, snapshot) = open_named("midge.db");
    assert!(snapshot.retained.is_empty(), "midge.db is another store");
    drop(store);
}

#[test]
fn a_named_file_with_mosquittos_signature_gets_midge_db_beside_it() {
    let dir = scratch("named-mosquitto");
    let theirs = dir.join("broker.db");
    let mut content = MOSQUITTO_SIGNATURE.to_vec();
    content.extend_from_slice(&[3; 500]);
    std::fs::write(&theirs, &content).unwrap();
    let (store, _) = Store::open(
        &dir,
        Some("broker.db"),
        Duration::from_secs(1),
        Box::new(|| {}),
    )
    .unwrap();
    assert_eq!(store.path(), dir.join("midge.db"));
    store.close().unwrap();
    assert_eq!(std::fs::read(&theirs).unwrap(), content);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["broker.db", "midge.db", "midge.db-bodies"],
        "no -wal/-shm beside theirs"
    );

    // Configured by its own name, a midge.db that is Mosquitto's is refused, untouched.
    let dir = scratch("named-midge-mosquitto");
    let path = dir.join("midge.db");
    std::fs::write(&path, &content).unwrap();
    match Store::open(
        &dir,
        Some("midge.db"),
        Duration::from_secs(1),
        Box::new(|| {}),
    ) {
        Err(StoreError::MosquittoFile(p)) => assert_eq!(p, path),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a Mosquitto file"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), content);
}

/// A batch of 10 000 changes, then 5 000 small batches as QoS 1 traffic makes them (add, mark
/// sent, delete an older one), all commit and hold what they say. The times are printed for
/// the benchmark notes; speed decides nothing here.
#[test]
fn ten_thousand_changes_in_one_batch_and_five_thousand_small_batches_commit() {
    let dir = scratch("perf");
    let (mut store, _) = open(&dir);
    store.submit(vec![Change::SessionUpsert {
        session: session("c"),
    }]);
    wait_committed(&store, 1);
    let payload = [0x5a; 100];
    let changes: Vec<Change> = (0..10_000u64)
        .flat_map(|i| {
            [
                body(i, "bench/topic", &payload),
                Change::MessageAdd {
                    client_id: "c".into(),
                    message: queued(i, i),
                },
            ]
        })
        .collect();
    let start = Instant::now();
    let n = store.submit(changes);
    wait_committed(&store, n);
    let elapsed = start.elapsed();
    println!("10000 changes in one batch committed in {elapsed:?}");

    // The QoS 1 pattern, one small batch per turn: add, mark sent, delete.
    let start = Instant::now();
    let turns = 5_000u64;
    for i in 0..turns {
        store.submit(vec![
            body(100_000 + i, "bench/topic", &payload),
            Change::MessageAdd {
                client_id: "c".into(),
                message: queued(100_000 + i, 100_000 + i),
            },
            Change::MessageState {
                client_id: "c".into(),
                seq: 100_000 + i,
                packet_id: (i % 60_000 + 1) as u16,
                state: MessageState::AwaitPuback,
            },
            Change::MessageDelete {
                client_id: "c".into(),
                seq: i,
            },
        ]);
    }
    wait_committed(&store, store.submitted());
    let elapsed = start.elapsed();
    println!(
        "{turns} batches of 3 changes in {elapsed:?} ({:.0} batches/s)",
        turns as f64 / elapsed.as_secs_f64()
    );
    store.close().unwrap();
    let (store, snapshot) = open(&dir);
    let st = &snapshot.sessions[0];
    assert_eq!(st.messages.len() as u64 + st.more.count, 10_000);
    assert_eq!(st.messages.first().map(|m| m.seq), Some(5_000));
    store.close().unwrap();
}

/// Under steady load the store syncs about once per interval, not per commit.
#[test]
fn syncs_once_per_interval_under_load() {
    let dir = scratch("cadence");
    let interval = Duration::from_millis(200);
    let (mut store, _) = Store::open(&dir, None, interval, Box::new(|| {})).unwrap();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < Duration::from_millis(1100) {
        i += 1;
        store.submit(vec![Change::RetainedSet {
            message: message("load", &i.to_be_bytes()).into(),
        }]);
        std::thread::sleep(Duration::from_micros(500));
    }
    wait_committed(&store, store.submitted());
    let syncs = store.syncs();
    println!("{i} batches in 1.1 s with a 200 ms interval: {syncs} syncs");
    assert!((3..=7).contains(&syncs), "{syncs} syncs");
    // Idle: no sync without commits.
    std::thread::sleep(Duration::from_millis(500));
    let idle = store.syncs();
    assert!(idle <= syncs + 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(store.syncs(), idle, "syncs while idle");
    store.sync_now();
    store.close().unwrap();
}

/// A sync below `CHECKPOINT_BYTES` of WAL only fsyncs the WAL: the main file is left alone. A
/// WAL grown past it is checkpointed into the main file at the next sync.
#[test]
fn a_small_wal_is_only_fsynced_and_a_large_one_checkpointed() {
    let dir = scratch("checkpoint-threshold");
    let interval = Duration::from_millis(100);
    let (mut store, _) = Store::open(&dir, None, interval, Box::new(|| {})).unwrap();
    let main_file = dir.join("midge.db");
    let size = || std::fs::metadata(&main_file).unwrap().len();
    let contents = || std::fs::read(&main_file).unwrap();
    let wait_syncs = |store: &Store, n: u64| {
        let start = Instant::now();
        while store.syncs() < n {
            assert!(start.elapsed() < Duration::from_secs(5), "no sync");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let (before, bytes) = (size(), contents());
    let b = store.submit(vec![Change::RetainedSet {
        message: message("small", b"x").into(),
    }]);
    wait_committed(&store, b);
    wait_syncs(&store, 1);
    assert!(contents() == bytes, "a small WAL was checkpointed");
    // About 8 MB.
    let changes = (0..2000)
        .map(|i| Change::RetainedSet {
            message: message(&format!("big/{i}"), &[7; 4000]).into(),
        })
        .collect();
    let b = store.submit(changes);
    wait_committed(&store, b);
    wait_syncs(&store, 2);
    assert!(size() > before + 4_000_000, "the WAL was not checkpointed");
    store.close().unwrap();
}

#[test]
fn sync_now_syncs_at_once() {
    let dir = scratch("syncnow");
    let (mut store, _) =
        Store::open(&dir, None, Duration::from_secs(3600), Box::new(|| {})).unwrap();
    let n = store.submit(vec![Change::RetainedClear { topic: "x".into() }]);
    wait_committed(&store, n);
    assert_eq!(store.syncs(), 0);
    store.sync_now();
    let start = Instant::now();
    while store.syncs() == 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "no sync");
        std::thread::sleep(Duration::from_millis(1));
    }
    store.close().unwrap();
}

#[test]
fn dropping_the_store_commits_what_was_submitted() {
    let dir = scratch("drop");
    let (mut store, _) = open(&dir);
    for i in 0..100u32 {
        store.submit(vec![Change::RetainedSet {
            message: message(&format!("t/{i}"), b"p").into(),
        }]);
    }
    drop(store);
    let (store, snapshot) = open(&dir);
    assert_eq!(snapshot.retained.len(), 100);
    drop(store);
}

/// Load generator for measuring the fsync cadence by hand:
/// `MIDGE_STORE_LOAD_SECS=5 strace -f -e trace=fsync,fdatasync <test binary>
///  --exact store_basic::syncs_under_strace --nocapture` (does nothing without the variable).
#[test]
fn syncs_under_strace() {
    let Some(secs) = std::env::var("MIDGE_STORE_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return;
    };
    let dir = scratch("strace");
    let (mut store, _) = open(&dir);
    store.submit(vec![Change::SessionUpsert {
        session: session("c"),
    }]);
    let start = Instant::now();
    let mut seq = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        seq += 1;
        store.submit(vec![
            body(seq, "load", &[1; 64]),
            Change::MessageAdd {
                client_id: "c".into(),
                message: queued(seq, seq),
            },
        ]);
        if seq > 1 {
            store.submit(vec![Change::MessageDelete {
                client_id: "c".into(),
                seq: seq - 1,
            }]);
        }
        if store.submitted() - store.committed() > 64 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    wait_committed(&store, store.submitted());
    println!(
        "{} batches in {secs} s, {} syncs",
        store.submitted(),
        store.syncs()
    );
    store.close().unwrap();
}

/// A message queued for a session and acknowledged while the writer gathers batches (a
/// subscriber that keeps up) is added and deleted in one transaction, which writes nothing:
/// the WAL does not grow.
#[test]
fn a_message_acknowledged_while_the_writer_gathers_writes_nothing() {
    let dir = scratch("gather");
    let (mut store, _) =
        Store::open(&dir, None, Duration::from_secs(3600), Box::new(|| {})).unwrap();
    let b = store.submit(vec![Change::SessionUpsert {
        session: session("c"),
    }]);
    wait_committed(&store, b);
    let wal = dir.join("midge.db-wal");
    let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let before = wal_size();
    store.submit(vec![
        body(1, "t", &[1; 256]),
        Change::MessageAdd {
            client_id: "c".into(),
            message: queued(1, 1),
        },
    ]);
    // The subscriber's PUBACK, a moment later.
    std::thread::sleep(Duration::from_micros(200));
    let b = store.submit(vec![Change::MessageDelete {
        client_id: "c".into(),
        seq: 1,
    }]);
    wait_committed(&store, b);
    assert_eq!(wal_size(), before, "the message was written");
    store.close().unwrap();
}
