//! Limits that hold against abuse: slowloris clients, connection floods, malformed CONNECTs.
//! Every test checks that other clients are still served afterwards.

use crate::common::*;
use std::time::{Duration, Instant};

#[test]
fn silent_and_trickling_connections_are_closed_at_the_connect_timeout() {
    if skip_on_mosquitto("connect_timeout is midge's own option") {
        return;
    }
    let mut b = Broker::start("connect_timeout 2");
    let t0 = Instant::now();
    // One says nothing; one trickles a CONNECT one byte at a time, never finishing it.
    let mut silent = Raw::connect(b.port());
    let mut trickle = Raw::connect(b.port());
    let connect = Connect::v311("slow").bytes();
    let mut closed = false;
    for byte in &connect[..connect.len() - 1] {
        if !trickle.send(&[*byte]) {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
        if t0.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    assert!(
        closed || trickle.closes_within(Duration::from_secs(3)),
        "trickler closed"
    );
    assert!(
        silent.closes_within(Duration::from_secs(3)),
        "silent client closed"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "not before the timeout"
    );
    assert!(b.wait_for_log("sent no CONNECT within 2 seconds", WAIT));
    b.assert_serves();
}

#[test]
fn connection_flood_leaves_no_state_behind() {
    if skip_on_mosquitto("reads midge's $SYS counters with sys_interval 1") {
        return;
    }
    let mut b = Broker::start("sys_interval 1");
    let rss_before = b.rss_kb();
    for round in 0..5 {
        let mut held = Vec::new();
        for i in 0..200 {
            // Half complete CONNECT and leave abruptly, half never speak.
            let mut r = Raw::connect(b.port());
            if i % 2 == 0 {
                r.send(&Connect::v311(&format!("flood-{round}-{i}")).bytes());
            }
            held.push(r);
        }
        drop(held);
    }
    b.assert_serves();
    // Every clean session is gone: $SYS says how many sessions remain.
    let mut sys = Raw::mqtt_connect(b.port(), "counter");
    sys.subscribe(1, &[("$SYS/broker/clients/total", 0)], &[0]);
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut total = String::new();
    while Instant::now() < deadline && total != "1" {
        if let Got::Packet(p) = sys.read_packet(Duration::from_millis(300)) {
            total = String::from_utf8_lossy(p.payload()).to_string();
        }
    }
    assert_eq!(total, "1", "only the counting client's own session is left");
    let rss_after = b.rss_kb();
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS grew from {rss_before} kB to {rss_after} kB"
    );
}

#[test]
fn malformed_connects_are_refused_and_others_served() {
    let mut b = Broker::start("");
    let bad: Vec<Vec<u8>> = vec![
        // Protocol name "MQTX".
        packet(
            0x10,
            &[0, 4, b'M', b'Q', b'T', b'X', 4, 2, 0, 60, 0, 1, b'c'],
        ),
        // Reserved connect flag set.
        packet(
            0x10,
            &[0, 4, b'M', b'Q', b'T', b'T', 4, 3, 0, 60, 0, 1, b'c'],
        ),
        // Client id length runs past the packet.
        packet(
            0x10,
            &[0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 9, b'c'],
        ),
        // Will flag without will fields.
        packet(
            0x10,
            &[0, 4, b'M', b'Q', b'T', b'T', 4, 6, 0, 60, 0, 1, b'c'],
        ),
        // Password without username (3.1.1).
        packet(
            0x10,
            &[
                0, 4, b'M', b'Q', b'T', b'T', 4, 0x42, 0, 60, 0, 1, b'c', 0, 1, b'p',
            ],
        ),
    ];
    for bytes in bad {
        let mut r = Raw::connect(b.port());
        r.send(&bytes);
        assert!(r.closes_within(WAIT), "closed after {}", hex(&bytes));
        b.assert_serves();
    }
    assert!(b.alive());
}

#[test]
fn a_storm_of_connections_waits_in_the_kernel_while_the_loop_is_busy() {
    // After a restart every device reconnects at once. While the loop is busy (here: stopped),
    // the kernel completes connections up to the listener's backlog; one beyond it has its SYN
    // dropped and retries only a second later. 600 must all complete at once.
    if skip_on_mosquitto("Mosquitto listens with a backlog of 100") {
        return;
    }
    let mut b = Broker::start("");
    let pid = b.pid().to_string();
    let stop = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig}");
    };
    stop("-STOP");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], b.port()));
    let mut held = Vec::new();
    while held.len() < 600 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    stop("-CONT");
    assert_eq!(held.len(), 600, "the next connection waits for a SYN retry");
    drop(held);
    b.assert_serves();
}
