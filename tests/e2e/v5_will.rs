//! MQTT 5 wills: Will Delay Interval (the will waits, and is cancelled when
//! the session resumes in time), the will published when the session ends first, DISCONNECT
//! 0x04 / 0x00, and will properties forwarded.

use crate::common::v5::*;
use crate::common::*;
use std::time::Instant;

fn watcher(port: u16, name: &str, topic: &str) -> Raw {
    let mut w = connect5(port, name);
    sub5(&mut w, 1, topic, 1, None, 1);
    w
}

fn with_will(name: &str, topic: &str, delay: u32, expiry: u32) -> Connect {
    Connect::v5(name)
        .session_expiry(expiry)
        .will(topic, b"gone", 1, false)
        .will_props(Props::new().u32(id::WILL_DELAY, delay))
}

// v5 section 3.1.3.2.2: the will is published after the Will Delay Interval (2 s), not at the
// network failure: nothing within 1.5 s, the will within 6 s.
#[test]
fn v5_will_published_after_will_delay_interval_mqtt_3_1_3_9() {
    let b = Broker::start("");
    let mut w = watcher(b.port(), "wd-watch", "wd/will");
    let (c, _) = connect5_with(b.port(), &with_will("wd", "wd/will", 2, 30));
    let t0 = Instant::now();
    drop(c);
    w.quiet(secs(1.5));
    let m = &collect5(&mut w, 1, secs(4.5))[0];
    let took = t0.elapsed();
    assert_eq!(m.payload, b"gone");
    assert!(
        took >= secs(1.5) && took <= secs(6.0),
        "will after {took:?}"
    );
}

// v5:[MQTT-3.1.3-9] "If a new Network Connection to this Session is made before the Will Delay
// Interval has passed, the Server MUST NOT send the Will Message".
#[test]
fn v5_will_delay_cancelled_on_reconnect_mqtt_3_1_3_9() {
    let b = Broker::start("");
    let mut w = watcher(b.port(), "wdc-watch", "wdc/will");
    let c5 = with_will("wdc", "wdc/will", 2, 30);
    let (c, _) = connect5_with(b.port(), &c5);
    drop(c);
    std::thread::sleep(secs(0.5));
    let (_c, ca) = connect5_with(
        b.port(),
        &Connect::v5("wdc").clean(false).session_expiry(30),
    );
    assert!(ca.session_present, "{ca:?}");
    w.quiet(secs(3.5));
}

// v5 section 3.1.3.2.2: the will is published when the Will Delay Interval passes or the session
// ends, whichever comes first: delay 30 s but Session Expiry 1 s → the will at about 1 s.
#[test]
fn v5_will_published_when_session_expires_before_delay_mqtt_3_1_3_9() {
    let b = Broker::start("");
    let mut w = watcher(b.port(), "wse-watch", "wse/will");
    let (c, _) = connect5_with(b.port(), &with_will("wse", "wse/will", 30, 1));
    let t0 = Instant::now();
    drop(c);
    let m = &collect5(&mut w, 1, secs(6.0))[0];
    assert_eq!(m.payload, b"gone");
    assert!(t0.elapsed() <= secs(6.0));
}

// v5 section 3.14.2.1: DISCONNECT 0x04 (Disconnect with Will Message) publishes the will (no
// delay: Will Delay 0); v5:[MQTT-3.1.2-10] a normal DISCONNECT 0x00 discards it.
#[test]
fn v5_disconnect_0x04_publishes_will_0x00_does_not_mqtt_3_1_2_10() {
    let b = Broker::start("");
    let mut w = watcher(b.port(), "w4-watch", "w4/will");
    let c5 = Connect::v5("w4").will("w4/will", b"by-request", 0, false);
    let (mut c, _) = connect5_with(b.port(), &c5);
    c.send(&disconnect5(0x04, &Props::new()));
    assert!(c.closes_within(WAIT));
    assert_eq!(collect5(&mut w, 1, WAIT)[0].payload, b"by-request");
    let c5 = Connect::v5("w0").will("w4/will", b"not-this", 0, false);
    let (mut c, _) = connect5_with(b.port(), &c5);
    c.send(&disconnect5(0x00, &Props::new()));
    assert!(c.closes_within(WAIT));
    w.quiet(secs(0.7));
}

// v5 section 3.1.3.2: will properties are forwarded with the will: Payload Format Indicator,
// Content Type, Response Topic, Correlation Data, User Properties in order v5:[MQTT-3.1.3-10],
// and the Message Expiry Interval (at most what was sent).
#[test]
fn v5_will_properties_forwarded_user_properties_in_order_mqtt_3_1_3_10() {
    let b = Broker::start("");
    let mut w = watcher(b.port(), "wp-watch", "wp/will");
    let wp = Props::new()
        .byte(id::PAYLOAD_FORMAT, 1)
        .u32(id::MESSAGE_EXPIRY, 100)
        .str(id::CONTENT_TYPE, "text/plain")
        .str(id::RESPONSE_TOPIC, "wp/reply")
        .bin(id::CORRELATION_DATA, &[0, 1, 2, 0xff])
        .user("z", "1")
        .user("a", "2")
        .user("z", "3");
    let c5 = Connect::v5("wp")
        .will("wp/will", "adiós".as_bytes(), 1, false)
        .will_props(wp);
    let (c, _) = connect5_with(b.port(), &c5);
    drop(c);
    let m = &collect5(&mut w, 1, WAIT)[0];
    assert_eq!(m.payload, "adiós".as_bytes());
    let p = &m.props;
    assert_eq!(p.int(id::PAYLOAD_FORMAT), Some(1), "{p:?}");
    assert_eq!(p.string(id::CONTENT_TYPE).as_deref(), Some("text/plain"));
    assert_eq!(p.string(id::RESPONSE_TOPIC).as_deref(), Some("wp/reply"));
    assert_eq!(p.binary(id::CORRELATION_DATA), Some(vec![0, 1, 2, 0xff]));
    let users: Vec<(String, String)> = p.users();
    let want: Vec<(String, String)> = [("z", "1"), ("a", "2"), ("z", "3")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(users, want);
    let left = p.int(id::MESSAGE_EXPIRY).expect("Message Expiry forwarded");
    assert!((95..=100).contains(&left), "{left}");
    assert!(
        !p.has(id::WILL_DELAY),
        "Will Delay is not a PUBLISH property: {p:?}"
    );
}

// Real clients: a `mosquitto_sub -V mqttv5 --will-topic ... -D will user-property wk wv -D will
// content-type ct` that is killed has its will, with properties, printed by another mosquitto_sub.
#[test]
fn v5_mosquitto_sub_will_with_properties_delivered_mqtt_3_1_3_10() {
    let b = Broker::start("");
    let watch = Sub::spawn(
        b.port(),
        5,
        &["-V", "mqttv5", "-t", "wm/will", "-C", "1", "-F", "%P|%C|%p"],
    );
    let dying = Sub::spawn(
        b.port(),
        5,
        &[
            "-V",
            "mqttv5",
            "-t",
            "none",
            "--will-topic",
            "wm/will",
            "--will-payload",
            "bye",
            "-D",
            "will",
            "user-property",
            "wk",
            "wv",
            "-D",
            "will",
            "content-type",
            "ct",
        ],
    );
    std::thread::sleep(secs(0.7));
    drop(dying);
    let (lines, _) = watch.finish(secs(6.0));
    assert_eq!(lines, ["wk:wv|ct|bye"]);
}
