//! `$SYS` end to end: Mosquitto's topics with values that follow known traffic.

use crate::common::v5::*;
use crate::common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Collects `$SYS` values until `want` holds or the deadline passes.
fn sys_values(
    sub: &mut Raw,
    deadline: Instant,
    want: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let mut seen = HashMap::new();
    while Instant::now() < deadline && !want(&seen) {
        if let Got::Packet(p) = sub.read_packet(Duration::from_millis(200)) {
            seen.insert(p.topic(), String::from_utf8_lossy(p.payload()).to_string());
        }
    }
    seen
}

#[test]
fn sys_topics_follow_known_traffic_and_hash_does_not_see_them() {
    if skip_on_mosquitto("midge's own version string and sys_interval 1 timing") {
        return;
    }
    let b = Broker::start("sys_interval 1");
    let mut all = Raw::mqtt_connect(b.port(), "hash-watcher");
    all.subscribe(1, &[("#", 0)], &[0]);
    let mut sys = Raw::mqtt_connect(b.port(), "sys-watcher");
    sys.subscribe(1, &[("$SYS/broker/#", 0)], &[0]);
    let mut p = Raw::mqtt_connect(b.port(), "counter");
    for i in 1..=7u16 {
        p.send(&publish("count/x", b"12345", 1, false, false, i));
        p.expect_bytes(&puback(i), WAIT);
    }
    p.send(&publish("count/kept", b"r", 0, true, false, 0));
    let deadline = Instant::now() + Duration::from_secs(8);
    let seen = sys_values(&mut sys, deadline, |m| {
        // The load averages come last in each update.
        m.get("$SYS/broker/publish/messages/received")
            .map(String::as_str)
            == Some("8")
            && m.contains_key("$SYS/broker/load/publish/dropped/15min")
    });
    assert_eq!(
        seen.get("$SYS/broker/publish/messages/received")
            .map(String::as_str),
        Some("8"),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("$SYS/broker/retained messages/count")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        seen.get("$SYS/broker/clients/connected")
            .map(String::as_str),
        Some("3")
    );
    assert_eq!(
        seen.get("$SYS/broker/subscriptions/count")
            .map(String::as_str),
        Some("2"),
        "{seen:?}"
    );
    assert!(seen["$SYS/broker/version"].starts_with("midge version "));
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));
    for w in ["1min", "5min", "15min"] {
        assert!(seen.contains_key(&format!("$SYS/broker/load/publish/dropped/{w}")));
    }
    // v311:[MQTT-4.7.2-1]: `#` never sees `$SYS` (only the 8 publishes above).
    let mut hash_topics = Vec::new();
    while let Got::Packet(m) = all.read_packet(Duration::from_millis(300)) {
        hash_topics.push(m.topic());
    }
    assert!(
        hash_topics.iter().all(|t| !t.starts_with('$')),
        "{hash_topics:?}"
    );
    assert_eq!(hash_topics.len(), 8);
}

#[test]
fn sys_interval_0_disables_sys() {
    if skip_on_mosquitto("timing of midge's $SYS") {
        return;
    }
    let b = Broker::start("sys_interval 0");
    let mut sys = Raw::mqtt_connect(b.port(), "nosys");
    sys.subscribe(1, &[("$SYS/#", 0)], &[0]);
    sys.expect_silence(Duration::from_millis(1500));
}

/// No client speaks for the broker: a PUBLISH to `$SYS` is acknowledged (3.x) or refused with
/// 0x87 (v5) and reaches nobody, retained or not, and a will to `$SYS` is not published; the
/// bridge state topics that bridges' notifications and wills use stay open, as in Mosquitto.
#[test]
fn client_publish_and_will_to_sys_are_dropped_except_bridge_state() {
    let b = Broker::start("");
    let sub = Sub::spawn(
        b.port(),
        10,
        &[
            "-i",
            "sys-spoof-watcher",
            "-v",
            "-t",
            "$SYS/spoof/#",
            "-t",
            "$SYS/broker/connection/+/state",
        ],
    );
    assert!(
        b.wait_for_log(" as sys-spoof-watcher (", WAIT),
        "mosquitto_sub did not connect"
    );
    std::thread::sleep(Duration::from_millis(300));
    for q in ["0", "1", "2"] {
        mosquitto_pub(
            b.port(),
            &["-t", "$SYS/spoof/uptime", "-q", q, "-m", "fake"],
        );
    }
    mosquitto_pub(
        b.port(),
        &["-t", "$SYS/spoof/kept", "-q", "1", "-r", "-m", "fake"],
    );
    // The same from an MQTT 5 client, told why.
    let mut v5 = connect5(b.port(), "sys-spoof-v5");
    let a = pub5_qos1(&mut v5, "$SYS/spoof/uptime", b"fake", 1, &Props::new());
    assert_eq!(a.rc, 0x87, "PUBACK {a:?}");
    v5.send(&publish5(
        "$SYS/spoof/uptime",
        b"fake",
        2,
        false,
        2,
        &Props::new(),
    ));
    let rec = parse_ack(&expect_kind(&mut v5, 5, WAIT));
    assert_eq!((rec.pid, rec.rc), (2, 0x87), "PUBREC {rec:?}");
    // Wills: one to `$SYS` is dropped, one to a bridge state topic goes.
    for (id, topic) in [
        ("sys-will-spoof", "$SYS/spoof/will"),
        (
            "sys-will-state",
            "$SYS/broker/connection/sys-will-state/state",
        ),
    ] {
        let c = Raw::mqtt_connect_with(
            b.port(),
            &Connect::v311(id).will(topic, b"0", 1, false),
            &[0x20, 0x02, 0x00, 0x00],
        );
        drop(c);
    }
    mosquitto_pub(
        b.port(),
        &[
            "-t",
            "$SYS/broker/connection/peer/state",
            "-q",
            "1",
            "-m",
            "1",
        ],
    );
    let mut lines = sub.wait_lines(2, WAIT);
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "$SYS/broker/connection/peer/state 1".to_string(),
            "$SYS/broker/connection/sys-will-state/state 0".to_string(),
        ]
    );
    // Nothing was retained either.
    let late = mosquitto_sub(b.port(), 1, &["-v", "-t", "$SYS/spoof/#"]);
    assert_eq!(String::from_utf8_lossy(&late.stdout), "");
    if !is_mosquitto() {
        assert!(b.wait_for_log("Denied PUBLISH from ", WAIT));
        assert!(b.wait_for_log("Denied will to '$SYS/spoof/will'", WAIT));
    }
}
