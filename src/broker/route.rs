//! Routing: from one accepted message to the sessions that get it.
//!
//! A message enters here from a client's PUBLISH (once `inbound.rs` has accepted it), a will,
//! `$SYS` or a bridge. Routing stores or clears it as retained, asks the [`Router`] which
//! subscriptions match, applies No Local and the ACL READ check per recipient, merges a
//! session's overlapping subscriptions into one delivery, picks one member per shared group,
//! and hands each delivery to [`Outlet::send_delivery`](super::deliver::Outlet::send_delivery).
//! It writes nothing itself.
//!
//! A message is borrowed from wherever it is ([`MsgRef`]) and copied into a shared
//! [`Message`] only when a session must keep it, once, however many sessions hold it.
//!
//! [`Router`]: super::router::Router

use super::deliver::{Pending, Sent};
use super::inbound::reserved_for_the_broker;
use super::router::Subscriber;
use super::session::{Delivery, GroupKey, Message};
use super::{Broker, SessionId};
use crate::codec::{LastWill, Properties, QoS};
use crate::store::MessageSource;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A message borrowed from wherever it is: the read buffer of the publisher, a will, a
/// `$SYS` value, or a shared [`Message`] that a session keeps. Routing and writing work on
/// this view, so that a message is copied only when a session must keep it.
#[derive(Clone, Copy)]
pub(super) struct MsgRef<'a> {
    pub(super) topic: &'a str,
    pub(super) payload: &'a [u8],
    pub(super) qos: QoS,
    pub(super) retain: bool,
    pub(super) properties: Option<&'a Properties>,
    pub(super) expires_at: Option<Instant>,
    pub(super) origin: Option<SessionId>,
    /// The client to keep with it as a retained message (`check_retain_source`) when
    /// `origin` cannot say: a will's, whose session may be gone by the time it is published.
    pub(super) source: Option<&'a MessageSource>,
}

impl MsgRef<'_> {
    pub(super) fn to_message(self) -> Message {
        let mut m = Message::new(self.topic, self.payload, self.qos, self.retain);
        m.properties = self.properties.cloned().unwrap_or_default();
        m.expires_at = self.expires_at;
        m.origin = self.origin;
        m
    }
}

impl<'a> From<&'a Message> for MsgRef<'a> {
    fn from(m: &'a Message) -> MsgRef<'a> {
        MsgRef {
            topic: m.topic(),
            payload: m.payload(),
            qos: m.qos,
            retain: m.retain,
            properties: (!m.properties.is_empty()).then_some(&m.properties),
            expires_at: m.expires_at,
            origin: m.origin,
            source: None,
        }
    }
}

impl Broker {
    /// Publishes a message from the broker itself (`$SYS`).
    pub(super) fn publish_internal(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        now: Instant,
    ) {
        let out = MsgRef {
            topic,
            payload,
            qos,
            retain,
            properties: None,
            expires_at: None,
            origin: None,
            source: None,
        };
        self.route(&out, now);
    }

    /// Publishes a client's will as if the client had sent it; `source` is that client.
    pub(super) fn publish_will(
        &mut self,
        will: LastWill,
        source: Option<MessageSource>,
        now: Instant,
    ) {
        if reserved_for_the_broker(&will.topic) {
            // Checked when the will is sent, as Mosquitto does: dropped like such a PUBLISH.
            log::info!(target: "notice", "Denied will to '{}'.", will.topic);
            self.stats.publish_dropped += 1;
            return;
        }
        log::debug!(
            "Sending will '{}' ({} bytes)",
            will.topic,
            will.payload.len()
        );
        self.stats.publish_received += 1;
        self.stats.publish_received_by_qos[will.qos as usize] += 1;
        let mut props = will.properties;
        // The delay belongs to the will, not to the message.
        props.will_delay_interval = None;
        let props = (!props.is_empty()).then_some(&props);
        let out = MsgRef {
            topic: &will.topic,
            payload: &will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: props,
            expires_at: expiry(props, now),
            origin: None,
            source: source.as_ref(),
        };
        self.route(&out, now);
    }

    /// Stores a retained message (or clears it) and delivers the message to every matching
    /// subscription. Returns how many subscriptions match the topic, counted before No Local
    /// and the ACL take their share, as Mosquitto counts for "no matching subscribers".
    pub(super) fn route(&mut self, m: &MsgRef<'_>, now: Instant) -> usize {
        if m.retain {
            self.store_retained(m);
        }
        let mut shared = None;
        let mut matches = std::mem::take(&mut self.matches);
        matches.clear();
        let may_repeat = self.router.collect(m.topic, &mut matches);
        let mut matched = matches.len();
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
        if may_repeat {
            // A session's subscriptions side by side (a fan-out to one filter needs no sort).
            matches.sort_unstable_by_key(|s| s.session);
        }
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
            matched += picks.len();
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
            }
        }
        matched
    }

    /// Applies the QoS and retain rules of a matching subscription, then delivers.
    #[allow(clippy::too_many_arguments)]
    fn deliver_matched(
        &mut self,
        sid: SessionId,
        m: &MsgRef<'_>,
        shared: &mut Option<Rc<Message>>,
        granted: QoS,
        retain_as_published: bool,
        sub_ids: Vec<u32>,
        group: Option<GroupKey>,
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
        m: &MsgRef<'_>,
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
            let m = MsgRef::from(&*d.msg);
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
}

/// Where and how a matched message goes to one session.
pub(super) struct Target {
    pub(super) qos: QoS,
    pub(super) retain: bool,
    pub(super) sub_ids: Vec<u32>,
    group: Option<GroupKey>,
}

impl Target {
    /// Where a replayed retained message goes: with the retain flag (v311:[MQTT-3.3.1-8]) and
    /// the subscription's identifier, if it has one.
    pub(super) fn replay(qos: QoS, sub_id: u32) -> Target {
        Target {
            qos,
            retain: true,
            sub_ids: if sub_id != 0 {
                vec![sub_id]
            } else {
                Vec::new()
            },
            group: None,
        }
    }

    /// The delivery of replayed message `m`, outside the queue limits (a new subscriber gets
    /// every retained message), copied into `copy` unless it was already.
    pub(super) fn into_replayed(self, copy: &mut Option<Rc<Message>>, m: &MsgRef<'_>) -> Delivery {
        Delivery {
            counted: false,
            ..self.into_delivery(copy, m)
        }
    }

    /// The delivery of `m` to this target, sharing the one copy of the message (made on
    /// first need) with every other session that keeps it.
    pub(super) fn into_delivery(
        self,
        shared: &mut Option<Rc<Message>>,
        m: &MsgRef<'_>,
    ) -> Delivery {
        let msg = shared
            .get_or_insert_with(|| Rc::new(m.to_message()))
            .clone();
        Delivery {
            msg,
            qos: self.qos,
            retain: self.retain,
            sub_ids: self.sub_ids.into(),
            counted: true,
            group: self.group,
            seq: 0,
        }
    }
}

/// The ACL READ check for one recipient session, with the ACL of its listener (bridges'
/// own sessions are not subject to ACLs).
pub(super) fn may_read(
    settings: &super::Settings,
    s: &super::session::Session,
    topic: &str,
) -> bool {
    if s.bridge.is_some() {
        return true;
    }
    let security = settings.security_for(s.listener);
    let access = crate::auth::dynsec::DynAccess::PublishReceive;
    if let Some(allowed) = super::dynsec::session_verdict(security, s, access, topic) {
        return allowed;
    }
    match &security.acl {
        Some(acl) => acl.can_read(s.username(), &s.client_id, topic),
        None => true,
    }
}

/// [`may_read`] for a message a session keeps: its topic (checked as UTF-8 at each look, see
/// `Message::topic`) is looked at only where the session's listener has an ACL or dynamic
/// security, which most brokers have not.
pub(super) fn may_read_kept(
    settings: &super::Settings,
    s: &super::session::Session,
    m: &Message,
) -> bool {
    let security = settings.security_for(s.listener);
    let checked = s.bridge.is_none() && (security.acl.is_some() || security.dynsec.is_some());
    !checked || may_read(settings, s, m.topic())
}

/// When a message with these properties expires (v5 Message Expiry Interval).
pub(super) fn expiry(props: Option<&Properties>, now: Instant) -> Option<Instant> {
    props
        .and_then(|p| p.message_expiry_interval)
        .map(|s| now + Duration::from_secs(u64::from(s)))
}
