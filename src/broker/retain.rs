//! Retained messages: the last message kept per topic, and its replay to new subscriptions.
//!
//! A PUBLISH with the retain flag replaces the topic's retained message, and one with an empty
//! payload clears it (v311 §3.3.1.3). A new subscription gets the retained messages that match
//! its filter, after the SUBACK, if the subscriber may read it and, with `check_retain_source`,
//! if its publisher may still publish it. They are streamed: the session keeps the list of
//! matching messages (8 bytes each) and sends the next one whenever its window and output
//! buffer have room, so a replay of any size arrives whole, at QoS 0 too, and a value replaced
//! meanwhile is never sent after its successor. The store is told of each change through
//! `persist.rs`, which also brings the retained messages back at start.
//!
//! A broker may hold millions of retained topics (every device's state and configuration) for
//! days, so a retained message at rest is kept compact ([`Kept`]): its topic and payload in one
//! allocation, its publisher and MQTT 5 parts shared. A replay writes a QoS 0 message straight
//! from it, and copies a QoS 1/2 one into a [`Message`] for the session to keep until it is
//! acknowledged.

use super::deliver::{Pending, Sent};
use super::persist::persistent;
use super::route::{may_read, MsgRef, Target};
use super::router::FnvHasher;
use super::session::{Message, Replay, Session, StoredBody};
use super::{Broker, SessionId};
use crate::codec::{Properties, QoS};
use crate::store::MessageSource;
use crate::topic::topic_matches;
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::rc::Rc;
use std::time::Instant;

/// A retained message at rest: 24 bytes plus its bytes, with its topic's length and its QoS
/// in one varint before them.
#[derive(Debug)]
pub struct Kept {
    /// `topic length << 2 | QoS` as a little-endian base-128 varint (one byte for a topic
    /// under 32 bytes), then the topic, then the payload.
    bytes: Box<[u8]>,
    /// Its publisher, properties and expiry, when it has any.
    extras: Option<Rc<Extras>>,
}

/// What a retained message may carry besides topic, payload and QoS. The messages a client
/// retains one after the other without properties or expiry share one: a device that
/// retains thousands of topics (Zigbee2MQTT) costs one copy of its client id, not one per topic.
#[derive(Debug)]
struct Extras {
    /// The client that published it (`None`: the broker itself, a will or a bridge, which
    /// `check_retain_source` does not re-check).
    source: Option<MessageSource>,
    /// MQTT 5 properties to forward.
    properties: Properties,
    /// When a v5 Message Expiry Interval runs out.
    expires_at: Option<Instant>,
}

impl Kept {
    fn new(m: &MsgRef<'_>, extras: Option<Rc<Extras>>) -> Kept {
        let mut head = [0u8; 10];
        let mut len = 0;
        let mut value = (m.topic.len() as u64) << 2 | m.qos as u64;
        while value >= 0x80 {
            head[len] = value as u8 | 0x80;
            value >>= 7;
            len += 1;
        }
        head[len] = value as u8;
        let head = &head[..=len];
        let mut bytes = Vec::with_capacity(head.len() + m.topic.len() + m.payload.len());
        bytes.extend_from_slice(head);
        bytes.extend_from_slice(m.topic.as_bytes());
        bytes.extend_from_slice(m.payload);
        Kept {
            bytes: bytes.into_boxed_slice(),
            extras,
        }
    }

    /// The varint's value and the offset of the topic.
    fn head(&self) -> (usize, usize) {
        let mut value = 0usize;
        for (i, b) in self.bytes.iter().enumerate() {
            value |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (value, i + 1);
            }
        }
        (value, self.bytes.len())
    }

    /// The topic's bytes: what the set hashes and compares, with no UTF-8 check.
    fn topic_bytes(&self) -> &[u8] {
        let (head, at) = self.head();
        self.bytes.get(at..at + (head >> 2)).unwrap_or_default()
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        // Copied from a `&str` in `Kept::new` and never written since: the check cannot fail.
        std::str::from_utf8(self.topic_bytes()).unwrap_or_default()
    }

    /// The payload.
    pub fn payload(&self) -> &[u8] {
        let (head, at) = self.head();
        self.bytes.get(at + (head >> 2)..).unwrap_or_default()
    }

    /// The QoS it was published at.
    pub fn qos(&self) -> QoS {
        match self.bytes.first().map_or(0, |b| b & 3) {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        }
    }

    fn source(&self) -> Option<&MessageSource> {
        self.extras.as_ref()?.source.as_ref()
    }

    fn expires_at(&self) -> Option<Instant> {
        self.extras.as_ref()?.expires_at
    }

    /// The message as routing and the store see one.
    fn as_msg_ref(&self) -> MsgRef<'_> {
        MsgRef {
            topic: self.topic(),
            payload: self.payload(),
            qos: self.qos(),
            retain: true,
            properties: self
                .extras
                .as_ref()
                .map(|e| &e.properties)
                .filter(|p| !p.is_empty()),
            expires_at: self.expires_at(),
            origin: None,
            source: self.source(),
        }
    }
}

/// A [`Kept`] found by its topic, kept once.
struct ByTopic(Rc<Kept>);

// Looked up by the topic's bytes, so that a lookup never checks UTF-8 again.
impl Borrow<[u8]> for ByTopic {
    fn borrow(&self) -> &[u8] {
        self.0.topic_bytes()
    }
}

impl PartialEq for ByTopic {
    fn eq(&self, other: &ByTopic) -> bool {
        self.0.topic_bytes() == other.0.topic_bytes()
    }
}

impl Eq for ByTopic {}

impl Hash for ByTopic {
    // As the `[u8]` it borrows as, which lookups hash.
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.topic_bytes().hash(h);
    }
}

/// The most retained messages a replay sends in topic order; a larger one goes in no
/// particular order.
const SORTED_REPLAY: usize = 10_000;

/// The retained messages, one per topic.
#[derive(Default)]
pub(super) struct Retained {
    set: HashSet<ByTopic, BuildHasherDefault<FnvHasher>>,
    /// The extras of the latest message stored with a publisher and nothing else, for the
    /// next ones of the same publisher without properties or expiry to share.
    last: Option<Rc<Extras>>,
    /// The store body that a replay recorded a retained message under, for a persistent
    /// session, by the message's address (unique while the set holds it): the next replays
    /// of the message refer to the same body, one however many sessions get it.
    bodies: HashMap<*const Kept, StoredBody, BuildHasherDefault<FnvHasher>>,
}

impl Retained {
    /// How many topics have a retained message.
    pub(super) fn len(&self) -> usize {
        self.set.len()
    }

    /// The payload bytes of every retained message.
    pub(super) fn payload_bytes(&self) -> usize {
        self.set.iter().map(|k| k.0.payload().len()).sum()
    }

    /// Makes `m`, published by `source`, the retained message of its topic.
    pub(super) fn set(&mut self, m: &MsgRef<'_>, source: Option<&MessageSource>) {
        let extras = if m.properties.is_some() || m.expires_at.is_some() {
            Some(Rc::new(Extras {
                source: source.cloned(),
                properties: m.properties.cloned().unwrap_or_default(),
                expires_at: m.expires_at,
            }))
        } else if let Some(source) = source {
            match &self.last {
                Some(last) if last.source.as_ref() == Some(source) => Some(last.clone()),
                _ => {
                    let shared = Rc::new(Extras {
                        source: Some(source.clone()),
                        properties: Properties::default(),
                        expires_at: None,
                    });
                    self.last = Some(shared.clone());
                    Some(shared)
                }
            }
        } else {
            None
        };
        if let Some(old) = self.set.replace(ByTopic(Rc::new(Kept::new(m, extras)))) {
            self.forget(&old.0);
        }
    }

    /// The retained message of `topic`, if any.
    fn get(&self, topic: &str) -> Option<&Rc<Kept>> {
        self.set.get(topic.as_bytes()).map(|k| &k.0)
    }

    /// Removes the retained message of `topic`, if any.
    pub(super) fn clear(&mut self, topic: &str) {
        if let Some(old) = self.set.take(topic.as_bytes()) {
            self.forget(&old.0);
        }
    }

    /// `old` left the set: its store body, if any, is no longer its topic's.
    fn forget(&mut self, old: &Rc<Kept>) {
        if !self.bodies.is_empty() {
            self.bodies.remove(&Rc::as_ptr(old));
        }
    }

    /// Remembers the store body that `copy`, a copy of `kept`, is recorded under, if any.
    fn copied(&mut self, kept: &Rc<Kept>, copy: &Message) {
        let body = copy.stored.get();
        if body.id != 0 {
            self.bodies.insert(Rc::as_ptr(kept), body);
        }
    }

    /// The retained messages whose topic `filter` matches. A wildcard filter looks at every
    /// retained message and sorts what matches by topic, so that replays are predictable for
    /// clients and tests, unless more than [`SORTED_REPLAY`] match.
    pub(super) fn matching(&self, filter: &str) -> Vec<Rc<Kept>> {
        let mut found: Vec<Rc<Kept>> = Vec::new();
        if filter.bytes().any(|b| b == b'+' || b == b'#') {
            found.extend(
                self.set
                    .iter()
                    .filter(|k| topic_matches(filter, k.0.topic()))
                    .map(|k| k.0.clone()),
            );
            // Sorting a large set costs more than it is worth (a million topics: most of a
            // second, the loop serving no one meanwhile), and no client can rely on an order.
            if found.len() <= SORTED_REPLAY {
                found.sort_unstable_by(|a, b| a.topic().cmp(b.topic()));
            }
        } else if let Some(k) = self.get(filter) {
            found.push(k.clone());
        }
        found
    }
}

impl Broker {
    /// Stores `m` as the retained message of its topic, or clears the topic when the payload is
    /// empty.
    pub(super) fn store_retained(&mut self, m: &MsgRef<'_>) {
        if m.payload.is_empty() {
            // v311:[MQTT-3.3.1-10], [MQTT-3.3.1-11]: an empty retained message clears.
            self.retained.clear(m.topic);
            self.persist_retained(m.topic, None);
        } else {
            let client = match m.source {
                Some(_) => None,
                None => m.origin.and_then(|sid| self.message_source(sid)),
            };
            let source = m.source.or(client.as_ref());
            self.persist_retained(m.topic, Some((m, source)));
            self.retained.set(m, source);
        }
    }

    /// Session `sid`'s client as the publisher of a retained message (see [`source_of`]).
    pub(super) fn message_source(&self, sid: SessionId) -> Option<MessageSource> {
        self.session(sid).and_then(source_of)
    }

    /// Starts the replay of the retained messages matching a new subscription: they are
    /// sent as the subscriber's window and output buffer allow ([`Broker::replay`]), outside
    /// the queue limits, so that a new subscriber gets every one of them.
    pub(super) fn queue_retained(
        &mut self,
        sid: SessionId,
        filter: &str,
        granted: QoS,
        sub_id: u32,
    ) {
        let messages = self.retained.matching(filter);
        if messages.is_empty() {
            return;
        }
        if let Some(s) = self.session_mut(sid) {
            s.add_replay(Replay {
                messages,
                next: 0,
                granted,
                sub_id,
            });
        }
    }

    /// Sends retained messages of the session's replays while its connection has room: its
    /// queue empty, its output buffer below the bound (else it is marked throttled, and the
    /// socket's draining resumes the replay), and, for QoS 1/2, a free place in the window
    /// (an acknowledgement resumes it). QoS 1 copies for a persistent session have their
    /// writes held like a routed message's (`hold.rs`).
    pub(super) fn replay(&mut self, sid: SessionId) {
        // Called at every pump (each acknowledgement): most sessions have no replay.
        if !self.session(sid).is_some_and(|s| s.replaying()) {
            return;
        }
        let now = self.now;
        let upgrade = self.settings.upgrade_outgoing_qos;
        loop {
            let Some(mut out) = self.outlet(sid) else {
                return;
            };
            let Some((granted, msg_qos)) = out.session.next_replay_qos() else {
                return;
            };
            if !out.has_room(replay_qos(upgrade, granted, msg_qos)) {
                return;
            }
            let Some((kept, _, sub_id)) = self.session_mut(sid).and_then(|s| s.next_replayed())
            else {
                return;
            };
            let Some((qos, mut copy)) = self.replayable(sid, &kept, granted, now) else {
                continue;
            };
            let m = kept.as_msg_ref();
            if let Some(p) = self.persist.as_deref_mut() {
                p.holds.begin(p.changes_len());
            }
            if let Some(mut out) = self.outlet(sid) {
                // Sent, or queued if there was no room after all; a dropped one is counted.
                let t = Target::replay(qos, sub_id);
                match out.send_delivery(
                    Pending::Replayed {
                        m: &m,
                        copy: &mut copy,
                        t,
                    },
                    now,
                ) {
                    Sent::Written | Sent::InFlight | Sent::Queued | Sent::Dropped => {}
                }
            }
            if let Some(p) = self.persist.as_deref_mut() {
                p.holds.end(p.changes_len());
            }
            if let Some(copy) = copy {
                self.retained.copied(&kept, &copy);
            }
        }
    }

    /// The session went offline mid-replay: the messages not sent yet are queued, owed to the
    /// session like any other (and so stored, for a persistent session, and kept across a
    /// restart; its QoS 0 ones go the way of queued QoS 0 messages).
    pub(super) fn queue_replays(&mut self, sid: SessionId) {
        let now = self.now;
        while let Some((kept, granted, sub_id)) =
            self.session_mut(sid).and_then(|s| s.next_replayed())
        {
            let Some((qos, mut copy)) = self.replayable(sid, &kept, granted, now) else {
                continue;
            };
            let d = Target::replay(qos, sub_id).into_replayed(&mut copy, &kept.as_msg_ref());
            if let Some(mut out) = self.outlet(sid) {
                // Queued (a QoS 0 one may be dropped, counted, as for any offline client).
                match out.send_delivery(Pending::Retained(d), now) {
                    Sent::Written | Sent::InFlight | Sent::Queued | Sent::Dropped => {}
                }
            }
            if let Some(copy) = copy {
                self.retained.copied(&kept, &copy);
            }
        }
    }

    /// Whether retained message `kept` of a replay is still to be sent, and at which QoS: not
    /// if it is no longer the topic's retained message (republished, which the subscriber got
    /// live, or cleared), has expired, or may not be read or sent (ACL, `check_retain_source`)
    /// under the configuration now. For a persistent session at QoS 1/2, also the copy of
    /// the message it keeps, recorded under the store body of every copy of it (or a new one).
    fn replayable(
        &mut self,
        sid: SessionId,
        kept: &Rc<Kept>,
        granted: QoS,
        now: Instant,
    ) -> Option<(QoS, Option<Rc<Message>>)> {
        let topic = kept.topic();
        let current = self.retained.get(topic)?;
        if !Rc::ptr_eq(current, kept) || kept.expires_at().is_some_and(|t| t <= now) {
            return None;
        }
        let s = self.session(sid)?;
        if !may_read(&self.settings, s, topic) {
            return None;
        }
        if self.settings.check_retain_source
            && !source_may_publish(&self.settings, kept.source(), topic)
        {
            return None;
        }
        let qos = replay_qos(self.settings.upgrade_outgoing_qos, granted, kept.qos());
        let stored = qos != QoS::AtMostOnce && persistent(s);
        let Some(p) = self.persist.as_deref_mut().filter(|_| stored) else {
            return Some((qos, None));
        };
        let msg = kept.as_msg_ref().to_message();
        let known = self.retained.bodies.get(&Rc::as_ptr(kept)).copied();
        msg.stored.set(known.unwrap_or_else(|| p.new_body()));
        self.retained.copied(kept, &msg);
        Some((qos, Some(Rc::new(msg))))
    }
}

/// The QoS a replayed message goes at: the subscription's, or the message's if lower, unless
/// `upgrade_outgoing_qos`.
fn replay_qos(upgrade: bool, granted: QoS, msg: QoS) -> QoS {
    if upgrade {
        granted
    } else {
        granted.min(msg)
    }
}

/// The client of session `s` as the publisher of a retained message; `None` for a bridge's
/// session, whose messages no ACL applies to.
pub(super) fn source_of(s: &Session) -> Option<MessageSource> {
    s.bridge.is_none().then(|| MessageSource {
        client_id: s.client_id.to_string(),
        username: s.username().map(str::to_string),
        listener: s.listener,
    })
}

/// `check_retain_source`: whether the client that published a retained message may still
/// publish to its topic under the ACL in force now (which a reload may have changed), as
/// Mosquitto asks before each replay. Messages of no client are not re-checked.
fn source_may_publish(
    settings: &super::Settings,
    source: Option<&MessageSource>,
    topic: &str,
) -> bool {
    let Some(source) = source else {
        return true;
    };
    let security = settings.security_for(source.listener);
    let user = source.username.as_deref();
    let access = crate::auth::dynsec::DynAccess::PublishSend;
    if let Some(allowed) = super::dynsec::verdict(security, user, &source.client_id, access, topic)
    {
        return allowed;
    }
    match &security.acl {
        Some(acl) => acl.can_publish(user, &source.client_id, topic),
        None => true,
    }
}
