//! Retained messages: store, replace, clear, delivery on subscribe (wildcards
//! too) with the retain flag, retain flag cleared on live forwarding, every retained message
//! delivered whatever the queue limits, and no stale retained value after a newer live publish.

use crate::common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn retain(b: &Broker, topic: &str, payload: &[u8], q: u8) {
    let mut publ = Raw::mqtt_connect(b.port(), "retainer");
    publ.send(&publish(topic, payload, q, true, false, 1));
    match q {
        0 => {
            publ.send(&PINGREQ);
            publ.expect_bytes(&PINGRESP, WAIT);
        }
        1 => publ.expect_bytes(&puback(1), WAIT),
        _ => {
            publ.expect_bytes(&pubrec(1), WAIT);
            publ.send(&pubrel(1));
            publ.expect_bytes(&pubcomp(1), WAIT);
        }
    }
    publ.send(&DISCONNECT);
    publ.expect_closed(WAIT);
}

// v311:[MQTT-3.3.1-5]/[MQTT-3.3.1-6]/[MQTT-3.3.1-8] a retained message is stored and sent to a
// new subscriber with RETAIN=1.
/// v311:[MQTT-3.3.1-5]/[MQTT-3.3.1-6]
#[test]
fn retained_message_sent_to_new_subscriber_with_retain_flag_mqtt_3_3_1_8() {
    let b = Broker::start("");
    retain(&b, "ret/a", b"v1", 1);
    let mut s = Raw::mqtt_connect(b.port(), "ret-sub");
    s.subscribe(1, &[("ret/a", 1)], &[1]);
    let p = s.collect_publishes(1, WAIT);
    assert_eq!(
        hex(&p[0].bytes),
        hex(&publish("ret/a", b"v1", 1, true, false, p[0].pid()))
    );
    s.expect_silence(Duration::from_millis(300));
}

// v311:[MQTT-3.3.1-7] a new retained message replaces the old one.
#[test]
fn retained_message_replaced_mqtt_3_3_1_7() {
    let b = Broker::start("");
    retain(&b, "ret/r", b"old", 0);
    retain(&b, "ret/r", b"new", 0);
    let mut s = Raw::mqtt_connect(b.port(), "ret-sub");
    s.subscribe(1, &[("ret/r", 0)], &[0]);
    s.expect_bytes(&publish("ret/r", b"new", 0, true, false, 0), WAIT);
    s.expect_silence(Duration::from_millis(300));
}

// v311:[MQTT-3.3.1-10]/[MQTT-3.3.1-11] an empty retained payload removes the retained message;
// it is still forwarded to current subscribers as a normal (zero-length) message.
/// v311:[MQTT-3.3.1-11]
#[test]
fn empty_retained_payload_clears_mqtt_3_3_1_10() {
    let b = Broker::start("");
    retain(&b, "ret/c", b"something", 1);
    let mut live = Raw::mqtt_connect(b.port(), "ret-live");
    live.subscribe(1, &[("ret/c", 0)], &[0]);
    live.expect_bytes(&publish("ret/c", b"something", 0, true, false, 0), WAIT);
    retain(&b, "ret/c", b"", 0);
    live.expect_bytes(&publish("ret/c", b"", 0, false, false, 0), WAIT);
    let mut s = Raw::mqtt_connect(b.port(), "ret-sub");
    s.subscribe(1, &[("ret/#", 0)], &[0]);
    s.expect_silence(Duration::from_millis(500));
}

// Retained messages matching a wildcard subscription are all sent, with RETAIN=1, at
// min(stored QoS, granted QoS).
#[test]
fn retained_messages_delivered_for_wildcard_filters() {
    let b = Broker::start("");
    retain(&b, "rw/1", b"a", 0);
    retain(&b, "rw/2", b"b", 2);
    retain(&b, "rw/x/3", b"c", 1);
    retain(&b, "other", b"d", 0);
    let mut s = Raw::mqtt_connect(b.port(), "rw-plus");
    s.subscribe(1, &[("rw/+", 1)], &[1]);
    let mut got: Vec<(String, u8, bool)> = s
        .collect_publishes(2, WAIT)
        .iter()
        .map(|p| (p.topic(), p.qos(), p.retain()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("rw/1".into(), 0, true), ("rw/2".into(), 1, true)]
    );
    s.expect_silence(Duration::from_millis(300));
    let mut s = Raw::mqtt_connect(b.port(), "rw-hash");
    s.subscribe(1, &[("rw/#", 2)], &[2]);
    let mut got: Vec<(String, u8, bool)> = s
        .collect_publishes(3, WAIT)
        .iter()
        .map(|p| (p.topic(), p.qos(), p.retain()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("rw/1".into(), 0, true),
            ("rw/2".into(), 2, true),
            ("rw/x/3".into(), 1, true)
        ]
    );
    s.quiet(Duration::from_millis(300));
}

// v311:[MQTT-3.3.1-9] a retained PUBLISH forwarded to an existing subscription has RETAIN=0.
#[test]
fn retain_flag_cleared_on_live_forwarding_mqtt_3_3_1_9() {
    let b = Broker::start("");
    let mut s = Raw::mqtt_connect(b.port(), "live-sub");
    s.subscribe(1, &[("rl/t", 0)], &[0]);
    let mut publ = Raw::mqtt_connect(b.port(), "live-pub");
    publ.send(&publish("rl/t", b"live", 0, true, false, 0));
    s.expect_bytes(&publish("rl/t", b"live", 0, false, false, 0), WAIT);
}

// v311:[MQTT-3.8.4-3] a repeated SUBSCRIBE re-sends the retained messages.
#[test]
fn resubscribe_resends_retained_mqtt_3_8_4_3() {
    let b = Broker::start("");
    retain(&b, "rr/t", b"again", 0);
    let mut s = Raw::mqtt_connect(b.port(), "rr-sub");
    s.subscribe(1, &[("rr/t", 0)], &[0]);
    s.expect_bytes(&publish("rr/t", b"again", 0, true, false, 0), WAIT);
    s.subscribe(2, &[("rr/t", 0)], &[0]);
    s.expect_bytes(&publish("rr/t", b"again", 0, true, false, 0), WAIT);
}

// mosquitto_pub -r then mosquitto_sub sees it (Debian's clients, `-v` prints topic payload).
#[test]
fn mosquitto_clients_retained_round_trip() {
    let b = Broker::start("");
    mosquitto_pub(b.port(), &["-t", "mr/t", "-m", "kept", "-r", "-q", "1"]);
    let out = mosquitto_sub(b.port(), 5, &["-t", "mr/#", "-C", "1", "-v"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "mr/t kept\n");
    // mosquitto_sub --retained-only -R: skip stale; -r with -n clears.
    mosquitto_pub(b.port(), &["-t", "mr/t", "-r", "-n"]);
    let out = mosquitto_sub(b.port(), 1, &["-t", "mr/#", "-C", "1", "-v"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

/// Publishes `n` retained QoS 1 messages `prefix/NNNN` = `payload` in one pipelined burst.
fn retain_many(port: u16, prefix: &str, n: usize, payload: &[u8]) {
    let mut publ = Raw::mqtt_connect(port, &format!("bulk-{prefix}"));
    let mut burst = Vec::new();
    let mut acks = Vec::new();
    for i in 0..n {
        let pid = (i % 60000 + 1) as u16;
        burst.extend(publish(
            &format!("{prefix}/{i:04}"),
            payload,
            1,
            true,
            false,
            pid,
        ));
        acks.extend(puback(pid));
    }
    let mut w = publ.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = w.write_all(&burst);
    });
    publ.expect_bytes(&acks, Duration::from_secs(30));
    writer.join().unwrap();
}

// Every retained message matching a new subscription is delivered, flow
// controlled, never truncated by queue limits (a known Mosquitto complaint): 2100 retained
// messages reach a new `#` subscriber at QoS 1 with max_queued_messages 100.
#[test]
fn all_2100_retained_delivered_despite_max_queued_messages_100() {
    if skip_on_mosquitto("Mosquitto drops retained messages beyond the queue limits") {
        return;
    }
    let b = Broker::start("max_queued_messages 100\nmax_inflight_messages 20");
    retain_many(b.port(), "many", 2100, b"r");
    let mut s = Raw::mqtt_connect(b.port(), "many-sub");
    s.subscribe(1, &[("#", 1)], &[1]);
    let got = s.collect_publishes(2100, Duration::from_secs(60));
    let mut topics: Vec<String> = got.iter().map(|p| p.topic()).collect();
    assert!(got
        .iter()
        .all(|p| p.retain() && p.qos() == 1 && p.payload() == b"r"));
    topics.sort();
    topics.dedup();
    assert_eq!(topics.len(), 2100, "duplicates or missing topics");
    s.expect_silence(Duration::from_millis(500));
}

// A subscriber never receives a topic's old retained value after a newer live
// publish on that topic, even while a long retained backlog is still being delivered.
#[test]
fn no_stale_retained_after_newer_live_publish() {
    if skip_on_mosquitto("Mosquitto sends live QoS 0 ahead of its queued retained QoS 1 backlog") {
        return;
    }
    let b = Broker::start("max_inflight_messages 10");
    retain_many(b.port(), "st", 500, b"old");
    let mut s = Raw::mqtt_connect(b.port(), "stale-sub");
    s.subscribe(1, &[("st/#", 1)], &[1]);
    // The subscription exists now; update the last 100 topics live while the backlog drains.
    let mut publ = Raw::mqtt_connect(b.port(), "stale-pub");
    for i in (400..500).rev() {
        publ.send(&publish(&format!("st/{i:04}"), b"new", 0, true, false, 0));
    }
    publ.send(&PINGREQ);
    publ.expect_bytes(&PINGRESP, WAIT);
    let mut history: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = |h: &HashMap<String, Vec<Vec<u8>>>| {
        h.len() == 500
            && (400..500).all(|i| {
                h.get(&format!("st/{i:04}"))
                    .is_some_and(|v| v.last().is_some_and(|p| p == b"new"))
            })
    };
    while !done(&history) {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = match s.read_packet(left) {
            Got::Packet(p) => p,
            other => panic!("{other:?} with {} topics seen", history.len()),
        };
        assert_eq!(p.kind(), 3, "unexpected {p:?}");
        if p.qos() == 1 {
            s.send(&puback(p.pid()));
        }
        history
            .entry(p.topic())
            .or_default()
            .push(p.payload().to_vec());
    }
    // Drain anything left for a moment, then check each topic's sequence.
    while let Got::Packet(p) = s.read_packet(Duration::from_millis(400)) {
        if p.qos() == 1 {
            s.send(&puback(p.pid()));
        }
        history
            .entry(p.topic())
            .or_default()
            .push(p.payload().to_vec());
    }
    for (t, seq) in &history {
        if let Some(first_new) = seq.iter().position(|p| p == b"new") {
            assert!(
                seq[first_new..].iter().all(|p| p == b"new"),
                "{t}: stale retained value after the newer live one: {:?}",
                seq.iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect::<Vec<_>>()
            );
        }
    }
}

/// A large retained set reaches a new subscriber whole: 200 000 retained QoS 0 messages (one
/// burst, a PINGREQ to be sure all were taken), then `mosquitto_sub` on `mqb/#` at QoS 0 and
/// at QoS 1, counting every message. The replay waits behind the subscriber's output bound and moves on as its socket
/// drains; it once stopped for good whenever the socket drained completely, midway.
#[test]
fn a_new_subscriber_gets_every_one_of_200000_retained_messages() {
    let b = Broker::start("");
    let n = 200_000;
    fill_retained(b.port(), "mqb", n);
    for q in ["0", "1"] {
        // Within 20 s, well before a keepalive ping (60 s) could wake a stalled replay.
        let out = mosquitto_sub(
            b.port(),
            20,
            &["-k", "60", "-q", q, "-t", "mqb/#", "-C", &n.to_string()],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let distinct: std::collections::HashSet<&str> = text.lines().collect();
        let lines = text.lines().count();
        assert_eq!(
            (lines, distinct.len()),
            (n, n),
            "QoS {q}: messages, distinct, of {n}"
        );
    }
}

/// Subscribers that stop reading in the middle of a large replay hold their place in it, not
/// copies of the messages: 20 of them (4 KiB receive buffers) subscribe to 200 000 retained
/// messages and read nothing more. Each holds at most its output bound (1 MiB) and the
/// replay's list of references (8 bytes a message, 1.6 MB); copies would be ~28 MB each. The
/// broker serves others meanwhile, and one of them that reads again gets every message once.
#[test]
fn subscribers_that_stop_reading_mid_replay_hold_their_place_not_copies() {
    if skip_on_mosquitto("midge's replay bound") {
        return;
    }
    let mut b = Broker::start("");
    let n = 200_000;
    fill_retained(b.port(), "mqs", n);
    let before = b.rss_kb();
    let mut stalled: Vec<Raw> = (0..20)
        .map(|i| {
            let mut s = connect_small_rcvbuf(b.port(), 4096);
            s.send(&Connect::v311(&format!("stalled{i}")).bytes());
            s.expect_bytes(&CONNACK_OK, WAIT);
            s.send(&subscribe(1, &[("mqs/#", 0)]));
            s
        })
        .collect();
    // Each replay fills its connection's output up to the bound, then waits.
    let mut grown = 0;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        grown = b.rss_kb().saturating_sub(before);
    }
    eprintln!("20 stalled replays of {n}: broker RSS +{grown} kB");
    assert!(
        grown < 20 * 4 * 1024,
        "20 stalled replays grew the broker by {grown} kB: copies, not a place in the list"
    );
    b.assert_serves();

    let mut last = stalled.pop().expect("a stalled subscriber");
    let suback = last.expect_packet(WAIT);
    assert_eq!(suback.kind(), 9, "SUBACK first");
    let mut seen = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < n && std::time::Instant::now() < deadline {
        let p = last.expect_packet(WAIT);
        assert_eq!(p.kind(), 3, "PUBLISH expected");
        assert!(seen.insert(p.topic()), "{} twice", p.topic());
    }
    assert_eq!(
        seen.len(),
        n,
        "the reader that came back got every retained message"
    );
}

/// The replay matrix over TCP: 5 000 retained messages reach `mosquitto_sub` whole at every
/// protocol level (3.1, 3.1.1, 5) and QoS (0, 1, 2), each message once. The same matrix runs
/// over TLS (`tls.rs`) and WebSockets (`websockets.rs`).
#[test]
fn a_replay_of_5000_arrives_whole_at_every_protocol_level_and_qos() {
    let mut b = Broker::start("");
    let n = 5_000;
    fill_retained(b.port(), "mx", n);
    for v in ["mqttv31", "mqttv311", "mqttv5"] {
        for q in ["0", "1", "2"] {
            let id = format!("mx-{v}-{q}");
            let out = mosquitto_sub(
                b.port(),
                20,
                &[
                    "-i",
                    &id,
                    "-V",
                    v,
                    "-q",
                    q,
                    "-t",
                    "mx/#",
                    "-C",
                    &n.to_string(),
                ],
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let distinct: std::collections::HashSet<&str> = text.lines().collect();
            assert_eq!(
                (text.lines().count(), distinct.len()),
                (n, n),
                "{v} QoS {q}: messages, distinct"
            );
        }
    }
    b.assert_serves();
}

/// Fills the broker with `n` retained messages from paho: `sensors/I/kitchen` (~20 bytes), 64
/// byte payloads, at QoS 0, then one at QoS 1 whose PUBACK says every one before it was taken.
const PAHO_FILL_RETAINED: &str = r#"
import sys
import paho.mqtt.client as mqtt

port, n = int(sys.argv[1]), int(sys.argv[2])
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-filler")
c.max_queued_messages_set(0)
c.connect("127.0.0.1", port, keepalive=60)
c.loop_start()
for i in range(n):
    c.publish(f"sensors/{i}/kitchen", f"{i:064d}", qos=0, retain=True)
last = c.publish("sensors/last", "x" * 64, qos=1, retain=True)
last.wait_for_publish(60)
c.disconnect()
c.loop_stop()
"#;

/// A million retained topics must fit a small server: a retained message at rest takes at
/// most 200 bytes of the broker's memory, its topic index included (Mosquitto 2.0: ~1 200),
/// measured as the growth of its resident memory over 100 000 messages of 64 bytes on ~20 byte
/// topics; and each comes back intact to `mosquitto_sub`.
#[test]
fn a_retained_message_at_rest_takes_at_most_200_bytes() {
    if skip_on_mosquitto("midge's memory budget") || !paho_available() {
        return;
    }
    let b = Broker::start("");
    let n = 100_000;
    let dir = TempDir::new();
    let script = dir.write("fill.py", PAHO_FILL_RETAINED);
    let before = b.rss_kb();
    let mut cmd = std::process::Command::new(python());
    cmd.arg(&script)
        .args([&b.port().to_string(), &n.to_string()]);
    let out = run_with_timeout(cmd, None, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let per_message = (b.rss_kb() - before) * 1024 / n as u64;
    eprintln!("RSS per retained message at rest: {per_message} B");
    assert!(per_message <= 200, "{per_message} B per retained message");
    let out = mosquitto_sub(
        b.port(),
        60,
        &["-t", "sensors/+/kitchen", "-v", "-C", &n.to_string()],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen = 0;
    for line in text.lines() {
        let (topic, payload) = line.split_once(' ').unwrap_or((line, ""));
        let i: u64 = topic
            .split('/')
            .nth(1)
            .and_then(|i| i.parse().ok())
            .unwrap_or(u64::MAX);
        assert_eq!(payload, format!("{i:064}"), "{line}");
        seen += 1;
    }
    assert_eq!(seen, n);
}

/// v5:[MQTT-3.3.2-17], [MQTT-3.3.2-20]: a retained message is replayed with its own properties
/// (user properties, content type), and one retained after it by the same client without
/// properties gets none of them; `mosquitto_pub`/`mosquitto_sub` at MQTT 5.
#[test]
fn a_retained_message_keeps_its_v5_properties() {
    let b = Broker::start("");
    let v5 = ["-V", "5", "-i", "props-pub", "-r", "-q", "1"];
    let typed = [
        "-D",
        "publish",
        "user-property",
        "room",
        "kitchen",
        "-D",
        "publish",
        "content-type",
        "text/plain",
    ];
    mosquitto_pub(
        b.port(),
        &[&v5[..], &["-t", "p/typed", "-m", "21.5"], &typed[..]].concat(),
    );
    mosquitto_pub(
        b.port(),
        &[&v5[..], &["-t", "p/plain", "-m", "on"]].concat(),
    );
    let out = mosquitto_sub(
        b.port(),
        5,
        &["-V", "5", "-t", "p/#", "-C", "2", "-F", "%t|%p|%C|%P|%r"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["p/plain|on|||1", "p/typed|21.5|text/plain|room:kitchen|1"]
    );
}
