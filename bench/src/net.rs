//! Sockets: a non-blocking connection with its read and write buffers, the blocking MQTT
//! handshake used while setting a run up, `ppoll` over many connections, and /proc readings of
//! the broker under test.

use crate::wire::{self, Packet};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Read buffer size per connection; a read drains at most this much at once.
const READ_CHUNK: usize = 128 * 1024;

/// A connection with buffered input (possibly ending in a partial packet) and pending output.
pub struct Conn {
    /// The socket, non-blocking once the handshake is done.
    pub stream: TcpStream,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    /// Bytes queued for writing; `wpos` of them are already written.
    pub wbuf: Vec<u8>,
    wpos: usize,
}

/// Result of draining a socket.
pub enum ReadOutcome {
    /// Some bytes were read (maybe zero if the socket had none).
    Open,
    /// The peer closed the connection.
    Closed,
}

impl Conn {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            rbuf: Vec::new(),
            rstart: 0,
            rend: 0,
            wbuf: Vec::new(),
            wpos: 0,
        }
    }

    /// The raw file descriptor, for `ppoll`.
    pub fn fd(&self) -> i32 {
        self.stream.as_raw_fd()
    }

    /// Reads once into the buffer, keeping any partial packet at the front.
    pub fn fill(&mut self) -> io::Result<ReadOutcome> {
        if self.rstart == self.rend {
            self.rstart = 0;
            self.rend = 0;
        } else if self.rstart > 0 && self.rbuf.len() - self.rend < READ_CHUNK / 2 {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            self.rend -= self.rstart;
            self.rstart = 0;
        }
        if self.rbuf.len() - self.rend < READ_CHUNK / 2 {
            let grow = (self.rend + READ_CHUNK).max(self.rbuf.len());
            if grow > wire::MAX_PACKET + READ_CHUNK {
                return Err(io::Error::other("read buffer limit exceeded"));
            }
            self.rbuf.resize(grow, 0);
        }
        loop {
            match self.stream.read(&mut self.rbuf[self.rend..]) {
                Ok(0) => return Ok(ReadOutcome::Closed),
                Ok(n) => {
                    self.rend += n;
                    return Ok(ReadOutcome::Open);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(ReadOutcome::Open),
                Err(e) => return Err(e),
            }
        }
    }

    /// Decodes the next complete packet from the buffer and consumes it.
    pub fn next_packet(&mut self) -> io::Result<Option<Packet<'_>>> {
        match wire::decode(&self.rbuf[self.rstart..self.rend]) {
            Ok(Some((packet, n))) => {
                self.rstart += n;
                Ok(Some(packet))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(io::Error::new(ErrorKind::InvalidData, e.to_string())),
        }
    }

    /// Decodes the next complete packet, returning it with its raw bytes (for forwarding).
    pub fn next_raw(&mut self) -> io::Result<Option<(Packet<'_>, &[u8])>> {
        let buf = &self.rbuf[self.rstart..self.rend];
        match wire::decode(buf) {
            Ok(Some((packet, n))) => {
                self.rstart += n;
                Ok(Some((packet, &buf[..n])))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(io::Error::new(ErrorKind::InvalidData, e.to_string())),
        }
    }

    /// Bytes still waiting to be written.
    pub fn pending(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Writes as much pending output as the socket takes; `Ok(true)` when all of it went out.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Ok(true)
    }
}

/// Opens a TCP connection, sends CONNECT and waits (blocking, up to `timeout`) for an accepting
/// CONNACK; the returned connection is still blocking (with that read timeout) and has Nagle
/// off; call [`Conn::go_nonblocking`] before putting it in a poll loop.
pub fn handshake(
    addr: SocketAddr,
    client_id: &str,
    keepalive: u16,
    timeout: Duration,
) -> io::Result<Conn> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut conn = Conn::new(stream);
    wire::connect(&mut conn.wbuf, client_id, keepalive);
    conn.stream.write_all(&conn.wbuf)?;
    conn.wbuf.clear();
    let code = wait_for(&mut conn, |p| match p {
        Packet::ConnAck { code } => Some(*code),
        _ => None,
    })?;
    if code != 0 {
        return Err(io::Error::other(format!(
            "broker refused CONNECT of {client_id}: return code {code}"
        )));
    }
    Ok(conn)
}

/// Blocking: reads packets until `pick` returns `Some`, discarding the others. The stream must
/// have a read timeout set, or be non-blocking with the caller prepared for `WouldBlock`.
pub fn wait_for<T>(
    conn: &mut Conn,
    mut pick: impl FnMut(&Packet<'_>) -> Option<T>,
) -> io::Result<T> {
    loop {
        while let Some(p) = conn.next_packet()? {
            if let Some(v) = pick(&p) {
                return Ok(v);
            }
        }
        let mut chunk = [0u8; 4096];
        let n = match conn.stream.read(&mut chunk) {
            Ok(0) => return Err(io::Error::other("broker closed the connection")),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(io::Error::new(
                    ErrorKind::TimedOut,
                    "no reply from the broker",
                ))
            }
            Err(e) => return Err(e),
        };
        conn.push_bytes(&chunk[..n]);
    }
}

impl Conn {
    /// Switches the socket to non-blocking mode for the poll loop.
    pub fn go_nonblocking(&mut self) -> io::Result<()> {
        self.stream.set_read_timeout(None)?;
        self.stream.set_nonblocking(true)
    }

    /// Writes all pending output, blocking (setup and teardown only).
    pub fn write_pending_blocking(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.wbuf[self.wpos..])?;
        self.wbuf.clear();
        self.wpos = 0;
        Ok(())
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        self.rbuf.truncate(self.rend);
        self.rbuf.extend_from_slice(bytes);
        self.rend = self.rbuf.len();
    }
}

/// A level-triggered epoll set, for the scale scenarios' thousands of connections: waiting
/// costs the ready ones, where `ppoll` walks every descriptor each time (a fifth of the
/// generator's CPU with 1 000 connections).
pub struct Epoll {
    fd: std::os::fd::OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    /// An empty set returning at most `capacity` events per wait.
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: plain system call; the descriptor it returns is owned from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let empty = libc::epoll_event { events: 0, u64: 0 };
        Ok(Epoll {
            fd,
            events: vec![empty; capacity.clamp(1, 4096)],
        })
    }

    /// Watches `fd` for input (and for room to write if `out`), reported with `token`.
    pub fn add(&self, fd: i32, token: u64, out: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, out)
    }

    /// Changes whether `fd` is also watched for room to write.
    pub fn set_out(&self, fd: i32, token: u64, out: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, out)
    }

    fn ctl(&self, op: i32, fd: i32, token: u64, out: bool) -> io::Result<()> {
        let flags = libc::EPOLLIN | libc::EPOLLRDHUP | if out { libc::EPOLLOUT } else { 0 };
        let mut ev = libc::epoll_event {
            events: flags as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid event for the duration of the call.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits at most `timeout`; returns the ready (token, events) pairs.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Vec<(u64, u32)>> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `events` is a valid, exclusively borrowed buffer of its length.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        Ok(self.events[..n as usize]
            .iter()
            .map(|e| (e.u64, e.events))
            .collect())
    }
}

/// `ppoll` over `fds`, waiting at most `timeout`; returns the number of ready descriptors.
pub fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `fds` is a valid, exclusively borrowed slice of pollfd for the whole call, and
    // `ts` outlives it; a null signal mask means "leave the mask alone".
    let n = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// A pollfd entry for `fd` with the given interest.
pub fn pollfd(fd: i32, want_write: bool) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN | if want_write { libc::POLLOUT } else { 0 },
        revents: 0,
    }
}

/// Raises the soft open-file limit to the hard limit (thousands of idle connections).
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls with a valid, initialised rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// A value in kB from /proc/PID/status (e.g. `VmRSS`, `VmHWM`).
pub fn proc_status_kb(pid: u32, key: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .ok_or_else(|| io::Error::other(format!("no {key} in /proc/{pid}/status")))
}

/// Context switches (voluntary + involuntary) summed over all threads of `pid`: how often the
/// process was woken up or preempted.
pub fn context_switches(pid: u32) -> io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path().join("status");
        let Ok(text) = std::fs::read_to_string(path) else {
            continue; // the thread exited meanwhile
        };
        for l in text.lines() {
            if let Some(rest) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += rest.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// CPU time (user + system) of `pid` in milliseconds, from /proc/PID/stat.
pub fn cpu_ms(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok((ticks(11) + ticks(12)) * 1000 / hz)
}
