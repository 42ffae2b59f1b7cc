//! Test harness for the end-to-end tests: start the real `midge` binary (or, with
//! `MIDGE_TEST_BROKER=mosquitto`, Debian's Mosquitto 2.0 for cross-checking the tests themselves)
//! on an ephemeral port, and talk to it with raw sockets, `mosquitto_pub`/`mosquitto_sub` and
//! rumqttc. Every wait is bounded: nothing here blocks without a deadline.

pub mod certs;
pub mod fuzz;
pub mod packets;
pub mod store;
pub mod v5;

pub use packets::*;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";
pub const MOSQUITTO_SUB: &str = "/usr/bin/mosquitto_sub";
pub const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";

/// The default bound on one wait for something that should happen "at once".
pub const WAIT: Duration = Duration::from_secs(5);

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// True when the suite runs against Debian's Mosquitto instead of midge.
pub fn is_mosquitto() -> bool {
    std::env::var("MIDGE_TEST_BROKER").is_ok_and(|v| v == "mosquitto")
}

/// Returns true (and says so) when a midge-only test should be skipped.
/// `MIDGE_TEST_NO_SKIP=1` runs them anyway (to see Mosquitto fail them).
pub fn skip_on_mosquitto(why: &str) -> bool {
    if is_mosquitto() && std::env::var("MIDGE_TEST_NO_SKIP").is_err() {
        eprintln!("skipped under MIDGE_TEST_BROKER=mosquitto: {why}");
        return true;
    }
    false
}

pub fn midge_bin() -> &'static str {
    env!("CARGO_BIN_EXE_midge")
}

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

// ---------------------------------------------------------------------------------------------
// Temporary directories (std only)

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Serialises every change to /etc/passwd and /etc/group: useradd/userdel (`privileges`) and
/// dpkg, whose maintainer scripts run adduser/deluser (`package`). Those tools lock the files
/// and fail rather than wait, and the tests run in parallel threads of this one process.
pub static SYSTEM_USERS: Mutex<()> = Mutex::new(());

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("midge-test-{}-{}-{}", std::process::id(), n, nanos));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// chmod 0777: Mosquitto run as root drops to user `mosquitto` before writing its pid and
    /// log files.
    pub fn open_to_all(&self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o777));
    }

    /// Writes `name` in this directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port that was free a moment ago (bind 127.0.0.1:0, read, drop).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind ephemeral");
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Child processes with bounded waits

/// Waits up to `timeout` for `child` to exit; kills it (and returns None) if it does not.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Collects the lines of a pipe into a shared vector, on a thread.
fn collect_lines<R: Read + Send + 'static>(r: R, into: Arc<Mutex<Vec<String>>>, echo: bool) {
    thread::spawn(move || {
        let mut reader = BufReader::new(r);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let s = String::from_utf8_lossy(&line)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    if echo {
                        eprintln!("[broker] {s}");
                    }
                    into.lock().unwrap().push(s);
                }
            }
        }
    });
}

/// Waits up to [`WAIT`] for the file at `path` to hold `needle` (a file another process or
/// thread writes); returns its text, with the needle or as it was at the deadline.
pub fn wait_file_holds(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Starts Debian's Mosquitto on configuration file `conf`, its output discarded (the tests
/// that compare with it or bridge to it read its behaviour over the network).
pub fn spawn_mosquitto(conf: &std::path::Path) -> Child {
    Command::new(MOSQUITTO)
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto starts")
}

/// Waits until something accepts on 127.0.0.1:`port`; if `child` exits or `timeout` passes
/// first, kills it and panics with what it wrote to stderr (for brokers started outside
/// [`Broker`], e.g. under qemu or from an installed package).
pub fn wait_listening(child: &mut Child, port: u16, timeout: Duration, what: &str) {
    if !listening(child, port, timeout) {
        let _ = child.kill();
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
        }
        panic!("{what} did not listen on port {port}:\n{err}");
    }
}

/// Whether `child` listens on `port` within `timeout`: false if it exited, or if the port
/// answered but the child exited right after. A port from [`free_port`] can be taken by
/// another test's broker before the child binds it; the child then exits, and the connection
/// that succeeded reached the other broker.
pub fn listening(child: &mut Child, port: u16, timeout: Duration) -> bool {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t0.elapsed() > timeout || child.try_wait().ok().flatten().is_some() {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(50));
    child.try_wait().ok().flatten().is_none()
}

/// Runs a command to completion with a hard wall-clock limit. Returns the output; a command
/// that had to be killed has `status.success() == false` and `timed_out` is reported in stderr.
pub fn run_with_timeout(mut cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn command");
    if let Some(data) = stdin {
        let mut si = child.stdin.take().unwrap();
        thread::spawn(move || {
            let _ = si.write_all(&data);
        });
    }
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let (o2, e2) = (out.clone(), err.clone());
    let t1 = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        *o2.lock().unwrap() = b;
    });
    let t2 = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        *e2.lock().unwrap() = b;
    });
    let status = wait_child(&mut child, timeout);
    let _ = t1.join();
    let _ = t2.join();
    let stdout = out.lock().unwrap().clone();
    let mut stderr = err.lock().unwrap().clone();
    let status = match status {
        Some(s) => s,
        None => {
            stderr.extend_from_slice(b"\n[harness: killed after timeout]\n");
            // A status that is not success: the one of the killed child.
            child.wait().unwrap_or_else(|_| failed_status())
        }
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

fn failed_status() -> ExitStatus {
    Command::new("false").status().expect("run false")
}

/// Runs the midge binary with `args` (no broker harness), bounded by `timeout`.
pub fn run_midge(args: &[&str], timeout: Duration) -> Output {
    let mut cmd = Command::new(midge_bin());
    cmd.args(args);
    run_with_timeout(cmd, None, timeout)
}

// ---------------------------------------------------------------------------------------------
// The broker under test

/// A running broker; killed on drop.
pub struct Broker {
    child: Child,
    port: u16,
    logs: Arc<Mutex<Vec<String>>>,
    /// Holds the config, pid, log and store files; removed when the broker is dropped.
    _dir: TempDir,
    conf: PathBuf,
}

/// How to start a broker.
#[derive(Default, Clone)]
pub struct Opts {
    /// Extra config lines appended after `listener` and `allow_anonymous true`.
    pub conf: String,
    /// Pass `-v`.
    pub verbose: bool,
}

impl Broker {
    /// Starts a broker with `listener 0 127.0.0.1`, `allow_anonymous true` and `conf`.
    pub fn start(conf: &str) -> Broker {
        Self::start_opts(Opts {
            conf: conf.to_string(),
            verbose: false,
        })
    }

    /// Same as [`Broker::start`] with `-v`.
    pub fn start_verbose(conf: &str) -> Broker {
        Self::start_opts(Opts {
            conf: conf.to_string(),
            verbose: true,
        })
    }

    pub fn start_opts(opts: Opts) -> Broker {
        let dir = TempDir::new();
        let mosq = is_mosquitto();
        let chosen = if mosq { free_port() } else { 0 };
        // `per_listener_settings` must come before any authentication option (Mosquitto
        // refuses it after one), so a test's own line goes first.
        let (first, rest): (Vec<&str>, Vec<&str>) = opts
            .conf
            .lines()
            .partition(|l| l.starts_with("per_listener_settings"));
        // Tests run as root and write into root's temporary directories, so midge keeps root
        // (`user root`) instead of dropping to `mosquitto`, unless the test names a user (a
        // second `user` line would be a duplicate); tests/e2e/privileges.rs covers the drop.
        let names_user = rest.iter().any(|l| l.trim_start().starts_with("user "));
        let user = if mosq || names_user {
            ""
        } else {
            "user root\n"
        };
        let text = format!(
            "{}listener {chosen} 127.0.0.1\nallow_anonymous true\n{user}{}\n",
            first.iter().map(|l| format!("{l}\n")).collect::<String>(),
            rest.join("\n")
        );
        let conf = dir.write("broker.conf", &text);
        let mut cmd = Command::new(if mosq { MOSQUITTO } else { midge_bin() });
        cmd.arg("-c").arg(&conf);
        if opts.verbose {
            cmd.arg("-v");
        }
        Self::spawn(cmd, dir, conf, chosen)
    }

    /// Starts midge as `cmd` (arguments and environment chosen by the test) and waits until
    /// it logs its first IPv4 listening port. `dir` is kept for the life of the broker.
    pub fn start_command(cmd: Command, dir: TempDir) -> Broker {
        let conf = dir.path().join("broker.conf");
        Self::spawn(cmd, dir, conf, 0)
    }

    /// Spawns `cmd` and waits for it to listen: on `chosen` for Mosquitto, on the port logged
    /// for midge.
    fn spawn(mut cmd: Command, dir: TempDir, conf: PathBuf, chosen: u16) -> Broker {
        let mosq = is_mosquitto();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn broker");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let echo = std::env::var("MIDGE_TEST_ECHO").is_ok();
        collect_lines(child.stderr.take().unwrap(), logs.clone(), echo);
        collect_lines(child.stdout.take().unwrap(), logs.clone(), echo);
        let mut b = Broker {
            child,
            port: chosen,
            logs,
            _dir: dir,
            conf,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        if mosq {
            loop {
                if TcpStream::connect(("127.0.0.1", chosen)).is_ok() {
                    break;
                }
                b.assert_alive_while_starting();
                assert!(Instant::now() < deadline, "mosquitto did not listen");
                thread::sleep(Duration::from_millis(20));
            }
        } else {
            loop {
                if let Some(p) = b.find_log_port() {
                    b.port = p;
                    break;
                }
                b.assert_alive_while_starting();
                assert!(
                    Instant::now() < deadline,
                    "midge did not log 'Opening ipv4 listen socket on port N.' within 10 s; logs:\n{}",
                    b.logs().join("\n")
                );
                thread::sleep(Duration::from_millis(10));
            }
        }
        b
    }

    fn assert_alive_while_starting(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            thread::sleep(Duration::from_millis(100));
            panic!(
                "broker exited during start-up with {st}; logs:\n{}",
                self.logs().join("\n")
            );
        }
    }

    fn find_log_port(&self) -> Option<u16> {
        const MARK: &str = "Opening ipv4 listen socket on port ";
        for l in self.logs.lock().unwrap().iter() {
            if let Some(i) = l.find(MARK) {
                let rest = &l[i + MARK.len()..];
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                if let Ok(p) = digits.parse::<u16>() {
                    if p != 0 {
                        return Some(p);
                    }
                }
            }
        }
        None
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// A copy of every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_line(needle, timeout).is_some()
    }

    /// Waits until a log line contains `needle`, and returns that line.
    pub fn wait_for_log_line(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return Some(l.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until some log line satisfies `pred`, and returns it.
    pub fn wait_for_log_where(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.logs.lock().unwrap().iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// True while the process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn sigterm(&self) {
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit (killing it after `timeout`; then None).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, timeout)
    }

    /// VmRSS of the broker process in KiB.
    pub fn rss_kb(&self) -> u64 {
        self.status_kb("VmRSS:")
    }

    /// The peak of the broker process's VmRSS so far (VmHWM), in KiB.
    pub fn peak_rss_kb(&self) -> u64 {
        self.status_kb("VmHWM:")
    }

    /// A figure in KiB from /proc/PID/status.
    fn status_kb(&self, key: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        for l in s.lines() {
            if let Some(rest) = l.strip_prefix(key) {
                return rest
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .unwrap_or(0);
            }
        }
        0
    }

    /// A pub/sub round trip with two fresh raw clients: proves the broker still serves.
    pub fn assert_serves(&mut self) {
        assert!(self.alive(), "broker process died");
        let topic = format!("health/{}", COUNTER.fetch_add(1, Ordering::SeqCst));
        let mut sub = Raw::mqtt_connect(self.port, &format!("hs-{topic}"));
        sub.subscribe(1, &[(&topic, 1)], &[1]);
        let mut publ = Raw::mqtt_connect(self.port, &format!("hp-{topic}"));
        publ.send(&publish(&topic, b"ping", 1, false, false, 7));
        publ.expect_bytes(&puback(7), WAIT);
        let p = sub.expect_packet(WAIT);
        assert_eq!(p.kind(), 3, "expected a PUBLISH, got {p:?}");
        assert_eq!(p.topic(), topic);
        assert_eq!(p.payload(), b"ping");
        assert!(self.alive(), "broker process died");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository (the package's manifest directory), where scripts/ and target/ are.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Waits until a message published with `pub_port` on `topic` reaches `sub` (the bridge may
/// still be connecting), re-publishing until then; returns the payload that made it.
pub fn until_bridged(pub_port: u16, sub: &mut Raw, topic: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        let mut p = Raw::mqtt_connect(pub_port, &format!("probe{n}"));
        p.send(&publish(
            topic,
            format!("probe{n}").as_bytes(),
            0,
            false,
            false,
            0,
        ));
        p.send(&DISCONNECT);
        if let Got::Packet(pkt) = sub.read_packet(Duration::from_millis(500)) {
            return pkt.payload().to_vec();
        }
        assert!(Instant::now() < deadline, "bridge never carried {topic}");
    }
}

// ---------------------------------------------------------------------------------------------
// Packets as received

/// One packet as received, kept as its exact bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Pkt {
    pub bytes: Vec<u8>,
    /// Offset of the variable header (after the remaining length).
    pub body_at: usize,
}

impl std::fmt::Debug for Pkt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkt({})", hex(&self.bytes))
    }
}

impl Pkt {
    pub fn kind(&self) -> u8 {
        self.bytes[0] >> 4
    }
    pub fn flags(&self) -> u8 {
        self.bytes[0] & 0x0f
    }
    pub fn body(&self) -> &[u8] {
        &self.bytes[self.body_at..]
    }
    pub fn qos(&self) -> u8 {
        (self.bytes[0] >> 1) & 3
    }
    pub fn retain(&self) -> bool {
        self.bytes[0] & 1 == 1
    }
    pub fn dup(&self) -> bool {
        self.bytes[0] & 8 == 8
    }
    fn topic_len(&self) -> usize {
        let b = self.body();
        u16::from_be_bytes([b[0], b[1]]) as usize
    }
    /// PUBLISH topic.
    pub fn topic(&self) -> String {
        let n = self.topic_len();
        String::from_utf8_lossy(&self.body()[2..2 + n]).into_owned()
    }
    /// Packet id: of a PUBLISH with QoS > 0, or of an ack / SUBACK / UNSUBACK.
    pub fn pid(&self) -> u16 {
        let b = self.body();
        if self.kind() == 3 {
            let n = self.topic_len();
            u16::from_be_bytes([b[2 + n], b[3 + n]])
        } else {
            u16::from_be_bytes([b[0], b[1]])
        }
    }
    /// PUBLISH payload.
    pub fn payload(&self) -> &[u8] {
        let n = self.topic_len();
        let skip = 2 + n + if self.qos() > 0 { 2 } else { 0 };
        &self.body()[skip..]
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Raw TCP client

/// Result of one bounded read.
#[derive(Debug)]
pub enum Got {
    Packet(Pkt),
    Closed,
    Timeout,
}

/// A TCP client that speaks hand-written bytes.
pub struct Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to broker");
        stream.set_nodelay(true).ok();
        Raw {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// Connects and completes a clean-session 3.1.1 CONNECT (CONNACK 0 expected).
    pub fn mqtt_connect(port: u16, id: &str) -> Raw {
        Self::mqtt_connect_with(port, &Connect::v311(id), &CONNACK_OK)
    }

    /// Connects, sends `c`, expects exactly `connack`.
    pub fn mqtt_connect_with(port: u16, c: &Connect, connack: &[u8]) -> Raw {
        let mut r = Raw::connect(port);
        r.send(&c.bytes());
        r.expect_bytes(connack, WAIT);
        r
    }

    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().unwrap().port()
    }

    /// Writes bytes; returns false when the socket refused them (peer gone).
    pub fn send(&mut self, b: &[u8]) -> bool {
        self.stream.write_all(b).is_ok()
    }

    /// Half-closes: sends FIN.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads more bytes into the buffer until `deadline`. Returns false on close/timeout.
    fn fill(&mut self, deadline: Instant) -> Result<(), Got> {
        if self.closed {
            return Err(Got::Closed);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Got::Timeout);
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut tmp = [0u8; 65536];
        match self.stream.read(&mut tmp) {
            Ok(0) => {
                self.closed = true;
                Err(Got::Closed)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                Err(Got::Timeout)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(_) => {
                self.closed = true;
                Err(Got::Closed)
            }
        }
    }

    /// Parses one whole packet from the front of the buffer, if there is one.
    fn take_packet(&mut self) -> Option<Pkt> {
        if self.buf.len() < 2 {
            return None;
        }
        let mut len = 0usize;
        let mut mult = 1usize;
        let mut i = 1;
        loop {
            if i >= self.buf.len() || i > 4 {
                return None;
            }
            let b = self.buf[i];
            len += (b & 0x7f) as usize * mult;
            mult *= 128;
            i += 1;
            if b & 0x80 == 0 {
                break;
            }
        }
        if self.buf.len() < i + len {
            return None;
        }
        // memcpy + one memmove: fast even in a debug build (the flood test's reader must keep
        // up with the broker).
        let bytes = self.buf[..i + len].to_vec();
        self.buf.drain(..i + len);
        Some(Pkt { bytes, body_at: i })
    }

    /// Reads the next packet, waiting at most `timeout`.
    pub fn read_packet(&mut self, timeout: Duration) -> Got {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self.take_packet() {
                return Got::Packet(p);
            }
            if let Err(g) = self.fill(deadline) {
                return g;
            }
        }
    }

    /// The next packet, or a panic naming what happened instead.
    pub fn expect_packet(&mut self, timeout: Duration) -> Pkt {
        match self.read_packet(timeout) {
            Got::Packet(p) => p,
            other => panic!(
                "expected a packet within {timeout:?}, got {other:?} (buffered {})",
                hex(&self.buf)
            ),
        }
    }

    /// Reads exactly `want.len()` bytes and compares them.
    pub fn expect_bytes(&mut self, want: &[u8], timeout: Duration) {
        let got = self.read_exact_bytes(want.len(), timeout);
        assert_eq!(
            hex(&got),
            hex(want),
            "bytes from broker differ (got {} of {} bytes)",
            got.len(),
            want.len()
        );
    }

    /// Reads up to `n` bytes (fewer on close or timeout).
    pub fn read_exact_bytes(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        while self.buf.len() < n {
            if self.fill(deadline).is_err() {
                break;
            }
        }
        let k = n.min(self.buf.len());
        let out = self.buf[..k].to_vec();
        self.buf.drain(..k);
        out
    }

    /// Waits for the broker to close the connection; packets that arrive first are returned.
    /// Panics if the connection is still open after `timeout`.
    pub fn expect_closed(&mut self, timeout: Duration) -> Vec<Pkt> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            match self.read_packet(deadline.saturating_duration_since(Instant::now())) {
                Got::Packet(p) => seen.push(p),
                Got::Closed => return seen,
                Got::Timeout => panic!(
                    "connection still open after {timeout:?} (packets seen: {seen:?}, buffered {})",
                    hex(&self.buf)
                ),
            }
        }
    }

    /// True if the connection closes within `timeout` (any packets before are ignored).
    pub fn closes_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_packet(deadline.saturating_duration_since(Instant::now())) {
                Got::Packet(_) => {}
                Got::Closed => return true,
                Got::Timeout => return false,
            }
        }
    }

    /// Asserts that nothing arrives (and the connection stays open) for `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        match self.read_packet(d) {
            Got::Timeout => {}
            other => panic!("expected silence for {d:?}, got {other:?}"),
        }
    }

    /// Like [`Raw::expect_silence`], but answers PUBRELs (PUBCOMP) that finish earlier flows;
    /// any other packet is an error.
    pub fn quiet(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            match self.read_packet(deadline.saturating_duration_since(Instant::now())) {
                Got::Timeout => return,
                Got::Packet(p) if p.kind() == 6 => {
                    self.send(&pubcomp(p.pid()));
                }
                other => panic!("expected no publish for {d:?}, got {other:?}"),
            }
        }
    }

    /// SUBSCRIBE and check the SUBACK's granted codes.
    pub fn subscribe(&mut self, pid: u16, filters: &[(&str, u8)], granted: &[u8]) {
        self.send(&subscribe(pid, filters));
        self.expect_bytes(&suback(pid, granted), WAIT);
    }

    /// Reads `n` PUBLISH packets, acking QoS 1/2 ones (full flows), within `timeout`.
    /// Non-PUBLISH packets other than PUBREL are an error.
    pub fn collect_publishes(&mut self, n: usize, timeout: Duration) -> Vec<Pkt> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            match self.read_packet(deadline.saturating_duration_since(Instant::now())) {
                Got::Packet(p) => match p.kind() {
                    3 => {
                        match p.qos() {
                            1 => {
                                self.send(&puback(p.pid()));
                            }
                            2 => {
                                self.send(&pubrec(p.pid()));
                            }
                            _ => {}
                        }
                        out.push(p);
                    }
                    6 => {
                        self.send(&pubcomp(p.pid()));
                    }
                    _ => panic!("unexpected packet {p:?} while collecting publishes"),
                },
                other => panic!(
                    "got {other:?} after {} of {n} publishes; last ones: {:?}",
                    out.len(),
                    out[out.len().saturating_sub(5)..]
                        .iter()
                        .map(|p| (p.topic(), String::from_utf8_lossy(p.payload()).into_owned()))
                        .collect::<Vec<_>>()
                ),
            }
        }
        out
    }
}

/// Publishes `n` retained QoS 0 messages `PREFIX/<i>` (64-byte payloads) in one burst, and
/// waits until the broker has taken them all (a PINGRESP after them).
pub fn fill_retained(port: u16, prefix: &str, n: usize) {
    let mut p = Raw::mqtt_connect(port, &format!("{prefix}-filler"));
    let mut burst = Vec::new();
    for i in 0..n {
        let topic = format!("{prefix}/{i}");
        let payload = format!("payload-{i:056}");
        burst.extend(publish(&topic, payload.as_bytes(), 0, true, false, 0));
    }
    p.send(&burst);
    p.send(&[0xC0, 0]);
    p.expect_bytes(&[0xD0, 0], secs(60.0));
}

/// Connects a raw socket whose SO_RCVBUF is set before the handshake.
pub fn connect_small_rcvbuf(port: u16, bytes: i32) -> Raw {
    use std::os::fd::FromRawFd;
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let v: libc::c_int = bytes;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let rc = libc::connect(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect failed");
        let stream = TcpStream::from_raw_fd(fd);
        Raw {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Python's paho-mqtt

/// The Python that has paho-mqtt 2.x: `MIDGE_TEST_PYTHON` (scripts/test.sh points it at its
/// virtualenv, as Debian 12's python3-paho-mqtt is 1.6), else `python3`.
pub fn python() -> String {
    std::env::var("MIDGE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// True when Python's paho-mqtt is importable; otherwise says how to get it (and fails when
/// `MIDGE_TEST_REQUIRE_ALL` is set, as scripts/test.sh does, so CI never skips these).
pub fn paho_available() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import paho.mqtt.client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "skipped: Python paho-mqtt is not installed (scripts/test.sh installs it); it is the \
             third-party client this test uses"
        );
        assert!(
            std::env::var_os("MIDGE_TEST_REQUIRE_ALL").is_none(),
            "MIDGE_TEST_REQUIRE_ALL is set but {} cannot import paho.mqtt",
            python()
        );
    }
    ok
}

// ---------------------------------------------------------------------------------------------
// mosquitto_pub / mosquitto_sub

/// Runs `mosquitto_pub -h 127.0.0.1 -p PORT ARGS...` (hard limit 10 s) and asserts success.
pub fn mosquitto_pub(port: u16, args: &[&str]) -> Output {
    mosquitto_pub_stdin(port, args, None)
}

pub fn mosquitto_pub_stdin(port: u16, args: &[&str], stdin: Option<Vec<u8>>) -> Output {
    let mut cmd = Command::new(MOSQUITTO_PUB);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    let out = run_with_timeout(cmd, stdin, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `mosquitto_pub -h 127.0.0.1 -p PORT ARGS...` (hard limit 30 s), success or not.
pub fn mosquitto_pub_unchecked(port: u16, args: &[&str]) -> Output {
    let mut cmd = Command::new(MOSQUITTO_PUB);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    run_with_timeout(cmd, None, Duration::from_secs(30))
}

/// Runs `mosquitto_sub -h 127.0.0.1 -p PORT -W secs ARGS...` to completion (hard kill after
/// `secs` + 3 s).
pub fn mosquitto_sub(port: u16, wait_secs: u32, args: &[&str]) -> Output {
    let mut cmd = Command::new(MOSQUITTO_SUB);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-W", &wait_secs.to_string()])
        .args(args);
    run_with_timeout(cmd, None, Duration::from_secs(wait_secs as u64 + 3))
}

/// A `mosquitto_sub` running in the background; its stdout lines are collected.
pub struct Sub {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sub {
    /// Spawns `mosquitto_sub -h 127.0.0.1 -p PORT -W secs ARGS...`.
    pub fn spawn(port: u16, wait_secs: u32, args: &[&str]) -> Sub {
        let mut cmd = Command::new(MOSQUITTO_SUB);
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-W", &wait_secs.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn mosquitto_sub");
        let lines = Arc::new(Mutex::new(Vec::new()));
        collect_lines(child.stdout.take().unwrap(), lines.clone(), false);
        collect_lines(
            child.stderr.take().unwrap(),
            Arc::new(Mutex::new(Vec::new())),
            false,
        );
        Sub { child, lines }
    }

    /// Waits until at least `n` lines were printed; returns all lines so far.
    pub fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let l = self.lines.lock().unwrap().clone();
            if l.len() >= n || Instant::now() >= deadline {
                return l;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for exit (bounded) and returns the lines and the status.
    pub fn finish(mut self, timeout: Duration) -> (Vec<String>, Option<ExitStatus>) {
        let st = wait_child(&mut self.child, timeout);
        thread::sleep(Duration::from_millis(50));
        let l = self.lines.lock().unwrap().clone();
        (l, st)
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// rumqttc (sync client, events pumped into a channel by a thread)

pub use rumqttc;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

pub struct Mq {
    pub client: Client,
    pub rx: Receiver<Event>,
}

pub fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl Mq {
    pub fn options(port: u16, id: &str) -> MqttOptions {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_max_packet_size(1 << 20, 1 << 20);
        o
    }

    /// Connects and waits (bounded) for the CONNACK.
    pub fn connect(port: u16, id: &str) -> Mq {
        Self::connect_with(Self::options(port, id))
    }

    pub fn connect_with(o: MqttOptions) -> Mq {
        let (client, mut connection) = Client::new(o, 100);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for ev in connection.iter() {
                match ev {
                    Ok(e) => {
                        if tx.send(e).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let mq = Mq { client, rx };
        mq.wait_for(WAIT, |p| matches!(p, Packet::ConnAck(_)))
            .expect("rumqttc: no CONNACK");
        mq
    }

    /// Waits for an incoming packet matching `f`, skipping others.
    pub fn wait_for(&self, timeout: Duration, f: impl Fn(&Packet) -> bool) -> Option<Packet> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Event::Incoming(p)) if f(&p) => return Some(p),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub fn subscribe(&self, filter: &str, q: u8) {
        self.client.subscribe(filter, qos(q)).expect("subscribe");
        self.wait_for(WAIT, |p| matches!(p, Packet::SubAck(_)))
            .expect("rumqttc: no SUBACK");
    }

    pub fn publish(&self, topic: &str, q: u8, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos(q), retain, payload.to_vec())
            .expect("publish");
    }

    /// The next incoming PUBLISH within `timeout`.
    pub fn next_publish(&self, timeout: Duration) -> Option<rumqttc::Publish> {
        match self.wait_for(timeout, |p| matches!(p, Packet::Publish(_))) {
            Some(Packet::Publish(p)) => Some(p),
            _ => None,
        }
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
    }
}

/// A small deterministic PRNG (xorshift64*) for reproducible random input.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Creates a password file with Debian's mosquitto_passwd (the format midge must read).
pub fn passwd_file(dir: &TempDir, users: &[(&str, &str)]) -> std::path::PathBuf {
    let path = dir.path().join("passwd");
    for (i, (user, pass)) in users.iter().enumerate() {
        let mut cmd = std::process::Command::new("/usr/bin/mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd
            .arg("-b")
            .arg(&path)
            .arg(user)
            .arg(pass)
            .status()
            .expect("mosquitto_passwd runs");
        assert!(status.success());
    }
    path
}
