//! Listener blocks: `listener PORT [ADDRESS]` and the options scoped to the latest one.
//!
//! Mosquitto's "default listener" is the one `port` and `bind_address` configure; options
//! written before the first `listener` line apply to it. This module owns the listener types,
//! the listener-scoped options, the authentication options that `per_listener_settings true`
//! moves into each listener, and the checks that a listener's options fit together. It opens
//! no socket: the server binds what it describes.

use super::parse::{
    invalid, parse_bool, parse_number, parse_port, required, ConfigError, Location,
};
use super::DEFAULT_PORT;
use std::path::PathBuf;

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
    /// `mount_point`: the prefix of every topic this listener's clients publish, subscribe
    /// to and receive.
    pub mount_point: Option<String>,
    /// `use_username_as_clientid`: a client's username replaces the client id it sends.
    pub use_username_as_clientid: bool,
    /// `max_qos` (default 2): the highest QoS this listener's clients may publish with and
    /// are granted.
    pub max_qos: u8,
    /// `max_topic_alias` (default 10): topic aliases an MQTT 5 client of this listener may
    /// use towards midge.
    pub max_topic_alias: u16,
    /// What a `protocol websockets` listener answers to plain HTTP requests.
    pub http: HttpOptions,
}

/// A WebSocket listener's HTTP side: all off by default, so nothing is served that the
/// configuration did not ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// `http_dir`: GET and HEAD requests that are no WebSocket upgrade get the files of this
    /// directory.
    pub dir: Option<PathBuf>,
    /// `metrics`: `GET /metrics` answers the broker's figures in Prometheus text format.
    pub metrics: bool,
    /// `metrics_auth` (default true): `/metrics` wants the HTTP Basic credentials of a
    /// broker user.
    pub metrics_auth: bool,
    /// `dashboard`: `/dashboard/` serves the built-in web page, an MQTT client that logs in
    /// over this listener like any other.
    pub dashboard: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            dir: None,
            metrics: false,
            metrics_auth: true,
            dashboard: false,
        }
    }
}

impl HttpOptions {
    /// True when the listener answers any HTTP request besides a WebSocket upgrade.
    pub fn serves(&self) -> bool {
        self.dir.is_some() || self.metrics || self.dashboard
    }
}

/// Options that `per_listener_settings true` makes per listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerAuth {
    pub allow_anonymous: Option<bool>,
    pub password_file: Option<PathBuf>,
    pub acl_file: Option<PathBuf>,
    pub allow_zero_length_clientid: Option<bool>,
    pub auto_id_prefix: Option<String>,
    /// This listener's dynamic security (a `plugin` line in its block).
    pub dynsec: Option<super::DynsecConfig>,
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
            mount_point: None,
            use_username_as_clientid: false,
            max_qos: 2,
            max_topic_alias: 10,
            http: HttpOptions::default(),
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
    pub(crate) fn admits(self, addr: &std::net::SocketAddr) -> bool {
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
    pub(crate) fn enabled(&self) -> bool {
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

/// The options that `per_listener_settings true` makes per listener.
pub(super) const AUTH_OPTIONS: &[&str] = &[
    "allow_anonymous",
    "password_file",
    "acl_file",
    "allow_zero_length_clientid",
    "auto_id_prefix",
];

/// The listeners of one configuration while it is read (across every file).
#[derive(Default)]
pub(super) struct Listeners {
    /// One per `listener` line, in order; the latest one is the block being read.
    blocks: Vec<ListenerConfig>,
    /// The `listener` line of each of `blocks`.
    block_at: Vec<Location>,
    /// The listener that `port` and `bind_address` configure, and that listener-scoped options
    /// before the first `listener` line apply to.
    default: ListenerConfig,
    /// True once `port` or `bind_address` enabled the default listener.
    default_enabled: bool,
    /// Where a listener-scoped option first configured the default listener.
    default_option: Option<(String, Location)>,
    /// Where the default listener was first configured (for messages about it).
    default_at: Option<Location>,
    /// `max_qos` and `max_topic_alias` lines: the listener block they are in (`None` before
    /// the first `listener` line), the option and the value.
    per_listener: Vec<(Option<usize>, &'static str, u32)>,
    /// HTTP option lines: the listener block they are in (`None`: the default listener) and
    /// where, to check once every line is read that the listener speaks WebSockets.
    http_lines: Vec<(Option<usize>, &'static str, Location)>,
}

impl Listeners {
    /// Reads a listener-scoped option (`Scope::Listener` in the option table); returns false
    /// for one it has no code for. Warnings go to `warnings`.
    pub(super) fn option(
        &mut self,
        name: &str,
        value: &str,
        at: &Location,
        warnings: &mut Vec<String>,
    ) -> Result<bool, ConfigError> {
        match name {
            "listener" => self.open(name, value, at)?,
            "port" => {
                self.default.port = parse_port(name, value, at)?;
                self.enable_default(at);
            }
            "bind_address" => {
                self.default.bind_address = Some(required(name, value, at)?.to_string());
                self.enable_default(at);
            }
            "protocol" => {
                self.current(name, at).protocol = match required(name, value, at)? {
                    "mqtt" => ListenerProtocol::Mqtt,
                    "websockets" => ListenerProtocol::WebSockets,
                    _ => return Err(invalid(name, value, at)),
                }
            }
            "certfile" | "keyfile" | "cafile" | "capath" | "crlfile" => {
                let path = Some(PathBuf::from(required(name, value, at)?));
                let tls = &mut self.current(name, at).tls;
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
                let tls = &mut self.current(name, at).tls;
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
                        warnings.push(format!(
                            "Warning: tls_version {value} in {at} is older than midge supports; \
                             TLS 1.2 is the minimum."
                        ));
                        TlsVersion::Tls12
                    }
                    _ => return Err(invalid(name, value, at)),
                };
                self.current(name, at).tls.tls_version = Some(version);
            }
            "ciphers" => {
                let list = required(name, value, at)?.to_string();
                self.current(name, at).tls.ciphers = Some(list);
            }
            "ciphers_tls1.3" => {
                let list = required(name, value, at)?.to_string();
                self.current(name, at).tls.ciphers_tls13 = Some(list);
            }
            "max_connections" => {
                let max: i64 = parse_number(name, value, at)?;
                // Any negative value means "unlimited", as in Mosquitto.
                self.current(name, at).max_connections = max.max(-1);
            }
            "socket_domain" => {
                self.current(name, at).socket_domain = Some(match required(name, value, at)? {
                    "ipv4" => SocketDomain::Ipv4,
                    "ipv6" => SocketDomain::Ipv6,
                    _ => return Err(invalid(name, value, at)),
                })
            }
            "max_qos" => {
                let q: u8 = parse_number(name, value, at)?;
                if q > 2 {
                    return Err(invalid(name, value, at));
                }
                self.record_per_listener("max_qos", q.into());
            }
            "max_topic_alias" => {
                let max: u16 = parse_number(name, value, at)?;
                self.record_per_listener("max_topic_alias", max.into());
            }
            "mount_point" => {
                let prefix = required(name, value, at)?;
                let Some(latest) = self.blocks.last_mut() else {
                    return Err(ConfigError::ListenerRequired {
                        option: name.to_string(),
                        at: at.clone(),
                    });
                };
                // The prefix becomes part of topic names, so it may hold no wildcard.
                if !crate::codec::valid_topic_name(prefix) {
                    return Err(invalid(name, value, at));
                }
                latest.mount_point = Some(prefix.to_string());
            }
            "use_username_as_clientid" => {
                self.current(name, at).use_username_as_clientid = parse_bool(name, value, at)?
            }
            "http_dir" | "metrics" | "metrics_auth" | "dashboard" => {
                let http = &mut self.current(name, at).http;
                let option = match name {
                    "http_dir" => {
                        http.dir = Some(PathBuf::from(required(name, value, at)?));
                        "http_dir"
                    }
                    "metrics" => {
                        http.metrics = parse_bool(name, value, at)?;
                        "metrics"
                    }
                    "dashboard" => {
                        http.dashboard = parse_bool(name, value, at)?;
                        "dashboard"
                    }
                    _ => {
                        http.metrics_auth = parse_bool(name, value, at)?;
                        "metrics_auth"
                    }
                };
                self.http_lines
                    .push((self.current_block(), option, at.clone()));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// With `per_listener_settings true`, the authentication options belong to the latest
    /// listener (as Mosquitto); returns false for other options.
    pub(super) fn auth_option(
        &mut self,
        name: &str,
        value: &str,
        at: &Location,
    ) -> Result<bool, ConfigError> {
        let auth = match name {
            _ if AUTH_OPTIONS.contains(&name) => &mut self.current(name, at).auth,
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
    fn open(&mut self, name: &str, value: &str, at: &Location) -> Result<(), ConfigError> {
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
        self.blocks.push(ListenerConfig {
            port,
            bind_address: address.map(str::to_string),
            ..ListenerConfig::default()
        });
        self.block_at.push(at.clone());
        Ok(())
    }

    /// `port` or `bind_address` at `at`: the default listener will be opened.
    fn enable_default(&mut self, at: &Location) {
        self.default_enabled = true;
        self.default_at.get_or_insert_with(|| at.clone());
    }

    /// The listener block an option read now belongs to (`None`: the default listener,
    /// noted as [`Listeners::current`] notes it).
    pub(super) fn current_slot(&mut self, name: &str, at: &Location) -> Option<usize> {
        self.current(name, at);
        self.current_block()
    }

    /// The authentication options of the listener in `block` (`None`: the default listener).
    pub(super) fn auth_of(&mut self, block: Option<usize>) -> Option<&mut ListenerAuth> {
        match block {
            Some(i) => self.blocks.get_mut(i).map(|l| &mut l.auth),
            None => Some(&mut self.default.auth),
        }
    }

    /// Index in `blocks` of the latest `listener` block; `None` before the first one.
    fn current_block(&self) -> Option<usize> {
        self.blocks.len().checked_sub(1)
    }

    /// The listener a listener-scoped option applies to: the latest `listener` block, or the
    /// default listener before the first one.
    fn current(&mut self, name: &str, at: &Location) -> &mut ListenerConfig {
        if let Some(latest) = self.blocks.last_mut() {
            return latest;
        }
        if self.default_option.is_none() {
            self.default_option = Some((name.to_string(), at.clone()));
        }
        self.default_at.get_or_insert_with(|| at.clone());
        &mut self.default
    }

    fn record_per_listener(&mut self, option: &'static str, value: u32) {
        self.per_listener
            .push((self.current_block(), option, value));
    }

    /// Checks that each listener's TLS options fit together.
    pub(super) fn check_tls(&self) -> Result<(), ConfigError> {
        let default = self
            .default_enabled
            .then_some(&self.default)
            .zip(self.default_at.as_ref());
        let others = self.blocks.iter().zip(&self.block_at);
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

    /// Checks that each listener given an HTTP option speaks WebSockets (`protocol` may come
    /// after the option in its block).
    pub(super) fn check_http(&self) -> Result<(), ConfigError> {
        for (block, option, at) in &self.http_lines {
            let listener = match block {
                Some(i) => self.blocks.get(*i),
                None => Some(&self.default),
            };
            if listener.is_some_and(|l| l.protocol != ListenerProtocol::WebSockets) {
                return Err(ConfigError::NeedsWebSockets {
                    option: option.to_string(),
                    at: at.clone(),
                });
            }
        }
        Ok(())
    }

    /// The last `option` line (`max_qos` or `max_topic_alias`) in `block` (`None`: before
    /// the first `listener` line).
    fn last_in(&self, block: Option<usize>, option: &str) -> Option<u32> {
        self.per_listener
            .iter()
            .rev()
            .find(|(b, name, _)| *b == block && *name == option)
            .map(|(_, _, value)| *value)
    }

    /// The value of `option` (`max_qos` or `max_topic_alias`) for each listener, by block
    /// (`None`: the default listener): the last value in its block, else, for a `listener`
    /// block, the last one before the first `listener` line when no `port` or `bind_address`
    /// made that one the default listener's own (so a value written at the top of the file
    /// still applies to every listener), else `None` (the option's default).
    fn per_listener_value(&self, block: Option<usize>, option: &str) -> Option<u32> {
        let own = self.last_in(block, option);
        match block {
            Some(_) if !self.default_enabled => own.or_else(|| self.last_in(None, option)),
            _ => own,
        }
    }

    /// Puts each listener's `max_qos` and `max_topic_alias` in place; the values were
    /// range-checked when read.
    fn settle_per_listener(&mut self) {
        let blocks = std::iter::once(None).chain((0..self.blocks.len()).map(Some));
        for block in blocks {
            let max_qos = self.per_listener_value(block, "max_qos");
            let max_topic_alias = self.per_listener_value(block, "max_topic_alias");
            let listener = match block {
                Some(i) => &mut self.blocks[i],
                None => &mut self.default,
            };
            if let Some(q) = max_qos.and_then(|q| u8::try_from(q).ok()) {
                listener.max_qos = q;
            }
            if let Some(n) = max_topic_alias.and_then(|n| u16::try_from(n).ok()) {
                listener.max_topic_alias = n;
            }
        }
    }

    /// The configured listeners, the default one first (as Mosquitto opens it first). A
    /// warning goes to `warnings` when listener options were written for a default listener
    /// that `port` or `bind_address` never enabled.
    pub(super) fn into_listeners(mut self, warnings: &mut Vec<String>) -> Vec<ListenerConfig> {
        self.settle_per_listener();
        let mut listeners = self.blocks;
        if self.default_enabled {
            listeners.insert(0, self.default);
        } else if let Some((option, at)) = self.default_option {
            warnings.push(format!(
                "Warning: The {option} option in {at} comes before any listener line and no \
                 port or bind_address enables the default listener; ignored."
            ));
        }
        listeners
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{err, ok, parse};
    use crate::config::ConfigError;

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
    fn http_options_belong_to_a_websockets_listener() {
        let c = ok(
            "listener 1883\nlistener 8080\nhttp_dir /srv/www\nmetrics true\n\
                    metrics_auth false\nprotocol websockets",
        );
        assert!(!c.listeners[0].http.serves());
        let http = &c.listeners[1].http;
        assert_eq!(http.dir.as_deref(), Some(std::path::Path::new("/srv/www")));
        assert!(http.metrics && !http.metrics_auth);
        // Off unless asked for; credentials wanted unless switched off.
        assert_eq!(
            ok("listener 8080\nprotocol websockets").listeners[0].http,
            HttpOptions::default()
        );
        assert!(HttpOptions::default().metrics_auth);
        assert_eq!(
            err("listener 8080\nprotocol websockets\nlistener 1883\nmetrics true"),
            "Error: The metrics option serves HTTP, which only a listener with `protocol \
             websockets` answers.\nError found at /etc/midge.conf:4."
        );
        assert!(parse("listener 8080\nprotocol websockets\nmetrics yes").is_err());
        let dashboard = ok("listener 8080\nprotocol websockets\ndashboard true");
        assert!(dashboard.listeners[0].http.dashboard && dashboard.listeners[0].http.serves());
        assert!(err("listener 1883\ndashboard true").contains("The dashboard option serves HTTP"));
        assert!(parse("listener 8080\nprotocol websockets\ndashboard on").is_err());
        assert!(parse("listener 8080\nprotocol websockets\nhttp_dir").is_err());
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
    fn max_qos_and_max_topic_alias_are_per_listener() {
        let qos_alias = |c: &crate::config::Config| -> Vec<(u8, u16)> {
            c.listeners
                .iter()
                .map(|l| (l.max_qos, l.max_topic_alias))
                .collect()
        };
        // Written before the first `listener` line, they apply to every listener that sets
        // none of its own.
        let c = ok("max_qos 1\nlistener 1\nlistener 2\nmax_qos 0");
        assert_eq!(qos_alias(&c), [(1, 10), (0, 10)]);
        let c = ok("listener 1\nmax_qos 1\nmax_topic_alias 5\nlistener 2");
        assert_eq!(qos_alias(&c), [(1, 5), (2, 10)]);
        // With `port`, lines before the first `listener` are the default listener's own.
        let c = ok("port 1\nmax_topic_alias 3\nlistener 2");
        assert_eq!(qos_alias(&c), [(2, 3), (2, 10)]);
        assert_eq!(
            err("max_qos 7"),
            "Error: Invalid max_qos value (7).\nError found at /etc/midge.conf:1."
        );
    }

    #[test]
    fn mount_point_and_use_username_as_clientid_belong_to_their_listener() {
        let c = ok("listener 1\nmount_point tenant1/\nuse_username_as_clientid true\nlistener 2");
        assert_eq!(c.listeners[0].mount_point.as_deref(), Some("tenant1/"));
        assert!(c.listeners[0].use_username_as_clientid);
        assert_eq!(c.listeners[1].mount_point, None);
        assert!(!c.listeners[1].use_username_as_clientid);
        // As Mosquitto: a mount point needs a `listener` line, and no wildcard.
        assert_eq!(
            err("port 1883\nmount_point a/"),
            "Error: You must create a listener before using the mount_point option in the \
             configuration file.\nError found at /etc/midge.conf:2."
        );
        assert_eq!(
            err("listener 1\nmount_point a/+/"),
            "Error: Invalid mount_point value (a/+/).\nError found at /etc/midge.conf:2."
        );
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
}
