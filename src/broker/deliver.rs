//! Sending a delivery to one session: the only place a PUBLISH is written to a client.
//!
//! Every path that hands a message to a session goes through [`Outlet::send_delivery`]:
//! routing a publish (a client's, a will, `$SYS`, a bridge's), draining the session's queue,
//! the resend after a reconnect or a restart, and the retained replay of a new subscription.
//! It writes the message or queues it, or drops it, and keeps the session's in-flight window
//! and queue, the store's record of them, the connection's place on the dirty list, the queue
//! memory and the counters in step with what happened, which it returns as a [`Sent`]. A drop
//! is recorded in one place, [`Outlet::dropped`], so the store never keeps a message the
//! session no longer has. The memory held in queues ([`QueuedBytes`]) changes only here too,
//! as deliveries enter and leave a queue.
//!
//! Deciding who gets a message is routing's job (`route.rs`), not this module's; but a message
//! that waited (queued, or in flight across a reconnect or a restart) is checked against the
//! ACL READ rule again when it finally goes, since the ACL may have changed in the meantime.

use super::conn::{Conn, ConnState};
use super::inbound::PublishSummary;
use super::persist::{out_state, Persist};
use super::route::{may_read_kept, MsgRef, Target};
use super::session::{Delivery, Inflight, Message, OutState, Queue, Session};
use super::{Broker, ConnId, SessionId, Settings, Stats, OUTPUT_HIGH_WATER};
use crate::codec::encode::{write_publish, PublishOut};
use crate::codec::{Ack, Packet, Properties, QoS};
use crate::store::MessageState;
use std::borrow::Cow;
use std::rc::Rc;
use std::time::Instant;

/// What became of a delivery handed to [`Outlet::send_delivery`].
#[must_use = "a delivery may have been dropped"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// Written at QoS 0: nothing more to wait for.
    Written,
    /// Written at QoS 1 or 2, and in flight until the client acknowledges it.
    InFlight,
    /// Waiting in the session's queue.
    Queued,
    /// Neither sent nor kept, nor in the store. Counted as dropped unless it was a QoS 0
    /// message for a client that is not connected, which it was never for.
    Dropped,
}

/// A delivery on its way to a session, by where it comes from.
pub(super) enum Pending<'a, 'm> {
    /// Fresh from routing and still borrowed: the shared copy of the message is made only
    /// when the session has to keep it.
    Routed {
        m: &'a MsgRef<'m>,
        shared: &'a mut Option<Rc<Message>>,
        t: Target,
    },
    /// Taken from the front of the session's queue; it goes back there if it cannot go yet.
    Queued(Delivery),
    /// A retained message for a subscription whose session went offline mid-replay: queued,
    /// outside the queue limits, so that the subscriber gets every one of them.
    Retained(Delivery),
    /// The next retained message of a replay, for a connection with room for it
    /// ([`Outlet::has_room`]), borrowed from the retained set like a routed one.
    Replayed {
        m: &'a MsgRef<'m>,
        copy: &'a mut Option<Rc<Message>>,
        t: Target,
    },
    /// In flight when the client went away: sent again, PUBLISH with DUP or PUBREL, with its
    /// packet id (v311:[MQTT-4.4.0-1]).
    Again(Inflight),
}

/// One session with its connection (when it has one past CONNECT) and everything a delivery
/// to it updates, borrowed together from the broker's separate fields.
pub(super) struct Outlet<'a> {
    sid: SessionId,
    pub(super) session: &'a mut Session,
    conn: Option<(ConnId, &'a mut Conn)>,
    pub(super) settings: &'a Settings,
    dirty: &'a mut Vec<ConnId>,
    stats: &'a mut Stats,
    held_bytes: &'a mut QueuedBytes,
    persist: Option<&'a mut Persist>,
}

impl Broker {
    /// The outlet of session `sid`, if the session exists.
    pub(super) fn outlet(&mut self, sid: SessionId) -> Option<Outlet<'_>> {
        let session = self
            .sessions
            .get_mut(sid.idx as usize)
            .filter(|s| s.gen == sid.gen)?;
        let conns = &mut self.conns;
        let conn = session
            .conn()
            .and_then(|cid| {
                conns
                    .get_mut(cid)
                    .and_then(Option::as_mut)
                    .map(|c| (cid, c))
            })
            .filter(|(_, c)| matches!(c.state, ConnState::Active(_)));
        Some(Outlet {
            sid,
            session,
            conn,
            settings: &self.settings,
            dirty: &mut self.dirty,
            stats: &mut self.stats,
            held_bytes: &mut self.held_bytes,
            persist: self.persist.as_deref_mut(),
        })
    }

    /// Moves queued messages of a connected session into flight, as far as the in-flight
    /// window and the output bound allow.
    pub(super) fn pump(&mut self, sid: SessionId) {
        let now = self.now;
        let Some(mut out) = self.outlet(sid) else {
            return;
        };
        while let Some(d) = out.dequeue() {
            match out.send_delivery(Pending::Queued(d), now) {
                Sent::Queued => break,
                Sent::Written | Sent::InFlight | Sent::Dropped => {}
            }
        }
        self.ask_for_spilled(sid);
        self.replay(sid);
    }
}

impl Outlet<'_> {
    /// Sends `p` to the session now if its connection, in-flight window and output bound allow,
    /// otherwise queues it or drops it, and says which.
    pub(super) fn send_delivery(&mut self, p: Pending<'_, '_>, now: Instant) -> Sent {
        match p {
            Pending::Routed { m, shared, t } => self.send_routed(m, shared, t, now),
            Pending::Queued(d) => self.send_queued(d, now),
            Pending::Retained(d) => self.keep_queued(d, now),
            Pending::Replayed { m, copy, t } => self.send_replayed(m, copy, t, now),
            Pending::Again(m) => self.send_again(m, now),
        }
    }

    /// Takes the delivery at the front of the queue.
    pub(super) fn dequeue(&mut self) -> Option<Delivery> {
        let d = self.session.dequeue()?;
        self.held_bytes.0 -= queued_size(&d);
        Some(d)
    }

    /// Keeps only the queued deliveries `keep` accepts; the others are discarded without a
    /// trace (for QoS 0 messages, which are never stored or counted as dropped).
    pub(super) fn retain_queued(&mut self, keep: impl FnMut(&Delivery) -> bool) {
        let before = self.session.queue.held_bytes();
        self.session.queue.retain(keep);
        self.held_bytes.0 -= before - self.session.queue.held_bytes();
    }

    /// Takes the whole queue of a session that is ending.
    pub(super) fn take_queue(&mut self) -> Queue {
        let q = std::mem::take(&mut self.session.queue);
        self.held_bytes.0 -= q.held_bytes();
        q
    }

    /// Puts back a delivery read from the store at start, in flight with its packet id or
    /// queued; it is already recorded.
    pub(super) fn restore(&mut self, d: Delivery, inflight: Option<(u16, OutState)>) {
        match inflight {
            Some((packet_id, state)) => self.session.inflight.push_back(Inflight {
                packet_id,
                state,
                delivery: d,
            }),
            None => {
                self.held_bytes.0 += queued_size(&d);
                self.session.enqueue(d);
            }
        }
    }

    fn send_routed(
        &mut self,
        m: &MsgRef<'_>,
        shared: &mut Option<Rc<Message>>,
        t: Target,
        now: Instant,
    ) -> Sent {
        // Behind a queue, a message waits its turn.
        if let (Some((_, c)), true) = (&mut self.conn, self.session.queue.is_empty()) {
            let (out_len, receive_maximum) = (c.out().len(), c.receive_maximum);
            if t.qos == QoS::AtMostOnce && out_len >= OUTPUT_HIGH_WATER {
                // Past the output bound, QoS 0 waits in the queue too (below), within the
                // queue limits, until the socket drains: a reader that keeps reading gets a
                // burst whole, and only one that lets the queue fill up loses messages.
                c.throttled = true;
            } else if t.qos == QoS::AtMostOnce {
                self.flowing(now);
                let f = Framing {
                    qos: QoS::AtMostOnce,
                    retain: t.retain,
                    dup: false,
                    packet_id: 0,
                    sub_ids: &t.sub_ids,
                };
                if !self.write(*m, f, now) {
                    return self.dropped(0);
                }
                self.count_sent(QoS::AtMostOnce, m.payload.len());
                return Sent::Written;
            }
            let limit = self
                .settings
                .inflight_limit()
                .min(usize::from(receive_maximum));
            if self.session.inflight.len() < limit
                && self.inflight_bytes_below_limit()
                && out_len < OUTPUT_HIGH_WATER
            {
                let packet_id = self.session.alloc_packet_id();
                let f = Framing {
                    qos: t.qos,
                    retain: t.retain,
                    dup: false,
                    packet_id,
                    sub_ids: &t.sub_ids,
                };
                if !self.write(*m, f, now) {
                    return self.dropped(0);
                }
                self.count_sent(t.qos, m.payload.len());
                let mut d = t.into_delivery(shared, m);
                let state = OutState::sent(d.qos);
                if let Some(p) = self.persist.as_deref_mut() {
                    let stage = (packet_id, out_state(state));
                    p.message_added(self.sid, self.session, &mut d, stage, true, now);
                }
                self.session.inflight.push_back(Inflight {
                    packet_id,
                    state,
                    delivery: d,
                });
                return Sent::InFlight;
            }
        }
        if self.conn.is_none()
            && t.qos == QoS::AtMostOnce
            && !self.settings.queue_qos0_messages
            && !self.session.keeps_qos0()
        {
            // QoS 0 is for connected clients only: not counted, the message was never theirs.
            return Sent::Dropped;
        }
        // Queue it, within max_queued_messages / max_queued_bytes.
        let max_count = self.settings.max_queued_messages;
        let max_bytes = self.settings.max_queued_bytes;
        let size = m.topic.len() + m.payload.len();
        let q = &self.session.queue;
        if (max_count != 0 && q.count() >= max_count)
            || (max_bytes != 0 && q.bytes() + size > max_bytes)
        {
            return self.dropped_over_limit(now);
        }
        self.flowing(now);
        self.keep_queued(t.into_delivery(shared, m), now)
    }

    /// The front of the queue, if the window and the output bound let it go.
    fn send_queued(&mut self, d: Delivery, now: Instant) -> Sent {
        let Some((_, c)) = self.conn.as_mut() else {
            return self.requeue(d);
        };
        if d.msg.expires_at.is_some_and(|t| t <= now) {
            // v5:[MQTT-3.3.2-5]: an expired message is not delivered.
            return self.dropped(d.seq);
        }
        if !may_read_kept(self.settings, self.session, &d.msg) {
            return self.dropped_unreadable(d.seq, d.msg.topic());
        }
        if c.out().len() >= OUTPUT_HIGH_WATER {
            c.throttled = true;
            return self.requeue(d);
        }
        let limit = self
            .settings
            .inflight_limit()
            .min(usize::from(c.receive_maximum));
        if d.qos != QoS::AtMostOnce
            && (self.session.inflight.len() >= limit || !self.inflight_bytes_below_limit())
        {
            return self.requeue(d);
        }
        let Some(packet_id) = self.write_new(&d, now) else {
            return self.dropped(d.seq);
        };
        if d.qos == QoS::AtMostOnce {
            return Sent::Written;
        }
        if let Some(p) = self.persist.as_deref_mut() {
            p.message_sent(self.session, &d, packet_id);
        }
        self.session.inflight.push_back(Inflight {
            packet_id,
            state: OutState::sent(d.qos),
            delivery: d,
        });
        Sent::InFlight
    }

    /// Whether a message at `qos` could be sent now rather than queued: connected, nothing
    /// queued, output buffer below the bound (when it is not, the connection is marked
    /// throttled, so that the socket's draining pumps the session again) and, for QoS 1/2, a
    /// free place in the window.
    pub(super) fn has_room(&mut self, qos: QoS) -> bool {
        if !self.session.queue.is_empty() {
            return false;
        }
        let Some((_, c)) = self.conn.as_mut() else {
            return false;
        };
        if c.out().len() >= OUTPUT_HIGH_WATER {
            c.throttled = true;
            return false;
        }
        let limit = self
            .settings
            .inflight_limit()
            .min(usize::from(c.receive_maximum));
        qos == QoS::AtMostOnce
            || (self.session.inflight.len() < limit && self.inflight_bytes_below_limit())
    }

    /// Writes a delivery's first PUBLISH, with a fresh packet id for QoS 1/2 (0 for QoS 0),
    /// and counts it; `None` if it could not be written (see [`Outlet::write`]).
    fn write_new(&mut self, d: &Delivery, now: Instant) -> Option<u16> {
        self.write_first(
            MsgRef::from(&*d.msg),
            d.qos,
            d.retain,
            d.sub_ids.as_slice(),
            now,
        )
    }

    /// [`Outlet::write_new`] for message `m`, not copied yet.
    fn write_first(
        &mut self,
        m: MsgRef<'_>,
        qos: QoS,
        retain: bool,
        sub_ids: &[u32],
        now: Instant,
    ) -> Option<u16> {
        let packet_id = if qos == QoS::AtMostOnce {
            0
        } else {
            self.session.alloc_packet_id()
        };
        let f = Framing {
            qos,
            retain,
            dup: false,
            packet_id,
            sub_ids,
        };
        if !self.write(m, f, now) {
            return None;
        }
        self.count_sent(qos, m.payload.len());
        self.flowing(now);
        Some(packet_id)
    }

    /// The next message of a retained replay, sent as a new message (in flight for QoS 1/2,
    /// and recorded for a persistent session). Queued instead if there is no room after all.
    /// It is copied (into `copy`, unless made already) only if the session keeps it.
    fn send_replayed(
        &mut self,
        m: &MsgRef<'_>,
        copy: &mut Option<Rc<Message>>,
        t: Target,
        now: Instant,
    ) -> Sent {
        if !self.has_room(t.qos) {
            return self.keep_queued(t.into_replayed(copy, m), now);
        }
        let Some(packet_id) = self.write_first(*m, t.qos, true, &t.sub_ids, now) else {
            return self.dropped(0);
        };
        if t.qos == QoS::AtMostOnce {
            return Sent::Written;
        }
        let mut d = t.into_replayed(copy, m);
        let state = OutState::sent(d.qos);
        if let Some(p) = self.persist.as_deref_mut() {
            let stage = (packet_id, out_state(state));
            p.message_added(self.sid, self.session, &mut d, stage, true, now);
        }
        self.session.inflight.push_back(Inflight {
            packet_id,
            state,
            delivery: d,
        });
        Sent::InFlight
    }

    fn send_again(&mut self, m: Inflight, now: Instant) -> Sent {
        let Some((cid, c)) = self.conn.as_mut() else {
            self.session.inflight.push_back(m);
            return Sent::InFlight;
        };
        if m.state == OutState::AwaitPubcomp {
            Packet::Pubrel(Ack::new(m.packet_id)).encode(c.version, c.out_mut());
            c.mark_dirty(*cid, self.dirty);
        } else {
            let d = &m.delivery;
            if !may_read_kept(self.settings, self.session, &d.msg) {
                return self.dropped_unreadable(d.seq, d.msg.topic());
            }
            if !self.write(
                MsgRef::from(&*d.msg),
                Framing::of(d, m.packet_id, true),
                now,
            ) {
                // Too large for the client as it is now (v5:[MQTT-3.1.2-25]): dropped, so
                // that it neither holds a place in the window nor stays in the store.
                return self.dropped(d.seq);
            }
        }
        // A second copy of a message is not a new message for the publish counters.
        self.stats.messages_sent += 1;
        self.session.inflight.push_back(m);
        Sent::InFlight
    }

    /// Writes one PUBLISH to the session's connection and puts the connection on the dirty
    /// list. False, writing nothing, when the session has no connection or the packet
    /// exceeds the client's Maximum Packet Size.
    fn write(&mut self, m: MsgRef<'_>, f: Framing<'_>, now: Instant) -> bool {
        let Some((cid, c)) = self.conn.as_mut() else {
            return false;
        };
        if !write_message(c, &self.session.client_id, m, f, now) {
            return false;
        }
        c.mark_dirty(*cid, self.dirty);
        true
    }

    /// `max_inflight_bytes`: another QoS 1/2 message may go while the payload bytes already
    /// in flight are below the limit, as in Mosquitto (so the one that crosses it goes, and
    /// a message larger than the limit is not held forever). Only summed when a limit is set.
    fn inflight_bytes_below_limit(&self) -> bool {
        let limit = self.settings.max_inflight_bytes;
        limit == 0
            || self
                .session
                .inflight
                .iter()
                .map(|m| m.delivery.msg.payload().len())
                .sum::<usize>()
                < limit
    }

    fn count_sent(&mut self, qos: QoS, payload_len: usize) {
        self.stats.publish_sent += 1;
        self.stats.publish_sent_by_qos[qos as usize] += 1;
        self.stats.publish_bytes_sent += payload_len as u64;
        self.stats.messages_sent += 1;
    }

    /// Adds a delivery at the back of the queue, recording it for the store; beyond the
    /// queue's bound in memory, a stored one stays in the store only (`Queue::spill`).
    fn keep_queued(&mut self, mut d: Delivery, now: Instant) -> Sent {
        let spills = self.session.queue.spills();
        // A delivery kept in the store only must be written now, never held: a page of the
        // queue is read from what the store holds.
        let connected = self.conn.is_some() && !spills;
        if let Some(p) = self.persist.as_deref_mut() {
            let stage = (0, MessageState::Queued);
            p.message_added(self.sid, self.session, &mut d, stage, connected, now);
        }
        if spills {
            if d.seq != 0 {
                self.session.queue.spill(d);
                return Sent::Queued;
            }
            if self.session.queue.spilled() > 0 {
                // A QoS 0 message cannot wait behind messages in the store: it is not stored.
                return self.dropped(0);
            }
        }
        self.held_bytes.0 += queued_size(&d);
        self.session.enqueue(d);
        Sent::Queued
    }

    /// Puts back the delivery just taken from the front of the queue.
    fn requeue(&mut self, d: Delivery) -> Sent {
        self.held_bytes.0 += queued_size(&d);
        self.session.requeue_front(d);
        Sent::Queued
    }

    /// A delivery that is neither sent nor kept: counted, and deleted from the store if it
    /// was stored (`seq` 0: never stored).
    fn dropped(&mut self, seq: u64) -> Sent {
        if let Some(p) = self.persist.as_deref_mut() {
            p.message_done(self.sid, self.session, seq);
        }
        self.stats.publish_dropped += 1;
        Sent::Dropped
    }

    /// A message its subscriber may no longer read (the ACL changed since it was routed, by a
    /// reload or a restart): counted, and logged once until messages flow again.
    fn dropped_unreadable(&mut self, seq: u64, topic: &str) -> Sent {
        let s = &mut *self.session;
        if !s.dropping {
            s.dropping = true;
            log::info!(target: "notice", "Outgoing messages are being dropped for client {}: the ACL no longer lets it read '{topic}'.", s.client_id);
        }
        self.dropped(seq)
    }

    /// A message dropped for the session's queue or output limits: counted, and logged when
    /// dropping starts, then with the number dropped at most once per [`DROP_LOG_INTERVAL`]
    /// while it goes on, and once more when messages flow again.
    fn dropped_over_limit(&mut self, now: Instant) -> Sent {
        let s = &mut *self.session;
        if !s.dropping {
            s.dropping = true;
            let _ = s.drops_logged(now);
            log::info!(target: "notice", "Outgoing messages are being dropped for client {}.", s.client_id);
        } else if let (n, Some(at)) = s.count_drop() {
            if now >= at + DROP_LOG_INTERVAL {
                let _ = s.drops_logged(now);
                log::info!(target: "notice", "{n} more outgoing messages were dropped for client {} in the last {} s.", s.client_id, (now - at).as_secs());
            }
        }
        self.dropped(0)
    }

    /// A message went to the client: if messages were being dropped, the log says how many
    /// since its last line.
    fn flowing(&mut self, now: Instant) {
        let s = &mut *self.session;
        if !std::mem::take(&mut s.dropping) {
            return;
        }
        let n = s.drops_logged(now);
        if n > 0 {
            log::info!(target: "notice", "Outgoing messages flow again for client {}; {n} more were dropped.", s.client_id);
        }
    }
}

/// How often, at most, the log repeats that messages are being dropped for one client.
const DROP_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Bytes of messages waiting in session queues, against `memory_limit`. Only an [`Outlet`]
/// changes it, as deliveries enter and leave a queue.
#[derive(Debug, Default)]
pub(super) struct QueuedBytes(usize);

impl QueuedBytes {
    pub(super) fn get(&self) -> usize {
        self.0
    }
}

/// Bytes a queued delivery counts against `memory_limit` (retained replays do not count).
fn queued_size(d: &Delivery) -> usize {
    if d.counted {
        d.msg.size()
    } else {
        0
    }
}

/// The properties a v5 subscriber gets with a message: the publisher's, plus this
/// subscription's identifiers and the expiry interval left (v5:[MQTT-3.3.2-6]).
fn delivery_properties<'a>(
    base: Option<&'a Properties>,
    sub_ids: &[u32],
    expires_at: Option<Instant>,
    now: Instant,
) -> Option<Cow<'a, Properties>> {
    if sub_ids.is_empty() && expires_at.is_none() {
        return base.map(Cow::Borrowed);
    }
    let mut p = base.cloned().unwrap_or_default();
    p.subscription_identifiers = sub_ids.to_vec();
    if let Some(at) = expires_at {
        let left = at.saturating_duration_since(now).as_secs();
        p.message_expiry_interval = Some(left.min(u64::from(u32::MAX)) as u32);
    }
    Some(Cow::Owned(p))
}

/// Writes one PUBLISH to client `name`'s output buffer and logs it like Mosquitto's `-v`.
/// Returns false, writing nothing, when the packet would exceed the client's Maximum Packet
/// Size (v5:[MQTT-3.1.2-25]: the message is then dropped for this client) or the topic is
/// outside the client's mount point.
fn write_message(c: &mut Conn, name: &str, m: MsgRef<'_>, f: Framing<'_>, now: Instant) -> bool {
    let v5 = c.version.is_v5();
    // A bridge's link carries the message under the remote broker's name for the topic.
    let remote_topic = c.bridge().and_then(|b| b.to_remote(m.topic));
    let mut m = MsgRef {
        topic: remote_topic.as_deref().unwrap_or(m.topic),
        ..m
    };
    // A client under a mount point knows the topic without it, and gets nothing outside it.
    if let Some(mount_point) = c.mount_point() {
        match super::mount::unmount(mount_point, m.topic) {
            Some(topic) => m.topic = topic,
            None => return false,
        }
    }
    let mut props = if v5 {
        delivery_properties(m.properties, f.sub_ids, m.expires_at, now)
    } else {
        None
    };
    let mut topic = m.topic;
    let mut new_alias = None;
    if let Some((alias, first_use)) = c.aliases().and_then(|a| a.outbound_for(m.topic)) {
        let mut p = props.map(Cow::into_owned).unwrap_or_default();
        p.topic_alias = Some(alias);
        props = Some(Cow::Owned(p));
        if first_use {
            new_alias = Some(alias);
        } else {
            topic = "";
        }
    }
    let p = PublishOut {
        topic,
        payload: m.payload,
        qos: f.qos,
        retain: f.retain,
        dup: f.dup,
        packet_id: f.packet_id,
        properties: props.as_deref(),
    };
    let max_size = c.max_packet_size();
    if max_size != 0 && p.wire_len(v5) > max_size as usize {
        return false;
    }
    if let (Some(alias), Some(a)) = (new_alias, c.aliases_mut()) {
        a.outbound.insert(m.topic.into(), alias);
    }
    log::debug!(
        "Sending PUBLISH to {name} {}",
        PublishSummary {
            dup: f.dup,
            qos: f.qos,
            retain: f.retain,
            packet_id: f.packet_id,
            topic: m.topic,
            len: m.payload.len(),
        }
    );
    let version = c.version;
    write_publish(c.out_mut(), &p, version);
    if let Some(b) = c.bridge() {
        b.note_sent(now);
    }
    true
}

/// How one PUBLISH goes to one client.
struct Framing<'a> {
    qos: QoS,
    retain: bool,
    dup: bool,
    packet_id: u16,
    sub_ids: &'a [u32],
}

impl Framing<'_> {
    fn of(d: &Delivery, packet_id: u16, dup: bool) -> Framing<'_> {
        Framing {
            qos: d.qos,
            retain: d.retain,
            dup,
            packet_id,
            sub_ids: d.sub_ids.as_slice(),
        }
    }
}
