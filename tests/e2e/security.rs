//! Passwords and ACLs end to end: files made by Debian's `mosquitto_passwd`, checked by real
//! clients, and reloaded on SIGHUP without dropping anyone.

use crate::common::*;
use std::process::Command;
use std::time::Duration;

fn pub_status(port: u16, args: &[&str]) -> bool {
    let mut cmd = Command::new(MOSQUITTO_PUB);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    run_with_timeout(cmd, None, Duration::from_secs(10))
        .status
        .success()
}

fn connect_as(user: &str, pass: &str, id: &str) -> Connect {
    let mut c = Connect::v311(id);
    c.username = Some(user.into());
    c.password = Some(pass.as_bytes().to_vec());
    c
}

#[test]
fn password_file_from_mosquitto_passwd_authenticates() {
    let dir = TempDir::new();
    let file = passwd_file(&dir, &[("alice", "wonder"), ("bob", "builder")]);
    let mut b = Broker::start(&format!(
        "allow_anonymous false\npassword_file {}",
        file.display()
    ));
    assert!(pub_status(
        b.port(),
        &["-u", "alice", "-P", "wonder", "-t", "t", "-m", "x"]
    ));
    assert!(!pub_status(
        b.port(),
        &["-u", "alice", "-P", "wrong", "-t", "t", "-m", "x"]
    ));
    assert!(!pub_status(
        b.port(),
        &["-u", "carol", "-P", "wonder", "-t", "t", "-m", "x"]
    ));
    // Anonymous refused: CONNACK 5 (not authorised), as Mosquitto 2.0.
    let mut raw = Raw::connect(b.port());
    raw.send(&Connect::v311("anon").bytes());
    raw.expect_bytes(&[0x20, 2, 0, 5], WAIT);
    assert!(raw.closes_within(WAIT));
    // Still serving the right users.
    let _ok = Raw::mqtt_connect_with(b.port(), &connect_as("bob", "builder", "b1"), &CONNACK_OK);
    assert!(b.alive());
}

#[test]
fn anonymous_and_password_users_together() {
    let dir = TempDir::new();
    let file = passwd_file(&dir, &[("alice", "wonder")]);
    let b = Broker::start(&format!(
        "allow_anonymous true\npassword_file {}",
        file.display()
    ));
    assert!(pub_status(b.port(), &["-t", "t", "-m", "anon"]));
    assert!(pub_status(
        b.port(),
        &["-u", "alice", "-P", "wonder", "-t", "t", "-m", "x"]
    ));
    assert!(!pub_status(
        b.port(),
        &["-u", "alice", "-P", "nope", "-t", "t", "-m", "x"]
    ));
}

const ACL: &str = "\
# anonymous clients may only read public/
topic read public/#

user alice
topic readwrite alice/#
topic read public/#

user bob
topic readwrite bob/#
topic deny bob/secret/#

user admin
topic readwrite #

pattern readwrite users/%u/#
";

fn acl_broker() -> (Broker, TempDir) {
    acl_broker_with("")
}

/// The broker of [`ACL`], with `extra` configuration lines.
fn acl_broker_with(extra: &str) -> (Broker, TempDir) {
    let dir = TempDir::new();
    let file = passwd_file(&dir, &[("alice", "a"), ("bob", "b"), ("admin", "x")]);
    let acl = dir.write("acl", ACL);
    let b = Broker::start(&format!(
        "allow_anonymous true\npassword_file {}\nacl_file {}\n{extra}",
        file.display(),
        acl.display()
    ));
    (b, dir)
}

/// v311:[MQTT-3.3.5-2]
#[test]
fn acl_write_denied_is_dropped_and_read_is_checked_per_delivery() {
    let (b, _dir) = acl_broker();
    let mut alice =
        Raw::mqtt_connect_with(b.port(), &connect_as("alice", "a", "alice1"), &CONNACK_OK);
    alice.subscribe(1, &[("alice/#", 1)], &[1]);
    let mut bob = Raw::mqtt_connect_with(b.port(), &connect_as("bob", "b", "bob1"), &CONNACK_OK);
    // bob may not write to alice/: the QoS 1 publish is acknowledged (3.1.1 has no way to say
    // no) but nobody receives it.
    bob.send(&publish("alice/x", b"from-bob", 1, false, false, 7));
    bob.expect_bytes(&puback(7), WAIT);
    alice.expect_silence(Duration::from_millis(500));
    // alice writes to her own tree and gets it back.
    alice.send(&publish("alice/x", b"mine", 0, false, false, 0));
    assert_eq!(alice.expect_packet(WAIT).payload(), b"mine");
    // A pattern rule with %u.
    bob.subscribe(2, &[("users/bob/#", 0)], &[0]);
    bob.send(&publish("users/bob/inbox", b"note", 0, false, false, 0));
    assert_eq!(bob.expect_packet(WAIT).payload(), b"note");
}

/// As in Mosquitto, the ACL does not refuse a SUBSCRIBE: every filter is granted, and each
/// delivery is checked against the subscriber's READ rules.
#[test]
fn acl_subscribe_outside_rules_is_granted_and_filtered_at_delivery() {
    let (b, _dir) = acl_broker();
    let mut bob = Raw::mqtt_connect_with(b.port(), &connect_as("bob", "b", "bob2"), &CONNACK_OK);
    bob.send(&subscribe(
        3,
        &[("alice/#", 1), ("bob/secret/#", 1), ("bob/#", 1)],
    ));
    bob.expect_bytes(&suback(3, &[1, 1, 1]), WAIT);
    let mut admin =
        Raw::mqtt_connect_with(b.port(), &connect_as("admin", "x", "admin2"), &CONNACK_OK);
    admin.send(&publish("alice/x", b"private", 0, false, false, 0));
    admin.send(&publish("bob/secret/x", b"hidden", 0, false, false, 0));
    admin.send(&publish("bob/open", b"shown", 0, false, false, 0));
    let p = bob.expect_packet(WAIT);
    assert_eq!(
        (p.topic(), p.payload().to_vec()),
        ("bob/open".to_string(), b"shown".to_vec())
    );
    bob.expect_silence(Duration::from_millis(300));
}

/// midge's `refuse_unreadable_subscriptions`: a filter the ACL lets read no topic at all is
/// refused in SUBACK (3.1.1: 0x80, 5.0: 0x87), so the client knows; a granted filter is still
/// filtered per delivery.
#[test]
fn refuse_unreadable_subscriptions_answers_0x80_or_0x87() {
    if skip_on_mosquitto("midge's own option") {
        return;
    }
    let (b, _dir) = acl_broker_with("refuse_unreadable_subscriptions true");
    let mut bob = Raw::mqtt_connect_with(b.port(), &connect_as("bob", "b", "bob2"), &CONNACK_OK);
    // alice/# intersects none of bob's read rules; bob/secret/# is covered by a deny;
    // bob/# is granted.
    bob.send(&subscribe(
        3,
        &[("alice/#", 1), ("bob/secret/#", 1), ("bob/#", 1)],
    ));
    bob.expect_bytes(&suback(3, &[0x80, 0x80, 1]), WAIT);
    assert!(b.wait_for_log("Denied SUBSCRIBE from bob2 to 'alice/#' (ACL).", WAIT));
    // The deny still filters deliveries under the granted bob/#.
    let mut pubr = Raw::mqtt_connect_with(b.port(), &connect_as("bob", "b", "bob3"), &CONNACK_OK);
    pubr.send(&publish("bob/secret/x", b"hidden", 0, false, false, 0));
    pubr.send(&publish("bob/open", b"shown", 0, false, false, 0));
    let p = bob.expect_packet(WAIT);
    assert_eq!(
        (p.topic(), p.payload().to_vec()),
        ("bob/open".to_string(), b"shown".to_vec())
    );
    // MQTT 5 is told Not authorized.
    let mut c = Connect::v5("bob5");
    c.username = Some("bob".into());
    c.password = Some(b"b".to_vec());
    let (mut bob5, _) = crate::common::v5::connect5_with(b.port(), &c);
    crate::common::v5::sub5(&mut bob5, 1, "alice/#", 1, None, 0x87);
}

#[test]
fn anonymous_reads_public_only_and_retained_is_read_checked() {
    let (b, _dir) = acl_broker();
    for (topic, msg) in [("alice/r", "private"), ("public/news", "hello")] {
        assert!(pub_status(
            b.port(),
            &["-u", "admin", "-P", "x", "-t", topic, "-m", msg, "-r"]
        ));
    }
    let mut anon = Raw::mqtt_connect(b.port(), "anon1");
    // Both granted; each retained message is checked: only public/news arrives.
    anon.send(&subscribe(1, &[("alice/#", 0), ("#", 0)]));
    anon.expect_bytes(&suback(1, &[0, 0]), WAIT);
    let p = anon.expect_packet(WAIT);
    assert_eq!((p.topic(), p.retain()), ("public/news".to_string(), true));
    anon.expect_silence(Duration::from_millis(300));
}

#[test]
fn sighup_reloads_password_file_without_dropping_clients() {
    let dir = TempDir::new();
    let file = passwd_file(&dir, &[("alice", "one")]);
    let mut b = Broker::start(&format!(
        "allow_anonymous false\npassword_file {}",
        file.display()
    ));
    let mut alice =
        Raw::mqtt_connect_with(b.port(), &connect_as("alice", "one", "stay"), &CONNACK_OK);
    assert!(!pub_status(
        b.port(),
        &["-u", "dave", "-P", "new", "-t", "t", "-m", "x"]
    ));
    let status = Command::new("/usr/bin/mosquitto_passwd")
        .args(["-b"])
        .arg(&file)
        .args(["dave", "new"])
        .status()
        .expect("mosquitto_passwd runs");
    assert!(status.success());
    let ok = Command::new("kill")
        .args(["-HUP", &b.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
    assert!(b.wait_for_log("Password file reloaded", WAIT));
    assert!(pub_status(
        b.port(),
        &["-u", "dave", "-P", "new", "-t", "t", "-m", "x"]
    ));
    // The connection made before the reload is still up.
    alice.send(&PINGREQ);
    alice.expect_bytes(&PINGRESP, WAIT);
    assert!(b.alive());
}

#[test]
fn per_listener_settings_give_each_listener_its_own_rules() {
    let dir = TempDir::new();
    let file = passwd_file(&dir, &[("alice", "wonder")]);
    let open_port = free_port();
    // The harness's own listener comes first (anonymous allowed, per listener too); a second
    // listener needs a password.
    let b = Broker::start(&format!(
        "per_listener_settings true\nallow_anonymous true\nlistener {open_port} 127.0.0.1\nallow_anonymous false\npassword_file {}",
        file.display()
    ));
    assert!(pub_status(
        b.port(),
        &["-t", "t", "-m", "anonymous on the open listener"]
    ));
    assert!(!pub_status(
        open_port,
        &["-t", "t", "-m", "anonymous refused here"]
    ));
    assert!(pub_status(
        open_port,
        &["-u", "alice", "-P", "wonder", "-t", "t", "-m", "x"]
    ));
    assert!(!pub_status(
        open_port,
        &["-u", "alice", "-P", "bad", "-t", "t", "-m", "x"]
    ));
}
