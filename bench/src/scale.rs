//! Scale scenarios: offline persistent sessions draining their queues on reconnect, and the
//! cost of a publish against a large subscription table, counted in instructions under
//! callgrind rather than in seconds on a shared machine.

use crate::net::{self, Conn, ReadOutcome};
use crate::wire::{self, Packet, PUBACK};
use std::io;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

/// Time allowed for one handshake.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a phase may see no input before it gives up on the rest.
const QUIET: Duration = Duration::from_secs(10);

/// The same while queued messages are published: a broker that acknowledges a QoS 1 message
/// only once its store has it may be silent for a long commit of a million queue entries.
const QUIET_STORING: Duration = Duration::from_secs(120);

/// Feeds every packet of every connection to `on_packet` (connection index, packet, replies)
/// until it returns `Ok(true)`, writing replies as the sockets take them. Ends with `TimedOut`
/// after `quiet` without input while nothing is left to write.
fn pump_all(
    conns: &mut [Conn],
    quiet: Duration,
    mut on_packet: impl FnMut(usize, &Packet<'_>, &mut Vec<u8>) -> io::Result<bool>,
) -> io::Result<()> {
    let mut ep = net::Epoll::new(conns.len())?;
    for (i, c) in conns.iter().enumerate() {
        ep.add(c.fd(), i as u64, false)?;
    }
    // Connections with output to write (all, at first), and those also watched for room.
    let mut dirty: Vec<usize> = (0..conns.len()).collect();
    let mut is_dirty = vec![true; conns.len()];
    let mut watching_out = vec![false; conns.len()];
    let mut replies = Vec::new();
    let mut quiet_since = Instant::now();
    loop {
        let mut writing = false;
        let mut still = Vec::new();
        for i in dirty.drain(..) {
            let Some(c) = conns.get_mut(i) else { continue };
            is_dirty[i] = false;
            let all_out = c.flush()?;
            if all_out == watching_out[i] {
                ep.set_out(c.fd(), i as u64, !all_out)?;
                watching_out[i] = !all_out;
            }
            if !all_out {
                writing = true;
                is_dirty[i] = true;
                still.push(i);
            }
        }
        dirty = still;
        let ready = ep.wait(Duration::from_millis(50))?;
        let mut done = false;
        let mut got = false;
        for (token, events) in ready {
            let i = token as usize;
            let Some(c) = conns.get_mut(i) else { continue };
            if events & libc::EPOLLOUT as u32 != 0 && !is_dirty[i] {
                is_dirty[i] = true;
                dirty.push(i);
            }
            let input = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
            if events & input == 0 {
                continue;
            }
            if let ReadOutcome::Closed = c.fill()? {
                return Err(io::Error::other(format!("broker closed connection {i}")));
            }
            while let Some(p) = c.next_packet()? {
                got = true;
                done |= on_packet(i, &p, &mut replies)?;
            }
            if !replies.is_empty() {
                c.wbuf.append(&mut replies);
                if !is_dirty[i] {
                    is_dirty[i] = true;
                    dirty.push(i);
                }
            }
        }
        if done {
            for c in conns.iter_mut() {
                c.flush()?;
            }
            return Ok(());
        }
        if got {
            quiet_since = Instant::now();
        } else if !writing && quiet_since.elapsed() > quiet {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "broker went quiet"));
        }
    }
}

/// Opens `n` connections (non-blocking, CONNECT written but not yet acknowledged).
fn open_all(
    addr: SocketAddr,
    ids: impl Iterator<Item = String>,
    persistent: bool,
) -> io::Result<Vec<Conn>> {
    let mut conns = Vec::new();
    for id in ids {
        let stream = std::net::TcpStream::connect_timeout(&addr, SETUP_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut c = Conn::new(stream);
        wire::connect_session(&mut c.wbuf, &id, 600, persistent);
        c.flush()?;
        conns.push(c);
    }
    Ok(conns)
}

/// Sends DISCONNECT on every connection and waits until the broker has closed them all.
fn disconnect_all(conns: &mut Vec<Conn>) -> io::Result<()> {
    for c in conns.iter_mut() {
        wire::disconnect(&mut c.wbuf);
        c.write_pending_blocking()?;
    }
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut fds = Vec::new();
    while !conns.is_empty() && Instant::now() < deadline {
        fds.clear();
        fds.extend(conns.iter().map(|c| net::pollfd(c.fd(), false)));
        net::poll(&mut fds, Duration::from_millis(50))?;
        for k in (0..conns.len()).rev() {
            if fds[k].revents != 0 && !matches!(conns[k].fill(), Ok(ReadOutcome::Open)) {
                conns.swap_remove(k);
            } else if fds[k].revents != 0 {
                while conns[k].next_packet()?.is_some() {}
            }
        }
    }
    conns.clear();
    Ok(())
}

/// Outcome of the offline-sessions scenario.
pub struct SessionsReport {
    /// Messages each session should receive on reconnecting.
    pub expected: u64,
    /// Distinct messages received.
    pub delivered: u64,
    /// Messages received twice by one session.
    pub dup: u64,
    /// From the first reconnect to the last delivery.
    pub drain: Duration,
    /// From the first queued publish to the last PUBACK (the broker queueing every copy).
    pub queueing: Duration,
    /// Broker VmRSS (kB) with the sessions subscribed and offline, and with their queues full.
    pub rss_kb: (u64, u64),
}

/// `sessions` persistent sessions subscribe at QoS 1 to one topic and go offline; `queued`
/// QoS 1 messages are published to it, so each session owes `queued` messages; then every
/// session reconnects at once and acknowledges what it receives, until all have their queues.
pub fn sessions(
    addr: SocketAddr,
    sessions: usize,
    queued: usize,
    size: usize,
    prefix: &str,
    pid: Option<u32>,
) -> io::Result<SessionsReport> {
    net::raise_fd_limit();
    let tag = std::process::id();
    let topic = format!("{prefix}/q");
    let rss = |key| pid.map_or(Ok(0), |pid| net::proc_status_kb(pid, key));
    let ids = || (0..sessions).map(move |i| format!("mb{tag}s{i}"));
    let mut subs = open_all(addr, ids(), true)?;
    for c in subs.iter_mut() {
        wire::subscribe(&mut c.wbuf, 1, topic.as_bytes(), 1);
    }
    let mut subacks = 0;
    pump_all(&mut subs, QUIET, |_, p, _| {
        if let Packet::SubAck { codes, .. } = p {
            if codes.first().is_none_or(|&c| c > 2) {
                return Err(io::Error::other("SUBSCRIBE refused"));
            }
            subacks += 1;
        }
        Ok(subacks == sessions)
    })
    .map_err(|e| phase("subscribing", e))?;
    disconnect_all(&mut subs)?;
    let rss_offline = rss("VmRSS")?;

    let mut publisher = net::handshake(addr, &format!("mb{tag}sp"), 600, SETUP_TIMEOUT)?;
    publisher.go_nonblocking()?;
    let mut payload = vec![b'q'; size];
    let queue_start = Instant::now();
    for i in 0..queued {
        wire::publish_head(
            &mut publisher.wbuf,
            topic.as_bytes(),
            1,
            false,
            (i % 65535) as u16 + 1,
            size,
        );
        wire::stamp(&mut payload, 0, i as u64, 0);
        publisher.wbuf.extend_from_slice(&payload);
    }
    let mut acked = 0;
    pump_all(
        std::slice::from_mut(&mut publisher),
        QUIET_STORING,
        |_, p, _| {
            acked += usize::from(matches!(p, Packet::PubAck(_)));
            Ok(acked == queued)
        },
    )
    .map_err(|e| phase("publishing the queued messages", e))?;
    let queueing = queue_start.elapsed();
    let rss_queued = rss("VmRSS")?;

    let expected = (sessions * queued) as u64;
    let mut seen = vec![false; sessions * queued];
    let mut report = SessionsReport {
        expected,
        delivered: 0,
        dup: 0,
        drain: Duration::ZERO,
        queueing,
        rss_kb: (rss_offline, rss_queued),
    };
    let start = Instant::now();
    let mut last = start;
    let mut subs = open_all(addr, ids(), true)?;
    let outcome = pump_all(&mut subs, QUIET, |i, p, out| {
        match p {
            Packet::ConnAck { code } if *code != 0 => {
                return Err(io::Error::other(format!("reconnect refused: {code}")))
            }
            Packet::Publish {
                qos, id, payload, ..
            } => {
                if *qos == 1 {
                    wire::ack(out, PUBACK, *id);
                }
                let seq = wire::read_stamp(payload).map(|(_, s, _)| s as usize);
                match seq
                    .filter(|&s| s < queued)
                    .map(|s| &mut seen[i * queued + s])
                {
                    Some(s) if !*s => {
                        *s = true;
                        report.delivered += 1;
                        last = Instant::now();
                    }
                    Some(_) => report.dup += 1,
                    None => {}
                }
            }
            _ => {}
        }
        Ok(report.delivered == expected)
    });
    match outcome {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {} // the rest never came: reported
        Err(e) => return Err(e),
    }
    report.drain = last - start;
    // Leave no sessions behind: reconnect clean (clean session 1 discards them).
    disconnect_all(&mut subs)?;
    let mut cleanup = open_all(addr, ids(), false)?;
    disconnect_all(&mut cleanup)?;
    wire::disconnect(&mut publisher.wbuf);
    let _ = publisher.flush();
    Ok(report)
}

/// How the subscription table of [`subcost`] is shaped. Every shape gives each filter its own
/// number `k`, and each publish matches exactly one filter.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FilterShape {
    /// `x/k/v`, published as itself.
    Exact,
    /// `p/+/k`: a wildcard in one level, shared by every filter; published as `p/any/k`.
    Plus,
    /// `h/k/#`, published as `h/k/a/b`.
    Hash,
    /// The three above in turn (filter `k` takes shape `k % 3`).
    Mix,
}

impl FilterShape {
    /// Parses a shape name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exact" => Some(Self::Exact),
            "plus" => Some(Self::Plus),
            "hash" => Some(Self::Hash),
            "mix" => Some(Self::Mix),
            _ => None,
        }
    }

    /// The name [`FilterShape::parse`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Plus => "plus",
            Self::Hash => "hash",
            Self::Mix => "mix",
        }
    }

    fn concrete(self, k: usize) -> Self {
        match (self, k % 3) {
            (Self::Mix, 0) => Self::Exact,
            (Self::Mix, 1) => Self::Plus,
            (Self::Mix, _) => Self::Hash,
            (s, _) => s,
        }
    }

    /// Filter number `k`.
    fn filter(self, k: usize) -> String {
        match self.concrete(k) {
            Self::Plus => format!("p/+/{k}"),
            Self::Hash => format!("h/{k}/#"),
            _ => format!("x/{k}/v"),
        }
    }

    /// A topic that filter `k`, and no other, matches.
    fn topic(self, k: usize) -> String {
        match self.concrete(k) {
            Self::Plus => format!("p/any/{k}"),
            Self::Hash => format!("h/{k}/a/b"),
            _ => format!("x/{k}/v"),
        }
    }
}

/// Outcome of the subscription-cost scenario.
pub struct SubCostReport {
    /// Deliveries in the measured phase.
    pub delivered: u64,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Instructions the broker executed in the measured phase, when it runs under callgrind.
    pub instructions: Option<u64>,
    /// Time to set the subscriptions up.
    pub setup: Duration,
    /// Broker VmRSS (kB) before and with every subscription in place.
    pub rss_kb: (u64, u64),
}

/// The instructions (event Ir, summed over threads) a broker under callgrind has executed so
/// far, read with `callgrind_control -e Ir PID`.
fn callgrind_ir(pid: u32) -> io::Result<u64> {
    let out = Command::new("callgrind_control")
        .args(["-e", "Ir", &pid.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let threads: Vec<u64> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("Th "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|n| n.replace(',', "").parse().ok())
        .collect();
    if !out.status.success() || threads.is_empty() {
        return Err(io::Error::other(format!(
            "callgrind_control -e Ir {pid} gave no counts: {}",
            text.trim()
        )));
    }
    Ok(threads.iter().sum())
}

/// `clients` subscribers hold `filters` subscriptions between them (QoS 0, shaped by `shape`);
/// then one publisher sends `publishes` QoS 0 messages, each to a topic that exactly one
/// filter matches, spread over the whole table. With `callgrind` the broker (`pid`) runs under
/// valgrind's callgrind and its instruction count is read around the publishing phase.
pub fn subcost(
    addr: SocketAddr,
    shape: FilterShape,
    clients: usize,
    filters: usize,
    publishes: usize,
    pid: Option<u32>,
    callgrind: bool,
) -> io::Result<SubCostReport> {
    net::raise_fd_limit();
    let tag = std::process::id();
    let rss = |key| pid.map_or(Ok(0), |pid| net::proc_status_kb(pid, key));
    let rss_before = rss("VmRSS")?;
    let setup_start = Instant::now();
    let mut subs = open_all(addr, (0..clients).map(|i| format!("mb{tag}f{i}")), false)?;
    // Filter k belongs to client k % clients; up to 64 filters per SUBSCRIBE packet.
    for (i, c) in subs.iter_mut().enumerate() {
        let mine: Vec<String> = (i..filters)
            .step_by(clients)
            .map(|k| shape.filter(k))
            .collect();
        for (n, chunk) in mine.chunks(64).enumerate() {
            let len: usize = chunk.iter().map(|f| 3 + f.len()).sum();
            c.wbuf.push(0x82);
            wire::put_len(&mut c.wbuf, 2 + len);
            c.wbuf
                .extend_from_slice(&((n % 65535) as u16 + 1).to_be_bytes());
            for f in chunk {
                c.wbuf.extend_from_slice(&(f.len() as u16).to_be_bytes());
                c.wbuf.extend_from_slice(f.as_bytes());
                c.wbuf.push(0);
            }
        }
    }
    let packets: usize = (0..clients)
        .map(|i| (i..filters).step_by(clients).len().div_ceil(64))
        .sum();
    let mut subacks = 0;
    pump_all(&mut subs, QUIET, |_, p, _| {
        if let Packet::SubAck { codes, .. } = p {
            if codes.iter().any(|&c| c > 2) {
                return Err(io::Error::other("a SUBSCRIBE was refused"));
            }
            subacks += 1;
        }
        Ok(subacks == packets)
    })
    .map_err(|e| phase("subscribing", e))?;
    let setup = setup_start.elapsed();
    let rss_after = rss("VmRSS")?;

    let mut publisher = net::handshake(addr, &format!("mb{tag}fp"), 600, SETUP_TIMEOUT)?;
    publisher.go_nonblocking()?;
    // A stride coprime with the table size visits filters all over it, not in order.
    let stride = (filters / 2 + 1..)
        .find(|s| gcd(*s, filters) == 1)
        .unwrap_or(1);
    let mut payload = vec![b'c'; wire::STAMP_LEN + 12];
    for i in 0..publishes {
        let t = shape.topic(i * stride % filters);
        wire::publish_head(
            &mut publisher.wbuf,
            t.as_bytes(),
            0,
            false,
            0,
            payload.len(),
        );
        wire::stamp(&mut payload, 0, i as u64, 0);
        publisher.wbuf.extend_from_slice(&payload);
    }
    let ir_before = match (callgrind, pid) {
        (true, Some(pid)) => Some(callgrind_ir(pid)?),
        (true, None) => return Err(io::Error::other("--callgrind needs --pid")),
        _ => None,
    };
    let start = Instant::now();
    let mut delivered = 0u64;
    let mut all = Vec::with_capacity(clients + 1);
    all.append(&mut subs);
    all.push(publisher);
    let outcome = pump_all(&mut all, QUIET, |_, p, _| {
        delivered += u64::from(matches!(p, Packet::Publish { .. }));
        Ok(delivered == publishes as u64)
    });
    match outcome {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
        Err(e) => return Err(e),
    }
    let elapsed = start.elapsed();
    let instructions = match (ir_before, pid) {
        (Some(before), Some(pid)) => Some(callgrind_ir(pid)?.saturating_sub(before)),
        _ => None,
    };
    for c in &mut all {
        wire::disconnect(&mut c.wbuf);
        let _ = c.flush();
    }
    Ok(SubCostReport {
        delivered,
        elapsed,
        instructions,
        setup,
        rss_kb: (rss_before, rss_after),
    })
}

/// Names the phase an error happened in.
fn phase(what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
