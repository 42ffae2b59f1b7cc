//! Counting what arrived: a log-linear latency histogram and per-stream sequence tracking that
//! tells loss, duplicates and reordering apart.

use std::collections::HashSet;

/// Sub-buckets per power of two: about 3 % resolution, 1 920 counters in all.
const SUB: u64 = 32;

/// A latency histogram over nanoseconds with about 3 % resolution and an exact maximum.
pub struct Histogram {
    counts: Vec<u64>,
    n: u64,
    max: u64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; 64 + 58 * SUB as usize],
            n: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            return v as usize;
        }
        let exp = 63 - u64::from(v.leading_zeros()); // >= 6
        let shift = exp - 5;
        let mantissa = v >> shift; // 32..=63
        (2 * SUB + (exp - 6) * SUB + (mantissa - SUB)) as usize
    }

    fn lower_bound(index: usize) -> u64 {
        let i = index as u64;
        if i < 2 * SUB {
            return i;
        }
        let exp = (i - 2 * SUB) / SUB + 6;
        let mantissa = (i - 2 * SUB) % SUB + SUB;
        mantissa << (exp - 5)
    }

    /// Records one sample.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.counts[Self::index(ns)] += 1;
        self.n += 1;
        self.max = self.max.max(ns);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// The value below which a fraction `q` of the samples fall (bucket lower bound), 0 if empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let target = ((self.n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Self::lower_bound(i).min(self.max);
            }
        }
        self.max
    }

    /// The largest sample.
    pub fn max(&self) -> u64 {
        self.max
    }
}

/// Beyond this many outstanding gaps a stream stops remembering them (late arrivals are then
/// counted as duplicates); it only matters for a broker that loses most of its messages.
const MAX_GAPS: usize = 4_000_000;

/// What one subscriber saw of one publisher's sequence numbers.
#[derive(Default)]
pub struct Stream {
    next: u64,
    gaps: HashSet<u64>,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Sequence numbers received more than once.
    pub dup: u64,
    /// Sequence numbers that arrived after a later one.
    pub reordered: u64,
}

impl Stream {
    /// One past the highest sequence number received: everything below it has arrived or is
    /// lost (MQTT keeps one publisher's messages in order).
    #[inline]
    pub fn next_expected(&self) -> u64 {
        self.next
    }

    /// Accounts for the arrival of `seq`.
    #[inline]
    pub fn arrive(&mut self, seq: u64) {
        if seq == self.next {
            self.next += 1;
            self.unique += 1;
        } else if seq > self.next {
            if self.gaps.len() < MAX_GAPS {
                self.gaps.extend(self.next..seq);
            }
            self.next = seq + 1;
            self.unique += 1;
        } else if self.gaps.remove(&seq) {
            self.unique += 1;
            self.reordered += 1;
        } else {
            self.dup += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 / 50_000_000.0 - 1.0).abs() < 0.04, "{p50}");
        assert_eq!(h.max(), 100_000_000);
        for i in 0..1900 {
            assert_eq!(Histogram::index(Histogram::lower_bound(i)), i);
        }
    }

    #[test]
    fn stream_tells_loss_dup_and_reorder_apart() {
        let mut s = Stream::default();
        for seq in [0, 1, 3, 2, 3, 5] {
            s.arrive(seq);
        }
        assert_eq!((s.unique, s.dup, s.reordered), (5, 1, 1));
    }
}
