//! Listening sockets: binding every `listener` block (IPv4 and IPv6, with IPV6_V6ONLY so both
//! can share a port, limited by `socket_domain`; the loopback listeners of local-only mode may
//! lack IPv6), accepting connections with the TLS and WebSocket layers their listener asks
//! for, and reading TLS certificates and keys again on SIGHUP.
//!
//! Listeners themselves (ports, TLS on or off) change only with a restart. This module does
//! not read or write connections: an accepted socket goes to the slab, the broker and
//! [`super::io`].

use super::io::{Client, ClientExtra, Origin};
use super::{Server, Tok};
use crate::broker::Via;
use crate::config::{Config, ListenerConfig, ListenerProtocol};
use crate::http::Site;
use crate::transport::tls::TlsListener;
use crate::transport::ws::WsSession;
use crate::transport::Transport;
use mio::net::TcpListener;
use mio::{Interest, Poll};
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// WebSocket frames and messages may be this large at least (the broker applies
/// `max_packet_size` to the MQTT packets inside; this bound only protects memory).
const WS_MIN_MESSAGE_LIMIT: usize = 1 << 20;
/// How long accepting pauses after the process ran out of descriptors or memory.
const ACCEPT_PAUSE: Duration = Duration::from_millis(500);

/// A listening socket.
pub(super) struct Listener {
    socket: TcpListener,
    port: u16,
    max_connections: i64,
    /// Connections accepted here and still open.
    pub(super) connections: i64,
    /// Index of its `listener` block in the configuration (several sockets share one when a
    /// listener binds IPv4 and IPv6).
    config_index: usize,
    /// The port as configured (0 = chosen by the OS), to recognise the block on reload.
    configured_port: u16,
    /// TLS settings, for TLS listeners.
    tls: Option<TlsListener>,
    /// `protocol websockets`.
    websockets: bool,
    /// What a WebSocket listener serves to plain HTTP requests (`http_dir`, `metrics`).
    http: Option<Arc<Site>>,
}

/// Binds the sockets of every `listener` block and registers them with `poll`, socket `i` as
/// [`Tok::Listener`]`(i)`.
pub(super) fn bind_all(config: &Config, poll: &Poll) -> io::Result<Vec<Listener>> {
    let mut listeners = Vec::new();
    for (config_index, l) in config.listeners.iter().enumerate() {
        bind_block(l, config_index, &mut listeners)?;
    }
    if listeners.is_empty() {
        return Err(io::Error::other("no listener could be opened"));
    }
    // A connection remembers its listener as a u16 (see `Origin`), and so does its token.
    if listeners.len() > usize::from(u16::MAX) + 1 {
        return Err(io::Error::other(format!(
            "too many listen sockets ({}); at most 65536",
            listeners.len()
        )));
    }
    for (l, index) in listeners.iter_mut().zip(0..=u16::MAX) {
        poll.registry().register(
            &mut l.socket,
            Tok::Listener(index).into(),
            Interest::READABLE,
        )?;
    }
    Ok(listeners)
}

/// Binds the sockets of one `listener` block (one per address it names).
fn bind_block(
    l: &ListenerConfig,
    config_index: usize,
    listeners: &mut Vec<Listener>,
) -> io::Result<()> {
    let in_listener = |e: String| io::Error::other(format!("{e} (listener on port {})", l.port));
    let tls = load_tls(l).map_err(in_listener)?;
    let http = Site::open(&l.http).map_err(in_listener)?;
    let mut port = l.port;
    let addrs = listener_addrs(l)?;
    let all_interfaces = l.bind_address.is_none();
    for mut addr in addrs {
        // With `listener 0`, every address of the listener shares the port the first got.
        addr.set_port(port);
        let family = if addr.is_ipv4() { "ipv4" } else { "ipv6" };
        let bound = if addr.is_ipv6() && all_interfaces {
            bind_v6_only(addr)
        } else {
            TcpListener::bind(addr).and_then(lengthen_backlog)
        };
        let socket = match bound {
            Ok(s) => s,
            // A machine without IPv6 still serves IPv4 on "all interfaces" and on the
            // loopback listeners of local-only mode (unless `socket_domain ipv6` asked for
            // IPv6 only).
            Err(e)
                if addr.is_ipv6()
                    && (all_interfaces || l.optional)
                    && l.socket_domain.is_none() =>
            {
                log::warn!("Warning: Unable to open ipv6 listen socket on port {port}: {e}.");
                continue;
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("Unable to listen on {addr}: {e}{}", low_port_hint(&e, addr)),
                ))
            }
        };
        port = socket.local_addr()?.port();
        log::info!("Opening {family} listen socket on port {port}.");
        listeners.push(Listener {
            socket,
            port,
            max_connections: l.max_connections,
            connections: 0,
            config_index,
            configured_port: l.port,
            tls: tls.clone(),
            websockets: l.protocol == ListenerProtocol::WebSockets,
            http: http.clone(),
        });
    }
    Ok(())
}

/// The TLS settings of one `listener` block, if it has TLS; warnings are logged.
fn load_tls(l: &ListenerConfig) -> Result<Option<TlsListener>, String> {
    if !l.tls.enabled() {
        return Ok(None);
    }
    let (tls, warnings) = TlsListener::load(&l.tls)?;
    for w in warnings {
        log::warn!("{w} (listener on port {})", l.port);
    }
    Ok(Some(tls))
}

/// How many connections the kernel completes for a listener before the loop accepts them.
/// After a restart or a network outage, every device of an installation reconnects at once;
/// a connection beyond the queue has its SYN dropped and retries only a second later (then 3,
/// then 7). Mosquitto asks for 100 and `std`/`mio` for 128; the kernel caps it at
/// `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: libc::c_int = 1024;

/// Raises a bound listener's queue of completed connections to [`LISTEN_BACKLOG`] (`listen`
/// again on a listening socket only changes its backlog).
fn lengthen_backlog(listener: TcpListener) -> io::Result<TcpListener> {
    // SAFETY: `listen` on a descriptor the listener owns and keeps open.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(listener)
}

/// Binds an IPv6 socket with IPV6_V6ONLY so it can sit beside an IPv4 one on the same port.
fn bind_v6_only(addr: SocketAddr) -> io::Result<TcpListener> {
    // SAFETY: plain socket calls on a descriptor we own; it is closed on every error path.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET6,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let opt = (&one as *const libc::c_int).cast();
        libc::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, opt, len);
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, opt, len);
        let SocketAddr::V6(a) = addr else {
            libc::close(fd);
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                "not an IPv6 address",
            ));
        };
        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = a.port().to_be();
        sa.sin6_addr.s6_addr = a.ip().octets();
        let salen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        if libc::bind(fd, (&sa as *const libc::sockaddr_in6).cast(), salen) != 0
            || libc::listen(fd, LISTEN_BACKLOG) != 0
        {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(TcpListener::from_std(std::net::TcpListener::from_raw_fd(
            fd,
        )))
    }
}

/// Why binding a port below 1024 was refused: midge opens its listeners after dropping root
/// privileges (see `privileges`), as Mosquitto 2.0 does.
fn low_port_hint(e: &io::Error, addr: SocketAddr) -> &'static str {
    if e.kind() == ErrorKind::PermissionDenied && addr.port() < 1024 {
        " (listeners are opened as the configured `user`: a port below 1024 needs \
         CAP_NET_BIND_SERVICE, e.g. User= with AmbientCapabilities= in the systemd unit)"
    } else {
        ""
    }
}

/// The socket addresses one `listener` line asks for, limited to its `socket_domain`.
fn listener_addrs(l: &ListenerConfig) -> io::Result<Vec<SocketAddr>> {
    let mut addrs = all_listener_addrs(l)?;
    if let Some(domain) = l.socket_domain {
        addrs.retain(|a| domain.admits(a));
        if addrs.is_empty() {
            return Err(io::Error::new(
                ErrorKind::NotFound,
                format!("no {domain:?} address to listen on for port {}", l.port),
            ));
        }
    }
    Ok(addrs)
}

/// Every socket address one `listener` line names, of both families.
fn all_listener_addrs(l: &ListenerConfig) -> io::Result<Vec<SocketAddr>> {
    match &l.bind_address {
        None => Ok(vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), l.port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), l.port),
        ]),
        Some(host) => {
            let addrs: Vec<SocketAddr> = (host.as_str(), l.port).to_socket_addrs()?.collect();
            if addrs.is_empty() {
                return Err(io::Error::new(
                    ErrorKind::NotFound,
                    format!("no address for {host}"),
                ));
            }
            Ok(addrs)
        }
    }
}

/// Reads each TLS listener's certificates and keys again, by listener socket index, for
/// [`apply_tls`]: changes nothing. New connections will use them; live ones keep their
/// session.
pub(super) fn reload_tls(
    listeners: &[Listener],
    config: &Config,
) -> Result<Vec<(usize, TlsListener)>, String> {
    let mut loaded: Vec<(usize, TlsListener)> = Vec::new();
    let mut by_block: Vec<(usize, TlsListener)> = Vec::new();
    for (index, l) in listeners.iter().enumerate() {
        let Some(new) = config.listeners.get(l.config_index) else {
            continue;
        };
        if l.tls.is_none() && !new.tls.enabled() {
            continue;
        }
        let port = l.port;
        if new.port != l.configured_port || l.tls.is_some() != new.tls.enabled() {
            log::warn!(
                "Warning: The listener on port {port} changed in the config file; listeners \
                 are only changed by a restart."
            );
            continue;
        }
        // The IPv4 and IPv6 sockets of one listener block share what was loaded.
        if let Some((_, tls)) = by_block.iter().find(|(i, _)| *i == l.config_index) {
            loaded.push((index, tls.clone()));
            continue;
        }
        let (tls, warnings) = TlsListener::load(&new.tls).map_err(|e| {
            format!("Error: Unable to load TLS for the listener on port {port}: {e}.")
        })?;
        for w in warnings {
            log::warn!("{w} (listener on port {port})");
        }
        by_block.push((l.config_index, tls.clone()));
        loaded.push((index, tls));
    }
    Ok(loaded)
}

/// Puts certificates and keys from [`reload_tls`] in force; cannot fail.
pub(super) fn apply_tls(listeners: &mut [Listener], reloaded: Vec<(usize, TlsListener)>) {
    let mut reported = Vec::new();
    for (index, tls) in reloaded {
        let Some(l) = listeners.get_mut(index) else {
            continue;
        };
        l.tls = Some(tls);
        if !reported.contains(&l.config_index) {
            reported.push(l.config_index);
            log::info!(
                target: "notice",
                "Reloaded the TLS certificate and key of the listener on port {}.",
                l.port
            );
        }
    }
}

/// The largest WebSocket message a client may send, for a broker whose `max_packet_size` is
/// `max_packet` (0: MQTT's own limit).
pub(super) fn ws_message_limit(max_packet: usize) -> usize {
    match max_packet {
        0 => crate::codec::MAX_PACKET,
        n => n.max(WS_MIN_MESSAGE_LIMIT),
    }
}

impl Server {
    /// The transport layers a new connection on listener `index` needs, if any.
    fn new_transport(&self, index: u16, peer: SocketAddr) -> Result<Option<Transport>, ()> {
        let Some(l) = self.listeners.get(usize::from(index)) else {
            return Err(());
        };
        if l.tls.is_none() && !l.websockets {
            return Ok(None);
        }
        let tls = match l.tls.as_ref().map(TlsListener::session).transpose() {
            Ok(tls) => tls,
            Err(e) => {
                log::error!("Error: Unable to start TLS for {peer}: {e}.");
                return Err(());
            }
        };
        let ws = l
            .websockets
            .then(|| WsSession::new(self.ws_message_limit, l.http.clone()));
        Ok(Some(Transport::new(tls, ws)))
    }

    /// Accepts connections on listener `index` until `WouldBlock`, and reads what each has
    /// already sent.
    pub(super) fn accept(&mut self, index: u16, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(l) = self.listeners.get_mut(usize::from(index)) else {
                return;
            };
            let (mut stream, peer) = match l.socket.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE/ENFILE/ENOMEM: the pending connection stays in the backlog;
                    // pause accepting for a moment instead of spinning on it.
                    log::error!("Error: Unable to accept new connection: {e}.");
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
            };
            if l.max_connections >= 0 && l.connections >= l.max_connections {
                log::info!(
                    target: "notice",
                    "Client connection from {} denied: max_connections exceeded.",
                    peer.ip()
                );
                drop(stream);
                continue;
            }
            if self.nodelay {
                let _ = stream.set_nodelay(true);
            }
            let peer = unmap_v4(peer);
            let Ok(transport) = self.new_transport(index, peer) else {
                continue;
            };
            let Some(l) = self.listeners.get_mut(usize::from(index)) else {
                return;
            };
            let entry = self.clients.vacant_entry();
            let id = entry.key();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, Tok::Conn(id).into(), Interest::READABLE)
            {
                log::error!("Error: Unable to register connection from {peer}: {e}.");
                continue;
            }
            l.connections += 1;
            let port = l.port;
            let config_index = l.config_index;
            // Plain TCP clients go without the extra allocation.
            let extra = transport.map(|transport| {
                Box::new(ClientExtra {
                    peer,
                    transport: Some(transport),
                    connecting: None,
                    bridge: None,
                    closing: false,
                })
            });
            entry.insert(Client {
                stream,
                origin: Origin::Listener(index),
                wants_write: false,
                extra,
            });
            let via = Via::Listener {
                index: config_index,
                port,
            };
            self.broker.handle_connection_opened(id, peer, via, now);
            // Data may already be waiting; edge-triggered readiness would not tell us again.
            self.read_conn(id, now, true);
        }
    }
}

/// The connections open on each listening port (the IPv4 and IPv6 sockets of a listener, or
/// listeners on one port at several addresses, together: one series per port).
pub(super) fn connection_counts(listeners: &[Listener]) -> Vec<(u16, u64)> {
    let mut counts: Vec<(u16, u64)> = Vec::new();
    for l in listeners {
        let open = u64::try_from(l.connections).unwrap_or(0);
        match counts.iter_mut().find(|(port, _)| *port == l.port) {
            Some((_, n)) => *n += open,
            None => counts.push((l.port, open)),
        }
    }
    counts
}

/// `::ffff:1.2.3.4` as `1.2.3.4`, for logs that read like Mosquitto's.
fn unmap_v4(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => peer,
        },
        v4 => v4,
    }
}
