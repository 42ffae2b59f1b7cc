//! Configuration: the mosquitto.conf dialect midge reads.
//!
//! A config file is a list of `name value` lines; `#` as the first character starts a comment.
//! A `listener PORT [ADDRESS]` line opens a listener block, and listener-scoped options that
//! follow it apply to that listener. This module only turns text into a [`Config`]; it opens no
//! sockets and starts nothing.
//!
//! Files: this one holds the [`Config`] with its defaults (written once, in
//! `impl Default for Config`: the parser starts from them) and [`Config::finish`];
//! [`options`] is the table of every option and what midge does with it, which decides what
//! the parser knows; `parse.rs` reads the lines, the broker-wide options and `include_dir`,
//! and owns [`ConfigError`]; `listener.rs` the listener blocks and their options; [`bridge`]
//! the `connection` blocks.

pub mod bridge;
mod listener;
pub mod options;
mod parse;
#[cfg(test)]
mod testing;

pub use bridge::BridgeConfig;
pub use listener::{
    HttpOptions, ListenerAuth, ListenerConfig, ListenerProtocol, SocketDomain, TlsOptions,
    TlsVersion,
};
pub use parse::{ConfigError, Location};
use std::path::{Path, PathBuf};
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
    pub(crate) fn has(self, bits: u16) -> bool {
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
    /// `persistence_file`: the store's file name inside `persistence_location` (default
    /// `midge.db`); a name that is Mosquitto's file gets `midge.db` beside it.
    pub persistence_file: Option<String>,
    /// `persistence_sync_interval` (midge's own, default 1 s): the longest time accepted
    /// messages can stay un-fsynced, i.e. what a power cut can lose.
    pub persistence_sync_interval: Duration,
    /// `connect_timeout` seconds (midge's own, default 20): a connection that has not sent a
    /// complete CONNECT by then is closed (slowloris protection).
    pub connect_timeout: Duration,
    /// `refuse_unreadable_subscriptions` (midge's own, default false): a subscription whose
    /// filter the ACL lets read no topic at all is refused in SUBACK. Off, as in Mosquitto,
    /// it is granted and the ACL filters each delivery.
    pub refuse_unreadable_subscriptions: bool,
    /// `per_listener_settings` (default false): authentication options per listener.
    pub per_listener_settings: bool,
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
    /// `plugin` naming Mosquitto's dynamic security plugin, broker-wide (without
    /// `per_listener_settings`): midge's built-in dynamic security.
    pub dynsec: Option<DynsecConfig>,
    /// `sys_interval` seconds between `$SYS` updates (default 10; 0 disables `$SYS`).
    pub sys_interval: u32,
    /// `max_inflight_messages` (default 20; 0 = no limit).
    pub max_inflight_messages: u16,
    /// `max_inflight_bytes` (default 0 = no limit): payload bytes of QoS 1 and 2 messages in
    /// flight to one client; more wait in its queue.
    pub max_inflight_bytes: usize,
    /// `clientid_prefixes`: when set, only client ids starting with it may connect.
    pub clientid_prefixes: Option<String>,
    /// `check_retain_source` (default true): a retained message is sent to a new subscriber
    /// only while its publisher may still publish to its topic.
    pub check_retain_source: bool,
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

/// A `plugin` line naming Mosquitto's dynamic security plugin
/// (`mosquitto_dynamic_security.so`, whatever its directory) and its `plugin_opt_config_file`:
/// midge runs its own implementation of that plugin on the same JSON file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynsecConfig {
    /// The `plugin` line's path (only its file name is used).
    pub plugin: PathBuf,
    /// `plugin_opt_config_file`: the JSON file of clients, groups and roles.
    pub config_file: PathBuf,
}

/// The file name of Mosquitto's dynamic security plugin: a `plugin` line naming it turns on
/// midge's built-in dynamic security.
pub const DYNSEC_PLUGIN: &str = "mosquitto_dynamic_security.so";

/// The MQTT port: the default listener's (`port`, `bind_address`, local-only mode) and a
/// bridge `address`'s when it names none.
pub(crate) const DEFAULT_PORT: u16 = 1883;

/// The addresses local-only listeners bind to (the IPv6 one only if the machine has IPv6).
pub(crate) const LOOPBACK: &str = "127.0.0.1";
/// See [`LOOPBACK`].
pub(crate) const LOOPBACK_V6: &str = "::1";

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
            refuse_unreadable_subscriptions: false,
            per_listener_settings: false,
            bridges: Vec::new(),
            memory_limit: 0,
            user: crate::privileges::DEFAULT_USER.to_string(),
            password_file: None,
            acl_file: None,
            dynsec: None,
            sys_interval: 10,
            max_inflight_messages: 20,
            max_inflight_bytes: 0,
            clientid_prefixes: None,
            check_retain_source: true,
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
    let text = parse::read_config_file(path)?;
    let mut config = parse_str(&text, path)?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Parses configuration text as if read from the file `origin` (used in messages; an
/// `include_dir` line is still read from disk). Does not call [`Config::finish`].
pub fn parse_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    parse::parse(text, origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{ok, TempDir};
    use std::fs;

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
        // Also the broker's defaults (`Settings::default` is built from these).
        assert_eq!(c.max_inflight_bytes, 0);
        assert_eq!(c.clientid_prefixes, None);
        assert!(c.check_retain_source);
        assert_eq!(c.sys_interval, 10);
        assert_eq!(c.connect_timeout, Duration::from_secs(20));
        assert!(!c.refuse_unreadable_subscriptions);
        assert_eq!(c.memory_limit, 0);
        assert!(!c.persistence);
        assert_eq!(c.persistence_sync_interval, Duration::from_secs(1));
        assert!(!c.per_listener_settings);
        assert_eq!(c.user, "mosquitto");
    }

    #[test]
    fn empty_text_is_the_default_config() {
        assert_eq!(ok(""), Config::default());
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
