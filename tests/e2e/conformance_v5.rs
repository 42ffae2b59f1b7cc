//! MQTT 5.0 conformance: end-to-end tests for normative statements of the 5.0
//! specification that no other test covered, one statement (or a few related ones) per test.
//! Each names its statement in the test name (`v5_..._mqtt_x_x_x_y`) and cites every statement
//! it checks in a doc comment (`v5:[MQTT-x.x.x-y]`), which `scripts/conformance-check.py`
//! reads; the table is `docs/conformance.md`.

use crate::common::v5::*;
use crate::common::*;
use std::time::{Duration, Instant};

const SHORT: Duration = Duration::from_millis(400);

/// A retained QoS 0 message from a short-lived v5 client; returns once the broker has it.
fn retain5(b: &Broker, id: &str, topic: &str, payload: &[u8]) {
    let mut p = connect5(b.port(), id);
    p.send(&publish5(topic, payload, 0, true, 0, &Props::new()));
    p.send(&PINGREQ);
    p.expect_bytes(&PINGRESP, WAIT);
    p.send(&disconnect5(0, &Props::new()));
    p.expect_closed(WAIT);
}

/// A v5 subscriber on `filter` with options `o` (SUBACK checked to grant `o & 3`).
fn sub(b: &Broker, id: &str, filter: &str, o: u8) -> Raw {
    let mut s = connect5(b.port(), id);
    sub5(&mut s, 1, filter, o, None, o & 3);
    s
}

// ---------------------------------------------------------------------------------------------
// CONNECT / CONNACK

/// v5:[MQTT-3.2.0-1] the CONNACK (0x00) is the first packet the server sends;
/// v5:[MQTT-3.1.4-5] an accepted CONNECT is acknowledged with reason 0x00;
/// v5:[MQTT-3.2.2-1] the reserved acknowledge flags are 0;
/// v5:[MQTT-3.2.2-2] with Clean Start 1, Session Present is 0;
/// v5:[MQTT-3.2.2-8] the reason code is a CONNACK reason code.
/// v5:[MQTT-3.12.4-1] PINGREQ → PINGRESP; v5:[MQTT-4.2.0-1] over TCP;
/// v5:[MQTT-4.12.0-6] no Authentication Method in CONNECT → none in CONNACK.
#[test]
fn v5_connack_first_success_and_clean_mqtt_3_2_0_1() {
    let b = Broker::start("");
    let mut r = Raw::connect(b.port());
    let mut bytes = Connect::v5("first5").bytes();
    bytes.extend_from_slice(&PINGREQ);
    r.send(&bytes);
    let p = r.expect_packet(WAIT);
    assert_eq!(p.kind(), 2, "first packet {p:?}");
    assert_eq!(p.body()[0], 0, "acknowledge flags: {p:?}");
    let ca = parse_connack(&p);
    assert_eq!((ca.rc, ca.session_present), (0, false), "{ca:?}");
    assert!(!ca.props.has(id::AUTH_METHOD), "{ca:?}");
    r.expect_bytes(&PINGRESP, WAIT);
}

/// v5:[MQTT-3.1.0-1] a first packet that is not CONNECT closes the connection;
/// v5:[MQTT-3.14.0-1] without a DISCONNECT, since no CONNACK was sent.
#[test]
fn v5_first_packet_not_connect_closed_silently_mqtt_3_1_0_1() {
    let b = Broker::start("");
    for first in [
        PINGREQ.to_vec(),
        publish5("t", b"x", 0, false, 0, &Props::new()),
    ] {
        let mut r = Raw::connect(b.port());
        r.send(&first);
        let seen = r.expect_closed(WAIT);
        assert!(seen.is_empty(), "packets before close: {seen:?}");
    }
}

/// v5:[MQTT-3.1.0-2] a second CONNECT is a Protocol Error (DISCONNECT 0x82 and close);
/// v5:[MQTT-3.2.0-2] it is never answered with a second CONNACK.
#[test]
fn v5_second_connect_protocol_error_no_second_connack_mqtt_3_1_0_2() {
    let b = Broker::start("");
    let mut r = connect5(b.port(), "twice5");
    r.send(&Connect::v5("twice5").bytes());
    let seen = r.expect_closed(WAIT);
    assert!(
        seen.iter().all(|p| p.kind() != 2),
        "second CONNACK: {seen:?}"
    );
    let d = seen.iter().find(|p| p.kind() == 14).expect("DISCONNECT");
    assert_eq!(parse_ack(d).rc, 0x82, "{d:?}");
}

/// v5:[MQTT-3.1.2-3] the reserved CONNECT flag must be 0; v5:[MQTT-3.1.4-1] a CONNECT that
/// does not match the format is refused (CONNACK 0x81 or a plain close), never accepted.
#[test]
fn v5_reserved_connect_flag_refused_mqtt_3_1_2_3() {
    let b = Broker::start("");
    let mut bytes = Connect::v5("reserved5").bytes();
    // Fixed header (2) + protocol name (6) + level (1): the flags byte.
    bytes[9] |= 0x01;
    let mut r = Raw::connect(b.port());
    r.send(&bytes);
    let seen = r.expect_closed(WAIT);
    for p in &seen {
        assert!(p.kind() == 2 && parse_connack(p).rc >= 0x80, "{seen:?}");
    }
}

/// v5:[MQTT-3.1.4-6] after a refused CONNECT nothing else is processed: the retained PUBLISH
/// sent in the same write is not stored; v5:[MQTT-3.2.2-6] the refusing CONNACK has Session
/// Present 0; v5:[MQTT-3.2.2-7] and the connection is closed.
/// v5:[MQTT-4.13.2-1] a reason code of 0x80 or more is followed by the close.
#[test]
fn v5_data_after_refused_connect_not_processed_mqtt_3_1_4_6() {
    let b = Broker::start("");
    let c = Connect::v5("refused5").props(Props::new().str(id::AUTH_METHOD, "NO-SUCH-METHOD"));
    let mut bytes = c.bytes();
    bytes.extend_from_slice(&publish5("refused5/t", b"x", 0, true, 0, &Props::new()));
    let mut r = Raw::connect(b.port());
    r.send(&bytes);
    let p = r.expect_packet(WAIT);
    let ca = parse_connack(&p);
    assert!(ca.rc >= 0x80 && !ca.session_present, "{ca:?}");
    r.expect_closed(WAIT);
    let mut s = connect5(b.port(), "refused5-check");
    sub5(&mut s, 1, "refused5/t", 0, None, 0);
    quiet5(&mut s, SHORT);
}

/// v5:[MQTT-3.2.2-12] a will at a QoS above the server's Maximum QoS refuses the connection
/// (CONNACK 0x9B QoS not supported, then close).
#[test]
fn v5_will_qos_above_maximum_qos_refused_0x9b_mqtt_3_2_2_12() {
    let b = Broker::start("max_qos 1");
    let c = Connect::v5("will-q2").will("will/q2", b"w", 2, false);
    expect_connect_refused(b.port(), &c.bytes(), 0x9b);
}

/// v5:[MQTT-3.2.2-13] a retained will when retained messages are not supported refuses the
/// connection: CONNACK 0x9A (Retain not supported), then close.
#[test]
fn v5_will_retain_unsupported_refused_0x9a_mqtt_3_2_2_13() {
    let b = Broker::start("retain_available false");
    let c = Connect::v5("will-ret").will("will/ret", b"w", 0, true);
    expect_connect_refused(b.port(), &c.bytes(), 0x9a);
}

/// v5:[MQTT-3.2.2-9] a server limited to QoS 1 says so in CONNACK (Maximum QoS 1).
#[test]
fn v5_connack_announces_maximum_qos_mqtt_3_2_2_9() {
    let b = Broker::start("max_qos 1");
    let (_r, ca) = connect5_with(b.port(), &Connect::v5("maxqos"));
    assert_eq!(ca.props.int(id::MAXIMUM_QOS), Some(1), "{ca:?}");
}

/// v5:[MQTT-3.2.2-10] a server limited to QoS 1 still accepts SUBSCRIBEs asking QoS 0, 1 and 2
/// (granting at most 1).
#[test]
fn v5_max_qos_server_accepts_subscribe_at_every_qos_mqtt_3_2_2_10() {
    let b = Broker::start("max_qos 1");
    let mut r = connect5(b.port(), "maxqos-sub");
    r.send(&subscribe5(
        3,
        &Props::new(),
        &[("mq/0", 0), ("mq/1", 1), ("mq/2", 2)],
    ));
    let sa = parse_suback(&expect_kind(&mut r, 9, WAIT));
    assert_eq!((sa.pid, sa.codes), (3, vec![0, 1, 1]));
}

/// v5:[MQTT-3.2.2-22] without a Server Keep Alive in CONNACK the client's Keep Alive is the
/// one enforced: Keep Alive 2 → closed (DISCONNECT 0x8D) after about 3 s, not before.
#[test]
fn v5_client_keep_alive_used_without_server_keep_alive_mqtt_3_2_2_22() {
    let b = Broker::start("");
    let (mut r, ca) = connect5_with(b.port(), &Connect::v5("ka2").keepalive(2));
    assert!(!ca.props.has(id::SERVER_KEEP_ALIVE), "{ca:?}");
    let t0 = Instant::now();
    expect_disconnect(&mut r, 0x8d, Duration::from_secs(8));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

/// v5:[MQTT-3.1.2-5] Clean Start 0 with an existing session resumes it (the QoS 1 message
/// queued while away is delivered); v5:[MQTT-3.1.2-6] Clean Start 0 without one creates a
/// new session (Session Present 0, subscriptions made then are kept); v5:[MQTT-3.1.4-4].
#[test]
fn v5_clean_start_0_resumes_or_creates_session_mqtt_3_1_2_5() {
    let b = Broker::start("");
    let c = Connect::v5("resume5").clean(false).session_expiry(60);
    let (mut r, ca) = connect5_with(b.port(), &c);
    assert!(!ca.session_present, "{ca:?}");
    sub5(&mut r, 1, "resume5/t", 1, None, 1);
    r.send(&disconnect5(0, &Props::new()));
    r.expect_closed(WAIT);
    let mut p = connect5(b.port(), "resume5-pub");
    pub5_qos1(&mut p, "resume5/t", b"queued", 1, &Props::new());
    let (mut r, ca) = connect5_with(b.port(), &c);
    assert!(ca.session_present, "{ca:?}");
    let m = collect5(&mut r, 1, WAIT);
    assert_eq!(m[0].payload, b"queued");
}

/// v5:[MQTT-3.1.2-7] a will is stored with the session and, v5:[MQTT-3.1.2-8], published when
/// the connection closes without DISCONNECT 0x00; v5:[MQTT-3.1.2-14] Will Retain 0 → live
/// subscribers get it with RETAIN 0 and nothing is stored; v5:[MQTT-3.1.2-15] Will Retain 1 →
/// stored as the topic's retained message.
#[test]
fn v5_will_published_retained_as_flagged_mqtt_3_1_2_8() {
    let b = Broker::start("");
    let mut m = sub(&b, "will5-mon", "will5/#", 0);
    for (cid, topic, retain) in [("wp5", "will5/plain", false), ("wk5", "will5/kept", true)] {
        let c = Connect::v5(cid).will(topic, b"gone", 0, retain);
        let (r, _) = connect5_with(b.port(), &c);
        drop(r);
        let w = next_pub5(&mut m, WAIT);
        assert_eq!((w.topic.as_str(), w.retain), (topic, false), "{w:?}");
    }
    let mut late = connect5(b.port(), "will5-late");
    sub5(&mut late, 1, "will5/#", 0, None, 0);
    let r = next_pub5(&mut late, WAIT);
    assert_eq!((r.topic.as_str(), r.retain), ("will5/kept", true), "{r:?}");
    quiet5(&mut late, SHORT);
}

/// v5:[MQTT-3.14.4-3] DISCONNECT 0x00 discards the will.
#[test]
fn v5_normal_disconnect_discards_will_mqtt_3_14_4_3() {
    let b = Broker::start("");
    let mut m = sub(&b, "nd-mon", "nd/will", 0);
    let c = Connect::v5("nd").will("nd/will", b"w", 0, false);
    let (mut r, _) = connect5_with(b.port(), &c);
    r.send(&disconnect5(0, &Props::new()));
    r.expect_closed(WAIT);
    quiet5(&mut m, Duration::from_millis(600));
}

/// v5:[MQTT-3.1.3-5] Client Identifiers of 1 to 23 bytes of [0-9a-zA-Z] are accepted;
/// v5:[MQTT-3.1.3-2] the id names the session (a resume with the same id finds it).
#[test]
fn v5_alphanumeric_client_ids_accepted_mqtt_3_1_3_5() {
    let b = Broker::start("");
    for cid in ["a", "0123456789abcdefghijklm", "ABCDEFGHIJKLMNOPQRSTUVW"] {
        let c = Connect::v5(cid).clean(false).session_expiry(30);
        let (mut r, ca) = connect5_with(b.port(), &c);
        assert!(!ca.session_present, "{cid}: {ca:?}");
        r.send(&disconnect5(0, &Props::new()));
        r.expect_closed(WAIT);
        let (_r, ca) = connect5_with(b.port(), &c);
        assert!(ca.session_present, "{cid}: {ca:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed packets and protocol errors

/// v5:[MQTT-1.5.4-2] U+0000 in a topic is a Malformed Packet (DISCONNECT 0x81, close);
/// v5:[MQTT-4.7.3-2] topics must not contain it.
/// v5:[MQTT-3.3.2-1] the topic must be a UTF-8 Encoded String (which excludes U+0000).
#[test]
fn v5_nul_in_topic_malformed_0x81_mqtt_1_5_4_2() {
    let b = Broker::start("");
    let mut r = connect5(b.port(), "nul5");
    r.send(&publish5("a\0b", b"x", 0, false, 0, &Props::new()));
    expect_error_disconnect(&mut r, 0x81);
}

/// v5:[MQTT-3.3.1-4] a PUBLISH with both QoS bits set is malformed (0x81).
#[test]
fn v5_publish_qos_3_malformed_mqtt_3_3_1_4() {
    let b = Broker::start("");
    let mut r = connect5(b.port(), "qos3-5");
    let mut p = publish5("t", b"x", 1, false, 1, &Props::new());
    p[0] |= 0x06;
    r.send(&p);
    expect_error_disconnect(&mut r, 0x81);
}

/// v5:[MQTT-2.1.3-1] reserved fixed-header flags must have their listed values; wrong ones
/// are malformed: v5:[MQTT-3.8.1-1] SUBSCRIBE, v5:[MQTT-3.10.1-1] UNSUBSCRIBE,
/// v5:[MQTT-3.6.1-1] PUBREL, v5:[MQTT-3.15.1-1] AUTH, each → DISCONNECT 0x81 and close.
/// v5:[MQTT-4.13.1-1] a Malformed Packet closes the connection.
#[test]
fn v5_reserved_fixed_header_flags_malformed_mqtt_2_1_3_1() {
    let b = Broker::start("");
    let mut bad_sub = subscribe5(1, &Props::new(), &[("t", 0)]);
    bad_sub[0] = 0x80;
    let mut bad_unsub = unsubscribe5(1, &["t"]);
    bad_unsub[0] = 0xa0;
    let bad_auth = vec![0xf1, 0];
    for (n, bytes) in [bad_sub, bad_unsub, bad_auth].into_iter().enumerate() {
        let mut r = connect5(b.port(), &format!("flags5-{n}"));
        r.send(&bytes);
        expect_error_disconnect(&mut r, 0x81);
    }
    // PUBREL with flags 0000 for a QoS 2 flow in progress.
    let mut r = connect5(b.port(), "flags5-rel");
    r.send(&publish5("t", b"x", 2, false, 7, &Props::new()));
    assert_eq!(expect_kind(&mut r, 5, WAIT).pid(), 7);
    r.send(&[0x60, 2, 0, 7]);
    expect_error_disconnect(&mut r, 0x81);
}

/// v5:[MQTT-3.14.1-1] a DISCONNECT with reserved bits set → DISCONNECT 0x81 from the server,
/// and (it was no proper DISCONNECT) the will is published; v5:[MQTT-3.14.4-2] the server
/// closes the connection after its DISCONNECT.
#[test]
fn v5_disconnect_reserved_bits_malformed_mqtt_3_14_1_1() {
    let b = Broker::start("");
    let mut m = sub(&b, "d5-mon", "d5/will", 0);
    let c = Connect::v5("d5").will("d5/will", b"w", 0, false);
    let (mut r, _) = connect5_with(b.port(), &c);
    r.send(&[0xe2, 0]);
    expect_error_disconnect(&mut r, 0x81);
    assert_eq!(next_pub5(&mut m, WAIT).topic, "d5/will");
}

/// v5:[MQTT-3.8.3-2] a SUBSCRIBE without any filter and v5:[MQTT-3.10.3-2] an UNSUBSCRIBE
/// without any filter are errors: the connection is closed with DISCONNECT 0x81 or 0x82.
/// v5:[MQTT-3.10.3-2]
#[test]
fn v5_subscribe_or_unsubscribe_without_filter_closed_mqtt_3_8_3_2() {
    let b = Broker::start("");
    for (n, bytes) in [subscribe5(1, &Props::new(), &[]), unsubscribe5(1, &[])]
        .into_iter()
        .enumerate()
    {
        let mut r = connect5(b.port(), &format!("empty5-{n}"));
        r.send(&bytes);
        let seen = r.expect_closed(WAIT);
        assert!(
            seen.iter()
                .all(|p| p.kind() == 14 && [0x81, 0x82].contains(&parse_ack(p).rc)),
            "{seen:?}"
        );
    }
}

/// v5:[MQTT-3.3.2-2] a wildcard in a PUBLISH topic is refused: DISCONNECT (0x82 Protocol
/// Error or 0x90 Topic Name invalid) and close; v5:[MQTT-4.7.0-1] wildcards are only for
/// filters.
/// v5:[MQTT-4.7.3-1] an empty topic without a Topic Alias is refused the same way.
#[test]
fn v5_wildcard_in_publish_topic_refused_mqtt_3_3_2_2() {
    let b = Broker::start("");
    for (n, topic) in ["a/+", "a/#", "#", ""].into_iter().enumerate() {
        let mut r = connect5(b.port(), &format!("wild5-{n}"));
        r.send(&publish5(topic, b"x", 0, false, 0, &Props::new()));
        let seen = r.expect_closed(WAIT);
        assert!(
            seen.iter()
                .all(|p| p.kind() == 14 && [0x82, 0x90].contains(&parse_ack(p).rc)),
            "{topic}: {seen:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// PUBLISH flows

/// The server as QoS 1 and QoS 2 receiver: v5:[MQTT-4.3.2-4] PUBACK with the PUBLISH's id;
/// v5:[MQTT-4.3.3-8] PUBREC with the PUBLISH's id; v5:[MQTT-4.3.3-11] PUBCOMP with the
/// PUBREL's id; v5:[MQTT-3.3.4-1] the answer follows the QoS; v5:[MQTT-3.4.2-1],
/// v5:[MQTT-3.5.2-1], v5:[MQTT-3.7.2-1] with reason codes of their packet's list (0x00 or
/// 0x10 No matching subscribers); v5:[MQTT-2.2.1-5] same ids.
#[test]
fn v5_server_acks_carry_ids_and_valid_reason_codes_mqtt_4_3_2_4() {
    let b = Broker::start("");
    let mut r = connect5(b.port(), "acks5");
    r.send(&publish5("acks5/t", b"1", 1, false, 11, &Props::new()));
    let a = parse_ack(&expect_kind(&mut r, 4, WAIT));
    assert!(a.pid == 11 && [0x00, 0x10].contains(&a.rc), "{a:?}");
    r.send(&publish5("acks5/t", b"2", 2, false, 12, &Props::new()));
    let a = parse_ack(&expect_kind(&mut r, 5, WAIT));
    assert!(a.pid == 12 && [0x00, 0x10].contains(&a.rc), "{a:?}");
    r.send(&ack5(0x62, 12, 0, &Props::new()));
    let a = parse_ack(&expect_kind(&mut r, 7, WAIT));
    assert_eq!((a.pid, a.rc), (12, 0), "{a:?}");
}

/// v5:[MQTT-4.3.3-10] until the PUBREL, a re-sent QoS 2 PUBLISH with the same id is answered
/// with PUBREC again and not delivered twice; v5:[MQTT-4.3.3-12] after PUBCOMP the same id
/// is a new message; v5:[MQTT-4.3.2-5] after PUBACK a QoS 1 id is a new message too.
/// v5:[MQTT-4.3.2-5]
#[test]
fn v5_qos2_resend_not_duplicated_and_ids_reusable_mqtt_4_3_3_10() {
    let b = Broker::start("");
    let mut s = sub(&b, "dup5-sub", "dup5/t", 2);
    let mut p = connect5(b.port(), "dup5-pub");
    let none = Props::new();
    p.send(&publish5("dup5/t", b"a", 2, false, 3, &none));
    assert_eq!(expect_kind(&mut p, 5, WAIT).pid(), 3);
    let mut again = publish5("dup5/t", b"a", 2, false, 3, &none);
    again[0] |= 0x08;
    p.send(&again);
    assert_eq!(expect_kind(&mut p, 5, WAIT).pid(), 3);
    p.send(&ack5(0x62, 3, 0, &none));
    assert_eq!(expect_kind(&mut p, 7, WAIT).pid(), 3);
    p.send(&publish5("dup5/t", b"b", 2, false, 3, &none));
    assert_eq!(expect_kind(&mut p, 5, WAIT).pid(), 3);
    p.send(&ack5(0x62, 3, 0, &none));
    assert_eq!(expect_kind(&mut p, 7, WAIT).pid(), 3);
    pub5_qos1(&mut p, "dup5/t", b"c", 4, &none);
    pub5_qos1(&mut p, "dup5/t", b"d", 4, &none);
    let got: Vec<Vec<u8>> = collect5(&mut s, 4, WAIT)
        .into_iter()
        .map(|m| m.payload)
        .collect();
    assert_eq!(
        got,
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
    );
    quiet5(&mut s, SHORT);
}

/// The server as sender: v5:[MQTT-4.3.2-1]/[MQTT-4.3.2-2] a QoS 1 PUBLISH carries a non-zero
/// unused id, QoS 1 and DUP 0; v5:[MQTT-4.3.3-1]/[MQTT-4.3.3-2] likewise at QoS 2;
/// v5:[MQTT-2.2.1-4] ids of messages in flight are distinct; v5:[MQTT-4.3.3-4] PUBREC → PUBREL
/// with the same id; v5:[MQTT-3.3.1-2] QoS 0 with DUP 0; v5:[MQTT-4.3.1-1];
/// v5:[MQTT-2.2.1-2] QoS 0 carries no packet id.
/// v5:[MQTT-2.2.2-1] no properties → Property Length 0 (the QoS 0 PUBLISH's exact length).
#[test]
fn v5_server_publish_flags_and_ids_mqtt_4_3_2_2() {
    let b = Broker::start("");
    let mut s = connect5(b.port(), "send5");
    for (f, q) in [("send5/0", 0), ("send5/1", 1), ("send5/2", 2)] {
        sub5(&mut s, 1, f, q, None, q);
    }
    let mut p = connect5(b.port(), "send5-pub");
    for (n, q) in [0u8, 1, 2].into_iter().enumerate() {
        for i in 0..2u16 {
            p.send(&publish5(
                &format!("send5/{q}"),
                b"m",
                q,
                false,
                10 * n as u16 + i + 1,
                &Props::new(),
            ));
        }
    }
    let mut ids: Vec<(u16, u8)> = Vec::new();
    let mut got = 0;
    while got < 6 {
        let pk = s.expect_packet(WAIT);
        assert_eq!(pk.kind(), 3, "{pk:?}");
        got += 1;
        let m = parse_publish(&pk);
        assert!(!m.dup, "{m:?}");
        let q: u8 = m.topic[6..].parse().unwrap();
        assert_eq!(m.qos, q, "{m:?}");
        if q == 0 {
            // Fixed header 2 + topic 2+7 + property length 1 + payload 1: no packet id.
            assert_eq!(m.bytes.len(), 13, "{m:?}");
            continue;
        }
        assert!(
            m.pid != 0 && ids.iter().all(|(i, _)| *i != m.pid),
            "id {} zero or reused: {m:?}",
            m.pid
        );
        ids.push((m.pid, q));
    }
    // Finish the flows; each PUBREC gets a PUBREL (flags 0010) with the same id.
    let mut rels = Vec::new();
    for (pid, q) in &ids {
        if *q == 1 {
            s.send(&puback(*pid));
        } else {
            s.send(&pubrec(*pid));
            let rel = expect_kind(&mut s, 6, WAIT);
            assert_eq!(rel.flags(), 2, "{rel:?}");
            rels.push(rel.pid());
            s.send(&pubcomp(*pid));
        }
    }
    let want: Vec<u16> = ids
        .iter()
        .filter(|(_, q)| *q == 2)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(rels, want);
    quiet5(&mut s, SHORT);
}

/// v5:[MQTT-3.3.1-1] unacknowledged QoS 1 PUBLISHes are re-sent on resume with DUP 1 and,
/// v5:[MQTT-4.4.0-1], their original ids, v5:[MQTT-4.6.0-1] in order; v5:[MQTT-3.3.1-3] the
/// publisher's DUP does not travel (first delivery DUP 0).
/// v5:[MQTT-4.3.2-3] an unacknowledged QoS 1 PUBLISH stays pending until its PUBACK.
#[test]
fn v5_resume_resends_unacked_with_dup_in_order_mqtt_3_3_1_1() {
    let b = Broker::start("");
    let c = Connect::v5("dup-resume5").clean(false).session_expiry(60);
    let (mut s, _) = connect5_with(b.port(), &c);
    sub5(&mut s, 1, "dupr5/t", 1, None, 1);
    let mut p = connect5(b.port(), "dupr5-pub");
    for i in 1..=3u16 {
        let mut m = publish5("dupr5/t", &[b'0' + i as u8], 1, false, i, &Props::new());
        m[0] |= 0x08;
        p.send(&m);
        assert_eq!(expect_kind(&mut p, 4, WAIT).pid(), i);
    }
    let first: Vec<Publish5> = (0..3).map(|_| next_pub5(&mut s, WAIT)).collect();
    assert!(first.iter().all(|m| !m.dup), "{first:?}");
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    let (mut s, ca) = connect5_with(b.port(), &c);
    assert!(ca.session_present);
    for f in &first {
        let m = next_pub5(&mut s, WAIT);
        assert_eq!(
            (m.pid, &m.payload, m.dup),
            (f.pid, &f.payload, true),
            "{m:?}"
        );
        s.send(&puback(m.pid));
    }
    quiet5(&mut s, SHORT);
}

/// v5:[MQTT-4.6.0-5]/[MQTT-4.6.0-6] messages of one publisher on a topic reach a non-shared
/// subscriber in publish order (100 QoS 1 messages); v5:[MQTT-4.5.0-1].
#[test]
fn v5_publisher_order_kept_mqtt_4_6_0_6() {
    let b = Broker::start("");
    let mut s = sub(&b, "order5-sub", "order5/t", 1);
    let mut p = connect5(b.port(), "order5-pub");
    let mut burst = Vec::new();
    for i in 0..100u16 {
        burst.extend_from_slice(&publish5(
            "order5/t",
            &i.to_be_bytes(),
            1,
            false,
            i + 1,
            &Props::new(),
        ));
    }
    p.send(&burst);
    let got: Vec<u16> = collect5(&mut s, 100, Duration::from_secs(10))
        .iter()
        .map(|m| u16::from_be_bytes([m.payload[0], m.payload[1]]))
        .collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
}

/// v5:[MQTT-3.3.4-10] with the client's Receive Maximum used up, the server still answers
/// other packets at once (PINGREQ → PINGRESP; SUBSCRIBE → SUBACK);
/// v5:[MQTT-4.9.0-3] it keeps processing every other packet while its send quota is 0.
/// v5:[MQTT-4.9.0-1] the send quota starts non-zero (the first message goes out) and
/// v5:[MQTT-4.9.0-2] at quota 0 no further QoS 1 PUBLISH is sent until the PUBACK.
#[test]
fn v5_non_publish_packets_not_delayed_by_receive_maximum_mqtt_3_3_4_10() {
    let b = Broker::start("");
    let c = Connect::v5("rm1").props(Props::new().u16(id::RECEIVE_MAXIMUM, 1));
    let (mut s, _) = connect5_with(b.port(), &c);
    sub5(&mut s, 1, "rm1/t", 1, None, 1);
    let mut p = connect5(b.port(), "rm1-pub");
    pub5_qos1(&mut p, "rm1/t", b"1", 1, &Props::new());
    pub5_qos1(&mut p, "rm1/t", b"2", 2, &Props::new());
    let first = next_pub5(&mut s, WAIT);
    s.send(&PINGREQ);
    s.expect_bytes(&PINGRESP, WAIT);
    sub5(&mut s, 2, "rm1/other", 0, None, 0);
    s.send(&puback(first.pid));
    assert_eq!(next_pub5(&mut s, WAIT).payload, b"2");
}

// ---------------------------------------------------------------------------------------------
// Retained messages

/// v5:[MQTT-3.3.1-5] a retained PUBLISH replaces the topic's retained message;
/// v5:[MQTT-3.3.1-8] one with RETAIN 0 neither replaces nor removes it;
/// v5:[MQTT-3.3.1-6] an empty retained payload removes it (and is forwarded normally);
/// v5:[MQTT-3.3.1-7] and is not itself stored.
#[test]
fn v5_retained_replace_keep_and_clear_mqtt_3_3_1_5() {
    let b = Broker::start("");
    retain5(&b, "r5a", "ret5/t", b"old");
    retain5(&b, "r5b", "ret5/t", b"new");
    let mut live = connect5(b.port(), "r5-live");
    live.send(&publish5("ret5/t", b"not-kept", 0, false, 0, &Props::new()));
    live.send(&PINGREQ);
    live.expect_bytes(&PINGRESP, WAIT);
    let mut s = connect5(b.port(), "r5-sub");
    sub5(&mut s, 1, "ret5/t", 0, None, 0);
    let m = next_pub5(&mut s, WAIT);
    assert_eq!(
        (m.payload.as_slice(), m.retain),
        (&b"new"[..], true),
        "{m:?}"
    );
    retain5(&b, "r5c", "ret5/t", b"");
    let cleared = next_pub5(&mut s, WAIT);
    assert!(cleared.payload.is_empty(), "{cleared:?}");
    let mut late = connect5(b.port(), "r5-late");
    sub5(&mut late, 1, "ret5/t", 0, None, 0);
    quiet5(&mut late, SHORT);
}

// ---------------------------------------------------------------------------------------------
// SUBSCRIBE / UNSUBSCRIBE

/// v5:[MQTT-3.8.4-1] SUBSCRIBE is answered by SUBACK, v5:[MQTT-3.8.4-2] with its packet id;
/// v5:[MQTT-3.8.4-5] several filters are handled as a sequence with one SUBACK;
/// v5:[MQTT-3.8.4-6]/[MQTT-3.9.3-1] one reason code per filter, in order;
/// v5:[MQTT-3.8.4-7]/[MQTT-3.9.3-2] each the granted QoS or a failure code of the SUBACK list;
/// v5:[MQTT-4.7.1-1]/[MQTT-4.7.1-2] `#` not last and `+` not a whole level are invalid.
/// v5:[MQTT-2.2.1-6] the SUBACK has the SUBSCRIBE's packet id.
#[test]
fn v5_suback_one_valid_code_per_filter_in_order_mqtt_3_8_4_6() {
    let b = Broker::start("");
    let mut r = connect5(b.port(), "suback5");
    r.send(&subscribe5(
        0x1234,
        &Props::new(),
        &[
            ("s5/a", 2),
            ("s5/#/x", 1),
            ("s5/b", 0),
            ("s5/c+", 1),
            ("s5/+", 1),
        ],
    ));
    let sa = parse_suback(&expect_kind(&mut r, 9, WAIT));
    assert_eq!(sa.pid, 0x1234);
    assert_eq!(sa.codes.len(), 5, "{sa:?}");
    assert_eq!([sa.codes[0], sa.codes[2], sa.codes[4]], [2, 0, 1], "{sa:?}");
    for i in [1, 3] {
        assert!(
            [0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2].contains(&sa.codes[i]),
            "filter {i} got 0x{:02x}: {sa:?}",
            sa.codes[i]
        );
    }
}

/// v5:[MQTT-3.10.4-6] several filters in one UNSUBSCRIBE: one UNSUBACK,
/// v5:[MQTT-3.10.4-4]/[MQTT-3.10.4-5] with the packet id, v5:[MQTT-3.11.3-1]/[MQTT-3.11.3-2]
/// one Unsubscribe reason code per filter in order (0x00 / 0x11 No subscription existed);
/// v5:[MQTT-3.10.4-1] filters compared character by character (`u5/+` does not remove
/// `u5/x`); v5:[MQTT-3.10.4-2] removed filters stop delivering.
/// v5:[MQTT-2.2.1-6] the UNSUBACK has the UNSUBSCRIBE's packet id;
/// v5:[MQTT-4.1.0-1] the session's subscriptions are kept while connected.
#[test]
fn v5_unsubscribe_several_filters_mqtt_3_10_4_6() {
    let b = Broker::start("");
    let mut r = connect5(b.port(), "unsub5");
    r.send(&subscribe5(
        1,
        &Props::new(),
        &[("u5/a", 0), ("u5/b", 0), ("u5/x", 0)],
    ));
    expect_kind(&mut r, 9, WAIT);
    r.send(&unsubscribe5(0x0a0b, &["u5/a", "u5/none", "u5/+", "u5/b"]));
    let ua = expect_kind(&mut r, 11, WAIT);
    let ua = parse_suback(&ua);
    assert_eq!((ua.pid, ua.codes), (0x0a0b, vec![0x00, 0x11, 0x11, 0x00]));
    let mut p = connect5(b.port(), "unsub5-pub");
    for t in ["u5/a", "u5/b", "u5/x"] {
        p.send(&publish5(t, b"x", 0, false, 0, &Props::new()));
    }
    assert_eq!(next_pub5(&mut r, WAIT).topic, "u5/x");
    quiet5(&mut r, SHORT);
}

/// v5:[MQTT-3.10.4-3] a QoS 2 delivery already started when the UNSUBSCRIBE arrives is
/// completed (PUBREC still answered by PUBREL).
#[test]
fn v5_unsubscribe_completes_started_qos2_mqtt_3_10_4_3() {
    let b = Broker::start("");
    let mut s = sub(&b, "uq2-5", "uq2/t", 2);
    let mut p = connect5(b.port(), "uq2-5-pub");
    p.send(&publish5("uq2/t", b"m", 2, false, 1, &Props::new()));
    expect_kind(&mut p, 5, WAIT);
    p.send(&ack5(0x62, 1, 0, &Props::new()));
    expect_kind(&mut p, 7, WAIT);
    let m = next_pub5(&mut s, WAIT);
    s.send(&unsubscribe5(5, &["uq2/t"]));
    expect_kind(&mut s, 11, WAIT);
    s.send(&pubrec(m.pid));
    let rel = expect_kind(&mut s, 6, WAIT);
    assert_eq!(rel.pid(), m.pid);
}

/// v5:[MQTT-3.3.4-2] overlapping subscriptions: the message arrives respecting the highest
/// granted QoS; v5:[MQTT-3.3.2-3] its topic matches the filters; v5:[MQTT-3.8.4-8] a single
/// subscription caps the QoS at the granted one.
/// v5:[MQTT-3.8.4-8]
#[test]
fn v5_overlapping_subscriptions_highest_qos_mqtt_3_3_4_2() {
    let b = Broker::start("");
    let mut s = connect5(b.port(), "overlap5");
    sub5(&mut s, 1, "ov5/#", 0, None, 0);
    sub5(&mut s, 2, "ov5/+/t", 2, None, 2);
    sub5(&mut s, 3, "ov5/only0", 0, None, 0);
    let mut p = connect5(b.port(), "overlap5-pub");
    pub5_qos1(&mut p, "ov5/a/t", b"x", 1, &Props::new());
    let got = collect5(&mut s, 1, WAIT);
    assert!(got.iter().any(|m| m.qos == 1), "{got:?}");
    assert!(got.iter().all(|m| m.topic == "ov5/a/t"), "{got:?}");
    quiet5(&mut s, SHORT);
    pub5_qos1(&mut p, "ov5/only0", b"y", 2, &Props::new());
    let m = next_pub5(&mut s, WAIT);
    assert_eq!((m.topic.as_str(), m.qos), ("ov5/only0", 0), "{m:?}");
}

/// v5:[MQTT-4.7.2-1] filters starting with a wildcard do not match topics starting with `$`.
#[test]
fn v5_dollar_topics_not_matched_by_leading_wildcard_mqtt_4_7_2_1() {
    let b = Broker::start("");
    let mut s = connect5(b.port(), "dollar5");
    sub5(&mut s, 1, "#", 0, None, 0);
    sub5(&mut s, 2, "+/x", 0, None, 0);
    let mut p = connect5(b.port(), "dollar5-pub");
    p.send(&publish5("$app/x", b"x", 0, false, 0, &Props::new()));
    p.send(&publish5("app/x", b"y", 0, false, 0, &Props::new()));
    let got = collect5(&mut s, 1, WAIT);
    assert!(got.iter().all(|m| m.topic == "app/x"), "{got:?}");
    quiet5(&mut s, SHORT);
}

/// v5:[MQTT-4.8.2-1] a shared subscription filter needs a non-empty ShareName;
/// v5:[MQTT-4.8.2-2] a ShareName with `+`, `#` or without a following `/` and filter is
/// invalid: such filters are refused (SUBACK failure or a protocol-error close), never granted.
#[test]
fn v5_invalid_shared_subscription_filters_refused_mqtt_4_8_2_1() {
    let b = Broker::start("");
    for (n, f) in ["$share//t", "$share/a+b/t", "$share/a#/t", "$share/g"]
        .into_iter()
        .enumerate()
    {
        let mut r = connect5(b.port(), &format!("share5-{n}"));
        r.send(&subscribe5(1, &Props::new(), &[(f, 1)]));
        match r.read_packet(WAIT) {
            Got::Packet(p) if p.kind() == 9 => {
                let sa = parse_suback(&p);
                assert!(sa.codes.len() == 1 && sa.codes[0] >= 0x80, "{f}: {sa:?}");
            }
            Got::Packet(p) if p.kind() == 14 => {
                assert!(parse_ack(&p).rc >= 0x80, "{f}: {p:?}");
            }
            other => panic!("{f}: {other:?}"),
        }
    }
}

/// Every packet the server sends fits the client's Maximum Packet Size (64 bytes here), so no
/// Reason String or User Property pushes one over: CONNACK v5:[MQTT-3.2.2-19]/[MQTT-3.2.2-20],
/// PUBACK v5:[MQTT-3.4.2-2]/[MQTT-3.4.2-3], PUBREC v5:[MQTT-3.5.2-2]/[MQTT-3.5.2-3],
/// PUBREL v5:[MQTT-3.6.2-2]/[MQTT-3.6.2-3], PUBCOMP v5:[MQTT-3.7.2-2]/[MQTT-3.7.2-3],
/// SUBACK v5:[MQTT-3.9.2-1]/[MQTT-3.9.2-2], UNSUBACK v5:[MQTT-3.11.2-1]/[MQTT-3.11.2-2],
/// DISCONNECT v5:[MQTT-3.14.2-3]/[MQTT-3.14.2-4]; v5:[MQTT-3.6.2-1] PUBREL reason 0x00.
/// v5:[MQTT-3.14.2-2] the server's DISCONNECT has no Session Expiry Interval;
/// v5:[MQTT-3.14.4-1] it is the last packet before the close.
#[test]
fn v5_server_packets_fit_client_maximum_packet_size_mqtt_3_9_2_1() {
    let b = Broker::start("");
    let c = Connect::v5("small5").props(Props::new().u32(id::MAXIMUM_PACKET_SIZE, 64));
    let (mut r, _) = connect5_raw(b.port(), &c);
    let mut seen: Vec<Pkt> = Vec::new();
    let none = Props::new();
    let mut step = |r: &mut Raw, bytes: &[u8], kind: u8| {
        r.send(bytes);
        let p = expect_kind(r, kind, WAIT);
        seen.push(p.clone());
        p
    };
    step(
        &mut r,
        &subscribe5(1, &none, &[("small5/#", 2), ("a/#/b", 0)]),
        9,
    );
    // Acks to the client's own publishes (no subscriber: PUBACK/PUBREC may say 0x10).
    step(&mut r, &publish5("nobody5/1", b"x", 1, false, 2, &none), 4);
    step(&mut r, &publish5("nobody5/2", b"y", 2, false, 3, &none), 5);
    step(&mut r, &ack5(0x62, 3, 0, &none), 7);
    // A QoS 2 message from another client: the server's PUBREL.
    let mut p = connect5(b.port(), "small5-pub");
    p.send(&publish5("small5/q2", b"z", 2, false, 1, &none));
    expect_kind(&mut p, 5, WAIT);
    p.send(&ack5(0x62, 1, 0, &none));
    expect_kind(&mut p, 7, WAIT);
    let m = expect_kind(&mut r, 3, WAIT);
    let rel = step(&mut r, &pubrec(m.pid()), 6);
    assert_eq!(
        rel.body().get(2).copied().unwrap_or(0),
        0,
        "PUBREL reason: {rel:?}"
    );
    r.send(&pubcomp(m.pid()));
    step(&mut r, &unsubscribe5(4, &["small5/#", "none"]), 11);
    r.send(&[0xe2, 0]);
    seen.extend(r.expect_closed(WAIT));
    assert!(
        seen.iter().any(|p| p.kind() == 14),
        "no DISCONNECT: {seen:?}"
    );
    for p in &seen {
        assert!(p.bytes.len() <= 64, "{} bytes: {p:?}", p.bytes.len());
    }
}

// ---------------------------------------------------------------------------------------------
// More CONNECT rules

/// v5:[MQTT-3.1.2-1] a protocol name other than "MQTT": the connection is closed (a CONNACK,
/// if any, refuses).
#[test]
fn v5_wrong_protocol_name_closed_mqtt_3_1_2_1() {
    let b = Broker::start("");
    let mut bytes = Connect::v5("name5").bytes();
    bytes[4..8].copy_from_slice(b"MQTX");
    let mut r = Raw::connect(b.port());
    r.send(&bytes);
    for p in r.expect_closed(WAIT) {
        assert!(p.kind() == 2 && p.body()[1] != 0, "{p:?}");
    }
}

/// v5:[MQTT-3.1.2-2] a protocol version the server does not accept (6): a refusing CONNACK
/// (0x84, or 0x01 in 3.x numbering as Mosquitto) or none, then the close.
#[test]
fn v5_unsupported_protocol_version_closed_mqtt_3_1_2_2() {
    let b = Broker::start("");
    let mut bytes = Connect::v5("ver6").bytes();
    bytes[8] = 6;
    let mut r = Raw::connect(b.port());
    r.send(&bytes);
    for p in r.expect_closed(WAIT) {
        assert!(
            p.kind() == 2 && [0x01, 0x84].contains(&p.body()[1]),
            "{p:?}"
        );
    }
}

/// v5:[MQTT-3.1.2-11] Will Flag 0 with Will QoS bits and v5:[MQTT-3.1.2-13] Will Flag 0 with
/// Will Retain are refused; v5:[MQTT-3.1.2-12] so is Will QoS 3 with the Will Flag.
#[test]
fn v5_will_bits_without_will_flag_refused_mqtt_3_1_2_11() {
    let b = Broker::start("");
    let plain = Connect::v5("wbits").bytes();
    let with_will = Connect::v5("wbits").will("w/t", b"x", 0, false).bytes();
    for (base, bits) in [(&plain, 0x08u8), (&plain, 0x20), (&with_will, 0x18)] {
        let mut bytes = base.clone();
        bytes[9] |= bits;
        let mut r = Raw::connect(b.port());
        r.send(&bytes);
        for p in r.expect_closed(WAIT) {
            assert!(
                p.kind() == 2 && parse_connack(&p).rc >= 0x80,
                "{bits:#x}: {p:?}"
            );
        }
    }
}

/// The User Name and Password flags must match the payload: v5:[MQTT-3.1.2-16] no user name
/// without its flag, v5:[MQTT-3.1.2-17] one with it, v5:[MQTT-3.1.2-18] no password without
/// its flag, v5:[MQTT-3.1.2-19] one with it; a mismatch is refused.
#[test]
fn v5_username_password_flags_match_payload_mqtt_3_1_2_17() {
    let b = Broker::start("");
    let mut user = Connect::v5("upf");
    user.username = Some("u".into());
    let mut pass = Connect::v5("upf");
    pass.password = Some(b"p".to_vec());
    let cases: Vec<Vec<u8>> = vec![
        // Flag set, field missing: drop the trailing field, fix the length.
        {
            let mut b = Connect::v5("upf").bytes();
            b[9] |= 0x80;
            b
        },
        {
            let mut b = Connect::v5("upf").bytes();
            b[9] |= 0x40;
            b
        },
        // Field present, flag clear.
        {
            let mut b = user.bytes();
            b[9] &= !0x80;
            b
        },
        {
            let mut b = pass.bytes();
            b[9] &= !0x40;
            b
        },
    ];
    for bytes in cases {
        let mut r = Raw::connect(b.port());
        r.send(&bytes);
        for p in r.expect_closed(WAIT) {
            assert!(p.kind() == 2 && parse_connack(&p).rc >= 0x80, "{p:?}");
        }
    }
}

/// v5:[MQTT-3.1.3-6] a zero-length Client Identifier gets a server-assigned one and
/// v5:[MQTT-3.1.3-7] the connection proceeds as if the client had sent it: a second
/// connection with that id resumes the session.
#[test]
fn v5_assigned_client_id_is_the_session_id_mqtt_3_1_3_6() {
    let b = Broker::start("");
    let c = Connect::v5("").clean(false).session_expiry(60);
    let (mut r, ca) = connect5_with(b.port(), &c);
    let assigned = ca
        .props
        .string(id::ASSIGNED_CLIENT_ID)
        .expect("Assigned Client Identifier");
    assert!(!assigned.is_empty());
    r.send(&disconnect5(0, &Props::new()));
    r.expect_closed(WAIT);
    let again = Connect::v5(&assigned).clean(false).session_expiry(60);
    let (_r, ca) = connect5_with(b.port(), &again);
    assert!(ca.session_present, "{ca:?}");
}

/// v5:[MQTT-3.1.3-8] a Client Identifier the server rejects: CONNACK 0x85 (Client Identifier
/// not valid), then the close.
#[test]
fn v5_rejected_client_id_connack_0x85_mqtt_3_1_3_8() {
    let b = Broker::start("allow_zero_length_clientid false");
    expect_connect_refused(b.port(), &Connect::v5("").bytes(), 0x85);
}

/// v5:[MQTT-3.1.4-2] a CONNECT that fails authentication is refused (CONNACK 0x86 / 0x87)
/// and the connection closed.
#[test]
fn v5_failed_authentication_closed_mqtt_3_1_4_2() {
    let b = Broker::start("allow_anonymous false");
    let mut r = Raw::connect(b.port());
    r.send(&Connect::v5("anon5").bytes());
    let seen = r.expect_closed(WAIT);
    for p in &seen {
        assert!(
            p.kind() == 2 && [0x86, 0x87].contains(&parse_connack(p).rc),
            "{p:?}"
        );
    }
}

/// v5:[MQTT-4.1.0-2] once the connection is closed and the Session Expiry Interval (1 s) has
/// passed, the session is gone (Session Present 0 on return).
#[test]
fn v5_session_discarded_after_expiry_mqtt_4_1_0_2() {
    let b = Broker::start("");
    let c = Connect::v5("expire5").clean(false).session_expiry(1);
    let (mut r, _) = connect5_with(b.port(), &c);
    sub5(&mut r, 1, "expire5/t", 1, None, 1);
    drop(r);
    std::thread::sleep(Duration::from_millis(2500));
    let (_r, ca) = connect5_with(b.port(), &c);
    assert!(!ca.session_present, "{ca:?}");
}

// ---------------------------------------------------------------------------------------------
// More PUBLISH rules

/// v5:[MQTT-1.5.4-3] U+FEFF (EF BB BF) in a topic is neither skipped nor stripped.
#[test]
fn v5_zero_width_no_break_space_kept_in_topic_mqtt_1_5_4_3() {
    let b = Broker::start("");
    let bom = "\u{feff}bom5/t";
    let mut with = sub(&b, "bom5-with", bom, 0);
    let mut without = sub(&b, "bom5-without", "bom5/t", 0);
    let mut p = connect5(b.port(), "bom5-pub");
    p.send(&publish5(bom, b"x", 0, false, 0, &Props::new()));
    assert_eq!(next_pub5(&mut with, WAIT).topic, bom);
    quiet5(&mut without, SHORT);
}

/// v5:[MQTT-1.5.7-1] both strings of a User Property must be UTF-8: an ill-formed value is a
/// Malformed Packet (DISCONNECT 0x81).
#[test]
fn v5_user_property_value_not_utf8_malformed_mqtt_1_5_7_1() {
    let b = Broker::start("");
    let mut r = connect5(b.port(), "pair5");
    // Property 0x26: key "k", value bytes ff fe.
    let props = [0x26, 0, 1, b'k', 0, 2, 0xff, 0xfe];
    let mut body = Vec::new();
    put_str(&mut body, b"pair5/t");
    body.push(props.len() as u8);
    body.extend_from_slice(&props);
    body.extend_from_slice(b"x");
    r.send(&packet(0x30, &body));
    expect_error_disconnect(&mut r, 0x81);
}

/// v5:[MQTT-3.1.2-25] a message larger than the subscriber's Maximum Packet Size is dropped for
/// it as if it had been delivered: the next QoS 1 message is not held up behind it.
#[test]
fn v5_oversize_message_dropped_as_if_sent_mqtt_3_1_2_25() {
    let b = Broker::start("");
    let c = Connect::v5("small-sub5").props(
        Props::new()
            .u32(id::MAXIMUM_PACKET_SIZE, 100)
            .u16(id::RECEIVE_MAXIMUM, 1),
    );
    let (mut s, _) = connect5_with(b.port(), &c);
    sub5(&mut s, 1, "big5/t", 1, None, 1);
    let mut p = connect5(b.port(), "big5-pub");
    pub5_qos1(&mut p, "big5/t", &[b'x'; 200], 1, &Props::new());
    pub5_qos1(&mut p, "big5/t", b"small", 2, &Props::new());
    let m = collect5(&mut s, 1, WAIT);
    assert_eq!(m[0].payload, b"small");
    quiet5(&mut s, SHORT);
}

/// v5:[MQTT-3.3.1-12] Retain As Published 0: a retained message published live reaches the
/// subscriber with RETAIN 0.
#[test]
fn v5_retain_as_published_0_clears_retain_mqtt_3_3_1_12() {
    let b = Broker::start("");
    let mut s = sub(&b, "rap0", "rap0/t", opts(0, false, false, 0));
    let mut p = connect5(b.port(), "rap0-pub");
    p.send(&publish5("rap0/t", b"r", 0, true, 0, &Props::new()));
    let m = next_pub5(&mut s, WAIT);
    assert!(!m.retain, "{m:?}");
}

/// The server forwards PUBLISH properties unaltered: v5:[MQTT-3.3.2-4] Payload Format
/// Indicator, v5:[MQTT-3.3.2-15] Response Topic, v5:[MQTT-3.3.2-16] Correlation Data,
/// v5:[MQTT-3.3.2-17]/[MQTT-3.3.2-18] User Properties, all and in order,
/// v5:[MQTT-3.3.2-20] Content Type.
#[test]
fn v5_publish_properties_forwarded_unaltered_mqtt_3_3_2_4() {
    let b = Broker::start("");
    let mut s = sub(&b, "props5-sub", "props5/t", 1);
    let sent = Props::new()
        .byte(id::PAYLOAD_FORMAT, 1)
        .str(id::RESPONSE_TOPIC, "reply/here")
        .bin(id::CORRELATION_DATA, &[0, 1, 0xff])
        .user("b", "2")
        .user("a", "1")
        .user("b", "")
        .str(id::CONTENT_TYPE, "text/plain");
    let mut p = connect5(b.port(), "props5-pub");
    pub5_qos1(&mut p, "props5/t", b"hello", 1, &sent);
    let m = collect5(&mut s, 1, WAIT).remove(0);
    assert_eq!(m.props.int(id::PAYLOAD_FORMAT), Some(1), "{m:?}");
    assert_eq!(
        m.props.string(id::RESPONSE_TOPIC).as_deref(),
        Some("reply/here")
    );
    assert_eq!(m.props.binary(id::CORRELATION_DATA), Some(vec![0, 1, 0xff]));
    assert_eq!(
        m.props.string(id::CONTENT_TYPE).as_deref(),
        Some("text/plain")
    );
    let users: Vec<(String, String)> = m.props.users();
    let want: Vec<(String, String)> = [("b", "2"), ("a", "1"), ("b", "")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(users, want);
}

/// v5:[MQTT-3.3.2-11] the server never sends a Topic Alias above the client's Topic Alias
/// Maximum (2 here), v5:[MQTT-3.3.2-8] nor alias 0, and every alias resolves to the right topic.
#[test]
fn v5_outbound_aliases_within_client_maximum_mqtt_3_3_2_11() {
    let b = Broker::start("");
    let c = Connect::v5("alias5").props(Props::new().u16(id::TOPIC_ALIAS_MAXIMUM, 2));
    let (mut s, _) = connect5_with(b.port(), &c);
    sub5(&mut s, 1, "al5/#", 0, None, 0);
    let mut p = connect5(b.port(), "alias5-pub");
    let topics = [
        "al5/a", "al5/b", "al5/c", "al5/a", "al5/b", "al5/c", "al5/a",
    ];
    for t in topics {
        p.send(&publish5(t, t.as_bytes(), 0, false, 0, &Props::new()));
    }
    let mut map = std::collections::HashMap::new();
    for _ in topics {
        let m = next_pub5(&mut s, WAIT);
        let topic = match m.props.int(id::TOPIC_ALIAS) {
            Some(a) => {
                assert!((1..=2).contains(&a), "alias {a}: {m:?}");
                if !m.topic.is_empty() {
                    map.insert(a, m.topic.clone());
                }
                map.get(&a).cloned().expect("alias used before it was set")
            }
            None => m.topic.clone(),
        };
        assert_eq!(topic.as_bytes(), m.payload.as_slice(), "{m:?}");
    }
}

/// v5:[MQTT-3.8.4-4] Retain Handling 0: re-subscribing to an existing filter sends the
/// retained message again, and replacing the subscription loses no live message.
#[test]
fn v5_resubscribe_resends_retained_mqtt_3_8_4_4() {
    let b = Broker::start("");
    retain5(&b, "rs5-ret", "rs5/t", b"kept");
    let mut s = connect5(b.port(), "rs5");
    sub5(&mut s, 1, "rs5/t", 1, None, 1);
    assert_eq!(collect5(&mut s, 1, WAIT)[0].payload, b"kept");
    sub5(&mut s, 2, "rs5/t", 1, None, 1);
    let again = collect5(&mut s, 1, WAIT).remove(0);
    assert!(again.retain && again.payload == b"kept", "{again:?}");
    let mut p = connect5(b.port(), "rs5-pub");
    pub5_qos1(&mut p, "rs5/t", b"live", 1, &Props::new());
    assert_eq!(collect5(&mut s, 1, WAIT)[0].payload, b"live");
}

// ---------------------------------------------------------------------------------------------
// QoS 2 sender state across a resume, expiry, negative acknowledgements

/// v5:[MQTT-4.3.3-3] a QoS 2 PUBLISH without PUBREC stays unacknowledged: re-sent (DUP) on
/// resume; v5:[MQTT-4.3.3-5] a PUBREL without PUBCOMP likewise: the PUBREL is re-sent;
/// v5:[MQTT-4.3.3-6] and the PUBLISH is not re-sent once its PUBREL went out.
#[test]
fn v5_qos2_sender_resume_resends_publish_or_pubrel_mqtt_4_3_3_5() {
    let b = Broker::start("");
    let c = Connect::v5("q2resume5").clean(false).session_expiry(60);
    let (mut s, _) = connect5_with(b.port(), &c);
    sub5(&mut s, 1, "q2r5/t", 2, None, 2);
    let mut p = connect5(b.port(), "q2r5-pub");
    for (pid, m) in [(1u16, b"a"), (2, b"b")] {
        p.send(&publish5("q2r5/t", m, 2, false, pid, &Props::new()));
        expect_kind(&mut p, 5, WAIT);
        p.send(&ack5(0x62, pid, 0, &Props::new()));
        expect_kind(&mut p, 7, WAIT);
    }
    let first = next_pub5(&mut s, WAIT);
    let second = next_pub5(&mut s, WAIT);
    // PUBREC only the first; the second stays before PUBREC.
    s.send(&pubrec(first.pid));
    assert_eq!(expect_kind(&mut s, 6, WAIT).pid(), first.pid);
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    let (mut s, ca) = connect5_with(b.port(), &c);
    assert!(ca.session_present);
    let mut rel = false;
    let mut republished = false;
    for _ in 0..2 {
        let pk = s.expect_packet(WAIT);
        match pk.kind() {
            6 => {
                assert_eq!(pk.pid(), first.pid, "{pk:?}");
                rel = true;
                s.send(&pubcomp(pk.pid()));
            }
            3 => {
                let m = parse_publish(&pk);
                assert_eq!(
                    (m.pid, m.dup, m.payload.as_slice()),
                    (second.pid, true, &b"b"[..])
                );
                republished = true;
                s.send(&pubrec(m.pid));
                assert_eq!(expect_kind(&mut s, 6, WAIT).pid(), m.pid);
                s.send(&pubcomp(m.pid));
            }
            _ => panic!("{pk:?}"),
        }
    }
    assert!(rel && republished);
    quiet5(&mut s, SHORT);
}

/// v5:[MQTT-4.3.3-7] once a QoS 2 PUBLISH was sent, Message Expiry no longer applies to it:
/// after the interval has passed it is still re-sent on resume.
#[test]
fn v5_qos2_sent_publish_not_expired_mqtt_4_3_3_7() {
    let b = Broker::start("");
    let c = Connect::v5("q2exp5").clean(false).session_expiry(60);
    let (mut s, _) = connect5_with(b.port(), &c);
    sub5(&mut s, 1, "q2e5/t", 2, None, 2);
    let mut p = connect5(b.port(), "q2e5-pub");
    let exp = Props::new().u32(id::MESSAGE_EXPIRY, 1);
    p.send(&publish5("q2e5/t", b"x", 2, false, 1, &exp));
    expect_kind(&mut p, 5, WAIT);
    p.send(&ack5(0x62, 1, 0, &Props::new()));
    expect_kind(&mut p, 7, WAIT);
    let m = next_pub5(&mut s, WAIT);
    drop(s);
    std::thread::sleep(Duration::from_millis(2200));
    let (mut s, _) = connect5_with(b.port(), &c);
    let again = next_pub5(&mut s, WAIT);
    assert_eq!((again.pid, again.dup), (m.pid, true), "{again:?}");
}

/// v5:[MQTT-4.3.3-13] the server as QoS 2 receiver completes the flow even after the message
/// expired: a PUBREL sent after the Message Expiry Interval still gets PUBCOMP.
#[test]
fn v5_qos2_receiver_completes_flow_after_expiry_mqtt_4_3_3_13() {
    let b = Broker::start("");
    let mut p = connect5(b.port(), "q2rx5");
    let exp = Props::new().u32(id::MESSAGE_EXPIRY, 1);
    p.send(&publish5("q2rx5/t", b"x", 2, false, 9, &exp));
    assert_eq!(expect_kind(&mut p, 5, WAIT).pid(), 9);
    std::thread::sleep(Duration::from_millis(1800));
    p.send(&ack5(0x62, 9, 0, &Props::new()));
    let comp = parse_ack(&expect_kind(&mut p, 7, WAIT));
    assert_eq!((comp.pid, comp.rc), (9, 0), "{comp:?}");
}

/// v5:[MQTT-4.3.3-9] after the server answered PUBREC 0x99 (Payload format invalid), a new
/// PUBLISH with the same id is a new message: accepted and delivered.
#[test]
fn v5_id_after_failed_pubrec_is_a_new_message_mqtt_4_3_3_9() {
    let b = Broker::start("");
    let mut s = sub(&b, "q2bad5-sub", "q2bad5/t", 2);
    let mut p = connect5(b.port(), "q2bad5");
    let utf8 = Props::new().byte(id::PAYLOAD_FORMAT, 1);
    p.send(&publish5("q2bad5/t", &[0xff, 0xfe], 2, false, 4, &utf8));
    let rec = parse_ack(&expect_kind(&mut p, 5, WAIT));
    assert!(rec.pid == 4 && rec.rc >= 0x80, "{rec:?}");
    p.send(&publish5("q2bad5/t", b"good", 2, false, 4, &utf8));
    let rec = parse_ack(&expect_kind(&mut p, 5, WAIT));
    assert_eq!((rec.pid, rec.rc), (4, 0), "{rec:?}");
    p.send(&ack5(0x62, 4, 0, &Props::new()));
    expect_kind(&mut p, 7, WAIT);
    assert_eq!(collect5(&mut s, 1, WAIT)[0].payload, b"good");
}

/// v5:[MQTT-4.4.0-2] a PUBACK with a reason of 0x80 or more acknowledges the message: it is
/// not re-sent on resume.
#[test]
fn v5_negative_puback_ends_delivery_mqtt_4_4_0_2() {
    let b = Broker::start("");
    let c = Connect::v5("nack5").clean(false).session_expiry(60);
    let (mut s, _) = connect5_with(b.port(), &c);
    sub5(&mut s, 1, "nack5/t", 1, None, 1);
    let mut p = connect5(b.port(), "nack5-pub");
    pub5_qos1(&mut p, "nack5/t", b"x", 1, &Props::new());
    let m = next_pub5(&mut s, WAIT);
    s.send(&ack5(0x40, m.pid, 0x80, &Props::new()));
    s.send(&PINGREQ);
    s.expect_bytes(&PINGRESP, WAIT);
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    let (mut s, ca) = connect5_with(b.port(), &c);
    assert!(ca.session_present);
    quiet5(&mut s, SHORT);
}

/// v5:[MQTT-4.7.3-4] no normalisation when matching: case, trailing slashes and look-alike
/// characters make different topics.
#[test]
fn v5_topics_matched_byte_for_byte_mqtt_4_7_3_4() {
    let b = Broker::start("");
    let mut s = sub(&b, "exact5", "Exact/T", 0);
    let mut p = connect5(b.port(), "exact5-pub");
    for t in ["exact/t", "Exact/T/", "Exact/\u{0422}", "Exact/T"] {
        p.send(&publish5(t, t.as_bytes(), 0, false, 0, &Props::new()));
    }
    assert_eq!(next_pub5(&mut s, WAIT).topic, "Exact/T");
    quiet5(&mut s, SHORT);
}

// ---------------------------------------------------------------------------------------------
// Deviations (rows `dev:` in docs/conformance.md)

/// Mosquitto bridges with `try_private true` send protocol level 0x85 for MQTT 5; midge, like
/// Mosquitto, takes it as 5.0 instead of answering CONNACK 0x84 (v5 section 3.1.2.2).
#[test]
fn v5_bridge_protocol_level_0x85_accepted_as_v5() {
    let b = Broker::start("");
    let mut bytes = Connect::v5("bridge5").bytes();
    bytes[8] = 0x85;
    let (ca, mut r) = {
        let mut r = Raw::connect(b.port());
        r.send(&bytes);
        (parse_connack(&r.expect_packet(WAIT)), r)
    };
    assert_eq!(ca.rc, 0, "{ca:?}");
    r.send(&PINGREQ);
    r.expect_bytes(&PINGRESP, WAIT);
}
