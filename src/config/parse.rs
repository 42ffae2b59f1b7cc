//! The reader of config text: splits lines into `name value`, looks each name up in the option
//! table, and hands it to the code for its scope (broker-wide here, [`Listeners`] for listener
//! options, [`bridge::apply`] inside a `connection` block). Also `include_dir`, the value
//! parsers every scope shares, and [`ConfigError`] with the file and line Mosquitto prints.
//!
//! It reads config files and nothing else: no socket, no password or certificate file.

use super::bridge::{self, BridgeConfig};
use super::listener::{Listeners, AUTH_OPTIONS};
use super::options::{self, Class, Scope};
use super::{Config, DynsecConfig, LogDest, LogTypes, DYNSEC_PLUGIN};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

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
    /// An option that only a `listener` block may set (`mount_point`) comes before the first
    /// `listener` line, as Mosquitto refuses too.
    ListenerRequired {
        /// The option name.
        option: String,
        /// Where the option was read.
        at: Location,
    },
    /// A listener's TLS options do not fit together (say `certfile` without `keyfile`):
    /// starting anyway would leave a listener the user meant to encrypt in plain text.
    Tls {
        /// What is wrong, in words.
        problem: String,
        /// The `listener` line (or the first option of the default listener).
        at: Location,
    },
    /// An HTTP option (`http_dir`, `metrics`) on a listener that does not speak WebSockets,
    /// which would serve nothing.
    NeedsWebSockets {
        /// The option name.
        option: String,
        /// Where the option was read.
        at: Location,
    },
    /// Two bridges have one local client id, so the second would take the first one's
    /// session (Mosquitto refuses this too).
    BridgeIdNotUnique {
        /// The shared `local_clientid`.
        id: String,
    },
    /// `listener 0 /path`: a unix socket listener, which midge cannot open.
    UnixSocketListener {
        /// The socket path.
        path: String,
        /// The `listener` line.
        at: Location,
    },
    /// A `plugin` line, or one of its `plugin_opt_*` options, that midge cannot honour as
    /// written: an option without a plugin, an option the dynamic security plugin does not
    /// have, a dynamic security plugin without its JSON file.
    Plugin {
        /// What is wrong, in words.
        problem: String,
        /// Where.
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
            | ConfigError::Plugin { at, .. }
            | ConfigError::InvalidValue { at, .. }
            | ConfigError::MissingValue { at, .. }
            | ConfigError::Refused { at, .. }
            | ConfigError::ListenerRequired { at, .. }
            | ConfigError::NeedsWebSockets { at, .. }
            | ConfigError::Unhandled { at, .. } => Some(at),
            // midge's own checks, whose one line already names the listener's line.
            ConfigError::Tls { .. }
            | ConfigError::UnixSocketListener { .. }
            | ConfigError::BridgeIdNotUnique { .. } => None,
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
            ConfigError::Plugin { problem, .. } => write!(f, "Error: {problem}"),
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
            ConfigError::ListenerRequired { option, .. } => write!(
                f,
                "Error: You must create a listener before using the {option} option in the \
                 configuration file."
            ),
            ConfigError::Tls { problem, at } => {
                write!(f, "Error: {problem}, for the listener in {at}.")
            }
            ConfigError::NeedsWebSockets { option, .. } => write!(
                f,
                "Error: The {option} option serves HTTP, which only a listener with `protocol \
                 websockets` answers."
            ),
            ConfigError::BridgeIdNotUnique { id } => write!(
                f,
                "Error: Bridge local_clientid '{id}' is not unique. Try changing or setting the \
                 local_clientid value for one of the bridges."
            ),
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

/// The largest payload MQTT can carry (the maximum remaining length), and the meaning of
/// `message_size_limit 0`.
const MQTT_MAX_PAYLOAD: u32 = crate::codec::MAX_VARINT;

/// Parses `text` as the main config file `origin`.
pub(super) fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let mut parser = Parser::new();
    parser.parse_text(text, origin, 0)?;
    parser.into_config()
}

/// The text of a config file, whatever its encoding.
pub(super) fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    match fs::read(path) {
        // Mosquitto does not care about the encoding; neither do we.
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(_) => Err(ConfigError::Open {
            path: path.to_path_buf(),
        }),
    }
}

/// Parsing state that spans all files of one configuration.
struct Parser {
    /// Starts as [`Config::default`]: an option never written keeps its default.
    config: Config,
    listeners: Listeners,
    /// The first `log_type` line replaces the default set; later ones add to it.
    log_type_seen: bool,
    /// True once an option of [`AUTH_OPTIONS`] (or `plugin`) was read.
    security_option_seen: bool,
    /// The dynamic security `plugin` lines, in order; `plugin_opt_*` lines belong to the
    /// latest, wherever it is, as in Mosquitto.
    plugins: Vec<PluginLine>,
}

/// A `plugin` line naming the dynamic security plugin, while its options are read.
struct PluginLine {
    /// With `per_listener_settings`: the listener block it is in (`Some(None)`: the default
    /// listener); `None`: broker-wide.
    scope: Option<Option<usize>>,
    plugin: PathBuf,
    config_file: Option<PathBuf>,
    at: Location,
}

/// Why a `plugin` line naming another plugin is refused.
const OTHER_PLUGIN: &str = "midge loads no plugins. It has two of Mosquitto's security \
    mechanisms built in: the dynamic security plugin (a plugin line naming \
    mosquitto_dynamic_security.so, with plugin_opt_config_file) and password_file/acl_file.";

impl Parser {
    fn new() -> Self {
        Parser {
            config: Config::default(),
            listeners: Listeners::default(),
            log_type_seen: false,
            security_option_seen: false,
            plugins: Vec::new(),
        }
    }

    /// Checks and resolves what needs every line read: TLS options that must fit together and
    /// the per-listener options midge applies to every listener.
    fn into_config(self) -> Result<Config, ConfigError> {
        let Parser {
            mut config,
            mut listeners,
            plugins,
            ..
        } = self;
        for p in plugins {
            // Mosquitto's plugin runs without effect when it has no file, leaving security to
            // whatever else is configured: refused rather than run so.
            let Some(config_file) = p.config_file else {
                return Err(ConfigError::Plugin {
                    problem: format!(
                        "The dynamic security plugin {} has no plugin_opt_config_file.",
                        p.plugin.display()
                    ),
                    at: p.at,
                });
            };
            let dynsec = Some(DynsecConfig {
                plugin: p.plugin,
                config_file,
            });
            match p.scope {
                None => config.dynsec = dynsec,
                Some(block) => {
                    if let Some(auth) = listeners.auth_of(block) {
                        auth.dynsec = dynsec;
                    }
                }
            }
        }
        listeners.check_tls()?;
        listeners.check_http()?;
        if let Some(id) = bridge::duplicate_local_id(&config.bridges) {
            return Err(ConfigError::BridgeIdNotUnique { id });
        }
        config.listeners = listeners.into_listeners(&mut config.warnings);
        Ok(config)
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
        // The option table decides what is known and where it belongs; the code below only
        // gives meaning to options the table says midge implements.
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
        let handled = match info.scope {
            Scope::Bridge => {
                let Some(b) = self.config.bridges.last_mut() else {
                    return Err(ConfigError::NotInBridge { at: at.clone() });
                };
                bridge::apply(b, name, value, at, &mut self.config.warnings)?
            }
            Scope::Listener => self
                .listeners
                .option(name, value, at, &mut self.config.warnings)?,
            Scope::General => self.general_option(name, value, at, depth)?,
        };
        if handled {
            Ok(())
        } else {
            Err(unhandled(name, at))
        }
    }

    /// A broker-wide option; returns false for one it has no code for.
    fn general_option(
        &mut self,
        name: &str,
        value: &str,
        at: &Location,
        depth: u32,
    ) -> Result<bool, ConfigError> {
        self.security_option_seen |= AUTH_OPTIONS.contains(&name) || name == "plugin";
        match name {
            "plugin" | "auth_plugin" => return self.plugin(name, value, at).map(|()| true),
            _ if name.starts_with("plugin_opt_") || name.starts_with("auth_opt_") => {
                return self.plugin_option(name, value, at).map(|()| true)
            }
            _ => {}
        }
        if self.config.per_listener_settings && self.listeners.auth_option(name, value, at)? {
            return Ok(true);
        }
        let c = &mut self.config;
        match name {
            "connection" => c
                .bridges
                .push(BridgeConfig::new(required(name, value, at)?)),
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
            "max_inflight_bytes" => c.max_inflight_bytes = parse_number(name, value, at)?,
            "clientid_prefixes" => {
                c.clientid_prefixes = Some(required(name, value, at)?.to_string())
            }
            "check_retain_source" => c.check_retain_source = parse_bool(name, value, at)?,
            "sys_interval" => c.sys_interval = parse_number(name, value, at)?,
            "password_file" => c.password_file = Some(PathBuf::from(required(name, value, at)?)),
            "acl_file" => c.acl_file = Some(PathBuf::from(required(name, value, at)?)),
            "user" => c.user = required(name, value, at)?.to_string(),
            "memory_limit" => c.memory_limit = parse_number(name, value, at)?,
            "connect_timeout" => {
                let secs: u64 = parse_number(name, value, at)?;
                c.connect_timeout = Duration::from_secs(secs.max(1));
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
            "refuse_unreadable_subscriptions" => {
                c.refuse_unreadable_subscriptions = parse_bool(name, value, at)?
            }
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
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// `plugin PATH` (or its old name `auth_plugin`): only Mosquitto's dynamic security
    /// plugin, which midge has built in; broker-wide, or for the current listener with
    /// `per_listener_settings`, as Mosquitto scopes it.
    fn plugin(&mut self, name: &str, value: &str, at: &Location) -> Result<(), ConfigError> {
        let plugin = PathBuf::from(required(name, value, at)?);
        if plugin.file_name() != Some(DYNSEC_PLUGIN.as_ref()) {
            return Err(refused(name, Some(value), OTHER_PLUGIN, at));
        }
        let scope = self
            .config
            .per_listener_settings
            .then(|| self.listeners.current_slot(name, at));
        if let Some(first) = self.plugins.iter().find(|p| p.scope == scope) {
            return Err(ConfigError::Plugin {
                problem: format!(
                    "A second dynamic security plugin for the same {}; the first is at {}.",
                    if scope.is_some() {
                        "listener"
                    } else {
                        "broker"
                    },
                    first.at
                ),
                at: at.clone(),
            });
        }
        self.plugins.push(PluginLine {
            scope,
            plugin,
            config_file: None,
            at: at.clone(),
        });
        Ok(())
    }

    /// `plugin_opt_KEY VALUE` (or `auth_opt_KEY`): an option of the latest `plugin` line. The
    /// dynamic security plugin has one, `config_file` (any case, as the plugin compares it).
    fn plugin_option(&mut self, name: &str, value: &str, at: &Location) -> Result<(), ConfigError> {
        let key = name
            .strip_prefix("plugin_opt_")
            .or_else(|| name.strip_prefix("auth_opt_"))
            .unwrap_or(name);
        let Some(plugin) = self.plugins.last_mut() else {
            return Err(ConfigError::Plugin {
                problem: format!("An {name} option exists in the config file without a plugin."),
                at: at.clone(),
            });
        };
        let value = required(name, value, at)?;
        if !key.eq_ignore_ascii_case("config_file") {
            return Err(ConfigError::Plugin {
                problem: format!(
                    "{name} is not an option of the dynamic security plugin, whose only option \
                     is plugin_opt_config_file."
                ),
                at: at.clone(),
            });
        }
        plugin.config_file = Some(PathBuf::from(value));
        Ok(())
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

pub(super) fn invalid(option: &str, value: &str, at: &Location) -> ConfigError {
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

pub(super) fn required<'a>(
    option: &str,
    value: &'a str,
    at: &Location,
) -> Result<&'a str, ConfigError> {
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
pub(super) fn parse_bool(option: &str, value: &str, at: &Location) -> Result<bool, ConfigError> {
    match required(option, value, at)? {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(option, value, at)),
    }
}

pub(super) fn parse_number<T: FromStr>(
    option: &str,
    value: &str,
    at: &Location,
) -> Result<T, ConfigError> {
    required(option, value, at)?
        .parse()
        .map_err(|_| invalid(option, value, at))
}

pub(super) fn parse_port(option: &str, value: &str, at: &Location) -> Result<u16, ConfigError> {
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
    use crate::config::testing::{at, err, ok, parse, TempDir};
    use crate::config::SocketDomain;
    use std::path::PathBuf;

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
                    allow_anonymous true\nrefuse_unreadable_subscriptions true\n");
        assert!(c.queue_qos0_messages);
        assert!(c.refuse_unreadable_subscriptions);
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
            err("listener 1883\n\nbind_interface eth0"),
            "Error: bind_interface in /etc/midge.conf:3 is not supported by this version \
             of midge, which refuses to start rather than run without it: midge cannot bind to \
             an interface yet; ignoring it would listen on every interface.\n\
             Error found at /etc/midge.conf:3."
        );
        for (line, option) in [
            ("plugin /usr/lib/x.so", "plugin"),
            ("auth_plugin /x.so", "auth_plugin"),
            ("psk_file /p", "psk_file"),
            ("bind_interface eth0", "bind_interface"),
            ("tls_keyform engine", "tls_keyform"),
            ("connection b\nbridge_bind_address h", "bridge_bind_address"),
            ("connection b\nbridge_psk 0a", "bridge_psk"),
        ] {
            match parse(line) {
                Err(ConfigError::Refused { option: o, .. }) => assert_eq!(o, option),
                other => panic!("{line}: {other:?}"),
            }
        }
        // Their harmless values are accepted.
        ok("tls_keyform pem\nconnection b\nstart_type automatic\nround_robin false");
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
    fn the_dynamic_security_plugin_is_built_in() {
        let dynsec = |file: &str| {
            Some(DynsecConfig {
                plugin: PathBuf::from("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"),
                config_file: PathBuf::from(file),
            })
        };
        let c = ok(
            "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n\
                    plugin_opt_config_file /var/lib/mosquitto/dynsec.json",
        );
        assert_eq!(c.dynsec, dynsec("/var/lib/mosquitto/dynsec.json"));
        // The plugin compares its option's name in any case; `auth_plugin` is the old name.
        let c = ok(
            "auth_plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n\
                    auth_opt_CONFIG_FILE /d.json",
        );
        assert_eq!(c.dynsec, dynsec("/d.json"));
        // Per listener, it belongs to the listener block it is written in.
        let c = ok("per_listener_settings true\nlistener 1883\n\
                    plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n\
                    listener 1884\nplugin_opt_config_file /a.json");
        assert_eq!(c.listeners[0].auth.dynsec, dynsec("/a.json"));
        assert_eq!(c.listeners[1].auth.dynsec, None);
        assert_eq!(c.dynsec, None);
    }

    #[test]
    fn plugin_lines_midge_cannot_honour_are_fatal() {
        let other = err("plugin /usr/lib/mosquitto_go_auth.so");
        assert!(other.contains("password_file/acl_file"), "{other}");
        assert!(other.contains("mosquitto_dynamic_security.so"), "{other}");
        assert!(
            other.ends_with("Error found at /etc/midge.conf:1."),
            "{other}"
        );
        let so = "plugin /p/mosquitto_dynamic_security.so";
        assert_eq!(
            err(so),
            "Error: The dynamic security plugin /p/mosquitto_dynamic_security.so has no \
             plugin_opt_config_file.\nError found at /etc/midge.conf:1."
        );
        assert_eq!(
            err("plugin_opt_config_file /d.json"),
            "Error: An plugin_opt_config_file option exists in the config file without a \
             plugin.\nError found at /etc/midge.conf:1."
        );
        assert!(
            err(&format!("{so}\nplugin_opt_config_file /d\nplugin_opt_db x")).starts_with(
                "Error: plugin_opt_db is not an option of the dynamic security plugin"
            )
        );
        assert!(err(&format!("{so}\nplugin_opt_config_file /d\n{so}"))
            .starts_with("Error: A second dynamic security plugin for the same broker"));
        assert!(matches!(
            parse(&format!("{so}\nplugin_opt_config_file")),
            Err(ConfigError::MissingValue { .. })
        ));
        // A security setting: per_listener_settings must come before it.
        assert!(matches!(
            parse(&format!(
                "{so}\nplugin_opt_config_file /d\nper_listener_settings true"
            )),
            Err(ConfigError::PerListenerSettingsLate { .. })
        ));
    }

    #[test]
    fn password_and_acl_files_are_read() {
        let c = ok("password_file /etc/midge/passwd\nacl_file /etc/midge/acl");
        assert_eq!(c.password_file, Some(PathBuf::from("/etc/midge/passwd")));
        assert_eq!(c.acl_file, Some(PathBuf::from("/etc/midge/acl")));
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
}
