//! systemd's `Type=notify` protocol, with a notification socket the test makes (no real
//! systemd): `READY=1` once the port accepts connections, `RELOADING=1` with `MONOTONIC_USEC`
//! then `READY=1` around SIGHUP (a failed reload too), `STOPPING=1` at SIGTERM; abstract
//! sockets; a socket only root may reach, still reached after the drop to `mosquitto`. And
//! the unit files: midge's own, and Debian's `mosquitto.service` running midge with Debian's
//! stock mosquitto.conf when only the binary is changed.

use crate::common::*;
use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// A midge process, killed if the test ends early.
struct Midge(Child);

impl Drop for Midge {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Midge {
    /// Starts midge with `args` and `NOTIFY_SOCKET=socket`.
    fn start(args: &[&str], socket: &str) -> Midge {
        let child = Command::new(midge_bin())
            .args(args)
            .env("NOTIFY_SOCKET", socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn midge");
        Midge(child)
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill with the pid of our own child.
        unsafe { libc::kill(self.0.id() as libc::pid_t, sig) };
    }
}

/// The next notification on `socket`, within [`WAIT`]. A receive with a timeout is not
/// restarted after the process was stopped and continued (signal(7)); like the raw client's
/// reads, it is retried until the deadline.
fn next(socket: &UnixDatagram) -> String {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no notification within {WAIT:?}");
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("a notification within the wait: {e:?}"),
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock of `MONOTONIC_USEC`.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the local struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn ready_reloading_and_stopping_are_sent_at_the_right_moments() {
    if skip_on_mosquitto("midge's notifications (Debian's Mosquitto is built with systemd too)") {
        return;
    }
    let dir = TempDir::new();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let port = free_port();
    let conf_text = format!("listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n");
    let conf = dir.write("n.conf", &conf_text);
    let mut midge = Midge::start(&["-c", conf.to_str().unwrap()], path.to_str().unwrap());

    assert_eq!(next(&socket), "READY=1");
    // No waiting: at READY=1 the port accepts connections.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    let before = monotonic_usec();
    midge.signal(libc::SIGHUP);
    let reloading = next(&socket);
    let after = monotonic_usec();
    let usec: u64 = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("RELOADING=1 with MONOTONIC_USEC: {reloading:?}"))
        .parse()
        .expect("MONOTONIC_USEC is a number");
    assert!(
        (before..=after).contains(&usec),
        "{before} <= {usec} <= {after}"
    );
    assert_eq!(next(&socket), "READY=1");

    // A reload that fails keeps the old config, and the service is ready again all the same.
    std::fs::write(&conf, format!("{conf_text}listener x\n")).unwrap();
    midge.signal(libc::SIGHUP);
    assert!(next(&socket).starts_with("RELOADING=1\n"));
    assert_eq!(next(&socket), "READY=1");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    midge.signal(libc::SIGTERM);
    assert_eq!(next(&socket), "STOPPING=1");
    let status = wait_child(&mut midge.0, WAIT).expect("midge exits after SIGTERM");
    assert!(status.success());
}

#[test]
fn an_abstract_notify_socket_is_reached() {
    if skip_on_mosquitto("midge's notifications") {
        return;
    }
    let name = format!("midge-test-notify-{}", std::process::id());
    let socket =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    let _midge = Midge::start(&["-p", &free_port().to_string()], &format!("@{name}"));
    assert_eq!(next(&socket), "READY=1");
}

#[test]
fn the_socket_is_reached_after_dropping_privileges() {
    if skip_on_mosquitto("midge's notifications") {
        return;
    }
    if !is_root() {
        eprintln!("skipped: dropping privileges needs the tests to run as root");
        return;
    }
    // A directory only root may enter, as /run/systemd is to the user midge becomes: the
    // socket is connected before the drop, or READY=1 could not be sent.
    let dir = TempDir::new();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let midge = Midge::start(&["-p", &free_port().to_string()], path.to_str().unwrap());
    assert_eq!(next(&socket), "READY=1");
    let status = std::fs::read_to_string(format!("/proc/{}/status", midge.0.id())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(!uid.split_whitespace().skip(1).any(|id| id == "0"), "{uid}");
}

/// The `key=value` lines of a unit file's `[Service]` section.
fn service_section(text: &str) -> Vec<(String, String)> {
    let mut in_service = false;
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                keys.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    keys
}

fn value<'a>(keys: &'a [(String, String)], key: &str) -> Option<&'a str> {
    keys.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn midges_unit_is_type_notify_with_its_directories_and_umask() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/midge.service");
    let keys = service_section(&std::fs::read_to_string(path).unwrap());
    for (key, want) in [
        ("Type", "notify"),
        ("RuntimeDirectory", "midge"),
        ("LogsDirectory", "midge"),
        ("StateDirectory", "midge"),
        ("StateDirectoryMode", "0700"),
        ("UMask", "0077"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(value(&keys, key), Some(want), "{key}");
    }
    let start = value(&keys, "ExecStart").unwrap();
    assert!(start.contains("midge -c /etc/midge/midge.conf"), "{start}");
}

const DEBIAN_UNIT: &str = "/lib/systemd/system/mosquitto.service";
const DEBIAN_CONF: &str = "/etc/mosquitto/mosquitto.conf";

/// Debian's unit, run by hand with midge as its ExecStart binary and every path it and Debian's
/// stock mosquitto.conf name moved under a temporary root (port 1883 is left alone: a conf.d
/// file adds a listener on a free port, as a user's local configuration would).
#[test]
fn debians_mosquitto_service_runs_midge_with_the_stock_config() {
    if skip_on_mosquitto("runs midge in Mosquitto's place") {
        return;
    }
    let (Ok(unit), Ok(conf)) = (
        std::fs::read_to_string(DEBIAN_UNIT),
        std::fs::read_to_string(DEBIAN_CONF),
    ) else {
        eprintln!("skipped: Debian's mosquitto package is not installed");
        return;
    };
    if !is_root() {
        eprintln!("skipped: Debian's unit starts the broker as root");
        return;
    }
    let keys = service_section(&unit);
    assert_eq!(
        value(&keys, "Type"),
        Some("notify"),
        "what midge must answer"
    );
    assert_eq!(value(&keys, "ExecReload"), Some("/bin/kill -HUP $MAINPID"));
    let exec_start = value(&keys, "ExecStart").unwrap();
    let args: Vec<&str> = exec_start.split_whitespace().skip(1).collect();
    assert_eq!(args, ["-c", DEBIAN_CONF]);

    let root = TempDir::new();
    let moved = |text: &str| {
        [
            "/run/mosquitto",
            "/var/lib/mosquitto",
            "/var/log/mosquitto",
            "/etc/mosquitto",
        ]
        .iter()
        .fold(text.to_string(), |t, p| {
            t.replace(p, &format!("{}{p}", root.path().display()))
        })
    };
    // The package's own directories: /etc/mosquitto/conf.d and /var/lib/mosquitto (owned by
    // the mosquitto user). Then the unit's ExecStartPre lines, paths moved.
    let conf_d = root.path().join("etc/mosquitto/conf.d");
    std::fs::create_dir_all(&conf_d).unwrap();
    let port = free_port();
    std::fs::write(
        conf_d.join("local.conf"),
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .unwrap();
    let state = root.path().join("var/lib/mosquitto");
    std::fs::create_dir_all(&state).unwrap();
    assert!(Command::new("chown")
        .args(["mosquitto", state.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    for (key, line) in &keys {
        if key == "ExecStartPre" {
            let line = moved(line);
            let mut words = line.split_whitespace();
            let status = Command::new(words.next().unwrap())
                .args(words)
                .status()
                .unwrap();
            assert!(status.success(), "{line}");
        }
    }
    let conf_path = root.path().join("etc/mosquitto/mosquitto.conf");
    std::fs::write(&conf_path, moved(&conf)).unwrap();

    let notify = root.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap();
    let mut midge = Midge::start(
        &["-c", conf_path.to_str().unwrap()],
        notify.to_str().unwrap(),
    );
    assert_eq!(
        next(&socket),
        "READY=1",
        "systemd would see the service start"
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    let mosquitto_uid = std::fs::metadata(&state).unwrap().uid();
    let owned = |path: &Path| {
        let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        (meta.uid(), meta.permissions().mode() & 0o777)
    };
    let pid_file = root.path().join("run/mosquitto/mosquitto.pid");
    assert_eq!(owned(&pid_file), (mosquitto_uid, 0o644));
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        midge.0.id().to_string()
    );
    let log = root.path().join("var/log/mosquitto/mosquitto.log");
    assert_eq!(owned(&log), (mosquitto_uid, 0o644));
    assert!(std::fs::read_to_string(&log).unwrap().contains("starting"));
    let store = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "db"))
        .expect("a store file in persistence_location");
    assert_eq!(owned(&store), (mosquitto_uid, 0o600));

    midge.signal(libc::SIGHUP);
    assert!(next(&socket).starts_with("RELOADING=1\n"));
    assert_eq!(next(&socket), "READY=1");
    midge.signal(libc::SIGTERM);
    assert_eq!(next(&socket), "STOPPING=1");
    assert!(wait_child(&mut midge.0, WAIT).is_some_and(|s| s.success()));
    assert!(!pid_file.exists());
}
