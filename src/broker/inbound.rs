//! A PUBLISH from a client, up to the point where it is accepted: the first stage of a message.
//!
//! In order: the refusals that end the connection (a QoS above `max_qos`, retain when it is
//! not available, subscription identifiers), the inbound topic alias (v5 §3.3.2.3.4), a
//! bridge's topic remapping, the listener's mount point, the QoS 2 duplicate check, the
//! payload format, the topics only the broker may publish to (`$SYS`), the ACL WRITE check
//! and `message_size_limit`. A request to the broker (`$CONTROL/...`) goes to `control.rs`
//! instead of routing. An accepted message goes to routing (`route.rs`) borrowed
//! straight from the read buffer, without a copy; the acknowledgement it earns is `acks.rs`'s.
//!
//! It decides only whether, and under which topic, a message enters; it must not match,
//! deliver or persist a message itself.
use super::control::is_control;
use super::route::{expiry, MsgRef};
use super::{Broker, ConnId, SessionId, Violation};
use crate::auth::dynsec::DynAccess;
use crate::codec::{reason, ProtocolVersion, Publish, QoS};
use crate::topic::topic_matches;
use std::time::Instant;

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
    pub(super) fn of(p: &Publish<'_>, topic: &'a str) -> PublishSummary<'a> {
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

/// Topics no client may publish to, whatever the ACL says (Mosquitto's rule): the broker's
/// `$SYS` tree, but for the bridge state topics that bridges' notifications and wills use; and
/// `$share`, which names shared subscriptions and is no topic a message can have.
pub(super) fn reserved_for_the_broker(topic: &str) -> bool {
    if topic.starts_with("$SYS") {
        !topic_matches("$SYS/broker/connection/+/state", topic)
    } else {
        topic.starts_with("$share")
    }
}

impl Broker {
    /// A PUBLISH from connection `id` of session `sid`: routed and acknowledged, acknowledged
    /// with a refusal, or a [`Violation`] for [`Broker::handle`] to end the connection with.
    pub(super) fn handle_publish(
        &mut self,
        id: ConnId,
        sid: SessionId,
        mut p: Publish<'_>,
        now: Instant,
    ) -> Result<(), Violation> {
        self.now = now;
        self.stats.publish_received += 1;
        self.stats.publish_received_by_qos[p.qos as usize] += 1;
        self.stats.publish_bytes_received += p.payload.len() as u64;
        if let Some(c) = self.conn_mut(id) {
            c.published = true;
        }
        let version = self.conn(id).map_or(ProtocolVersion::V311, |c| c.version);
        let max_qos = self.conn(id).map_or(QoS::ExactlyOnce, |c| c.max_qos);
        if p.qos > max_qos {
            // A QoS above the Maximum QoS announced in CONNACK is refused (v5 §3.3.1.2).
            return Err(Violation::Rule {
                code: reason::QOS_NOT_SUPPORTED,
                why: "QoS above max_qos",
            });
        }
        if p.retain && !self.settings.retain_available {
            // v5:[MQTT-3.3.1-19]
            return Err(Violation::Rule {
                code: reason::RETAIN_NOT_SUPPORTED,
                why: "retain is not available",
            });
        }
        if !p.properties.subscription_identifiers.is_empty() {
            // v5:[MQTT-3.3.4-6]: a client must not send subscription identifiers.
            return Err(Violation::protocol("subscription identifier in PUBLISH"));
        }
        // Resolve an inbound topic alias (v5 §3.3.2.3.4).
        let aliased: Option<Box<str>>;
        if let Some(alias) = p.properties.set_mut().and_then(|s| s.topic_alias.take()) {
            let Some(a) = self.conn_mut(id).and_then(|c| c.aliases_mut()) else {
                return Err(Violation::Rule {
                    code: reason::TOPIC_ALIAS_INVALID,
                    why: "topic alias",
                });
            };
            if alias == 0 || alias > a.inbound_max {
                // v5:[MQTT-3.3.2-8], [MQTT-3.3.2-9]
                return Err(Violation::Rule {
                    code: reason::TOPIC_ALIAS_INVALID,
                    why: "topic alias out of range",
                });
            }
            let slot = usize::from(alias - 1);
            if a.inbound.len() <= slot {
                a.inbound.resize(slot + 1, None);
            }
            if p.topic.is_empty() {
                match &a.inbound[slot] {
                    Some(t) => aliased = Some(t.clone()),
                    None => return Err(Violation::protocol("unknown topic alias")),
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
        // A client of a listener with a mount point publishes inside its tree.
        let mounted: Option<String> = self.conn(id).and_then(|c| c.mount_point()).map(|m| {
            super::mount::mount(
                m,
                bridged.as_deref().or(aliased.as_deref()).unwrap_or(p.topic),
            )
        });
        let topic: &str = mounted
            .as_deref()
            .or(bridged.as_deref())
            .or(aliased.as_deref())
            .unwrap_or(p.topic);
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
                return Ok(());
            }
            if version.is_v5() && held >= self.settings.receive_maximum() {
                // v5:[MQTT-3.3.4-9]: more unacknowledged QoS 2 than our Receive Maximum.
                return Err(Violation::Rule {
                    code: reason::RECEIVE_MAXIMUM_EXCEEDED,
                    why: "receive maximum exceeded",
                });
            }
        }
        if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(p.payload).is_err()
        {
            // v5:[MQTT-3.3.2-4] allows refusing a payload that is not the UTF-8 it claims.
            self.ack_publish(id, sid, &p, reason::PAYLOAD_FORMAT_INVALID);
            return Ok(());
        }
        let listener = self.session(sid).map_or(0, |s| s.listener);
        let security = self.settings.security_for(listener).clone();
        if !from_bridge && reserved_for_the_broker(topic) {
            // Before any ACL, as Mosquitto: no client speaks for the broker, so the message
            // is dropped (counted) and the client told as for an ACL denial.
            log::info!(
                target: "notice",
                "Denied PUBLISH from {} {}",
                self.conn_name(id),
                PublishSummary::of(&p, topic)
            );
            self.stats.publish_dropped += 1;
            self.ack_publish(id, sid, &p, reason::NOT_AUTHORIZED);
            return Ok(());
        }
        let client = self.session(sid).filter(|_| !from_bridge);
        if let Some(s) = client {
            let allowed =
                match super::dynsec::session_verdict(&security, s, DynAccess::PublishSend, topic) {
                    Some(allowed) => allowed,
                    None => security
                        .acl
                        .as_ref()
                        .is_none_or(|acl| acl.can_publish(s.username(), &s.client_id, topic)),
                };
            if !allowed {
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
                return Ok(());
            }
        }
        let limit = self.settings.message_size_limit;
        let code = if limit != 0 && p.payload.len() > limit {
            // Mosquitto's answer to a v5 client: Packet too large (for the payload alone).
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
            reason::PACKET_TOO_LARGE
        } else if is_control(topic) {
            // A request to the broker (`control.rs`), never a message for subscribers.
            self.log_received(id, &p, topic);
            self.handle_control(id, sid, &p, topic, from_bridge, now)
        } else {
            // Logged once the message is accepted, as Mosquitto: a denied or oversized
            // PUBLISH has its own line instead.
            self.log_received(id, &p, topic);
            let props = (!p.properties.is_empty()).then_some(&p.properties);
            let out = MsgRef {
                topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties: props,
                expires_at: expiry(props, now),
                origin: Some(sid),
                source: None,
            };
            if let Some(ps) = self.persist.as_deref_mut() {
                if p.qos == QoS::AtLeastOnce && !p.retain {
                    // Its PUBACK may leave at completion, before any write (`hold.rs`).
                    ps.holds.begin(ps.changes_len());
                }
            }
            let matched = self.route(&out, now);
            // As Mosquitto: told in PUBACK only; a QoS 2 PUBREC says Success either way.
            if matched == 0 && version.is_v5() && p.qos == QoS::AtLeastOnce {
                reason::NO_MATCHING_SUBSCRIBERS
            } else {
                reason::SUCCESS
            }
        };
        self.ack_publish(id, sid, &p, code);
        Ok(())
    }

    /// The `-v` line of an accepted PUBLISH, with its topic after alias and bridge mapping.
    fn log_received(&self, id: ConnId, p: &Publish<'_>, topic: &str) {
        log::debug!(
            "Received PUBLISH from {} {}",
            self.conn_name(id),
            PublishSummary::of(p, topic)
        );
    }
}
