//! Bridges end to end: two midge processes, and midge with Debian's Mosquitto, in both
//! directions; remote restarts, first attempts that fail, fail-over, prefixes, notifications
//! and no message looping between brokers bridged both ways.

use crate::common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A broker on a fixed port (so it can be restarted where the bridge expects it).
fn remote_on(port: u16) -> Broker {
    Broker::start(&format!("listener {port} 127.0.0.1"))
}

fn bridge_conf(name: &str, addresses: &str, topics: &[&str]) -> String {
    let mut c = format!(
        "connection {name}\naddress {addresses}\nremote_clientid {name}\nrestart_timeout 1 2\nkeepalive_interval 5\n"
    );
    for t in topics {
        c.push_str(&format!("topic {t}\n"));
    }
    c
}

fn skip() -> bool {
    skip_on_mosquitto("drives midge's bridge; Mosquitto is used as a peer inside")
}

#[test]
fn two_midges_bridged_both_ways_carry_messages_without_loops() {
    if skip() {
        return;
    }
    let port_b = free_port();
    let b = remote_on(port_b);
    let a = Broker::start(&bridge_conf(
        "ab",
        &format!("127.0.0.1:{port_b}"),
        &["# both 1"],
    ));
    let mut sub_b = Raw::mqtt_connect(port_b, "sub-b");
    sub_b.subscribe(1, &[("x/#", 1)], &[1]);
    until_bridged(a.port(), &mut sub_b, "x/a-to-b");
    let mut sub_a = Raw::mqtt_connect(a.port(), "sub-a");
    sub_a.subscribe(1, &[("y/#", 1)], &[1]);
    until_bridged(port_b, &mut sub_a, "y/b-to-a");
    // Now count: one message each way arrives exactly once, nothing comes back around.
    sub_a.subscribe(2, &[("x/#", 1)], &[1]);
    sub_b.subscribe(2, &[("y/#", 1)], &[1]);
    let mut pa = Raw::mqtt_connect(a.port(), "pub-a");
    pa.send(&publish("x/once", b"from-a", 1, false, false, 1));
    pa.expect_bytes(&puback(1), WAIT);
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Got::Packet(p) = sub_a.read_packet(Duration::from_millis(50)) {
            got_a.push(p.payload().to_vec());
            if p.qos() > 0 {
                sub_a.send(&puback(p.pid()));
            }
        }
        if let Got::Packet(p) = sub_b.read_packet(Duration::from_millis(50)) {
            got_b.push(p.payload().to_vec());
            if p.qos() > 0 {
                sub_b.send(&puback(p.pid()));
            }
        }
    }
    assert_eq!(got_a, vec![b"from-a".to_vec()], "local subscriber: once");
    assert_eq!(
        got_b,
        vec![b"from-a".to_vec()],
        "remote subscriber: once, no loop"
    );
    drop(b);
}

#[test]
fn prefixes_remap_topics_in_and_out() {
    if skip() {
        return;
    }
    let port_b = free_port();
    let _b = remote_on(port_b);
    let a = Broker::start(&bridge_conf(
        "pfx",
        &format!("127.0.0.1:{port_b}"),
        &[
            "sensors/# out 1 home/ site1/home/",
            "cmd/# in 1 home/ site1/",
        ],
    ));
    let mut sub_b = Raw::mqtt_connect(port_b, "remote-sub");
    sub_b.subscribe(1, &[("site1/home/sensors/#", 1)], &[1]);
    until_bridged(a.port(), &mut sub_b, "home/sensors/t1");
    let mut sub_a = Raw::mqtt_connect(a.port(), "local-sub");
    sub_a.subscribe(1, &[("home/cmd/#", 1)], &[1]);
    until_bridged(port_b, &mut sub_a, "site1/cmd/light");
}

#[test]
fn first_attempt_fails_then_connects_and_queued_qos1_is_delivered() {
    if skip() {
        return;
    }
    let port_b = free_port();
    // A durable subscriber exists on the remote before the bridge ever reaches it (made on an
    // earlier run of the remote, kept in its store), so nothing depends on timing.
    let dir = TempDir::new();
    let remote_conf = format!(
        "listener {port_b} 127.0.0.1\npersistence true\npersistence_location {}",
        dir.path().display()
    );
    let mut b = Broker::start(&remote_conf);
    let mut s =
        Raw::mqtt_connect_with(port_b, &Connect::v311("late-sub").clean(false), &CONNACK_OK);
    s.subscribe(1, &[("q/#", 1)], &[1]);
    s.send(&DISCONNECT);
    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some());
    // The remote is down: the first attempts fail, midge keeps trying.
    let a = Broker::start(&bridge_conf(
        "late",
        &format!("127.0.0.1:{port_b}"),
        &["q/# out 1"],
    ));
    assert!(a.wait_for_log("Bridge late connection failed", Duration::from_secs(10)));
    // Messages for the remote wait in the bridge's queue meanwhile.
    let mut p = Raw::mqtt_connect(a.port(), "early-pub");
    for i in 1..=5u16 {
        p.send(&publish(
            "q/x",
            format!("m{i}").as_bytes(),
            1,
            false,
            false,
            i,
        ));
        p.expect_bytes(&puback(i), WAIT);
    }
    let b = Broker::start(&remote_conf);
    assert!(a.wait_for_log("Bridge late connected.", Duration::from_secs(15)));
    let mut s = Raw::connect(port_b);
    s.send(&Connect::v311("late-sub").clean(false).bytes());
    s.expect_bytes(&[0x20, 2, 1, 0], WAIT);
    let got = s.collect_publishes(5, Duration::from_secs(10));
    let payloads: Vec<Vec<u8>> = got.iter().map(|p| p.payload().to_vec()).collect();
    let want: Vec<Vec<u8>> = (1..=5).map(|i| format!("m{i}").into_bytes()).collect();
    assert_eq!(payloads, want, "queued while down, delivered in order");
    drop(b);
}

#[test]
fn remote_restart_mid_traffic_loses_no_qos1_message() {
    if skip() {
        return;
    }
    let port_b = free_port();
    let dir = TempDir::new();
    let remote_conf = format!(
        "listener {port_b} 127.0.0.1\npersistence true\npersistence_location {}",
        dir.path().display()
    );
    let b = Broker::start(&remote_conf);
    // A persistent subscriber on the remote, so the remote keeps its queue across restarts.
    let mut s = Raw::mqtt_connect_with(port_b, &Connect::v311("keeper").clean(false), &CONNACK_OK);
    s.subscribe(1, &[("r/#", 1)], &[1]);
    s.send(&DISCONNECT);
    let a = Broker::start(&bridge_conf(
        "rs",
        &format!("127.0.0.1:{port_b}"),
        &["r/# out 1"],
    ));
    assert!(a.wait_for_log("Bridge rs connected.", Duration::from_secs(10)));
    let mut p = Raw::mqtt_connect(a.port(), "steady");
    for i in 1..=10u16 {
        p.send(&publish(
            "r/x",
            format!("m{i}").as_bytes(),
            1,
            false,
            false,
            i,
        ));
        p.expect_bytes(&puback(i), WAIT);
    }
    // Stop the remote (SIGTERM flushes its store), publish more while it is down, restart it.
    b.sigterm();
    let mut b = b;
    assert!(b.wait_exit(WAIT).is_some());
    for i in 11..=20u16 {
        p.send(&publish(
            "r/x",
            format!("m{i}").as_bytes(),
            1,
            false,
            false,
            i,
        ));
        p.expect_bytes(&puback(i), WAIT);
    }
    let b2 = Broker::start(&remote_conf);
    let mut s = Raw::connect(port_b);
    s.send(&Connect::v311("keeper").clean(false).bytes());
    s.expect_bytes(&[0x20, 2, 1, 0], WAIT);
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 20 && Instant::now() < deadline {
        if let Got::Packet(m) = s.read_packet(Duration::from_millis(500)) {
            seen.insert(String::from_utf8_lossy(m.payload()).to_string());
            s.send(&puback(m.pid()));
        }
    }
    for i in 1..=20 {
        assert!(seen.contains(&format!("m{i}")), "m{i} missing: {seen:?}");
    }
    drop(b2);
}

#[test]
fn fail_over_to_the_second_address() {
    if skip() {
        return;
    }
    let dead = free_port();
    let port_b = free_port();
    let _b = remote_on(port_b);
    let a = Broker::start(&bridge_conf(
        "fo",
        &format!("127.0.0.1:{dead} 127.0.0.1:{port_b}"),
        &["f/# out 0"],
    ));
    let mut sub_b = Raw::mqtt_connect(port_b, "fo-sub");
    sub_b.subscribe(1, &[("f/#", 0)], &[0]);
    until_bridged(a.port(), &mut sub_b, "f/x");
}

#[test]
fn notification_topic_goes_1_then_0() {
    if skip() {
        return;
    }
    let port_b = free_port();
    let b = remote_on(port_b);
    let a = Broker::start(&bridge_conf(
        "nt",
        &format!("127.0.0.1:{port_b}"),
        &["n/# out 0"],
    ));
    let mut watch = Raw::mqtt_connect(a.port(), "watch");
    watch.subscribe(1, &[("$SYS/broker/connection/nt/state", 1)], &[1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut states = Vec::new();
    while Instant::now() < deadline && !states.ends_with(&[b"1".to_vec()]) {
        if let Got::Packet(p) = watch.read_packet(Duration::from_millis(300)) {
            states.push(p.payload().to_vec());
            if p.qos() > 0 {
                watch.send(&puback(p.pid()));
            }
        }
    }
    assert_eq!(
        states.last().map(Vec::as_slice),
        Some(&b"1"[..]),
        "{states:?}"
    );
    drop(b);
    let p = watch.expect_packet(Duration::from_secs(15));
    assert_eq!(p.payload(), b"0");
}

/// Debian's Mosquitto on a free port with extra config.
fn mosquitto(port: u16, extra: &str) -> (Child, TempDir) {
    let dir = TempDir::new();
    let conf = dir.write(
        "m.conf",
        &format!("listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n{extra}\n"),
    );
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto starts");
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, dir)
}

/// v311:[MQTT-7.0.0-1]
/// v5:[MQTT-7.0.0-1]
#[test]
fn midge_bridges_to_mosquitto_both_ways() {
    if skip() {
        return;
    }
    let port_m = free_port();
    let (mut m, _d) = mosquitto(port_m, "");
    let a = Broker::start(&bridge_conf(
        "tomosq",
        &format!("127.0.0.1:{port_m}"),
        &["# both 1"],
    ));
    let mut sub_m = Raw::mqtt_connect(port_m, "m-sub");
    sub_m.subscribe(1, &[("to-m/#", 1)], &[1]);
    until_bridged(a.port(), &mut sub_m, "to-m/x");
    let mut sub_a = Raw::mqtt_connect(a.port(), "a-sub");
    sub_a.subscribe(1, &[("to-a/#", 1)], &[1]);
    until_bridged(port_m, &mut sub_a, "to-a/x");
    let _ = m.kill();
    let _ = m.wait();
}

#[test]
fn mosquitto_bridges_to_midge_with_try_private() {
    if skip() {
        return;
    }
    let a = Broker::start("");
    let port_m = free_port();
    let (mut m, _d) = mosquitto(
        port_m,
        &format!(
            "connection tomidge\naddress 127.0.0.1:{}\ntopic # both 1\nrestart_timeout 1\nremote_clientid from-mosq",
            a.port()
        ),
    );
    assert!(a.wait_for_log("as from-mosq", Duration::from_secs(15)));
    let mut sub_a = Raw::mqtt_connect(a.port(), "a-sub2");
    sub_a.subscribe(1, &[("m2a/#", 1)], &[1]);
    until_bridged(port_m, &mut sub_a, "m2a/x");
    let mut sub_m = Raw::mqtt_connect(port_m, "m-sub2");
    sub_m.subscribe(1, &[("a2m/#", 1)], &[1]);
    until_bridged(a.port(), &mut sub_m, "a2m/x");
    // Mosquitto's bridge (try_private) never gets its own messages echoed back by midge: a
    // message published on Mosquitto arrives once at a Mosquitto subscriber.
    sub_m.subscribe(2, &[("m2a/#", 1)], &[1]);
    let mut pm = Raw::mqtt_connect(port_m, "m-pub");
    pm.send(&publish("m2a/once", b"1", 1, false, false, 1));
    pm.expect_bytes(&puback(1), WAIT);
    let first = sub_m.expect_packet(WAIT);
    assert_eq!(first.payload(), b"1");
    sub_m.send(&puback(first.pid()));
    assert!(
        matches!(sub_m.read_packet(Duration::from_secs(2)), Got::Timeout),
        "no echo through the bridge"
    );
    let _ = m.kill();
    let _ = m.wait();
}
