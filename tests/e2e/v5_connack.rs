//! MQTT 5 CONNACK properties and enhanced authentication: Assigned
//! Client Identifier, Server Keep Alive from `max_keepalive`, Retain Available, Maximum QoS,
//! Wildcard / Subscription Identifier / Shared Subscription Available, Topic Alias Maximum,
//! Receive Maximum, Maximum Packet Size; the limits announced are also enforced; an unsupported
//! Authentication Method gets CONNACK 0x8C; Request Response Information honoured.

use crate::common::v5::*;
use crate::common::*;

// v5 section 3.2.2.3: with the defaults the CONNACK is accepting (0x00, Session Present 0) and
// every property present carries a value allowed by the spec: Retain / Wildcard / Subscription
// Identifier / Shared Subscription Available only as 1 (all are supported) [MQTT-3.2.2-9 ff.],
// no Maximum QoS below 2 (both are supported), Receive Maximum and Topic Alias Maximum present
// (Mosquitto's defaults 20 and 10, `max_inflight_messages` and `max_topic_alias`).
#[test]
fn v5_connack_defaults_are_spec_consistent_mqtt_3_2_2_3() {
    let b = Broker::start("");
    let (_c, ca) = connect5_with(b.port(), &Connect::v5("defaults"));
    assert_eq!((ca.rc, ca.session_present), (0, false), "{ca:?}");
    for pid in [
        id::RETAIN_AVAILABLE,
        id::WILDCARD_SUB_AVAILABLE,
        id::SUB_ID_AVAILABLE,
        id::SHARED_SUB_AVAILABLE,
    ] {
        if let Some(v) = ca.props.int(pid) {
            assert_eq!(v, 1, "property 0x{pid:02x} says unsupported: {ca:?}");
        }
    }
    assert!(!ca.props.has(id::MAXIMUM_QOS), "QoS 2 is supported: {ca:?}");
    assert!(
        !ca.props.has(id::MAXIMUM_PACKET_SIZE),
        "no limit set: {ca:?}"
    );
    assert!(
        !ca.props.has(id::ASSIGNED_CLIENT_ID),
        "id was given: {ca:?}"
    );
    assert!(
        !ca.props.has(id::RESPONSE_INFO),
        "not requested [MQTT-3.1.2-28]: {ca:?}"
    );
    assert_eq!(ca.props.int(id::RECEIVE_MAXIMUM), Some(20), "{ca:?}");
    assert_eq!(ca.props.int(id::TOPIC_ALIAS_MAXIMUM), Some(10), "{ca:?}");
    if let Some(k) = ca.props.int(id::SERVER_KEEP_ALIVE) {
        assert_eq!(k, 60, "Server Keep Alive without max_keepalive: {ca:?}");
    }
}

// Drop-in: Mosquitto 2.0 omits every property whose value is the default, so its default
// CONNACK to a v5 client asking Keep Alive 60 is exactly Topic Alias Maximum 10 and Receive
// Maximum 20 (in any order).
#[test]
fn v5_connack_default_property_set_matches_mosquitto() {
    let b = Broker::start("");
    let (_c, ca) = connect5_with(b.port(), &Connect::v5("mosq-like"));
    let mut ids = ca.props.ids();
    ids.sort();
    assert_eq!(
        ids,
        vec![id::RECEIVE_MAXIMUM, id::TOPIC_ALIAS_MAXIMUM],
        "{ca:?}"
    );
}

// v5:[MQTT-3.2.2-16] a zero-length Client Identifier gets an Assigned Client Identifier, unique
// per connection; v5:[MQTT-3.1.3-7] the server treats it as the client's id.
#[test]
fn v5_connack_assigned_client_identifier_for_empty_id_mqtt_3_2_2_16() {
    let b = Broker::start("");
    let (_c1, a) = connect5_with(b.port(), &Connect::v5(""));
    let (_c2, b2) = connect5_with(b.port(), &Connect::v5(""));
    let id1 = a
        .props
        .string(id::ASSIGNED_CLIENT_ID)
        .expect("Assigned Client Identifier");
    let id2 = b2
        .props
        .string(id::ASSIGNED_CLIENT_ID)
        .expect("Assigned Client Identifier");
    assert!(!id1.is_empty() && id1 != id2, "{id1:?} {id2:?}");
    assert!(
        id1.starts_with("auto-"),
        "Mosquitto-style auto- prefix: {id1:?}"
    );
}

// Section 3.2.2.3.14: when the client's Keep Alive exceeds `max_keepalive` the server answers
// Server Keep Alive = max_keepalive, which the client must then use v5:[MQTT-3.1.2-21].
// (Mosquitto refuses `max_keepalive` below 10, so the enforcement itself, 15 s, is left to the
// keepalive tests.)
#[test]
fn v5_connack_server_keep_alive_from_max_keepalive_mqtt_3_1_2_21() {
    let b = Broker::start("max_keepalive 10");
    let (_c, ca) = connect5_with(b.port(), &Connect::v5("ska").keepalive(60));
    assert_eq!(ca.props.int(id::SERVER_KEEP_ALIVE), Some(10), "{ca:?}");
    let (_c, ca) = connect5_with(b.port(), &Connect::v5("ska2").keepalive(11));
    assert_eq!(ca.props.int(id::SERVER_KEEP_ALIVE), Some(10), "{ca:?}");
}

// Section 3.2.2.3: the configured limits are announced: `max_qos 1` → Maximum QoS 1,
// `retain_available false` → Retain Available 0, `max_packet_size 1000` → Maximum Packet Size
// 1000, `max_inflight_messages 5` → Receive Maximum 5, `max_topic_alias 3` → Topic Alias
// Maximum 3, `max_keepalive 30` (client asked 60) → Server Keep Alive 30.
#[test]
fn v5_connack_announces_configured_limits_mqtt_3_2_2_3() {
    let b = Broker::start(
        "max_qos 1\nretain_available false\nmax_packet_size 1000\nmax_inflight_messages 5\n\
         max_topic_alias 3\nmax_keepalive 30",
    );
    let (_c, ca) = connect5_with(b.port(), &Connect::v5("limits"));
    let p = &ca.props;
    assert_eq!(p.int(id::MAXIMUM_QOS), Some(1), "{ca:?}");
    assert_eq!(p.int(id::RETAIN_AVAILABLE), Some(0), "{ca:?}");
    assert_eq!(p.int(id::MAXIMUM_PACKET_SIZE), Some(1000), "{ca:?}");
    assert_eq!(p.int(id::RECEIVE_MAXIMUM), Some(5), "{ca:?}");
    assert_eq!(p.int(id::TOPIC_ALIAS_MAXIMUM), Some(3), "{ca:?}");
    assert_eq!(p.int(id::SERVER_KEEP_ALIVE), Some(30), "{ca:?}");
}

// v5:[MQTT-3.2.2-11]/section 3.2.2.3.4: with Maximum QoS 1 a SUBSCRIBE for QoS 2 is granted QoS 1.
#[test]
fn v5_max_qos_1_downgrades_subscription_mqtt_3_2_2_11() {
    let b = Broker::start("max_qos 1");
    let mut c = connect5(b.port(), "mq1-sub");
    sub5(&mut c, 1, "mq1/t", 2, None, 1);
}

// Section 3.2.2.3.4: a PUBLISH with a QoS above Maximum QoS → DISCONNECT 0x9B (QoS not
// supported).
#[test]
fn v5_publish_above_max_qos_disconnect_0x9b_mqtt_3_2_2_3_4() {
    let mut b = Broker::start("max_qos 1");
    let mut c = connect5(b.port(), "mq1-pub");
    c.send(&publish5("mq1/t", b"x", 2, false, 1, &Props::new()));
    expect_error_disconnect(&mut c, 0x9b);
    assert_serves5(&mut b);
}

// Section 3.2.2.3.5: with Retain Available 0, a retained PUBLISH → DISCONNECT 0x9A (Retain not
// supported).
#[test]
fn v5_retained_publish_when_retain_unavailable_disconnect_0x9a_mqtt_3_2_2_3_5() {
    let mut b = Broker::start("retain_available false");
    let mut c = connect5(b.port(), "noretain");
    c.send(&publish5("nr/t", b"x", 0, true, 0, &Props::new()));
    expect_error_disconnect(&mut c, 0x9a);
    assert_serves5(&mut b);
}

// v5:[MQTT-4.12.0-1] an Authentication Method the server does not support: CONNACK 0x8C (Bad
// authentication method) and close, exact bytes apart from an optional Reason String.
#[test]
fn v5_unsupported_authentication_method_connack_0x8c_mqtt_4_12_0_1() {
    let mut b = Broker::start("");
    let c = Connect::v5("authm").props(Props::new().str(id::AUTH_METHOD, "SCRAM-SHA-1"));
    let mut r = Raw::connect(b.port());
    r.send(&c.bytes());
    let seen = r.expect_closed(WAIT);
    assert_eq!(seen.len(), 1, "want one CONNACK then close: {seen:?}");
    let ca = parse_connack(&seen[0]);
    assert_eq!((ca.rc, ca.session_present), (0x8c, false), "{ca:?}");
    assert!(
        ca.props
            .without(&[id::REASON_STRING, id::USER_PROPERTY])
            .is_empty(),
        "{ca:?}"
    );
    if ca.props.is_empty() {
        assert_eq!(seen[0].bytes, [0x20, 0x03, 0x00, 0x8c, 0x00]);
    }
    assert_serves5(&mut b);
}

// Section 4.12: "If the Client ... sends an AUTH packet ... without an Authentication Method in
// the CONNECT, it is a Protocol Error" → DISCONNECT 0x82.
#[test]
fn v5_auth_packet_without_authentication_method_is_protocol_error_mqtt_4_12() {
    let mut b = Broker::start("");
    let mut c = connect5(b.port(), "auth-pkt");
    // AUTH, reason 0x19 (Re-authenticate), no properties.
    c.send(&[0xf0, 0x02, 0x19, 0x00]);
    expect_error_disconnect(&mut c, 0x82);
    assert_serves5(&mut b);
}

// v5:[MQTT-3.1.2-28] Request Response Information 0 (the default) → no Response Information.
#[test]
fn v5_no_response_information_unless_requested_mqtt_3_1_2_28() {
    let b = Broker::start("");
    let c = Connect::v5("rri0").props(Props::new().byte(id::REQUEST_RESPONSE_INFO, 0));
    let (_c, ca) = connect5_with(b.port(), &c);
    assert!(!ca.props.has(id::RESPONSE_INFO), "{ca:?}");
    // Asking for it is allowed; the server MAY answer with Response Information (a string).
    let c = Connect::v5("rri1").props(Props::new().byte(id::REQUEST_RESPONSE_INFO, 1));
    let (_c, ca) = connect5_with(b.port(), &c);
    assert_eq!(ca.rc, 0, "{ca:?}");
}

// A real v5 client: rumqttc reads the CONNACK properties and subscribes/publishes at QoS 1.
#[test]
fn v5_rumqttc_client_round_trip_with_connack_properties() {
    let b = Broker::start("max_packet_size 5000");
    let (sub, ca) = Mq5::connect(b.port(), "rq5-sub");
    let props = ca.properties.expect("CONNACK properties");
    assert_eq!(props.max_packet_size, Some(5000));
    assert_eq!(props.topic_alias_max, Some(10));
    sub.subscribe("rq5/t", 1);
    let (publ, _) = Mq5::connect(b.port(), "rq5-pub");
    publ.publish("rq5/t", 1, false, b"hello v5");
    let m = sub.next_publish(WAIT).expect("no publish");
    assert_eq!(&m.topic[..], b"rq5/t");
    assert_eq!(&m.payload[..], b"hello v5");
}

// v5:[MQTT-3.1.2-24] a CONNACK larger than the client's Maximum Packet Size is not sent: the
// connection closes without it, as Mosquitto does. mosquitto_pub sends an empty client id, so
// the CONNACK carries the Assigned Client Identifier (about 55 bytes).
/// v5:[MQTT-3.1.2-24]
#[test]
fn v5_connack_over_the_clients_maximum_packet_size_closes_without_it() {
    let mut b = Broker::start("");
    let publish = |max: &str| {
        mosquitto_pub_unchecked(
            b.port(),
            &[
                "-V",
                "5",
                "-D",
                "connect",
                "maximum-packet-size",
                max,
                "-t",
                "mps/connack",
                "-m",
                "x",
            ],
        )
    };
    let out = publish("20");
    assert!(!out.status.success(), "connected with a 20-byte limit");
    if !is_mosquitto() {
        assert!(
            b.wait_for_log(
                "exceeds its Maximum Packet Size (20); closing without it",
                WAIT
            ),
            "logs:\n{}",
            b.logs().join("\n")
        );
    }
    let out = publish("100");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_serves5(&mut b);
}
