//! Persistence glue: what the broker tells the store, and how it comes back at start.
//!
//! With `persistence true` the broker records every change to durable state as a
//! [`Change`] (retained messages, persistent sessions and their subscriptions, queued and
//! in-flight QoS 1/2 messages, inbound QoS 2 ids, delayed wills). The server hands each loop
//! turn's changes to the store as one batch; the PUBACK/PUBREC written during that turn wait
//! for its commit (`acks.rs`). Clean sessions are never stored: they end with their connection
//! anyway. The broker still never touches the disk itself.

use super::acks::HeldAcks;
use super::hold::{Held, Holds};
use super::route::MsgRef;
use super::router::FnvHasher;
use super::session::{Delivery, Expiry, Message, OutState, Session, StoredBody};
use super::{Broker, SessionId, Timer};
use crate::codec::decode::Reader;
use crate::codec::properties::PropContext;
use crate::codec::{LastWill, Properties, ProtocolVersion, QoS, SubscribeOptions};
use crate::store::{
    Change, MessagePage, MessageSource, MessageState, PageRequest, QueuedMessage, SessionExpiry,
    SessionRecord, Snapshot, StoredMessage, Subscription, WillRecord,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Changes not yet handed to the store, held writes, and acknowledgements waiting for them.
pub struct Persist {
    changes: Vec<Change>,
    /// Acknowledgements written and not sent yet (`acks.rs`).
    pub(super) acks: HeldAcks,
    /// Writes of QoS 1 deliveries held back (`hold.rs`).
    pub(super) holds: Holds,
    /// A reference point to convert `Instant`s to Unix seconds and back.
    epoch: (Instant, u64),
    /// The last message body id given out (ids continue above the store's at a restore).
    last_body: u64,
    /// The last sequence number given to a stored delivery, of any session.
    last_seq: u64,
    /// Counts the batches taken (`take_changes`), from 1.
    batch: u64,
    /// Pages of spilled queues to ask the store for, after this turn's batch.
    reads: Vec<PageRequest>,
    /// The pages asked for and not come yet: (request tag, session).
    asked: Vec<(u64, SessionId)>,
    last_tag: u64,
    /// The client ids of sessions with changes recorded, shared by every change that names
    /// one (a fan-out to offline sessions makes a million); forgotten when a session ends.
    ids: HashSet<Arc<str>, BuildHasherDefault<FnvHasher>>,
}

impl Persist {
    /// `unix` is the wall-clock time at `now`, in Unix seconds.
    fn new(now: Instant, unix: u64) -> Persist {
        Persist {
            changes: Vec::new(),
            acks: HeldAcks::default(),
            holds: Holds::default(),
            epoch: (now, unix),
            last_body: 0,
            last_seq: 0,
            batch: 1,
            reads: Vec::new(),
            asked: Vec::new(),
            last_tag: 0,
            ids: HashSet::default(),
        }
    }

    /// `client_id` as the changes share it.
    fn id(&mut self, client_id: &str) -> Arc<str> {
        if let Some(id) = self.ids.get(client_id) {
            return Arc::clone(id);
        }
        let id: Arc<str> = client_id.into();
        self.ids.insert(Arc::clone(&id));
        id
    }

    fn to_unix(&self, t: Instant) -> u64 {
        let (i0, u0) = self.epoch;
        match t.checked_duration_since(i0) {
            Some(d) => u0 + d.as_secs(),
            None => u0.saturating_sub(i0.saturating_duration_since(t).as_secs()),
        }
    }

    fn to_instant(&self, unix: u64, now: Instant) -> Instant {
        let (i0, u0) = self.epoch;
        if unix >= u0 {
            i0 + Duration::from_secs(unix - u0)
        } else {
            // In the past: due now.
            i0.checked_sub(Duration::from_secs(u0 - unix))
                .unwrap_or(now)
        }
    }
}

fn properties_bytes(p: Option<&Properties>) -> Vec<u8> {
    match p {
        Some(p) if !p.is_empty() => {
            let mut out = Vec::with_capacity(p.wire_len());
            p.write(&mut out);
            out
        }
        _ => Vec::new(),
    }
}

fn properties_from(bytes: &[u8], ctx: PropContext) -> Properties {
    if bytes.is_empty() {
        return Properties::default();
    }
    Properties::read(&mut Reader::new(bytes), ctx).unwrap_or_default()
}

fn qos(q: u8) -> QoS {
    QoS::from_u8(q).unwrap_or(QoS::AtLeastOnce)
}

/// A delivery of `msg` read from the store, and its packet id and state if it was in flight.
fn delivery_from(q: QueuedMessage, msg: Rc<Message>) -> (Delivery, Option<(u16, OutState)>) {
    let d = Delivery {
        msg,
        qos: qos(q.qos),
        retain: q.retain,
        sub_ids: q.sub_ids,
        counted: true,
        group: None,
        seq: q.seq,
    };
    let inflight = match q.state {
        MessageState::Queued => None,
        MessageState::AwaitPuback => Some(OutState::AwaitPuback),
        MessageState::AwaitPubrec => Some(OutState::AwaitPubrec),
        MessageState::AwaitPubcomp => Some(OutState::AwaitPubcomp),
    };
    (d, inflight.map(|state| (q.packet_id, state)))
}

/// The store's name for an in-flight state.
pub(super) fn out_state(s: OutState) -> MessageState {
    match s {
        OutState::AwaitPuback => MessageState::AwaitPuback,
        OutState::AwaitPubrec => MessageState::AwaitPubrec,
        OutState::AwaitPubcomp => MessageState::AwaitPubcomp,
    }
}

/// Whether `topic` is in the broker's `$SYS` tree, which is never stored (as Mosquitto, which
/// compares the first four characters).
fn is_sys(topic: &str) -> bool {
    topic.starts_with("$SYS")
}

/// True for sessions that outlive their connection, the only ones stored.
pub(super) fn persistent(s: &Session) -> bool {
    s.expiry != Expiry::OnDisconnect && s.bridge.is_none_or(|b| b.stored)
}

fn stored(p: &Persist, m: &MsgRef<'_>) -> StoredMessage {
    StoredMessage {
        topic: m.topic.to_string(),
        payload: m.payload.to_vec(),
        qos: m.qos as u8,
        retain: m.retain,
        properties: properties_bytes(m.properties),
        expires_at: m.expires_at.map(|t| p.to_unix(t)),
        source: None,
    }
}

impl Persist {
    /// Gives a QoS 1/2 delivery of a persistent session `sid` its sequence number and records
    /// it, queued or in flight with `packet_id`, or holds its write (`hold.rs`) when it goes
    /// to a `connected` session while a QoS 1 message is routed.
    pub(super) fn message_added(
        &mut self,
        sid: SessionId,
        s: &mut Session,
        d: &mut Delivery,
        (packet_id, state): (u16, MessageState),
        connected: bool,
        now: Instant,
    ) {
        if d.qos == QoS::AtMostOnce || !persistent(s) {
            return;
        }
        self.last_seq += 1;
        d.seq = self.last_seq;
        if connected && d.qos == QoS::AtLeastOnce && self.holds.routing() {
            self.holds.hold(sid, d.clone(), packet_id, state, now);
            return;
        }
        let change = self.add_change(&s.client_id, d, packet_id, state);
        self.changes.push(change);
    }

    /// The change that adds `d` to a session, after its body if this batch has not named it.
    fn add_change(
        &mut self,
        client_id: &str,
        d: &Delivery,
        packet_id: u16,
        state: MessageState,
    ) -> Change {
        Change::MessageAdd {
            client_id: self.id(client_id),
            message: QueuedMessage {
                seq: d.seq,
                packet_id,
                state,
                qos: d.qos as u8,
                retain: d.retain,
                sub_ids: d.sub_ids.clone(),
                body: self.body(&d.msg),
            },
        }
    }

    /// The id of `m`'s body in the store, recording the body first if this batch has not
    /// named it yet. A message that goes to many sessions is stored once: every delivery refers
    /// to the one body. The body is named again in each later batch that refers to it, because
    /// the store deletes a body with its last delivery and may no longer hold it; naming a body
    /// it holds writes nothing.
    fn body(&mut self, m: &Message) -> u64 {
        let known = m.stored.get();
        if known.id != 0 && known.batch == self.batch {
            return known.id;
        }
        let id = if known.id != 0 {
            known.id
        } else {
            self.last_body += 1;
            self.last_body
        };
        self.changes.push(Change::MessageBody {
            id,
            message: Box::new(stored(self, &m.into())),
        });
        m.stored.set(StoredBody {
            id,
            batch: self.batch,
        });
        id
    }

    /// A new body id, for a message whose body is named by the first delivery that refers to
    /// it (batch 0: not named yet).
    pub(super) fn new_body(&mut self) -> StoredBody {
        self.last_body += 1;
        StoredBody {
            id: self.last_body,
            batch: 0,
        }
    }

    /// Records a stored QoS 2 delivery sent (now in flight with `packet_id`); a QoS 1 one
    /// records nothing.
    pub(super) fn message_sent(&mut self, s: &Session, d: &Delivery, packet_id: u16) {
        if d.seq == 0 {
            return;
        }
        if d.qos == QoS::AtLeastOnce {
            // Not written: the packet id of a QoS 1 copy in flight matters only to the
            // connection that has it. After a crash the copy is found queued and sent again
            // with a new one, a second delivery that at-least-once allows; a clean stop
            // writes the ids of those in flight (`record_inflight_qos1`). A drain of queued
            // messages writes their deletions only, and a held write (only QoS 1 is held) is
            // recorded as it was held, for the same reason.
            return;
        }
        let state = out_state(OutState::sent(d.qos));
        let client_id = self.id(&s.client_id);
        self.changes.push(Change::MessageState {
            client_id,
            seq: d.seq,
            packet_id,
            state,
        });
    }

    /// Records a delivery acknowledged or dropped, if it was stored (`seq` 0: it never was); a
    /// held write is forgotten instead, and its PUBACK may leave.
    pub(super) fn message_done(&mut self, sid: SessionId, s: &Session, seq: u64) {
        if seq == 0 {
            return;
        }
        if let Some(h) = self.holds.complete(sid, seq) {
            if let Some(key) = h.ack {
                self.acks.resolve(key, false);
            }
            return;
        }
        let client_id = self.id(&s.client_id);
        self.changes.push(Change::MessageDelete { client_id, seq });
    }

    /// Records held writes after all; the PUBACKs waiting for them now wait for this turn's
    /// batch.
    fn record_held(&mut self, client_id: &str, held: Held) {
        let change = self.add_change(client_id, &held.delivery, held.packet_id, held.state);
        self.changes.push(change);
        if let Some(key) = held.ack {
            self.acks.resolve(key, true);
        }
    }

    /// The number of changes recorded this turn.
    pub(super) fn changes_len(&self) -> usize {
        self.changes.len()
    }
}

impl Broker {
    /// Turns on change recording; `unix` is the wall-clock time at `now`, in Unix seconds, to
    /// store expiry times in a form that survives a restart.
    pub(super) fn enable_persistence(&mut self, now: Instant, unix: u64) {
        self.persist = Some(Box::new(Persist::new(now, unix)));
    }

    /// The changes recorded since the last call, for one store batch.
    pub(super) fn take_changes(&mut self) -> Vec<Change> {
        self.persist
            .as_mut()
            .map(|p| {
                if !p.changes.is_empty() {
                    p.batch += 1;
                }
                std::mem::take(&mut p.changes)
            })
            .unwrap_or_default()
    }

    /// The page requests recorded since the last call, to hand to the store after this turn's
    /// batch (which holds the messages they are to read).
    pub(super) fn take_page_requests(&mut self) -> Vec<PageRequest> {
        self.persist
            .as_mut()
            .map(|p| std::mem::take(&mut p.reads))
            .unwrap_or_default()
    }

    /// Asks the store for the next page of session `sid`'s spilled queue, if its head in
    /// memory has drained far enough (`Queue::ask_page`).
    pub(super) fn ask_for_spilled(&mut self, sid: SessionId) {
        let Some(p) = self.persist.as_deref_mut() else {
            return;
        };
        let Some(s) = self
            .sessions
            .get_mut(sid.idx as usize)
            .filter(|s| s.gen == sid.gen)
        else {
            return;
        };
        let Some(want) = s.queue.ask_page() else {
            return;
        };
        p.last_tag += 1;
        p.asked.push((p.last_tag, sid));
        p.reads.push(PageRequest {
            tag: p.last_tag,
            client_id: s.client_id.to_string(),
            after: want.after,
            max_messages: want.max_messages,
            max_bytes: want.max_bytes,
        });
    }

    /// A page of a spilled queue, read by the store's writer: its deliveries join the queue's
    /// head, in order, and go out as far as the session's window allows. A page for a session
    /// that has ended since is ignored.
    pub(crate) fn handle_stored_page(&mut self, page: MessagePage, now: Instant) {
        self.now = now;
        let Some(p) = self.persist.as_deref_mut() else {
            return;
        };
        let Some(i) = p.asked.iter().position(|&(tag, _)| tag == page.tag) else {
            return;
        };
        let (_, sid) = p.asked.swap_remove(i);
        let count = page.messages.len();
        let last = page.messages.last().map_or(0, |q| q.seq);
        let bodies = self.bodies_from(page.bodies, now);
        let mut bytes = 0;
        let deliveries: Vec<_> = page
            .messages
            .into_iter()
            .filter_map(|q| {
                let msg = bodies.get(&q.body).cloned()?;
                bytes += msg.size();
                Some(delivery_from(q, msg))
            })
            .collect();
        let Some(mut out) = self.outlet(sid) else {
            return;
        };
        for (d, inflight) in deliveries {
            out.restore(d, inflight);
        }
        if !out.session.queue.page_read(count, bytes, last) {
            log::warn!(
                "store: messages queued for {} are missing from the store; they are not delivered",
                out.session.client_id
            );
        }
        self.pump(sid);
    }

    /// How many pages have been asked for and have not come yet.
    #[cfg(test)]
    pub(super) fn pages_asked(&self) -> usize {
        self.persist
            .as_deref()
            .map_or(0, |p| p.asked.len() + p.reads.len())
    }

    /// The messages of bodies read from the store: one for all the deliveries of a body, which
    /// knows its body (batch 0: a later delivery of it names it again, see `Persist::body`).
    fn bodies_from(
        &self,
        bodies: BTreeMap<u64, StoredMessage>,
        now: Instant,
    ) -> HashMap<u64, Rc<Message>> {
        bodies
            .into_iter()
            .map(|(id, body)| {
                let msg = self.message_from(body, now);
                msg.stored.set(StoredBody { id, batch: 0 });
                (id, Rc::new(msg))
            })
            .collect()
    }

    fn message_from(&self, s: StoredMessage, now: Instant) -> Message {
        let p = self.persist.as_deref();
        let mut m = Message::new(&s.topic, &s.payload, qos(s.qos), s.retain);
        m.properties = properties_from(&s.properties, PropContext::Publish);
        m.expires_at = s.expires_at.and_then(|u| p.map(|p| p.to_instant(u, now)));
        m
    }

    fn record(&mut self, c: Change) {
        if let Some(p) = self.persist.as_mut() {
            p.changes.push(c);
        }
    }

    /// Records a retained message, with its publisher, being set, or a topic's being cleared.
    /// `$SYS` topics are not recorded: the broker recomputes them after a start, and storing
    /// them would write the whole tree at every `sys_interval` on an idle broker.
    pub(super) fn persist_retained(
        &mut self,
        topic: &str,
        msg: Option<(&MsgRef<'_>, Option<&MessageSource>)>,
    ) {
        let Some(p) = self.persist.as_deref() else {
            return;
        };
        if is_sys(topic) {
            return;
        }
        let c = match msg {
            Some((m, source)) => Change::RetainedSet {
                message: Box::new(StoredMessage {
                    source: source.cloned(),
                    ..stored(p, m)
                }),
            },
            None => Change::RetainedClear {
                topic: topic.to_string(),
            },
        };
        self.record(c);
    }

    /// Records a persistent session's record (at connect, and when it goes offline).
    pub(super) fn persist_session(&mut self, sid: SessionId) {
        let Some(p) = self.persist.as_deref() else {
            return;
        };
        let Some(s) = self.session(sid).filter(|s| persistent(s)) else {
            return;
        };
        let record = SessionRecord {
            client_id: s.client_id.to_string(),
            protocol: s.version.level(),
            expiry: match s.expiry {
                Expiry::After(n) => SessionExpiry::After(n),
                _ => SessionExpiry::Never,
            },
            expires_at: s.expires_at().map(|t| p.to_unix(t)),
        };
        self.record(Change::SessionUpsert { session: record });
    }

    /// Records the end of a session (cascades to everything it owned in the store). Recorded
    /// for every session: one that was persistent may have turned clean at its DISCONNECT.
    pub(super) fn persist_session_deleted(&mut self, s: &Session) {
        if let Some(p) = self.persist.as_mut() {
            let client_id = p.ids.take(&*s.client_id);
            let client_id = client_id.unwrap_or_else(|| s.client_id.as_ref().into());
            p.changes.push(Change::SessionDelete { client_id });
        }
    }

    /// Records a subscription set (`Some`) or removed (`None`) for a persistent session.
    pub(super) fn persist_subscription(
        &mut self,
        sid: SessionId,
        filter: &str,
        set: Option<(SubscribeOptions, u32)>,
    ) {
        if self.persist.is_none() {
            return;
        }
        let Some(s) = self.session(sid).filter(|s| persistent(s)) else {
            return;
        };
        let client_id: Arc<str> = s.client_id.as_ref().into();
        let c = match set {
            Some((o, sub_id)) => Change::SubscriptionSet {
                client_id,
                subscription: Subscription {
                    filter: filter.to_string(),
                    options: o.qos as u8
                        | (u8::from(o.no_local) << 2)
                        | (u8::from(o.retain_as_published) << 3)
                        | (o.retain_handling << 4),
                    sub_id,
                },
            },
            None => Change::SubscriptionDelete {
                client_id,
                filter: filter.to_string(),
            },
        };
        self.record(c);
    }

    /// Records a stored delivery's new state (sent, or PUBREC received).
    pub(super) fn persist_state(&mut self, sid: SessionId, seq: u64, packet_id: u16, s: OutState) {
        if seq == 0 || self.persist.is_none() {
            return;
        }
        let session = self.sessions.get(sid.idx as usize);
        if let (Some(p), Some(session)) = (
            self.persist.as_deref_mut(),
            session.filter(|s| s.gen == sid.gen),
        ) {
            let client_id = p.id(&session.client_id);
            p.changes.push(Change::MessageState {
                client_id,
                seq,
                packet_id,
                state: out_state(s),
            });
        }
    }

    /// Records a stored delivery finished or dropped.
    pub(super) fn persist_done(&mut self, sid: SessionId, seq: u64) {
        let Some(p) = self.persist.as_deref_mut() else {
            return;
        };
        if let Some(s) = self
            .sessions
            .get(sid.idx as usize)
            .filter(|s| s.gen == sid.gen)
        {
            p.message_done(sid, s, seq);
        }
    }

    /// Records the packet id of every stored QoS 1 copy in flight (`message_sent` leaves them
    /// unwritten), at shutdown: after a restart, those copies go again with DUP set and the
    /// same packet ids (v5:[MQTT-4.4.0-1]).
    pub(super) fn record_inflight_qos1(&mut self) {
        let Some(p) = self.persist.as_deref_mut() else {
            return;
        };
        for (_, s) in self.sessions.iter().filter(|(_, s)| persistent(s)) {
            let inflight = s.inflight.iter().filter(|m| {
                m.delivery.qos == QoS::AtLeastOnce
                    && m.delivery.seq != 0
                    && m.state == OutState::AwaitPuback
            });
            for m in inflight {
                let client_id = p.id(&s.client_id);
                p.changes.push(Change::MessageState {
                    client_id,
                    seq: m.delivery.seq,
                    packet_id: m.packet_id,
                    state: MessageState::AwaitPuback,
                });
            }
        }
    }

    /// Records the held writes of session `sid` now: it disconnected or ends.
    pub(super) fn record_held_of(&mut self, sid: SessionId) {
        let Some(p) = self.persist.as_deref_mut() else {
            return;
        };
        let held = p.holds.take_session(sid);
        self.record_held_writes(held);
    }

    /// Records the held writes that may wait no longer at `now` (every one at shutdown).
    pub(super) fn record_due_holds(&mut self, now: Option<Instant>) {
        let Some(p) = self.persist.as_deref_mut() else {
            return;
        };
        let held = match now {
            Some(now) => p.holds.take_due(now),
            None => p.holds.take_all(),
        };
        self.record_held_writes(held);
    }

    fn record_held_writes(&mut self, held: Vec<((SessionId, u64), Held)>) {
        let Some(p) = self.persist.as_deref_mut() else {
            return;
        };
        for ((sid, _), h) in held {
            let session = self.sessions.get(sid.idx as usize);
            if let Some(s) = session.filter(|s| s.gen == sid.gen) {
                p.record_held(&s.client_id, h);
            }
        }
    }

    /// Records an inbound QoS 2 id received (`true`) or released.
    pub(super) fn persist_qos2(&mut self, sid: SessionId, packet_id: u16, added: bool) {
        if self.persist.is_none() {
            return;
        }
        let Some(s) = self.session(sid).filter(|s| persistent(s)) else {
            return;
        };
        let client_id: Arc<str> = s.client_id.as_ref().into();
        self.record(if added {
            Change::Qos2Add {
                client_id,
                packet_id,
            }
        } else {
            Change::Qos2Delete {
                client_id,
                packet_id,
            }
        });
    }

    /// Records a delayed will waiting (`Some`) or gone.
    pub(super) fn persist_will(&mut self, sid: SessionId) {
        let Some(p) = self.persist.as_deref() else {
            return;
        };
        let Some(s) = self.session(sid).filter(|s| persistent(s)) else {
            return;
        };
        let c = match s.pending_will() {
            Some((w, due)) => Change::WillSet {
                will: Box::new(WillRecord {
                    client_id: s.client_id.to_string(),
                    topic: w.topic.clone(),
                    payload: w.payload.clone(),
                    qos: w.qos as u8,
                    retain: w.retain,
                    properties: properties_bytes(Some(&w.properties)),
                    due_at: p.to_unix(*due),
                }),
            },
            None => Change::WillDelete {
                client_id: s.client_id.as_ref().into(),
            },
        };
        self.record(c);
    }

    /// Turns on change recording and rebuilds retained messages, sessions, subscriptions,
    /// queues and wills from the store. `unix` is the wall-clock time at `now`, in Unix
    /// seconds: the store keeps expiry times as Unix seconds.
    pub(crate) fn restore(&mut self, snapshot: Snapshot, now: Instant, unix: u64) {
        self.enable_persistence(now, unix);
        let mut messages = 0usize;
        for mut m in snapshot.retained {
            if is_sys(&m.topic) {
                // Stored by an older midge: stale values, deleted from the store.
                self.record(Change::RetainedClear { topic: m.topic });
                continue;
            }
            let source = m.source.take();
            let msg = self.message_from(m, now);
            self.retained.set(&MsgRef::from(&msg), source.as_ref());
        }
        let bodies = self.bodies_from(snapshot.bodies, now);
        // Numbers go on above every stored one, those left in the store included.
        let last_seq = snapshot
            .sessions
            .iter()
            .flat_map(|s| s.messages.iter().map(|q| q.seq).chain([s.more.last_seq]))
            .max();
        if let Some(p) = self.persist.as_deref_mut() {
            p.last_body = snapshot.last_body;
            p.last_seq = last_seq.unwrap_or(0);
        }
        let sessions = snapshot.sessions.len();
        for st in snapshot.sessions {
            let rec = st.session;
            let version = match rec.protocol {
                3 => ProtocolVersion::V31,
                5 => ProtocolVersion::V5,
                _ => ProtocolVersion::V311,
            };
            let expiry = match rec.expiry {
                SessionExpiry::Never => Expiry::Never,
                SessionExpiry::After(n) => Expiry::After(n),
            };
            let client_id: Box<str> = rec.client_id.as_str().into();
            // Every restored session is offline: it expires as if its client left now, or at
            // the time recorded when it left.
            let p = self.persist.as_deref();
            let recorded = rec.expires_at.and_then(|u| p.map(|p| p.to_instant(u, now)));
            let expires_at = recorded.or_else(|| match expiry {
                Expiry::After(n) => Some(now + Duration::from_secs(u64::from(n))),
                _ => self.settings.persistent_client_expiration.map(|e| now + e),
            });
            // A bridge's stored local session gets its queue back; its subscriptions are the
            // bridge's topic lines, set up already, and it never expires.
            let bridge = self.stored_bridge_session(&client_id);
            let sid = bridge
                .unwrap_or_else(|| self.create_session(client_id.clone(), version, expiry, false));
            if let Some(s) = self.session_mut(sid) {
                if bridge.is_none() {
                    s.set_expires_at(expires_at);
                }
                s.set_incoming_qos2(st.qos2_inbound);
            }
            let head_last = st.messages.last().map_or(0, |q| q.seq);
            for q in st.messages {
                let Some(msg) = bodies.get(&q.body).cloned() else {
                    continue;
                };
                let (d, inflight) = delivery_from(q, msg);
                messages += 1;
                if let Some(mut out) = self.outlet(sid) {
                    out.restore(d, inflight);
                }
            }
            // The rest of a long queue stays in the store, read back as the head drains.
            let more = st.more;
            messages += more.count as usize;
            if let Some(s) = self.session_mut(sid).filter(|_| more.count > 0) {
                let (count, bytes) = (more.count as usize, more.bytes as usize);
                s.queue.restore_spilled(count, bytes, head_last);
            }
            for sub in st.subscriptions.into_iter().filter(|_| bridge.is_none()) {
                let o = sub.options;
                let options = SubscribeOptions {
                    qos: qos(o & 3),
                    no_local: o & 4 != 0,
                    retain_as_published: o & 8 != 0,
                    retain_handling: (o >> 4) & 3,
                };
                // Read from the store: nothing to record.
                self.add_subscription(sid, &sub.filter, options, sub.sub_id);
            }
            if let Some(at) = self.session(sid).and_then(|s| s.expires_at()) {
                self.timers.push(at, Timer::SessionExpiry(sid));
            }
        }
        self.persist_bridge_sessions();
        for w in snapshot.wills {
            let Some(sid) = self.session_of(&w.client_id) else {
                continue;
            };
            let p = self.persist.as_deref();
            let due = p.map_or(now, |p| p.to_instant(w.due_at, now));
            let will = LastWill {
                topic: w.topic,
                payload: w.payload,
                qos: qos(w.qos),
                retain: w.retain,
                properties: properties_from(&w.properties, PropContext::Will),
            };
            if let Some(s) = self.session_mut(sid) {
                s.set_pending_will(Box::new(will), due);
                self.timers.push(due, Timer::WillDelay(sid));
            }
        }
        log::info!(
            target: "notice",
            "Restored {} retained messages, {} sessions and {} queued messages from the store.",
            self.retained.len(),
            sessions,
            messages
        );
    }
}
