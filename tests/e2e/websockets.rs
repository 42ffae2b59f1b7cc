//! WebSocket listeners end to end. The happy paths use Python's paho-mqtt 2.x with
//! `transport="websockets"` (a client nobody here wrote; the tests say so and skip when it is
//! not installed: `pip install paho-mqtt`), over `ws://` and `wss://`, sharing topics and
//! retained messages with plain TCP clients. The edge cases use a raw WebSocket client written
//! below, because no library sends an MQTT packet split across frames on purpose, a text frame,
//! or a broken upgrade request. Every test checks that other clients are still served.

use crate::common::certs::{listener_ports, s, Ca};
use crate::common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// paho-mqtt over WebSockets

/// A paho-mqtt client driven by arguments: `sub PORT` prints "subscribed" after SUBACK, then
/// "TOPIC PAYLOAD" per message until `--count`; `pub PORT` publishes one message and waits
/// for it to complete. Exit status 0 on success.
const PAHO_SCRIPT: &str = r##"
import argparse, sys, time
import paho.mqtt.client as mqtt

p = argparse.ArgumentParser()
p.add_argument("mode", choices=["sub", "pub"])
p.add_argument("port", type=int)
p.add_argument("--topic", default="#")
p.add_argument("--message", default="")
p.add_argument("--qos", type=int, default=0)
p.add_argument("--retain", action="store_true")
p.add_argument("--count", type=int, default=1)
p.add_argument("--id", default="paho-ws")
p.add_argument("--version", default="311")
p.add_argument("--cafile")
p.add_argument("--timeout", type=float, default=15)
p.add_argument("--sizes", action="store_true", help="print payload sizes, not payloads")
p.add_argument("--repeat", type=int, default=0, help="publish the message repeated N times")
a = p.parse_args()

proto = {"31": mqtt.MQTTv31, "311": mqtt.MQTTv311, "5": mqtt.MQTTv5}[a.version]
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=a.id,
                transport="websockets", protocol=proto)
if a.cafile:
    c.tls_set(ca_certs=a.cafile)
state = {"done": False, "got": 0}

def on_connect(client, userdata, flags, reason_code, properties):
    if reason_code.is_failure:
        print("connack failed", reason_code, flush=True)
        sys.exit(2)
    if a.mode == "sub":
        client.subscribe(a.topic, a.qos)
    else:
        payload = a.message * a.repeat if a.repeat else a.message
        client.publish(a.topic, payload, a.qos, a.retain)

def on_subscribe(client, userdata, mid, reason_codes, properties):
    print("subscribed", flush=True)

def on_message(client, userdata, msg):
    print(msg.topic, len(msg.payload) if a.sizes else msg.payload.decode(), flush=True)
    state["got"] += 1
    if state["got"] >= a.count:
        state["done"] = True
        client.disconnect()

def on_publish(client, userdata, mid, reason_code, properties):
    state["done"] = True
    client.disconnect()

c.on_connect = on_connect
c.on_subscribe = on_subscribe
c.on_message = on_message
c.on_publish = on_publish
c.connect("127.0.0.1", a.port, 60)
deadline = time.time() + a.timeout
while not state["done"] and time.time() < deadline:
    c.loop(0.05)
sys.exit(0 if state["done"] else 1)
"##;

struct Paho {
    script: std::path::PathBuf,
    _dir: TempDir,
}

impl Paho {
    fn new() -> Paho {
        let dir = TempDir::new();
        let script = dir.write("paho_ws.py", PAHO_SCRIPT);
        Paho { script, _dir: dir }
    }

    fn command(&self, mode: &str, port: u16, args: &[&str]) -> Command {
        let mut cmd = Command::new(python());
        cmd.arg(&self.script)
            .arg(mode)
            .arg(port.to_string())
            .args(args);
        cmd
    }

    /// Publishes and waits for completion.
    fn publish(&self, port: u16, args: &[&str]) -> Output {
        let out = run_with_timeout(
            self.command("pub", port, args),
            None,
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "paho publish {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A subscriber in the background, returned once its SUBACK arrived.
    fn subscribe(&self, port: u16, args: &[&str]) -> Background {
        let mut cmd = self.command("sub", port, args);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let bg = Background::spawn(cmd);
        assert!(
            bg.wait_line("subscribed", Duration::from_secs(15)),
            "paho subscriber never got SUBACK: {:?} {}",
            bg.lines(),
            bg.stderr()
        );
        bg
    }
}

/// A child process whose stdout lines are collected by a thread.
struct Background {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    err: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Background {
    fn spawn(mut cmd: Command) -> Background {
        let mut child = cmd.spawn().expect("spawn python3");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (out, stderr) = (child.stdout.take(), child.stderr.take());
        let l = lines.clone();
        std::thread::spawn(move || {
            if let Some(out) = out {
                use std::io::BufRead;
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            }
        });
        let e = err.clone();
        std::thread::spawn(move || {
            if let Some(mut stderr) = stderr {
                let mut text = String::new();
                let _ = stderr.read_to_string(&mut text);
                *e.lock().unwrap() = text;
            }
        });
        Background { child, lines, err }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    fn wait_line(&self, want: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.lines().iter().any(|l| l == want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits for exit (killing after `timeout`); the lines other than "subscribed".
    fn finish(mut self, timeout: Duration) -> (Vec<String>, bool) {
        let ok = wait_child(&mut self.child, timeout).is_some_and(|s| s.success());
        std::thread::sleep(Duration::from_millis(50));
        let lines = self
            .lines()
            .into_iter()
            .filter(|l| l != "subscribed")
            .collect();
        (lines, ok)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A broker with the harness's plain TCP listener and a WebSocket listener configured by
/// `extra`; returns (broker, TCP port, WebSocket port).
fn ws_broker(extra: &str) -> (Broker, u16, u16) {
    let b = Broker::start(&format!(
        "listener 0 127.0.0.1\nprotocol websockets\n{extra}"
    ));
    let ports = listener_ports(&b, 2);
    (b, ports[0], ports[1])
}

#[test]
fn paho_over_websockets_shares_topics_and_retained_messages_with_tcp_clients() {
    if skip_on_mosquitto("listener layout of midge's harness") || !paho_available() {
        return;
    }
    let paho = Paho::new();
    let (mut b, tcp, ws) = ws_broker("");
    mosquitto_pub(
        tcp,
        &[
            "-t",
            "home/kept",
            "-m",
            "retained-over-tcp",
            "-r",
            "-q",
            "1",
        ],
    );

    let mut tcp_sub = Raw::mqtt_connect(tcp, "tcp-sub");
    tcp_sub.subscribe(1, &[("home/#", 1)], &[1]);
    let ws_sub = paho.subscribe(
        ws,
        &[
            "--topic", "home/#", "--qos", "1", "--count", "4", "--id", "ws-sub",
        ],
    );
    // MQTT 3.1.1 and 5.0 over WebSockets, and plain TCP, all to both subscribers.
    paho.publish(
        ws,
        &[
            "--topic",
            "home/ws",
            "--message",
            "from-ws",
            "--qos",
            "1",
            "--id",
            "p1",
        ],
    );
    paho.publish(
        ws,
        &[
            "--topic",
            "home/ws5",
            "--message",
            "from-ws-v5",
            "--qos",
            "2",
            "--version",
            "5",
            "--id",
            "p5",
        ],
    );
    mosquitto_pub(tcp, &["-t", "home/tcp", "-m", "from-tcp", "-q", "1"]);

    let (lines, ok) = ws_sub.finish(Duration::from_secs(15));
    assert!(ok, "paho subscriber did not get 4 messages: {lines:?}");
    assert_eq!(
        lines,
        vec![
            "home/kept retained-over-tcp",
            "home/ws from-ws",
            "home/ws5 from-ws-v5",
            "home/tcp from-tcp"
        ]
    );
    let got: Vec<(String, Vec<u8>)> = tcp_sub
        .collect_publishes(4, WAIT)
        .iter()
        .map(|p| (p.topic(), p.payload().to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("home/kept".to_string(), b"retained-over-tcp".to_vec()),
            ("home/ws".to_string(), b"from-ws".to_vec()),
            ("home/ws5".to_string(), b"from-ws-v5".to_vec()),
            ("home/tcp".to_string(), b"from-tcp".to_vec()),
        ]
    );
    assert!(b.wait_for_log("New client connected from 127.0.0.1:", WAIT));
    b.assert_serves();
}

#[test]
fn mqtt_3_1_client_gets_its_mqttv3_1_subprotocol() {
    if skip_on_mosquitto("listener layout of midge's harness") || !paho_available() {
        return;
    }
    let paho = Paho::new();
    let (mut b, tcp, ws) = ws_broker("");
    let mut sub = Raw::mqtt_connect(tcp, "tcp-sub");
    sub.subscribe(1, &[("old/#", 0)], &[0]);
    paho.publish(
        ws,
        &[
            "--topic",
            "old/v31",
            "--message",
            "hi",
            "--version",
            "31",
            "--id",
            "v31",
        ],
    );
    assert_eq!(sub.expect_packet(WAIT).payload(), b"hi");
    assert!(
        b.wait_for_log("as v31 (p1,", WAIT),
        "{}",
        b.logs().join("\n")
    );
    b.assert_serves();
}

#[test]
fn paho_over_secure_websockets() {
    if skip_on_mosquitto("listener layout of midge's harness") || !paho_available() {
        return;
    }
    let paho = Paho::new();
    let dir = TempDir::new();
    let ca = Ca::new("midge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let server = ca.server(&dir, "server");
    let (mut b, tcp, wss) = ws_broker(&format!(
        "certfile {}\nkeyfile {}",
        s(&server.cert),
        s(&server.key)
    ));
    let sub = paho.subscribe(
        wss,
        &[
            "--topic",
            "secure/#",
            "--count",
            "2",
            "--cafile",
            s(&ca_file),
            "--id",
            "wss-sub",
        ],
    );
    paho.publish(
        wss,
        &[
            "--topic",
            "secure/wss",
            "--message",
            "hidden",
            "--qos",
            "1",
            "--cafile",
            s(&ca_file),
        ],
    );
    mosquitto_pub(tcp, &["-t", "secure/tcp", "-m", "open"]);
    let (lines, ok) = sub.finish(Duration::from_secs(15));
    assert!(ok, "{lines:?}");
    assert_eq!(lines, vec!["secure/wss hidden", "secure/tcp open"]);

    // A plain ws:// client on the wss port: refused in words.
    let mut raw = TcpStream::connect(("127.0.0.1", wss)).unwrap();
    raw.write_all(upgrade_request(Some("mqtt")).as_bytes())
        .unwrap();
    assert!(b.wait_for_log(
        "TLS handshake failed: the client sent a plain HTTP request",
        WAIT
    ));
    b.assert_serves();
}

// ---------------------------------------------------------------------------------------------
// A raw WebSocket client, for what libraries never do on purpose

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

fn upgrade_request(protocol: Option<&str>) -> String {
    let mut req = String::from(
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    );
    if let Some(p) = protocol {
        req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    req.push_str("\r\n");
    req
}

struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Ws {
    fn tcp(port: u16) -> Ws {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).ok();
        Ws {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and upgrades; returns the client and the response head.
    fn upgrade(port: u16, protocol: Option<&str>) -> (Ws, String) {
        let mut ws = Ws::tcp(port);
        ws.stream
            .write_all(upgrade_request(protocol).as_bytes())
            .unwrap();
        let head = ws.response_head(WAIT);
        (ws, head)
    }

    /// Upgrades with subprotocol `mqtt` and completes an MQTT CONNECT.
    fn mqtt(port: u16, id: &str) -> Ws {
        let (mut ws, head) = Ws::upgrade(port, Some("mqtt"));
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        ws.send_frame(OP_BINARY, true, &Connect::v311(id).bytes());
        assert_eq!(ws.mqtt_bytes(4, WAIT), [0x20, 2, 0, 0]);
        ws
    }

    /// Reads the HTTP response head (up to the blank line).
    fn response_head(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            if !self.fill(deadline) {
                return String::from_utf8_lossy(&self.buf).into_owned();
            }
        }
    }

    /// Reads more bytes; false on end of file, error or deadline.
    fn fill(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        self.stream.set_read_timeout(Some(left)).ok();
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(_) => false,
        }
    }

    /// Sends one masked frame (clients must mask, RFC 6455 §5.3).
    fn send_frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) {
        let _ = self.stream.write_all(&frame(opcode, fin, payload));
    }

    /// The next frame from the server: (opcode, payload); None on end of file or timeout.
    fn read_frame(&mut self, timeout: Duration) -> Option<(u8, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                let (len, header) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                        4,
                    ),
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (usize::from(n), 2),
                };
                if len != usize::MAX && self.buf.len() >= header + len {
                    let opcode = self.buf[0] & 0x0f;
                    let payload = self.buf[header..header + len].to_vec();
                    self.buf.drain(..header + len);
                    return Some((opcode, payload));
                }
            }
            if !self.fill(deadline) {
                return None;
            }
        }
    }

    /// Gathers `n` MQTT bytes from binary frames.
    fn mqtt_bytes(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Some((OP_BINARY | OP_CONTINUATION, payload)) => out.extend_from_slice(&payload),
                Some((op, payload)) => panic!("unexpected frame {op:#x} {payload:?}"),
                None => panic!("connection ended after {out:?}, wanted {n} bytes"),
            }
        }
        out
    }

    /// True when the server closes the TCP connection within `timeout` (frames before the
    /// end are returned through `frames`).
    fn closes_within(&mut self, timeout: Duration, frames: &mut Vec<(u8, Vec<u8>)>) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.read_frame(left) {
                Some(f) => frames.push(f),
                None => return Instant::now() < deadline,
            }
        }
    }
}

fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// PINGREQ over WebSocket gets PINGRESP: the connection is alive and served.
fn assert_ws_served(ws: &mut Ws) {
    ws.send_frame(OP_BINARY, true, &[0xc0, 0]);
    assert_eq!(ws.mqtt_bytes(2, WAIT), [0xd0, 0]);
}

/// v311:[MQTT-6.0.0-4]
/// v5:[MQTT-6.0.0-4]
#[test]
fn upgrade_answers_with_the_mqtt_subprotocol() {
    if skip_on_mosquitto("listener layout of midge's harness") {
        return;
    }
    let (mut b, _tcp, ws) = ws_broker("");
    for (offered, chosen) in [
        (Some("mqtt"), Some("mqtt")),
        (Some("mqttv3.1"), Some("mqttv3.1")),
        (Some("wamp, mqtt"), Some("mqtt")),
        (None, None),
    ] {
        let (mut client, head) = Ws::upgrade(ws, offered);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // Header names are case-insensitive (RFC 9110); tungstenite sends them lower case.
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        match chosen {
            Some(p) => assert!(
                lower.contains(&format!("sec-websocket-protocol: {p}\r\n")),
                "{head}"
            ),
            None => assert!(!lower.contains("sec-websocket-protocol"), "{head}"),
        }
        client.send_frame(OP_BINARY, true, &Connect::v311("upgrade-check").bytes());
        assert_eq!(client.mqtt_bytes(4, WAIT), [0x20, 2, 0, 0]);
    }
    b.assert_serves();
}

/// v311:[MQTT-6.0.0-2]
/// v5:[MQTT-6.0.0-2]
#[test]
fn packet_split_across_frames_and_packets_sharing_a_frame() {
    if skip_on_mosquitto("listener layout of midge's harness") {
        return;
    }
    let (mut b, tcp, ws) = ws_broker("");
    let (mut client, head) = Ws::upgrade(ws, Some("mqtt"));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    // CONNECT in three binary messages, cut mid-header and mid-client-id.
    let connect = Connect::v311("split-ws").bytes();
    client.send_frame(OP_BINARY, true, &connect[..1]);
    client.send_frame(OP_BINARY, true, &connect[1..9]);
    std::thread::sleep(Duration::from_millis(50));
    client.send_frame(OP_BINARY, true, &connect[9..]);
    assert_eq!(client.mqtt_bytes(4, WAIT), [0x20, 2, 0, 0]);

    // SUBSCRIBE split across a fragmented message (continuation frames), then PUBLISH and
    // PINGREQ together in one frame.
    let sub = subscribe(1, &[("frames/#", 1)]);
    client.send_frame(OP_BINARY, false, &sub[..3]);
    client.send_frame(OP_CONTINUATION, false, &sub[3..6]);
    client.send_frame(OP_CONTINUATION, true, &sub[6..]);
    assert_eq!(client.mqtt_bytes(5, WAIT), suback(1, &[1]));
    let mut both = publish("frames/a", b"two-in-one", 1, false, false, 9);
    both.extend_from_slice(&[0xc0, 0]);
    client.send_frame(OP_BINARY, true, &both);
    // The answers: PUBACK, the message routed back to this subscriber, PINGRESP, in whatever
    // framing (and the order the broker chooses between the first two).
    let echoed = publish("frames/a", b"two-in-one", 1, false, false, 1);
    let got = client.mqtt_bytes(puback(9).len() + echoed.len() + 2, WAIT);
    let has = |part: &[u8]| got.windows(part.len()).any(|w| w == part);
    assert!(has(&puback(9)) && has(&echoed), "{got:?}");
    assert!(got.ends_with(&[0xd0, 0]), "{got:?}");

    // A TCP client's publish reaches the WebSocket subscriber.
    mosquitto_pub(tcp, &["-t", "frames/tcp", "-m", "via-tcp"]);
    let p = client.mqtt_bytes(2 + 2 + "frames/tcp".len() + 7, WAIT);
    assert_eq!(p, publish("frames/tcp", b"via-tcp", 0, false, false, 0));
    b.assert_serves();
}

#[test]
fn ping_is_ponged_and_close_is_answered() {
    if skip_on_mosquitto("listener layout of midge's harness") {
        return;
    }
    let (mut b, _tcp, ws) = ws_broker("");
    let mut client = Ws::mqtt(ws, "pinger");
    client.send_frame(OP_PING, true, b"are you there");
    assert_eq!(
        client.read_frame(WAIT),
        Some((OP_PONG, b"are you there".to_vec()))
    );
    assert_ws_served(&mut client);
    // Close handshake: the broker answers with a close frame and ends the connection.
    client.send_frame(OP_CLOSE, true, &1000u16.to_be_bytes());
    let mut frames = Vec::new();
    assert!(client.closes_within(WAIT, &mut frames));
    assert_eq!(frames.first().map(|f| f.0), Some(OP_CLOSE), "{frames:?}");
    assert!(b.wait_for_log("Client pinger closed its connection.", WAIT));
    b.assert_serves();
}

#[test]
fn broker_initiated_close_sends_a_close_frame() {
    if skip_on_mosquitto("listener layout of midge's harness") {
        return;
    }
    let (mut b, _tcp, ws) = ws_broker("");
    let mut client = Ws::mqtt(ws, "leaver");
    client.send_frame(OP_BINARY, true, &[0xe0, 0]); // DISCONNECT
    let mut frames = Vec::new();
    assert!(client.closes_within(WAIT, &mut frames));
    assert_eq!(frames.last().map(|f| f.0), Some(OP_CLOSE), "{frames:?}");
    b.assert_serves();
}

/// v311:[MQTT-6.0.0-1]
/// v5:[MQTT-6.0.0-1]
#[test]
fn text_frame_closes_only_that_connection() {
    if skip_on_mosquitto("listener layout of midge's harness") {
        return;
    }
    let (mut b, _tcp, ws) = ws_broker("");
    let mut bystander = Ws::mqtt(ws, "bystander");
    let mut client = Ws::mqtt(ws, "texter");
    let local = client.stream.local_addr().unwrap().port();
    client.send_frame(OP_TEXT, true, b"hello");
    let mut frames = Vec::new();
    assert!(client.closes_within(WAIT, &mut frames), "still open");
    // Close code 1003: "unsupported data".
    assert_eq!(frames, vec![(OP_CLOSE, 1003u16.to_be_bytes().to_vec())]);
    let want = format!(
        "Client 127.0.0.1:{local} WebSocket error: the client sent a text frame (MQTT needs \
         binary frames)."
    );
    assert!(b.wait_for_log(&want, WAIT), "{}", b.logs().join("\n"));
    assert_ws_served(&mut bystander);
    b.assert_serves();
}

#[test]
fn bad_upgrade_requests_get_400_and_a_log_line() {
    if skip_on_mosquitto("listener layout of midge's harness") {
        return;
    }
    let (mut b, _tcp, ws) = ws_broker("");
    let mut bystander = Ws::mqtt(ws, "bystander");
    let mqtt_connect = Connect::v311("mqtt-on-ws").bytes();
    let stomp = upgrade_request(Some("stomp"));
    let cases: [(&[u8], &str); 3] = [
        (
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            "WebSocket handshake failed: not a valid WebSocket upgrade request",
        ),
        (
            &mqtt_connect,
            "WebSocket handshake failed: not a valid WebSocket upgrade request",
        ),
        (
            stomp.as_bytes(),
            "WebSocket handshake failed: the client offered the subprotocols \"stomp\" but not mqtt",
        ),
    ];
    for (request, log) in cases {
        let mut client = Ws::tcp(ws);
        let local = client.stream.local_addr().unwrap().port();
        client.stream.write_all(request).unwrap();
        let head = client.response_head(WAIT);
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
        let mut rest = Vec::new();
        assert!(client.closes_within(WAIT, &mut rest));
        let want = format!("Client 127.0.0.1:{local} {log}");
        assert!(
            b.wait_for_log(&want, WAIT),
            "{want}\n{}",
            b.logs().join("\n")
        );
    }
    assert_ws_served(&mut bystander);
    b.assert_serves();
}

#[test]
fn oversized_frame_is_refused_before_it_is_buffered() {
    if skip_on_mosquitto("listener layout of midge's harness") {
        return;
    }
    let (mut b, _tcp, ws) = ws_broker("");
    let mut client = Ws::mqtt(ws, "big");
    // A header announcing a 1 GiB binary frame, and no payload.
    let mut header = vec![0x80 | OP_BINARY, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    client.stream.write_all(&header).unwrap();
    let mut frames = Vec::new();
    assert!(client.closes_within(WAIT, &mut frames));
    assert_eq!(frames, vec![(OP_CLOSE, 1009u16.to_be_bytes().to_vec())]);
    assert!(b.wait_for_log("WebSocket error: frame too large", WAIT));
    b.assert_serves();
}

#[test]
fn max_connections_applies_to_websocket_listeners() {
    if skip_on_mosquitto("Mosquitto 2.0 ignores max_connections on websockets listeners") {
        return;
    }
    let (mut b, _tcp, ws) = ws_broker("max_connections 2");
    let first = Ws::mqtt(ws, "ws-1");
    let mut second = Ws::mqtt(ws, "ws-2");
    let mut third = Ws::tcp(ws);
    third
        .stream
        .write_all(upgrade_request(Some("mqtt")).as_bytes())
        .unwrap();
    let mut frames = Vec::new();
    assert!(
        third.closes_within(WAIT, &mut frames),
        "third connection served"
    );
    assert!(
        third.buf.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&third.buf)
    );
    assert!(b.wait_for_log("max_connections exceeded", WAIT));

    // A slot frees up when a client leaves.
    drop(first);
    assert!(b.wait_for_log("Client ws-1 closed its connection.", WAIT));
    let mut fourth = Ws::mqtt(ws, "ws-4");
    assert_ws_served(&mut fourth);
    assert_ws_served(&mut second);
    b.assert_serves();
}

#[test]
fn upgrade_request_and_first_frame_in_one_segment() {
    if skip_on_mosquitto("listener layout of midge's harness") {
        return;
    }
    let (mut b, _tcp, ws) = ws_broker("");
    let mut client = Ws::tcp(ws);
    let mut bytes = upgrade_request(Some("mqtt")).into_bytes();
    bytes.extend_from_slice(&frame(OP_BINARY, true, &Connect::v311("eager").bytes()));
    client.stream.write_all(&bytes).unwrap();
    let head = client.response_head(WAIT);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(client.mqtt_bytes(4, WAIT), [0x20, 2, 0, 0]);
    b.assert_serves();
}

#[test]
fn large_messages_cross_websocket_and_tls_layers_both_ways() {
    if skip_on_mosquitto("listener layout of midge's harness") {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("midge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let server = ca.server(&dir, "server");
    let conf = format!(
        "listener 0 127.0.0.1\nprotocol websockets\n\
         listener 0 127.0.0.1\nprotocol websockets\ncertfile {}\nkeyfile {}\n",
        s(&server.cert),
        s(&server.key)
    );
    let mut b = Broker::start(&conf);
    let ports = listener_ports(&b, 3);
    let (tcp, ws, wss) = (ports[0], ports[1], ports[2]);
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();

    // ws -> tcp: one 3 MB PUBLISH in one frame; tcp -> ws: the broker frames it for us.
    let mut ws_sub = Ws::mqtt(ws, "ws-big-sub");
    ws_sub.send_frame(OP_BINARY, true, &subscribe(1, &[("big/#", 0)]));
    assert_eq!(ws_sub.mqtt_bytes(5, WAIT), suback(1, &[0]));
    let mut tcp_sub = Raw::mqtt_connect(tcp, "tcp-big-sub");
    tcp_sub.subscribe(1, &[("big/#", 0)], &[0]);
    let mut ws_pub = Ws::mqtt(ws, "ws-big-pub");
    let packet = publish("big/ws", &big, 0, false, false, 0);
    ws_pub.send_frame(OP_BINARY, true, &packet);
    let p = tcp_sub.expect_packet(Duration::from_secs(20));
    assert_eq!(
        (p.topic(), p.payload().len()),
        ("big/ws".to_string(), big.len())
    );
    assert!(p.payload() == big.as_slice());
    let got = ws_sub.mqtt_bytes(packet.len(), Duration::from_secs(20));
    assert!(
        got == packet,
        "the WebSocket subscriber got a different message"
    );

    // Through TLS and WebSocket both (paho over wss), when paho is there.
    if paho_available() {
        let paho = Paho::new();
        let sub = paho.subscribe(
            wss,
            &[
                "--topic",
                "big/#",
                "--sizes",
                "--cafile",
                s(&ca_file),
                "--id",
                "wss-big",
            ],
        );
        let mut tcp_pub = Raw::mqtt_connect(tcp, "tcp-big-pub");
        tcp_pub.send(&publish("big/tcp", &big, 1, false, false, 3));
        tcp_pub.expect_bytes(&puback(3), Duration::from_secs(20));
        let (lines, ok) = sub.finish(Duration::from_secs(20));
        assert!(ok, "{lines:?}");
        assert_eq!(lines, vec![format!("big/tcp {}", big.len())]);
        paho.publish(
            wss,
            &[
                "--topic",
                "big/wss",
                "--message",
                "0123456789",
                "--repeat",
                "200000",
                "--cafile",
                s(&ca_file),
            ],
        );
        let topics: Vec<(String, usize)> = tcp_sub
            .collect_publishes(2, Duration::from_secs(20))
            .iter()
            .map(|p| (p.topic(), p.payload().len()))
            .collect();
        assert_eq!(
            topics,
            vec![
                ("big/tcp".to_string(), big.len()),
                ("big/wss".to_string(), 2_000_000)
            ]
        );
    }
    b.assert_serves();
}

/// The replay matrix over WebSockets: 5 000 retained messages arrive whole and once at every
/// protocol level and QoS (paho-mqtt).
#[test]
fn a_retained_replay_arrives_whole_over_websockets_at_every_protocol_level_and_qos() {
    if skip_on_mosquitto("listener layout of midge's harness") || !paho_available() {
        return;
    }
    let paho = Paho::new();
    let (_b, tcp, ws) = ws_broker("");
    let n = 5_000;
    fill_retained(tcp, "big", n);
    for v in ["31", "311", "5"] {
        for q in ["0", "1", "2"] {
            let count = n.to_string();
            let id = format!("ws-big-{v}-{q}");
            let args = [
                "--topic",
                "big/#",
                "--version",
                v,
                "--qos",
                q,
                "--count",
                &count,
                "--timeout",
                "60",
                "--id",
                &id,
            ];
            let (lines, ok) = paho.subscribe(ws, &args).finish(Duration::from_secs(90));
            let got: Vec<&String> = lines.iter().filter(|l| l.starts_with("big/")).collect();
            let distinct: std::collections::HashSet<&&String> = got.iter().collect();
            assert!(
                ok && got.len() == n && distinct.len() == n,
                "{v} QoS {q}: {} messages, {} distinct, of {n}",
                got.len(),
                distinct.len()
            );
        }
    }
}
