//! Retained messages: the last message kept per topic, and its replay to new subscriptions.
//!
//! A PUBLISH with the retain flag replaces the topic's retained message, and one with an empty
//! payload clears it (v311 §3.3.1.3). A new subscription gets the retained messages that match
//! its filter, after the SUBACK. The store is told of each change through `persist.rs`, which
//! also brings the retained messages back at start.

use super::deliver::{Pending, Sent};
use super::route::{may_read, MsgRef};
use super::router::TopicMap;
use super::session::{Delivery, Message};
use super::{Broker, SessionId};
use crate::codec::QoS;
use crate::topic::topic_matches;
use std::rc::Rc;

/// The retained messages, one per topic.
#[derive(Default)]
pub(super) struct Retained(TopicMap<Rc<Message>>);

impl Retained {
    /// How many topics have a retained message.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The payload bytes of every retained message.
    pub(super) fn payload_bytes(&self) -> usize {
        self.0.values().map(|m| m.payload.len()).sum()
    }

    /// Makes `msg` the retained message of its topic.
    pub(super) fn set(&mut self, msg: Rc<Message>) {
        self.0.insert(msg.topic.clone(), msg);
    }

    /// Removes the retained message of `topic`, if any.
    pub(super) fn clear(&mut self, topic: &str) {
        self.0.remove(topic);
    }

    /// The retained messages whose topic `filter` matches. A wildcard filter looks at every
    /// retained message and sorts what matches by topic, so that replays are predictable for
    /// clients and tests.
    pub(super) fn matching(&self, filter: &str) -> Vec<Rc<Message>> {
        let mut found: Vec<Rc<Message>> = Vec::new();
        if filter.bytes().any(|b| b == b'+' || b == b'#') {
            found.extend(
                self.0
                    .iter()
                    .filter(|(t, _)| topic_matches(filter, t))
                    .map(|(_, m)| m.clone()),
            );
            found.sort_by(|a, b| a.topic.cmp(&b.topic));
        } else if let Some(m) = self.0.get(filter) {
            found.push(m.clone());
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
            self.retained.set(msg.clone());
            self.persist_retained(m.topic, Some(&msg));
            Some(msg)
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
        let found = self.retained.matching(filter);
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
