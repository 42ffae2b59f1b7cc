//! CONNACK as the client may receive it: the session present flag MQTT 3.1 does not have, a
//! will the broker could never publish, and a v5 client's Maximum Packet Size.

use super::*;
use crate::codec::Connack;

/// A CONNECT of `version` for `id`, with `properties` (v5) and `will`.
fn connect_of(
    version: ProtocolVersion,
    id: &str,
    clean: bool,
    properties: Properties,
    will: Option<LastWill>,
) -> Vec<u8> {
    Packet::Connect(Box::new(Connect {
        version,
        bridge: false,
        clean_start: clean,
        keep_alive: 60,
        client_id: id.into(),
        will,
        username: None,
        password: None,
        properties,
    }))
    .to_bytes(version)
}

fn will_of(payload_len: usize) -> Option<LastWill> {
    Some(LastWill {
        topic: "status/gone".into(),
        payload: vec![b'x'; payload_len],
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
    })
}

fn raw_output(w: &mut World, id: ConnId) -> Vec<u8> {
    w.broker
        .poll_transmit(id)
        .map(std::mem::take)
        .unwrap_or_default()
}

fn max_packet_size(max: u32) -> Properties {
    PropertySet {
        maximum_packet_size: Some(max),
        ..PropertySet::default()
    }
    .into()
}

#[test]
fn mqtt31_connack_never_says_session_present() {
    let mut w = World::new(Settings::default());
    for (version, client, resumed) in [
        (ProtocolVersion::V31, "keeper31", [0x20, 2, 0, 0]),
        (ProtocolVersion::V311, "keeper311", [0x20, 2, 1, 0]),
    ] {
        let connect = connect_of(version, client, false, Properties::default(), None);
        w.open(1);
        w.send(1, &connect);
        assert_eq!(raw_output(&mut w, 1), [0x20, 2, 0, 0]);
        w.send(1, &[0xe0, 0]);
        assert!(w.closed(1));
        // The session is kept and resumed; only 3.1.1 may say so (v311:[MQTT-3.2.2-2]).
        w.open(2);
        w.send(2, &connect);
        assert_eq!(raw_output(&mut w, 2), resumed, "{version:?}");
        w.send(2, &[0xe0, 0]);
        assert!(w.closed(2));
    }
}

#[test]
fn will_larger_than_message_size_limit_refuses_the_connect() {
    let settings = Settings {
        message_size_limit: 10,
        ..Settings::default()
    };
    let mut w = World::new(settings);
    // 3.x: CONNACK 5, as Mosquitto.
    w.open(1);
    w.send(
        1,
        &connect_bytes(
            "big",
            true,
            60,
            Some(("t", &[7; 11], QoS::AtMostOnce, false)),
        ),
    );
    assert_eq!(w.take(1), vec![Out::Connack(false, 5)]);
    assert!(w.closed(1));
    // v5: 0x95 Packet too large.
    w.open(2);
    w.send(
        2,
        &connect_of(
            ProtocolVersion::V5,
            "big5",
            true,
            Properties::default(),
            will_of(11),
        ),
    );
    match take_v5(&mut w, 2).as_slice() {
        [Packet::Connack(c)] => assert_eq!(c.code, reason::PACKET_TOO_LARGE),
        other => panic!("expected CONNACK 0x95, got {other:?}"),
    }
    assert!(w.closed(2));
    // A will of exactly the limit is accepted, and published when the client goes.
    w.connect(3, "watcher", true);
    w.send(3, &subscribe_bytes(1, &[("status/#", QoS::AtMostOnce)]));
    w.take(3);
    w.open(4);
    w.send(
        4,
        &connect_of(
            ProtocolVersion::V311,
            "fits",
            true,
            Properties::default(),
            will_of(10),
        ),
    );
    assert_eq!(w.take(4), vec![Out::Connack(false, 0)]);
    w.broker.handle_connection_closed(4, None, w.now);
    assert_eq!(w.take(3), vec![pub_out("status/gone", &[b'x'; 10], 0, 0)]);
}

#[test]
fn v5_connack_larger_than_the_clients_maximum_packet_size_is_not_sent_mqtt_3_1_2_24() {
    let mut w = World::new(Settings::default());
    // The CONNACK for an empty client id carries the assigned identifier: find its size.
    w.open(1);
    w.send(
        1,
        &connect_of(ProtocolVersion::V5, "", true, Properties::default(), None),
    );
    let size = raw_output(&mut w, 1).len() as u32;
    assert!(size > 40, "CONNACK with an assigned id is {size} bytes");

    // Exactly the client's limit: sent.
    w.open(2);
    w.send(
        2,
        &connect_of(ProtocolVersion::V5, "", true, max_packet_size(size), None),
    );
    assert_eq!(raw_output(&mut w, 2).len() as u32, size);

    // One byte less: closed without CONNACK.
    w.open(3);
    w.send(
        3,
        &connect_of(
            ProtocolVersion::V5,
            "",
            true,
            max_packet_size(size - 1),
            None,
        ),
    );
    assert!(raw_output(&mut w, 3).is_empty(), "no CONNACK");
    assert!(w.closed(3));

    // A client that cannot receive its CONNACK takes nothing over.
    w.connect(4, "owner", false);
    w.open(5);
    w.send(
        5,
        &connect_of(ProtocolVersion::V5, "owner", true, max_packet_size(4), None),
    );
    assert!(raw_output(&mut w, 5).is_empty(), "no CONNACK");
    assert!(w.closed(5));
    w.send(4, &[0xc0, 0]);
    assert_eq!(
        w.take(4),
        vec![Out::Pingresp],
        "the owner is still connected"
    );

    // A refusal too: a v5 CONNACK without properties is 5 bytes.
    let refused = |max| -> Properties {
        PropertySet {
            authentication_method: Some("SCRAM-SHA-1".into()),
            ..(*max_packet_size(max)).clone()
        }
        .into()
    };
    w.open(6);
    w.send(
        6,
        &connect_of(ProtocolVersion::V5, "c6", true, refused(4), None),
    );
    assert!(raw_output(&mut w, 6).is_empty(), "no CONNACK");
    assert!(w.closed(6));
    w.open(7);
    w.send(
        7,
        &connect_of(ProtocolVersion::V5, "c7", true, refused(5), None),
    );
    assert_eq!(
        raw_output(&mut w, 7),
        [0x20, 3, 0, reason::BAD_AUTHENTICATION_METHOD, 0]
    );
    assert!(w.closed(7));
}

/// v5:[MQTT-3.2.2-19], [MQTT-3.2.2-20]
#[test]
fn v5_connack_drops_reason_string_and_user_properties_to_fit() {
    let mut w = World::new(Settings::default());
    w.open(1);
    let connack = || Connack {
        session_present: false,
        code: reason::NOT_AUTHORIZED,
        properties: PropertySet {
            reason_string: Some("not on the list".into()),
            user_properties: vec![("why".into(), "banned".into())],
            ..PropertySet::default()
        }
        .into(),
    };
    let connect = |max| Connect {
        version: ProtocolVersion::V5,
        bridge: false,
        clean_start: true,
        keep_alive: 60,
        client_id: "c".into(),
        will: None,
        username: None,
        password: None,
        properties: max_packet_size(max),
    };
    let full = Packet::Connack(connack())
        .to_bytes(ProtocolVersion::V5)
        .len() as u32;
    let kept = w.broker.connack_within_limit(1, &connect(full), connack());
    assert_eq!(kept, Some(connack()), "fits: sent whole");
    let trimmed = w
        .broker
        .connack_within_limit(1, &connect(full - 1), connack());
    let bare = Connack {
        properties: Properties::default(),
        ..connack()
    };
    assert_eq!(trimmed, Some(bare), "without the optional properties");
    assert_eq!(
        w.broker.connack_within_limit(1, &connect(4), connack()),
        None
    );
}
