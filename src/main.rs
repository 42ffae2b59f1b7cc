//! The `midge` executable: reads the command line and the configuration, drops root
//! privileges (as Mosquitto 2.0, before any file or socket is opened), optionally detaches into
//! the background, opens the log files and writes a pid file, then hands the configuration to
//! [`midge::server::run_with_reload`]. Everything it needs is in the library; this file only
//! sequences start-up and turns failures into messages and exit codes.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use log::{error, info, warn};
use midge::cli::{self, Action, Cli};
use midge::config::{self, Config, LogConfig};
use midge::{logging, notify, privileges};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let cli = match cli::parse(&args) {
        Ok(cli) => cli,
        Err(e) => {
            eprint!("{e}\n\n{}", cli::usage());
            return ExitCode::FAILURE;
        }
    };
    match cli.action {
        Action::Help => print_stdout(&cli::usage()),
        Action::Version => print_stdout(&format!("midge version {}\n", env!("CARGO_PKG_VERSION"))),
        Action::Run => run(&cli),
    }
}

/// Prints to stdout without panicking if it is closed (`midge -h | head -1`).
fn print_stdout(text: &str) -> ExitCode {
    let _ = io::stdout().write_all(text.as_bytes());
    ExitCode::SUCCESS
}

fn run(cli: &Cli) -> ExitCode {
    // Absolute paths keep working after daemonizing changes directory to "/" (and for a reload
    // of the same file later).
    let config_file = cli.config_file.as_deref().map(absolute);
    let mut cfg = match &config_file {
        Some(path) => match config::load(path) {
            Ok(cfg) => cfg,
            Err(e) => {
                eprintln!("{e}");
                // Mosquitto's MOSQ_ERR_INVAL, its exit status for every config error.
                return ExitCode::from(3);
            }
        },
        None => Config::default(),
    };
    let local_only = cfg.listeners.is_empty();
    cli::apply(cli, &mut cfg);
    cfg.finish();
    cfg.pid_file = cfg.pid_file.as_deref().map(absolute);

    // Until privileges are dropped, log to stderr only: log files are opened (and created)
    // as the user midge runs as, like every other file.
    let early = LogConfig {
        dests: Vec::new(),
        ..cfg.log.clone()
    };
    // Kept alive for the life of the process; SIGHUP uses it to reopen log files.
    let log = match logging::init(&early) {
        Ok(handle) => handle,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    // Connected while still root: the user midge becomes may not be allowed to open it.
    notify::init();
    if let Err(message) = privileges::drop_privileges(&cfg.user) {
        error!("{message}");
        return ExitCode::FAILURE;
    }
    if cli.daemon {
        if let Err(e) = daemonize() {
            error!("Error: Unable to run in the background: {e}.");
            return ExitCode::FAILURE;
        }
    }
    if let Err(message) = log.reconfigure(&cfg.log) {
        error!("{message}");
        return ExitCode::FAILURE;
    }
    log_startup(&cfg, local_only);

    let pid_file = cfg.pid_file.clone();
    if let Some(path) = &pid_file {
        if let Err(e) = write_pid_file(path) {
            error!("Error: Unable to write pid file {}: {e}.", path.display());
            return ExitCode::FAILURE;
        }
    }

    let reload_cli = cli.clone();
    let reloader: midge::server::Reloader = Box::new(move || {
        let Some(path) = &config_file else {
            // Without -c there is nothing to re-read, but log files are still reopened.
            log.reopen()?;
            return Err("Error: No config file was given with -c.".to_string());
        };
        let mut cfg = config::load(path).map_err(|e| e.to_string())?;
        cli::apply(&reload_cli, &mut cfg);
        cfg.finish();
        // Opened now, used once the whole reload has succeeded (see server::Reloader).
        let logs = log.stage(&cfg.log)?;
        for warning in &cfg.warnings {
            warn!("{warning}");
        }
        Ok((cfg, logs))
    });
    let result = midge::server::run_with_reload(cfg, Some(reloader));

    if let Some(path) = &pid_file {
        let _ = std::fs::remove_file(path);
    }
    match result {
        Ok(()) => {
            info!("midge version {} terminating", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("Error: {e}.");
            ExitCode::FAILURE
        }
    }
}

/// The start-up lines Mosquitto users expect (at its level, information), plus the warnings
/// collected from the config.
fn log_startup(cfg: &Config, local_only: bool) {
    info!("midge version {} starting", env!("CARGO_PKG_VERSION"));
    match &cfg.source {
        Some(path) => info!("Config loaded from {}.", path.display()),
        None => info!("Using default config."),
    }
    for warning in &cfg.warnings {
        warn!("{warning}");
    }
    if local_only {
        info!(
            target: "notice",
            "Starting in local only mode: only clients on this machine can connect. To accept \
             clients from the network, use a config file with a listener line (see midge.conf)."
        );
    }
}

/// Writes this process's id to `path`, mode 0644 (the umask may remove more). Debian's
/// mosquitto.conf names /run/mosquitto/mosquitto.pid, a directory its service creates before
/// start: create it if missing, so the same config runs midge by hand too.
fn write_pid_file(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(path)?;
    writeln!(file, "{}", std::process::id())
}

/// `path` made absolute against the current directory (unchanged if that fails).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Detaches from the terminal: fork (the parent exits), start a new session, move to "/" so no
/// file system stays busy, and point stdin, stdout and stderr at /dev/null.
fn daemonize() -> io::Result<()> {
    // SAFETY: midge has started no threads yet, so the child is a complete copy of the process.
    match unsafe { libc::fork() } {
        -1 => return Err(io::Error::last_os_error()),
        0 => {}
        // SAFETY: the parent leaves at once without running destructors or atexit handlers
        // that belong to the child now.
        _ => unsafe { libc::_exit(0) },
    }
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } == -1 {
        return Err(io::Error::last_os_error());
    }
    std::env::set_current_dir("/")?;
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: both descriptors are open; dup2 replaces `fd` atomically.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
