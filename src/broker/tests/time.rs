//! Every broker timer on simulated time, exact to its deadline: one millisecond before it
//! nothing happens, at it the effect does. The clock only moves through `World::drive*`,
//! which runs each timer at its own deadline as the server loop does.

use super::*;

/// `World`'s clock `ms` milliseconds after time zero.
fn at(w: &World, ms: u64) -> Instant {
    w.t0 + Duration::from_millis(ms)
}

/// A v3.1.1 or v5 CONNECT with keepalive `keep_alive` and v5 `properties`.
fn connect_with(
    version: ProtocolVersion,
    id: &str,
    clean: bool,
    keep_alive: u16,
    properties: Properties,
    will: Option<LastWill>,
) -> Vec<u8> {
    Packet::Connect(Box::new(Connect {
        version,
        bridge: false,
        clean_start: clean,
        keep_alive,
        client_id: id.into(),
        will,
        username: None,
        password: None,
        properties,
    }))
    .to_bytes(version)
}

fn will(topic: &str, payload: &[u8], properties: Properties) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: payload.to_vec(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties,
    }
}

/// Connection 1, "watcher", subscribed to `filter` at QoS 0.
fn watcher(w: &mut World, filter: &str) {
    w.connect(1, "watcher", true);
    w.send(1, &subscribe_bytes(1, &[(filter, QoS::AtMostOnce)]));
    w.take(1);
}

// ---- keepalive ----

#[test]
fn keepalive_closes_at_one_and_a_half_times_mqtt_3_1_2_24() {
    let mut w = World::new(Settings::default());
    watcher(&mut w, "status");
    w.open(2);
    let lw = will("status", b"gone", Properties::default());
    w.send(
        2,
        &connect_with(
            ProtocolVersion::V311,
            "dev",
            true,
            10,
            Properties::default(),
            Some(lw),
        ),
    );
    w.take(2);
    w.drive_until(at(&w, 14_999));
    assert!(!w.closed(2));
    assert_eq!(w.take(1), vec![]);
    w.drive_until(at(&w, 15_000));
    assert!(w.closed(2));
    assert_eq!(w.take(1), vec![pub_out("status", b"gone", 0, 0)]);
}

#[test]
fn keepalive_counts_from_the_last_packet_received_mqtt_3_1_2_24() {
    let mut w = World::new(Settings::default());
    w.open(1);
    w.send(
        1,
        &connect_with(
            ProtocolVersion::V311,
            "dev",
            true,
            10,
            Properties::default(),
            None,
        ),
    );
    w.drive_until(at(&w, 10_000));
    w.send(1, &Packet::Pingreq.to_bytes(ProtocolVersion::V311));
    assert_eq!(w.take(1), vec![Out::Connack(false, 0), Out::Pingresp]);
    w.drive_until(at(&w, 24_999));
    assert!(!w.closed(1));
    w.drive_until(at(&w, 25_000));
    assert!(w.closed(1));
}

#[test]
fn v5_keepalive_keeps_the_half_second_of_an_odd_value_mqtt_3_1_2_22() {
    let mut w = World::new(Settings::default());
    w.open(1);
    w.send(
        1,
        &connect_with(
            ProtocolVersion::V5,
            "dev",
            true,
            3,
            Properties::default(),
            None,
        ),
    );
    w.drive_until(at(&w, 4_499));
    assert!(!w.closed(1));
    w.drive_until(at(&w, 4_500));
    assert!(w.closed(1));
}

#[test]
fn keepalive_zero_never_times_out() {
    let mut w = World::new(Settings::default());
    w.open(1);
    w.send(
        1,
        &connect_with(
            ProtocolVersion::V311,
            "dev",
            true,
            0,
            Properties::default(),
            None,
        ),
    );
    w.take(1);
    w.drive();
    assert!(!w.closed(1));
    w.send(1, &Packet::Pingreq.to_bytes(ProtocolVersion::V311));
    assert_eq!(w.take(1), vec![Out::Pingresp]);
}
