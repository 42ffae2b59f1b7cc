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

/// A broker with persistence on and `n` persistent sessions `sub-0`.. subscribed to `filter`
/// at QoS 1, offline; connection 1 is a publisher. The changes so far are taken.
fn offline_subscribers(n: usize, filter: &str) -> World {
    let mut w = World::new(Settings::default());
    w.broker.enable_persistence(w.now, 1_800_000_000);
    for i in 0..n {
        let id = 100 + i;
        w.connect(id, &format!("sub-{i}"), false);
        w.send(id, &subscribe_bytes(1, &[(filter, QoS::AtLeastOnce)]));
        w.send(id, &[0xE0, 0]);
    }
    w.connect(1, "pub", true);
    w.broker.take_changes();
    w
}

/// The body ids a batch names, and the body each message added to a session refers to.
fn bodies_and_deliveries(changes: &[Change]) -> (Vec<u64>, Vec<u64>) {
    let bodies = changes
        .iter()
        .filter_map(|c| match c {
            Change::MessageBody { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    let deliveries = changes
        .iter()
        .filter_map(|c| match c {
            Change::MessageAdd { message, .. } => Some(message.body),
            _ => None,
        })
        .collect();
    (bodies, deliveries)
}

#[test]
fn a_message_for_a_hundred_offline_sessions_is_one_body() {
    let mut w = offline_subscribers(100, "t/#");
    w.send(1, &publish("t/x", b"once", QoS::AtLeastOnce, false, 1));
    let changes = w.broker.take_changes();
    let (bodies, deliveries) = bodies_and_deliveries(&changes);
    assert_eq!(bodies.len(), 1, "{changes:?}");
    assert_eq!(deliveries, vec![bodies[0]; 100]);
}

/// A publisher faster than the store: once more than `STORE_BACKLOG_LIMIT` changes wait, a
/// PUBLISH that may be stored stays in the connection's input, with everything after it, and
/// the connection is not read; QoS 0 ones before it and other connections' packets go on.
/// When the store has caught up, the held PUBLISHes are handled in order, none lost.
#[test]
fn publishes_wait_in_their_socket_while_the_store_is_far_behind() {
    let mut w = offline_subscribers(1_000, "t");
    let mut burst = publish("t", b"qos0 first", QoS::AtMostOnce, false, 0);
    for i in 1..=100u16 {
        burst.extend(publish("t", &i.to_be_bytes(), QoS::AtLeastOnce, false, i));
    }
    w.send(1, &burst);
    // 1 001 changes per message (its body, one add per session): the publish that would go
    // past the limit waits.
    let handled = STORE_BACKLOG_LIMIT.div_ceil(1_001);
    assert_eq!(
        w.broker.persist.as_deref().map(|p| p.changes_len()),
        Some(handled * 1_001)
    );
    assert!(w.broker.holds_input(1) && !w.broker.wants_input(1));
    let acks = |w: &mut World| {
        w.take(1)
            .into_iter()
            .filter(|o| matches!(o, Out::Puback(_)))
            .count()
    };
    // Nothing is acknowledged before it is stored: the PUBACKs wait for the batch.
    assert_eq!(acks(&mut w), 0);
    // A subscriber is read and served meanwhile.
    w.connect(2, "reader", true);
    w.send(2, &[0xC0, 0]);
    assert_eq!(w.take(2).last(), Some(&Out::Pingresp));

    let first = w.broker.take_changes(); // the store took this batch and committed it
    assert_eq!(first.len(), handled * 1_001);
    assert!(w.broker.wants_input(1), "no backlog left");
    w.broker.handle_bytes(1, &[], w.now);
    assert!(!w.broker.holds_input(1));
    let rest = w.broker.take_changes();
    let (bodies, deliveries) = bodies_and_deliveries(&rest);
    assert_eq!(
        (bodies.len(), deliveries.len()),
        (100 - handled, (100 - handled) * 1_000)
    );
    let (first_bodies, _) = bodies_and_deliveries(&first);
    assert!(first_bodies.iter().max() < bodies.iter().min(), "in order");
}

/// A later batch that refers to a body names it again (the store may have deleted it with its
/// last delivery meanwhile), under the same id; after a restart, the deliveries of one body
/// share it (under the id the store gives it, its place in the body log) and new bodies get
/// ids above the stored ones.
#[test]
fn a_body_is_named_in_each_batch_that_refers_to_it_and_ids_go_on_after_a_restart() {
    let dir = StoreDir::new("bodies");
    let mut w = offline_subscribers(0, "");
    w.send(1, &publish("r/x", b"kept", QoS::AtLeastOnce, true, 1));
    let mut batches = vec![w.broker.take_changes()];
    for (id, client) in [(2, "a"), (3, "b")] {
        w.connect(id, client, false);
        w.send(id, &subscribe_bytes(1, &[("r/#", QoS::AtLeastOnce)]));
        w.send(id, &[0xE0, 0]);
        batches.push(w.broker.take_changes());
    }
    let (first, a) = bodies_and_deliveries(&batches[1]);
    let (again, b) = bodies_and_deliveries(&batches[2]);
    assert_eq!((first.len(), &again, &a, &b), (1, &first, &first, &first));

    let snapshot = dir.commit_and_reopen(batches.concat());
    let first: Vec<u64> = snapshot.bodies.keys().copied().collect();
    assert_eq!(first.len(), 1);
    assert_eq!(stored_messages(&snapshot, "a").len(), 1);
    assert_eq!(stored_messages(&snapshot, "b").len(), 1);
    let mut w = restarted(snapshot);
    w.connect(1, "pub", true);
    w.send(1, &publish("r/y", b"new", QoS::AtLeastOnce, false, 2));
    let (new, deliveries) = bodies_and_deliveries(&w.broker.take_changes());
    assert_eq!(new.len(), 1);
    assert!(new[0] > first[0], "{new:?} after {first:?}");
    assert_eq!(deliveries, vec![new[0]; 2]);
}

/// The packet ids of the messages a batch marks as in flight.
fn in_flight(changes: &[Change]) -> Vec<u16> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::MessageState { packet_id, .. } => Some(*packet_id),
            _ => None,
        })
        .collect()
}

#[test]
fn a_queued_qos1_copy_going_in_flight_is_written_only_at_shutdown_and_qos2_at_once() {
    let mut w = World::new(Settings::default());
    w.broker.enable_persistence(w.now, 1_800_000_000);
    w.connect(100, "sub", false);
    w.send(100, &subscribe_bytes(1, &[("t", QoS::ExactlyOnce)]));
    w.send(100, &[0xE0, 0]);
    w.connect(1, "pub", true);
    w.send(1, &publish("t", b"one", QoS::AtLeastOnce, false, 1));
    w.send(1, &publish("t", b"two", QoS::ExactlyOnce, false, 2));
    w.broker.take_changes();
    w.open(100);
    w.send(100, &connect_bytes("sub", false, 60, None));
    let ids: Vec<(u8, u16)> = w
        .take(100)
        .iter()
        .filter_map(|o| match o {
            Out::Publish { qos, id, .. } => Some((*qos, *id)),
            _ => None,
        })
        .collect();
    let [(1, one), (2, two)] = ids[..] else {
        panic!("expected a QoS 1 and a QoS 2 PUBLISH, got {ids:?}");
    };
    assert_eq!(in_flight(&w.broker.take_changes()), [two], "QoS 2 only");
    w.broker.handle_shutdown(w.now, None);
    assert_eq!(
        in_flight(&w.broker.take_changes()),
        [one],
        "QoS 1 at shutdown"
    );
}
