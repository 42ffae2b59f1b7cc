//! Held writes: the store write of a QoS 1 delivery to a connected session waits a moment.
//!
//! Most QoS 1 messages are acknowledged by every recipient within milliseconds. Writing such a
//! message to the store, then its sent state, then its deletion costs page writes (on a
//! Raspberry Pi, SD card wear) for something that never needed to survive: once every
//! recipient has acknowledged it, a crash loses nothing, and until the publisher has its
//! PUBACK, nothing was promised. So while a QoS 1 PUBLISH that is not retained is routed,
//! the write of each delivery to a *connected* persistent session is held here instead of
//! being recorded, and the publisher's PUBACK waits for the message's completion or for the
//! commit of its writes, whichever comes first (`acks.rs`):
//! - the recipient acknowledges (or the delivery is dropped): the held write is forgotten, and
//!   once none of the message's writes is held, the PUBACK leaves; nothing was written;
//! - otherwise the write is recorded after all, and the PUBACK waits for its commit as usual,
//!   when the recipient disconnects, its session ends, the broker shuts down, the recipient
//!   has not acknowledged anything for [`HOLD`], or the write has been held for [`MAX_HOLD`].
//!
//! A recipient that keeps acknowledging keeps its writes held (a busy subscriber has a queue
//! behind its in-flight window, whose messages complete in turn); one that stalls has them
//! written within [`HOLD`] to 2 × [`HOLD`]. A held write keeps only an `Rc` of the message.

use super::router::FnvHasher;
use super::session::Delivery;
use super::SessionId;
use crate::store::MessageState;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};

/// How long a recipient may go without acknowledging anything before its held writes are
/// recorded. A few milliseconds would do on a quiet machine; on a busy one (a Raspberry Pi
/// also running Home Assistant, or this broker's benchmark) a subscriber that keeps up is
/// often descheduled for 5-10 ms, and each such pause would write its whole queue.
pub(super) const HOLD: Duration = Duration::from_millis(20);

/// The longest a write is held, even for a recipient that keeps acknowledging: the publisher's
/// PUBACK waits at most this (plus a commit) for a slow subscriber.
pub(super) const MAX_HOLD: Duration = Duration::from_millis(500);

/// The acknowledgement a held write belongs to: the connection it goes to, that connection's
/// serial, and its number in that connection's queue of held acknowledgements.
pub(super) type AckKey = (super::ConnId, u32, u64);

/// One delivery whose write is held.
pub(super) struct Held {
    pub delivery: Delivery,
    /// 0 while queued.
    pub packet_id: u16,
    pub state: MessageState,
    /// The PUBACK that waits for it, once bound.
    pub ack: Option<AckKey>,
    pub since: Instant,
}

/// The held writes of one recipient, oldest first (a session's deliveries are numbered in
/// the order they are made, so this is also `seq` order), and the acknowledgements seen for
/// it, checked every [`HOLD`]. Its acknowledgements mostly come in order, so the write they
/// complete is at the front.
#[derive(Default)]
struct SessionHolds {
    writes: VecDeque<(u64, Held)>,
    completions: u64,
    seen: u64,
}

impl SessionHolds {
    /// The index of `seq`, looked for at the front first (a binary search over a long queue
    /// of large entries misses the cache at every step).
    fn position(&self, seq: u64) -> Option<usize> {
        if self.writes.front().is_some_and(|(s, _)| *s == seq) {
            return Some(0);
        }
        self.writes.binary_search_by_key(&seq, |(s, _)| *s).ok()
    }
}

/// The held writes, by session.
#[derive(Default)]
pub(super) struct Holds {
    sessions: HashMap<SessionId, SessionHolds, BuildHasherDefault<FnvHasher>>,
    /// When to look at a session's held writes next.
    checks: BinaryHeap<Reverse<(Instant, SessionId)>>,
    /// Set while a message whose PUBACK may leave at its completion is routed.
    routing: bool,
    /// The writes held while routing that message.
    fresh: Vec<(SessionId, u64)>,
    /// `Persist::changes.len()` when that routing began: any change recorded during it (a
    /// delivery to an offline session) must be committed before the PUBACK leaves.
    mark: usize,
}

/// What routing one message held back, for its PUBACK.
pub(super) struct Routed {
    /// How many of its writes are held ([`Holds::bind`] binds them).
    pub held: usize,
    /// Whether it also recorded changes, which the PUBACK must wait to see committed.
    pub recorded: bool,
}

impl Holds {
    /// A QoS 1 message whose PUBACK may leave at completion is about to be routed;
    /// `changes` is the number of changes recorded so far this turn.
    pub(super) fn begin(&mut self, changes: usize) {
        self.routing = true;
        self.fresh.clear();
        self.mark = changes;
    }

    /// Whether a delivery being recorded now may be held.
    pub(super) fn routing(&self) -> bool {
        self.routing
    }

    /// The routing that [`Holds::begin`] started is over: what it held, for its PUBACK.
    pub(super) fn end(&mut self, changes: usize) -> Option<Routed> {
        if !std::mem::take(&mut self.routing) {
            return None;
        }
        Some(Routed {
            held: self.fresh.len(),
            recorded: changes > self.mark,
        })
    }

    /// Holds the write of delivery `d` (already numbered) to session `sid`.
    pub(super) fn hold(
        &mut self,
        sid: SessionId,
        d: Delivery,
        packet_id: u16,
        state: MessageState,
        now: Instant,
    ) {
        let seq = d.seq;
        let held = Held {
            delivery: d,
            packet_id,
            state,
            ack: None,
            since: now,
        };
        self.fresh.push((sid, seq));
        let holds = self.sessions.entry(sid).or_insert_with(|| {
            self.checks.push(Reverse((now + HOLD, sid)));
            SessionHolds::default()
        });
        holds.writes.push_back((seq, held));
    }

    /// Binds the writes held for the message just routed to the PUBACK that waits for them.
    pub(super) fn bind(&mut self, ack: AckKey) {
        for (sid, seq) in self.fresh.drain(..) {
            let Some(holds) = self.sessions.get_mut(&sid) else {
                continue;
            };
            // Held just now: at the back.
            if let Some((_, h)) = holds.writes.iter_mut().rev().find(|(s, _)| *s == seq) {
                h.ack = Some(ack);
            }
        }
    }

    /// The delivery was acknowledged or dropped before its write: it is forgotten, and the
    /// recipient counts as keeping up. Returns it if it was held.
    pub(super) fn complete(&mut self, sid: SessionId, seq: u64) -> Option<Held> {
        let holds = self.sessions.get_mut(&sid)?;
        let i = holds.position(seq)?;
        let (_, held) = holds.writes.remove(i)?;
        holds.completions += 1;
        Some(held)
    }

    /// Takes every held write of `sid`, to be recorded now.
    pub(super) fn take_session(&mut self, sid: SessionId) -> Vec<((SessionId, u64), Held)> {
        let Some(holds) = self.sessions.remove(&sid) else {
            return Vec::new();
        };
        holds
            .writes
            .into_iter()
            .map(|(seq, h)| ((sid, seq), h))
            .collect()
    }

    /// Takes every held write (shutdown), by session, each session's oldest first.
    pub(super) fn take_all(&mut self) -> Vec<((SessionId, u64), Held)> {
        self.checks.clear();
        let mut sessions: Vec<(SessionId, SessionHolds)> = self.sessions.drain().collect();
        sessions.sort_unstable_by_key(|(sid, _)| *sid);
        sessions
            .into_iter()
            .flat_map(|(sid, holds)| {
                holds
                    .writes
                    .into_iter()
                    .map(move |(seq, h)| ((sid, seq), h))
            })
            .collect()
    }

    /// The next moment a held write may have to be recorded.
    pub(super) fn next_check(&self) -> Option<Instant> {
        self.checks.peek().map(|Reverse((t, _))| *t)
    }

    /// Takes the held writes that must be recorded at `now`, at the end of a loop turn (after
    /// its input, so acknowledgements that waited in a socket count): those held for a whole
    /// [`HOLD`] by a recipient that acknowledged nothing since the last check, and those held
    /// for [`MAX_HOLD`].
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<((SessionId, u64), Held)> {
        let mut due = Vec::new();
        while let Some(Reverse((at, sid))) = self.checks.peek().copied() {
            if at > now {
                break;
            }
            self.checks.pop();
            let Some(holds) = self.sessions.get_mut(&sid) else {
                continue;
            };
            let stalled = holds.completions == holds.seen;
            holds.seen = holds.completions;
            // Oldest first: a write held longer than another is in front of it.
            while let Some((seq, h)) = holds.writes.front() {
                if !((stalled && now >= h.since + HOLD) || now >= h.since + MAX_HOLD) {
                    break;
                }
                let seq = *seq;
                if let Some((_, h)) = holds.writes.pop_front() {
                    due.push(((sid, seq), h));
                }
            }
            if holds.writes.is_empty() {
                self.sessions.remove(&sid);
            } else {
                self.checks.push(Reverse((now + HOLD, sid)));
            }
        }
        due
    }
}
