//! HTTP on WebSocket listeners end to end: the files of `http_dir` and `/metrics`, fetched with
//! curl (a client nobody here wrote), the output checked with Prometheus's `promtool`, and the
//! bad input (traversal, other methods, huge or endless heads, pipelining) sent by hand over a
//! socket, while an MQTT client over WebSockets (paho) shares the port and keeps working.

use crate::common::certs::listener_ports;
use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A broker with the harness's plain TCP listener and a WebSocket listener with `extra`;
/// returns (broker, TCP port, WebSocket port).
fn http_broker(extra: &str) -> (Broker, u16, u16) {
    let b = Broker::start(&format!(
        "listener 0 127.0.0.1\nprotocol websockets\n{extra}"
    ));
    let ports = listener_ports(&b, 2);
    (b, ports[0], ports[1])
}

/// A site: `index.html`, `sub/style.css`, a file named `metrics`, a symbolic link leading out
/// of the directory, and a secret beside it.
fn site() -> (TempDir, String) {
    let dir = TempDir::new();
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::write(www.join("index.html"), "<h1>midge</h1>\n").unwrap();
    std::fs::write(www.join("sub/style.css"), "h1 { color: teal }\n").unwrap();
    std::fs::write(www.join("metrics"), "a file, not the page\n").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "do not serve\n").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), www.join("out.txt")).unwrap();
    let www = www.to_str().unwrap().to_string();
    (dir, www)
}

/// One answer: status, header lines (lower-cased names) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// curl with `args` against `http://127.0.0.1:PORT/path`, the path sent as written.
fn curl(port: u16, path: &str, args: &[&str]) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-i", "--path-as-is", "--max-time", "10"])
        .args(args)
        .arg(format!("http://127.0.0.1:{port}{path}"));
    let out = run_with_timeout(cmd, None, Duration::from_secs(20));
    let mut answers = parse_answers(&out.stdout, args.contains(&"-I"));
    assert_eq!(answers.len(), 1, "curl {path} {args:?}: {out:?}");
    answers.remove(0)
}

/// Splits a byte stream into answers (each with a Content-Length); `head_only`: HEAD answers,
/// whose Content-Length has no body behind it.
fn parse_answers(mut bytes: &[u8], head_only: bool) -> Vec<Answer> {
    let mut answers = Vec::new();
    while let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {head:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let body_len = if head_only { 0 } else { len };
        let rest = &bytes[end + 4..];
        assert!(rest.len() >= body_len, "short body: {head}");
        answers.push(Answer {
            status,
            headers,
            body: rest[..body_len].to_vec(),
        });
        bytes = &rest[body_len..];
    }
    answers
}

/// Sends `request` on a new connection and reads until the broker closes it (or `timeout`);
/// returns what was read and whether the connection was closed.
fn exchange(port: u16, request: &[u8], timeout: Duration) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request).unwrap();
    read_until_closed(&mut s, timeout)
}

fn read_until_closed(s: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(_) => {}
        }
    }
    (got, false)
}

/// A connection to `port` whose receive buffer is small, so the broker cannot hand a large
/// answer to the kernel at once.
fn small_window_connect(port: u16) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor owned here until TcpStream takes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            len,
        );
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_port = port.to_be();
        sa.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let salen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(
            libc::connect(fd, (&sa as *const libc::sockaddr_in).cast(), salen),
            0
        );
        TcpStream::from_raw_fd(fd)
    }
}

/// `promtool check metrics` on `text`: None when it passes, else what it said. Skips (None)
/// when promtool is missing, unless `MIDGE_TEST_REQUIRE_ALL` is set.
fn promtool_problems(text: &str) -> Option<String> {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("skipped promtool: not installed (Debian package prometheus)");
        assert!(
            std::env::var_os("MIDGE_TEST_REQUIRE_ALL").is_none(),
            "MIDGE_TEST_REQUIRE_ALL is set but promtool is missing"
        );
        return None;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool also lints; any finding fails the test.
    (!out.status.success() || !said.trim().is_empty()).then_some(said)
}

#[test]
fn files_of_http_dir_are_served_and_nothing_outside_it() {
    if skip_on_mosquitto("midge's HTTP answers") {
        return;
    }
    let (_dir, www) = site();
    let (mut b, _, ws) = http_broker(&format!("http_dir {www}"));

    let index = curl(ws, "/", &[]);
    assert_eq!(index.status, 200);
    assert_eq!(index.text(), "<h1>midge</h1>\n");
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let css = curl(ws, "/sub/style.css?v=2", &[]);
    assert_eq!(
        (css.status, css.text().as_str()),
        (200, "h1 { color: teal }\n")
    );
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    // HEAD: the headers of GET, no body.
    let head = curl(ws, "/sub/style.css", &["-I"]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("19"));
    assert!(head.body.is_empty());
    // Without `metrics true`, `/metrics` is the file of that name.
    assert_eq!(curl(ws, "/metrics", &[]).text(), "a file, not the page\n");

    assert_eq!(curl(ws, "/missing.html", &[]).status, 404);
    assert_eq!(curl(ws, "/sub/missing/x", &[]).status, 404);
    // No directory listing.
    assert_eq!(curl(ws, "/sub", &[]).status, 403);
    // Out of the directory: `..` as written, encoded, mixed case, and a symbolic link.
    for path in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2e%2fsecret.txt",
        "/out.txt",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
    ] {
        let a = curl(ws, path, &[]);
        // An absolute path is taken as relative to the directory, where it is not found.
        let want = if path.contains("etc") { 404 } else { 403 };
        assert_eq!(a.status, want, "{path}: {}", a.text());
        assert!(
            !a.text().contains("do not serve") && !a.text().contains("root:"),
            "{path}"
        );
    }
    assert_eq!(curl(ws, "/%zz", &[]).status, 400);
    // Other methods: 405 with the methods that are served.
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let a = curl(ws, "/", &["-X", method, "--data", "x"]);
        assert_eq!(a.status, 405, "{method}");
        assert_eq!(a.header("allow"), Some("GET, HEAD"));
        assert_eq!(a.header("connection"), Some("close"));
    }
    b.assert_serves();
}

#[test]
fn a_listener_without_http_options_still_refuses_plain_requests() {
    if skip_on_mosquitto("midge's HTTP answers") {
        return;
    }
    let (mut b, _, ws) = http_broker("");
    let (got, closed) = exchange(ws, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", WAIT);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(closed);
    b.assert_serves();
}

#[test]
fn http_options_need_a_websockets_listener() {
    if skip_on_mosquitto("midge's own check") {
        return;
    }
    let dir = TempDir::new();
    let conf = dir.write("midge.conf", "listener 0 127.0.0.1\nmetrics true\n");
    let out = run_midge(&["-c", conf.to_str().unwrap()], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("only a listener with `protocol websockets`"),
        "{stderr}"
    );
    // An http_dir that is not there stops start-up too.
    let conf = dir.write(
        "midge.conf",
        "user root\nlistener 0 127.0.0.1\nprotocol websockets\nhttp_dir /nonexistent/www\n",
    );
    let out = run_midge(&["-c", conf.to_str().unwrap()], Duration::from_secs(10));
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Unable to open http_dir \"/nonexistent/www\""),
        "{stderr}"
    );
}

#[test]
fn metrics_want_a_users_credentials_and_pass_promtool() {
    if skip_on_mosquitto("midge's metrics") {
        return;
    }
    let dir = TempDir::new();
    let passwd = dir.path().join("passwd");
    let status = Command::new("/usr/bin/mosquitto_passwd")
        .arg("-c")
        .arg("-b")
        .arg(&passwd)
        .args(["prom", "scrape-me"])
        .status()
        .unwrap();
    assert!(status.success());
    let (_site, www) = site();
    let (mut b, tcp, ws) = http_broker(&format!(
        "http_dir {www}\nmetrics true\npassword_file {}",
        passwd.display()
    ));
    // A QoS 1 message and a connected subscriber to see in the figures.
    let mut sub = Raw::mqtt_connect(tcp, "watcher");
    sub.subscribe(1, &[("t/#", 1)], &[1]);
    mosquitto_pub(tcp, &["-t", "t/a", "-m", "hello", "-q", "1", "-r"]);
    sub.expect_packet(WAIT);

    let anonymous = curl(ws, "/metrics", &[]);
    assert_eq!(anonymous.status, 401);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some("Basic realm=\"midge\", charset=\"UTF-8\"")
    );
    assert_eq!(curl(ws, "/metrics", &["-u", "prom:wrong"]).status, 401);
    assert!(b.wait_for_log("HTTP client 127.0.0.1", WAIT));
    assert_eq!(
        curl(ws, "/metrics", &["-u", "nobody:scrape-me"]).status,
        401
    );

    let m = curl(ws, "/metrics", &["-u", "prom:scrape-me"]);
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = m.text();
    // The built-in page wins over the file of the same name.
    assert!(!text.contains("a file, not the page"));
    for line in [
        "midge_clients_connected 1\n",
        "midge_publish_messages_received_total{qos=\"1\"} 1\n",
        "midge_publish_messages_received_total{qos=\"0\"} 0\n",
        "midge_publish_messages_sent_total{qos=\"1\"} 1\n",
        "midge_retained_messages 1\n",
        "midge_subscriptions 1\n",
        &format!("midge_listener_connections{{port=\"{tcp}\"}} 1\n"),
        &format!("midge_listener_connections{{port=\"{ws}\"}} 1\n"),
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    assert!(text.contains("# TYPE midge_uptime_seconds gauge\n"));
    assert!(text.contains("\nprocess_resident_memory_bytes "));
    if let Some(problems) = promtool_problems(&text) {
        panic!("promtool check metrics:\n{problems}\n{text}");
    }
    // HEAD: the same headers, no body.
    let head = curl(ws, "/metrics", &["-I", "-u", "prom:scrape-me"]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    b.assert_serves();
}

#[test]
fn metrics_auth_false_opens_the_page_to_anyone() {
    if skip_on_mosquitto("midge's metrics") {
        return;
    }
    let (mut b, _, ws) = http_broker("metrics true\nmetrics_auth false");
    let m = curl(ws, "/metrics", &[]);
    assert_eq!(m.status, 200, "{}", m.text());
    assert!(m.text().contains("\nmidge_clients_connected 0\n"));
    // With metrics only, there are no files.
    assert_eq!(curl(ws, "/index.html", &[]).status, 404);
    b.assert_serves();
}

#[test]
fn pipelined_and_kept_alive_requests_are_answered_in_order() {
    if skip_on_mosquitto("midge's HTTP answers") {
        return;
    }
    let (_dir, www) = site();
    let (mut b, _, ws) = http_broker(&format!("http_dir {www}"));
    let mut s = TcpStream::connect(("127.0.0.1", ws)).unwrap();
    // Three requests in one segment; the last ends the connection.
    s.write_all(
        b"GET /sub/style.css HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD / HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n\
          GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let (got, closed) = read_until_closed(&mut s, WAIT);
    assert!(closed, "Connection: close leaves the connection open");
    // HEAD's Content-Length has no body behind it: split by hand around it.
    let text = String::from_utf8_lossy(&got);
    let parts: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(parts.len(), 4, "{text}");
    assert!(parts[0].starts_with("200 OK") && parts[0].ends_with("h1 { color: teal }\n"));
    assert!(
        parts[1].starts_with("200 OK")
            && parts[1].ends_with("Content-Length: 15\r\nConnection: keep-alive\r\n\r\n")
    );
    assert!(parts[2].starts_with("404 Not Found"));
    assert!(parts[3].starts_with("200 OK") && parts[3].contains("Connection: close\r\n"));
    assert!(parts[3].ends_with("<h1>midge</h1>\n"));

    // Keep-alive across separate writes, and HTTP/1.0 closes by default.
    let mut s = TcpStream::connect(("127.0.0.1", ws)).unwrap();
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = vec![0u8; 4096];
        s.set_read_timeout(Some(WAIT)).unwrap();
        let n = s.read(&mut buf).unwrap();
        let answers = parse_answers(&buf[..n], false);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].text(), "<h1>midge</h1>\n");
    }
    let (got, closed) = exchange(ws, b"GET / HTTP/1.0\r\n\r\n", WAIT);
    assert!(closed && parse_answers(&got, false)[0].status == 200);
    b.assert_serves();
}

#[test]
fn a_large_file_arrives_whole_before_the_connection_closes() {
    if skip_on_mosquitto("midge's HTTP answers") {
        return;
    }
    let (dir, www) = site();
    // Larger than any socket buffer: most of it is written after the request was read.
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(Path::new(&www).join("big.bin"), &big).unwrap();
    std::fs::write(Path::new(&www).join("huge.bin"), vec![0u8; 5 << 20]).unwrap();
    let (mut b, _, ws) = http_broker(&format!("http_dir {www}"));
    let mut s = small_window_connect(ws);
    s.write_all(b"GET /big.bin HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    // A slow reader: nothing read for a moment, so the socket fills.
    std::thread::sleep(Duration::from_millis(300));
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(20));
    assert!(closed);
    let answers = parse_answers(&got, false);
    assert_eq!(
        answers[0].header("content-type"),
        Some("application/octet-stream")
    );
    assert!(answers[0].body == big, "the file arrived cut short");
    // Over the 4 MiB bound: refused, with a warning.
    assert_eq!(curl(ws, "/huge.bin", &[]).status, 500);
    assert!(b.wait_for_log("larger than 4 MiB", WAIT));
    drop(dir);
    b.assert_serves();
}

#[test]
fn huge_broken_and_slow_requests_are_closed() {
    if skip_on_mosquitto("midge's HTTP answers") {
        return;
    }
    let (_dir, www) = site();
    let (mut b, _, ws) = http_broker(&format!("http_dir {www}\nconnect_timeout 1"));
    // A head that never ends: 431 once it passes 16 KiB.
    let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
    huge.extend_from_slice(format!("Cookie: {}\r\n", "c".repeat(20_000)).as_bytes());
    let (got, closed) = exchange(ws, &huge, WAIT);
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(closed);
    // Complete, but as large.
    huge.extend_from_slice(b"\r\n");
    let (got, closed) = exchange(ws, &huge, WAIT);
    assert!(got.starts_with(b"HTTP/1.1 431 ") && closed);
    // Too many headers, and bytes that are not HTTP.
    let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(100));
    let (got, closed) = exchange(ws, many.as_bytes(), WAIT);
    assert!(got.starts_with(b"HTTP/1.1 431 ") && closed);
    let (got, closed) = exchange(ws, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\r\n\r\n", WAIT);
    assert!(got.starts_with(b"HTTP/1.1 400 ") && closed);
    // A GET with a body: 400, closed (the body cannot be told from the next request).
    let (got, closed) = exchange(
        ws,
        b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        WAIT,
    );
    assert!(got.starts_with(b"HTTP/1.1 400 ") && closed);
    // Slowloris: half a request, then nothing; closed after connect_timeout like MQTT.
    let started = Instant::now();
    let (got, closed) = exchange(ws, b"GET / HTTP/1.1\r\nHost: x\r\n", Duration::from_secs(8));
    assert!(got.is_empty() && closed, "a slow request was kept open");
    assert!(started.elapsed() < Duration::from_secs(4));
    // An idle kept-alive connection too.
    let mut s = TcpStream::connect(("127.0.0.1", ws)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let (got, closed) = read_until_closed(&mut s, Duration::from_secs(8));
    assert!(closed && parse_answers(&got, false)[0].status == 200);
    b.assert_serves();
}

/// A paho-mqtt subscriber over WebSockets: prints "subscribed" after SUBACK, then each
/// payload, until `count` messages.
const PAHO_SUB: &str = r#"
import sys, time
import paho.mqtt.client as mqtt
port, count = int(sys.argv[1]), int(sys.argv[2])
got = []
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ws-sub", transport="websockets")
c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("web/#", 1)
c.on_subscribe = lambda cl, u, m, rc, p: print("subscribed", flush=True)
def on_message(cl, u, msg):
    got.append(msg.payload)
    print(msg.payload.decode(), flush=True)
c.on_message = on_message
c.connect("127.0.0.1", port, 60)
deadline = time.time() + 20
while len(got) < count and time.time() < deadline:
    c.loop(0.05)
sys.exit(0 if len(got) >= count else 1)
"#;

#[test]
fn websocket_mqtt_clients_share_the_port_with_http() {
    if skip_on_mosquitto("midge's HTTP answers") || !paho_available() {
        return;
    }
    let (dir, www) = site();
    let script = dir.write("sub.py", PAHO_SUB);
    let (mut b, tcp, ws) =
        http_broker(&format!("http_dir {www}\nmetrics true\nmetrics_auth false"));
    let mut child = Command::new(python())
        .arg(&script)
        .args([ws.to_string(), "2".to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !String::from_utf8_lossy(&seen).contains("subscribed\n") {
        assert!(Instant::now() < deadline, "paho never subscribed");
        let mut buf = [0u8; 256];
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "paho exited");
        seen.extend_from_slice(&buf[..n]);
    }
    // HTTP on the same port while the WebSocket client is connected, bad requests included.
    mosquitto_pub(tcp, &["-t", "web/1", "-m", "before", "-q", "1"]);
    for _ in 0..5 {
        assert_eq!(curl(ws, "/", &[]).status, 200);
        assert_eq!(curl(ws, "/../x", &[]).status, 403);
        let (_, closed) = exchange(ws, b"BREW / HTCPCP/1.0\r\n\r\n", WAIT);
        assert!(closed);
    }
    let m = curl(ws, "/metrics", &[]);
    assert!(m
        .text()
        .contains(&format!("midge_listener_connections{{port=\"{ws}\"}} ")));
    mosquitto_pub(tcp, &["-t", "web/2", "-m", "after", "-q", "1"]);
    let status = wait_child(&mut child, Duration::from_secs(20));
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    let all = format!("{}{rest}", String::from_utf8_lossy(&seen));
    assert!(status.is_some_and(|s| s.success()), "paho: {all}");
    assert!(all.contains("before\n") && all.contains("after\n"), "{all}");
    b.assert_serves();
}
