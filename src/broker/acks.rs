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
//! turns a completed QoS 2 flow into a second delivery (docs/delivery.md). [`Broker::send_ack`] holds it with
//! the turn's changes, [`Broker::seal_acks`] tags it with the store batch that holds those
//! changes, and at the end of a later turn, once the store reports that batch committed,
//! [`Broker::release_committed`] writes it to its connection, unless the connection has gone
//! in the meantime.

use super::conn::ConnState;
use super::session::OutState;
use super::{Broker, ConnId, SessionId, Violation};
use crate::codec::{reason, Ack, Packet, Publish, QoS};

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
    /// on, holds it for the commit of the turn's changes, which hold what it promises.
    pub(super) fn send_ack(&mut self, id: ConnId, packet: &Packet<'_>) {
        let Some(p) = self.persist.as_mut() else {
            return self.send(id, packet);
        };
        let Some(c) = self.conns.get(id).and_then(Option::as_ref) else {
            return;
        };
        let mut bytes = Vec::with_capacity(4);
        packet.encode(c.version, &mut bytes);
        p.pending_acks.push((id, c.serial, bytes));
        self.stats.messages_sent += 1;
    }

    /// Tags the acknowledgements written since the last call with batch `batch` (the last
    /// batch submitted, which holds their messages), then releases every held acknowledgement
    /// whose batch is committed.
    pub(super) fn seal_acks(&mut self, batch: u64, committed: u64) {
        if let Some(p) = self.persist.as_mut() {
            for (id, serial, bytes) in p.pending_acks.drain(..) {
                p.held_acks.push_back((batch, id, serial, bytes));
            }
        }
        self.release_committed(committed);
    }

    /// The store has committed every batch up to `committed`: writes out every acknowledgement
    /// held for those batches, in order.
    fn release_committed(&mut self, committed: u64) {
        let Some(p) = self.persist.as_mut() else {
            return;
        };
        while p.held_acks.front().is_some_and(|(b, ..)| *b <= committed) {
            let Some((_, id, serial, bytes)) = p.held_acks.pop_front() else {
                break;
            };
            let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) else {
                continue;
            };
            if c.serial != serial || c.state == ConnState::Closing {
                continue;
            }
            c.out_mut().extend_from_slice(&bytes);
            c.mark_dirty(id, &mut self.dirty);
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
        self.pump(sid);
        Ok(())
    }
}
