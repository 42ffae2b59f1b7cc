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

#[test]
fn keepalive_longer_than_the_connect_timeout_closes_at_its_own_deadline_mqtt_3_1_2_24() {
    // The connect-timeout timer (20 s) re-arms itself to the keepalive deadline (90 s).
    let mut w = World::new(Settings::default());
    w.open(1);
    w.send(
        1,
        &connect_with(
            ProtocolVersion::V311,
            "dev",
            true,
            60,
            Properties::default(),
            None,
        ),
    );
    w.drive_until(at(&w, 89_999));
    assert!(!w.closed(1));
    w.drive_until(at(&w, 90_000));
    assert!(w.closed(1));
}

#[test]
fn v5_server_keep_alive_replaces_the_clients_mqtt_3_2_2_21() {
    let mut w = World::new(Settings {
        max_keepalive: 10,
        ..Settings::default()
    });
    w.open(1);
    w.send(
        1,
        &connect_with(
            ProtocolVersion::V5,
            "dev",
            true,
            60,
            Properties::default(),
            None,
        ),
    );
    match take_v5(&mut w, 1).first() {
        Some(Packet::Connack(c)) => assert_eq!(c.properties.server_keep_alive, Some(10)),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    w.drive_until(at(&w, 14_999));
    assert!(!w.closed(1));
    w.drive_until(at(&w, 15_000));
    assert!(w.closed(1));
}

// ---- connect timeout ----

#[test]
fn a_connection_that_sends_no_connect_is_closed_at_the_connect_timeout() {
    let settings = Settings::default();
    let timeout = settings.connect_timeout.as_millis() as u64;
    let mut w = World::new(settings);
    w.open(1);
    w.drive_until(at(&w, timeout - 1));
    assert!(!w.closed(1));
    w.drive_until(at(&w, timeout));
    assert!(w.closed(1));
    assert_eq!(w.take(1), vec![]);
}

#[test]
fn a_partial_connect_does_not_extend_the_connect_timeout() {
    let mut w = World::new(Settings {
        connect_timeout: Duration::from_secs(5),
        ..Settings::default()
    });
    w.open(1);
    let connect = connect_bytes("slow", true, 60, None);
    w.drive_until(at(&w, 4_000));
    w.send(1, &connect[..connect.len() - 1]);
    w.drive_until(at(&w, 4_999));
    assert!(!w.closed(1));
    w.drive_until(at(&w, 5_000));
    assert!(w.closed(1));
}

// ---- will delay (v5) ----

/// Connection 2, "dev", v5 with the given Session Expiry and a will on "will" with the given
/// Will Delay; the socket drops `lost_at` ms after time zero.
fn dev_with_delayed_will(w: &mut World, session_expiry: u32, will_delay: u32, lost_at: u64) {
    let session: Properties = PropertySet {
        session_expiry_interval: Some(session_expiry),
        ..PropertySet::default()
    }
    .into();
    let delay: Properties = PropertySet {
        will_delay_interval: Some(will_delay),
        ..PropertySet::default()
    }
    .into();
    w.open(2);
    let lw = will("will", b"gone", delay);
    w.send(
        2,
        &connect_with(ProtocolVersion::V5, "dev", true, 0, session, Some(lw)),
    );
    take_v5(w, 2);
    w.drive_until(at(w, lost_at));
    w.broker.handle_connection_closed(2, None, w.now);
}

#[test]
fn v5_will_is_published_at_the_will_delay_after_the_connection_ends() {
    let mut w = World::new(Settings::default());
    watcher(&mut w, "will");
    dev_with_delayed_will(&mut w, 60, 5, 1_000);
    w.drive_until(at(&w, 5_999));
    assert_eq!(w.take(1), vec![]);
    w.drive_until(at(&w, 6_000));
    assert_eq!(w.take(1), vec![pub_out("will", b"gone", 0, 0)]);
    assert_eq!(
        w.broker.counts().sessions,
        2,
        "the session outlives its will"
    );
}

#[test]
fn v5_will_is_published_when_the_session_ends_before_the_will_delay() {
    let mut w = World::new(Settings::default());
    watcher(&mut w, "will");
    dev_with_delayed_will(&mut w, 5, 60, 1_000);
    w.drive_until(at(&w, 5_999));
    assert_eq!(w.take(1), vec![]);
    assert_eq!(w.broker.counts().sessions, 2);
    w.drive_until(at(&w, 6_000));
    assert_eq!(w.take(1), vec![pub_out("will", b"gone", 0, 0)]);
    assert_eq!(w.broker.counts().sessions, 1);
    w.drive();
    assert_eq!(w.take(1), vec![], "the will goes once");
}

#[test]
fn v5_will_with_a_delay_goes_at_once_when_the_session_ends_with_the_connection() {
    let mut w = World::new(Settings::default());
    watcher(&mut w, "will");
    dev_with_delayed_will(&mut w, 0, 60, 1_000);
    assert_eq!(w.take(1), vec![pub_out("will", b"gone", 0, 0)]);
    w.drive();
    assert_eq!(w.take(1), vec![]);
}

// ---- session expiry ----

#[test]
fn v5_session_expires_its_interval_after_the_connection_ends_mqtt_3_1_2_23() {
    let mut w = World::new(Settings::default());
    let session: Properties = PropertySet {
        session_expiry_interval: Some(30),
        ..PropertySet::default()
    }
    .into();
    w.open(1);
    w.send(1, &connect_v5("s", true, session, None));
    take_v5(&mut w, 1);
    w.drive_until(at(&w, 1_000));
    w.broker.handle_connection_closed(1, None, w.now);
    w.drive_until(at(&w, 30_999));
    assert_eq!(w.broker.counts().sessions, 1);
    w.drive_until(at(&w, 31_000));
    assert_eq!(w.broker.counts().sessions, 0);
    assert_eq!(w.broker.stats.clients_expired, 1);
}

#[test]
fn v5_session_resumed_before_its_expiry_is_kept_mqtt_3_1_2_23() {
    let mut w = World::new(Settings::default());
    let session: Properties = PropertySet {
        session_expiry_interval: Some(30),
        ..PropertySet::default()
    }
    .into();
    w.open(1);
    w.send(1, &connect_v5("s", true, session.clone(), None));
    take_v5(&mut w, 1);
    w.broker.handle_connection_closed(1, None, w.now);
    w.drive_until(at(&w, 29_999));
    w.open(2);
    w.send(2, &connect_v5("s", false, session, None));
    match take_v5(&mut w, 2).first() {
        Some(Packet::Connack(c)) => assert!(c.session_present),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    w.drive_until(at(&w, 120_000));
    assert_eq!(w.broker.counts().sessions, 1);
}

#[test]
fn persistent_v311_session_expires_after_persistent_client_expiration() {
    let mut w = World::new(Settings {
        persistent_client_expiration: Some(Duration::from_secs(3600)),
        ..Settings::default()
    });
    w.connect(1, "s", false);
    w.drive_until(at(&w, 2_000));
    w.broker.handle_connection_closed(1, None, w.now);
    w.drive_until(at(&w, 3_601_999));
    assert_eq!(w.broker.counts().sessions, 1);
    w.drive_until(at(&w, 3_602_000));
    assert_eq!(w.broker.counts().sessions, 0);
}

#[test]
fn persistent_v311_session_without_persistent_client_expiration_never_expires() {
    let mut w = World::new(Settings::default());
    w.connect(1, "s", false);
    w.broker.handle_connection_closed(1, None, w.now);
    w.drive();
    assert_eq!(w.broker.counts().sessions, 1);
}

#[test]
fn persistent_client_expiration_caps_a_longer_v5_session_expiry() {
    let mut w = World::new(Settings {
        persistent_client_expiration: Some(Duration::from_secs(60)),
        ..Settings::default()
    });
    let session: Properties = PropertySet {
        session_expiry_interval: Some(3600),
        ..PropertySet::default()
    }
    .into();
    w.open(1);
    w.send(1, &connect_v5("s", true, session, None));
    take_v5(&mut w, 1);
    w.broker.handle_connection_closed(1, None, w.now);
    w.drive_until(at(&w, 59_999));
    assert_eq!(w.broker.counts().sessions, 1);
    w.drive_until(at(&w, 60_000));
    assert_eq!(w.broker.counts().sessions, 0);
}

// ---- message expiry (v5) ----

fn expires_in(secs: u32) -> Properties {
    PropertySet {
        message_expiry_interval: Some(secs),
        ..PropertySet::default()
    }
    .into()
}

/// The payloads and Message Expiry Intervals of the PUBLISH packets in `out`.
fn publishes(out: &[Packet<'static>]) -> Vec<(Vec<u8>, Option<u32>)> {
    out.iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.payload.to_vec(), p.properties.message_expiry_interval)),
            _ => None,
        })
        .collect()
}

/// Client `client` on connection `id`: a v5 persistent session subscribed to "t" at QoS 1,
/// then offline.
fn offline_subscriber(w: &mut World, id: ConnId, client: &str) {
    let session: Properties = PropertySet {
        session_expiry_interval: Some(300),
        ..PropertySet::default()
    }
    .into();
    w.open(id);
    w.send(id, &connect_v5(client, true, session, None));
    w.send(
        id,
        &subscribe_v5(1, "t", SubscribeOptions::qos(QoS::AtLeastOnce), None),
    );
    take_v5(w, id);
    w.broker.handle_connection_closed(id, None, w.now);
}

/// Resumes `client`'s session on connection `id` and returns what it is sent.
fn resume(w: &mut World, id: ConnId, client: &str) -> Vec<(Vec<u8>, Option<u32>)> {
    let session: Properties = PropertySet {
        session_expiry_interval: Some(300),
        ..PropertySet::default()
    }
    .into();
    w.open(id);
    w.send(id, &connect_v5(client, false, session, None));
    publishes(&take_v5(w, id))
}

#[test]
fn v5_queued_message_expires_at_its_interval_and_carries_what_is_left_mqtt_3_3_2_5_6() {
    let mut w = World::new(Settings::default());
    for (id, client) in [(1, "a"), (2, "b"), (3, "c")] {
        offline_subscriber(&mut w, id, client);
    }
    connect5(&mut w, 9, "p", Properties::default());
    w.send(
        9,
        &publish_v5("t", b"m", QoS::AtLeastOnce, 1, expires_in(5)),
    );
    w.drive_until(at(&w, 2_000));
    assert_eq!(resume(&mut w, 11, "a"), vec![(b"m".to_vec(), Some(3))]);
    w.drive_until(at(&w, 4_999));
    assert_eq!(resume(&mut w, 12, "b").len(), 1);
    w.drive_until(at(&w, 5_000));
    assert_eq!(resume(&mut w, 13, "c"), vec![]);
}

#[test]
fn v5_retained_message_expires_at_its_interval_and_carries_what_is_left_mqtt_3_3_2_5_6() {
    let mut w = World::new(Settings::default());
    connect5(&mut w, 9, "p", Properties::default());
    let mut retained = publish_v5("t", b"r", QoS::AtMostOnce, 0, expires_in(5));
    retained[0] |= 1;
    w.send(9, &retained);
    let subscribe = |w: &mut World, id: ConnId| {
        connect5(w, id, &format!("s{id}"), Properties::default());
        let options = SubscribeOptions::qos(QoS::AtMostOnce);
        w.send(id, &subscribe_v5(1, "t", options, None));
        publishes(&take_v5(w, id))
    };
    w.drive_until(at(&w, 2_000));
    assert_eq!(subscribe(&mut w, 1), vec![(b"r".to_vec(), Some(3))]);
    w.drive_until(at(&w, 4_999));
    assert_eq!(subscribe(&mut w, 2).len(), 1);
    w.drive_until(at(&w, 5_000));
    assert_eq!(subscribe(&mut w, 3), vec![]);
}

// ---- $SYS ----

#[test]
fn sys_topics_are_published_every_sys_interval() {
    let mut w = World::with_sys(Settings::default());
    w.connect(1, "sys", true);
    w.send(
        1,
        &subscribe_bytes(1, &[("$SYS/broker/uptime", QoS::AtMostOnce)]),
    );
    w.take(1);
    let uptime = |s: &str| Out::Publish {
        dup: false,
        qos: 0,
        retain: false,
        topic: "$SYS/broker/uptime".into(),
        id: 0,
        payload: s.as_bytes().to_vec(),
    };
    w.drive_until(at(&w, 9_999));
    assert_eq!(w.take(1), vec![]);
    w.drive_until(at(&w, 10_000));
    assert_eq!(w.take(1), vec![uptime("10 seconds")]);
    w.drive_until(at(&w, 19_999));
    assert_eq!(w.take(1), vec![]);
    w.drive_until(at(&w, 20_000));
    assert_eq!(w.take(1), vec![uptime("20 seconds")]);
}
