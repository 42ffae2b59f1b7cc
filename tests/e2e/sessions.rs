//! Sessions: clean session 0 keeps subscriptions and queues QoS 1/2 while
//! offline, delivered in order with session present 1; unacknowledged messages resent with DUP;
//! takeover by a second connection; `persistent_client_expiration` accepted.

use crate::common::*;
use std::time::Duration;

fn durable(id: &str) -> Connect {
    Connect::v311(id).clean(false)
}

fn qos_publish(p: &mut Raw, topic: &str, payload: &[u8], q: u8, pid: u16) {
    p.send(&publish(topic, payload, q, false, false, pid));
    match q {
        1 => p.expect_bytes(&puback(pid), WAIT),
        2 => {
            p.expect_bytes(&pubrec(pid), WAIT);
            p.send(&pubrel(pid));
            p.expect_bytes(&pubcomp(pid), WAIT);
        }
        _ => {
            p.send(&PINGREQ);
            p.expect_bytes(&PINGRESP, WAIT);
        }
    }
}

// v311:[MQTT-3.1.2-4] a clean-session-0 session keeps its subscriptions across connections;
// [MQTT-3.2.2-2] CONNACK session present = 1.
/// v311:[MQTT-3.1.3-2]/[MQTT-4.1.0-1]
#[test]
fn subscriptions_kept_without_clean_session_mqtt_3_1_2_4() {
    let b = Broker::start("");
    let mut a = Raw::mqtt_connect_with(b.port(), &durable("keep-subs"), &[0x20, 2, 0, 0]);
    a.subscribe(1, &[("ks/t", 1)], &[1]);
    a.send(&DISCONNECT);
    a.expect_closed(WAIT);
    let mut a = Raw::mqtt_connect_with(b.port(), &durable("keep-subs"), &[0x20, 2, 1, 0]);
    let mut p = Raw::mqtt_connect(b.port(), "keep-subs-pub");
    qos_publish(&mut p, "ks/t", b"still subscribed", 1, 1);
    let got = a.collect_publishes(1, WAIT);
    assert_eq!(got[0].payload(), b"still subscribed");
}

// v311:[MQTT-3.1.2-5] QoS 1 and 2 messages published while the client is offline are stored
// and delivered on reconnect, in order [MQTT-4.6.0-6]; QoS 0 ones are not (queue_qos0_messages
// false, Mosquitto's default).
/// v311:[MQTT-4.5.0-1]/[MQTT-4.6.0-6]
#[test]
fn offline_qos1_qos2_queued_and_delivered_in_order_mqtt_3_1_2_5() {
    let b = Broker::start("");
    let mut a = Raw::mqtt_connect_with(b.port(), &durable("offline-q"), &[0x20, 2, 0, 0]);
    a.subscribe(1, &[("oq/#", 2)], &[2]);
    a.send(&DISCONNECT);
    a.expect_closed(WAIT);
    let mut p = Raw::mqtt_connect(b.port(), "offline-q-pub");
    qos_publish(&mut p, "oq/a", b"m1", 1, 1);
    qos_publish(&mut p, "oq/b", b"m2", 2, 2);
    qos_publish(&mut p, "oq/a", b"m3-qos0", 0, 0);
    qos_publish(&mut p, "oq/c", b"m4", 1, 3);
    qos_publish(&mut p, "oq/a", b"m5", 2, 4);
    let mut a = Raw::mqtt_connect_with(b.port(), &durable("offline-q"), &[0x20, 2, 1, 0]);
    let got = a.collect_publishes(4, WAIT);
    let seen: Vec<(String, Vec<u8>, u8)> = got
        .iter()
        .map(|p| (p.topic(), p.payload().to_vec(), p.qos()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("oq/a".into(), b"m1".to_vec(), 1),
            ("oq/b".into(), b"m2".to_vec(), 2),
            ("oq/c".into(), b"m4".to_vec(), 1),
            ("oq/a".into(), b"m5".to_vec(), 2),
        ]
    );
    a.quiet(Duration::from_millis(400));
}

// v311:[MQTT-4.4.0-1] on reconnect with clean session 0, unacknowledged PUBLISHes are resent
// with the original packet id and DUP=1 [MQTT-3.3.1-1].
/// v311:[MQTT-3.3.1-1]
#[test]
fn unacked_qos1_resent_with_dup_after_reconnect_mqtt_4_4_0_1() {
    let b = Broker::start("");
    let mut a = Raw::mqtt_connect_with(b.port(), &durable("resend-1"), &[0x20, 2, 0, 0]);
    a.subscribe(1, &[("rs1/t", 1)], &[1]);
    let mut p = Raw::mqtt_connect(b.port(), "resend-1-pub");
    qos_publish(&mut p, "rs1/t", b"ack me", 1, 1);
    let first = a.expect_packet(WAIT);
    assert_eq!(
        hex(&first.bytes),
        hex(&publish("rs1/t", b"ack me", 1, false, false, first.pid()))
    );
    drop(a); // no PUBACK
    std::thread::sleep(Duration::from_millis(200));
    let mut a = Raw::mqtt_connect_with(b.port(), &durable("resend-1"), &[0x20, 2, 1, 0]);
    a.expect_bytes(
        &publish("rs1/t", b"ack me", 1, false, true, first.pid()),
        WAIT,
    );
    a.send(&puback(first.pid()));
    a.expect_silence(Duration::from_millis(400));
    // Acknowledged now: not resent on the next reconnect.
    a.send(&DISCONNECT);
    a.expect_closed(WAIT);
    let mut a = Raw::mqtt_connect_with(b.port(), &durable("resend-1"), &[0x20, 2, 1, 0]);
    a.expect_silence(Duration::from_millis(400));
}

// v311:[MQTT-4.4.0-1] a QoS 2 flow interrupted after PUBREC resumes with PUBREL on reconnect;
// interrupted before PUBREC, the PUBLISH is resent with DUP=1.
#[test]
fn interrupted_qos2_flows_resumed_after_reconnect_mqtt_4_4_0_1() {
    let b = Broker::start("");
    let mut a = Raw::mqtt_connect_with(b.port(), &durable("resend-2"), &[0x20, 2, 0, 0]);
    a.subscribe(1, &[("rs2/t", 2)], &[2]);
    let mut p = Raw::mqtt_connect(b.port(), "resend-2-pub");
    qos_publish(&mut p, "rs2/t", b"one", 2, 1);
    qos_publish(&mut p, "rs2/t", b"two", 2, 2);
    let one = a.expect_packet(WAIT);
    let two = a.expect_packet(WAIT);
    assert_eq!((one.payload(), two.payload()), (&b"one"[..], &b"two"[..]));
    a.send(&pubrec(one.pid()));
    a.expect_bytes(&pubrel(one.pid()), WAIT);
    drop(a); // no PUBCOMP for one, no PUBREC for two
    std::thread::sleep(Duration::from_millis(200));
    let mut a = Raw::mqtt_connect_with(b.port(), &durable("resend-2"), &[0x20, 2, 1, 0]);
    let mut got = [a.expect_packet(WAIT), a.expect_packet(WAIT)];
    got.sort_by_key(|p| p.kind());
    // PUBLISH (kind 3) "two" with DUP, and PUBREL (kind 6) for "one".
    assert_eq!(
        hex(&got[0].bytes),
        hex(&publish("rs2/t", b"two", 2, false, true, two.pid()))
    );
    assert_eq!(hex(&got[1].bytes), hex(&pubrel(one.pid())));
    a.send(&pubcomp(one.pid()));
    a.send(&pubrec(two.pid()));
    a.expect_bytes(&pubrel(two.pid()), WAIT);
    a.send(&pubcomp(two.pid()));
    a.expect_silence(Duration::from_millis(400));
}

// v311:[MQTT-3.1.4-2] a second connection with the same client id takes over: the first one is
// closed; with clean session 0 the session (subscriptions) carries over.
#[test]
fn takeover_closes_first_connection_mqtt_3_1_4_2() {
    let b = Broker::start("");
    let mut first = Raw::mqtt_connect_with(b.port(), &durable("same-id"), &[0x20, 2, 0, 0]);
    first.subscribe(1, &[("to/t", 1)], &[1]);
    let mut second = Raw::mqtt_connect_with(b.port(), &durable("same-id"), &[0x20, 2, 1, 0]);
    first.expect_closed(WAIT);
    let mut p = Raw::mqtt_connect(b.port(), "same-id-pub");
    qos_publish(&mut p, "to/t", b"to second", 1, 1);
    let got = second.collect_publishes(1, WAIT);
    assert_eq!(got[0].payload(), b"to second");
}

// Takeover with clean session: the first connection is closed, the new one starts fresh.
#[test]
fn takeover_with_clean_session_closes_first_connection() {
    let b = Broker::start("");
    let mut first = Raw::mqtt_connect(b.port(), "same-clean");
    let mut second = Raw::mqtt_connect(b.port(), "same-clean");
    first.expect_closed(WAIT);
    second.send(&PINGREQ);
    second.expect_bytes(&PINGRESP, WAIT);
}

// Offline messages are bounded by max_queued_messages: a prefix (in order) is kept, never more
// than inflight + queue limit, never out of order.
#[test]
fn offline_queue_bounded_by_max_queued_messages() {
    let b = Broker::start("max_queued_messages 5\nmax_inflight_messages 2");
    let mut a = Raw::mqtt_connect_with(b.port(), &durable("bounded"), &[0x20, 2, 0, 0]);
    a.subscribe(1, &[("bq/t", 1)], &[1]);
    a.send(&DISCONNECT);
    a.expect_closed(WAIT);
    let mut p = Raw::mqtt_connect(b.port(), "bounded-pub");
    for i in 0..20u16 {
        qos_publish(&mut p, "bq/t", &i.to_be_bytes(), 1, i + 1);
    }
    let mut a = Raw::mqtt_connect_with(b.port(), &durable("bounded"), &[0x20, 2, 1, 0]);
    let mut got = Vec::new();
    while let Got::Packet(pk) = a.read_packet(Duration::from_millis(700)) {
        assert_eq!(pk.kind(), 3);
        a.send(&puback(pk.pid()));
        got.push(u16::from_be_bytes([pk.payload()[0], pk.payload()[1]]));
    }
    assert!(
        (5..=7).contains(&got.len()),
        "expected 5..=7 queued messages, got {got:?}"
    );
    assert_eq!(got, (0..got.len() as u16).collect::<Vec<_>>());
}

// `persistent_client_expiration 1h` (Mosquitto syntax) is accepted and sessions still work.
#[test]
fn persistent_client_expiration_accepted() {
    let b = Broker::start("persistent_client_expiration 1h");
    let mut a = Raw::mqtt_connect_with(b.port(), &durable("expiring"), &[0x20, 2, 0, 0]);
    a.send(&DISCONNECT);
    a.expect_closed(WAIT);
    Raw::mqtt_connect_with(b.port(), &durable("expiring"), &[0x20, 2, 1, 0]);
}

// rumqttc with clean_session false: messages published while it was away arrive on reconnect.
#[test]
fn rumqttc_persistent_session_receives_offline_messages() {
    let b = Broker::start("");
    let mut o = Mq::options(b.port(), "rq-durable");
    o.set_clean_session(false);
    let c = Mq::connect_with(o.clone());
    c.subscribe("rqd/#", 1);
    c.client.disconnect().unwrap();
    drop(c);
    assert!(b.wait_for_log("Client rq-durable disconnected", WAIT) || is_mosquitto());
    std::thread::sleep(Duration::from_millis(200));
    let mut p = Raw::mqtt_connect(b.port(), "rqd-pub");
    for i in 0..3u8 {
        qos_publish(&mut p, "rqd/x", &[i], 1, i as u16 + 1);
    }
    let c = Mq::connect_with(o);
    for i in 0..3u8 {
        let m = c.next_publish(WAIT).expect("offline message lost");
        assert_eq!(&m.payload[..], &[i]);
    }
}
