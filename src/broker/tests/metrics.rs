//! `/metrics` from the broker's side: the figures follow clients and messages (PUBLISH by QoS,
//! both ways), uptime follows the broker's clock, and HTTP Basic credentials are checked as a
//! CONNECT's are.

use super::*;
use crate::broker::LoopFigures;

fn metrics(w: &World) -> String {
    let mut out = String::new();
    w.broker
        .write_metrics(w.now, &LoopFigures::default(), &mut out);
    out
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn figures_follow_clients_and_count_publishes_by_qos() {
    let mut w = World::new(Settings::default());
    w.connect(1, "sub", true);
    w.send(1, &subscribe_bytes(1, &[("a/#", QoS::AtLeastOnce)]));
    w.take(1);
    w.connect(2, "pub", true);
    w.send(2, &publish("a/0", b"x", QoS::AtMostOnce, false, 0));
    w.send(2, &publish("a/1", b"xy", QoS::AtLeastOnce, true, 1));
    w.send(2, &publish("a/2", b"xyz", QoS::ExactlyOnce, false, 2));
    w.advance(Duration::from_secs(30));
    let text = metrics(&w);
    for line in [
        "midge_clients_connected 2",
        "midge_uptime_seconds 30",
        "midge_publish_messages_received_total{qos=\"0\"} 1",
        "midge_publish_messages_received_total{qos=\"1\"} 1",
        "midge_publish_messages_received_total{qos=\"2\"} 1",
        // The subscription's QoS 1 caps the QoS 2 message.
        "midge_publish_messages_sent_total{qos=\"0\"} 1",
        "midge_publish_messages_sent_total{qos=\"1\"} 2",
        "midge_publish_messages_sent_total{qos=\"2\"} 0",
        "midge_publish_received_bytes_total 6",
        "midge_retained_messages 1",
        "midge_subscriptions 1",
    ] {
        assert!(has(&text, line), "{line:?} not in:\n{text}");
    }
    w.broker.handle_connection_closed(2, None, w.now);
    assert!(has(&metrics(&w), "midge_clients_connected 1"));
}

#[test]
fn http_credentials_are_checked_like_connect_by_password_only() {
    let pw = password_line("prom", "scrape", b"salt");
    // Anonymous clients are allowed, but a page that asked for credentials wants a password.
    let mut w = World::new(secured(Some(&pw), None, true));
    w.open(1);
    assert!(w.broker.http_login(1, "prom", b"scrape"));
    assert!(!w.broker.http_login(1, "prom", b"wrong"));
    assert!(!w.broker.http_login(1, "nobody", b"scrape"));
    // No password file: nobody logs in by password.
    let mut w = World::new(secured(None, None, true));
    w.open(1);
    assert!(!w.broker.http_login(1, "prom", b"scrape"));
    // An unknown connection is refused.
    assert!(!w.broker.http_login(7, "prom", b"scrape"));
}
