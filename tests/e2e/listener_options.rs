//! The listener and access options Mosquitto has and midge implements with its meaning:
//! `mount_point`, `use_username_as_clientid`, `max_qos` and `max_topic_alias` per listener,
//! `clientid_prefixes`, `check_retain_source` (across a reload and a restart) and
//! `max_inflight_bytes`, driven with mosquitto_pub/_sub and paho.

use crate::common::*;
use std::process::Command;
use std::time::Duration;

/// The Python that has paho-mqtt 2.x (see `websockets.rs`).
fn python() -> String {
    std::env::var("MIDGE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs a paho script with `args`; returns its stdout lines, asserting it succeeded.
fn paho(script: &str, args: &[&str]) -> Vec<String> {
    let dir = TempDir::new();
    let path = dir.write("script.py", script);
    let mut cmd = Command::new(python());
    cmd.arg(&path).args(args);
    let out = run_with_timeout(cmd, None, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "paho script failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs mosquitto_pub on `port`; returns whether it succeeded and its stderr.
fn try_pub(port: u16, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(MOSQUITTO_PUB);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    let out = run_with_timeout(cmd, None, Duration::from_secs(10));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts a broker whose second listener, on the returned port, has `options`; `log_type all`
/// so that tests can wait for subscriptions.
fn with_second_listener(options: &str) -> (Broker, u16) {
    let second = free_port();
    let b = Broker::start(&format!(
        "log_type all\nlistener {second} 127.0.0.1\n{options}"
    ));
    (b, second)
}

/// Waits until the broker logs the subscription line `id QOS filter`.
fn wait_subscribed(b: &Broker, line: &str) {
    assert!(
        b.wait_for_log(line, WAIT),
        "no '{line}' in the log:\n{}",
        b.logs().join("\n")
    );
}

#[test]
fn a_mount_point_confines_a_listeners_clients_to_their_topic_tree() {
    if skip_on_mosquitto("midge mounts shared subscriptions and UNSUBSCRIBE") {
        return;
    }
    let (b, tenant) = with_second_listener("mount_point tenant1/");
    let outside = Sub::spawn(b.port(), 10, &["-i", "outside", "-v", "-t", "#", "-C", "1"]);
    wait_subscribed(&b, "outside 0 #");
    let inside = Sub::spawn(tenant, 10, &["-i", "inside", "-v", "-t", "x/#", "-C", "2"]);
    // The broker (and the log) know the subscription under the mount point.
    wait_subscribed(&b, "inside 0 tenant1/x/#");
    let shared = Sub::spawn(
        tenant,
        10,
        &["-i", "shared", "-v", "-t", "$share/g/s/#", "-C", "1"],
    );
    wait_subscribed(&b, "shared 0 $share/g/tenant1/s/#");

    // In: the tenant's topic is under its mount point for the other listener's clients.
    mosquitto_pub(tenant, &["-t", "x/1", "-m", "from inside"]);
    assert_eq!(outside.wait_lines(1, WAIT), ["tenant1/x/1 from inside"]);
    // Out: the tenant gets its tree without the prefix, and nothing outside it.
    mosquitto_pub(b.port(), &["-t", "x/2", "-m", "not for the tenant"]);
    mosquitto_pub(b.port(), &["-t", "tenant1/x/3", "-m", "for the tenant"]);
    assert_eq!(
        inside.wait_lines(2, WAIT),
        ["x/1 from inside", "x/3 for the tenant"]
    );
    mosquitto_pub(b.port(), &["-t", "tenant1/s/1", "-m", "shared"]);
    assert_eq!(shared.wait_lines(1, WAIT), ["s/1 shared"]);

    // Retained messages are replayed under the client's own name for the topic.
    mosquitto_pub(b.port(), &["-r", "-t", "tenant1/x/kept", "-m", "retained"]);
    let out = mosquitto_sub(tenant, 3, &["-v", "-t", "x/kept", "-C", "1"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "x/kept retained"
    );

    // UNSUBSCRIBE is mounted as SUBSCRIBE was: after it, nothing more arrives.
    let got = paho(PAHO_UNSUBSCRIBE, &[&tenant.to_string()]);
    assert_eq!(got, ["u/1"]);
}

/// Subscribes to `u/#`, publishes `u/1` to itself, unsubscribes, publishes `u/2`, and prints
/// the topics it received.
const PAHO_UNSUBSCRIBE: &str = r#"
import sys, time
import paho.mqtt.client as mqtt
got = []
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="unsub")
c.on_message = lambda c, u, m: got.append(m.topic)
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_start()
c.subscribe("u/#", qos=1)[1]
time.sleep(0.5)
c.publish("u/1", "a", qos=1).wait_for_publish(5)
time.sleep(0.5)
c.unsubscribe("u/#")
time.sleep(0.5)
c.publish("u/2", "b", qos=1).wait_for_publish(5)
time.sleep(0.5)
c.loop_stop()
print("\n".join(got))
"#;

#[test]
fn use_username_as_clientid_refuses_clients_without_a_username() {
    let (b, second) = with_second_listener("use_username_as_clientid true");
    // Mosquitto's CONNACK: 5 (not authorised) for 3.1.1, 0x87 for 5.0.
    let (ok, err) = try_pub(second, &["-i", "anon", "-t", "t", "-m", "x"]);
    assert!(!ok && err.contains("not authorised"), "{err}");
    let (ok, err) = try_pub(
        second,
        &["-V", "mqttv5", "-i", "anon", "-t", "t", "-m", "x"],
    );
    assert!(!ok && err.contains("Not authorized"), "{err}");
    // With a username, the username is the client id.
    mosquitto_pub(
        second,
        &["-u", "alice", "-i", "chosen", "-t", "t", "-m", "x"],
    );
    assert!(
        b.wait_for_log(" as alice (p2, c1, k60, u'alice')", WAIT),
        "{}",
        b.logs().join("\n")
    );
    // The other listener keeps the id the client sends.
    mosquitto_pub(
        b.port(),
        &["-u", "bob", "-i", "own-id", "-t", "t", "-m", "x"],
    );
    assert!(b.wait_for_log(" as own-id (p2, c1, k60, u'bob')", WAIT));
}

#[test]
fn clientid_prefixes_refuses_other_client_ids() {
    let b = Broker::start("clientid_prefixes sensor-");
    let (ok, err) = try_pub(b.port(), &["-i", "laptop", "-t", "t", "-m", "x"]);
    assert!(!ok && err.contains("not authorised"), "{err}");
    let (ok, err) = try_pub(
        b.port(),
        &["-V", "mqttv5", "-i", "laptop", "-t", "t", "-m", "x"],
    );
    assert!(!ok && err.contains("Not authorized"), "{err}");
    mosquitto_pub(b.port(), &["-i", "sensor-7", "-t", "t", "-m", "x"]);
}

/// Connects with MQTT 5 to each port given and prints the CONNACK's Maximum QoS and Topic
/// Alias Maximum (`-` when absent), one line per port.
const PAHO_CONNACK: &str = r#"
import sys, time
import paho.mqtt.client as mqtt
for port in sys.argv[1:]:
    seen = {}
    def on_connect(c, u, flags, rc, props):
        seen["qos"] = getattr(props, "MaximumQoS", "-")
        seen["alias"] = getattr(props, "TopicAliasMaximum", "-")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.on_connect = on_connect
    c.connect("127.0.0.1", int(port))
    deadline = time.time() + 5
    while not seen and time.time() < deadline:
        c.loop(0.05)
    c.disconnect()
    print(seen["qos"], seen["alias"])
"#;

#[test]
fn max_qos_and_max_topic_alias_are_per_listener() {
    let (b, second) = with_second_listener("max_qos 1\nmax_topic_alias 3");
    let got = paho(PAHO_CONNACK, &[&b.port().to_string(), &second.to_string()]);
    assert_eq!(got, ["- 10", "1 3"]);
    // mosquitto_sub asks for QoS 2: granted on the first listener, 1 on the second.
    for (port, granted) in [(b.port(), "2"), (second, "1")] {
        let out = mosquitto_sub(port, 1, &["-d", "-q", "2", "-t", "t"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("Subscribed (mid: 1): {granted}")),
            "{text}"
        );
    }
}

/// A QoS 1 subscriber that acknowledges only when told: subscribes to `t`, lets the
/// publisher (this same script, on a second connection) send three 8-byte messages, prints
/// how many arrived, acknowledges the first, and prints how many arrived then.
const PAHO_MANUAL_ACK: &str = r#"
import sys, time
import paho.mqtt.client as mqtt
port = int(sys.argv[1])
got = []
s = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="slow", manual_ack=True)
s.on_message = lambda c, u, m: got.append(m)
s.connect("127.0.0.1", port)
s.loop_start()
s.subscribe("t", qos=1)
time.sleep(0.5)
p = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fast")
p.connect("127.0.0.1", port)
p.loop_start()
for payload in ["11111111", "22222222", "33333333"]:
    p.publish("t", payload, qos=1).wait_for_publish(5)
time.sleep(1)
print(len(got))
s.ack(got[0].mid, got[0].qos)
time.sleep(1)
print(len(got))
s.loop_stop()
p.loop_stop()
"#;

#[test]
fn max_inflight_bytes_holds_messages_until_the_client_acknowledges() {
    // 0 bytes in flight, then 8: both below 10, so two messages go; the third waits for
    // the first acknowledgement (Mosquitto lets a message go while the bytes in flight are
    // below the limit).
    let b = Broker::start("max_inflight_bytes 10");
    assert_eq!(paho(PAHO_MANUAL_ACK, &[&b.port().to_string()]), ["2", "3"]);
}

/// The ACL file of the retained-source tests: `alice` may write `r/#` when `alice_writes`,
/// `bob` may read it.
fn acl(dir: &TempDir, alice_writes: bool) -> std::path::PathBuf {
    let alice = if alice_writes { "readwrite" } else { "read" };
    dir.write(
        "acl",
        &format!("user alice\ntopic {alice} r/#\n\nuser bob\ntopic read r/#\n"),
    )
}

/// What `bob` gets from `r/#` on subscribing (retained messages only).
fn bob_replay(port: u16) -> String {
    let out = mosquitto_sub(port, 1, &["-u", "bob", "-v", "-t", "r/#"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn check_retain_source_rechecks_the_publisher_after_a_reload() {
    // Debian's Mosquitto 2.0.11 still replays the message here (seen by hand), although
    // retain.c of the 2.0 series makes this WRITE check; midge follows the source.
    if skip_on_mosquitto("2.0.11 does not re-check the publisher") {
        return;
    }
    let dir = TempDir::new();
    let path = acl(&dir, true);
    let b = Broker::start(&format!("acl_file {}", path.display()));
    mosquitto_pub(
        b.port(),
        &["-u", "alice", "-r", "-q", "1", "-t", "r/x", "-m", "kept"],
    );
    assert_eq!(bob_replay(b.port()), "r/x kept");
    // alice may no longer write r/#: her retained message is no longer handed out.
    acl(&dir, false);
    let ok = Command::new("kill")
        .args(["-HUP", &b.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
    assert!(b.wait_for_log("Reloading config", WAIT));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(bob_replay(b.port()), "");
}

#[test]
fn check_retain_source_knows_the_publisher_after_a_restart() {
    if skip_on_mosquitto("midge's store") {
        return;
    }
    let store = TempDir::new();
    let dir = TempDir::new();
    let conf = |alice_writes: bool, check: bool| {
        format!(
            "persistence true\npersistence_location {}\nacl_file {}\ncheck_retain_source {check}",
            store.path().display(),
            acl(&dir, alice_writes).display()
        )
    };
    let mut b = Broker::start(&conf(true, true));
    mosquitto_pub(
        b.port(),
        &["-u", "alice", "-r", "-q", "1", "-t", "r/x", "-m", "kept"],
    );
    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some());
    // The store kept who published it: with alice's right gone, it is not replayed...
    let mut b = Broker::start(&conf(false, true));
    assert_eq!(bob_replay(b.port()), "");
    b.sigterm();
    assert!(b.wait_exit(WAIT).is_some());
    // ...though it is still there.
    let b = Broker::start(&conf(false, false));
    assert_eq!(bob_replay(b.port()), "r/x kept");
}
