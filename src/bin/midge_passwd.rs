//! `midge_passwd`: manage password files for midge's (and Mosquitto's) `password_file`, with
//! the command line of Mosquitto's `mosquitto_passwd`:
//!
//! ```text
//! midge_passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c | -D] passwordfile username
//! midge_passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c] -b passwordfile username password
//! midge_passwd [-I iterations] -U passwordfile
//! ```
//!
//! Lines are written exactly as `mosquitto_passwd` 2.0 writes them (`$7$101$<12-byte salt>$<hash>`
//! by default), so Mosquitto 2.0 reads files made here and midge reads files made there; the format
//! itself lives in `midge::auth::passwd`. Without `-b` the password is asked twice on the terminal
//! with echo off, or read as two lines from standard input when that is not a terminal (scripts).
//!
//! Edits keep the other lines as they were and replace the file atomically (a temporary file in
//! the same directory, then a rename), keeping the old file's permissions and owner; a new file is
//! created readable by its owner only, as `mosquitto_passwd` does.

use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;

use midge::auth::passwd::{self, HashType, PasswordHash, DEFAULT_ITERATIONS};

const USAGE: &str = "\
midge_passwd is a tool for managing password files for midge and mosquitto.

Usage: midge_passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c | -D] passwordfile username
       midge_passwd [-H sha512 | -H sha512-pbkdf2] [-I iterations] [-c] -b passwordfile username password
       midge_passwd [-I iterations] -U passwordfile
 -b : run in batch mode to allow passing passwords on the command line.
 -c : create a new password file. This will overwrite existing files.
 -D : delete the username rather than adding/updating its password.
 -H : specify the hashing algorithm. Defaults to sha512-pbkdf2, which is recommended.
      Mosquitto 1.6 and earlier defaulted to sha512.
 -I : number of PBKDF2 iterations (default 101, as mosquitto_passwd 2.0).
 -U : update a plain text password file to use hashed passwords.
";

/// Longest password `mosquitto_passwd` accepts.
const MAX_PASSWORD_LEN: usize = 65535;

/// What to do, once the command line has been understood.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    /// Add or update one user; `password: None` means ask for it.
    Set {
        file: PathBuf,
        username: String,
        password: Option<String>,
        create: bool,
    },
    Delete {
        file: PathBuf,
        username: String,
    },
    /// Hash a plain-text `user:password` file in place.
    HashPlaintext {
        file: PathBuf,
    },
}

#[derive(Debug, PartialEq, Eq)]
struct Invocation {
    hash_type: HashType,
    iterations: u32,
    command: Command,
}

/// Why the command line was refused: print the usage, or a specific message.
#[derive(Debug, PartialEq, Eq)]
enum ArgError {
    Usage,
    Message(String),
}

fn parse_args(args: &[String]) -> Result<Invocation, ArgError> {
    if args.is_empty() {
        return Err(ArgError::Usage);
    }
    let mut hash_type = HashType::Sha512Pbkdf2;
    let mut iterations = DEFAULT_ITERATIONS;
    let (mut batch, mut create, mut delete, mut update) = (false, false, false, false);
    let mut rest = args;
    // Options come first, as in mosquitto_passwd; the first other word starts the operands.
    while let Some((arg, tail)) = rest.split_first() {
        match arg.as_str() {
            "-H" | "-I" => {
                let Some((value, tail)) = tail.split_first() else {
                    return Err(ArgError::Message(format!(
                        "Error: {arg} argument given but not enough other arguments."
                    )));
                };
                if arg == "-H" {
                    hash_type = HashType::from_name(value).ok_or_else(|| {
                        ArgError::Message(format!("Error: Unknown hash type '{value}'"))
                    })?;
                } else {
                    iterations = value.parse().ok().filter(|&n: &u32| n > 0).ok_or_else(|| {
                        ArgError::Message("Error: Number of iterations must be > 0.".into())
                    })?;
                }
                rest = tail;
                continue;
            }
            "-b" => batch = true,
            "-c" => create = true,
            "-D" => delete = true,
            "-U" => update = true,
            _ => break,
        }
        rest = tail;
    }
    for (a, b, names) in [
        (create, delete, "-c and -D"),
        (create, update, "-c and -U"),
        (delete, update, "-D and -U"),
        (delete, batch, "-b and -D"),
        (update, batch, "-b and -U"),
    ] {
        if a && b {
            return Err(ArgError::Message(format!(
                "Error: {names} cannot be used together."
            )));
        }
    }
    let operands: Vec<String> = rest.to_vec();
    let command = match (update, delete, batch, operands.as_slice()) {
        (true, _, _, [file]) => Command::HashPlaintext { file: file.into() },
        (true, _, _, _) => {
            return Err(ArgError::Message(
                "Error: -U argument given but password file missing (or too many arguments)."
                    .into(),
            ))
        }
        (_, true, _, [file, username]) => Command::Delete {
            file: file.into(),
            username: username.clone(),
        },
        (_, true, _, _) => {
            return Err(ArgError::Message(
                "Error: -D argument given but password file or username missing.".into(),
            ))
        }
        (_, _, true, [file, username, password]) => Command::Set {
            file: file.into(),
            username: username.clone(),
            password: Some(password.clone()),
            create,
        },
        (_, _, false, [file, username]) => Command::Set {
            file: file.into(),
            username: username.clone(),
            password: None,
            create,
        },
        _ => return Err(ArgError::Usage),
    };
    if let Command::Set { username, .. } | Command::Delete { username, .. } = &command {
        passwd::check_username(username).map_err(|e| ArgError::Message(format!("Error: {e}")))?;
    }
    if let Command::Set {
        password: Some(password),
        ..
    } = &command
    {
        check_password(password).map_err(ArgError::Message)?;
    }
    Ok(Invocation {
        hash_type,
        iterations,
        command,
    })
}

fn check_password(password: &str) -> Result<(), String> {
    if password.len() > MAX_PASSWORD_LEN {
        return Err("Error: Password must be less than 65536 characters long.".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invocation = match parse_args(&args) {
        Ok(invocation) => invocation,
        Err(ArgError::Usage) => {
            print!("{USAGE}");
            return ExitCode::FAILURE;
        }
        Err(ArgError::Message(message)) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    match run(invocation) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run(invocation: Invocation) -> Result<(), String> {
    let Invocation {
        hash_type,
        iterations,
        command,
    } = invocation;
    let hash = |password: &[u8]| PasswordHash::generate(hash_type, password, iterations);
    let hash_line = |username: &str, password: &str| {
        hash(password.as_bytes())
            .map(|h| passwd::format_line(username, &h))
            .map_err(|e| format!("Error: Unable to hash password: {e}."))
    };
    match command {
        Command::Set {
            file,
            username,
            password,
            create: true,
        } => {
            let password = match password {
                Some(password) => password,
                None => ask_password()?,
            };
            let line = hash_line(&username, &password)?;
            write_new(&file, &format!("{line}\n"))
        }
        Command::Set {
            file,
            username,
            password,
            create: false,
        } => {
            let text = read_existing(&file)?;
            let password = match password {
                Some(password) => password,
                None => ask_password()?,
            };
            let line = hash_line(&username, &password)?;
            replace_contents(&file, &passwd::set_user(&text, &username, &line))
        }
        Command::Delete { file, username } => {
            let text = read_existing(&file)?;
            let updated = passwd::delete_user(&text, &username)
                .ok_or_else(|| format!("Warning: User {username} not found in password file."))?;
            replace_contents(&file, &updated)
        }
        Command::HashPlaintext { file } => {
            let text = read_existing(&file)?;
            let updated = passwd::hash_plaintext(&text, hash)
                .map_err(|e| format!("Error: {}: {e}.", file.display()))?;
            replace_contents(&file, &updated)
        }
    }
}

fn read_existing(file: &Path) -> Result<String, String> {
    let bytes = fs::read(file).map_err(|e| {
        format!(
            "Error: Unable to open password file {}. {e}.",
            file.display()
        )
    })?;
    String::from_utf8(bytes).map_err(|_| {
        format!(
            "Error: Password file {} is not valid UTF-8.",
            file.display()
        )
    })
}

/// `-c`: the file is (re)created with owner-only permissions.
fn write_new(file: &Path, contents: &str) -> Result<(), String> {
    write_atomically(file, contents, None)
}

/// Any edit of an existing file keeps its mode and owner.
fn replace_contents(file: &Path, contents: &str) -> Result<(), String> {
    let metadata = fs::metadata(file).map_err(|e| {
        format!(
            "Error: Unable to open password file {}. {e}.",
            file.display()
        )
    })?;
    write_atomically(file, contents, Some(&metadata))
}

/// Writes `contents` to a temporary file beside `file` and renames it over `file`, so a crash
/// or a full disk never leaves a half-written password file behind.
fn write_atomically(
    file: &Path,
    contents: &str,
    keep: Option<&fs::Metadata>,
) -> Result<(), String> {
    let name = file
        .file_name()
        .ok_or_else(|| format!("Error: {} is not a file name.", file.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".midge_passwd.{}", std::process::id()));
    let tmp = file.with_file_name(tmp_name);
    let result = (|| -> io::Result<()> {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        out.write_all(contents.as_bytes())?;
        if let Some(old) = keep {
            out.set_permissions(fs::Permissions::from_mode(old.mode() & 0o7777))?;
            // Keep the owner (e.g. root editing the mosquitto user's file). Only root may give a
            // file away; anyone else already owns what they can rewrite, so failure is harmless.
            let _ = std::os::unix::fs::fchown(&out, Some(old.uid()), Some(old.gid()));
        }
        out.sync_all()?;
        fs::rename(&tmp, file)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!(
            "Error: Unable to write password file {}. {e}.",
            file.display()
        )
    })
}

/// Asks for the password twice (`mosquitto_passwd`'s prompts) and checks both agree.
fn ask_password() -> Result<String, String> {
    let first = read_secret("Password: ")?;
    let second = read_secret("Reenter password: ")?;
    if first != second {
        return Err("Error: Passwords do not match.".into());
    }
    if first.is_empty() {
        return Err("Error: Empty password.".into());
    }
    check_password(&first)?;
    Ok(first)
}

/// Terminal settings to restore if the user presses Ctrl-C while echo is off.
static SAVED_TERMINAL: OnceLock<libc::termios> = OnceLock::new();

extern "C" fn restore_terminal_and_exit(_signal: libc::c_int) {
    if let Some(saved) = SAVED_TERMINAL.get() {
        // SAFETY: tcsetattr and _exit are async-signal-safe; `saved` is a fully initialised
        // termios written once before this handler was installed.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
        }
    }
    // SAFETY: _exit ends the process without running non-signal-safe destructors.
    unsafe { libc::_exit(1) }
}

/// One line of input. On a terminal: the prompt, then the line typed with echo off. Otherwise
/// (a pipe or file): the next line of standard input, without a prompt.
fn read_secret(prompt: &str) -> Result<String, String> {
    // SAFETY: isatty only inspects the descriptor.
    let on_terminal = unsafe { libc::isatty(libc::STDIN_FILENO) } == 1;
    let echo_guard = if on_terminal {
        print!("{prompt}");
        let _ = io::stdout().flush();
        EchoOff::new()
    } else {
        None
    };
    let mut line = String::new();
    let read = io::stdin().lock().read_line(&mut line);
    if echo_guard.is_some() {
        println!();
    }
    drop(echo_guard);
    match read {
        Ok(0) => Err("Error: No password given (end of input).".into()),
        Ok(_) => {
            let trimmed = line.strip_suffix('\n').unwrap_or(&line);
            Ok(trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string())
        }
        Err(e) => Err(format!("Error: Unable to read password: {e}.")),
    }
}

/// Turns terminal echo off for its lifetime (restored on drop, or by the SIGINT handler).
struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails, and we only use it on success.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid descriptor and pointer to a termios we own.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return None;
        }
        let _ = SAVED_TERMINAL.set(saved);
        let handler = restore_terminal_and_exit as extern "C" fn(libc::c_int);
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: installing a handler that only calls async-signal-safe functions, and applying
        // a copy of the settings the terminal just reported with ECHO cleared.
        unsafe {
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
            libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet);
        }
        Some(EchoOff { saved })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restoring the settings tcgetattr returned for the same descriptor.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, ArgError> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn message(args: &[&str]) -> String {
        match parse(args) {
            Err(ArgError::Message(m)) => m,
            other => panic!("expected a message for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn batch_mode_takes_file_user_password() {
        let inv = parse(&["-b", "f", "u", "p"]).unwrap();
        assert_eq!(inv.hash_type, HashType::Sha512Pbkdf2);
        assert_eq!(inv.iterations, 101);
        assert_eq!(
            inv.command,
            Command::Set {
                file: "f".into(),
                username: "u".into(),
                password: Some("p".into()),
                create: false
            }
        );
    }

    #[test]
    fn options_in_any_order_before_operands() {
        let inv = parse(&["-I", "1000", "-c", "-H", "sha512", "-b", "f", "u", "p"]).unwrap();
        assert_eq!(inv.hash_type, HashType::Sha512);
        assert_eq!(inv.iterations, 1000);
        assert!(matches!(inv.command, Command::Set { create: true, .. }));
    }

    #[test]
    fn interactive_delete_and_update_forms() {
        assert!(matches!(
            parse(&["f", "u"]).unwrap().command,
            Command::Set {
                password: None,
                create: false,
                ..
            }
        ));
        assert!(matches!(
            parse(&["-c", "f", "u"]).unwrap().command,
            Command::Set {
                password: None,
                create: true,
                ..
            }
        ));
        assert_eq!(
            parse(&["-D", "f", "u"]).unwrap().command,
            Command::Delete {
                file: "f".into(),
                username: "u".into()
            }
        );
        assert_eq!(
            parse(&["-U", "f"]).unwrap().command,
            Command::HashPlaintext { file: "f".into() }
        );
    }

    #[test]
    fn bad_command_lines_give_usage_or_a_message() {
        assert_eq!(parse(&[]).unwrap_err(), ArgError::Usage);
        assert_eq!(parse(&["f"]).unwrap_err(), ArgError::Usage);
        assert_eq!(parse(&["f", "u", "p"]).unwrap_err(), ArgError::Usage);
        assert_eq!(parse(&["-b", "f", "u"]).unwrap_err(), ArgError::Usage);
        assert!(message(&["-c", "-D", "f", "u"]).contains("-c and -D"));
        assert!(message(&["-b", "-D", "f", "u"]).contains("-b and -D"));
        assert!(message(&["-U", "-c", "f"]).contains("-c and -U"));
        assert!(message(&["-U", "f", "extra"]).contains("-U"));
        assert!(message(&["-D", "f"]).contains("-D"));
        assert!(message(&["-H", "argon2id", "f", "u"]).contains("Unknown hash type"));
        assert!(message(&["-H"]).contains("not enough"));
        assert!(message(&["-I", "0", "f", "u"]).contains("> 0"));
        assert!(message(&["-I", "x", "f", "u"]).contains("> 0"));
        assert!(message(&["-b", "f", "a:b", "p"]).contains("':'"));
    }
}
