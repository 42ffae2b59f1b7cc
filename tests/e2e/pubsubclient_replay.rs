//! Replays the PubSubClient 2.8 session recorded against Mosquitto 2.0.11
//! (`tests/fixtures/pubsubclient-2.8-session.{hex,md}`) byte for byte: every client→broker chunk
//! is written with the recorded split boundaries, and every broker→client chunk must come back
//! identical. The broker→client PUBLISHes of connection 1 were produced by mosquitto_pub in the
//! recording; they are driven the same way here. Long idle gaps are compressed (the 17 s wait for
//! the PINGREQ becomes 300 ms; the keepalive is 15 s, so nothing depends on it).

use crate::common::*;
use std::collections::BTreeMap;
use std::time::Duration;

const CLIENT: &str = "esp32-sim-24236";
const MAX_GAP: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, PartialEq)]
enum Dir {
    C2b,
    B2c,
}

#[derive(Debug, Clone)]
enum Ev {
    Data(Dir, Vec<u8>),
    Eof(Dir),
}

/// Connection number → [(ms since accept, event)].
fn load() -> BTreeMap<u32, Vec<(f64, Ev)>> {
    let path = fixture_dir().join("pubsubclient-2.8-session.hex");
    let text = std::fs::read_to_string(&path).expect("read fixture");
    let mut conns: BTreeMap<u32, Vec<(f64, Ev)>> = BTreeMap::new();
    for line in text.lines() {
        let (comment, body) = match line.strip_prefix("# ") {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let f: Vec<&str> = body.split_whitespace().collect();
        if f.len() != 4 {
            continue;
        }
        let (Ok(conn), Ok(ms)) = (f[0].parse::<u32>(), f[1].parse::<f64>()) else {
            continue;
        };
        let dir = match f[2] {
            "c2b" => Dir::C2b,
            "b2c" => Dir::B2c,
            _ => continue,
        };
        let ev = if comment {
            if f[3] != "EOF" {
                continue;
            }
            Ev::Eof(dir)
        } else {
            Ev::Data(dir, unhex(f[3]))
        };
        conns.entry(conn).or_default().push((ms, ev));
    }
    conns
}

/// Parses one whole packet (the fixture's broker→client chunks hold exactly one each).
fn parse(bytes: &[u8]) -> Pkt {
    let mut i = 1;
    let mut len = 0usize;
    let mut mult = 1;
    loop {
        let b = bytes[i];
        len += (b & 0x7f) as usize * mult;
        mult *= 128;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    assert_eq!(
        i + len,
        bytes.len(),
        "fixture chunk is not one whole packet"
    );
    Pkt {
        bytes: bytes.to_vec(),
        body_at: i,
    }
}

fn replay_connection(b: &Broker, events: &[(f64, Ev)]) {
    let mut c = Raw::connect(b.port());
    let mut last_ms = 0.0;
    for (ms, ev) in events {
        let gap = Duration::from_secs_f64(((ms - last_ms) / 1000.0).max(0.0));
        last_ms = *ms;
        match ev {
            Ev::Data(Dir::C2b, bytes) => {
                std::thread::sleep(gap.min(MAX_GAP));
                assert!(c.send(bytes), "broker closed before chunk at {ms} ms");
            }
            Ev::Data(Dir::B2c, bytes) => {
                let p = parse(bytes);
                if p.kind() == 3 {
                    // In the recording this came from mosquitto_pub -q 1.
                    std::thread::sleep(gap.min(MAX_GAP));
                    let payload = String::from_utf8(p.payload().to_vec()).unwrap();
                    mosquitto_pub(b.port(), &["-q", "1", "-t", &p.topic(), "-m", &payload]);
                }
                c.expect_bytes(bytes, WAIT);
            }
            Ev::Eof(Dir::C2b) => c.shutdown_write(),
            Ev::Eof(Dir::B2c) => {
                let extra = c.expect_closed(WAIT);
                assert!(
                    extra.is_empty(),
                    "unexpected packets before close: {extra:?}"
                );
            }
        }
    }
}

fn status_topic() -> String {
    format!("esp32sim/{CLIENT}/status")
}

#[test]
fn pubsubclient_2_8_session_replayed_byte_for_byte() {
    let b = Broker::start("");
    let conns = load();
    assert_eq!(conns.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);

    // A monitoring subscriber on everything the device touches.
    let mut monitor = Raw::mqtt_connect(b.port(), "replay-monitor");
    monitor.subscribe(1, &[(&format!("esp32sim/{CLIENT}/#"), 1)], &[1]);

    // Connection 1: CONNACK 20020000, SUBACK 9003000201, three QoS 1 PUBLISHes with ids 1, 2,
    // 3 (id 2 never acknowledged, as PubSubClient dropped the 339-byte packet), PINGRESP,
    // streamed 2000-byte PUBLISH in 21 chunks, DISCONNECT, close.
    replay_connection(&b, &conns[&1]);

    // Connection 2: CONNECT with will, retained "online", abrupt close → will "offline".
    replay_connection(&b, &conns[&2]);
    let mut fresh = Raw::mqtt_connect(b.port(), "replay-fresh-1");
    fresh.subscribe(1, &[(&status_topic(), 1)], &[1]);
    let p = fresh.collect_publishes(1, WAIT);
    assert_eq!(
        hex(&p[0].bytes),
        hex(&publish(
            &status_topic(),
            b"offline",
            1,
            true,
            false,
            p[0].pid()
        )),
        "the will should be the retained status"
    );

    // Connection 3: no will, clears the retained status, DISCONNECT.
    replay_connection(&b, &conns[&3]);
    let mut fresh = Raw::mqtt_connect(b.port(), "replay-fresh-2");
    fresh.subscribe(1, &[(&status_topic(), 1)], &[1]);
    fresh.expect_silence(Duration::from_millis(500));

    // What the monitor saw, per topic, in order.
    let mut seen: BTreeMap<String, Vec<(Vec<u8>, u8, bool)>> = BTreeMap::new();
    loop {
        match monitor.read_packet(Duration::from_millis(500)) {
            Got::Packet(p) if p.kind() == 3 => {
                if p.qos() == 1 {
                    monitor.send(&puback(p.pid()));
                }
                seen.entry(p.topic()).or_default().push((
                    p.payload().to_vec(),
                    p.qos(),
                    p.retain(),
                ));
            }
            Got::Timeout => break,
            other => panic!("monitor: {other:?}"),
        }
    }
    let t = |s: &str| format!("esp32sim/{CLIENT}/{s}");
    let alpha: Vec<u8> = b"abcdefghijklmnopqrstuvwxyz"
        .iter()
        .copied()
        .cycle()
        .take(2000)
        .collect();
    let big_cmd: Vec<u8> = b"BIG-"
        .iter()
        .copied()
        .chain(alpha[..300].iter().copied())
        .collect();
    let mut want: BTreeMap<String, Vec<(Vec<u8>, u8, bool)>> = BTreeMap::new();
    want.insert(
        t("status"),
        vec![
            (b"online".to_vec(), 0, false),
            (b"online".to_vec(), 0, false),
            (b"offline".to_vec(), 1, false),
            (b"".to_vec(), 0, false),
        ],
    );
    want.insert(
        t("telemetry"),
        (1..=3)
            .map(|i| {
                (
                    format!("{{\"seq\":{i},\"temp\":21.{i}}}").into_bytes(),
                    0,
                    false,
                )
            })
            .collect(),
    );
    want.insert(
        t("cmd"),
        vec![
            (b"hello from mosquitto_pub".to_vec(), 1, false),
            (big_cmd.clone(), 1, false),
            (big_cmd, 1, false),
        ],
    );
    want.insert(
        t("big"),
        vec![(alpha[..300].to_vec(), 0, false), (alpha.clone(), 0, false)],
    );
    for (topic, msgs) in &want {
        let got = seen.get(topic).cloned().unwrap_or_default();
        let show = |v: &Vec<(Vec<u8>, u8, bool)>| {
            v.iter()
                .map(|(p, q, r)| {
                    let s = String::from_utf8_lossy(p);
                    format!(
                        "{}{} q{q} r{}",
                        &s[..s.len().min(24)],
                        if s.len() > 24 { "…" } else { "" },
                        u8::from(*r)
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(show(&got), show(msgs), "monitor saw on {topic}");
        assert_eq!(&got, msgs, "monitor payloads on {topic}");
    }
    assert_eq!(
        seen.len(),
        want.len(),
        "unexpected topics: {:?}",
        seen.keys()
    );
}
