//! The broker's timers: keepalive and connect timeouts, session expiry, delayed wills and
//! bridge reconnections, all in one binary heap ordered by deadline.
//!
//! Every connection keeps one timer in the heap (re-armed lazily: when it falls due the
//! broker looks at the connection's real deadline and pushes a new one if the client was
//! heard from meanwhile), so with thousands of idle devices the heap is one of the biggest
//! per-connection costs. An entry is therefore packed into 16 bytes: the deadline in whole
//! milliseconds since the broker started (rounded up, so a timer never fires early) with the
//! kind of timer in its two low bits, and the timer's subject in a second word.

use super::{ConnId, SessionId};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Keepalive or connect timeout of a connection (checked against its serial).
    Conn(ConnId, u32),
    /// Expiry of an offline session.
    SessionExpiry(SessionId),
    /// A delayed will falls due.
    WillDelay(SessionId),
    /// A bridge's next connection attempt.
    Bridge(usize),
}

impl Timer {
    /// The kind (two bits) and the subject (one word).
    fn encode(self) -> (u64, u64) {
        let pair = |hi: u64, lo: u32| hi << 32 | u64::from(lo);
        match self {
            Timer::Conn(id, serial) => (0, pair(id as u64, serial)),
            Timer::SessionExpiry(s) => (1, pair(u64::from(s.idx), s.gen)),
            Timer::WillDelay(s) => (2, pair(u64::from(s.idx), s.gen)),
            Timer::Bridge(index) => (3, index as u64),
        }
    }

    fn decode(kind: u64, subject: u64) -> Timer {
        let (hi, lo) = ((subject >> 32) as u32, subject as u32);
        let sid = SessionId { idx: hi, gen: lo };
        match kind {
            0 => Timer::Conn(hi as ConnId, lo),
            1 => Timer::SessionExpiry(sid),
            2 => Timer::WillDelay(sid),
            _ => Timer::Bridge(subject as usize),
        }
    }
}

/// The heap of pending timers.
pub struct Timers {
    /// Time zero of the millisecond deadlines.
    epoch: Instant,
    /// `(deadline_ms << 2 | kind, subject)`, earliest first.
    heap: BinaryHeap<Reverse<(u64, u64)>>,
}

impl Timers {
    /// An empty heap counting milliseconds from `epoch`.
    pub fn new(epoch: Instant) -> Timers {
        Timers {
            epoch,
            heap: BinaryHeap::with_capacity(super::table_capacity::<Reverse<(u64, u64)>>()),
        }
    }

    /// Milliseconds from the epoch to `t`, rounded up (instants before it count as 0).
    fn ms_ceil(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.epoch);
        let ms = d.as_millis() as u64;
        if d > Duration::from_millis(ms) {
            ms + 1
        } else {
            ms
        }
    }

    /// Arms `timer` to fall due at `at`.
    pub fn push(&mut self, at: Instant, timer: Timer) {
        let (kind, subject) = timer.encode();
        self.heap
            .push(Reverse((self.ms_ceil(at) << 2 | kind, subject)));
    }

    /// When the earliest timer falls due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let &Reverse((key, _)) = self.heap.peek()?;
        Some(self.epoch + Duration::from_millis(key >> 2))
    }

    /// Takes the earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let &Reverse((key, subject)) = self.heap.peek()?;
        if self.epoch + Duration::from_millis(key >> 2) > now {
            return None;
        }
        self.heap.pop();
        Some(Timer::decode(key & 3, subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Reverse<(u64, u64)>>(), 16);
    }

    #[test]
    fn timers_come_out_in_deadline_order_and_never_early() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0);
        let sid = SessionId { idx: 7, gen: 3 };
        t.push(t0 + Duration::from_micros(2_500), Timer::WillDelay(sid));
        t.push(t0 + Duration::from_millis(1), Timer::Conn(5, u32::MAX));
        t.push(t0 + Duration::from_secs(9), Timer::Bridge(2));
        t.push(t0 + Duration::from_millis(3), Timer::SessionExpiry(sid));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(
            t.pop_due(t0 + Duration::from_millis(1)),
            Some(Timer::Conn(5, u32::MAX))
        );
        // 2.5 ms rounds up to 3: not due at 2.9 ms.
        assert_eq!(t.pop_due(t0 + Duration::from_micros(2_900)), None);
        assert_eq!(
            t.next_deadline(),
            Some(t0 + Duration::from_millis(3)),
            "the rounded-up deadline"
        );
        let now = t0 + Duration::from_millis(3);
        // Equal deadlines come out by kind.
        assert_eq!(t.pop_due(now), Some(Timer::SessionExpiry(sid)));
        assert_eq!(t.pop_due(now), Some(Timer::WillDelay(sid)));
        assert_eq!(t.pop_due(now), None);
        assert_eq!(
            t.pop_due(t0 + Duration::from_secs(9)),
            Some(Timer::Bridge(2))
        );
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn instants_before_the_epoch_are_due_at_once() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0 + Duration::from_secs(1));
        t.push(t0, Timer::Bridge(0));
        assert_eq!(
            t.pop_due(t0 + Duration::from_secs(1)),
            Some(Timer::Bridge(0))
        );
    }
}
