//! SUBSCRIBE and UNSUBSCRIBE: editing a session's entries in the routing table.
//!
//! Each filter of a SUBSCRIBE gets its own answer in SUBACK: the QoS granted, or a failure
//! code for a filter that is not valid (0x80 in 3.1.1, 0x8F in 5.0) or, with
//! `refuse_unreadable_subscriptions`, that the ACL lets read nothing (0x80, 0x87). MQTT 3.1
//! has no failure code, so a 3.1 client that sends a bad filter is disconnected. Retained
//! messages matching a new subscription are queued right after the SUBACK.

use super::mount::mount_filter;
use super::router::{valid_shared, Subscriber};
use super::{Broker, ConnId, SessionId, Violation};
use crate::auth::dynsec::DynAccess;
use crate::codec::{
    reason, valid_topic_filter, Packet, Properties, ProtocolVersion, QoS, Suback, Subscribe,
    SubscribeOptions, Unsuback, Unsubscribe,
};
use std::time::Instant;

impl Broker {
    /// A SUBSCRIBE: each filter added or refused, the SUBACK, then the retained replay. A
    /// [`Violation`] ends the connection without a SUBACK.
    pub(super) fn handle_subscribe(
        &mut self,
        id: ConnId,
        sid: SessionId,
        s: Subscribe,
        now: Instant,
    ) -> Result<(), Violation> {
        self.now = now;
        let name = self.conn_name(id);
        let version = self.conn(id).map_or(ProtocolVersion::V311, |c| c.version);
        log::debug!("Received SUBSCRIBE from {}", name);
        let sub_id = s
            .properties
            .subscription_identifiers
            .first()
            .copied()
            .unwrap_or(0);
        let mut codes = Vec::with_capacity(s.subscriptions.len());
        let mut retained = Vec::new();
        let (max_qos, mount_point) = self.conn(id).map_or((QoS::ExactlyOnce, None), |c| {
            (c.max_qos, c.mount_point().map(str::to_string))
        });
        for sub in &s.subscriptions {
            log::debug!("\t{} (QoS {})", sub.filter, sub.options.qos as u8);
            let is_shared = sub.filter.starts_with("$share/");
            if is_shared && sub.options.no_local && version.is_v5() {
                // v5:[MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error.
                return Err(Violation::protocol("No Local on a shared subscription"));
            }
            let valid = if is_shared {
                valid_shared(&sub.filter)
            } else {
                valid_topic_filter(&sub.filter)
            };
            if !valid {
                if version == ProtocolVersion::V31 {
                    return Err(Violation::protocol("invalid topic filter"));
                }
                codes.push(if version.is_v5() {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    reason::UNSPECIFIED_ERROR
                });
                continue;
            }
            // Checked as the client wrote it, used under the listener's mount point.
            let mounted = mount_point.as_deref().map(|m| mount_filter(m, &sub.filter));
            let filter: &str = mounted.as_deref().unwrap_or(&sub.filter);
            // Mosquitto grants every filter and the ACL filters each delivery (route.rs); with
            // midge's `refuse_unreadable_subscriptions`, a filter the ACL can never let through
            // is refused instead, so the client knows.
            let listener = self.session(sid).map_or(0, |s| s.listener);
            let security = self.settings.security_for(listener).clone();
            let bare = super::router::parse_shared(filter).map_or(filter, |(_, f)| f);
            // Dynamic security's subscribe rules refuse in SUBACK, as Mosquitto's plugin.
            let dynsec = self.session(sid).and_then(|s| {
                super::dynsec::session_verdict(&security, s, DynAccess::Subscribe, bare)
            });
            if dynsec == Some(false) {
                log::info!(target: "notice", "Denied SUBSCRIBE from {} to '{}' (dynsec).", name, sub.filter);
                codes.push(if version.is_v5() {
                    reason::NOT_AUTHORIZED
                } else {
                    reason::UNSPECIFIED_ERROR
                });
                continue;
            }
            let acl = security
                .acl
                .as_ref()
                .filter(|_| self.settings.refuse_unreadable_subscriptions && dynsec.is_none());
            if let Some(acl) = acl {
                let (user, client) = self
                    .session(sid)
                    .map(|s| (s.username().map(str::to_string), s.client_id.to_string()))
                    .unwrap_or((None, name.clone()));
                if !acl.can_subscribe(user.as_deref(), &client, bare)
                    && version != ProtocolVersion::V31
                {
                    log::info!(target: "notice", "Denied SUBSCRIBE from {} to '{}' (ACL).", name, sub.filter);
                    codes.push(if version.is_v5() {
                        reason::NOT_AUTHORIZED
                    } else {
                        reason::UNSPECIFIED_ERROR
                    });
                    continue;
                }
            }
            let mut options = sub.options;
            // v5:[MQTT-3.2.2-10]: a request above max_qos is granted at max_qos.
            options.qos = options.qos.min(max_qos);
            if self.conn(id).is_some_and(|c| c.remote_bridge) {
                // Another broker's bridge (try_private): as Mosquitto, never echo its own
                // messages back (which would loop between the brokers) and keep retain flags.
                options.no_local = true;
                options.retain_as_published = true;
            }
            let replaced = self.add_subscription(sid, filter, options, sub_id);
            self.persist_subscription(sid, filter, Some((options, sub_id)));
            log::info!(target: "subscribe", "{} {} {}", name, options.qos as u8, filter);
            codes.push(options.qos as u8);
            // Retain Handling (v5 §3.8.3.1): 0 always, 1 only for a new subscription, 2 never.
            // Retained messages are not sent when a shared subscription is made (v5 §4.8.2).
            let send_retained = !is_shared
                && match options.retain_handling {
                    0 => true,
                    1 => !replaced,
                    _ => false,
                };
            if send_retained {
                retained.push((filter.to_string(), options.qos));
            }
        }
        log::debug!("Sending SUBACK to {}", name);
        self.send(
            id,
            &Packet::Suback(Suback {
                packet_id: s.packet_id,
                codes,
                properties: Properties::default(),
            }),
        );
        for (filter, qos) in retained {
            self.queue_retained(sid, &filter, qos, sub_id);
        }
        self.pump(sid);
        Ok(())
    }

    pub(super) fn handle_unsubscribe(&mut self, id: ConnId, sid: SessionId, u: Unsubscribe) {
        let name = self.conn_name(id);
        log::debug!("Received UNSUBSCRIBE from {}", name);
        let mut codes = Vec::with_capacity(u.filters.len());
        let mount_point = self
            .conn(id)
            .and_then(|c| c.mount_point())
            .map(str::to_string);
        for filter in &u.filters {
            // Mounted as the SUBSCRIBE was (Mosquitto forgets to, so its UNSUBSCRIBE under a
            // mount point removes nothing).
            let mounted = mount_point.as_deref().map(|m| mount_filter(m, filter));
            let filter: &str = mounted.as_deref().unwrap_or(filter);
            // Mosquitto 2.0 checks unsubscribing too (dynamic security's unsubscribe rules):
            // a refused filter stays subscribed.
            let bare = super::router::parse_shared(filter).map_or(filter, |(_, f)| f);
            let denied = self.session(sid).is_some_and(|s| {
                let security = self.settings.security_for(s.listener);
                super::dynsec::session_verdict(security, s, DynAccess::Unsubscribe, bare)
                    == Some(false)
            });
            if denied {
                log::info!(target: "notice", "Denied UNSUBSCRIBE from {} to '{}' (dynsec).", name, filter);
                codes.push(reason::NOT_AUTHORIZED);
                continue;
            }
            let removed = self.remove_subscription(sid, filter);
            if removed {
                self.persist_subscription(sid, filter, None);
            }
            log::debug!("\t{filter}");
            log::info!(target: "unsubscribe", "{} {}", name, filter);
            codes.push(if removed {
                reason::SUCCESS
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        log::debug!("Sending UNSUBACK to {}", name);
        self.send(
            id,
            &Packet::Unsuback(Unsuback {
                packet_id: u.packet_id,
                codes,
                properties: Properties::default(),
            }),
        );
    }

    /// Subscribes session `sid` to `filter`, or replaces its subscription to it, in the router
    /// and in the session's own list together (the only way to add one); true if it replaced
    /// one. Recording it for the store is the caller's: a restored one is already stored.
    pub(super) fn add_subscription(
        &mut self,
        sid: SessionId,
        filter: &str,
        options: SubscribeOptions,
        sub_id: u32,
    ) -> bool {
        let Some(session) = self
            .sessions
            .get_mut(sid.idx as usize)
            .filter(|s| s.gen == sid.gen)
        else {
            return false;
        };
        let replaced = self.router.subscribe(
            filter,
            Subscriber {
                session: sid,
                options,
                sub_id,
            },
        );
        // The router knows whether the session had this filter: only then is its own list
        // searched, so a client that sets up 100 000 subscriptions does not search 100 000
        // times.
        let existing = if replaced {
            session
                .subscriptions
                .iter_mut()
                .find(|(f, _, _)| **f == *filter)
        } else {
            None
        };
        match existing {
            Some(entry) => {
                entry.1 = options;
                entry.2 = sub_id;
            }
            None => session.subscriptions.push((filter.into(), options, sub_id)),
        }
        replaced
    }

    /// Removes session `sid`'s subscription to `filter` from the router and from the session's
    /// own list together; true if there was one.
    fn remove_subscription(&mut self, sid: SessionId, filter: &str) -> bool {
        if let Some(s) = self.session_mut(sid) {
            s.subscriptions.retain(|(f, _, _)| **f != *filter);
        }
        self.router.unsubscribe(filter, sid)
    }
}
