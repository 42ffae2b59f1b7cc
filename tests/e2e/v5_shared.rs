//! MQTT 5 shared subscriptions `$share/GROUP/FILTER`: one member per message,
//! round robin; no retained messages on a shared subscribe; QoS 1 messages in flight to a member
//! that leaves for good go to another member, QoS 2 stays with its session.

use crate::common::v5::*;
use crate::common::*;

fn member(port: u16, name: &str, filter: &str, q: u8) -> Raw {
    let mut c = connect5(port, name);
    sub5(&mut c, 1, filter, q, None, q);
    c
}

// v5 section 4.8.2: each message to a shared subscription goes to exactly one member; midge (and
// Mosquitto) choose round robin, so 6 messages split 3/3 between 2 members with none lost or
// duplicated.
#[test]
fn v5_shared_subscription_round_robin_one_member_per_message_mqtt_4_8_2() {
    let b = Broker::start("");
    let mut a = member(b.port(), "sh-a", "$share/g/sh/t", 0);
    let mut c = member(b.port(), "sh-b", "$share/g/sh/t", 0);
    let mut p = connect5(b.port(), "sh-pub");
    for i in 0..6u8 {
        p.send(&publish5("sh/t", &[i], 0, false, 0, &Props::new()));
    }
    let ga = drain(&mut a, secs(0.8));
    let gb = drain(&mut c, secs(0.2));
    let mut all: Vec<u8> = ga.iter().chain(gb.iter()).map(|m| m.payload[0]).collect();
    all.sort();
    assert_eq!(all, [0, 1, 2, 3, 4, 5], "lost or duplicated");
    assert_eq!((ga.len(), gb.len()), (3, 3), "not round robin");
    assert!(ga.iter().all(|m| m.topic == "sh/t"), "{ga:?}");
}

// v5 section 4.8.2: shared subscriptions coexist with a non-shared one on the same topic: the
// group gets one copy, the plain subscriber its own.
#[test]
fn v5_shared_and_plain_subscription_each_get_a_copy_mqtt_4_8_2() {
    let b = Broker::start("");
    let mut a = member(b.port(), "shp-a", "$share/g/shp/t", 0);
    let mut c = member(b.port(), "shp-b", "$share/g/shp/t", 0);
    let mut plain = member(b.port(), "shp-plain", "shp/t", 0);
    let mut p = connect5(b.port(), "shp-pub");
    p.send(&publish5("shp/t", b"one", 0, false, 0, &Props::new()));
    assert_eq!(next_pub5(&mut plain, WAIT).payload, b"one");
    let n = drain(&mut a, secs(0.5)).len() + drain(&mut c, secs(0.1)).len();
    assert_eq!(n, 1, "group got {n} copies");
}

// v5 section 4.8.2 / 3.3.1.3: "Retained messages are not sent to the Session when it first
// subscribes to a shared subscription" (a plain subscription does get it). Mosquitto 2.0.11
// sends it (the spec wins).
#[test]
fn v5_no_retained_messages_on_shared_subscribe_mqtt_4_8_2() {
    if skip_on_mosquitto("2.0.11 sends retained messages on a shared subscribe") {
        return;
    }
    let b = Broker::start("");
    let mut p = connect5(b.port(), "shr-pub");
    p.send(&publish5("shr/t", b"ret", 1, true, 1, &Props::new()));
    expect_kind(&mut p, 4, WAIT);
    let mut s = member(b.port(), "shr-s", "$share/g/shr/t", 1);
    s.quiet(secs(0.7));
    let mut plain = member(b.port(), "shr-plain", "shr/t", 1);
    assert!(collect5(&mut plain, 1, WAIT)[0].retain);
}

// v5:[MQTT-4.8.2-3] each member gets the message at its own granted QoS.
#[test]
fn v5_shared_members_get_their_granted_qos_mqtt_4_8_2_3() {
    let b = Broker::start("");
    let mut a = member(b.port(), "shq-a", "$share/g/shq/t", 0);
    let mut c = member(b.port(), "shq-b", "$share/g/shq/t", 1);
    let mut p = connect5(b.port(), "shq-pub");
    for i in 1..=4u8 {
        pub5_qos1(&mut p, "shq/t", &[i], u16::from(i), &Props::new());
    }
    let ga = drain(&mut a, secs(0.8));
    let gb = drain(&mut c, secs(0.2));
    assert_eq!(ga.len() + gb.len(), 4, "{ga:?} {gb:?}");
    assert!(ga.iter().all(|m| m.qos == 0), "{ga:?}");
    assert!(gb.iter().all(|m| m.qos == 1), "{gb:?}");
}

// v5 section 4.8.2: "If the Client's Session terminates before the Client reconnects, the Server
// SHOULD send the Application Message to another Client that is subscribed to the same Shared
// Subscription" (QoS 1). Member A (Session Expiry 0) never acknowledges and leaves; the messages
// it held arrive at member B. Mosquitto 2.0.11 drops them (midge does what the SHOULD asks).
#[test]
fn v5_shared_qos1_inflight_of_departed_member_redelivered_to_other_mqtt_4_8_2() {
    if skip_on_mosquitto("2.0.11 does not hand a departed member's QoS 1 messages over") {
        return;
    }
    let b = Broker::start("");
    let mut a = member(b.port(), "shx-a", "$share/g/shx/t", 1);
    let mut c = member(b.port(), "shx-b", "$share/g/shx/t", 1);
    let mut p = connect5(b.port(), "shx-pub");
    for i in 1..=4u8 {
        pub5_qos1(&mut p, "shx/t", &[i], u16::from(i), &Props::new());
    }
    let held = drain(&mut a, secs(0.8));
    assert!(!held.is_empty(), "member A got nothing");
    let first_b = collect5(&mut c, 4 - held.len(), WAIT);
    drop(a);
    let again = collect5(&mut c, held.len(), WAIT);
    let mut all: Vec<u8> = first_b
        .iter()
        .chain(again.iter())
        .map(|m| m.payload[0])
        .collect();
    all.sort();
    assert_eq!(all, [1, 2, 3, 4]);
}

// v5:[MQTT-4.8.2-4]/[MQTT-4.8.2-5] a QoS 2 message sent to member A stays with A's session: A
// leaves (Session Expiry 60) without PUBREC, B never gets it, and A gets it again (DUP) when it
// resumes.
#[test]
fn v5_shared_qos2_stays_with_member_session_mqtt_4_8_2_4() {
    let b = Broker::start("");
    let ca = Connect::v5("sh2-a").session_expiry(60);
    let (mut a, _) = connect5_with(b.port(), &ca);
    sub5(&mut a, 1, "$share/g/sh2/t", 2, None, 2);
    let mut c = member(b.port(), "sh2-b", "$share/g/sh2/t", 2);
    let mut p = connect5(b.port(), "sh2-pub");
    let mut to_a = None;
    for i in 1..=2u8 {
        p.send(&publish5(
            "sh2/t",
            &[i],
            2,
            false,
            u16::from(i),
            &Props::new(),
        ));
        expect_kind(&mut p, 5, WAIT);
        p.send(&pubrel(u16::from(i)));
        expect_kind(&mut p, 7, WAIT);
    }
    let got_a = drain(&mut a, secs(0.6));
    if let Some(m) = got_a.first() {
        to_a = Some(m.payload.clone());
    }
    let to_a = to_a.expect("round robin gave A nothing");
    assert_eq!(got_a.len(), 1, "{got_a:?}");
    let got_b = collect5(&mut c, 1, WAIT);
    assert_ne!(got_b[0].payload, to_a);
    drop(a);
    c.quiet(secs(1.0));
    let (mut a, ack) = connect5_with(b.port(), &ca.clone().clean(false));
    assert!(ack.session_present);
    let m = next_pub5(&mut a, WAIT);
    assert_eq!(m.payload, to_a);
    assert!(m.dup, "redelivery must set DUP: {m:?}");
}

// v5:[MQTT-3.8.3-4] "It is a Protocol Error to set the No Local bit to 1 on a Shared
// Subscription" → DISCONNECT 0x82. Mosquitto 2.0.11 grants it (the spec wins).
#[test]
fn v5_no_local_on_shared_subscription_is_protocol_error_mqtt_3_8_3_4() {
    if skip_on_mosquitto("2.0.11 grants No Local on a shared subscription") {
        return;
    }
    let mut b = Broker::start("");
    let mut c = connect5(b.port(), "sh-nl");
    c.send(&subscribe5(
        1,
        &Props::new(),
        &[("$share/g/nl/t", opts(0, true, false, 0))],
    ));
    expect_error_disconnect(&mut c, 0x82);
    assert_serves5(&mut b);
}

// Real clients: two `mosquitto_sub -V mqttv5 -t '$share/g/...'` share 4 messages, 2 each.
#[test]
fn v5_mosquitto_sub_shared_group_splits_messages_mqtt_4_8_2() {
    let b = Broker::start("");
    let args = ["-V", "mqttv5", "-t", "$share/grp/shm/t", "-C", "2"];
    let s1 = Sub::spawn(b.port(), 5, &args);
    let s2 = Sub::spawn(b.port(), 5, &args);
    std::thread::sleep(secs(0.6));
    for i in 0..4 {
        mosquitto_pub(
            b.port(),
            &["-V", "mqttv5", "-t", "shm/t", "-m", &format!("m{i}")],
        );
    }
    let (l1, _) = s1.finish(secs(6.0));
    let (l2, _) = s2.finish(secs(1.0));
    let mut all: Vec<String> = l1.iter().chain(l2.iter()).cloned().collect();
    all.sort();
    assert_eq!(all, ["m0", "m1", "m2", "m3"]);
    assert_eq!((l1.len(), l2.len()), (2, 2));
}
