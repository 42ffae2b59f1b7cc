//! Keepalive: a silent client is dropped after 1.5 × its keepalive; any
//! traffic keeps it alive; `max_keepalive` is enforced as Mosquitto 2.0 does for 3.x clients.

use crate::common::*;
use std::time::{Duration, Instant};

// v311:[MQTT-3.1.2-24] no control packet within 1.5 × keepalive → the server disconnects.
// Keepalive 2 → ~3 s; generous bounds 2.5 s .. 6 s.
#[test]
fn silent_client_disconnected_after_one_and_a_half_keepalive_mqtt_3_1_2_24() {
    let b = Broker::start("");
    let mut c =
        Raw::mqtt_connect_with(b.port(), &Connect::v311("silent").keepalive(2), &CONNACK_OK);
    let t0 = Instant::now();
    assert!(
        c.closes_within(Duration::from_secs(6)),
        "still connected after 6 s"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "disconnected too early: {took:?}"
    );
}

// v311:[MQTT-3.1.2-23] any control packet (here QoS 0 PUBLISHes, then PINGREQs) resets the
// timer: a client active every second with keepalive 2 stays connected for 5 s.
#[test]
fn active_client_with_keepalive_stays_connected_mqtt_3_1_2_23() {
    let b = Broker::start("");
    let mut c =
        Raw::mqtt_connect_with(b.port(), &Connect::v311("active").keepalive(2), &CONNACK_OK);
    for i in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        if i % 2 == 0 {
            assert!(c.send(&publish("ka/x", b"tick", 0, false, false, 0)));
            c.expect_silence(Duration::from_millis(10));
        } else {
            c.send(&PINGREQ);
            c.expect_bytes(&PINGRESP, WAIT);
        }
    }
}

// Keepalive 0 turns the mechanism off (default max_keepalive): no disconnect for 3.5 s.
#[test]
fn keepalive_zero_never_times_out() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect_with(
        b.port(),
        &Connect::v311("ka-zero").keepalive(0),
        &CONNACK_OK,
    );
    c.expect_silence(Duration::from_millis(3500));
    c.send(&PINGREQ);
    c.expect_bytes(&PINGRESP, WAIT);
}

// Mosquitto 2.0 (`max_keepalive`, man page of 2.0.20): "If an MQTT v3.1.1 or v3.1 client
// specifies a keepalive time greater than max_keepalive they will be sent a CONNACK message
// with the identifier rejected reason code, and disconnected." (Debian's 2.0.11 still accepts.)
#[test]
fn keepalive_over_max_keepalive_rejected_with_0x02() {
    if skip_on_mosquitto("2.0.11 predates the max_keepalive check for v3 clients") {
        return;
    }
    let b = Broker::start("max_keepalive 10");
    let mut c = Raw::connect(b.port());
    c.send(&Connect::v311("ka-big").keepalive(60).bytes());
    c.expect_bytes(&[0x20, 2, 0, 2], WAIT);
    c.expect_closed(WAIT);
    // At the limit it is fine.
    Raw::mqtt_connect_with(b.port(), &Connect::v311("ka-ok").keepalive(10), &CONNACK_OK);
}

// Keepalive 0 with max_keepalive 10: Debian's Mosquitto 2.0.11 accepts it (checked), and midge
// matches that.
#[test]
fn keepalive_zero_refused_when_max_keepalive_is_configured() {
    // Mosquitto 2.0.20's man page: max_keepalive 0 is what allows keepalive 0; a 3.x client
    // whose keepalive exceeds max_keepalive (0 = never) gets "identifier rejected". With the
    // default max_keepalive (65535) midge accepts keepalive 0, as 2.0.11 does.
    if skip_on_mosquitto("2.0.11 predates the max_keepalive check for v3 clients") {
        return;
    }
    let b = Broker::start("max_keepalive 10");
    let mut c = Raw::mqtt_connect_with(
        b.port(),
        &Connect::v311("ka-zero-max").keepalive(0),
        &[0x20, 0x02, 0x00, 0x02],
    );
    assert!(c.closes_within(WAIT));
}

// MQTT 3.1 clients are held to the same keepalive rule.
#[test]
fn mqtt31_client_keepalive_enforced() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect_with(
        b.port(),
        &Connect::v31("silent31").keepalive(1),
        &CONNACK_OK,
    );
    let t0 = Instant::now();
    assert!(c.closes_within(Duration::from_secs(7)));
    assert!(t0.elapsed() >= Duration::from_millis(1200));
}
