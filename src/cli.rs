//! The command line: Mosquitto's flags (`-c`, `-d`, `-h`, `-p`, `-v`, `--version`), parsed with
//! getopts into a [`Cli`], and merged into a [`Config`] by [`apply`]. This module only reads
//! arguments; exiting, printing and daemonizing are `main.rs`'s job.

use std::fmt;
use std::path::PathBuf;

use getopts::Options;

use crate::config::{Config, LogTypes};

/// What the user asked midge to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run the broker.
    Run,
    /// Print the usage text (`-h`, `--help`) and exit.
    Help,
    /// Print the version (`--version`) and exit.
    Version,
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// `-c FILE`: the configuration file; `None` runs with the defaults (local-only mode).
    pub config_file: Option<PathBuf>,
    /// `-p PORT` (repeatable): extra listeners on 127.0.0.1 and ::1.
    pub ports: Vec<u16>,
    /// `-v`: log everything (`log_type all`), whatever the config says.
    pub verbose: bool,
    /// `-d`: run in the background.
    pub daemon: bool,
    /// What to do.
    pub action: Action,
}

/// A command line midge cannot make sense of; main prints it with the usage text and exits 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error: {}", self.0)
    }
}

impl std::error::Error for CliError {}

fn options() -> Options {
    let mut opts = Options::new();
    opts.optopt(
        "c",
        "config-file",
        "read the configuration from FILE",
        "FILE",
    );
    opts.optflag("d", "daemon", "run in the background");
    opts.optflag("h", "help", "print this help and exit");
    opts.optmulti(
        "p",
        "port",
        "listen on 127.0.0.1:PORT and [::1]:PORT (repeatable)",
        "PORT",
    );
    opts.optflag("v", "verbose", "log everything (log_type all)");
    opts.optflag("", "version", "print the version and exit");
    opts
}

/// Parses the arguments that follow the program name (`std::env::args().skip(1)`).
pub fn parse(args: &[String]) -> Result<Cli, CliError> {
    let matches = options().parse(args).map_err(|e| CliError(e.to_string()))?;
    if let Some(extra) = matches.free.first() {
        return Err(CliError(format!("Unexpected argument: {extra}")));
    }
    let action = if matches.opt_present("h") {
        Action::Help
    } else if matches.opt_present("version") {
        Action::Version
    } else {
        Action::Run
    };
    let ports = matches
        .opt_strs("p")
        .iter()
        .map(|p| match p.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(CliError(format!("Invalid port specified: {p}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Cli {
        config_file: matches.opt_str("c").map(PathBuf::from),
        ports,
        verbose: matches.opt_present("v"),
        daemon: matches.opt_present("d"),
        action,
    })
}

/// The help text, modelled on `mosquitto -h`.
pub fn usage() -> String {
    format!(
        "midge version {version}\n\
         \n\
         midge is an MQTT broker.\n\
         It reads Mosquitto's configuration files and flags.\n\
         \n\
         Usage: midge [-c config_file] [-d] [-h] [-p port] [-v]\n\
         \n \
         -c, --config-file FILE  read the configuration from FILE. Without one, midge listens\n                         \
         on 127.0.0.1:1883 and [::1]:1883 only and lets anonymous\n                         \
         clients in.\n \
         -d, --daemon            detach from the terminal and run in the background.\n \
         -h, --help              print this text and exit.\n \
         -p, --port PORT         also listen on 127.0.0.1:PORT and [::1]:PORT; may be\n                         \
         repeated.\n \
         -v, --verbose           log everything, as \"log_type all\" (overrides the config).\n     \
         --version           print the version and exit.\n\
         \n\
         See midge.conf for an example configuration file.\n",
        version = env!("CARGO_PKG_VERSION")
    )
}

/// Merges the command line into a configuration loaded from a file (or the default one).
/// Call before [`Config::finish`], which turns `-p` ports into loopback listeners.
pub fn apply(cli: &Cli, cfg: &mut Config) {
    cfg.cli_ports.extend(&cli.ports);
    if cli.verbose {
        cfg.log.types = LogTypes(LogTypes::ALL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LOOPBACK, LOOPBACK_V6};

    fn parse_args(args: &[&str]) -> Result<Cli, CliError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        parse(&args)
    }

    #[test]
    fn no_arguments_runs_with_defaults() {
        assert_eq!(
            parse_args(&[]).unwrap(),
            Cli {
                config_file: None,
                ports: vec![],
                verbose: false,
                daemon: false,
                action: Action::Run
            }
        );
    }

    #[test]
    fn short_flags() {
        let cli = parse_args(&[
            "-c",
            "/etc/midge.conf",
            "-p",
            "1884",
            "-p",
            "1885",
            "-v",
            "-d",
        ])
        .unwrap();
        assert_eq!(cli.config_file, Some(PathBuf::from("/etc/midge.conf")));
        assert_eq!(cli.ports, vec![1884, 1885]);
        assert!(cli.verbose);
        assert!(cli.daemon);
        assert_eq!(cli.action, Action::Run);
    }

    #[test]
    fn long_flags() {
        let cli = parse_args(&[
            "--config-file",
            "m.conf",
            "--port",
            "2000",
            "--verbose",
            "--daemon",
        ])
        .unwrap();
        assert_eq!(cli.config_file, Some(PathBuf::from("m.conf")));
        assert_eq!(cli.ports, vec![2000]);
        assert!(cli.verbose && cli.daemon);
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse_args(&["-h"]).unwrap().action, Action::Help);
        assert_eq!(parse_args(&["--help"]).unwrap().action, Action::Help);
        assert_eq!(parse_args(&["--version"]).unwrap().action, Action::Version);
        assert_eq!(
            parse_args(&["--version", "-h"]).unwrap().action,
            Action::Help
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(parse_args(&["-x"]).is_err());
        assert!(parse_args(&["--bogus"]).is_err());
        assert!(parse_args(&["-c"]).is_err());
        assert!(parse_args(&["-c", "a", "-c", "b"]).is_err());
        assert!(parse_args(&["stray"]).is_err());
    }

    #[test]
    fn ports_must_be_1_to_65535() {
        assert_eq!(
            parse_args(&["-p", "0"]).unwrap_err().to_string(),
            "Error: Invalid port specified: 0"
        );
        assert!(parse_args(&["-p", "65536"]).is_err());
        assert!(parse_args(&["-p", "http"]).is_err());
        assert_eq!(parse_args(&["-p", "65535"]).unwrap().ports, vec![65535]);
    }

    #[test]
    fn usage_names_the_program_and_every_flag() {
        let text = usage();
        assert!(text.starts_with(&format!("midge version {}\n", env!("CARGO_PKG_VERSION"))));
        assert!(text.contains("midge is an MQTT broker."));
        assert!(text.contains("Usage: midge [-c config_file] [-d] [-h] [-p port] [-v]"));
        for flag in [
            "--config-file",
            "--daemon",
            "--help",
            "--port",
            "--verbose",
            "--version",
        ] {
            assert!(text.contains(flag), "{flag}");
        }
    }

    #[test]
    fn apply_verbose_logs_everything() {
        let mut cfg = Config::default();
        cfg.log.types = LogTypes(LogTypes::ERROR);
        apply(&parse_args(&["-v"]).unwrap(), &mut cfg);
        assert_eq!(cfg.log.types, LogTypes(LogTypes::ALL));
    }

    #[test]
    fn apply_without_verbose_keeps_the_configured_log_types() {
        let mut cfg = Config::default();
        cfg.log.types = LogTypes(LogTypes::ERROR);
        apply(&parse_args(&[]).unwrap(), &mut cfg);
        assert_eq!(cfg.log.types, LogTypes(LogTypes::ERROR));
    }

    #[test]
    fn apply_ports_replace_the_local_default_listener() {
        let mut cfg = Config::default();
        apply(&parse_args(&["-p", "1884"]).unwrap(), &mut cfg);
        cfg.finish();
        let listeners: Vec<_> = cfg
            .listeners
            .iter()
            .map(|l| (l.port, l.bind_address.as_deref()))
            .collect();
        assert_eq!(
            listeners,
            vec![(1884, Some(LOOPBACK)), (1884, Some(LOOPBACK_V6))]
        );
        assert_eq!(cfg.allow_anonymous, Some(true));
    }

    #[test]
    fn apply_ports_are_added_alongside_configured_listeners() {
        let mut cfg = crate::config::parse_str("listener 1883", "t.conf".as_ref()).unwrap();
        apply(&parse_args(&["-p", "1884"]).unwrap(), &mut cfg);
        cfg.finish();
        let listeners: Vec<_> = cfg
            .listeners
            .iter()
            .map(|l| (l.port, l.bind_address.as_deref()))
            .collect();
        assert_eq!(
            listeners,
            vec![
                (1883, None),
                (1884, Some(LOOPBACK)),
                (1884, Some(LOOPBACK_V6))
            ]
        );
        assert_eq!(cfg.allow_anonymous, Some(false));
    }
}
