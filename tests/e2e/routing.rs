//! Routing: exact topics, `+` and `#` (with `a/#` matching `a`), `$` topics
//! hidden from leading wildcards, one copy for overlapping subscriptions, per-publisher order.

use crate::common::*;
use std::time::Duration;

/// Subscribes `filter` (QoS 0), publishes every topic in `topics` in order, and returns the
/// topics the subscriber received (bounded wait for `expect` messages, then a short silence).
fn routed(b: &Broker, filter: &str, topics: &[&str], expect: usize) -> Vec<String> {
    let mut sub = Raw::mqtt_connect(b.port(), &format!("route-sub-{}", filter.len()));
    sub.subscribe(1, &[(filter, 0)], &[0]);
    let mut publ = Raw::mqtt_connect(b.port(), &format!("route-pub-{}", filter.len()));
    for t in topics {
        publ.send(&publish(t, b"m", 0, false, false, 0));
    }
    // A final marker on a topic the filter matches proves everything before was routed.
    let got = sub.collect_publishes(expect, WAIT);
    sub.expect_silence(Duration::from_millis(300));
    got.iter().map(|p| p.topic()).collect()
}

// v311:[MQTT-4.7.1-3] `+` matches exactly one level, including an empty one.
/// v311:[MQTT-3.3.2-3]
#[test]
fn plus_matches_exactly_one_level_mqtt_4_7_1_3() {
    let b = Broker::start("");
    let got = routed(
        &b,
        "p/+/x",
        &[
            "p/a/x", "p/a/b/x", "p/x", "p//x", "p/a/x/y", "q/a/x", "p/b/x",
        ],
        3,
    );
    assert_eq!(got, vec!["p/a/x", "p//x", "p/b/x"]);
}

// v311:[MQTT-4.7.1-2] `#` matches the parent and any number of child levels: `a/#` matches `a`.
#[test]
fn hash_matches_parent_and_all_children_mqtt_4_7_1_2() {
    let b = Broker::start("");
    let got = routed(&b, "h/#", &["h", "h/a", "h/a/b/c", "hx", "x/h", "h/"], 4);
    assert_eq!(got, vec!["h", "h/a", "h/a/b/c", "h/"]);
}

// `+` as a whole filter and `+/+`.
#[test]
fn plus_alone_matches_single_level_topics() {
    let b = Broker::start("");
    let got = routed(&b, "+", &["one", "two/levels", "three"], 2);
    assert_eq!(got, vec!["one", "three"]);
}

// v311:[MQTT-4.7.2-1] topics starting with `$` are not matched by filters starting with a
// wildcard (`#`, `+/x`), but are matched by `$.../#`.
#[test]
fn dollar_topics_not_matched_by_leading_wildcards_mqtt_4_7_2_1() {
    let b = Broker::start("");
    let mut all = Raw::mqtt_connect(b.port(), "dollar-all");
    all.subscribe(1, &[("#", 0), ("+/x", 0), ("+/+", 0)], &[0, 0, 0]);
    let mut dollar = Raw::mqtt_connect(b.port(), "dollar-explicit");
    dollar.subscribe(1, &[("$app/#", 0), ("$app/+", 0)], &[0, 0]);
    let mut publ = Raw::mqtt_connect(b.port(), "dollar-pub");
    publ.send(&publish("$app/x", b"hidden", 0, false, false, 0));
    publ.send(&publish("plain/x", b"seen", 0, false, false, 0));
    let got = dollar.collect_publishes(1, WAIT);
    assert_eq!(got[0].topic(), "$app/x");
    dollar.expect_silence(Duration::from_millis(300));
    let got = all.collect_publishes(1, WAIT);
    assert_eq!(
        got[0].topic(),
        "plain/x",
        "$ topic matched a leading wildcard"
    );
    all.expect_silence(Duration::from_millis(300));
}

// `$SYS/x` published by a client is not matched by `#` or `+/x` either.
#[test]
fn sys_topic_not_matched_by_hash_or_plus_mqtt_4_7_2_1() {
    let b = Broker::start("sys_interval 0");
    let mut all = Raw::mqtt_connect(b.port(), "sys-all");
    all.subscribe(1, &[("#", 0), ("+/x", 0)], &[0, 0]);
    let mut publ = Raw::mqtt_connect(b.port(), "sys-pub");
    publ.send(&publish("$SYS/x", b"sys", 0, false, false, 0));
    publ.send(&publish("after/x", b"marker", 0, false, false, 0));
    let got = all.collect_publishes(1, WAIT);
    assert_eq!(got[0].topic(), "after/x");
    all.expect_silence(Duration::from_millis(300));
}

// Exact topics are case sensitive and distinguish trailing slashes [MQTT-4.7.3-4 non-normative].
/// v311:[MQTT-4.7.3-4]
#[test]
fn exact_topics_case_sensitive_and_slash_sensitive() {
    let b = Broker::start("");
    let got = routed(&b, "Case/T", &["case/t", "Case/T/", "/Case/T", "Case/T"], 1);
    assert_eq!(got, vec!["Case/T"]);
}

// v311:[MQTT-3.3.5-1] a client whose subscriptions overlap gets the message respecting the
// maximum granted QoS; midge sends exactly one copy, as Mosquitto does.
#[test]
fn overlapping_subscriptions_one_copy_at_highest_qos_mqtt_3_3_5_1() {
    if skip_on_mosquitto("Mosquitto 2.0 sends one copy per matching subscription") {
        return;
    }
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "overlap");
    c.subscribe(
        1,
        &[("o/+", 0), ("o/#", 2), ("o/x", 1), ("#", 0)],
        &[0, 2, 1, 0],
    );
    let mut publ = Raw::mqtt_connect(b.port(), "overlap-pub");
    publ.send(&publish("o/x", b"once", 2, false, false, 1));
    publ.expect_bytes(&pubrec(1), WAIT);
    publ.send(&pubrel(1));
    publ.expect_bytes(&pubcomp(1), WAIT);
    let got = c.collect_publishes(1, WAIT);
    assert_eq!(got[0].qos(), 2);
    match c.read_packet(Duration::from_millis(500)) {
        Got::Timeout => {}
        Got::Packet(p) if p.kind() == 6 => {
            c.send(&pubcomp(p.pid()));
            c.expect_silence(Duration::from_millis(500));
        }
        other => panic!("second copy: {other:?}"),
    }
}

// v311 §4.6: per-publisher order is kept: 1000 QoS 1 messages (rumqttc publisher) arrive at a
// QoS 1 raw subscriber in publish order.
/// v311:[MQTT-4.6.0-5]
#[test]
fn per_publisher_order_kept_for_1000_messages_mqtt_4_6_0_6() {
    let b = Broker::start("");
    let mut sub = Raw::mqtt_connect(b.port(), "order-sub");
    sub.subscribe(1, &[("order/#", 1)], &[1]);
    let publ = Mq::connect(b.port(), "order-pub");
    let producer = std::thread::spawn(move || {
        for i in 0..1000u32 {
            publ.publish("order/t", 1, false, &i.to_be_bytes());
        }
        // Keep the client alive until the broker has everything.
        std::thread::sleep(Duration::from_secs(3));
        drop(publ);
    });
    let got = sub.collect_publishes(1000, Duration::from_secs(30));
    let seq: Vec<u32> = got
        .iter()
        .map(|p| u32::from_be_bytes(p.payload().try_into().unwrap()))
        .collect();
    assert_eq!(seq, (0..1000).collect::<Vec<_>>());
    producer.join().unwrap();
}

// Two publishers interleaved: each one's order is kept at the subscriber (QoS 0, raw).
#[test]
fn order_kept_per_publisher_with_two_publishers() {
    let b = Broker::start("");
    let mut sub = Raw::mqtt_connect(b.port(), "order2-sub");
    sub.subscribe(1, &[("order2/+", 0)], &[0]);
    let mut threads = Vec::new();
    for who in 0..2u8 {
        let port = b.port();
        threads.push(std::thread::spawn(move || {
            let mut publ = Raw::mqtt_connect(port, &format!("order2-pub{who}"));
            let mut batch = Vec::new();
            for i in 0..500u32 {
                batch.extend(publish(
                    &format!("order2/{who}"),
                    &i.to_be_bytes(),
                    0,
                    false,
                    false,
                    0,
                ));
            }
            publ.send(&batch);
            publ.send(&PINGREQ);
            publ.expect_bytes(&PINGRESP, Duration::from_secs(10));
        }));
    }
    let got = sub.collect_publishes(1000, Duration::from_secs(20));
    for who in 0..2u8 {
        let topic = format!("order2/{who}");
        let seq: Vec<u32> = got
            .iter()
            .filter(|p| p.topic() == topic)
            .map(|p| u32::from_be_bytes(p.payload().try_into().unwrap()))
            .collect();
        assert_eq!(
            seq,
            (0..500).collect::<Vec<_>>(),
            "order of publisher {who}"
        );
    }
    for t in threads {
        t.join().unwrap();
    }
}

// A message is delivered to every matching subscriber (fan-out), each at its own QoS.
#[test]
fn fan_out_to_many_subscribers() {
    let b = Broker::start("");
    let mut subs: Vec<Raw> = (0..20)
        .map(|i| {
            let mut s = Raw::mqtt_connect(b.port(), &format!("fan-{i}"));
            let f = if i % 2 == 0 { "fan/#" } else { "fan/+" };
            s.subscribe(1, &[(f, (i % 3) as u8)], &[(i % 3) as u8]);
            s
        })
        .collect();
    let mut publ = Raw::mqtt_connect(b.port(), "fan-pub");
    publ.send(&publish("fan/out", b"all", 2, false, false, 1));
    publ.expect_bytes(&pubrec(1), WAIT);
    publ.send(&pubrel(1));
    publ.expect_bytes(&pubcomp(1), WAIT);
    for (i, s) in subs.iter_mut().enumerate() {
        let p = s.collect_publishes(1, WAIT);
        assert_eq!(p[0].payload(), b"all");
        assert_eq!(p[0].qos(), (i % 3) as u8);
    }
}
