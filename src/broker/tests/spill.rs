//! A stored session's long queue: beyond its head in memory (`QUEUE_HEAD_MESSAGES`) it stays
//! in the store only and is read back a page at a time, in order, by the store's writer; the
//! queue limits count all of it; a restart loads only the head.

use super::*;
use crate::store::{Store, QUEUE_HEAD_MESSAGES};

/// A broker with a live store in `dir`, whose writer answers the page requests.
struct Stored {
    w: World,
    store: Store,
}

impl Stored {
    /// Opens the store in `dir` and restores a broker with unlimited queues from it.
    fn open(dir: &StoreDir, settings: Settings) -> Stored {
        let (store, snapshot) = Store::open(&dir.0, None, Duration::ZERO, Box::new(|| {}))
            .unwrap_or_else(|e| panic!("store opens: {e}"));
        let mut w = World::new(settings);
        w.broker.restore(snapshot, w.now, unix_now());
        Stored { w, store }
    }

    /// Ends the turn, then feeds the broker every page it asked for (each may ask for more),
    /// as the server does when the writer wakes it.
    fn turn(&mut self) {
        self.w.broker.end_turn(self.w.now, Some(&mut self.store));
        let start = Instant::now();
        while self.w.broker.pages_asked() > 0 {
            assert!(start.elapsed() < Duration::from_secs(20), "no page came");
            match self.store.take_page() {
                Some(page) => {
                    self.w.broker.handle_stored_page(page, self.w.now);
                    self.w.broker.end_turn(self.w.now, Some(&mut self.store));
                }
                None => std::thread::sleep(Duration::from_micros(200)),
            }
        }
    }

    /// The session of `client`: (deliveries queued in memory, spilled, counted in all).
    fn queue(&self, client: &str) -> (usize, usize, usize) {
        let b = &self.w.broker;
        let s = b.session_of(client).and_then(|sid| b.session(sid));
        s.map_or((0, 0, 0), |s| {
            (s.queue.len(), s.queue.spilled(), s.queue.count())
        })
    }

    /// Publishes `n` QoS 1 messages "00000", "00001"... to `q` from client `pub` on
    /// connection 2, a turn every 100.
    fn publish(&mut self, from: usize, n: usize) {
        for i in from..from + n {
            let payload = format!("{i:05}");
            let id = (i % 60000 + 1) as u16;
            self.w.send(
                2,
                &publish("q", payload.as_bytes(), QoS::AtLeastOnce, false, id),
            );
            if i % 100 == 99 {
                self.turn();
                self.w.take(2);
            }
        }
        self.turn();
        self.w.take(2);
    }

    /// Resumes `sub` on connection `id` and acknowledges everything it gets until nothing
    /// more comes; the payloads, in order. The head in memory never outgrows its bound.
    fn drain(&mut self, id: ConnId) -> Vec<String> {
        self.w.open(id);
        self.w.send(id, &connect_bytes("sub", false, 60, None));
        self.ack_all(id)
    }

    /// Acknowledges everything connection `id` gets until nothing more comes; the payloads.
    fn ack_all(&mut self, id: ConnId) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            self.turn();
            assert!(self.queue("sub").0 <= QUEUE_HEAD_MESSAGES);
            let out = self.w.take(id);
            let mut acked = false;
            for o in out {
                if let Out::Publish {
                    id: pid, payload, ..
                } = o
                {
                    got.push(String::from_utf8(payload).unwrap_or_default());
                    self.w.send(id, &ack(Packet::Puback, pid));
                    acked = true;
                }
            }
            if !acked {
                return got;
            }
        }
    }

    fn close(self) {
        drop(self.w);
        self.store
            .close()
            .unwrap_or_else(|e| panic!("store closes: {e}"));
    }
}

fn unlimited() -> Settings {
    Settings {
        max_queued_messages: 0,
        ..Settings::default()
    }
}

/// An offline persistent subscriber `sub` of `q` at QoS 1, and a publisher on connection 2.
fn offline_subscriber(s: &mut Stored) {
    s.w.connect(1, "sub", false);
    s.w.send(1, &subscribe_bytes(1, &[("q", QoS::AtLeastOnce)]));
    s.w.take(1);
    s.w.broker.handle_connection_closed(1, None, s.w.now);
    s.w.connect(2, "pub", true);
}

/// Asserts that `got` is "00000", "00001"... up to `n`, each once, saying where it is not.
fn assert_in_order(got: &[String], n: usize) {
    let wrong = got
        .iter()
        .enumerate()
        .find(|(i, p)| **p != format!("{i:05}"));
    assert_eq!(wrong, None, "out of order or repeated");
    assert_eq!(got.len(), n, "every message, each once");
}

#[test]
fn a_long_queue_spills_to_the_store_and_comes_back_in_order() {
    let dir = StoreDir::new("spill-order");
    let mut s = Stored::open(&dir, unlimited());
    offline_subscriber(&mut s);
    let n = QUEUE_HEAD_MESSAGES * 2 + 600;
    s.publish(0, n);
    assert_eq!(
        s.queue("sub"),
        (QUEUE_HEAD_MESSAGES, n - QUEUE_HEAD_MESSAGES, n)
    );
    assert_in_order(&s.drain(3), n);
    assert_eq!(s.queue("sub"), (0, 0, 0));
    s.close();
    // Everything was acknowledged: nothing is left in the store.
    let s = Stored::open(&dir, unlimited());
    assert_eq!(s.queue("sub"), (0, 0, 0));
}

#[test]
fn new_messages_wait_behind_the_spilled_ones_while_the_queue_drains() {
    let dir = StoreDir::new("spill-live");
    let mut s = Stored::open(&dir, unlimited());
    offline_subscriber(&mut s);
    let n = QUEUE_HEAD_MESSAGES + 300;
    s.publish(0, n);
    // The subscriber comes back and takes a first window; more arrive meanwhile.
    s.w.open(3);
    s.w.send(3, &connect_bytes("sub", false, 60, None));
    s.turn();
    let first: Vec<Out> = s.w.take(3);
    s.publish(n, 500);
    let mut got = Vec::new();
    for o in first {
        if let Out::Publish { id, payload, .. } = o {
            got.push(String::from_utf8(payload).unwrap_or_default());
            s.w.send(3, &ack(Packet::Puback, id));
        }
    }
    // The rest, resuming on the same connection.
    loop {
        s.turn();
        let mut acked = false;
        for o in s.w.take(3) {
            if let Out::Publish { id, payload, .. } = o {
                got.push(String::from_utf8(payload).unwrap_or_default());
                s.w.send(3, &ack(Packet::Puback, id));
                acked = true;
            }
        }
        if !acked {
            break;
        }
    }
    assert_in_order(&got, n + 500);
}

#[test]
fn a_restart_loads_the_head_and_reads_the_rest_back_in_order() {
    let dir = StoreDir::new("spill-restart");
    let mut s = Stored::open(&dir, unlimited());
    offline_subscriber(&mut s);
    let n = QUEUE_HEAD_MESSAGES * 3;
    s.publish(0, n);
    s.close();
    let mut s = Stored::open(&dir, unlimited());
    assert_eq!(
        s.queue("sub"),
        (QUEUE_HEAD_MESSAGES, n - QUEUE_HEAD_MESSAGES, n)
    );
    // New messages go behind the stored ones, with sequence numbers after theirs.
    s.w.connect(2, "pub", true);
    s.publish(n, 100);
    assert_in_order(&s.drain(3), n + 100);
}

#[test]
fn queue_limits_count_the_spilled_part() {
    let dir = StoreDir::new("spill-limits");
    let limit = QUEUE_HEAD_MESSAGES + 500;
    let settings = Settings {
        max_queued_messages: limit,
        ..Settings::default()
    };
    let mut s = Stored::open(&dir, settings.clone());
    offline_subscriber(&mut s);
    s.publish(0, limit + 200);
    assert_eq!(s.queue("sub"), (QUEUE_HEAD_MESSAGES, 500, limit));
    s.close();
    let mut s = Stored::open(&dir, settings);
    assert_eq!(s.queue("sub"), (QUEUE_HEAD_MESSAGES, 500, limit));
    s.w.connect(2, "pub", true);
    s.publish(limit + 200, 10);
    assert_eq!(s.queue("sub").2, limit, "still full after a restart");
    assert_in_order(&s.drain(3), limit);
}

#[test]
fn a_qos0_message_cannot_wait_behind_spilled_ones() {
    let dir = StoreDir::new("spill-qos0");
    let settings = Settings {
        queue_qos0_messages: true,
        ..unlimited()
    };
    let mut s = Stored::open(&dir, settings);
    offline_subscriber(&mut s);
    s.publish(0, QUEUE_HEAD_MESSAGES + 1);
    s.w.send(2, &publish("q", b"qos0", QoS::AtMostOnce, false, 0));
    s.turn();
    let n = QUEUE_HEAD_MESSAGES + 1;
    assert_eq!(s.queue("sub"), (QUEUE_HEAD_MESSAGES, 1, n));
    assert_in_order(&s.drain(3), n);
}

#[test]
fn a_connected_subscriber_that_falls_behind_gets_everything_in_order() {
    let dir = StoreDir::new("spill-connected");
    let mut s = Stored::open(&dir, unlimited());
    s.w.connect(1, "sub", false);
    s.w.send(1, &subscribe_bytes(1, &[("q", QoS::AtLeastOnce)]));
    s.w.take(1);
    s.w.connect(2, "pub", true);
    // The subscriber reads nothing meanwhile: its window fills, then its queue.
    let n = QUEUE_HEAD_MESSAGES * 2;
    s.publish(0, n);
    let (memory, spilled, _) = s.queue("sub");
    assert_eq!(memory, QUEUE_HEAD_MESSAGES);
    assert!(spilled > 0);
    // The deliveries in the store only were written, not held for the connected subscriber:
    // the pages find them, with no time passing.
    assert_in_order(&s.ack_all(1), n);
}
