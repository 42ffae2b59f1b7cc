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
//! Every event source has a `Tok`, and each kind of event one arm in `Server::run`. The
//! jobs around the loop each have a module:
//! - `listeners`: binding, accepting (with the TLS/WebSocket transport a listener asks for),
//!   and reading TLS certificates again on SIGHUP;
//! - `io`: one read path and one flush path for plain TCP and transports alike;
//! - `signals`: the self-pipe, and what each signal does (stop, save, reload);
//! - `dial`: resolving and connecting bridges;
//! - `saver`: writing dynamic security files off the loop's thread.
//!
//! This file keeps the loop itself: the per-turn order, closing connections the broker asks to
//! close, and wiring the store's commits to the loop. It never parses MQTT and never decides
//! what a client may do; the broker does.

mod dial;
mod io;
mod listeners;
mod saver;
mod signals;

pub use signals::Reloader;

use crate::broker::{Action, Broker, ConnId, Settings};
use crate::config::Config;
use crate::store::Store;
use dial::{BridgeDialer, Resolver};
use io::{Client, Origin};
use listeners::Listener;
use mio::event::Event;
use mio::{Events, Poll, Token};
use signals::SelfPipe;
use slab::Slab;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Token of the signal self-pipe.
const SIGNAL: usize = 0;
/// Token of the waker the store's writer thread uses to say a batch is committed.
const STORE_WAKER: usize = 1;
/// Token of the socket pair the bridge resolver thread uses to say an address is resolved.
const DNS_WAKER: usize = 2;
/// Listener `i` has token `FIRST_LISTENER + i`; a listener index is a `u16`.
const FIRST_LISTENER: usize = 3;
/// Connection `id` (its slab key, the id the broker knows) has token `FIRST_CONN + id`.
const FIRST_CONN: usize = FIRST_LISTENER + u16::MAX as usize + 1;

/// What a `mio` event is about. Tokens are laid out as the loop's own sources, then the
/// listeners, then the connections, so a token says what it is without a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    /// A signal handler wrote to the self-pipe.
    Signal,
    /// The store's writer thread committed a batch.
    StoreWaker,
    /// The resolver thread answered a bridge's lookup.
    DnsWaker,
    /// A listener socket, by its index in `Server::listeners`.
    Listener(u16),
    /// A connection (accepted, or a bridge's outgoing one), by its slab key.
    Conn(ConnId),
}

impl From<Token> for Tok {
    fn from(token: Token) -> Tok {
        match token.0 {
            SIGNAL => Tok::Signal,
            STORE_WAKER => Tok::StoreWaker,
            DNS_WAKER => Tok::DnsWaker,
            t => match u16::try_from(t - FIRST_LISTENER) {
                Ok(index) => Tok::Listener(index),
                Err(_) => Tok::Conn(t - FIRST_CONN),
            },
        }
    }
}

impl From<Tok> for Token {
    fn from(tok: Tok) -> Token {
        Token(match tok {
            Tok::Signal => SIGNAL,
            Tok::StoreWaker => STORE_WAKER,
            Tok::DnsWaker => DNS_WAKER,
            Tok::Listener(index) => FIRST_LISTENER + usize::from(index),
            Tok::Conn(id) => FIRST_CONN + id,
        })
    }
}

/// Runs the broker until SIGINT or SIGTERM.
pub fn run(config: Config) -> std::io::Result<()> {
    run_with_reload(config, None)
}

/// Runs the broker; `reload` is called on SIGHUP.
pub fn run_with_reload(config: Config, reload: Option<Reloader>) -> std::io::Result<()> {
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
    signals: SelfPipe,
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
    /// The writer of dynamic security files, when dynamic security is on.
    saver: Option<saver::Saver>,
    /// Per bridge (by the broker's index): its name and TLS settings.
    bridges: Vec<BridgeDialer>,
    /// The largest WebSocket message a client may send (from `max_packet_size`).
    ws_message_limit: usize,
    /// After EMFILE, accepting is paused until this time (no busy loop).
    accept_paused_until: Option<Instant>,
    running: bool,
}

impl Server {
    fn new(config: &Config, reload: Option<Reloader>) -> std::io::Result<Server> {
        let poll = Poll::new()?;
        let listeners = listeners::bind_all(config, &poll)?;
        let signals = SelfPipe::install(&poll)?;
        let mut settings = Settings::load(config).map_err(std::io::Error::other)?;
        settings
            .load_dynsec(config)
            .map_err(std::io::Error::other)?;
        let saver = if settings.dynsec_files().is_empty() {
            None
        } else {
            Some(saver::Saver::start()?)
        };
        let ws_message_limit = listeners::ws_message_limit(settings.max_packet_size);
        let bridges = dial::load_bridge_dialers(config).map_err(std::io::Error::other)?;
        let mut broker = Broker::new(settings, Instant::now(), seed());
        broker.set_wall_clock(Instant::now(), unix_now());
        let store = if config.persistence {
            Some(open_store(config, &poll, &mut broker)?)
        } else {
            None
        };
        Ok(Server {
            ws_message_limit,
            bridges,
            store,
            resolver: None,
            saver,
            poll,
            listeners,
            clients: Slab::with_capacity(crate::broker::table_capacity::<Client>()),
            broker,
            signals,
            read_buf: vec![0; io::READ_CHUNK],
            backlog: Vec::new(),
            paused: Vec::new(),
            dirty: Vec::new(),
            nodelay: config.set_tcp_nodelay,
            reload,
            accept_paused_until: None,
            running: true,
        })
    }

    /// The loop. Each turn: wait for events (or the broker's next deadline); read the sockets
    /// left on the backlog last turn; handle each event, those of connections with messages
    /// in flight to them first; then [`Server::end_turn`].
    fn run(&mut self) -> std::io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut backlog = Vec::new();
        let mut later = Vec::new();
        while self.running {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            // Sockets left with unread data last turn go first, then the new events.
            std::mem::swap(&mut backlog, &mut self.backlog);
            for id in backlog.drain(..) {
                self.read_conn(id, now, true);
            }
            // Connections with messages in flight to them go first: their input is mostly
            // acknowledgements, which free room in their windows before this turn's PUBLISHes
            // are routed (so those go out at once rather than queue) and release the PUBACKs
            // held for them sooner.
            later.clear();
            for (i, event) in events.iter().enumerate() {
                match Tok::from(event.token()) {
                    Tok::Conn(id) if !self.broker.awaits_acks(id) => later.push(i),
                    _ => self.handle_event(event, now),
                }
            }
            let mut later_ones = later.iter().copied().peekable();
            for (i, event) in events.iter().enumerate() {
                if later_ones.peek().is_none() {
                    break;
                }
                if later_ones.next_if_eq(&i).is_some() {
                    self.handle_event(event, now);
                }
            }
            self.end_turn(now);
        }
        let now = Instant::now();
        self.broker.handle_shutdown(now, self.store.as_mut());
        self.flush_dirty(now);
        self.apply_actions(now);
        self.save_dynsec();
        if let Some(saver) = self.saver.as_mut() {
            saver.close();
        }
        if let Some(store) = self.store.take() {
            // Everything accepted is on disk before exit: a clean stop (SIGTERM, SIGINT)
            // loses nothing.
            if let Err(e) = store.close() {
                log::error!("Error: Unable to save the store at exit: {e}.");
            }
        }
        Ok(())
    }

    fn handle_event(&mut self, event: &Event, now: Instant) {
        match Tok::from(event.token()) {
            Tok::Signal => self.handle_signals(now),
            // The store committed (`end_turn` releases the acknowledgements it held) or read a
            // page of a long queue.
            Tok::StoreWaker => self.take_pages(now),
            Tok::DnsWaker => self.bridge_addresses_resolved(now),
            Tok::Listener(index) => self.accept(index, now),
            Tok::Conn(id) => self.conn_ready(id, event, now),
        }
    }

    /// A connection is ready: a bridge's connect finished, or bytes can move.
    fn conn_ready(&mut self, id: ConnId, event: &Event, now: Instant) {
        if let Some(bridge) = self.clients.get(id).and_then(Client::connecting) {
            return self.finish_bridge_connect(id, bridge, now);
        }
        if event.is_writable() {
            self.flush(id, now);
        }
        let closed = event.is_read_closed() || event.is_error();
        if event.is_readable() || closed {
            self.read_conn(id, now, closed);
        }
    }

    /// The work after a turn's events, in this order: accept again once an EMFILE pause is
    /// over; end the broker's turn (due timers, the turn's changes to the store); write what
    /// the broker produced; carry out its actions (closes, bridge connects); resume paused
    /// publishers once memory allows.
    fn end_turn(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            for index in (0..=u16::MAX).take(self.listeners.len()) {
                self.accept(index, now);
            }
        }
        self.broker.end_turn(now, self.store.as_mut());
        self.flush_dirty(now);
        self.apply_actions(now);
        self.save_dynsec();
        let (broker, backlog) = (&self.broker, &mut self.backlog);
        self.paused.retain(|&id| {
            let resume = broker.wants_input(id);
            if resume {
                backlog.push(id);
            }
            !resume
        });
    }

    /// Hands the dynamic security files the broker changed to the writer thread.
    fn save_dynsec(&mut self) {
        while let Some((path, json)) = self.broker.poll_dynsec_save() {
            if let Some(saver) = self.saver.as_mut() {
                saver.save(path, json);
            }
        }
    }

    /// Hands the broker the pages of long queues the store's writer has read.
    fn take_pages(&mut self, now: Instant) {
        while let Some(page) = self.store.as_ref().and_then(Store::take_page) {
            self.broker.handle_stored_page(page, now);
        }
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

    /// The socket died or reached end of file: tell the broker and forget the socket.
    fn drop_client(&mut self, id: ConnId, error: Option<String>, now: Instant) {
        if !self.clients.contains(id) {
            return;
        }
        self.broker.handle_connection_closed(id, error, now);
        self.remove_client(id);
    }

    fn remove_client(&mut self, id: ConnId) {
        if !self.clients.contains(id) {
            return;
        }
        let mut client = self.clients.remove(id);
        let _ = self.poll.registry().deregister(&mut client.stream);
        if let Origin::Listener(index) = client.origin {
            if let Some(l) = self.listeners.get_mut(usize::from(index)) {
                l.connections -= 1;
            }
        }
        self.backlog.retain(|&b| b != id);
        self.paused.retain(|&b| b != id);
    }

    /// Carries out the broker's actions, writing what they produce, until none is left.
    fn apply_actions(&mut self, now: Instant) {
        loop {
            let Some(first) = self.broker.poll_action() else {
                return;
            };
            let mut next = Some(first);
            while let Some(action) = next {
                match action {
                    Action::ConnectBridge { bridge, host, port } => {
                        self.resolve_bridge(bridge, host, port, now)
                    }
                    Action::Close(id) => {
                        self.flush(id, now);
                        if let Some(transport) =
                            self.clients.get_mut(id).and_then(Client::transport)
                        {
                            // Goodbyes: a WebSocket close frame, TLS close_notify.
                            transport.close();
                            self.flush(id, now);
                        }
                        if let Some(client) = self.clients.get(id) {
                            let _ = client.stream.shutdown(std::net::Shutdown::Both);
                        }
                        self.remove_client(id);
                        self.broker.handle_connection_closed(id, None, now);
                    }
                }
                next = self.broker.poll_action();
            }
            self.flush_dirty(now);
        }
    }
}

/// Opens the store, wires its commits to the loop through a `mio::Waker`, and restores the
/// broker's durable state from it.
fn open_store(config: &Config, poll: &Poll, broker: &mut Broker) -> std::io::Result<Store> {
    let waker = std::sync::Arc::new(mio::Waker::new(poll.registry(), Tok::StoreWaker.into())?);
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
        std::io::Error::other(format!(
            "Unable to open the store in {}: {e}",
            dir.display()
        ))
    })?;
    log::info!(target: "notice", "Using the store {}.", store.path().display());
    broker.restore(snapshot, Instant::now(), unix_now());
    Ok(store)
}

/// The wall-clock time in Unix seconds, which the store keeps expiry times in.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A seed for the broker's random choices that differs from run to run and between brokers
/// started in the same nanosecond.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()) << 32
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

#[cfg(test)]
mod tests {
    use super::{Tok, Token};

    #[test]
    fn every_token_reads_back_as_what_it_was_made_from() {
        for tok in [
            Tok::Signal,
            Tok::StoreWaker,
            Tok::DnsWaker,
            Tok::Listener(0),
            Tok::Listener(1),
            Tok::Listener(u16::MAX),
            Tok::Conn(0),
            Tok::Conn(1),
            Tok::Conn(1 << 40),
        ] {
            assert_eq!(Tok::from(Token::from(tok)), tok);
        }
    }
}
