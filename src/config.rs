//! Configuration: the mosquitto.conf dialect midge reads.
//!
//! A config file is a list of `name value` lines; `#` as the first character starts a comment.
//! A `listener PORT [ADDRESS]` line opens a listener block, and listener-scoped options that
//! follow it apply to that listener. This module only turns text into a [`Config`]; it opens no
//! sockets and starts nothing.

use std::path::PathBuf;
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
    pub const DEFAULT: LogTypes = LogTypes(Self::ERROR | Self::WARNING | Self::NOTICE | Self::INFORMATION);

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
    /// `set_tcp_nodelay` (default false).
    pub set_tcp_nodelay: bool,
    /// `pid_file`.
    pub pid_file: Option<PathBuf>,
    /// The file this configuration was read from, if any.
    pub source: Option<PathBuf>,
}
