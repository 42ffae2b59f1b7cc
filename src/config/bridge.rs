//! Bridge blocks of the config: `connection NAME` followed by its options, as in Mosquitto.
//!
//! A bridge is midge acting as a client of another broker: it subscribes there to the `in`
//! topics and forwards them here, and subscribes here to the `out` topics and forwards them
//! there. `topic PATTERN [in|out|both] [QOS] [LOCAL_PREFIX] [REMOTE_PREFIX]` lines say which,
//! with optional prefixes to remap topics between the two trees.
//!
//! TLS to the remote follows Mosquitto too: `bridge_cafile` or `bridge_capath` turns it on.
//! Only the paths are kept here; the server reads the files when it starts
//! (`crate::transport::tls_client`).

use super::parse::{invalid, parse_bool, parse_number, required, ConfigError, Location};
use super::{TlsVersion, DEFAULT_PORT};
use std::path::PathBuf;
use std::time::Duration;

/// Which way a bridged topic flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From this broker to the remote one (Mosquitto's default).
    Out,
    /// From the remote broker to this one.
    In,
    /// Both ways.
    Both,
}

/// One `topic` line of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    /// The pattern (may be empty when both prefixes are set: a single topic remapped).
    pub pattern: String,
    pub direction: Direction,
    pub qos: u8,
    pub local_prefix: String,
    pub remote_prefix: String,
}

impl BridgeTopic {
    /// The filter subscribed on this broker for an `out` topic.
    pub(crate) fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The filter subscribed on the remote broker for an `in` topic.
    pub(crate) fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }
}

/// When a bridge connects (`start_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartType {
    /// At start-up, and again after the back-off whenever the link drops (the default).
    Automatic,
    /// Whenever `threshold` messages wait for the remote (not at start-up, as in Mosquitto);
    /// the link is closed after `idle_timeout` seconds with nothing sent.
    Lazy,
    /// At start-up only: a link that fails or drops is not tried again.
    Once,
}

/// MQTT version a bridge speaks to its remote broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeProtocol {
    Mqtt31,
    Mqtt311,
    Mqtt5,
}

/// TLS towards the remote broker, as Mosquitto's `bridge_*` options name it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeTls {
    /// `bridge_cafile`: CA certificates (PEM) the remote's certificate must chain to.
    pub cafile: Option<PathBuf>,
    /// `bridge_capath`: a directory of CA certificates (PEM files).
    pub capath: Option<PathBuf>,
    /// `bridge_certfile`: our client certificate chain (PEM), for remotes that require one.
    pub certfile: Option<PathBuf>,
    /// `bridge_keyfile`: the key of `bridge_certfile` (PEM).
    pub keyfile: Option<PathBuf>,
    /// `bridge_insecure`: do not check the remote certificate's name against the host in
    /// `address` (the chain is still checked).
    pub insecure: bool,
    /// `bridge_tls_version`: the lowest TLS version offered; `None` offers 1.2 and 1.3.
    pub version: Option<TlsVersion>,
    /// `bridge_alpn`: the application protocol announced with ALPN.
    pub alpn: Option<String>,
}

impl BridgeTls {
    /// True when the bridge speaks TLS: a CA to check the remote against is configured.
    pub(crate) fn enabled(&self) -> bool {
        self.cafile.is_some() || self.capath.is_some()
    }
}

/// One `connection` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConfig {
    pub name: String,
    /// `address` / `addresses`: host and port (default 1883), tried in turn.
    pub addresses: Vec<(String, u16)>,
    pub topics: Vec<BridgeTopic>,
    /// `remote_clientid` (default `HOSTNAME.NAME`: what Mosquitto's code sends, whatever its
    /// man page says, so a remote broker keeps the session of a bridge moved to midge).
    pub remote_clientid: Option<String>,
    /// `local_clientid`: the client id of the bridge's session on this broker (default
    /// `local.` and the remote client id, as Mosquitto).
    pub local_clientid: Option<String>,
    /// `local_cleansession` (default: `cleansession`): false keeps the local session, and the
    /// messages it holds for the remote, across restarts of this broker.
    pub local_clean_session: Option<bool>,
    /// `round_robin` (default false: the first address is the main one, tried again every
    /// few seconds while the link uses another).
    pub round_robin: bool,
    /// `start_type` (default automatic).
    pub start_type: StartType,
    /// `threshold`: messages waiting for the remote that start a lazy bridge (default 10).
    pub threshold: usize,
    /// `idle_timeout`: seconds with nothing sent after which a lazy bridge stops (default 60).
    pub idle_timeout: Duration,
    /// `bridge_attempt_unsubscribe` (default true): on connect, unsubscribe on the remote
    /// from each `out` topic, in case an earlier configuration subscribed to it there.
    pub attempt_unsubscribe: bool,
    /// `notifications_local_only` (default false): the state notifications stay on this
    /// broker; the remote gets neither the `1` nor the will.
    pub notifications_local_only: bool,
    /// `bridge_max_packet_size`: the largest packet sent to the remote, 0 for no limit (an
    /// MQTT 5 remote's own Maximum Packet Size applies too, the smaller one winning).
    pub max_packet_size: u32,
    pub remote_username: Option<String>,
    pub remote_password: Option<String>,
    /// `cleansession` (default false: the remote keeps our subscriptions and queue).
    pub clean_session: bool,
    /// `keepalive_interval` seconds (default 60, at least 5).
    pub keepalive: u16,
    /// `restart_timeout BASE [CAP]`: reconnect back-off in seconds (default 5, cap 30).
    pub restart_base: Duration,
    pub restart_cap: Duration,
    /// `try_private` (default true): announce ourselves as a bridge (protocol level | 0x80).
    pub try_private: bool,
    /// `notifications` (default true): retained 1/0 on the notification topic.
    pub notifications: bool,
    /// `notification_topic` (default `$SYS/broker/connection/REMOTE_CLIENTID/state`).
    pub notification_topic: Option<String>,
    pub protocol: BridgeProtocol,
    /// `bridge_outgoing_retain` (default true): keep the retain flag on forwarded messages.
    pub outgoing_retain: bool,
    /// TLS to the remote (off unless a CA is configured).
    pub tls: BridgeTls,
}

impl BridgeConfig {
    /// A bridge named `name` with Mosquitto's defaults.
    pub(crate) fn new(name: &str) -> BridgeConfig {
        BridgeConfig {
            name: name.to_string(),
            addresses: Vec::new(),
            topics: Vec::new(),
            remote_clientid: None,
            local_clientid: None,
            local_clean_session: None,
            round_robin: false,
            start_type: StartType::Automatic,
            threshold: 10,
            idle_timeout: Duration::from_secs(60),
            attempt_unsubscribe: true,
            notifications_local_only: false,
            max_packet_size: 0,
            remote_username: None,
            remote_password: None,
            clean_session: false,
            keepalive: 60,
            restart_base: Duration::from_secs(5),
            restart_cap: Duration::from_secs(30),
            try_private: true,
            notifications: true,
            notification_topic: None,
            protocol: BridgeProtocol::Mqtt311,
            outgoing_retain: true,
            tls: BridgeTls::default(),
        }
    }

    /// The client id used on the remote broker: `HOSTNAME.NAME` unless configured.
    pub(crate) fn client_id(&self) -> String {
        self.remote_clientid
            .clone()
            .unwrap_or_else(|| format!("{}.{}", hostname(), self.name))
    }

    /// The client id of the bridge's session on this broker: `local.` and the remote one
    /// unless configured.
    pub(crate) fn local_client_id(&self) -> String {
        self.local_clientid
            .clone()
            .unwrap_or_else(|| format!("local.{}", self.client_id()))
    }

    /// True when the local session starts empty at each start (`local_cleansession`).
    pub(crate) fn local_clean(&self) -> bool {
        self.local_clean_session.unwrap_or(self.clean_session)
    }

    /// The topic carrying the bridge's state, 1 (up) or 0 (down).
    pub(crate) fn state_topic(&self) -> String {
        self.notification_topic
            .clone()
            .unwrap_or_else(|| format!("$SYS/broker/connection/{}/state", self.client_id()))
    }
}

/// The host name as `gethostname` gives it (the kernel's node name), which Mosquitto puts in
/// a bridge's default client id.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The local client id two bridges share, if any: Mosquitto refuses such a configuration,
/// since the second bridge would take the first one's session.
pub(super) fn duplicate_local_id(bridges: &[BridgeConfig]) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    bridges
        .iter()
        .map(BridgeConfig::local_client_id)
        .find(|id| !seen.insert(id.clone()))
}

fn address(value: &str, at: &Location, name: &str) -> Result<(String, u16), ConfigError> {
    // host[:port]; an IPv6 address needs the port to disambiguate (as Mosquitto says).
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.ends_with(':') => {
            let port: u16 = port.parse().map_err(|_| invalid(name, value, at))?;
            Ok((host.trim_matches(['[', ']']).to_string(), port))
        }
        _ => Ok((value.to_string(), DEFAULT_PORT)),
    }
}

fn prefix(token: &str) -> String {
    if token == "\"\"" {
        String::new()
    } else {
        token.to_string()
    }
}

fn topic(value: &str, at: &Location) -> Result<BridgeTopic, ConfigError> {
    let bad = || invalid("topic", value, at);
    let tokens: Vec<&str> = value.split_whitespace().collect();
    let (pattern, rest) = tokens.split_first().ok_or_else(bad)?;
    let mut t = BridgeTopic {
        pattern: prefix(pattern),
        direction: Direction::Out,
        qos: 0,
        local_prefix: String::new(),
        remote_prefix: String::new(),
    };
    if let Some(d) = rest.first() {
        t.direction = match *d {
            "out" => Direction::Out,
            "in" => Direction::In,
            "both" => Direction::Both,
            _ => return Err(bad()),
        };
    }
    if let Some(q) = rest.get(1) {
        t.qos = q.parse().ok().filter(|q| *q <= 2).ok_or_else(bad)?;
    }
    if let Some(l) = rest.get(2) {
        t.local_prefix = prefix(l);
    }
    if let Some(r) = rest.get(3) {
        t.remote_prefix = prefix(r);
    }
    if rest.len() > 4 {
        return Err(bad());
    }
    // An empty pattern only remaps one topic, and needs both prefixes (Mosquitto's table).
    if t.pattern.is_empty() && (t.local_prefix.is_empty() || t.remote_prefix.is_empty()) {
        return Err(bad());
    }
    Ok(t)
}

/// Applies a bridge option to `b`; `Ok(false)` when `name` is not a bridge option.
pub(super) fn apply(
    b: &mut BridgeConfig,
    name: &str,
    value: &str,
    at: &Location,
    warnings: &mut Vec<String>,
) -> Result<bool, ConfigError> {
    match name {
        "address" | "addresses" => {
            for a in required(name, value, at)?.split_whitespace() {
                b.addresses.push(address(a, at, name)?);
            }
        }
        "topic" => b.topics.push(topic(required(name, value, at)?, at)?),
        "remote_clientid" | "clientid" => {
            b.remote_clientid = Some(required(name, value, at)?.to_string())
        }
        "remote_username" | "username" => {
            b.remote_username = Some(required(name, value, at)?.to_string())
        }
        "remote_password" | "password" => {
            b.remote_password = Some(required(name, value, at)?.to_string())
        }
        "cleansession" => b.clean_session = parse_bool(name, value, at)?,
        "keepalive_interval" => {
            let k: u16 = parse_number(name, value, at)?;
            b.keepalive = k.max(5);
        }
        "restart_timeout" => {
            let mut parts = required(name, value, at)?.split_whitespace();
            let base: u64 = parse_number(name, parts.next().unwrap_or(""), at)?;
            let cap: u64 = match parts.next() {
                Some(c) => parse_number(name, c, at)?,
                None => base,
            };
            b.restart_base = Duration::from_secs(base.max(1));
            b.restart_cap = Duration::from_secs(cap.max(base).max(1));
        }
        "local_clientid" => b.local_clientid = Some(required(name, value, at)?.to_string()),
        "local_cleansession" => b.local_clean_session = Some(parse_bool(name, value, at)?),
        "round_robin" => b.round_robin = parse_bool(name, value, at)?,
        "start_type" => {
            b.start_type = match required(name, value, at)? {
                "automatic" => StartType::Automatic,
                "lazy" => StartType::Lazy,
                "once" => StartType::Once,
                // Mosquitto refuses `manual` too.
                _ => return Err(invalid(name, value, at)),
            }
        }
        "threshold" => b.threshold = parse_number::<usize>(name, value, at)?.max(1),
        "idle_timeout" => {
            b.idle_timeout = Duration::from_secs(parse_number::<u64>(name, value, at)?.max(1))
        }
        "bridge_attempt_unsubscribe" => b.attempt_unsubscribe = parse_bool(name, value, at)?,
        "notifications_local_only" => b.notifications_local_only = parse_bool(name, value, at)?,
        "bridge_max_packet_size" => b.max_packet_size = parse_number(name, value, at)?,
        "try_private" => b.try_private = parse_bool(name, value, at)?,
        "notifications" => b.notifications = parse_bool(name, value, at)?,
        "notification_topic" => b.notification_topic = Some(required(name, value, at)?.to_string()),
        "bridge_protocol_version" => {
            b.protocol = match required(name, value, at)? {
                "mqttv31" => BridgeProtocol::Mqtt31,
                "mqttv311" => BridgeProtocol::Mqtt311,
                "mqttv50" => BridgeProtocol::Mqtt5,
                _ => return Err(invalid(name, value, at)),
            }
        }
        "bridge_outgoing_retain" => b.outgoing_retain = parse_bool(name, value, at)?,
        "bridge_cafile" | "bridge_capath" | "bridge_certfile" | "bridge_keyfile" => {
            let path = Some(PathBuf::from(required(name, value, at)?));
            match name {
                "bridge_cafile" => b.tls.cafile = path,
                "bridge_capath" => b.tls.capath = path,
                "bridge_certfile" => b.tls.certfile = path,
                _ => b.tls.keyfile = path,
            }
        }
        "bridge_insecure" => b.tls.insecure = parse_bool(name, value, at)?,
        "bridge_tls_version" => {
            b.tls.version = Some(match required(name, value, at)? {
                "tlsv1.3" => TlsVersion::Tls13,
                "tlsv1.2" => TlsVersion::Tls12,
                "tlsv1.1" | "tlsv1" => {
                    // rustls does not speak TLS 1.1 or 1.0; 1.2 is the oldest it offers.
                    warnings.push(format!(
                        "Warning: bridge_tls_version {value} in {at} is older than midge \
                         supports; TLS 1.2 is the minimum."
                    ));
                    TlsVersion::Tls12
                }
                _ => return Err(invalid(name, value, at)),
            })
        }
        "bridge_alpn" => b.tls.alpn = Some(required(name, value, at)?.to_string()),
        _ => return Ok(false),
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{ok, parse};
    use std::path::PathBuf;

    fn at() -> Location {
        Location {
            file: PathBuf::from("/etc/midge.conf"),
            line: 1,
        }
    }

    #[test]
    fn topic_lines_follow_mosquitto_syntax() {
        let t = topic("# both 2 local/topic/ remote/topic/", &at()).unwrap();
        assert_eq!(t.direction, Direction::Both);
        assert_eq!(t.qos, 2);
        assert_eq!(t.local_filter(), "local/topic/#");
        assert_eq!(t.remote_filter(), "remote/topic/#");
        let t = topic("sensors/#", &at()).unwrap();
        assert_eq!((t.direction, t.qos), (Direction::Out, 0));
        let t = topic("\"\" in 1 here/one there/one", &at()).unwrap();
        assert_eq!(
            (t.local_filter(), t.remote_filter()),
            ("here/one".into(), "there/one".into())
        );
        assert!(topic("\"\" in 1 here/one \"\"", &at()).is_err());
        assert!(topic("a sideways", &at()).is_err());
        assert!(topic("a in 3", &at()).is_err());
    }

    #[test]
    fn addresses_take_an_optional_port() {
        let mut b = BridgeConfig::new("b");
        let mut w = Vec::new();
        apply(&mut b, "address", "hub.local:1884 10.0.0.2", &at(), &mut w).unwrap();
        assert_eq!(
            b.addresses,
            vec![("hub.local".into(), 1884), ("10.0.0.2".into(), 1883)]
        );
        apply(&mut b, "restart_timeout", "2 10", &at(), &mut w).unwrap();
        assert_eq!((b.restart_base.as_secs(), b.restart_cap.as_secs()), (2, 10));
        assert!(!apply(&mut b, "listener", "1", &at(), &mut w).unwrap());
    }

    #[test]
    fn tls_options_are_kept_and_a_ca_turns_tls_on() {
        let mut b = BridgeConfig::new("b");
        let mut w = Vec::new();
        assert!(!b.tls.enabled());
        for (name, value) in [
            ("bridge_certfile", "/c/client.pem"),
            ("bridge_keyfile", "/c/client.key"),
            ("bridge_insecure", "true"),
            ("bridge_tls_version", "tlsv1.3"),
            ("bridge_alpn", "mqtt"),
        ] {
            assert!(apply(&mut b, name, value, &at(), &mut w).unwrap(), "{name}");
        }
        assert!(!b.tls.enabled(), "only a CA turns TLS on, as in Mosquitto");
        apply(&mut b, "bridge_capath", "/etc/ssl/certs", &at(), &mut w).unwrap();
        assert!(b.tls.enabled());
        let want = BridgeTls {
            cafile: None,
            capath: Some("/etc/ssl/certs".into()),
            certfile: Some("/c/client.pem".into()),
            keyfile: Some("/c/client.key".into()),
            insecure: true,
            version: Some(TlsVersion::Tls13),
            alpn: Some("mqtt".into()),
        };
        assert_eq!(b.tls, want);
        assert!(w.is_empty(), "{w:?}");
        apply(&mut b, "bridge_tls_version", "tlsv1.1", &at(), &mut w).unwrap();
        assert_eq!(b.tls.version, Some(TlsVersion::Tls12));
        assert_eq!(w.len(), 1);
        assert!(apply(&mut b, "bridge_tls_version", "sslv3", &at(), &mut w).is_err());
        assert!(apply(&mut b, "bridge_insecure", "maybe", &at(), &mut w).is_err());
        assert!(apply(&mut b, "bridge_cafile", "", &at(), &mut w).is_err());
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
    fn default_client_ids_are_mosquittos_hostname_dot_name_and_local_dot_that() {
        let c = ok("connection hub\naddress h\nconnection two\naddress h\nremote_clientid r2");
        let host = hostname();
        assert_eq!(c.bridges[0].client_id(), format!("{host}.hub"));
        assert_eq!(c.bridges[0].local_client_id(), format!("local.{host}.hub"));
        assert_eq!(c.bridges[1].local_client_id(), "local.r2");
        assert!(matches!(
            parse("connection a\naddress h\nremote_clientid x\nconnection b\naddress h\nlocal_clientid local.x"),
            Err(ConfigError::BridgeIdNotUnique { id }) if id == "local.x"
        ));
    }

    #[test]
    fn start_and_link_options_are_read() {
        let c = ok(
            "connection b\naddress h\nstart_type lazy\nthreshold 0\nidle_timeout 7\n\
                    round_robin true\nlocal_cleansession true\nbridge_attempt_unsubscribe false\n\
                    notifications_local_only true\nbridge_max_packet_size 500",
        );
        let b = &c.bridges[0];
        assert_eq!(b.start_type, StartType::Lazy);
        assert_eq!(b.threshold, 1, "at least one message, as Mosquitto");
        assert_eq!(b.idle_timeout, Duration::from_secs(7));
        assert!(b.round_robin && b.local_clean() && !b.attempt_unsubscribe);
        assert!(b.notifications_local_only);
        assert_eq!(b.max_packet_size, 500);
        let d = ok("connection b\naddress h\ncleansession true");
        assert!(
            d.bridges[0].local_clean(),
            "local_cleansession follows cleansession"
        );
        assert_eq!(d.bridges[0].start_type, StartType::Automatic);
        assert!(parse("connection b\nstart_type manual").is_err());
    }
}
