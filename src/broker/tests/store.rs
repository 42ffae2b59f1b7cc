//! What the broker records for the store (`persistence true`): durable state only. An idle
//! broker records nothing, whatever its timers do.

use super::*;
use crate::store::Change;

/// A broker with `$SYS` every 10 s and persistence on, and one persistent session subscribed
/// to `$SYS`, its recorded changes already taken.
fn persistent_world() -> World {
    let mut w = World::with_sys(Settings::default());
    w.broker.enable_persistence(w.now, 1_800_000_000);
    w.connect(1, "keeper", false);
    w.send(1, &subscribe_bytes(1, &[("$SYS/#", QoS::AtLeastOnce)]));
    w.take(1);
    assert!(!w.broker.take_changes().is_empty(), "the session is stored");
    w
}

#[test]
fn sys_topics_are_never_recorded_for_the_store() {
    let mut w = persistent_world();
    w.send(1, &publish("kept", b"v", QoS::AtLeastOnce, true, 7));
    w.advance(Duration::from_secs(10));
    let got = w.take(1);
    assert!(
        got.iter()
            .any(|o| matches!(o, Out::Publish { topic, .. } if topic == "$SYS/broker/uptime")),
        "{got:?}"
    );
    let changes = w.broker.take_changes();
    let retained: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            Change::RetainedSet { message } => Some(message.topic.as_str()),
            Change::RetainedClear { topic } => Some(topic.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(retained, ["kept"], "{changes:?}");
}

#[test]
fn an_idle_persistent_session_records_nothing() {
    let mut w = persistent_world();
    for _ in 0..6 {
        w.advance(Duration::from_secs(10));
        w.send(1, &[0xC0, 0]);
        assert_eq!(w.take(1).last(), Some(&Out::Pingresp));
        let changes = w.broker.take_changes();
        assert!(changes.is_empty(), "{changes:?}");
    }
}
