//! MQTT 5 PUBLISH properties forwarded unchanged: User Properties in order,
//! Content Type, Payload Format Indicator (payload validated when it is 1: 0x99), Response
//! Topic, Correlation Data; with raw bytes, mosquitto_pub/mosquitto_sub and rumqttc.

use crate::common::v5::*;
use crate::common::*;

fn app_props() -> Props {
    Props::new()
        .byte(id::PAYLOAD_FORMAT, 1)
        .str(id::CONTENT_TYPE, "application/json")
        .str(id::RESPONSE_TOPIC, "reply/to/me")
        .bin(id::CORRELATION_DATA, &[0xde, 0xad, 0x00, 0xbe, 0xef])
        .user("b", "1")
        .user("a", "2")
        .user("b", "3")
        .user("", "")
}

// v5:[MQTT-3.3.2-4] Payload Format Indicator, v5:[MQTT-3.3.2-15] Response Topic,
// v5:[MQTT-3.3.2-16] Correlation Data, v5:[MQTT-3.3.2-17]/[MQTT-3.3.2-18] User Properties unaltered
// and in order (duplicate keys and empty strings included), v5:[MQTT-3.3.2-20] Content Type: the
// subscriber's PUBLISH carries exactly the publisher's properties.
#[test]
fn v5_publish_properties_forwarded_unaltered_in_order_mqtt_3_3_2_17() {
    let b = Broker::start("");
    let mut s = connect5(b.port(), "fw-sub");
    sub5(&mut s, 1, "fw/t", 1, None, 1);
    let mut p = connect5(b.port(), "fw-pub");
    pub5_qos1(&mut p, "fw/t", br#"{"k":1}"#, 1, &app_props());
    let m = &collect5(&mut s, 1, WAIT)[0];
    assert_eq!(m.payload, br#"{"k":1}"#);
    assert_eq!(m.props, app_props(), "properties changed on the way");
}

// The same at QoS 0 and 2 (each QoS path forwards the properties).
#[test]
fn v5_publish_properties_forwarded_at_qos0_and_qos2_mqtt_3_3_2_17() {
    let b = Broker::start("");
    let mut s = connect5(b.port(), "fw02-sub");
    sub5(&mut s, 1, "fw02/t", 2, None, 2);
    let mut p = connect5(b.port(), "fw02-pub");
    p.send(&publish5("fw02/t", b"zero", 0, false, 0, &app_props()));
    p.send(&publish5("fw02/t", b"two", 2, false, 7, &app_props()));
    expect_kind(&mut p, 5, WAIT);
    p.send(&pubrel(7));
    expect_kind(&mut p, 7, WAIT);
    for m in collect5(&mut s, 2, WAIT) {
        assert_eq!(m.props, app_props(), "{m:?}");
    }
}

// Section 3.3.2.3.2: Payload Format Indicator 1 with a payload that is not UTF-8 → the server
// (which validates) answers PUBACK / PUBREC 0x99 (Payload format invalid) and
// does not forward it. Mosquitto 2.0.11 does not validate (the check is a MAY; midge does it).
#[test]
fn v5_payload_format_indicator_1_invalid_utf8_gets_0x99_mqtt_3_3_2_3_2() {
    if skip_on_mosquitto("2.0.11 does not validate payloads marked as UTF-8") {
        return;
    }
    let mut b = Broker::start("");
    let mut s = connect5(b.port(), "pfi-sub");
    sub5(&mut s, 1, "pfi/t", 2, None, 2);
    let mut p = connect5(b.port(), "pfi-pub");
    let utf8 = Props::new().byte(id::PAYLOAD_FORMAT, 1);
    let a = pub5_qos1(&mut p, "pfi/t", &[0xff, 0xfe, b'x'], 1, &utf8);
    assert_eq!(a.rc, 0x99, "{a:?}");
    p.send(&publish5("pfi/t", &[0xc3, 0x28], 2, false, 2, &utf8));
    let r = parse_ack(&expect_kind(&mut p, 5, WAIT));
    assert_eq!((r.pid, r.rc), (2, 0x99), "{r:?}");
    s.quiet(secs(0.5));
    // Valid UTF-8 marked as such, and invalid UTF-8 not marked, both go through.
    pub5_qos1(&mut p, "pfi/t", "ünïcödé".as_bytes(), 3, &utf8);
    pub5_qos1(
        &mut p,
        "pfi/t",
        &[0xff, 0x00],
        4,
        &Props::new().byte(id::PAYLOAD_FORMAT, 0),
    );
    let got = collect5(&mut s, 2, WAIT);
    assert_eq!(got[0].payload, "ünïcödé".as_bytes());
    assert_eq!(got[1].payload, [0xff, 0x00]);
    assert_serves5(&mut b);
}

// Real clients: mosquitto_pub -D publish ... → mosquitto_sub -F '%P|%C|%R|%D|%F|%p'.
#[test]
fn v5_mosquitto_pub_properties_reach_mosquitto_sub_mqtt_3_3_2_17() {
    let b = Broker::start("");
    let sub = Sub::spawn(
        b.port(),
        5,
        &[
            "-V",
            "mqttv5",
            "-t",
            "mp/t",
            "-C",
            "1",
            "-F",
            "%P|%C|%R|%D|%F|%p",
        ],
    );
    std::thread::sleep(secs(0.5));
    let args = "-V mqttv5 -t mp/t -q 1 -m hello -D publish user-property a b \
                -D publish user-property c d -D publish content-type text/plain \
                -D publish response-topic r/t -D publish correlation-data abc \
                -D publish payload-format-indicator 1";
    mosquitto_pub(b.port(), &args.split_whitespace().collect::<Vec<_>>());
    let (lines, _) = sub.finish(secs(6.0));
    assert_eq!(lines, ["a:b c:d|text/plain|r/t|abc|1|hello"]);
}

// rumqttc v5 → rumqttc v5: user properties, content type, response topic, correlation data.
#[test]
fn v5_rumqttc_publish_properties_round_trip_mqtt_3_3_2_17() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let b = Broker::start("");
    let (sub, _) = Mq5::connect(b.port(), "rqp-sub");
    sub.subscribe("rqp/t", 1);
    let (publ, _) = Mq5::connect(b.port(), "rqp-pub");
    let props = PublishProperties {
        content_type: Some("text/csv".into()),
        response_topic: Some("rqp/reply".into()),
        correlation_data: Some(b"corr-1".to_vec().into()),
        user_properties: vec![("x".into(), "1".into()), ("y".into(), "2".into())],
        ..Default::default()
    };
    publ.publish_with("rqp/t", 1, b"a,b", props);
    let m = sub.next_publish(WAIT).expect("no publish");
    let p = m.properties.expect("no properties");
    assert_eq!(p.content_type.as_deref(), Some("text/csv"));
    assert_eq!(p.response_topic.as_deref(), Some("rqp/reply"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"corr-1"[..]));
    assert_eq!(
        p.user_properties,
        vec![
            ("x".to_string(), "1".to_string()),
            ("y".to_string(), "2".to_string())
        ]
    );
}
