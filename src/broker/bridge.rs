//! Bridges: midge as a client of another broker, inside the same loop.
//!
//! A bridge has a local session like any client's (persistent, so messages for the remote
//! wait in its queue while the link is down, bounded by the queue limits) subscribed here to
//! its `out` topics, and one outgoing connection on which midge plays the client: it sends
//! CONNECT, subscribes there to the `in` topics, forwards its queue as PUBLISHes and routes
//! what the remote publishes into the local tree. Topics are remapped with the prefixes of
//! each `topic` line on the way out ([`BridgeLink::to_remote`]) and in
//! ([`BridgeLink::to_local`]).
//!
//! Loops: the local session subscribes with No Local and what comes in is published with that
//! session as origin, so nothing goes straight back; and midge marks a remote bridge (one
//! that connects with Mosquitto's `try_private` bit) so it never echoes a bridge's own
//! messages back to it. The server resolves addresses and opens sockets ([`Action::ConnectBridge`]);
//! reconnecting with back-off, forever, is decided here.

use super::conn::{Conn, ConnState};
use super::session::{Expiry, Session};
use super::{Action, Broker, ConnId, SessionId, Timer};
use crate::codec::{
    Connect, LastWill, Packet, Properties, ProtocolVersion, QoS, Subscribe, SubscribeOptions,
    Subscription,
};
use crate::config::bridge::{BridgeConfig, BridgeProtocol, Direction};
use crate::topic::topic_matches;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The topic rules of a connected bridge, kept on its connection for remapping.
#[derive(Debug)]
pub struct BridgeLink {
    pub index: usize,
    config: Rc<BridgeConfig>,
}

fn remap(topic: &str, from: &str, to: &str, pattern: &str) -> Option<String> {
    if pattern.is_empty() {
        return (topic == from).then(|| to.to_string());
    }
    let rest = topic.strip_prefix(from)?;
    topic_matches(pattern, rest).then(|| format!("{to}{rest}"))
}

impl BridgeLink {
    /// The remote topic for a local one going out.
    pub fn to_remote(&self, topic: &str) -> Option<String> {
        self.config
            .topics
            .iter()
            .filter(|t| t.direction != Direction::In)
            .find_map(|t| remap(topic, &t.local_prefix, &t.remote_prefix, &t.pattern))
    }

    /// The local topic for a remote one coming in.
    pub fn to_local(&self, topic: &str) -> Option<String> {
        self.config
            .topics
            .iter()
            .filter(|t| t.direction != Direction::Out)
            .find_map(|t| remap(topic, &t.remote_prefix, &t.local_prefix, &t.pattern))
    }

    /// True when messages to the remote keep their retain flag.
    pub fn outgoing_retain(&self) -> bool {
        self.config.outgoing_retain
    }
}

/// One configured bridge and where its link stands.
pub struct Bridge {
    config: Rc<BridgeConfig>,
    client_id: String,
    sid: SessionId,
    conn: Option<ConnId>,
    /// Consecutive failed attempts, for the back-off.
    failures: u32,
    /// Index into the configured addresses of the next attempt.
    next_address: usize,
}

impl Broker {
    /// Sets up the bridges of the settings: their local sessions and subscriptions, and a
    /// first connection attempt at once.
    pub(super) fn add_bridges(&mut self, now: Instant) {
        let configs = std::mem::take(&mut self.settings.bridges);
        for cfg in &configs {
            if cfg.addresses.is_empty() {
                log::warn!("Warning: Bridge {} has no address; not started.", cfg.name);
                continue;
            }
            let client_id = cfg.client_id();
            let version = match cfg.protocol {
                BridgeProtocol::Mqtt31 => ProtocolVersion::V31,
                BridgeProtocol::Mqtt311 => ProtocolVersion::V311,
                BridgeProtocol::Mqtt5 => ProtocolVersion::V5,
            };
            let name = format!("bridge:{}", cfg.name).into();
            let sid = self.create_session(name, version, Expiry::Never, true);
            for t in cfg.topics.iter().filter(|t| t.direction != Direction::In) {
                let filter = t.local_filter();
                let options = SubscribeOptions {
                    qos: QoS::from_u8(t.qos).unwrap_or(QoS::AtMostOnce),
                    no_local: true,
                    retain_as_published: cfg.outgoing_retain,
                    retain_handling: 2,
                };
                // A bridge's own session is never stored.
                self.add_subscription(sid, &filter, options, 0);
            }
            let index = self.bridges.len();
            self.bridges.push(Bridge {
                config: Rc::new(cfg.clone()),
                client_id,
                sid,
                conn: None,
                failures: 0,
                next_address: 0,
            });
            self.timers.push(now, Timer::Bridge(index));
        }
        self.settings.bridges = configs;
    }

    /// A bridge's retry time came: ask the server to connect to its next address.
    pub(super) fn bridge_due(&mut self, index: usize) {
        let Some(b) = self.bridges.get_mut(index) else {
            return;
        };
        if b.conn.is_some() {
            return;
        }
        let n = b.config.addresses.len();
        let (host, port) = b.config.addresses[b.next_address % n].clone();
        b.next_address = (b.next_address + 1) % n;
        log::info!(target: "notice", "Connecting bridge {} ({}:{})", b.config.name, host, port);
        self.actions.push_back(Action::ConnectBridge {
            bridge: index,
            host,
            port,
        });
    }

    /// The server could not resolve or connect: try again after the back-off.
    pub(crate) fn handle_bridge_failed(&mut self, index: usize, error: &str, now: Instant) {
        let Some(b) = self.bridges.get(index) else {
            return;
        };
        log::info!(target: "notice", "Bridge {} connection failed: {}.", b.config.name, error);
        self.schedule_bridge(index, now);
    }

    fn schedule_bridge(&mut self, index: usize, now: Instant) {
        let seed = self.random();
        let Some(b) = self.bridges.get_mut(index) else {
            return;
        };
        b.conn = None;
        b.failures = b.failures.saturating_add(1);
        // Exponential back-off from restart_timeout's base to its cap, with some jitter so
        // many bridges to one hub do not reconnect in step.
        let base = b.config.restart_base;
        let cap = b.config.restart_cap;
        let exp = base.saturating_mul(1 << b.failures.saturating_sub(1).min(10));
        let delay = exp.min(cap);
        let jitter = Duration::from_millis(seed % (delay.as_millis() as u64 / 4 + 1));
        self.timers.push(now + delay + jitter, Timer::Bridge(index));
    }

    /// The server opened the bridge's socket (connection `id`, `serial` its new number):
    /// send CONNECT.
    pub(super) fn bridge_opened(
        &mut self,
        id: ConnId,
        index: usize,
        serial: u32,
        peer: SocketAddr,
        now: Instant,
    ) {
        let Some(b) = self.bridges.get_mut(index) else {
            return;
        };
        b.conn = Some(id);
        let cfg = b.config.clone();
        let client_id = b.client_id.clone();
        let version = match cfg.protocol {
            BridgeProtocol::Mqtt31 => ProtocolVersion::V31,
            BridgeProtocol::Mqtt311 => ProtocolVersion::V311,
            BridgeProtocol::Mqtt5 => ProtocolVersion::V5,
        };
        let mut conn = Conn::new(serial, peer.into(), now);
        conn.state = ConnState::BridgeConnecting(index as u32);
        conn.version = version;
        conn.keep_alive = cfg.keepalive;
        self.conns[id] = Some(conn);
        let state_topic = cfg.state_topic();
        let mut properties = Properties::default();
        if version.is_v5() && !cfg.clean_session {
            properties.session_expiry_interval = Some(u32::MAX);
        }
        let connect = Connect {
            version,
            bridge: cfg.try_private && !version.is_v5(),
            clean_start: cfg.clean_session,
            keep_alive: cfg.keepalive,
            client_id,
            will: cfg.notifications.then(|| LastWill {
                topic: state_topic,
                payload: b"0".to_vec(),
                qos: QoS::AtLeastOnce,
                retain: true,
                properties: Properties::default(),
            }),
            username: cfg.remote_username.clone(),
            password: cfg.remote_password.clone().map(String::into_bytes),
            properties,
        };
        log::debug!("Sending CONNECT to bridge {}", cfg.name);
        self.send(id, &Packet::Connect(Box::new(connect)));
        let deadline = now + Duration::from_secs(u64::from(cfg.keepalive));
        self.timers.push(deadline, Timer::Conn(id, serial));
    }

    /// CONNACK from the remote broker.
    pub(super) fn bridge_connack(&mut self, id: ConnId, index: usize, p: Packet<'_>, now: Instant) {
        let Some(b) = self.bridges.get(index) else {
            return;
        };
        let cfg = b.config.clone();
        let sid = b.sid;
        let accepted = matches!(&p, Packet::Connack(c) if c.code == 0);
        if !accepted {
            let code = match &p {
                Packet::Connack(c) => c.code,
                _ => 0xff,
            };
            log::info!(target: "notice", "Bridge {} refused by the remote broker (CONNACK {}).", cfg.name, code);
            self.close(id, super::CloseReason::Refused, now);
            return;
        }
        log::info!(target: "notice", "Bridge {} connected.", cfg.name);
        if let Some(b) = self.bridges.get_mut(index) {
            b.failures = 0;
            b.next_address = 0;
        }
        let link = Rc::new(BridgeLink {
            index,
            config: cfg.clone(),
        });
        let version = self.conn(id).map_or(ProtocolVersion::V311, |c| c.version);
        if let Some(c) = self.conn_mut(id) {
            c.state = ConnState::Active(sid);
            c.extra_mut().bridge = Some(link);
        }
        if let Some(s) = self.session_mut(sid) {
            s.set_conn(Some(id));
            s.version = version;
        }
        self.stats.clients_connected += 1;
        // Subscribe on the remote to the `in` topics.
        let subscriptions: Vec<Subscription> = cfg
            .topics
            .iter()
            .filter(|t| t.direction != Direction::Out)
            .map(|t| Subscription {
                filter: t.remote_filter(),
                options: SubscribeOptions {
                    qos: QoS::from_u8(t.qos).unwrap_or(QoS::AtMostOnce),
                    no_local: version.is_v5(),
                    retain_as_published: version.is_v5(),
                    retain_handling: 0,
                },
            })
            .collect();
        if !subscriptions.is_empty() {
            let packet_id = self.session_mut(sid).map_or(1, |s| s.alloc_packet_id());
            self.send(
                id,
                &Packet::Subscribe(Subscribe {
                    packet_id,
                    subscriptions,
                    properties: Properties::default(),
                }),
            );
        }
        if cfg.notifications {
            let topic = cfg.state_topic();
            // Up, here and on the remote (where our will says 0 if we vanish).
            self.publish_internal(&topic, b"1", QoS::AtLeastOnce, true, now);
            let mut out = Vec::new();
            Packet::Publish(crate::codec::Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: true,
                topic: &topic,
                packet_id: 0,
                payload: b"1",
                properties: Properties::default(),
            })
            .encode(version, &mut out);
            if let Some(c) = self.conn_mut(id) {
                c.out_mut().extend_from_slice(&out);
            }
        }
        self.resend_inflight(sid);
        self.pump(sid);
    }

    /// A bridge's connection ended: its session waits for the next link; say so and retry.
    pub(super) fn bridge_down(&mut self, index: usize, now: Instant) {
        let Some(b) = self.bridges.get(index) else {
            return;
        };
        let cfg = b.config.clone();
        if b.conn.is_some() && cfg.notifications {
            self.publish_internal(&cfg.state_topic(), b"0", QoS::AtLeastOnce, true, now);
        }
        self.schedule_bridge(index, now);
    }

    /// A bridge's local session (client id `bridge:NAME`).
    pub(super) fn bridge_session(&self, index: usize) -> Option<&Session> {
        self.session(self.bridges.get(index)?.sid)
    }

    /// The bridge a session belongs to, if it is a bridge's.
    pub(super) fn bridge_of(&self, sid: SessionId) -> Option<usize> {
        self.bridges.iter().position(|b| b.sid == sid)
    }

    /// Keepalive of a bridge connection: PINGREQ every interval; silence for twice the
    /// interval closes it (and it reconnects).
    pub(super) fn bridge_keepalive(&mut self, id: ConnId, now: Instant) -> Option<Instant> {
        let c = self.conn(id)?;
        let interval = Duration::from_secs(u64::from(c.keep_alive.max(1)));
        if now.saturating_duration_since(c.last_rx) >= interval * 2 {
            return None;
        }
        self.send(id, &Packet::Pingreq);
        Some(now + interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::bridge::BridgeTopic;

    fn link(topics: Vec<BridgeTopic>) -> BridgeLink {
        let mut cfg = BridgeConfig::new("t");
        cfg.topics = topics;
        BridgeLink {
            index: 0,
            config: Rc::new(cfg),
        }
    }

    fn topic(pattern: &str, d: Direction, l: &str, r: &str) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.into(),
            direction: d,
            qos: 1,
            local_prefix: l.into(),
            remote_prefix: r.into(),
        }
    }

    #[test]
    fn prefixes_remap_both_ways() {
        let l = link(vec![
            topic("#", Direction::Both, "home/", "site1/home/"),
            topic("", Direction::In, "here/one", "there/one"),
        ]);
        assert_eq!(
            l.to_remote("home/kitchen/t").as_deref(),
            Some("site1/home/kitchen/t")
        );
        assert_eq!(l.to_local("site1/home/x").as_deref(), Some("home/x"));
        assert_eq!(l.to_local("there/one").as_deref(), Some("here/one"));
        assert_eq!(l.to_remote("other/x"), None);
        assert_eq!(l.to_local("there/one/more"), None);
    }

    #[test]
    fn direction_limits_remapping() {
        let l = link(vec![topic("a/#", Direction::Out, "", "")]);
        assert_eq!(l.to_remote("a/b").as_deref(), Some("a/b"));
        assert_eq!(l.to_local("a/b"), None);
    }
}
