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
