//! Password files against the real Mosquitto tools (Debian's `mosquitto_passwd`, `mosquitto`,
//! `mosquitto_pub`), in both directions:
//!
//! - a file written by `mosquitto_passwd -b` is read by `PasswordFile` (right password accepted,
//!   wrong one refused);
//! - a file written by `midge_passwd -b` is used as Mosquitto's `password_file`: `mosquitto_pub`
//!   with the right password connects, with a wrong one it is refused.
//!
//! Each test that needs a Mosquitto binary prints why and returns when it is not installed.

use crate::common::spawn_mosquitto;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use midge::auth::PasswordFile;

const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";
const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";
const MIDGE_PASSWD: &str = env!("CARGO_BIN_EXE_midge_passwd");

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("midge-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn missing(tools: &[&str]) -> bool {
    for tool in tools {
        if !Path::new(tool).exists() {
            eprintln!(
                "skipping: {tool} is not installed (apt-get install mosquitto mosquitto-clients)"
            );
            return true;
        }
    }
    false
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn midge_reads_a_file_written_by_mosquitto_passwd() {
    if missing(&[MOSQUITTO_PASSWD]) {
        return;
    }
    let dir = TempDir::new("mosq-pw");
    let file = dir.path("passwd");
    let f = file.to_str().unwrap();
    run_ok(MOSQUITTO_PASSWD, &["-c", "-b", f, "alice", "s3cret pass"]);
    run_ok(MOSQUITTO_PASSWD, &["-b", f, "bob", "hunter2"]);
    run_ok(
        MOSQUITTO_PASSWD,
        &["-H", "sha512", "-b", f, "old", "legacy"],
    );

    let (passwords, warnings) = PasswordFile::load(&file).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(passwords.users(), ["alice", "bob", "old"]);
    assert!(passwords.check("alice", b"s3cret pass"));
    assert!(!passwords.check("alice", b"s3cret"));
    assert!(passwords.check("bob", b"hunter2"));
    assert!(!passwords.check("bob", b"hunter3"));
    assert!(passwords.check("old", b"legacy"), "$6$ line");
    assert!(!passwords.check("old", b"Legacy"));
    assert!(!passwords.check("carol", b"hunter2"));
}

#[test]
fn midge_passwd_edits_files_mosquitto_passwd_wrote_and_vice_versa() {
    if missing(&[MOSQUITTO_PASSWD]) {
        return;
    }
    let dir = TempDir::new("mixed-pw");
    let file = dir.path("passwd");
    let f = file.to_str().unwrap();
    run_ok(MOSQUITTO_PASSWD, &["-c", "-b", f, "alice", "a"]);
    run_ok(MIDGE_PASSWD, &["-b", f, "bob", "b"]);
    run_ok(MOSQUITTO_PASSWD, &["-b", f, "carol", "c"]);
    run_ok(MIDGE_PASSWD, &["-b", f, "alice", "a2"]);
    run_ok(MOSQUITTO_PASSWD, &["-D", f, "carol"]);

    let (passwords, warnings) = PasswordFile::load(&file).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(passwords.users(), ["alice", "bob"]);
    assert!(passwords.check("alice", b"a2"));
    assert!(!passwords.check("alice", b"a"));
    assert!(passwords.check("bob", b"b"));
}

#[test]
fn midge_passwd_interactive_delete_and_update() {
    let dir = TempDir::new("midge-pw");
    let file = dir.path("passwd");
    let f = file.to_str().unwrap();

    // Not a terminal: the password is read twice from standard input.
    let mut child = Command::new(MIDGE_PASSWD)
        .args(["-c", f, "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"typed pw\ntyped pw\n")
        .unwrap();
    assert!(child.wait().unwrap().success());

    let mut child = Command::new(MIDGE_PASSWD)
        .args([f, "bob"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "mismatched passwords must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("do not match"));

    let line = std::fs::read_to_string(&file).unwrap();
    let fields: Vec<&str> = line.trim_end().split('$').collect();
    assert_eq!(fields[0], "alice:");
    assert_eq!(fields[1..3], ["7", "101"]);
    assert_eq!(fields[3].len(), 16);
    assert_eq!(fields[4].len(), 88);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "new password files are private");

    // Deleting an absent user fails; deleting alice works.
    assert!(!run(MIDGE_PASSWD, &["-D", f, "nobody"]).status.success());
    run_ok(MIDGE_PASSWD, &["-D", f, "alice"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "");

    // -U hashes a plain-text file in place, once.
    std::fs::write(&file, "# users\nu1:p1\nu2:p2\n").unwrap();
    run_ok(MIDGE_PASSWD, &["-U", f]);
    let (passwords, warnings) = PasswordFile::load(&file).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(passwords.check("u1", b"p1") && passwords.check("u2", b"p2"));
    assert!(
        !run(MIDGE_PASSWD, &["-U", f]).status.success(),
        "refuses to hash twice"
    );

    // Bad arguments: usage and exit status 1.
    let out = run(MIDGE_PASSWD, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage:"));
    assert_eq!(run(MIDGE_PASSWD, &["-b", f]).status.code(), Some(1));
}

/// A Mosquitto broker on a free local port, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
}

impl Mosquitto {
    fn start(dir: &TempDir, password_file: &Path) -> Mosquitto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "listener {port} 127.0.0.1\n\
                 allow_anonymous false\n\
                 password_file {}\n\
                 user root\n\
                 persistence false\n",
                password_file.display()
            ),
        )
        .unwrap();
        let child = spawn_mosquitto(&config);
        let mut broker = Mosquitto { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = broker.child.try_wait().unwrap() {
                panic!(
                    "mosquitto exited early ({status}); config:\n{}",
                    std::fs::read_to_string(&config).unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not start listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        broker
    }

    fn publish(&self, user: &str, password: &str) -> Output {
        let port = self.port.to_string();
        run(
            MOSQUITTO_PUB,
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                user,
                "-P",
                password,
                "-t",
                "t",
                "-m",
                "m",
            ],
        )
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn mosquitto_accepts_a_file_written_by_midge_passwd() {
    if missing(&[MOSQUITTO, MOSQUITTO_PUB]) {
        return;
    }
    let dir = TempDir::new("mosq-broker");
    let file = dir.path("passwd");
    let f = file.to_str().unwrap();
    run_ok(MIDGE_PASSWD, &["-c", "-b", f, "alice", "right pw"]);
    run_ok(MIDGE_PASSWD, &["-I", "2000", "-b", f, "bob", "bobs"]);
    run_ok(MIDGE_PASSWD, &["-H", "sha512", "-b", f, "old", "legacy"]);

    let broker = Mosquitto::start(&dir, &file);
    let ok = broker.publish("alice", "right pw");
    assert!(
        ok.status.success(),
        "right password refused: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        broker.publish("bob", "bobs").status.success(),
        "-I 2000 line"
    );
    assert!(broker.publish("old", "legacy").status.success(), "$6$ line");
    assert!(
        !broker.publish("alice", "wrong pw").status.success(),
        "wrong password accepted"
    );
    assert!(
        !broker.publish("nobody", "right pw").status.success(),
        "unknown user accepted"
    );
    // The broker still serves after the refusals.
    assert!(broker.publish("alice", "right pw").status.success());
}
