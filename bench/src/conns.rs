//! Scenarios about connections rather than messages: idle connections (memory per connection
//! and idle wake-ups of the broker), a connection storm (CONNECT/CONNACK/DISCONNECT cycles per
//! second), and retained replay to a new subscriber.

use crate::net::{self, Conn, ReadOutcome};
use crate::wire::{self, Packet, PUBACK, PUBCOMP, PUBREC};
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Time allowed for one handshake.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a retained run waits without input before it takes the rest as lost: a broker
/// storing or replaying a million messages may pause for seconds.
const QUIET: Duration = Duration::from_secs(10);

/// Memory and wake-ups of a broker holding idle connections.
pub struct IdleReport {
    /// Connections opened.
    pub conns: usize,
    /// Seconds it took to open them all (each waits for its CONNACK).
    pub connect_secs: f64,
    /// Broker VmRSS before, in kB.
    pub rss_before_kb: u64,
    /// Broker VmRSS with every connection open, in kB.
    pub rss_after_kb: u64,
    /// Broker VmHWM at the end, in kB.
    pub hwm_kb: u64,
    /// Broker context switches per second while every connection sat idle.
    pub wakeups_per_s: f64,
    /// Broker CPU time while idle, in ms.
    pub idle_cpu_ms: u64,
}

/// Opens `n` connections (CONNECT with keepalive 60, nothing more), lets them sit for `wait`,
/// and reads the broker's memory and wake-ups from /proc/`pid`.
pub fn idle(addr: SocketAddr, n: usize, pid: u32, wait: Duration) -> io::Result<IdleReport> {
    net::raise_fd_limit();
    let rss_before_kb = net::proc_status_kb(pid, "VmRSS")?;
    let tag = std::process::id();
    let started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let c = net::handshake(addr, &format!("mb{tag}i{i}"), 60, SETUP_TIMEOUT)
            .map_err(|e| io::Error::new(e.kind(), format!("idle connection {i}: {e}")))?;
        conns.push(c);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the broker settle (free handshake buffers, finish logging) before measuring.
    std::thread::sleep(Duration::from_millis(500));
    let switches_before = net::context_switches(pid)?;
    let cpu_before = net::cpu_ms(pid)?;
    let idle_start = Instant::now();
    std::thread::sleep(wait);
    let idle_secs = idle_start.elapsed().as_secs_f64();
    let switches = net::context_switches(pid)?.saturating_sub(switches_before);
    let idle_cpu_ms = net::cpu_ms(pid)?.saturating_sub(cpu_before);
    let rss_after_kb = net::proc_status_kb(pid, "VmRSS")?;
    let hwm_kb = net::proc_status_kb(pid, "VmHWM")?;
    for c in &mut conns {
        wire::disconnect(&mut c.wbuf);
        let _ = c.write_pending_blocking();
    }
    Ok(IdleReport {
        conns: n,
        connect_secs,
        rss_before_kb,
        rss_after_kb,
        hwm_kb,
        wakeups_per_s: switches as f64 / idle_secs,
        idle_cpu_ms,
    })
}

/// Outcome of a connection storm.
pub struct StormReport {
    /// Full cycles: connect, CONNECT, CONNACK, DISCONNECT, broker closes.
    pub completed: u64,
    /// Cycles that failed (refused, reset, or no CONNACK within the timeout).
    pub failed: u64,
    /// Cycles whose connection the broker had not closed within a second of DISCONNECT.
    pub unclosed: u64,
    /// Storm duration.
    pub elapsed: Duration,
}

enum Stage {
    AwaitConnAck,
    AwaitClose,
}

struct Cycle {
    conn: Conn,
    stage: Stage,
    since: Instant,
}

/// Runs connect/CONNACK/DISCONNECT cycles for `duration`, keeping `parallel` in progress.
pub fn connstorm(addr: SocketAddr, duration: Duration, parallel: usize) -> io::Result<StormReport> {
    let tag = std::process::id();
    let start = Instant::now();
    let end = start + duration;
    let mut report = StormReport {
        completed: 0,
        failed: 0,
        unclosed: 0,
        elapsed: duration,
    };
    let mut cycles: Vec<Cycle> = Vec::with_capacity(parallel);
    let mut fds = Vec::with_capacity(parallel);
    let mut serial = 0u64;
    loop {
        let now = Instant::now();
        if now < end {
            while cycles.len() < parallel {
                serial += 1;
                match start_cycle(addr, &format!("mb{tag}c{serial}")) {
                    Ok(conn) => cycles.push(Cycle {
                        conn,
                        stage: Stage::AwaitConnAck,
                        since: now,
                    }),
                    Err(_) => {
                        report.failed += 1;
                        if report.failed > 1000 && report.completed == 0 {
                            return Err(io::Error::other("no connection succeeded"));
                        }
                        break;
                    }
                }
            }
        } else if cycles.is_empty() {
            break;
        }
        fds.clear();
        fds.extend(cycles.iter().map(|c| net::pollfd(c.conn.fd(), false)));
        net::poll(&mut fds, Duration::from_millis(10))?;
        let now = Instant::now();
        let mut fd_index = 0;
        cycles.retain_mut(|c| {
            let ready = fds.get(fd_index).is_some_and(|f| f.revents != 0);
            fd_index += 1;
            match step(c, ready, now) {
                Ok(StepResult::Continue) => true,
                Ok(StepResult::Done) => {
                    report.completed += 1;
                    false
                }
                Ok(StepResult::Unclosed) => {
                    report.completed += 1;
                    report.unclosed += 1;
                    false
                }
                Err(_) => {
                    report.failed += 1;
                    false
                }
            }
        });
    }
    report.elapsed = start.elapsed().min(duration + Duration::from_secs(2));
    Ok(report)
}

fn start_cycle(addr: SocketAddr, client_id: &str) -> io::Result<Conn> {
    let mut stream = TcpStream::connect_timeout(&addr, SETUP_TIMEOUT)?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(64);
    wire::connect(&mut buf, client_id, 60);
    stream.write_all(&buf)?;
    stream.set_nonblocking(true)?;
    Ok(Conn::new(stream))
}

enum StepResult {
    Continue,
    Done,
    Unclosed,
}

fn step(c: &mut Cycle, ready: bool, now: Instant) -> io::Result<StepResult> {
    let waited = now - c.since;
    if !ready {
        return match c.stage {
            Stage::AwaitConnAck if waited > SETUP_TIMEOUT => Err(io::ErrorKind::TimedOut.into()),
            Stage::AwaitClose if waited > Duration::from_secs(1) => Ok(StepResult::Unclosed),
            _ => Ok(StepResult::Continue),
        };
    }
    let closed = matches!(c.conn.fill()?, ReadOutcome::Closed);
    if let Stage::AwaitConnAck = c.stage {
        match c.conn.next_packet()? {
            Some(Packet::ConnAck { code: 0 }) => {
                wire::disconnect(&mut c.conn.wbuf);
                c.conn.flush()?;
                c.stage = Stage::AwaitClose;
                c.since = now;
            }
            Some(other) => {
                return Err(io::Error::other(format!("expected CONNACK, got {other:?}")))
            }
            None if closed => return Err(io::ErrorKind::UnexpectedEof.into()),
            None => return Ok(StepResult::Continue),
        }
    }
    if closed {
        Ok(StepResult::Done)
    } else {
        Ok(StepResult::Continue)
    }
}

/// Outcome of a retained replay.
pub struct RetainedReport {
    /// Retained topics stored.
    pub count: usize,
    /// Stored topics that the subscriber's filter matches.
    pub expected: usize,
    /// Distinct retained messages of ours delivered to the new subscriber.
    pub delivered: usize,
    /// Our messages delivered more than once.
    pub dup: u64,
    /// Deliveries without the retain flag set.
    pub not_retained: u64,
    /// Messages from topics that are not ours (a broker with other retained data).
    pub foreign: u64,
    /// Time from SUBSCRIBE to the last of our deliveries.
    pub elapsed: Duration,
    /// Time from SUBSCRIBE to the first of them: what the broker does before it sends any.
    pub first: Duration,
    /// Time the broker took to acknowledge all retained publishes.
    pub store_elapsed: Duration,
    /// Broker memory (VmRSS, kB) before storing and with every message stored, before the
    /// replay: the cost of a retained message at rest. Zero without a broker pid.
    pub rss_kb: (u64, u64),
    /// Broker VmHWM (kB) right after the replay; zero without a broker pid.
    pub hwm_kb: u64,
}

/// The rooms of [`RetainedTopics::Home`]; one topic in eight is a kitchen's.
const ROOMS: [&str; 8] = [
    "kitchen", "hall", "bath", "bedroom", "office", "garage", "attic", "cellar",
];

/// How the retained topics are named.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RetainedTopics {
    /// `PREFIX/r/N`, private to this run.
    Private,
    /// `sensors/N/ROOM`, about 20 bytes, a home installation's shape: a filter such as
    /// `sensors/+/kitchen/#` picks one topic in eight.
    Home,
}

/// What [`retained`] stores and how it subscribes.
pub struct RetainedOpts<'a> {
    /// Retained topics to store.
    pub count: usize,
    /// Payload bytes.
    pub size: usize,
    /// QoS of the new subscription.
    pub qos: u8,
    /// The new subscriber's filter.
    pub filter: &'a str,
    /// Topic names: private to this run or a home installation's.
    pub topics: RetainedTopics,
    /// Topic prefix of [`RetainedTopics::Private`].
    pub prefix: &'a str,
    /// The broker's process, for its memory; `None` skips the readings.
    pub pid: Option<u32>,
}

/// Publishes `count` retained messages (QoS 1, each acknowledged), then times a new subscriber
/// to `filter` at `qos` until it has every matching one (or [`QUIET`] passes without a new
/// one), then clears the retained topics again.
pub fn retained(addr: SocketAddr, o: &RetainedOpts<'_>) -> io::Result<RetainedReport> {
    let (count, size, qos, filter) = (o.count, o.size, o.qos, o.filter);
    let tag = std::process::id();
    let rss = |key| o.pid.map_or(Ok(0), |pid| net::proc_status_kb(pid, key));
    let rss_before = rss("VmRSS")?;
    let mut publisher = net::handshake(addr, &format!("mb{tag}rp"), 60, SETUP_TIMEOUT)?;
    publisher.go_nonblocking()?;
    let topics: Vec<String> = (0..count)
        .map(|i| match o.topics {
            RetainedTopics::Private => format!("{}/r/{i}", o.prefix),
            RetainedTopics::Home => format!("sensors/{i}/{}", ROOMS[i % ROOMS.len()]),
        })
        .collect();
    let expected = topics
        .iter()
        .filter(|t| wire::topic_matches(filter.as_bytes(), t.as_bytes()))
        .count();
    let mut payload = vec![b'r'; size];
    let store_start = Instant::now();
    for (i, t) in topics.iter().enumerate() {
        let id = (i % 65535) as u16 + 1;
        wire::publish_head(&mut publisher.wbuf, t.as_bytes(), 1, true, id, size);
        wire::stamp(&mut payload, 0, i as u64, 0);
        publisher.wbuf.extend_from_slice(&payload);
    }
    let mut acked = 0;
    pump(&mut publisher, |p, _| {
        if let Packet::PubAck(_) = p {
            acked += 1;
        }
        Ok(acked >= count)
    })
    .map_err(|e| io::Error::new(e.kind(), format!("storing retained messages: {e}")))?;
    let store_elapsed = store_start.elapsed();
    // The publisher's input is read and acknowledged: what the broker holds now is the store.
    let rss_stored = rss("VmRSS")?;

    let mut sub = net::handshake(addr, &format!("mb{tag}rs"), 60, SETUP_TIMEOUT)?;
    sub.go_nonblocking()?;
    let ours = match o.topics {
        RetainedTopics::Private => format!("{}/r/", o.prefix),
        RetainedTopics::Home => "sensors/".to_string(),
    };
    let mut seen = vec![false; count];
    let mut report = RetainedReport {
        count,
        expected,
        delivered: 0,
        dup: 0,
        not_retained: 0,
        foreign: 0,
        elapsed: Duration::ZERO,
        first: Duration::ZERO,
        store_elapsed,
        rss_kb: (rss_before, rss_stored),
        hwm_kb: 0,
    };
    let sub_start = Instant::now();
    wire::subscribe(&mut sub.wbuf, 1, filter.as_bytes(), qos);
    let mut last = sub_start;
    let mut first = None;
    let outcome = pump(&mut sub, |p, out| {
        if let Packet::Publish {
            qos: q,
            retain,
            topic,
            id,
            payload,
        } = p
        {
            match q {
                1 => wire::ack(out, PUBACK, *id),
                2 => wire::ack(out, PUBREC, *id),
                _ => {}
            }
            if !topic.starts_with(ours.as_bytes()) {
                report.foreign += 1;
                return Ok(false);
            }
            if !retain {
                report.not_retained += 1;
            }
            let index = wire::read_stamp(payload).map(|(_, seq, _)| seq as usize);
            match index.and_then(|i| seen.get_mut(i)) {
                Some(s) if !*s => {
                    *s = true;
                    report.delivered += 1;
                    last = Instant::now();
                    first.get_or_insert(last);
                }
                Some(_) => report.dup += 1,
                None => report.foreign += 1,
            }
        } else if let Packet::PubRel(id) = p {
            wire::ack(out, PUBCOMP, *id);
        } else if let Packet::SubAck { codes, .. } = p {
            if codes.first().is_none_or(|&c| c > 2) {
                return Err(io::Error::other("SUBSCRIBE refused"));
            }
        }
        Ok(report.delivered >= expected)
    });
    match outcome {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::TimedOut => {} // some never arrived: reported
        Err(e) => return Err(e),
    }
    report.elapsed = last - sub_start;
    report.first = first.map_or(Duration::ZERO, |t| t - sub_start);
    report.hwm_kb = rss("VmHWM")?;

    // Clear the retained topics (an empty retained payload deletes, MQTT-3.3.1-10).
    for t in &topics {
        wire::publish_head(&mut publisher.wbuf, t.as_bytes(), 0, true, 0, 0);
    }
    wire::pingreq(&mut publisher.wbuf);
    // The figures are taken: a broker slow to clear a large set (it answers nothing to QoS 0
    // publishes until the PINGRESP) does not void them.
    let _ = pump(&mut publisher, |p, _| Ok(matches!(p, Packet::PingResp)));
    for c in [&mut publisher, &mut sub] {
        wire::disconnect(&mut c.wbuf);
        let _ = c.flush();
    }
    Ok(report)
}

/// Writes pending output and feeds incoming packets to `on_packet` (which may queue replies in
/// the given buffer) until it returns `Ok(true)`; fails with `TimedOut` after [`QUIET`]
/// without input while nothing is left to write.
fn pump(
    conn: &mut Conn,
    mut on_packet: impl FnMut(&Packet<'_>, &mut Vec<u8>) -> io::Result<bool>,
) -> io::Result<()> {
    let mut replies = Vec::new();
    let mut quiet_since = Instant::now();
    loop {
        conn.flush()?;
        let mut fds = [net::pollfd(conn.fd(), conn.pending() > 0)];
        net::poll(&mut fds, Duration::from_millis(50))?;
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            if let ReadOutcome::Closed = conn.fill()? {
                return Err(io::Error::other("broker closed the connection"));
            }
            let mut done = false;
            while let Some(p) = conn.next_packet()? {
                quiet_since = Instant::now();
                done |= on_packet(&p, &mut replies)?;
            }
            conn.wbuf.append(&mut replies);
            if done {
                conn.flush()?;
                return Ok(());
            }
        } else if conn.pending() == 0 && quiet_since.elapsed() > QUIET {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "broker went quiet"));
        }
    }
}

/// Outcome of a connection burst.
pub struct BurstReport {
    /// Connections that got their CONNACK.
    pub connected: usize,
    /// Connections refused, reset or not acknowledged within the timeout.
    pub failed: usize,
    /// From the first connect to the last CONNACK.
    pub elapsed: Duration,
}

/// A connection storm of a given size: opens `n` connections as fast as the broker accepts
/// them, `parallel` handshakes in progress at once, and keeps every one open, so the broker
/// ends up holding all `n`; then disconnects them all.
pub fn burst(addr: SocketAddr, n: usize, parallel: usize) -> io::Result<BurstReport> {
    net::raise_fd_limit();
    let tag = std::process::id();
    let start = Instant::now();
    let mut open: Vec<Conn> = Vec::with_capacity(n);
    let mut pending: Vec<Cycle> = Vec::with_capacity(parallel);
    let mut fds = Vec::with_capacity(parallel);
    let (mut started, mut failed) = (0, 0);
    while started < n || !pending.is_empty() {
        while started < n && pending.len() < parallel {
            started += 1;
            match start_cycle(addr, &format!("mb{tag}b{started}")) {
                Ok(conn) => pending.push(Cycle {
                    conn,
                    stage: Stage::AwaitConnAck,
                    since: Instant::now(),
                }),
                Err(_) => failed += 1,
            }
        }
        fds.clear();
        fds.extend(pending.iter().map(|c| net::pollfd(c.conn.fd(), false)));
        net::poll(&mut fds, Duration::from_millis(10))?;
        let now = Instant::now();
        // Walk backwards so that swap_remove leaves the unvisited entries (and their pollfds)
        // where they were.
        for k in (0..pending.len()).rev() {
            let ready = fds.get(k).is_some_and(|f| f.revents != 0);
            let c = &mut pending[k];
            let outcome = if ready {
                match c.conn.fill() {
                    Ok(ReadOutcome::Open) => match c.conn.next_packet() {
                        Ok(Some(Packet::ConnAck { code: 0 })) => Some(true),
                        Ok(None) => None,
                        _ => Some(false),
                    },
                    _ => Some(false),
                }
            } else if now - c.since > SETUP_TIMEOUT {
                Some(false)
            } else {
                None
            };
            match outcome {
                Some(true) => open.push(pending.swap_remove(k).conn),
                Some(false) => {
                    pending.swap_remove(k);
                    failed += 1;
                }
                None => {}
            }
        }
    }
    let elapsed = start.elapsed();
    for c in &mut open {
        wire::disconnect(&mut c.wbuf);
        let _ = c.flush();
    }
    Ok(BurstReport {
        connected: open.len(),
        failed,
        elapsed,
    })
}
