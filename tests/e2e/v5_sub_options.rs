//! MQTT 5 subscription options and Subscription Identifiers: No Local, Retain
//! As Published, Retain Handling 0/1/2; Subscription Identifiers sent with each matching message,
//! all of them when several subscriptions match.

use crate::common::v5::*;
use crate::common::*;
use std::collections::BTreeSet;

fn retained(port: u16, topic: &str, payload: &[u8]) {
    let mut p = connect5(port, &format!("ret-{topic}"));
    p.send(&publish5(topic, payload, 1, true, 1, &Props::new()));
    expect_kind(&mut p, 4, WAIT);
}

// v5:[MQTT-3.8.3-3] No Local: the client's own messages are not sent back to it, while other
// subscribers get them and it still gets other clients' messages.
#[test]
fn v5_no_local_suppresses_own_messages_only_mqtt_3_8_3_3() {
    let b = Broker::start("");
    let mut me = connect5(b.port(), "nl-me");
    sub5(&mut me, 1, "nl/t", opts(1, true, false, 0), None, 1);
    let mut other = connect5(b.port(), "nl-other");
    sub5(&mut other, 1, "nl/t", 1, None, 1);
    pub5_qos1(&mut me, "nl/t", b"mine", 1, &Props::new());
    assert_eq!(collect5(&mut other, 1, WAIT)[0].payload, b"mine");
    me.quiet(secs(0.5));
    let mut third = connect5(b.port(), "nl-third");
    pub5_qos1(&mut third, "nl/t", b"theirs", 2, &Props::new());
    assert_eq!(collect5(&mut me, 1, WAIT)[0].payload, b"theirs");
    // Without No Local the client does get its own message (QoS 0: no PUBACK to interleave).
    let mut plain = connect5(b.port(), "nl-plain");
    sub5(&mut plain, 1, "nl/t", 1, None, 1);
    plain.send(&publish5("nl/t", b"echo", 0, false, 0, &Props::new()));
    assert_eq!(next_pub5(&mut plain, WAIT).payload, b"echo");
}

// v5:[MQTT-3.3.1-12] Retain As Published 0: a live retained message is forwarded with RETAIN 0;
// v5:[MQTT-3.3.1-13] Retain As Published 1: with RETAIN as published (1).
#[test]
fn v5_retain_as_published_keeps_retain_flag_mqtt_3_3_1_13() {
    let b = Broker::start("");
    let mut rap = connect5(b.port(), "rap-1");
    sub5(&mut rap, 1, "rap/t", opts(1, false, true, 0), None, 1);
    let mut plain = connect5(b.port(), "rap-0");
    sub5(&mut plain, 1, "rap/t", opts(1, false, false, 0), None, 1);
    retained(b.port(), "rap/t", b"kept");
    let a = &collect5(&mut rap, 1, WAIT)[0];
    assert!(a.retain, "Retain As Published 1 cleared RETAIN: {a:?}");
    let p = &collect5(&mut plain, 1, WAIT)[0];
    assert!(!p.retain, "Retain As Published 0 kept RETAIN: {p:?}");
    // A non-retained message stays non-retained for both.
    let mut c = connect5(b.port(), "rap-pub");
    pub5_qos1(&mut c, "rap/t", b"live", 2, &Props::new());
    assert!(!collect5(&mut rap, 1, WAIT)[0].retain);
    assert!(!collect5(&mut plain, 1, WAIT)[0].retain);
}

// v5:[MQTT-3.3.1-9] Retain Handling 0: retained messages are sent at every subscribe, with RETAIN
// 1, even when the subscription already exists.
#[test]
fn v5_retain_handling_0_sends_retained_at_every_subscribe_mqtt_3_3_1_9() {
    let b = Broker::start("");
    retained(b.port(), "rh0/t", b"r0");
    let mut c = connect5(b.port(), "rh0");
    sub5(&mut c, 1, "rh0/t", opts(1, false, false, 0), None, 1);
    let m = &collect5(&mut c, 1, WAIT)[0];
    assert!(m.retain && m.payload == b"r0", "{m:?}");
    sub5(&mut c, 2, "rh0/t", opts(1, false, false, 0), None, 1);
    let m = &collect5(&mut c, 1, WAIT)[0];
    assert!(m.retain && m.payload == b"r0", "{m:?}");
}

// v5:[MQTT-3.3.1-10] Retain Handling 1: retained messages only if the subscription did not exist.
#[test]
fn v5_retain_handling_1_sends_retained_only_for_new_subscription_mqtt_3_3_1_10() {
    let b = Broker::start("");
    retained(b.port(), "rh1/t", b"r1");
    let mut c = connect5(b.port(), "rh1");
    sub5(&mut c, 1, "rh1/t", opts(1, false, false, 1), None, 1);
    let m = &collect5(&mut c, 1, WAIT)[0];
    assert!(m.retain && m.payload == b"r1", "{m:?}");
    sub5(&mut c, 2, "rh1/t", opts(1, false, false, 1), None, 1);
    c.quiet(secs(0.5));
}

// v5:[MQTT-3.3.1-11] Retain Handling 2: no retained messages at subscribe; live ones still flow.
#[test]
fn v5_retain_handling_2_sends_no_retained_mqtt_3_3_1_11() {
    let b = Broker::start("");
    retained(b.port(), "rh2/t", b"r2");
    let mut c = connect5(b.port(), "rh2");
    sub5(&mut c, 1, "rh2/t", opts(1, false, false, 2), None, 1);
    c.quiet(secs(0.5));
    let mut p = connect5(b.port(), "rh2-pub");
    pub5_qos1(&mut p, "rh2/t", b"live", 1, &Props::new());
    assert_eq!(collect5(&mut c, 1, WAIT)[0].payload, b"live");
}

// v5:[MQTT-3.3.4-3]/[MQTT-3.3.4-4]/[MQTT-3.3.4-5]: with overlapping subscriptions with ids 1 and
// 2 (and one without id), the message carries the ids of all matching subscriptions: one copy
// with both ids, or one copy per subscription each with its own id.
#[test]
fn v5_subscription_identifiers_of_all_matching_subscriptions_mqtt_3_3_4_4() {
    let b = Broker::start("");
    let mut c = connect5(b.port(), "sid");
    sub5(&mut c, 1, "sid/#", 0, Some(1), 0);
    sub5(&mut c, 2, "sid/+", 0, Some(2), 0);
    sub5(&mut c, 3, "sid/t", 0, None, 0);
    let mut p = connect5(b.port(), "sid-pub");
    p.send(&publish5("sid/t", b"x", 0, false, 0, &Props::new()));
    let got = drain(&mut c, secs(0.7));
    assert!(!got.is_empty(), "no message");
    let all: BTreeSet<u32> = got.iter().flat_map(|m| m.props.sub_ids()).collect();
    assert_eq!(all, BTreeSet::from([1, 2]), "{got:?}");
    if got.len() == 1 {
        assert_eq!(got[0].props.sub_ids().len(), 2, "{got:?}");
    } else {
        assert!(got.len() <= 3, "{got:?}");
        for m in &got {
            assert!(m.props.sub_ids().len() <= 1, "per-subscription copy: {m:?}");
        }
    }
    // A message matching only the id-less subscription carries no id.
    let mut q = connect5(b.port(), "sid-pub2");
    sub5(&mut c, 4, "other/t", 0, None, 0);
    q.send(&publish5("other/t", b"y", 0, false, 0, &Props::new()));
    let m = next_pub5(&mut c, WAIT);
    assert!(m.props.sub_ids().is_empty(), "{m:?}");
}

// Section 3.8.2.1.2: re-subscribing to the same filter replaces the subscription, including its
// Subscription Identifier (and removing it when the new SUBSCRIBE has none). Retained messages
// sent at subscribe carry the identifier too.
#[test]
fn v5_subscription_identifier_replaced_on_resubscribe_mqtt_3_8_4_3() {
    let b = Broker::start("");
    retained(b.port(), "sidr/t", b"old");
    let mut c = connect5(b.port(), "sidr");
    sub5(&mut c, 1, "sidr/t", 0, Some(5), 0);
    assert_eq!(next_pub5(&mut c, WAIT).props.sub_ids(), [5]);
    sub5(
        &mut c,
        2,
        "sidr/t",
        opts(0, false, false, 2),
        Some(268_435_455),
        0,
    );
    let mut p = connect5(b.port(), "sidr-pub");
    p.send(&publish5("sidr/t", b"a", 0, false, 0, &Props::new()));
    assert_eq!(next_pub5(&mut c, WAIT).props.sub_ids(), [268_435_455]);
    sub5(&mut c, 3, "sidr/t", opts(0, false, false, 2), None, 0);
    p.send(&publish5("sidr/t", b"b", 0, false, 0, &Props::new()));
    let m = next_pub5(&mut c, WAIT);
    assert_eq!(m.payload, b"b");
    assert!(m.props.sub_ids().is_empty(), "{m:?}");
}

// Real clients: `mosquitto_sub -V mqttv5 -D subscribe subscription-identifier 7 -F %S` prints the
// identifier of the message it receives.
#[test]
fn v5_mosquitto_sub_prints_subscription_identifier_mqtt_3_3_4_3() {
    let b = Broker::start("");
    let sub = Sub::spawn(
        b.port(),
        5,
        &[
            "-V",
            "mqttv5",
            "-t",
            "sidm/t",
            "-D",
            "subscribe",
            "subscription-identifier",
            "7",
            "-F",
            "%S %p",
            "-C",
            "1",
        ],
    );
    std::thread::sleep(secs(0.5));
    mosquitto_pub(b.port(), &["-V", "mqttv5", "-t", "sidm/t", "-m", "hi"]);
    let (lines, _) = sub.finish(secs(6.0));
    assert_eq!(lines, ["7 hi"]);
}
