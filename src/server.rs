//! The event loop: one thread, one `mio::Poll`, every socket non-blocking.
//!
//! This is the thin shell around [`crate::broker`]. It owns the listeners and a slab of client
//! sockets (the slab key is the connection id the broker knows), and does four things in a
//! loop, like Mosquitto's `loop.c` or redis's `ae.c`:
//!
//! 1. wait in `poll` until a socket is ready, a signal arrives, or the broker's next timer is
//!    due (an idle broker sleeps until then, it does not tick);
//! 2. accept new connections until `WouldBlock`;
//! 3. read each readable socket in 64 KiB chunks and hand the bytes to the broker, flushing the
//!    output the broker produced after each chunk so buffers stay small; a socket that still
//!    has data after its budget is revisited next turn (edge-triggered, so we must remember);
//! 4. write pending output, asking for WRITABLE only while a socket has bytes left over.
//!
//! Signals only set flags through a self-pipe; the loop acts on them (SIGINT/SIGTERM stop,
//! SIGHUP reloads, SIGPIPE is ignored so a dead peer is an error, not a crash).
//!
//! Clients of TLS and WebSocket listeners carry a [`Transport`] (see [`crate::transport`]):
//! their bytes go through it on the way in and out, and it may have bytes of its own to write
//! (handshakes, pongs, alerts), so their WRITABLE interest follows the transport too. A plain
//! TCP client has none, and its path stays as above, without a copy. A transport failure (a
//! failed TLS handshake, a text frame) closes only that connection, with a log line naming
//! the peer and the cause. On SIGHUP each TLS listener's certificates and keys are read again
//! with the rest of the configuration; if any part fails, nothing of the new one is used.
//!
//! Bridges open outgoing connections from here (their host names resolved on a helper
//! thread). A bridge with `bridge_cafile`/`bridge_capath` gets a client-side TLS transport
//! before the broker writes its CONNECT; a TLS failure is logged naming the bridge and the
//! address, and closing the connection hands the attempt back to the broker's back-off.

use crate::broker::{Action, Broker, CertIdentity, ConnId, Settings};
use crate::config::{Config, ListenerConfig, ListenerProtocol};
use crate::logging::Staged;
use crate::store::Store;
use crate::transport::tls::TlsListener;
use crate::transport::tls_client::TlsConnector;
use crate::transport::ws::WsSession;
use crate::transport::{Status, Transport, TransportError, Upstream};
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Token of the signal self-pipe.
const SIGNAL: Token = Token(usize::MAX);
/// Listener tokens count down from here; connection tokens are slab keys, far below.
const LISTENER_BASE: usize = usize::MAX - 1;
/// Token of the waker the store's writer thread uses to say a batch is committed.
const STORE_WAKER: Token = Token(usize::MAX / 2);
/// Token of the waker the bridge resolver thread uses to say an address is resolved.
const DNS_WAKER: Token = Token(usize::MAX / 2 + 1);
/// Bytes read from a socket in one call.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per socket per loop turn, so one busy publisher cannot starve the others.
const READS_PER_TURN: usize = 4;
/// WebSocket frames and messages may be this large at least (the broker applies
/// `max_packet_size` to the MQTT packets inside; this bound only protects memory).
const WS_MIN_MESSAGE_LIMIT: usize = 1 << 20;
/// The largest MQTT packet (remaining length 268 435 455 plus a 5 byte fixed header).
const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

/// Write end of the signal self-pipe, for the signal handler.
static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is a local byte.
        unsafe {
            libc::write(fd, (&b as *const u8).cast(), 1);
        }
    }
}

/// Installs the handlers with sigaction and SA_RESTART, so a signal arriving while the store
/// thread or a log write is in a system call does not make that call fail with EINTR.
fn install_signal_handlers(write_fd: i32) {
    SIGNAL_FD.store(write_fd, Ordering::Relaxed);
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    let set = |sig: libc::c_int, handler: libc::sighandler_t| {
        // SAFETY: `action` is fully initialised (zeroed, then the handler, an empty mask and
        // flags); the handler only calls write(2), which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    };
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        set(sig, handler);
    }
    set(libc::SIGPIPE, libc::SIG_IGN);
}

/// A client socket and the loop's bookkeeping for it.
///
/// Kept small (thousands of idle clients): what only TLS, WebSocket and bridge connections
/// need lives in [`ClientExtra`], allocated for those alone.
struct Client {
    stream: TcpStream,
    /// Index into `Server::listeners`; `u16::MAX` for a bridge's outgoing connection.
    listener: u16,
    /// WRITABLE is part of the registered interest.
    wants_write: bool,
    /// TLS and/or WebSocket layers; `None` for plain TCP.
    transport: Option<Box<Transport>>,
    extra: Option<Box<ClientExtra>>,
}

/// The part of a [`Client`] that plain TCP clients do without.
struct ClientExtra {
    /// The peer, for transport log lines (the broker has its own copy for MQTT ones).
    peer: SocketAddr,
    /// An outgoing bridge connection still being established: the bridge's index.
    connecting: Option<usize>,
    /// For outgoing bridge connections, "NAME (host:port)", the subject of transport log
    /// lines.
    bridge: Option<String>,
}

impl Client {
    fn connecting(&self) -> Option<usize> {
        self.extra.as_ref().and_then(|e| e.connecting)
    }

    fn bridge(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.bridge.as_deref())
    }
}

/// What the loop needs to open a bridge's connections (the broker knows the rest).
struct BridgeDialer {
    name: String,
    /// Client-side TLS, when the bridge has a CA configured.
    tls: Option<TlsConnector>,
}

/// The dialers of the bridges, in the broker's bridge index order: [`Broker::add_bridges`]
/// skips bridges without an address, and so does this. TLS files are read now, so a missing
/// one stops start-up with its name.
fn load_bridge_dialers(config: &Config) -> Result<Vec<BridgeDialer>, String> {
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

/// A listening socket.
struct Listener {
    socket: TcpListener,
    port: u16,
    max_connections: i64,
    connections: i64,
    /// Index of its `listener` block in the configuration (several sockets share one when a
    /// listener binds IPv4 and IPv6).
    config_index: usize,
    /// The port as configured (0 = chosen by the OS), to recognise the block on reload.
    configured_port: u16,
    /// TLS settings, for TLS listeners.
    tls: Option<TlsListener>,
    /// `protocol websockets`.
    websockets: bool,
}

/// The broker, as the place transports deliver to.
struct ToBroker<'a> {
    broker: &'a mut Broker,
    id: ConnId,
    now: Instant,
}

impl Upstream for ToBroker<'_> {
    fn certificate_identity(&mut self, identity: CertIdentity) {
        self.broker.set_certificate_identity(self.id, identity);
    }

    fn mqtt_bytes(&mut self, bytes: &[u8]) {
        self.broker.bytes_received(self.id, bytes, self.now);
    }
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

/// Reloads the configuration on SIGHUP: returns the new config with its log destinations
/// opened (not yet in use), or a message saying why not.
pub type Reloader = Box<dyn FnMut() -> Result<(Config, Staged), String>>;

/// A reloaded configuration, loaded in full and waiting to be put in force.
struct StagedReload {
    logs: Staged,
    /// New certificates and keys, by listener socket index.
    tls: Vec<(usize, TlsListener)>,
    settings: Settings,
}

/// Runs the broker until SIGINT or SIGTERM.
pub fn run(config: Config) -> io::Result<()> {
    run_with_reload(config, None)
}

/// Runs the broker; `reload` is called on SIGHUP.
pub fn run_with_reload(config: Config, reload: Option<Reloader>) -> io::Result<()> {
    raise_fd_limit();
    // Privileges were dropped before this (see `privileges`): the store, the listeners and
    // the files they read are opened as the configured user.
    let mut server = Server::new(&config, reload)?;
    // Scripts and tests wait for this line, as for Mosquitto's "mosquitto version X running".
    log::info!("midge version {} running", env!("CARGO_PKG_VERSION"));
    crate::notify::ready();
    server.run()
}

struct Server {
    poll: Poll,
    listeners: Vec<Listener>,
    clients: Slab<Client>,
    broker: Broker,
    signal_rx: UnixStream,
    _signal_tx: UnixStream,
    read_buf: Vec<u8>,
    /// Sockets with unread data left after their read budget.
    backlog: Vec<ConnId>,
    /// Publishers not read while queued messages are over `memory_limit`.
    paused: Vec<ConnId>,
    dirty: Vec<ConnId>,
    nodelay: bool,
    reload: Option<Reloader>,
    /// The durable store (`persistence true`), written by its own thread.
    store: Option<Store>,
    /// The resolver thread for bridge host names, started with the first bridge.
    resolver: Option<Resolver>,
    /// Per bridge (by the broker's index): its name and TLS settings.
    bridges: Vec<BridgeDialer>,
    /// After EMFILE, accepting is paused until this time (no busy loop).
    accept_paused_until: Option<Instant>,
    running: bool,
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
            || libc::listen(fd, 1024) != 0
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

impl Server {
    fn new(config: &Config, reload: Option<Reloader>) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut listeners = Vec::new();
        for (config_index, l) in config.listeners.iter().enumerate() {
            let tls = load_tls(l)
                .map_err(|e| io::Error::other(format!("{e} (listener on port {})", l.port)))?;
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
                    TcpListener::bind(addr)
                };
                let socket = match bound {
                    Ok(s) => s,
                    // A machine without IPv6 still serves IPv4 on "all interfaces" and on
                    // the loopback listeners of local-only mode (unless `socket_domain ipv6`
                    // asked for IPv6 only).
                    Err(e)
                        if addr.is_ipv6()
                            && (all_interfaces || l.optional)
                            && l.socket_domain.is_none() =>
                    {
                        log::warn!(
                            "Warning: Unable to open ipv6 listen socket on port {port}: {e}."
                        );
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
                });
            }
        }
        if listeners.is_empty() {
            return Err(io::Error::other("no listener could be opened"));
        }
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry().register(
                &mut l.socket,
                Token(LISTENER_BASE - i),
                Interest::READABLE,
            )?;
        }
        let (mut signal_rx, signal_tx) = UnixStream::pair()?;
        poll.registry()
            .register(&mut signal_rx, SIGNAL, Interest::READABLE)?;
        install_signal_handlers(signal_tx.as_raw_fd());
        let mut broker = Broker::new(Settings::load(config).map_err(io::Error::other)?);
        let store = if config.persistence {
            Some(open_store(config, &poll, &mut broker)?)
        } else {
            None
        };
        let bridges = load_bridge_dialers(config).map_err(io::Error::other)?;
        broker.add_bridges(&config.bridges, Instant::now());
        Ok(Server {
            bridges,
            store,
            resolver: None,
            poll,
            listeners,
            clients: Slab::with_capacity(crate::broker::table_capacity::<Client>()),
            broker,
            signal_rx,
            _signal_tx: signal_tx,
            read_buf: vec![0; READ_CHUNK],
            backlog: Vec::new(),
            paused: Vec::new(),
            dirty: Vec::new(),
            nodelay: config.set_tcp_nodelay,
            reload,
            accept_paused_until: None,
            running: true,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut backlog = Vec::new();
        while self.running {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            // Sockets left with unread data last turn go first, then the new events.
            std::mem::swap(&mut backlog, &mut self.backlog);
            for id in backlog.drain(..) {
                self.read_client(id, now);
            }
            for event in events.iter() {
                match event.token() {
                    SIGNAL => self.handle_signals(now),
                    STORE_WAKER => {
                        if let Some(store) = &self.store {
                            self.broker.release_acks(store.committed());
                        }
                    }
                    Token(t) if t > LISTENER_BASE - self.listeners.len() => {
                        self.accept(LISTENER_BASE - t, now)
                    }
                    DNS_WAKER => self.bridge_addresses_resolved(now),
                    Token(id)
                        if self
                            .clients
                            .get(id)
                            .is_some_and(|c| c.connecting().is_some()) =>
                    {
                        self.finish_bridge_connect(id, now)
                    }
                    Token(id) => {
                        if event.is_writable() {
                            self.flush(id, now);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_client(id, now);
                        }
                    }
                }
            }
            if self.accept_paused_until.is_some_and(|t| t <= now) {
                self.accept_paused_until = None;
                for i in 0..self.listeners.len() {
                    self.accept(i, now);
                }
            }
            self.broker.tick(now);
            self.commit_turn();
            self.flush_dirty(now);
            self.apply_actions(now);
            if !self.paused.is_empty() && !self.broker.memory_pressure() {
                self.backlog.append(&mut self.paused);
            }
        }
        let now = Instant::now();
        self.broker.shutdown(now);
        self.commit_turn();
        self.flush_dirty(now);
        self.apply_actions(now);
        if let Some(store) = self.store.take() {
            // Everything accepted is on disk before exit (DELIVERY.md, SIGTERM/SIGINT).
            if let Err(e) = store.close() {
                log::error!("Error: Unable to save the store at exit: {e}.");
            }
        }
        Ok(())
    }

    /// Hands this turn's changes to the store as one batch and holds this turn's
    /// acknowledgements until it is committed (group commit: one transaction per turn).
    fn commit_turn(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let changes = self.broker.take_changes();
        if !changes.is_empty() {
            store.submit(changes);
        }
        self.broker.seal_acks(store.submitted(), store.committed());
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.backlog.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let next = match (self.broker.next_deadline(), self.accept_paused_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Round up to the next millisecond so we do not wake just before the deadline.
        next.map(|t| t.saturating_duration_since(now) + Duration::from_millis(1))
    }

    fn handle_signals(&mut self, now: Instant) {
        let mut buf = [0u8; 64];
        loop {
            match self.signal_rx.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    for &sig in &buf[..n] {
                        self.on_signal_notifying(i32::from(sig), now);
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    /// `on_signal`, with a reload bracketed by systemd notifications (`notify`).
    fn on_signal_notifying(&mut self, sig: i32, now: Instant) {
        let reload = sig == libc::SIGHUP && self.reload.is_some();
        if reload {
            crate::notify::reloading();
        }
        self.on_signal(sig, now);
        if reload {
            crate::notify::ready();
        }
    }

    fn on_signal(&mut self, sig: i32, now: Instant) {
        match sig {
            libc::SIGINT | libc::SIGTERM => {
                log::info!(target: "notice", "Signal received, shutting down.");
                crate::notify::stopping();
                self.running = false;
            }
            libc::SIGUSR1 => {
                if let Some(store) = &self.store {
                    log::info!(target: "notice", "Saving the store now (SIGUSR1).");
                    store.sync_now();
                }
            }
            libc::SIGHUP => self.reload_config(now),
            _ => {}
        }
    }

    /// SIGHUP: reads the configuration again and puts all of it in force, or none of it.
    /// Everything that can fail (the config file, log files, TLS certificates and keys, the
    /// password and ACL files) is loaded first; only then does anything change. A reload that
    /// fails logs why and keeps the running configuration whole.
    fn reload_config(&mut self, now: Instant) {
        if self.reload.is_none() {
            return;
        }
        log::info!(target: "notice", "Reloading config.");
        match self.load_reload() {
            Ok(staged) => self.apply_reload(staged, now),
            Err(e) => {
                // One log line per line of the message (Mosquitto's two-line form).
                for line in e.lines() {
                    log::error!("{line}");
                }
                log::error!("Error: Unable to reload config; the running one is kept.");
            }
        }
    }

    /// The loading half of [`Server::reload_config`]: changes nothing.
    fn load_reload(&mut self) -> Result<StagedReload, String> {
        let reload = self
            .reload
            .as_mut()
            .ok_or_else(|| "nothing to reload".to_string())?;
        let (config, logs) = reload()?;
        let tls = self.load_listener_tls(&config)?;
        let settings = Settings::load(&config).map_err(|e| format!("Error: {e}."))?;
        Ok(StagedReload {
            logs,
            tls,
            settings,
        })
    }

    /// The applying half of [`Server::reload_config`]: cannot fail. Clients the new password
    /// file or `allow_anonymous` no longer admit are disconnected by the broker.
    fn apply_reload(&mut self, staged: StagedReload, now: Instant) {
        staged.logs.apply();
        let mut reported = Vec::new();
        for (index, tls) in staged.tls {
            let Some(l) = self.listeners.get_mut(index) else {
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
        self.broker.set_settings(staged.settings, now);
    }

    /// Reads each TLS listener's certificates and keys again, for [`Server::apply_reload`]:
    /// by listener socket index. New connections use them; live ones keep their session.
    /// Listeners themselves (ports, TLS on or off) change only with a restart.
    fn load_listener_tls(&self, config: &Config) -> Result<Vec<(usize, TlsListener)>, String> {
        let mut loaded: Vec<(usize, TlsListener)> = Vec::new();
        let mut by_block: Vec<(usize, TlsListener)> = Vec::new();
        for (index, l) in self.listeners.iter().enumerate() {
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

    /// The transport layers a new connection on listener `index` needs, if any.
    fn new_transport(&self, index: usize, peer: SocketAddr) -> Result<Option<Box<Transport>>, ()> {
        let Some(l) = self.listeners.get(index) else {
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
        let ws = l.websockets.then(|| {
            let max_packet = self.broker.settings().max_packet_size;
            let limit = match max_packet {
                0 => MQTT_MAX_PACKET,
                n => n.max(WS_MIN_MESSAGE_LIMIT),
            };
            WsSession::new(limit)
        });
        Ok(Some(Box::new(Transport::new(tls, ws))))
    }

    fn accept(&mut self, index: usize, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(l) = self.listeners.get_mut(index) else {
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
                    self.accept_paused_until = Some(now + Duration::from_millis(500));
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
            let Some(l) = self.listeners.get_mut(index) else {
                return;
            };
            let entry = self.clients.vacant_entry();
            let id = entry.key();
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut stream, Token(id), Interest::READABLE)
            {
                log::error!("Error: Unable to register connection from {peer}: {e}.");
                continue;
            }
            l.connections += 1;
            let port = l.port;
            let config_index = l.config_index;
            let extra = transport.is_some().then(|| {
                Box::new(ClientExtra {
                    peer,
                    connecting: None,
                    bridge: None,
                })
            });
            entry.insert(Client {
                stream,
                listener: index as u16,
                wants_write: false,
                transport,
                extra,
            });
            self.broker.connection_opened(id, peer, port, now);
            self.broker.set_listener(id, config_index);
            // Data may already be waiting; edge-triggered readiness would not tell us again.
            self.read_client(id, now);
        }
    }

    /// Reads from a client, up to its budget for this turn.
    fn read_client(&mut self, id: ConnId, now: Instant) {
        if self.broker.memory_pressure() && self.broker.is_publisher(id) {
            // Back-pressure: leave the publisher's bytes in the kernel until queues drain.
            if !self.paused.contains(&id) {
                self.paused.push(id);
            }
            return;
        }
        if self.clients.get(id).is_some_and(|c| c.transport.is_some()) {
            return self.read_transport_client(id, now);
        }
        for _ in 0..READS_PER_TURN {
            let Some(client) = self.clients.get_mut(id) else {
                return;
            };
            match client.stream.read(&mut self.read_buf) {
                Ok(0) => return self.drop_client(id, None, now),
                Ok(n) => {
                    self.broker.bytes_received(id, &self.read_buf[..n], now);
                    self.flush_dirty(now);
                    // Even after a short read, read again: readiness is edge-triggered, and an
                    // end of file (a client that closes right after its last packet) arrives
                    // in the same edge as the data before it.
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.drop_client(id, Some(e.to_string()), now),
            }
        }
        self.backlog.push(id);
    }

    /// Reads from a TLS or WebSocket client, up to its budget for this turn: the bytes go
    /// through its transport, which hands MQTT bytes to the broker.
    fn read_transport_client(&mut self, id: ConnId, now: Instant) {
        for _ in 0..READS_PER_TURN {
            let Some(client) = self.clients.get_mut(id) else {
                return;
            };
            let n = match client.stream.read(&mut self.read_buf) {
                Ok(0) => return self.transport_eof(id, now),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.drop_client(id, Some(e.to_string()), now),
            };
            let Some(transport) = client.transport.as_mut() else {
                return;
            };
            let mut up = ToBroker {
                broker: &mut self.broker,
                id,
                now,
            };
            match transport.received(&self.read_buf[..n], &mut up) {
                Ok(Status::Open) => {
                    self.flush_dirty(now);
                    // The transport may have answered by itself (handshake, pong).
                    self.flush(id, now);
                }
                Ok(Status::Closed) => {
                    self.flush_dirty(now);
                    self.flush(id, now);
                    return self.drop_client(id, None, now);
                }
                Err(e) => return self.transport_failed(id, e, now),
            }
        }
        self.backlog.push(id);
    }

    /// The peer of a transport closed the socket. A remote broker that hangs up during our
    /// TLS handshake is worth a line of its own: otherwise the bridge just seems to flap.
    fn transport_eof(&mut self, id: ConnId, now: Instant) {
        let Some(client) = self.clients.get(id) else {
            return;
        };
        let handshaking = client.transport.as_ref().is_some_and(|t| t.handshaking());
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
        if let Some(transport) = client.transport.as_mut() {
            let _ = transport.write_to(&mut client.stream);
        }
        let _ = client.stream.shutdown(std::net::Shutdown::Both);
        let short = match error {
            TransportError::Tls(_) => "TLS error",
            TransportError::WebSocket(_) => "WebSocket error",
        };
        self.drop_client(id, Some(short.to_string()), now);
    }

    /// Writes output of every connection the broker wrote to.
    fn flush_dirty(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        self.broker.take_dirty(&mut dirty);
        for &id in &dirty {
            self.flush(id, now);
        }
        self.dirty = dirty;
    }

    /// Writes as much of a connection's pending output as the socket takes, and asks for
    /// WRITABLE only while something is left.
    fn flush(&mut self, id: ConnId, now: Instant) {
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        if client.transport.is_some() {
            return self.flush_transport(id, now);
        }
        let Some(out) = self.broker.output(id) else {
            return;
        };
        let mut written = 0;
        let mut failure = None;
        while written < out.len() {
            match client.stream.write(&out[written..]) {
                Ok(0) => {
                    failure = Some("connection closed while writing".to_string());
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        if written == out.len() {
            // Give the buffer back: an idle connection then holds no output memory at all
            // (one allocation per busy turn is cheap next to the write system call).
            *out = Vec::new();
        } else {
            out.drain(..written);
        }
        let pending = !out.is_empty();
        if let Some(e) = failure {
            return self.drop_client(id, Some(e), now);
        }
        follow_output(&self.poll, client, id, pending);
        if written > 0 {
            self.broker.output_written(id, written);
        }
    }

    /// [`Server::flush`] for a client with a transport: broker output goes into the transport
    /// as far as it takes it, and the transport writes to the socket.
    fn flush_transport(&mut self, id: ConnId, now: Instant) {
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        let Some(transport) = client.transport.as_mut() else {
            return;
        };
        let mut empty = Vec::new();
        let out = self.broker.output(id).unwrap_or(&mut empty);
        let mut taken = 0;
        let mut failure = None;
        loop {
            let n = transport.send(&out[taken..]);
            taken += n;
            match transport.write_to(&mut client.stream) {
                Ok(false) if n > 0 && taken < out.len() => continue,
                Ok(_) => break,
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        if taken == out.len() {
            // Give the buffer back: an idle connection then holds no output memory at all
            // (one allocation per busy turn is cheap next to the write system call).
            *out = Vec::new();
        } else {
            out.drain(..taken);
        }
        let pending = !out.is_empty() || transport.wants_write();
        if let Some(e) = failure {
            return self.drop_client(id, Some(e), now);
        }
        follow_output(&self.poll, client, id, pending);
        if taken > 0 {
            self.broker.output_written(id, taken);
        }
    }

    /// The socket died or reached end of file: tell the broker and forget the socket.
    fn drop_client(&mut self, id: ConnId, error: Option<String>, now: Instant) {
        if !self.clients.contains(id) {
            return;
        }
        self.broker.connection_lost(id, error, now);
        self.remove_client(id);
    }

    fn remove_client(&mut self, id: ConnId) {
        if !self.clients.contains(id) {
            return;
        }
        let mut client = self.clients.remove(id);
        let _ = self.poll.registry().deregister(&mut client.stream);
        if let Some(l) = self.listeners.get_mut(client.listener as usize) {
            l.connections -= 1;
        }
        self.backlog.retain(|&b| b != id);
        self.paused.retain(|&b| b != id);
    }

    fn apply_actions(&mut self, now: Instant) {
        loop {
            let actions = self.broker.take_actions();
            if actions.is_empty() {
                return;
            }
            for action in actions {
                match action {
                    Action::ConnectBridge { bridge, host, port } => {
                        self.resolve_bridge(bridge, host, port, now)
                    }
                    Action::Close(id) => {
                        self.flush(id, now);
                        let transport = self.clients.get_mut(id).and_then(|c| c.transport.as_mut());
                        if let Some(transport) = transport {
                            // Goodbyes: a WebSocket close frame, TLS close_notify.
                            transport.close();
                            self.flush(id, now);
                        }
                        if let Some(client) = self.clients.get(id) {
                            let _ = client.stream.shutdown(std::net::Shutdown::Both);
                        }
                        self.remove_client(id);
                        self.broker.release(id);
                    }
                }
            }
            self.flush_dirty(now);
        }
    }
}

/// Resolves bridge host names on its own thread (getaddrinfo blocks; /etc/hosts, DNS and
/// mDNS `.local` names all go through it), so the loop never waits on it.
struct Resolver {
    requests: std::sync::mpsc::Sender<(usize, String, u16)>,
    answers: std::sync::mpsc::Receiver<(usize, String, io::Result<Vec<SocketAddr>>)>,
}

impl Resolver {
    fn start(poll: &Poll) -> io::Result<Resolver> {
        let waker = mio::Waker::new(poll.registry(), DNS_WAKER)?;
        let (requests, jobs) = std::sync::mpsc::channel::<(usize, String, u16)>();
        let (done, answers) = std::sync::mpsc::channel();
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
                    let _ = waker.wake();
                }
            })?;
        Ok(Resolver { requests, answers })
    }
}

impl Server {
    /// A bridge wants a connection: resolve its host off the loop.
    fn resolve_bridge(&mut self, bridge: usize, host: String, port: u16, now: Instant) {
        if self.resolver.is_none() {
            match Resolver::start(&self.poll) {
                Ok(r) => self.resolver = Some(r),
                Err(e) => return self.broker.bridge_failed(bridge, &e.to_string(), now),
            }
        }
        if let Some(r) = &self.resolver {
            if r.requests.send((bridge, host, port)).is_err() {
                self.broker
                    .bridge_failed(bridge, "the resolver thread stopped", now);
            }
        }
    }

    /// Addresses came back: start a non-blocking connect to the first one.
    fn bridge_addresses_resolved(&mut self, now: Instant) {
        let mut answers = Vec::new();
        if let Some(r) = &self.resolver {
            while let Ok(a) = r.answers.try_recv() {
                answers.push(a);
            }
        }
        for (bridge, host, found) in answers {
            let addr = match found {
                Ok(addrs) => match addrs.first() {
                    Some(a) => *a,
                    None => {
                        self.broker
                            .bridge_failed(bridge, &format!("no address for {host}"), now);
                        continue;
                    }
                },
                Err(e) => {
                    self.broker
                        .bridge_failed(bridge, &format!("cannot resolve {host}: {e}"), now);
                    continue;
                }
            };
            let transport = match self.bridge_transport(bridge, &host) {
                Ok(t) => t,
                Err(e) => {
                    self.broker.bridge_failed(bridge, &e, now);
                    continue;
                }
            };
            let mut stream = match TcpStream::connect(addr) {
                Ok(s) => s,
                Err(e) => {
                    self.broker.bridge_failed(bridge, &e.to_string(), now);
                    continue;
                }
            };
            let entry = self.clients.vacant_entry();
            let id = entry.key();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut stream, Token(id), interest)
            {
                self.broker.bridge_failed(bridge, &e.to_string(), now);
                continue;
            }
            let name = self.bridges.get(bridge).map_or("?", |d| d.name.as_str());
            entry.insert(Client {
                stream,
                listener: u16::MAX,
                wants_write: true,
                transport,
                extra: Some(Box::new(ClientExtra {
                    peer: addr,
                    connecting: Some(bridge),
                    bridge: Some(format!("{name} ({host}:{})", addr.port())),
                })),
            });
        }
    }

    /// The TLS layer of a new connection of `bridge` to `host`, if the bridge uses TLS. The
    /// certificate's name is checked against `host` as written in `address`.
    fn bridge_transport(
        &self,
        bridge: usize,
        host: &str,
    ) -> Result<Option<Box<Transport>>, String> {
        let Some(tls) = self.bridges.get(bridge).and_then(|d| d.tls.as_ref()) else {
            return Ok(None);
        };
        let session = tls.session(host)?;
        Ok(Some(Box::new(Transport::new(Some(session), None))))
    }

    /// The outgoing connection of a bridge became writable (or failed): hand it to the broker.
    /// With TLS, the broker's CONNECT waits in the transport until the handshake is done.
    fn finish_bridge_connect(&mut self, id: ConnId, now: Instant) {
        let Some(client) = self.clients.get_mut(id) else {
            return;
        };
        let Some(bridge) = client.connecting() else {
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
            self.broker.bridge_failed(bridge, &e, now);
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
        self.broker.bridge_connected(id, bridge, peer, now);
        self.flush(id, now);
    }
}

/// Opens the store, wires its commits to the loop through a `mio::Waker`, and restores the
/// broker's durable state from it.
fn open_store(config: &Config, poll: &Poll, broker: &mut Broker) -> io::Result<Store> {
    let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), STORE_WAKER)?);
    let dir = config
        .persistence_location
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let notify = Box::new(move || {
        let _ = waker.wake();
    });
    let (store, snapshot) = Store::open(
        &dir,
        config.persistence_file.as_deref(),
        config.persistence_sync_interval,
        notify,
    )
    .map_err(|e| {
        io::Error::other(format!(
            "Unable to open the store in {}: {e}",
            dir.display()
        ))
    })?;
    log::info!(target: "notice", "Using the store {}.", store.path().display());
    broker.enable_persistence();
    broker.restore(snapshot, Instant::now());
    Ok(store)
}

/// Raises the soft limit on open files to the hard limit: every client is a descriptor, and
/// the usual soft limit (1024) is far below what a fleet of idle devices needs.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let wanted = lim.rlim_max;
            lim.rlim_cur = wanted;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                log::debug!("Raised the open file limit to {wanted}.");
            }
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
        .reregister(&mut client.stream, Token(id), interest)
        .is_ok()
    {
        client.wants_write = pending;
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_plain_tcp_client_is_small() {
        // Guards the per-connection memory budget (issue 3): grow it only on purpose. (mio's
        // socket is 4 bytes, a file descriptor, in release builds; debug builds add a check.)
        let socket = std::mem::size_of::<mio::net::TcpStream>();
        assert!(
            std::mem::size_of::<super::Client>() <= (socket + 3).next_multiple_of(8) + 16,
            "{socket} {}",
            std::mem::size_of::<super::Client>()
        );
    }
}
