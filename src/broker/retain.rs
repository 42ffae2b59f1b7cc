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

use super::deliver::{Pending, Sent};
use super::route::{may_read, MsgRef};
use super::router::FnvHasher;
use super::session::{Delivery, Message, Replay, Session};
use super::{Broker, SessionId};
use crate::codec::QoS;
use crate::store::MessageSource;
use crate::topic::topic_matches;
use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::rc::Rc;
use std::time::Instant;

/// A retained message and the client that published it (`None`: the broker itself, a will or
/// a bridge, which `check_retain_source` does not re-check). Found by the message's own topic,
/// so the topic is kept once.
struct Kept(Rc<Message>, Option<Rc<MessageSource>>);

impl Borrow<str> for Kept {
    fn borrow(&self) -> &str {
        &self.0.topic
    }
}

impl PartialEq for Kept {
    fn eq(&self, other: &Kept) -> bool {
        self.0.topic == other.0.topic
    }
}

impl Eq for Kept {}

impl Hash for Kept {
    // As the `str` it borrows as, which lookups hash.
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.0.topic.hash(h);
    }
}

/// The most retained messages a replay sends in topic order; a larger one goes in no
/// particular order.
const SORTED_REPLAY: usize = 10_000;

/// The retained messages, one per topic.
#[derive(Default)]
pub(super) struct Retained(HashSet<Kept, BuildHasherDefault<FnvHasher>>);

impl Retained {
    /// How many topics have a retained message.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The payload bytes of every retained message.
    pub(super) fn payload_bytes(&self) -> usize {
        self.0.iter().map(|k| k.0.payload.len()).sum()
    }

    /// Makes `msg`, published by `source`, the retained message of its topic.
    pub(super) fn set(&mut self, msg: Rc<Message>, source: Option<Rc<MessageSource>>) {
        self.0.replace(Kept(msg, source));
    }

    /// The retained message of `topic` and its publisher, if any.
    pub(super) fn get(&self, topic: &str) -> Option<(&Rc<Message>, &Option<Rc<MessageSource>>)> {
        self.0.get(topic).map(|k| (&k.0, &k.1))
    }

    /// Removes the retained message of `topic`, if any.
    pub(super) fn clear(&mut self, topic: &str) {
        self.0.remove(topic);
    }

    /// The retained messages whose topic `filter` matches. A wildcard filter looks at every
    /// retained message and sorts what matches by topic, so that replays are predictable for
    /// clients and tests, unless more than [`SORTED_REPLAY`] match.
    pub(super) fn matching(&self, filter: &str) -> Vec<Rc<Message>> {
        let mut found: Vec<Rc<Message>> = Vec::new();
        if filter.bytes().any(|b| b == b'+' || b == b'#') {
            found.extend(
                self.0
                    .iter()
                    .filter(|k| topic_matches(filter, &k.0.topic))
                    .map(|k| k.0.clone()),
            );
            // Sorting a large set costs more than it is worth (a million topics: most of a
            // second, the loop serving no one meanwhile), and no client can rely on an order.
            if found.len() <= SORTED_REPLAY {
                found.sort_unstable_by(|a, b| a.topic.cmp(&b.topic));
            }
        } else if let Some(k) = self.0.get(filter) {
            found.push(k.0.clone());
        }
        found
    }
}

impl Broker {
    /// Stores `m` as the retained message of its topic, or clears the topic when the payload is
    /// empty. Returns the stored copy, for routing to share with the sessions that keep it.
    pub(super) fn store_retained(&mut self, m: &MsgRef<'_>) -> Option<Rc<Message>> {
        if m.payload.is_empty() {
            // v311:[MQTT-3.3.1-10], [MQTT-3.3.1-11]: an empty retained message clears.
            self.retained.clear(m.topic);
            self.persist_retained(m.topic, None);
            None
        } else {
            let msg = Rc::new(m.to_message());
            let source = match m.source {
                Some(source) => Some(Rc::new(source.clone())),
                None => m.origin.and_then(|sid| self.shared_source(sid)),
            };
            self.persist_retained(m.topic, Some((&msg, source.as_deref())));
            self.retained.set(msg.clone(), source);
            Some(msg)
        }
    }

    /// Session `sid`'s client as the publisher of a retained message (see [`source_of`]).
    pub(super) fn message_source(&self, sid: SessionId) -> Option<MessageSource> {
        self.session(sid).and_then(source_of)
    }

    /// The same, shared with the retained messages the same client published before as long
    /// as it is the same (client id, username, listener): a device that retains thousands of
    /// topics (Zigbee2MQTT) costs one copy, not one per topic.
    fn shared_source(&mut self, sid: SessionId) -> Option<Rc<MessageSource>> {
        let fresh = self.message_source(sid)?;
        match &self.last_source {
            Some(last) if **last == fresh => Some(last.clone()),
            _ => {
                let shared = Rc::new(fresh);
                self.last_source = Some(shared.clone());
                Some(shared)
            }
        }
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
            let Some((msg, _, sub_id)) = self.session_mut(sid).and_then(|s| s.next_replayed())
            else {
                return;
            };
            let Some(d) = self.replayed(sid, msg, granted, sub_id, now) else {
                continue;
            };
            if let Some(p) = self.persist.as_deref_mut() {
                p.holds.begin(p.changes_len());
            }
            if let Some(mut out) = self.outlet(sid) {
                // Sent, or queued if there was no room after all; a dropped one is counted.
                match out.send_delivery(Pending::Replayed(d), now) {
                    Sent::Written | Sent::InFlight | Sent::Queued | Sent::Dropped => {}
                }
            }
            if let Some(p) = self.persist.as_deref_mut() {
                p.holds.end(p.changes_len());
            }
        }
    }

    /// The session went offline mid-replay: the messages not sent yet are queued, owed to the
    /// session like any other (and so stored, for a persistent session, and kept across a
    /// restart; its QoS 0 ones go the way of queued QoS 0 messages).
    pub(super) fn queue_replays(&mut self, sid: SessionId) {
        let now = self.now;
        while let Some((msg, granted, sub_id)) =
            self.session_mut(sid).and_then(|s| s.next_replayed())
        {
            if let Some(d) = self.replayed(sid, msg, granted, sub_id, now) {
                if let Some(mut out) = self.outlet(sid) {
                    // Queued (a QoS 0 one may be dropped, counted, as for any offline client).
                    match out.send_delivery(Pending::Retained(d), now) {
                        Sent::Written | Sent::InFlight | Sent::Queued | Sent::Dropped => {}
                    }
                }
            }
        }
    }

    /// The delivery of retained message `msg` of a replay, unless it is no longer the topic's
    /// retained message (republished, which the subscriber got live, or cleared), has expired,
    /// or may not be read or sent (ACL, `check_retain_source`) under the configuration now.
    fn replayed(
        &self,
        sid: SessionId,
        msg: Rc<Message>,
        granted: QoS,
        sub_id: u32,
        now: Instant,
    ) -> Option<Delivery> {
        let qos = replay_qos(self.settings.upgrade_outgoing_qos, granted, msg.qos);
        let (current, source) = self.retained.get(&msg.topic)?;
        if !Rc::ptr_eq(current, &msg) || msg.expires_at.is_some_and(|t| t <= now) {
            return None;
        }
        let s = self.session(sid)?;
        if !may_read(&self.settings, s, &msg.topic) {
            return None;
        }
        if self.settings.check_retain_source
            && !source_may_publish(&self.settings, source.clone(), &msg)
        {
            return None;
        }
        Some(Delivery {
            msg,
            qos,
            retain: true,
            sub_ids: if sub_id != 0 {
                vec![sub_id]
            } else {
                Vec::new()
            },
            counted: false,
            group: None,
            seq: 0,
        })
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
    source: Option<Rc<MessageSource>>,
    msg: &Message,
) -> bool {
    let Some(source) = source else {
        return true;
    };
    let security = settings.security_for(source.listener);
    let user = source.username.as_deref();
    let access = crate::auth::dynsec::DynAccess::PublishSend;
    if let Some(allowed) =
        super::dynsec::verdict(security, user, &source.client_id, access, &msg.topic)
    {
        return allowed;
    }
    match &security.acl {
        Some(acl) => acl.can_publish(user, &source.client_id, &msg.topic),
        None => true,
    }
}
