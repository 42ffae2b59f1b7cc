//! The message scenarios (fan-in, fan-out, point-to-point) at QoS 0, 1 and 2: one thread, one
//! `ppoll` loop over every publisher and subscriber connection.
//!
//! Why one thread: the generator gets one core (the broker gets the other), so threads would
//! only add context switches. Receipt is therefore plain counters, no atomics.
//!
//! Closed loop: a publisher may have at most `window` messages published but not yet received
//! by every subscriber that hears it. "Received" is tracked by sequence number: MQTT keeps a
//! publisher's messages in order per subscriber (MQTT-4.6.0), so when sequence `k` arrives,
//! everything before it has either arrived or is lost, and a lost message does not hold the
//! window shut. A publisher that sees no progress for [`STALL`] writes its outstanding
//! messages off (counted as a stall; the loss shows in `lost`).
//!
//! Writes are batched: each publisher encodes every message its window allows (up to
//! [`BATCH_BYTES`]) into one buffer and writes it with one call; all messages of a batch carry
//! the same send timestamp, taken just before the write.
//!
//! With a rate (`--rate`), the load is open loop within the window: each publisher is due its
//! share of the rate, `rate / publishers` messages per second counted from the start, and the
//! poll timeout wakes the loop when the next one is due, but at most once per [`TICK`]; a
//! broker that falls behind still closes the window, and the publisher catches up once it
//! opens. Each publisher also writes at most once per [`TICK`] (unless a catch-up fills a
//! whole batch): the loop wakes far more often than that for its subscribers' input, and
//! writing whatever little was due at each wakeup kept both the generator's core and the
//! broker's full of one-message writes at any rate, so that half load was not half.
//!
//! At QoS 1 the publisher side also measures each PUBLISH's PUBACK: from the batch's send
//! timestamp to the read that brought the PUBACK, per packet id (one slot per id, allocated
//! once), into a histogram.

use crate::net::{self, Conn, ReadOutcome};
use crate::stats::{Histogram, Stream};
use crate::wire::{self, Packet, PUBACK, PUBCOMP, PUBREC, PUBREL};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The shortest sleep between paced sends. Waking for each publisher's next message (every
/// 64 µs per publisher at 500 000 msg/s over 32) spent the generator's whole core on wakeups
/// and one-message writes, so its own delays, not the broker's, made the latency tail; each
/// wakeup now sends every message due since the last, with that wakeup's timestamp.
const TICK: Duration = Duration::from_millis(1);

/// Upper bound on the bytes one publisher encodes per write call.
const BATCH_BYTES: usize = 64 * 1024;
/// A publisher whose oldest outstanding message sees no progress for this long writes its
/// window off.
const STALL: Duration = Duration::from_secs(1);
/// After publishing stops, wait at most this long without any progress for stragglers and
/// open QoS 1/2 flows.
const DRAIN: Duration = Duration::from_secs(2);
/// Time allowed for each connection's CONNECT/CONNACK and SUBSCRIBE/SUBACK.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Who publishes to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// N publishers, one topic, one subscriber.
    FanIn,
    /// One publisher, one topic, N subscribers.
    FanOut,
    /// N publisher/subscriber pairs, one topic per pair.
    P2p,
}

impl Shape {
    /// The scenario name used on the command line and in RESULT lines.
    pub fn name(self) -> &'static str {
        match self {
            Shape::FanIn => "fanin",
            Shape::FanOut => "fanout",
            Shape::P2p => "p2p",
        }
    }
}

/// Parameters of one message run.
pub struct FlowOpts {
    /// Broker address.
    pub addr: SocketAddr,
    /// Scenario shape.
    pub shape: Shape,
    /// Number of publishers (fan-in, pairs) — 1 for fan-out.
    pub pubs: usize,
    /// Number of subscribers (fan-out, pairs) — 1 for fan-in.
    pub subs: usize,
    /// QoS for both PUBLISH and SUBSCRIBE.
    pub qos: u8,
    /// Payload size in bytes (at least [`wire::STAMP_LEN`]).
    pub size: usize,
    /// How long to publish.
    pub duration: Duration,
    /// Offered load in messages per second over all publishers; `None` for as fast as the
    /// window allows.
    pub rate: Option<f64>,
    /// Per-publisher window of messages published but not yet received.
    pub window: u64,
    /// Keepalive sent in CONNECT.
    pub keepalive: u16,
    /// Topic prefix, unique per run.
    pub prefix: String,
}

/// What a run measured.
pub struct FlowReport {
    /// Messages published.
    pub sent: u64,
    /// Deliveries expected (messages × subscribers hearing them).
    pub expected: u64,
    /// Deliveries received, duplicates included.
    pub received: u64,
    /// Deliveries received while publishing was on (the rate's numerator).
    pub in_window: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Deliveries of a sequence number already received.
    pub dup: u64,
    /// Deliveries that arrived after a later sequence number.
    pub reordered: u64,
    /// Payloads that were not ours (bad stamp, unknown publisher, future sequence number).
    pub corrupt: u64,
    /// Acks for packet ids we did not have in flight, and PUBRELs we did not expect.
    pub bad_acks: u64,
    /// QoS 1/2 flows left open at the end (publisher side and subscriber side).
    pub open_flows: u64,
    /// Times a publisher wrote its window off after [`STALL`].
    pub stalls: u64,
    /// Publishing time.
    pub elapsed: Duration,
    /// Latency from send stamp to receipt.
    pub latency: Histogram,
    /// QoS 1: latency from writing a PUBLISH to reading its PUBACK.
    pub ack_latency: Histogram,
}

/// Packet-id states on the publisher side.
const FREE: u8 = 0;
const AWAIT_ACK: u8 = 1;
const AWAIT_REC: u8 = 2;
const AWAIT_COMP: u8 = 3;

/// Packet identifiers of one publisher and where each flow stands.
struct IdPool {
    state: Vec<u8>,
    /// Send stamp (ns since the start) of the PUBLISH that took each id. Zeroed memory: pages
    /// are only touched by the ids in use, so a QoS 0 run never pays for it.
    sent_at: Vec<u64>,
    next: u16,
    in_use: u64,
}

impl IdPool {
    fn new() -> Self {
        IdPool {
            state: vec![FREE; 65536],
            sent_at: vec![0; 65536],
            next: 1,
            in_use: 0,
        }
    }

    fn take(&mut self, state: u8) -> Option<u16> {
        if self.in_use >= 65535 {
            return None;
        }
        loop {
            let id = self.next;
            self.next = if id == u16::MAX { 1 } else { id + 1 };
            if self.state[usize::from(id)] == FREE {
                self.state[usize::from(id)] = state;
                self.in_use += 1;
                return Some(id);
            }
        }
    }

    /// Moves `id` from state `from` to `to` (FREE releases it); false if it was not in `from`.
    fn advance(&mut self, id: u16, from: u8, to: u8) -> bool {
        let slot = &mut self.state[usize::from(id)];
        if id == 0 || *slot != from {
            return false;
        }
        *slot = to;
        if to == FREE {
            self.in_use -= 1;
        }
        true
    }
}

struct Publisher {
    conn: Conn,
    topic: Vec<u8>,
    /// Messages published so far; the next sequence number.
    sent: u64,
    /// Subscribers that hear this publisher.
    listeners: Vec<usize>,
    /// Sequence numbers below this are written off after a stall.
    floor: u64,
    /// Last time the window moved (or sending started from an empty window).
    last_progress: Instant,
    /// `min_next` seen at `last_progress`.
    last_min: u64,
    ids: IdPool,
    /// When it last wrote a paced batch that held everything due (see [`TICK`]).
    last_write: Option<Instant>,
}

struct Subscriber {
    conn: Conn,
    /// Indexed by publisher id; only the publishers this subscriber hears are used.
    streams: Vec<Stream>,
    /// PUBRECs sent whose PUBREL has not come yet.
    open_rec: u64,
}

/// Connects everyone, runs the load for `opts.duration`, drains, and reports.
pub fn run(opts: &FlowOpts) -> io::Result<FlowReport> {
    let (npubs, nsubs) = (opts.pubs, opts.subs);
    let hears = |sub: usize, publ: usize| match opts.shape {
        Shape::FanIn | Shape::FanOut => true,
        Shape::P2p => sub == publ,
    };
    let topic_of = |publ: usize| match opts.shape {
        Shape::FanIn => format!("{}/in", opts.prefix),
        Shape::FanOut => format!("{}/out", opts.prefix),
        Shape::P2p => format!("{}/p2p/{publ}", opts.prefix),
    };
    let tag = std::process::id();

    // Subscribers first, so nothing is published before everyone listens.
    let mut subs = Vec::with_capacity(nsubs);
    for s in 0..nsubs {
        let mut conn = net::handshake(
            opts.addr,
            &format!("mb{tag}s{s}"),
            opts.keepalive,
            SETUP_TIMEOUT,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("subscriber {s}: {e}")))?;
        let filter = match opts.shape {
            Shape::P2p => topic_of(s),
            _ => topic_of(0),
        };
        wire::subscribe(&mut conn.wbuf, 1, filter.as_bytes(), opts.qos);
        conn.write_pending_blocking()?;
        let codes = net::wait_for(&mut conn, |p| match p {
            Packet::SubAck { id: 1, codes } => Some(codes.to_vec()),
            _ => None,
        })?;
        match codes.first() {
            Some(&q) if q == opts.qos => {}
            Some(&q) if q < 3 => eprintln!(
                "warning: subscriber {s} granted QoS {q} instead of {}",
                opts.qos
            ),
            other => {
                return Err(io::Error::other(format!(
                    "subscriber {s}: SUBSCRIBE refused ({other:?})"
                )))
            }
        }
        conn.go_nonblocking()?;
        subs.push(Subscriber {
            conn,
            streams: (0..npubs).map(|_| Stream::default()).collect(),
            open_rec: 0,
        });
    }
    let setup_now = Instant::now();
    let mut pubs = Vec::with_capacity(npubs);
    for p in 0..npubs {
        let mut conn = net::handshake(
            opts.addr,
            &format!("mb{tag}p{p}"),
            opts.keepalive,
            SETUP_TIMEOUT,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("publisher {p}: {e}")))?;
        conn.go_nonblocking()?;
        pubs.push(Publisher {
            conn,
            topic: topic_of(p).into_bytes(),
            sent: 0,
            listeners: (0..nsubs).filter(|&s| hears(s, p)).collect(),
            floor: 0,
            last_progress: setup_now,
            last_min: 0,
            last_write: None,
            ids: IdPool::new(),
        });
    }

    let mut filler = vec![0u8; opts.size];
    for (i, b) in filler.iter_mut().enumerate() {
        *b = b'a' + (i % 26) as u8;
    }
    let msg_len = wire::publish_len(
        pubs.first().map_or(0, |p| p.topic.len()),
        opts.qos,
        opts.size,
    );
    let per_batch = (BATCH_BYTES / msg_len).max(1) as u64;
    let rate_per_pub = opts.rate.map(|r| r / npubs as f64);

    let mut report = FlowReport {
        sent: 0,
        expected: 0,
        received: 0,
        in_window: 0,
        lost: 0,
        dup: 0,
        reordered: 0,
        corrupt: 0,
        bad_acks: 0,
        open_flows: 0,
        stalls: 0,
        elapsed: opts.duration,
        latency: Histogram::new(),
        ack_latency: Histogram::new(),
    };
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(nsubs + npubs);
    let epoch = Instant::now();
    let start = epoch;
    let end = start + opts.duration;
    let end_ns = opts.duration.as_nanos() as u64;
    let mut last_progress = start;
    let mut publishing = true;

    loop {
        let now = Instant::now();
        if publishing && now >= end {
            publishing = false;
            last_progress = now;
        }
        let mut more = false;
        let mut next_due: Option<Duration> = None;
        if publishing {
            let elapsed = now - start;
            for (pid, p) in pubs.iter_mut().enumerate() {
                let min_next = p
                    .listeners
                    .iter()
                    .map(|&s| subs[s].streams[pid].next_expected())
                    .min()
                    .unwrap_or(p.sent)
                    .max(p.floor);
                if min_next != p.last_min {
                    p.last_min = min_next;
                    p.last_progress = now;
                }
                let outstanding = p.sent - min_next;
                if outstanding > 0 && now - p.last_progress > STALL {
                    report.stalls += 1;
                    p.floor = p.sent;
                    p.last_progress = now;
                    continue;
                }
                if p.conn.pending() > 0 {
                    continue;
                }
                let mut credit = opts.window.saturating_sub(outstanding);
                if opts.qos > 0 {
                    credit = credit.min(opts.window.saturating_sub(p.ids.in_use));
                }
                if let Some(r) = rate_per_pub {
                    if let Some(t) = p.last_write.filter(|&t| now < t + TICK) {
                        let wait = (t + TICK) - now;
                        next_due = Some(next_due.map_or(wait, |d: Duration| d.min(wait)));
                        continue;
                    }
                    let due = (r * elapsed.as_secs_f64()) as u64 + 1;
                    credit = credit.min(due.saturating_sub(p.sent));
                    let next_at = Duration::from_secs_f64((p.sent + credit) as f64 / r);
                    let wait = next_at.saturating_sub(elapsed).max(TICK);
                    next_due = Some(next_due.map_or(wait, |d: Duration| d.min(wait)));
                }
                let capped = credit > per_batch;
                if capped {
                    more = true;
                    credit = per_batch;
                }
                if credit == 0 {
                    continue;
                }
                if outstanding == 0 {
                    p.last_progress = now;
                }
                // Stamped per publisher: encoding and writing the batches before this one
                // must not count as this batch's latency.
                let sent_ns = epoch.elapsed().as_nanos() as u64;
                encode_batch(p, pid as u32, credit, opts.qos, &filler, sent_ns);
                if rate_per_pub.is_some() && !capped {
                    p.last_write = Some(now);
                }
                p.conn.flush().map_err(|e| ctx(e, "publisher", pid))?;
            }
        } else {
            let done = pubs.iter().enumerate().all(|(pid, p)| {
                p.ids.in_use == 0
                    && p.conn.pending() == 0
                    && p.listeners
                        .iter()
                        .all(|&s| subs[s].streams[pid].next_expected() >= p.sent)
            }) && subs
                .iter()
                .all(|s| s.open_rec == 0 && s.conn.pending() == 0);
            if done || now - last_progress > DRAIN {
                break;
            }
        }

        let timeout = if more {
            Duration::ZERO
        } else if publishing {
            let to_end = end.saturating_duration_since(now);
            next_due
                .unwrap_or(Duration::from_millis(10))
                .min(to_end)
                .min(Duration::from_millis(10))
        } else {
            Duration::from_millis(10)
        };
        fds.clear();
        fds.extend(
            subs.iter()
                .map(|s| net::pollfd(s.conn.fd(), s.conn.pending() > 0)),
        );
        fds.extend(
            pubs.iter()
                .map(|p| net::pollfd(p.conn.fd(), p.conn.pending() > 0)),
        );
        if net::poll(&mut fds, timeout)? == 0 {
            continue;
        }
        let now_ns = epoch.elapsed().as_nanos() as u64;
        let mut progressed = false;
        for (si, fd) in fds[..nsubs].iter().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            let sub = &mut subs[si];
            if fd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                if let ReadOutcome::Closed =
                    sub.conn.fill().map_err(|e| ctx(e, "subscriber", si))?
                {
                    return Err(io::Error::other(format!(
                        "broker closed the connection of subscriber {si}"
                    )));
                }
                let got = drain_subscriber(sub, &pubs, now_ns, &mut report)
                    .map_err(|e| ctx(e, "subscriber", si))?;
                if got > 0 {
                    progressed = true;
                    if now_ns < end_ns {
                        report.in_window += got;
                    }
                }
            }
            if sub.conn.pending() > 0 {
                sub.conn.flush().map_err(|e| ctx(e, "subscriber", si))?;
            }
        }
        for (pi, fd) in fds[nsubs..].iter().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            let p = &mut pubs[pi];
            if fd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                if let ReadOutcome::Closed = p.conn.fill().map_err(|e| ctx(e, "publisher", pi))? {
                    return Err(io::Error::other(format!(
                        "broker closed the connection of publisher {pi}"
                    )));
                }
                let read_ns = epoch.elapsed().as_nanos() as u64;
                progressed |= drain_publisher(p, read_ns, &mut report)
                    .map_err(|e| ctx(e, "publisher", pi))?;
            }
            if p.conn.pending() > 0 {
                p.conn.flush().map_err(|e| ctx(e, "publisher", pi))?;
            }
        }
        if progressed {
            last_progress = Instant::now();
        }
    }

    for (pid, p) in pubs.iter().enumerate() {
        report.sent += p.sent;
        report.open_flows += p.ids.in_use;
        for &s in &p.listeners {
            let st = &subs[s].streams[pid];
            report.expected += p.sent;
            report.lost += p.sent.saturating_sub(st.unique);
            report.dup += st.dup;
            report.reordered += st.reordered;
        }
    }
    report.open_flows += subs.iter().map(|s| s.open_rec).sum::<u64>();
    for c in subs
        .iter_mut()
        .map(|s| &mut s.conn)
        .chain(pubs.iter_mut().map(|p| &mut p.conn))
    {
        wire::disconnect(&mut c.wbuf);
        let _ = c.flush();
    }
    Ok(report)
}

fn ctx(e: io::Error, role: &str, i: usize) -> io::Error {
    io::Error::new(e.kind(), format!("{role} {i}: {e}"))
}

/// Appends `n` stamped PUBLISH packets to the publisher's output buffer.
fn encode_batch(p: &mut Publisher, pid: u32, n: u64, qos: u8, filler: &[u8], sent_ns: u64) {
    let state = match qos {
        1 => AWAIT_ACK,
        _ => AWAIT_REC,
    };
    for _ in 0..n {
        let id = if qos > 0 {
            match p.ids.take(state) {
                Some(id) => id,
                None => break, // every id in flight; the window normally prevents this
            }
        } else {
            0
        };
        if qos > 0 {
            p.ids.sent_at[usize::from(id)] = sent_ns;
        }
        wire::publish_head(&mut p.conn.wbuf, &p.topic, qos, false, id, filler.len());
        let at = p.conn.wbuf.len();
        p.conn.wbuf.extend_from_slice(filler);
        wire::stamp(&mut p.conn.wbuf[at..], pid, p.sent, sent_ns);
        p.sent += 1;
    }
}

/// Handles every complete packet a subscriber has buffered; returns deliveries counted.
fn drain_subscriber(
    sub: &mut Subscriber,
    pubs: &[Publisher],
    now_ns: u64,
    report: &mut FlowReport,
) -> io::Result<u64> {
    let mut got = 0;
    loop {
        let (reply, id) = match sub.conn.next_packet()? {
            None => break,
            Some(Packet::Publish {
                qos: q,
                id,
                payload,
                ..
            }) => {
                got += 1;
                report.received += 1;
                match wire::read_stamp(payload) {
                    Some((publ, seq, sent))
                        if (publ as usize) < pubs.len() && seq < pubs[publ as usize].sent =>
                    {
                        report.latency.record(now_ns.saturating_sub(sent));
                        sub.streams[publ as usize].arrive(seq);
                    }
                    _ => report.corrupt += 1,
                }
                match q {
                    1 => (PUBACK, id),
                    2 => {
                        sub.open_rec += 1;
                        (PUBREC, id)
                    }
                    _ => continue,
                }
            }
            Some(Packet::PubRel(id)) => {
                if sub.open_rec == 0 {
                    report.bad_acks += 1;
                } else {
                    sub.open_rec -= 1;
                }
                (PUBCOMP, id)
            }
            Some(Packet::PingResp) => continue,
            Some(other) => {
                return Err(io::Error::other(format!("unexpected packet {other:?}")));
            }
        };
        wire::ack(&mut sub.conn.wbuf, reply, id);
    }
    Ok(got)
}

/// Handles the acks a publisher has buffered (read at `now_ns`); returns whether any flow
/// moved.
fn drain_publisher(p: &mut Publisher, now_ns: u64, report: &mut FlowReport) -> io::Result<bool> {
    let mut moved = false;
    while let Some(packet) = p.conn.next_packet()? {
        let ok = match packet {
            Packet::PubAck(id) => {
                let acked = p.ids.advance(id, AWAIT_ACK, FREE);
                if acked {
                    let sent = p.ids.sent_at[usize::from(id)];
                    report.ack_latency.record(now_ns.saturating_sub(sent));
                }
                acked
            }
            Packet::PubRec(id) => {
                let fresh = p.ids.advance(id, AWAIT_REC, AWAIT_COMP);
                // A repeated PUBREC for a flow already at PUBREL gets its PUBREL again.
                let again = !fresh && p.ids.state[usize::from(id)] == AWAIT_COMP;
                if fresh || again {
                    wire::ack(&mut p.conn.wbuf, PUBREL, id);
                }
                fresh || again
            }
            Packet::PubComp(id) => p.ids.advance(id, AWAIT_COMP, FREE),
            Packet::PingResp => true,
            other => {
                return Err(io::Error::other(format!("unexpected packet {other:?}")));
            }
        };
        if ok {
            moved = true;
        } else {
            report.bad_acks += 1;
        }
    }
    Ok(moved)
}
