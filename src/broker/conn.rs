//! One network connection, as the protocol sees it.
//!
//! A connection starts waiting for CONNECT, becomes `Active` once CONNACK accepted it (bound to
//! a session), and ends `Closing` when either side ends it. It keeps the bytes of a packet
//! that has only partly arrived, the bytes waiting to be written, and the keepalive clock:
//! a client silent for one and a half times its keepalive is disconnected (v311:[MQTT-3.1.2-24]).

use super::session::SessionId;
use crate::codec::{LastWill, ProtocolVersion};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Accepted by TCP; the first packet must be CONNECT.
    AwaitConnect,
    /// CONNACK accepted; bound to a session.
    Active(SessionId),
    /// A bridge's outgoing connection, CONNECT sent, waiting for CONNACK.
    BridgeConnecting(usize),
    /// Being closed: no more input is processed.
    Closing,
}

/// Protocol state of one connection.
#[derive(Debug)]
pub struct Conn {
    /// Distinguishes this connection from earlier ones that used the same slot.
    pub serial: u64,
    pub state: ConnState,
    pub version: ProtocolVersion,
    /// Peer address as `ip:port`, for logs.
    pub peer: Box<str>,
    /// Port of the listener it arrived on.
    pub local_port: u16,
    /// Client id for logs (`<unknown>` until CONNECT).
    pub client_id: Rc<str>,
    /// Bytes of a packet that has not completely arrived.
    pub inbuf: Vec<u8>,
    /// Bytes waiting to be written to the socket.
    pub out: Vec<u8>,
    /// Listed in the broker's dirty list.
    pub dirty: bool,
    /// Queued messages are waiting for `out` to drain.
    pub throttled: bool,
    /// Keepalive in seconds; 0 = none.
    pub keep_alive: u16,
    pub last_rx: Instant,
    pub will: Option<Box<LastWill>>,
    /// MQTT 5: how many QoS 1/2 messages the client accepts in flight (Receive Maximum).
    pub receive_maximum: u16,
    /// MQTT 5: largest packet the client accepts (0 = no limit).
    pub max_packet_size: u32,
    /// Index of the configured listener it came in on (`per_listener_settings`).
    pub listener: u16,
    /// Has sent a PUBLISH (see `Broker::is_publisher`).
    pub published: bool,
    /// This is one of our bridges' outgoing connections: topics are remapped.
    pub bridge: Option<Rc<super::bridge::BridgeLink>>,
    /// The client is another broker's bridge (`try_private`): it never gets its own
    /// messages back, and retain flags reach it as published.
    pub remote_bridge: bool,
    /// MQTT 5 topic aliases; absent for 3.x clients, so they cost nothing.
    pub aliases: Option<Box<Aliases>>,
    /// The username a TLS client certificate gives, on listeners that use certificates as
    /// identities (see `identity.rs`).
    pub cert_identity: Option<Box<super::identity::CertIdentity>>,
}

/// Topic aliases of one MQTT 5 connection (v5 §3.3.2.3.4). Each direction has its own map,
/// and both die with the connection.
#[derive(Debug, Default)]
pub struct Aliases {
    /// Aliases the client set for its PUBLISHes to us, index = alias - 1.
    pub inbound: Vec<Option<Box<str>>>,
    /// The highest alias we accept (our CONNACK's Topic Alias Maximum).
    pub inbound_max: u16,
    /// Aliases we set for PUBLISHes to the client.
    pub outbound: super::router::TopicMap<u16>,
    /// The client's Topic Alias Maximum.
    pub outbound_max: u16,
}

impl Aliases {
    /// The alias to use for `topic` towards the client, and whether the topic name must be
    /// sent with it (first use). `None` when aliases are off or all are taken.
    pub fn outbound_for(&self, topic: &str) -> Option<(u16, bool)> {
        if let Some(&a) = self.outbound.get(topic) {
            return Some((a, false));
        }
        let next = self.outbound.len() as u16 + 1;
        (next <= self.outbound_max).then_some((next, true))
    }
}

impl Conn {
    /// A connection that has just been accepted.
    pub fn new(serial: u64, peer: Box<str>, local_port: u16, now: Instant) -> Conn {
        Conn {
            serial,
            state: ConnState::AwaitConnect,
            version: ProtocolVersion::V311,
            peer,
            local_port,
            client_id: Rc::from("<unknown>"),
            inbuf: Vec::new(),
            out: Vec::new(),
            dirty: false,
            throttled: false,
            keep_alive: 0,
            last_rx: now,
            will: None,
            receive_maximum: u16::MAX,
            max_packet_size: 0,
            aliases: None,
            published: false,
            listener: 0,
            cert_identity: None,
            bridge: None,
            remote_bridge: false,
        }
    }

    /// When the connection times out for silence, if it has a keepalive.
    pub fn keepalive_deadline(&self) -> Option<Instant> {
        if self.keep_alive == 0 {
            return None;
        }
        // 1.5 × keepalive, in milliseconds to keep the half second of odd keepalives.
        let ms = u64::from(self.keep_alive) * 1500;
        Some(self.last_rx + Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_deadline_is_one_and_a_half_times_mqtt_3_1_2_24() {
        let now = Instant::now();
        let mut c = Conn::new(1, "127.0.0.1:1".into(), 1883, now);
        assert_eq!(c.keepalive_deadline(), None);
        c.keep_alive = 15;
        assert_eq!(
            c.keepalive_deadline(),
            Some(now + Duration::from_millis(22_500))
        );
    }
}
