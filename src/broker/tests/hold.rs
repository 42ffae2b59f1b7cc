//! Held writes (`hold.rs`): a QoS 1 message acknowledged by every connected recipient before
//! its write is never written, and its PUBACK leaves at that completion; otherwise the write is
//! recorded and the PUBACK waits for its commit.

use super::super::hold::{HOLD, MAX_HOLD};
use super::*;
use crate::store::Change;

/// Persistence on; "sub" (persistent, subscribed to `t` at QoS 1) on connection 1, connected
/// unless `offline`; "pub" on connection 2. Changes so far are taken, and committed as batch 1.
fn world(offline: bool) -> World {
    let mut w = World::new(Settings::default());
    w.broker.enable_persistence(w.now, unix_now());
    w.connect(1, "sub", false);
    w.send(1, &subscribe_bytes(1, &[("t", QoS::AtLeastOnce)]));
    w.take(1);
    if offline {
        w.broker.handle_connection_closed(1, None, w.now);
    }
    w.connect(2, "pub", true);
    w.broker.take_changes();
    w.broker.seal_acks(1, 1);
    w
}

fn message_writes(changes: &[Change]) -> usize {
    changes
        .iter()
        .filter(|c| {
            matches!(
                c,
                Change::MessageAdd { .. }
                    | Change::MessageState { .. }
                    | Change::MessageDelete { .. }
            )
        })
        .count()
}

/// The PUBACK of packet 7 leaves once batch 2 (this turn's changes) is committed, not before.
fn puback_7_waits_for_batch_2(w: &mut World) {
    w.broker.seal_acks(2, 1);
    assert_eq!(w.take(2), vec![], "not before batch 2 is committed");
    w.broker.seal_acks(2, 2);
    assert_eq!(w.take(2), vec![Out::Puback(7)]);
}

fn delivered_id(w: &mut World) -> u16 {
    match w.take(1).as_slice() {
        [Out::Publish { id, qos: 1, .. }] => *id,
        other => panic!("expected one QoS 1 PUBLISH, got {other:?}"),
    }
}

#[test]
fn a_message_acknowledged_by_its_recipient_is_never_written_and_its_puback_leaves_at_once() {
    let mut w = world(false);
    w.send(2, &publish("t", b"v", QoS::AtLeastOnce, false, 7));
    let id = delivered_id(&mut w);
    assert_eq!(w.take(2), vec![], "no PUBACK before completion or commit");
    w.send(1, &ack(Packet::Puback, id));
    // Nothing committed beyond batch 1, and nothing needs to be: the PUBACK leaves with the
    // output of the subscriber's acknowledgement, not at the end of the loop's turn.
    assert_eq!(w.take(2), vec![Out::Puback(7)]);
    let changes = w.broker.take_changes();
    assert_eq!(message_writes(&changes), 0, "{changes:?}");
}

#[test]
fn pubacks_released_by_completions_out_of_order_still_leave_in_order() {
    let mut w = world(false);
    w.send(2, &publish("t", b"a", QoS::AtLeastOnce, false, 7));
    w.send(2, &publish("t", b"b", QoS::AtLeastOnce, false, 8));
    let ids: Vec<u16> = w
        .take(1)
        .iter()
        .map(|o| match o {
            Out::Publish { id, qos: 1, .. } => *id,
            other => panic!("expected QoS 1 PUBLISHes, got {other:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 2);
    w.send(1, &ack(Packet::Puback, ids[1]));
    assert_eq!(w.take(2), vec![], "PUBACK 8 waits for PUBACK 7");
    w.send(1, &ack(Packet::Puback, ids[0]));
    assert_eq!(w.take(2), vec![Out::Puback(7), Out::Puback(8)]);
    w.broker.seal_acks(1, 1);
    assert_eq!(w.take(2), vec![], "each sent once");
}

#[test]
fn a_recipient_that_does_not_acknowledge_gets_the_write_and_the_puback_waits_for_its_commit() {
    let mut w = world(false);
    w.send(2, &publish("t", b"v", QoS::AtLeastOnce, false, 7));
    delivered_id(&mut w);
    assert!(w.broker.take_changes().is_empty(), "held at first");
    let due = w
        .broker
        .next_deadline()
        .unwrap_or_else(|| panic!("a check of the held write"));
    assert_eq!(due, w.now + HOLD);
    w.drive_until(w.now + HOLD);
    let changes = w.broker.take_changes();
    assert!(
        matches!(
            changes.as_slice(),
            [Change::MessageBody { .. }, Change::MessageAdd { client_id, .. }] if &**client_id == "sub"
        ),
        "{changes:?}"
    );
    puback_7_waits_for_batch_2(&mut w);
}

#[test]
fn a_recipient_that_disconnects_gets_its_held_writes_recorded_at_once() {
    let mut w = world(false);
    w.send(2, &publish("t", b"v", QoS::AtLeastOnce, false, 7));
    delivered_id(&mut w);
    w.broker.handle_connection_closed(1, None, w.now);
    let changes = w.broker.take_changes();
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, Change::MessageAdd { client_id, .. } if &**client_id == "sub")),
        "{changes:?}"
    );
    w.broker.seal_acks(2, 2);
    assert_eq!(w.take(2), vec![Out::Puback(7)]);
}

#[test]
fn a_message_for_an_offline_session_is_recorded_at_once() {
    let mut w = world(true);
    w.send(2, &publish("t", b"v", QoS::AtLeastOnce, false, 7));
    let changes = w.broker.take_changes();
    assert_eq!(message_writes(&changes), 1, "{changes:?}");
    puback_7_waits_for_batch_2(&mut w);
}

#[test]
fn a_retained_message_waits_for_its_commit_even_when_acknowledged() {
    let mut w = world(false);
    w.send(2, &publish("t", b"v", QoS::AtLeastOnce, true, 7));
    let id = delivered_id(&mut w);
    w.send(1, &ack(Packet::Puback, id));
    w.broker.take_changes();
    puback_7_waits_for_batch_2(&mut w);
}

#[test]
fn pubacks_leave_in_the_order_of_their_publishes_mqtt_4_6_0_2() {
    let mut w = world(false);
    w.connect(3, "away", false);
    w.send(3, &subscribe_bytes(1, &[("u", QoS::AtLeastOnce)]));
    w.take(3);
    w.broker.handle_connection_closed(3, None, w.now);
    w.broker.take_changes();
    // The first waits for a commit (its recipient is offline), the second completes at once.
    w.send(2, &publish("u", b"1", QoS::AtLeastOnce, false, 1));
    w.send(2, &publish("t", b"2", QoS::AtLeastOnce, false, 2));
    let id = delivered_id(&mut w);
    w.send(1, &ack(Packet::Puback, id));
    w.broker.take_changes();
    w.broker.seal_acks(2, 1);
    assert_eq!(w.take(2), vec![], "the second waits behind the first");
    w.broker.seal_acks(2, 2);
    assert_eq!(w.take(2), vec![Out::Puback(1), Out::Puback(2)]);
}

#[test]
fn a_recipient_that_keeps_acknowledging_keeps_its_writes_held_up_to_max_hold() {
    let mut w = world(false);
    // Twenty messages fill the window; the rest queue behind it, held as well.
    for i in 1..=300u16 {
        w.send(2, &publish("t", b"v", QoS::AtLeastOnce, false, i));
    }
    let mut ids: Vec<u16> = publishes_v311(&w.take(1));
    assert_eq!(ids.len(), 20);
    assert!(w.broker.take_changes().is_empty());
    // One acknowledgement per HOLD: the writes stay held.
    let start = w.now;
    let mut acked = 0;
    while w.now + HOLD < start + MAX_HOLD && !ids.is_empty() {
        let id = ids.remove(0);
        w.send(1, &ack(Packet::Puback, id));
        acked += 1;
        ids.extend(publishes_v311(&w.take(1)));
        w.drive_until(w.now + HOLD - Duration::from_millis(1));
        let changes = w.broker.take_changes();
        assert_eq!(
            message_writes(&changes),
            0,
            "after {acked} acks: {changes:?}"
        );
    }
    w.broker.seal_acks(1, 1);
    assert_eq!(
        w.take(2).len(),
        acked,
        "a PUBACK for each completed message"
    );
    // At MAX_HOLD the oldest are written even though the recipient keeps going.
    w.send(1, &ack(Packet::Puback, ids.remove(0)));
    w.drive_until(start + MAX_HOLD + HOLD);
    let changes = w.broker.take_changes();
    assert!(message_writes(&changes) > 0, "{changes:?}");
}

fn publishes_v311(out: &[Out]) -> Vec<u16> {
    out.iter()
        .filter_map(|o| match o {
            Out::Publish { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

#[test]
fn held_writes_are_recorded_at_shutdown() {
    let mut w = world(false);
    w.send(2, &publish("t", b"v", QoS::AtLeastOnce, false, 7));
    delivered_id(&mut w);
    w.broker.handle_shutdown(w.now, None);
    let changes = w.broker.take_changes();
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, Change::MessageAdd { client_id, .. } if &**client_id == "sub")),
        "{changes:?}"
    );
}

#[test]
fn a_stalled_recipient_has_only_the_writes_held_for_a_whole_hold_recorded() {
    let mut w = world(false);
    let t0 = w.now;
    w.send(2, &publish("t", b"1", QoS::AtLeastOnce, false, 1));
    w.send(2, &publish("t", b"2", QoS::AtLeastOnce, false, 2));
    let ids = publishes_v311(&w.take(1));
    w.send(1, &ack(Packet::Puback, ids[0]));
    // The check at HOLD sees an acknowledgement: nothing is recorded.
    w.drive_until(t0 + HOLD);
    assert_eq!(message_writes(&w.broker.take_changes()), 0);
    // A third message just before the next check, which finds the recipient stalled.
    w.drive_until(t0 + HOLD * 2 - Duration::from_millis(1));
    w.send(2, &publish("t", b"3", QoS::AtLeastOnce, false, 3));
    w.drive_until(t0 + HOLD * 2);
    let changes = w.broker.take_changes();
    let body = |id: u64| {
        changes.iter().find_map(|c| match c {
            Change::MessageBody { id: i, message } if *i == id => Some(message.payload.as_slice()),
            _ => None,
        })
    };
    let added: Vec<&[u8]> = changes
        .iter()
        .filter_map(|c| match c {
            Change::MessageAdd { message, .. } => body(message.body),
            _ => None,
        })
        .collect();
    assert_eq!(
        added,
        [b"2"],
        "the third is held a whole HOLD first: {changes:?}"
    );
    w.drive_until(t0 + HOLD * 3);
    assert_eq!(message_writes(&w.broker.take_changes()), 1);
}
