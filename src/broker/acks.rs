//! Acknowledgements of QoS 1/2 messages, both directions, and when they may leave.
//!
//! Inbound (a client publishes): PUBACK for QoS 1; PUBREC, then PUBCOMP once the client's
//! PUBREL arrives, for QoS 2, whose packet id is remembered in between so that a resent
//! PUBLISH is acknowledged again but not delivered twice. Outbound (the broker delivers):
//! the subscriber's PUBACK, or PUBREC and then PUBCOMP, frees the message's in-flight slot and
//! lets the session's queue move; an acknowledgement of the wrong kind for the message in
//! flight is a protocol error.
//!
//! With persistence on, no acknowledgement leaves when it is written: a PUBACK or PUBREC only
//! once its message is safe, a PUBREL only once the store knows the outgoing flow reached it,
//! a PUBCOMP only once the store has forgotten the inbound packet id, so that a crash never
//! turns a completed QoS 2 flow into a second delivery (docs/delivery.md). [`Broker::send_ack`]
//! queues it for its connection ([`HeldAcks`]) with what it waits for: the store batch that
//! holds the turn's changes, which [`Broker::seal_acks`] learns at the end of the turn, and,
//! for a QoS 1 PUBACK, the message's held writes (`hold.rs`), each settled by the recipient's
//! acknowledgement or by being recorded after all. An acknowledgement leaves once all of that
//! is done and every earlier one to the same connection has left: a client gets its
//! acknowledgements in the order of its packets (v311:[MQTT-4.6.0-2]), unless its connection
//! has gone in the meantime.

use super::conn::ConnState;
use super::hold::AckKey;
use super::router::FnvHasher;
use super::session::OutState;
use super::{Broker, ConnId, SessionId, Violation};
use crate::codec::{reason, Ack, Packet, ProtocolVersion, Publish, QoS};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;

/// Acknowledgements written and not sent yet, per connection, in the order written.
#[derive(Default)]
pub(super) struct HeldAcks {
    conns: HashMap<ConnId, AckQueue, BuildHasherDefault<FnvHasher>>,
    /// Acknowledgements that wait for the batch of this turn's changes.
    unsealed: Vec<AckKey>,
    /// Where acknowledgements are encoded.
    scratch: Vec<u8>,
    /// Emptied queues kept for the next connection to hold an acknowledgement: under a
    /// steady load a publisher's queue empties and fills again every turn, and allocating and
    /// freeing it each time was a tenth of the broker's work with persistence on.
    spare: Vec<VecDeque<HeldAck>>,
    /// The acknowledgements [`HeldAcks::take_ready`] found ready, reused every turn.
    ready: Vec<(ConnId, u32, AckBytes)>,
    /// The last batch known to be committed (learnt at the end of each turn).
    committed: u64,
    /// Connections whose first acknowledgement had its last held write forgotten: it may
    /// leave now, rather than at the end of the turn.
    woken: Vec<ConnId>,
}

/// Emptied queues kept in [`HeldAcks::spare`] (about 130 KB at most), each with room for at most
/// [`SPARE_QUEUE_ROOM`] acknowledgements.
const SPARE_QUEUES: usize = 64;
const SPARE_QUEUE_ROOM: usize = 64;

struct AckQueue {
    serial: u32,
    /// How many acknowledgements left the front so far: the number of the front one.
    sent: u64,
    queue: VecDeque<HeldAck>,
}

struct HeldAck {
    bytes: AckBytes,
    /// The store batch it waits for (0: none).
    batch: u64,
    /// False while the batch it waits for is still being gathered (this turn's).
    sealed: bool,
    /// Held writes it waits for.
    waiting: u32,
}

/// An encoded acknowledgement: almost always 4 or 5 bytes, kept inline (one allocation per
/// message less on the busiest path); one with properties is kept on the heap.
enum AckBytes {
    Inline { len: u8, buf: [u8; 8] },
    Heap(Vec<u8>),
}

impl AckBytes {
    fn new(bytes: &[u8]) -> AckBytes {
        let mut buf = [0; 8];
        match buf.get_mut(..bytes.len()) {
            Some(head) => {
                head.copy_from_slice(bytes);
                AckBytes::Inline {
                    len: bytes.len() as u8,
                    buf,
                }
            }
            None => AckBytes::Heap(bytes.to_vec()),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            AckBytes::Inline { len, buf } => &buf[..usize::from(*len)],
            AckBytes::Heap(v) => v,
        }
    }
}

impl HeldAcks {
    /// `packet` encoded for a connection of `version`.
    fn encode(&mut self, packet: &Packet<'_>, version: ProtocolVersion) -> AckBytes {
        self.scratch.clear();
        packet.encode(version, &mut self.scratch);
        AckBytes::new(&self.scratch)
    }

    /// Queues an acknowledgement to connection `id` that waits for `waiting` held writes and,
    /// if `this_turn`, for the batch of this turn's changes.
    fn push(
        &mut self,
        id: ConnId,
        serial: u32,
        bytes: AckBytes,
        waiting: u32,
        this_turn: bool,
    ) -> AckKey {
        let spare = &mut self.spare;
        let q = self.conns.entry(id).or_insert_with(|| AckQueue {
            serial,
            sent: 0,
            queue: spare.pop().unwrap_or_default(),
        });
        if q.serial != serial {
            // An earlier connection in the same slot: its acknowledgements have nowhere to go.
            q.serial = serial;
            q.sent = 0;
            q.queue.clear();
        }
        let key = (id, serial, q.sent + q.queue.len() as u64);
        q.queue.push_back(HeldAck {
            bytes,
            batch: 0,
            sealed: !this_turn,
            waiting,
        });
        if this_turn {
            self.unsealed.push(key);
        }
        key
    }

    /// One held write of acknowledgement `key` is settled: forgotten, or `recorded` in this
    /// turn's changes, whose batch it then waits for.
    pub(super) fn resolve(&mut self, key: AckKey, recorded: bool) {
        let (id, serial, n) = key;
        let Some(q) = self.conns.get_mut(&id).filter(|q| q.serial == serial) else {
            return;
        };
        let Some(a) = n
            .checked_sub(q.sent)
            .and_then(|i| q.queue.get_mut(usize::try_from(i).ok()?))
        else {
            return;
        };
        a.waiting = a.waiting.saturating_sub(1);
        if recorded {
            a.sealed = false;
            self.unsealed.push(key);
        } else if a.waiting == 0 && n == q.sent {
            self.woken.push(id);
        }
    }

    /// This turn's changes are batch `batch`.
    fn seal(&mut self, batch: u64) {
        for (id, serial, n) in self.unsealed.drain(..) {
            let Some(q) = self.conns.get_mut(&id).filter(|q| q.serial == serial) else {
                continue;
            };
            let i = n.checked_sub(q.sent).and_then(|i| usize::try_from(i).ok());
            if let Some(a) = i.and_then(|i| q.queue.get_mut(i)) {
                a.batch = a.batch.max(batch);
                a.sealed = true;
            }
        }
    }

    /// Moves every acknowledgement that may leave (batch up to `committed` committed, no held
    /// write left, none before it waiting) to [`HeldAcks::ready`].
    fn take_ready(&mut self, committed: u64) {
        self.committed = committed;
        self.woken.clear();
        let HeldAcks {
            conns,
            spare,
            ready,
            ..
        } = self;
        conns.retain(|&id, q| !q.take_ready(id, committed, ready, spare));
    }

    /// Moves the acknowledgements of the connections in [`HeldAcks::woken`] that may leave to
    /// [`HeldAcks::ready`].
    fn take_woken(&mut self) {
        while let Some(id) = self.woken.pop() {
            let Some(q) = self.conns.get_mut(&id) else {
                continue;
            };
            if q.take_ready(id, self.committed, &mut self.ready, &mut self.spare) {
                self.conns.remove(&id);
            }
        }
    }
}

impl AckQueue {
    /// Moves the acknowledgements at the front that may leave to `ready`; true if that
    /// emptied the queue (whose room then goes to `spare`).
    fn take_ready(
        &mut self,
        id: ConnId,
        committed: u64,
        ready: &mut Vec<(ConnId, u32, AckBytes)>,
        spare: &mut Vec<VecDeque<HeldAck>>,
    ) -> bool {
        while self
            .queue
            .front()
            .is_some_and(|a| a.sealed && a.waiting == 0 && a.batch <= committed)
        {
            if let Some(a) = self.queue.pop_front() {
                self.sent += 1;
                ready.push((id, self.serial, a.bytes));
            }
        }
        if !self.queue.is_empty() {
            return false;
        }
        if spare.len() < SPARE_QUEUES && self.queue.capacity() <= SPARE_QUEUE_ROOM {
            spare.push(std::mem::take(&mut self.queue));
        }
        true
    }
}

impl Broker {
    /// Sends PUBACK or PUBREC (recording the QoS 2 id) for an accepted PUBLISH.
    pub(super) fn ack_publish(&mut self, id: ConnId, sid: SessionId, p: &Publish<'_>, code: u8) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                log::debug!(
                    "Sending PUBACK to {} (m{}, rc{})",
                    self.conn_name(id),
                    p.packet_id,
                    code
                );
                self.send_ack(id, &Packet::Puback(self.ack_for(id, p.packet_id, code)));
            }
            QoS::ExactlyOnce => {
                if code < 0x80 {
                    if let Some(s) = self.session_mut(sid) {
                        s.add_incoming_qos2(p.packet_id);
                    }
                    self.persist_qos2(sid, p.packet_id, true);
                }
                self.send_pubrec(id, p.packet_id, code);
            }
        }
    }

    pub(super) fn send_pubrec(&mut self, id: ConnId, packet_id: u16, code: u8) {
        log::debug!(
            "Sending PUBREC to {} (m{}, rc{})",
            self.conn_name(id),
            packet_id,
            code
        );
        self.send_ack(id, &Packet::Pubrec(self.ack_for(id, packet_id, code)));
    }

    /// An acknowledgement carrying `code` (3.x acknowledgements have no reason code).
    fn ack_for(&self, id: ConnId, packet_id: u16, code: u8) -> Ack {
        let v5 = self.conn(id).is_some_and(|c| c.version.is_v5());
        let mut a = Ack::new(packet_id);
        if v5 {
            a.reason = code;
        }
        a
    }

    /// Sends an acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP) now, or, with persistence
    /// on, holds it for the commit of the turn's changes, which hold what it promises. The
    /// PUBACK of a QoS 1 message whose writes are held (`hold.rs`) waits for those instead:
    /// it leaves when they are all forgotten or committed.
    pub(super) fn send_ack(&mut self, id: ConnId, packet: &Packet<'_>) {
        let Some(p) = self.persist.as_deref_mut() else {
            return self.send(id, packet);
        };
        let routed = match packet {
            Packet::Puback(_) => p.holds.end(p.changes_len()),
            _ => None,
        };
        let Some(c) = self.conns.get(id).and_then(Option::as_ref) else {
            return;
        };
        let bytes = p.acks.encode(packet, c.version);
        let key = match &routed {
            Some(r) => {
                let waiting = u32::try_from(r.held).unwrap_or(u32::MAX);
                p.acks.push(id, c.serial, bytes, waiting, r.recorded)
            }
            None => p.acks.push(id, c.serial, bytes, 0, true),
        };
        if routed.is_some() {
            p.holds.bind(key);
        }
        self.stats.messages_sent += 1;
    }

    /// Tells the acknowledgements that wait for this turn's changes that those are in batch
    /// `batch` (the last batch submitted), then sends every acknowledgement whose batch is
    /// committed (every batch up to `committed` is) and whose held writes are all settled.
    pub(super) fn seal_acks(&mut self, batch: u64, committed: u64) {
        let Some(p) = self.persist.as_deref_mut() else {
            return;
        };
        p.acks.seal(batch);
        p.acks.take_ready(committed);
        self.send_ready_acks();
    }

    /// Sends the acknowledgements whose last held write was just forgotten, if nothing else
    /// holds them: a publisher's PUBACK leaves in the same turn as the subscriber's
    /// acknowledgement that completed the message.
    pub(super) fn send_woken_acks(&mut self) {
        let Some(p) = self.persist.as_deref_mut() else {
            return;
        };
        if p.acks.woken.is_empty() {
            return;
        }
        p.acks.take_woken();
        self.send_ready_acks();
    }

    /// Writes out the acknowledgements in [`HeldAcks::ready`].
    fn send_ready_acks(&mut self) {
        let Some(p) = self.persist.as_deref_mut() else {
            return;
        };
        let mut ready = std::mem::take(&mut p.acks.ready);
        for (id, serial, bytes) in ready.drain(..) {
            let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
                continue;
            };
            if c.serial != serial || c.state == ConnState::Closing {
                continue;
            }
            c.out_mut().extend_from_slice(bytes.as_slice());
            c.mark_dirty(id, &mut self.dirty);
        }
        if let Some(p) = self.persist.as_deref_mut() {
            // Kept for the next turn, unless a burst made it large.
            if ready.capacity() <= SPARE_QUEUE_ROOM * SPARE_QUEUES {
                p.acks.ready = ready;
            }
        }
    }

    pub(super) fn handle_puback(
        &mut self,
        id: ConnId,
        sid: SessionId,
        a: Ack,
    ) -> Result<(), Violation> {
        log::debug!(
            "Received PUBACK from {} (Mid: {}, RC:{})",
            self.conn_name(id),
            a.packet_id,
            a.reason
        );
        self.finish_outgoing(sid, a.packet_id, OutState::AwaitPuback)
    }

    /// A PUBREC for an outgoing QoS 2 message: PUBREL follows, or, for an error PUBREC, the
    /// flow ends. A PUBREC for a QoS 1 message is the wrong acknowledgement, a protocol error
    /// as in Mosquitto; one for an unknown id is answered (v5: 0x92) and otherwise ignored.
    pub(super) fn handle_pubrec(
        &mut self,
        id: ConnId,
        sid: SessionId,
        a: Ack,
    ) -> Result<(), Violation> {
        // Mosquitto's wording: the reason code only for MQTT 5 clients.
        if self.conn(id).is_some_and(|c| c.version.is_v5()) {
            let name = self.conn_name(id);
            log::debug!(
                "Received PUBREC from {name} (Mid: {}) ({})",
                a.packet_id,
                a.reason
            );
        } else {
            log::debug!(
                "Received PUBREC from {} (Mid: {})",
                self.conn_name(id),
                a.packet_id
            );
        }
        let Some(s) = self.session_mut(sid) else {
            return Ok(());
        };
        let found = s.find_inflight(a.packet_id);
        let state = found.and_then(|i| s.inflight.get(i)).map(|m| m.state);
        if state == Some(OutState::AwaitPuback) {
            return Err(Violation::protocol("PUBREC for a QoS 1 message"));
        }
        let code = match found {
            Some(i) if a.reason >= 0x80 => {
                if state != Some(OutState::AwaitPubrec) {
                    return Err(Violation::protocol("error PUBREC after PUBREL"));
                }
                // v5: an error PUBREC ends the flow (v5 §4.3.3).
                let seq = s.inflight.remove(i).map_or(0, |m| m.delivery.seq);
                self.persist_done(sid, seq);
                self.pump(sid);
                return Ok(());
            }
            // An error PUBREC for a message not in flight ends nothing and needs no answer.
            None if a.reason >= 0x80 => return Ok(()),
            Some(i) => {
                let Some(m) = s.inflight.get_mut(i) else {
                    return Ok(());
                };
                m.state = OutState::AwaitPubcomp;
                let seq = m.delivery.seq;
                self.persist_state(sid, seq, a.packet_id, OutState::AwaitPubcomp);
                reason::SUCCESS
            }
            None => reason::PACKET_IDENTIFIER_NOT_FOUND,
        };
        log::debug!(
            "Sending PUBREL to {} (m{})",
            self.conn_name(id),
            a.packet_id
        );
        // Exactly once across a crash: the PUBREL leaves only once the store knows the flow
        // reached it. Sent earlier, a crash would bring the message back as not yet received,
        // and its resent PUBLISH would be a new message to a receiver that has completed it.
        self.send_ack(id, &Packet::Pubrel(self.ack_for(id, a.packet_id, code)));
        Ok(())
    }

    pub(super) fn handle_pubrel(&mut self, id: ConnId, sid: SessionId, a: Ack) {
        log::debug!(
            "Received PUBREL from {} (Mid: {})",
            self.conn_name(id),
            a.packet_id
        );
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let code = if s.release_incoming_qos2(a.packet_id) {
            self.persist_qos2(sid, a.packet_id, false);
            reason::SUCCESS
        } else {
            reason::PACKET_IDENTIFIER_NOT_FOUND
        };
        log::debug!(
            "Sending PUBCOMP to {} (m{})",
            self.conn_name(id),
            a.packet_id
        );
        // The PUBCOMP frees the packet id for the publisher's next message: it leaves only once
        // the store has forgotten the id, or a crash would bring it back and take that next
        // message for a duplicate.
        self.send_ack(id, &Packet::Pubcomp(self.ack_for(id, a.packet_id, code)));
    }

    pub(super) fn handle_pubcomp(
        &mut self,
        id: ConnId,
        sid: SessionId,
        a: Ack,
    ) -> Result<(), Violation> {
        log::debug!(
            "Received PUBCOMP from {} (Mid: {}, RC:{})",
            self.conn_name(id),
            a.packet_id,
            a.reason
        );
        self.finish_outgoing(sid, a.packet_id, OutState::AwaitPubcomp)
    }

    /// The last acknowledgement of an outgoing message arrived: free its slot and let the
    /// queue move. One for an id not in flight is ignored; one of the wrong kind for the
    /// message in flight (PUBACK for QoS 2, PUBCOMP for QoS 1 or before PUBREL) is a protocol
    /// error, as in Mosquitto.
    fn finish_outgoing(
        &mut self,
        sid: SessionId,
        packet_id: u16,
        expected: OutState,
    ) -> Result<(), Violation> {
        let Some(s) = self.session_mut(sid) else {
            return Ok(());
        };
        // Acks usually come in order, so the front is the common case.
        let pos = match s.inflight.front() {
            Some(f) if f.packet_id == packet_id => Some(0),
            _ => s.find_inflight(packet_id),
        };
        let Some(i) = pos else {
            return Ok(());
        };
        match (expected, s.inflight.get(i).map(|m| m.state)) {
            (want, Some(got)) if got == want => {}
            (OutState::AwaitPuback, _) => {
                return Err(Violation::protocol("PUBACK for a QoS 2 message"))
            }
            (_, Some(OutState::AwaitPuback)) => {
                return Err(Violation::protocol("PUBCOMP for a QoS 1 message"))
            }
            _ => return Err(Violation::protocol("PUBCOMP before PUBREL")),
        }
        let seq = s.inflight.remove(i).map_or(0, |m| m.delivery.seq);
        self.persist_done(sid, seq);
        self.send_woken_acks();
        self.pump(sid);
        Ok(())
    }
}
