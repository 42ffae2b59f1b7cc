//! Retained replay (`retain.rs`): a new subscription's retained messages are streamed as the
//! connection has room, so every one arrives, and the rest of a replay interrupted by a
//! disconnect stays owed to a persistent session.

use super::*;
use crate::store::{Change, MessageState};

/// Publishes `n` retained messages of `size` bytes on `t/<i>` from connection 9.
fn retain_many(w: &mut World, n: usize, size: usize, qos: QoS) {
    w.connect(9, "filler", true);
    let payload = vec![b'x'; size];
    for i in 0..n {
        let id = if qos == QoS::AtMostOnce {
            0
        } else {
            u16::try_from(i % 60_000 + 1).unwrap_or(1)
        };
        w.send(9, &publish(&format!("t/{i}"), &payload, qos, true, id));
    }
    w.take(9);
}

/// Drains connection `id` as a socket would, telling the broker what was written; returns the
/// packets and the largest output seen in one go.
fn drain(w: &mut World, id: ConnId) -> (Vec<Out>, usize) {
    let Some(buf) = w.broker.poll_transmit(id) else {
        return (Vec::new(), 0);
    };
    let bytes = std::mem::take(buf);
    w.broker.handle_written(id, bytes.len());
    (decode_all(&bytes), bytes.len())
}

#[test]
fn a_qos0_replay_larger_than_the_output_bound_arrives_whole_and_in_topic_order() {
    let mut w = World::new(Settings::default());
    // 3000 messages of 1 KiB: three times the output bound.
    retain_many(&mut w, 3000, 1024, QoS::AtMostOnce);
    w.connect(1, "s", true);
    w.send(1, &subscribe_bytes(1, &[("t/#", QoS::AtMostOnce)]));
    // Streamed: nothing waits in the session's queue (whose bytes count to memory_limit).
    assert_eq!(w.broker.held_bytes.get(), 0);
    let mut topics = Vec::new();
    let mut largest = 0;
    loop {
        let (out, n) = drain(&mut w, 1);
        if out.is_empty() {
            break;
        }
        largest = largest.max(n);
        topics.extend(out.into_iter().filter_map(|o| match o {
            Out::Publish { topic, .. } => Some(topic),
            _ => None,
        }));
    }
    assert_eq!(topics.len(), 3000, "every retained message");
    let mut sorted = topics.clone();
    sorted.sort();
    assert_eq!(topics, sorted, "in topic order");
    assert!(
        largest <= OUTPUT_HIGH_WATER + 2048,
        "the output stays within its bound: {largest}"
    );
    assert_eq!(w.broker.stats.publish_dropped, 0);
}

/// A socket that takes 512 bytes at a time: a replay of 3 MB goes through it whole, in
/// order and once, the output never holding much more than its bound, and nothing of it
/// waiting in the session's queue.
#[test]
fn a_replay_through_a_tiny_socket_window_arrives_whole() {
    let mut w = World::new(Settings::default());
    retain_many(&mut w, 3000, 1000, QoS::AtMostOnce);
    w.connect(1, "s", true);
    w.send(1, &subscribe_bytes(1, &[("t/#", QoS::AtMostOnce)]));
    assert_eq!(w.broker.held_bytes.get(), 0);
    let mut stream = Vec::new();
    let mut largest = 0;
    while let Some(out) = w.broker.poll_transmit(1) {
        if out.is_empty() {
            break;
        }
        largest = largest.max(out.len());
        let n = out.len().min(512);
        stream.extend(out.drain(..n));
        w.broker.handle_written(1, n);
    }
    let topics: Vec<String> = decode_all(&stream)
        .into_iter()
        .filter_map(|o| match o {
            Out::Publish { topic, .. } => Some(topic),
            _ => None,
        })
        .collect();
    let mut expected: Vec<String> = (0..3000).map(|i| format!("t/{i}")).collect();
    expected.sort();
    assert_eq!(
        topics, expected,
        "every retained message, once, in topic order"
    );
    assert!(
        largest <= OUTPUT_HIGH_WATER + 2048,
        "output within its bound: {largest}"
    );
    assert_eq!(w.broker.stats.publish_dropped, 0);
}

#[test]
fn a_qos1_replay_respects_the_window_and_continues_with_each_acknowledgement() {
    let mut w = World::new(Settings::default());
    retain_many(&mut w, 100, 10, QoS::AtLeastOnce);
    w.connect(1, "s", true);
    w.send(1, &subscribe_bytes(1, &[("t/#", QoS::AtLeastOnce)]));
    let mut got = 0;
    let mut out = w.take(1);
    assert_eq!(out.remove(0), Out::Suback(1, vec![1]));
    while !out.is_empty() {
        assert!(
            out.len() <= 20,
            "within the in-flight window: {}",
            out.len()
        );
        for o in out {
            let Out::Publish { id, .. } = o else {
                panic!("unexpected {o:?}")
            };
            got += 1;
            w.send(1, &ack(Packet::Puback, id));
        }
        out = w.take(1);
    }
    assert_eq!(got, 100);
}

#[test]
fn a_persistent_session_that_leaves_mid_replay_is_owed_the_rest_across_a_restart() {
    let dir = StoreDir::new("replay-owed");
    let mut w = World::new(Settings::default());
    w.broker.enable_persistence(w.now, unix_now());
    retain_many(&mut w, 50, 10, QoS::AtLeastOnce);
    w.connect(1, "s", false);
    w.send(1, &subscribe_bytes(1, &[("t/#", QoS::AtLeastOnce)]));
    let sent = w.take(1).len() - 1;
    assert_eq!(sent, 20, "a window's worth in flight");
    w.broker.handle_connection_closed(1, None, w.now);
    let changes = w.broker.take_changes();
    let queued = changes
        .iter()
        .filter(|c| {
            matches!(c, Change::MessageAdd { client_id, message }
                if &**client_id == "s" && message.state == MessageState::Queued)
        })
        .count();
    assert_eq!(queued, 30, "the rest of the replay is queued and stored");
    let mut w = restarted(dir.commit_and_reopen(changes));
    let mut topics = std::collections::BTreeSet::new();
    let mut out = resume_v311(&mut w, 1, "s");
    while !out.is_empty() {
        for o in out {
            if let Out::Publish { id, topic, .. } = o {
                topics.insert(topic);
                w.send(1, &ack(Packet::Puback, id));
            }
        }
        out = w.take(1);
    }
    assert_eq!(
        topics.len(),
        50,
        "every retained message, after the restart"
    );
}

#[test]
fn a_session_taken_over_mid_replay_continues_on_the_new_connection() {
    let mut w = World::new(Settings::default());
    retain_many(&mut w, 50, 10, QoS::AtLeastOnce);
    w.connect(1, "s", false);
    w.send(1, &subscribe_bytes(1, &[("t/#", QoS::AtLeastOnce)]));
    assert_eq!(w.take(1).len(), 21);
    // The same client id again: the first connection is closed and the session goes on.
    w.open(2);
    w.send(2, &connect_bytes("s", false, 60, None));
    w.closed(1);
    let mut topics = std::collections::BTreeSet::new();
    let mut out = w.take(2);
    assert_eq!(out.remove(0), Out::Connack(true, 0));
    while !out.is_empty() {
        for o in out {
            if let Out::Publish { id, topic, .. } = o {
                topics.insert(topic);
                w.send(2, &ack(Packet::Puback, id));
            }
        }
        out = w.take(2);
    }
    assert_eq!(topics.len(), 50);
}

/// Cleared while its replay waits: the subscriber gets the clearing live (an empty message),
/// never the old value after it.
#[test]
fn a_cleared_topic_is_not_replayed() {
    let mut w = World::new(Settings {
        max_inflight_messages: 1,
        ..Settings::default()
    });
    retain_many(&mut w, 3, 10, QoS::AtLeastOnce);
    w.connect(1, "s", true);
    w.send(1, &subscribe_bytes(1, &[("t/#", QoS::AtLeastOnce)]));
    w.send(9, &publish("t/2", b"", QoS::AtMostOnce, true, 0));
    let mut topics = Vec::new();
    let mut out = w.take(1);
    while !out.is_empty() {
        for o in out {
            if let Out::Publish {
                id, topic, payload, ..
            } = o
            {
                topics.push(format!("{topic}={}", payload.len()));
                if id != 0 {
                    w.send(1, &ack(Packet::Puback, id));
                }
            }
        }
        out = w.take(1);
    }
    assert_eq!(topics, ["t/0=10", "t/2=0", "t/1=10"]);
}

/// v5:[MQTT-3.3.4-7]: a replay at QoS 2 keeps within the client's Receive Maximum, and goes on
/// as each flow completes.
#[test]
fn a_qos2_replay_keeps_within_a_v5_receive_maximum() {
    let mut w = World::new(Settings::default());
    retain_many(&mut w, 10, 10, QoS::ExactlyOnce);
    connect5(
        &mut w,
        1,
        "sub",
        PropertySet {
            receive_maximum: Some(3),
            ..PropertySet::default()
        }
        .into(),
    );
    let qos2 = SubscribeOptions::qos(QoS::ExactlyOnce);
    w.send(1, &subscribe_v5(1, "t/#", qos2, None));
    let mut got = 0;
    let mut in_flight = 0;
    let mut out = take_v5(&mut w, 1);
    while !out.is_empty() {
        for p in out {
            match p {
                Packet::Publish(p) => {
                    got += 1;
                    in_flight += 1;
                    assert!(in_flight <= 3, "within Receive Maximum: {in_flight}");
                    w.send(1, &ack(Packet::Pubrec, p.packet_id));
                }
                Packet::Pubrel(a) => {
                    in_flight -= 1;
                    w.send(1, &ack(Packet::Pubcomp, a.packet_id));
                }
                _ => {}
            }
        }
        out = take_v5(&mut w, 1);
    }
    assert_eq!(got, 10);
}

/// A retained message comes back as it was published, however compactly it is kept: its QoS,
/// its payload byte for byte, its topic at any length, and its own MQTT 5 properties only
/// (v5:[MQTT-3.3.2-17], [MQTT-3.3.2-20]), though the messages one client retains one after
/// the other share what they have in common. At rest it takes 24 bytes besides its topic and
/// payload.
#[test]
fn a_retained_message_is_replayed_as_it_was_published() {
    assert_eq!(std::mem::size_of::<crate::broker::retain::Kept>(), 24);
    let mut w = World::new(Settings::default());
    connect5(&mut w, 9, "p", Properties::default());
    let long = "l/".repeat(5_000) + "end";
    let typed: Properties = PropertySet {
        content_type: Some("text/plain".into()),
        user_properties: vec![("k".into(), "v".into())],
        ..PropertySet::default()
    }
    .into();
    let sent = [
        (
            "a",
            vec![0u8, 255, 10],
            QoS::AtLeastOnce,
            Properties::default(),
        ),
        ("b", b"typed".to_vec(), QoS::ExactlyOnce, typed.clone()),
        ("c", vec![7; 300], QoS::AtMostOnce, Properties::default()),
        (
            long.as_str(),
            b"far".to_vec(),
            QoS::AtLeastOnce,
            Properties::default(),
        ),
    ];
    for (i, (topic, payload, qos, props)) in sent.iter().enumerate() {
        let id = if *qos == QoS::AtMostOnce {
            0
        } else {
            i as u16 + 1
        };
        let mut bytes = publish_v5(topic, payload, *qos, id, props.clone());
        bytes[0] |= 1;
        w.send(9, &bytes);
        if *qos == QoS::ExactlyOnce {
            w.send(9, &ack(Packet::Pubrel, id));
        }
    }
    connect5(&mut w, 1, "s", Properties::default());
    w.send(
        1,
        &subscribe_v5(1, "#", SubscribeOptions::qos(QoS::ExactlyOnce), None),
    );
    let got: Vec<_> = take_v5(&mut w, 1)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((
                p.topic.to_string(),
                p.payload.to_vec(),
                p.qos,
                p.retain,
                p.properties,
            )),
            _ => None,
        })
        .collect();
    let expected: Vec<_> = sent
        .into_iter()
        .map(|(t, payload, qos, props)| (t.to_string(), payload, qos, true, props))
        .collect();
    assert_eq!(got, expected);
}
