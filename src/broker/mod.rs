//! The broker logic: sessions, routing and retained messages, with no sockets and no clock.
//!
//! The server loop tells the broker what happened through the `handle_*` methods (a connection
//! opened, bytes arrived, bytes were written, a socket closed) and takes its answers through
//! the `poll_*` methods: bytes to write per connection and [`Action`]s (close this connection,
//! dial this bridge). It never blocks, never reads the clock (every call takes `now`, and
//! [`Broker::new`] the start time and random seed), and owns no socket, so tests drive it
//! directly with a simulated clock.
//!
//! The whole interface: [`Broker::new`]; inputs [`Broker::handle_connection_opened`],
//! [`Broker::handle_bytes`], [`Broker::handle_written`], [`Broker::handle_connection_closed`],
//! [`Broker::handle_reload`], [`Broker::handle_shutdown`]; [`Broker::end_turn`]; outputs
//! [`Broker::poll_dirty`], [`Broker::poll_transmit`], [`Broker::poll_action`],
//! [`Broker::next_deadline`]; and [`Broker::counts`] to look inside. Within the crate the
//! server also feeds what only a real socket or disk has: `handle_certificate_identity` (a
//! TLS client's certificate, before its first bytes), `handle_bridge_failed` (a bridge could
//! not be dialled), `restore` (the store's contents, once, right after `new`),
//! `handle_stored_page` (a page of a long queue the store read back), and asks
//! `wants_input` (back-pressure) before reading a socket.
//!
//! One turn of the loop, in this order:
//! 1. feed the turn's events: `handle_connection_opened`, `handle_bytes`,
//!    `handle_connection_closed`, `handle_written`, ...;
//! 2. [`Broker::end_turn`]: due timers, then the turn's changes to the store (their
//!    acknowledgements wait for its commit), then the acknowledgements of every batch the
//!    store has committed since;
//! 3. write the output of every connection [`Broker::poll_dirty`] lists
//!    ([`Broker::poll_transmit`], then `handle_written`);
//! 4. carry out every [`Broker::poll_action`], answering a close with
//!    `handle_connection_closed`, and write again, until no action is left;
//! 5. wait for events until [`Broker::next_deadline`].
//!
//! A message passes through these modules, in order:
//! 1. this module: [`Broker::handle_bytes`] cuts the input into packets ([`conn`] holds the
//!    connection's framing state) and dispatches each one;
//! 2. `inbound.rs`: a client's PUBLISH is checked (alias, bridge topic, QoS 2 duplicate, ACL,
//!    size) and accepted;
//! 3. `route.rs`: the matching subscriptions ([`router`] is the table), one delivery per
//!    session; `retain.rs` stores a retained message on the way;
//! 4. `deliver.rs`: each delivery is written to the subscriber's output buffer, put in flight,
//!    queued or dropped, and the queue drains as the window opens;
//! 5. `acks.rs`: the publisher's PUBACK/PUBREC (held until the store commit when persistence is
//!    on) and the subscriber's PUBACK/PUBREC/PUBCOMP, which free the in-flight slot.
//!
//! A SUBSCRIBE goes from `subscribe.rs` (the routing table, the SUBACK) to `retain.rs` (replay of
//! the matching retained messages) and then the same `deliver.rs`.
//!
//! Around the path: `connect.rs` (CONNECT, sessions taken over or resumed), [`session`] (what is
//! kept about a client), `clients.rs` (a session by client id), `persist.rs` (what the store is
//! told, and the restore at start), `timers.rs` (keepalive, will delay, session expiry),
//! `sys.rs` (`$SYS`), [`bridge`], `identity.rs` (client certificates), `mount.rs` (a
//! listener's `mount_point`), `control.rs` (requests to the broker on `$CONTROL/...`: the
//! administration API) and `dynsec.rs` (dynamic security: asked at CONNECT and at every access
//! check, its `$CONTROL` API, its kicks and saves).

mod acks;
pub mod bridge;
mod clients;
pub mod conn;
mod connect;
mod control;
mod deliver;
mod dynsec;
mod hold;
mod identity;
mod inbound;
mod metrics;
mod mount;
mod persist;

mod retain;
mod route;
pub mod router;
pub mod session;
mod subscribe;
mod sys;
mod timers;
mod violation;

use crate::auth::Security;
use crate::codec::{self, reason, DecodeError, Packet};
use crate::config::Config;
use conn::{Conn, ConnState};
pub use metrics::LoopFigures;
use router::{Router, Subscriber};
pub use session::SessionId;
use session::{Expiry, Session};
use slab::Slab;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use timers::{Timer, Timers};
pub use violation::Violation;

/// Index of a network connection (the server loop's slab key).
pub type ConnId = usize;

/// The initial capacity of a table with an entry per connection: enough entries to fill
/// 128 KiB, the size from which glibc's allocator maps a block straight from the kernel.
///
/// Such a block grows by moving its pages (`mremap`) and its unused tail costs no memory
/// until it is touched. A table started small would instead grow by copying inside the heap,
/// leaving each outgrown copy behind as a free hole: about 50 bytes per idle connection, all
/// to save virtual address space that is never resident.
pub fn table_capacity<T>() -> usize {
    (128 * 1024usize).div_ceil(std::mem::size_of::<T>().max(1))
}

/// Mosquitto's sanity limit for CONNECT, checked before a client is known.
const MAX_CONNECT_PACKET: usize = 100_000;
/// Output bytes held for one connection before QoS 0 messages to it are dropped and queued
/// ones wait (a slow or stopped reader cannot make the broker grow without bound).
pub const OUTPUT_HIGH_WATER: usize = 1 << 20;

/// Queued message bytes at which publishers are paused when `memory_limit` is not set.
pub const DEFAULT_MEMORY_LIMIT: usize = 128 << 20;

/// Changes handed to the store and not committed yet at which PUBLISHes that may be stored
/// wait in their socket (TCP back-pressure): about 4 MB of pending changes. Without it, a
/// publisher faster than the disk, or one message fanned out to many offline sessions, makes
/// the writer's backlog, and the broker's memory, grow without bound.
pub const STORE_BACKLOG_LIMIT: usize = 65_536;

/// The log's account of the store falling more than [`STORE_BACKLOG_LIMIT`] changes behind:
/// a line when a streak of such pauses starts, and one when the store has kept up for a
/// second since, with how many times PUBLISHes waited (a slow SD card shows in the log, not
/// only as slow acknowledgements).
#[derive(Debug, Default)]
struct StoreLag {
    behind: bool,
    pauses: u32,
    last_behind: Option<Instant>,
}

impl StoreLag {
    /// Takes the backlog the store has after a turn's batch.
    fn note(&mut self, backlog: usize, now: Instant) {
        if backlog > STORE_BACKLOG_LIMIT {
            if !self.behind && self.pauses == 0 {
                log::info!(
                    target: "notice",
                    "store: {backlog} changes wait for the disk; QoS 1/2 and retained PUBLISHes wait until it catches up."
                );
            }
            if !self.behind {
                self.behind = true;
                self.pauses += 1;
            }
            self.last_behind = Some(now);
        } else {
            self.behind = false;
        }
        let calm = self
            .last_behind
            .is_some_and(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if !self.behind && calm {
            log::info!(
                target: "notice",
                "store: kept up again; PUBLISHes waited for it {} times.",
                self.pauses
            );
            self.pauses = 0;
            self.last_behind = None;
        }
    }
}

/// The broker's settings, taken from [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub allow_anonymous: bool,
    pub max_packet_size: usize,
    pub message_size_limit: usize,
    pub max_keepalive: u16,
    pub max_inflight_messages: usize,
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    pub queue_qos0_messages: bool,
    pub retain_available: bool,
    pub allow_zero_length_clientid: bool,
    pub auto_id_prefix: String,
    pub persistent_client_expiration: Option<Duration>,
    pub upgrade_outgoing_qos: bool,
    pub connection_messages: bool,
    /// Seconds between `$SYS` updates; 0 turns `$SYS` off.
    pub sys_interval: u32,
    /// Payload bytes of QoS 1 and 2 messages in flight to one client (0 = no limit).
    pub max_inflight_bytes: usize,
    /// Only client ids starting with this may connect.
    pub clientid_prefixes: Option<String>,
    /// A retained message is replayed only while its publisher may still publish it.
    pub check_retain_source: bool,
    /// Each configured listener's own options, by listener index (kept on reload).
    pub listeners: Vec<ListenerOptions>,
    /// Time a new connection has to send a complete CONNECT.
    pub connect_timeout: Duration,
    /// Refuse in SUBACK a filter the ACL lets read no topic at all (midge's own option).
    pub refuse_unreadable_subscriptions: bool,
    /// Bytes of queued messages above which the server stops reading from publishers.
    pub memory_limit: usize,
    /// Password file and ACL (shared, since settings are cloned on reload).
    pub security: Rc<Security>,
    /// With `per_listener_settings true`: each listener's own policy, by listener index.
    pub per_listener: Vec<ListenerPolicy>,
    /// The configured bridges, set up by [`Broker::new`]; a reload does not change them (as
    /// with Mosquitto, bridges change on restart).
    pub bridges: Vec<crate::config::BridgeConfig>,
}

/// The options Mosquitto scopes per listener whatever `per_listener_settings` says.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// Prefix of every topic of the listener's clients (see `mount.rs`).
    pub mount_point: Option<Rc<str>>,
    /// The username replaces the client id.
    pub use_username_as_clientid: bool,
    /// The highest QoS accepted from the listener's clients and granted to them.
    pub max_qos: codec::QoS,
    /// Topic aliases the listener's MQTT 5 clients may use towards midge.
    pub max_topic_alias: u16,
}

impl Default for ListenerOptions {
    /// Mosquitto's defaults: no mount point, client ids as sent, QoS 2, 10 aliases.
    fn default() -> ListenerOptions {
        ListenerOptions::from(&crate::config::ListenerConfig::default())
    }
}

impl From<&crate::config::ListenerConfig> for ListenerOptions {
    fn from(l: &crate::config::ListenerConfig) -> ListenerOptions {
        ListenerOptions {
            mount_point: l.mount_point.as_deref().map(Rc::from),
            use_username_as_clientid: l.use_username_as_clientid,
            max_qos: codec::QoS::from_u8(l.max_qos).unwrap_or(codec::QoS::ExactlyOnce),
            max_topic_alias: l.max_topic_alias,
        }
    }
}

/// The authentication options of one listener (`per_listener_settings true`).
#[derive(Debug, Clone)]
pub struct ListenerPolicy {
    pub allow_anonymous: bool,
    pub allow_zero_length_clientid: bool,
    pub auto_id_prefix: String,
    pub security: Rc<Security>,
}

impl Default for Settings {
    /// The settings of [`Config::default`] (the defaults are written there once), with
    /// anonymous clients allowed, as in local-only mode: a broker with no listener configured.
    fn default() -> Settings {
        Settings {
            allow_anonymous: true,
            ..Settings::from_config(&Config::default())
        }
    }
}

impl Settings {
    /// The broker-wide settings of a configuration.
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            allow_anonymous: c.allow_anonymous.unwrap_or(false),
            max_packet_size: c.max_packet_size as usize,
            message_size_limit: c.message_size_limit as usize,
            max_keepalive: c.max_keepalive,
            max_inflight_messages: usize::from(c.max_inflight_messages),
            max_queued_messages: c.max_queued_messages,
            max_queued_bytes: c.max_queued_bytes,
            queue_qos0_messages: c.queue_qos0_messages,
            retain_available: c.retain_available,
            allow_zero_length_clientid: c.allow_zero_length_clientid,
            auto_id_prefix: c.auto_id_prefix.clone(),
            persistent_client_expiration: c.persistent_client_expiration,
            upgrade_outgoing_qos: c.upgrade_outgoing_qos,
            connection_messages: c.connection_messages,
            sys_interval: c.sys_interval,
            max_inflight_bytes: c.max_inflight_bytes,
            clientid_prefixes: c.clientid_prefixes.clone(),
            check_retain_source: c.check_retain_source,
            listeners: c.listeners.iter().map(ListenerOptions::from).collect(),
            connect_timeout: c.connect_timeout,
            refuse_unreadable_subscriptions: c.refuse_unreadable_subscriptions,
            memory_limit: match c.memory_limit {
                0 => DEFAULT_MEMORY_LIMIT,
                n => n,
            },
            security: Rc::new(Security::default()),
            per_listener: Vec::new(),
            bridges: c.bridges.clone(),
        }
    }

    /// The options of listener `listener`.
    pub fn listener(&self, listener: u16) -> ListenerOptions {
        self.listeners
            .get(usize::from(listener))
            .cloned()
            .unwrap_or_default()
    }

    /// The password file and ACL for clients of listener `listener`.
    pub fn security_for(&self, listener: u16) -> &Rc<Security> {
        self.per_listener
            .get(usize::from(listener))
            .map_or(&self.security, |p| &p.security)
    }

    fn allow_anonymous_for(&self, listener: u16) -> bool {
        self.per_listener
            .get(usize::from(listener))
            .map_or(self.allow_anonymous, |p| p.allow_anonymous)
    }

    fn allow_zero_length_clientid_for(&self, listener: u16) -> bool {
        self.per_listener
            .get(usize::from(listener))
            .map_or(self.allow_zero_length_clientid, |p| {
                p.allow_zero_length_clientid
            })
    }

    fn auto_id_prefix_for(&self, listener: u16) -> &str {
        self.per_listener
            .get(usize::from(listener))
            .map_or(&self.auto_id_prefix, |p| &p.auto_id_prefix)
    }

    /// True when any listener has an ACL or dynamic security (delivery then checks READ per
    /// recipient).
    pub(super) fn any_acl(&self) -> bool {
        let ruled = |s: &Security| s.acl.is_some() || s.dynsec.is_some();
        ruled(&self.security) || self.per_listener.iter().any(|p| ruled(&p.security))
    }

    /// The settings of a configuration with its password file and ACL loaded; warnings about
    /// the files are logged.
    pub fn load(c: &Config) -> Result<Settings, String> {
        let (security, warnings) =
            Security::load(c.password_file.as_deref(), c.acl_file.as_deref())?;
        for w in warnings {
            log::warn!("Warning: {w}");
        }
        let mut per_listener = Vec::new();
        if c.per_listener_settings {
            for l in &c.listeners {
                let (security, warnings) =
                    Security::load(l.auth.password_file.as_deref(), l.auth.acl_file.as_deref())?;
                for w in warnings {
                    log::warn!("Warning: {w}");
                }
                per_listener.push(ListenerPolicy {
                    allow_anonymous: l.auth.allow_anonymous.unwrap_or(false),
                    allow_zero_length_clientid: l
                        .auth
                        .allow_zero_length_clientid
                        .unwrap_or(c.allow_zero_length_clientid),
                    auto_id_prefix: l
                        .auth
                        .auto_id_prefix
                        .clone()
                        .unwrap_or_else(|| c.auto_id_prefix.clone()),
                    security: Rc::new(security),
                });
            }
        }
        Ok(Settings {
            security: Rc::new(security),
            per_listener,
            ..Settings::from_config(c)
        })
    }

    fn packet_limit(&self) -> usize {
        if self.max_packet_size == 0 {
            codec::MAX_PACKET
        } else {
            self.max_packet_size
        }
    }

    /// The Receive Maximum midge announces to MQTT 5 clients: how many QoS 2 messages a
    /// client may have unreleased at once (QoS 1 is acknowledged at once).
    fn receive_maximum(&self) -> usize {
        match self.max_inflight_messages {
            0 => 65_535,
            n => n.min(65_535),
        }
    }

    /// The in-flight window: 0 means "no limit", but ids are 16 bits.
    fn inflight_limit(&self) -> usize {
        match self.max_inflight_messages {
            0 => 65_000,
            n => n.min(65_000),
        }
    }
}

/// How a connection came to be, told to [`Broker::handle_connection_opened`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Accepted on configured listener number `index` (for `per_listener_settings`), bound
    /// to local port `port`.
    Listener { index: usize, port: u16 },
    /// Dialled for the bridge of that number, as an [`Action::ConnectBridge`] asked.
    Bridge(usize),
}

/// What the broker holds, from [`Broker::counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Sessions, connected and not (a bridge's local session included).
    pub sessions: usize,
    /// Subscriptions in the routing table.
    pub subscriptions: usize,
    /// Retained messages.
    pub retained: usize,
}

/// Something the server loop must do for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write what is left in the connection's output buffer, then close its socket and call
    /// [`Broker::handle_connection_closed`].
    Close(ConnId),
    /// Resolve `host` (off the loop thread) and open a connection to it for bridge `bridge`,
    /// then call [`Broker::handle_connection_opened`] with [`Via::Bridge`], or
    /// `handle_bridge_failed`.
    ConnectBridge {
        bridge: usize,
        host: String,
        port: u16,
    },
}

/// Why a connection ends; decides the log line and whether the will is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT (`with_will`: v5 reason 0x04).
    Disconnected { with_will: bool },
    /// The socket reached end of file without DISCONNECT.
    ClosedByClient,
    /// A read or write on the socket failed.
    SocketError(String),
    /// No packet within 1.5 × keepalive.
    KeepaliveTimeout,
    /// No CONNECT within the connect timeout.
    ConnectTimeout,
    /// A packet that could not be decoded, or broke the protocol.
    Protocol(Violation),
    /// CONNECT was refused with a CONNACK error.
    Refused,
    /// Another connection took over this client id.
    TakenOver,
    /// The broker is shutting down.
    Shutdown,
    /// After a reload, the client's login is no longer valid (user removed, password changed,
    /// anonymous no longer allowed). As in Mosquitto: no DISCONNECT, no will.
    Revoked,
    /// midge ends one of its bridge links (a lazy bridge gone idle, or a link replaced by one
    /// to the bridge's first address); the bridge logs why.
    BridgeStopped,
    /// An administrator disconnected the client (`control.rs`): as Mosquitto's kick, no will.
    Kicked,
}

impl CloseReason {
    fn publishes_will(&self) -> bool {
        match self {
            CloseReason::Disconnected { with_will } => *with_will,
            CloseReason::Refused
            | CloseReason::Shutdown
            | CloseReason::Revoked
            | CloseReason::BridgeStopped
            | CloseReason::Kicked => false,
            _ => true,
        }
    }
}

/// Counters behind `$SYS/broker/...`.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub publish_received: u64,
    pub publish_sent: u64,
    pub publish_dropped: u64,
    pub clients_connected: usize,
    pub clients_maximum: usize,
    pub clients_expired: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Payload bytes of PUBLISH received and sent.
    pub publish_bytes_received: u64,
    pub publish_bytes_sent: u64,
    /// `publish_received` and `publish_sent` by QoS (index 0, 1, 2), for `/metrics`.
    pub publish_received_by_qos: [u64; 3],
    pub publish_sent_by_qos: [u64; 3],
}

/// The broker: every session, subscription and retained message, and the protocol state of
/// every connection.
pub struct Broker {
    settings: Settings,
    conns: Vec<Option<Conn>>,
    sessions: Slab<Session>,
    next_gen: u32,
    clients: clients::ClientIndex,
    router: Router,
    retained: retain::Retained,
    timers: Timers,
    actions: std::collections::VecDeque<Action>,
    dirty: Vec<ConnId>,
    /// Reused for every publish: the subscriptions that match it.
    matches: Vec<Subscriber>,
    next_serial: u32,
    rng: u64,
    /// The time of the event being handled.
    now: Instant,
    /// Counters for `$SYS`.
    pub(crate) stats: Stats,
    sys: sys::SysState,
    /// Bytes of messages waiting in session queues, against `memory_limit`.
    held_bytes: deliver::QueuedBytes,
    /// Changes the store had not committed at the end of the last turn ([`STORE_BACKLOG_LIMIT`]).
    store_backlog: usize,
    /// The log's account of the store falling behind.
    store_lag: StoreLag,
    /// Change recording for the store, when persistence is on.
    persist: Option<Box<persist::Persist>>,
    /// Configured bridges.
    bridges: Vec<bridge::Bridge>,
    /// Dynamic security files to write, with their new contents (`dynsec.rs`).
    dynsec_saves: Vec<(std::path::PathBuf, Vec<u8>)>,
    /// When the broker was created, and the wall-clock time then in Unix seconds (0 until
    /// [`Broker::set_wall_clock`]), for the times the administration API reports.
    started: Instant,
    unix_at_start: u64,
}

impl Broker {
    /// A broker with no clients, created at `now`. `seed` starts the generator that picks
    /// shared-subscription members and generated client ids; the caller chooses it, so a test
    /// or fuzz run can replay the same choices.
    pub fn new(settings: Settings, now: Instant, seed: u64) -> Broker {
        let mut broker = Broker {
            settings: settings.clone(),
            conns: Vec::with_capacity(table_capacity::<Option<Conn>>()),
            sessions: Slab::with_capacity(table_capacity::<Session>()),
            next_gen: 0,
            clients: clients::ClientIndex::default(),
            router: Router::default(),
            retained: retain::Retained::default(),
            timers: Timers::new(now),
            actions: std::collections::VecDeque::new(),
            dirty: Vec::new(),
            matches: Vec::new(),
            next_serial: 0,
            rng: seed | 1,
            now,
            sys: sys::SysState::new(now, Duration::from_secs(u64::from(settings.sys_interval))),
            stats: Stats::default(),
            held_bytes: deliver::QueuedBytes::default(),
            store_backlog: 0,
            store_lag: StoreLag::default(),
            persist: None,
            bridges: Vec::new(),
            dynsec_saves: Vec::new(),
            started: now,
            unix_at_start: 0,
        };
        broker.add_bridges(now);
        broker
    }

    /// Tells the broker that the wall clock reads `unix` (Unix seconds) at `now`: the broker
    /// never reads the clock, but reports when clients connected in Unix time.
    pub fn set_wall_clock(&mut self, now: Instant, unix: u64) {
        let since_start = now.saturating_duration_since(self.started).as_secs();
        self.unix_at_start = unix.saturating_sub(since_start);
    }

    /// Seconds since the broker started at `now` (what [`conn::Conn::connected_at`] holds).
    fn uptime_secs(&self, now: Instant) -> u32 {
        let secs = now.saturating_duration_since(self.started).as_secs();
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// The Unix time of a moment given in seconds since the broker started.
    fn unix_time(&self, since_start: u32) -> u64 {
        self.unix_at_start + u64::from(since_start)
    }

    /// Replaces the settings (SIGHUP); existing sessions keep what they negotiated. Every
    /// connected client the new password file or `allow_anonymous` no longer admits is
    /// disconnected, as Mosquitto does (see `Broker::recheck_logins`); returns how many.
    /// ACLs need no such pass: every later PUBLISH, SUBSCRIBE and delivery asks the new ones.
    /// The bridges stay as they were started, and so do the listeners' own options
    /// (`mount_point`, `max_qos`...): Mosquitto does not reload listeners either.
    pub fn handle_reload(&mut self, mut settings: Settings, now: Instant) -> usize {
        settings.listeners = std::mem::take(&mut self.settings.listeners);
        settings.keep_dynsec(&self.settings);
        for line in settings.security.describe_change(&self.settings.security) {
            log::info!(target: "notice", "{line}");
        }
        self.sys
            .set_interval(Duration::from_secs(u64::from(settings.sys_interval)));
        self.settings = settings;
        self.recheck_logins(now)
    }

    /// A network connection with `peer` is open: a client accepted on a listener, or the
    /// connection the server dialled for a bridge after an [`Action::ConnectBridge`] (the
    /// broker then sends the bridge's CONNECT).
    pub fn handle_connection_opened(
        &mut self,
        id: ConnId,
        peer: SocketAddr,
        via: Via,
        now: Instant,
    ) {
        self.next_serial = self.next_serial.wrapping_add(1);
        let serial = self.next_serial;
        if self.conns.len() <= id {
            self.conns.resize_with(id + 1, || None);
        }
        let (listener, local_port) = match via {
            Via::Listener { index, port } => (index, port),
            Via::Bridge(index) => return self.bridge_opened(id, index, serial, peer, now),
        };
        let peer = conn::Peer::from(peer);
        if self.settings.connection_messages {
            log::info!(target: "notice", "New connection from {} on port {}.", peer, local_port);
        }
        let mut conn = Conn::new(serial, peer, now);
        conn.listener = u16::try_from(listener).unwrap_or(u16::MAX);
        conn.local_port = local_port;
        self.conns[id] = Some(conn);
        self.stats.connections += 1;
        self.timers
            .push(now + self.settings.connect_timeout, Timer::Conn(id, serial));
    }

    /// The socket of connection `id` is gone: the server loop closed it after an
    /// [`Action::Close`], or it reached end of file (`error` is `None`) or failed. The broker
    /// forgets the connection (closing it first if it had not asked to); the id may be reused.
    pub fn handle_connection_closed(&mut self, id: ConnId, error: Option<String>, now: Instant) {
        let reason = match error {
            Some(e) => CloseReason::SocketError(e),
            None => CloseReason::ClosedByClient,
        };
        self.close(id, reason, now);
        if let Some(slot) = self.conns.get_mut(id) {
            *slot = None;
        }
        self.actions.retain(|a| *a != Action::Close(id));
    }

    /// Output waiting to be written to connection `id`: write a prefix of it, then report how
    /// much with [`Broker::handle_written`].
    pub fn poll_transmit(&mut self, id: ConnId) -> Option<&mut Vec<u8>> {
        self.conns.get_mut(id)?.as_mut()?.out_if_any()
    }

    /// Tells the broker the server wrote `n` bytes of connection `id`'s output (for `$SYS`),
    /// and lets queued messages flow again once a slow reader has caught up.
    pub fn handle_written(&mut self, id: ConnId, n: usize) {
        self.stats.bytes_sent += n as u64;
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        conn.trim();
        if conn.throttled && conn.out().len() < OUTPUT_HIGH_WATER / 2 {
            conn.throttled = false;
            if let ConnState::Active(sid) = conn.state {
                self.pump(sid);
            }
        }
    }

    /// Puts in `into` the connections that have new output since the last call (each listed
    /// once), to write with [`Broker::poll_transmit`].
    pub fn poll_dirty(&mut self, into: &mut Vec<ConnId>) {
        into.clear();
        std::mem::swap(into, &mut self.dirty);
        for &id in into.iter() {
            if let Some(c) = self.conns.get_mut(id).and_then(Option::as_mut) {
                c.clear_dirty();
            }
        }
    }

    /// The oldest action the server loop has not carried out yet.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// True while queued messages hold more than `memory_limit` bytes: the server then stops
    /// reading from publishers (TCP back-pressure) instead of dropping (docs/delivery.md).
    fn memory_pressure(&self) -> bool {
        self.held_bytes.get() > self.settings.memory_limit
    }

    /// True while the store's writer is more than [`STORE_BACKLOG_LIMIT`] changes behind,
    /// counting this turn's.
    fn store_pressure(&self) -> bool {
        self.persist
            .as_deref()
            .is_some_and(|p| self.store_backlog + p.changes_len() > STORE_BACKLOG_LIMIT)
    }

    /// Whether the packet that starts with `first` must wait for the store: a PUBLISH that
    /// may be stored (QoS 1/2, or retained) while the store is far behind. It stays in the
    /// connection's input, with everything after it, until the store catches up.
    fn must_wait_for_store(&self, first: u8) -> bool {
        first >> 4 == codec::kind::PUBLISH && first & 0x07 != 0 && self.store_pressure()
    }

    /// False if the server should leave connection `id`'s bytes unread for now: under memory
    /// pressure, a connection that has published is paused, while subscribers keep being read
    /// since their acknowledgements free memory; a connection holding PUBLISHes back for the
    /// store waits until the store catches up.
    pub(crate) fn wants_input(&self, id: ConnId) -> bool {
        let paused =
            |c: &Conn| (c.published && self.memory_pressure()) || (c.held && self.store_pressure());
        !self.conn(id).is_some_and(paused)
    }

    /// True if connection `id` holds PUBLISHes back for the store: the server hands them to
    /// [`Broker::handle_bytes`] (with no new bytes) before reading more.
    pub(crate) fn holds_input(&self, id: ConnId) -> bool {
        self.conn(id).is_some_and(|c| c.held)
    }

    /// True if connection `id` has messages in flight to it: its input is likely to hold the
    /// acknowledgements that free its window.
    pub(crate) fn awaits_acks(&self, id: ConnId) -> bool {
        match self.conn(id).map(|c| &c.state) {
            Some(ConnState::Active(sid)) => {
                self.session(*sid).is_some_and(|s| !s.inflight.is_empty())
            }
            _ => false,
        }
    }

    /// How many sessions, subscriptions and retained messages the broker holds.
    pub fn counts(&self) -> Counts {
        Counts {
            sessions: self.sessions.len(),
            subscriptions: self.router.len(),
            retained: self.retained.len(),
        }
    }

    /// When [`Broker::end_turn`] next has timers to run.
    pub fn next_deadline(&self) -> Option<Instant> {
        let held = self.persist.as_deref().and_then(|p| p.holds.next_check());
        [self.timers.next_deadline(), self.sys.next_due(), held]
            .into_iter()
            .flatten()
            .min()
    }

    /// The loop's turn is over: runs every timer due at `now` (keepalive and connect
    /// timeouts, session expiry, will delays, bridge retries, `$SYS`), then hands the turn's
    /// changes to `store` as one batch and holds the turn's acknowledgements until that batch
    /// is committed (group commit: one transaction per turn).
    pub fn end_turn(&mut self, now: Instant, store: Option<&mut crate::store::Store>) {
        self.sys
            .set_store_status(store.as_ref().map(|s| s.status()));
        self.run_due_timers(now);
        self.record_due_holds(Some(now));
        self.commit_turn(store);
    }

    /// Runs every timer due at `now`.
    fn run_due_timers(&mut self, now: Instant) {
        self.now = now;
        if self.sys.next_due().is_some_and(|t| t <= now) {
            self.publish_sys(now);
        }
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Conn(id, serial) => self.check_conn_timer(id, serial, now),
                Timer::SessionExpiry(sid) => self.check_session_expiry(sid, now),
                Timer::WillDelay(sid) => self.check_will_delay(sid, now),
                Timer::Bridge(index) => self.bridge_due(index, now),
            }
        }
        self.start_lazy_bridges(now);
    }

    /// The server is stopping: closes every connection (v5 clients get DISCONNECT 0x8B, server
    /// shutting down) and hands the last changes to `store`; no timer runs any more.
    pub fn handle_shutdown(&mut self, now: Instant, store: Option<&mut crate::store::Store>) {
        for id in 0..self.conns.len() {
            let v5_active = match self.conn(id) {
                Some(c) => c.version.is_v5() && matches!(c.state, ConnState::Active(_)),
                None => continue,
            };
            if v5_active {
                self.send_disconnect(id, reason::SERVER_SHUTTING_DOWN);
            }
            self.close(id, CloseReason::Shutdown, now);
        }
        self.record_due_holds(None);
        self.record_inflight_qos1();
        self.commit_turn(store);
    }

    /// Hands the changes recorded since the last call to `store` as one batch, tags the
    /// acknowledgements written meanwhile with that batch, and releases those already
    /// committed.
    fn commit_turn(&mut self, store: Option<&mut crate::store::Store>) {
        let Some(store) = store else {
            return;
        };
        let batch = store.submit(self.take_changes());
        self.store_backlog = store.backlog();
        self.store_lag.note(self.store_backlog, self.now);
        // After the batch: a page is read once what came before it is committed.
        for request in self.take_page_requests() {
            store.read_messages(request);
        }
        self.seal_acks(batch, store.committed());
    }

    fn check_conn_timer(&mut self, id: ConnId, serial: u32, now: Instant) {
        let Some(conn) = self.conn(id) else {
            return;
        };
        if conn.serial != serial {
            return;
        }
        if conn.held {
            // Its bytes wait unread for the store, PINGREQs among them: it is not silent.
            if let Some(c) = self.conn_mut(id) {
                c.last_rx = now;
            }
        }
        let Some(conn) = self.conn(id) else {
            return;
        };
        let is_bridge = conn.bridge().is_some();
        let deadline = match conn.state {
            ConnState::AwaitConnect | ConnState::BridgeConnecting(_) => {
                self.close(id, CloseReason::ConnectTimeout, now);
                return;
            }
            ConnState::Active(_) if is_bridge => match self.bridge_keepalive(id, now) {
                Some(next) => {
                    self.timers.push(next, Timer::Conn(id, serial));
                    return;
                }
                None => {
                    self.close(id, CloseReason::KeepaliveTimeout, now);
                    return;
                }
            },
            ConnState::Closing => return,
            ConnState::Active(_) => match conn.keepalive_deadline() {
                Some(d) => d,
                None => return,
            },
        };
        if now >= deadline {
            self.send_disconnect(id, reason::KEEP_ALIVE_TIMEOUT);
            self.close(id, CloseReason::KeepaliveTimeout, now);
        } else {
            self.timers.push(deadline, Timer::Conn(id, serial));
        }
    }

    fn check_will_delay(&mut self, sid: SessionId, now: Instant) {
        self.now = now;
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        if s.pending_will().is_some_and(|(_, at)| *at <= now) {
            if let Some((will, _)) = s.take_pending_will() {
                self.persist_will(sid);
                let source = self.message_source(sid);
                self.publish_will(*will, source, now);
            }
        }
    }

    fn check_session_expiry(&mut self, sid: SessionId, now: Instant) {
        self.now = now;
        let Some(s) = self.session(sid) else {
            return;
        };
        if s.conn().is_some() {
            return;
        }
        match s.expires_at() {
            Some(at) if at <= now => {
                log::info!(target: "notice", "Expiring client {} (session expired).", s.client_id);
                self.stats.clients_expired += 1;
                self.remove_session(sid);
            }
            Some(at) => self.timers.push(at, Timer::SessionExpiry(sid)),
            None => {}
        }
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(id)?.as_ref()
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id)?.as_mut()
    }

    /// The session of client `id`, if the broker has one.
    fn session_of(&self, id: &str) -> Option<SessionId> {
        let idx = self.clients.get(id, &self.sessions)?;
        let gen = self.sessions.get(idx as usize)?.gen;
        Some(SessionId { idx, gen })
    }

    fn session(&self, sid: SessionId) -> Option<&Session> {
        self.sessions
            .get(sid.idx as usize)
            .filter(|s| s.gen == sid.gen)
    }

    fn session_mut(&mut self, sid: SessionId) -> Option<&mut Session> {
        self.sessions
            .get_mut(sid.idx as usize)
            .filter(|s| s.gen == sid.gen)
    }

    /// Appends an encoded packet to a connection's output.
    fn send(&mut self, id: ConnId, packet: &Packet<'_>) {
        let Some(conn) = self.conns.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        packet.encode(conn.version, conn.out_mut());
        self.stats.messages_sent += 1;
        conn.mark_dirty(id, &mut self.dirty);
    }

    /// Sends an MQTT 5 DISCONNECT with `code` (nothing for 3.x, which has no server DISCONNECT).
    fn send_disconnect(&mut self, id: ConnId, code: u8) {
        let is_v5 = self.conn(id).is_some_and(|c| c.version.is_v5());
        if is_v5 {
            log::debug!("Sending DISCONNECT to {} (rc{})", self.conn_name(id), code);
            self.send(
                id,
                &Packet::Disconnect(codec::Disconnect {
                    reason: code,
                    properties: codec::Properties::default(),
                }),
            );
        }
    }

    /// The client id of connection `id`, for logs: its session's, or `<unknown>` before
    /// CONNECT and after the connection closed.
    fn conn_name(&self, id: ConnId) -> String {
        let session = match self.conn(id).map(|c| c.state) {
            Some(ConnState::Active(sid)) => self.session(sid),
            Some(ConnState::BridgeConnecting(index)) => self.bridge_session(index as usize),
            _ => None,
        };
        session.map_or("<unknown>", |s| &s.client_id).to_string()
    }

    /// Ends connection `id`: logs why, detaches its session (ending it if it is not
    /// persistent), publishes the will when the reason calls for it, and asks the server loop
    /// to close the socket.
    fn close(&mut self, id: ConnId, reason: CloseReason, now: Instant) {
        if self.conn(id).is_none_or(|c| c.state == ConnState::Closing) {
            return;
        }
        // Named while the connection still points at its session.
        let name = self.conn_name(id);
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let state = std::mem::replace(&mut conn.state, ConnState::Closing);
        let will = conn.take_will().filter(|_| reason.publishes_will());
        let peer = conn.peer;
        self.log_close(&name, peer, &reason);
        self.now = now;
        let mut will = will;
        // Taken now: the session may end with the connection, before the will goes.
        let will_source = match state {
            ConnState::Active(sid) if will.is_some() => self.message_source(sid),
            _ => None,
        };
        if let ConnState::BridgeConnecting(index) = state {
            self.bridge_down(index as usize, id, now);
        }
        if let ConnState::Active(sid) = state {
            self.stats.clients_connected = self.stats.clients_connected.saturating_sub(1);
            // v5 §3.1.3.2.2: a will with a delay waits in its session (if the session outlives
            // the connection) until the delay passes or the session ends.
            let delay = will
                .as_ref()
                .and_then(|w| w.properties.will_delay_interval)
                .unwrap_or(0);
            let persists = self
                .session(sid)
                .is_some_and(|s| s.expiry != Expiry::OnDisconnect);
            if delay > 0 && persists {
                if let (Some(w), Some(s)) = (will.take(), self.session_mut(sid)) {
                    let at = now + Duration::from_secs(u64::from(delay));
                    s.set_pending_will(Box::new(w), at);
                    self.timers.push(at, Timer::WillDelay(sid));
                    self.persist_will(sid);
                }
            }
            self.detach_session(sid, now);
            if let Some(index) = self.bridge_of(sid) {
                self.bridge_down(index, id, now);
            }
        }
        if let Some(will) = will {
            self.publish_will(will, will_source, now);
        }
        self.actions.push_back(Action::Close(id));
    }

    fn log_close(&self, name: &str, peer: conn::Peer, reason: &CloseReason) {
        if !self.settings.connection_messages {
            return;
        }
        match reason {
            CloseReason::Disconnected { .. } | CloseReason::Revoked => {
                log::info!(target: "notice", "Client {name} disconnected.")
            }
            CloseReason::ClosedByClient => {
                log::info!(target: "notice", "Client {name} closed its connection.")
            }
            CloseReason::SocketError(e) => {
                log::info!(target: "notice", "Socket error on client {name}, disconnecting ({e}).")
            }
            CloseReason::KeepaliveTimeout => {
                log::info!(target: "notice", "Client {name} has exceeded timeout, disconnecting.")
            }
            CloseReason::ConnectTimeout => log::info!(
                target: "notice",
                "Client {peer} sent no CONNECT within {} seconds, disconnecting.",
                self.settings.connect_timeout.as_secs()
            ),
            CloseReason::Protocol(e @ Violation::Decode(DecodeError::PacketTooLarge(_))) => {
                log::info!(target: "notice", "Client {name} disconnected due to oversize packet ({e}).")
            }
            CloseReason::Protocol(e @ Violation::Decode(d))
                if d.reason_code() == reason::MALFORMED_PACKET =>
            {
                log::info!(target: "notice", "Client {name} disconnected due to malformed packet ({e}).")
            }
            CloseReason::Protocol(e) => {
                log::info!(target: "notice", "Client {name} disconnected due to protocol error ({e}).")
            }
            CloseReason::Refused | CloseReason::BridgeStopped => {}
            // Mosquitto's line, word for word (log watchers look for it).
            CloseReason::Kicked => {
                log::info!(target: "notice", "Client {name} been disconnected by administrative action.")
            }
            // At error level, as Mosquitto logs it (handle_connect.c).
            CloseReason::TakenOver => {
                log::error!("Client {name} already connected, closing old connection.")
            }
            CloseReason::Shutdown => {}
        }
    }

    /// The connection of session `sid` has gone: keep the session for its client's return, or
    /// end it.
    fn detach_session(&mut self, sid: SessionId, now: Instant) {
        // Its held writes would wait for acknowledgements that cannot come now.
        self.record_held_of(sid);
        let expiration = self.settings.persistent_client_expiration;
        let qos0_kept = self.settings.queue_qos0_messages;
        let Some(s) = self
            .sessions
            .get_mut(sid.idx as usize)
            .filter(|s| s.gen == sid.gen)
        else {
            return;
        };
        s.set_conn(None);
        let expires_at = match s.expiry {
            Expiry::OnDisconnect => {
                self.remove_session(sid);
                return;
            }
            Expiry::After(secs) => {
                let at = now + Duration::from_secs(u64::from(secs));
                Some(expiration.map_or(at, |e| at.min(now + e)))
            }
            // A bridge's own session waits for its link as long as it takes.
            Expiry::Never if s.bridge.is_some() => None,
            Expiry::Never => expiration.map(|e| now + e),
        };
        s.set_expires_at(expires_at);
        // The rest of a retained replay is owed to the session from now on.
        self.queue_replays(sid);
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        if !qos0_kept && !s.keeps_qos0() {
            // QoS 0 messages are only for connected clients unless queue_qos0_messages is set.
            if let Some(mut out) = self.outlet(sid) {
                out.retain_queued(|d| d.qos != codec::QoS::AtMostOnce);
            }
        }
        if let Some(at) = expires_at {
            self.timers.push(at, Timer::SessionExpiry(sid));
        }
        self.persist_session(sid);
    }

    /// Creates an empty session under a new generation, so that ids of earlier sessions in its
    /// slot never reach it: the only way a session comes to be. A client's session is found
    /// by its client id from then on; a bridge's own is not, so no client can take it over.
    fn create_session(
        &mut self,
        client_id: Box<str>,
        version: codec::ProtocolVersion,
        expiry: Expiry,
        bridge: bool,
    ) -> SessionId {
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let mut s = Session::new(gen, client_id, version, expiry);
        s.bridge = bridge.then(session::BridgeLocal::default);
        let idx = self.sessions.insert(s);
        let sid = SessionId {
            idx: idx as u32,
            gen,
        };
        if !bridge {
            self.clients.insert(sid.idx, &self.sessions);
        }
        sid
    }

    /// Forgets a session and its subscriptions.
    fn remove_session(&mut self, sid: SessionId) {
        if self.session(sid).is_none() {
            return;
        }
        // Recorded before the session's deletion, which then removes them from the store too.
        self.record_held_of(sid);
        let mut queue = self
            .outlet(sid)
            .map(|mut out| out.take_queue())
            .unwrap_or_default();
        self.clients.remove(sid.idx, &self.sessions);
        let mut s = self.sessions.remove(sid.idx as usize);
        self.persist_session_deleted(&s);
        let will_source = retain::source_of(&s);
        for (filter, _, _) in s.subscriptions.iter() {
            self.router.unsubscribe(filter, sid);
        }

        let mut unfinished: Vec<session::Delivery> = s
            .inflight
            .drain_all()
            .filter(|m| m.state == session::OutState::AwaitPuback)
            .map(|m| m.delivery)
            .collect();
        unfinished.extend(queue.drain_all());
        if unfinished.iter().any(|d| d.group.is_some()) {
            self.reassign_shared(sid, unfinished);
        }
        if let Some((will, _)) = s.take_pending_will() {
            // The session ends before the will delay: the will goes now.
            let now = self.now;
            self.publish_will(*will, will_source, now);
        }
    }

    /// Feeds bytes read from connection `id`'s socket. Complete packets are handled at once;
    /// a partial packet waits in the connection's buffer for the rest.
    pub fn handle_bytes(&mut self, id: ConnId, mut data: &[u8], now: Instant) {
        self.stats.bytes_received += data.len() as u64;
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        if conn.state == ConnState::Closing {
            return;
        }
        conn.last_rx = now;
        let mut pending = conn.take_inbuf();
        if std::mem::take(&mut conn.held) {
            // PUBLISHes held back for the store, and what followed them: handle them now as
            // if they had just arrived.
            pending.extend_from_slice(data);
            return self.handle_fresh(id, Vec::new(), &pending, now);
        }
        if !pending.is_empty() {
            // Finish the packet that was waiting for more bytes.
            loop {
                match self.frame(id, &pending, now) {
                    Framed::Need if data.is_empty() => return self.keep_pending(id, pending),
                    Framed::Need => {
                        pending.push(data[0]);
                        data = &data[1..];
                    }
                    Framed::Bad => return,
                    Framed::Packet(h) => {
                        let take = (h.total() - pending.len()).min(data.len());
                        pending.extend_from_slice(&data[..take]);
                        data = &data[take..];
                        if pending.len() < h.total() {
                            return self.keep_pending(id, pending);
                        }
                        if self.must_wait_for_store(h.first) {
                            pending.extend_from_slice(data);
                            return self.hold_input(id, pending);
                        }
                        if !self.dispatch(id, h.first, &pending[h.header_len..], now) {
                            return;
                        }
                        pending.clear();
                        break;
                    }
                }
            }
        }
        self.handle_fresh(id, pending, data, now);
    }

    /// Handles the whole packets at the start of `data` and keeps the rest (a partial packet,
    /// or what is held back for the store) in `spare`, which is empty.
    fn handle_fresh(&mut self, id: ConnId, mut spare: Vec<u8>, mut data: &[u8], now: Instant) {
        loop {
            match self.frame(id, data, now) {
                Framed::Packet(h) if h.total() <= data.len() => {
                    if self.must_wait_for_store(h.first) {
                        spare.extend_from_slice(data);
                        return self.hold_input(id, spare);
                    }
                    let (packet, rest) = data.split_at(h.total());
                    if !self.dispatch(id, h.first, &packet[h.header_len..], now) {
                        return;
                    }
                    data = rest;
                }
                Framed::Packet(_) | Framed::Need => break,
                Framed::Bad => return,
            }
        }
        if spare.capacity() > 64 * 1024 || data.is_empty() {
            // Nothing waits: give the buffer back (an idle connection holds none).
            spare = Vec::new();
        }
        spare.extend_from_slice(data);
        self.keep_pending(id, spare);
    }

    /// Keeps `input`, which starts with a PUBLISH that must wait for the store, until the
    /// store catches up ([`Broker::wants_input`]).
    fn hold_input(&mut self, id: ConnId, input: Vec<u8>) {
        if let Some(conn) = self.conn_mut(id) {
            conn.held = true;
            conn.set_inbuf(input);
        }
    }

    fn keep_pending(&mut self, id: ConnId, pending: Vec<u8>) {
        if let Some(conn) = self.conn_mut(id) {
            conn.set_inbuf(pending);
        }
    }

    /// Looks at the fixed header at the start of `buf`, enforcing size limits before any body
    /// is buffered; closes the connection on a bad header.
    fn frame(&mut self, id: ConnId, buf: &[u8], now: Instant) -> Framed {
        let h = match codec::parse_fixed_header(buf) {
            Ok(Some(h)) => h,
            Ok(None) => return Framed::Need,
            Err(e) => {
                self.close_for_violation(id, e.into(), now);
                return Framed::Bad;
            }
        };
        let awaiting_connect = self
            .conn(id)
            .is_some_and(|c| c.state == ConnState::AwaitConnect);
        if awaiting_connect {
            if h.first >> 4 != codec::kind::CONNECT {
                // v311:[MQTT-3.1.0-1]: the first packet must be CONNECT.
                let v = Violation::protocol("first packet is not CONNECT");
                self.close_for_violation(id, v, now);
                return Framed::Bad;
            }
            if h.total() > MAX_CONNECT_PACKET {
                self.close_for_violation(id, DecodeError::PacketTooLarge(h.total()).into(), now);
                return Framed::Bad;
            }
        }
        if h.total() > self.settings.packet_limit() {
            self.close_for_violation(id, DecodeError::PacketTooLarge(h.total()).into(), now);
            return Framed::Bad;
        }
        Framed::Packet(h)
    }

    /// Decodes and handles one packet. Returns false once the connection is closing.
    fn dispatch(&mut self, id: ConnId, first: u8, body: &[u8], now: Instant) -> bool {
        let Some(conn) = self.conn(id) else {
            return false;
        };
        let version = conn.version;
        self.stats.messages_received += 1;
        match codec::decode(first, body, version) {
            Ok(packet) => self.handle(id, packet, now),
            Err(e) => self.decode_failure(id, e, connect_level(first, body) == Some(5), now),
        }
        self.conn(id).is_some_and(|c| c.state != ConnState::Closing)
    }

    fn decode_failure(&mut self, id: ConnId, e: DecodeError, v5_connect: bool, now: Instant) {
        let awaiting_connect = self
            .conn(id)
            .is_some_and(|c| c.state == ConnState::AwaitConnect);
        if awaiting_connect {
            if let DecodeError::UnsupportedProtocol(level) = e {
                return self.refuse_unsupported_protocol(id, level, now);
            }
            if v5_connect {
                // v5 §3.1.4: a CONNECT that fails validation may be answered with a CONNACK
                // carrying the reason, so the client learns why before the close.
                if let Some(c) = self.conn_mut(id) {
                    c.version = codec::ProtocolVersion::V5;
                }
                self.send(
                    id,
                    &Packet::Connack(codec::Connack {
                        session_present: false,
                        code: e.reason_code(),
                        properties: codec::Properties::default(),
                    }),
                );
            }
        }
        self.close_for_violation(id, Violation::Decode(e), now);
    }

    /// Handles one decoded packet; a violation that any handler finds ends the connection here.
    fn handle(&mut self, id: ConnId, packet: Packet<'_>, now: Instant) {
        let sid = match self.conn(id).map(|c| c.state) {
            Some(ConnState::AwaitConnect) => {
                if let Packet::Connect(c) = packet {
                    self.handle_connect(id, *c, now);
                }
                return;
            }
            Some(ConnState::BridgeConnecting(index)) => {
                return self.bridge_connack(id, index as usize, packet, now);
            }
            Some(ConnState::Active(sid)) => sid,
            _ => return,
        };
        if let Err(v) = self.handle_active(id, sid, packet, now) {
            self.close_for_violation(id, v, now);
        }
    }

    /// A packet from a client that completed CONNECT.
    fn handle_active(
        &mut self,
        id: ConnId,
        sid: SessionId,
        packet: Packet<'_>,
        now: Instant,
    ) -> Result<(), Violation> {
        match packet {
            // v311:[MQTT-3.1.0-2]: a second CONNECT is a protocol violation.
            Packet::Connect(_) => return Err(Violation::protocol("second CONNECT")),
            Packet::Publish(p) => self.handle_publish(id, sid, p, now)?,
            Packet::Puback(a) => self.handle_puback(id, sid, a)?,
            Packet::Pubrec(a) => self.handle_pubrec(id, sid, a)?,
            Packet::Pubrel(a) => self.handle_pubrel(id, sid, a),
            Packet::Pubcomp(a) => self.handle_pubcomp(id, sid, a)?,
            Packet::Subscribe(s) => self.handle_subscribe(id, sid, s, now)?,
            Packet::Unsubscribe(u) => self.handle_unsubscribe(id, sid, u),
            Packet::Pingreq => {
                log::debug!("Received PINGREQ from {}", self.conn_name(id));
                log::debug!("Sending PINGRESP to {}", self.conn_name(id));
                self.send(id, &Packet::Pingresp);
            }
            Packet::Disconnect(d) => self.handle_disconnect(id, sid, d, now)?,
            Packet::Auth(_) => {
                return Err(Violation::protocol("AUTH without an authentication method"))
            }
            // Answers to what a bridge sent as a client.
            Packet::Connack(_) | Packet::Suback(_) | Packet::Unsuback(_) | Packet::Pingresp
                if self.conn(id).is_some_and(|c| c.bridge().is_some()) => {}
            Packet::Connack(_) | Packet::Suback(_) | Packet::Unsuback(_) | Packet::Pingresp => {
                return Err(Violation::protocol("server-only packet from a client"))
            }
        }
        Ok(())
    }

    fn handle_disconnect(
        &mut self,
        id: ConnId,
        sid: SessionId,
        d: codec::Disconnect,
        now: Instant,
    ) -> Result<(), Violation> {
        log::debug!("Received DISCONNECT from {}", self.conn_name(id));
        if let Some(secs) = d.properties.session_expiry_interval {
            let Some(s) = self.session_mut(sid) else {
                return Ok(());
            };
            if s.expiry == Expiry::OnDisconnect && secs != 0 {
                // v5:[MQTT-3.14.2-2]: cannot turn a 0 expiry into a non-zero one at DISCONNECT.
                return Err(Violation::protocol(
                    "session expiry set at DISCONNECT after 0 at CONNECT",
                ));
            }
            s.expiry = if secs == 0 {
                Expiry::OnDisconnect
            } else {
                Expiry::After(secs)
            };
        }
        let with_will = d.reason == reason::DISCONNECT_WITH_WILL;
        self.close(id, CloseReason::Disconnected { with_will }, now);
        Ok(())
    }

    /// A pseudo-random 64 bit number (xorshift), for assigned client ids.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// The protocol level of a CONNECT body, read without decoding the rest (for answering a
/// CONNECT that fails to decode in its own version).
fn connect_level(first: u8, body: &[u8]) -> Option<u8> {
    if first >> 4 != codec::kind::CONNECT {
        return None;
    }
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).map(|l| l & 0x7f)
}

enum Framed {
    Packet(codec::FixedHeader),
    Need,
    Bad,
}

#[cfg(test)]
mod tests;
