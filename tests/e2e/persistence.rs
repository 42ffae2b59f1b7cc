//! Durability end to end (docs/delivery.md): what was acknowledged comes back after
//! SIGTERM and after SIGKILL, a damaged store is set aside and salvaged, Mosquitto's own file is
//! never touched.

use crate::common::*;
use std::time::Duration;

fn conf(dir: &TempDir) -> String {
    format!(
        "persistence true\npersistence_location {}",
        dir.path().display()
    )
}

/// Subscribes a persistent QoS 1 session to `q/#`, then leaves.
fn park_subscriber(port: u16, id: &str) {
    let mut s = Raw::mqtt_connect_with(port, &Connect::v311(id).clean(false), &CONNACK_OK);
    s.subscribe(1, &[("q/#", 1)], &[1]);
    s.send(&DISCONNECT);
    assert!(s.closes_within(WAIT));
}

/// Publishes `n` QoS 1 messages and waits for every PUBACK.
fn publish_acked(port: u16, n: u16) {
    let mut p = Raw::mqtt_connect(port, "producer");
    for i in 1..=n {
        p.send(&publish(
            "q/x",
            format!("m{i}").as_bytes(),
            1,
            false,
            false,
            i,
        ));
    }
    for i in 1..=n {
        p.expect_bytes(&puback(i), WAIT);
    }
    p.send(&publish("r/state", b"kept", 1, true, false, 900));
    p.expect_bytes(&puback(900), WAIT);
}

/// Reconnects the parked session and checks it gets exactly m1..mn in order.
fn drain_subscriber(port: u16, id: &str, n: u16) {
    let mut s = Raw::connect(port);
    s.send(&Connect::v311(id).clean(false).bytes());
    s.expect_bytes(&[0x20, 2, 1, 0], WAIT);
    for i in 1..=n {
        let p = s.expect_packet(WAIT);
        assert_eq!(p.payload(), format!("m{i}").as_bytes(), "message {i}");
        s.send(&puback(p.pid()));
    }
    s.expect_silence(Duration::from_millis(300));
}

fn check_retained(port: u16) {
    let mut s = Raw::mqtt_connect(port, "reader");
    s.subscribe(1, &[("r/#", 0)], &[0]);
    let p = s.expect_packet(WAIT);
    assert_eq!(
        (p.topic(), p.payload().to_vec(), p.retain()),
        ("r/state".into(), b"kept".to_vec(), true)
    );
}

#[test]
fn queued_messages_and_retained_survive_sigterm() {
    if skip_on_mosquitto("midge's SQLite store") {
        return;
    }
    let dir = TempDir::new();
    let mut b = Broker::start(&conf(&dir));
    park_subscriber(b.port(), "durable1");
    publish_acked(b.port(), 50);
    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some_and(|s| s.success()));
    assert!(dir.path().join("midge.db").exists());
    let b = Broker::start(&conf(&dir));
    assert!(b.wait_for_log(
        "Restored 1 retained messages, 1 sessions and 50 queued messages",
        WAIT
    ));
    drain_subscriber(b.port(), "durable1", 50);
    check_retained(b.port());
}

#[test]
fn acknowledged_messages_survive_sigkill() {
    if skip_on_mosquitto("midge's SQLite store") {
        return;
    }
    let dir = TempDir::new();
    let b = Broker::start(&conf(&dir));
    park_subscriber(b.port(), "durable2");
    publish_acked(b.port(), 200);
    // Dropping the harness broker kills it with SIGKILL: no chance to flush anything.
    drop(b);
    let b = Broker::start(&conf(&dir));
    drain_subscriber(b.port(), "durable2", 200);
    check_retained(b.port());
}

#[test]
fn damaged_store_is_set_aside_and_midge_starts() {
    if skip_on_mosquitto("midge's SQLite store") {
        return;
    }
    let dir = TempDir::new();
    let mut b = Broker::start(&conf(&dir));
    publish_acked(b.port(), 1);
    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some());
    let db = dir.path().join("midge.db");
    let mut bytes = std::fs::read(&db).expect("store exists");
    let len = bytes.len();
    bytes.truncate(len / 3);
    bytes.extend(std::iter::repeat_n(0xA5u8, 4096));
    std::fs::write(&db, &bytes).expect("damage the store");
    let mut b = Broker::start(&conf(&dir));
    b.assert_serves();
    let aside = std::fs::read_dir(dir.path())
        .expect("list dir")
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("midge.db.corrupt-")
        });
    assert!(aside, "damaged store moved aside");
}

#[test]
fn mosquitto_db_is_never_touched() {
    if skip_on_mosquitto("midge's SQLite store") {
        return;
    }
    let dir = TempDir::new();
    let mut signature = vec![0x00, 0xB5, 0x00];
    signature.extend_from_slice(b"mosquitto db");
    signature.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 6]);
    let mosq = dir.path().join("mosquitto.db");
    std::fs::write(&mosq, &signature).expect("write fake mosquitto.db");
    let mut b = Broker::start(&format!("{}\npersistence_file mosquitto.db", conf(&dir)));
    publish_acked(b.port(), 3);
    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some());
    assert_eq!(std::fs::read(&mosq).expect("still there"), signature);
    assert!(dir.path().join("midge.db").exists());
}

#[test]
fn in_flight_messages_are_resent_with_dup_after_restart() {
    if skip_on_mosquitto("midge's SQLite store") {
        return;
    }
    let dir = TempDir::new();
    let mut b = Broker::start(&conf(&dir));
    let mut s =
        Raw::mqtt_connect_with(b.port(), &Connect::v311("holder").clean(false), &CONNACK_OK);
    s.subscribe(1, &[("q/#", 2)], &[2]);
    publish_acked(b.port(), 2);
    // Received, never acknowledged.
    let first = s.expect_packet(WAIT);
    let second = s.expect_packet(WAIT);
    assert_eq!((first.pid(), second.pid()), (1, 2));
    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some());
    let b = Broker::start(&conf(&dir));
    let mut s = Raw::connect(b.port());
    s.send(&Connect::v311("holder").clean(false).bytes());
    s.expect_bytes(&[0x20, 2, 1, 0], WAIT);
    for (pid, body) in [(1u16, "m1"), (2, "m2")] {
        let p = s.expect_packet(WAIT);
        assert!(p.dup(), "resent with DUP (v311:[MQTT-4.4.0-1])");
        assert_eq!((p.pid(), p.payload()), (pid, body.as_bytes()));
    }
}

/// The retained value a fresh mosquitto_sub receives on `topic`.
fn retained_value(port: u16, topic: &str) -> String {
    let out = mosquitto_sub(port, 5, &["-t", topic, "-C", "1"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn persistence_file_names_the_store() {
    if skip_on_mosquitto("midge's SQLite store") {
        return;
    }
    let dir = TempDir::new();
    let conf = format!("{}\npersistence_file custom.db", conf(&dir));
    let mut b = Broker::start(&conf);
    mosquitto_pub(b.port(), &["-t", "r/named", "-m", "kept", "-r", "-q", "1"]);
    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some());
    let head = std::fs::read(dir.path().join("custom.db")).expect("custom.db written");
    assert!(head.starts_with(b"SQLite format 3\0"), "midge's store");
    assert!(!dir.path().join("midge.db").exists());

    let b = Broker::start(&conf);
    assert_eq!(retained_value(b.port(), "r/named"), "kept");
}

/// A real Mosquitto's database under a name of the operator's choosing: midge, given the same
/// configuration, leaves it as it is and keeps its own store in `midge.db` beside it, so the
/// operator can go back to Mosquitto and find its data.
#[test]
fn a_mosquitto_database_under_a_custom_name_is_left_alone() {
    if skip_on_mosquitto("midge's SQLite store") {
        return;
    }
    let dir = TempDir::new();
    let persistence = format!(
        "persistence true\npersistence_location {}/\npersistence_file broker.db\n",
        dir.path().display()
    );
    let port = free_port();
    let mosquitto_conf = dir.write(
        "mosquitto.conf",
        &format!("listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n{persistence}"),
    );
    let mut mosquitto = spawn_mosquitto(&mosquitto_conf);
    wait_listening(&mut mosquitto, port, WAIT, "mosquitto");
    mosquitto_pub(
        port,
        &["-t", "r/theirs", "-m", "mosquitto's", "-r", "-q", "1"],
    );
    unsafe { libc::kill(mosquitto.id() as libc::pid_t, libc::SIGTERM) };
    assert!(wait_child(&mut mosquitto, WAIT).is_some_and(|s| s.success()));
    let theirs = dir.path().join("broker.db");
    let before = std::fs::read(&theirs).expect("Mosquitto wrote broker.db");
    assert!(before.starts_with(b"\x00\xB5\x00mosquitto db"));

    let mut b = Broker::start(&persistence);
    assert!(
        b.wait_for_log("is a Mosquitto database: midge never changes", WAIT),
        "logs:\n{}",
        b.logs().join("\n")
    );
    mosquitto_pub(
        b.port(),
        &["-t", "r/ours", "-m", "midge's", "-r", "-q", "1"],
    );
    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some());
    assert_eq!(std::fs::read(&theirs).unwrap(), before, "untouched");
    assert!(dir.path().join("midge.db").exists());
    let b = Broker::start(&persistence);
    assert_eq!(retained_value(b.port(), "r/ours"), "midge's");
    drop(b);

    // Mosquitto, back on the same configuration, finds its own data.
    let mut mosquitto = spawn_mosquitto(&mosquitto_conf);
    wait_listening(&mut mosquitto, port, WAIT, "mosquitto");
    assert_eq!(retained_value(port, "r/theirs"), "mosquitto's");
    let _ = mosquitto.kill();
    let _ = mosquitto.wait();
}

/// A queued QoS 1 message that goes in flight writes no state (docs/store.md): after a crash it
/// is found queued and comes again (at least once) as a new delivery; a clean stop writes its
/// packet id, so after the restart it comes again with DUP and the same id.
#[test]
fn a_queued_message_sent_comes_again_after_a_crash_and_keeps_its_id_across_a_stop() {
    if skip_on_mosquitto("midge's SQLite store") {
        return;
    }
    let dir = TempDir::new();
    let b = Broker::start(&conf(&dir));
    // Offline once the broker has closed the connection: a PUBLISH routed before it read the
    // DISCONNECT would go to the session online, held, and be written with its packet id.
    park_subscriber(b.port(), "parked");
    // Queued while offline, committed before the PUBACKs.
    publish_acked(b.port(), 2);
    // Each time: received, never acknowledged.
    let received = |port: u16| {
        let mut s = Raw::connect(port);
        s.send(&Connect::v311("parked").clean(false).bytes());
        s.expect_bytes(&[0x20, 2, 1, 0], WAIT);
        let got: Vec<(bool, u16, Vec<u8>)> = (0..2)
            .map(|_| {
                let p = s.expect_packet(WAIT);
                (p.dup(), p.pid(), p.payload().to_vec())
            })
            .collect();
        (s, got)
    };
    let (_s, first) = received(b.port());
    let bodies = |got: &[(bool, u16, Vec<u8>)]| -> Vec<Vec<u8>> {
        got.iter().map(|(_, _, m)| m.clone()).collect()
    };
    assert_eq!(bodies(&first), [b"m1".to_vec(), b"m2".to_vec()]);
    // Dropping the harness broker kills it with SIGKILL.
    drop(b);

    let mut b = Broker::start(&conf(&dir));
    let (_s, after_crash) = received(b.port());
    assert_eq!(bodies(&after_crash), bodies(&first), "delivered again");
    assert!(
        after_crash.iter().all(|(dup, _, _)| !dup),
        "found queued, sent as new deliveries: {after_crash:?}"
    );
    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some());

    let b = Broker::start(&conf(&dir));
    let (_s, after_stop) = received(b.port());
    let resent: Vec<(bool, u16, Vec<u8>)> = after_crash
        .iter()
        .map(|(_, id, m)| (true, *id, m.clone()))
        .collect();
    assert_eq!(
        after_stop, resent,
        "resent with DUP and the same ids (v311:[MQTT-4.4.0-1])"
    );
}
