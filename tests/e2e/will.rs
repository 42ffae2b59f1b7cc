//! Will messages: published on socket close, keepalive timeout and protocol
//! violation; not after DISCONNECT; will QoS and retain honoured.

use crate::common::*;
use std::time::{Duration, Instant};

fn monitor(b: &Broker, filter: &str) -> Raw {
    let mut m = Raw::mqtt_connect(b.port(), &format!("monitor-{}", filter.len()));
    m.subscribe(1, &[(filter, 2)], &[2]);
    m
}

fn with_will(b: &Broker, id: &str, topic: &str, q: u8, retain: bool) -> Raw {
    let c = Connect::v311(id).will(topic, b"gone", q, retain);
    Raw::mqtt_connect_with(b.port(), &c, &CONNACK_OK)
}

// v311:[MQTT-3.1.2-8] the will is published when the network connection is closed without a
// DISCONNECT (here: the client closes its socket).
#[test]
fn will_published_on_socket_close_mqtt_3_1_2_8() {
    let b = Broker::start("");
    let mut m = monitor(&b, "will/close");
    let c = with_will(&b, "w-close", "will/close", 1, false);
    drop(c);
    let p = m.collect_publishes(1, WAIT);
    assert_eq!(p[0].topic(), "will/close");
    assert_eq!(p[0].payload(), b"gone");
    assert_eq!(p[0].qos(), 1);
    assert!(!p[0].retain());
}

// v311 §3.1.2.5: "the Server fails to communicate with the Client within the Keep Alive time"
// publishes the will. Keepalive 1 s → will within ~1.5 s (generous bound).
#[test]
fn will_published_on_keepalive_timeout() {
    let b = Broker::start("");
    let mut m = monitor(&b, "will/ka");
    let c = Connect::v311("w-ka")
        .keepalive(1)
        .will("will/ka", b"gone", 0, false);
    let _c = Raw::mqtt_connect_with(b.port(), &c, &CONNACK_OK);
    let t0 = Instant::now();
    let p = m.collect_publishes(1, Duration::from_secs(6));
    let took = t0.elapsed();
    assert_eq!(p[0].topic(), "will/ka");
    assert!(
        took >= Duration::from_millis(900),
        "will too early: {took:?}"
    );
}

// v311 §3.1.2.5: "the Server closes the Network Connection because of a protocol error"
// publishes the will (here a second CONNECT, [MQTT-3.1.0-2]).
#[test]
fn will_published_on_protocol_violation_mqtt_3_1_0_2() {
    if skip_on_mosquitto("2.0.11 drops the will on a second CONNECT (spec wins)") {
        return;
    }
    let b = Broker::start("");
    let mut m = monitor(&b, "will/proto");
    let mut c = with_will(&b, "w-proto", "will/proto", 2, false);
    c.send(&Connect::v311("w-proto").bytes());
    c.expect_closed(WAIT);
    let p = m.collect_publishes(1, WAIT);
    assert_eq!(p[0].topic(), "will/proto");
    assert_eq!(p[0].qos(), 2);
}

// Invalid packet bytes (a PUBLISH with a wildcard topic) also fire the will.
#[test]
fn will_published_on_malformed_packet() {
    let b = Broker::start("");
    let mut m = monitor(&b, "will/bad");
    let mut c = with_will(&b, "w-bad", "will/bad", 0, false);
    c.send(&publish("a/+", b"x", 0, false, false, 0));
    c.expect_closed(WAIT);
    let p = m.collect_publishes(1, WAIT);
    assert_eq!(p[0].topic(), "will/bad");
}

// v311:[MQTT-3.1.2-10]/[MQTT-3.14.4-3] after DISCONNECT the will is discarded, not published.
/// v311:[MQTT-3.1.2-10]
#[test]
fn will_not_published_after_disconnect_mqtt_3_14_4_3() {
    let b = Broker::start("");
    let mut m = monitor(&b, "will/#");
    let mut c = with_will(&b, "w-clean", "will/clean", 1, true);
    c.send(&DISCONNECT);
    c.expect_closed(WAIT);
    m.expect_silence(Duration::from_millis(800));
    // Nor was it stored as retained.
    let mut s = Raw::mqtt_connect(b.port(), "w-check");
    s.subscribe(1, &[("will/#", 0)], &[0]);
    s.expect_silence(Duration::from_millis(400));
}

// v311:[MQTT-3.1.2-15]/[MQTT-3.1.2-17] will QoS and will retain are honoured: the monitor gets
// it at the will QoS (live, RETAIN=0) and a later subscriber gets it retained.
#[test]
fn will_qos_and_retain_honoured_mqtt_3_1_2_17() {
    let b = Broker::start("");
    let mut m = monitor(&b, "will/ret");
    let c = with_will(&b, "w-ret", "will/ret", 2, true);
    drop(c);
    let p = m.collect_publishes(1, WAIT);
    assert_eq!((p[0].qos(), p[0].retain()), (2, false));
    let mut s = Raw::mqtt_connect(b.port(), "w-later");
    s.subscribe(1, &[("will/ret", 1)], &[1]);
    let p = s.collect_publishes(1, WAIT);
    assert_eq!(
        hex(&p[0].bytes),
        hex(&publish("will/ret", b"gone", 1, true, false, p[0].pid()))
    );
}

// A will at QoS 0 to a QoS 2 subscription arrives at QoS 0 (min rule applies to wills too).
#[test]
fn will_qos0_delivered_at_qos0() {
    let b = Broker::start("");
    let mut m = monitor(&b, "will/q0");
    drop(with_will(&b, "w-q0", "will/q0", 0, false));
    m.expect_bytes(&publish("will/q0", b"gone", 0, false, false, 0), WAIT);
}

// MQTT 3.1 clients' wills work too.
#[test]
fn will_from_mqtt31_client() {
    let b = Broker::start("");
    let mut m = monitor(&b, "will/v31");
    let c = Connect::v31("w-31").will("will/v31", b"gone", 1, false);
    drop(Raw::mqtt_connect_with(b.port(), &c, &CONNACK_OK));
    let p = m.collect_publishes(1, WAIT);
    assert_eq!(p[0].topic(), "will/v31");
}

// PubSubClient's `stop()` right after a publish: the client's FIN arrives a fraction of a
// millisecond after its last packet. The broker must still notice the close (read EOF), close
// its side and publish the will (the recorded session's connection 2).
#[test]
fn will_published_when_fin_follows_publish_closely() {
    let b = Broker::start("");
    let mut m = monitor(&b, "will/fin/#");
    for (i, micros) in [0u64, 300, 1000, 5000].into_iter().enumerate() {
        let topic = format!("will/fin/{i}");
        let mut c = with_will(&b, &format!("w-fin-{i}"), &topic, 1, false);
        c.send(&publish("will/other", b"online", 0, true, false, 0));
        std::thread::sleep(Duration::from_micros(micros));
        c.shutdown_write();
        assert!(
            c.closes_within(WAIT),
            "FIN {micros} us after a PUBLISH: broker kept the connection open"
        );
        let p = m.collect_publishes(1, WAIT);
        assert_eq!(p[0].topic(), topic);
    }
}
