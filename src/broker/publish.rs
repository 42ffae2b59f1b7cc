//! PUBLISH in and out: accepting a message, routing it, and the QoS 1/2 handshakes.
//!
//! This is the hot path. An inbound PUBLISH is borrowed straight from the read buffer; a QoS 0
//! message to a connected subscriber with nothing queued is written directly into that
//! subscriber's output buffer, and only a message that must be kept (queued, in flight,
//! retained) is copied into a shared [`Message`], once, however many sessions hold it.
//!
//! Outgoing QoS is the lower of the published QoS and the granted QoS (v311 §3.8.4), or the
//! granted QoS with `upgrade_outgoing_qos`. At most `max_inflight_messages` QoS 1/2 messages
//! (fewer if an MQTT 5 client's Receive Maximum says so) are in flight per session; the rest
//! wait in its queue, in order. Every delivery to a session goes through
//! [`Outlet::send_delivery`](super::deliver::Outlet::send_delivery), which applies the client's
//! Maximum Packet Size and outbound topic aliases and keeps the store in step.

use super::deliver::{Pending, Sent};
use super::router::Subscriber;
use super::session::{Delivery, Message, OutState};
use super::{Broker, CloseReason, ConnId, SessionId};
use crate::codec::{
    reason, Ack, DecodeError, LastWill, Packet, Properties, ProtocolVersion, Publish, QoS,
};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A message being routed, borrowed from wherever it came from.
pub(super) struct Outgoing<'a> {
    pub(super) topic: &'a str,
    pub(super) payload: &'a [u8],
    qos: QoS,
    retain: bool,
    pub(super) properties: Option<&'a Properties>,
    pub(super) expires_at: Option<Instant>,
    origin: Option<SessionId>,
}

impl Outgoing<'_> {
    fn to_message(&self) -> Message {
        Message {
            topic: self.topic.into(),
            payload: self.payload.into(),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.map(|p| Box::new(p.clone())),
            expires_at: self.expires_at,
            origin: self.origin,
        }
    }
}

/// How Mosquitto's packet lines describe a PUBLISH: `(d0, q1, r0, m1, 'topic', ... (5 bytes))`.
/// Formatted only when the line is logged.
pub(super) struct PublishSummary<'a> {
    pub(super) dup: bool,
    pub(super) qos: QoS,
    pub(super) retain: bool,
    pub(super) packet_id: u16,
    pub(super) topic: &'a str,
    pub(super) len: usize,
}

impl<'a> PublishSummary<'a> {
    /// A received PUBLISH, under the topic it is handled as (after alias and bridge mapping).
    fn of(p: &Publish<'_>, topic: &'a str) -> PublishSummary<'a> {
        PublishSummary {
            dup: p.dup,
            qos: p.qos,
            retain: p.retain,
            packet_id: p.packet_id,
            topic,
            len: p.payload.len(),
        }
    }
}

impl std::fmt::Display for PublishSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "(d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            u8::from(self.dup),
            self.qos as u8,
            u8::from(self.retain),
            self.packet_id,
            self.topic,
            self.len
        )
    }
}

impl Broker {
    pub(super) fn handle_publish(
        &mut self,
        id: ConnId,
        sid: SessionId,
        mut p: Publish<'_>,
        now: Instant,
    ) {
        self.now = now;
        self.stats.publish_received += 1;
        self.stats.publish_bytes_received += p.payload.len() as u64;
        if let Some(c) = self.conn_mut(id) {
            c.published = true;
        }
        let version = self.conn(id).map_or(ProtocolVersion::V311, |c| c.version);
        if p.qos > self.settings.max_qos {
            // A QoS above the Maximum QoS announced in CONNACK is refused (v5 §3.3.1.2).
            return self.fail(id, reason::QOS_NOT_SUPPORTED, "QoS above max_qos", now);
        }
        if p.retain && !self.settings.retain_available {
            // v5:[MQTT-3.3.1-19]
            return self.fail(
                id,
                reason::RETAIN_NOT_SUPPORTED,
                "retain is not available",
                now,
            );
        }
        if !p.properties.subscription_identifiers.is_empty() {
            // v5:[MQTT-3.3.4-6]: a client must not send subscription identifiers.
            return self.fail(
                id,
                reason::PROTOCOL_ERROR,
                "subscription identifier in PUBLISH",
                now,
            );
        }
        // Resolve an inbound topic alias (v5 §3.3.2.3.4).
        let aliased: Option<Box<str>>;
        if let Some(alias) = p.properties.topic_alias.take() {
            let Some(a) = self.conn_mut(id).and_then(|c| c.aliases_mut()) else {
                return self.fail(id, reason::TOPIC_ALIAS_INVALID, "topic alias", now);
            };
            if alias == 0 || alias > a.inbound_max {
                // v5:[MQTT-3.3.2-8], [MQTT-3.3.2-9]
                return self.fail(
                    id,
                    reason::TOPIC_ALIAS_INVALID,
                    "topic alias out of range",
                    now,
                );
            }
            let slot = usize::from(alias - 1);
            if a.inbound.len() <= slot {
                a.inbound.resize(slot + 1, None);
            }
            if p.topic.is_empty() {
                match &a.inbound[slot] {
                    Some(t) => aliased = Some(t.clone()),
                    None => {
                        return self.fail(id, reason::PROTOCOL_ERROR, "unknown topic alias", now)
                    }
                }
            } else {
                a.inbound[slot] = Some(p.topic.into());
                aliased = None;
            }
        } else {
            aliased = None;
        }
        // From a bridge's remote broker: the topic under its local name.
        let bridged: Option<String> = self.conn(id).and_then(|c| c.bridge()).map(|b| {
            b.to_local(aliased.as_deref().unwrap_or(p.topic))
                .unwrap_or_else(|| p.topic.to_string())
        });
        let from_bridge = bridged.is_some();
        let topic: &str = bridged.as_deref().or(aliased.as_deref()).unwrap_or(p.topic);
        if p.qos == QoS::ExactlyOnce {
            let (duplicate, held) = self.session(sid).map_or((false, 0), |s| {
                (
                    s.incoming_qos2().contains(&p.packet_id),
                    s.incoming_qos2().len(),
                )
            });
            if duplicate {
                // Already accepted and routed: acknowledge again, deliver nothing
                // (v311:[MQTT-4.3.3-2] method B).
                self.log_received(id, &p, topic);
                self.send_pubrec(id, p.packet_id, reason::SUCCESS);
                return;
            }
            if version.is_v5() && held >= self.settings.receive_maximum() {
                // v5:[MQTT-3.3.4-9]: more unacknowledged QoS 2 than our Receive Maximum.
                return self.fail(
                    id,
                    reason::RECEIVE_MAXIMUM_EXCEEDED,
                    "receive maximum exceeded",
                    now,
                );
            }
        }
        if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(p.payload).is_err()
        {
            // v5:[MQTT-3.3.2-4] allows refusing a payload that is not the UTF-8 it claims.
            self.ack_publish(id, sid, &p, reason::PAYLOAD_FORMAT_INVALID);
            return;
        }
        let listener = self.session(sid).map_or(0, |s| s.listener);
        let security = self.settings.security_for(listener).clone();
        if let (Some(acl), Some(s), false) = (&security.acl, self.session(sid), from_bridge) {
            if !acl.can_publish(s.username(), &s.client_id, topic) {
                // Mosquitto drops it silently for 3.x (the ack still goes); 5.0 says why.
                // Mosquitto's line, logged at notice rather than its debug: users asked to
                // see denials without -v (mosquitto#3020).
                log::info!(
                    target: "notice",
                    "Denied PUBLISH from {} {}",
                    self.conn_name(id),
                    PublishSummary::of(&p, topic)
                );
                self.ack_publish(id, sid, &p, reason::NOT_AUTHORIZED);
                return;
            }
        }
        let limit = self.settings.message_size_limit;
        let code = if limit != 0 && p.payload.len() > limit {
            log::info!(
                target: "notice",
                "Dropped too large PUBLISH from {} (q{}, r{}, m{}, '{}', ... ({} bytes)).",
                self.conn_name(id),
                p.qos as u8,
                u8::from(p.retain),
                p.packet_id,
                topic,
                p.payload.len()
            );
            reason::IMPLEMENTATION_SPECIFIC_ERROR
        } else {
            // Logged once the message is accepted, as Mosquitto: a denied or oversized
            // PUBLISH has its own line instead.
            self.log_received(id, &p, topic);
            let props = (!p.properties.is_empty()).then_some(&p.properties);
            let out = Outgoing {
                topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties: props,
                expires_at: expiry(props, now),
                origin: Some(sid),
            };
            let routed = self.route(&out, now);
            if routed == 0 && version.is_v5() {
                reason::NO_MATCHING_SUBSCRIBERS
            } else {
                reason::SUCCESS
            }
        };
        self.ack_publish(id, sid, &p, code);
    }

    /// The `-v` line of an accepted PUBLISH, with its topic after alias and bridge mapping.
    fn log_received(&self, id: ConnId, p: &Publish<'_>, topic: &str) {
        log::debug!(
            "Received PUBLISH from {} {}",
            self.conn_name(id),
            PublishSummary::of(p, topic)
        );
    }

    /// Ends a connection for a protocol breach found while handling a packet, telling an MQTT 5
    /// client the reason code.
    fn fail(&mut self, id: ConnId, code: u8, why: &'static str, now: Instant) {
        self.send_disconnect(id, code);
        self.close(id, CloseReason::Protocol(DecodeError::Protocol(why)), now);
    }

    /// Sends PUBACK or PUBREC (recording the QoS 2 id) for an accepted PUBLISH.
    fn ack_publish(&mut self, id: ConnId, sid: SessionId, p: &Publish<'_>, code: u8) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                log::debug!(
                    "Sending PUBACK to {} (m{}, rc{})",
                    self.conn_name(id),
                    p.packet_id,
                    code
                );
                self.send_ack(id, &Packet::Puback(self.ack_for(id, p.packet_id, code)));
            }
            QoS::ExactlyOnce => {
                if code < 0x80 {
                    if let Some(s) = self.session_mut(sid) {
                        s.add_incoming_qos2(p.packet_id);
                    }
                    self.persist_qos2(sid, p.packet_id, true);
                }
                self.send_pubrec(id, p.packet_id, code);
            }
        }
    }

    fn send_pubrec(&mut self, id: ConnId, packet_id: u16, code: u8) {
        log::debug!(
            "Sending PUBREC to {} (m{}, rc{})",
            self.conn_name(id),
            packet_id,
            code
        );
        self.send_ack(id, &Packet::Pubrec(self.ack_for(id, packet_id, code)));
    }

    /// An acknowledgement carrying `code` (3.x acknowledgements have no reason code).
    fn ack_for(&self, id: ConnId, packet_id: u16, code: u8) -> Ack {
        let v5 = self.conn(id).is_some_and(|c| c.version.is_v5());
        let mut a = Ack::new(packet_id);
        if v5 {
            a.reason = code;
        }
        a
    }

    /// Publishes a message from the broker itself (`$SYS`).
    pub(super) fn publish_internal(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        now: Instant,
    ) {
        let out = Outgoing {
            topic,
            payload,
            qos,
            retain,
            properties: None,
            expires_at: None,
            origin: None,
        };
        self.route(&out, now);
    }

    /// Publishes a client's will as if the client had sent it.
    pub(super) fn publish_will(&mut self, will: LastWill, now: Instant) {
        log::debug!(
            "Sending will '{}' ({} bytes)",
            will.topic,
            will.payload.len()
        );
        self.stats.publish_received += 1;
        let mut props = will.properties;
        // The delay belongs to the will, not to the message.
        props.will_delay_interval = None;
        let props = (!props.is_empty()).then_some(&props);
        let out = Outgoing {
            topic: &will.topic,
            payload: &will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: props,
            expires_at: expiry(props, now),
            origin: None,
        };
        self.route(&out, now);
    }

    /// Stores a retained message (or clears it) and delivers the message to every matching
    /// subscription. Returns how many subscriptions it went to.
    fn route(&mut self, m: &Outgoing<'_>, now: Instant) -> usize {
        let mut shared: Option<Rc<Message>> = None;
        if m.retain {
            if m.payload.is_empty() {
                // v311:[MQTT-3.3.1-10], [MQTT-3.3.1-11]: an empty retained message clears.
                self.retained.remove(m.topic);
                self.persist_retained(m.topic, None);
            } else {
                let msg = Rc::new(m.to_message());
                self.retained.insert(m.topic.into(), msg.clone());
                self.persist_retained(m.topic, Some(&msg));
                shared = Some(msg);
            }
        }
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        self.router.collect(m.topic, &mut matches);
        // No Local (v5:[MQTT-3.8.3-3]): never back to the publishing session.
        if let Some(origin) = m.origin {
            matches.retain(|s| !(s.options.no_local && s.session == origin));
        }
        let check_read = self.settings.any_acl();
        if check_read {
            // The READ check happens per recipient, at delivery (as Mosquitto's subs__send).
            let (sessions, settings) = (&self.sessions, &self.settings);
            matches.retain(|sub| {
                sessions
                    .get(sub.session.idx as usize)
                    .is_some_and(|s| may_read(settings, s, m.topic))
            });
        }
        if matches.len() > 1 {
            matches.sort_unstable_by_key(|s| s.session);
        }
        let mut delivered = 0;
        let mut i = 0;
        while i < matches.len() {
            // Overlapping subscriptions of one session: one copy at the highest QoS, with every
            // subscription identifier (v311 §3.3.5, v5:[MQTT-3.3.4-3], [MQTT-3.3.4-5]).
            let first = matches[i];
            let mut j = i + 1;
            let mut qos = first.options.qos;
            let mut rap = first.options.retain_as_published;
            while j < matches.len() && matches[j].session == first.session {
                qos = qos.max(matches[j].options.qos);
                rap |= matches[j].options.retain_as_published;
                j += 1;
            }
            let sub_ids: Vec<u32> = matches[i..j]
                .iter()
                .map(|s: &Subscriber| s.sub_id)
                .filter(|&x| x != 0)
                .collect();
            self.deliver_matched(first.session, m, &mut shared, qos, rap, sub_ids, None, now);
            delivered += 1;
            i = j;
        }
        self.matches = matches;
        if self.router.has_shared() {
            let mut picks = Vec::new();
            let sessions = &self.sessions;
            self.router.collect_shared(
                m.topic,
                |sid| {
                    sessions
                        .get(sid.idx as usize)
                        .is_some_and(|s| s.conn().is_some())
                },
                &mut picks,
            );
            if check_read {
                let (sessions, settings) = (&self.sessions, &self.settings);
                picks.retain(|(sub, _)| {
                    sessions
                        .get(sub.session.idx as usize)
                        .is_some_and(|s| may_read(settings, s, m.topic))
                });
            }
            for (sub, group) in picks {
                let sub_ids = if sub.sub_id != 0 {
                    vec![sub.sub_id]
                } else {
                    Vec::new()
                };
                let (qos, rap) = (sub.options.qos, sub.options.retain_as_published);
                self.deliver_matched(
                    sub.session,
                    m,
                    &mut shared,
                    qos,
                    rap,
                    sub_ids,
                    Some(group),
                    now,
                );
                delivered += 1;
            }
        }
        delivered
    }

    /// Applies the QoS and retain rules of a matching subscription, then delivers.
    #[allow(clippy::too_many_arguments)]
    fn deliver_matched(
        &mut self,
        sid: SessionId,
        m: &Outgoing<'_>,
        shared: &mut Option<Rc<Message>>,
        granted: QoS,
        retain_as_published: bool,
        sub_ids: Vec<u32>,
        group: Option<Rc<str>>,
        now: Instant,
    ) {
        let qos = if self.settings.upgrade_outgoing_qos {
            granted
        } else {
            granted.min(m.qos)
        };
        // v311:[MQTT-3.3.1-9]: the retain flag is cleared on normal forwarding; v5 keeps it
        // for Retain As Published subscriptions (v5:[MQTT-3.3.1-12], [MQTT-3.3.1-13]).
        let retain = m.retain && retain_as_published;
        let target = Target {
            qos,
            retain,
            sub_ids,
            group,
        };
        self.deliver(sid, m, shared, target, now);
    }

    /// Hands one message to one session: straight to its socket buffer when possible,
    /// otherwise into its queue, within the limits.
    fn deliver(
        &mut self,
        sid: SessionId,
        m: &Outgoing<'_>,
        shared: &mut Option<Rc<Message>>,
        t: Target,
        now: Instant,
    ) {
        let Some(mut out) = self.outlet(sid) else {
            return;
        };
        match out.send_delivery(Pending::Routed { m, shared, t }, now) {
            // Each outcome is already accounted for; routing goes on to the next session.
            Sent::Written | Sent::InFlight | Sent::Queued | Sent::Dropped => {}
        }
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
    }

    /// A session ended for good: messages it got through shared subscriptions and had not
    /// finished go to another member of their group. QoS 0 and QoS 1 move; QoS 2 messages
    /// already sent stay with the session they were sent to (v5:[MQTT-4.8.2-4],
    /// [MQTT-4.8.2-5]), so they end with it.
    pub(super) fn reassign_shared(&mut self, sid: SessionId, deliveries: Vec<Delivery>) {
        let now = self.now;
        for d in deliveries {
            let Some(group) = d.group.clone() else {
                continue;
            };
            let sessions = &self.sessions;
            let Some(sub) = self.router.pick_shared(&group, sid, |s| {
                sessions
                    .get(s.idx as usize)
                    .is_some_and(|x| x.conn().is_some())
            }) else {
                continue;
            };
            let m = Outgoing {
                topic: &d.msg.topic,
                payload: &d.msg.payload,
                qos: d.msg.qos,
                retain: d.msg.retain,
                properties: d.msg.properties.as_deref(),
                expires_at: d.msg.expires_at,
                origin: d.msg.origin,
            };
            let mut shared = Some(d.msg.clone());
            let target = Target {
                qos: d.qos.min(sub.options.qos),
                retain: d.retain,
                sub_ids: if sub.sub_id != 0 {
                    vec![sub.sub_id]
                } else {
                    Vec::new()
                },
                group: Some(group),
            };
            self.deliver(sub.session, &m, &mut shared, target, now);
        }
    }

    pub(super) fn handle_puback(&mut self, id: ConnId, sid: SessionId, a: Ack) {
        log::debug!(
            "Received PUBACK from {} (Mid: {}, RC:{})",
            self.conn_name(id),
            a.packet_id,
            a.reason
        );
        self.finish_outgoing(sid, a.packet_id, OutState::AwaitPuback);
    }

    pub(super) fn handle_pubrec(&mut self, id: ConnId, sid: SessionId, a: Ack) {
        // Mosquitto's wording: the reason code only for MQTT 5 clients.
        if self.conn(id).is_some_and(|c| c.version.is_v5()) {
            let name = self.conn_name(id);
            log::debug!(
                "Received PUBREC from {name} (Mid: {}) ({})",
                a.packet_id,
                a.reason
            );
        } else {
            log::debug!(
                "Received PUBREC from {} (Mid: {})",
                self.conn_name(id),
                a.packet_id
            );
        }
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let found = s.find_inflight(a.packet_id);
        let code = match found {
            Some(i) if a.reason >= 0x80 => {
                // v5: an error PUBREC ends the flow (v5 §4.3.3).
                let seq = s.inflight.remove(i).map_or(0, |m| m.delivery.seq);
                self.persist_done(sid, seq);
                self.pump(sid);
                return;
            }
            Some(i) => {
                let Some(m) = s.inflight.get_mut(i) else {
                    return;
                };
                m.state = OutState::AwaitPubcomp;
                let seq = m.delivery.seq;
                self.persist_state(sid, seq, a.packet_id, OutState::AwaitPubcomp);
                reason::SUCCESS
            }
            None => reason::PACKET_IDENTIFIER_NOT_FOUND,
        };
        log::debug!(
            "Sending PUBREL to {} (m{})",
            self.conn_name(id),
            a.packet_id
        );
        self.send(id, &Packet::Pubrel(self.ack_for(id, a.packet_id, code)));
    }

    pub(super) fn handle_pubrel(&mut self, id: ConnId, sid: SessionId, a: Ack) {
        log::debug!(
            "Received PUBREL from {} (Mid: {})",
            self.conn_name(id),
            a.packet_id
        );
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let code = if s.release_incoming_qos2(a.packet_id) {
            self.persist_qos2(sid, a.packet_id, false);
            reason::SUCCESS
        } else {
            reason::PACKET_IDENTIFIER_NOT_FOUND
        };
        log::debug!(
            "Sending PUBCOMP to {} (m{})",
            self.conn_name(id),
            a.packet_id
        );
        self.send(id, &Packet::Pubcomp(self.ack_for(id, a.packet_id, code)));
    }

    pub(super) fn handle_pubcomp(&mut self, id: ConnId, sid: SessionId, a: Ack) {
        log::debug!(
            "Received PUBCOMP from {} (Mid: {}, RC:{})",
            self.conn_name(id),
            a.packet_id,
            a.reason
        );
        self.finish_outgoing(sid, a.packet_id, OutState::AwaitPubcomp);
    }

    /// The last acknowledgement of an outgoing message arrived: free its slot and let the
    /// queue move.
    fn finish_outgoing(&mut self, sid: SessionId, packet_id: u16, expected: OutState) {
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        // Acks usually come in order, so the front is the common case.
        let pos = match s.inflight.front() {
            Some(f) if f.packet_id == packet_id => Some(0),
            _ => s.find_inflight(packet_id),
        };
        if let Some(i) = pos {
            if s.inflight.get(i).is_some_and(|m| m.state == expected) {
                let seq = s.inflight.remove(i).map_or(0, |m| m.delivery.seq);
                self.persist_done(sid, seq);
                self.pump(sid);
            }
        }
    }

    /// Queues the retained messages matching a new subscription (they bypass the queue
    /// limits: a new subscriber gets every one of them, flow controlled by the in-flight
    /// window and the output bound).
    pub(super) fn queue_retained(
        &mut self,
        sid: SessionId,
        filter: &str,
        granted: QoS,
        sub_id: u32,
    ) {
        let now = self.now;
        let mut found: Vec<Rc<Message>> = Vec::new();
        if filter.bytes().any(|b| b == b'+' || b == b'#') {
            found.extend(
                self.retained
                    .iter()
                    .filter(|(t, _)| super::router::topic_matches(filter, t))
                    .map(|(_, m)| m.clone()),
            );
            // A stable order (by topic) makes replays predictable for clients and tests.
            found.sort_by(|a, b| a.topic.cmp(&b.topic));
        } else if let Some(m) = self.retained.get(filter) {
            found.push(m.clone());
        }
        let Some(mut out) = self.outlet(sid) else {
            return;
        };
        let upgrade = out.settings.upgrade_outgoing_qos;
        for msg in found {
            if msg.expires_at.is_some_and(|t| t <= now) {
                continue;
            }
            if !may_read(out.settings, out.session, &msg.topic) {
                continue;
            }
            let qos = if upgrade {
                granted
            } else {
                granted.min(msg.qos)
            };
            let d = Delivery {
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
            };
            match out.send_delivery(Pending::Retained(d), now) {
                // Always queued: the caller pumps once every filter of the SUBSCRIBE is done.
                Sent::Queued | Sent::Written | Sent::InFlight | Sent::Dropped => {}
            }
        }
    }
}

/// Where and how a matched message goes to one session.
pub(super) struct Target {
    pub(super) qos: QoS,
    pub(super) retain: bool,
    pub(super) sub_ids: Vec<u32>,
    group: Option<Rc<str>>,
}

impl Target {
    /// The delivery of `m` to this target, sharing the one copy of the message (made on
    /// first need) with every other session that keeps it.
    pub(super) fn into_delivery(
        self,
        shared: &mut Option<Rc<Message>>,
        m: &Outgoing<'_>,
    ) -> Delivery {
        let msg = shared
            .get_or_insert_with(|| Rc::new(m.to_message()))
            .clone();
        Delivery {
            msg,
            qos: self.qos,
            retain: self.retain,
            sub_ids: self.sub_ids,
            counted: true,
            group: self.group,
            seq: 0,
        }
    }
}

/// The ACL READ check for one recipient session, with the ACL of its listener (bridges'
/// own sessions are not subject to ACLs).
fn may_read(settings: &super::Settings, s: &super::session::Session, topic: &str) -> bool {
    match &settings.security_for(s.listener).acl {
        Some(acl) if !s.bridge => acl.can_read(s.username(), &s.client_id, topic),
        _ => true,
    }
}

/// When a message with these properties expires (v5 Message Expiry Interval).
fn expiry(props: Option<&Properties>, now: Instant) -> Option<Instant> {
    props
        .and_then(|p| p.message_expiry_interval)
        .map(|s| now + Duration::from_secs(u64::from(s)))
}
