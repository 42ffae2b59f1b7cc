//! The memory bound of docs/delivery.md: past `memory_limit` of queued messages midge
//! stops reading from publishers (TCP back-pressure) instead of dropping what it would accept.

use crate::common::*;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn publishers_pause_over_memory_limit_and_nothing_is_dropped() {
    if skip_on_mosquitto("memory_limit back-pressure is midge's own") {
        return;
    }
    let b = Broker::start("memory_limit 200000\nmax_queued_messages 0");
    // A persistent subscriber that goes away: its queue is what fills memory.
    let mut sub = Raw::mqtt_connect_with(
        b.port(),
        &Connect::v311("slowpoke").clean(false),
        &CONNACK_OK,
    );
    sub.subscribe(1, &[("flood", 1)], &[1]);
    drop(sub);
    std::thread::sleep(Duration::from_millis(200));

    const N: u16 = 2000;
    let payload = vec![b'x'; 1000];
    let mut publisher = Raw::mqtt_connect(b.port(), "flooder");
    let mut writer = publisher.stream.try_clone().expect("clone socket");
    let sender = std::thread::spawn(move || {
        for i in 1..=N {
            let mut body = payload.clone();
            body[..2].copy_from_slice(&i.to_be_bytes());
            if writer
                .write_all(&publish("flood", &body, 1, false, false, i))
                .is_err()
            {
                return false;
            }
        }
        true
    });
    // The publisher is paused long before all its messages are acknowledged.
    let mut acked = 0u16;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Got::Packet(p) = publisher.read_packet(Duration::from_millis(200)) {
            if p.kind() == 4 {
                acked += 1;
            }
        }
    }
    assert!(
        acked > 50 && acked < N,
        "acked {acked} of {N} while over the limit"
    );

    // The subscriber returns and drains its queue; the publisher resumes; all arrive in order.
    let mut sub = Raw::connect(b.port());
    sub.send(&Connect::v311("slowpoke").clean(false).bytes());
    sub.expect_bytes(&[0x20, 2, 1, 0], WAIT);
    let mut next = 1u16;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next <= N && Instant::now() < deadline {
        let p = sub.expect_packet(WAIT);
        assert_eq!(p.kind(), 3, "PUBLISH expected");
        let seq = u16::from_be_bytes([p.payload()[0], p.payload()[1]]);
        assert_eq!(seq, next, "in order, none missing");
        sub.send(&puback(p.pid()));
        next += 1;
        // Keep the publisher's acks flowing so its socket never fills our side.
        while let Got::Packet(_) = publisher.read_packet(Duration::from_millis(0)) {}
    }
    assert_eq!(next, N + 1, "every message delivered");
    assert!(sender.join().unwrap_or(false), "publisher wrote everything");
    assert!(b.logs().iter().all(|l| !l.contains("being dropped")));
}

/// With persistence on, a publisher faster than the store's writer (each message fanned out to
/// 700 offline persistent sessions: 700 000 stored deliveries for 1 000 PUBLISHes sent at once)
/// waits in its socket once the writer is far behind, instead of the writer's backlog growing
/// in memory. Every message is acknowledged, and sessions get all of them, in order.
#[test]
fn a_publisher_waits_for_a_store_far_behind_and_nothing_is_lost() {
    if skip_on_mosquitto("the store's back-pressure is midge's own") {
        return;
    }
    let store = TempDir::new();
    let b = Broker::start(&format!(
        "persistence true\npersistence_location {}\nmax_queued_messages 0",
        store.path().display()
    ));
    const SESSIONS: usize = 700;
    const N: u16 = 1000;
    for i in 0..SESSIONS {
        let c = Connect::v311(&format!("fan{i}")).clean(false);
        let mut sub = Raw::mqtt_connect_with(b.port(), &c, &CONNACK_OK);
        sub.subscribe(1, &[("fan", 1)], &[1]);
        sub.send(&[0xE0, 0]);
        assert!(sub.closes_within(WAIT), "offline before the burst");
    }
    let before = b.rss_kb();

    let mut publisher = Raw::mqtt_connect(b.port(), "fanner");
    let mut burst = Vec::new();
    for i in 1..=N {
        burst.extend(publish("fan", &i.to_be_bytes(), 1, false, false, i));
    }
    let mut writer = publisher.stream.try_clone().expect("clone socket");
    let sender = std::thread::spawn(move || writer.write_all(&burst).is_ok());
    let mut acked = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked < N && Instant::now() < deadline {
        if let Got::Packet(p) = publisher.read_packet(Duration::from_millis(500)) {
            assert_eq!(p.kind(), 4, "PUBACK expected");
            acked += 1;
        }
    }
    assert_eq!(acked, N, "every PUBLISH acknowledged");
    assert!(
        b.wait_for_log("changes wait for the disk", WAIT),
        "the pause is logged"
    );
    assert!(sender.join().unwrap_or(false), "publisher wrote everything");
    // 700 000 deliveries of 40 B are queued (28 MB; the peak grows ~43 MB). Without the
    // pause, the writer's backlog of 700 000 changes of 56 B comes on top (39 MB, and more
    // while the writer sorts them: ~89 MB in all); with it, at most 65 536 changes wait.
    let peak = b.peak_rss_kb();
    eprintln!("broker RSS {before} kB with the sessions offline, peak {peak} kB");
    assert!(
        peak < before + 60_000,
        "peak RSS {peak} kB from {before} kB: the writer's backlog grew"
    );

    for i in [0, SESSIONS / 2, SESSIONS - 1] {
        let mut sub = Raw::connect(b.port());
        sub.send(&Connect::v311(&format!("fan{i}")).clean(false).bytes());
        sub.expect_bytes(&[0x20, 2, 1, 0], WAIT);
        for next in 1..=N {
            let p = sub.expect_packet(WAIT);
            assert_eq!(p.kind(), 3, "PUBLISH expected");
            assert_eq!(
                p.payload(),
                next.to_be_bytes(),
                "session {i}: in order, none missing"
            );
            sub.send(&puback(p.pid()));
        }
    }
    // Said at the first turn a second after the last pause ($SYS runs one every 10 s).
    let kept_up = b.wait_for_log("store: kept up again", Duration::from_secs(15));
    assert!(kept_up, "the end of the pauses is logged");
}
