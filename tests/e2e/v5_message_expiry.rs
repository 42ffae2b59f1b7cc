//! MQTT 5 Message Expiry Interval: counted down while a message waits, dropped
//! once stale, and forwarded with the remaining interval.

use crate::common::v5::*;
use crate::common::*;
use std::thread::sleep;

fn expiry(s: u32) -> Props {
    Props::new().u32(id::MESSAGE_EXPIRY, s)
}

// v5:[MQTT-3.3.2-5] a message queued for an offline session whose Message Expiry Interval passes
// before delivery starts is deleted; v5:[MQTT-3.3.2-6] one still valid is forwarded with the
// interval minus the time it waited. A message without expiry is forwarded without one.
#[test]
fn v5_message_expiry_for_offline_session_dropped_and_decremented_mqtt_3_3_2_5() {
    let b = Broker::start("");
    let c5 = Connect::v5("me-sub").session_expiry(60);
    let (mut s, _) = connect5_with(b.port(), &c5);
    sub5(&mut s, 1, "me/t", 1, None, 1);
    s.send(&disconnect5(0, &Props::new()));
    assert!(s.closes_within(WAIT));

    let mut p = connect5(b.port(), "me-pub");
    pub5_qos1(&mut p, "me/t", b"short", 1, &expiry(1));
    pub5_qos1(&mut p, "me/t", b"long", 2, &expiry(60));
    pub5_qos1(&mut p, "me/t", b"forever", 3, &Props::new());
    sleep(secs(3.0));

    let (mut s, ca) = connect5_with(b.port(), &c5.clone().clean(false));
    assert!(ca.session_present, "{ca:?}");
    let got = collect5(&mut s, 2, WAIT);
    let payloads: Vec<&[u8]> = got.iter().map(|m| m.payload.as_slice()).collect();
    assert_eq!(
        payloads,
        [&b"long"[..], b"forever"],
        "expired message delivered?"
    );
    let left = got[0]
        .props
        .int(id::MESSAGE_EXPIRY)
        .expect("remaining expiry");
    assert!(
        (50..=58).contains(&left),
        "remaining interval {left}, expected 60 - 3 s"
    );
    assert!(!got[1].props.has(id::MESSAGE_EXPIRY), "{:?}", got[1]);
    s.quiet(secs(0.5));
}

// v5:[MQTT-3.3.2-6] an online subscriber gets the interval (at most what was sent, and close).
#[test]
fn v5_message_expiry_forwarded_to_online_subscriber_mqtt_3_3_2_6() {
    let b = Broker::start("");
    let mut s = connect5(b.port(), "meo-sub");
    sub5(&mut s, 1, "meo/t", 1, None, 1);
    let mut p = connect5(b.port(), "meo-pub");
    pub5_qos1(&mut p, "meo/t", b"x", 1, &expiry(100));
    let m = &collect5(&mut s, 1, WAIT)[0];
    let left = m
        .props
        .int(id::MESSAGE_EXPIRY)
        .expect("Message Expiry forwarded");
    assert!((98..=100).contains(&left), "forwarded {left}");
}

// v5 section 3.3.2.3.3: a retained message expires too: after its interval, a new subscriber
// gets nothing; a retained message still valid is sent with the remaining interval.
#[test]
fn v5_retained_message_expires_mqtt_3_3_2_5() {
    let b = Broker::start("");
    let mut p = connect5(b.port(), "mer-pub");
    p.send(&publish5("mer/short", b"s", 1, true, 1, &expiry(1)));
    expect_kind(&mut p, 4, WAIT);
    p.send(&publish5("mer/long", b"l", 1, true, 2, &expiry(60)));
    expect_kind(&mut p, 4, WAIT);
    sleep(secs(3.0));
    let mut s = connect5(b.port(), "mer-sub");
    sub5(&mut s, 1, "mer/#", 1, None, 1);
    let got = collect5(&mut s, 1, WAIT);
    assert_eq!(got[0].topic, "mer/long");
    assert!(got[0].retain);
    let left = got[0]
        .props
        .int(id::MESSAGE_EXPIRY)
        .expect("remaining expiry");
    assert!((50..=58).contains(&left), "remaining {left}");
    s.quiet(secs(0.5));
}
