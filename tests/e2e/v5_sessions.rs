//! MQTT 5 sessions: Clean Start, Session Expiry Interval set in CONNECT and
//! changed in DISCONNECT within the rules, expired sessions removed, the Session Present flag.

use crate::common::v5::*;
use crate::common::*;
use std::thread::sleep;

fn resume(port: u16, name: &str, expiry: u32) -> (Raw, Connack5) {
    connect5_with(port, &Connect::v5(name).clean(false).session_expiry(expiry))
}

/// A session with a QoS 1 subscription to `topic`, left with a normal DISCONNECT.
fn park(port: u16, name: &str, topic: &str, expiry: u32) {
    let (mut c, ca) = connect5_with(port, &Connect::v5(name).session_expiry(expiry));
    assert!(
        !ca.session_present,
        "clean start: no session [MQTT-3.2.2-2]"
    );
    sub5(&mut c, 1, topic, 1, None, 1);
    c.send(&disconnect5(0, &Props::new()));
    assert!(c.closes_within(WAIT), "no close after DISCONNECT");
}

fn publish_qos1(port: u16, topic: &str, payload: &[u8]) {
    let mut p = connect5(port, &format!("pub-{topic}"));
    let a = pub5_qos1(&mut p, topic, payload, 1, &Props::new());
    assert!(a.rc < 0x80, "{a:?}");
}

// v5:[MQTT-3.1.2-23] the session is kept for the Session Expiry Interval after the connection
// closes: a resume within it has Session Present 1 v5:[MQTT-3.2.2-3] and gets the QoS 1 message
// queued meanwhile; after the interval the session is gone (Session Present 0, nothing queued).
#[test]
fn v5_session_kept_for_expiry_interval_then_discarded_mqtt_3_1_2_23() {
    let b = Broker::start("");
    park(b.port(), "se2", "se2/t", 2);
    publish_qos1(b.port(), "se2/t", b"while-away");
    let (mut c, ca) = resume(b.port(), "se2", 2);
    assert!(ca.session_present, "session lost within its expiry: {ca:?}");
    assert_eq!(collect5(&mut c, 1, WAIT)[0].payload, b"while-away");
    c.send(&disconnect5(0, &Props::new()));
    assert!(c.closes_within(WAIT));
    sleep(secs(4.0));
    publish_qos1(b.port(), "se2/t", b"too-late");
    let (mut c, ca) = resume(b.port(), "se2", 0);
    assert!(
        !ca.session_present,
        "session outlived its 2 s expiry: {ca:?}"
    );
    c.quiet(secs(0.5));
}

// v5 section 3.1.2.11.2: an absent Session Expiry Interval means 0: the session ends with the
// connection, so a Clean Start 0 reconnect finds none (Session Present 0 v5:[MQTT-3.2.2-2]).
#[test]
fn v5_session_expiry_absent_means_session_ends_at_close_mqtt_3_1_2_23() {
    let b = Broker::start("");
    park(b.port(), "se0", "se0/t", 0);
    publish_qos1(b.port(), "se0/t", b"lost");
    let (mut c, ca) = connect5_with(b.port(), &Connect::v5("se0").clean(false));
    assert!(!ca.session_present, "{ca:?}");
    c.quiet(secs(0.5));
}

// v5:[MQTT-3.1.2-4] Clean Start 1 discards an existing session: Session Present 0 and the old
// subscription no longer delivers.
#[test]
fn v5_clean_start_discards_existing_session_mqtt_3_1_2_4() {
    let b = Broker::start("");
    park(b.port(), "cs", "cs/t", 60);
    let (mut c, ca) = connect5_with(b.port(), &Connect::v5("cs").session_expiry(60));
    assert!(!ca.session_present, "{ca:?}");
    publish_qos1(b.port(), "cs/t", b"x");
    c.quiet(secs(0.5));
}

// v5:[MQTT-3.2.2-3] Clean Start 0 with an existing session: Session Present 1, and the
// subscription still delivers on the resumed connection.
#[test]
fn v5_resume_keeps_subscriptions_session_present_1_mqtt_3_2_2_3() {
    let b = Broker::start("");
    park(b.port(), "keep", "keep/t", 60);
    let (mut c, ca) = resume(b.port(), "keep", 60);
    assert!(ca.session_present, "{ca:?}");
    publish_qos1(b.port(), "keep/t", b"live");
    assert_eq!(collect5(&mut c, 1, WAIT)[0].payload, b"live");
}

// v5 section 3.14.2.2.2: the client may change the Session Expiry Interval in DISCONNECT: 60 in
// CONNECT, 0 in DISCONNECT → the session ends at once.
#[test]
fn v5_session_expiry_lowered_to_zero_at_disconnect_ends_session_mqtt_3_14_2_2_2() {
    let b = Broker::start("");
    let (mut c, _) = connect5_with(b.port(), &Connect::v5("down").session_expiry(60));
    sub5(&mut c, 1, "down/t", 1, None, 1);
    c.send(&disconnect5(0, &Props::new().u32(id::SESSION_EXPIRY, 0)));
    assert!(c.closes_within(WAIT));
    let (_c, ca) = resume(b.port(), "down", 0);
    assert!(
        !ca.session_present,
        "session survived expiry 0 at DISCONNECT: {ca:?}"
    );
}

// v5 section 3.14.2.2.2: 1 s in CONNECT, raised to 60 s in DISCONNECT → still there after 3 s.
#[test]
fn v5_session_expiry_raised_at_disconnect_keeps_session_mqtt_3_14_2_2_2() {
    let b = Broker::start("");
    let (mut c, _) = connect5_with(b.port(), &Connect::v5("up").session_expiry(1));
    sub5(&mut c, 1, "up/t", 1, None, 1);
    c.send(&disconnect5(0, &Props::new().u32(id::SESSION_EXPIRY, 60)));
    assert!(c.closes_within(WAIT));
    sleep(secs(3.0));
    publish_qos1(b.port(), "up/t", b"kept");
    let (mut c, ca) = resume(b.port(), "up", 0);
    assert!(
        ca.session_present,
        "expiry raised at DISCONNECT was ignored: {ca:?}"
    );
    assert_eq!(collect5(&mut c, 1, WAIT)[0].payload, b"kept");
}

// v5 section 3.14.2.2.2: "If the Session Expiry Interval in the CONNECT packet was zero, then it
// is a Protocol Error to set a non-zero Session Expiry Interval in the DISCONNECT packet ... The
// Server uses DISCONNECT with Reason Code 0x82". It is not a valid DISCONNECT, so the will is
// published v5:[MQTT-3.1.2-8], and the session still ends (its expiry stays 0).
#[test]
fn v5_nonzero_session_expiry_at_disconnect_after_zero_is_protocol_error_mqtt_3_14_2_2_2() {
    let mut b = Broker::start("");
    let mut w = connect5(b.port(), "perr-watch");
    sub5(&mut w, 1, "perr/will", 0, None, 0);
    let c5 = Connect::v5("perr").will("perr/will", b"gone", 0, false);
    let (mut c, _) = connect5_with(b.port(), &c5);
    c.send(&disconnect5(0, &Props::new().u32(id::SESSION_EXPIRY, 30)));
    expect_error_disconnect(&mut c, 0x82);
    assert_eq!(
        next_pub5(&mut w, WAIT).payload,
        b"gone",
        "will not published"
    );
    let (_c, ca) = resume(b.port(), "perr", 0);
    assert!(!ca.session_present, "{ca:?}");
    assert_serves5(&mut b);
}

// v5:[MQTT-3.2.2-3] Clean Start 0 without stored session state: Session Present 0.
#[test]
fn v5_clean_start_0_without_session_present_0_mqtt_3_2_2_3() {
    let b = Broker::start("");
    let (_c, ca) = resume(b.port(), "never-seen", 30);
    assert!(!ca.session_present, "{ca:?}");
}
