//! Logging in Mosquitto's format: a small [`log::Log`] implementation.
//!
//! Code logs with the `log` macros; this module decides which Mosquitto log type a record
//! belongs to ([`log_type`]), drops it unless that type is enabled (`log_type`), prefixes the
//! timestamp (`log_timestamp`, `log_timestamp_format`) and writes the line to every `log_dest`.
//! Records with target `"notice"`, `"subscribe"`, `"unsubscribe"` or `"websockets"` get that
//! type; any other record is typed by its level. Log those targets at `Info` level or above:
//! `Debug` records are filtered out early unless the `debug` type is on.
//!
//! Nothing is buffered: each line goes out in one write call as it is logged, so it is in the
//! file, pipe or system log by the end of the loop turn that produced it, and a SIGKILL or a
//! crash loses none of the lines before it.

use std::ffi::CString;
use std::fmt::{self, Write as _};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::{LogConfig, LogDest, LogTypes};

/// Controls the installed logger after [`init`]: reopening log files (SIGHUP, for log rotation)
/// or switching to a reloaded configuration.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

/// State shared between the installed logger and its [`Handle`].
struct Shared {
    /// Enabled `LogTypes` bits, checked without taking the lock.
    types: AtomicU16,
    sinks: Mutex<Sinks>,
}

/// The open destinations and how lines are formatted.
struct Sinks {
    config: LogConfig,
    /// `log_timestamp_format` ready for strftime.
    timestamp_format: Option<CString>,
    outputs: Vec<Output>,
}

enum Output {
    Stdout,
    Stderr,
    File(File),
    /// The system log (`log_dest syslog`), facility daemon, as Mosquitto.
    Syslog,
    /// An in-memory destination for tests.
    #[cfg(test)]
    Memory(Arc<Mutex<Vec<u8>>>),
}

impl Output {
    /// Writes one whole line (a single write call for files and stderr) and flushes it.
    fn write_line(&mut self, line: &[u8]) {
        // A failing log destination has nowhere to report to; the line is lost.
        let _ = match self {
            Output::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(line).and_then(|()| out.flush())
            }
            Output::Stderr => io::stderr().write_all(line),
            Output::File(file) => file.write_all(line),
            // Written by `Sinks::write`, which knows the priority and the bare message.
            Output::Syslog => Ok(()),
            #[cfg(test)]
            Output::Memory(buf) => {
                lock(buf).extend_from_slice(line);
                Ok(())
            }
        };
    }
}

/// Locks a mutex, ignoring poisoning: a panic while logging must not silence the logger.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The Mosquitto log type (a `LogTypes` bit) of a record with this target and level.
pub fn log_type(target: &str, level: Level) -> u16 {
    match target {
        "notice" => LogTypes::NOTICE,
        "subscribe" => LogTypes::SUBSCRIBE,
        "unsubscribe" => LogTypes::UNSUBSCRIBE,
        "websockets" => LogTypes::WEBSOCKETS,
        _ => match level {
            Level::Error => LogTypes::ERROR,
            Level::Warn => LogTypes::WARNING,
            Level::Info => LogTypes::INFORMATION,
            Level::Debug | Level::Trace => LogTypes::DEBUG,
        },
    }
}

/// The `log` crate's global filter for these types: `Debug` records are only built when the
/// debug type is on.
fn max_level(types: LogTypes) -> LevelFilter {
    if types.0 == 0 {
        LevelFilter::Off
    } else if types.has(LogTypes::DEBUG) {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    }
}

/// Installs the logger for `cfg` as the `log` crate's global logger. Fails with a printable
/// message when a log file cannot be opened or a logger is already installed.
pub fn init(cfg: &LogConfig) -> Result<Handle, String> {
    let shared = Arc::new(Shared::new(Sinks::open(cfg)?, cfg.types));
    // The global logger lives as long as the process; leaking it is what `set_boxed_logger`
    // (behind a `log` feature midge does not enable) does too.
    let logger: &'static Logger = Box::leak(Box::new(Logger {
        shared: Arc::clone(&shared),
    }));
    log::set_logger(logger).map_err(|_| "Error: A logger is already installed.".to_string())?;
    log::set_max_level(max_level(cfg.types));
    Ok(Handle { shared })
}

impl Handle {
    /// Reopens the log files (after log rotation), keeping the current configuration. On
    /// failure the old files stay in use.
    pub fn reopen(&self) -> Result<(), String> {
        let cfg = lock(&self.shared.sinks).config.clone();
        self.reconfigure(&cfg)
    }

    /// Switches to a new logging configuration. On failure the old configuration stays in
    /// use.
    pub fn reconfigure(&self, cfg: &LogConfig) -> Result<(), String> {
        self.stage(cfg).map(Staged::apply)
    }

    /// Opens what a new logging configuration needs (its files) without switching to it yet:
    /// a config reload switches only once every other part of the new config has loaded too.
    pub fn stage(&self, cfg: &LogConfig) -> Result<Staged, String> {
        Ok(Staged {
            shared: Arc::clone(&self.shared),
            sinks: Sinks::open(cfg)?,
            types: cfg.types,
        })
    }
}

/// A logging configuration ready to take over ([`Handle::stage`]); dropping it leaves the
/// current one in place.
pub struct Staged {
    shared: Arc<Shared>,
    sinks: Sinks,
    types: LogTypes,
}

impl Staged {
    /// Makes this configuration the one in use; cannot fail.
    pub fn apply(self) {
        *lock(&self.shared.sinks) = self.sinks;
        self.shared.types.store(self.types.0, Ordering::Relaxed);
        log::set_max_level(max_level(self.types));
    }
}

impl Sinks {
    fn open(cfg: &LogConfig) -> Result<Sinks, String> {
        let timestamp_format = match &cfg.timestamp_format {
            Some(format) => Some(
                CString::new(format.as_str())
                    .map_err(|_| format!("Error: Invalid log_timestamp_format ({format})."))?,
            ),
            None => None,
        };
        let outputs = if cfg.dests.is_empty() {
            vec![Output::Stderr]
        } else {
            cfg.dests
                .iter()
                .filter_map(|dest| match dest {
                    LogDest::Stdout => Some(Ok(Output::Stdout)),
                    LogDest::Stderr => Some(Ok(Output::Stderr)),
                    LogDest::File(path) => Some(open_log_file(path).map(Output::File)),
                    LogDest::Syslog => {
                        // SAFETY: the identifier is a static NUL-terminated string, as openlog
                        // keeps the pointer.
                        unsafe { libc::openlog(c"midge".as_ptr(), libc::LOG_PID, facility(cfg)) };
                        Some(Ok(Output::Syslog))
                    }
                    LogDest::None => None,
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(Sinks {
            config: cfg.clone(),
            timestamp_format,
            outputs,
        })
    }

    /// Formats one record as a Mosquitto log line, newline included, cut to [`LINE_MAX`].
    fn format(&self, now: SystemTime, message: &std::fmt::Arguments<'_>) -> String {
        let mut line = Bounded::default();
        if self.config.timestamp {
            let seconds = now
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let _ = match self
                .timestamp_format
                .as_ref()
                .and_then(|format| local_time(format, seconds))
            {
                Some(time) => write!(line, "{time}: "),
                None => write!(line, "{seconds}: "),
            };
        }
        let _ = fmt::write(&mut line, *message);
        let mut line = line.0;
        line.push('\n');
        line
    }

    fn write(&mut self, line: &str) {
        for output in &mut self.outputs {
            output.write_line(line.as_bytes());
        }
    }

    /// Sends a bare message (no timestamp: syslog adds its own) to the system log.
    fn write_syslog(&self, priority: libc::c_int, message: &std::fmt::Arguments<'_>) {
        if !self.outputs.iter().any(|o| matches!(o, Output::Syslog)) {
            return;
        }
        let mut text = Bounded::default();
        let _ = fmt::write(&mut text, *message);
        let Ok(text) = CString::new(text.0.replace('\0', " ")) else {
            return;
        };
        // SAFETY: "%s" with one NUL-terminated string argument.
        unsafe { libc::syslog(priority, c"%s".as_ptr(), text.as_ptr()) };
    }
}

/// The longest log line in bytes, timestamp included, newline excluded: Mosquitto formats each
/// line into a 1000-byte buffer (`log__vprintf`), so a 65 535-byte topic under `-v` makes a
/// 999-byte line, not a 131 KB one. (Mosquitto may cut inside a UTF-8 character; midge cuts
/// before it.)
const LINE_MAX: usize = 999;

/// A `String` that takes at most [`LINE_MAX`] bytes and then stops the formatting, so a huge
/// argument is never formatted in full.
#[derive(Default)]
struct Bounded(String);

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = LINE_MAX.saturating_sub(self.0.len());
        if s.len() <= room {
            self.0.push_str(s);
            return Ok(());
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.0.push_str(&s[..cut]);
        // The line is full: an error ends the formatting early.
        Err(fmt::Error)
    }
}

/// The syslog facility: `log_facility` N is LOG_LOCALN (as Mosquitto), else LOG_DAEMON.
fn facility(cfg: &LogConfig) -> libc::c_int {
    const LOCAL: [libc::c_int; 8] = [
        libc::LOG_LOCAL0,
        libc::LOG_LOCAL1,
        libc::LOG_LOCAL2,
        libc::LOG_LOCAL3,
        libc::LOG_LOCAL4,
        libc::LOG_LOCAL5,
        libc::LOG_LOCAL6,
        libc::LOG_LOCAL7,
    ];
    cfg.facility
        .and_then(|n| LOCAL.get(usize::from(n)).copied())
        .unwrap_or(libc::LOG_DAEMON)
}

/// Opens `path` for appending, creating it mode 0644 (as Mosquitto; the umask may remove more).
fn open_log_file(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o644)
        .open(path)
        .map_err(|_| {
            format!(
                "Error: Unable to open log file {} for writing.",
                path.display()
            )
        })
}

/// `seconds` since the epoch as local time, formatted by strftime; `None` if it cannot be.
fn local_time(format: &CString, seconds: i64) -> Option<String> {
    let time = libc::time_t::try_from(seconds).ok()?;
    // SAFETY: `tm` is plain old data, for which all-zero bytes are a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the thread-safe variant.
    if unsafe { libc::localtime_r(&time, &mut tm) }.is_null() {
        return None;
    }
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for `buf.len()` bytes, `format` is NUL-terminated and `tm` was
    // filled by localtime_r. strftime writes at most `buf.len()` bytes and returns the length.
    let len = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm) };
    // 0 means the result did not fit (or is empty): fall back to Unix seconds.
    (len > 0).then(|| String::from_utf8_lossy(&buf[..len]).into_owned())
}

impl Shared {
    fn new(sinks: Sinks, types: LogTypes) -> Shared {
        Shared {
            types: AtomicU16::new(types.0),
            sinks: Mutex::new(sinks),
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let types = self.types.load(Ordering::Relaxed);
        types & log_type(metadata.target(), metadata.level()) != 0
    }
}

/// The `log::Log` installed by [`init`].
struct Logger {
    shared: Arc<Shared>,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.shared.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.shared.enabled(record.metadata()) {
            return;
        }
        let mut sinks = lock(&self.shared.sinks);
        let line = sinks.format(SystemTime::now(), record.args());
        sinks.write(&line);
        let priority = match record.level() {
            log::Level::Error => libc::LOG_ERR,
            log::Level::Warn => libc::LOG_WARNING,
            log::Level::Info if record.target() == "notice" => libc::LOG_NOTICE,
            log::Level::Info => libc::LOG_INFO,
            _ => libc::LOG_DEBUG,
        };
        sinks.write_syslog(priority, record.args());
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(types: u16, timestamp: bool, format: Option<&str>) -> LogConfig {
        LogConfig {
            types: LogTypes(types),
            dests: vec![],
            timestamp,
            timestamp_format: format.map(str::to_string),
            facility: None,
        }
    }

    #[test]
    fn log_facility_selects_local0_to_local7() {
        let mut cfg = config(LogTypes::ALL, false, None);
        assert_eq!(facility(&cfg), libc::LOG_DAEMON);
        cfg.facility = Some(0);
        assert_eq!(facility(&cfg), libc::LOG_LOCAL0);
        cfg.facility = Some(7);
        assert_eq!(facility(&cfg), libc::LOG_LOCAL7);
    }

    /// A logger writing into memory, and the memory.
    fn memory_logger(cfg: &LogConfig) -> (Logger, Arc<Mutex<Vec<u8>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let mut sinks = Sinks::open(cfg).unwrap();
        sinks.outputs = vec![Output::Memory(Arc::clone(&buf))];
        let logger = Logger {
            shared: Arc::new(Shared::new(sinks, cfg.types)),
        };
        (logger, buf)
    }

    fn log(logger: &Logger, target: &str, level: Level, message: &str) {
        logger.log(
            &Record::builder()
                .target(target)
                .level(level)
                .args(format_args!("{message}"))
                .build(),
        );
    }

    fn text(buf: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(lock(buf).clone()).unwrap()
    }

    #[test]
    fn targets_choose_the_mosquitto_type() {
        assert_eq!(log_type("notice", Level::Info), LogTypes::NOTICE);
        assert_eq!(log_type("subscribe", Level::Info), LogTypes::SUBSCRIBE);
        assert_eq!(log_type("unsubscribe", Level::Info), LogTypes::UNSUBSCRIBE);
        assert_eq!(log_type("websockets", Level::Warn), LogTypes::WEBSOCKETS);
    }

    #[test]
    fn other_targets_are_typed_by_level() {
        assert_eq!(log_type("midge::server", Level::Error), LogTypes::ERROR);
        assert_eq!(log_type("midge::server", Level::Warn), LogTypes::WARNING);
        assert_eq!(
            log_type("midge::server", Level::Info),
            LogTypes::INFORMATION
        );
        assert_eq!(log_type("midge::server", Level::Debug), LogTypes::DEBUG);
        assert_eq!(log_type("midge", Level::Trace), LogTypes::DEBUG);
    }

    #[test]
    fn max_level_admits_debug_only_when_debug_is_on() {
        assert_eq!(max_level(LogTypes::DEFAULT), LevelFilter::Info);
        assert_eq!(max_level(LogTypes(LogTypes::ALL)), LevelFilter::Debug);
        assert_eq!(max_level(LogTypes(LogTypes::DEBUG)), LevelFilter::Debug);
        assert_eq!(max_level(LogTypes(0)), LevelFilter::Off);
    }

    #[test]
    fn only_enabled_types_are_written() {
        let (logger, buf) = memory_logger(&config(LogTypes::ERROR | LogTypes::NOTICE, false, None));
        log(&logger, "midge", Level::Error, "bad");
        log(&logger, "midge", Level::Warn, "hmm");
        log(&logger, "midge", Level::Info, "info");
        log(&logger, "notice", Level::Info, "starting");
        log(&logger, "subscribe", Level::Info, "c1 0 a/b");
        log(&logger, "midge", Level::Debug, "detail");
        assert_eq!(text(&buf), "bad\nstarting\n");
    }

    #[test]
    fn enabled_follows_the_types() {
        let (logger, _) = memory_logger(&config(LogTypes::SUBSCRIBE, true, None));
        let meta = |target, level| Metadata::builder().target(target).level(level).build();
        assert!(logger.enabled(&meta("subscribe", Level::Info)));
        assert!(!logger.enabled(&meta("unsubscribe", Level::Info)));
        assert!(!logger.enabled(&meta("midge", Level::Error)));
    }

    #[test]
    fn unix_seconds_timestamp() {
        let (logger, _) = memory_logger(&config(LogTypes::ALL, true, None));
        let now = UNIX_EPOCH + Duration::from_secs(1_732_500_000);
        let sinks = lock(&logger.shared.sinks);
        assert_eq!(
            sinks.format(
                now,
                &format_args!("New connection from 127.0.0.1:43718 on port 1883.")
            ),
            "1732500000: New connection from 127.0.0.1:43718 on port 1883.\n"
        );
    }

    #[test]
    fn no_timestamp() {
        let (logger, _) = memory_logger(&config(LogTypes::ALL, false, Some("%s")));
        let sinks = lock(&logger.shared.sinks);
        assert_eq!(sinks.format(UNIX_EPOCH, &format_args!("hello")), "hello\n");
    }

    #[test]
    fn strftime_timestamp() {
        // %s (seconds since the epoch) does not depend on the local time zone.
        let (logger, _) = memory_logger(&config(LogTypes::ALL, true, Some("[%s]")));
        let now = UNIX_EPOCH + Duration::from_secs(1_732_500_000);
        let sinks = lock(&logger.shared.sinks);
        assert_eq!(sinks.format(now, &format_args!("hi")), "[1732500000]: hi\n");
    }

    #[test]
    fn strftime_with_spaces_and_a_date() {
        let (logger, _) = memory_logger(&config(LogTypes::ALL, true, Some("%Y-%m-%d %H:%M:%S")));
        let sinks = lock(&logger.shared.sinks);
        let line = sinks.format(SystemTime::now(), &format_args!("x"));
        assert_eq!(line.len(), "2024-11-25 01:02:03: x\n".len(), "{line}");
        assert!(line.ends_with(": x\n"));
    }

    #[test]
    fn empty_strftime_result_falls_back_to_unix_seconds() {
        let (logger, _) = memory_logger(&config(LogTypes::ALL, true, Some("")));
        let now = UNIX_EPOCH + Duration::from_secs(42);
        let sinks = lock(&logger.shared.sinks);
        assert_eq!(sinks.format(now, &format_args!("hi")), "42: hi\n");
    }

    #[test]
    fn a_line_is_cut_at_999_bytes_like_mosquittos_buffer() {
        let (logger, _) = memory_logger(&config(LogTypes::ALL, true, None));
        let now = UNIX_EPOCH + Duration::from_secs(1_732_500_000);
        let sinks = lock(&logger.shared.sinks);
        let topic = "t".repeat(65_535);
        let line = sinks.format(
            now,
            &format_args!("Received PUBLISH from c (d0, '{topic}')"),
        );
        assert_eq!(line.len(), LINE_MAX + 1);
        assert!(line.starts_with("1732500000: Received PUBLISH from c (d0, 'ttt"));
        assert!(line.ends_with("ttt\n"));
        // A short line is untouched.
        assert_eq!(sinks.format(now, &format_args!("x")), "1732500000: x\n");
    }

    #[test]
    fn a_cut_line_ends_on_a_whole_character() {
        let (logger, _) = memory_logger(&config(LogTypes::ALL, false, None));
        let sinks = lock(&logger.shared.sinks);
        // 'é' is 2 bytes: 998 bytes of 'a' leave room for 1 byte, not for 'é'.
        let text = format!("{}é", "a".repeat(998));
        let line = sinks.format(UNIX_EPOCH, &format_args!("{text}"));
        assert_eq!(line, format!("{}\n", "a".repeat(998)));
    }

    #[test]
    fn each_record_is_one_line_in_the_file() {
        let path = std::env::temp_dir().join(format!("midge-log-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut cfg = config(LogTypes::DEFAULT.0, false, None);
        cfg.dests = vec![LogDest::File(path.clone()), LogDest::None];
        let logger = Logger {
            shared: Arc::new(Shared::new(Sinks::open(&cfg).unwrap(), cfg.types)),
        };
        log(&logger, "notice", Level::Info, "one");
        log(&logger, "midge", Level::Warn, "two");
        let written = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(written, "one\ntwo\n");
    }

    #[test]
    fn destinations_map_to_outputs() {
        let mut cfg = config(LogTypes::DEFAULT.0, true, None);
        let kinds = |cfg: &LogConfig| {
            Sinks::open(cfg)
                .unwrap()
                .outputs
                .iter()
                .map(|o| match o {
                    Output::Stdout => "stdout",
                    Output::Stderr => "stderr",
                    Output::File(_) => "file",
                    Output::Syslog => "syslog",
                    Output::Memory(_) => "memory",
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&cfg), vec!["stderr"]);
        cfg.dests = vec![LogDest::None];
        assert!(kinds(&cfg).is_empty());
        cfg.dests = vec![LogDest::Stdout, LogDest::Stderr];
        assert_eq!(kinds(&cfg), vec!["stdout", "stderr"]);
    }

    #[test]
    fn an_unopenable_log_file_is_an_error() {
        let mut cfg = config(LogTypes::DEFAULT.0, true, None);
        cfg.dests = vec![LogDest::File("/nonexistent/dir/midge.log".into())];
        assert_eq!(
            Sinks::open(&cfg).err(),
            Some(
                "Error: Unable to open log file /nonexistent/dir/midge.log for writing."
                    .to_string()
            )
        );
    }
}
