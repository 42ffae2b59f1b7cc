//! Mixed protocol versions: a 3.1.1 subscriber receives what a v5 publisher
//! sends (properties dropped) and a v5 subscriber what a 3.1.1 publisher sends (no properties),
//! with each version's RETAIN flag rules; retained messages and sessions are shared across
//! versions.

use crate::common::v5::*;
use crate::common::*;

fn rich() -> Props {
    Props::new()
        .str(id::CONTENT_TYPE, "text/plain")
        .user("k", "v")
        .u32(id::MESSAGE_EXPIRY, 100)
}

// v311:[MQTT-3.3.1-9] a 3.1.1 subscriber gets a v5 publisher's message as a byte-exact 3.1.1
// PUBLISH: no properties, RETAIN 0 for a live message even if it was published retained.
#[test]
fn v5_publisher_to_v311_subscriber_properties_dropped_mqtt_3_3_1_9() {
    let b = Broker::start("");
    let mut s = Raw::mqtt_connect(b.port(), "mx-v3sub");
    s.subscribe(1, &[("mx/t", 1)], &[1]);
    let mut p = connect5(b.port(), "mx-v5pub");
    p.send(&publish5("mx/t", b"live", 1, true, 1, &rich()));
    expect_kind(&mut p, 4, WAIT);
    let m = s.expect_packet(WAIT);
    assert_eq!(
        hex(&m.bytes),
        hex(&publish("mx/t", b"live", 1, false, false, m.pid()))
    );
    s.send(&puback(m.pid()));
    // A new 3.1.1 subscription gets the retained copy with RETAIN 1 [MQTT-3.3.1-8], no properties.
    let mut s2 = Raw::mqtt_connect(b.port(), "mx-v3sub2");
    s2.send(&subscribe(1, &[("mx/t", 0)]));
    s2.expect_bytes(&suback(1, &[0]), WAIT);
    s2.expect_bytes(&publish("mx/t", b"live", 0, true, false, 0), WAIT);
}

// A v5 subscriber gets a 3.1.1 publisher's message as a v5 PUBLISH with an empty property list
// (exact bytes); RETAIN follows the v5 subscription's Retain As Published v5:[MQTT-3.3.1-12].
#[test]
fn v311_publisher_to_v5_subscriber_exact_bytes_mqtt_3_3_1_12() {
    let b = Broker::start("");
    let mut s = connect5(b.port(), "mx-v5sub");
    sub5(&mut s, 1, "mx5/t", 0, None, 0);
    let mut rap = connect5(b.port(), "mx-v5rap");
    sub5(&mut rap, 1, "mx5/t", opts(0, false, true, 0), None, 0);
    let mut p = Raw::mqtt_connect(b.port(), "mx-v3pub");
    p.send(&publish("mx5/t", b"from-v3", 0, true, false, 0));
    let want = publish5("mx5/t", b"from-v3", 0, false, 0, &Props::new());
    let got = s.expect_packet(WAIT);
    assert_eq!(hex(&got.bytes), hex(&want));
    let got = rap.expect_packet(WAIT);
    let want = publish5("mx5/t", b"from-v3", 0, true, 0, &Props::new());
    assert_eq!(hex(&got.bytes), hex(&want));
    // And the retained copy stored from a 3.1.1 client reaches a new v5 subscriber, RETAIN 1.
    let mut late = connect5(b.port(), "mx-v5late");
    sub5(&mut late, 1, "mx5/t", 0, None, 0);
    let m = next_pub5(&mut late, WAIT);
    assert!(
        m.retain && m.payload == b"from-v3" && m.props.is_empty(),
        "{m:?}"
    );
}

// A session created by a 3.1.1 client (clean session 0) is resumed by a v5 client with Clean
// Start 0: Session Present 1, the subscription and the message queued meanwhile are there.
#[test]
fn v311_session_resumed_by_v5_client_mqtt_3_2_2_3() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect_with(
        b.port(),
        &Connect::v311("mx-sess").clean(false),
        &CONNACK_OK,
    );
    c.subscribe(1, &[("mxs/t", 1)], &[1]);
    c.send(&DISCONNECT);
    assert!(c.closes_within(WAIT));
    let mut p = connect5(b.port(), "mx-sess-pub");
    pub5_qos1(&mut p, "mxs/t", b"queued", 1, &Props::new());
    let c5 = Connect::v5("mx-sess").clean(false).session_expiry(0);
    let (mut c, ca) = connect5_with(b.port(), &c5);
    assert!(ca.session_present, "{ca:?}");
    assert_eq!(collect5(&mut c, 1, WAIT)[0].payload, b"queued");
}

// Real clients: mosquitto_pub -V mqttv5 with properties → mosquitto_sub -V mqttv311 gets the
// payload; mosquitto_pub -V mqttv311 → mosquitto_sub -V mqttv5 prints no properties.
#[test]
fn v5_and_v311_mosquitto_clients_interoperate() {
    let b = Broker::start("");
    let s3 = Sub::spawn(b.port(), 5, &["-V", "mqttv311", "-t", "mxm/5", "-C", "1"]);
    let s5 = Sub::spawn(
        b.port(),
        5,
        &["-V", "mqttv5", "-t", "mxm/3", "-C", "1", "-F", "%P|%C|%p"],
    );
    std::thread::sleep(secs(0.5));
    mosquitto_pub(
        b.port(),
        &[
            "-V",
            "mqttv5",
            "-t",
            "mxm/5",
            "-m",
            "v5msg",
            "-D",
            "publish",
            "user-property",
            "a",
            "b",
        ],
    );
    mosquitto_pub(b.port(), &["-V", "mqttv311", "-t", "mxm/3", "-m", "v3msg"]);
    let (l3, _) = s3.finish(secs(6.0));
    let (l5, _) = s5.finish(secs(2.0));
    assert_eq!(l3, ["v5msg"]);
    assert_eq!(l5, ["||v3msg"]);
}
