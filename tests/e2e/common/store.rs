//! Helpers shared by the store tests (`store_basic`, `store_crash`, `store_recovery`): they drive
//! `midge::store` directly, without a broker process.

use midge::store::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A fresh, empty directory for one test, removed when the test is done with it.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty directory for one test.
pub fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("midge-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// Opens the store in `dir` with a no-op notify.
pub fn open(dir: &Path) -> (Store, Snapshot) {
    Store::open(dir, None, Duration::from_secs(1), Box::new(|| {})).unwrap()
}

/// Waits until batch `n` is committed.
pub fn wait_committed(store: &Store, n: u64) {
    let start = Instant::now();
    while store.committed() < n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "batch {n} not committed (at {})",
            store.committed()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

pub fn message(topic: &str, payload: &[u8]) -> StoredMessage {
    StoredMessage {
        topic: topic.into(),
        payload: payload.to_vec(),
        qos: 1,
        retain: false,
        properties: Vec::new(),
        expires_at: None,
        source: None,
    }
}

pub fn session(client_id: &str) -> SessionRecord {
    SessionRecord {
        client_id: client_id.into(),
        protocol: 4,
        expiry: SessionExpiry::Never,
        expires_at: None,
    }
}

/// The body of a queued message, with id `id`.
pub fn body(id: u64, topic: &str, payload: &[u8]) -> Change {
    Change::MessageBody {
        id,
        message: message(topic, payload).into(),
    }
}

/// A queued QoS 1 delivery of body `body` as a session's message `seq`.
pub fn queued(seq: u64, body: u64) -> QueuedMessage {
    QueuedMessage {
        seq,
        packet_id: 0,
        state: MessageState::Queued,
        qos: 1,
        retain: false,
        sub_ids: Default::default(),
        body,
    }
}

/// A store with `n` retained messages, `n / 4` sessions with a subscription and a queued
/// message each (payloads big enough to span many pages), closed cleanly.
pub fn populate(dir: &Path, n: usize) -> Snapshot {
    let (mut store, _) = open(dir);
    let mut changes = Vec::new();
    for i in 0..n {
        changes.push(Change::RetainedSet {
            message: Box::new(StoredMessage {
                retain: true,
                ..message(&format!("sensors/{i:05}"), &[i as u8; 300])
            }),
        });
    }
    for i in 0..n / 4 {
        let client_id = format!("client-{i:05}");
        changes.push(Change::SessionUpsert {
            session: session(&client_id),
        });
        changes.push(Change::SubscriptionSet {
            client_id: client_id.as_str().into(),
            subscription: Subscription {
                filter: "sensors/#".into(),
                options: 1,
                sub_id: 0,
            },
        });
        changes.push(body(i as u64, "sensors/x", &[7u8; 200]));
        changes.push(Change::MessageAdd {
            client_id: client_id.into(),
            message: queued(1, i as u64),
        });
    }
    let n = store.submit(changes);
    wait_committed(&store, n);
    store.close().unwrap();
    let (store, snapshot) = open(dir);
    store.close().unwrap();
    snapshot
}

/// Total rows a snapshot holds, per table name of the schema.
pub fn rows(s: &Snapshot) -> [(&'static str, usize); 6] {
    [
        ("retained", s.retained.len()),
        ("sessions", s.sessions.len()),
        (
            "subscriptions",
            s.sessions.iter().map(|x| x.subscriptions.len()).sum(),
        ),
        (
            "deliveries",
            s.sessions.iter().map(|x| x.messages.len()).sum(),
        ),
        (
            "qos2_inbound",
            s.sessions.iter().map(|x| x.qos2_inbound.len()).sum(),
        ),
        ("wills", s.wills.len()),
    ]
}

/// `s` with its body ids (the bodies' places in the store's body log, as a start gives them)
/// replaced by the ids `expected` gives the same bodies, so that it compares with what was
/// submitted. Its `last_body` must be at least every id; it becomes `expected`'s.
pub fn with_ids(mut s: Snapshot, expected: &Snapshot) -> Snapshot {
    let last = s.bodies.keys().copied().max().unwrap_or(0);
    assert!(s.last_body >= last, "last_body {} < {last}", s.last_body);
    let ids: std::collections::BTreeMap<u64, u64> = s
        .bodies
        .iter()
        .filter_map(|(id, b)| {
            let same = expected.bodies.iter().find(|(_, e)| *e == b)?;
            Some((*id, *same.0))
        })
        .collect();
    let id = |old: u64| ids.get(&old).copied().unwrap_or(old);
    s.bodies = std::mem::take(&mut s.bodies)
        .into_iter()
        .map(|(old, b)| (id(old), b))
        .collect();
    for session in &mut s.sessions {
        for m in &mut session.messages {
            m.body = id(m.body);
        }
    }
    s.last_body = expected.last_body;
    s
}
