//! The checks behind midge's fuzz targets, shared by the targets themselves
//! (`fuzz/fuzz_targets/*.rs` include this file with `#[path]`) and by `tests/e2e/fuzz_corpus.rs`,
//! which replays the committed corpus through them under plain `cargo test`. Keeping one copy
//! means a corpus file (or a crash) replays exactly as the fuzzer ran it.
//!
//! Two kinds of input:
//! - [`check_decode`]: arbitrary bytes as a stream of packets. Every frame must decode without
//!   panicking, and every packet that decodes must survive encode → decode unchanged.
//! - [`run_program`]: arbitrary bytes read as a small program driving a [`Broker`] with a
//!   simulated clock (open connections, send well-formed or garbled packets, advance time, lose
//!   and release connections). The broker must not panic, everything it writes must be
//!   well-formed server packets, and once every connection is gone and every expiry has passed,
//!   the sessions left are exactly the ones their clients can resume; resuming and ending each
//!   of them leaves no session and no subscription behind.

use midge::broker::{Action, Broker, Settings, Via};
use midge::codec::{
    self, Ack, Connect, Disconnect, LastWill, Packet, Properties, ProtocolVersion, Publish, QoS,
    SubscribeOptions, Subscription,
};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Mosquitto's database, as the import reads it.
// ---------------------------------------------------------------------------------------------

/// Reads `data` as a `mosquitto.db`: never a panic, damage reported at an offset inside the
/// file, and a file cut at the damage reads the same records.
pub fn check_mosquitto_db(data: &[u8]) {
    let parsed = midge::store::mosquitto::parse(data);
    let Some(damage) = &parsed.damage else {
        return;
    };
    assert!(
        damage.offset <= data.len(),
        "damage at {} in {} bytes",
        damage.offset,
        data.len()
    );
    if damage.offset > 0 {
        let cut = midge::store::mosquitto::parse(&data[..damage.offset]);
        assert_eq!(cut.records, parsed.records, "records before the damage");
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder: framing, decode, round trip.
// ---------------------------------------------------------------------------------------------

/// Frames `data` as a stream of packets for a connection speaking `version`, decodes each
/// complete frame and checks the round trip of every packet that decodes.
pub fn check_decode(data: &[u8], version: ProtocolVersion) {
    let mut rest = data;
    while let Ok(Some(h)) = codec::parse_fixed_header(rest) {
        if h.total() > rest.len() {
            return;
        }
        let (frame, tail) = rest.split_at(h.total());
        rest = tail;
        if let Ok(packet) = codec::decode(h.first, &frame[h.header_len..], version) {
            check_round_trip(&packet, version);
        }
    }
}

/// Encodes `packet` for `version` and checks that the bytes frame as one whole packet and
/// decode back to an equal packet.
pub fn check_round_trip(packet: &Packet<'_>, version: ProtocolVersion) {
    let bytes = packet.to_bytes(version);
    let h = match codec::parse_fixed_header(&bytes) {
        Ok(Some(h)) => h,
        other => panic!("encoded {packet:?} has a bad fixed header ({other:?}): {bytes:02x?}"),
    };
    assert_eq!(
        h.total(),
        bytes.len(),
        "encoded length disagrees with the fixed header for {packet:?}: {bytes:02x?}"
    );
    let again = codec::decode(h.first, &bytes[h.header_len..], version).unwrap_or_else(|e| {
        panic!("{packet:?} encoded for {version:?} does not decode ({e}): {bytes:02x?}")
    });
    assert_eq!(
        &again, packet,
        "encode → decode changed the packet ({version:?}): {bytes:02x?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Broker: a byte-coded program.
// ---------------------------------------------------------------------------------------------

/// Connection ids the program uses (0..SLOTS).
const SLOTS: usize = 5;
/// Operations per program, so one input cannot run for long.
const MAX_OPS: usize = 2_000;

const TOPICS: &[&str] = &["a", "a/b", "b", "a/b/c", "/", "$SYS/x"];
const FILTERS: &[&str] = &[
    "a",
    "a/+",
    "#",
    "+/b",
    "a/#",
    "$SYS/#",
    "$share/g/a/#",
    "$share/g/#",
    "a/b/c",
    "+",
    "a#",
    "",
];
const CLIENT_IDS: &[&str] = &["c0", "c1", "c2", "c3", ""];
const PACKET_IDS: &[u16] = &[1, 2, 3, 0xffff];

/// Reads the program; every read past the end yields 0.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()]
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// No connection with this id.
    Free,
    /// Open, as far as the server loop knows.
    Open,
    /// The broker asked for it to be closed ([`Action::Close`]); waiting for `release`.
    Closing,
}

/// What the driver knows about one connection id.
struct Slot {
    state: SlotState,
    /// Version of the CONNECT this connection sent (decides how its packets are encoded and
    /// how the broker's output to it is decoded); 3.1.1 until a CONNECT is seen.
    version: ProtocolVersion,
    /// Bytes sent before the first complete frame (to learn the CONNECT the broker saw).
    first: Vec<u8>,
    /// Whether the first frame has been seen.
    first_done: bool,
}

impl Slot {
    fn free() -> Slot {
        Slot {
            state: SlotState::Free,
            version: ProtocolVersion::V311,
            first: Vec::new(),
            first_done: false,
        }
    }
}

/// The broker under test and the driver's view of it.
struct Driver {
    broker: Broker,
    now: Instant,
    slots: Vec<Slot>,
    /// Every client id a session could have been created under.
    client_ids: BTreeSet<String>,
    peer_port: u16,
}

impl Driver {
    fn new() -> Driver {
        let now = Instant::now();
        // A fixed seed: a program replays the same shared-subscription picks every run.
        let broker = Broker::new(Settings::default(), now, 1);
        Driver {
            broker,
            now,
            slots: (0..SLOTS).map(|_| Slot::free()).collect(),
            client_ids: BTreeSet::new(),
            peer_port: 40_000,
        }
    }

    fn open(&mut self, id: usize) {
        self.peer_port = self.peer_port.wrapping_add(1);
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, self.peer_port));
        let via = Via::Listener {
            index: 0,
            port: 1883,
        };
        self.broker
            .handle_connection_opened(id, peer, via, self.now);
        self.slots[id] = Slot {
            state: SlotState::Open,
            ..Slot::free()
        };
    }

    /// Feeds bytes to an open connection, noting the CONNECT if these bytes complete it.
    fn send(&mut self, id: usize, bytes: &[u8]) {
        if self.slots[id].state != SlotState::Open {
            return;
        }
        self.note_first_frame(id, bytes);
        self.broker.handle_bytes(id, bytes, self.now);
        self.settle();
    }

    fn note_first_frame(&mut self, id: usize, bytes: &[u8]) {
        let slot = &mut self.slots[id];
        if slot.first_done {
            return;
        }
        slot.first.extend_from_slice(bytes);
        let h = match codec::parse_fixed_header(&slot.first) {
            Ok(Some(h)) if h.total() <= slot.first.len() => h,
            Ok(_) => return,
            Err(_) => {
                slot.first_done = true;
                return;
            }
        };
        slot.first_done = true;
        let body = &slot.first[h.header_len..h.total()];
        match codec::decode(h.first, body, ProtocolVersion::V311) {
            Ok(Packet::Connect(c)) => {
                slot.version = c.version;
                if !c.client_id.is_empty() {
                    self.client_ids.insert(c.client_id.clone());
                }
            }
            // A CONNECT that fails to decode is answered in the version its level byte names
            // (v5 §3.1.4: a CONNACK with the reason code).
            Err(_) if connect_level(h.first, body) == Some(5) => {
                slot.version = ProtocolVersion::V5;
            }
            _ => {}
        }
        slot.first = Vec::new();
    }

    /// After every call into the broker: collect actions, drain and check all output.
    fn settle(&mut self) {
        while let Some(action) = self.broker.poll_action() {
            let Action::Close(id) = action else {
                continue;
            };
            let slot = self
                .slots
                .get_mut(id)
                .unwrap_or_else(|| panic!("Close({id}) for a connection never opened"));
            assert_ne!(
                slot.state,
                SlotState::Free,
                "Close({id}) for a connection already gone"
            );
            slot.state = SlotState::Closing;
        }
        for id in 0..SLOTS {
            self.drain(id);
        }
    }

    /// Takes connection `id`'s output (as the server loop writes it) and checks that it is a
    /// whole number of well-formed packets a server may send.
    fn drain(&mut self, id: usize) {
        let version = self.slots[id].version;
        // An open connection has an output buffer only while bytes wait in it.
        let Some(out) = self.broker.poll_transmit(id) else {
            return;
        };
        assert_ne!(
            self.slots[id].state,
            SlotState::Free,
            "released connection {id} still has an output buffer"
        );
        let out = std::mem::take(out);
        if out.is_empty() {
            return;
        }
        self.broker.handle_written(id, out.len());
        let mut rest = &out[..];
        while !rest.is_empty() {
            let h = match codec::parse_fixed_header(rest) {
                Ok(Some(h)) if h.total() <= rest.len() => h,
                other => panic!(
                    "output to connection {id} ends in a partial packet ({other:?}): {out:02x?}"
                ),
            };
            let body = &rest[h.header_len..h.total()];
            let packet = codec::decode(h.first, body, version).unwrap_or_else(|e| {
                panic!(
                    "broker sent a packet that does not decode for {version:?} ({e}): {out:02x?}"
                )
            });
            match &packet {
                Packet::Connack(c) => {
                    if let Some(assigned) = &c.properties.assigned_client_identifier {
                        self.client_ids.insert(assigned.clone());
                    }
                }
                Packet::Publish(_)
                | Packet::Puback(_)
                | Packet::Pubrec(_)
                | Packet::Pubrel(_)
                | Packet::Pubcomp(_)
                | Packet::Suback(_)
                | Packet::Unsuback(_)
                | Packet::Pingresp => {}
                Packet::Disconnect(_) => assert!(
                    version.is_v5(),
                    "DISCONNECT sent to a {version:?} client: {out:02x?}"
                ),
                other => panic!("broker sent a client packet {other:?}: {out:02x?}"),
            }
            rest = &rest[h.total()..];
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.broker.end_turn(self.now, None);
        self.settle();
    }

    /// The socket of `id` failed or reached end of file.
    fn lose(&mut self, id: usize) {
        if self.slots[id].state == SlotState::Free {
            return;
        }
        self.drain(id);
        self.broker.handle_connection_closed(id, None, self.now);
        self.slots[id] = Slot::free();
        self.settle();
    }

    /// The server loop closed a connection the broker asked to close.
    fn release(&mut self, id: usize) {
        if self.slots[id].state != SlotState::Closing {
            return;
        }
        self.drain(id);
        self.broker.handle_connection_closed(id, None, self.now);
        self.slots[id] = Slot::free();
        self.settle();
    }

    /// The invariants at the end of a program: see the module comment.
    fn finish(&mut self) {
        for id in 0..SLOTS {
            match self.slots[id].state {
                SlotState::Open => self.lose(id),
                SlotState::Closing => self.release(id),
                SlotState::Free => {}
            }
        }
        // Past every session expiry (at most u32::MAX seconds) and every will delay.
        self.advance(Duration::from_secs(u64::from(u32::MAX) + 1));
        assert!(
            self.slots.iter().all(|s| s.state == SlotState::Free),
            "a connection came back to life"
        );
        let sessions = self.broker.counts().sessions;
        // Resume every session a client could have, then end it: each one that existed must
        // be found (none is orphaned), and none may survive.
        let ids: Vec<String> = self.client_ids.iter().cloned().collect();
        let mut resumed = 0;
        for client_id in ids {
            if self.resume_and_end(&client_id) {
                resumed += 1;
            }
        }
        assert_eq!(
            resumed, sessions,
            "{sessions} sessions left, but only {resumed} could be resumed"
        );
        assert_eq!(
            self.broker.counts().sessions,
            0,
            "sessions left after every client ended its session"
        );
        assert_eq!(
            self.broker.counts().subscriptions,
            0,
            "subscriptions left after every session ended"
        );
    }

    /// Connects as `client_id` (MQTT 5, clean start 0, session expiry 0) and disconnects.
    /// Returns whether the broker had a session for it.
    fn resume_and_end(&mut self, client_id: &str) -> bool {
        let id = 0;
        self.open(id);
        let connect = Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V5,
            bridge: false,
            clean_start: false,
            keep_alive: 0,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }));
        let bytes = connect.to_bytes(ProtocolVersion::V5);
        self.note_first_frame(id, &bytes);
        self.broker.handle_bytes(id, &bytes, self.now);
        let out = std::mem::take(self.broker.poll_transmit(id).expect("just opened"));
        let h = codec::parse_fixed_header(&out)
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no CONNACK for {client_id:?}: {out:02x?}"));
        let present =
            match codec::decode(h.first, &out[h.header_len..h.total()], ProtocolVersion::V5) {
                Ok(Packet::Connack(c)) if c.code == 0 => c.session_present,
                other => panic!("resuming {client_id:?} got {other:?}"),
            };
        // The rest of what was sent (resent and queued messages) must be well-formed too.
        self.broker
            .poll_transmit(id)
            .expect("open")
            .extend_from_slice(&out[h.total()..]);
        self.settle();
        let disconnect = Packet::Disconnect(Disconnect {
            reason: 0,
            properties: Properties::default(),
        });
        self.send(id, &disconnect.to_bytes(ProtocolVersion::V5));
        assert_eq!(
            self.slots[id].state,
            SlotState::Closing,
            "DISCONNECT did not close {client_id:?}"
        );
        self.release(id);
        present
    }
}

/// Runs `data` as a broker program and checks the invariants (see the module comment).
pub fn run_program(data: &[u8]) {
    let mut d = Driver::new();
    let mut input = Input { data };
    let mut ops = 0;
    while !input.is_empty() && ops < MAX_OPS {
        ops += 1;
        step(&mut d, &mut input);
    }
    d.finish();
}

/// One operation of a program.
fn step(d: &mut Driver, input: &mut Input<'_>) {
    let op = input.byte();
    let id = usize::from(op >> 4) % SLOTS;
    match op & 0x0f {
        0 | 1 => {
            if d.slots[id].state == SlotState::Free {
                d.open(id);
            }
        }
        2 | 3 => {
            let bytes = connect_packet(input);
            d.send(id, &bytes);
        }
        4..=6 => {
            let version = d.slots[id].version;
            let bytes = client_packet(input, version);
            d.send(id, &bytes);
        }
        7 => {
            // A well-formed packet in small pieces.
            let version = d.slots[id].version;
            let bytes = client_packet(input, version);
            let piece = usize::from(input.byte() % 7) + 1;
            for chunk in bytes.chunks(piece) {
                d.send(id, chunk);
            }
        }
        8 => {
            // A well-formed packet with one byte changed.
            let version = d.slots[id].version;
            let mut bytes = if input.byte() & 1 == 0 {
                connect_packet(input)
            } else {
                client_packet(input, version)
            };
            let at = usize::from(input.byte()) % bytes.len();
            bytes[at] ^= input.byte() | 1;
            d.send(id, &bytes);
        }
        9 => {
            // Raw bytes.
            let n = usize::from(input.byte() % 64);
            let bytes = input.bytes(n).to_vec();
            d.send(id, &bytes);
        }
        10 | 11 => {
            let ms = u64::from(input.byte()) * 100;
            d.advance(Duration::from_millis(ms));
        }
        12 => {
            let secs = 1u64 << (input.byte() % 33);
            d.advance(Duration::from_secs(secs));
        }
        13 => d.lose(id),
        14 => d.release(id),
        _ => {
            // The server loop drains output only now and then; nothing else happens here.
            d.broker.end_turn(d.now, None);
            d.settle();
        }
    }
}

/// The protocol level byte of a CONNECT body, if it has one.
fn connect_level(first: u8, body: &[u8]) -> Option<u8> {
    if first >> 4 != codec::kind::CONNECT {
        return None;
    }
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).map(|level| level & 0x7f)
}

fn qos(b: u8) -> QoS {
    QoS::from_u8(b % 3).expect("0..=2")
}

/// A CONNECT built from the next few bytes of input.
fn connect_packet(input: &mut Input<'_>) -> Vec<u8> {
    let f = input.byte();
    let version = [
        ProtocolVersion::V311,
        ProtocolVersion::V5,
        ProtocolVersion::V31,
    ][usize::from(f % 3)];
    let client_id = input.pick(CLIENT_IDS).to_owned();
    let keep_alive = input.pick(&[0u16, 1, 5, 60]);
    let p = input.byte();
    let mut properties = Properties::default();
    if version.is_v5() {
        properties.session_expiry_interval =
            [None, Some(0), Some(5), Some(u32::MAX)][usize::from(p % 4)];
        if p & 0x04 != 0 {
            properties.receive_maximum = Some(1);
        }
        if p & 0x08 != 0 {
            properties.topic_alias_maximum = Some(2);
        }
        if p & 0x10 != 0 {
            properties.maximum_packet_size = Some(40);
        }
    }
    let will = if f & 0x08 != 0 {
        let w = input.byte();
        let mut properties = Properties::default();
        if version.is_v5() {
            properties.will_delay_interval =
                [None, Some(0), Some(3), Some(100)][usize::from(w % 4)];
        }
        Some(LastWill {
            topic: input.pick(TOPICS).to_owned(),
            payload: b"will".to_vec(),
            qos: qos(w >> 2),
            retain: w & 0x80 != 0,
            properties,
        })
    } else {
        None
    };
    Packet::Connect(Box::new(Connect {
        version,
        bridge: false,
        clean_start: f & 0x04 != 0,
        keep_alive,
        client_id,
        will,
        username: (f & 0x10 != 0).then(|| "user".to_owned()),
        password: (f & 0x20 != 0).then(|| b"pass".to_vec()),
        properties,
    }))
    .to_bytes(version)
}

/// A packet a client sends after CONNECT, built from the next few bytes of input.
fn client_packet(input: &mut Input<'_>, version: ProtocolVersion) -> Vec<u8> {
    let kind = input.byte();
    let packet_id = input.pick(PACKET_IDS);
    let payload = [b'x'; 8];
    match kind % 9 {
        0 => {
            let f = input.byte();
            let q = qos(f);
            let mut properties = Properties::default();
            let mut topic = input.pick(TOPICS);
            if version.is_v5() {
                if f & 0x10 != 0 {
                    properties.topic_alias = Some(u16::from(f >> 6) + 1);
                    if f & 0x20 != 0 {
                        topic = "";
                    }
                }
                if f & 0x08 != 0 {
                    properties.message_expiry_interval = Some(1);
                }
            }
            Packet::Publish(Publish {
                dup: q != QoS::AtMostOnce && f & 0x04 != 0,
                qos: q,
                retain: f & 0x40 != 0,
                topic,
                packet_id: if q == QoS::AtMostOnce { 0 } else { packet_id },
                payload: &payload[..usize::from(f % 9)],
                properties,
            })
            .to_bytes(version)
        }
        1 => {
            let n = usize::from(kind >> 6) + 1;
            let subscriptions = (0..n)
                .map(|_| {
                    let o = input.byte();
                    Subscription {
                        filter: input.pick(FILTERS).to_owned(),
                        options: SubscribeOptions {
                            qos: qos(o),
                            no_local: o & 0x04 != 0,
                            retain_as_published: o & 0x08 != 0,
                            retain_handling: (o >> 4) % 3,
                        },
                    }
                })
                .collect();
            let mut properties = Properties::default();
            if version.is_v5() && kind & 0x10 != 0 {
                properties.subscription_identifiers = vec![u32::from(kind >> 5) + 1];
            }
            Packet::Subscribe(codec::Subscribe {
                packet_id,
                subscriptions,
                properties,
            })
            .to_bytes(version)
        }
        2 => Packet::Unsubscribe(codec::Unsubscribe {
            packet_id,
            filters: vec![input.pick(FILTERS).to_owned()],
            properties: Properties::default(),
        })
        .to_bytes(version),
        3 => Packet::Puback(Ack::new(packet_id)).to_bytes(version),
        4 => Packet::Pubrec(Ack::new(packet_id)).to_bytes(version),
        5 => Packet::Pubrel(Ack::new(packet_id)).to_bytes(version),
        6 => Packet::Pubcomp(Ack::new(packet_id)).to_bytes(version),
        7 => Packet::Pingreq.to_bytes(version),
        _ => {
            let r = input.byte();
            let mut properties = Properties::default();
            if version.is_v5() {
                properties.session_expiry_interval =
                    [None, Some(0), Some(10), Some(u32::MAX)][usize::from(r % 4)];
            }
            Packet::Disconnect(Disconnect {
                reason: [0, 4, 0x80][usize::from(r >> 2) % 3],
                properties,
            })
            .to_bytes(version)
        }
    }
}
