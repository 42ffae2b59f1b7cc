//! `midge_ctrl`: administer a running midge from the shell, through its `$CONTROL/midge/v1`
//! API, with options in the style of Mosquitto's `mosquitto_ctrl`:
//!
//! ```text
//! midge_ctrl [-h host] [-p port] [-u username] [-P password] [-i client-id]
//!            [--cafile file [--cert file --key file]] [-W seconds] [--json] COMMAND
//!   clients list            the connected clients, one line each
//!   clients show CLIENT-ID  one client, with its subscriptions
//!   clients kick CLIENT-ID  disconnect a client (its will is not sent)
//! ```
//!
//! It is a plain MQTT 5 client written with midge's own codec: CONNECT, SUBSCRIBE to
//! `$CONTROL/midge/v1/response`, PUBLISH the request at QoS 1, wait for the answer. midge
//! serves the API only to users an ACL rule (or a dynamic-security role) grants it; a refusal
//! comes back as the PUBACK's Not authorized, and `midge_ctrl` says so. The exit status is 0
//! when the command did what it says, 1 when it did not (refused, unknown client, no answer in
//! time, connection failed), 2 for a command line it does not understand.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use midge::codec::{
    self, reason, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, Subscribe,
    SubscribeOptions, Subscription,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};

const USAGE: &str = "\
midge_ctrl is a tool for administering a running midge broker.

Usage: midge_ctrl [general options] clients list
       midge_ctrl [general options] clients show <client-id>
       midge_ctrl [general options] clients kick <client-id>

General options:
 -h : host to connect to. Defaults to localhost.
 -p : port to connect to. Defaults to 1883, or 8883 with --cafile.
 -u : username.
 -P : password.
 -i : client id. Defaults to midge_ctrl- and the process id.
 -W : seconds to wait for the broker's answer. Defaults to 5.
 --cafile : connect with TLS, checking the broker's certificate against this CA file.
 --cert : client certificate (PEM), with --key, for brokers that require one.
 --key : the client certificate's private key (PEM).
 --json : print the broker's answer as JSON instead of a table.
 --help : show this help.

The user needs a rule that lets it publish to $CONTROL/midge/v1 and read
$CONTROL/midge/v1/response: without one, midge refuses the request.
";

/// The API's topics.
const REQUEST_TOPIC: &str = "$CONTROL/midge/v1";
const RESPONSE_TOPIC: &str = "$CONTROL/midge/v1/response";

/// Where to connect and as whom.
#[derive(Debug, Default, PartialEq, Eq)]
struct Connection {
    host: String,
    port: Option<u16>,
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    cafile: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    wait: Duration,
}

/// What to ask.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    List,
    Show(String),
    Kick(String),
}

#[derive(Debug, PartialEq, Eq)]
struct Invocation {
    connection: Connection,
    json: bool,
    command: Command,
}

/// Why the command line was refused: print the usage, or a specific message.
#[derive(Debug, PartialEq, Eq)]
enum ArgError {
    Usage,
    Message(String),
}

fn parse_args(args: &[String]) -> Result<Invocation, ArgError> {
    let mut c = Connection {
        host: "localhost".into(),
        wait: Duration::from_secs(5),
        ..Connection::default()
    };
    let mut json = false;
    let mut operands = Vec::new();
    let mut rest = args;
    while let Some((arg, tail)) = rest.split_first() {
        rest = tail;
        let takes_value = matches!(
            arg.as_str(),
            "-h" | "-p" | "-u" | "-P" | "-i" | "-W" | "--cafile" | "--cert" | "--key"
        );
        if !takes_value {
            match arg.as_str() {
                "--json" => json = true,
                "--help" => return Err(ArgError::Usage),
                a if a.starts_with('-') => {
                    return Err(ArgError::Message(format!("Error: Unknown option '{a}'.")))
                }
                _ => operands.push(arg.clone()),
            }
            continue;
        }
        let Some((value, tail)) = rest.split_first() else {
            return Err(ArgError::Message(format!(
                "Error: {arg} argument given but no value was given."
            )));
        };
        rest = tail;
        match arg.as_str() {
            "-h" => c.host = value.clone(),
            "-p" => {
                let port = value.parse().ok().filter(|&p: &u16| p > 0);
                c.port = Some(port.ok_or_else(|| {
                    ArgError::Message(format!("Error: Invalid port given: {value}"))
                })?);
            }
            "-u" => c.username = Some(value.clone()),
            "-P" => c.password = Some(value.clone()),
            "-i" => c.client_id = Some(value.clone()),
            "-W" => {
                let secs = value.parse().ok().filter(|&s: &u64| s > 0);
                c.wait = Duration::from_secs(secs.ok_or_else(|| {
                    ArgError::Message("Error: -W needs a number of seconds above 0.".into())
                })?);
            }
            "--cafile" => c.cafile = Some(value.into()),
            "--cert" => c.cert = Some(value.into()),
            _ => c.key = Some(value.into()),
        }
    }
    if c.cafile.is_none() && (c.cert.is_some() || c.key.is_some()) {
        return Err(ArgError::Message(
            "Error: --cert and --key need --cafile (TLS is turned on by a CA to check the \
             broker against)."
                .into(),
        ));
    }
    if c.cert.is_some() != c.key.is_some() {
        return Err(ArgError::Message(
            "Error: --cert and --key must be given together.".into(),
        ));
    }
    let command = match operands.as_slice() {
        [group, verb] if group == "clients" && verb == "list" => Command::List,
        [group, verb, id] if group == "clients" && verb == "show" => Command::Show(id.clone()),
        [group, verb, id] if group == "clients" && verb == "kick" => Command::Kick(id.clone()),
        _ => return Err(ArgError::Usage),
    };
    Ok(Invocation {
        connection: c,
        json,
        command,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invocation = match parse_args(&args) {
        Ok(invocation) => invocation,
        Err(ArgError::Usage) => {
            print!("{USAGE}");
            return ExitCode::from(2);
        }
        Err(ArgError::Message(message)) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(&invocation) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Sends the command and prints the answer; the error is the message to print.
fn run(inv: &Invocation) -> Result<(), String> {
    let request = match &inv.command {
        Command::List => json!({"command": "listClients"}),
        Command::Show(id) => json!({"command": "getClient", "clientid": id}),
        Command::Kick(id) => json!({"command": "kickClient", "clientid": id}),
    };
    let answer = ask(&inv.connection, request)?;
    if inv.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).map_err(|e| e.to_string())?
        );
    }
    if let Some(error) = answer.get("error").and_then(Value::as_str) {
        return Err(error.to_string());
    }
    if inv.json {
        return Ok(());
    }
    let data = answer.get("data").unwrap_or(&Value::Null);
    match &inv.command {
        Command::List => {
            let clients = data.get("clients").and_then(Value::as_array);
            print!("{}", client_table(clients.map_or(&[][..], Vec::as_slice)));
        }
        Command::Show(_) => print!("{}", client_details(data.get("client").unwrap_or(data))),
        // Quiet on success, as mosquitto_ctrl.
        Command::Kick(_) => {}
    }
    Ok(())
}

/// A byte stream to the broker: TCP, or TLS over TCP.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// One MQTT 5 session with the broker, for one request.
struct Client {
    stream: Box<dyn Stream>,
    /// The TCP socket under `stream`, to set read timeouts on.
    socket: TcpStream,
    inbuf: Vec<u8>,
    deadline: Instant,
}

/// Connects, sends `command` as a one-command request and returns its entry of the response.
fn ask(c: &Connection, command: Value) -> Result<Value, String> {
    let mut client = Client::connect(c)?;
    let client_id = c
        .client_id
        .clone()
        .unwrap_or_else(|| format!("midge_ctrl-{}", std::process::id()));
    client.send(&Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V5,
        bridge: false,
        clean_start: true,
        keep_alive: 60,
        client_id,
        will: None,
        username: c.username.clone(),
        password: c.password.clone().map(String::into_bytes),
        properties: Properties::default(),
    })))?;
    client.await_packet(|p| match p {
        Packet::Connack(ack) if ack.code == reason::SUCCESS => Some(Ok(())),
        Packet::Connack(ack) => Some(Err(format!(
            "Connection refused: {}",
            connack_reason(ack.code)
        ))),
        _ => None,
    })?;
    let answer = exchange(&mut client, command);
    // Best effort: the answer is in (or not), a failed goodbye changes nothing.
    let _ = client.send(&Packet::Disconnect(codec::Disconnect {
        reason: reason::SUCCESS,
        properties: Properties::default(),
    }));
    answer
}

/// Subscribes to the responses, sends the request and waits for its answer.
fn exchange(client: &mut Client, command: Value) -> Result<Value, String> {
    client.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        subscriptions: vec![Subscription {
            filter: RESPONSE_TOPIC.into(),
            options: SubscribeOptions::qos(QoS::AtLeastOnce),
        }],
        properties: Properties::default(),
    }))?;
    client.await_packet(|p| match p {
        Packet::Suback(s) if s.packet_id == 1 => Some(match s.codes.first() {
            Some(&code) if code < 0x80 => Ok(()),
            _ => Err(format!(
                "not allowed to subscribe to {RESPONSE_TOPIC} (a rule must let this user read it)"
            )),
        }),
        _ => None,
    })?;
    // The correlation data tells our answer apart from another request's.
    let correlation = format!("midge_ctrl-{}", std::process::id());
    let mut command = command;
    command["correlationData"] = Value::String(correlation.clone());
    let request = json!({ "commands": [command] }).to_string();
    client.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: REQUEST_TOPIC,
        packet_id: 2,
        payload: request.as_bytes(),
        properties: Properties::default(),
    }))?;
    let mut acknowledged = false;
    let mut answer = None;
    while !acknowledged || answer.is_none() {
        let packet = client.next()?;
        match codec::decode(packet.0, &packet.1, ProtocolVersion::V5) {
            Ok(Packet::Puback(ack)) if ack.packet_id == 2 => {
                if ack.reason == reason::NOT_AUTHORIZED {
                    return Err(format!(
                        "not authorised to use {REQUEST_TOPIC} (a rule must grant this user \
                         publishing to it)"
                    ));
                }
                if ack.reason >= 0x80 {
                    return Err(format!("request refused (reason code {})", ack.reason));
                }
                acknowledged = true;
            }
            Ok(Packet::Publish(p)) if p.topic == RESPONSE_TOPIC => {
                if p.qos == QoS::AtLeastOnce {
                    let ack = Packet::Puback(codec::Ack::new(p.packet_id));
                    client.send(&ack)?;
                }
                if let Some(entry) = our_entry(p.payload, &correlation) {
                    answer = Some(entry);
                }
            }
            Ok(Packet::Disconnect(d)) => {
                return Err(format!(
                    "the broker disconnected (reason code {})",
                    d.reason
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(format!("bad packet from the broker: {e}")),
        }
    }
    answer.ok_or_else(|| "no answer".to_string())
}

/// Our command's entry in a response payload, found by its correlation data.
fn our_entry(payload: &[u8], correlation: &str) -> Option<Value> {
    let tree: Value = serde_json::from_slice(payload).ok()?;
    let responses = tree.get("responses")?.as_array()?;
    responses
        .iter()
        .find(|r| r.get("correlationData").and_then(Value::as_str) == Some(correlation))
        .cloned()
}

impl Client {
    fn connect(c: &Connection) -> Result<Client, String> {
        let port = c
            .port
            .unwrap_or(if c.cafile.is_some() { 8883 } else { 1883 });
        let socket = TcpStream::connect((c.host.as_str(), port))
            .map_err(|e| format!("Unable to connect to {}:{port}: {e}", c.host))?;
        // Nagle would hold back each small packet for the broker's delayed ACK.
        let _ = socket.set_nodelay(true);
        let plain = socket
            .try_clone()
            .map_err(|e| format!("Unable to use the socket: {e}"))?;
        let stream: Box<dyn Stream> = match &c.cafile {
            None => Box::new(plain),
            Some(cafile) => {
                let config = tls_config(cafile, c.cert.as_ref().zip(c.key.as_ref()))?;
                let name = ServerName::try_from(c.host.clone())
                    .map_err(|_| format!("\"{}\" is not a host name TLS can check", c.host))?;
                let conn = rustls::ClientConnection::new(Arc::new(config), name)
                    .map_err(|e| format!("Unable to start TLS: {e}"))?;
                Box::new(rustls::StreamOwned::new(conn, plain))
            }
        };
        Ok(Client {
            stream,
            socket,
            inbuf: Vec::new(),
            deadline: Instant::now() + c.wait,
        })
    }

    fn send(&mut self, packet: &Packet<'_>) -> Result<(), String> {
        let bytes = packet.to_bytes(ProtocolVersion::V5);
        self.stream
            .write_all(&bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|e| format!("Unable to send to the broker: {e}"))
    }

    /// The next packet from the broker, as its first byte and body, before the deadline.
    fn next(&mut self) -> Result<(u8, Vec<u8>), String> {
        loop {
            match codec::parse_fixed_header(&self.inbuf) {
                Ok(Some(h)) if self.inbuf.len() >= h.total() => {
                    let body = self.inbuf[h.header_len..h.total()].to_vec();
                    self.inbuf.drain(..h.total());
                    return Ok((h.first, body));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("bad packet from the broker: {e}")),
            }
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("no answer from the broker in time".into());
            }
            self.socket
                .set_read_timeout(Some(left))
                .map_err(|e| format!("Unable to use the socket: {e}"))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("the broker closed the connection".into()),
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err("no answer from the broker in time".into())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("Unable to read from the broker: {e}")),
            }
        }
    }

    /// Reads packets until `pick` recognises one and says how it went.
    fn await_packet(
        &mut self,
        pick: impl Fn(&Packet<'_>) -> Option<Result<(), String>>,
    ) -> Result<(), String> {
        loop {
            let (first, body) = self.next()?;
            let packet = codec::decode(first, &body, ProtocolVersion::V5)
                .map_err(|e| format!("bad packet from the broker: {e}"))?;
            if let Some(outcome) = pick(&packet) {
                return outcome;
            }
        }
    }
}

/// The TLS client configuration: the broker checked against `cafile`, with a client
/// certificate when one is given.
fn tls_config(
    cafile: &PathBuf,
    client: Option<(&PathBuf, &PathBuf)>,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(cafile)
        .map_err(|e| format!("Unable to load CA file \"{}\": {e}", cafile.display()))?;
    for ca in cas {
        let ca = ca.map_err(|e| format!("Unable to load CA file \"{}\": {e}", cafile.display()))?;
        roots
            .add(ca)
            .map_err(|e| format!("Unable to use CA file \"{}\": {e}", cafile.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("Unable to set up TLS: {e}"))?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect())
                .map_err(|e| format!("Unable to load certificate \"{}\": {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("Unable to load key \"{}\": {e}", key.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("--cert and --key do not go together: {e}"))
        }
    }
}

/// What a refusing CONNACK's reason code means.
fn connack_reason(code: u8) -> String {
    match code {
        0x86 => "bad user name or password".into(),
        0x87 => "not authorised".into(),
        0x85 => "client identifier not valid".into(),
        other => format!("reason code {other}"),
    }
}

/// The client list as a table, one client a line.
fn client_table(clients: &[Value]) -> String {
    let header = [
        "CLIENT ID",
        "USERNAME",
        "ADDRESS",
        "LISTENER",
        "PROTOCOL",
        "KEEPALIVE",
        "CONNECTED SINCE",
        "SUBS",
        "QUEUED",
        "INFLIGHT",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for c in clients {
        rows.push(vec![
            text(&c["clientid"]),
            text(&c["username"]),
            format!("{}:{}", text(&c["address"]), text(&c["port"])),
            text(&c["listenerPort"]),
            protocol_name(&c["protocolVersion"]),
            text(&c["keepalive"]),
            c["connectedAt"].as_u64().map_or_else(|| "-".into(), utc),
            c["subscriptions"]
                .as_array()
                .map_or_else(|| "-".into(), |s| s.len().to_string()),
            text(&c["queuedMessages"]),
            text(&c["inflightMessages"]),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One client, a field a line, then its subscriptions.
fn client_details(c: &Value) -> String {
    let mut out = String::new();
    let fields = [
        ("Client id", text(&c["clientid"])),
        ("Username", text(&c["username"])),
        (
            "Address",
            format!("{}:{}", text(&c["address"]), text(&c["port"])),
        ),
        ("Listener port", text(&c["listenerPort"])),
        ("Protocol", protocol_name(&c["protocolVersion"])),
        ("Keepalive", text(&c["keepalive"])),
        (
            "Connected since",
            c["connectedAt"].as_u64().map_or_else(|| "-".into(), utc),
        ),
        ("Queued messages", text(&c["queuedMessages"])),
        ("In flight", text(&c["inflightMessages"])),
    ];
    for (name, value) in fields {
        out.push_str(&format!("{:<16} {value}\n", format!("{name}:")));
    }
    out.push_str("Subscriptions:\n");
    for s in c["subscriptions"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "    {} (QoS {})\n",
            text(&s["topic"]),
            text(&s["qos"])
        ));
    }
    out
}

/// A JSON value as a table cell: strings bare, null as `-`.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The MQTT version a CONNECT protocol level stands for.
fn protocol_name(level: &Value) -> String {
    match level.as_u64() {
        Some(3) => "3.1".into(),
        Some(4) => "3.1.1".into(),
        Some(5) => "5".into(),
        _ => text(level),
    }
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS` UTC.
fn utc(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn command_lines_in_mosquitto_ctrl_style() {
        let inv = parse_args(&args(
            "-h broker -p 1884 -u admin -P pw --json clients kick s1",
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(inv.command, Command::Kick("s1".into()));
        assert!(inv.json);
        assert_eq!(inv.connection.host, "broker");
        assert_eq!(inv.connection.port, Some(1884));
        assert_eq!(inv.connection.username.as_deref(), Some("admin"));
        assert_eq!(inv.connection.password.as_deref(), Some("pw"));
        assert_eq!(
            parse_args(&args("clients list")).map(|i| i.command),
            Ok(Command::List)
        );
        assert_eq!(parse_args(&args("clients")), Err(ArgError::Usage));
        assert_eq!(parse_args(&args("clients show")), Err(ArgError::Usage));
        assert!(matches!(
            parse_args(&args("-p 0 clients list")),
            Err(ArgError::Message(_))
        ));
        assert!(matches!(
            parse_args(&args("--cert c.pem --key k.pem clients list")),
            Err(ArgError::Message(_))
        ));
        assert!(matches!(
            parse_args(&args("-x clients list")),
            Err(ArgError::Message(_))
        ));
    }

    #[test]
    fn unix_times_print_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_733_230_861), "2024-12-03 13:01:01");
    }

    #[test]
    fn the_table_lines_up() {
        let clients = vec![json!({
            "clientid": "sensor-1", "username": null, "address": "127.0.0.1", "port": 50000,
            "listenerPort": 1883, "protocolVersion": 4, "keepalive": 60, "connectedAt": 0,
            "subscriptions": [{"topic": "a", "qos": 0}], "queuedMessages": 0,
            "inflightMessages": 0
        })];
        let table = client_table(&clients);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("CLIENT ID  USERNAME  ADDRESS"));
        assert!(lines[1].starts_with("sensor-1   -         127.0.0.1:50000  1883"));
        assert!(lines[1].contains("3.1.1"));
        assert!(lines[1].contains("1970-01-01 00:00:00"));
    }
}
