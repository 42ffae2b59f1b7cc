//! Bad input: each offending client is disconnected (with a log line when it
//! had an id), never a panic, and a second healthy client is still served afterwards.

use crate::common::*;
use std::time::Duration;

/// Sends `bytes` on a fresh connection (after a CONNECT with `id` when given), expects the broker
/// to close it, then checks the broker still serves others and is alive.
fn dropped(b: &mut Broker, id: Option<&str>, bytes: &[u8]) {
    let mut c = match id {
        Some(id) => Raw::mqtt_connect(b.port(), id),
        None => Raw::connect(b.port()),
    };
    c.send(bytes);
    let seen = c.expect_closed(WAIT);
    if let Some(id) = id {
        assert!(
            seen.iter()
                .all(|p| p.kind() == 3 || p.kind() == 13 || p.kind() == 9),
            "unexpected answer {seen:?}"
        );
        // Some line about this client other than its connect line (Mosquitto: "Client ID
        // disconnected due to ...", or "Bad socket read/write on client ID").
        let line = b.wait_for_log_where(WAIT, |l| {
            l.contains(&format!(" {id}")) && !l.contains("New client connected")
        });
        assert!(
            line.is_some(),
            "no log line about {id}; logs:\n{}",
            b.logs().join("\n")
        );
    }
    b.assert_serves();
}

// v311:[MQTT-3.1.0-1] the first packet must be CONNECT.
#[test]
fn first_packet_not_connect_mqtt_3_1_0_1() {
    let mut b = Broker::start("");
    dropped(&mut b, None, &publish("t", b"x", 0, false, false, 0));
    dropped(&mut b, None, &PINGREQ);
    dropped(&mut b, None, &subscribe(1, &[("t", 0)]));
}

// v311:[MQTT-3.1.0-2] a second CONNECT is a protocol violation.
#[test]
fn second_connect_mqtt_3_1_0_2() {
    let mut b = Broker::start("");
    dropped(&mut b, Some("twice"), &Connect::v311("twice").bytes());
}

// v311:[MQTT-3.8.1-1] SUBSCRIBE fixed-header flags must be 0010.
/// v311:[MQTT-2.2.2-2]/[MQTT-4.8.0-1]
#[test]
fn subscribe_reserved_flags_mqtt_3_8_1_1() {
    let mut b = Broker::start("");
    let mut p = subscribe(1, &[("t", 0)]);
    p[0] = 0x80;
    dropped(&mut b, Some("sub-flags"), &p);
}

// v311:[MQTT-3.6.1-1] PUBREL fixed-header flags must be 0010.
/// v311:[MQTT-2.2.2-2]
#[test]
fn pubrel_reserved_flags_mqtt_3_6_1_1() {
    let mut b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "pubrel-flags");
    c.send(&publish("t", b"x", 2, false, false, 1));
    c.expect_bytes(&pubrec(1), WAIT);
    c.send(&[0x60, 2, 0, 1]);
    c.expect_closed(WAIT);
    b.assert_serves();
}

// v311:[MQTT-3.10.1-1] UNSUBSCRIBE flags must be 0010.
/// v311:[MQTT-2.2.2-2]
#[test]
fn unsubscribe_reserved_flags_mqtt_3_10_1_1() {
    let mut b = Broker::start("");
    let mut p = unsubscribe(1, &["t"]);
    p[0] = 0xa0;
    dropped(&mut b, Some("unsub-flags"), &p);
}

// v311 §2.2.3: the remaining length is at most four bytes; a fifth continuation byte is
// malformed.
#[test]
fn remaining_length_with_five_bytes_mqtt_2_2_3() {
    let mut b = Broker::start("");
    dropped(
        &mut b,
        Some("len5"),
        &[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f, 0, 1, b't'],
    );
    // Also as the very first packet.
    dropped(&mut b, None, &[0x10, 0x80, 0x80, 0x80, 0x80, 0x01]);
}

// `max_packet_size 1000`: a larger inbound packet disconnects (Mosquitto: all versions).
#[test]
fn packet_over_max_packet_size() {
    let mut b = Broker::start("max_packet_size 1000");
    // A packet just under the limit is fine.
    let mut ok = Raw::mqtt_connect(b.port(), "small-enough");
    ok.send(&publish("t", &[b'a'; 900], 1, false, false, 1));
    ok.expect_bytes(&puback(1), WAIT);
    dropped(
        &mut b,
        Some("too-big"),
        &publish("t", &[b'a'; 1100], 0, false, false, 0),
    );
    // The limit is known from the fixed header: the body need not even arrive.
    let mut head = vec![0x30];
    encode_len(1_000_000, &mut head);
    dropped(&mut b, Some("too-big-header"), &head);
}

// v311:[MQTT-1.5.3-1] ill-formed UTF-8 in a topic name → close.
/// v311:[MQTT-3.3.2-1]
#[test]
fn invalid_utf8_topic_mqtt_1_5_3_1() {
    let mut b = Broker::start("");
    dropped(
        &mut b,
        Some("bad-utf8"),
        &publish_raw_topic(&[b'a', 0xc3, 0x28], b"x", 0, false, false, 0),
    );
    dropped(
        &mut b,
        Some("surrogate"),
        &publish_raw_topic(&[0xed, 0xa0, 0x80], b"x", 0, false, false, 0),
    );
}

// v311:[MQTT-1.5.3-2] U+0000 in a topic name → close.
/// v311:[MQTT-4.7.3-2]
#[test]
fn nul_in_topic_mqtt_1_5_3_2() {
    let mut b = Broker::start("");
    dropped(
        &mut b,
        Some("nul-topic"),
        &publish_raw_topic(b"a\0b", b"x", 0, false, false, 0),
    );
}

// v311:[MQTT-3.3.2-2] a PUBLISH topic name must not contain wildcards.
/// v311:[MQTT-4.7.1-1]
#[test]
fn wildcard_in_publish_topic_mqtt_3_3_2_2() {
    let mut b = Broker::start("");
    dropped(
        &mut b,
        Some("pub-plus"),
        &publish("a/+/b", b"x", 0, false, false, 0),
    );
    dropped(
        &mut b,
        Some("pub-hash"),
        &publish("a/#", b"x", 1, false, false, 1),
    );
}

// v311:[MQTT-4.7.3-1] a zero-length topic name → close.
#[test]
fn empty_publish_topic_mqtt_4_7_3_1() {
    let mut b = Broker::start("");
    dropped(
        &mut b,
        Some("empty-topic"),
        &publish("", b"x", 0, false, false, 0),
    );
}

// v311:[MQTT-3.3.1-4] QoS 3 (both QoS bits set) → close.
#[test]
fn publish_qos3_mqtt_3_3_1_4() {
    let mut b = Broker::start("");
    let mut p = publish("t", b"x", 1, false, false, 1);
    p[0] |= 0x06;
    dropped(&mut b, Some("qos3"), &p);
}

// v311:[MQTT-3-8.3-4] SUBSCRIBE requesting QoS 3 / reserved bits → close; [MQTT-3.8.3-3] a
// SUBSCRIBE without any filter → close.
/// v311:[MQTT-3.8.3-4]
#[test]
fn subscribe_bad_qos_or_empty_mqtt_3_8_3_3() {
    let mut b = Broker::start("");
    dropped(&mut b, Some("sub-qos3"), &subscribe(1, &[("t", 3)]));
    dropped(&mut b, Some("sub-empty"), &packet(0x82, &[0, 1]));
}

// v311:[MQTT-3.10.3-2] an UNSUBSCRIBE without any filter → close.
#[test]
fn unsubscribe_empty_mqtt_3_10_3_2() {
    let mut b = Broker::start("");
    dropped(&mut b, Some("unsub-empty"), &packet(0xa2, &[0, 1]));
}

// Packet id 0 in a QoS 1 PUBLISH is invalid [MQTT-2.3.1-1].
#[test]
fn publish_with_packet_id_zero_mqtt_2_3_1_1() {
    let mut b = Broker::start("");
    dropped(
        &mut b,
        Some("pid-zero"),
        &publish("t", b"x", 1, false, false, 0),
    );
}

// `retain_available false`: a client sending a retained PUBLISH is disconnected (Mosquitto).
#[test]
fn retain_when_retain_unavailable_disconnects() {
    let mut b = Broker::start("retain_available false");
    dropped(
        &mut b,
        Some("no-retain"),
        &publish("t", b"x", 0, true, false, 0),
    );
}

// A packet cut short, then the socket closed: the broker forgets the partial packet.
#[test]
fn truncated_packet_then_close() {
    let mut b = Broker::start("");
    let full = publish("trunc/t", &[b'q'; 200], 1, false, false, 1);
    let mut c = Raw::mqtt_connect(b.port(), "truncated");
    c.send(&full[..50]);
    std::thread::sleep(Duration::from_millis(100));
    c.shutdown_write();
    c.expect_closed(WAIT);
    b.assert_serves();
    // Same with a CONNECT cut short as the first packet.
    let mut c = Raw::connect(b.port());
    c.send(&Connect::v311("cut").bytes()[..7]);
    c.shutdown_write();
    c.expect_closed(WAIT);
    b.assert_serves();
}

/// Random bytes either break the framing (the broker closes) or happen to announce a packet
/// longer than what was sent (the broker rightly waits for the rest): then our FIN must make it
/// close.
fn closed_or_waiting(c: &mut Raw, seed: u64) {
    if !c.closes_within(Duration::from_secs(2)) {
        c.shutdown_write();
        assert!(c.closes_within(WAIT), "seed {seed}: still open after FIN");
    }
}

// 64 KB of seeded pseudo-random bytes, first as the opening bytes, then after a valid CONNECT.
#[test]
fn random_bytes_64k_seeded() {
    let mut b = Broker::start("");
    for seed in [1u64, 2, 3] {
        let mut junk = vec![0u8; 64 * 1024];
        Rng::new(seed).fill(&mut junk);
        let mut c = Raw::connect(b.port());
        c.send(&junk);
        closed_or_waiting(&mut c, seed);
        b.assert_serves();

        let mut c = Raw::mqtt_connect(b.port(), &format!("junk-{seed}"));
        c.send(&junk);
        closed_or_waiting(&mut c, seed);
        b.assert_serves();
    }
}

// Many clients misbehaving at once do not disturb a client in the middle of a QoS 2 flow.
#[test]
fn healthy_client_unaffected_by_concurrent_garbage() {
    let mut b = Broker::start("");
    let mut sub = Raw::mqtt_connect(b.port(), "calm-sub");
    sub.subscribe(1, &[("calm/t", 2)], &[2]);
    let mut publ = Raw::mqtt_connect(b.port(), "calm-pub");
    publ.send(&publish("calm/t", b"steady", 2, false, false, 1));
    publ.expect_bytes(&pubrec(1), WAIT);
    let port = b.port();
    let vandals: Vec<_> = (0..8u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut junk = vec![0u8; 8192];
                Rng::new(100 + i).fill(&mut junk);
                let mut c = Raw::connect(port);
                c.send(&junk);
                c.closes_within(WAIT)
            })
        })
        .collect();
    for v in vandals {
        assert!(v.join().unwrap(), "a garbage connection stayed open");
    }
    publ.send(&pubrel(1));
    publ.expect_bytes(&pubcomp(1), WAIT);
    let p = sub.collect_publishes(1, WAIT);
    assert_eq!(p[0].payload(), b"steady");
    b.assert_serves();
}
