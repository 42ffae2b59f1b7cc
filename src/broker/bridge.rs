//! Bridges: midge as a client of another broker, inside the same loop.
//!
//! A bridge has a local session like any client's (client id `local_clientid`, by default
//! `local.HOSTNAME.NAME`), subscribed here to its `out` topics and kept while the link is
//! down, so messages for the remote wait in its queue, bounded by the queue limits (a stored
//! queue beyond its head in memory waits in the store only, see `session::Queue`). On its
//! one outgoing connection midge plays the client: it sends CONNECT, then, as Mosquitto does,
//! one SUBSCRIBE per `in`/`both` topic line and one UNSUBSCRIBE per `out` line, in the order of
//! the lines; it forwards the queue as PUBLISHes and routes what the remote publishes into the
//! local tree. Topics are remapped with the prefixes of each `topic` line on the way out
//! ([`BridgeLink::to_remote`]) and in ([`BridgeLink::to_local`]).
//!
//! Loops: the local session subscribes with No Local and what comes in is published with that
//! session as origin, so nothing goes straight back; and midge marks a remote bridge (one
//! that connects with Mosquitto's `try_private` bit) so it never echoes a bridge's own
//! messages back to it.
//!
//! The server resolves addresses and opens sockets ([`Action::ConnectBridge`]); when to
//! connect is decided here. `automatic` and `once` bridges connect at start; after a failure
//! or a lost link, `automatic` tries again after the back-off, on the next address, and `once`
//! never does. A `lazy` bridge connects whenever `threshold` messages are queued for the
//! remote (not before the back-off after a failure) and closes its link after `idle_timeout`
//! with nothing to forward. With `round_robin false`, a link on another
//! address than the first tries the first one every 5 seconds and moves back to it.

use super::conn::{Conn, ConnState};
use super::session::{BridgeLocal, Expiry, Session};
use super::{Action, Broker, CloseReason, ConnId, SessionId, Timer};
use crate::codec::{
    Connect, LastWill, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscribeOptions, Subscription, Unsubscribe,
};
use crate::config::bridge::{BridgeConfig, BridgeProtocol, Direction, StartType};
use crate::topic::topic_matches;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// While a bridge (`round_robin false`) is linked through another address than its first, how
/// often it tries the first one again (Mosquitto's interval).
const PRIMARY_RETRY: Duration = Duration::from_secs(5);

/// The topic rules of a connected bridge, kept on its connection for remapping.
#[derive(Debug)]
pub struct BridgeLink {
    pub index: usize,
    config: Rc<BridgeConfig>,
    /// When a message was last forwarded on this link: a lazy bridge's idle clock.
    last_sent: Cell<Instant>,
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

    /// A message went to the remote at `now` (a lazy bridge is not idle).
    pub fn note_sent(&self, now: Instant) {
        self.last_sent.set(now);
    }
}

/// Where a bridge's link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// No connection; the next attempt waits for `retry_at` (and a lazy bridge for its
    /// threshold).
    Down,
    /// The server is resolving the address and connecting.
    Dialing,
    /// Connection `id` is open: CONNECT sent, or CONNACK received.
    Open(ConnId),
}

/// One configured bridge and where its link stands.
pub struct Bridge {
    config: Rc<BridgeConfig>,
    client_id: String,
    sid: SessionId,
    link: Link,
    /// Consecutive failed attempts, for the back-off.
    failures: u32,
    /// Index into the configured addresses of the current or latest attempt.
    address: usize,
    /// Earliest time of the next attempt; `None` once no attempt is left (`start_type once`).
    retry_at: Option<Instant>,
    /// A lazy bridge: it connects only once `threshold` messages wait for the remote.
    lazy_waiting: bool,
    /// When to try the first address again while linked through another one.
    primary_retry_at: Option<Instant>,
    /// A connection to the first address is being tried while the link uses another.
    probing: bool,
    /// The earliest wakeup armed for this bridge (so re-arming adds no duplicates).
    armed: Option<Instant>,
}

fn protocol(p: BridgeProtocol) -> ProtocolVersion {
    match p {
        BridgeProtocol::Mqtt31 => ProtocolVersion::V31,
        BridgeProtocol::Mqtt311 => ProtocolVersion::V311,
        BridgeProtocol::Mqtt5 => ProtocolVersion::V5,
    }
}

impl Broker {
    /// Each bridge's name and whether its link is up (the remote accepted its CONNECT).
    pub(super) fn bridge_states(&self) -> impl Iterator<Item = (&str, bool)> + '_ {
        self.bridges.iter().map(|b| {
            let up = match b.link {
                Link::Open(id) => self
                    .conn(id)
                    .is_some_and(|c| matches!(c.state, ConnState::Active(_))),
                Link::Down | Link::Dialing => false,
            };
            (b.config.name.as_str(), up)
        })
    }

    /// Sets up the bridges of the settings: their local sessions and subscriptions, and a
    /// first connection attempt at once (a lazy bridge's waits for its threshold).
    pub(super) fn add_bridges(&mut self, now: Instant) {
        let configs = std::mem::take(&mut self.settings.bridges);
        for cfg in &configs {
            if cfg.addresses.is_empty() {
                log::warn!("Warning: Bridge {} has no address; not started.", cfg.name);
                continue;
            }
            let version = protocol(cfg.protocol);
            let local_id = cfg.local_client_id().into();
            let sid = self.create_session(local_id, version, Expiry::Never, true);
            if let Some(s) = self.session_mut(sid) {
                // A lazy bridge keeps QoS 0 messages while down, as in Mosquitto: they count
                // towards its threshold. With `local_cleansession false` the store keeps the
                // session.
                s.bridge = Some(BridgeLocal {
                    keeps_qos0: cfg.start_type == StartType::Lazy,
                    stored: !cfg.local_clean(),
                });
            }
            for t in cfg.topics.iter().filter(|t| t.direction != Direction::In) {
                let filter = t.local_filter();
                let options = SubscribeOptions {
                    qos: QoS::from_u8(t.qos).unwrap_or(QoS::AtMostOnce),
                    no_local: true,
                    retain_as_published: cfg.outgoing_retain,
                    retain_handling: 2,
                };
                // Set up before the store is read: the topic lines are never stored.
                self.add_subscription(sid, &filter, options, 0);
            }
            let index = self.bridges.len();
            self.bridges.push(Bridge {
                config: Rc::new(cfg.clone()),
                client_id: cfg.client_id(),
                sid,
                link: Link::Down,
                failures: 0,
                address: 0,
                retry_at: Some(now),
                // As Mosquitto's, a lazy bridge waits for its threshold from the start.
                lazy_waiting: cfg.start_type == StartType::Lazy,
                primary_retry_at: None,
                probing: false,
                armed: None,
            });
            self.arm_bridge(index, now, now);
        }
        self.settings.bridges = configs;
    }

    /// Wakes bridge `index` at `at` (its timer runs [`Broker::bridge_due`]), unless an
    /// earlier wakeup is pending, which re-arms what is still needed.
    fn arm_bridge(&mut self, index: usize, at: Instant, now: Instant) {
        let Some(b) = self.bridges.get_mut(index) else {
            return;
        };
        if b.armed.is_some_and(|a| a > now && a <= at) {
            return;
        }
        b.armed = Some(at);
        self.timers.push(at, Timer::Bridge(index));
    }

    /// A bridge's timer fell due: connect, or check the open link (idle, first address).
    pub(super) fn bridge_due(&mut self, index: usize, now: Instant) {
        let Some(b) = self.bridges.get(index) else {
            return;
        };
        match b.link {
            Link::Dialing => {}
            Link::Open(id) => self.bridge_check_link(index, id, now),
            Link::Down => {
                if self.bridge_may_dial(index, now) {
                    self.dial_bridge(index);
                } else if let Some(at) = b.retry_at.filter(|&t| t > now) {
                    self.arm_bridge(index, at, now);
                }
            }
        }
    }

    /// Starts the lazy bridges for which enough messages now wait (once per turn, as
    /// Mosquitto checks when it queues a message for the bridge).
    pub(super) fn start_lazy_bridges(&mut self, now: Instant) {
        for index in 0..self.bridges.len() {
            if self.bridges[index].lazy_waiting && self.bridge_may_dial(index, now) {
                self.dial_bridge(index);
            }
        }
    }

    /// True when bridge `index` is down and may connect now.
    fn bridge_may_dial(&self, index: usize, now: Instant) -> bool {
        let Some(b) = self.bridges.get(index) else {
            return false;
        };
        if b.link != Link::Down || b.retry_at.is_none_or(|t| t > now) {
            return false;
        }
        if !b.lazy_waiting {
            return true;
        }
        let waiting = self
            .session(b.sid)
            .map_or(0, |s| s.queue.count() + s.inflight.len());
        waiting >= b.config.threshold
    }

    fn dial_bridge(&mut self, index: usize) {
        if let Some(b) = self.bridges.get_mut(index) {
            b.link = Link::Dialing;
            let address = b.address;
            self.ask_to_connect(index, address);
        }
    }

    /// Asks the server to connect bridge `index` to its address number `address`.
    fn ask_to_connect(&mut self, index: usize, address: usize) {
        let Some(b) = self.bridges.get(index) else {
            return;
        };
        let n = b.config.addresses.len();
        let (host, port) = b.config.addresses[address % n].clone();
        log::info!(target: "notice", "Connecting bridge {} ({}:{})", b.config.name, host, port);
        self.actions.push_back(Action::ConnectBridge {
            bridge: index,
            host,
            port,
        });
    }

    /// Checks an open link: a lazy bridge idle for `idle_timeout` is stopped; a link on
    /// another address than the first tries the first one again when it is time.
    fn bridge_check_link(&mut self, index: usize, id: ConnId, now: Instant) {
        let Some(link) = self.conn(id).and_then(|c| c.bridge()).cloned() else {
            // CONNACK has not come yet; the connect timeout watches that.
            return;
        };
        let Some(b) = self.bridges.get(index) else {
            return;
        };
        let cfg = b.config.clone();
        if cfg.start_type == StartType::Lazy {
            let idle_at = link.last_sent.get() + cfg.idle_timeout;
            if now >= idle_at {
                log::info!(
                    target: "notice",
                    "Bridge connection {} has exceeded idle timeout, disconnecting.",
                    self.conn_name(id)
                );
                self.close(id, CloseReason::BridgeStopped, now);
                return;
            }
            self.arm_bridge(index, idle_at, now);
        }
        let Some(b) = self.bridges.get_mut(index) else {
            return;
        };
        match b.primary_retry_at {
            Some(at) if at <= now && !b.probing => {
                b.primary_retry_at = None;
                b.probing = true;
                self.ask_to_connect(index, 0);
            }
            Some(at) => self.arm_bridge(index, at, now),
            None => {}
        }
    }

    /// The server could not resolve or connect: try again later, as the start type says.
    pub(crate) fn handle_bridge_failed(&mut self, index: usize, error: &str, now: Instant) {
        let Some(b) = self.bridges.get_mut(index) else {
            return;
        };
        if b.probing {
            // The first address still does not answer: keep the link and ask again later.
            b.probing = false;
            if matches!(b.link, Link::Open(_)) {
                b.primary_retry_at = Some(now + PRIMARY_RETRY);
                self.arm_bridge(index, now + PRIMARY_RETRY, now);
            }
            return;
        }
        log::info!(target: "notice", "Bridge {} connection failed: {}.", b.config.name, error);
        b.link = Link::Down;
        self.schedule_bridge(index, now);
    }

    /// After a failed attempt or a lost link: the next address, and when to try it.
    fn schedule_bridge(&mut self, index: usize, now: Instant) {
        let seed = self.random();
        let Some(b) = self.bridges.get_mut(index) else {
            return;
        };
        b.address = (b.address + 1) % b.config.addresses.len();
        b.primary_retry_at = None;
        b.failures = b.failures.saturating_add(1);
        match b.config.start_type {
            StartType::Once => {
                b.retry_at = None;
                log::info!(
                    target: "notice",
                    "Bridge {} has start_type once: not connecting again.",
                    b.config.name
                );
                return;
            }
            StartType::Lazy => b.lazy_waiting = true,
            StartType::Automatic => {}
        }
        // Exponential back-off from restart_timeout's base to its cap, with some jitter so
        // many bridges to one hub do not reconnect in step.
        let base = b.config.restart_base;
        let cap = b.config.restart_cap;
        let exp = base.saturating_mul(1 << b.failures.saturating_sub(1).min(10));
        let delay = exp.min(cap);
        let jitter = Duration::from_millis(seed % (delay.as_millis() as u64 / 4 + 1));
        let at = now + delay + jitter;
        b.retry_at = Some(at);
        self.arm_bridge(index, at, now);
    }

    /// The server opened a socket for bridge `index` (connection `id`, `serial` its new
    /// number): send CONNECT. A socket to the first address while the link uses another
    /// replaces that link.
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
        let replaced = match b.link {
            Link::Open(old) => Some(old),
            Link::Down | Link::Dialing => None,
        };
        if std::mem::take(&mut b.probing) {
            b.address = 0;
        }
        b.link = Link::Open(id);
        let cfg = b.config.clone();
        let client_id = b.client_id.clone();
        if let Some(old) = replaced {
            log::info!(
                target: "notice",
                "Bridge {} moves back to its first address.",
                cfg.name
            );
            self.close(old, CloseReason::BridgeStopped, now);
        }
        let version = protocol(cfg.protocol);
        let mut conn = Conn::new(serial, peer.into(), now);
        conn.state = ConnState::BridgeConnecting(index as u32);
        conn.version = version;
        conn.keep_alive = cfg.keepalive;
        self.conns[id] = Some(conn);
        let mut properties = Properties::default();
        if version.is_v5() && !cfg.clean_session {
            properties.session_expiry_interval = Some(u32::MAX);
        }
        // The remote says "0" for us if the link breaks, unless notifications stay local.
        let will = cfg.notifications && !cfg.notifications_local_only;
        let connect = Connect {
            version,
            bridge: cfg.try_private && !version.is_v5(),
            clean_start: cfg.clean_session,
            keep_alive: cfg.keepalive,
            client_id,
            will: will.then(|| LastWill {
                topic: cfg.state_topic(),
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
        let connack = match p {
            Packet::Connack(c) if c.code == 0 => c,
            other => {
                let code = match other {
                    Packet::Connack(c) => c.code,
                    _ => 0xff,
                };
                log::info!(target: "notice", "Bridge {} refused by the remote broker (CONNACK {}).", cfg.name, code);
                self.close(id, CloseReason::Refused, now);
                return;
            }
        };
        log::info!(target: "notice", "Bridge {} connected.", cfg.name);
        if let Some(b) = self.bridges.get_mut(index) {
            b.failures = 0;
            if !cfg.round_robin && b.address != 0 {
                b.primary_retry_at = Some(now + PRIMARY_RETRY);
            }
        }
        let link = Rc::new(BridgeLink {
            index,
            config: cfg.clone(),
            last_sent: Cell::new(now),
        });
        // The smaller of bridge_max_packet_size and an MQTT 5 remote's Maximum Packet Size.
        let max_packet_size = [cfg.max_packet_size]
            .into_iter()
            .chain(connack.properties.maximum_packet_size)
            .filter(|&n| n != 0)
            .min()
            .unwrap_or(0);
        let version = self.conn(id).map_or(ProtocolVersion::V311, |c| c.version);
        if let Some(c) = self.conn_mut(id) {
            c.state = ConnState::Active(sid);
            let extra = c.extra_mut();
            extra.bridge = Some(link);
            extra.max_packet_size = max_packet_size;
        }
        if let Some(s) = self.session_mut(sid) {
            s.set_conn(Some(id));
            s.version = version;
        }
        self.stats.clients_connected += 1;
        let state_topic = cfg.state_topic();
        if cfg.notifications && !cfg.notifications_local_only {
            // Up, on the remote (where our will says 0 if we vanish), before anything else.
            let packet_id = self.session_mut(sid).map_or(1, |s| s.alloc_packet_id());
            self.send(
                id,
                &Packet::Publish(Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: cfg.outgoing_retain,
                    topic: &state_topic,
                    packet_id,
                    payload: b"1",
                    properties: Properties::default(),
                }),
            );
        }
        // One SUBSCRIBE per `in`/`both` line and, unless told not to, one UNSUBSCRIBE per
        // `out` line (an earlier configuration may have subscribed to it there).
        for t in &cfg.topics {
            let packet_id = self.session_mut(sid).map_or(1, |s| s.alloc_packet_id());
            let packet = if t.direction != Direction::Out {
                Packet::Subscribe(Subscribe {
                    packet_id,
                    subscriptions: vec![Subscription {
                        filter: t.remote_filter(),
                        options: SubscribeOptions {
                            qos: QoS::from_u8(t.qos).unwrap_or(QoS::AtMostOnce),
                            no_local: version.is_v5(),
                            retain_as_published: version.is_v5(),
                            retain_handling: 0,
                        },
                    }],
                    properties: Properties::default(),
                })
            } else if cfg.attempt_unsubscribe {
                Packet::Unsubscribe(Unsubscribe {
                    packet_id,
                    filters: vec![t.remote_filter()],
                    properties: Properties::default(),
                })
            } else {
                continue;
            };
            self.send(id, &packet);
        }
        if cfg.notifications {
            self.publish_internal(&state_topic, b"1", QoS::AtLeastOnce, true, now);
        }
        self.resend_inflight(sid);
        self.pump(sid);
        self.bridge_check_link(index, id, now);
    }

    /// Connection `id` of bridge `index` ended: its session waits for the next link; say so
    /// and plan the next attempt.
    pub(super) fn bridge_down(&mut self, index: usize, id: ConnId, now: Instant) {
        let Some(b) = self.bridges.get_mut(index) else {
            return;
        };
        if b.link != Link::Open(id) {
            // A link already replaced by one to the first address.
            return;
        }
        b.link = Link::Down;
        let cfg = b.config.clone();
        if cfg.notifications {
            self.publish_internal(&cfg.state_topic(), b"0", QoS::AtLeastOnce, true, now);
        }
        self.schedule_bridge(index, now);
    }

    /// The local session of the bridge whose `local_clientid` is `client_id`, if the store
    /// keeps it (`local_cleansession false`).
    pub(super) fn stored_bridge_session(&self, client_id: &str) -> Option<SessionId> {
        self.bridges
            .iter()
            .find(|b| !b.config.local_clean() && b.config.local_client_id() == client_id)
            .map(|b| b.sid)
    }

    /// Records the stored bridges' local sessions, so that their queued messages can be
    /// stored from the start.
    pub(super) fn persist_bridge_sessions(&mut self) {
        let sids: Vec<SessionId> = self.bridges.iter().map(|b| b.sid).collect();
        for sid in sids {
            self.persist_session(sid);
        }
    }

    /// A bridge's local session.
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
            last_sent: Cell::new(Instant::now()),
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
