//! MQTT 3.1.1 conformance: end-to-end tests for normative statements of the 3.1.1
//! specification that no other test covered, one statement (or a few related ones) per test.
//! Each names its statement in the test name and cites every statement it checks in a doc
//! comment (`v311:[MQTT-x.x.x-y]`), which `scripts/conformance-check.py` reads; the table is
//! `docs/conformance.md`.

use crate::common::*;
use std::time::Duration;

const SHORT: Duration = Duration::from_millis(400);

/// CONNECT with a hand-made payload (after the variable header): for fields the `Connect`
/// builder cannot express (missing fields, bytes that are not UTF-8).
fn raw_connect(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    put_str(&mut b, b"MQTT");
    b.push(4);
    b.push(flags);
    b.extend_from_slice(&60u16.to_be_bytes());
    b.extend_from_slice(payload);
    packet(0x10, &b)
}

/// Sends `bytes` on a fresh socket and expects the broker to close it without accepting.
fn refused(b: &Broker, bytes: &[u8]) -> Vec<Pkt> {
    let mut c = Raw::connect(b.port());
    c.send(bytes);
    let seen = c.expect_closed(WAIT);
    assert!(
        seen.iter().all(|p| p.bytes != CONNACK_OK),
        "CONNECT accepted: {seen:?}"
    );
    seen
}

/// Publishes a retained QoS 0 message and waits until the broker has handled it.
fn retain(b: &Broker, id: &str, topic: &str, payload: &[u8]) {
    let mut p = Raw::mqtt_connect(b.port(), id);
    p.send(&publish(topic, payload, 0, true, false, 0));
    p.send(&PINGREQ);
    p.expect_bytes(&PINGRESP, WAIT);
    p.send(&DISCONNECT);
    p.expect_closed(WAIT);
}

/// A new subscriber to `filter` receives nothing retained.
fn no_retained(b: &Broker, id: &str, filter: &str) {
    let mut s = Raw::mqtt_connect(b.port(), id);
    s.subscribe(1, &[(filter, 1)], &[1]);
    s.expect_silence(SHORT);
}

/// A subscriber on `filter` at QoS `q` (clean session).
fn subscriber(b: &Broker, id: &str, filter: &str, q: u8) -> Raw {
    let mut s = Raw::mqtt_connect(b.port(), id);
    s.subscribe(1, &[(filter, q)], &[q]);
    s
}

// ---------------------------------------------------------------------------------------------
// 1.5.3 UTF-8 strings

/// v311:[MQTT-1.5.3-3] a U+FEFF (EF BB BF) inside a topic is part of the name: it is neither
/// stripped nor skipped, so it only matches a filter that has it too.
#[test]
fn zero_width_no_break_space_kept_in_topic_mqtt_1_5_3_3() {
    let b = Broker::start("");
    let bom = "\u{feff}bom/t";
    let mut with = subscriber(&b, "bom-with", bom, 0);
    let mut without = subscriber(&b, "bom-without", "bom/t", 0);
    let mut p = Raw::mqtt_connect(b.port(), "bom-pub");
    p.send(&publish(bom, b"x", 0, false, false, 0));
    let got = with.expect_packet(WAIT);
    assert_eq!(got.topic().as_bytes(), bom.as_bytes(), "{got:?}");
    without.expect_silence(SHORT);
}

// ---------------------------------------------------------------------------------------------
// 3.1 CONNECT, 3.2 CONNACK

/// v311:[MQTT-3.2.0-1] the first packet the server sends is the CONNACK;
/// v311:[MQTT-3.1.4-4] an accepted CONNECT gets return code 0, exact bytes.
#[test]
fn connack_is_first_packet_and_accepts_mqtt_3_2_0_1() {
    let b = Broker::start("");
    let mut c = Raw::connect(b.port());
    c.send(&Connect::v311("first").bytes());
    c.send(&PINGREQ);
    c.expect_bytes(&CONNACK_OK, WAIT);
    c.expect_bytes(&PINGRESP, WAIT);
}

/// v311:[MQTT-3.1.4-5] data sent after a refused CONNECT is not processed (the retained PUBLISH
/// in the same write is not stored); v311:[MQTT-3.2.2-4] the refusing CONNACK has Session
/// Present 0; v311:[MQTT-3.2.2-5] and the connection is closed.
#[test]
fn data_after_refused_connect_not_processed_mqtt_3_1_4_5() {
    let b = Broker::start("");
    let mut c = Raw::connect(b.port());
    let mut bytes = Connect::v311("").clean(false).bytes();
    bytes.extend_from_slice(&publish("refused/t", b"x", 0, true, false, 0));
    c.send(&bytes);
    c.expect_bytes(&[0x20, 2, 0, 2], WAIT);
    c.expect_closed(WAIT);
    no_retained(&b, "refused-check", "refused/t");
}

/// v311:[MQTT-3.2.2-6] a CONNECT that no return code describes (a malformed one, here the
/// reserved flag set) is closed without any CONNACK; v311:[MQTT-3.1.4-1] it is validated and
/// refused.
#[test]
fn malformed_connect_closed_without_connack_mqtt_3_2_2_6() {
    let b = Broker::start("");
    let mut conn = Connect::v311("malformed");
    conn.flags = Some(0x03);
    let seen = refused(&b, &conn.bytes());
    assert!(seen.is_empty(), "expected a silent close, got {seen:?}");
}

/// v311:[MQTT-3.1.2-7] retained messages are not session state: they outlive the (clean)
/// session of the client that published them.
#[test]
fn retained_message_outlives_publishers_session_mqtt_3_1_2_7() {
    let b = Broker::start("");
    retain(&b, "short-lived", "outlive/t", b"kept");
    let mut s = Raw::mqtt_connect(b.port(), "outlive-sub");
    s.subscribe(1, &[("outlive/t", 0)], &[0]);
    s.expect_bytes(&publish("outlive/t", b"kept", 0, true, false, 0), WAIT);
}

/// v311:[MQTT-3.1.2-12] a client that connected without a will publishes nothing when its
/// connection breaks.
#[test]
fn no_will_flag_nothing_published_on_close_mqtt_3_1_2_12() {
    let b = Broker::start("");
    let mut monitor = subscriber(&b, "no-will-monitor", "#", 0);
    let c = Raw::mqtt_connect(b.port(), "no-will");
    drop(c);
    monitor.expect_silence(Duration::from_millis(600));
}

/// v311:[MQTT-3.1.2-14] Will QoS 3 is not allowed: the CONNECT is refused.
#[test]
fn will_qos_3_refused_mqtt_3_1_2_14() {
    let b = Broker::start("");
    let mut conn = Connect::v311("will-qos3").will("w/t", b"x", 0, false);
    conn.flags = Some(0x02 | 0x04 | 0x18);
    refused(&b, &conn.bytes());
}

/// v311:[MQTT-3.1.2-15] Will Retain without the Will Flag is refused;
/// v311:[MQTT-3.1.2-11] (the will fields must then all be zero).
#[test]
fn will_retain_without_will_flag_refused_mqtt_3_1_2_15() {
    let b = Broker::start("");
    let mut conn = Connect::v311("will-retain-only");
    conn.flags = Some(0x02 | 0x20);
    refused(&b, &conn.bytes());
}

/// v311:[MQTT-3.1.2-16] a will with Will Retain 0 is published as a normal message: live
/// subscribers get it with RETAIN 0 and it is not stored for later subscribers.
#[test]
fn will_retain_0_published_not_retained_mqtt_3_1_2_16() {
    let b = Broker::start("");
    let mut monitor = subscriber(&b, "will0-monitor", "will0/t", 0);
    let c = Raw::mqtt_connect_with(
        b.port(),
        &Connect::v311("will0").will("will0/t", b"gone", 0, false),
        &CONNACK_OK,
    );
    drop(c);
    monitor.expect_bytes(&publish("will0/t", b"gone", 0, false, false, 0), WAIT);
    no_retained(&b, "will0-late", "will0/t");
}

/// v311:[MQTT-3.1.2-19] User Name Flag 1 without a User Name in the payload is refused;
/// v311:[MQTT-3.1.2-21] so is Password Flag 1 without a Password.
#[test]
fn flagged_username_or_password_missing_refused_mqtt_3_1_2_19() {
    let b = Broker::start("");
    let mut id = Vec::new();
    put_str(&mut id, b"no-user");
    refused(&b, &raw_connect(0x02 | 0x80, &id));
    let mut id_user = id.clone();
    put_str(&mut id_user, b"user");
    refused(&b, &raw_connect(0x02 | 0x80 | 0x40, &id_user));
}

/// v311:[MQTT-3.1.2-18] a User Name that its flag does not announce is refused (the payload
/// has bytes left over); v311:[MQTT-3.1.2-20] likewise an unannounced Password.
#[test]
fn unannounced_username_or_password_refused_mqtt_3_1_2_18() {
    let b = Broker::start("");
    let mut p = Vec::new();
    put_str(&mut p, b"extra-user");
    put_str(&mut p, b"user");
    refused(&b, &raw_connect(0x02, &p));
    let mut q = Vec::new();
    put_str(&mut q, b"extra-pass");
    put_str(&mut q, b"user");
    put_str(&mut q, b"secret");
    refused(&b, &raw_connect(0x02 | 0x80, &q));
}

/// v311:[MQTT-3.1.3-3] the Client Identifier must be present: a CONNECT whose payload is empty
/// is refused.
#[test]
fn connect_without_client_id_refused_mqtt_3_1_3_3() {
    let b = Broker::start("");
    refused(&b, &raw_connect(0x02, &[]));
}

/// v311:[MQTT-3.1.3-4] a Client Identifier that is not UTF-8 is refused (and the connection
/// closed, v311:[MQTT-1.5.3-1]).
#[test]
fn client_id_not_utf8_refused_mqtt_3_1_3_4() {
    let b = Broker::start("");
    let mut p = Vec::new();
    put_str(&mut p, &[b'i', 0xc3, 0x28]);
    refused(&b, &raw_connect(0x02, &p));
}

/// v311:[MQTT-3.1.3-5] Client Identifiers of 1 to 23 bytes of [0-9a-zA-Z] are accepted.
#[test]
fn alphanumeric_client_ids_1_to_23_bytes_accepted_mqtt_3_1_3_5() {
    let b = Broker::start("");
    for id in [
        "a",
        "Z9",
        "0123456789abcdefghijklm",
        "ABCDEFGHIJKLMNOPQRSTUVW",
    ] {
        let mut c = Raw::mqtt_connect_with(b.port(), &Connect::v311(id), &CONNACK_OK);
        c.send(&DISCONNECT);
        c.expect_closed(WAIT);
    }
}

/// v311:[MQTT-3.1.3-10] a Will Topic that is not UTF-8 is refused.
#[test]
fn will_topic_not_utf8_refused_mqtt_3_1_3_10() {
    let b = Broker::start("");
    let mut p = Vec::new();
    put_str(&mut p, b"bad-will-topic");
    put_str(&mut p, &[b'w', 0xff, b't']);
    put_str(&mut p, b"payload");
    refused(&b, &raw_connect(0x02 | 0x04, &p));
}

/// v311:[MQTT-3.1.3-11] a User Name that is not UTF-8 is refused.
#[test]
fn username_not_utf8_refused_mqtt_3_1_3_11() {
    let b = Broker::start("");
    let mut p = Vec::new();
    put_str(&mut p, b"bad-user-name");
    put_str(&mut p, &[0xed, 0xa0, 0x80]);
    refused(&b, &raw_connect(0x02 | 0x80, &p));
}

// ---------------------------------------------------------------------------------------------
// 3.3 PUBLISH

/// v311:[MQTT-3.3.1-12] a PUBLISH with RETAIN 0 is neither stored as retained nor removes or
/// replaces the retained message of its topic.
#[test]
fn non_retained_publish_leaves_retained_message_mqtt_3_3_1_12() {
    let b = Broker::start("");
    retain(&b, "keeper", "keep/t", b"kept");
    let mut p = Raw::mqtt_connect(b.port(), "live-pub");
    p.send(&publish("keep/t", b"live", 0, false, false, 0));
    p.send(&publish("keep/t", b"", 0, false, false, 0));
    p.send(&PINGREQ);
    p.expect_bytes(&PINGRESP, WAIT);
    let mut s = Raw::mqtt_connect(b.port(), "keep-sub");
    s.subscribe(1, &[("keep/t", 0)], &[0]);
    s.expect_bytes(&publish("keep/t", b"kept", 0, true, false, 0), WAIT);
    s.expect_silence(SHORT);
}

// ---------------------------------------------------------------------------------------------
// 3.8 SUBSCRIBE, 3.10 UNSUBSCRIBE

/// v311:[MQTT-3.8.3-1] a SUBSCRIBE whose Topic Filter is not UTF-8 closes the connection.
#[test]
fn subscribe_filter_not_utf8_closes_mqtt_3_8_3_1() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "bad-filter");
    let mut body = 1u16.to_be_bytes().to_vec();
    put_str(&mut body, &[b'a', 0xc0, 0xaf]);
    body.push(0);
    c.send(&packet(0x82, &body));
    let seen = c.expect_closed(WAIT);
    assert!(seen.iter().all(|p| p.kind() != 9), "SUBACK sent: {seen:?}");
}

/// v311:[MQTT-3.10.3-1] an UNSUBSCRIBE whose Topic Filter is not UTF-8 closes the connection.
#[test]
fn unsubscribe_filter_not_utf8_closes_mqtt_3_10_3_1() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "bad-unsub");
    let mut body = 1u16.to_be_bytes().to_vec();
    put_str(&mut body, &[b'a', 0xc0, 0xaf]);
    c.send(&packet(0xa2, &body));
    let seen = c.expect_closed(WAIT);
    assert!(
        seen.iter().all(|p| p.kind() != 11),
        "UNSUBACK sent: {seen:?}"
    );
}

/// v311:[MQTT-3.10.4-3] a QoS 2 delivery the server had started before the UNSUBSCRIBE is
/// completed: the subscriber's PUBREC still gets its PUBREL.
#[test]
fn unsubscribe_completes_started_qos2_delivery_mqtt_3_10_4_3() {
    let b = Broker::start("");
    let mut s = subscriber(&b, "unsub-q2", "unsub/q2", 2);
    let mut p = Raw::mqtt_connect(b.port(), "unsub-q2-pub");
    p.send(&publish("unsub/q2", b"m", 2, false, false, 5));
    p.expect_bytes(&pubrec(5), WAIT);
    p.send(&pubrel(5));
    p.expect_bytes(&pubcomp(5), WAIT);
    let m = s.expect_packet(WAIT);
    assert_eq!((m.kind(), m.qos()), (3, 2), "{m:?}");
    s.send(&unsubscribe(9, &["unsub/q2"]));
    s.expect_bytes(&unsuback(9), WAIT);
    s.send(&pubrec(m.pid()));
    s.expect_bytes(&pubrel(m.pid()), WAIT);
    s.send(&pubcomp(m.pid()));
    s.expect_silence(SHORT);
}

/// v311:[MQTT-3.10.4-6] an UNSUBSCRIBE with several filters is handled as that many
/// UNSUBSCRIBEs answered by one UNSUBACK: both named filters stop, the third still delivers.
#[test]
fn unsubscribe_several_filters_one_unsuback_mqtt_3_10_4_6() {
    let b = Broker::start("");
    let mut s = Raw::mqtt_connect(b.port(), "unsub-many");
    s.subscribe(
        1,
        &[("many/1", 0), ("many/2", 0), ("many/3", 0)],
        &[0, 0, 0],
    );
    s.send(&unsubscribe(2, &["many/1", "many/3"]));
    s.expect_bytes(&unsuback(2), WAIT);
    let mut p = Raw::mqtt_connect(b.port(), "unsub-many-pub");
    for t in ["many/1", "many/2", "many/3"] {
        p.send(&publish(t, b"x", 0, false, false, 0));
    }
    s.expect_bytes(&publish("many/2", b"x", 0, false, false, 0), WAIT);
    s.expect_silence(SHORT);
}

// ---------------------------------------------------------------------------------------------
// 3.14 DISCONNECT

/// v311:[MQTT-3.14.1-1] a DISCONNECT with a reserved bit set is not a DISCONNECT: the server
/// closes the connection, and since the client did not disconnect properly its will is
/// published.
#[test]
fn disconnect_reserved_flags_close_and_publish_will_mqtt_3_14_1_1() {
    let b = Broker::start("");
    let mut monitor = subscriber(&b, "dflag-monitor", "dflag/will", 0);
    let mut c = Raw::mqtt_connect_with(
        b.port(),
        &Connect::v311("dflag").will("dflag/will", b"w", 0, false),
        &CONNACK_OK,
    );
    c.send(&[0xe1, 0]);
    c.expect_closed(WAIT);
    monitor.expect_bytes(&publish("dflag/will", b"w", 0, false, false, 0), WAIT);
}

/// v311:[MQTT-3.14.4-2] (the client must send nothing after DISCONNECT) a PUBLISH that follows
/// the DISCONNECT in the same write is not processed.
#[test]
fn packets_after_disconnect_ignored_mqtt_3_14_4_2() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "after-disconnect");
    let mut bytes = DISCONNECT.to_vec();
    bytes.extend_from_slice(&publish("after/d", b"x", 0, true, false, 0));
    c.send(&bytes);
    c.expect_closed(WAIT);
    no_retained(&b, "after-check", "after/d");
}

// ---------------------------------------------------------------------------------------------
// 4.1 sessions, 4.6 ordering

/// v311:[MQTT-4.1.0-2] the session lasts at least as long as its connection: a subscription
/// made at the start still delivers after an idle while on the same connection.
#[test]
fn session_lasts_as_long_as_connection_mqtt_4_1_0_2() {
    let b = Broker::start("");
    let mut s = subscriber(&b, "lasting", "lasting/t", 1);
    std::thread::sleep(Duration::from_millis(1500));
    s.send(&PINGREQ);
    s.expect_bytes(&PINGRESP, WAIT);
    let mut p = Raw::mqtt_connect(b.port(), "lasting-pub");
    p.send(&publish("lasting/t", b"still", 0, false, false, 0));
    s.expect_bytes(&publish("lasting/t", b"still", 0, false, false, 0), WAIT);
}

/// v311:[MQTT-4.6.0-1] unacknowledged QoS 1 messages are re-sent on resume in the order they
/// were first sent, with their original packet ids and DUP 1.
#[test]
fn resent_publishes_keep_original_order_mqtt_4_6_0_1() {
    let b = Broker::start("");
    let c = Connect::v311("order-resume").clean(false);
    let mut s = Raw::mqtt_connect_with(b.port(), &c, &CONNACK_OK);
    s.subscribe(1, &[("resume/t", 1)], &[1]);
    let mut p = Raw::mqtt_connect(b.port(), "order-pub");
    for (i, m) in [b"m1", b"m2", b"m3", b"m4"].iter().enumerate() {
        let pid = i as u16 + 1;
        p.send(&publish("resume/t", *m, 1, false, false, pid));
        p.expect_bytes(&puback(pid), WAIT);
    }
    let first: Vec<Pkt> = (0..4).map(|_| s.expect_packet(WAIT)).collect();
    drop(s);
    std::thread::sleep(Duration::from_millis(200));
    let mut s = Raw::mqtt_connect_with(b.port(), &c, &[0x20, 2, 1, 0]);
    for f in &first {
        let again = s.expect_packet(WAIT);
        assert_eq!(
            (again.pid(), again.payload(), again.dup()),
            (f.pid(), f.payload(), true),
            "first {f:?}, again {again:?}"
        );
        s.send(&puback(again.pid()));
    }
    s.expect_silence(SHORT);
}

/// v311:[MQTT-4.6.0-2] the server acknowledges QoS 1 PUBLISHes (PUBACK) in the order they
/// arrived; v311:[MQTT-4.6.0-3] and QoS 2 PUBLISHes (PUBREC) likewise.
#[test]
fn acks_sent_in_publish_order_mqtt_4_6_0_2() {
    let b = Broker::start("");
    let mut p = Raw::mqtt_connect(b.port(), "ack-order");
    let ids: [u16; 5] = [40, 3, 17, 1, 29];
    let mut burst = Vec::new();
    for pid in ids {
        burst.extend_from_slice(&publish("ack/order", b"x", 1, false, false, pid));
    }
    for pid in ids {
        burst.extend_from_slice(&publish("ack/order2", b"y", 2, false, false, pid + 100));
    }
    p.send(&burst);
    for pid in ids {
        p.expect_bytes(&puback(pid), WAIT);
    }
    for pid in ids {
        p.expect_bytes(&pubrec(pid + 100), WAIT);
    }
}

/// v311:[MQTT-4.6.0-4] as QoS 2 sender the server sends PUBRELs in the order the PUBRECs
/// arrived (here the reverse of the PUBLISH order).
#[test]
fn pubrels_follow_pubrec_order_mqtt_4_6_0_4() {
    let b = Broker::start("");
    let mut s = subscriber(&b, "rel-order", "rel/order", 2);
    let mut p = Raw::mqtt_connect(b.port(), "rel-order-pub");
    for pid in 1..=3u16 {
        p.send(&publish("rel/order", b"z", 2, false, false, pid));
        p.expect_bytes(&pubrec(pid), WAIT);
        p.send(&pubrel(pid));
        p.expect_bytes(&pubcomp(pid), WAIT);
    }
    let got: Vec<Pkt> = (0..3).map(|_| s.expect_packet(WAIT)).collect();
    let mut burst = Vec::new();
    for m in got.iter().rev() {
        assert_eq!((m.kind(), m.qos()), (3, 2), "{m:?}");
        burst.extend_from_slice(&pubrec(m.pid()));
    }
    s.send(&burst);
    for m in got.iter().rev() {
        s.expect_bytes(&pubrel(m.pid()), WAIT);
    }
}

// ---------------------------------------------------------------------------------------------
// Deviations (rows `dev:` in docs/conformance.md)

/// Mosquitto's bridges with `try_private true` connect with protocol level 0x80 | level (0x84
/// for 3.1.1). 3.1.1 would answer an unknown level with CONNACK 0x01 (v311 section 3.1.2.2);
/// midge, like Mosquitto, accepts it as 3.1.1 so that Mosquitto bridges can connect.
#[test]
fn bridge_protocol_level_0x84_accepted_as_311() {
    let b = Broker::start("");
    let mut conn = Connect::v311("bridge-like");
    conn.level = 0x84;
    let mut c = Raw::mqtt_connect_with(b.port(), &conn, &CONNACK_OK);
    c.send(&PINGREQ);
    c.expect_bytes(&PINGRESP, WAIT);
}
