//! MQTT 5 codec validation end to end: hand-encoded packets with a property
//! that is not allowed in the packet, a duplicate property, a broken variable byte integer or a
//! string running past the packet, answered with DISCONNECT 0x81 / 0x82 (or CONNACK with the
//! reason before the session exists); reason codes on PUBACK and UNSUBACK; Reason String only
//! when the client asked for problem information. Every error case ends by checking that other
//! clients are still served.

use crate::common::v5::*;
use crate::common::*;

/// A connected v5 client that sends `bad` and must be disconnected with `rc`.
fn disconnected_for(b: &mut Broker, name: &str, bad: &[u8], rc: u8) {
    let mut c = connect5(b.port(), name);
    c.send(bad);
    expect_error_disconnect(&mut c, rc);
    assert_serves5(b);
}

/// A PUBLISH QoS 0 to `t` with the given raw property bytes (length prefix included).
fn publish_with_raw_props(props: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, b"t");
    body.extend_from_slice(props);
    body.extend_from_slice(b"x");
    packet(0x30, &body)
}

// v5 section 2.2.2.2 (no statement id): "A Control Packet which contains an Identifier which is not
// valid for its packet type ... is a Malformed Packet": Session Expiry Interval in a PUBLISH.
#[test]
fn v5_property_not_allowed_in_publish_is_malformed_0x81_mqtt_2_2_2_2() {
    let mut b = Broker::start("");
    let bad = publish5(
        "t",
        b"x",
        0,
        false,
        0,
        &Props::new().u32(id::SESSION_EXPIRY, 5),
    );
    disconnected_for(&mut b, "na-pub", &bad, 0x81);
}

// v5 section 2.2.2.2: an identifier that is not a property at all (0x7f) is malformed too.
#[test]
fn v5_unknown_property_identifier_is_malformed_0x81_mqtt_2_2_2_2() {
    let mut b = Broker::start("");
    disconnected_for(
        &mut b,
        "unk-prop",
        &publish_with_raw_props(&[2, 0x7f, 0]),
        0x81,
    );
}

// v5 section 2.2.2.2: a Reason String is not a SUBSCRIBE property.
#[test]
fn v5_property_not_allowed_in_subscribe_is_malformed_0x81_mqtt_2_2_2_2() {
    let mut b = Broker::start("");
    let bad = subscribe5(1, &Props::new().str(id::REASON_STRING, "r"), &[("a", 0)]);
    disconnected_for(&mut b, "na-sub", &bad, 0x81);
}

// v5 section 2.2.2.2: a Topic Alias is not a CONNECT property → no session, CONNACK 0x81
// (midge) or a silent close (Mosquitto), never an accepting CONNACK v5:[MQTT-4.13.1-1].
#[test]
fn v5_property_not_allowed_in_connect_refused_0x81_mqtt_2_2_2_2() {
    let mut b = Broker::start("");
    let c = Connect::v5("na-conn").props(Props::new().u16(id::TOPIC_ALIAS, 1));
    expect_connect_refused(b.port(), &c.bytes(), 0x81);
    assert_serves5(&mut b);
}

// v5 section 3.3.2.3.9 "It is a Protocol Error to include the Content Type more than once".
#[test]
fn v5_duplicate_content_type_in_publish_is_protocol_error_0x82_mqtt_3_3_2_3_9() {
    let mut b = Broker::start("");
    let p = Props::new()
        .str(id::CONTENT_TYPE, "a")
        .str(id::CONTENT_TYPE, "b");
    disconnected_for(
        &mut b,
        "dup-ct",
        &publish5("t", b"x", 0, false, 0, &p),
        0x82,
    );
}

// v5 section 3.3.2.3.3 "It is a Protocol Error to include the Message Expiry Interval more than
// once" (QoS 1: the message must not be acknowledged either).
#[test]
fn v5_duplicate_message_expiry_in_publish_is_protocol_error_0x82_mqtt_3_3_2_3_3() {
    let mut b = Broker::start("");
    let p = Props::new()
        .u32(id::MESSAGE_EXPIRY, 5)
        .u32(id::MESSAGE_EXPIRY, 6);
    disconnected_for(
        &mut b,
        "dup-me",
        &publish5("t", b"x", 1, false, 3, &p),
        0x82,
    );
}

// v5 section 3.8.2.1.2 "It is a Protocol Error to include the Subscription Identifier more than
// once".
#[test]
fn v5_duplicate_subscription_identifier_is_protocol_error_0x82_mqtt_3_8_2_1_2() {
    let mut b = Broker::start("");
    let p = Props::new()
        .var(id::SUBSCRIPTION_ID, 1)
        .var(id::SUBSCRIPTION_ID, 2);
    disconnected_for(&mut b, "dup-sid", &subscribe5(1, &p, &[("a", 0)]), 0x82);
}

// v5 section 3.1.2.11.2 "It is a Protocol Error to include the Session Expiry Interval more than
// once" → refused before a session exists.
#[test]
fn v5_duplicate_session_expiry_in_connect_refused_0x82_mqtt_3_1_2_11_2() {
    let mut b = Broker::start("");
    let c = Connect::v5("dup-se").props(
        Props::new()
            .u32(id::SESSION_EXPIRY, 1)
            .u32(id::SESSION_EXPIRY, 1),
    );
    expect_connect_refused(b.port(), &c.bytes(), 0x82);
    assert_serves5(&mut b);
}

// v5:[MQTT-1.5.5-1] a Variable Byte Integer uses at most 4 bytes: a 5-byte Property Length is a
// Malformed Packet.
#[test]
fn v5_property_length_vbi_of_five_bytes_is_malformed_0x81_mqtt_1_5_5_1() {
    let mut b = Broker::start("");
    let bad = publish_with_raw_props(&[0xff, 0xff, 0xff, 0xff, 0x01]);
    disconnected_for(&mut b, "vbi5", &bad, 0x81);
}

// v5 section 2.2.2.1: a Property Length that runs past the end of the packet is malformed.
#[test]
fn v5_property_length_past_end_of_packet_is_malformed_0x81_mqtt_2_2_2_1() {
    let mut b = Broker::start("");
    let mut body = Vec::new();
    put_str(&mut body, b"t");
    body.extend_from_slice(&[0x20, 0x01, 0x00]);
    disconnected_for(&mut b, "plen", &packet(0x30, &body), 0x81);
}

// v5 section 1.5.7 UTF-8 String Pair: a value string whose length runs past the properties is
// malformed.
#[test]
fn v5_user_property_string_pair_past_end_is_malformed_0x81_mqtt_1_5_7() {
    let mut b = Broker::start("");
    let mut body = Vec::new();
    put_str(&mut body, b"t");
    // Property Length 9: 0x26, key "k", value of declared length 16 with only "vv" present.
    body.extend_from_slice(&[0x09, 0x26, 0x00, 0x01, b'k', 0x00, 0x10, b'v', b'v']);
    disconnected_for(&mut b, "pair", &packet(0x30, &body), 0x81);
}

// v5:[MQTT-1.5.4-1] ill-formed UTF-8 in a User Property key is a Malformed Packet.
#[test]
fn v5_user_property_invalid_utf8_is_malformed_0x81_mqtt_1_5_4_1() {
    let mut b = Broker::start("");
    let mut body = Vec::new();
    put_str(&mut body, b"t");
    body.extend_from_slice(&[0x07, 0x26, 0x00, 0x01, 0xff, 0x00, 0x01, b'v', b'x']);
    disconnected_for(&mut b, "utf8", &packet(0x30, &body), 0x81);
}

// v5:[MQTT-3.3.4-6] "A PUBLISH packet sent from a Client to a Server MUST NOT contain a
// Subscription Identifier" → Protocol Error. Mosquitto 2.0.11 accepts it (the spec wins).
#[test]
fn v5_subscription_identifier_in_client_publish_is_protocol_error_mqtt_3_3_4_6() {
    if skip_on_mosquitto("2.0.11 accepts a Subscription Identifier from a client") {
        return;
    }
    let mut b = Broker::start("");
    let bad = publish5(
        "t",
        b"x",
        0,
        false,
        0,
        &Props::new().var(id::SUBSCRIPTION_ID, 1),
    );
    disconnected_for(&mut b, "sid-pub", &bad, 0x82);
}

// v5 section 3.8.2.1.2 "It is a Protocol Error if the Subscription Identifier has a value of 0".
// Mosquitto 2.0.11 answers 0x81 instead of 0x82 (the spec wins).
#[test]
fn v5_subscription_identifier_zero_is_protocol_error_0x82_mqtt_3_8_2_1_2() {
    if skip_on_mosquitto("2.0.11 sends 0x81 Malformed Packet instead of 0x82") {
        return;
    }
    let mut b = Broker::start("");
    let bad = subscribe5(1, &Props::new().var(id::SUBSCRIPTION_ID, 0), &[("a", 0)]);
    disconnected_for(&mut b, "sid0", &bad, 0x82);
}

// v5:[MQTT-3.8.3-5] reserved bits of the subscription options must be 0: Malformed Packet.
#[test]
fn v5_subscription_options_reserved_bits_are_malformed_0x81_mqtt_3_8_3_5() {
    let mut b = Broker::start("");
    disconnected_for(
        &mut b,
        "optres",
        &subscribe5(1, &Props::new(), &[("a", 0xc0)]),
        0x81,
    );
}

// v5 section 3.8.3.1 "It is a Protocol Error to send a Retain Handling value of 3". Mosquitto
// 2.0.11 answers 0x81 (the spec wins).
#[test]
fn v5_retain_handling_3_is_protocol_error_0x82_mqtt_3_8_3_1() {
    if skip_on_mosquitto("2.0.11 sends 0x81 Malformed Packet instead of 0x82") {
        return;
    }
    let mut b = Broker::start("");
    disconnected_for(
        &mut b,
        "rh3",
        &subscribe5(1, &Props::new(), &[("a", 0x30)]),
        0x82,
    );
}

// v5 section 3.1.2.11.3 "It is a Protocol Error to include the Receive Maximum value of 0".
#[test]
fn v5_receive_maximum_zero_in_connect_refused_0x82_mqtt_3_1_2_11_3() {
    let mut b = Broker::start("");
    let c = Connect::v5("rm0").props(Props::new().u16(id::RECEIVE_MAXIMUM, 0));
    expect_connect_refused(b.port(), &c.bytes(), 0x82);
    assert_serves5(&mut b);
}

// v5 section 3.1.2.11.4 "It is a Protocol Error to include ... Maximum Packet Size ... zero".
#[test]
fn v5_maximum_packet_size_zero_in_connect_refused_0x82_mqtt_3_1_2_11_4() {
    let mut b = Broker::start("");
    let c = Connect::v5("mps0").props(Props::new().u32(id::MAXIMUM_PACKET_SIZE, 0));
    expect_connect_refused(b.port(), &c.bytes(), 0x82);
    assert_serves5(&mut b);
}

// v5 section 3.1.2.11.7 Request Problem Information: "It is a Protocol Error to include a value
// other than 0 or 1".
#[test]
fn v5_request_problem_information_2_refused_0x82_mqtt_3_1_2_11_7() {
    let mut b = Broker::start("");
    let c = Connect::v5("rpi2").props(Props::new().byte(id::REQUEST_PROBLEM_INFO, 2));
    expect_connect_refused(b.port(), &c.bytes(), 0x82);
    assert_serves5(&mut b);
}

fn no_problem_info(port: u16, name: &str) -> Raw {
    let c = Connect::v5(name).props(Props::new().byte(id::REQUEST_PROBLEM_INFO, 0));
    connect5_with(port, &c).0
}

// v5 section 3.4.2.1: PUBACK 0x10 "No matching subscribers"; with Request Problem Information 0
// the server MUST NOT add a Reason String v5:[MQTT-3.1.2-29], so the bytes are exact.
#[test]
fn v5_puback_0x10_no_matching_subscribers_exact_bytes_mqtt_3_1_2_29() {
    let mut b = Broker::start("");
    let mut c = no_problem_info(b.port(), "nosubs");
    c.send(&publish5(
        "nobody/here",
        b"x",
        1,
        false,
        0x0102,
        &Props::new(),
    ));
    c.expect_bytes(&[0x40, 0x03, 0x01, 0x02, 0x10], WAIT);
    // With a subscriber the reason is 0x00 Success (short or long form).
    let mut s = connect5(b.port(), "nosubs-s");
    sub5(&mut s, 1, "nobody/here", 1, None, 1);
    c.send(&publish5(
        "nobody/here",
        b"y",
        1,
        false,
        0x0103,
        &Props::new(),
    ));
    let a = parse_ack(&expect_kind(&mut c, 4, WAIT));
    assert_eq!((a.pid, a.rc), (0x0103, 0x00), "{a:?}");
    assert!(a.props.is_empty(), "{a:?}");
    assert_eq!(collect5(&mut s, 1, WAIT)[0].payload, b"y");
    assert_serves5(&mut b);
}

// v5 section 3.11.3: UNSUBACK reason codes 0x00 Success and 0x11 No subscription existed, one per
// filter, exact bytes (Request Problem Information 0: no Reason String v5:[MQTT-3.1.2-29]).
#[test]
fn v5_unsuback_reason_codes_exact_bytes_mqtt_3_11_3_1() {
    let b = Broker::start("");
    let mut c = no_problem_info(b.port(), "unsub");
    sub5(&mut c, 1, "have/this", 0, None, 0);
    c.send(&unsubscribe5(0x0a0b, &["have/this", "never/had"]));
    c.expect_bytes(&[0xb0, 0x05, 0x0a, 0x0b, 0x00, 0x00, 0x11], WAIT);
}

// v5 section 3.9.3: SUBACK carries one reason code per filter, the granted QoS 0/1/2, exact bytes.
#[test]
fn v5_suback_granted_qos_exact_bytes_mqtt_3_9_3() {
    let b = Broker::start("");
    let mut c = no_problem_info(b.port(), "suback");
    c.send(&subscribe5(
        0x0304,
        &Props::new(),
        &[("q/0", 0), ("q/1", 1), ("q/2", 2)],
    ));
    c.expect_bytes(&[0x90, 0x06, 0x03, 0x04, 0x00, 0x00, 0x01, 0x02], WAIT);
}

/// Where the specification leaves the choice, a v5 publisher's acknowledgements carry
/// Mosquitto 2.0's reason codes, byte for byte: 0x95 Packet too large for a payload over
/// `message_size_limit`; 0x10 No matching subscribers in PUBACK only (a QoS 2 PUBREC says
/// Success), and only when no subscription matches at all: the publisher's own No Local
/// subscription still counts.
#[test]
fn v5_publish_ack_reason_codes_are_mosquittos() {
    let b = Broker::start("message_size_limit 10");
    let mut c = no_problem_info(b.port(), "ack-codes");
    c.send(&publish5("rc/big", &[b'x'; 20], 1, false, 1, &Props::new()));
    c.expect_bytes(&[0x40, 0x03, 0x00, 0x01, 0x95], WAIT);
    c.send(&publish5("rc/big", &[b'x'; 20], 2, false, 2, &Props::new()));
    c.expect_bytes(&[0x50, 0x03, 0x00, 0x02, 0x95], WAIT);
    c.send(&publish5("rc/none", b"x", 1, false, 3, &Props::new()));
    c.expect_bytes(&[0x40, 0x03, 0x00, 0x03, 0x10], WAIT);
    c.send(&publish5("rc/none", b"x", 2, false, 4, &Props::new()));
    c.expect_bytes(&[0x50, 0x02, 0x00, 0x04], WAIT);
    c.send(&pubrel(4));
    c.expect_bytes(&[0x70, 0x02, 0x00, 0x04], WAIT);
    c.send(&subscribe5(
        9,
        &Props::new(),
        &[("rc/self", opts(1, true, false, 0))],
    ));
    c.expect_bytes(&[0x90, 0x04, 0x00, 0x09, 0x00, 0x01], WAIT);
    c.send(&publish5("rc/self", b"x", 1, false, 5, &Props::new()));
    c.expect_bytes(&[0x40, 0x02, 0x00, 0x05], WAIT);
}

/// dev:packet-id-not-found: a PUBREL or PUBREC for a packet id midge does not know is
/// answered with reason 0x92 Packet Identifier not found (v5 3.6.2.1, 3.7.2.1); Mosquitto
/// answers Success.
#[test]
fn v5_pubrel_or_pubrec_for_an_unknown_id_is_answered_0x92() {
    if skip_on_mosquitto("Mosquitto answers Success") {
        return;
    }
    let b = Broker::start("");
    let mut c = no_problem_info(b.port(), "unknown-ids");
    c.send(&pubrel(77));
    c.expect_bytes(&[0x70, 0x03, 0x00, 0x4d, 0x92], WAIT);
    c.send(&pubrec(78));
    c.expect_bytes(&[0x62, 0x03, 0x00, 0x4e, 0x92], WAIT);
}

/// A paho-mqtt 2.x MQTT 5 publisher: publishes `b"x"` to each `TOPIC=QOS` argument in turn and
/// prints the reason code its `on_publish` got for each, space separated.
const PAHO_REASON_CODES: &str = r##"
import sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
got = {}
def on_publish(client, userdata, mid, rc, props):
    got[mid] = rc.value
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho-rc", protocol=mqtt.MQTTv5)
c.on_publish = on_publish
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_start()
mids = []
for arg in sys.argv[2:]:
    topic, qos = arg.rsplit("=", 1)
    mids.append(c.publish(topic, b"x", qos=int(qos)).mid)
deadline = time.time() + 5
while len(got) < len(mids) and time.time() < deadline:
    time.sleep(0.02)
c.disconnect()
c.loop_stop()
print(" ".join(str(got.get(m, "none")) for m in mids))
"##;

/// The same reason codes through a client nobody here wrote: paho-mqtt's `on_publish` reports
/// 0x87 for a PUBLISH to `$SYS`, 0x10 for a QoS 1 PUBLISH nobody subscribes to and Success for
/// the same at QoS 2, as with Mosquitto.
#[test]
fn v5_paho_sees_mosquittos_publish_reason_codes() {
    if !paho_available() {
        return;
    }
    let b = Broker::start("");
    let dir = TempDir::new();
    let script = dir.write("paho_rc.py", PAHO_REASON_CODES);
    let mut cmd = std::process::Command::new(python());
    cmd.arg(&script).arg(b.port().to_string()).args([
        "$SYS/spoof=1",
        "paho/nobody=1",
        "paho/nobody=2",
    ]);
    let out = run_with_timeout(cmd, None, std::time::Duration::from_secs(20));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "135 16 0",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
