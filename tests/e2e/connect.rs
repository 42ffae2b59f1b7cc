//! CONNECT validation and CONNACK: protocol name/level, client id rules for
//! 3.1 and 3.1.1, zero-length ids, username/password flags, session present.

use crate::common::*;

// v311:[MQTT-3.1.2-2] unsupported protocol level → CONNACK 0x01 and disconnect.
#[test]
fn unsupported_protocol_level_gets_connack_1_then_close_mqtt_3_1_2_2() {
    let b = Broker::start("");
    let mut c = Raw::connect(b.port());
    let mut conn = Connect::v311("lvl9");
    conn.level = 9;
    c.send(&conn.bytes());
    c.expect_bytes(&[0x20, 2, 0, 1], WAIT);
    c.expect_closed(WAIT);
}

// v311:[MQTT-3.1.2-1] a wrong protocol name: the server may disconnect; Mosquitto (and midge)
// answer "unacceptable protocol version" first.
#[test]
fn wrong_protocol_name_gets_connack_1_then_close_mqtt_3_1_2_1() {
    let b = Broker::start("");
    let mut c = Raw::connect(b.port());
    let mut conn = Connect::v311("badname");
    conn.proto = "MQTX";
    c.send(&conn.bytes());
    let seen = c.expect_closed(WAIT);
    assert!(
        seen.is_empty() || seen[0].bytes == [0x20, 2, 0, 1],
        "expected nothing or CONNACK 0x01 before close, got {seen:?}"
    );
}

// MQTT 3.1 (MQIsdp, level 3) is accepted.
#[test]
fn mqtt31_connect_accepted() {
    let b = Broker::start("");
    Raw::mqtt_connect_with(b.port(), &Connect::v31("v31-client"), &CONNACK_OK);
}

// MQTT 3.1 spec, CONNECT "Client Identifier": "If the Client ID contains more than 23
// characters, the server responds to the CONNECT message with a CONNACK return code 2:
// Identifier Rejected." (Debian's Mosquitto 2.0.11 accepts it; the spec wins.)
#[test]
fn mqtt31_client_id_of_24_chars_rejected_with_0x02() {
    if skip_on_mosquitto("Mosquitto 2.0.11 accepts 24-char ids from 3.1 clients") {
        return;
    }
    let b = Broker::start("");
    let id = "abcdefghijklmnopqrstuvwx";
    assert_eq!(id.len(), 24);
    let mut c = Raw::connect(b.port());
    c.send(&Connect::v31(id).bytes());
    c.expect_bytes(&[0x20, 2, 0, 2], WAIT);
    c.expect_closed(WAIT);
}

// 3.1.1 has no 23-character limit for the server: a 24-char id is fine.
#[test]
fn mqtt311_client_id_of_24_chars_accepted() {
    let b = Broker::start("");
    Raw::mqtt_connect(b.port(), "abcdefghijklmnopqrstuvwx");
}

// v311:[MQTT-3.1.3-6] a zero-byte client id with clean session 1 gets a server-assigned id;
// Mosquitto's is `auto-` followed by a UUID, shown in the connect log line.
#[test]
fn zero_length_client_id_clean_session_gets_auto_id_mqtt_3_1_3_6() {
    let b = Broker::start("");
    let c = Raw::mqtt_connect(b.port(), "");
    let needle = format!("New client connected from 127.0.0.1:{} as ", c.local_port());
    let line = b.wait_for_log_line(&needle, WAIT).unwrap_or_else(|| {
        panic!("no connect log line; logs:\n{}", b.logs().join("\n"));
    });
    let id = line
        .split(" as ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(id.starts_with("auto-"), "assigned id {id:?} in {line:?}");
    assert!(
        id.len() > "auto-".len() + 8,
        "assigned id too short: {id:?}"
    );
}

// v311:[MQTT-3.1.3-8] zero-byte client id with clean session 0 → CONNACK 0x02 and close.
/// v311:[MQTT-3.1.3-7]/[MQTT-3.2.2-4]/[MQTT-3.2.2-5]
#[test]
fn zero_length_client_id_without_clean_session_rejected_mqtt_3_1_3_8() {
    let b = Broker::start("");
    let mut c = Raw::connect(b.port());
    c.send(&Connect::v311("").clean(false).bytes());
    c.expect_bytes(&[0x20, 2, 0, 2], WAIT);
    c.expect_closed(WAIT);
}

// `allow_zero_length_clientid false`: even with clean session the empty id is rejected.
/// v311:[MQTT-3.1.3-9]
#[test]
fn zero_length_client_id_refused_when_disallowed() {
    let b = Broker::start("allow_zero_length_clientid false");
    let mut c = Raw::connect(b.port());
    c.send(&Connect::v311("").bytes());
    c.expect_bytes(&[0x20, 2, 0, 2], WAIT);
    c.expect_closed(WAIT);
}

// `auto_id_prefix` changes the assigned id's prefix.
#[test]
fn auto_id_prefix_option_is_used() {
    let b = Broker::start("auto_id_prefix gen-");
    let c = Raw::mqtt_connect(b.port(), "");
    let needle = format!(
        "New client connected from 127.0.0.1:{} as gen-",
        c.local_port()
    );
    assert!(
        b.wait_for_log(&needle, WAIT),
        "no log line with {needle:?}; logs:\n{}",
        b.logs().join("\n")
    );
}

// MQTT 3.1 has no assigned ids: a zero-length id is rejected with 0x02.
#[test]
fn mqtt31_zero_length_client_id_rejected() {
    let b = Broker::start("");
    let mut c = Raw::connect(b.port());
    c.send(&Connect::v31("").bytes());
    c.expect_bytes(&[0x20, 2, 0, 2], WAIT);
    c.expect_closed(WAIT);
}

// v311:[MQTT-3.1.2-22] password flag set without the username flag is a protocol violation:
// the connection is closed without an accepting CONNACK.
#[test]
fn password_without_username_is_refused_mqtt_3_1_2_22() {
    let b = Broker::start("");
    let mut c = Raw::connect(b.port());
    let mut conn = Connect::v311("pw-no-user");
    conn.password = Some(b"secret".to_vec());
    c.send(&conn.bytes());
    let seen = c.expect_closed(WAIT);
    assert!(
        seen.iter().all(|p| p.bytes != CONNACK_OK),
        "connection was accepted: {seen:?}"
    );
}

// Username and password present with anonymous access: accepted (no password_file).
#[test]
fn username_and_password_accepted_with_anonymous_access() {
    let b = Broker::start("");
    let mut conn = Connect::v311("with-creds");
    conn.username = Some("user".into());
    conn.password = Some(b"pass".to_vec());
    let mut c = Raw::mqtt_connect_with(b.port(), &conn, &CONNACK_OK);
    c.send(&PINGREQ);
    c.expect_bytes(&PINGRESP, WAIT);
}

// Username flag without password is allowed.
#[test]
fn username_without_password_accepted() {
    let b = Broker::start("");
    let mut conn = Connect::v311("user-only");
    conn.username = Some("user".into());
    Raw::mqtt_connect_with(b.port(), &conn, &CONNACK_OK);
}

// v311:[MQTT-3.1.2-3] the reserved connect flag (bit 0) must be zero, else disconnect.
/// v311:[MQTT-3.1.4-1]
#[test]
fn reserved_connect_flag_set_disconnects_mqtt_3_1_2_3() {
    let b = Broker::start("");
    let mut c = Raw::connect(b.port());
    let mut conn = Connect::v311("reserved-flag");
    conn.flags = Some(0x03);
    c.send(&conn.bytes());
    let seen = c.expect_closed(WAIT);
    assert!(
        seen.iter().all(|p| p.bytes != CONNACK_OK),
        "accepted: {seen:?}"
    );
}

// v311:[MQTT-3.1.2-13]/[MQTT-3.1.2-14] will flag 0 with will QoS bits set → disconnect.
/// v311:[MQTT-3.1.2-11]
#[test]
fn will_qos_without_will_flag_disconnects_mqtt_3_1_2_13() {
    let b = Broker::start("");
    let mut c = Raw::connect(b.port());
    let mut conn = Connect::v311("bad-will-qos");
    conn.flags = Some(0x02 | 0x08);
    c.send(&conn.bytes());
    let seen = c.expect_closed(WAIT);
    assert!(
        seen.iter().all(|p| p.bytes != CONNACK_OK),
        "accepted: {seen:?}"
    );
}

// v311:[MQTT-3.2.2-1]/[MQTT-3.2.2-2] session present is 0 for clean session, and 1 when a
// clean-session-0 client resumes a stored session.
/// v311:[MQTT-3.2.2-1]/[MQTT-3.2.2-3]/[MQTT-3.1.4-3]/[MQTT-3.1.2-6]
#[test]
fn connack_session_present_flag_mqtt_3_2_2_2() {
    let b = Broker::start("");
    let c = Connect::v311("sp-client").clean(false);
    let mut a = Raw::mqtt_connect_with(b.port(), &c, &[0x20, 2, 0, 0]);
    a.send(&DISCONNECT);
    a.expect_closed(WAIT);
    let mut a = Raw::mqtt_connect_with(b.port(), &c, &[0x20, 2, 1, 0]);
    a.send(&DISCONNECT);
    a.expect_closed(WAIT);
    // A clean-session connect discards the session: present 0, and the next durable one too.
    let mut a = Raw::mqtt_connect_with(b.port(), &Connect::v311("sp-client"), &CONNACK_OK);
    a.send(&DISCONNECT);
    a.expect_closed(WAIT);
    Raw::mqtt_connect_with(b.port(), &c, &[0x20, 2, 0, 0]);
}

// v311:[MQTT-3.14.4-1] after DISCONNECT the server closes the connection.
#[test]
fn disconnect_closes_connection_mqtt_3_14_4_1() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "bye");
    c.send(&DISCONNECT);
    c.expect_closed(WAIT);
}

// v311:[MQTT-3.12.4-1] PINGREQ → PINGRESP.
#[test]
fn pingreq_gets_pingresp_mqtt_3_12_4_1() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "pinger");
    for _ in 0..3 {
        c.send(&PINGREQ);
        c.expect_bytes(&PINGRESP, WAIT);
    }
}

// A CONNECT split over many TCP writes (one byte at a time) is still understood.
#[test]
fn connect_split_byte_by_byte_is_accepted() {
    let b = Broker::start("");
    let mut c = Raw::connect(b.port());
    for byte in Connect::v311("slow-writer").keepalive(30).bytes() {
        c.send(&[byte]);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    c.expect_bytes(&CONNACK_OK, WAIT);
}

/// Runs mosquitto_pub with a will of `will_len` bytes, MQTT `version` (`311`, `5`); returns
/// its exit code, which is the CONNACK code of a refusal.
fn pub_with_will(port: u16, version: &str, will_len: usize) -> Option<i32> {
    let will = "w".repeat(will_len);
    let out = mosquitto_pub_unchecked(
        port,
        &[
            "-V",
            version,
            "-t",
            "will/test",
            "-m",
            "hello",
            "--will-topic",
            "will/gone",
            "--will-payload",
            &will,
        ],
    );
    out.status.code()
}

// A will that could never be published is refused at CONNECT, as Mosquitto's will__read does:
// 3.x CONNACK 5 (not authorised), v5 0x95 (Packet too large).
#[test]
fn will_larger_than_message_size_limit_refuses_the_connect() {
    let mut b = Broker::start("message_size_limit 10");
    assert_eq!(pub_with_will(b.port(), "311", 11), Some(5));
    assert_eq!(pub_with_will(b.port(), "5", 11), Some(0x95));
    assert_eq!(pub_with_will(b.port(), "311", 10), Some(0), "at the limit");
    assert_eq!(pub_with_will(b.port(), "5", 10), Some(0), "at the limit");
    if !is_mosquitto() {
        assert!(
            b.wait_for_log("will payload larger than message_size_limit", WAIT),
            "logs:\n{}",
            b.logs().join("\n")
        );
    }
    b.assert_serves();
}

/// paho-mqtt connects `client` twice with clean session 0 and MQTT `protocol` (`MQTTv31`,
/// `MQTTv311`) and prints the session present flag of each CONNACK.
const PAHO_SESSION_PRESENT: &str = r#"
import sys
import paho.mqtt.client as mqtt

port, client_id, protocol = int(sys.argv[1]), sys.argv[2], getattr(mqtt, sys.argv[3])
for _ in range(2):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    clean_session=False, protocol=protocol)
    seen = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        seen["present"] = int(flags.session_present)
        client.disconnect()

    c.on_connect = on_connect
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_forever()
    print(seen["present"])
"#;

// MQTT 3.1's CONNACK has no session present flag (its first byte is reserved): a resumed 3.1
// session still gets 0, while 3.1.1 says 1.
#[test]
fn mqtt31_connack_has_no_session_present_flag() {
    if !crate::common::paho_available() {
        return;
    }
    let b = Broker::start("");
    let dir = TempDir::new();
    let script = dir.write("session_present.py", PAHO_SESSION_PRESENT);
    let run = |client: &str, protocol: &str| {
        let mut cmd = std::process::Command::new(crate::common::python());
        cmd.arg(&script)
            .args([&b.port().to_string(), client, protocol]);
        let out = run_with_timeout(cmd, None, std::time::Duration::from_secs(30));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run("paho-31", "MQTTv31"), "0\n0\n");
    assert_eq!(run("paho-311", "MQTTv311"), "0\n1\n");
}
