//! Moving bytes between sockets and the broker: one read path and one flush path for every
//! connection, plain TCP or with a [`Transport`] (TLS, WebSocket, a bridge's client TLS).
//!
//! Reading hands each 64 KiB chunk to the broker (through the transport, if any) and flushes
//! what the broker wrote after each chunk, so buffers stay small; a socket still readable after
//! its budget goes on the backlog for the next turn (readiness is edge-triggered, so the loop
//! must remember). Flushing writes as much as the socket takes and asks for WRITABLE only while
//! bytes are left. A plain TCP client writes the broker's output buffer straight to the socket,
//! without a copy. A transport failure closes only that connection, with a log line naming the
//! peer (or the bridge) and the cause.
//!
//! This module does not decide anything about MQTT: the broker does.

use super::listeners::{self, Listener};
use super::{Server, Tok};
use crate::auth::CertIdentity;
use crate::broker::{Broker, ConnId, LoopFigures};
use crate::http::Pages;
use crate::transport::{Status, Transport, TransportError, Upstream};
use mio::net::TcpStream;
use mio::{Interest, Poll};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// Bytes read from a socket in one call.
pub(super) const READ_CHUNK: usize = 64 * 1024;
/// Reads per socket per loop turn, so one busy publisher cannot starve the others.
const READS_PER_TURN: usize = 4;

/// A client socket and the loop's bookkeeping for it.
///
/// Kept small (thousands of idle clients): what only TLS, WebSocket and bridge connections
/// need lives in [`ClientExtra`], allocated for those alone.
pub(super) struct Client {
    pub(super) stream: TcpStream,
    pub(super) origin: Origin,
    /// WRITABLE is part of the registered interest.
    pub(super) wants_write: bool,
    /// `None` for a plain TCP client of a listener.
    pub(super) extra: Option<Box<ClientExtra>>,
}

/// Where a connection came from.
pub(super) enum Origin {
    /// Accepted on the listener socket with this index in `Server::listeners`.
    Listener(u16),
    /// Opened by the loop for a bridge.
    Bridge,
}

/// The part of a [`Client`] that plain TCP clients do without.
pub(super) struct ClientExtra {
    /// The peer, for transport log lines (the broker has its own copy for MQTT ones).
    pub(super) peer: SocketAddr,
    /// TLS and/or WebSocket layers; `None` for a bridge over plain TCP.
    pub(super) transport: Option<Transport>,
    /// An outgoing bridge connection still being established: the bridge's index.
    pub(super) connecting: Option<usize>,
    /// For outgoing bridge connections, "NAME (host:port)", the subject of transport log
    /// lines.
    pub(super) bridge: Option<String>,
    /// The transport is done (an HTTP answer that ends the connection, a WebSocket close):
    /// the connection closes once its last bytes are written.
    pub(super) closing: bool,
}

/// What writing a connection's pending output did.
struct Written {
    /// Bytes of the broker's output taken: written to the socket, or given to the transport.
    taken: usize,
    /// Why the connection must close, if it must.
    failure: Option<String>,
}

impl Client {
    pub(super) fn connecting(&self) -> Option<usize> {
        self.extra.as_ref().and_then(|e| e.connecting)
    }

    fn bridge(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.bridge.as_deref())
    }

    pub(super) fn transport(&mut self) -> Option<&mut Transport> {
        self.extra.as_mut().and_then(|e| e.transport.as_mut())
    }

    /// Writes as much of `out` as the socket takes: straight to the socket for plain TCP,
    /// through the transport otherwise (which may also have bytes of its own to write).
    fn write_out(&mut self, out: &[u8]) -> Written {
        match self.extra.as_mut().and_then(|e| e.transport.as_mut()) {
            None => write_plain(&mut self.stream, out),
            Some(transport) => write_through(transport, &mut self.stream, out),
        }
    }
}

/// Plain TCP: the broker's buffer goes to the socket as it is.
fn write_plain(stream: &mut TcpStream, out: &[u8]) -> Written {
    let mut taken = 0;
    while taken < out.len() {
        match stream.write(&out[taken..]) {
            Ok(0) => {
                return Written {
                    taken,
                    failure: Some("connection closed while writing".to_string()),
                }
            }
            Ok(n) => taken += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                return Written {
                    taken,
                    failure: Some(e.to_string()),
                }
            }
        }
    }
    Written {
        taken,
        failure: None,
    }
}

/// A transport takes as much of the output as its layers can buffer, then writes to the
/// socket until it would block; repeated while both make progress.
fn write_through(transport: &mut Transport, stream: &mut TcpStream, out: &[u8]) -> Written {
    let mut taken = 0;
    loop {
        let n = transport.send(&out[taken..]);
        taken += n;
        match transport.write_to(stream) {
            Ok(false) if n > 0 && taken < out.len() => continue,
            Ok(_) => {
                return Written {
                    taken,
                    failure: None,
                }
            }
            Err(e) => {
                return Written {
                    taken,
                    failure: Some(e.to_string()),
                }
            }
        }
    }
}

/// The broker, as the place transports deliver to.
struct ToBroker<'a> {
    broker: &'a mut Broker,
    /// For the connection counts of `/metrics`.
    listeners: &'a [Listener],
    id: ConnId,
    now: Instant,
}

impl Pages for ToBroker<'_> {
    fn login(&mut self, username: &str, password: &[u8]) -> bool {
        self.broker.http_login(self.id, username, password)
    }

    fn metrics(&mut self, out: &mut String) {
        let figures = LoopFigures {
            listeners: listeners::connection_counts(self.listeners),
            resident_memory_bytes: resident_memory(),
        };
        self.broker.write_metrics(self.now, &figures, out);
    }
}

/// The process's resident memory (`/proc/self/statm`: pages), where the system tells it.
fn resident_memory() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page_size).ok()?)
}

impl Upstream for ToBroker<'_> {
    fn certificate_identity(&mut self, identity: CertIdentity) {
        self.broker.handle_certificate_identity(self.id, identity);
    }

    fn mqtt_bytes(&mut self, bytes: &[u8]) {
        self.broker.handle_bytes(self.id, bytes, self.now);
    }
}

impl Server {
    /// Reads from a connection, up to its budget for this turn; a transport, if any, turns
    /// the bytes into MQTT bytes for the broker.
    ///
    /// `to_the_end`: read until the socket says `WouldBlock` (or closed). Otherwise a short
    /// read ends it: the socket's queue was empty at that moment, and anything arriving later,
    /// an end of file included, raises a new edge. That saves a `read` returning `EAGAIN` per
    /// readiness event, a third of the system calls of a subscriber sending acknowledgements.
    /// An event that already says the peer closed (or failed) reads to the end, since its end
    /// of file raises no further edge.
    pub(super) fn read_conn(&mut self, id: ConnId, now: Instant, to_the_end: bool) {
        if self.broker.holds_input(id) && self.broker.wants_input(id) {
            // PUBLISHes held back until the store caught up go before anything new.
            self.broker.handle_bytes(id, &[], now);
            self.flush_dirty(now);
        }
        for _ in 0..READS_PER_TURN {
            if self.pause_if_unwanted(id) {
                return;
            }
            let Some(client) = self.clients.get_mut(id) else {
                return;
            };
            let n = match client.stream.read(&mut self.read_buf) {
                Ok(0) => return self.peer_closed(id, now),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.drop_client(id, Some(e.to_string()), now),
            };
            let Some(transport) = client.transport() else {
                self.broker.handle_bytes(id, &self.read_buf[..n], now);
                self.flush_dirty(now);
                if n < self.read_buf.len() && !to_the_end {
                    self.pause_if_unwanted(id);
                    return;
                }
                continue;
            };
            let mut up = ToBroker {
                broker: &mut self.broker,
                listeners: &self.listeners,
                id,
                now,
            };
            match transport.received(&self.read_buf[..n], &mut up) {
                Ok(Status::Open) => {
                    self.flush_dirty(now);
                    // The transport may have answered by itself (handshake, pong).
                    self.flush(id, now);
                    if n < self.read_buf.len() && !to_the_end {
                        self.pause_if_unwanted(id);
                        return;
                    }
                }
                Ok(Status::Closed) => {
                    self.flush_dirty(now);
                    self.flush(id, now);
                    // A long last answer (an HTTP file) may not have fit in the socket: the
                    // connection then closes once `flush` has written it.
                    let extra = self.clients.get_mut(id).and_then(|c| c.extra.as_mut());
                    if let Some(extra) = extra {
                        if extra.transport.as_ref().is_some_and(Transport::wants_write) {
                            extra.closing = true;
                            return;
                        }
                    }
                    return self.drop_client(id, None, now);
                }
                Err(e) => return self.transport_failed(id, e, now),
            }
        }
        self.backlog.push(id);
    }

    /// Back-pressure: if the broker wants no more of connection `id`'s bytes for now, leaves
    /// them in the kernel and remembers to come back (`end_turn`) once queues drain or the
    /// store catches up. True if so.
    fn pause_if_unwanted(&mut self, id: ConnId) -> bool {
        if self.broker.wants_input(id) {
            return false;
        }
        if !self.paused.contains(&id) {
            self.paused.push(id);
        }
        true
    }

    /// The peer closed the socket. A remote broker that hangs up during our TLS handshake is
    /// worth a line of its own: otherwise the bridge just seems to flap.
    fn peer_closed(&mut self, id: ConnId, now: Instant) {
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        let handshaking = client.transport().is_some_and(|t| t.handshaking());
        if let (Some(bridge), true) = (client.bridge(), handshaking) {
            log::error!(
                "Error: Bridge {bridge} TLS handshake failed: the remote broker closed the \
                 connection (is that port a TLS listener? does it want a client certificate?)."
            );
            return self.drop_client(id, Some("TLS error".to_string()), now);
        }
        self.drop_client(id, None, now)
    }

    /// A transport gave up: say why, send its last words (alert, close frame, HTTP 400) if
    /// the socket takes them, and close the connection. For a bridge, the broker then counts a
    /// failed attempt and retries after its back-off.
    fn transport_failed(&mut self, id: ConnId, error: TransportError, now: Instant) {
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        match (client.bridge(), client.extra.as_ref()) {
            (Some(bridge), _) => log::error!("Error: Bridge {bridge} {error}."),
            (None, Some(extra)) => log::info!(target: "notice", "Client {} {error}.", extra.peer),
            (None, None) => log::info!(target: "notice", "Client {error}."),
        }
        if let Some(transport) = client.extra.as_mut().and_then(|e| e.transport.as_mut()) {
            let _ = transport.write_to(&mut client.stream);
        }
        let _ = client.stream.shutdown(std::net::Shutdown::Both);
        let short = match error {
            TransportError::Tls(_) => "TLS error",
            TransportError::WebSocket(_) => "WebSocket error",
        };
        self.drop_client(id, Some(short.to_string()), now);
    }

    /// Writes output of every connection the broker wrote to, until it writes no more: a
    /// socket that took everything lets the broker move queued messages into the output
    /// (`handle_written`), and no event would come to write those if this stopped at one
    /// round (the socket asks for WRITABLE only while bytes are left). It ends when the queues
    /// are empty or the sockets are full.
    pub(super) fn flush_dirty(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        loop {
            self.broker.poll_dirty(&mut dirty);
            if dirty.is_empty() {
                break;
            }
            for &id in &dirty {
                self.flush(id, now);
            }
        }
        self.dirty = dirty;
    }

    /// Writes as much of a connection's pending output as the socket takes, and asks for
    /// WRITABLE only while something is left.
    pub(super) fn flush(&mut self, id: ConnId, now: Instant) {
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        let mut none = Vec::new();
        let out = match self.broker.poll_transmit(id) {
            Some(out) => out,
            // A transport may have bytes of its own to write (handshake, pong, alert).
            None if client.extra.as_ref().is_some_and(|e| e.transport.is_some()) => &mut none,
            None => return,
        };
        let Written { taken, failure } = client.write_out(out);
        if taken == out.len() {
            // Emptied: the broker gives the buffer back (`handle_written`), so an idle
            // connection holds no output memory, and the next one to write reuses it.
            out.clear();
        } else {
            out.drain(..taken);
        }
        let pending = !out.is_empty() || client.transport().is_some_and(|t| t.wants_write());
        if let Some(e) = failure {
            return self.drop_client(id, Some(e), now);
        }
        follow_output(&self.poll, client, id, pending);
        let done = !pending && client.extra.as_ref().is_some_and(|e| e.closing);
        if taken > 0 || out.is_empty() {
            self.broker.handle_written(id, taken);
        }
        if done {
            self.drop_client(id, None, now);
        }
    }
}

/// Interest follows pending output: ask for WRITABLE only while the client has bytes left
/// to write, and only re-register when that changes.
fn follow_output(poll: &Poll, client: &mut Client, id: ConnId, pending: bool) {
    if pending == client.wants_write {
        return;
    }
    let interest = if pending {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    };
    if poll
        .registry()
        .reregister(&mut client.stream, Tok::Conn(id).into(), interest)
        .is_ok()
    {
        client.wants_write = pending;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_plain_tcp_client_is_small() {
        // Guards the per-connection memory budget: grow it only on purpose. (mio's socket is
        // 4 bytes, a file descriptor, in release builds; debug builds add a check.)
        let socket = std::mem::size_of::<mio::net::TcpStream>();
        assert!(
            std::mem::size_of::<super::Client>() <= (socket + 3).next_multiple_of(8) + 16,
            "{socket} {}",
            std::mem::size_of::<super::Client>()
        );
    }
}
