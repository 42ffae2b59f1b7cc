//! MQTT 5 Topic Aliases: inbound aliases within the `Topic Alias Maximum`
//! announced in CONNACK (config `max_topic_alias`, default 10), per connection; outbound aliases
//! when the client sends a Topic Alias Maximum (beyond Mosquitto 2.0), never otherwise.

use crate::common::v5::*;
use crate::common::*;
use std::collections::HashMap;

fn alias(a: u16) -> Props {
    Props::new().u16(id::TOPIC_ALIAS, a)
}

// v5:[MQTT-3.3.2-12] the server accepts every alias from 1 to its Topic Alias Maximum: the first
// PUBLISH sets alias → topic, later ones with an empty topic and the alias go to that topic; a
// new topic with the same alias replaces the mapping (section 3.3.2.3.4).
#[test]
fn v5_inbound_topic_alias_set_then_used_and_remapped_mqtt_3_3_2_12() {
    let mut b = Broker::start("");
    let mut s = connect5(b.port(), "ta-sub");
    sub5(&mut s, 1, "ta/#", 0, None, 0);
    let mut p = connect5(b.port(), "ta-pub");
    p.send(&publish5("ta/one", b"1", 0, false, 0, &alias(1)));
    p.send(&publish5("", b"2", 0, false, 0, &alias(1)));
    p.send(&publish5("ta/ten", b"3", 0, false, 0, &alias(10)));
    p.send(&publish5("", b"4", 0, false, 0, &alias(1)));
    p.send(&publish5("ta/other", b"5", 0, false, 0, &alias(1)));
    p.send(&publish5("", b"6", 0, false, 0, &alias(1)));
    p.send(&publish5("", b"7", 0, false, 0, &alias(10)));
    let got: Vec<(String, Vec<u8>)> = collect5(&mut s, 7, WAIT)
        .into_iter()
        .map(|m| {
            assert!(
                !m.props.has(id::TOPIC_ALIAS),
                "alias to a client that allows none"
            );
            (m.topic, m.payload)
        })
        .collect();
    let want: Vec<(String, Vec<u8>)> = [
        ("ta/one", "1"),
        ("ta/one", "2"),
        ("ta/ten", "3"),
        ("ta/one", "4"),
        ("ta/other", "5"),
        ("ta/other", "6"),
        ("ta/ten", "7"),
    ]
    .iter()
    .map(|(t, p)| (t.to_string(), p.as_bytes().to_vec()))
    .collect();
    assert_eq!(got, want);
    assert_serves5(&mut b);
}

// v5:[MQTT-3.3.2-7] "A receiver MUST NOT carry forward any Topic Alias mappings from one Network
// Connection to another": after a reconnect the alias is unknown, and an empty topic with it is
// a Protocol Error (0x82, section 3.3.4).
#[test]
fn v5_inbound_topic_alias_not_carried_to_next_connection_mqtt_3_3_2_7() {
    let mut b = Broker::start("");
    let c5 = Connect::v5("ta-carry").session_expiry(60);
    let (mut p, _) = connect5_with(b.port(), &c5);
    pub5_qos1(&mut p, "carry/t", b"1", 1, &alias(2));
    p.send(&disconnect5(0, &Props::new()));
    assert!(p.closes_within(WAIT));
    let (mut p, ca) = connect5_with(b.port(), &c5.clone().clean(false));
    assert!(ca.session_present);
    p.send(&publish5("", b"2", 1, false, 2, &alias(2)));
    expect_disconnect(&mut p, 0x82, WAIT);
    assert_serves5(&mut b);
}

// Section 3.2.2.3.8: `max_topic_alias 0` → the server accepts no aliases (Topic Alias Maximum
// absent or 0 in CONNACK) and any alias is invalid (0x94) v5:[MQTT-3.3.2-9].
#[test]
fn v5_max_topic_alias_0_refuses_every_alias_mqtt_3_3_2_9() {
    let mut b = Broker::start("max_topic_alias 0");
    let (mut c, ca) = connect5_with(b.port(), &Connect::v5("ta0"));
    assert_eq!(
        ca.props.int(id::TOPIC_ALIAS_MAXIMUM).unwrap_or(0),
        0,
        "{ca:?}"
    );
    c.send(&publish5("ta0/t", b"x", 0, false, 0, &alias(1)));
    expect_disconnect(&mut c, 0x94, WAIT);
    assert_serves5(&mut b);
}

// v5:[MQTT-3.1.2-27] a client that sends no Topic Alias Maximum never receives a Topic Alias,
// however often a topic repeats.
#[test]
fn v5_no_outbound_alias_without_client_topic_alias_maximum_mqtt_3_1_2_27() {
    let b = Broker::start("");
    let mut s = connect5(b.port(), "noalias-sub");
    sub5(&mut s, 1, "noalias/t", 0, None, 0);
    let mut p = connect5(b.port(), "noalias-pub");
    for i in 0..5u8 {
        p.send(&publish5("noalias/t", &[i], 0, false, 0, &Props::new()));
    }
    for m in collect5(&mut s, 5, WAIT) {
        assert_eq!(m.topic, "noalias/t");
        assert!(!m.props.has(id::TOPIC_ALIAS), "{m:?}");
    }
}

/// Reads `n` PUBLISHes and resolves their topics through the aliases the server set up,
/// checking v5:[MQTT-3.1.2-26] (alias within 1..=max) on the way. Returns (topic, payload,
/// used an alias without the topic).
fn resolve(s: &mut Raw, n: usize, max: u16) -> Vec<(String, Vec<u8>, bool)> {
    let mut map: HashMap<u32, String> = HashMap::new();
    collect5(s, n, WAIT)
        .into_iter()
        .map(|m| match m.props.int(id::TOPIC_ALIAS) {
            None => {
                assert!(!m.topic.is_empty(), "empty topic without alias: {m:?}");
                (m.topic, m.payload, false)
            }
            Some(a) => {
                assert!(a >= 1 && a <= u32::from(max), "alias {a} outside 1..={max}");
                if m.topic.is_empty() {
                    let t = map.get(&a).unwrap_or_else(|| panic!("unmapped alias {a}"));
                    (t.clone(), m.payload, true)
                } else {
                    map.insert(a, m.topic.clone());
                    (m.topic, m.payload, false)
                }
            }
        })
        .collect()
}

// Beyond Mosquitto 2.0: a subscriber that announces Topic Alias Maximum 5 gets
// repeated topics as alias-only PUBLISHes, every alias within its maximum v5:[MQTT-3.1.2-26], and
// every topic resolves correctly.
#[test]
fn v5_outbound_topic_alias_used_within_client_maximum_mqtt_3_1_2_26() {
    if skip_on_mosquitto("Mosquitto 2.0 sends no outbound topic aliases") {
        return;
    }
    let b = Broker::start("");
    let c5 = Connect::v5("oa-sub").props(Props::new().u16(id::TOPIC_ALIAS_MAXIMUM, 5));
    let (mut s, _) = connect5_with(b.port(), &c5);
    sub5(&mut s, 1, "oa/#", 1, None, 1);
    let mut p = connect5(b.port(), "oa-pub");
    let topics = ["oa/a", "oa/b", "oa/a", "oa/b", "oa/a"];
    for (i, t) in topics.iter().enumerate() {
        pub5_qos1(&mut p, t, &[i as u8], i as u16 + 1, &Props::new());
    }
    let got = resolve(&mut s, 5, 5);
    for (i, (t, payload, _)) in got.iter().enumerate() {
        assert_eq!(
            (t.as_str(), payload.as_slice()),
            (topics[i], &[i as u8][..])
        );
    }
    assert!(
        got[2..].iter().all(|(_, _, aliased)| *aliased),
        "repeated topics not sent as alias only: {got:?}"
    );
}

// Beyond Mosquitto 2.0: with Topic Alias Maximum 1 and more topics than aliases, the server
// remaps the one alias; whatever it does, alias 2 never appears and every topic resolves.
#[test]
fn v5_outbound_topic_alias_maximum_1_never_exceeded_mqtt_3_1_2_26() {
    if skip_on_mosquitto("Mosquitto 2.0 sends no outbound topic aliases") {
        return;
    }
    let b = Broker::start("");
    let c5 = Connect::v5("oa1-sub").props(Props::new().u16(id::TOPIC_ALIAS_MAXIMUM, 1));
    let (mut s, _) = connect5_with(b.port(), &c5);
    sub5(&mut s, 1, "oa1/#", 0, None, 0);
    let mut p = connect5(b.port(), "oa1-pub");
    let topics = [
        "oa1/x", "oa1/y", "oa1/x", "oa1/x", "oa1/z", "oa1/z", "oa1/y",
    ];
    for (i, t) in topics.iter().enumerate() {
        p.send(&publish5(t, &[i as u8], 0, false, 0, &Props::new()));
    }
    let got = resolve(&mut s, topics.len(), 1);
    for (i, (t, payload, _)) in got.iter().enumerate() {
        assert_eq!(
            (t.as_str(), payload.as_slice()),
            (topics[i], &[i as u8][..])
        );
    }
}
