//! Configuration: the mosquitto.conf dialect midge reads.
//!
//! A config file is a list of `name value` lines; `#` as the first character starts a comment.
//! A `listener PORT [ADDRESS]` line opens a listener block, and listener-scoped options that
//! follow it apply to that listener. This module only turns text into a [`Config`]; it opens no
//! sockets and starts nothing.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

pub mod bridge;
pub mod options;
pub use bridge::BridgeConfig;
use options::{Class, Scope};
use std::str::FromStr;
use std::time::Duration;

/// Where log lines go (`log_dest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    /// `log_dest stdout`
    Stdout,
    /// `log_dest stderr` (the default)
    Stderr,
    /// `log_dest file PATH`
    File(PathBuf),
    /// `log_dest syslog`
    Syslog,
    /// `log_dest none`
    None,
}

/// Mosquitto's log types (`log_type`), as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTypes(pub u16);

impl LogTypes {
    pub const ERROR: u16 = 1;
    pub const WARNING: u16 = 2;
    pub const NOTICE: u16 = 4;
    pub const INFORMATION: u16 = 8;
    pub const DEBUG: u16 = 16;
    pub const SUBSCRIBE: u16 = 32;
    pub const UNSUBSCRIBE: u16 = 64;
    pub const WEBSOCKETS: u16 = 128;
    pub const ALL: u16 = 0xff;
    /// Mosquitto's default: error, warning, notice and information.
    pub const DEFAULT: LogTypes =
        LogTypes(Self::ERROR | Self::WARNING | Self::NOTICE | Self::INFORMATION);

    /// True when every bit of `bits` is enabled.
    pub fn has(self, bits: u16) -> bool {
        self.0 & bits == bits
    }
}

/// Logging options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub types: LogTypes,
    pub dests: Vec<LogDest>,
    /// `log_timestamp` (default true): prefix each line with the Unix time.
    pub timestamp: bool,
    /// `log_timestamp_format` (strftime), if set.
    pub timestamp_format: Option<String>,
    /// `log_facility` 0-7: syslog facility LOG_LOCAL0-7; `None` is LOG_DAEMON.
    pub facility: Option<u8>,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// TCP port; 0 asks the OS for a free one (the bound port is logged).
    pub port: u16,
    /// Address or host name to bind; `None` means all interfaces.
    pub bind_address: Option<String>,
    /// `max_connections` (-1 = unlimited).
    pub max_connections: i64,
    /// `protocol`: MQTT straight over TCP (the default) or inside WebSockets.
    pub protocol: ListenerProtocol,
    /// `socket_domain`: bind only IPv4 or only IPv6 addresses; `None` binds both.
    pub socket_domain: Option<SocketDomain>,
    /// TLS options; TLS is on when `certfile` and `keyfile` are set.
    pub tls: TlsOptions,
    /// With `per_listener_settings true`: this listener's own authentication options
    /// (`None` fields are not set for it).
    pub auth: ListenerAuth,
    /// A failure to bind is a warning, not an error: the `::1` half of a loopback listener
    /// made by local-only mode or `-p` (a machine may have no IPv6).
    pub optional: bool,
}

/// Options that `per_listener_settings true` makes per listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerAuth {
    pub allow_anonymous: Option<bool>,
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
    pub allow_zero_length_clientid: Option<bool>,
    pub auto_id_prefix: Option<String>,
}

impl Default for ListenerConfig {
    /// A plain MQTT listener on port 1883, all interfaces, no connection limit.
    fn default() -> Self {
        ListenerConfig {
            port: DEFAULT_PORT,
            bind_address: None,
            max_connections: -1,
            protocol: ListenerProtocol::Mqtt,
            socket_domain: None,
            tls: TlsOptions::default(),
            auth: ListenerAuth::default(),
            optional: false,
        }
    }
}

/// What a listener speaks on top of TCP (or TLS): `protocol mqtt|websockets`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListenerProtocol {
    /// MQTT packets straight on the byte stream.
    #[default]
    Mqtt,
    /// MQTT packets in binary WebSocket messages (subprotocol `mqtt`).
    WebSockets,
}

/// The address family a listener is limited to (`socket_domain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketDomain {
    /// `ipv4`
    Ipv4,
    /// `ipv6`
    Ipv6,
}

impl SocketDomain {
    /// True when `addr` is of this family.
    pub fn admits(self, addr: &std::net::SocketAddr) -> bool {
        match self {
            SocketDomain::Ipv4 => addr.is_ipv4(),
            SocketDomain::Ipv6 => addr.is_ipv6(),
        }
    }
}

/// The lowest TLS version a listener accepts (`tls_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// `tlsv1.2` (TLS 1.3 is accepted too).
    Tls12,
    /// `tlsv1.3` only.
    Tls13,
}

/// A listener's TLS options, as Mosquitto names them. Paths are kept as written; the files are
/// read when the listener starts and again on SIGHUP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `certfile`: the server certificate chain (PEM).
    pub certfile: Option<PathBuf>,
    /// `keyfile`: the server private key (PEM).
    pub keyfile: Option<PathBuf>,
    /// `cafile`: CA certificates (PEM) that client certificates are checked against.
    pub cafile: Option<PathBuf>,
    /// `capath`: a directory of CA certificates (PEM files).
    pub capath: Option<PathBuf>,
    /// `crlfile`: certificate revocation lists (PEM) for client certificates.
    pub crlfile: Option<PathBuf>,
    /// `require_certificate`: clients must present a certificate signed by the CA.
    pub require_certificate: bool,
    /// `use_identity_as_username`: the client certificate's CN is the username.
    pub use_identity_as_username: bool,
    /// `use_subject_as_username`: the client certificate's whole subject is the username.
    pub use_subject_as_username: bool,
    /// `tls_version`; `None` accepts TLS 1.2 and 1.3.
    pub tls_version: Option<TlsVersion>,
    /// `ciphers`: OpenSSL-style list of TLS 1.2 cipher suites.
    pub ciphers: Option<String>,
    /// `ciphers_tls1.3`: list of TLS 1.3 cipher suites.
    pub ciphers_tls13: Option<String>,
}

impl TlsOptions {
    /// True when the listener speaks TLS.
    pub fn enabled(&self) -> bool {
        self.certfile.is_some() && self.keyfile.is_some()
    }

    /// The first option that only makes sense with TLS, if any is set.
    fn first_tls_only_option(&self) -> Option<&'static str> {
        [
            (self.cafile.is_some(), "cafile"),
            (self.capath.is_some(), "capath"),
            (self.crlfile.is_some(), "crlfile"),
            (self.require_certificate, "require_certificate"),
            (self.use_identity_as_username, "use_identity_as_username"),
            (self.use_subject_as_username, "use_subject_as_username"),
            (self.tls_version.is_some(), "tls_version"),
            (self.ciphers.is_some(), "ciphers"),
            (self.ciphers_tls13.is_some(), "ciphers_tls1.3"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }
}

/// The whole broker configuration, with Mosquitto 2.0's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    /// `allow_anonymous`; `None` until resolved by [`Config::finish`].
    pub allow_anonymous: Option<bool>,
    /// `max_packet_size` in bytes; 0 = no limit.
    pub max_packet_size: u32,
    /// `message_size_limit` in bytes; 0 = the protocol maximum (268435455).
    pub message_size_limit: u32,
    /// `max_keepalive` seconds (default 65535).
    pub max_keepalive: u16,
    /// `persistence` (default false): keep retained messages, persistent sessions and their
    /// queued messages in `midge.db` (SQLite) across restarts.
    pub persistence: bool,
    /// `persistence_location`: the directory of the store (default: the working directory).
    pub persistence_location: Option<PathBuf>,
    /// `persistence_file` as configured; midge always writes `midge.db` (never Mosquitto's
    /// file) and says so when this names something else.
    pub persistence_file: Option<String>,
    /// `persistence_sync_interval` (midge's own, default 1 s): the longest time accepted
    /// messages can stay un-fsynced, i.e. what a power cut can lose.
    pub persistence_sync_interval: Duration,
    /// `connect_timeout` seconds (midge's own, default 20): a connection that has not sent a
    /// complete CONNECT by then is closed (slowloris protection).
    pub connect_timeout: Duration,
    /// `per_listener_settings` (default false): authentication options per listener.
    pub per_listener_settings: bool,
    /// `max_qos` (default 2): the highest QoS midge accepts and grants. Mosquitto scopes it
    /// per listener; midge has one value for every listener and refuses listeners whose values
    /// differ (a `max_qos` before any `listener` line applies to every listener).
    pub max_qos: u8,
    /// `connection` blocks: bridges to other brokers.
    pub bridges: Vec<BridgeConfig>,
    /// `memory_limit` in bytes (0 = midge's default, 128 MiB). Mosquitto refuses new
    /// connections past it; midge instead stops reading from publishers while queued messages
    /// hold more than this (TCP back-pressure), so nothing accepted is dropped.
    pub memory_limit: usize,
    /// `user`: when started as root, run as this user from right after the configuration is
    /// read (default `mosquitto`, as Mosquitto; `root` keeps root). See `privileges`.
    pub user: String,
    /// `password_file`: a mosquitto_passwd file; clients with a username must match it.
    pub password_file: Option<PathBuf>,
    /// `acl_file`: Mosquitto ACL rules for publishing, subscribing and receiving.
    pub acl_file: Option<PathBuf>,
    /// `sys_interval` seconds between `$SYS` updates (default 10; 0 disables `$SYS`).
    pub sys_interval: u32,
    /// `max_topic_alias` (default 10): topic aliases an MQTT 5 client may use towards midge.
    /// One value for every listener, as `max_qos`.
    pub max_topic_alias: u16,
    /// `max_inflight_messages` (default 20; 0 = no limit).
    pub max_inflight_messages: u16,
    /// `max_queued_messages` (default 1000; 0 = no limit).
    pub max_queued_messages: usize,
    /// `max_queued_bytes` (default 0 = no limit).
    pub max_queued_bytes: usize,
    /// `queue_qos0_messages` (default false).
    pub queue_qos0_messages: bool,
    /// `retain_available` (default true).
    pub retain_available: bool,
    /// `allow_zero_length_clientid` (default true).
    pub allow_zero_length_clientid: bool,
    /// `auto_id_prefix` (default `auto-`).
    pub auto_id_prefix: String,
    /// `persistent_client_expiration`; `None` = never.
    pub persistent_client_expiration: Option<Duration>,
    /// `upgrade_outgoing_qos` (default false).
    pub upgrade_outgoing_qos: bool,
    pub log: LogConfig,
    /// `connection_messages` (default true).
    pub connection_messages: bool,
    /// `set_tcp_nodelay`. Default **true**, unlike Mosquitto: midge already gathers each loop
    /// turn's output for a socket into one write, so Nagle's algorithm only adds delay (it
    /// halved QoS 1 throughput in the benchmark by waiting for delayed ACKs).
    pub set_tcp_nodelay: bool,
    /// `pid_file`.
    pub pid_file: Option<PathBuf>,
    /// The file this configuration was read from, if any.
    pub source: Option<PathBuf>,
    /// Warnings about options that were read and given a meaning other than the user may
    /// expect (superseded, or stricter than asked), one message each, naming the file and
    /// line. Logged once the logger runs. Unknown and refused options are errors instead.
    pub warnings: Vec<String>,
    /// Ports given with `-p`: loopback-only listeners that [`Config::finish`] adds.
    pub cli_ports: Vec<u16>,
}

/// Where in the configuration an option was read: a file and a 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file the line is in.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Why a configuration could not be loaded. Displayed as Mosquitto 2.0.20 prints it: the
/// error, then `Error found at FILE:LINE.` (once per file, innermost first, for an error in an
/// `include_dir` file), so it can be printed as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A config file (the main one or one found by `include_dir`) could not be read.
    Open {
        /// The file that could not be read.
        path: PathBuf,
    },
    /// An `include_dir` directory could not be listed.
    IncludeDir {
        /// The directory named by `include_dir`.
        dir: PathBuf,
        /// The `include_dir` line.
        at: Location,
    },
    /// `include_dir` in a file that `include_dir` read (Mosquitto allows it in the main file
    /// only).
    NestedIncludeDir {
        /// The `include_dir` line.
        at: Location,
    },
    /// An error in a file read by `include_dir`.
    Included {
        /// The error, located in the included file.
        error: Box<ConfigError>,
        /// The `include_dir` line of the main file.
        at: Location,
    },
    /// A name that is no option of Mosquitto's or midge's (a typo, say): never ignored, since
    /// it may be a misspelt security option.
    Unknown {
        /// The name, as written.
        option: String,
        /// Where it was read.
        at: Location,
    },
    /// `per_listener_settings true` after an authentication option, which was then read as
    /// broker-wide and would apply to no listener.
    PerListenerSettingsLate {
        /// The `per_listener_settings` line.
        at: Location,
    },
    /// A bridge option outside a `connection` block.
    NotInBridge {
        /// Where the option was read.
        at: Location,
    },
    /// An option has a value midge does not accept.
    InvalidValue {
        /// The option name.
        option: String,
        /// The rejected value, as written.
        value: String,
        /// Where the option was read.
        at: Location,
    },
    /// An option that needs a value has none.
    MissingValue {
        /// The option name.
        option: String,
        /// Where the option was read.
        at: Location,
    },
    /// An option (or value) midge does not implement, and running without it could do what
    /// the user did not ask for, such as leaving the broker more open: see [`options`].
    Refused {
        /// The option name.
        option: String,
        /// The value, as written, when it is the value that is refused (never for an option
        /// refused whatever its value, which may be a secret such as `bridge_psk`).
        value: Option<String>,
        /// Why, from the option table.
        reason: &'static str,
        /// Where the option was read.
        at: Location,
    },
    /// Listeners ask for different values of an option that midge applies to every listener.
    ListenersDiffer {
        /// `max_qos` or `max_topic_alias`.
        option: &'static str,
        /// The value of one listener and where that listener starts.
        first: (u32, Location),
        /// A different value of another listener and where that listener starts.
        second: (u32, Location),
    },
    /// A listener's TLS options do not fit together (say `certfile` without `keyfile`):
    /// starting anyway would leave a listener the user meant to encrypt in plain text.
    Tls {
        /// What is wrong, in words.
        problem: String,
        /// The `listener` line (or the first option of the default listener).
        at: Location,
    },
    /// `listener 0 /path`: a unix socket listener, which midge cannot open.
    UnixSocketListener {
        /// The socket path.
        path: String,
        /// The `listener` line.
        at: Location,
    },
    /// An option in the table that the parser has no code for: a bug in midge, refused rather
    /// than ignored.
    Unhandled {
        /// The option name.
        option: String,
        /// Where the option was read.
        at: Location,
    },
}

impl ConfigError {
    /// Where the error is, for the `Error found at` line.
    fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Open { .. } => None,
            ConfigError::IncludeDir { at, .. }
            | ConfigError::NestedIncludeDir { at }
            | ConfigError::Included { at, .. }
            | ConfigError::Unknown { at, .. }
            | ConfigError::NotInBridge { at }
            | ConfigError::PerListenerSettingsLate { at }
            | ConfigError::InvalidValue { at, .. }
            | ConfigError::MissingValue { at, .. }
            | ConfigError::Refused { at, .. }
            | ConfigError::Unhandled { at, .. } => Some(at),
            // midge's own checks, whose one line already names the listener's line.
            ConfigError::Tls { .. } | ConfigError::UnixSocketListener { .. } => None,
            ConfigError::ListenersDiffer { second, .. } => Some(&second.1),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Open { path } => {
                write!(f, "Error: Unable to open config file {}.", path.display())
            }
            ConfigError::IncludeDir { dir, .. } => {
                write!(f, "Error: Unable to open include_dir '{}'.", dir.display())
            }
            ConfigError::NestedIncludeDir { .. } => write!(
                f,
                "Error: The include_dir option is only valid in the main configuration file."
            ),
            ConfigError::Included { error, .. } => write!(f, "{error}"),
            ConfigError::Unknown { option, .. } => {
                write!(f, "Error: Unknown configuration variable \"{option}\".")
            }
            ConfigError::NotInBridge { .. } => write!(f, "Error: Invalid bridge configuration."),
            ConfigError::PerListenerSettingsLate { .. } => write!(
                f,
                "Error: per_listener_settings must be set before any other security settings."
            ),
            ConfigError::InvalidValue { option, value, .. } => {
                write!(f, "Error: Invalid {option} value ({value}).")
            }
            ConfigError::MissingValue { option, .. } => {
                write!(f, "Error: Empty {option} value in configuration.")
            }
            ConfigError::Refused {
                option,
                value,
                reason,
                at,
            } => {
                let value = value
                    .as_deref()
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default();
                write!(
                    f,
                    "Error: {option}{value} in {at} is not supported by this version of midge, \
                     which refuses to start rather than run without it: {reason}"
                )
            }
            ConfigError::ListenersDiffer {
                option,
                first,
                second,
            } => write!(
                f,
                "Error: {option} is {} for the listener in {} but {} for the listener in {}; \
                 midge applies one {option} to every listener.",
                first.0, first.1, second.0, second.1
            ),
            ConfigError::Tls { problem, at } => {
                write!(f, "Error: {problem}, for the listener in {at}.")
            }
            ConfigError::UnixSocketListener { path, at } => write!(
                f,
                "Error: Unix socket listeners ({path}) are not supported by this version of \
                 midge, in {at}."
            ),
            ConfigError::Unhandled { option, .. } => write!(
                f,
                "Error: midge lists the {option} option but has no code for it (a bug); \
                 refusing to start."
            ),
        }?;
        match self.location() {
            Some(at) => write!(f, "\nError found at {at}."),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Port of the default listener (`port`, `bind_address`, and local-only mode).
pub const DEFAULT_PORT: u16 = 1883;

/// The addresses local-only listeners bind to (the IPv6 one only if the machine has IPv6).
pub const LOOPBACK: &str = "127.0.0.1";
/// See [`LOOPBACK`].
pub const LOOPBACK_V6: &str = "::1";

/// The largest payload MQTT can carry (the maximum remaining length), and the meaning of
/// `message_size_limit 0`.
const MQTT_MAX_PAYLOAD: u32 = 268_435_455;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            types: LogTypes::DEFAULT,
            dests: Vec::new(),
            timestamp: true,
            timestamp_format: None,
            facility: None,
        }
    }
}

impl Default for Config {
    /// Mosquitto 2.0's defaults, before [`Config::finish`] resolves the listeners.
    fn default() -> Self {
        Config {
            listeners: Vec::new(),
            allow_anonymous: None,
            max_packet_size: 0,
            message_size_limit: 0,
            max_keepalive: 65535,
            persistence: false,
            persistence_location: None,
            persistence_file: None,
            persistence_sync_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(20),
            per_listener_settings: false,
            max_qos: 2,
            bridges: Vec::new(),
            memory_limit: 0,
            user: crate::privileges::DEFAULT_USER.to_string(),
            password_file: None,
            acl_file: None,
            sys_interval: 10,
            max_topic_alias: 10,
            max_inflight_messages: 20,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            queue_qos0_messages: false,
            retain_available: true,
            allow_zero_length_clientid: true,
            auto_id_prefix: "auto-".to_string(),
            persistent_client_expiration: None,
            upgrade_outgoing_qos: false,
            log: LogConfig::default(),
            connection_messages: true,
            set_tcp_nodelay: true,
            pid_file: None,
            source: None,
            warnings: Vec::new(),
            cli_ports: Vec::new(),
        }
    }
}

impl Config {
    /// Resolves the defaults that depend on the whole configuration (call it after the command
    /// line has been merged in, see `cli::apply`). As Mosquitto 2: when no listener was
    /// configured (no `listener`, `port` or `bind_address` line), midge runs in "local only
    /// mode": it listens on `127.0.0.1:1883` and `[::1]:1883` and `allow_anonymous` defaults to
    /// true. Otherwise `allow_anonymous` defaults to false. Ports from `-p` become loopback
    /// listeners (both addresses) either way (replacing the 1883 default in local-only mode).
    /// Calling it twice changes nothing.
    pub fn finish(&mut self) {
        let local_only = self.listeners.is_empty();
        let mut local_ports = std::mem::take(&mut self.cli_ports);
        if local_only && local_ports.is_empty() {
            local_ports.push(DEFAULT_PORT);
        }
        for port in local_ports {
            for (address, optional) in [(LOOPBACK, false), (LOOPBACK_V6, true)] {
                self.listeners.push(ListenerConfig {
                    port,
                    bind_address: Some(address.to_string()),
                    optional,
                    ..ListenerConfig::default()
                });
            }
        }
        if self.allow_anonymous.is_none() {
            self.allow_anonymous = Some(local_only);
        }
        if self.per_listener_settings {
            for l in &mut self.listeners {
                if l.auth.allow_anonymous.is_none() {
                    l.auth.allow_anonymous = Some(local_only);
                }
            }
        }
    }
}

/// Reads the configuration file at `path` (and any `include_dir` it names). The result still
/// needs [`Config::finish`]; warnings about ignored options are in [`Config::warnings`].
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read_config_file(path)?;
    let mut config = parse_str(&text, path)?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Parses configuration text as if read from the file `origin` (used in messages; an
/// `include_dir` line is still read from disk). Does not call [`Config::finish`].
pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let mut parser = Parser::new();
    parser.parse_text(text, origin, 0)?;
    parser.check_listeners()?;
    parser.settle_per_listener("max_qos", 2)?;
    parser.settle_per_listener("max_topic_alias", 10)?;
    Ok(parser.into_config())
}

fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    match fs::read(path) {
        // Mosquitto does not care about the encoding; neither do we.
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(_) => Err(ConfigError::Open {
            path: path.to_path_buf(),
        }),
    }
}

/// The options that `per_listener_settings true` makes per listener.
const AUTH_OPTIONS: &[&str] = &[
    "allow_anonymous",
    "password_file",
    "acl_file",
    "allow_zero_length_clientid",
    "auto_id_prefix",
];

/// Parsing state that spans all files of one configuration.
struct Parser {
    config: Config,
    /// The listener that `port` and `bind_address` configure, and that listener-scoped options
    /// before the first `listener` line apply to.
    default_listener: ListenerConfig,
    /// True once `port` or `bind_address` enabled the default listener.
    default_listener_enabled: bool,
    /// Where a listener-scoped option first configured the default listener.
    default_listener_option: Option<(String, Location)>,
    /// Where the default listener was first configured (for messages about it).
    default_listener_at: Option<Location>,
    /// The `listener` line of each entry of `config.listeners`, in the same order.
    listener_at: Vec<Location>,
    /// Index in `config.listeners` of the latest `listener` block.
    current_listener: Option<usize>,
    /// The first `log_type` line replaces the default set; later ones add to it.
    log_type_seen: bool,
    /// `max_qos` and `max_topic_alias` lines: the listener block they are in (`None` before
    /// the first `listener` line), the option, the value and the line. Mosquitto scopes them
    /// per listener; midge checks that every listener ends up with the same value.
    per_listener: Vec<(Option<usize>, &'static str, u32, Location)>,
    /// True once an option of [`AUTH_OPTIONS`] was read.
    security_option_seen: bool,
}

impl Parser {
    fn new() -> Self {
        Parser {
            config: Config::default(),
            default_listener: ListenerConfig::default(),
            default_listener_at: None,
            listener_at: Vec::new(),
            default_listener_enabled: false,
            default_listener_option: None,
            current_listener: None,
            log_type_seen: false,
            per_listener: Vec::new(),
            security_option_seen: false,
        }
    }

    fn into_config(mut self) -> Config {
        if self.default_listener_enabled {
            // Mosquitto's default listener comes before the `listener` ones.
            self.config.listeners.insert(0, self.default_listener);
        } else if let Some((option, at)) = self.default_listener_option {
            self.config.warnings.push(format!(
                "Warning: The {option} option in {at} comes before any listener line and no \
                 port or bind_address enables the default listener; ignored."
            ));
        }
        self.config
    }

    /// Checks that each listener's TLS options fit together.
    fn check_listeners(&self) -> Result<(), ConfigError> {
        let default = self
            .default_listener_enabled
            .then_some(&self.default_listener)
            .zip(self.default_listener_at.as_ref());
        let others = self.config.listeners.iter().zip(&self.listener_at);
        for (listener, at) in default.into_iter().chain(others) {
            if let Some(problem) = tls_problem(&listener.tls) {
                return Err(ConfigError::Tls {
                    problem,
                    at: at.clone(),
                });
            }
        }
        Ok(())
    }

    /// Resolves `option` (`max_qos` or `max_topic_alias`, default `default`), which
    /// Mosquitto sets per listener, into midge's one value for every listener. Each listener
    /// gets the last value in its block, else the last one before the first `listener` line
    /// (which is the default listener's own when `port` or `bind_address` enabled it), else
    /// the default. Listeners that end up with different values are refused: applying either
    /// value to both would change what one of them grants.
    fn settle_per_listener(
        &mut self,
        option: &'static str,
        default: u32,
    ) -> Result<(), ConfigError> {
        let last_in = |block: Option<usize>| {
            self.per_listener
                .iter()
                .rev()
                .find(|(b, name, _, _)| *b == block && *name == option)
                .map(|(_, _, value, _)| *value)
        };
        let before_listeners = last_in(None);
        let mut effective: Vec<(u32, &Location)> = Vec::new();
        if let (true, Some(at)) = (self.default_listener_enabled, &self.default_listener_at) {
            effective.push((before_listeners.unwrap_or(default), at));
        }
        let inherited = if self.default_listener_enabled {
            None
        } else {
            before_listeners
        };
        for (index, at) in self.listener_at.iter().enumerate() {
            effective.push((last_in(Some(index)).or(inherited).unwrap_or(default), at));
        }
        if let Some((first, rest)) = effective.split_first() {
            if let Some(other) = rest.iter().find(|(value, _)| *value != first.0) {
                return Err(ConfigError::ListenersDiffer {
                    option,
                    first: (first.0, first.1.clone()),
                    second: (other.0, other.1.clone()),
                });
            }
        }
        let value = effective
            .first()
            .map(|(value, _)| *value)
            .or(before_listeners)
            .unwrap_or(default);
        // The values were range-checked when read.
        match option {
            "max_qos" => self.config.max_qos = u8::try_from(value).unwrap_or(2),
            _ => self.config.max_topic_alias = u16::try_from(value).unwrap_or(10),
        }
        Ok(())
    }

    /// `depth` is 0 for the main file and 1 for files read by `include_dir`.
    fn parse_text(&mut self, text: &str, file: &Path, depth: u32) -> Result<(), ConfigError> {
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = match line.split_once([' ', '\t']) {
                Some((name, value)) => (name, value.trim_start()),
                None => (line, ""),
            };
            let at = Location {
                file: file.to_path_buf(),
                line: index + 1,
            };
            self.option(name, value, &at, depth)?;
        }
        Ok(())
    }

    fn option(
        &mut self,
        name: &str,
        value: &str,
        at: &Location,
        depth: u32,
    ) -> Result<(), ConfigError> {
        // The option table decides what is known; the code below only gives meaning to
        // options the table says midge implements.
        let Some(info) = options::lookup(name) else {
            return Err(ConfigError::Unknown {
                option: name.to_string(),
                at: at.clone(),
            });
        };
        if info.class == Class::Refused {
            let value = required(name, value, at)?;
            if info.accepts.contains(&value) {
                return Ok(());
            }
            let value = (!info.accepts.is_empty()).then_some(value);
            return Err(refused(name, value, info.note, at));
        }
        if info.class == Class::NoEffect {
            required(name, value, at)?;
            return Ok(());
        }
        if info.scope == Scope::Bridge {
            let Some(b) = self.config.bridges.last_mut() else {
                return Err(ConfigError::NotInBridge { at: at.clone() });
            };
            if bridge::apply(b, name, value, at, &mut self.config.warnings)? {
                return Ok(());
            }
            return Err(unhandled(name, at));
        }
        self.security_option_seen |= AUTH_OPTIONS.contains(&name);
        if self.config.per_listener_settings && self.per_listener_option(name, value, at)? {
            return Ok(());
        }
        let c = &mut self.config;
        match name {
            "connection" => c
                .bridges
                .push(BridgeConfig::new(required(name, value, at)?)),
            "listener" => self.listener(name, value, at)?,
            "port" => {
                self.default_listener.port = parse_port(name, value, at)?;
                self.default_listener_enabled = true;
                self.default_listener_at.get_or_insert_with(|| at.clone());
            }
            "bind_address" => {
                self.default_listener.bind_address = Some(required(name, value, at)?.to_string());
                self.default_listener_enabled = true;
                self.default_listener_at.get_or_insert_with(|| at.clone());
            }
            "protocol" => {
                self.listener_mut(name, at).protocol = match required(name, value, at)? {
                    "mqtt" => ListenerProtocol::Mqtt,
                    "websockets" => ListenerProtocol::WebSockets,
                    _ => return Err(invalid(name, value, at)),
                }
            }
            "certfile" | "keyfile" | "cafile" | "capath" | "crlfile" => {
                let path = Some(PathBuf::from(required(name, value, at)?));
                let tls = &mut self.listener_mut(name, at).tls;
                match name {
                    "certfile" => tls.certfile = path,
                    "keyfile" => tls.keyfile = path,
                    "cafile" => tls.cafile = path,
                    "capath" => tls.capath = path,
                    _ => tls.crlfile = path,
                }
            }
            "require_certificate" | "use_identity_as_username" | "use_subject_as_username" => {
                let on = parse_bool(name, value, at)?;
                let tls = &mut self.listener_mut(name, at).tls;
                match name {
                    "require_certificate" => tls.require_certificate = on,
                    "use_identity_as_username" => tls.use_identity_as_username = on,
                    _ => tls.use_subject_as_username = on,
                }
            }
            "tls_version" => {
                let version = match required(name, value, at)? {
                    "tlsv1.3" => TlsVersion::Tls13,
                    "tlsv1.2" => TlsVersion::Tls12,
                    "tlsv1.1" | "tlsv1" => {
                        // rustls does not speak TLS 1.1 or 1.0; 1.2 is the oldest it offers.
                        c.warnings.push(format!(
                            "Warning: tls_version {value} in {at} is older than midge supports; \
                             TLS 1.2 is the minimum."
                        ));
                        TlsVersion::Tls12
                    }
                    _ => return Err(invalid(name, value, at)),
                };
                self.listener_mut(name, at).tls.tls_version = Some(version);
            }
            "ciphers" => {
                let list = required(name, value, at)?.to_string();
                self.listener_mut(name, at).tls.ciphers = Some(list);
            }
            "ciphers_tls1.3" => {
                let list = required(name, value, at)?.to_string();
                self.listener_mut(name, at).tls.ciphers_tls13 = Some(list);
            }
            "max_connections" => {
                let max: i64 = parse_number(name, value, at)?;
                // Any negative value means "unlimited", as in Mosquitto.
                self.listener_mut(name, at).max_connections = max.max(-1);
            }
            "allow_anonymous" => c.allow_anonymous = Some(parse_bool(name, value, at)?),
            "max_packet_size" => {
                let size: u32 = parse_number(name, value, at)?;
                // No useful MQTT packet is smaller; Mosquitto rejects such limits too.
                if size < 20 {
                    return Err(invalid(name, value, at));
                }
                c.max_packet_size = size;
            }
            "message_size_limit" => {
                let limit: u32 = parse_number(name, value, at)?;
                if limit > MQTT_MAX_PAYLOAD {
                    return Err(invalid(name, value, at));
                }
                c.message_size_limit = limit;
            }
            "max_keepalive" => c.max_keepalive = parse_number(name, value, at)?,
            "max_inflight_messages" => c.max_inflight_messages = parse_number(name, value, at)?,
            "max_topic_alias" => {
                let max: u16 = parse_number(name, value, at)?;
                self.per_listener
                    .push((self.current_listener, info.name, max.into(), at.clone()));
            }
            "sys_interval" => c.sys_interval = parse_number(name, value, at)?,
            "password_file" => c.password_file = Some(PathBuf::from(required(name, value, at)?)),
            "acl_file" => c.acl_file = Some(PathBuf::from(required(name, value, at)?)),
            "user" => c.user = required(name, value, at)?.to_string(),
            "memory_limit" => c.memory_limit = parse_number(name, value, at)?,
            "connect_timeout" => {
                let secs: u64 = parse_number(name, value, at)?;
                c.connect_timeout = Duration::from_secs(secs.max(1));
            }
            "max_qos" => {
                let q: u8 = parse_number(name, value, at)?;
                if q > 2 {
                    return Err(invalid(name, value, at));
                }
                self.per_listener
                    .push((self.current_listener, info.name, q.into(), at.clone()));
            }
            "socket_domain" => {
                self.listener_mut(name, at).socket_domain = Some(match required(name, value, at)? {
                    "ipv4" => SocketDomain::Ipv4,
                    "ipv6" => SocketDomain::Ipv6,
                    _ => return Err(invalid(name, value, at)),
                })
            }
            "log_facility" => {
                let facility: u8 = parse_number(name, value, at)?;
                if facility > 7 {
                    return Err(invalid(name, value, at));
                }
                c.log.facility = Some(facility);
            }
            "persistence" | "retained_persistence" => c.persistence = parse_bool(name, value, at)?,
            "persistence_location" => {
                c.persistence_location = Some(PathBuf::from(required(name, value, at)?))
            }
            "persistence_file" => c.persistence_file = Some(required(name, value, at)?.to_string()),
            "persistence_sync_interval" => {
                let secs: u64 = parse_number(name, value, at)?;
                c.persistence_sync_interval = Duration::from_secs(secs.max(1));
            }
            "autosave_interval" | "autosave_on_changes" => {
                // Validated, then superseded: midge writes every change as it happens.
                required(name, value, at)?;
                c.warnings.push(format!(
                    "Warning: {name} in {at} is superseded: midge stores every change as it \
                     happens and fsyncs every persistence_sync_interval."
                ));
            }
            "max_queued_messages" => c.max_queued_messages = parse_number(name, value, at)?,
            "max_queued_bytes" => c.max_queued_bytes = parse_number(name, value, at)?,
            "queue_qos0_messages" => c.queue_qos0_messages = parse_bool(name, value, at)?,
            "retain_available" => c.retain_available = parse_bool(name, value, at)?,
            "allow_zero_length_clientid" => {
                c.allow_zero_length_clientid = parse_bool(name, value, at)?
            }
            "auto_id_prefix" => c.auto_id_prefix = required(name, value, at)?.to_string(),
            "persistent_client_expiration" => {
                c.persistent_client_expiration = Some(parse_expiration(name, value, at)?)
            }
            "upgrade_outgoing_qos" => c.upgrade_outgoing_qos = parse_bool(name, value, at)?,
            "log_type" => self.log_type(name, value, at)?,
            "log_dest" => self.log_dest(name, value, at)?,
            "log_timestamp" => c.log.timestamp = parse_bool(name, value, at)?,
            "log_timestamp_format" => {
                c.log.timestamp_format = Some(required(name, value, at)?.to_string())
            }
            "connection_messages" => c.connection_messages = parse_bool(name, value, at)?,
            "set_tcp_nodelay" => c.set_tcp_nodelay = parse_bool(name, value, at)?,
            "pid_file" => c.pid_file = Some(PathBuf::from(required(name, value, at)?)),
            "include_dir" => {
                let dir = Path::new(required(name, value, at)?);
                if depth == 0 {
                    self.include_dir(dir, at)?;
                } else {
                    return Err(ConfigError::NestedIncludeDir { at: at.clone() });
                }
            }
            "per_listener_settings" => {
                c.per_listener_settings = parse_bool(name, value, at)?;
                // Options read before it were made broker-wide; per listener, they would no
                // longer apply to any listener.
                if c.per_listener_settings && self.security_option_seen {
                    return Err(ConfigError::PerListenerSettingsLate { at: at.clone() });
                }
            }
            _ => return Err(unhandled(name, at)),
        }
        Ok(())
    }

    /// With `per_listener_settings true`, the authentication options belong to the latest
    /// listener (as Mosquitto); returns false for other options.
    fn per_listener_option(
        &mut self,
        name: &str,
        value: &str,
        at: &Location,
    ) -> Result<bool, ConfigError> {
        let auth = match name {
            _ if AUTH_OPTIONS.contains(&name) => &mut self.listener_mut(name, at).auth,
            _ => return Ok(false),
        };
        match name {
            "allow_anonymous" => auth.allow_anonymous = Some(parse_bool(name, value, at)?),
            "password_file" => auth.password_file = Some(PathBuf::from(required(name, value, at)?)),
            "acl_file" => auth.acl_file = Some(PathBuf::from(required(name, value, at)?)),
            "allow_zero_length_clientid" => {
                auth.allow_zero_length_clientid = Some(parse_bool(name, value, at)?)
            }
            _ => auth.auto_id_prefix = Some(required(name, value, at)?.to_string()),
        }
        Ok(true)
    }

    /// `listener PORT [ADDRESS]`: starts a new listener block.
    fn listener(&mut self, name: &str, value: &str, at: &Location) -> Result<(), ConfigError> {
        let (port, address) = match value.split_once([' ', '\t']) {
            Some((port, address)) => (port, Some(address.trim())),
            None => (value, None),
        };
        let port = parse_port(name, port, at)?;
        if let Some(path) = address.filter(|a| a.starts_with('/')) {
            return Err(ConfigError::UnixSocketListener {
                path: path.to_string(),
                at: at.clone(),
            });
        }
        self.config.listeners.push(ListenerConfig {
            port,
            bind_address: address.map(str::to_string),
            ..ListenerConfig::default()
        });
        self.listener_at.push(at.clone());
        self.current_listener = Some(self.config.listeners.len() - 1);
        Ok(())
    }

    /// The listener a listener-scoped option applies to: the latest `listener` block, or the
    /// default listener before the first one.
    fn listener_mut(&mut self, name: &str, at: &Location) -> &mut ListenerConfig {
        match self.current_listener {
            Some(index) => &mut self.config.listeners[index],
            None => {
                if self.default_listener_option.is_none() {
                    self.default_listener_option = Some((name.to_string(), at.clone()));
                }
                self.default_listener_at.get_or_insert_with(|| at.clone());
                &mut self.default_listener
            }
        }
    }

    fn log_type(&mut self, name: &str, value: &str, at: &Location) -> Result<(), ConfigError> {
        let bits = match required(name, value, at)? {
            "debug" => LogTypes::DEBUG,
            "error" => LogTypes::ERROR,
            "warning" => LogTypes::WARNING,
            "notice" => LogTypes::NOTICE,
            "information" => LogTypes::INFORMATION,
            "subscribe" => LogTypes::SUBSCRIBE,
            "unsubscribe" => LogTypes::UNSUBSCRIBE,
            "websockets" => LogTypes::WEBSOCKETS,
            "all" => LogTypes::ALL,
            "none" => 0,
            _ => return Err(invalid(name, value, at)),
        };
        let types = &mut self.config.log.types;
        if !self.log_type_seen || bits == 0 {
            types.0 = 0;
        }
        types.0 |= bits;
        self.log_type_seen = true;
        Ok(())
    }

    fn log_dest(&mut self, name: &str, value: &str, at: &Location) -> Result<(), ConfigError> {
        let (kind, rest) = match required(name, value, at)?.split_once([' ', '\t']) {
            Some((kind, rest)) => (kind, rest.trim_start()),
            None => (value, ""),
        };
        let dest = match kind {
            "stdout" => LogDest::Stdout,
            "stderr" => LogDest::Stderr,
            "file" => LogDest::File(PathBuf::from(required("log_dest file", rest, at)?)),
            "none" => LogDest::None,
            "syslog" => LogDest::Syslog,
            "topic" | "dlt" => {
                return Err(refused(
                    name,
                    Some(value),
                    "midge does not publish its log to $SYS topics or to DLT.",
                    at,
                ))
            }
            _ => return Err(invalid(name, value, at)),
        };
        let dests = &mut self.config.log.dests;
        if dest == LogDest::None {
            // `none` switches off every destination named so far.
            dests.clear();
        } else {
            dests.retain(|d| *d != LogDest::None);
        }
        if !dests.contains(&dest) {
            dests.push(dest);
        }
        Ok(())
    }

    /// Reads every `*.conf` file in `dir`, in byte order of the names (Mosquitto's
    /// "case-sensitive alphabetical order, capital letters first").
    fn include_dir(&mut self, dir: &Path, at: &Location) -> Result<(), ConfigError> {
        let dir_error = || ConfigError::IncludeDir {
            dir: dir.to_path_buf(),
            at: at.clone(),
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(|_| dir_error())? {
            let path = entry.map_err(|_| dir_error())?.path();
            let is_conf = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() > ".conf".len() && n.ends_with(".conf"));
            if is_conf && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        for path in files {
            let text = read_config_file(&path)?;
            self.parse_text(&text, &path, 1)
                .map_err(|error| ConfigError::Included {
                    error: Box::new(error),
                    at: at.clone(),
                })?;
        }
        Ok(())
    }
}

/// Why a listener's TLS options cannot work, if they cannot. Mosquitto refuses these too.
fn tls_problem(tls: &TlsOptions) -> Option<String> {
    match (&tls.certfile, &tls.keyfile) {
        (Some(_), None) => return Some("certfile is set but keyfile is not".into()),
        (None, Some(_)) => return Some("keyfile is set but certfile is not".into()),
        (None, None) => {
            return tls
                .first_tls_only_option()
                .map(|o| format!("{o} needs TLS, but certfile and keyfile are not set"))
        }
        (Some(_), Some(_)) => {}
    }
    let has_ca = tls.cafile.is_some() || tls.capath.is_some();
    if tls.require_certificate && !has_ca {
        return Some("require_certificate needs cafile or capath to check certificates".into());
    }
    if tls.crlfile.is_some() && !has_ca {
        return Some("crlfile needs cafile or capath".into());
    }
    None
}

fn invalid(option: &str, value: &str, at: &Location) -> ConfigError {
    ConfigError::InvalidValue {
        option: option.to_string(),
        value: value.to_string(),
        at: at.clone(),
    }
}

fn refused(option: &str, value: Option<&str>, reason: &'static str, at: &Location) -> ConfigError {
    ConfigError::Refused {
        option: option.to_string(),
        value: value.map(str::to_string),
        reason,
        at: at.clone(),
    }
}

fn unhandled(option: &str, at: &Location) -> ConfigError {
    ConfigError::Unhandled {
        option: option.to_string(),
        at: at.clone(),
    }
}

fn required<'a>(option: &str, value: &'a str, at: &Location) -> Result<&'a str, ConfigError> {
    if value.is_empty() {
        Err(ConfigError::MissingValue {
            option: option.to_string(),
            at: at.clone(),
        })
    } else {
        Ok(value)
    }
}

/// `true`/`1` or `false`/`0`, nothing else (as Mosquitto's `conf__parse_bool`).
fn parse_bool(option: &str, value: &str, at: &Location) -> Result<bool, ConfigError> {
    match required(option, value, at)? {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(option, value, at)),
    }
}

fn parse_number<T: FromStr>(option: &str, value: &str, at: &Location) -> Result<T, ConfigError> {
    required(option, value, at)?
        .parse()
        .map_err(|_| invalid(option, value, at))
}

fn parse_port(option: &str, value: &str, at: &Location) -> Result<u16, ConfigError> {
    parse_number(option, value, at)
}

/// `<n>h|d|w|m|y`: hours, days, weeks, months of 30 days, years of 365 days; `n` > 0.
fn parse_expiration(option: &str, value: &str, at: &Location) -> Result<Duration, ConfigError> {
    const DAY: u64 = 24 * 3600;
    let value = required(option, value, at)?;
    let split = value.len().saturating_sub(1);
    let (count, unit) = (
        value.get(..split).unwrap_or(""),
        value.get(split..).unwrap_or(""),
    );
    let unit_seconds = match unit {
        "h" => 3600,
        "d" => DAY,
        "w" => 7 * DAY,
        "m" => 30 * DAY,
        "y" => 365 * DAY,
        _ => return Err(invalid(option, value, at)),
    };
    match count.parse::<u64>() {
        Ok(n) if n > 0 => n
            .checked_mul(unit_seconds)
            .map(Duration::from_secs)
            .ok_or_else(|| invalid(option, value, at)),
        _ => Err(invalid(option, value, at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_str(text, Path::new("/etc/midge.conf"))
    }

    fn ok(text: &str) -> Config {
        match parse(text) {
            Ok(config) => config,
            Err(e) => panic!("{text:?} failed: {e}"),
        }
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("{text:?} parsed: {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn at(line: usize) -> Location {
        Location {
            file: PathBuf::from("/etc/midge.conf"),
            line,
        }
    }

    /// A scratch directory removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir()
                .join(format!("midge-config-{}-{name}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn defaults_are_mosquitto_2() {
        let c = Config::default();
        assert!(c.listeners.is_empty());
        assert_eq!(c.allow_anonymous, None);
        assert_eq!(c.max_packet_size, 0);
        assert_eq!(c.message_size_limit, 0);
        assert_eq!(c.max_keepalive, 65535);
        assert_eq!(c.max_inflight_messages, 20);
        assert_eq!(c.max_queued_messages, 1000);
        assert_eq!(c.max_queued_bytes, 0);
        assert!(!c.queue_qos0_messages);
        assert!(c.retain_available);
        assert!(c.allow_zero_length_clientid);
        assert_eq!(c.auto_id_prefix, "auto-");
        assert_eq!(c.persistent_client_expiration, None);
        assert!(!c.upgrade_outgoing_qos);
        assert_eq!(c.log.types, LogTypes::DEFAULT);
        assert!(c.log.dests.is_empty());
        assert!(c.log.timestamp);
        assert_eq!(c.log.timestamp_format, None);
        assert!(c.connection_messages);
        assert!(c.set_tcp_nodelay);
        assert_eq!(c.pid_file, None);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn empty_text_is_the_default_config() {
        assert_eq!(ok(""), Config::default());
    }

    #[test]
    fn comments_blank_lines_and_trailing_whitespace_are_ignored() {
        let c = ok(
            "# comment\n\n   \n  # indented comment\nmax_keepalive 60  \r\nauto_id_prefix x-\t\r\n",
        );
        assert_eq!(c.max_keepalive, 60);
        assert_eq!(c.auto_id_prefix, "x-");
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn numeric_options_are_read() {
        let c = ok(
            "max_packet_size 1000\nmessage_size_limit 500\nmax_keepalive 0\n\
                    max_inflight_messages 1\nmax_queued_messages 0\nmax_queued_bytes 65536\n",
        );
        assert_eq!(c.max_packet_size, 1000);
        assert_eq!(c.message_size_limit, 500);
        assert_eq!(c.max_keepalive, 0);
        assert_eq!(c.max_inflight_messages, 1);
        assert_eq!(c.max_queued_messages, 0);
        assert_eq!(c.max_queued_bytes, 65536);
    }

    #[test]
    fn boolean_options_are_read() {
        let c = ok("queue_qos0_messages true\nretain_available false\n\
                    allow_zero_length_clientid false\nupgrade_outgoing_qos true\n\
                    log_timestamp false\nconnection_messages false\nset_tcp_nodelay false\n\
                    allow_anonymous true\n");
        assert!(c.queue_qos0_messages);
        assert!(!c.retain_available);
        assert!(!c.allow_zero_length_clientid);
        assert!(c.upgrade_outgoing_qos);
        assert!(!c.log.timestamp);
        assert!(!c.connection_messages);
        assert!(!c.set_tcp_nodelay);
        assert_eq!(c.allow_anonymous, Some(true));
        assert_eq!(ok("allow_anonymous false").allow_anonymous, Some(false));
    }

    #[test]
    fn booleans_accept_true_false_one_and_zero_only() {
        assert_eq!(
            err("\nretain_available yes"),
            "Error: Invalid retain_available value (yes).\nError found at /etc/midge.conf:2."
        );
        assert_eq!(ok("allow_anonymous 1").allow_anonymous, Some(true));
        assert_eq!(ok("allow_anonymous 0").allow_anonymous, Some(false));
        assert!(parse("allow_anonymous 2").is_err());
        assert!(parse("set_tcp_nodelay TRUE").is_err());
    }

    #[test]
    fn bad_number_names_option_value_file_and_line() {
        assert_eq!(
            err("# x\n\n\n\n\n\n\n\n\n\n\nmax_keepalive abc"),
            "Error: Invalid max_keepalive value (abc).\nError found at /etc/midge.conf:12."
        );
        assert!(parse("max_keepalive 65536").is_err());
        assert!(parse("max_keepalive -1").is_err());
        assert!(parse("max_inflight_messages 70000").is_err());
        assert!(parse("max_queued_messages -5").is_err());
    }

    #[test]
    fn missing_value_is_an_error() {
        assert_eq!(
            parse("max_keepalive").unwrap_err(),
            ConfigError::MissingValue {
                option: "max_keepalive".into(),
                at: at(1)
            }
        );
        assert_eq!(
            err("auto_id_prefix"),
            "Error: Empty auto_id_prefix value in configuration.\nError found at /etc/midge.conf:1."
        );
    }

    #[test]
    fn max_packet_size_below_20_is_rejected() {
        assert!(parse("max_packet_size 19").is_err());
        assert!(parse("max_packet_size 0").is_err());
        assert_eq!(ok("max_packet_size 20").max_packet_size, 20);
    }

    #[test]
    fn message_size_limit_is_capped_at_the_mqtt_maximum() {
        assert_eq!(
            ok("message_size_limit 268435455").message_size_limit,
            MQTT_MAX_PAYLOAD
        );
        assert!(parse("message_size_limit 268435456").is_err());
    }

    #[test]
    fn persistent_client_expiration_units() {
        let exp =
            |v: &str| ok(&format!("persistent_client_expiration {v}")).persistent_client_expiration;
        assert_eq!(exp("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(exp("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(exp("2w"), Some(Duration::from_secs(14 * 86400)));
        assert_eq!(exp("1m"), Some(Duration::from_secs(30 * 86400)));
        assert_eq!(exp("1y"), Some(Duration::from_secs(365 * 86400)));
    }

    #[test]
    fn persistent_client_expiration_rejects_bad_durations() {
        for bad in ["10s", "10", "h", "0d", "-1d", "1.5d", "xd", "1é"] {
            assert!(
                parse(&format!("persistent_client_expiration {bad}")).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn auto_id_prefix_pid_file_and_timestamp_format_take_the_rest_of_the_line() {
        let c = ok(
            "auto_id_prefix gen-\npid_file /run/midge.pid\nlog_timestamp_format %Y-%m-%d %H:%M:%S",
        );
        assert_eq!(c.auto_id_prefix, "gen-");
        assert_eq!(c.pid_file, Some(PathBuf::from("/run/midge.pid")));
        assert_eq!(c.log.timestamp_format.as_deref(), Some("%Y-%m-%d %H:%M:%S"));
    }

    #[test]
    fn listener_blocks_scope_max_connections() {
        let c = ok("listener 1883\nmax_connections 10\nlistener 8883 192.168.1.2\nlistener 0 ::1\nmax_connections 3");
        assert_eq!(
            c.listeners,
            vec![
                ListenerConfig {
                    port: 1883,
                    bind_address: None,
                    max_connections: 10,
                    ..ListenerConfig::default()
                },
                ListenerConfig {
                    port: 8883,
                    bind_address: Some("192.168.1.2".into()),
                    max_connections: -1,
                    ..ListenerConfig::default()
                },
                ListenerConfig {
                    port: 0,
                    bind_address: Some("::1".into()),
                    max_connections: 3,
                    ..ListenerConfig::default()
                },
            ]
        );
    }

    #[test]
    fn negative_max_connections_means_unlimited() {
        assert_eq!(
            ok("listener 1\nmax_connections -7").listeners[0].max_connections,
            -1
        );
        assert!(parse("listener 1\nmax_connections many").is_err());
    }

    #[test]
    fn listener_port_must_be_valid() {
        assert_eq!(
            err("listener 70000"),
            "Error: Invalid listener value (70000).\nError found at /etc/midge.conf:1."
        );
        assert!(parse("listener").is_err());
        assert!(parse("listener x 127.0.0.1").is_err());
    }

    #[test]
    fn unix_socket_listener_is_an_error() {
        assert!(matches!(
            parse("listener 0 /run/midge.sock"),
            Err(ConfigError::UnixSocketListener { .. })
        ));
    }

    #[test]
    fn port_and_bind_address_configure_the_default_listener_first() {
        let c = ok("listener 8883\nport 1884\nbind_address 10.0.0.1");
        assert_eq!(c.listeners[0].port, 1884);
        assert_eq!(c.listeners[0].bind_address.as_deref(), Some("10.0.0.1"));
        assert_eq!(c.listeners[1].port, 8883);
        let c = ok("bind_address 10.0.0.1");
        assert_eq!(
            c.listeners,
            vec![ListenerConfig {
                port: 1883,
                bind_address: Some("10.0.0.1".into()),
                max_connections: -1,
                ..ListenerConfig::default()
            }]
        );
    }

    #[test]
    fn listener_options_before_any_listener_apply_to_the_default_listener() {
        let c = ok("max_connections 5\nport 1883");
        assert_eq!(c.listeners[0].max_connections, 5);
        assert!(c.warnings.is_empty());
        let c = ok("max_connections 5\nlistener 1883");
        assert_eq!(c.listeners[0].max_connections, -1);
        assert_eq!(c.warnings.len(), 1);
        assert!(
            c.warnings[0].contains("max_connections option in /etc/midge.conf:1"),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn first_log_type_replaces_the_default_and_later_ones_add() {
        assert_eq!(ok("log_type error").log.types, LogTypes(LogTypes::ERROR));
        assert_eq!(
            ok("log_type error\nlog_type subscribe\nlog_type unsubscribe")
                .log
                .types,
            LogTypes(LogTypes::ERROR | LogTypes::SUBSCRIBE | LogTypes::UNSUBSCRIBE)
        );
        assert_eq!(ok("log_type all").log.types, LogTypes(LogTypes::ALL));
        assert_eq!(ok("log_type all\nlog_type none").log.types, LogTypes(0));
        assert_eq!(
            ok("log_type none\nlog_type debug").log.types,
            LogTypes(LogTypes::DEBUG)
        );
        let named = "log_type warning\nlog_type notice\nlog_type information\nlog_type websockets";
        assert_eq!(
            ok(named).log.types,
            LogTypes(
                LogTypes::WARNING | LogTypes::NOTICE | LogTypes::INFORMATION | LogTypes::WEBSOCKETS
            )
        );
        assert!(parse("log_type verbose").is_err());
    }

    #[test]
    fn log_dest_variants() {
        let c = ok("log_dest stdout\nlog_dest file /var/log/midge dir/midge.log\nlog_dest stderr\nlog_dest stdout");
        assert_eq!(
            c.log.dests,
            vec![
                LogDest::Stdout,
                LogDest::File(PathBuf::from("/var/log/midge dir/midge.log")),
                LogDest::Stderr
            ]
        );
        assert_eq!(
            ok("log_dest stdout\nlog_dest none").log.dests,
            vec![LogDest::None]
        );
        assert_eq!(
            ok("log_dest none\nlog_dest stdout").log.dests,
            vec![LogDest::Stdout]
        );
        assert!(matches!(
            parse("log_dest file"),
            Err(ConfigError::MissingValue { .. })
        ));
        assert!(parse("log_dest printer").is_err());
    }

    #[test]
    fn log_dest_topic_and_dlt_are_refused() {
        assert_eq!(ok("log_dest syslog").log.dests, vec![LogDest::Syslog]);
        for dest in ["topic", "dlt"] {
            assert!(matches!(
                parse(&format!("log_dest {dest}")),
                Err(ConfigError::Refused { .. })
            ));
        }
    }

    #[test]
    fn options_without_effect_are_accepted_silently() {
        let c = ok(
            "retry_interval 3\nstore_clean_interval 10\nlistener 1\ndhparamfile /d\n\
                    connection b1\naddress h\nidle_timeout 5\nthreshold 10",
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(
            err("retry_interval"),
            "Error: Empty retry_interval value in configuration.\n\
             Error found at /etc/midge.conf:1."
        );
    }

    #[test]
    fn refused_options_name_file_line_and_reason() {
        assert_eq!(
            err("listener 1883\n\nmount_point tenant1/"),
            "Error: mount_point in /etc/midge.conf:3 is not supported by this version \
             of midge, which refuses to start rather than run without it: midge does not prefix \
             topics per listener yet, so this listener's clients would not be confined to their \
             topic tree.\nError found at /etc/midge.conf:3."
        );
        for (line, option) in [
            ("plugin /usr/lib/x.so", "plugin"),
            ("plugin_opt_db x", "plugin_opt_db"),
            ("auth_opt_host x", "auth_opt_host"),
            ("auth_plugin /x.so", "auth_plugin"),
            ("clientid_prefixes sensor-", "clientid_prefixes"),
            ("use_username_as_clientid true", "use_username_as_clientid"),
            ("check_retain_source true", "check_retain_source"),
            ("max_inflight_bytes 1000", "max_inflight_bytes"),
            ("psk_file /p", "psk_file"),
            ("bind_interface eth0", "bind_interface"),
            ("tls_keyform engine", "tls_keyform"),
            ("connection b\nlocal_username u", "local_username"),
            ("connection b\nstart_type lazy", "start_type"),
            ("connection b\nbridge_psk 0a", "bridge_psk"),
        ] {
            match parse(line) {
                Err(ConfigError::Refused { option: o, .. }) => assert_eq!(o, option),
                other => panic!("{line}: {other:?}"),
            }
        }
        // Their harmless values are accepted.
        ok(
            "use_username_as_clientid false\ncheck_retain_source false\nmax_inflight_bytes 0\n\
            tls_keyform pem\nconnection b\nstart_type automatic\nround_robin false",
        );
    }

    #[test]
    fn every_listed_option_has_code() {
        // Whatever the value, no option the table lists (other than refused ones) may reach
        // the parser's "no code for it" arm.
        for info in options::OPTIONS
            .iter()
            .filter(|o| o.class != Class::Refused)
        {
            let name = info.name.replace('*', "x");
            for value in ["", "x", "1", "true", "/tmp"] {
                let text = format!("connection b\n{name} {value}");
                if let Err(e) = parse(&text) {
                    assert!(
                        !matches!(
                            e,
                            ConfigError::Unhandled { .. } | ConfigError::Unknown { .. }
                        ),
                        "{text:?}: {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn bridge_blocks_are_read() {
        let c = ok(
            "connection hub\naddress 127.0.0.1:1884\ntopic sensors/# out 1\n\
                    remote_clientid kitchen\ncleansession true\nconnection other\naddress h",
        );
        assert_eq!(c.bridges.len(), 2);
        let b = &c.bridges[0];
        assert_eq!(b.addresses, vec![("127.0.0.1".to_string(), 1884)]);
        assert_eq!(b.topics.len(), 1);
        assert_eq!(b.client_id(), "kitchen");
        assert!(b.clean_session);
        assert_eq!(b.state_topic(), "$SYS/broker/connection/kitchen/state");
        assert!(parse("connection x\nbridge_psk 0a1b").is_err());
    }

    #[test]
    fn tls_options_are_listener_scoped() {
        let c = ok(
            "listener 1883\nlistener 8883\ncertfile /c/server.pem\nkeyfile /c/key.pem\n\
             cafile /c/ca.pem\ncapath /c/certs\ncrlfile /c/crl.pem\nrequire_certificate true\n\
             use_identity_as_username true\nuse_subject_as_username false\ntls_version tlsv1.3\n\
             ciphers ECDHE-RSA-AES128-GCM-SHA256\nciphers_tls1.3 TLS_AES_128_GCM_SHA256\n\
             dhparamfile /c/dh.pem",
        );
        assert_eq!(c.listeners[0].tls, TlsOptions::default());
        assert!(!c.listeners[0].tls.enabled());
        let tls = &c.listeners[1].tls;
        assert!(tls.enabled());
        assert_eq!(
            *tls,
            TlsOptions {
                certfile: Some("/c/server.pem".into()),
                keyfile: Some("/c/key.pem".into()),
                cafile: Some("/c/ca.pem".into()),
                capath: Some("/c/certs".into()),
                crlfile: Some("/c/crl.pem".into()),
                require_certificate: true,
                use_identity_as_username: true,
                use_subject_as_username: false,
                tls_version: Some(TlsVersion::Tls13),
                ciphers: Some("ECDHE-RSA-AES128-GCM-SHA256".into()),
                ciphers_tls13: Some("TLS_AES_128_GCM_SHA256".into()),
            }
        );
        // dhparamfile has no meaning for rustls (ECDHE only): accepted, no effect.
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn protocol_websockets_is_listener_scoped() {
        let c =
            ok("listener 1883\nlistener 8080\nprotocol websockets\nlistener 1884\nprotocol mqtt");
        let protocols: Vec<_> = c.listeners.iter().map(|l| l.protocol).collect();
        assert_eq!(
            protocols,
            vec![
                ListenerProtocol::Mqtt,
                ListenerProtocol::WebSockets,
                ListenerProtocol::Mqtt
            ]
        );
        assert!(c.warnings.is_empty());
        assert!(parse("listener 1\nprotocol http").is_err());
    }

    #[test]
    fn old_tls_versions_warn_and_mean_tls_1_2() {
        let c = ok("listener 8883\ncertfile c\nkeyfile k\ntls_version tlsv1.1");
        assert_eq!(c.listeners[0].tls.tls_version, Some(TlsVersion::Tls12));
        assert_eq!(c.warnings.len(), 1);
        assert!(parse("listener 8883\ncertfile c\nkeyfile k\ntls_version sslv3").is_err());
    }

    #[test]
    fn tls_options_that_do_not_fit_together_are_fatal() {
        assert_eq!(
            err("listener 1883\n\nlistener 8883\ncertfile /c/server.pem"),
            "Error: certfile is set but keyfile is not, for the listener in /etc/midge.conf:3."
        );
        assert_eq!(
            err("listener 8883\nkeyfile k"),
            "Error: keyfile is set but certfile is not, for the listener in /etc/midge.conf:1."
        );
        assert_eq!(
            err("listener 8883\nrequire_certificate true"),
            "Error: require_certificate needs TLS, but certfile and keyfile are not set, for \
             the listener in /etc/midge.conf:1."
        );
        assert_eq!(
            err("listener 8883\ncertfile c\nkeyfile k\nrequire_certificate true"),
            "Error: require_certificate needs cafile or capath to check certificates, for the \
             listener in /etc/midge.conf:1."
        );
        assert!(parse("listener 8883\ncertfile c\nkeyfile k\ncrlfile r").is_err());
        // The default listener is checked too, and named by its first line.
        assert_eq!(
            err("port 8883\ncafile /c/ca.pem"),
            "Error: cafile needs TLS, but certfile and keyfile are not set, for the listener \
             in /etc/midge.conf:1."
        );
        assert!(
            ok("cafile c\ncertfile c\nkeyfile k\nport 8883").listeners[0]
                .tls
                .enabled()
        );
    }

    #[test]
    fn unknown_options_are_fatal_in_mosquitto_words() {
        assert_eq!(
            err("\nacl_flie /etc/acl"),
            "Error: Unknown configuration variable \"acl_flie\".\nError found at /etc/midge.conf:2."
        );
        assert!(matches!(
            parse("listener 1883\nmax_keeplive 10"),
            Err(ConfigError::Unknown { .. })
        ));
        assert!(matches!(
            parse("connection b\naddress h\nremote_pasword x"),
            Err(ConfigError::Unknown { .. })
        ));
    }

    #[test]
    fn bridge_options_need_a_connection() {
        assert_eq!(
            err("address 127.0.0.1"),
            "Error: Invalid bridge configuration.\nError found at /etc/midge.conf:1."
        );
    }

    #[test]
    fn max_qos_and_max_topic_alias_must_agree_between_listeners() {
        let c = ok("max_qos 1\nlistener 1\nlistener 2");
        assert_eq!(c.max_qos, 1);
        let c = ok("listener 1\nmax_qos 1\nmax_topic_alias 5");
        assert_eq!((c.max_qos, c.max_topic_alias), (1, 5));
        let c = ok("listener 1\nmax_qos 0\nlistener 2\nmax_qos 0");
        assert_eq!(c.max_qos, 0);
        assert_eq!(ok("max_qos 1").max_qos, 1);
        assert_eq!(
            err("listener 1\nmax_qos 1\nlistener 2"),
            "Error: max_qos is 1 for the listener in /etc/midge.conf:1 but 2 for the listener \
             in /etc/midge.conf:3; midge applies one max_qos to every listener.\n\
             Error found at /etc/midge.conf:3."
        );
        // With `port`, lines before the first `listener` are the default listener's own.
        assert!(parse("port 1\nmax_topic_alias 3\nlistener 2").is_err());
        assert_eq!(
            err("max_qos 7"),
            "Error: Invalid max_qos value (7).\nError found at /etc/midge.conf:1."
        );
    }

    #[test]
    fn socket_domain_log_facility_and_retained_persistence() {
        let c = ok(
            "listener 1\nsocket_domain ipv6\nlistener 2\nsocket_domain ipv4\n\
                    log_facility 3\nretained_persistence true",
        );
        assert_eq!(c.listeners[0].socket_domain, Some(SocketDomain::Ipv6));
        assert_eq!(c.listeners[1].socket_domain, Some(SocketDomain::Ipv4));
        assert_eq!(c.log.facility, Some(3));
        assert!(c.persistence);
        assert!(parse("listener 1\nsocket_domain ipv5").is_err());
        assert!(parse("log_facility 8").is_err());
    }

    #[test]
    fn password_and_acl_files_are_read() {
        let c = ok("password_file /etc/midge/passwd\nacl_file /etc/midge/acl");
        assert_eq!(c.password_file, Some(PathBuf::from("/etc/midge/passwd")));
        assert_eq!(c.acl_file, Some(PathBuf::from("/etc/midge/acl")));
    }

    #[test]
    fn per_listener_settings_make_auth_options_per_listener() {
        let mut c = ok(
            "per_listener_settings true\nlistener 1883\nallow_anonymous true\n\
                        listener 8883\npassword_file /etc/p\nacl_file /etc/a",
        );
        c.finish();
        assert!(c.per_listener_settings);
        assert_eq!(c.listeners[0].auth.allow_anonymous, Some(true));
        assert_eq!(c.listeners[1].auth.allow_anonymous, Some(false));
        assert_eq!(
            c.listeners[1].auth.password_file,
            Some(PathBuf::from("/etc/p"))
        );
        assert_eq!(c.listeners[0].auth.password_file, None);
        assert_eq!(c.password_file, None);
        assert!(ok("per_listener_settings false").warnings.is_empty());
        assert_eq!(
            err("acl_file /a\nper_listener_settings true"),
            "Error: per_listener_settings must be set before any other security settings.\n\
             Error found at /etc/midge.conf:2."
        );
        ok("acl_file /a\nper_listener_settings false");
        assert!(parse("per_listener_settings maybe").is_err());
    }

    #[test]
    fn finish_without_listeners_is_local_only_mode() {
        let mut c = Config::default();
        c.finish();
        assert_eq!(
            c.listeners,
            vec![
                ListenerConfig {
                    port: 1883,
                    bind_address: Some("127.0.0.1".into()),
                    max_connections: -1,
                    ..ListenerConfig::default()
                },
                ListenerConfig {
                    port: 1883,
                    bind_address: Some("::1".into()),
                    optional: true,
                    ..ListenerConfig::default()
                }
            ]
        );
        assert_eq!(c.allow_anonymous, Some(true));
    }

    #[test]
    fn finish_with_a_listener_defaults_to_no_anonymous() {
        for text in ["listener 1883", "port 1883", "bind_address 0.0.0.0"] {
            let mut c = ok(text);
            c.finish();
            assert_eq!(c.listeners.len(), 1, "{text}");
            assert_ne!(
                c.listeners[0].bind_address.as_deref(),
                Some(LOOPBACK),
                "{text}"
            );
            assert_eq!(c.allow_anonymous, Some(false), "{text}");
        }
    }

    #[test]
    fn finish_keeps_an_explicit_allow_anonymous() {
        let mut c = ok("listener 1883\nallow_anonymous true");
        c.finish();
        assert_eq!(c.allow_anonymous, Some(true));
        let mut c = ok("allow_anonymous false");
        c.finish();
        assert_eq!(c.allow_anonymous, Some(false));
        assert_eq!(c.listeners[0].bind_address.as_deref(), Some(LOOPBACK));
    }

    #[test]
    fn finish_turns_cli_ports_into_loopback_listeners() {
        let mut c = Config {
            cli_ports: vec![1884, 1885],
            ..Config::default()
        };
        c.finish();
        let ports: Vec<_> = c
            .listeners
            .iter()
            .map(|l| (l.port, l.bind_address.as_deref()))
            .collect();
        let v6 = Some(LOOPBACK_V6);
        assert_eq!(
            ports,
            vec![
                (1884, Some(LOOPBACK)),
                (1884, v6),
                (1885, Some(LOOPBACK)),
                (1885, v6)
            ]
        );
        assert_eq!(c.allow_anonymous, Some(true));

        let mut c = ok("listener 1883");
        c.cli_ports = vec![1884];
        c.finish();
        let ports: Vec<_> = c
            .listeners
            .iter()
            .map(|l| (l.port, l.bind_address.as_deref()))
            .collect();
        assert_eq!(
            ports,
            vec![
                (1883, None),
                (1884, Some(LOOPBACK)),
                (1884, Some(LOOPBACK_V6))
            ]
        );
        assert_eq!(c.allow_anonymous, Some(false));
    }

    #[test]
    fn finish_twice_changes_nothing() {
        let mut c = Config {
            cli_ports: vec![1884],
            ..Config::default()
        };
        c.finish();
        let once = c.clone();
        c.finish();
        assert_eq!(c, once);
    }

    #[test]
    fn load_reports_a_missing_file() {
        let e = load(Path::new("/x/y.conf")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Error: Unable to open config file /x/y.conf."
        );
    }

    #[test]
    fn load_records_the_source_and_names_it_in_errors() {
        let dir = TempDir::new("load");
        let path = dir.write("m.conf", "listener 1883\nmax_keepalive 10\n");
        let c = load(&path).unwrap();
        assert_eq!(c.source.as_deref(), Some(path.as_path()));
        assert_eq!(c.max_keepalive, 10);
        let path = dir.write("bad.conf", "\n\nmax_keepalive x\n");
        assert_eq!(
            load(&path).unwrap_err().to_string(),
            format!(
                "Error: Invalid max_keepalive value (x).\nError found at {}:3.",
                path.display()
            )
        );
    }

    #[test]
    fn include_dir_reads_conf_files_in_byte_order() {
        let dir = TempDir::new("include");
        dir.write("b.conf", "listener 3\n");
        dir.write("a.conf", "listener 2\n");
        dir.write("A.conf", "listener 1\nmax_connections 9\n");
        dir.write("c.txt", "this is not config\n");
        dir.write(".conf", "listener 99\n");
        fs::create_dir(dir.0.join("d.conf")).unwrap();
        let c = ok(&format!(
            "listener 0\ninclude_dir {}\nmax_keepalive 5",
            dir.0.display()
        ));
        let ports: Vec<_> = c.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, vec![0, 1, 2, 3]);
        assert_eq!(c.listeners[1].max_connections, 9);
        assert_eq!(c.max_keepalive, 5);
    }

    #[test]
    fn include_dir_errors_name_the_included_file() {
        let dir = TempDir::new("include-error");
        let path = dir.write("x.conf", "max_keepalive\n");
        let e = err(&format!("include_dir {}", dir.0.display()));
        assert_eq!(
            e,
            format!(
                "Error: Empty max_keepalive value in configuration.\n\
                 Error found at {}:1.\nError found at /etc/midge.conf:1.",
                path.display()
            )
        );
    }

    #[test]
    fn include_dir_missing_is_an_error() {
        assert_eq!(
            err("\ninclude_dir /nonexistent/midge.d"),
            "Error: Unable to open include_dir '/nonexistent/midge.d'.\n\
             Error found at /etc/midge.conf:2."
        );
    }

    #[test]
    fn include_dir_inside_an_included_file_is_fatal() {
        let dir = TempDir::new("nested");
        let inner = TempDir::new("nested-inner");
        inner.write("x.conf", "listener 7\n");
        let path = dir.write("x.conf", &format!("include_dir {}\n", inner.0.display()));
        assert_eq!(
            err(&format!("include_dir {}", dir.0.display())),
            format!(
                "Error: The include_dir option is only valid in the main configuration file.\n\
                 Error found at {}:1.\nError found at /etc/midge.conf:1.",
                path.display()
            )
        );
    }

    #[test]
    fn debian_stock_config_loads_with_persistence() {
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/debian-mosquitto.conf");
        let text = fs::read_to_string(fixture).unwrap();
        let root = TempDir::new("debian");
        let conf_d = root.0.join("conf.d");
        fs::create_dir(&conf_d).unwrap();
        fs::write(
            conf_d.join("README"),
            "Any files placed in this directory that have a .conf ending will be loaded as\n\
             config files by the broker. Use this to make your local config.\n",
        )
        .unwrap();
        assert!(text.contains("include_dir /etc/mosquitto/conf.d"));
        let text = text.replace("/etc/mosquitto/conf.d", &conf_d.display().to_string());
        let path = root.write("mosquitto.conf", &text);

        let mut c = load(&path).unwrap();
        assert_eq!(
            c.pid_file,
            Some(PathBuf::from("/run/mosquitto/mosquitto.pid"))
        );
        assert_eq!(
            c.log.dests,
            vec![LogDest::File(PathBuf::from(
                "/var/log/mosquitto/mosquitto.log"
            ))]
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(c.persistence);
        assert_eq!(
            c.persistence_location,
            Some(PathBuf::from("/var/lib/mosquitto/"))
        );
        c.finish();
        assert_eq!(c.allow_anonymous, Some(true));
        assert_eq!(c.listeners[0].bind_address.as_deref(), Some(LOOPBACK));
    }

    #[test]
    fn shipped_midge_conf_loads_without_warnings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("midge.conf");
        let mut c = load(&path).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        c.finish();
        assert_eq!(c.listeners.len(), 1);
        assert_eq!(c.listeners[0].port, 1883);
        assert_eq!(c.listeners[0].bind_address, None);
    }
}
