//! The options Mosquitto scopes per listener (`mount_point`, `use_username_as_clientid`,
//! `max_qos`) and the broker-wide access options `clientid_prefixes`, `check_retain_source`
//! and `max_inflight_bytes`.

use super::*;

/// Listener 0 as configured by default; listener 1 as `second` makes it.
fn two_listeners(base: Settings, second: ListenerOptions) -> Settings {
    Settings {
        listeners: vec![ListenerOptions::default(), second],
        ..base
    }
}

fn mounted(prefix: &str) -> ListenerOptions {
    ListenerOptions {
        mount_point: Some(prefix.into()),
        ..ListenerOptions::default()
    }
}

fn connect_with(id: &str, user: Option<&str>, will: Option<&str>) -> Vec<u8> {
    Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V311,
        bridge: false,
        clean_start: true,
        keep_alive: 60,
        client_id: id.into(),
        will: will.map(|topic| LastWill {
            topic: topic.into(),
            payload: b"gone".to_vec(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        }),
        username: user.map(str::to_string),
        password: None,
        properties: Properties::default(),
    }))
    .to_bytes(ProtocolVersion::V311)
}

fn unsubscribe_bytes(packet_id: u16, filters: &[&str]) -> Vec<u8> {
    Packet::Unsubscribe(crate::codec::Unsubscribe {
        packet_id,
        filters: filters.iter().map(|f| f.to_string()).collect(),
        properties: Properties::default(),
    })
    .to_bytes(ProtocolVersion::V311)
}

impl World {
    /// Connects `client` (with `user`, if any) on `listener`; returns the CONNACK code.
    fn join(&mut self, id: ConnId, listener: usize, client: &str, user: Option<&str>) -> u8 {
        self.open_on(id, listener);
        self.send(id, &connect_with(client, user, None));
        match self.take(id).first() {
            Some(Out::Connack(_, code)) => *code,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

#[test]
fn a_mount_point_prefixes_topics_on_the_way_in_and_strips_them_on_the_way_out() {
    let mut w = World::new(two_listeners(Settings::default(), mounted("t1/")));
    assert_eq!(w.join(1, 0, "outside", None), 0);
    w.send(1, &subscribe_bytes(1, &[("#", QoS::AtMostOnce)]));
    assert_eq!(w.join(2, 1, "tenant", None), 0);
    w.send(2, &subscribe_bytes(1, &[("a/#", QoS::AtMostOnce)]));
    assert_eq!(w.take(2), vec![Out::Suback(1, vec![0])]);
    w.take(1);

    // In: the tenant's topic is under its mount point for everyone else.
    w.send(2, &publish("a/b", b"1", QoS::AtMostOnce, false, 0));
    assert_eq!(w.take(1), vec![pub_out("t1/a/b", b"1", 0, 0)]);
    assert_eq!(w.take(2), vec![pub_out("a/b", b"1", 0, 0)]);
    // Out: only its own tree reaches it, without the prefix.
    w.send(1, &publish("t1/a/c", b"2", QoS::AtMostOnce, false, 0));
    w.send(1, &publish("a/c", b"3", QoS::AtMostOnce, false, 0));
    assert_eq!(w.take(2), vec![pub_out("a/c", b"2", 0, 0)]);
    // A reload leaves the listeners' options as they were started, as in Mosquitto.
    w.take(1);
    w.reload(Settings::default());
    w.send(2, &publish("a/e", b"5", QoS::AtMostOnce, false, 0));
    assert_eq!(w.take(1), vec![pub_out("t1/a/e", b"5", 0, 0)]);
    w.take(2);
    // UNSUBSCRIBE is mounted like SUBSCRIBE, so it removes the subscription.
    w.send(2, &unsubscribe_bytes(2, &["a/#"]));
    assert_eq!(w.take(2), vec![Out::Unsuback(2)]);
    w.send(1, &publish("t1/a/d", b"4", QoS::AtMostOnce, false, 0));
    assert!(w.take(2).is_empty());
    // A will is published under the mount point too.
    w.take(1);
    w.open_on(3, 1);
    w.send(3, &connect_with("mortal", None, Some("w")));
    w.take(3);
    w.broker.handle_connection_closed(3, None, w.now);
    assert_eq!(w.take(1), vec![pub_out("t1/w", b"gone", 0, 0)]);
}

#[test]
fn a_mount_point_keeps_shared_subscriptions_shared_and_retained_messages_mounted() {
    let mut w = World::new(two_listeners(Settings::default(), mounted("t1/")));
    assert_eq!(w.join(1, 0, "outside", None), 0);
    w.send(1, &publish("t1/r", b"kept", QoS::AtMostOnce, true, 0));
    assert_eq!(w.join(2, 1, "tenant", None), 0);
    w.send(2, &subscribe_bytes(1, &[("r", QoS::AtMostOnce)]));
    let replay = Out::Publish {
        dup: false,
        qos: 0,
        retain: true,
        topic: "r".into(),
        id: 0,
        payload: b"kept".to_vec(),
    };
    assert_eq!(w.take(2), vec![Out::Suback(1, vec![0]), replay]);
    w.send(2, &subscribe_bytes(2, &[("$share/g/s/#", QoS::AtMostOnce)]));
    w.take(2);
    w.send(1, &publish("t1/s/x", b"1", QoS::AtMostOnce, false, 0));
    assert_eq!(w.take(2), vec![pub_out("s/x", b"1", 0, 0)]);
    // $SYS is no exception: a mounted client's `$SYS/#` is `t1/$SYS/#`.
    w.send(2, &subscribe_bytes(3, &[("$SYS/#", QoS::AtMostOnce)]));
    w.take(2);
    w.send(1, &publish("t1/$SYS/x", b"2", QoS::AtMostOnce, false, 0));
    assert_eq!(w.take(2), vec![pub_out("$SYS/x", b"2", 0, 0)]);
}

#[test]
fn acls_see_the_mounted_topic() {
    let acl = "topic readwrite t1/ok/#\n";
    let mut w = World::new(two_listeners(
        secured(None, Some(acl), true),
        mounted("t1/"),
    ));
    assert_eq!(w.join(1, 1, "tenant", None), 0);
    w.send(1, &subscribe_bytes(1, &[("#", QoS::AtMostOnce)]));
    w.take(1);
    w.send(1, &publish("ok/a", b"1", QoS::AtMostOnce, false, 0));
    w.send(1, &publish("no/a", b"2", QoS::AtMostOnce, false, 0));
    assert_eq!(w.take(1), vec![pub_out("ok/a", b"1", 0, 0)]);
}

#[test]
fn use_username_as_clientid_replaces_the_id_and_refuses_clients_without_one() {
    let second = ListenerOptions {
        use_username_as_clientid: true,
        ..ListenerOptions::default()
    };
    let mut w = World::new(two_listeners(secured(None, None, true), second));
    // Mosquitto: CONNACK 5, not authorised.
    assert_eq!(w.join(1, 1, "anonymous", None), 5);
    assert!(w.closed(1));
    // Two ids, one username: the second connection takes over the first's session.
    assert_eq!(w.join(2, 1, "one", Some("alice")), 0);
    assert_eq!(w.join(3, 1, "two", Some("alice")), 0);
    assert!(w.closed(2));
    // On the other listener, ids stay as sent.
    assert_eq!(w.join(4, 0, "one", Some("alice")), 0);
    assert_eq!(w.join(5, 0, "two", Some("alice")), 0);
    assert!(!w.closed(4));
}

#[test]
fn clientid_prefixes_refuses_other_ids_generated_ones_too() {
    let mut w = World::new(Settings {
        clientid_prefixes: Some("sensor-".into()),
        ..Settings::default()
    });
    assert_eq!(w.join(1, 0, "laptop", None), 5);
    assert_eq!(w.join(2, 0, "sensor-1", None), 0);
    // An empty id gets `auto-...`, which has not the prefix either (as in Mosquitto).
    assert_eq!(w.join(3, 0, "", None), 5);
}

#[test]
fn max_qos_is_per_listener() {
    let second = ListenerOptions {
        max_qos: QoS::AtLeastOnce,
        ..ListenerOptions::default()
    };
    let mut w = World::new(two_listeners(Settings::default(), second));
    assert_eq!(w.join(1, 0, "full", None), 0);
    assert_eq!(w.join(2, 1, "capped", None), 0);
    w.send(1, &subscribe_bytes(1, &[("t", QoS::ExactlyOnce)]));
    w.send(2, &subscribe_bytes(1, &[("t", QoS::ExactlyOnce)]));
    assert_eq!(w.take(1), vec![Out::Suback(1, vec![2])]);
    assert_eq!(w.take(2), vec![Out::Suback(1, vec![1])]);
    // A QoS 2 PUBLISH above the listener's max_qos ends the 3.1.1 connection.
    w.send(1, &publish("t", b"ok", QoS::ExactlyOnce, false, 1));
    assert!(!w.closed(1));
    w.send(2, &publish("t", b"no", QoS::ExactlyOnce, false, 1));
    assert!(w.closed(2));
}

#[test]
fn max_inflight_bytes_holds_messages_back_until_acknowledged() {
    let mut w = World::new(Settings {
        max_inflight_bytes: 10,
        ..Settings::default()
    });
    assert!(!w.connect(1, "sub", true));
    w.send(1, &subscribe_bytes(1, &[("t", QoS::AtLeastOnce)]));
    w.take(1);
    assert!(!w.connect(2, "pub", true));
    for (i, p) in [b"11111111", b"22222222", b"33333333"].iter().enumerate() {
        w.send(2, &publish("t", *p, QoS::AtLeastOnce, false, i as u16 + 1));
    }
    // 0 bytes in flight, then 8: both below 10, so two go; with 16 the third waits.
    let ids: Vec<u16> = w
        .take(1)
        .iter()
        .map(|o| match o {
            Out::Publish { id, .. } => *id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 2);
    w.send(1, &ack(Packet::Puback, ids[0]));
    assert_eq!(w.take(1), vec![pub_out("t", b"33333333", 1, 3)]);
}

#[test]
fn check_retain_source_replays_only_what_the_publisher_may_still_publish() {
    let writer = "user alice\ntopic readwrite r/#\nuser bob\ntopic read r/#\n";
    let reader = "user alice\ntopic read r/#\nuser bob\ntopic read r/#\n";
    let mut w = World::new(secured(None, Some(writer), true));
    assert_eq!(w.join(1, 0, "pub", Some("alice")), 0);
    w.send(1, &publish("r/x", b"kept", QoS::AtMostOnce, true, 0));
    // alice's retained will, published when her connection drops (her session with it).
    w.open_on(5, 0);
    w.send(
        5,
        &Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V311,
            bridge: false,
            clean_start: true,
            keep_alive: 60,
            client_id: "mortal".into(),
            will: Some(LastWill {
                topic: "r/will".into(),
                payload: b"kept".to_vec(),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Properties::default(),
            }),
            username: Some("alice".into()),
            password: None,
            properties: Properties::default(),
        }))
        .to_bytes(ProtocolVersion::V311),
    );
    w.broker.handle_connection_closed(5, None, w.now);
    let retained = |topic: &str| Out::Publish {
        dup: false,
        qos: 0,
        retain: true,
        topic: topic.into(),
        id: 0,
        payload: b"kept".to_vec(),
    };
    assert_eq!(w.join(2, 0, "sub-1", Some("bob")), 0);
    w.send(2, &subscribe_bytes(1, &[("r/#", QoS::AtMostOnce)]));
    assert_eq!(
        w.take(2),
        vec![Out::Suback(1, vec![0]), retained("r/will"), retained("r/x")]
    );
    // alice loses the right to write r/#: her retained messages are no longer replayed.
    w.reload(secured(None, Some(reader), true));
    assert_eq!(w.join(3, 0, "sub-2", Some("bob")), 0);
    w.send(3, &subscribe_bytes(1, &[("r/#", QoS::AtMostOnce)]));
    assert_eq!(w.take(3), vec![Out::Suback(1, vec![0])]);
    // With check_retain_source false it is.
    w.reload(Settings {
        check_retain_source: false,
        ..secured(None, Some(reader), true)
    });
    assert_eq!(w.join(4, 0, "sub-3", Some("bob")), 0);
    w.send(4, &subscribe_bytes(1, &[("r/#", QoS::AtMostOnce)]));
    assert_eq!(
        w.take(4),
        vec![Out::Suback(1, vec![0]), retained("r/will"), retained("r/x")]
    );
}
