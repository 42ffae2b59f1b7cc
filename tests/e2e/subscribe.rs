//! SUBSCRIBE / UNSUBSCRIBE: several filters with granted QoS, invalid filters
//! (0x80 for 3.1.1, disconnect for 3.1), UNSUBACK and the end of delivery.

use crate::common::*;
use std::time::Duration;

// v311:[MQTT-3.8.4-1]/[MQTT-3.9.3-1] one SUBACK with one return code per filter, in order.
/// v311:[MQTT-3.8.4-1]/[MQTT-3.8.4-2]/[MQTT-3.8.4-4]/[MQTT-3.8.4-5]/[MQTT-3.9.3-2]
/// v311:[MQTT-2.3.1-7]
#[test]
fn subscribe_several_filters_granted_qos_in_order_mqtt_3_9_3_1() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "multi-sub");
    c.subscribe(
        0x0a0b,
        &[("s/a", 2), ("s/b/+", 0), ("s/c/#", 1), ("s/d", 2)],
        &[2, 0, 1, 2],
    );
    let mut publ = Raw::mqtt_connect(b.port(), "multi-pub");
    for (t, q) in [("s/a", 2u8), ("s/b/x", 0), ("s/c/y/z", 1), ("s/d", 2)] {
        publ.send(&publish(t, t.as_bytes(), 2, false, false, 9));
        publ.expect_bytes(&pubrec(9), WAIT);
        publ.send(&pubrel(9));
        publ.expect_bytes(&pubcomp(9), WAIT);
        let p = c.collect_publishes(1, WAIT);
        assert_eq!(p[0].topic(), t);
        assert_eq!(p[0].qos(), q);
    }
}

// v311:[MQTT-3.8.4-3] a repeated SUBSCRIBE of the same filter replaces the old one (new QoS);
// the message arrives once.
#[test]
fn resubscribe_replaces_qos_mqtt_3_8_4_3() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "resub");
    c.subscribe(1, &[("rs/t", 0)], &[0]);
    c.subscribe(2, &[("rs/t", 1)], &[1]);
    let mut publ = Raw::mqtt_connect(b.port(), "resub-pub");
    publ.send(&publish("rs/t", b"v", 1, false, false, 1));
    publ.expect_bytes(&puback(1), WAIT);
    let p = c.collect_publishes(1, WAIT);
    assert_eq!(p[0].qos(), 1);
    c.expect_silence(Duration::from_millis(400));
}

// An invalid filter from a 3.1.1 client gets return code 0x80 (Failure) and the
// other filters of the same SUBSCRIBE are still granted. v311 §4.7.1: `#` must be last and `+`
// must occupy a whole level.
/// v311:[MQTT-3.8.4-5]/[MQTT-4.7.1-2]/[MQTT-4.7.1-3]
#[test]
fn invalid_filters_get_0x80_for_mqtt311() {
    if skip_on_mosquitto("Mosquitto 2.0.11 disconnects instead of answering 0x80") {
        return;
    }
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "bad-filter-311");
    c.subscribe(
        3,
        &[
            ("a/#/b", 1),
            ("ok/1", 1),
            ("a+", 0),
            ("x/#y", 0),
            ("ok/2", 0),
        ],
        &[0x80, 1, 0x80, 0x80, 0],
    );
    // Still connected and the valid filters work.
    let mut publ = Raw::mqtt_connect(b.port(), "bad-filter-pub");
    publ.send(&publish("ok/1", b"one", 0, false, false, 0));
    let p = c.collect_publishes(1, WAIT);
    assert_eq!(p[0].topic(), "ok/1");
    c.send(&PINGREQ);
    c.expect_bytes(&PINGRESP, WAIT);
}

// MQTT 3.1 has no failure return code, so a 3.1 client sending an invalid filter
// is disconnected (and nothing is granted).
#[test]
fn invalid_filter_from_mqtt31_client_disconnects() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect_with(b.port(), &Connect::v31("bad-filter-31"), &CONNACK_OK);
    c.send(&subscribe(1, &[("a/#/b", 0)]));
    let seen = c.expect_closed(WAIT);
    assert!(
        seen.iter().all(|p| p.kind() != 9 || p.body()[2..] != [0]),
        "filter granted: {seen:?}"
    );
    let mut b = b;
    b.assert_serves();
}

// v311:[MQTT-3.10.4-4]/[MQTT-3.11.2-1] UNSUBACK carries the UNSUBSCRIBE's packet id, and the
// server stops adding messages for that filter [MQTT-3.10.4-2].
/// v311:[MQTT-3.10.4-2]/[MQTT-2.3.1-7]
#[test]
fn unsubscribe_gets_unsuback_and_stops_delivery_mqtt_3_10_4_4() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "unsub");
    c.subscribe(1, &[("u/a", 0), ("u/b", 0)], &[0, 0]);
    c.send(&unsubscribe(0x4321, &["u/a"]));
    c.expect_bytes(&[0xb0, 0x02, 0x43, 0x21], WAIT);
    let mut publ = Raw::mqtt_connect(b.port(), "unsub-pub");
    publ.send(&publish("u/a", b"gone", 0, false, false, 0));
    publ.send(&publish("u/b", b"kept", 0, false, false, 0));
    let p = c.collect_publishes(1, WAIT);
    assert_eq!(
        p[0].topic(),
        "u/b",
        "message for the removed filter arrived"
    );
    c.expect_silence(Duration::from_millis(300));
}

// v311:[MQTT-3.10.4-5] UNSUBACK even when no filter matched an existing subscription.
#[test]
fn unsubscribe_unknown_filter_still_acked_mqtt_3_10_4_5() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "unsub-unknown");
    c.send(&unsubscribe(7, &["never/subscribed", "x/#"]));
    c.expect_bytes(&unsuback(7), WAIT);
}

// v311 §4.7.1: a wildcard unsubscribe removes the identical filter only.
/// v311:[MQTT-3.10.4-1]
#[test]
fn unsubscribe_wildcard_filter_is_matched_literally() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "unsub-literal");
    c.subscribe(1, &[("w/+", 0), ("w/x", 0)], &[0, 0]);
    c.send(&unsubscribe(2, &["w/+"]));
    c.expect_bytes(&unsuback(2), WAIT);
    let mut publ = Raw::mqtt_connect(b.port(), "unsub-literal-pub");
    publ.send(&publish("w/y", b"no", 0, false, false, 0));
    publ.send(&publish("w/x", b"yes", 0, false, false, 0));
    let p = c.collect_publishes(1, WAIT);
    assert_eq!(p[0].payload(), b"yes");
    c.expect_silence(Duration::from_millis(300));
}

// A SUBSCRIBE from mosquitto_sub with several -t gets them all.
#[test]
fn mosquitto_sub_with_several_topics() {
    let b = Broker::start("");
    let sub = Sub::spawn(
        b.port(),
        10,
        &[
            "-i", "multi-t", "-t", "mt/a", "-t", "mt/b/#", "-C", "2", "-v",
        ],
    );
    assert!(b.wait_for_log(" as multi-t (", WAIT));
    std::thread::sleep(Duration::from_millis(300));
    mosquitto_pub(b.port(), &["-t", "mt/a", "-m", "1"]);
    mosquitto_pub(b.port(), &["-t", "mt/b/c/d", "-m", "2"]);
    let (lines, _) = sub.finish(Duration::from_secs(10));
    assert_eq!(lines, vec!["mt/a 1".to_string(), "mt/b/c/d 2".to_string()]);
}
