//! Switching from Mosquitto keeps the data: a `mosquitto.db` written here by Debian's real
//! Mosquitto (retained messages, among them a Home Assistant discovery topic, and two
//! persistent sessions, MQTT 3.1.1 and 5, with subscriptions and queued QoS 1/2 messages) is
//! read by midge's parser, then imported by midge on its first start. The file stays as it was,
//! a second start does not import again, and a damaged copy is imported up to the damage.

use crate::common::*;
use midge::store::mosquitto::{parse, Direction, Record, EXPIRY_NEVER};
use std::path::PathBuf;

const DISCOVERY: &str = "homeassistant/sensor/kitchen_temp/config";
const DISCOVERY_JSON: &str =
    r#"{"name":"Kitchen","state_topic":"home/kitchen/temp","unit_of_measurement":"°C"}"#;

/// Runs Mosquitto on `dir` with `persistence true`, gives it retained messages and two
/// persistent sessions that are offline while QoS 1 and 2 messages are queued for them, and
/// stops it with SIGTERM, which makes it write `mosquitto.db`. Returns the file's path.
fn mosquitto_db(dir: &TempDir) -> PathBuf {
    mosquitto_db_with(dir, |port| {
        mosquitto_pub(
            port,
            &["-t", DISCOVERY, "-m", DISCOVERY_JSON, "-r", "-q", "1"],
        );
        mosquitto_pub(port, &["-t", "home/kitchen/temp", "-m", "21.5", "-r"]);
        mosquitto_pub(
            port,
            &[
                "-V",
                "mqttv5",
                "-t",
                "v5/retained",
                "-m",
                "with properties",
                "-r",
                "-q",
                "2",
                "-D",
                "publish",
                "user-property",
                "origin",
                "mosquitto",
                "-D",
                "publish",
                "content-type",
                "text/plain",
            ],
        );
        // Two persistent sessions: subscribe (-E: leave once subscribed), then go offline.
        let sub311 = mosquitto_sub(
            port,
            5,
            &[
                "-c", "-i", "sess311", "-q", "1", "-t", "q/#", "-t", "other/+", "-E",
            ],
        );
        assert!(sub311.status.success(), "{sub311:?}");
        let sub5 = mosquitto_sub(
            port,
            5,
            &[
                "-V",
                "mqttv5",
                "-c",
                "-i",
                "sess5",
                "-x",
                "3600",
                "-q",
                "2",
                "-t",
                "q/#",
                "-E",
                "-D",
                "subscribe",
                "subscription-identifier",
                "7",
            ],
        );
        assert!(sub5.status.success(), "{sub5:?}");
        for i in 1..=3 {
            mosquitto_pub(
                port,
                &[
                    "-t",
                    &format!("q/{i}"),
                    "-m",
                    &format!("one-{i}"),
                    "-q",
                    "1",
                ],
            );
        }
        mosquitto_pub(port, &["-t", "q/two", "-m", "exactly once", "-q", "2"]);
    })
}

/// Runs Mosquitto with `persistence true` on `dir`, runs `scenario` against its port, and stops
/// it with SIGTERM, which makes it write `mosquitto.db`. Returns the file's path.
fn mosquitto_db_with(dir: &TempDir, scenario: impl FnOnce(u16)) -> PathBuf {
    let port = free_port();
    let conf = dir.write(
        "mosquitto.conf",
        &format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n\
             persistence_location {}/\n",
            dir.path().display()
        ),
    );
    let mut mosquitto = spawn_mosquitto(&conf);
    wait_listening(&mut mosquitto, port, WAIT, "mosquitto");
    scenario(port);
    unsafe { libc::kill(mosquitto.id() as libc::pid_t, libc::SIGTERM) };
    assert!(wait_child(&mut mosquitto, WAIT).is_some_and(|s| s.success()));
    let db = dir.path().join("mosquitto.db");
    assert!(db.exists(), "Mosquitto wrote its database");
    db
}

fn persistence(dir: &TempDir) -> String {
    format!(
        "persistence true\npersistence_location {}/\n",
        dir.path().display()
    )
}

/// The parser on the real file: every chunk read, no damage, the values as published.
#[test]
fn the_parser_reads_what_mosquitto_wrote() {
    let dir = TempDir::new();
    let bytes = std::fs::read(mosquitto_db(&dir)).unwrap();
    let parsed = parse(&bytes);
    assert_eq!(parsed.damage, None);
    assert_eq!(parsed.version, 6, "Mosquitto 2.0 writes format version 6");
    assert!(parsed
        .records
        .iter()
        .any(|r| matches!(r, Record::Config { shutdown: true, .. })));

    let message = |store_id: u64| {
        parsed.records.iter().find_map(|r| match r {
            Record::Message(m) if m.store_id == store_id => Some(m),
            _ => None,
        })
    };
    let mut retained: Vec<(String, Vec<u8>)> = parsed
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Retain { store_id } => {
                message(*store_id).map(|m| (m.topic.clone(), m.payload.clone()))
            }
            _ => None,
        })
        .collect();
    retained.sort();
    assert_eq!(
        retained,
        vec![
            ("home/kitchen/temp".into(), b"21.5".to_vec()),
            (DISCOVERY.to_string(), DISCOVERY_JSON.as_bytes().to_vec()),
            ("v5/retained".into(), b"with properties".to_vec()),
        ]
    );
    let v5 = parsed
        .records
        .iter()
        .find_map(|r| match r {
            Record::Message(m) if m.topic == "v5/retained" => Some(m),
            _ => None,
        })
        .unwrap();
    assert_eq!(v5.qos, 2);
    assert!(v5.retain);
    let props = String::from_utf8_lossy(&v5.properties);
    assert!(
        props.contains("origin") && props.contains("text/plain"),
        "{props}"
    );

    let clients: Vec<_> = parsed
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Client(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(clients.len(), 2, "{clients:?}");
    let c311 = clients.iter().find(|c| c.client_id == "sess311").unwrap();
    assert_eq!(c311.session_expiry_interval, EXPIRY_NEVER);
    let c5 = clients.iter().find(|c| c.client_id == "sess5").unwrap();
    assert_eq!(c5.session_expiry_interval, 3600);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now + 3500..=now + 3600).contains(&c5.session_expiry_time),
        "{c5:?}"
    );

    let mut subs: Vec<_> = parsed
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Subscription(s) => {
                Some((s.client_id.as_str(), s.filter.as_str(), s.qos, s.identifier))
            }
            _ => None,
        })
        .collect();
    subs.sort();
    assert_eq!(
        subs,
        vec![
            ("sess311", "other/+", 1, 0),
            ("sess311", "q/#", 1, 0),
            ("sess5", "q/#", 2, 7)
        ]
    );

    for id in ["sess311", "sess5"] {
        let queued: Vec<_> = parsed
            .records
            .iter()
            .filter_map(|r| match r {
                Record::ClientMessage(m) if m.client_id == id => Some(m),
                _ => None,
            })
            .collect();
        assert!(queued.iter().all(|m| m.direction == Direction::Out));
        let topics: Vec<_> = queued
            .iter()
            .map(|m| message(m.store_id).unwrap().topic.as_str())
            .collect();
        assert_eq!(topics, ["q/1", "q/2", "q/3", "q/two"], "{id}");
    }

    let (changes, report) = midge::store::convert_mosquitto(&parsed, now as u64);
    assert_eq!(
        (
            report.retained,
            report.sessions,
            report.subscriptions,
            report.messages
        ),
        (3, 2, 3, 8),
        "{report:?}"
    );
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert!(!changes.is_empty());
}

/// midge's first start on Mosquitto's directory: retained messages replay, both sessions resume
/// with their queued messages, the import is logged, Mosquitto's file is unchanged, and a second
/// start imports nothing again.
#[test]
fn midge_takes_over_mosquittos_data_once() {
    if skip_on_mosquitto("midge's import of Mosquitto's database") {
        return;
    }
    let dir = TempDir::new();
    let db = mosquitto_db(&dir);
    let before = std::fs::read(&db).unwrap();

    let mut b = Broker::start(&persistence(&dir));
    let line = b
        .wait_for_log_line("Imported ", WAIT)
        .unwrap_or_else(|| panic!("no import line:\n{}", b.logs().join("\n")));
    assert!(
        line.contains(
            "Imported 3 retained messages, 2 sessions, 3 subscriptions and 8 queued messages \
             from Mosquitto's database"
        ),
        "{line}"
    );
    // Mosquitto stores a message once for all the sessions it waits for; so does midge: four
    // messages queued for both sessions are four bodies (in the body log), each referred to by
    // two deliveries.
    let store = rusqlite::Connection::open(dir.path().join("midge.db")).unwrap();
    let count = |what: &str| -> i64 {
        store
            .query_row(&format!("SELECT count({what}) FROM deliveries"), [], |r| {
                r.get(0)
            })
            .unwrap()
    };
    assert_eq!((count("DISTINCT body"), count("*")), (4, 8));
    drop(store);

    // Retained messages replay to a new subscriber, the discovery config first of all.
    let out = mosquitto_sub(b.port(), 5, &["-t", "#", "-v", "-C", "3"]);
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(
        got.contains(&format!("{DISCOVERY} {DISCOVERY_JSON}")),
        "{got}"
    );
    assert!(got.contains("home/kitchen/temp 21.5"), "{got}");
    assert!(got.contains("v5/retained with properties"), "{got}");
    let out = mosquitto_sub(
        b.port(),
        5,
        &[
            "-V",
            "mqttv5",
            "-t",
            "v5/retained",
            "-C",
            "1",
            "-F",
            "%P|%p",
        ],
    );
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(got.contains("origin:mosquitto|with properties"), "{got}");

    // The sessions resume and their queued messages arrive (mosquitto_sub needs a topic: it
    // subscribes again to the filter the session has).
    let out = mosquitto_sub(
        b.port(),
        5,
        &[
            "-c", "-i", "sess311", "-t", "q/#", "-q", "1", "-v", "-C", "4",
        ],
    );
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        ["q/1 one-1", "q/2 one-2", "q/3 one-3", "q/two exactly once"],
        "{}",
        b.logs().join("\n")
    );
    let out = mosquitto_sub(
        b.port(),
        5,
        &[
            "-V", "mqttv5", "-c", "-i", "sess5", "-x", "3600", "-t", "q/#", "-q", "2", "-C", "4",
            "-F", "%t %p %q",
        ],
    );
    let got = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        [
            "q/1 one-1 1",
            "q/2 one-2 1",
            "q/3 one-3 1",
            "q/two exactly once 2"
        ],
    );
    // Their subscriptions came along: a message on the filter not subscribed again reaches the
    // 3.1.1 session. (mosquitto_sub -C leaves without acknowledging everything, so QoS 1
    // messages it got above may come again first: at least once.)
    let sub = Sub::spawn(
        b.port(),
        2,
        &["-c", "-i", "sess311", "-t", "q/#", "-q", "1", "-v"],
    );
    std::thread::sleep(secs(0.5));
    mosquitto_pub(b.port(), &["-t", "other/x", "-m", "after", "-q", "1"]);
    let (lines, _) = sub.finish(secs(5.0));
    assert!(lines.contains(&"other/x after".to_string()), "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l == "other/x after" || l.starts_with("q/")),
        "{lines:?}"
    );

    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some());
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "Mosquitto's file is unchanged"
    );

    // A second start finds its own store: nothing is imported again (a new import would bring
    // back all 8 queued messages; at least q/1 was acknowledged by both sessions).
    let b = Broker::start(&persistence(&dir));
    let restored = b.wait_for_log_line("Restored ", WAIT).unwrap_or_default();
    assert!(
        restored.contains("Restored 3 retained messages, 2 sessions and "),
        "{restored}"
    );
    let queued: usize = restored
        .split(" and ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    assert!(queued < 8, "{restored}");
    assert!(
        !b.logs().iter().any(|l| l.contains("Imported ")),
        "{}",
        b.logs().join("\n")
    );
    assert_eq!(std::fs::read(&db).unwrap(), before);
}

/// A damaged `mosquitto.db` (cut short, bytes flipped): midge logs where, imports at most what
/// precedes the damage and serves all the same; the parser never panics and returns a prefix
/// of the whole file's records.
#[test]
fn a_damaged_mosquitto_db_is_imported_up_to_the_damage() {
    let source = TempDir::new();
    let whole = std::fs::read(mosquitto_db(&source)).unwrap();
    let full = parse(&whole);
    assert_eq!(full.damage, None);

    for cut in 0..whole.len() {
        let p = parse(&whole[..cut]);
        // A cut between two chunks leaves a shorter file that is whole.
        if let Some(d) = &p.damage {
            assert!(d.offset <= cut, "cut at {cut}: {d}");
        }
        assert_eq!(p.records, full.records[..p.records.len()], "cut at {cut}");
    }
    for at in 0..whole.len() {
        let mut flipped = whole.clone();
        flipped[at] ^= 0xFF;
        let p = parse(&flipped);
        let _ = midge::store::convert_mosquitto(&p, 0);
    }
    // Several random bytes at once (a fixed xorshift sequence, so a failure repeats).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let mut bytes = whole.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        let p = parse(&bytes);
        let _ = midge::store::convert_mosquitto(&p, 0);
    }
    if skip_on_mosquitto("midge's import of Mosquitto's database") {
        return;
    }
    // Cuts in the header, among the stored messages, the sessions and the retained entries, and
    // one flipped byte in a chunk length.
    let mut cases: Vec<(String, Vec<u8>)> =
        [17, 30, whole.len() / 3, whole.len() / 2, whole.len() - 3]
            .iter()
            .map(|&cut| (format!("cut at {cut}"), whole[..cut].to_vec()))
            .collect();
    let mut flipped = whole.clone();
    // The length of the first stored message's chunk, after the header and the configuration.
    flipped[23 + 24 + 6] ^= 0x40;
    cases.push(("length flipped".into(), flipped));
    for (what, bytes) in cases {
        let dir = TempDir::new();
        std::fs::write(dir.path().join("mosquitto.db"), &bytes).unwrap();
        let mut b = Broker::start(&persistence(&dir));
        assert!(
            b.wait_for_log("is damaged at byte", WAIT),
            "{what}:\n{}",
            b.logs().join("\n")
        );
        let imported = b.wait_for_log_line("Imported ", WAIT).unwrap_or_default();
        let expected = midge::store::convert_mosquitto(&parse(&bytes), 0).1;
        assert!(
            imported.contains(&expected.to_string()),
            "{what}: {imported}"
        );
        b.assert_serves();
        assert_eq!(
            std::fs::read(dir.path().join("mosquitto.db")).unwrap(),
            bytes
        );
    }
}

/// A Mosquitto database that exists but cannot be read (here a directory stands in for a file
/// of another owner, since the tests run as root): start-up stops and says which file, and no
/// store is left behind, so that the next start, once the file is readable, imports it.
#[test]
fn an_unreadable_mosquitto_db_stops_start_up() {
    if skip_on_mosquitto("midge's import of Mosquitto's database") {
        return;
    }
    let dir = TempDir::new();
    std::fs::create_dir(dir.path().join("mosquitto.db")).unwrap();
    let conf = dir.write(
        "midge.conf",
        &format!(
            "listener {} 127.0.0.1\nallow_anonymous true\nuser root\n{}",
            free_port(),
            persistence(&dir)
        ),
    );
    let out = run_midge(&["-c", conf.to_str().unwrap()], WAIT);
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "cannot read {}/mosquitto.db to import it",
            dir.path().display()
        )),
        "{err}"
    );
    assert!(
        !dir.path().join("midge.db").exists(),
        "no store left behind"
    );
}

/// A QoS 2 message that Mosquitto acknowledged with PUBREC and held for the PUBREL that never
/// came before it stopped: midge publishes it at the import (to the persistent subscriber, and
/// as the retained value), and the client's PUBREL after the switch completes the flow.
#[test]
fn a_qos2_message_mosquitto_held_for_pubrel_is_published() {
    let dir = TempDir::new();
    let db = mosquitto_db_with(&dir, |port| {
        let out = mosquitto_sub(
            port,
            5,
            &["-c", "-i", "watcher", "-q", "2", "-t", "held/#", "-E"],
        );
        assert!(out.status.success(), "{out:?}");
        let mut halfway =
            Raw::mqtt_connect_with(port, &Connect::v311("halfway").clean(false), &CONNACK_OK);
        halfway.send(&publish("held/x", b"after pubrec", 2, true, false, 42));
        halfway.expect_bytes(&pubrec(42), WAIT);
        // Gone without its PUBREL.
    });
    let parsed = parse(&std::fs::read(&db).unwrap());
    assert!(
        parsed.records.iter().any(|r| matches!(r,
            Record::ClientMessage(m) if m.client_id == "halfway"
                && m.direction == Direction::In && m.mid == 42 && m.state == 7)),
        "{:?}",
        parsed.records
    );
    if skip_on_mosquitto("midge's import of Mosquitto's database") {
        return;
    }
    let b = Broker::start(&persistence(&dir));
    assert!(
        b.wait_for_log("Published 1 inbound QoS 2 messages", WAIT),
        "{}",
        b.logs().join("\n")
    );
    let out = mosquitto_sub(
        b.port(),
        5,
        &[
            "-c", "-i", "watcher", "-q", "2", "-t", "held/#", "-v", "-C", "1",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "held/x after pubrec\n"
    );
    let out = mosquitto_sub(b.port(), 5, &["-t", "held/x", "-C", "1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "after pubrec\n");

    // The publisher comes back: its session is there, and its PUBREL completes the flow.
    let mut halfway = Raw::mqtt_connect_with(
        b.port(),
        &Connect::v311("halfway").clean(false),
        &[0x20, 2, 1, 0],
    );
    halfway.send(&pubrel(42));
    halfway.expect_bytes(&pubcomp(42), WAIT);
}

/// Messages in flight to a session when Mosquitto stopped keep their packet id and their step:
/// an unacknowledged QoS 1 message comes again with DUP and the same id, and a QoS 2 message
/// whose PUBREL went out resumes with PUBREL, never a second PUBLISH (exactly once).
#[test]
fn messages_in_flight_resume_where_mosquitto_left_them() {
    let dir = TempDir::new();
    let ids = std::cell::Cell::new((0u16, 0u16));
    let db = mosquitto_db_with(&dir, |port| {
        let mut c =
            Raw::mqtt_connect_with(port, &Connect::v311("inflight").clean(false), &CONNACK_OK);
        c.subscribe(1, &[("f/1", 1), ("f/2", 2)], &[1, 2]);
        mosquitto_pub(port, &["-t", "f/1", "-m", "one", "-q", "1"]);
        let p1 = c.expect_packet(WAIT);
        assert_eq!((p1.kind(), p1.topic()), (3, "f/1".to_string()));
        // No PUBACK.
        mosquitto_pub(port, &["-t", "f/2", "-m", "two", "-q", "2"]);
        let p2 = c.expect_packet(WAIT);
        assert_eq!((p2.kind(), p2.topic()), (3, "f/2".to_string()));
        c.send(&pubrec(p2.pid()));
        c.expect_bytes(&pubrel(p2.pid()), WAIT);
        // No PUBCOMP.
        ids.set((p1.pid(), p2.pid()));
    });
    let (id1, id2) = ids.get();
    let parsed = parse(&std::fs::read(&db).unwrap());
    let states: Vec<(u16, u8)> = parsed
        .records
        .iter()
        .filter_map(|r| match r {
            Record::ClientMessage(m) if m.client_id == "inflight" => Some((m.mid, m.state)),
            _ => None,
        })
        .collect();
    // mosquitto_msg_state: 3 waiting for PUBACK, 9 waiting for PUBCOMP.
    assert_eq!(states, [(id1, 3), (id2, 9)]);
    if skip_on_mosquitto("midge's import of Mosquitto's database") {
        return;
    }
    let b = Broker::start(&persistence(&dir));
    let mut c = Raw::mqtt_connect_with(
        b.port(),
        &Connect::v311("inflight").clean(false),
        &[0x20, 2, 1, 0],
    );
    let again = c.expect_packet(WAIT);
    assert_eq!(
        (again.kind(), again.pid(), again.dup()),
        (3, id1, true),
        "{again:?}"
    );
    assert_eq!(again.payload(), b"one");
    c.expect_bytes(&pubrel(id2), WAIT);
    c.send(&puback(id1));
    c.send(&pubcomp(id2));
    c.expect_silence(secs(0.5));
}
