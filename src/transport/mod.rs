//! Transports: what lies between a client's TCP socket and the MQTT bytes the broker reads.
//!
//! Four kinds of listener, one loop:
//!
//! - plain TCP: no transport at all. The loop hands the bytes it read straight to the broker
//!   and writes the broker's output buffer straight to the socket; this is the fast path and
//!   it stays free of copies (see `server.rs`);
//! - TLS ([`tls`]): rustls decrypts what the socket delivered and encrypts what the broker
//!   wrote;
//! - WebSockets ([`ws`]): tungstenite answers the HTTP upgrade, then unwraps binary frames
//!   into MQTT bytes and wraps broker output into frames; other HTTP requests are answered by
//!   [`crate::http`] when the listener serves files or pages (`http_dir`, `metrics`);
//! - WebSockets over TLS (`wss`): both, TLS below WebSocket.
//!
//! Outgoing bridge connections use the same [`Transport`] with a client-side TLS session
//! ([`tls_client`]): the broker writes CONNECT as it would on plain TCP and the layer below
//! encrypts it once the handshake is done.
//!
//! A [`Transport`] stacks the layers a listener needs. Like the broker it is sans-IO: it never
//! reads a socket. The loop feeds it the bytes it read ([`Transport::received`]), offers it the
//! broker's output ([`Transport::send`], which takes only what the layers can buffer, so a slow
//! client still pushes back on the broker), and lets it write to the socket
//! ([`Transport::write_to`]) until the socket would block. A layer may have bytes of its own to
//! send at any time (handshake answers, pongs, alerts, close frames), so the loop asks
//! [`Transport::wants_write`] rather than looking only at the broker's output.

pub(crate) mod tls;
pub(crate) mod tls_client;
pub(crate) mod ws;
mod x509;

use crate::auth::CertIdentity;
use std::fmt;
use std::io::{self, ErrorKind, Write};
use tls::{TlsError, TlsSession};
use ws::{WsError, WsSession, WsStatus};

/// Decrypted bytes above this capacity are not kept between reads.
const PLAIN_KEEP: usize = 256 * 1024;

/// Where a transport delivers what it unwrapped; it also answers for the built-in HTTP pages
/// of a WebSocket listener.
pub(crate) trait Upstream: crate::http::Pages {
    /// The TLS handshake finished and the listener takes usernames from certificates. Comes
    /// before any MQTT byte.
    fn certificate_identity(&mut self, identity: CertIdentity);
    /// MQTT bytes, in order, split anywhere.
    fn mqtt_bytes(&mut self, bytes: &[u8]);
}

/// Whether the client is still talking after [`Transport::received`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Open,
    /// The client closed the transport cleanly (TLS close_notify, WebSocket close frame);
    /// any answer is queued, and the connection can be dropped once it is written.
    Closed,
}

/// Why a transport gave up on a connection. The text is the tail of a log line
/// ("Client 127.0.0.1:5555 TLS handshake failed: ...").
#[derive(Debug)]
pub(crate) enum TransportError {
    Tls(TlsError),
    WebSocket(WsError),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Tls(e) => e.fmt(f),
            TransportError::WebSocket(e) => e.fmt(f),
        }
    }
}

/// The layers of one connection, lowest first: TLS, then WebSocket.
pub(crate) struct Transport {
    tls: Option<TlsSession>,
    ws: Option<WsSession>,
    /// Plaintext from TLS, on its way up (reused between reads).
    plain: Vec<u8>,
}

impl Transport {
    /// A transport with the given layers (at least one; plain TCP needs no transport).
    pub(crate) fn new(tls: Option<TlsSession>, ws: Option<WsSession>) -> Transport {
        Transport {
            tls,
            ws,
            plain: Vec::new(),
        }
    }

    /// Feeds bytes read from the socket; unwrapped MQTT bytes go to `up`.
    pub(crate) fn received(
        &mut self,
        data: &[u8],
        up: &mut dyn Upstream,
    ) -> Result<Status, TransportError> {
        let mut status = Status::Open;
        let bytes: &[u8] = match &mut self.tls {
            Some(tls) => {
                self.plain.clear();
                let got = tls
                    .received(data, &mut self.plain)
                    .map_err(TransportError::Tls)?;
                if let Some(identity) = got.identity {
                    up.certificate_identity(identity);
                }
                if got.peer_closed {
                    status = Status::Closed;
                }
                &self.plain
            }
            None => data,
        };
        match &mut self.ws {
            Some(ws) => {
                let ws_status = ws
                    .received(bytes, &mut *up)
                    .map_err(TransportError::WebSocket);
                self.pump();
                if ws_status? == WsStatus::Closed {
                    status = Status::Closed;
                }
            }
            None => up.mqtt_bytes(bytes),
        }
        if self.plain.capacity() > PLAIN_KEEP {
            self.plain = Vec::new();
        }
        Ok(status)
    }

    /// Takes as much broker output as the layers will buffer; returns how many bytes.
    pub(crate) fn send(&mut self, mqtt: &[u8]) -> usize {
        let taken = match (&mut self.ws, &mut self.tls) {
            (Some(ws), _) => ws.send(mqtt),
            (None, Some(tls)) => tls.send(mqtt),
            (None, None) => 0,
        };
        self.pump();
        taken
    }

    /// Moves WebSocket output into TLS (for `wss`), as far as TLS takes it.
    fn pump(&mut self) {
        if let (Some(ws), Some(tls)) = (&mut self.ws, &mut self.tls) {
            let n = tls.send(ws.pending());
            ws.consume(n);
        }
    }

    /// Writes to the socket until nothing is left or it would block (`Ok(true)`).
    pub(crate) fn write_to(&mut self, socket: &mut dyn Write) -> io::Result<bool> {
        loop {
            self.pump();
            match (&mut self.tls, &mut self.ws) {
                (Some(tls), ws) => {
                    if tls.write_to(socket)? {
                        return Ok(true);
                    }
                    // rustls is empty; WebSocket bytes that did not fit may wait still.
                    if ws.as_ref().is_none_or(|ws| ws.pending().is_empty()) {
                        return Ok(false);
                    }
                }
                (None, Some(ws)) => {
                    while !ws.pending().is_empty() {
                        match socket.write(ws.pending()) {
                            Ok(0) => return Err(ErrorKind::WriteZero.into()),
                            Ok(n) => ws.consume(n),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    return Ok(false);
                }
                (None, None) => return Ok(false),
            }
        }
    }

    /// True while a TLS layer has not completed its handshake.
    pub(crate) fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(TlsSession::is_handshaking)
    }

    /// True while bytes of the transport's own wait for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(TlsSession::wants_write)
            || self.ws.as_ref().is_some_and(|ws| !ws.pending().is_empty())
    }

    /// Queues the goodbyes (WebSocket close frame, TLS close_notify) before the socket is
    /// closed.
    pub(crate) fn close(&mut self) {
        if let Some(ws) = &mut self.ws {
            ws.close();
        }
        self.pump();
        if let Some(tls) = &mut self.tls {
            tls.close();
        }
    }
}
