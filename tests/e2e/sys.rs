//! `$SYS` end to end: Mosquitto's topics with values that follow known traffic.

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
