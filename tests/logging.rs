//! Logging in Mosquitto's style (issue 2, item 11): connection lines, `-v` packet lines,
//! timestamps, `log_timestamp`, `connection_messages`, `log_dest file`.

mod common;
use common::*;
use std::time::Duration;

// The connect/disconnect lines, word for word as Mosquitto 2.0 writes them.
#[test]
fn connection_lines_in_mosquitto_format() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "log-a");
    let lp = c.local_port();
    let want = format!("New connection from 127.0.0.1:{lp} on port {}.", b.port());
    assert!(
        b.wait_for_log(&want, WAIT),
        "missing {want:?}; logs:\n{}",
        b.logs().join("\n")
    );
    let want = format!("New client connected from 127.0.0.1:{lp} as log-a (p2, c1, k60).");
    assert!(
        b.wait_for_log(&want, WAIT),
        "missing {want:?}; logs:\n{}",
        b.logs().join("\n")
    );
    c.send(&DISCONNECT);
    c.expect_closed(WAIT);
    let want = "Client log-a disconnected.";
    assert!(
        b.wait_for_log(want, WAIT),
        "missing {want:?}; logs:\n{}",
        b.logs().join("\n")
    );
}

// Protocol version, clean session and keepalive as the client sent them: 3.1, c0, k30.
#[test]
fn connect_line_shows_protocol_clean_session_keepalive() {
    let b = Broker::start("");
    let c = Raw::mqtt_connect_with(
        b.port(),
        &Connect::v31("log-31").clean(false).keepalive(30),
        &CONNACK_OK,
    );
    let want = format!(
        "New client connected from 127.0.0.1:{} as log-31 (p1, c0, k30).",
        c.local_port()
    );
    assert!(
        b.wait_for_log(&want, WAIT),
        "missing {want:?}; logs:\n{}",
        b.logs().join("\n")
    );
}

// Mosquitto 2.0 adds the username: `(p2, c1, k60, u'name')`.
#[test]
fn connect_line_shows_username() {
    let b = Broker::start("");
    let mut conn = Connect::v311("log-user");
    conn.username = Some("alice".into());
    let c = Raw::mqtt_connect_with(b.port(), &conn, &CONNACK_OK);
    let want = format!(
        "New client connected from 127.0.0.1:{} as log-user (p2, c1, k60, u'alice').",
        c.local_port()
    );
    assert!(
        b.wait_for_log(&want, WAIT),
        "missing {want:?}; logs:\n{}",
        b.logs().join("\n")
    );
}

// `-v` logs every packet: `Received PUBLISH from ID (d0, q1, r0, m1, 'topic', ... (5 bytes))`
// and `Sending PUBACK to ID (m1, rc0)`.
#[test]
fn verbose_logs_publish_and_puback() {
    let b = Broker::start_verbose("");
    let mut c = Raw::mqtt_connect(b.port(), "log-v");
    c.send(&publish("log/topic", b"hello", 1, false, false, 1));
    c.expect_bytes(&puback(1), WAIT);
    for want in [
        "Received PUBLISH from log-v (d0, q1, r0, m1, 'log/topic', ... (5 bytes))",
        "Sending PUBACK to log-v (m1, rc0)",
    ] {
        assert!(
            b.wait_for_log(want, WAIT),
            "missing {want:?}; logs:\n{}",
            b.logs().join("\n")
        );
    }
}

// `-v` also shows SUBSCRIBE/SUBACK and PINGREQ/PINGRESP.
#[test]
fn verbose_logs_subscribe_and_ping() {
    let b = Broker::start_verbose("");
    let mut c = Raw::mqtt_connect(b.port(), "log-vs");
    c.subscribe(1, &[("log/sub", 1)], &[1]);
    c.send(&PINGREQ);
    c.expect_bytes(&PINGRESP, WAIT);
    for want in [
        "Received SUBSCRIBE from log-vs",
        "log/sub (QoS 1)",
        "Sending SUBACK to log-vs",
        "Received PINGREQ from log-vs",
        "Sending PINGRESP to log-vs",
    ] {
        assert!(
            b.wait_for_log(want, WAIT),
            "missing {want:?}; logs:\n{}",
            b.logs().join("\n")
        );
    }
}

// Without `-v` (default log types) packet lines are not logged.
#[test]
fn packets_not_logged_without_verbose() {
    let b = Broker::start("");
    let mut c = Raw::mqtt_connect(b.port(), "log-quiet");
    c.send(&publish("log/q", b"x", 1, false, false, 1));
    c.expect_bytes(&puback(1), WAIT);
    c.send(&DISCONNECT);
    c.expect_closed(WAIT);
    assert!(b.wait_for_log("Client log-quiet disconnected.", WAIT));
    let logs = b.logs();
    assert!(
        !logs
            .iter()
            .any(|l| l.contains("Received PUBLISH") || l.contains("Sending PUBACK")),
        "packet lines logged without -v:\n{}",
        logs.join("\n")
    );
}

// Every line starts with a Unix timestamp and ": " (log_timestamp true by default).
#[test]
fn lines_have_unix_timestamp_prefix() {
    let b = Broker::start("");
    let _c = Raw::mqtt_connect(b.port(), "log-ts");
    assert!(b.wait_for_log(" as log-ts (", WAIT));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for l in b.logs() {
        let (ts, rest) = l
            .split_once(": ")
            .unwrap_or_else(|| panic!("no prefix: {l:?}"));
        let ts: u64 = ts
            .parse()
            .unwrap_or_else(|_| panic!("bad timestamp in {l:?}"));
        assert!(ts.abs_diff(now) < 120, "timestamp {ts} far from now {now}");
        assert!(!rest.is_empty());
    }
}

// `log_timestamp false`: no prefix.
#[test]
fn log_timestamp_false_removes_prefix() {
    let b = Broker::start("log_timestamp false");
    let c = Raw::mqtt_connect(b.port(), "log-nots");
    let want = format!("New connection from 127.0.0.1:{} on port", c.local_port());
    let line = b
        .wait_for_log_line(&want, WAIT)
        .expect("no connection line");
    assert!(line.starts_with("New connection from"), "{line:?}");
}

// `connection_messages false`: no connect/disconnect lines.
#[test]
fn connection_messages_false_hides_connection_lines() {
    let b = Broker::start("connection_messages false");
    let mut c = Raw::mqtt_connect(b.port(), "log-hidden");
    c.send(&DISCONNECT);
    c.expect_closed(WAIT);
    std::thread::sleep(Duration::from_millis(300));
    let logs = b.logs();
    assert!(
        !logs.iter().any(|l| l.contains("log-hidden")),
        "connection lines logged:\n{}",
        logs.join("\n")
    );
}

// `log_dest file PATH` (alongside stderr): the file gets the lines too.
#[test]
fn log_dest_file_receives_lines() {
    let dir = TempDir::new();
    dir.open_to_all();
    let path = dir.path().join("broker.log");
    let b = Broker::start(&format!(
        "log_dest stderr\nlog_dest file {}",
        path.display()
    ));
    let _c = Raw::mqtt_connect(b.port(), "log-file");
    assert!(b.wait_for_log(" as log-file (", WAIT));
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains(" as log-file (") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        text.contains(" as log-file ("),
        "log file contents:\n{text}"
    );
}
