//! MQTT over WebSockets with tungstenite, driven by the loop without blocking.
//!
//! A WebSocket connection starts with an HTTP upgrade request. tungstenite parses it and builds
//! the `101 Switching Protocols` answer; midge picks the subprotocol (`mqtt`, or `mqttv3.1`
//! for old clients). After that, tungstenite's `WebSocketContext` does the framing: each binary
//! message carries MQTT bytes, and since the broker's framing already copes with any split,
//! an MQTT packet may span several frames or a frame hold several packets. Pings are answered
//! with pongs and a close frame with a close frame, by tungstenite.
//!
//! The session never touches the socket: bytes from below (the socket, or TLS plaintext for
//! `wss`) go in through [`WsSession::received`], and everything tungstenite writes lands in an
//! output buffer the layer below drains ([`WsSession::pending`], [`WsSession::consume`]).
//! Broker output is only framed while that buffer is short, so a slow reader pushes back on the
//! broker as a TCP socket would. A bad upgrade request, a text frame, an oversized frame or a
//! protocol violation ends the connection (after a `400` or a close frame) with a log line.
//!
//! A listener with `http_dir` or `metrics` answers requests that are not upgrades instead of
//! refusing them: the request is read with httparse first, and only an upgrade goes on to
//! tungstenite; the others are answered by [`crate::http`], one after the other while they
//! come.

use super::Upstream;
use crate::http::{self, Site};
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::sync::Arc;
use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{create_response, write_response, Request};
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Message};

/// The largest upgrade request accepted (Mosquitto's `websockets_headers_size` is for the
/// same purpose; browsers with cookies send a few KiB).
const MAX_REQUEST: usize = 16 * 1024;
/// Broker output is framed only while less than this waits for the socket.
const OUTPUT_LIMIT: usize = 64 * 1024;
/// tungstenite's read buffer per connection (its default of 128 KiB is a lot for each of
/// thousands of idle sensors).
const READ_BUFFER: usize = 16 * 1024;
/// Subprotocols midge speaks, preferred first ([MQTT-6.0.0-3]: "mqtt"; "mqttv3.1" is what
/// MQTT 3.1 clients ask for).
const SUBPROTOCOLS: &[&str] = &["mqtt", "mqttv3.1"];
/// The answer to a request that is not a WebSocket upgrade.
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// The stream tungstenite reads and writes: input from a slice, output into a buffer.
struct Feed<'a> {
    input: &'a [u8],
    output: &'a mut Vec<u8>,
}

impl Read for Feed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            // "No more bytes for now": tungstenite keeps any partial frame and returns.
            return Err(ErrorKind::WouldBlock.into());
        }
        self.input.read(buf)
    }
}

impl Write for Feed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a WebSocket connection is.
enum State {
    /// Collecting the HTTP upgrade request (or, on a listener that serves HTTP, the next
    /// request of any kind).
    Upgrading { request: Vec<u8> },
    /// Upgraded: frames both ways.
    Open(Box<WebSocketContext>),
    /// Failed or closed: nothing more is read.
    Done,
}

/// What a [`WsSession::received`] call saw besides MQTT bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WsStatus {
    Open,
    /// The client sent a close frame (answered) or the close handshake finished.
    Closed,
}

/// One client's WebSocket state.
pub(crate) struct WsSession {
    state: State,
    config: WebSocketConfig,
    /// Bytes for the layer below, from `out_start` on.
    out: Vec<u8>,
    out_start: usize,
    /// What the listener serves to requests that are not upgrades; `None`: they get `400`.
    site: Option<Arc<Site>>,
}

impl WsSession {
    /// A session waiting for its upgrade request. `max_message` bounds one frame and one
    /// message (a message may hold several MQTT packets, but not more than this).
    pub(crate) fn new(max_message: usize, site: Option<Arc<Site>>) -> WsSession {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        WsSession {
            state: State::Upgrading {
                request: Vec::new(),
            },
            config,
            out: Vec::new(),
            out_start: 0,
            site,
        }
    }

    /// Feeds bytes from below; MQTT bytes go to `up`, which also answers for the built-in
    /// HTTP pages.
    pub(crate) fn received(
        &mut self,
        data: &[u8],
        up: &mut dyn Upstream,
    ) -> Result<WsStatus, WsError> {
        let mut data = data;
        let upgraded_tail;
        if let State::Upgrading { request } = &mut self.state {
            request.extend_from_slice(data);
            if let Some(site) = self.site.clone() {
                if let Some(status) = self.answer_http(&site, up) {
                    return Ok(status);
                }
            }
            match self.upgrade() {
                Ok(Some(tail)) => {
                    upgraded_tail = tail;
                    data = &upgraded_tail;
                }
                Ok(None) => return Ok(WsStatus::Open),
                Err(e) => {
                    self.push_out(BAD_REQUEST);
                    self.state = State::Done;
                    return Err(e);
                }
            }
        }
        let State::Open(ctx) = &mut self.state else {
            return Ok(WsStatus::Closed);
        };
        let mut feed = Feed {
            input: data,
            output: &mut self.out,
        };
        let mut status = WsStatus::Open;
        let failure = loop {
            match ctx.read(&mut feed) {
                Ok(Message::Binary(bytes)) => up.mqtt_bytes(&bytes),
                Ok(Message::Text(_)) => break Some((WsError::TextFrame, CloseCode::Unsupported)),
                Ok(Message::Close(_)) => status = WsStatus::Closed,
                // Pings are answered by tungstenite (the pong is written below); pongs need
                // nothing.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break None,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    status = WsStatus::Closed;
                    break None;
                }
                Err(tungstenite::Error::Capacity(e)) => {
                    break Some((WsError::TooLarge(e.to_string()), CloseCode::Size))
                }
                Err(e) => break Some((WsError::Protocol(e.to_string()), CloseCode::Protocol)),
            }
        };
        // Write what tungstenite queued (pong, close reply) into the output buffer.
        let _ = ctx.flush(&mut feed);
        if let Some((error, code)) = failure {
            let frame = CloseFrame {
                code,
                reason: "".into(),
            };
            let _ = ctx.close(&mut feed, Some(frame));
            let _ = ctx.flush(&mut feed);
            self.state = State::Done;
            return Err(error);
        }
        Ok(status)
    }

    /// Answers the requests at the head of the request buffer that are not upgrades, in order.
    /// `None`: an upgrade request is next, for [`WsSession::upgrade`]; otherwise whether the
    /// connection goes on (waiting for the next request) or ends once the answers are written.
    fn answer_http(&mut self, site: &Site, up: &mut dyn Upstream) -> Option<WsStatus> {
        loop {
            let State::Upgrading { request } = &mut self.state else {
                return Some(WsStatus::Closed);
            };
            let answer = match http::parse(request) {
                Ok(Some(head)) if head.len > MAX_REQUEST => http::too_large(),
                Ok(Some(head)) if head.upgrade => return None,
                Ok(Some(head)) => {
                    request.drain(..head.len);
                    // Answers already waiting for the socket: this one is the last, so a
                    // client pipelining requests cannot pile them up in memory.
                    let waiting = self.out.len() - self.out_start >= OUTPUT_LIMIT;
                    site.answer(&head, up, waiting)
                }
                Ok(None) if request.len() > MAX_REQUEST => http::too_large(),
                Ok(None) => return Some(WsStatus::Open),
                Err(answer) => answer,
            };
            self.push_out(&answer.bytes);
            if answer.close {
                self.state = State::Done;
                return Some(WsStatus::Closed);
            }
        }
    }

    /// Tries to complete the upgrade with the request bytes collected so far. `Ok(Some(tail))`:
    /// upgraded, `tail` are bytes after the request (frames a client sent without waiting);
    /// `Ok(None)`: the request is incomplete.
    fn upgrade(&mut self) -> Result<Option<Vec<u8>>, WsError> {
        let State::Upgrading { request } = &mut self.state else {
            return Ok(None);
        };
        let (size, req) = match Request::try_parse(request) {
            Ok(Some(parsed)) => parsed,
            Ok(None) if request.len() > MAX_REQUEST => return Err(WsError::RequestTooLarge),
            Ok(None) => return Ok(None),
            Err(e) => return Err(WsError::BadUpgrade(e.to_string())),
        };
        let tail = request.split_off(size);
        let mut response = create_response(&req).map_err(|e| WsError::BadUpgrade(e.to_string()))?;
        if let Some(offered) = req.headers().get("Sec-WebSocket-Protocol") {
            let offered = offered.to_str().unwrap_or("");
            let chosen = offered
                .split(',')
                .map(str::trim)
                .find(|p| SUBPROTOCOLS.iter().any(|s| s.eq_ignore_ascii_case(p)))
                .ok_or_else(|| WsError::Subprotocol(offered.to_string()))?;
            let value = HeaderValue::from_str(chosen)
                .map_err(|_| WsError::Subprotocol(offered.to_string()))?;
            response
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", value);
        }
        // A client that offers no subprotocol is served too (some libraries leave it out).
        let mut answer = Vec::new();
        write_response(&mut answer, &response).map_err(|e| WsError::BadUpgrade(e.to_string()))?;
        self.push_out(&answer);
        self.state = State::Open(Box::new(WebSocketContext::new(
            Role::Server,
            Some(self.config),
        )));
        Ok(Some(tail))
    }

    /// Frames broker output as one binary message, if the output buffer is short enough;
    /// returns how many bytes were taken.
    pub(crate) fn send(&mut self, mqtt: &[u8]) -> usize {
        if mqtt.is_empty() || self.pending().len() >= OUTPUT_LIMIT {
            return 0;
        }
        let State::Open(ctx) = &mut self.state else {
            return 0;
        };
        let mut feed = Feed {
            input: &[],
            output: &mut self.out,
        };
        let message = Message::Binary(Bytes::copy_from_slice(mqtt));
        if ctx.write(&mut feed, message).is_err() || ctx.flush(&mut feed).is_err() {
            return 0;
        }
        mqtt.len()
    }

    /// Queues a close frame (the broker ended the connection).
    pub(crate) fn close(&mut self) {
        if let State::Open(ctx) = &mut self.state {
            let mut feed = Feed {
                input: &[],
                output: &mut self.out,
            };
            let _ = ctx.close(&mut feed, None);
            let _ = ctx.flush(&mut feed);
        }
    }

    /// Bytes waiting for the layer below.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.out[self.out_start..]
    }

    /// The layer below took `n` bytes of [`WsSession::pending`].
    pub(crate) fn consume(&mut self, n: usize) {
        self.out_start = (self.out_start + n).min(self.out.len());
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
            if self.out.capacity() > 4 * OUTPUT_LIMIT {
                self.out = Vec::new();
            }
        } else if self.out_start > self.out.len() / 2 {
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
    }

    fn push_out(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
}

/// Why a WebSocket connection was ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WsError {
    /// The HTTP request is not a WebSocket upgrade.
    BadUpgrade(String),
    /// The upgrade request never ended within `MAX_REQUEST` bytes.
    RequestTooLarge,
    /// The client offered subprotocols, none of them MQTT.
    Subprotocol(String),
    /// A text frame: MQTT travels in binary frames ([MQTT-6.0.0-1]).
    TextFrame,
    /// A frame or message over the size limit.
    TooLarge(String),
    /// Any other breach of RFC 6455.
    Protocol(String),
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::BadUpgrade(e) => write!(
                f,
                "WebSocket handshake failed: not a valid WebSocket upgrade request ({e})"
            ),
            WsError::RequestTooLarge => write!(
                f,
                "WebSocket handshake failed: the upgrade request is larger than {MAX_REQUEST} \
                 bytes"
            ),
            WsError::Subprotocol(offered) => write!(
                f,
                "WebSocket handshake failed: the client offered the subprotocols \"{offered}\" \
                 but not mqtt"
            ),
            WsError::TextFrame => write!(
                f,
                "WebSocket error: the client sent a text frame (MQTT needs binary frames)"
            ),
            WsError::TooLarge(e) => write!(f, "WebSocket error: frame too large ({e})"),
            WsError::Protocol(e) => write!(f, "WebSocket error: {e}"),
        }
    }
}
