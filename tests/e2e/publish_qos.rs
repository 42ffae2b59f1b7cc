//! PUBLISH at QoS 0/1/2 in both directions with the acknowledgement flows checked byte by byte
//!: exactly-once inbound QoS 2, packet-id allocation, outgoing QoS =
//! min(publish, granted), plus happy paths with mosquitto_pub/mosquitto_sub and rumqttc.

use crate::common::*;
use std::collections::HashSet;
use std::time::Duration;

fn pair(b: &Broker, topic: &str, sub_qos: u8) -> (Raw, Raw) {
    let mut sub = Raw::mqtt_connect(b.port(), &format!("sub-{topic}"));
    sub.subscribe(1, &[(topic, sub_qos)], &[sub_qos]);
    let publ = Raw::mqtt_connect(b.port(), &format!("pub-{topic}"));
    (sub, publ)
}

// v311:[MQTT-4.3.1-1] QoS 0: no acknowledgement, delivered once as QoS 0.
/// v311:[MQTT-2.3.1-5]/[MQTT-3.3.1-2]
#[test]
fn qos0_publish_forwarded_byte_exact_mqtt_4_3_1_1() {
    let b = Broker::start("");
    let (mut sub, mut publ) = pair(&b, "q/zero", 0);
    publ.send(&publish("q/zero", b"hello", 0, false, false, 0));
    sub.expect_bytes(&publish("q/zero", b"hello", 0, false, false, 0), WAIT);
    publ.expect_silence(Duration::from_millis(200));
}

// v311:[MQTT-4.3.2-2] the receiver of a QoS 1 PUBLISH answers PUBACK with its packet id; the
// broker's own QoS 1 PUBLISH to the subscriber carries a fresh non-zero id [MQTT-2.3.1-1].
/// v311:[MQTT-2.3.1-1]/[MQTT-2.3.1-6]/[MQTT-3.3.4-1]/[MQTT-4.3.2-1]
#[test]
fn qos1_both_directions_puback_flow_mqtt_4_3_2_2() {
    let b = Broker::start("");
    let (mut sub, mut publ) = pair(&b, "q/one", 1);
    publ.send(&publish("q/one", b"payload-1", 1, false, false, 0x1234));
    publ.expect_bytes(&[0x40, 0x02, 0x12, 0x34], WAIT);
    let p = sub.expect_packet(WAIT);
    assert_ne!(p.pid(), 0, "packet id 0 is not allowed [MQTT-2.3.1-1]");
    assert_eq!(
        hex(&p.bytes),
        hex(&publish("q/one", b"payload-1", 1, false, false, p.pid()))
    );
    sub.send(&puback(p.pid()));
    sub.expect_silence(Duration::from_millis(300));
}

// v311:[MQTT-4.3.3-2] QoS 2 inbound: PUBREC, then PUBREL → PUBCOMP with the same id; outbound
// to a QoS 2 subscriber: PUBLISH, PUBREC → PUBREL (flags 0x2) → PUBCOMP.
/// v311:[MQTT-2.2.2-1]/[MQTT-2.3.1-6]
#[test]
fn qos2_both_directions_full_flow_mqtt_4_3_3_2() {
    let b = Broker::start("");
    let (mut sub, mut publ) = pair(&b, "q/two", 2);
    publ.send(&publish("q/two", b"exactly", 2, false, false, 0x0107));
    publ.expect_bytes(&[0x50, 0x02, 0x01, 0x07], WAIT);
    publ.send(&pubrel(0x0107));
    publ.expect_bytes(&[0x70, 0x02, 0x01, 0x07], WAIT);
    let p = sub.expect_packet(WAIT);
    assert_ne!(p.pid(), 0);
    assert_eq!(
        hex(&p.bytes),
        hex(&publish("q/two", b"exactly", 2, false, false, p.pid()))
    );
    sub.send(&pubrec(p.pid()));
    // [MQTT-3.6.1-1] PUBREL fixed header flags are 0010.
    sub.expect_bytes(&pubrel(p.pid()), WAIT);
    sub.send(&pubcomp(p.pid()));
    sub.expect_silence(Duration::from_millis(300));
}

// v311:[MQTT-4.3.3-2] "Method B": until PUBREL, a resent PUBLISH (DUP=1, same id) must not be
// delivered again. The subscriber gets exactly one copy.
#[test]
fn qos2_inbound_not_delivered_twice_when_resent_with_dup_mqtt_4_3_3_2() {
    let b = Broker::start("");
    let (mut sub, mut publ) = pair(&b, "q/once", 2);
    publ.send(&publish("q/once", b"only-once", 2, false, false, 42));
    publ.expect_bytes(&pubrec(42), WAIT);
    publ.send(&publish("q/once", b"only-once", 2, false, true, 42));
    publ.expect_bytes(&[0x50, 2, 0, 42], WAIT);
    if !is_mosquitto() {
        // A second resend (Mosquitto 2.0.11 wrongly calls it a protocol error).
        publ.send(&publish("q/once", b"only-once", 2, false, true, 42));
        publ.expect_bytes(&[0x50, 2, 0, 42], WAIT);
    }
    publ.send(&pubrel(42));
    publ.expect_bytes(&pubcomp(42), WAIT);
    let got = sub.collect_publishes(1, WAIT);
    assert_eq!(got[0].payload(), b"only-once");
    // Whatever arrives next must not be a second copy.
    match sub.read_packet(Duration::from_millis(700)) {
        Got::Timeout => {}
        Got::Packet(p) if p.kind() == 6 => {
            sub.send(&pubcomp(p.pid()));
            sub.expect_silence(Duration::from_millis(500));
        }
        other => panic!("second copy or error: {other:?}"),
    }
}

fn qos2_send(publ: &mut Raw, topic: &str, payload: &[u8], pid: u16) {
    publ.send(&publish(topic, payload, 2, false, false, pid));
    publ.expect_bytes(&pubrec(pid), WAIT);
    publ.send(&pubrel(pid));
    publ.expect_bytes(&pubcomp(pid), WAIT);
}

// v311:[MQTT-2.3.1-3] after PUBCOMP the packet id is free: a new PUBLISH with it is a new
// message, delivered again.
#[test]
fn qos2_inbound_packet_id_reusable_after_pubcomp_mqtt_2_3_1_3() {
    let b = Broker::start("");
    let (mut sub, mut publ) = pair(&b, "q/reuse", 2);
    qos2_send(&mut publ, "q/reuse", b"first", 42);
    qos2_send(&mut publ, "q/reuse", b"second", 42);
    let got = sub.collect_publishes(2, WAIT);
    assert_eq!(got[0].payload(), b"first");
    assert_eq!(got[1].payload(), b"second");
}

// Same as above after the first message was resent with DUP before its PUBREL.
#[test]
fn qos2_inbound_packet_id_reusable_after_dup_resend_and_pubcomp_mqtt_2_3_1_3() {
    if skip_on_mosquitto("2.0.11 calls this a protocol error and disconnects (spec wins)") {
        return;
    }
    let b = Broker::start("");
    let (mut sub, mut publ) = pair(&b, "q/reuse2", 2);
    publ.send(&publish("q/reuse2", b"first", 2, false, false, 42));
    publ.expect_bytes(&pubrec(42), WAIT);
    publ.send(&publish("q/reuse2", b"first", 2, false, true, 42));
    publ.expect_bytes(&pubrec(42), WAIT);
    publ.send(&pubrel(42));
    publ.expect_bytes(&pubcomp(42), WAIT);
    qos2_send(&mut publ, "q/reuse2", b"second", 42);
    let got = sub.collect_publishes(2, WAIT);
    assert_eq!(got[0].payload(), b"first");
    assert_eq!(got[1].payload(), b"second");
}

// v311:[MQTT-3.3.1-3] the DUP flag of an incoming PUBLISH is not propagated to subscribers.
#[test]
fn incoming_dup_flag_not_propagated_mqtt_3_3_1_3() {
    let b = Broker::start("");
    let (mut sub, mut publ) = pair(&b, "q/dup", 1);
    publ.send(&publish("q/dup", b"d", 1, false, true, 5));
    publ.expect_bytes(&puback(5), WAIT);
    let p = sub.expect_packet(WAIT);
    assert!(!p.dup(), "DUP propagated: {p:?}");
    assert_eq!(p.flags(), 0x02);
}

// v311:[MQTT-3.8.4-6] messages are delivered at min(publish QoS, granted QoS). Every pair.
#[test]
fn outgoing_qos_is_min_of_publish_and_granted_mqtt_3_8_4_6() {
    let b = Broker::start("");
    let mut publ = Raw::mqtt_connect(b.port(), "minq-pub");
    let mut subs: Vec<Raw> = (0..3u8)
        .map(|g| {
            let mut s = Raw::mqtt_connect(b.port(), &format!("minq-sub{g}"));
            s.subscribe(1, &[(&format!("minq/{g}"), g)], &[g]);
            s
        })
        .collect();
    let mut pid = 1u16;
    for (g, sub) in subs.iter_mut().enumerate() {
        for q in 0..3u8 {
            let topic = format!("minq/{g}");
            publ.send(&publish(&topic, &[q], q, false, false, pid));
            match q {
                1 => publ.expect_bytes(&puback(pid), WAIT),
                2 => {
                    publ.expect_bytes(&pubrec(pid), WAIT);
                    publ.send(&pubrel(pid));
                    publ.expect_bytes(&pubcomp(pid), WAIT);
                }
                _ => {}
            }
            pid += 1;
            let got = sub.collect_publishes(1, WAIT);
            assert_eq!(got[0].payload(), [q]);
            assert_eq!(
                got[0].qos(),
                q.min(g as u8),
                "publish qos {q} to granted {g} arrived as qos {}",
                got[0].qos()
            );
        }
    }
}

// v311:[MQTT-2.3.1-2]/[MQTT-2.3.1-3] a packet id is not reused while its flow is unfinished.
/// v311:[MQTT-2.3.1-4]
#[test]
fn outgoing_packet_ids_never_reused_while_in_flight_mqtt_2_3_1_2() {
    let b = Broker::start("max_inflight_messages 10");
    let (mut sub, mut publ) = pair(&b, "q/ids", 1);
    let send = |publ: &mut Raw, from: u16, n: u16| {
        for i in from..from + n {
            publ.send(&publish("q/ids", &i.to_be_bytes(), 1, false, false, i));
            publ.expect_bytes(&puback(i), WAIT);
        }
    };
    send(&mut publ, 1, 10);
    let first: Vec<Pkt> = (0..10).map(|_| sub.expect_packet(WAIT)).collect();
    let mut unacked: HashSet<u16> = first.iter().map(|p| p.pid()).collect();
    assert_eq!(unacked.len(), 10, "ids not distinct: {first:?}");
    assert!(!unacked.contains(&0));
    // Ack the first five only; the other five stay in flight.
    for p in &first[..5] {
        sub.send(&puback(p.pid()));
        unacked.remove(&p.pid());
    }
    send(&mut publ, 11, 10);
    for _ in 0..5 {
        let p = sub.expect_packet(WAIT);
        assert_eq!(p.kind(), 3);
        assert!(!p.dup());
        assert!(
            unacked.insert(p.pid()),
            "packet id {} reused while still in flight",
            p.pid()
        );
    }
    // Ack everything; the remaining five arrive, again with ids not in flight.
    let all: Vec<u16> = unacked.drain().collect();
    for id in all {
        sub.send(&puback(id));
    }
    let rest = sub.collect_publishes(5, WAIT);
    let payloads: Vec<u16> = rest
        .iter()
        .map(|p| u16::from_be_bytes([p.payload()[0], p.payload()[1]]))
        .collect();
    assert_eq!(payloads, vec![16, 17, 18, 19, 20]);
}

// v311:[MQTT-4.3.3-1] the QoS 2 sender keeps the id until PUBCOMP: an id whose PUBREL is
// unanswered is not given to a new message.
#[test]
fn qos2_outgoing_id_held_until_pubcomp_mqtt_4_3_3_1() {
    let b = Broker::start("");
    let (mut sub, mut publ) = pair(&b, "q/held", 2);
    publ.send(&publish("q/held", b"first", 0, false, false, 0));
    let p = sub.expect_packet(WAIT);
    assert_eq!(p.qos(), 0);
    publ.send(&publish("q/held", b"x", 2, false, false, 1));
    publ.expect_bytes(&pubrec(1), WAIT);
    publ.send(&pubrel(1));
    publ.expect_bytes(&pubcomp(1), WAIT);
    let p = sub.expect_packet(WAIT);
    let held = p.pid();
    sub.send(&pubrec(held));
    sub.expect_bytes(&pubrel(held), WAIT);
    // No PUBCOMP: `held` stays in use.
    for i in 2..8u16 {
        publ.send(&publish("q/held", b"y", 2, false, false, i));
        publ.expect_bytes(&pubrec(i), WAIT);
        publ.send(&pubrel(i));
        publ.expect_bytes(&pubcomp(i), WAIT);
        let p = sub.expect_packet(WAIT);
        assert_eq!(p.kind(), 3);
        assert_ne!(p.pid(), held, "id {held} reused before PUBCOMP");
        sub.send(&pubrec(p.pid()));
        sub.expect_bytes(&pubrel(p.pid()), WAIT);
        sub.send(&pubcomp(p.pid()));
    }
}

// A 100 KB payload crosses intact.
#[test]
fn large_payload_delivered_intact() {
    let b = Broker::start("");
    let (mut sub, mut publ) = pair(&b, "q/large", 1);
    let mut payload = vec![0u8; 100_000];
    Rng::new(7).fill(&mut payload);
    publ.send(&publish("q/large", &payload, 1, false, false, 3));
    publ.expect_bytes(&puback(3), Duration::from_secs(10));
    let p = sub.collect_publishes(1, Duration::from_secs(10));
    assert_eq!(p[0].payload(), &payload[..]);
}

// mosquitto_pub → mosquitto_sub at each QoS (Debian's clients).
/// v311:[MQTT-7.0.0-2]/[MQTT-7.1.1-1]
#[test]
fn mosquitto_pub_to_mosquitto_sub_each_qos() {
    let b = Broker::start("");
    for q in ["0", "1", "2"] {
        let id = format!("msub-{q}");
        let topic = format!("m/clients/{q}");
        let sub = Sub::spawn(
            b.port(),
            10,
            &["-i", &id, "-t", &topic, "-q", q, "-C", "3", "-v"],
        );
        assert!(
            b.wait_for_log(&format!(" as {id} ("), WAIT),
            "mosquitto_sub did not connect"
        );
        std::thread::sleep(Duration::from_millis(300));
        for i in 0..3 {
            mosquitto_pub(
                b.port(),
                &["-t", &topic, "-q", q, "-m", &format!("msg-{i}")],
            );
        }
        let (lines, st) = sub.finish(Duration::from_secs(10));
        assert_eq!(
            lines,
            (0..3)
                .map(|i| format!("{topic} msg-{i}"))
                .collect::<Vec<_>>()
        );
        assert!(
            st.is_some_and(|s| s.success()),
            "mosquitto_sub status {st:?}"
        );
    }
}

// rumqttc → rumqttc at QoS 2 (the client library drives the flows).
#[test]
fn rumqttc_qos2_round_trip() {
    let b = Broker::start("");
    let sub = Mq::connect(b.port(), "rq-sub");
    sub.subscribe("rq/+", 2);
    let publ = Mq::connect(b.port(), "rq-pub");
    for i in 0..10u8 {
        publ.publish("rq/x", 2, false, &[i]);
    }
    for i in 0..10u8 {
        let p = sub.next_publish(WAIT).expect("message lost");
        assert_eq!(p.topic, "rq/x");
        assert_eq!(&p.payload[..], &[i]);
        assert_eq!(p.qos, rumqttc::QoS::ExactlyOnce);
    }
}

/// A subscriber that answers a message with an acknowledgement of the wrong kind for it
/// (PUBREC for QoS 1, PUBACK for QoS 2, PUBCOMP before PUBREL) breaks the protocol, as
/// Mosquitto has it: an MQTT 5 client gets DISCONNECT 0x82, a 3.1.1 client is closed. An
/// acknowledgement for an id not in flight is ignored.
#[test]
fn acknowledgement_of_the_wrong_kind_is_a_protocol_error() {
    let b = Broker::start("");
    type Ack = fn(u16) -> Vec<u8>;
    let cases: [(&str, u8, Ack); 3] = [
        ("pubrec-for-qos1", 1, pubrec),
        ("puback-for-qos2", 2, puback),
        ("pubcomp-before-pubrel", 2, pubcomp),
    ];
    for (v5, (name, q, wrong)) in [false, true]
        .into_iter()
        .flat_map(|v5| cases.map(|c| (v5, c)))
    {
        let topic = format!("wrong-ack/{name}/{v5}");
        let mut sub = if v5 {
            crate::common::v5::connect5(b.port(), &format!("s5-{name}"))
        } else {
            Raw::mqtt_connect(b.port(), &format!("s-{name}"))
        };
        if v5 {
            crate::common::v5::sub5(&mut sub, 1, &topic, q, None, q);
        } else {
            sub.subscribe(1, &[(&topic, q)], &[q]);
        }
        // Ignored, no message has this id (a PUBREC still gets its PUBREL).
        sub.send(&wrong(999));
        mosquitto_pub(b.port(), &["-t", &topic, "-q", &q.to_string(), "-m", "x"]);
        let mut p = sub.expect_packet(WAIT);
        if p.kind() == 6 {
            assert_eq!(p.pid(), 999, "{name}: {p:?}");
            p = sub.expect_packet(WAIT);
        }
        assert_eq!((p.kind(), p.qos()), (3, q), "{name}: {p:?}");
        sub.send(&wrong(p.pid()));
        if v5 && !is_mosquitto() {
            // DISCONNECT 0x82 with no properties, as Mosquitto 2.0.20 writes it (Debian's
            // 2.0.11 closes without one).
            sub.expect_bytes(&[0xe0, 0x01, 0x82], WAIT);
            sub.expect_closed(WAIT);
        } else if v5 {
            sub.expect_closed(WAIT);
        } else {
            let seen = sub.expect_closed(WAIT);
            assert!(seen.is_empty(), "{name}: {seen:?}");
        }
    }
}
