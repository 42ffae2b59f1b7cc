//! Bridges end to end: two midge processes, and midge with Debian's Mosquitto, in both
//! directions; remote restarts, first attempts that fail, fail-over, prefixes, notifications
//! and no message looping between brokers bridged both ways; then what a Mosquitto remote logs
//! of midge's bridge: its client id, the topic lines on connect, the start types, the return
//! to the first address.

use crate::common::*;
use std::process::{Child, Command};
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
    assert!(s.closes_within(WAIT));
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
    assert!(s.closes_within(WAIT));
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
    let child = spawn_mosquitto(&conf);
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

/// Debian's Mosquitto as a remote, logging everything (`-v`) to a file the test reads.
struct LoggedMosquitto {
    child: Child,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl LoggedMosquitto {
    fn start(port: u16) -> LoggedMosquitto {
        LoggedMosquitto::start_with(port, "")
    }

    fn start_with(port: u16, extra: &str) -> LoggedMosquitto {
        let dir = TempDir::new();
        let log = dir.path().join("mosquitto.log");
        let conf = dir.write(
            "m.conf",
            &format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nlog_type all\n\
                 log_dest file {}\n{extra}\n",
                log.display()
            ),
        );
        let child = spawn_mosquitto(&conf);
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        LoggedMosquitto {
            child,
            log,
            _dir: dir,
        }
    }

    /// The log so far, each line without its timestamp.
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_once(": ").map_or(l, |(_, rest)| rest).to_string())
            .collect()
    }

    /// Waits until `n` lines contain `needle`.
    fn wait_for(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.lines().iter().filter(|l| l.contains(needle)).count() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for LoggedMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The host name a default bridge client id starts with (`gethostname`).
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string()
}

/// A bridge named `name` to Mosquitto on `port`, with Mosquitto's default client ids.
fn bridge_to(name: &str, port: u16, extra: &str) -> String {
    format!(
        "connection {name}\naddress 127.0.0.1:{port}\nrestart_timeout 1 2\nkeepalive_interval 5\n{extra}\n"
    )
}

#[test]
fn mosquitto_sees_the_default_client_id_and_the_topic_lines_in_order() {
    if skip() {
        return;
    }
    let port = free_port();
    let m = LoggedMosquitto::start(port);
    let _a = Broker::start(&bridge_to(
        "order",
        port,
        "topic a/# in 1\ntopic b/# out 1\ntopic c/# both 0\ntopic d/# out 0",
    ));
    let id = format!("{}.order", host());
    assert!(
        m.wait_for(
            &format!("Sending UNSUBACK to {id}"),
            2,
            Duration::from_secs(10)
        ),
        "{:#?}",
        m.lines()
    );
    let lines = m.lines();
    let connected = lines
        .iter()
        .position(|l| l.starts_with("New bridge connected"))
        .expect("a bridge connected");
    assert!(
        lines[connected].contains(&format!(" as {id} (p2, c0, k5)")),
        "{}",
        lines[connected]
    );
    // What the remote received, in order, after the will.
    let received: Vec<&str> = lines[connected..]
        .iter()
        .filter(|l| l.starts_with("Received ") || l.starts_with('\t'))
        .map(String::as_str)
        .collect();
    let state = format!("$SYS/broker/connection/{id}/state");
    let want = vec![
        format!("\t{state}"),
        format!("Received PUBLISH from {id} (d0, q1, r1, m1, '{state}', ... (1 bytes))"),
        format!("Received SUBSCRIBE from {id}"),
        "\ta/# (QoS 1)".into(),
        format!("Received UNSUBSCRIBE from {id}"),
        "\tb/#".into(),
        format!("Received SUBSCRIBE from {id}"),
        "\tc/# (QoS 0)".into(),
        format!("Received UNSUBSCRIBE from {id}"),
        "\td/#".into(),
    ];
    assert_eq!(received, want);
}

#[test]
fn notifications_local_only_and_no_unsubscribe_leave_the_remote_only_the_subscribe() {
    if skip() {
        return;
    }
    let port = free_port();
    let m = LoggedMosquitto::start(port);
    let a = Broker::start(&bridge_to(
        "quiet",
        port,
        "notifications_local_only true\nbridge_attempt_unsubscribe false\n\
         remote_clientid q1\ntopic a/# in 1\ntopic b/# out 1",
    ));
    assert!(m.wait_for("Sending SUBACK to q1", 1, Duration::from_secs(10)));
    let mut watch = Raw::mqtt_connect(a.port(), "watch");
    watch.subscribe(1, &[("$SYS/broker/connection/q1/state", 0)], &[0]);
    let p = watch.expect_packet(WAIT);
    assert_eq!((p.payload(), p.retain()), (&b"1"[..], true), "kept here");
    // Anything else would have come with the SUBSCRIBE, in the same write.
    std::thread::sleep(Duration::from_millis(500));
    let lines = m.lines();
    let from_bridge: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("from q1") || l.starts_with("No will") || l.starts_with("Will"))
        .collect();
    assert_eq!(
        from_bridge,
        vec!["No will message specified.", "Received SUBSCRIBE from q1"],
        "{lines:#?}"
    );
}

#[test]
fn lazy_bridge_connects_at_the_threshold_and_leaves_when_idle() {
    if skip() {
        return;
    }
    let port = free_port();
    let m = LoggedMosquitto::start(port);
    let a = Broker::start(&bridge_to(
        "lz",
        port,
        "start_type lazy\nthreshold 3\nidle_timeout 2\ntopic l/# out 1",
    ));
    let id = format!("{}.lz", host());
    let mut p = Raw::mqtt_connect(a.port(), "lazy-pub");
    for i in 1..=2u16 {
        p.send(&publish("l/x", b"m", 1, false, false, i));
        p.expect_bytes(&puback(i), WAIT);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !m.lines().iter().any(|l| l.contains("New bridge connected")),
        "not at start, not below the threshold"
    );
    p.send(&publish("l/x", b"m", 1, false, false, 3));
    p.expect_bytes(&puback(3), WAIT);
    assert!(m.wait_for(
        &format!("Received PUBLISH from {id} (d0, q1, r0"),
        3,
        Duration::from_secs(5)
    ));
    // Two seconds with nothing to forward: the link goes, and the remote publishes our will.
    assert!(a.wait_for_log(
        &format!("Bridge connection local.{id} has exceeded idle timeout, disconnecting."),
        Duration::from_secs(5)
    ));
    assert!(m.wait_for(&format!("Client {id} closed its connection."), 1, WAIT));
}

#[test]
fn once_bridge_is_not_restarted() {
    if skip() {
        return;
    }
    let port = free_port();
    let m = LoggedMosquitto::start(port);
    let a = Broker::start(&bridge_to("one", port, "start_type once\ntopic o/# out 0"));
    assert!(m.wait_for("New bridge connected", 1, Duration::from_secs(10)));
    drop(m);
    assert!(a.wait_for_log("has start_type once", Duration::from_secs(10)));
    let m = LoggedMosquitto::start(port);
    // restart_timeout is 1 s: an automatic bridge would be back long before this.
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !m.lines().iter().any(|l| l.contains("New bridge connected")),
        "{:#?}",
        m.lines()
    );
}

#[test]
fn round_robin_false_moves_back_to_the_first_address_once_it_answers() {
    if skip() {
        return;
    }
    let first = free_port();
    let second = free_port();
    let m2 = LoggedMosquitto::start(second);
    let a = Broker::start(&format!(
        "connection rr\naddresses 127.0.0.1:{first} 127.0.0.1:{second}\nrestart_timeout 1 2\n\
         keepalive_interval 5\nremote_clientid rr\ntopic r/# out 0\n"
    ));
    assert!(m2.wait_for("New bridge connected", 1, Duration::from_secs(10)));
    let m1 = LoggedMosquitto::start(first);
    // The first address is tried every 5 seconds.
    assert!(
        m1.wait_for("New bridge connected", 1, Duration::from_secs(10)),
        "{:#?}",
        a.logs()
    );
    assert!(m2.wait_for("Client rr closed its connection.", 1, WAIT));
}

#[test]
fn two_bridges_with_one_local_client_id_stop_start_up() {
    if skip() {
        return;
    }
    let dir = TempDir::new();
    let conf = dir.write(
        "midge.conf",
        "connection a\naddress 127.0.0.1:1\nremote_clientid x\n\
         connection b\naddress 127.0.0.1:1\nlocal_clientid local.x\n",
    );
    let out = run_midge(&["-c", conf.to_str().unwrap()], WAIT);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "Error: Bridge local_clientid 'local.x' is not unique. Try changing or setting the \
             local_clientid value for one of the bridges."
        ),
        "{out:?}"
    );
}

/// Messages for a remote that is down, queued in the bridge's local session, then midge
/// restarts (persistence on) and the remote comes up: which of them reach a subscriber there.
fn queued_across_a_restart(local_cleansession: bool) -> Vec<Vec<u8>> {
    let port = free_port();
    let store = TempDir::new();
    let conf = format!(
        "persistence true\npersistence_location {}\n{}",
        store.path().display(),
        bridge_to(
            "keep",
            port,
            &format!("local_cleansession {local_cleansession}\ntopic k/# out 1")
        )
    );
    let mut a = Broker::start(&conf);
    assert!(
        a.wait_for_log("Bridge keep connection failed", Duration::from_secs(10)),
        "{:#?}",
        a.logs()
    );
    let mut p = Raw::mqtt_connect(a.port(), "keep-pub");
    for i in 1..=3u16 {
        p.send(&publish(
            "k/x",
            format!("m{i}").as_bytes(),
            1,
            false,
            false,
            i,
        ));
        p.expect_bytes(&puback(i), WAIT);
    }
    a.sigterm();
    assert!(a.wait_exit(WAIT).is_some());
    let _m = LoggedMosquitto::start(port);
    let mut sub = Raw::mqtt_connect(port, "keep-sub");
    sub.subscribe(1, &[("k/#", 1)], &[1]);
    let a = Broker::start(&conf);
    assert!(a.wait_for_log("Bridge keep connected.", Duration::from_secs(10)));
    let mut got = Vec::new();
    while let Got::Packet(m) = sub.read_packet(Duration::from_secs(2)) {
        got.push(m.payload().to_vec());
        sub.send(&puback(m.pid()));
    }
    got
}

#[test]
fn local_cleansession_false_keeps_the_queue_for_the_remote_across_a_restart() {
    if skip() {
        return;
    }
    let want: Vec<Vec<u8>> = (1..=3).map(|i| format!("m{i}").into_bytes()).collect();
    assert_eq!(queued_across_a_restart(false), want);
    assert_eq!(queued_across_a_restart(true), Vec::<Vec<u8>>::new());
}

/// A 150-byte and a 5-byte message go out over a bridge with `bridge_extra` to a Mosquitto
/// with `remote_extra`: what a subscriber there gets.
fn through_a_size_limit(remote_extra: &str, bridge_extra: &str) -> Vec<Vec<u8>> {
    let port = free_port();
    let m = LoggedMosquitto::start_with(port, remote_extra);
    let mut sub = Raw::mqtt_connect(port, "size-sub");
    sub.subscribe(1, &[("s/#", 0)], &[0]);
    let a = Broker::start(&bridge_to(
        "size",
        port,
        &format!("remote_clientid size\ntopic s/# out 0\n{bridge_extra}"),
    ));
    assert!(a.wait_for_log("Bridge size connected.", Duration::from_secs(10)));
    mosquitto_pub(a.port(), &["-t", "s/big", "-m", &"b".repeat(150)]);
    mosquitto_pub(a.port(), &["-t", "s/small", "-m", "small"]);
    let mut got = Vec::new();
    while let Got::Packet(p) = sub.read_packet(Duration::from_secs(2)) {
        got.push(p.payload().to_vec());
    }
    assert!(
        !m.lines().iter().any(|l| l.contains("oversize")),
        "nothing too large reached the remote"
    );
    got
}

#[test]
fn bridge_max_packet_size_and_an_mqtt5_remotes_limit_keep_large_messages_back() {
    if skip() {
        return;
    }
    let small = vec![b"small".to_vec()];
    assert_eq!(
        through_a_size_limit("", "bridge_max_packet_size 100"),
        small
    );
    assert_eq!(
        through_a_size_limit("max_packet_size 100", "bridge_protocol_version mqttv50"),
        small
    );
    assert_eq!(
        through_a_size_limit("", ""),
        vec![b"b".repeat(150), b"small".to_vec()]
    );
}

#[test]
fn the_remote_hears_the_bridge_is_up_at_once_with_nothing_else_to_send() {
    if skip() {
        return;
    }
    let port = free_port();
    let m = LoggedMosquitto::start(port);
    // Only an `out` line and no UNSUBSCRIBE: after CONNACK the "1" is all there is to send,
    // and with a long keepalive no PINGREQ comes to push it out.
    let _a = Broker::start(&format!(
        "connection up\naddress 127.0.0.1:{port}\nkeepalive_interval 60\nremote_clientid up\n\
         bridge_attempt_unsubscribe false\ntopic u/# out 0\n"
    ));
    assert!(m.wait_for("New bridge connected", 1, Duration::from_secs(10)));
    assert!(
        m.wait_for(
            "Received PUBLISH from up (d0, q1, r1, m1, '$SYS/broker/connection/up/state'",
            1,
            Duration::from_secs(2)
        ),
        "{:#?}",
        m.lines()
    );
}

/// Samples a process's resident memory (VmRSS) every 20 ms until stopped; keeps the peak.
struct RssWatch {
    peak_kb: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        use std::sync::atomic::Ordering;
        let peak_kb = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (peak, stopped) = (peak_kb.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
                let rss = status.ok().and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                });
                if let Some(kb) = rss {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch {
            peak_kb,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak in KiB.
    fn stop(mut self) -> u64 {
        use std::sync::atomic::Ordering;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak_kb.load(Ordering::Relaxed)
    }
}

/// midge's resident memory stays under this while it queues a bridge's messages for a remote
/// that is down, however many (docs/store.md: the head of a stored queue in memory is at most
/// 1000 messages and 1 MiB; the rest is in the store only).
const BRIDGE_QUEUE_RSS_BOUND_KB: u64 = 24 * 1024;

/// Message `i` of a long queue: its number, padded to 1000 bytes (without the store holding
/// the queue, 20 000 of them alone would take midge past the bound).
fn numbered(i: usize) -> String {
    format!("{i:06}{}", "-".repeat(994))
}

/// paho-mqtt publishing `n` messages [`numbered`] at QoS 1 to `b/x`, at most 1000 awaiting
/// their PUBACK; it succeeds once every one is acknowledged.
fn publisher(port: u16, n: usize) -> Command {
    const SCRIPT: &str = r#"
import sys, threading
import paho.mqtt.client as mqtt
port, n = int(sys.argv[1]), int(sys.argv[2])
window = threading.Semaphore(1000)
acked = 0
done = threading.Event()
def on_publish(client, userdata, mid, reason, properties):
    global acked
    acked += 1
    window.release()
    if acked == n:
        done.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="long-pub")
c.max_inflight_messages_set(100)
c.on_publish = on_publish
c.connect("127.0.0.1", port)
c.loop_start()
pad = "-" * 994
for i in range(n):
    window.acquire()
    c.publish("b/x", "%06d%s" % (i, pad), qos=1)
ok = done.wait(600)
c.disconnect()
c.loop_stop()
print("acknowledged", acked)
sys.exit(0 if ok else 1)
"#;
    let mut cmd = Command::new(python());
    cmd.args(["-c", SCRIPT, &port.to_string(), &n.to_string()]);
    cmd
}

/// Messages queued for the remote: 20 000, or 200 000 with `MIDGE_TEST_LONG=1`.
fn long_queue_messages() -> usize {
    if std::env::var_os("MIDGE_TEST_LONG").is_some_and(|v| v == "1") {
        200_000
    } else {
        20_000
    }
}

/// A bridge to a Mosquitto that is down (queue limits off: `max_queued_messages 0`), a long
/// stream of QoS 1 messages from paho-mqtt, a restart of midge, then the remote comes
/// up: a subscriber there gets every message once and in order, and midge's memory stays
/// bounded throughout, because the queue beyond its head is in the store only.
#[test]
fn a_long_bridge_queue_survives_a_restart_in_order_within_bounded_memory() {
    if skip() || !paho_available() {
        return;
    }
    let n = long_queue_messages();
    let port = free_port();
    let store = TempDir::new();
    let conf = format!(
        "persistence true\npersistence_location {}\nmax_queued_messages 0\n{}",
        store.path().display(),
        bridge_to("long", port, "topic b/# out 1")
    );
    let mut a = Broker::start(&conf);
    assert!(
        a.wait_for_log("Bridge long connection failed", Duration::from_secs(10)),
        "{:#?}",
        a.logs()
    );
    let rss = RssWatch::start(a.pid());
    let started = Instant::now();
    let out = run_with_timeout(publisher(a.port(), n), None, Duration::from_secs(900));
    assert!(out.status.success(), "{out:?}");
    let published = started.elapsed();
    a.sigterm();
    assert!(a.wait_exit(Duration::from_secs(30)).is_some());
    let peak_queueing = rss.stop();

    let m = LoggedMosquitto::start_with(port, "max_queued_messages 0");
    let sub_port = port.to_string();
    let count = n.to_string();
    let subscriber = std::thread::spawn(move || {
        let mut cmd = Command::new(MOSQUITTO_SUB);
        cmd.args(["-h", "127.0.0.1", "-p", &sub_port, "-i", "long-sub"]);
        cmd.args(["-t", "b/#", "-q", "1", "-C", &count]);
        run_with_timeout(cmd, None, Duration::from_secs(900))
    });
    assert!(m.wait_for("Received SUBSCRIBE from long-sub", 1, WAIT));
    let a = Broker::start(&conf);
    let rss = RssWatch::start(a.pid());
    let started_draining = Instant::now();
    let got = subscriber.join().expect("subscriber thread");
    let drained = started_draining.elapsed();
    let peak_draining = rss.stop();
    assert!(got.status.success(), "{:?}", got.status);
    let got = String::from_utf8_lossy(&got.stdout);
    let got: Vec<&str> = got.lines().collect();
    let want: Vec<String> = (0..n).map(numbered).collect();
    assert_eq!(got.len(), n, "every message arrives");
    assert!(
        got.iter().zip(&want).all(|(g, w)| g == w),
        "in order, each once"
    );
    println!(
        "{n} messages: queued in {published:?} (peak RSS {peak_queueing} KiB), delivered after \
         the restart in {drained:?} (peak RSS {peak_draining} KiB)"
    );
    for peak in [peak_queueing, peak_draining] {
        assert!(
            peak < BRIDGE_QUEUE_RSS_BOUND_KB,
            "peak RSS {peak} KiB over {BRIDGE_QUEUE_RSS_BOUND_KB} KiB"
        );
    }
}
