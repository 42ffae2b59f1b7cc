//! Broker logic driven without sockets: bytes in, bytes out, a simulated clock.

use super::*;
use crate::codec::{
    Ack, Connect, LastWill, Packet, Properties, PropertySet, ProtocolVersion, Publish, QoS,
    SubscribeOptions, Subscription,
};
use std::net::{Ipv4Addr, SocketAddrV4};

mod bridges;
mod connack;
mod control;
mod dynsec;
mod hold;
mod listener;
mod metrics;
mod replay;
mod spill;
mod store;
mod time;

struct World {
    broker: Broker,
    t0: Instant,
    now: Instant,
}

/// A decoded packet from the broker, with owned fields for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Connack(bool, u8),
    Publish {
        dup: bool,
        qos: u8,
        retain: bool,
        topic: String,
        id: u16,
        payload: Vec<u8>,
    },
    Puback(u16),
    Pubrec(u16),
    Pubrel(u16),
    Pubcomp(u16),
    Suback(u16, Vec<u8>),
    Unsuback(u16),
    Pingresp,
    Disconnect(u8),
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

fn connect_bytes(
    id: &str,
    clean: bool,
    keep_alive: u16,
    will: Option<(&str, &[u8], QoS, bool)>,
) -> Vec<u8> {
    Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V311,
        bridge: false,
        clean_start: clean,
        keep_alive,
        client_id: id.into(),
        will: will.map(|(t, p, q, r)| LastWill {
            topic: t.into(),
            payload: p.to_vec(),
            qos: q,
            retain: r,
            properties: Properties::default(),
        }),
        username: None,
        password: None,
        properties: Properties::default(),
    }))
    .to_bytes(ProtocolVersion::V311)
}

fn subscribe_bytes(packet_id: u16, filters: &[(&str, QoS)]) -> Vec<u8> {
    Packet::Subscribe(crate::codec::Subscribe {
        packet_id,
        subscriptions: filters
            .iter()
            .map(|(f, q)| Subscription {
                filter: (*f).into(),
                options: SubscribeOptions::qos(*q),
            })
            .collect(),
        properties: Properties::default(),
    })
    .to_bytes(ProtocolVersion::V311)
}

fn publish(topic: &str, payload: &[u8], qos: QoS, retain: bool, id: u16) -> Vec<u8> {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic,
        packet_id: id,
        payload,
        properties: Properties::default(),
    })
    .to_bytes(ProtocolVersion::V311)
}

fn ack(kind: fn(Ack) -> Packet<'static>, id: u16) -> Vec<u8> {
    kind(Ack::new(id)).to_bytes(ProtocolVersion::V311)
}

impl World {
    /// A broker without `$SYS` (its timer would add retained messages to every test).
    fn new(settings: Settings) -> World {
        World::with_sys(Settings {
            sys_interval: 0,
            ..settings
        })
    }

    fn with_sys(settings: Settings) -> World {
        // Created at the test's time zero, the broker puts every deadline at an exact offset
        // from `t0`, so a test can stand one millisecond before a deadline and then on it.
        let now = Instant::now();
        let broker = Broker::new(settings, now, 1);
        World {
            broker,
            t0: now,
            now,
        }
    }

    fn open(&mut self, id: ConnId) {
        self.open_on(id, 0);
    }

    /// Opens connection `id` on configured listener number `listener`.
    fn open_on(&mut self, id: ConnId, listener: usize) {
        let peer = peer(40000 + id as u16);
        let via = Via::Listener {
            index: listener,
            port: 1883,
        };
        self.broker
            .handle_connection_opened(id, peer, via, self.now);
    }

    /// Every action the broker has queued, oldest first.
    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.broker.poll_action()).collect()
    }

    fn send(&mut self, id: ConnId, bytes: &[u8]) {
        self.broker.handle_bytes(id, bytes, self.now);
    }

    /// "s" on connection 1, subscribed to `filter` at `qos` (its SUBACK taken), and "p" on
    /// connection 2; both clean sessions.
    fn subscriber_and_publisher(&mut self, filter: &str, qos: QoS) {
        self.connect(1, "s", true);
        self.send(1, &subscribe_bytes(1, &[(filter, qos)]));
        self.take(1);
        self.connect(2, "p", true);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.broker.end_turn(self.now, None);
    }

    /// Moves the clock to the broker's next deadline, if it is at most `limit`, and runs the
    /// timers due there, as the server loop does when its poll times out. False when no
    /// timer is due by `limit`.
    fn step(&mut self, limit: Instant) -> bool {
        match self.broker.next_deadline() {
            Some(at) if at <= limit => {
                self.now = self.now.max(at);
                self.broker.end_turn(self.now, None);
                true
            }
            _ => false,
        }
    }

    /// Runs every timer at its own deadline until no timer is armed (quinn-proto's
    /// `Pair::drive`, for the broker alone). Connections with a keepalive time out on the
    /// way; a broker with `$SYS` on never idles, so drive it with [`World::drive_until`].
    fn drive(&mut self) {
        let far = self.now + Duration::from_secs(10 * 365 * 24 * 3600);
        self.drive_until(far);
        assert!(
            self.broker.next_deadline().is_none(),
            "the broker never went idle"
        );
    }

    /// Runs every timer due by `until`, each at its own deadline, and leaves the clock there.
    fn drive_until(&mut self, until: Instant) {
        // A timer re-armed at the instant it fell due would loop forever.
        for _ in 0..1_000_000 {
            if !self.step(until) {
                self.now = self.now.max(until);
                return;
            }
        }
        panic!("timers keep falling due at {:?}", self.now - self.t0);
    }

    /// Opens connection `id` and connects it as `client`, returning CONNACK's session present.
    fn connect(&mut self, id: ConnId, client: &str, clean: bool) -> bool {
        self.open(id);
        self.send(id, &connect_bytes(client, clean, 60, None));
        match self.take(id).first() {
            Some(Out::Connack(sp, 0)) => *sp,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Drains and decodes connection `id`'s output.
    fn take(&mut self, id: ConnId) -> Vec<Out> {
        let Some(buf) = self.broker.poll_transmit(id) else {
            return Vec::new();
        };
        let bytes = std::mem::take(buf);
        decode_all(&bytes)
    }

    /// True if the broker asked to close `id` (and forget it).
    fn closed(&mut self, id: ConnId) -> bool {
        let actions = self.actions();
        let closed = actions.contains(&Action::Close(id));
        for a in actions {
            let Action::Close(c) = a else { continue };
            self.broker.handle_connection_closed(c, None, self.now);
        }
        closed
    }
}

fn decode_all(mut bytes: &[u8]) -> Vec<Out> {
    let mut out = Vec::new();
    while let Ok(Some(h)) = codec::parse_fixed_header(bytes) {
        let body = &bytes[h.header_len..h.total()];
        let p = codec::decode(h.first, body, ProtocolVersion::V311)
            .unwrap_or_else(|e| panic!("broker output decodes: {e}"));
        out.push(match p {
            Packet::Connack(c) => Out::Connack(c.session_present, c.code),
            Packet::Publish(p) => Out::Publish {
                dup: p.dup,
                qos: p.qos as u8,
                retain: p.retain,
                topic: p.topic.into(),
                id: p.packet_id,
                payload: p.payload.to_vec(),
            },
            Packet::Puback(a) => Out::Puback(a.packet_id),
            Packet::Pubrec(a) => Out::Pubrec(a.packet_id),
            Packet::Pubrel(a) => Out::Pubrel(a.packet_id),
            Packet::Pubcomp(a) => Out::Pubcomp(a.packet_id),
            Packet::Suback(s) => Out::Suback(s.packet_id, s.codes),
            Packet::Unsuback(u) => Out::Unsuback(u.packet_id),
            Packet::Pingresp => Out::Pingresp,
            Packet::Disconnect(d) => Out::Disconnect(d.reason),
            other => panic!("unexpected packet from broker: {other:?}"),
        });
        bytes = &bytes[h.total()..];
    }
    assert!(bytes.is_empty(), "trailing partial packet in output");
    out
}

fn pub_out(topic: &str, payload: &[u8], qos: u8, id: u16) -> Out {
    Out::Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        id,
        payload: payload.to_vec(),
    }
}

#[test]
fn connect_fed_one_byte_at_a_time_is_accepted() {
    let mut w = World::new(Settings::default());
    w.open(1);
    for b in connect_bytes("c1", true, 60, None) {
        assert!(w.take(1).is_empty());
        w.send(1, &[b]);
    }
    assert_eq!(w.take(1), vec![Out::Connack(false, 0)]);
}

#[test]
fn stream_of_packets_in_random_splits_routes_everything_in_order() {
    let mut rng = 0x1234_5678_9abc_def0u64;
    for _round in 0..20 {
        let mut w = World::new(Settings::default());
        w.connect(1, "sub", true);
        w.send(1, &subscribe_bytes(1, &[("t/#", QoS::AtLeastOnce)]));
        w.take(1);
        w.open(2);
        let mut stream = connect_bytes("pub", true, 60, None);
        for i in 0..200u16 {
            let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][usize::from(i % 3)];
            let id = if qos == QoS::AtMostOnce { 0 } else { i + 1 };
            stream.extend(publish("t/x", &i.to_be_bytes(), qos, false, id));
            if qos == QoS::ExactlyOnce {
                stream.extend(ack(Packet::Pubrel, id));
            }
        }
        let mut rest = &stream[..];
        while !rest.is_empty() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let n = (rng % 37 + 1) as usize;
            let n = n.min(rest.len());
            w.send(2, &rest[..n]);
            rest = &rest[n..];
            // The subscriber acknowledges everything it gets, so the window keeps moving.
            for o in w.take(1) {
                if let Out::Publish { id, qos, .. } = o {
                    if qos == 1 {
                        w.send(1, &ack(Packet::Puback, id));
                    }
                }
                // Keep the payloads to check order.
            }
        }
        let _ = w.take(2);
        assert_eq!(w.broker.stats.publish_received, 200);
        assert_eq!(w.broker.stats.publish_sent, 200);
    }
}

#[test]
fn qos0_routing_follows_subscriptions_and_granted_qos() {
    let mut w = World::new(Settings::default());
    w.connect(1, "s", true);
    w.send(
        1,
        &subscribe_bytes(7, &[("a/+", QoS::AtLeastOnce), ("a/#/b", QoS::AtMostOnce)]),
    );
    // v311:[MQTT-3.9.3-2]: 0x80 for the invalid filter, granted QoS for the other.
    assert_eq!(w.take(1), vec![Out::Suback(7, vec![1, 0x80])]);
    w.connect(2, "p", true);
    w.send(2, &publish("a/b", b"x", QoS::ExactlyOnce, false, 5));
    assert_eq!(w.take(2), vec![Out::Pubrec(5)]);
    // min(2, 1) = 1
    assert_eq!(w.take(1), vec![pub_out("a/b", b"x", 1, 1)]);
}

#[test]
fn qos2_inbound_not_delivered_twice_mqtt_4_3_3_2() {
    let mut w = World::new(Settings::default());
    w.subscriber_and_publisher("t", QoS::AtMostOnce);
    let mut p = publish("t", b"once", QoS::ExactlyOnce, false, 9);
    w.send(2, &p);
    p[0] |= 0x08; // DUP resend before PUBREL
    w.send(2, &p);
    assert_eq!(w.take(2), vec![Out::Pubrec(9), Out::Pubrec(9)]);
    assert_eq!(w.take(1), vec![pub_out("t", b"once", 0, 0)]);
    w.send(2, &ack(Packet::Pubrel, 9));
    assert_eq!(w.take(2), vec![Out::Pubcomp(9)]);
    // After release the same id is a new message.
    w.send(2, &publish("t", b"again", QoS::ExactlyOnce, false, 9));
    assert_eq!(w.take(1), vec![pub_out("t", b"again", 0, 0)]);
}

#[test]
fn overlapping_subscriptions_get_one_copy_at_highest_qos() {
    let mut w = World::new(Settings::default());
    w.connect(1, "s", true);
    w.send(
        1,
        &subscribe_bytes(
            1,
            &[
                ("a/#", QoS::AtMostOnce),
                ("a/b", QoS::AtLeastOnce),
                ("+/b", QoS::AtMostOnce),
            ],
        ),
    );
    w.take(1);
    w.connect(2, "p", true);
    w.send(2, &publish("a/b", b"m", QoS::AtLeastOnce, false, 1));
    assert_eq!(w.take(1), vec![pub_out("a/b", b"m", 1, 1)]);
}

#[test]
fn inflight_window_holds_back_the_rest_in_order() {
    let settings = Settings {
        max_inflight_messages: 3,
        ..Settings::default()
    };
    let mut w = World::new(settings);
    w.subscriber_and_publisher("t", QoS::AtLeastOnce);
    for i in 1..=5u16 {
        w.send(2, &publish("t", &[i as u8], QoS::AtLeastOnce, false, i));
    }
    let got = w.take(1);
    assert_eq!(
        got,
        vec![
            pub_out("t", &[1], 1, 1),
            pub_out("t", &[2], 1, 2),
            pub_out("t", &[3], 1, 3)
        ]
    );
    w.send(1, &ack(Packet::Puback, 2));
    assert_eq!(w.take(1), vec![pub_out("t", &[4], 1, 4)]);
    // A PUBACK for an id not in flight changes nothing.
    w.send(1, &ack(Packet::Puback, 2));
    assert!(w.take(1).is_empty());
    w.send(1, &ack(Packet::Puback, 1));
    assert_eq!(w.take(1), vec![pub_out("t", &[5], 1, 5)]);
}

#[test]
fn a_connection_awaits_acknowledgements_while_messages_are_in_flight_to_it() {
    let mut w = World::new(Settings::default());
    w.subscriber_and_publisher("t", QoS::AtLeastOnce);
    assert!(!w.broker.awaits_acks(1) && !w.broker.awaits_acks(2));
    w.send(2, &publish("t", b"x", QoS::AtLeastOnce, false, 1));
    assert_eq!(w.take(1), vec![pub_out("t", b"x", 1, 1)]);
    // The subscriber is read first in the loop's next turn; the publisher is not waiting.
    assert!(w.broker.awaits_acks(1));
    assert!(!w.broker.awaits_acks(2));
    w.send(1, &ack(Packet::Puback, 1));
    assert!(!w.broker.awaits_acks(1));
    // A QoS 0 delivery leaves nothing in flight.
    w.send(2, &publish("t", b"y", QoS::AtMostOnce, false, 0));
    assert!(!w.broker.awaits_acks(1));
    assert!(!w.broker.awaits_acks(7), "no such connection");
}

#[test]
fn acknowledgement_of_the_wrong_kind_closes_the_connection() {
    type Kind = fn(Ack) -> Packet<'static>;
    let cases: [(QoS, Kind); 3] = [
        (QoS::AtLeastOnce, Packet::Pubrec),
        (QoS::ExactlyOnce, Packet::Puback),
        // Before PUBREC, so before the broker's PUBREL.
        (QoS::ExactlyOnce, Packet::Pubcomp),
    ];
    for (q, wrong) in cases {
        let mut w = World::new(Settings::default());
        w.subscriber_and_publisher("t", q);
        w.send(2, &publish("t", b"x", q, false, 1));
        assert_eq!(w.take(1), vec![pub_out("t", b"x", q as u8, 1)]);
        // For an id not in flight: ignored.
        w.send(1, &ack(wrong, 2));
        assert!(!w.closed(1));
        w.send(1, &ack(wrong, 1));
        assert!(w.closed(1), "{q:?}");
    }
}

#[test]
fn persistent_session_queues_offline_and_resends_with_dup_mqtt_4_4_0_1() {
    let mut w = World::new(Settings::default());
    assert!(!w.connect(1, "s", false));
    w.send(1, &subscribe_bytes(1, &[("t", QoS::ExactlyOnce)]));
    w.take(1);
    w.connect(2, "p", true);
    w.send(2, &publish("t", b"in-flight", QoS::AtLeastOnce, false, 1));
    assert_eq!(w.take(1), vec![pub_out("t", b"in-flight", 1, 1)]);
    w.broker.handle_connection_closed(1, None, w.now);
    w.send(2, &publish("t", b"queued1", QoS::AtLeastOnce, false, 2));
    w.send(2, &publish("t", b"queued2", QoS::ExactlyOnce, false, 3));
    w.send(
        2,
        &publish("t", b"qos0-not-queued", QoS::AtMostOnce, false, 0),
    );
    // Reconnect: session present, in-flight resent with DUP and the same id, then the queue.
    w.open(3);
    w.send(3, &connect_bytes("s", false, 60, None));
    let got = w.take(3);
    assert_eq!(
        got,
        vec![
            Out::Connack(true, 0),
            Out::Publish {
                dup: true,
                qos: 1,
                retain: false,
                topic: "t".into(),
                id: 1,
                payload: b"in-flight".to_vec()
            },
            pub_out("t", b"queued1", 1, 2),
            pub_out("t", b"queued2", 2, 3),
        ]
    );
}

#[test]
fn clean_session_discards_previous_state_mqtt_3_1_2_6() {
    let mut w = World::new(Settings::default());
    w.connect(1, "s", false);
    w.send(1, &subscribe_bytes(1, &[("t", QoS::AtLeastOnce)]));
    w.take(1);
    w.broker.handle_connection_closed(1, None, w.now);
    assert!(!w.connect(2, "s", true));
    assert_eq!(w.broker.counts().subscriptions, 0);
}

#[test]
fn takeover_closes_the_old_connection_mqtt_3_1_4_2() {
    let mut w = World::new(Settings::default());
    w.connect(1, "dup", true);
    w.connect(2, "dup", true);
    assert!(w.closed(1));
    assert_eq!(w.broker.counts().sessions, 1);
}

#[test]
fn keepalive_timeout_at_one_and_a_half_publishes_will() {
    let mut w = World::new(Settings::default());
    w.connect(1, "watcher", true);
    w.send(1, &subscribe_bytes(1, &[("status", QoS::AtLeastOnce)]));
    w.take(1);
    w.open(2);
    w.send(
        2,
        &connect_bytes(
            "dev",
            true,
            10,
            Some(("status", b"offline", QoS::AtLeastOnce, true)),
        ),
    );
    w.take(2);
    w.advance(Duration::from_millis(14_900));
    assert!(!w.closed(2));
    w.advance(Duration::from_millis(200));
    assert!(w.closed(2));
    assert_eq!(w.take(1), vec![pub_out("status", b"offline", 1, 1)]);
    assert_eq!(w.broker.counts().retained, 1);
}

#[test]
fn keepalive_is_extended_by_traffic() {
    let mut w = World::new(Settings::default());
    w.open(1);
    w.send(1, &connect_bytes("dev", true, 2, None));
    w.take(1);
    for _ in 0..5 {
        w.advance(Duration::from_millis(2_900));
        w.send(1, &[0xc0, 0x00]);
        assert_eq!(w.take(1), vec![Out::Pingresp]);
        assert!(!w.closed(1));
    }
    w.advance(Duration::from_millis(3_001));
    assert!(w.closed(1));
}

#[test]
fn no_will_after_disconnect_mqtt_3_1_2_10() {
    let mut w = World::new(Settings::default());
    w.connect(1, "watcher", true);
    w.send(1, &subscribe_bytes(1, &[("status", QoS::AtMostOnce)]));
    w.take(1);
    w.open(2);
    w.send(
        2,
        &connect_bytes(
            "dev",
            true,
            60,
            Some(("status", b"offline", QoS::AtMostOnce, false)),
        ),
    );
    w.send(2, &[0xe0, 0x00]);
    assert!(w.closed(2));
    assert!(w.take(1).is_empty());
}

#[test]
fn will_published_on_protocol_violation() {
    let mut w = World::new(Settings::default());
    w.connect(1, "watcher", true);
    w.send(1, &subscribe_bytes(1, &[("status", QoS::AtMostOnce)]));
    w.take(1);
    w.open(2);
    w.send(
        2,
        &connect_bytes(
            "dev",
            true,
            60,
            Some(("status", b"gone", QoS::AtMostOnce, false)),
        ),
    );
    w.send(2, &connect_bytes("dev", true, 60, None)); // second CONNECT
    assert!(w.closed(2));
    assert_eq!(w.take(1), vec![pub_out("status", b"gone", 0, 0)]);
}

#[test]
fn retained_replay_is_not_truncated_by_queue_limits() {
    let settings = Settings {
        max_queued_messages: 10,
        max_inflight_messages: 5,
        ..Settings::default()
    };
    let mut w = World::new(settings);
    w.connect(1, "p", true);
    for i in 0..100u16 {
        w.send(
            1,
            &publish(&format!("r/{i:03}"), b"v", QoS::AtLeastOnce, true, i + 1),
        );
    }
    w.take(1);
    w.connect(2, "s", true);
    w.send(2, &subscribe_bytes(1, &[("r/#", QoS::AtLeastOnce)]));
    let mut got = 0;
    let mut out = w.take(2);
    assert_eq!(out.remove(0), Out::Suback(1, vec![1]));
    while !out.is_empty() {
        for o in out {
            let Out::Publish { id, retain, .. } = o else {
                panic!("unexpected {o:?}")
            };
            assert!(retain, "retained on subscribe carry the retain flag");
            got += 1;
            w.send(2, &ack(Packet::Puback, id));
        }
        out = w.take(2);
    }
    assert_eq!(got, 100);
}

/// A topic republished while its retained value waits in a replay: the subscriber gets the
/// new value live, and the replay skips the old one, never sending it after its successor.
#[test]
fn newer_live_publish_replaces_a_retained_value_waiting_in_the_replay() {
    let settings = Settings {
        max_inflight_messages: 1,
        ..Settings::default()
    };
    let mut w = World::new(settings);
    w.connect(1, "p", true);
    w.send(1, &publish("a", b"old-a", QoS::AtLeastOnce, true, 1));
    w.send(1, &publish("b", b"old-b", QoS::AtLeastOnce, true, 2));
    w.connect(2, "s", true);
    w.send(2, &subscribe_bytes(1, &[("#", QoS::AtLeastOnce)]));
    w.send(1, &publish("b", b"new-b", QoS::AtLeastOnce, true, 3));
    let mut payloads = Vec::new();
    loop {
        let out = w.take(2);
        if out.is_empty() {
            break;
        }
        for o in out {
            if let Out::Publish { id, payload, .. } = o {
                payloads.push(String::from_utf8_lossy(&payload).into_owned());
                w.send(2, &ack(Packet::Puback, id));
            }
        }
    }
    assert_eq!(payloads, vec!["old-a", "new-b"]);
}

#[test]
fn empty_retained_payload_clears_mqtt_3_3_1_10() {
    let mut w = World::new(Settings::default());
    w.connect(1, "p", true);
    w.send(1, &publish("r", b"v", QoS::AtMostOnce, true, 0));
    assert_eq!(w.broker.counts().retained, 1);
    w.send(1, &publish("r", b"", QoS::AtMostOnce, true, 0));
    assert_eq!(w.broker.counts().retained, 0);
}

#[test]
fn first_packet_must_be_connect_mqtt_3_1_0_1() {
    let mut w = World::new(Settings::default());
    w.open(1);
    w.send(1, &[0xc0, 0x00]);
    assert!(w.closed(1));
}

#[test]
fn oversize_packet_is_refused_from_its_header() {
    let settings = Settings {
        max_packet_size: 100,
        ..Settings::default()
    };
    let mut w = World::new(settings);
    w.connect(1, "p", true);
    // Only the fixed header of a 1000 byte PUBLISH: refused before the body arrives.
    w.send(1, &[0x30, 0xe8, 0x07]);
    assert!(w.closed(1));
}

#[test]
fn garbage_closes_without_panic() {
    let mut rng = 42u64;
    for round in 0..200 {
        let mut w = World::new(Settings::default());
        w.open(1);
        let mut bytes = if round % 2 == 0 {
            connect_bytes("g", true, 60, None)
        } else {
            Vec::new()
        };
        for _ in 0..512 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            bytes.push(rng as u8);
        }
        w.send(1, &bytes);
        let _ = w.take(1);
        let _ = w.closed(1);
    }
}

#[test]
fn zero_length_client_id_rules_mqtt_3_1_3_8() {
    let mut w = World::new(Settings::default());
    w.open(1);
    w.send(1, &connect_bytes("", false, 60, None));
    assert_eq!(w.take(1), vec![Out::Connack(false, 2)]);
    assert!(w.closed(1));
    w.open(2);
    w.send(2, &connect_bytes("", true, 60, None));
    assert_eq!(w.take(2), vec![Out::Connack(false, 0)]);
}

#[test]
fn persistent_client_expiration_removes_abandoned_sessions() {
    let settings = Settings {
        persistent_client_expiration: Some(Duration::from_secs(3600)),
        ..Settings::default()
    };
    let mut w = World::new(settings);
    w.connect(1, "gone", false);
    w.send(1, &subscribe_bytes(1, &[("t", QoS::AtLeastOnce)]));
    w.broker.handle_connection_closed(1, None, w.now);
    w.advance(Duration::from_secs(3599));
    assert_eq!(w.broker.counts().sessions, 1);
    w.advance(Duration::from_secs(2));
    assert_eq!(w.broker.counts().sessions, 0);
    assert_eq!(w.broker.counts().subscriptions, 0);
    assert_eq!(w.broker.stats.clients_expired, 1);
    let _ = w.t0;
}

/// A QoS 0 subscriber that reads nothing: its output fills to the bound, then the queue to
/// `max_queued_messages`; only what comes after is dropped, and counted. Once it reads, the
/// queued ones follow.
#[test]
fn slow_reader_qos0_dropped_past_output_bound_and_queue_limit_and_counted() {
    let mut w = World::new(Settings::default());
    w.connect(1, "slow", true);
    w.send(1, &subscribe_bytes(1, &[("t", QoS::AtMostOnce)]));
    w.take(1);
    w.connect(2, "p", true);
    let payload = vec![0u8; 1000];
    for _ in 0..3000 {
        w.send(2, &publish("t", &payload, QoS::AtMostOnce, false, 0));
    }
    let held = w.broker.poll_transmit(1).map_or(0, |o| o.len());
    assert!(held <= OUTPUT_HIGH_WATER + 2000, "output bounded: {held}");
    let sent = w.broker.stats.publish_sent;
    let dropped = w.broker.stats.publish_dropped;
    assert_eq!(
        dropped,
        3000 - sent - 1000,
        "the queue holds 1000 (sent {sent})"
    );
    // The reader drains its socket: the queued ones follow.
    let mut received = 0;
    while let Some(buf) = w.broker.poll_transmit(1) {
        let bytes = std::mem::take(buf);
        if bytes.is_empty() {
            break;
        }
        w.broker.handle_written(1, bytes.len());
        received += decode_all(&bytes).len() as u64;
    }
    assert_eq!(received, 3000 - dropped);
}

// ---- MQTT 5 ----

fn connect_v5(id: &str, clean: bool, props: Properties, will: Option<LastWill>) -> Vec<u8> {
    Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V5,
        bridge: false,
        clean_start: clean,
        keep_alive: 60,
        client_id: id.into(),
        will,
        username: None,
        password: None,
        properties: props,
    }))
    .to_bytes(ProtocolVersion::V5)
}

fn publish_v5(topic: &str, payload: &[u8], qos: QoS, id: u16, props: Properties) -> Vec<u8> {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        packet_id: id,
        payload,
        properties: props,
    })
    .to_bytes(ProtocolVersion::V5)
}

fn subscribe_v5(id: u16, filter: &str, options: SubscribeOptions, sub_id: Option<u32>) -> Vec<u8> {
    Packet::Subscribe(crate::codec::Subscribe {
        packet_id: id,
        subscriptions: vec![Subscription {
            filter: filter.into(),
            options,
        }],
        properties: PropertySet {
            subscription_identifiers: sub_id.into_iter().collect(),
            ..PropertySet::default()
        }
        .into(),
    })
    .to_bytes(ProtocolVersion::V5)
}

/// Decodes v5 output into packets with owned data.
fn take_v5(w: &mut World, id: ConnId) -> Vec<Packet<'static>> {
    let bytes = w
        .broker
        .poll_transmit(id)
        .map(std::mem::take)
        .unwrap_or_default();
    let mut rest = &bytes[..];
    let mut out = Vec::new();
    while let Ok(Some(h)) = codec::parse_fixed_header(rest) {
        let body = &rest[h.header_len..h.total()];
        let p = codec::decode(h.first, body, ProtocolVersion::V5)
            .unwrap_or_else(|e| panic!("v5 output decodes: {e}"));
        out.push(match p {
            Packet::Publish(p) => Packet::Publish(Publish {
                topic: Box::leak(p.topic.to_string().into_boxed_str()),
                payload: Box::leak(p.payload.to_vec().into_boxed_slice()),
                ..p
            }),
            Packet::Connack(c) => Packet::Connack(c),
            Packet::Suback(s) => Packet::Suback(s),
            Packet::Puback(a) => Packet::Puback(a),
            Packet::Pubrec(a) => Packet::Pubrec(a),
            Packet::Disconnect(d) => Packet::Disconnect(d),
            Packet::Pubcomp(a) => Packet::Pubcomp(a),
            Packet::Pubrel(a) => Packet::Pubrel(a),
            other => panic!("unexpected {other:?}"),
        });
        rest = &rest[h.total()..];
    }
    out
}

fn connect5(w: &mut World, id: ConnId, client: &str, props: Properties) -> Properties {
    w.open(id);
    w.send(id, &connect_v5(client, true, props, None));
    match take_v5(w, id).into_iter().next() {
        Some(Packet::Connack(c)) if c.code == 0 => c.properties,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn v5_connack_announces_limits_mqtt_3_2_2_3() {
    let mut w = World::new(Settings::default());
    w.open(1);
    w.send(1, &connect_v5("", true, Properties::default(), None));
    let Some(Packet::Connack(c)) = take_v5(&mut w, 1).into_iter().next() else {
        panic!("no CONNACK")
    };
    assert_eq!(c.properties.topic_alias_maximum, Some(10));
    assert_eq!(c.properties.receive_maximum, Some(20));
    // v5:[MQTT-3.2.2-16]: an assigned id for an empty client id.
    assert!(c
        .properties
        .assigned_client_identifier
        .as_ref()
        .is_some_and(|id| id.starts_with("auto-")));
}

#[test]
fn v5_inbound_topic_alias_maps_and_rejects_out_of_range_mqtt_3_3_2_8() {
    let mut w = World::new(Settings::default());
    connect5(&mut w, 1, "sub", Properties::default());
    w.send(
        1,
        &subscribe_v5(1, "t/a", SubscribeOptions::qos(QoS::AtMostOnce), None),
    );
    take_v5(&mut w, 1);
    connect5(&mut w, 2, "pub", Properties::default());
    let alias = |a| {
        PropertySet {
            topic_alias: Some(a),
            ..PropertySet::default()
        }
        .into()
    };
    w.send(2, &publish_v5("t/a", b"1", QoS::AtMostOnce, 0, alias(3)));
    w.send(2, &publish_v5("", b"2", QoS::AtMostOnce, 0, alias(3)));
    let got: Vec<_> = take_v5(&mut w, 1)
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => (
                p.topic.to_string(),
                p.payload.to_vec(),
                p.properties.topic_alias,
            ),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("t/a".into(), b"1".to_vec(), None),
            ("t/a".into(), b"2".to_vec(), None)
        ]
    );
    w.send(2, &publish_v5("t/a", b"3", QoS::AtMostOnce, 0, alias(11)));
    assert!(matches!(take_v5(&mut w, 2)[..], [Packet::Disconnect(ref d)] if d.reason == 0x94));
    assert!(w.closed(2));
}

#[test]
fn v5_outbound_topic_alias_sent_once_then_alias_only() {
    let mut w = World::new(Settings::default());
    connect5(
        &mut w,
        1,
        "sub",
        PropertySet {
            topic_alias_maximum: Some(1),
            ..PropertySet::default()
        }
        .into(),
    );
    w.send(
        1,
        &subscribe_v5(1, "#", SubscribeOptions::qos(QoS::AtMostOnce), None),
    );
    take_v5(&mut w, 1);
    connect5(&mut w, 2, "pub", Properties::default());
    for t in ["a", "a", "b"] {
        w.send(
            2,
            &publish_v5(t, b"x", QoS::AtMostOnce, 0, Properties::default()),
        );
    }
    let got: Vec<_> = take_v5(&mut w, 1)
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.topic.to_string(), p.properties.topic_alias),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".into(), Some(1)),
            ("".into(), Some(1)),
            ("b".into(), None)
        ]
    );
}

#[test]
fn v5_receive_maximum_of_client_caps_inflight_mqtt_3_3_4_7() {
    let mut w = World::new(Settings::default());
    connect5(
        &mut w,
        1,
        "sub",
        PropertySet {
            receive_maximum: Some(2),
            ..PropertySet::default()
        }
        .into(),
    );
    w.send(
        1,
        &subscribe_v5(1, "t", SubscribeOptions::qos(QoS::AtLeastOnce), None),
    );
    take_v5(&mut w, 1);
    connect5(&mut w, 2, "pub", Properties::default());
    for i in 1..=4 {
        w.send(
            2,
            &publish_v5("t", b"x", QoS::AtLeastOnce, i, Properties::default()),
        );
    }
    assert_eq!(take_v5(&mut w, 1).len(), 2);
}

#[test]
fn v5_inbound_receive_maximum_exceeded_disconnects_0x93() {
    let settings = Settings {
        max_inflight_messages: 2,
        ..Settings::default()
    };
    let mut w = World::new(settings);
    connect5(&mut w, 1, "pub", Properties::default());
    for i in 1..=3 {
        w.send(
            1,
            &publish_v5("t", b"x", QoS::ExactlyOnce, i, Properties::default()),
        );
    }
    let out = take_v5(&mut w, 1);
    assert!(
        matches!(out.last(), Some(Packet::Disconnect(d)) if d.reason == 0x93),
        "{out:?}"
    );
    assert!(w.closed(1));
}

#[test]
fn v5_subscription_identifiers_all_sent_mqtt_3_3_4_3() {
    let mut w = World::new(Settings::default());
    connect5(&mut w, 1, "sub", Properties::default());
    w.send(
        1,
        &subscribe_v5(1, "a/+", SubscribeOptions::qos(QoS::AtMostOnce), Some(5)),
    );
    w.send(
        1,
        &subscribe_v5(2, "a/#", SubscribeOptions::qos(QoS::AtMostOnce), Some(9)),
    );
    take_v5(&mut w, 1);
    connect5(&mut w, 2, "pub", Properties::default());
    w.send(
        2,
        &publish_v5("a/b", b"x", QoS::AtMostOnce, 0, Properties::default()),
    );
    let out = take_v5(&mut w, 1);
    let [Packet::Publish(p)] = &out[..] else {
        panic!("{out:?}")
    };
    let mut ids = p.properties.subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, vec![5, 9]);
}

#[test]
fn v5_no_matching_subscribers_only_in_puback_and_only_without_any_match() {
    let acl = "topic readwrite mine/#\ntopic write theirs/#\n";
    let mut w = World::new(secured(None, Some(acl), true));
    connect5(&mut w, 1, "p", Properties::default());
    let codes = |w: &mut World| -> Vec<(u16, u8)> {
        take_v5(w, 1)
            .into_iter()
            .filter_map(|p| match p {
                Packet::Puback(a) | Packet::Pubrec(a) => Some((a.packet_id, a.reason)),
                _ => None,
            })
            .collect()
    };
    let none = Properties::default;
    w.send(1, &publish_v5("mine/a", b"x", QoS::AtLeastOnce, 1, none()));
    w.send(1, &publish_v5("mine/a", b"x", QoS::ExactlyOnce, 2, none()));
    assert_eq!(codes(&mut w), [(1, 0x10), (2, 0)]);
    // Its own No Local subscription matches, though nothing is delivered.
    let no_local = SubscribeOptions {
        no_local: true,
        ..SubscribeOptions::qos(QoS::AtLeastOnce)
    };
    w.send(1, &subscribe_v5(3, "mine/#", no_local, None));
    w.send(1, &publish_v5("mine/b", b"x", QoS::AtLeastOnce, 4, none()));
    assert_eq!(codes(&mut w), [(4, 0)]);
    // So does a subscription whose client may not read the topic.
    connect5(&mut w, 2, "s", Properties::default());
    w.send(
        2,
        &subscribe_v5(1, "theirs/#", SubscribeOptions::qos(QoS::AtMostOnce), None),
    );
    w.send(
        1,
        &publish_v5("theirs/x", b"x", QoS::AtLeastOnce, 5, none()),
    );
    assert_eq!(codes(&mut w), [(5, 0)]);
    assert!(publishes(&take_v5(&mut w, 2)).is_empty());
}

#[test]
fn v5_no_local_and_retain_as_published_mqtt_3_8_3_3() {
    let mut w = World::new(Settings::default());
    connect5(&mut w, 1, "me", Properties::default());
    let opts = SubscribeOptions {
        qos: QoS::AtMostOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: 0,
    };
    w.send(1, &subscribe_v5(1, "t", opts, None));
    take_v5(&mut w, 1);
    w.send(
        1,
        &publish_v5("t", b"mine", QoS::AtMostOnce, 0, Properties::default()),
    );
    assert!(take_v5(&mut w, 1).is_empty());
    connect5(&mut w, 2, "other", Properties::default());
    let mut p = publish_v5("t", b"theirs", QoS::AtMostOnce, 0, Properties::default());
    p[0] |= 1; // retain
    w.send(2, &p);
    let out = take_v5(&mut w, 1);
    assert!(matches!(&out[..], [Packet::Publish(p)] if p.retain));
}

#[test]
fn v5_will_delay_cancelled_when_session_resumes_in_time() {
    let mut w = World::new(Settings::default());
    connect5(&mut w, 1, "watch", Properties::default());
    w.send(
        1,
        &subscribe_v5(1, "will", SubscribeOptions::qos(QoS::AtMostOnce), None),
    );
    take_v5(&mut w, 1);
    let will = || LastWill {
        topic: "will".into(),
        payload: b"gone".to_vec(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: PropertySet {
            will_delay_interval: Some(5),
            ..PropertySet::default()
        }
        .into(),
    };
    let session: Properties = PropertySet {
        session_expiry_interval: Some(60),
        ..PropertySet::default()
    }
    .into();
    w.open(2);
    w.send(2, &connect_v5("dev", true, session.clone(), Some(will())));
    take_v5(&mut w, 2);
    w.broker.handle_connection_closed(2, None, w.now);
    w.advance(Duration::from_secs(4));
    assert!(take_v5(&mut w, 1).is_empty());
    w.open(3);
    w.send(3, &connect_v5("dev", false, session.clone(), Some(will())));
    w.advance(Duration::from_secs(10));
    assert!(take_v5(&mut w, 1).is_empty(), "resumed in time: no will");
    // Now leave for good: the will goes after 5 s.
    w.broker.handle_connection_closed(3, None, w.now);
    w.advance(Duration::from_millis(4_900));
    assert!(take_v5(&mut w, 1).is_empty());
    w.advance(Duration::from_millis(200));
    assert_eq!(take_v5(&mut w, 1).len(), 1);
}

#[test]
fn v5_session_expiry_interval_removes_session_mqtt_3_1_2_23() {
    let mut w = World::new(Settings::default());
    w.open(1);
    let props: Properties = PropertySet {
        session_expiry_interval: Some(30),
        ..PropertySet::default()
    }
    .into();
    w.send(1, &connect_v5("s", true, props.clone(), None));
    w.send(
        1,
        &subscribe_v5(1, "t", SubscribeOptions::qos(QoS::AtLeastOnce), None),
    );
    take_v5(&mut w, 1);
    w.broker.handle_connection_closed(1, None, w.now);
    w.advance(Duration::from_secs(29));
    assert_eq!(w.broker.counts().sessions, 1);
    w.advance(Duration::from_secs(2));
    assert_eq!(w.broker.counts().sessions, 0);
}

#[test]
fn v5_message_expiry_drops_stale_and_forwards_remaining_mqtt_3_3_2_6() {
    let mut w = World::new(Settings::default());
    w.open(1);
    let props: Properties = PropertySet {
        session_expiry_interval: Some(300),
        ..PropertySet::default()
    }
    .into();
    w.send(1, &connect_v5("s", true, props.clone(), None));
    w.send(
        1,
        &subscribe_v5(1, "t", SubscribeOptions::qos(QoS::AtLeastOnce), None),
    );
    take_v5(&mut w, 1);
    w.broker.handle_connection_closed(1, None, w.now);
    connect5(&mut w, 2, "p", Properties::default());
    let exp = |s| {
        PropertySet {
            message_expiry_interval: Some(s),
            ..PropertySet::default()
        }
        .into()
    };
    w.send(2, &publish_v5("t", b"short", QoS::AtLeastOnce, 1, exp(5)));
    w.send(2, &publish_v5("t", b"long", QoS::AtLeastOnce, 2, exp(100)));
    w.advance(Duration::from_secs(10));
    w.open(3);
    w.send(3, &connect_v5("s", false, props, None));
    let out = take_v5(&mut w, 3);
    let pubs: Vec<_> = out
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.payload.to_vec(), p.properties.message_expiry_interval)),
            _ => None,
        })
        .collect();
    assert_eq!(pubs, vec![(b"long".to_vec(), Some(90))]);
}

#[test]
fn v5_shared_subscription_qos1_moves_to_another_member_mqtt_4_8_2_4() {
    let mut w = World::new(Settings::default());
    connect5(&mut w, 1, "a", Properties::default());
    connect5(&mut w, 2, "b", Properties::default());
    for id in [1, 2] {
        w.send(
            id,
            &subscribe_v5(
                1,
                "$share/g/job",
                SubscribeOptions::qos(QoS::AtLeastOnce),
                None,
            ),
        );
        take_v5(&mut w, id);
    }
    connect5(&mut w, 3, "p", Properties::default());
    w.send(
        3,
        &publish_v5("job", b"j1", QoS::AtLeastOnce, 1, Properties::default()),
    );
    let (holder, other) = if take_v5(&mut w, 1).is_empty() {
        (2, 1)
    } else {
        (1, 2)
    };
    // The member holding the unacknowledged message leaves for good (clean session).
    w.broker.handle_connection_closed(holder, None, w.now);
    let out = take_v5(&mut w, other);
    assert!(
        matches!(&out[..], [Packet::Publish(p)] if p.payload == b"j1"),
        "{out:?}"
    );
}

#[test]
fn sys_topics_reach_sys_subscribers_not_hash_mqtt_4_7_2_1() {
    let mut w = World::with_sys(Settings::default());
    w.connect(1, "all", true);
    w.send(1, &subscribe_bytes(1, &[("#", QoS::AtMostOnce)]));
    w.connect(2, "sys", true);
    w.send(
        2,
        &subscribe_bytes(
            1,
            &[
                ("$SYS/broker/uptime", QoS::AtMostOnce),
                ("$SYS/broker/clients/connected", QoS::AtMostOnce),
            ],
        ),
    );
    w.take(1);
    w.take(2);
    w.advance(Duration::from_secs(10));
    assert!(w.take(1).is_empty());
    let got = w.take(2);
    assert!(
        got.contains(&pub_out("$SYS/broker/uptime", b"10 seconds", 0, 0)),
        "{got:?}"
    );
    assert!(
        got.contains(&pub_out("$SYS/broker/clients/connected", b"2", 0, 0)),
        "{got:?}"
    );
    // Only changed values are published again.
    w.advance(Duration::from_secs(10));
    let got = w.take(2);
    assert_eq!(
        got,
        vec![pub_out("$SYS/broker/uptime", b"20 seconds", 0, 0)]
    );
}

#[test]
fn client_publish_to_sys_is_acknowledged_dropped_and_counted() {
    let mut w = World::new(Settings::default());
    w.connect(1, "watcher", true);
    w.send(1, &subscribe_bytes(1, &[("$SYS/#", QoS::AtMostOnce)]));
    w.take(1);
    w.connect(2, "spoofer", true);
    w.send(
        2,
        &publish(
            "$SYS/broker/uptime",
            b"0 seconds",
            QoS::AtLeastOnce,
            true,
            3,
        ),
    );
    w.send(
        2,
        &publish("$SYS/broker/uptime", b"x", QoS::ExactlyOnce, false, 4),
    );
    w.send(2, &publish("$share/g/t", b"x", QoS::AtMostOnce, false, 0));
    // 3.x has no way to say no: acknowledged, then nothing.
    assert_eq!(w.take(2), vec![Out::Puback(3), Out::Pubrec(4)]);
    assert!(w.take(1).is_empty());
    assert_eq!(w.broker.stats.publish_dropped, 3);
    assert_eq!(w.broker.retained.len(), 0);
    // The bridge state topics stay open.
    w.send(
        2,
        &publish(
            "$SYS/broker/connection/b/state",
            b"1",
            QoS::AtMostOnce,
            false,
            0,
        ),
    );
    assert_eq!(
        w.take(1),
        vec![pub_out("$SYS/broker/connection/b/state", b"1", 0, 0)]
    );
    // MQTT 5 is told: Not authorized.
    connect5(&mut w, 3, "spoofer5", Properties::default());
    w.send(
        3,
        &publish_v5("$SYS/x", b"x", QoS::AtLeastOnce, 5, Properties::default()),
    );
    match &take_v5(&mut w, 3)[..] {
        [Packet::Puback(a)] => assert_eq!((a.packet_id, a.reason), (5, 0x87)),
        other => panic!("expected PUBACK 0x87, got {other:?}"),
    }
}

#[test]
fn will_to_sys_is_not_published() {
    let mut w = World::new(Settings::default());
    w.connect(1, "watcher", true);
    w.send(1, &subscribe_bytes(1, &[("$SYS/#", QoS::AtMostOnce)]));
    w.take(1);
    w.open(2);
    w.send(
        2,
        &connect_bytes(
            "w",
            true,
            60,
            Some(("$SYS/x", b"bye", QoS::AtMostOnce, false)),
        ),
    );
    assert_eq!(w.take(2), vec![Out::Connack(false, 0)]);
    w.broker.handle_connection_closed(2, None, w.now);
    assert!(w.take(1).is_empty());
    assert_eq!(w.broker.stats.publish_dropped, 1);
}

fn shared_pair(w: &mut World, qos: QoS) -> (ConnId, ConnId) {
    connect5(w, 1, "a", Properties::default());
    connect5(w, 2, "b", Properties::default());
    for id in [1, 2] {
        w.send(
            id,
            &subscribe_v5(1, "$share/g/job", SubscribeOptions::qos(qos), None),
        );
        take_v5(w, id);
    }
    connect5(w, 3, "p", Properties::default());
    w.send(3, &publish_v5("job", b"j1", qos, 1, Properties::default()));
    let holder = if take_v5(w, 1).is_empty() { 2 } else { 1 };
    (holder, 3 - holder)
}

/// v5:[MQTT-4.8.2-5]
#[test]
fn v5_shared_qos2_in_flight_not_moved_when_session_ends_mqtt_4_8_2_5() {
    let mut w = World::new(Settings::default());
    let (holder, other) = shared_pair(&mut w, QoS::ExactlyOnce);
    w.broker.handle_connection_closed(holder, None, w.now);
    assert!(
        take_v5(&mut w, other).is_empty(),
        "QoS 2 stays with the session it was sent to"
    );
}

/// v5:[MQTT-4.8.2-6]
#[test]
fn v5_shared_error_puback_not_sent_to_another_member_mqtt_4_8_2_6() {
    let mut w = World::new(Settings::default());
    let (holder, other) = shared_pair(&mut w, QoS::AtLeastOnce);
    let refused = Packet::Puback(Ack {
        packet_id: 1,
        reason: 0x80,
        properties: Properties::default(),
    })
    .to_bytes(ProtocolVersion::V5);
    w.send(holder, &refused);
    w.broker.handle_connection_closed(holder, None, w.now);
    assert!(
        take_v5(&mut w, other).is_empty(),
        "discarded, not retried elsewhere"
    );
}

#[test]
fn an_idle_connection_keeps_to_its_memory_budget() {
    // An idle connection must cost at most half of Mosquitto's ~750 B. These records
    // are most of it (plus a 16-byte timer entry, a 4-byte index slot and the client id);
    // grow them only on purpose. Conn grew from 80 to 88 for the administration API's local
    // port and connection time.
    use std::mem::size_of;
    assert!(
        size_of::<super::conn::Conn>() <= 88,
        "Conn {}",
        size_of::<super::conn::Conn>()
    );
    assert!(
        size_of::<Session>() <= 72,
        "Session {}",
        size_of::<Session>()
    );
}

// ---- SIGHUP re-authentication ----

/// A password file line for `user` with `password` (a cheap single-round hash: tests only).
fn password_line(user: &str, password: &str, salt: &[u8]) -> String {
    use crate::auth::passwd::{HashType, PasswordHash};
    let hash = PasswordHash::with_salt(HashType::Sha512Pbkdf2, password.as_bytes(), salt, 1);
    format!("{user}:{hash}\n")
}

/// Settings with this password file text and ACL text, anonymous as given.
fn secured(passwords: Option<&str>, acl: Option<&str>, allow_anonymous: bool) -> Settings {
    let security = crate::auth::Security {
        passwords: passwords.map(|text| crate::auth::PasswordFile::parse("pw", text).0),
        acl: acl.map(|text| crate::auth::Acl::parse("acl", text).unwrap_or_else(|e| panic!("{e}"))),
        dynsec: None,
    };
    Settings {
        allow_anonymous,
        sys_interval: 0,
        security: Rc::new(security),
        ..Settings::default()
    }
}

fn connect_as(id: &str, user: Option<&str>, password: Option<&str>) -> Vec<u8> {
    Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V311,
        bridge: false,
        clean_start: true,
        keep_alive: 60,
        client_id: id.into(),
        will: Some(LastWill {
            topic: "wills".into(),
            payload: id.as_bytes().to_vec(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        }),
        username: user.map(str::to_string),
        password: password.map(|p| p.as_bytes().to_vec()),
        properties: Properties::default(),
    }))
    .to_bytes(ProtocolVersion::V311)
}

impl World {
    /// Connects `client` with these credentials; returns the CONNACK code.
    fn login(&mut self, id: ConnId, client: &str, user: Option<&str>, pw: Option<&str>) -> u8 {
        self.open(id);
        self.send(id, &connect_as(client, user, pw));
        match self.take(id).first() {
            Some(Out::Connack(_, code)) => *code,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Applies new settings as SIGHUP does; returns the connections closed, sorted.
    fn reload(&mut self, settings: Settings) -> Vec<ConnId> {
        let n = self.broker.handle_reload(settings, self.now);
        let mut closed: Vec<ConnId> = self
            .actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Close(c) => Some(c),
                Action::ConnectBridge { .. } => None,
            })
            .collect();
        for &c in &closed {
            self.broker.handle_connection_closed(c, None, self.now);
        }
        closed.sort_unstable();
        assert_eq!(n, closed.len());
        closed
    }
}

#[test]
fn reload_disconnects_a_removed_user_and_keeps_the_others() {
    let alice = password_line("alice", "a-pw", b"salt-alice01");
    let bob = password_line("bob", "b-pw", b"salt-bob0001");
    let mut w = World::new(secured(Some(&format!("{alice}{bob}")), None, false));
    assert_eq!(w.login(1, "c-alice", Some("alice"), Some("a-pw")), 0);
    assert_eq!(w.login(2, "c-bob", Some("bob"), Some("b-pw")), 0);
    // The same file again changes nothing.
    assert!(w
        .reload(secured(Some(&format!("{bob}{alice}")), None, false))
        .is_empty());
    assert_eq!(w.reload(secured(Some(&alice), None, false)), vec![2]);
    // No DISCONNECT packet (3.1.1 has none; Mosquitto sends none to v5 clients either).
    assert!(w.take(2).is_empty());
    assert!(w
        .broker
        .conn(1)
        .is_some_and(|c| c.state != ConnState::Closing));
}

#[test]
fn reload_disconnects_a_user_whose_password_changed() {
    let before = password_line("alice", "old", b"salt-alice01");
    let after = password_line("alice", "new", b"salt-alice02");
    let mut w = World::new(secured(Some(&before), None, false));
    assert_eq!(w.login(1, "c1", Some("alice"), Some("old")), 0);
    assert_eq!(w.reload(secured(Some(&after), None, false)), vec![1]);
    // With the new password she is back.
    assert_eq!(w.login(2, "c1", Some("alice"), Some("new")), 0);
}

#[test]
fn reload_disconnects_anonymous_clients_once_anonymous_is_refused() {
    let alice = password_line("alice", "a-pw", b"salt-alice01");
    let mut w = World::new(secured(Some(&alice), None, true));
    assert_eq!(w.login(1, "anon", None, None), 0);
    // A username not in the file is refused even with allow_anonymous (Mosquitto 2.0).
    assert_eq!(w.login(2, "ghost", Some("ghost"), Some("x")), 5);
    assert!(w.closed(2));
    assert_eq!(w.login(3, "c-alice", Some("alice"), Some("a-pw")), 0);
    assert!(w.reload(secured(Some(&alice), None, true)).is_empty());
    assert_eq!(w.reload(secured(Some(&alice), None, false)), vec![1]);
}

#[test]
fn reload_adding_a_password_file_disconnects_users_it_cannot_vouch_for() {
    // Logged in with a username while there was no password file (allow_anonymous): the new
    // file cannot be checked against a password midge never kept, so the client goes.
    let mut w = World::new(secured(None, None, true));
    assert_eq!(w.login(1, "c1", Some("alice"), Some("a-pw")), 0);
    assert_eq!(w.login(2, "anon", None, None), 0);
    let alice = password_line("alice", "a-pw", b"salt-alice01");
    assert_eq!(w.reload(secured(Some(&alice), None, true)), vec![1]);
}

#[test]
fn a_client_disconnected_by_a_reload_publishes_no_will() {
    let alice = password_line("alice", "a-pw", b"salt-alice01");
    let bob = password_line("bob", "b-pw", b"salt-bob0001");
    let mut w = World::new(secured(Some(&format!("{alice}{bob}")), None, false));
    assert_eq!(w.login(1, "watcher", Some("alice"), Some("a-pw")), 0);
    w.send(1, &subscribe_bytes(1, &[("wills", QoS::AtMostOnce)]));
    w.take(1);
    assert_eq!(w.login(2, "c-bob", Some("bob"), Some("b-pw")), 0);
    assert_eq!(w.reload(secured(Some(&alice), None, false)), vec![2]);
    // Mosquitto marks the client as disconnecting first, and context__send_will skips those.
    assert!(w.take(1).is_empty());
}

#[test]
fn per_listener_policies_are_rechecked_per_listener() {
    let policy = |allow_anonymous| ListenerPolicy {
        allow_anonymous,
        allow_zero_length_clientid: true,
        auto_id_prefix: "auto-".into(),
        security: Rc::new(crate::auth::Security::default()),
    };
    let mut settings = secured(None, None, false);
    settings.per_listener = vec![policy(true), policy(true)];
    let mut w = World::new(settings.clone());
    w.open_on(1, 0);
    w.send(1, &connect_as("on-0", None, None));
    w.open_on(2, 1);
    w.send(2, &connect_as("on-1", None, None));
    assert_eq!(w.take(1), vec![Out::Connack(false, 0)]);
    assert_eq!(w.take(2), vec![Out::Connack(false, 0)]);
    settings.per_listener = vec![policy(true), policy(false)];
    assert_eq!(w.reload(settings), vec![2]);
}

#[test]
fn acls_reloaded_apply_to_the_next_publish_and_delivery() {
    let alice = password_line("alice", "a-pw", b"salt-alice01");
    let open_acl = "user alice\ntopic readwrite #\n";
    let mut w = World::new(secured(Some(&alice), Some(open_acl), false));
    assert_eq!(w.login(1, "sub", Some("alice"), Some("a-pw")), 0);
    w.send(1, &subscribe_bytes(1, &[("home/#", QoS::AtMostOnce)]));
    w.take(1);
    assert_eq!(w.login(2, "pub", Some("alice"), Some("a-pw")), 0);
    w.send(2, &publish("home/a", b"1", QoS::AtMostOnce, false, 0));
    assert_eq!(w.take(1), vec![pub_out("home/a", b"1", 0, 0)]);
    // Now alice may write home/a but read nothing: nobody is disconnected, the publish goes
    // through the ACL and the delivery to her subscription does not.
    let write_only = "user alice\ntopic write home/#\n";
    assert!(w
        .reload(secured(Some(&alice), Some(write_only), false))
        .is_empty());
    w.send(2, &publish("home/a", b"2", QoS::AtMostOnce, false, 0));
    assert!(w.take(1).is_empty());
    // And with no rule for home/a at all, a QoS 1 publish is acknowledged but not routed.
    let other = "user alice\ntopic readwrite garden/#\n";
    assert!(w
        .reload(secured(Some(&alice), Some(other), false))
        .is_empty());
    w.send(2, &publish("home/a", b"3", QoS::AtLeastOnce, false, 7));
    assert_eq!(w.take(2), vec![Out::Puback(7)]);
    assert!(w.take(1).is_empty());
}

/// CONNECT as alice (password `a-pw`) with a persistent session, 3.1.1.
fn connect_alice_persistent(client: &str) -> Vec<u8> {
    Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V311,
        bridge: false,
        clean_start: false,
        keep_alive: 60,
        client_id: client.into(),
        will: None,
        username: Some("alice".into()),
        password: Some(b"a-pw".to_vec()),
        properties: Properties::default(),
    }))
    .to_bytes(ProtocolVersion::V311)
}

#[test]
fn messages_waiting_when_the_acl_changes_are_checked_again_when_they_go() {
    let alice = password_line("alice", "a-pw", b"salt-alice01");
    let open_acl = "user alice\ntopic readwrite #\n";
    let settings = Settings {
        max_inflight_messages: 1,
        ..secured(Some(&alice), Some(open_acl), false)
    };
    let mut w = World::new(settings.clone());
    w.open(1);
    w.send(1, &connect_alice_persistent("sub"));
    assert_eq!(w.take(1), vec![Out::Connack(false, 0)]);
    w.send(1, &subscribe_bytes(1, &[("home/#", QoS::AtLeastOnce)]));
    w.take(1);
    assert_eq!(w.login(2, "pub", Some("alice"), Some("a-pw")), 0);
    // One message in flight (window of 1), two queued behind it; then the subscriber goes.
    for i in 1..=3u16 {
        w.send(
            2,
            &publish("home/a", &[i as u8], QoS::AtLeastOnce, false, i),
        );
    }
    assert_eq!(w.take(1), vec![pub_out("home/a", &[1], 1, 1)]);
    w.broker.handle_connection_closed(1, None, w.now);
    // alice may still write home/#, but no longer read it.
    let write_only = "user alice\ntopic write home/#\n";
    let reloaded = Settings {
        max_inflight_messages: 1,
        ..secured(Some(&alice), Some(write_only), false)
    };
    assert!(w.reload(reloaded).is_empty());
    let dropped = w.broker.stats.publish_dropped;
    w.open(1);
    w.send(1, &connect_alice_persistent("sub"));
    // Neither the resend of the message in flight nor the queued ones go.
    assert_eq!(w.take(1), vec![Out::Connack(true, 0)]);
    assert_eq!(w.broker.stats.publish_dropped, dropped + 3);
    // With the old rights back, nothing is left to send: the drops were final.
    assert!(w.reload(settings).is_empty());
    w.send(2, &publish("home/a", b"new", QoS::AtLeastOnce, false, 9));
    assert_eq!(w.take(1), vec![pub_out("home/a", b"new", 1, 2)]);
}

#[test]
fn subscribe_the_acl_cannot_satisfy_is_granted_unless_refused_by_option() {
    let acl = "topic readwrite public/#\ntopic write private/#\n";
    for (refuse, code) in [(false, 1), (true, 0x80)] {
        let settings = Settings {
            refuse_unreadable_subscriptions: refuse,
            ..secured(None, Some(acl), true)
        };
        let mut w = World::new(settings);
        w.connect(1, "s", true);
        w.send(
            1,
            &subscribe_bytes(
                1,
                &[("private/#", QoS::AtLeastOnce), ("#", QoS::AtLeastOnce)],
            ),
        );
        assert_eq!(w.take(1), vec![Out::Suback(1, vec![code, 1])]);
        // Either way, only what the ACL lets it read reaches it.
        w.connect(2, "p", true);
        w.send(2, &publish("private/x", b"no", QoS::AtMostOnce, false, 0));
        w.send(2, &publish("public/x", b"yes", QoS::AtMostOnce, false, 0));
        assert_eq!(w.take(1), vec![pub_out("public/x", b"yes", 0, 0)]);
    }
}

// ---- Deliveries and the store across a restart ----

/// A store directory of its own, removed when the test ends.
struct StoreDir(std::path::PathBuf);

impl StoreDir {
    fn new(name: &str) -> StoreDir {
        let dir = std::env::temp_dir().join(format!("midge-broker-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        StoreDir(dir)
    }

    /// Commits `changes` as one batch, closes the store and opens it again, as a restart
    /// does: what comes back is what a restarted broker restores.
    fn commit_and_reopen(&self, changes: Vec<crate::store::Change>) -> crate::store::Snapshot {
        let open = || {
            crate::store::Store::open(&self.0, None, Duration::ZERO, Box::new(|| {}))
                .unwrap_or_else(|e| panic!("store opens: {e}"))
        };
        let (mut store, _) = open();
        store.submit(changes);
        store
            .close()
            .unwrap_or_else(|e| panic!("store closes: {e}"));
        let (store, snapshot) = open();
        store
            .close()
            .unwrap_or_else(|e| panic!("store closes: {e}"));
        snapshot
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The wall-clock time in Unix seconds, which the store keeps expiry times in.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A broker with persistence on, restored from `snapshot` (the broker of a restart).
fn restarted(snapshot: crate::store::Snapshot) -> World {
    let mut w = World::new(Settings::default());
    w.broker.restore(snapshot, w.now, unix_now());
    w
}

/// Sequence numbers of the messages the store keeps for `client`.
fn stored_messages(snapshot: &crate::store::Snapshot, client: &str) -> Vec<u64> {
    snapshot
        .sessions
        .iter()
        .filter(|s| s.session.client_id == client)
        .flat_map(|s| s.messages.iter().map(|m| m.seq))
        .collect()
}

/// Connects a persistent MQTT 5 client that accepts packets of at most `max_packet_size`
/// bytes; returns CONNACK's session present and the packets that follow it.
fn connect_small(
    w: &mut World,
    id: ConnId,
    client: &str,
    max_packet_size: Option<u32>,
) -> (bool, Vec<Packet<'static>>) {
    w.open(id);
    let props: Properties = PropertySet {
        session_expiry_interval: Some(300),
        maximum_packet_size: max_packet_size,
        ..PropertySet::default()
    }
    .into();
    w.send(id, &connect_v5(client, false, props, None));
    let mut got = take_v5(w, id);
    match got.first() {
        Some(Packet::Connack(c)) if c.code == 0 => {
            let present = c.session_present;
            (present, got.split_off(1))
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// The (packet id, topic, dup) of each PUBLISH in `packets`.
fn publishes(packets: &[Packet<'static>]) -> Vec<(u16, &'static str, bool)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.packet_id, p.topic, p.dup)),
            _ => None,
        })
        .collect()
}

#[test]
fn too_large_for_the_client_is_dropped_and_forgotten_by_the_store_mqtt_3_1_2_25() {
    let dir = StoreDir::new("too-large");
    let mut w = World::new(Settings::default());
    w.broker.enable_persistence(w.now, unix_now());
    assert!(!connect_small(&mut w, 1, "sub", Some(60)).0);
    let qos1 = SubscribeOptions::qos(QoS::AtLeastOnce);
    w.send(1, &subscribe_v5(1, "t/#", qos1, None));
    take_v5(&mut w, 1);
    w.connect(2, "pub", true);
    // More messages too large for "sub" than its in-flight window (20), among two that fit.
    let big = [7u8; 100];
    for i in 1..=25u16 {
        w.send(2, &publish("t/big", &big, QoS::AtLeastOnce, false, i));
        if i == 10 || i == 20 {
            w.send(
                2,
                &publish("t/small", b"ok", QoS::AtLeastOnce, false, 100 + i),
            );
        }
    }
    // v5:[MQTT-3.1.2-25]: the large ones are dropped for this client, the others go.
    let got = take_v5(&mut w, 1);
    let sent = publishes(&got);
    assert_eq!(
        sent.iter().map(|&(_, t, _)| t).collect::<Vec<_>>(),
        ["t/small", "t/small"]
    );
    w.send(1, &ack(Packet::Puback, sent[0].0));
    let unacked = sent[1].0;
    // The subscriber stops acknowledging: its held write is recorded.
    w.drive_until(w.now + super::hold::HOLD * 3);

    // A restart: the store holds the one message still in flight, nothing for the drops.
    let snapshot = dir.commit_and_reopen(w.broker.take_changes());
    assert_eq!(stored_messages(&snapshot, "sub").len(), 1);
    let mut w = restarted(snapshot);
    let (present, resent) = connect_small(&mut w, 1, "sub", Some(60));
    assert!(present);
    assert_eq!(publishes(&resent), [(unacked, "t/small", true)]);
    w.send(1, &ack(Packet::Puback, unacked));

    // Later QoS 1 and QoS 2 messages still flow.
    w.connect(2, "pub", true);
    w.send(2, &publish("t/after", b"1", QoS::AtLeastOnce, false, 1));
    w.send(2, &publish("t/after", b"2", QoS::ExactlyOnce, false, 2));
    let got = take_v5(&mut w, 1);
    let sent = publishes(&got);
    assert_eq!(
        sent.iter().map(|&(_, t, _)| t).collect::<Vec<_>>(),
        ["t/after", "t/after"]
    );
    // Both at QoS 1, the subscription's: each is acknowledged with PUBACK.
    assert!(got
        .iter()
        .all(|p| !matches!(p, Packet::Publish(p) if p.qos != QoS::AtLeastOnce)));
    w.send(1, &ack(Packet::Puback, sent[0].0));
    w.send(1, &ack(Packet::Puback, sent[1].0));

    // Everything was acknowledged: the store keeps no message for "sub".
    let snapshot = dir.commit_and_reopen(w.broker.take_changes());
    assert_eq!(stored_messages(&snapshot, "sub"), Vec::<u64>::new());
}

#[test]
fn in_flight_message_too_large_after_reconnect_is_dropped_and_forgotten() {
    let dir = StoreDir::new("too-large-resend");
    let mut w = World::new(Settings::default());
    w.broker.enable_persistence(w.now, unix_now());
    // No limit at first: a large message goes in flight, and is not acknowledged.
    assert!(!connect_small(&mut w, 1, "sub", None).0);
    let qos1 = SubscribeOptions::qos(QoS::AtLeastOnce);
    w.send(1, &subscribe_v5(1, "t/#", qos1, None));
    take_v5(&mut w, 1);
    w.connect(2, "pub", true);
    w.send(
        2,
        &publish("t/big", &[7u8; 100], QoS::AtLeastOnce, false, 1),
    );
    assert_eq!(publishes(&take_v5(&mut w, 1)).len(), 1);
    w.broker.handle_connection_closed(1, None, w.now);

    // It comes back accepting only small packets: the message cannot be resent, so it is
    // dropped, and its slot and its row in the store are freed.
    let (present, resent) = connect_small(&mut w, 3, "sub", Some(60));
    assert!(present);
    assert!(publishes(&resent).is_empty());
    w.send(2, &publish("t/small", b"ok", QoS::AtLeastOnce, false, 2));
    let sent = publishes(&take_v5(&mut w, 3));
    assert_eq!(
        sent.iter().map(|&(_, t, _)| t).collect::<Vec<_>>(),
        ["t/small"]
    );
    w.send(3, &ack(Packet::Puback, sent[0].0));
    let snapshot = dir.commit_and_reopen(w.broker.take_changes());
    assert_eq!(stored_messages(&snapshot, "sub"), Vec::<u64>::new());
}

// ---- QoS 2 exactly once across a crash ----

/// Reconnects persistent client `client` on `id` after a restart: session present, and what
/// the broker resends after CONNACK.
fn resume_v311(w: &mut World, id: ConnId, client: &str) -> Vec<Out> {
    w.open(id);
    w.send(id, &connect_bytes(client, false, 60, None));
    let mut got = w.take(id);
    assert_eq!(got.first(), Some(&Out::Connack(true, 0)), "session resumed");
    got.split_off(1)
}

#[test]
fn pubrel_leaves_only_once_the_store_knows_the_flow_reached_it() {
    let dir = StoreDir::new("pubrel-durable");
    let mut w = World::new(Settings::default());
    w.broker.enable_persistence(w.now, unix_now());
    w.connect(1, "sub", false);
    w.send(1, &subscribe_bytes(1, &[("t", QoS::ExactlyOnce)]));
    w.take(1);
    w.connect(2, "pub", true);
    w.send(2, &publish("t", b"once", QoS::ExactlyOnce, false, 7));
    let id = match w.take(1).as_slice() {
        [Out::Publish { id, qos: 2, .. }] => *id,
        other => panic!("expected the QoS 2 PUBLISH, got {other:?}"),
    };
    let delivered = w.broker.take_changes();

    // The subscriber's PUBREC: the PUBREL waits for the commit of the state it implies.
    w.send(1, &ack(Packet::Pubrec, id));
    assert_eq!(
        w.take(1),
        vec![],
        "no PUBREL before the store knows of the PUBREC"
    );
    let mut released = delivered.clone();
    released.extend(w.broker.take_changes());
    w.broker.seal_acks(1, 1);
    assert_eq!(w.take(1), vec![Out::Pubrel(id)]);

    // A crash before that commit: the receiver never saw a PUBREL, so the PUBLISH comes again
    // with DUP and the same id, which it takes for the message it holds.
    let mut w = restarted(dir.commit_and_reopen(delivered));
    match resume_v311(&mut w, 1, "sub").as_slice() {
        [Out::Publish {
            dup: true,
            id: again,
            ..
        }] => assert_eq!(*again, id),
        other => panic!("expected the PUBLISH again, got {other:?}"),
    }
    drop(w);

    // A crash after it: the flow resumes at PUBREL, never with the PUBLISH again.
    let dir = StoreDir::new("pubrel-durable-after");
    let mut w = restarted(dir.commit_and_reopen(released));
    assert_eq!(resume_v311(&mut w, 1, "sub"), vec![Out::Pubrel(id)]);
}

#[test]
fn pubcomp_leaves_only_once_the_store_has_forgotten_the_packet_id() {
    let dir = StoreDir::new("pubcomp-durable");
    let mut w = World::new(Settings::default());
    w.broker.enable_persistence(w.now, unix_now());
    w.connect(1, "sub", true);
    w.send(1, &subscribe_bytes(1, &[("t", QoS::AtMostOnce)]));
    w.take(1);
    w.connect(2, "pub", false);
    w.send(2, &publish("t", b"first", QoS::ExactlyOnce, false, 9));
    w.broker.seal_acks(1, 1);
    assert_eq!(w.take(2), vec![Out::Pubrec(9)]);
    assert_eq!(w.take(1).len(), 1, "delivered once");
    let received = w.broker.take_changes();

    // PUBREL: the PUBCOMP waits until the store has forgotten id 9.
    w.send(2, &ack(Packet::Pubrel, 9));
    assert_eq!(
        w.take(2),
        vec![],
        "no PUBCOMP before the id is forgotten for good"
    );
    let mut forgotten = received.clone();
    forgotten.extend(w.broker.take_changes());
    w.broker.seal_acks(2, 2);
    assert_eq!(w.take(2), vec![Out::Pubcomp(9)]);

    // After a crash past that commit, id 9 is free: the publisher's next message with it is
    // a new message, delivered.
    let mut w = restarted(dir.commit_and_reopen(forgotten));
    w.connect(1, "sub", true);
    w.send(1, &subscribe_bytes(1, &[("t", QoS::AtMostOnce)]));
    w.take(1);
    assert!(resume_v311(&mut w, 2, "pub").is_empty());
    w.send(2, &publish("t", b"second", QoS::ExactlyOnce, false, 9));
    assert_eq!(
        w.take(1).len(),
        1,
        "the next message with id 9 is delivered"
    );
}

#[test]
fn an_inbound_qos2_id_acknowledged_with_pubrec_survives_a_crash() {
    let dir = StoreDir::new("pubrec-durable");
    let mut w = World::new(Settings::default());
    w.broker.enable_persistence(w.now, unix_now());
    w.connect(1, "sub", true);
    w.send(1, &subscribe_bytes(1, &[("t", QoS::AtMostOnce)]));
    w.take(1);
    w.connect(2, "pub", false);
    w.send(2, &publish("t", b"once", QoS::ExactlyOnce, false, 5));
    assert_eq!(w.take(2), vec![], "no PUBREC before the id is stored");
    assert_eq!(w.take(1).len(), 1, "delivered");
    let stored = w.broker.take_changes();
    w.broker.seal_acks(1, 1);
    assert_eq!(w.take(2), vec![Out::Pubrec(5)]);

    // A crash before the PUBREL: the publisher sends the PUBLISH again, which is
    // acknowledged and not delivered a second time (v311:[MQTT-4.3.3-2]).
    let mut w = restarted(dir.commit_and_reopen(stored));
    w.connect(1, "sub", true);
    w.send(1, &subscribe_bytes(1, &[("t", QoS::AtMostOnce)]));
    w.take(1);
    assert!(resume_v311(&mut w, 2, "pub").is_empty());
    let mut again = publish("t", b"once", QoS::ExactlyOnce, false, 5);
    again[0] |= 0x08;
    w.send(2, &again);
    assert_eq!(w.take(1), vec![], "not delivered again");
}
