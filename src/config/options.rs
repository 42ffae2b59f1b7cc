//! Every option midge reads, with what it does with it: the one list the parser, the docs
//! (`docs/options.md`) and the tests (`tests/e2e/options.rs`) are held to.
//!
//! The list covers every option of mosquitto.conf(5) of Mosquitto 2.0.20, the few Mosquitto
//! accepts without documenting them, and midge's own. Each falls in exactly one [`Class`]. The
//! parser looks a name up here first: a name not listed is fatal, as in Mosquitto, and a
//! [`Class::Refused`] option stops start-up with its note as the reason. So no option is ever
//! read and then silently ignored.

/// What midge does with an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Implemented with Mosquitto's meaning.
    Implemented,
    /// midge's own meaning, a deliberate and safe deviation explained in the note.
    OwnMeaning,
    /// Accepted, with no effect and no safety impact; the note says why.
    NoEffect,
    /// Start-up fails, naming the file, the line and the reason in the note; the values in
    /// [`OptionInfo::accepts`] (the harmless ones) are still accepted.
    Refused,
}

impl Class {
    /// The name used in messages and in the docs.
    pub fn label(self) -> &'static str {
        match self {
            Class::Implemented => "implemented",
            Class::OwnMeaning => "own meaning",
            Class::NoEffect => "no effect",
            Class::Refused => "refused",
        }
    }
}

/// Where an option may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Anywhere; applies to the whole broker (or to every listener).
    General,
    /// Applies to the latest `listener` block (or the default listener before the first).
    Listener,
    /// Only inside a `connection` block.
    Bridge,
}

/// Where an option comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Documented in mosquitto.conf(5) of Mosquitto 2.0.20.
    ManPage,
    /// Accepted by Mosquitto 2.0.20's parser but not in its man page (old names, aliases).
    Mosquitto,
    /// midge's own option.
    Midge,
}

/// One option.
#[derive(Debug)]
pub struct OptionInfo {
    /// The name; a name ending in `*` stands for every option starting with what precedes it.
    pub name: &'static str,
    pub scope: Scope,
    pub class: Class,
    pub origin: Origin,
    /// For a refused option: the values that are still accepted because they ask for what
    /// midge does anyway (such as `false` for an option that is off by default).
    pub accepts: &'static [&'static str],
    /// Why the option has its class; for a refused option, the reason start-up fails.
    pub note: &'static str,
}

impl OptionInfo {
    /// True when `name` is this option (or starts with its prefix, for `plugin_opt_*`).
    pub(super) fn matches(&self, name: &str) -> bool {
        match self.name.strip_suffix('*') {
            Some(prefix) => name.len() > prefix.len() && name.starts_with(prefix),
            None => self.name == name,
        }
    }
}

/// The option named `name`, if midge knows it.
pub(super) fn lookup(name: &str) -> Option<&'static OptionInfo> {
    OPTIONS.iter().find(|o| o.matches(name))
}

const fn opt(
    name: &'static str,
    scope: Scope,
    class: Class,
    origin: Origin,
    note: &'static str,
) -> OptionInfo {
    OptionInfo {
        name,
        scope,
        class,
        origin,
        accepts: &[],
        note,
    }
}

/// A refused option that still accepts `accepts` (its harmless values).
const fn refused_except(
    name: &'static str,
    scope: Scope,
    accepts: &'static [&'static str],
    note: &'static str,
) -> OptionInfo {
    OptionInfo {
        name,
        scope,
        class: Class::Refused,
        origin: Origin::ManPage,
        accepts,
        note,
    }
}

use Class::{Implemented, NoEffect, OwnMeaning, Refused};
use Origin::{ManPage, Midge, Mosquitto};
use Scope::{Bridge, General, Listener};

/// Every option midge knows, in the order of mosquitto.conf(5)'s sections (one line each, so
/// the table reads as a table).
#[rustfmt::skip]
pub const OPTIONS: &[OptionInfo] = &[
    // General options.
    opt("acl_file", General, Implemented, ManPage, "Reloaded on SIGHUP."),
    opt("allow_anonymous", General, Implemented, ManPage, "Defaults to true only in local-only mode, as Mosquitto 2."),
    opt("allow_duplicate_messages", General, NoEffect, ManPage, "Deprecated in Mosquitto 2.0, which behaves as `true` whatever the value."),
    opt("allow_zero_length_clientid", General, Implemented, ManPage, ""),
    opt("auth_plugin_deny_special_chars", General, NoEffect, ManPage, "Only concerns plugins of Mosquitto's old plugin interface, which midge refuses; the dynamic security plugin is not one."),
    opt("auto_id_prefix", General, Implemented, ManPage, ""),
    opt("autosave_interval", General, OwnMeaning, ManPage, "Superseded: midge stores every change as it happens and fsyncs every `persistence_sync_interval`; a warning says so."),
    opt("autosave_on_changes", General, OwnMeaning, ManPage, "As `autosave_interval`."),
    opt("check_retain_source", General, Implemented, ManPage, "Default true: a retained message goes to a new subscriber only while its publisher (client id, username, listener, kept in the store with the message) may still publish to its topic under the current ACL. Retained wills too."),
    opt("clientid_prefixes", General, Implemented, ManPage, "A client id (a generated one too) without the prefix is refused with CONNACK 5 (v5 0x87), as Mosquitto."),
    opt("connection_messages", General, Implemented, ManPage, ""),
    opt("include_dir", General, Implemented, ManPage, "Only in the main file, as Mosquitto; files are read in byte order of their names."),
    opt("log_dest", General, Implemented, ManPage, "`stdout`, `stderr`, `file`, `syslog` (ident `midge`) and `none`; `topic` and `dlt` are refused."),
    opt("log_facility", General, Implemented, ManPage, "0 to 7 select LOG_LOCAL0 to LOG_LOCAL7 for `log_dest syslog`."),
    opt("log_timestamp", General, Implemented, ManPage, ""),
    opt("log_timestamp_format", General, Implemented, ManPage, ""),
    opt("log_type", General, Implemented, ManPage, ""),
    opt("max_inflight_bytes", General, Implemented, ManPage, "Payload bytes of outgoing QoS 1 and 2 messages in flight per client; one message is always let through, more wait in the queue."),
    opt("max_inflight_messages", General, Implemented, ManPage, ""),
    opt("max_keepalive", General, Implemented, ManPage, ""),
    opt("max_packet_size", General, Implemented, ManPage, ""),
    opt("max_queued_bytes", General, Implemented, ManPage, "Counts the whole queue, also its part in the store only (docs/store.md, \"Long queues\"); a bridge's queue too. 0: unlimited."),
    opt("max_queued_messages", General, Implemented, ManPage, "Counts the whole queue, also its part in the store only (docs/store.md, \"Long queues\"); a bridge's queue too. 0: unlimited."),
    opt("memory_limit", General, OwnMeaning, ManPage, "Back-pressure: past the limit midge stops reading from publishers (TCP holds them back) instead of refusing messages, so nothing accepted is dropped."),
    opt("message_size_limit", General, Implemented, ManPage, ""),
    opt("password_file", General, Implemented, ManPage, "Reloaded on SIGHUP."),
    opt("per_listener_settings", General, Implemented, ManPage, "Makes `allow_anonymous`, `password_file`, `acl_file`, `allow_zero_length_clientid`, `auto_id_prefix` and the dynamic security `plugin` per listener (`psk_file`, the other one Mosquitto scopes so, is refused); it must come before them, as in Mosquitto."),
    opt("persistence", General, Implemented, ManPage, "The store is SQLite (`midge.db`), not Mosquitto's file."),
    opt("persistence_file", General, Implemented, ManPage, "The store's name in `persistence_location` (default `midge.db`; read at start). Mosquitto's file is never written: `mosquitto.db`, or a file with Mosquitto's signature, gets `midge.db` beside it, with a warning, and is imported (read-only) when the store is new."),
    opt("persistence_location", General, Implemented, ManPage, "Also where a new store looks for Mosquitto's database (`mosquitto.db`, or `persistence_file` when it is one) to import its retained messages and persistent sessions, once."),
    opt("persistent_client_expiration", General, Implemented, ManPage, ""),
    opt("pid_file", General, Implemented, ManPage, ""),
    opt("plugin", General, Implemented, ManPage, "Only Mosquitto's dynamic security plugin (a path whose file name is `mosquitto_dynamic_security.so`), which midge has built in: same JSON file, same `$CONTROL/dynamic-security/v1` API (docs/dynsec.md). Broker-wide, or per listener with `per_listener_settings`. Any other plugin is refused, naming the built-in alternatives. Read at start (a SIGHUP does not change it, as in Mosquitto)."),
    opt("plugin_opt_*", General, Implemented, ManPage, "Options of the latest `plugin` line. The dynamic security plugin has one, `plugin_opt_config_file`, which it requires: a missing, unreadable or invalid file stops start-up (Mosquitto runs without the plugin when the option is missing). Any other `plugin_opt_*`, or one without a plugin, is refused."),
    opt("psk_file", General, Refused, ManPage, "rustls has no TLS-PSK."),
    opt("queue_qos0_messages", General, Implemented, ManPage, ""),
    opt("retain_available", General, Implemented, ManPage, ""),
    opt("set_tcp_nodelay", General, OwnMeaning, ManPage, "Default true (Mosquitto: false): midge writes each loop turn's output in one call, so Nagle's algorithm only adds delay."),
    opt("sys_interval", General, Implemented, ManPage, ""),
    opt("upgrade_outgoing_qos", General, Implemented, ManPage, ""),
    opt("user", General, Implemented, ManPage, "When started as root, midge switches to this user right after reading the config, before opening the pid file, log files, store and listeners, as Mosquitto 2.0; default `mosquitto` (`nobody` with Mosquitto's warning if it does not exist); `root` keeps root."),
    // Listeners.
    opt("bind_address", Listener, Implemented, ManPage, "The default listener's address."),
    opt("bind_interface", Listener, Refused, ManPage, "midge cannot bind to an interface yet; ignoring it would listen on every interface."),
    opt("http_dir", Listener, Implemented, ManPage, "On `protocol websockets` listeners only (elsewhere start-up stops). GET and HEAD; `/` is `index.html`; no directory listings; nothing outside the directory (symbolic links leading out: 403); files up to 4 MiB; a content type from the file's extension. midge's built-in pages (`/metrics`, `/dashboard/...`) win over files of the same name."),
    opt("listener", Listener, Implemented, ManPage, "Unix socket listeners (`listener 0 PATH`) are refused."),
    opt("max_connections", Listener, Implemented, ManPage, ""),
    opt("max_qos", Listener, Implemented, ManPage, "Per listener; a value before the first `listener` line applies to every listener that sets none, unless `port` or `bind_address` makes it the default listener's."),
    opt("max_topic_alias", Listener, Implemented, ManPage, "Per listener, as `max_qos`."),
    opt("mount_point", Listener, Implemented, ManPage, "Only in a `listener` block, as Mosquitto. Shared subscriptions keep working (`$share/g/f` becomes `$share/g/MOUNTf`) and UNSUBSCRIBE is mounted too, where Mosquitto mounts neither."),
    opt("port", Listener, Implemented, ManPage, "The default listener's port."),
    opt("protocol", Listener, Implemented, ManPage, "`mqtt` and `websockets`."),
    opt("socket_domain", Listener, Implemented, ManPage, "`ipv4` or `ipv6`: the listener binds only that family."),
    opt("use_username_as_clientid", Listener, Implemented, ManPage, "A client without a username (or certificate identity) is refused with CONNACK 5 (v5 0x87), as Mosquitto."),
    opt("websockets_headers_size", General, NoEffect, ManPage, "A libwebsockets buffer size; midge's WebSocket handshake accepts requests up to 16 KiB."),
    opt("websockets_log_level", General, NoEffect, ManPage, "libwebsockets' own debug output; midge logs WebSocket events under `log_type websockets`."),
    // Listener TLS.
    opt("cafile", Listener, Implemented, ManPage, ""),
    opt("capath", Listener, Implemented, ManPage, ""),
    opt("certfile", Listener, Implemented, ManPage, "Reloaded on SIGHUP. Holding only the server certificate, it is sent with its issuers from `cafile`/`capath`, as Mosquitto (OpenSSL) does."),
    opt("ciphers", Listener, Implemented, ManPage, "Suites rustls offers."),
    opt("ciphers_tls1.3", Listener, Implemented, ManPage, "Suites rustls offers."),
    opt("crlfile", Listener, Implemented, ManPage, ""),
    opt("dhparamfile", Listener, NoEffect, ManPage, "rustls only offers ECDHE key exchange, which needs no Diffie-Hellman parameters."),
    opt("keyfile", Listener, Implemented, ManPage, "Reloaded on SIGHUP."),
    opt("require_certificate", Listener, Implemented, ManPage, ""),
    opt("tls_engine", Listener, Refused, ManPage, "rustls has no OpenSSL engines."),
    opt("tls_engine_kpass_sha1", Listener, Refused, ManPage, "rustls has no OpenSSL engines."),
    refused_except("tls_keyform", Listener, &["pem"], "rustls has no OpenSSL engines; only `pem` keys are read."),
    opt("tls_version", Listener, Implemented, ManPage, "`tlsv1.2` and `tlsv1.3`; `tlsv1.1` and `tlsv1` mean TLS 1.2 (stricter, with a warning)."),
    opt("use_identity_as_username", Listener, Implemented, ManPage, ""),
    opt("use_subject_as_username", Listener, Implemented, ManPage, ""),
    // Listener PSK.
    opt("psk_hint", Listener, Refused, ManPage, "rustls has no TLS-PSK."),
    // Bridges.
    opt("address", Bridge, Implemented, ManPage, ""),
    opt("addresses", Bridge, Implemented, ManPage, ""),
    opt("bridge_attempt_unsubscribe", Bridge, Implemented, ManPage, "On connect, one UNSUBSCRIBE per `out` topic line, among the SUBSCRIBEs of the `in` lines in the order of the lines, as Mosquitto sends them."),
    opt("bridge_bind_address", Bridge, Refused, ManPage, "midge cannot choose the bridge's source address yet."),
    opt("bridge_max_packet_size", Bridge, Implemented, ManPage, "A message too large for it (or for an MQTT 5 remote's Maximum Packet Size, the smaller one) is dropped and counted, not sent."),
    opt("bridge_outgoing_retain", Bridge, Implemented, ManPage, ""),
    opt("bridge_protocol_version", Bridge, Implemented, ManPage, ""),
    opt("cleansession", Bridge, Implemented, ManPage, ""),
    opt("connection", General, Implemented, ManPage, "Starts a bridge block."),
    opt("idle_timeout", Bridge, Implemented, ManPage, "For `start_type lazy`: seconds without a message forwarded to the remote after which the link is closed (Mosquitto also counts its own pings and acknowledgements)."),
    opt("keepalive_interval", Bridge, Implemented, ManPage, ""),
    opt("local_cleansession", Bridge, Implemented, ManPage, "Defaults to `cleansession`. With persistence, false keeps the bridge's local session and its queue for the remote across restarts."),
    opt("local_clientid", Bridge, Implemented, ManPage, "The client id of the bridge's local session (logs, store); default `local.` and the remote client id, which defaults to `HOSTNAME.NAME` as in Mosquitto's code. Two bridges with one local id stop start-up."),
    opt("local_password", Bridge, NoEffect, ManPage, "Mosquitto 2.0 reads it and never uses it: a bridge's local side logs in nowhere and no ACL applies to it, in Mosquitto as in midge."),
    opt("local_username", Bridge, NoEffect, ManPage, "As `local_password`."),
    opt("notification_topic", Bridge, Implemented, ManPage, ""),
    opt("notifications", Bridge, Implemented, ManPage, ""),
    opt("notifications_local_only", Bridge, Implemented, ManPage, ""),
    opt("remote_clientid", Bridge, Implemented, ManPage, ""),
    opt("remote_password", Bridge, Implemented, ManPage, ""),
    opt("remote_username", Bridge, Implemented, ManPage, ""),
    opt("restart_timeout", Bridge, Implemented, ManPage, ""),
    opt("round_robin", Bridge, Implemented, ManPage, "False: after a failure the next address is tried, and while on another one the first is probed every 5 seconds and taken back once it answers. True: the next address is tried and kept."),
    opt("start_type", Bridge, Implemented, ManPage, "`automatic`, `lazy` and `once`; `manual`, which Mosquitto does not support either, stops start-up."),
    opt("threshold", Bridge, Implemented, ManPage, "For `start_type lazy`: messages waiting for the remote that start the link."),
    opt("topic", Bridge, Implemented, ManPage, ""),
    opt("try_private", Bridge, Implemented, ManPage, ""),
    // Bridge TLS and PSK.
    opt("bridge_alpn", Bridge, Implemented, ManPage, ""),
    opt("bridge_cafile", Bridge, Implemented, ManPage, ""),
    opt("bridge_capath", Bridge, Implemented, ManPage, ""),
    opt("bridge_certfile", Bridge, Implemented, ManPage, ""),
    opt("bridge_identity", Bridge, Refused, ManPage, "rustls has no TLS-PSK."),
    opt("bridge_insecure", Bridge, Implemented, ManPage, ""),
    opt("bridge_keyfile", Bridge, Implemented, ManPage, ""),
    opt("bridge_psk", Bridge, Refused, ManPage, "rustls has no TLS-PSK."),
    opt("bridge_require_ocsp", Bridge, Refused, ManPage, "midge cannot require a stapled OCSP response."),
    opt("bridge_tls_version", Bridge, Implemented, ManPage, "As `tls_version`."),
    // Accepted by Mosquitto 2.0.20 without being in its man page.
    opt("auth_plugin", General, Implemented, Mosquitto, "The old name of `plugin`."),
    opt("auth_opt_*", General, Implemented, Mosquitto, "The old name of `plugin_opt_*`."),
    opt("clientid", Bridge, Implemented, Mosquitto, "The old name of `remote_clientid`."),
    opt("password", Bridge, Implemented, Mosquitto, "The old name of `remote_password`."),
    opt("username", Bridge, Implemented, Mosquitto, "The old name of `remote_username`."),
    opt("retained_persistence", General, Implemented, Mosquitto, "The old name of `persistence`."),
    opt("retry_interval", General, NoEffect, Mosquitto, "Removed in Mosquitto 2.0, which warns and ignores it: MQTT only resends on reconnection."),
    opt("store_clean_interval", General, NoEffect, Mosquitto, "Removed in Mosquitto 2.0, which warns and ignores it."),
    // midge's own.
    opt("connect_timeout", General, Implemented, Midge, "Seconds (default 20) a connection may take to send a complete CONNECT."),
    opt("persistence_sync_interval", General, Implemented, Midge, "Seconds (default 1) accepted messages may stay un-fsynced."),
    opt("refuse_unreadable_subscriptions", General, Implemented, Midge, "Default false, as Mosquitto: a SUBSCRIBE is granted whatever the ACL, which then filters each delivery. True: a filter the ACL lets read no topic at all is refused in SUBACK (0x87 for MQTT 5, 0x80 for 3.1.1), so the client knows."),
    opt("metrics", Listener, Implemented, Midge, "Default false. True: a `protocol websockets` listener answers `GET /metrics` with the broker's figures in Prometheus text format."),
    opt("metrics_auth", Listener, Implemented, Midge, "Default true: `/metrics` wants HTTP Basic credentials that log in as CONNECT would (401 otherwise). False: anyone who reaches the listener may read it."),
    opt("dashboard", Listener, Implemented, Midge, "Default false. True: a `protocol websockets` listener serves midge's web dashboard at `/dashboard/` (`/dashboard` redirects there; every path under it is the dashboard's, never `http_dir`'s): a page that logs in over MQTT-over-WebSocket on the same listener with the viewer's username and password and shows the connected clients (through `$CONTROL/midge/v1`, for a viewer the ACL grants it), the topics the viewer may read with their last values, message rates and bridges. The page is static and public; what it shows is what that MQTT login may read."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixes_match_only_longer_names() {
        for (i, o) in OPTIONS.iter().enumerate() {
            assert!(
                OPTIONS[i + 1..].iter().all(|p| p.name != o.name),
                "{} twice",
                o.name
            );
        }
        assert_eq!(
            lookup("plugin_opt_db").map(|o| o.name),
            Some("plugin_opt_*")
        );
        assert!(lookup("plugin_opt_").is_none());
        assert!(lookup("acl_flie").is_none());
    }

    #[test]
    fn only_refused_options_list_accepted_values() {
        for o in OPTIONS {
            assert!(
                o.accepts.is_empty() || o.class == Class::Refused,
                "{}",
                o.name
            );
            assert!(
                o.class != Class::Refused || !o.note.is_empty(),
                "{}",
                o.name
            );
            assert!(
                o.class != Class::NoEffect || !o.note.is_empty(),
                "{}",
                o.name
            );
            assert!(
                o.class != Class::OwnMeaning || !o.note.is_empty(),
                "{}",
                o.name
            );
        }
    }
}
