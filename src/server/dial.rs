//! Bridge dialing: resolving a bridge's host on a helper thread, opening a non-blocking
//! connection to the first address, and handing it to the broker once connected.
//!
//! A bridge with `bridge_cafile`/`bridge_capath` gets a client-side TLS transport before the
//! broker writes its CONNECT (which then waits in the transport until the handshake is done).
//! Every failure goes back to the broker as `bridge_failed`, whose back-off decides when to try
//! again; this module never retries by itself and never speaks MQTT.

use super::io::{Client, ClientExtra, Origin};
use super::{Server, Tok};
use crate::broker::{ConnId, Via};
use crate::config::Config;
use crate::transport::tls_client::TlsConnector;
use crate::transport::Transport;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Poll};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::time::Instant;

/// What the loop needs to open a bridge's connections (the broker knows the rest).
pub(super) struct BridgeDialer {
    name: String,
    /// Client-side TLS, when the bridge has a CA configured.
    tls: Option<TlsConnector>,
}

/// The dialers of the bridges, in the broker's bridge index order: `Broker::new` skips
/// bridges without an address, and so does this. TLS files are read now, so a missing one stops
/// start-up with its name.
pub(super) fn load_bridge_dialers(config: &Config) -> Result<Vec<BridgeDialer>, String> {
    let mut dialers = Vec::new();
    for b in config.bridges.iter().filter(|b| !b.addresses.is_empty()) {
        let tls = TlsConnector::load(&b.tls).map_err(|e| format!("Bridge {}: {e}", b.name))?;
        if tls.is_some() && b.tls.insecure {
            log::warn!(
                "Warning: Bridge {}: bridge_insecure is true, so the remote broker's certificate \
                 is not checked against the host in address; any holder of a certificate from \
                 the CA can pose as the remote. Do not use this in production.",
                b.name
            );
        }
        dialers.push(BridgeDialer {
            name: b.name.clone(),
            tls,
        });
    }
    Ok(dialers)
}

/// A request to the resolver: the bridge's index, its host and port.
type Lookup = (usize, String, u16);
/// An answer from the resolver: the bridge's index, its host and what the host resolved to.
type Found = (usize, String, io::Result<Vec<SocketAddr>>);

/// Resolves bridge host names on its own thread (getaddrinfo blocks; /etc/hosts, DNS and
/// mDNS `.local` names all go through it), so the loop never waits on it. Answers wake the
/// loop as [`Tok::DnsWaker`] through a socket pair: mio allows one `Waker` per poll, and the
/// store's writer thread has it.
pub(super) struct Resolver {
    requests: mpsc::Sender<Lookup>,
    answers: mpsc::Receiver<Found>,
    /// The loop's end of the wake-up socket pair.
    woken: UnixStream,
}

impl Resolver {
    fn start(poll: &Poll) -> io::Result<Resolver> {
        let (mut woken, mut wake) = UnixStream::pair()?;
        poll.registry()
            .register(&mut woken, Tok::DnsWaker.into(), Interest::READABLE)?;
        let (requests, jobs) = mpsc::channel::<Lookup>();
        let (done, answers) = mpsc::channel();
        std::thread::Builder::new()
            .name("midge-resolver".into())
            .spawn(move || {
                for (bridge, host, port) in jobs {
                    let found = (host.as_str(), port)
                        .to_socket_addrs()
                        .map(|a| a.collect::<Vec<_>>());
                    if done.send((bridge, host, found)).is_err() {
                        return;
                    }
                    // A full socket buffer already holds a wake-up.
                    let _ = wake.write(&[1]);
                }
            })?;
        Ok(Resolver {
            requests,
            answers,
            woken,
        })
    }

    /// Takes the answers that have come, after reading every wake-up byte (readiness is
    /// edge-triggered: a later answer must find the socket empty to wake the loop again).
    fn take_answers(&mut self) -> Vec<Found> {
        let mut buf = [0u8; 64];
        while matches!(self.woken.read(&mut buf), Ok(n) if n > 0) {}
        std::iter::from_fn(|| self.answers.try_recv().ok()).collect()
    }
}

impl Server {
    /// A bridge wants a connection: resolve its host off the loop.
    pub(super) fn resolve_bridge(&mut self, bridge: usize, host: String, port: u16, now: Instant) {
        if self.resolver.is_none() {
            match Resolver::start(&self.poll) {
                Ok(r) => self.resolver = Some(r),
                Err(e) => {
                    return self
                        .broker
                        .handle_bridge_failed(bridge, &e.to_string(), now)
                }
            }
        }
        if let Some(r) = &self.resolver {
            if r.requests.send((bridge, host, port)).is_err() {
                self.broker
                    .handle_bridge_failed(bridge, "the resolver thread stopped", now);
            }
        }
    }

    /// Addresses came back: start a non-blocking connect to the first one.
    pub(super) fn bridge_addresses_resolved(&mut self, now: Instant) {
        let answers = self
            .resolver
            .as_mut()
            .map(Resolver::take_answers)
            .unwrap_or_default();
        for (bridge, host, found) in answers {
            let addr = match found {
                Ok(addrs) => match addrs.first() {
                    Some(a) => *a,
                    None => {
                        self.broker.handle_bridge_failed(
                            bridge,
                            &format!("no address for {host}"),
                            now,
                        );
                        continue;
                    }
                },
                Err(e) => {
                    self.broker.handle_bridge_failed(
                        bridge,
                        &format!("cannot resolve {host}: {e}"),
                        now,
                    );
                    continue;
                }
            };
            let transport = match self.bridge_transport(bridge, &host) {
                Ok(t) => t,
                Err(e) => {
                    self.broker.handle_bridge_failed(bridge, &e, now);
                    continue;
                }
            };
            let mut stream = match TcpStream::connect(addr) {
                Ok(s) => s,
                Err(e) => {
                    self.broker
                        .handle_bridge_failed(bridge, &e.to_string(), now);
                    continue;
                }
            };
            let entry = self.clients.vacant_entry();
            let id = entry.key();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, Tok::Conn(id).into(), interest)
            {
                self.broker
                    .handle_bridge_failed(bridge, &e.to_string(), now);
                continue;
            }
            let name = self.bridges.get(bridge).map_or("?", |d| d.name.as_str());
            entry.insert(Client {
                stream,
                origin: Origin::Bridge,
                wants_write: true,
                extra: Some(Box::new(ClientExtra {
                    peer: addr,
                    transport,
                    connecting: Some(bridge),
                    bridge: Some(format!("{name} ({host}:{})", addr.port())),
                    closing: false,
                })),
            });
        }
    }

    /// The TLS layer of a new connection of `bridge` to `host`, if the bridge uses TLS. The
    /// certificate's name is checked against `host` as written in `address`.
    fn bridge_transport(&self, bridge: usize, host: &str) -> Result<Option<Transport>, String> {
        let Some(tls) = self.bridges.get(bridge).and_then(|d| d.tls.as_ref()) else {
            return Ok(None);
        };
        let session = tls.session(host)?;
        Ok(Some(Transport::new(Some(session), None)))
    }

    /// The outgoing connection of `bridge` became writable (or failed): hand it to the broker.
    /// With TLS, the broker's CONNECT waits in the transport until the handshake is done.
    pub(super) fn finish_bridge_connect(&mut self, id: ConnId, bridge: usize, now: Instant) {
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        let failed = match client.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e.to_string()),
            Ok(None) => match client.stream.peer_addr() {
                Ok(_) => None,
                // Still in progress: wait for the next readiness.
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(e) = failed {
            self.remove_client(id);
            self.broker.handle_bridge_failed(bridge, &e, now);
            return;
        }
        let Some(extra) = client.extra.as_mut() else {
            return;
        };
        extra.connecting = None;
        let peer = extra.peer;
        if self.nodelay {
            let _ = client.stream.set_nodelay(true);
        }
        self.broker
            .handle_connection_opened(id, peer, Via::Bridge(bridge), now);
        self.flush(id, now);
    }
}
