//! The administration API (`$CONTROL/midge/v1`) and `midge_ctrl` end to end: real
//! `mosquitto_sub` clients are listed, shown and kicked (the kicked one exits, its will is not
//! published), a user without a granting rule is refused, and the API answers a request made
//! with `mosquitto_pub`/`mosquitto_sub` alone, since it is plain MQTT.

use crate::common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MIDGE_CTRL: &str = env!("CARGO_BIN_EXE_midge_ctrl");

/// `admin` may use the API and read its answers, `auditor` may only read them; everyone gets
/// `#`, which covers no `$` topic.
const ACL: &str = "\
topic readwrite #
user admin
topic write $CONTROL/midge/v1
topic read $CONTROL/midge/v1/response
user auditor
topic read $CONTROL/midge/v1/response
user guest
topic readwrite #
";

/// A client running in the background, its standard output going to a file; killed on drop.
struct Background {
    child: Child,
    out: PathBuf,
}

impl Background {
    fn sub(dir: &TempDir, port: u16, name: &str, args: &[&str]) -> Background {
        let out = dir.path().join(format!("{name}.out"));
        let file = std::fs::File::create(&out).expect("create output file");
        let child = Command::new(MOSQUITTO_SUB)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto_sub");
        Background { child, out }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ctrl(port: u16, user: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(MIDGE_CTRL);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-u", user])
        .args(args);
    run_with_timeout(cmd, None, Duration::from_secs(15))
}

/// `midge_ctrl --json clients list` as the clients it lists, by client id.
fn listed(port: u16) -> Vec<Value> {
    let out = ctrl(port, "admin", &["--json", "clients", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("midge_ctrl --json prints JSON");
    answer["data"]["clients"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until every one of `ids` is connected and subscribed.
fn wait_subscribed(port: u16, ids: &[&str]) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clients = listed(port);
        let ready = ids.iter().all(|id| {
            clients.iter().any(|c| {
                c["clientid"] == *id && c["subscriptions"].as_array().is_some_and(|s| !s.is_empty())
            })
        });
        if ready {
            return clients;
        }
        assert!(
            Instant::now() < deadline,
            "{ids:?} not all subscribed: {clients:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn broker_with_acl() -> (Broker, TempDir) {
    let dir = TempDir::new();
    let acl = dir.write("acl", ACL);
    let b = Broker::start(&format!("acl_file {}", acl.display()));
    (b, dir)
}

#[test]
fn midge_ctrl_lists_shows_and_kicks_real_clients() {
    if skip_on_mosquitto("midge's own administration API") {
        return;
    }
    let (mut b, dir) = broker_with_acl();
    let port = b.port();
    let _a = Background::sub(&dir, port, "sub-a", &["-q", "1", "-t", "cmd/a"]);
    let mut victim = Background::sub(
        &dir,
        port,
        "victim",
        &[
            "-V",
            "5",
            "-t",
            "cmd/victim",
            "--will-topic",
            "wills/victim",
            "--will-payload",
            "gone",
        ],
    );
    let watcher = Background::sub(&dir, port, "watcher", &["-t", "wills/#", "-v"]);
    let clients = wait_subscribed(port, &["sub-a", "victim", "watcher"]);

    // What the API tells about a client, checked against what we know of it.
    let a = clients
        .iter()
        .find(|c| c["clientid"] == "sub-a")
        .expect("sub-a listed");
    assert_eq!(a["address"], "127.0.0.1");
    assert_eq!(a["listenerPort"], port);
    assert_eq!(a["protocolVersion"], 4);
    assert_eq!(a["keepalive"], 60);
    assert_eq!(a["username"], Value::Null);
    assert_eq!(
        a["subscriptions"],
        serde_json::json!([{"topic": "cmd/a", "qos": 1}])
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let since = a["connectedAt"].as_u64().unwrap_or(0);
    assert!(
        since <= now && now - since < 60,
        "connectedAt {since}, now {now}"
    );
    let v = clients
        .iter()
        .find(|c| c["clientid"] == "victim")
        .expect("victim listed");
    assert_eq!(v["protocolVersion"], 5);

    // The table: a header, then one line per client.
    let out = ctrl(port, "admin", &["clients", "list"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.starts_with("CLIENT ID"), "{table}");
    for id in ["sub-a ", "victim ", "watcher "] {
        assert!(table.lines().any(|l| l.starts_with(id)), "{id} in\n{table}");
    }
    let out = ctrl(port, "admin", &["clients", "show", "sub-a"]);
    assert!(out.status.success());
    let details = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(details.contains("cmd/a (QoS 1)"), "{details}");
    assert!(
        details.contains(&format!("Listener port:   {port}")),
        "{details}"
    );

    // Kicked: an MQTT 5 mosquitto_sub is told Administrative action and exits.
    let out = ctrl(port, "admin", &["clients", "kick", "victim"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_child(&mut victim.child, Duration::from_secs(5)).is_some(),
        "the kicked mosquitto_sub exits"
    );
    assert!(b.wait_for_log(
        "Client victim been disconnected by administrative action.",
        WAIT
    ));
    assert!(b.wait_for_log("Client victim kicked by", WAIT));
    // Its will is not published: the watcher, still connected, got nothing.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        listed(port).iter().any(|c| c["clientid"] == "watcher"),
        "the watcher stays"
    );
    assert_eq!(watcher.output(), "", "no will after a kick");
    assert!(!listed(port).iter().any(|c| c["clientid"] == "victim"));

    // Kicking again: nobody by that id, an error and exit status 1.
    let out = ctrl(port, "admin", &["clients", "kick", "victim"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Client not found"));
    b.assert_serves();
}

#[test]
fn a_user_without_a_granting_rule_is_refused() {
    if skip_on_mosquitto("midge's own administration API") {
        return;
    }
    let (b, dir) = broker_with_acl();
    let port = b.port();
    let victim = Background::sub(&dir, port, "victim", &["-V", "5", "-t", "x"]);
    wait_subscribed(port, &["victim"]);
    // `guest` has `#`, which covers no `$` topic; `auditor` may read the answers, not ask.
    for user in ["guest", "auditor"] {
        let out = ctrl(port, user, &["clients", "kick", "victim"]);
        assert_eq!(out.status.code(), Some(1), "{user}");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("not authorised"), "{user}: {err}");
    }
    assert!(b.wait_for_log("Denied PUBLISH from", WAIT));
    let mut victim = victim;
    assert!(
        wait_child(&mut victim.child, Duration::from_millis(300)).is_none(),
        "the victim is still connected"
    );

    // No acl_file at all: every other topic is open, this one is not.
    let open = Broker::start("");
    let out = ctrl(open.port(), "admin", &["clients", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not authorised"));
}

#[test]
fn the_api_is_plain_mqtt() {
    if skip_on_mosquitto("midge's own administration API") {
        return;
    }
    let (b, dir) = broker_with_acl();
    let port = b.port();
    // The answer goes to every subscriber allowed to read it: here an auditor, whose own
    // requests would be refused, and not an anonymous `$CONTROL/#` subscriber.
    let auditor = Background::sub(
        &dir,
        port,
        "auditor-sub",
        &["-u", "auditor", "-t", "$CONTROL/midge/v1/response"],
    );
    let snoop = Background::sub(&dir, port, "snoop", &["-t", "$CONTROL/#", "-v"]);
    wait_subscribed(port, &["auditor-sub", "snoop"]);
    let mut cmd = Command::new(MOSQUITTO_PUB);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-u",
        "admin",
        "-q",
        "1",
    ])
    .args(["-t", "$CONTROL/midge/v1"])
    .args([
        "-m",
        r#"{"commands":[{"command":"getClient","clientid":"snoop","correlationData":"raw-1"}]}"#,
    ]);
    let out = run_with_timeout(cmd, None, Duration::from_secs(10));
    assert!(out.status.success());
    // The auditor also sees the answers to the listings made while waiting above: ours is the
    // one with our correlation data.
    let deadline = Instant::now() + Duration::from_secs(5);
    let answer: Value = loop {
        let found = auditor
            .output()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|a| a["responses"][0]["correlationData"] == "raw-1");
        if let Some(a) = found {
            break a;
        }
        assert!(Instant::now() < deadline, "no answer: {}", auditor.output());
        std::thread::sleep(Duration::from_millis(50));
    };
    let entry = &answer["responses"][0];
    assert_eq!(entry["command"], "getClient");
    assert_eq!(entry["correlationData"], "raw-1");
    assert_eq!(entry["data"]["client"]["clientid"], "snoop");
    assert_eq!(
        entry["data"]["client"]["subscriptions"],
        serde_json::json!([{"topic": "$CONTROL/#", "qos": 0}])
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        snoop.output(),
        "",
        "neither the request nor the answer reach `#` rules"
    );
}

#[test]
fn midge_ctrl_over_tls_with_a_client_certificate() {
    use crate::common::certs::{listener_ports, s, Ca};
    if skip_on_mosquitto("midge's own administration API") {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("midge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let server = ca.server(&dir, "server");
    // The certificate's CN is the username the ACL grants the API to.
    let admin = ca.client(&dir, "admin", "admin");
    let acl = dir.write("acl", ACL);
    let b = Broker::start(&format!(
        "acl_file {}\nlistener 0 127.0.0.1\ncertfile {}\nkeyfile {}\ncafile {}\n\
         require_certificate true\nuse_identity_as_username true",
        s(&acl),
        s(&server.cert),
        s(&server.key),
        s(&ca_file)
    ));
    let tls = listener_ports(&b, 2)[1];
    let mut cmd = Command::new(MIDGE_CTRL);
    cmd.args(["-h", "127.0.0.1", "-p", &tls.to_string(), "-i", "tls-admin"])
        .args([
            "--cafile",
            s(&ca_file),
            "--cert",
            s(&admin.cert),
            "--key",
            s(&admin.key),
        ])
        .args(["--json", "clients", "list"]);
    let out = run_with_timeout(cmd, None, Duration::from_secs(15));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let me = &answer["data"]["clients"][0];
    assert_eq!(me["clientid"], "tls-admin");
    assert_eq!(me["username"], "admin");
    assert_eq!(me["listenerPort"], tls);

    // A broker whose certificate the CA file does not vouch for: refused, exit status 1.
    let other = Ca::new("another CA").write(&dir, "other.pem");
    let mut cmd = Command::new(MIDGE_CTRL);
    cmd.args(["-h", "127.0.0.1", "-p", &tls.to_string()]).args([
        "--cafile",
        s(&other),
        "clients",
        "list",
    ]);
    let out = run_with_timeout(cmd, None, Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(1));
}
