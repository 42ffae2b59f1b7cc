//! Switching from Mosquitto keeps the data: on the first start with a new store, the retained
//! messages, persistent sessions, their subscriptions and queued messages of a Mosquitto
//! `mosquitto.db` found in `persistence_location` become [`Change`]s, written into the new
//! store like any other batch. The broker then restores from the store as usual.
//!
//! Mosquitto's file is only read (opened read-only, whole, once): midge never changes or deletes
//! it, so the operator can go back to Mosquitto. A store that exists already is never filled
//! again, so this happens once.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::mosquitto::{self, Direction, Record, StoredMsg, EXPIRY_NEVER};
use super::{
    schema, Change, MessageSource, MessageState, QueuedMessage, SessionExpiry, SessionRecord,
    Snapshot, StoreError, StoredMessage, Subscription, MOSQUITTO_FILE,
};
use crate::codec::decode::Reader;
use crate::codec::properties::PropContext;
use crate::codec::Properties;

/// Mosquitto's `mosquitto_msg_state` values that matter for a message on its way out.
mod state {
    pub const PUBLISH_QOS1: u8 = 2;
    pub const WAIT_FOR_PUBACK: u8 = 3;
    pub const PUBLISH_QOS2: u8 = 4;
    pub const WAIT_FOR_PUBREC: u8 = 5;
    pub const RESEND_PUBREL: u8 = 6;
    pub const WAIT_FOR_PUBREL: u8 = 7;
    pub const WAIT_FOR_PUBCOMP: u8 = 9;
    pub const QUEUED: u8 = 11;
}

/// What an import took, and what it left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub retained: usize,
    pub sessions: usize,
    pub subscriptions: usize,
    pub messages: usize,
    /// Inbound QoS 2 messages Mosquitto held until their PUBREL, published at the import.
    pub released: usize,
    /// Messages whose Message Expiry Interval had run out, and sessions already expired.
    pub expired: usize,
    /// Entries that were read but cannot be kept (see [`convert`]), with why.
    pub skipped: Vec<String>,
    /// Where reading stopped early, if it did.
    pub damage: Option<mosquitto::Damage>,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} retained messages, {} sessions, {} subscriptions and {} queued messages",
            self.retained, self.sessions, self.subscriptions, self.messages
        )
    }
}

/// The Mosquitto database to import from, if `dir` holds one, read whole: the configured
/// `persistence_file` when it carries Mosquitto's signature, else `mosquitto.db`. A candidate
/// that exists but cannot be read is an error: skipping it would lose its data for good, since
/// the import happens only once.
fn read_source(
    dir: &Path,
    configured_file: Option<&str>,
) -> Result<Option<(PathBuf, Vec<u8>)>, std::io::Error> {
    let candidates = configured_file
        .map(|name| dir.join(name))
        .into_iter()
        .chain(std::iter::once(dir.join(MOSQUITTO_FILE)));
    for path in candidates {
        // Opened read-only: Mosquitto's file is never changed.
        match std::fs::read(&path) {
            Ok(bytes) if bytes.starts_with(super::MOSQUITTO_SIGNATURE) => {
                return Ok(Some((path, bytes)))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot read {} to import it: {e}", path.display()),
                ))
            }
        }
    }
    Ok(None)
}

/// Turns the records of a Mosquitto database into store changes. `now` (Unix seconds) decides
/// what has expired. Sans-IO.
///
/// Kept: retained messages; sessions that outlive their connection, with their subscriptions
/// and their outgoing QoS 1/2 messages, queued or in flight (a message held for several
/// sessions is one stored message in Mosquitto's file and one body here too); inbound
/// QoS 2 messages acknowledged with PUBREC, published now (see `publish_released`).
/// Not kept, counted in [`ImportReport::skipped`]: queued QoS 0 messages (midge never stores
/// those), sessions whose expiry interval is 0, and entries that refer to something the file
/// does not hold. An inbound QoS 2 message whose PUBREC did not go out is left to the client,
/// which sends it again.
pub fn convert(parsed: &mosquitto::Parsed, now: u64) -> (Vec<Change>, ImportReport) {
    let mut report = ImportReport {
        damage: parsed.damage.clone(),
        ..ImportReport::default()
    };
    let mut stored: HashMap<u64, &StoredMsg> = HashMap::new();
    for r in &parsed.records {
        if let Record::Message(m) = r {
            stored.insert(m.store_id, m);
        }
    }
    let expired = |m: &StoredMsg| m.expiry_time > 0 && (m.expiry_time as u64) <= now;

    let mut changes = Vec::new();
    let mut sessions: HashSet<&str> = HashSet::new();
    for r in &parsed.records {
        let Record::Client(c) = r else { continue };
        let expiry = match c.session_expiry_interval {
            EXPIRY_NEVER => SessionExpiry::Never,
            0 => {
                report.skipped.push(format!(
                    "session {} (its session ends with its connection)",
                    c.client_id
                ));
                continue;
            }
            n => SessionExpiry::After(n),
        };
        let expires_at = match expiry {
            SessionExpiry::After(_) if c.session_expiry_time > 0 => {
                Some(c.session_expiry_time as u64)
            }
            _ => None,
        };
        if expires_at.is_some_and(|t| t <= now) {
            report.expired += 1;
            continue;
        }
        if c.client_id.is_empty() || !sessions.insert(&c.client_id) {
            continue;
        }
        changes.push(Change::SessionUpsert {
            session: SessionRecord {
                client_id: c.client_id.clone(),
                // Mosquitto does not record the protocol; a session with a finite expiry
                // interval can only be an MQTT 5 client's. The next CONNECT sets it anyway.
                protocol: if expiry == SessionExpiry::Never { 4 } else { 5 },
                expiry,
                expires_at,
            },
        });
        report.sessions += 1;
    }

    // One counter for every session's messages, as the broker numbers them.
    let mut seq = 0u64;
    // Mosquitto's store id -> the body written for it (`None`: it could not be read).
    let mut bodies: HashMap<u64, Option<u64>> = HashMap::new();
    let mut next_body = 0u64;
    let mut released: Vec<(&str, u16, &StoredMsg)> = Vec::new();
    let mut in_flight: HashSet<(&str, u16)> = HashSet::new();
    for r in &parsed.records {
        match r {
            Record::Subscription(s) if sessions.contains(s.client_id.as_str()) => {
                if s.filter.is_empty() {
                    continue;
                }
                changes.push(Change::SubscriptionSet {
                    client_id: s.client_id.as_str().into(),
                    subscription: Subscription {
                        filter: s.filter.clone(),
                        options: (s.qos & 3) | (s.options & 0x0C),
                        sub_id: s.identifier,
                    },
                });
                report.subscriptions += 1;
            }
            Record::ClientMessage(cm) if sessions.contains(cm.client_id.as_str()) => {
                let who = cm.client_id.as_str();
                if cm.direction == Direction::In {
                    match stored.get(&cm.store_id) {
                        // PUBREC went out: the message is the broker's to publish.
                        Some(m) if cm.state == state::WAIT_FOR_PUBREL && cm.mid != 0 => {
                            released.push((who, cm.mid, *m));
                        }
                        // PUBREC did not go out: the client sends the PUBLISH again.
                        _ => {}
                    }
                    continue;
                }
                if cm.qos == 0 {
                    report
                        .skipped
                        .push(format!("a queued QoS 0 message for {who}"));
                    continue;
                }
                let Some(m) = stored.get(&cm.store_id) else {
                    report.skipped.push(format!(
                        "a message for {who} that refers to message {} the file does not hold",
                        cm.store_id
                    ));
                    continue;
                };
                if expired(m) {
                    report.expired += 1;
                    continue;
                }
                let body = *bodies.entry(cm.store_id).or_insert_with(|| {
                    let message = message(m, false, &mut report)?;
                    next_body += 1;
                    changes.push(Change::MessageBody {
                        id: next_body,
                        message: Box::new(message),
                    });
                    Some(next_body)
                });
                let Some(body) = body else {
                    continue;
                };
                let mut flow = match cm.state {
                    state::WAIT_FOR_PUBACK => MessageState::AwaitPuback,
                    state::WAIT_FOR_PUBREC => MessageState::AwaitPubrec,
                    state::RESEND_PUBREL | state::WAIT_FOR_PUBCOMP => MessageState::AwaitPubcomp,
                    state::QUEUED | state::PUBLISH_QOS1 | state::PUBLISH_QOS2 => {
                        MessageState::Queued
                    }
                    other => {
                        report
                            .skipped
                            .push(format!("a message for {who} in Mosquitto state {other}"));
                        continue;
                    }
                };
                // An in-flight message keeps its packet id, so the client's acknowledgement
                // still matches; one without a usable id starts over from the queue.
                if flow != MessageState::Queued && (cm.mid == 0 || !in_flight.insert((who, cm.mid)))
                {
                    flow = MessageState::Queued;
                }
                seq += 1;
                changes.push(Change::MessageAdd {
                    client_id: cm.client_id.as_str().into(),
                    message: QueuedMessage {
                        seq,
                        packet_id: if flow == MessageState::Queued {
                            0
                        } else {
                            cm.mid
                        },
                        state: flow,
                        qos: cm.qos.min(m.qos),
                        retain: cm.retain,
                        sub_ids: properties(&cm.properties)
                            .map(|mut p| std::mem::take(&mut p.subscription_identifiers))
                            .unwrap_or_default()
                            .into(),
                        body,
                    },
                });
                report.messages += 1;
            }
            Record::Retain { store_id } => {
                let Some(m) = stored.get(store_id) else {
                    report.skipped.push(format!(
                        "a retained entry that refers to message {store_id} the file does not hold"
                    ));
                    continue;
                };
                if expired(m) {
                    report.expired += 1;
                    continue;
                }
                if m.topic.starts_with("$SYS") || m.topic.contains(['+', '#']) {
                    report
                        .skipped
                        .push(format!("the retained message of {}", m.topic));
                    continue;
                }
                if let Some(message) = message(m, true, &mut report) {
                    changes.push(Change::RetainedSet {
                        message: Box::new(message),
                    });
                    report.retained += 1;
                }
            }
            _ => {}
        }
    }
    publish_released(
        &released,
        &parsed.records,
        &mut seq,
        &mut next_body,
        &mut changes,
        &mut report,
        now,
    );
    (changes, report)
}

/// Inbound QoS 2 messages that Mosquitto acknowledged with PUBREC and held until the PUBREL:
/// midge delivers a QoS 2 message when it arrives and keeps only its packet id until the
/// PUBREL, so they are published now, to the imported sessions (the only ones there are at a
/// start) and as retained, and their packet ids are kept so that the PUBREL completes the flow
/// and a re-sent PUBLISH is not delivered twice (v5:[MQTT-4.3.3-10]).
fn publish_released<'a>(
    released: &[(&'a str, u16, &'a StoredMsg)],
    records: &'a [Record],
    seq: &mut u64,
    next_body: &mut u64,
    changes: &mut Vec<Change>,
    report: &mut ImportReport,
    now: u64,
) {
    let imported: HashSet<String> = changes
        .iter()
        .filter_map(|c| match c {
            Change::SessionUpsert { session } => Some(session.client_id.clone()),
            _ => None,
        })
        .collect();
    let subs: Vec<&mosquitto::Sub> = records
        .iter()
        .filter_map(|r| match r {
            Record::Subscription(s) if imported.contains(&s.client_id) && !s.filter.is_empty() => {
                Some(s)
            }
            _ => None,
        })
        .collect();
    for &(publisher, mid, m) in released {
        changes.push(Change::Qos2Add {
            client_id: publisher.into(),
            packet_id: mid,
        });
        if m.expiry_time > 0 && (m.expiry_time as u64) <= now {
            report.expired += 1;
            continue;
        }
        let Some(message) = message(m, false, report) else {
            continue;
        };
        if m.retain {
            changes.push(if m.payload.is_empty() {
                Change::RetainedClear {
                    topic: m.topic.clone(),
                }
            } else {
                Change::RetainedSet {
                    message: Box::new(StoredMessage {
                        retain: true,
                        ..message.clone()
                    }),
                }
            });
        }
        // One delivery per session: the highest QoS its matching subscriptions grant, with
        // all their identifiers (v5:[MQTT-3.3.4-3]).
        let mut deliveries: Vec<(&str, u8, bool, Vec<u32>)> = Vec::new();
        for s in subs
            .iter()
            .filter(|s| crate::topic::topic_matches(&s.filter, &m.topic))
        {
            let no_local = s.options & 0x04 != 0;
            if no_local && s.client_id == publisher {
                continue;
            }
            let qos = s.qos.min(m.qos);
            let keep_retain = s.options & 0x08 != 0 && m.retain;
            match deliveries.iter_mut().find(|d| d.0 == s.client_id) {
                Some(d) => {
                    d.1 = d.1.max(qos);
                    d.2 |= keep_retain;
                    d.3.extend((s.identifier != 0).then_some(s.identifier));
                }
                None => deliveries.push((
                    &s.client_id,
                    qos,
                    keep_retain,
                    (s.identifier != 0)
                        .then_some(s.identifier)
                        .into_iter()
                        .collect(),
                )),
            }
        }
        // One body for every session it goes to, written with the first of them.
        let mut written = None;
        for (client_id, qos, retain, sub_ids) in deliveries {
            if qos == 0 {
                report
                    .skipped
                    .push(format!("a QoS 0 delivery of {} to {client_id}", m.topic));
                continue;
            }
            let body = *written.get_or_insert_with(|| {
                *next_body += 1;
                changes.push(Change::MessageBody {
                    id: *next_body,
                    message: Box::new(message.clone()),
                });
                *next_body
            });
            *seq += 1;
            changes.push(Change::MessageAdd {
                client_id: client_id.into(),
                message: QueuedMessage {
                    seq: *seq,
                    packet_id: 0,
                    state: MessageState::Queued,
                    qos,
                    retain,
                    sub_ids: sub_ids.into(),
                    body,
                },
            });
            report.messages += 1;
        }
        report.released += 1;
    }
}

/// A stored message in midge's form; `None` (counted as skipped) when its properties cannot be
/// read.
fn message(m: &StoredMsg, retained: bool, report: &mut ImportReport) -> Option<StoredMessage> {
    let props = if m.properties.is_empty() {
        Properties::default()
    } else {
        let Some(mut p) = properties(&m.properties) else {
            report.skipped.push(format!(
                "a message on {} whose MQTT 5 properties cannot be read",
                m.topic
            ));
            return None;
        };
        // Subscription identifiers belong to a delivery, never to the message.
        p.subscription_identifiers.clear();
        p
    };
    Some(StoredMessage {
        topic: m.topic.clone(),
        payload: m.payload.clone(),
        qos: m.qos,
        retain: m.retain || retained,
        properties: if props.is_empty() {
            Vec::new()
        } else {
            let mut out = Vec::with_capacity(props.wire_len());
            props.write(&mut out);
            out
        },
        expires_at: (m.expiry_time > 0).then_some(m.expiry_time as u64),
        // The publisher, for check_retain_source; Mosquitto records the listener by port,
        // which the store cannot map to a listener, so the first listener's ACL is asked.
        source: (retained && !m.source_id.is_empty()).then(|| MessageSource {
            client_id: m.source_id.clone(),
            username: m.source_username.clone(),
            listener: 0,
        }),
    })
}

/// Reads a property list (with its length prefix) as a PUBLISH carries it. The store keeps
/// the expiry as a time of its own (`expires_at`), so the interval is dropped.
fn properties(bytes: &[u8]) -> Option<Properties> {
    if bytes.is_empty() {
        return Some(Properties::default());
    }
    let mut r = Reader::new(bytes);
    let mut p = Properties::read(&mut r, PropContext::Publish).ok()?;
    if !r.is_empty() {
        return None;
    }
    p.message_expiry_interval = None;
    Some(p)
}

/// On the first start of a new store (`conn`, just created at `path`), imports the Mosquitto
/// database of `dir`, if there is one, and returns the store's contents read back. Damage in
/// Mosquitto's file is logged and what precedes it is imported: start-up goes on. If the file
/// cannot be read (permissions) or the import cannot be written (a full disk), the new store is
/// removed again (it held nothing else) so that the next start tries again, and start-up stops.
pub(crate) fn into_new_store(
    conn: Connection,
    snapshot: Snapshot,
    log: &mut super::BodyLog,
    dir: &Path,
    configured_file: Option<&str>,
    path: &Path,
) -> Result<(Connection, Snapshot), StoreError> {
    let (source, bytes) = match read_source(dir, configured_file) {
        Ok(Some(found)) => found,
        Ok(None) => return Ok((conn, snapshot)),
        Err(e) => {
            discard(conn, path);
            return Err(StoreError::Io(e));
        }
    };
    let parsed = mosquitto::parse(&bytes);
    let (changes, report) = convert(&parsed, super::unix_now());
    if let Some(d) = &report.damage {
        log::error!(
            "Mosquitto's database {} is damaged {d}; importing only what precedes it",
            source.display()
        );
    }
    const SHOWN: usize = 10;
    for why in report.skipped.iter().take(SHOWN) {
        log::warn!("import from {}: not imported: {why}", source.display());
    }
    if report.skipped.len() > SHOWN {
        log::warn!(
            "import from {}: {} more entries not imported",
            source.display(),
            report.skipped.len() - SHOWN
        );
    }
    let mut conn = conn;
    let written = super::apply_batches(&mut conn, &[(0, changes)], &mut Default::default(), log)
        .and_then(|()| log.sync().map_err(schema::log_error))
        .and_then(|()| conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))
        .and_then(|()| schema::load(&conn, log));
    let snapshot = match written {
        Ok(s) => s,
        Err(e) => {
            discard(conn, path);
            log::error!(
                "import from {} could not be written to {}: {e}",
                source.display(),
                path.display()
            );
            return Err(StoreError::Sql(e));
        }
    };
    if report.released > 0 {
        log::info!(
            target: "notice",
            "Published {} inbound QoS 2 messages that Mosquitto had acknowledged with PUBREC \
             and held until their PUBREL.",
            report.released
        );
    }
    log::info!(
        target: "notice",
        "Imported {report} from Mosquitto's database {} ({} expired entries left out); \
         midge never changes that file.",
        source.display(),
        report.expired
    );
    Ok((conn, snapshot))
}

/// Removes the store just created (it holds nothing else), so that the next start imports.
fn discard(conn: Connection, path: &Path) {
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(super::recover::with_suffix(path, suffix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mosquitto::{ClientMsg, Parsed, Sub};

    fn msg(store_id: u64, topic: &str, qos: u8, expiry_time: i64) -> Record {
        Record::Message(StoredMsg {
            store_id,
            expiry_time,
            source_id: "pub".into(),
            source_username: None,
            source_port: 1883,
            topic: topic.into(),
            payload: b"x".to_vec(),
            qos,
            retain: false,
            properties: Vec::new(),
        })
    }

    fn client(id: &str, interval: u32, expiry_time: i64) -> Record {
        Record::Client(mosquitto::Client {
            client_id: id.into(),
            username: None,
            session_expiry_time: expiry_time,
            session_expiry_interval: interval,
            last_mid: 0,
            listener_port: 0,
        })
    }

    fn cmsg(id: &str, store_id: u64, mid: u16, qos: u8, st: u8, direction: Direction) -> Record {
        Record::ClientMessage(ClientMsg {
            client_id: id.into(),
            store_id,
            mid,
            qos,
            state: st,
            retain: false,
            dup: false,
            direction,
            // Subscription identifier 7.
            properties: vec![2, 0x0B, 7],
        })
    }

    fn queued(changes: &[Change]) -> Vec<(String, u64, u16, MessageState, u8, Vec<u32>)> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::MessageAdd { client_id, message } => Some((
                    client_id.to_string(),
                    message.seq,
                    message.packet_id,
                    message.state,
                    message.qos,
                    message.sub_ids.as_slice().to_vec(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn outgoing_flows_keep_their_packet_ids() {
        use Direction::{In, Out};
        let parsed = Parsed {
            version: 6,
            records: vec![
                msg(1, "a", 2, 0),
                msg(2, "b", 1, 0),
                client("s", EXPIRY_NEVER, 0),
                cmsg("s", 1, 5, 2, state::WAIT_FOR_PUBCOMP, Out),
                cmsg("s", 2, 6, 1, state::WAIT_FOR_PUBACK, Out),
                cmsg("s", 2, 6, 1, state::WAIT_FOR_PUBACK, Out),
                cmsg("s", 2, 9, 1, state::QUEUED, Out),
                cmsg("s", 1, 3, 2, 7, In),
                cmsg("s", 2, 0, 0, 1, Out),
                cmsg("s", 99, 4, 1, state::QUEUED, Out),
                Record::Subscription(Sub {
                    client_id: "s".into(),
                    filter: "a/#".into(),
                    qos: 2,
                    options: 0x04,
                    identifier: 7,
                }),
            ],
            damage: None,
        };
        let (changes, report) = convert(&parsed, 1000);
        let q = |seq, pid, st, qos| ("s".to_string(), seq, pid, st, qos, vec![7]);
        assert_eq!(
            queued(&changes),
            [
                q(1, 5, MessageState::AwaitPubcomp, 2),
                q(2, 6, MessageState::AwaitPuback, 1),
                // The same packet id twice: the second goes back to the queue.
                q(3, 0, MessageState::Queued, 1),
                q(4, 0, MessageState::Queued, 1),
            ]
        );
        assert_eq!(
            (report.sessions, report.subscriptions, report.messages),
            (1, 1, 4)
        );
        // QoS 0, and a reference to a message the file does not hold.
        assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
        // The inbound QoS 2 message is published, but not to its publisher (No Local).
        assert_eq!(report.released, 1);
        assert!(changes.contains(&Change::Qos2Add {
            client_id: "s".into(),
            packet_id: 3
        }));
        assert!(changes.contains(&Change::SubscriptionSet {
            client_id: "s".into(),
            subscription: Subscription {
                filter: "a/#".into(),
                options: 2 | 0x04,
                sub_id: 7,
            },
        }));
    }

    /// A message Mosquitto holds for several sessions (one stored message, several client
    /// messages referring to it) is one body here too, written before its first delivery.
    #[test]
    fn a_message_held_for_several_sessions_is_one_body() {
        use Direction::Out;
        let parsed = Parsed {
            version: 6,
            records: vec![
                msg(1, "a", 1, 0),
                msg(2, "b", 1, 0),
                client("s", EXPIRY_NEVER, 0),
                client("t", EXPIRY_NEVER, 0),
                cmsg("s", 1, 0, 1, state::QUEUED, Out),
                cmsg("t", 1, 0, 1, state::QUEUED, Out),
                cmsg("t", 2, 0, 1, state::QUEUED, Out),
                cmsg("s", 1, 0, 1, state::QUEUED, Out),
            ],
            damage: None,
        };
        let (changes, report) = convert(&parsed, 1000);
        assert_eq!(report.messages, 4);
        let mut named = Vec::new();
        let mut refers = Vec::new();
        for c in &changes {
            match c {
                Change::MessageBody { id, message } => named.push((*id, message.topic.clone())),
                Change::MessageAdd { message, .. } => {
                    assert!(named.iter().any(|(id, _)| *id == message.body), "{c:?}");
                    refers.push(message.body);
                }
                _ => {}
            }
        }
        assert_eq!(named, [(1, "a".to_string()), (2, "b".to_string())]);
        assert_eq!(refers, [1, 1, 2, 1]);
    }

    /// A QoS 2 message Mosquitto acknowledged with PUBREC and held for the PUBREL is published
    /// at the import: queued after what the subscribers had, retained if it was, its packet id
    /// kept for the PUBREL. One whose PUBREC did not go out is left to the client.
    #[test]
    fn inbound_messages_after_pubrec_are_published() {
        let sub = |id: &str, filter: &str, qos, options, identifier| {
            Record::Subscription(Sub {
                client_id: id.into(),
                filter: filter.into(),
                qos,
                options,
                identifier,
            })
        };
        let mut held = msg(1, "h/t", 2, 0);
        if let Record::Message(m) = &mut held {
            m.retain = true;
        }
        let parsed = Parsed {
            version: 6,
            records: vec![
                held,
                msg(2, "h/t", 1, 0),
                client("pub", EXPIRY_NEVER, 0),
                cmsg("pub", 1, 11, 2, state::WAIT_FOR_PUBREL, Direction::In),
                cmsg("pub", 2, 12, 2, 10, Direction::In),
                client("sub", 600, 0),
                cmsg("sub", 2, 0, 1, state::QUEUED, Direction::Out),
                client("low", EXPIRY_NEVER, 0),
                sub("sub", "h/+", 1, 0x08, 4),
                sub("sub", "h/#", 2, 0, 5),
                sub("low", "#", 0, 0, 0),
                sub("pub", "x", 2, 0, 0),
            ],
            damage: None,
        };
        let (changes, report) = convert(&parsed, 1000);
        assert_eq!(report.released, 1);
        assert_eq!(
            queued(&changes),
            [
                ("sub".to_string(), 1, 0, MessageState::Queued, 1, vec![7]),
                ("sub".to_string(), 2, 0, MessageState::Queued, 2, vec![4, 5]),
            ]
        );
        let retain_flags: Vec<bool> = changes
            .iter()
            .filter_map(|c| match c {
                Change::MessageAdd { message, .. } => Some(message.retain),
                _ => None,
            })
            .collect();
        assert_eq!(retain_flags, [false, true], "Retain As Published");
        assert!(changes.contains(&Change::Qos2Add {
            client_id: "pub".into(),
            packet_id: 11
        }));
        assert!(!changes
            .iter()
            .any(|c| matches!(c, Change::Qos2Add { packet_id: 12, .. })));
        assert!(changes
            .iter()
            .any(|c| matches!(c, Change::RetainedSet { message } if message.topic == "h/t")));
        assert_eq!(report.skipped, ["a QoS 0 delivery of h/t to low"]);
    }

    #[test]
    fn expired_sessions_and_messages_are_left_out() {
        let parsed = Parsed {
            version: 6,
            records: vec![
                msg(1, "old", 1, 900),
                msg(2, "new", 1, 2000),
                client("gone", 60, 999),
                client("kept", 60, 1060),
                client("ends-with-connection", 0, 0),
                cmsg("kept", 1, 1, 1, state::QUEUED, Direction::Out),
                cmsg("kept", 2, 2, 1, state::QUEUED, Direction::Out),
                cmsg("gone", 2, 2, 1, state::QUEUED, Direction::Out),
                Record::Retain { store_id: 1 },
                Record::Retain { store_id: 2 },
            ],
            damage: None,
        };
        let (changes, report) = convert(&parsed, 1000);
        assert_eq!(
            (report.retained, report.sessions, report.messages),
            (1, 1, 1)
        );
        assert_eq!(
            report.expired, 3,
            "a session, a queued and a retained message"
        );
        assert!(changes.contains(&Change::SessionUpsert {
            session: SessionRecord {
                client_id: "kept".into(),
                protocol: 5,
                expiry: SessionExpiry::After(60),
                expires_at: Some(1060),
            }
        }));
        let retained: Vec<_> = changes
            .iter()
            .filter_map(|c| match c {
                Change::RetainedSet { message } => Some((message.topic.as_str(), message.retain)),
                _ => None,
            })
            .collect();
        assert_eq!(retained, [("new", true)]);
    }
}
