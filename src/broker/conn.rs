//! One network connection, as the protocol sees it.
//!
//! A connection starts waiting for CONNECT, becomes `Active` once CONNACK accepted it (bound to
//! a session), and ends `Closing` when either side ends it. It keeps the bytes of a packet
//! that has only partly arrived, the bytes waiting to be written, and the keepalive clock:
//! a client silent for one and a half times its keepalive is disconnected (v311:[MQTT-3.1.2-24]).
//!
//! Thousands of idle devices each hold one, so a `Conn` keeps inline only what every
//! connection uses; buffers exist only while bytes wait in them, and what few connections
//! need (a will, topic aliases, a bridge, a certificate identity, a Maximum Packet Size, a
//! mount point) sits in a separate
//! [`ConnExtra`] allocated on first use.

use super::session::SessionId;
use super::ConnId;
use crate::codec::{LastWill, ProtocolVersion};
use std::cell::RefCell;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Accepted by TCP; the first packet must be CONNECT.
    AwaitConnect,
    /// CONNACK accepted; bound to a session.
    Active(SessionId),
    /// A bridge's outgoing connection (the bridge's index), CONNECT sent, waiting for CONNACK.
    BridgeConnecting(u32),
    /// Being closed: no more input is processed.
    Closing,
}

/// The peer's address, kept inline (20 bytes) rather than as text: it is only formatted for
/// log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    ip: IpAddr,
    port: u16,
}

impl From<SocketAddr> for Peer {
    fn from(a: SocketAddr) -> Peer {
        Peer {
            ip: a.ip(),
            port: a.port(),
        }
    }
}

impl Peer {
    /// The peer's IP address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The peer's port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Peer {
    /// `ip:port`, as Mosquitto writes it (IPv6 without brackets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// The two byte buffers of a connection, allocated together while either holds bytes.
#[derive(Debug, Default)]
struct Buffers {
    /// Bytes of a packet that has not completely arrived.
    inbuf: Vec<u8>,
    /// Bytes waiting to be written to the socket.
    out: Vec<u8>,
}

/// How many emptied buffers are kept for reuse, and the largest capacity kept.
const SPARE_COUNT: usize = 64;
const SPARE_CAPACITY: usize = 64 * 1024;

thread_local! {
    /// Buffers that connections emptied, kept for the next connection with something to write.
    /// A connection holds its buffers only while they hold bytes, so that an idle one costs no
    /// buffer memory; allocating them afresh for every busy turn, and growing the output from
    /// nothing by doubling, was 12 % of the loop's instructions under a paced load. The loop
    /// and its connections live on one thread, so this is the loop's own free list.
    // The boxes are what connections hold, so a reused one saves their allocation too.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<Buffers>>> = const { RefCell::new(Vec::new()) };
}

/// An empty pair of buffers, reused if one is spare.
fn spare_buffers() -> Box<Buffers> {
    SPARE
        .with_borrow_mut(|spare| spare.pop())
        .unwrap_or_default()
}

/// Keeps an emptied pair of buffers for reuse, unless enough are kept or it grew large.
fn give_back(bufs: Option<Box<Buffers>>) {
    let Some(mut b) = bufs else {
        return;
    };
    if b.out.capacity() > SPARE_CAPACITY || b.inbuf.capacity() > SPARE_CAPACITY {
        return;
    }
    b.out.clear();
    b.inbuf.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < SPARE_COUNT {
            spare.push(b);
        }
    });
}

/// The parts of a connection that most connections never use.
#[derive(Debug, Default)]
pub struct ConnExtra {
    /// The will from CONNECT, until it is published or discarded.
    pub will: Option<LastWill>,
    /// This is one of our bridges' outgoing connections: topics are remapped.
    pub bridge: Option<Rc<super::bridge::BridgeLink>>,
    /// MQTT 5 topic aliases (absent for 3.x clients).
    pub aliases: Option<Aliases>,
    /// The username a TLS client certificate gives, on listeners that use certificates as
    /// identities (see `identity.rs`).
    pub cert_identity: Option<crate::auth::CertIdentity>,
    /// MQTT 5: the largest packet the client accepts (Maximum Packet Size; 0 = no limit).
    pub max_packet_size: u32,
    /// The listener's `mount_point`: prefixed to the client's topics and filters on the way
    /// in, taken off the topics it receives (see `mount.rs`).
    pub mount_point: Option<Rc<str>>,
}

/// Protocol state of one connection.
#[derive(Debug)]
pub struct Conn {
    /// Distinguishes this connection from earlier ones that used the same slot.
    pub serial: u32,
    pub state: ConnState,
    pub version: ProtocolVersion,
    /// Peer address, for logs.
    pub peer: Peer,
    /// Input and output buffers; `None` while both are empty.
    bufs: Option<Box<Buffers>>,
    /// Listed in the broker's dirty list (only [`Conn::mark_dirty`] and
    /// [`Conn::clear_dirty`] change it, so the flag and the list agree).
    dirty: bool,
    /// Queued messages are waiting for `out` to drain.
    pub throttled: bool,
    /// Keepalive in seconds; 0 = none.
    pub keep_alive: u16,
    pub last_rx: Instant,
    /// MQTT 5: how many QoS 1/2 messages the client accepts in flight (Receive Maximum).
    pub receive_maximum: u16,
    /// Index of the configured listener it came in on (`per_listener_settings`).
    pub listener: u16,
    /// The local port it came in on (the administration API reports it).
    pub local_port: u16,
    /// When CONNECT was accepted, in seconds since the broker started (see
    /// `Broker::unix_time`).
    pub connected_at: u32,
    /// The highest QoS the client may publish with and is granted: its listener's `max_qos`
    /// (a bridge's own connection has no limit).
    pub max_qos: crate::codec::QoS,
    /// Has sent a PUBLISH (see `Broker::wants_input`).
    pub published: bool,
    /// Its input starts with a PUBLISH that waits for the store to catch up
    /// (`Broker::must_wait_for_store`); nothing more is read meanwhile.
    pub held: bool,
    /// The client is another broker's bridge (`try_private`): it never gets its own
    /// messages back, and retain flags reach it as published.
    pub remote_bridge: bool,
    /// Will, bridge link, topic aliases, certificate identity, Maximum Packet Size: `None`
    /// while none is set.
    extra: Option<Box<ConnExtra>>,
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
    pub fn new(serial: u32, peer: Peer, now: Instant) -> Conn {
        Conn {
            serial,
            state: ConnState::AwaitConnect,
            version: ProtocolVersion::V311,
            peer,

            bufs: None,
            dirty: false,
            throttled: false,
            keep_alive: 0,
            last_rx: now,
            receive_maximum: u16::MAX,

            published: false,
            held: false,
            listener: 0,
            local_port: 0,
            connected_at: 0,
            max_qos: crate::codec::QoS::ExactlyOnce,
            remote_bridge: false,
            extra: None,
        }
    }

    /// Bytes waiting to be written.
    pub fn out(&self) -> &[u8] {
        self.bufs.as_ref().map_or(&[], |b| &b.out)
    }

    /// Puts this connection, `id`, on the broker's dirty `list` once, so that the loop flushes
    /// its new output.
    pub(super) fn mark_dirty(&mut self, id: ConnId, list: &mut Vec<ConnId>) {
        if !self.dirty {
            self.dirty = true;
            list.push(id);
        }
    }

    /// The loop has taken this connection off the dirty list.
    pub(super) fn clear_dirty(&mut self) {
        self.dirty = false;
    }

    /// The output buffer, to append to.
    pub fn out_mut(&mut self) -> &mut Vec<u8> {
        &mut self.bufs.get_or_insert_with(spare_buffers).out
    }

    /// The output buffer if it exists (the server drains it into the socket).
    pub fn out_if_any(&mut self) -> Option<&mut Vec<u8>> {
        self.bufs.as_mut().map(|b| &mut b.out)
    }

    /// Takes the bytes of the partly arrived packet.
    pub fn take_inbuf(&mut self) -> Vec<u8> {
        self.bufs
            .as_mut()
            .map(|b| std::mem::take(&mut b.inbuf))
            .unwrap_or_default()
    }

    /// Keeps the bytes of a partly arrived packet (or none).
    pub fn set_inbuf(&mut self, inbuf: Vec<u8>) {
        if inbuf.is_empty() && self.out().is_empty() {
            give_back(self.bufs.take());
        } else {
            self.bufs.get_or_insert_with(spare_buffers).inbuf = inbuf;
        }
    }

    /// Gives the buffers back once both are empty; while only a partly arrived packet is
    /// held, the output's memory alone.
    pub fn trim(&mut self) {
        let Some(b) = self.bufs.as_mut() else {
            return;
        };
        if !b.out.is_empty() {
            return;
        }
        if b.inbuf.is_empty() {
            give_back(self.bufs.take());
        } else {
            b.out = Vec::new();
        }
    }

    /// The rarely used parts, allocated on first use.
    pub fn extra_mut(&mut self) -> &mut ConnExtra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// The will, if one is pending.
    pub fn will(&self) -> Option<&LastWill> {
        self.extra.as_ref()?.will.as_ref()
    }

    /// Takes the will (it is published or discarded).
    pub fn take_will(&mut self) -> Option<LastWill> {
        self.extra.as_mut()?.will.take()
    }

    /// The bridge link of one of our bridges' outgoing connections.
    pub fn bridge(&self) -> Option<&Rc<super::bridge::BridgeLink>> {
        self.extra.as_ref()?.bridge.as_ref()
    }

    /// MQTT 5 topic aliases.
    pub fn aliases(&self) -> Option<&Aliases> {
        self.extra.as_ref()?.aliases.as_ref()
    }

    /// MQTT 5 topic aliases, to change.
    pub fn aliases_mut(&mut self) -> Option<&mut Aliases> {
        self.extra.as_mut()?.aliases.as_mut()
    }

    /// The largest packet the client accepts (0 = no limit).
    pub fn max_packet_size(&self) -> u32 {
        self.extra.as_ref().map_or(0, |e| e.max_packet_size)
    }

    /// The listener's `mount_point`, for a client of a listener that has one.
    pub fn mount_point(&self) -> Option<&str> {
        self.extra.as_ref()?.mount_point.as_deref()
    }

    /// The identity a TLS client certificate gives.
    pub fn cert_identity(&self) -> Option<&crate::auth::CertIdentity> {
        self.extra.as_ref()?.cert_identity.as_ref()
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
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut c = Conn::new(1, peer.into(), now);
        assert_eq!(c.keepalive_deadline(), None);
        c.keep_alive = 15;
        assert_eq!(
            c.keepalive_deadline(),
            Some(now + Duration::from_millis(22_500))
        );
    }

    #[test]
    fn buffers_exist_only_while_bytes_wait() {
        let peer: SocketAddr = "[::1]:2".parse().unwrap();
        let mut c = Conn::new(1, peer.into(), Instant::now());
        assert_eq!(c.peer.to_string(), "::1:2");
        assert!(c.out_if_any().is_none());
        c.out_mut().extend_from_slice(b"ab");
        c.set_inbuf(Vec::new());
        assert_eq!(c.out(), b"ab");
        c.out_mut().clear();
        c.set_inbuf(vec![1]);
        c.trim();
        assert_eq!(c.take_inbuf(), vec![1]);
        c.trim();
        assert!(c.out_if_any().is_none());
    }

    #[test]
    fn emptied_buffers_are_reused_by_the_next_connection_to_write() {
        let peer: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let (mut a, mut b) = (
            Conn::new(1, peer.into(), Instant::now()),
            Conn::new(2, peer.into(), Instant::now()),
        );
        a.out_mut().extend_from_slice(&[7; 3000]);
        a.out_mut().clear();
        a.trim();
        assert!(
            a.out_if_any().is_none(),
            "an idle connection holds no buffer"
        );
        let out = b.out_mut();
        assert!(out.is_empty() && out.capacity() >= 3000, "reused, emptied");
        // A large one is freed, not kept.
        out.extend_from_slice(&vec![0; SPARE_CAPACITY + 1]);
        out.clear();
        b.trim();
        assert!(a.out_mut().capacity() <= SPARE_CAPACITY);
        // Only the output's memory goes while a partly arrived packet is held.
        a.out_mut().extend_from_slice(b"x");
        a.set_inbuf(vec![1]);
        a.out_mut().clear();
        a.trim();
        assert_eq!(a.out_if_any().map(|o| o.capacity()), Some(0));
        assert_eq!(a.take_inbuf(), vec![1]);
    }
}
