//! Bridges on simulated time: what midge sends the remote broker when its link comes up,
//! and when it connects, gives up, stays idle or moves back to its first address, for each
//! `start_type` and `round_robin`. The remote is played by hand: the test opens the socket
//! the broker asks for and answers its CONNECT.

use super::*;
use crate::config::bridge::{BridgeConfig, BridgeTopic, Direction, StartType};

/// The bridge's socket, as the server would number it.
const LINK: ConnId = 10;

fn topic(pattern: &str, direction: Direction, qos: u8) -> BridgeTopic {
    BridgeTopic {
        pattern: pattern.into(),
        direction,
        qos,
        local_prefix: String::new(),
        remote_prefix: String::new(),
    }
}

/// A bridge named `hub` to `addresses`, remote client id `edge`, with `topics`.
fn bridge(addresses: &[&str], topics: Vec<BridgeTopic>) -> BridgeConfig {
    let mut b = BridgeConfig::new("hub");
    b.addresses = addresses.iter().map(|a| (a.to_string(), 1883)).collect();
    b.topics = topics;
    b.remote_clientid = Some("edge".into());
    b
}

fn world(b: BridgeConfig) -> World {
    World::new(Settings {
        bridges: vec![b],
        ..Settings::default()
    })
}

/// The hosts the broker asked to dial, oldest first, once the turn's timers have run.
fn dials(w: &mut World) -> Vec<String> {
    w.advance(Duration::ZERO);
    w.actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::ConnectBridge { host, .. } => Some(host),
            _ => None,
        })
        .collect()
}

/// What the broker wrote to connection `id`, one line per packet.
fn sent(w: &mut World, id: ConnId) -> Vec<String> {
    let Some(buf) = w.broker.poll_transmit(id) else {
        return Vec::new();
    };
    let bytes = std::mem::take(buf);
    let mut rest = &bytes[..];
    let mut lines = Vec::new();
    while let Ok(Some(h)) = codec::parse_fixed_header(rest) {
        let body = &rest[h.header_len..h.total()];
        let p = codec::decode(h.first, body, ProtocolVersion::V311)
            .unwrap_or_else(|e| panic!("decodes: {e:?}"));
        lines.push(match p {
            Packet::Connect(c) => format!(
                "CONNECT {} will={}",
                c.client_id,
                c.will.map_or("-".into(), |w| w.topic)
            ),
            Packet::Subscribe(s) => {
                let f: Vec<&str> = s.subscriptions.iter().map(|s| s.filter.as_str()).collect();
                format!("SUBSCRIBE {}", f.join(" "))
            }
            Packet::Unsubscribe(u) => format!("UNSUBSCRIBE {}", u.filters.join(" ")),
            Packet::Publish(p) => format!(
                "PUBLISH q{} r{} {} {}",
                p.qos as u8,
                u8::from(p.retain),
                p.topic,
                String::from_utf8_lossy(p.payload)
            ),
            Packet::Pingreq => "PINGREQ".into(),
            other => format!("{other:?}"),
        });
        rest = &rest[h.total()..];
    }
    lines
}

fn connack() -> Vec<u8> {
    Packet::Connack(codec::Connack {
        session_present: false,
        code: 0,
        properties: Properties::default(),
    })
    .to_bytes(ProtocolVersion::V311)
}

/// The server opened the socket the broker asked for; the remote answers CONNACK. Returns
/// what the broker sent on it.
fn link_up(w: &mut World, id: ConnId) -> Vec<String> {
    w.broker
        .handle_connection_opened(id, peer(9000), Via::Bridge(0), w.now);
    w.send(id, &connack());
    sent(w, id)
}

/// The local client on connection `id` publishes `n` QoS 0 messages to `topic`.
fn publish_local(w: &mut World, id: ConnId, topic: &str, n: usize) {
    for i in 0..n {
        w.send(
            id,
            &publish(topic, format!("m{i}").as_bytes(), QoS::AtMostOnce, false, 0),
        );
    }
    w.advance(Duration::ZERO);
}

fn at(w: &World, ms: u64) -> Instant {
    w.t0 + Duration::from_millis(ms)
}

#[test]
fn on_connect_one_subscribe_per_in_line_and_one_unsubscribe_per_out_line_in_order() {
    let mut w = world(bridge(
        &["remote"],
        vec![
            topic("a/#", Direction::In, 1),
            topic("b/#", Direction::Out, 1),
            topic("c/#", Direction::Both, 0),
            topic("d/#", Direction::Out, 0),
        ],
    ));
    assert_eq!(dials(&mut w), vec!["remote"]);
    w.broker
        .handle_connection_opened(LINK, peer(9000), Via::Bridge(0), w.now);
    let state = "$SYS/broker/connection/edge/state";
    assert_eq!(
        sent(&mut w, LINK),
        vec![format!("CONNECT edge will={state}")]
    );
    w.send(LINK, &connack());
    assert_eq!(
        sent(&mut w, LINK),
        vec![
            format!("PUBLISH q1 r1 {state} 1"),
            "SUBSCRIBE a/#".into(),
            "UNSUBSCRIBE b/#".into(),
            "SUBSCRIBE c/#".into(),
            "UNSUBSCRIBE d/#".into(),
        ]
    );
}

#[test]
fn bridge_attempt_unsubscribe_false_sends_no_unsubscribe() {
    let mut b = bridge(
        &["remote"],
        vec![
            topic("a/#", Direction::Out, 0),
            topic("b/#", Direction::In, 0),
        ],
    );
    b.attempt_unsubscribe = false;
    let mut w = world(b);
    dials(&mut w);
    let out = link_up(&mut w, LINK);
    assert_eq!(out[2..], ["SUBSCRIBE b/#".to_string()], "{out:?}");
}

#[test]
fn the_remote_state_notification_is_flushed_with_nothing_else_to_send() {
    // Only `out` topics and no UNSUBSCRIBE: the "1" is the only packet after CONNACK. It must
    // put the link on the dirty list itself, or it waits for unrelated traffic.
    let mut b = bridge(&["remote"], vec![topic("x/#", Direction::Out, 0)]);
    b.attempt_unsubscribe = false;
    let mut w = world(b);
    dials(&mut w);
    w.broker
        .handle_connection_opened(LINK, peer(9000), Via::Bridge(0), w.now);
    let mut dirty = Vec::new();
    w.broker.poll_dirty(&mut dirty);
    sent(&mut w, LINK);
    w.send(LINK, &connack());
    w.broker.poll_dirty(&mut dirty);
    assert_eq!(dirty, vec![LINK]);
    assert_eq!(
        sent(&mut w, LINK),
        vec!["PUBLISH q1 r1 $SYS/broker/connection/edge/state 1"]
    );
}

#[test]
fn notifications_local_only_tell_the_remote_nothing() {
    let mut b = bridge(&["remote"], vec![topic("x/#", Direction::Out, 0)]);
    b.notifications_local_only = true;
    let mut w = world(b);
    w.connect(1, "watcher", true);
    w.send(
        1,
        &subscribe_bytes(1, &[("$SYS/broker/connection/+/state", QoS::AtMostOnce)]),
    );
    w.take(1);
    dials(&mut w);
    w.broker
        .handle_connection_opened(LINK, peer(9000), Via::Bridge(0), w.now);
    assert_eq!(sent(&mut w, LINK), vec!["CONNECT edge will=-"]);
    w.send(LINK, &connack());
    assert_eq!(sent(&mut w, LINK), vec!["UNSUBSCRIBE x/#"]);
    assert_eq!(
        w.take(1),
        vec![pub_out("$SYS/broker/connection/edge/state", b"1", 0, 0)],
        "the local side still hears it"
    );
}

#[test]
fn automatic_retries_after_the_back_off_which_doubles() {
    let mut b = bridge(&["remote"], vec![topic("x/#", Direction::Out, 0)]);
    b.restart_base = Duration::from_secs(4);
    b.restart_cap = Duration::from_secs(60);
    let mut w = world(b);
    assert_eq!(dials(&mut w).len(), 1);
    w.broker.handle_bridge_failed(0, "refused", w.now);
    w.drive_until(at(&w, 3_999));
    assert!(dials(&mut w).is_empty(), "not before the base delay");
    // The jitter adds at most a quarter.
    w.drive_until(at(&w, 5_000));
    assert_eq!(dials(&mut w).len(), 1);
    let failed_at = w.now;
    w.broker.handle_bridge_failed(0, "refused", w.now);
    w.drive_until(failed_at + Duration::from_millis(7_999));
    assert!(
        dials(&mut w).is_empty(),
        "the second wait is twice the first"
    );
    w.drive_until(failed_at + Duration::from_secs(10));
    assert_eq!(dials(&mut w).len(), 1);
}

#[test]
fn once_never_connects_again_after_a_failure_or_a_lost_link() {
    let mut b = bridge(&["remote"], vec![topic("x/#", Direction::Out, 0)]);
    b.start_type = StartType::Once;
    let mut w = world(b.clone());
    assert_eq!(dials(&mut w).len(), 1, "once connects at start");
    w.broker.handle_bridge_failed(0, "refused", w.now);
    w.drive();
    assert!(dials(&mut w).is_empty());

    let mut w = world(b);
    dials(&mut w);
    link_up(&mut w, LINK);
    w.broker.handle_connection_closed(LINK, None, w.now);
    w.drive_until(at(&w, 3_600_000));
    assert!(dials(&mut w).is_empty());
}

#[test]
fn lazy_stops_when_idle_and_starts_again_at_the_threshold() {
    let mut b = bridge(&["remote"], vec![topic("x/#", Direction::Out, 0)]);
    b.start_type = StartType::Lazy;
    b.threshold = 3;
    b.idle_timeout = Duration::from_secs(60);
    let mut w = world(b);
    w.connect(1, "pub", true);
    publish_local(&mut w, 1, "x/0", 2);
    assert!(
        dials(&mut w).is_empty(),
        "not at start, not for 2 of 3 messages"
    );
    publish_local(&mut w, 1, "x/0", 1);
    assert_eq!(dials(&mut w).len(), 1, "threshold reached");
    link_up(&mut w, LINK);
    // A message forwarded at 30 s restarts the idle clock.
    w.drive_until(at(&w, 30_000));
    publish_local(&mut w, 1, "x/1", 1);
    assert_eq!(sent(&mut w, LINK), vec!["PUBLISH q0 r0 x/1 m0"]);
    w.drive_until(at(&w, 89_999));
    assert!(!w.closed(LINK));
    w.drive_until(at(&w, 90_000));
    assert!(w.closed(LINK), "idle for idle_timeout");
    // Down: QoS 0 messages wait (a lazy bridge keeps them) and count towards the threshold.
    w.drive_until(at(&w, 200_000));
    w.connect(2, "pub2", true);
    publish_local(&mut w, 2, "x/2", 2);
    assert!(dials(&mut w).is_empty(), "2 of 3");
    publish_local(&mut w, 2, "x/3", 1);
    assert_eq!(dials(&mut w).len(), 1, "threshold reached");
    let out = link_up(&mut w, LINK);
    let forwarded: Vec<&String> = out.iter().filter(|l| l.starts_with("PUBLISH q0")).collect();
    assert_eq!(forwarded.len(), 3, "{out:?}");
}

#[test]
fn round_robin_false_moves_back_to_the_first_address() {
    let mut b = bridge(&["first", "second"], vec![topic("x/#", Direction::Out, 0)]);
    b.restart_base = Duration::from_secs(1);
    let mut w = world(b);
    assert_eq!(dials(&mut w), vec!["first"]);
    w.broker.handle_bridge_failed(0, "refused", w.now);
    w.drive_until(at(&w, 2_000));
    assert_eq!(dials(&mut w), vec!["second"]);
    let up_at = w.now;
    link_up(&mut w, LINK);
    // Every 5 seconds on the second address, the first is tried.
    w.drive_until(up_at + Duration::from_millis(4_999));
    assert!(dials(&mut w).is_empty());
    w.drive_until(up_at + Duration::from_secs(5));
    assert_eq!(dials(&mut w), vec!["first"]);
    w.broker.handle_bridge_failed(0, "refused", w.now);
    assert!(!w.closed(LINK), "a failed try keeps the link");
    w.drive_until(up_at + Duration::from_secs(10));
    assert_eq!(dials(&mut w), vec!["first"]);
    // It answers: the link moves there.
    w.broker
        .handle_connection_opened(LINK + 1, peer(9001), Via::Bridge(0), w.now);
    assert!(w.closed(LINK));
    assert_eq!(
        sent(&mut w, LINK + 1),
        vec!["CONNECT edge will=$SYS/broker/connection/edge/state"]
    );
    w.send(LINK + 1, &connack());
    w.drive_until(up_at + Duration::from_secs(60));
    assert!(
        dials(&mut w).is_empty(),
        "on the first address, nothing to try"
    );
}

#[test]
fn round_robin_true_stays_on_the_address_that_works() {
    let mut b = bridge(&["first", "second"], vec![topic("x/#", Direction::Out, 0)]);
    b.restart_base = Duration::from_secs(1);
    b.round_robin = true;
    let mut w = world(b);
    dials(&mut w);
    w.broker.handle_bridge_failed(0, "refused", w.now);
    w.drive_until(at(&w, 2_000));
    assert_eq!(dials(&mut w), vec!["second"]);
    link_up(&mut w, LINK);
    w.drive_until(at(&w, 60_000));
    assert!(dials(&mut w).is_empty());
}

#[test]
fn bridge_max_packet_size_drops_larger_messages() {
    let mut b = bridge(&["remote"], vec![topic("x/#", Direction::Out, 0)]);
    b.max_packet_size = 64;
    let mut w = world(b);
    w.connect(1, "pub", true);
    dials(&mut w);
    link_up(&mut w, LINK);
    w.send(
        1,
        &publish("x/big", &[b'b'; 100], QoS::AtMostOnce, false, 0),
    );
    w.send(1, &publish("x/small", b"s", QoS::AtMostOnce, false, 0));
    assert_eq!(sent(&mut w, LINK), vec!["PUBLISH q0 r0 x/small s"]);
    assert_eq!(w.broker.stats.publish_dropped, 1);
}

#[test]
fn lazy_after_a_failed_attempt_waits_for_the_back_off() {
    let mut b = bridge(&["remote"], vec![topic("x/#", Direction::Out, 0)]);
    b.start_type = StartType::Lazy;
    b.threshold = 1;
    b.restart_base = Duration::from_secs(4);
    let mut w = world(b);
    w.connect(1, "pub", true);
    publish_local(&mut w, 1, "x/1", 1);
    assert_eq!(dials(&mut w).len(), 1);
    w.broker.handle_bridge_failed(0, "refused", w.now);
    // Mosquitto would try again at the next message; midge waits for the back-off.
    publish_local(&mut w, 1, "x/2", 1);
    w.drive_until(at(&w, 3_999));
    assert!(dials(&mut w).is_empty());
    w.drive_until(at(&w, 5_000));
    assert_eq!(dials(&mut w).len(), 1, "then the waiting messages start it");
}

#[test]
fn a_client_with_the_bridges_local_client_id_gets_a_session_of_its_own() {
    let mut w = world(bridge(&["remote"], vec![topic("x/#", Direction::Out, 0)]));
    dials(&mut w);
    link_up(&mut w, LINK);
    assert!(!w.connect(1, "local.edge", false), "no session to resume");
    w.connect(2, "pub", true);
    w.send(2, &publish("x/1", b"still", QoS::AtMostOnce, false, 0));
    assert!(!w.closed(LINK));
    assert_eq!(sent(&mut w, LINK), vec!["PUBLISH q0 r0 x/1 still"]);
}
