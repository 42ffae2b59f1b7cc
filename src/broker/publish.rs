//! PUBLISH in and out: accepting a message, routing it, and the QoS 1/2 handshakes.
//!
//! This is the hot path. An inbound PUBLISH is borrowed straight from the read buffer; a QoS 0
//! message to a connected subscriber with nothing queued is written directly into that
//! subscriber's output buffer, and only a message that must be kept (queued, in flight,
//! retained) is copied into a shared [`Message`], once, however many sessions hold it.
//!
//! Outgoing QoS is the lower of the published QoS and the granted QoS (v311 §3.8.4), or the
//! granted QoS with `upgrade_outgoing_qos`. At most `max_inflight_messages` QoS 1/2 messages
//! are in flight per session; the rest wait in its queue, in order.

use super::conn::ConnState;
use super::router::Subscriber;
use super::session::{Delivery, Inflight, Message, OutState};
use super::{Broker, CloseReason, ConnId, SessionId, OUTPUT_HIGH_WATER};
use crate::codec::encode::{write_publish, PublishOut};
use crate::codec::{
    reason, Ack, DecodeError, LastWill, Packet, Properties, ProtocolVersion, Publish, QoS,
};
use std::borrow::Cow;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A message being routed, borrowed from wherever it came from.
struct Outgoing<'a> {
    topic: &'a str,
    payload: &'a [u8],
    qos: QoS,
    retain: bool,
    properties: Option<&'a Properties>,
    origin: Option<SessionId>,
}

impl Outgoing<'_> {
    fn to_message(&self, now: Instant) -> Message {
        let expires_at = self
            .properties
            .and_then(|p| p.message_expiry_interval)
            .map(|s| now + Duration::from_secs(u64::from(s)));
        Message {
            topic: self.topic.into(),
            payload: self.payload.into(),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.map(|p| Box::new(p.clone())),
            expires_at,
            origin: self.origin,
        }
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

/// Writes one PUBLISH of a delivery and logs it like Mosquitto's `-v`.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_delivery(
    out: &mut Vec<u8>,
    name: &str,
    d: &Delivery,
    packet_id: u16,
    dup: bool,
    version: ProtocolVersion,
    now: Instant,
) {
    let props = if version.is_v5() {
        delivery_properties(
            d.msg.properties.as_deref(),
            &d.sub_ids,
            d.msg.expires_at,
            now,
        )
    } else {
        None
    };
    let p = PublishOut {
        topic: &d.msg.topic,
        payload: &d.msg.payload,
        qos: d.qos,
        retain: d.retain,
        dup,
        packet_id,
        properties: props.as_deref(),
    };
    log_sending(name, &p);
    write_publish(out, &p, version);
}

fn log_sending(name: &str, p: &PublishOut<'_>) {
    log::debug!(
        "Sending PUBLISH to {} (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
        name,
        u8::from(p.dup),
        p.qos as u8,
        u8::from(p.retain),
        p.packet_id,
        p.topic,
        p.payload.len()
    );
}

impl Broker {
    pub(super) fn handle_publish(
        &mut self,
        id: ConnId,
        sid: SessionId,
        p: Publish<'_>,
        now: Instant,
    ) {
        self.now = now;
        let name = self.conn_name(id);
        log::debug!(
            "Received PUBLISH from {} (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
            name,
            u8::from(p.dup),
            p.qos as u8,
            u8::from(p.retain),
            p.packet_id,
            p.topic,
            p.payload.len()
        );
        self.stats.publish_received += 1;
        let version = self.conn(id).map_or(ProtocolVersion::V311, |c| c.version);
        if p.retain && !self.settings.retain_available {
            self.send_disconnect(id, reason::RETAIN_NOT_SUPPORTED);
            self.close(
                id,
                CloseReason::Protocol(DecodeError::Protocol("retain is not available")),
                now,
            );
            return;
        }
        if p.properties.topic_alias.is_some() {
            // Topic Alias Maximum is 0 in CONNACK: any alias is invalid (v5:[MQTT-3.3.2-8]).
            self.send_disconnect(id, reason::TOPIC_ALIAS_INVALID);
            self.close(
                id,
                CloseReason::Protocol(DecodeError::Protocol("topic alias not allowed")),
                now,
            );
            return;
        }
        if p.qos == QoS::ExactlyOnce {
            let duplicate = self
                .session(sid)
                .is_some_and(|s| s.incoming_qos2.contains(&p.packet_id));
            if duplicate {
                // Already accepted and routed: acknowledge again, deliver nothing
                // (v311:[MQTT-4.3.3-2] method B).
                self.send_pubrec(id, p.packet_id, reason::SUCCESS);
                return;
            }
        }
        if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(p.payload).is_err()
        {
            // v5:[MQTT-3.3.2-4] allows refusing a payload that is not the UTF-8 it claims.
            self.ack_publish(id, sid, &p, reason::PAYLOAD_FORMAT_INVALID);
            return;
        }
        let limit = self.settings.message_size_limit;
        let code = if limit != 0 && p.payload.len() > limit {
            log::info!(
                target: "notice",
                "Dropped too large PUBLISH from {} (q{}, r{}, m{}, '{}', ... ({} bytes)).",
                name,
                p.qos as u8,
                u8::from(p.retain),
                p.packet_id,
                p.topic,
                p.payload.len()
            );
            reason::IMPLEMENTATION_SPECIFIC_ERROR
        } else {
            let props = (!p.properties.is_empty()).then_some(&p.properties);
            let out = Outgoing {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties: props,
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
                self.send(id, &Packet::Puback(self.ack_for(id, p.packet_id, code)));
            }
            QoS::ExactlyOnce => {
                if code < 0x80 {
                    if let Some(s) = self.session_mut(sid) {
                        s.incoming_qos2.push(p.packet_id);
                    }
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
        self.send(id, &Packet::Pubrec(self.ack_for(id, packet_id, code)));
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

    /// Publishes a client's will as if the client had sent it.
    pub(super) fn publish_will(&mut self, will: LastWill, now: Instant) {
        log::debug!(
            "Sending will '{}' ({} bytes)",
            will.topic,
            will.payload.len()
        );
        self.stats.publish_received += 1;
        let props = (!will.properties.is_empty()).then_some(&will.properties);
        let out = Outgoing {
            topic: &will.topic,
            payload: &will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: props,
            origin: None,
        };
        self.route(&out, now);
    }

    /// Stores a retained message (or clears it) and delivers the message to every matching
    /// subscription. Returns how many sessions it went to.
    fn route(&mut self, m: &Outgoing<'_>, now: Instant) -> usize {
        let mut shared: Option<Rc<Message>> = None;
        if m.retain {
            if m.payload.is_empty() {
                // v311:[MQTT-3.3.1-10], [MQTT-3.3.1-11]: an empty retained message clears.
                self.retained.remove(m.topic);
            } else {
                let msg = Rc::new(m.to_message(now));
                self.retained.insert(m.topic.into(), msg.clone());
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
            let qos = if self.settings.upgrade_outgoing_qos {
                qos
            } else {
                qos.min(m.qos)
            };
            // v311:[MQTT-3.3.1-9]: the retain flag is cleared on normal forwarding; v5 keeps it
            // for Retain As Published subscriptions.
            let retain = m.retain && rap;
            self.deliver(first.session, m, &mut shared, qos, retain, sub_ids, now);
            delivered += 1;
            i = j;
        }
        self.matches = matches;
        delivered
    }

    /// Hands one message to one session: straight to its socket buffer when possible,
    /// otherwise into its queue, within the limits.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        sid: SessionId,
        m: &Outgoing<'_>,
        shared: &mut Option<Rc<Message>>,
        qos: QoS,
        retain: bool,
        sub_ids: Vec<u32>,
        now: Instant,
    ) {
        let inflight_limit = self.settings.inflight_limit();
        let Some(s) = self
            .sessions
            .get_mut(sid.idx as usize)
            .filter(|s| s.gen == sid.gen)
        else {
            return;
        };
        let conn = s
            .conn
            .and_then(|cid| {
                self.conns
                    .get_mut(cid)
                    .and_then(Option::as_mut)
                    .map(|c| (cid, c))
            })
            .filter(|(_, c)| matches!(c.state, ConnState::Active(_)));
        match conn {
            Some((cid, c)) if s.queue.is_empty() => {
                let fits = c.max_packet_size == 0 || {
                    let props = delivery_properties(m.properties, &sub_ids, None, now);
                    let p = PublishOut {
                        topic: m.topic,
                        payload: m.payload,
                        qos,
                        retain,
                        dup: false,
                        packet_id: 1,
                        properties: props.as_deref(),
                    };
                    p.wire_len(c.version.is_v5()) <= c.max_packet_size as usize
                };
                if !fits {
                    // v5:[MQTT-3.1.2-25]: never send a packet larger than the client accepts.
                    self.stats.publish_dropped += 1;
                    return;
                }
                if qos == QoS::AtMostOnce {
                    if c.out.len() >= OUTPUT_HIGH_WATER {
                        self.stats.publish_dropped += 1;
                        if !s.dropping {
                            s.dropping = true;
                            log::info!(target: "notice", "Outgoing messages are being dropped for client {}.", s.client_id);
                        }
                        return;
                    }
                    s.dropping = false;
                    let expires_at = shared.as_ref().and_then(|m| m.expires_at);
                    let props = if c.version.is_v5() {
                        delivery_properties(m.properties, &sub_ids, expires_at, now)
                    } else {
                        None
                    };
                    let p = PublishOut {
                        topic: m.topic,
                        payload: m.payload,
                        qos,
                        retain,
                        dup: false,
                        packet_id: 0,
                        properties: props.as_deref(),
                    };
                    log_sending(&s.client_id, &p);
                    write_publish(&mut c.out, &p, c.version);
                    self.stats.publish_sent += 1;
                    self.stats.messages_sent += 1;
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(cid);
                    }
                    return;
                }
                let limit = inflight_limit.min(usize::from(c.receive_maximum));
                if s.inflight.len() < limit && c.out.len() < OUTPUT_HIGH_WATER {
                    let msg = shared
                        .get_or_insert_with(|| Rc::new(m.to_message(now)))
                        .clone();
                    let d = Delivery {
                        msg,
                        qos,
                        retain,
                        sub_ids,
                        counted: true,
                    };
                    let packet_id = s.alloc_packet_id();
                    write_delivery(
                        &mut c.out,
                        &s.client_id,
                        &d,
                        packet_id,
                        false,
                        c.version,
                        now,
                    );
                    s.inflight.push_back(Inflight {
                        packet_id,
                        state: if qos == QoS::AtLeastOnce {
                            OutState::AwaitPuback
                        } else {
                            OutState::AwaitPubrec
                        },
                        delivery: d,
                    });
                    self.stats.publish_sent += 1;
                    self.stats.messages_sent += 1;
                    if !c.dirty {
                        c.dirty = true;
                        self.dirty.push(cid);
                    }
                    return;
                }
            }
            None if qos == QoS::AtMostOnce && !self.settings.queue_qos0_messages => return,
            _ => {}
        }
        // Queue it, within max_queued_messages / max_queued_bytes.
        let max_count = self.settings.max_queued_messages;
        let max_bytes = self.settings.max_queued_bytes;
        let size = m.topic.len() + m.payload.len();
        if (max_count != 0 && s.queued_count >= max_count)
            || (max_bytes != 0 && s.queued_bytes + size > max_bytes)
        {
            self.stats.publish_dropped += 1;
            if !s.dropping {
                s.dropping = true;
                log::info!(target: "notice", "Outgoing messages are being dropped for client {}.", s.client_id);
            }
            return;
        }
        s.dropping = false;
        let msg = shared
            .get_or_insert_with(|| Rc::new(m.to_message(now)))
            .clone();
        s.enqueue(Delivery {
            msg,
            qos,
            retain,
            sub_ids,
            counted: true,
        });
    }

    /// Moves queued messages of a connected session into flight, as far as the in-flight
    /// window and the output bound allow.
    pub(super) fn pump(&mut self, sid: SessionId) {
        let now = self.now;
        let inflight_limit = self.settings.inflight_limit();
        let Some(s) = self
            .sessions
            .get_mut(sid.idx as usize)
            .filter(|s| s.gen == sid.gen)
        else {
            return;
        };
        let Some(cid) = s.conn else {
            return;
        };
        let Some(c) = self.conns.get_mut(cid).and_then(Option::as_mut) else {
            return;
        };
        if !matches!(c.state, ConnState::Active(_)) {
            return;
        }
        let limit = inflight_limit.min(usize::from(c.receive_maximum));
        let start = c.out.len();
        while let Some(front) = s.queue.front() {
            if front.msg.expires_at.is_some_and(|t| t <= now) {
                // v5:[MQTT-3.3.2-5]: an expired message is not delivered.
                s.dequeue();
                self.stats.publish_dropped += 1;
                continue;
            }
            if c.out.len() >= OUTPUT_HIGH_WATER {
                c.throttled = true;
                break;
            }
            if front.qos != QoS::AtMostOnce && s.inflight.len() >= limit {
                break;
            }
            let Some(d) = s.dequeue() else {
                break;
            };
            if c.max_packet_size != 0 {
                let props = delivery_properties(
                    d.msg.properties.as_deref(),
                    &d.sub_ids,
                    d.msg.expires_at,
                    now,
                );
                let p = PublishOut {
                    topic: &d.msg.topic,
                    payload: &d.msg.payload,
                    qos: d.qos,
                    retain: d.retain,
                    dup: false,
                    packet_id: 1,
                    properties: props.as_deref(),
                };
                if p.wire_len(c.version.is_v5()) > c.max_packet_size as usize {
                    self.stats.publish_dropped += 1;
                    continue;
                }
            }
            self.stats.publish_sent += 1;
            self.stats.messages_sent += 1;
            if d.qos == QoS::AtMostOnce {
                write_delivery(&mut c.out, &s.client_id, &d, 0, false, c.version, now);
                continue;
            }
            let packet_id = s.alloc_packet_id();
            write_delivery(
                &mut c.out,
                &s.client_id,
                &d,
                packet_id,
                false,
                c.version,
                now,
            );
            s.inflight.push_back(Inflight {
                packet_id,
                state: if d.qos == QoS::AtLeastOnce {
                    OutState::AwaitPuback
                } else {
                    OutState::AwaitPubrec
                },
                delivery: d,
            });
        }
        if c.out.len() != start && !c.dirty {
            c.dirty = true;
            self.dirty.push(cid);
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
        log::debug!(
            "Received PUBREC from {} (Mid: {}, RC:{})",
            self.conn_name(id),
            a.packet_id,
            a.reason
        );
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let found = s.find_inflight(a.packet_id);
        let code = match found {
            Some(i) if a.reason >= 0x80 => {
                // v5: an error PUBREC ends the flow (v5 §4.3.3).
                s.inflight.remove(i);
                self.pump(sid);
                return;
            }
            Some(i) => {
                s.inflight[i].state = OutState::AwaitPubcomp;
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
        let code = match s.incoming_qos2.iter().position(|&p| p == a.packet_id) {
            Some(i) => {
                s.incoming_qos2.swap_remove(i);
                reason::SUCCESS
            }
            None => reason::PACKET_IDENTIFIER_NOT_FOUND,
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
            if s.inflight[i].state == expected {
                s.inflight.remove(i);
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
        let upgrade = self.settings.upgrade_outgoing_qos;
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        for msg in found {
            if msg.expires_at.is_some_and(|t| t <= now) {
                continue;
            }
            let qos = if upgrade {
                granted
            } else {
                granted.min(msg.qos)
            };
            s.enqueue(Delivery {
                msg,
                qos,
                retain: true,
                sub_ids: if sub_id != 0 {
                    vec![sub_id]
                } else {
                    Vec::new()
                },
                counted: false,
            });
        }
    }
}
