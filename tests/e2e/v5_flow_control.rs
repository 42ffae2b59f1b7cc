//! MQTT 5 flow control: the client's Receive Maximum honoured on outbound QoS
//! 1/2 (the inbound side, 0x93, is in v5_disconnect.rs); Maximum Packet Size in both directions:
//! a packet up to the server's limit is accepted, and a message larger than the client's limit
//! is not sent to that client while others still get it.

use crate::common::v5::*;
use crate::common::*;

fn pub_many(port: u16, topic: &str, n: u8, q: u8) {
    let mut p = connect5(port, &format!("pub-{topic}"));
    for i in 1..=n {
        p.send(&publish5(
            topic,
            &[i],
            q,
            false,
            u16::from(i),
            &Props::new(),
        ));
        let a = parse_ack(&expect_kind(&mut p, if q == 1 { 4 } else { 5 }, WAIT));
        if q == 2 {
            p.send(&pubrel(a.pid));
            expect_kind(&mut p, 7, WAIT);
        }
    }
}

// v5:[MQTT-3.3.4-9] the server never has more than the client's Receive Maximum QoS 1 PUBLISHes
// unacknowledged: with Receive Maximum 2, five messages come two at a time, one more per PUBACK,
// in order.
#[test]
fn v5_client_receive_maximum_2_honoured_for_qos1_mqtt_3_3_4_9() {
    if skip_on_mosquitto("2.0.11 sends two more messages after the first PUBACK (3 in flight)") {
        return;
    }
    let b = Broker::start("");
    let c5 = Connect::v5("rm2").props(Props::new().u16(id::RECEIVE_MAXIMUM, 2));
    let (mut s, _) = connect5_with(b.port(), &c5);
    sub5(&mut s, 1, "rm2/t", 1, None, 1);
    pub_many(b.port(), "rm2/t", 5, 1);
    let mut unacked = vec![next_pub5(&mut s, WAIT), next_pub5(&mut s, WAIT)];
    s.expect_silence(secs(0.5));
    let mut seen = Vec::new();
    while let Some(m) = (!unacked.is_empty()).then(|| unacked.remove(0)) {
        seen.push(m.payload[0]);
        s.send(&puback(m.pid));
        if seen.len() + unacked.len() < 5 {
            unacked.push(next_pub5(&mut s, WAIT));
        }
        s.expect_silence(secs(0.2));
    }
    assert_eq!(seen, [1, 2, 3, 4, 5]);
}

// v5:[MQTT-3.3.4-9] for QoS 2 the quota is released by PUBCOMP (not by PUBREC): Receive Maximum 1
// → the second message only after the first flow completes.
#[test]
fn v5_client_receive_maximum_1_honoured_for_qos2_mqtt_3_3_4_9() {
    let b = Broker::start("");
    let c5 = Connect::v5("rm1q2").props(Props::new().u16(id::RECEIVE_MAXIMUM, 1));
    let (mut s, _) = connect5_with(b.port(), &c5);
    sub5(&mut s, 1, "rm1/t", 2, None, 2);
    pub_many(b.port(), "rm1/t", 2, 2);
    let m = next_pub5(&mut s, WAIT);
    assert_eq!(m.payload, [1]);
    s.expect_silence(secs(0.4));
    s.send(&pubrec(m.pid));
    let rel = expect_kind(&mut s, 6, WAIT);
    assert_eq!(rel.pid(), m.pid);
    s.expect_silence(secs(0.4));
    s.send(&pubcomp(m.pid));
    let m2 = next_pub5(&mut s, WAIT);
    assert_eq!(m2.payload, [2]);
}

// v5:[MQTT-3.1.2-24]/[MQTT-3.1.2-25] a subscriber that announces Maximum Packet Size 100 is
// never sent a larger packet: the 200-byte message is discarded for it (as if delivered; later
// QoS 1 messages are not held up), while a subscriber without a limit gets everything.
#[test]
fn v5_client_maximum_packet_size_respected_others_still_served_mqtt_3_1_2_24() {
    let mut b = Broker::start("");
    let small = Connect::v5("mps-small").props(Props::new().u32(id::MAXIMUM_PACKET_SIZE, 100));
    let (mut s, _) = connect5_with(b.port(), &small);
    sub5(&mut s, 1, "mps/t", 1, None, 1);
    let mut big = connect5(b.port(), "mps-big");
    sub5(&mut big, 1, "mps/t", 1, None, 1);
    let mut p = connect5(b.port(), "mps-pub");
    pub5_qos1(&mut p, "mps/t", &[b'L'; 200], 1, &Props::new());
    for i in 0..3u8 {
        pub5_qos1(
            &mut p,
            "mps/t",
            &[b'0' + i],
            2 + u16::from(i),
            &Props::new(),
        );
    }
    let got = collect5(&mut s, 3, WAIT);
    for m in &got {
        assert!(m.bytes.len() <= 100, "packet of {} bytes", m.bytes.len());
    }
    let payloads: Vec<Vec<u8>> = got.into_iter().map(|m| m.payload).collect();
    assert_eq!(payloads, [b"0".to_vec(), b"1".to_vec(), b"2".to_vec()]);
    s.quiet(secs(0.4));
    let all = collect5(&mut big, 4, WAIT);
    assert_eq!(all[0].payload.len(), 200);
    assert_serves5(&mut b);
}

// Section 3.2.2.3.6: a packet of exactly the server's Maximum Packet Size (the whole packet,
// fixed header included) is accepted; one byte more → DISCONNECT 0x95.
#[test]
fn v5_server_maximum_packet_size_boundary_mqtt_3_2_2_15() {
    if skip_on_mosquitto("2.0.11 is off by one: it accepts 101 bytes with max_packet_size 100") {
        return;
    }
    let mut b = Broker::start("max_packet_size 100");
    let mut c = connect5(b.port(), "mps-edge");
    // PUBLISH QoS 1 "e/t": 2 + 3 topic + 2 id + 1 props = 8 bytes of header, 2 fixed.
    let exact = publish5("e/t", &[b'x'; 90], 1, false, 1, &Props::new());
    assert_eq!(exact.len(), 100);
    c.send(&exact);
    let a = parse_ack(&expect_kind(&mut c, 4, WAIT));
    assert_eq!(a.pid, 1);
    c.send(&publish5("e/t", &[b'x'; 91], 1, false, 2, &Props::new()));
    expect_disconnect(&mut c, 0x95, WAIT);
    assert_serves5(&mut b);
}

// The same with real clients at QoS 0: `mosquitto_sub -V mqttv5 -D connect maximum-packet-size
// 100` does not get the 200-byte message, only the small one that follows. (At QoS 1 Mosquitto
// 2.0.11 stalls that client's queue after dropping the big message, so QoS 0 here; the raw test
// above covers QoS 1.)
#[test]
fn v5_mosquitto_sub_maximum_packet_size_gets_only_small_messages_mqtt_3_1_2_24() {
    let b = Broker::start("");
    let args = "-V mqttv5 -t mpsc/t -D connect maximum-packet-size 100 -C 1";
    let sub = Sub::spawn(b.port(), 5, &args.split(' ').collect::<Vec<_>>());
    std::thread::sleep(secs(0.5));
    let big = "B".repeat(200);
    mosquitto_pub(b.port(), &["-V", "mqttv5", "-t", "mpsc/t", "-m", &big]);
    mosquitto_pub(b.port(), &["-V", "mqttv5", "-t", "mpsc/t", "-m", "small"]);
    let (lines, _) = sub.finish(secs(6.0));
    assert_eq!(lines, ["small"]);
}

/// dev:max-packet-size-whole-packet: a client's Maximum Packet Size bounds the whole packet,
/// fixed header included (v5 3.1.2.11.4: "the total number of bytes"): a PUBLISH of exactly
/// that size goes, one a byte larger does not. Mosquitto leaves the first byte out of the
/// count, so it sends packets one byte over the client's limit.
#[test]
fn v5_client_maximum_packet_size_counts_the_whole_packet() {
    if skip_on_mosquitto("Mosquitto sends a packet one byte over the client's limit") {
        return;
    }
    let b = Broker::start("");
    let c = Connect::v5("mps-exact").props(Props::new().u32(id::MAXIMUM_PACKET_SIZE, 50));
    let (mut s, _) = connect5_with(b.port(), &c);
    sub5(&mut s, 1, "x/t", 0, None, 0);
    let mut p = connect5(b.port(), "mps-exact-pub");
    // To the subscriber: 2 bytes of fixed header, 2 + 3 of topic, 1 of properties, payload.
    p.send(&publish5("x/t", &[b'y'; 43], 0, false, 0, &Props::new()));
    p.send(&publish5("x/t", &[b'z'; 42], 0, false, 0, &Props::new()));
    let m = next_pub5(&mut s, WAIT);
    assert_eq!((m.bytes.len(), m.payload[0]), (50, b'z'));
    s.quiet(secs(0.3));
}
