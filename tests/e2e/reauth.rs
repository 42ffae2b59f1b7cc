//! SIGHUP re-authenticates, end to end with real `mosquitto_sub` clients:
//! after the password file, the ACL file or `allow_anonymous` change and the broker is sent
//! SIGHUP, every connected client the new files no longer admit is disconnected, logged as
//! Mosquitto logs it (`Client X disconnected.`), with no will; the others stay; the new ACL
//! applies to the next publish and delivery; and a reload that fails changes nothing.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Creates or updates `path` with Debian's `mosquitto_passwd -b` (the format midge must read).
fn set_password(path: &Path, user: &str, password: &str) {
    let mut cmd = Command::new("/usr/bin/mosquitto_passwd");
    if !path.exists() {
        cmd.arg("-c");
    }
    let status = cmd
        .arg("-b")
        .arg(path)
        .args([user, password])
        .status()
        .expect("mosquitto_passwd runs");
    assert!(status.success());
}

fn delete_user(path: &Path, user: &str) {
    let status = Command::new("/usr/bin/mosquitto_passwd")
        .arg("-D")
        .arg(path)
        .arg(user)
        .status()
        .expect("mosquitto_passwd runs");
    assert!(status.success());
}

/// A password file with alice (password `a`) and bob (password `b`).
fn alice_and_bob(dir: &TempDir) -> PathBuf {
    let path = dir.path().join("passwd");
    set_password(&path, "alice", "a");
    set_password(&path, "bob", "b");
    path
}

/// Replaces the broker's config file (after the harness's own first two lines) and sends
/// SIGHUP; waits for the reload to be logged `nth` time.
fn reload_with(b: &Broker, conf: &str, nth: usize) {
    // Laid out as the harness does: the listener line stays as it was (Mosquitto refuses a
    // reload that changes listeners), `per_listener_settings` comes before it.
    let old = std::fs::read_to_string(b.conf_path()).expect("read config");
    let listener = old
        .lines()
        .find(|l| l.starts_with("listener "))
        .unwrap_or_default();
    let (first, rest): (Vec<&str>, Vec<&str>) = conf
        .lines()
        .partition(|l| l.starts_with("per_listener_settings"));
    let text = format!(
        "{}{listener}\nallow_anonymous true\n{}\n",
        first.iter().map(|l| format!("{l}\n")).collect::<String>(),
        rest.join("\n")
    );
    std::fs::write(b.conf_path(), text).expect("rewrite config");
    sighup(b, nth);
}

/// Sends SIGHUP and waits until "Reloading config." was logged `nth` times.
fn sighup(b: &Broker, nth: usize) {
    // SAFETY: kill(2) on the broker this test started.
    unsafe { libc::kill(b.pid() as libc::pid_t, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + WAIT;
    while b
        .logs()
        .iter()
        .filter(|l| l.contains("Reloading config."))
        .count()
        < nth
    {
        assert!(std::time::Instant::now() < deadline, "no reload logged");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `mosquitto_sub -v` client `id` on `topics`, waited for until its subscription is logged.
fn subscriber(b: &Broker, id: &str, login: &[&str], topics: &[&str], extra: &[&str]) -> Sub {
    let mut args = vec!["-v", "-q", "1", "-i", id];
    args.extend_from_slice(login);
    for t in topics {
        args.extend_from_slice(&["-t", t]);
    }
    args.extend_from_slice(extra);
    let sub = Sub::spawn(b.port(), 30, &args);
    let last = topics.last().copied().unwrap_or_default();
    assert!(
        b.wait_for_log(&format!("{id} 1 {last}"), WAIT),
        "{id} did not subscribe; logs:\n{}",
        b.logs().join("\n")
    );
    sub
}

/// Publishes at QoS 1 (so the message is routed before `mosquitto_pub` exits).
fn publish_as(b: &Broker, login: &[&str], topic: &str, message: &str) {
    let mut args = login.to_vec();
    args.extend_from_slice(&["-q", "1", "-t", topic, "-m", message]);
    mosquitto_pub(b.port(), &args);
}

fn assert_logged(b: &Broker, needle: &str) {
    assert!(
        b.wait_for_log(needle, WAIT),
        "missing {needle:?}; logs:\n{}",
        b.logs().join("\n")
    );
}

fn assert_not_logged(b: &Broker, needle: &str) {
    assert!(
        !b.logs().iter().any(|l| l.contains(needle)),
        "unexpected {needle:?}; logs:\n{}",
        b.logs().join("\n")
    );
}

const ALICE: &[&str] = &["-u", "alice", "-P", "a"];
const BOB: &[&str] = &["-u", "bob", "-P", "b"];

#[test]
fn a_user_deleted_from_the_password_file_is_disconnected_and_the_others_stay() {
    let dir = TempDir::new();
    let passwd = alice_and_bob(&dir);
    let b = Broker::start_verbose(&format!(
        "allow_anonymous false\npassword_file {}",
        passwd.display()
    ));
    let alice = subscriber(&b, "sub-alice", ALICE, &["news", "wills"], &[]);
    let bob = subscriber(
        &b,
        "sub-bob",
        BOB,
        &["news"],
        &["--will-topic", "wills", "--will-payload", "bob gone"],
    );
    delete_user(&passwd, "bob");
    sighup(&b, 1);
    // Mosquitto's line for a client its security re-check disconnects.
    assert_logged(&b, "Client sub-bob disconnected.");
    assert_not_logged(&b, "Client sub-alice disconnected");
    // alice is still connected and served; bob gets nothing more (mosquitto_sub reconnects
    // and is refused).
    publish_as(&b, ALICE, "news", "after");
    assert_eq!(alice.wait_lines(1, WAIT), ["news after"]);
    // (Mosquitto 2.0.11 names the refused client `<unknown>`, 2.0.15 and later by its id.)
    assert_logged(&b, "disconnected, not authorised.");
    let (bob_lines, status) = bob.finish(WAIT);
    assert!(bob_lines.is_empty(), "{bob_lines:?}");
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    // No will: Mosquitto marks the client as disconnecting first, which skips the will.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(alice.wait_lines(1, Duration::ZERO), ["news after"]);
}

#[test]
fn a_user_whose_password_changed_is_disconnected() {
    let dir = TempDir::new();
    let passwd = alice_and_bob(&dir);
    let b = Broker::start_verbose(&format!(
        "allow_anonymous false\npassword_file {}",
        passwd.display()
    ));
    let _alice = subscriber(&b, "sub-alice", ALICE, &["news"], &[]);
    let bob = subscriber(&b, "sub-bob", BOB, &["news"], &[]);
    set_password(&passwd, "alice", "new password");
    sighup(&b, 1);
    assert_logged(&b, "Client sub-alice disconnected.");
    publish_as(&b, BOB, "news", "still here");
    assert_eq!(bob.wait_lines(1, WAIT), ["news still here"]);
    assert_not_logged(&b, "Client sub-bob disconnected");
    // The new password works.
    publish_as(&b, &["-u", "alice", "-P", "new password"], "news", "x");
}

#[test]
fn anonymous_clients_are_disconnected_once_allow_anonymous_is_false() {
    let dir = TempDir::new();
    let passwd = alice_and_bob(&dir);
    let files = format!("password_file {}", passwd.display());
    let b = Broker::start_verbose(&files);
    let _anon = subscriber(&b, "sub-anon", &[], &["news"], &[]);
    let alice = subscriber(&b, "sub-alice", ALICE, &["news"], &[]);
    reload_with(&b, &format!("{files}\nallow_anonymous false"), 1);
    assert_logged(&b, "Client sub-anon disconnected.");
    publish_as(&b, BOB, "news", "members only");
    assert_eq!(alice.wait_lines(1, WAIT), ["news members only"]);
    assert_not_logged(&b, "Client sub-alice disconnected");
}

#[test]
fn a_changed_acl_applies_to_the_next_publish_and_delivery() {
    let dir = TempDir::new();
    let passwd = alice_and_bob(&dir);
    let acl = dir.path().join("acl");
    let write_acl = |text: &str| std::fs::write(&acl, text).expect("write acl");
    write_acl("user alice\ntopic read news/#\nuser bob\ntopic write news/#\n");
    let b = Broker::start_verbose(&format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}",
        passwd.display(),
        acl.display()
    ));
    let alice = subscriber(&b, "sub-alice", ALICE, &["news/#"], &[]);
    publish_as(&b, BOB, "news/a", "1");
    assert_eq!(alice.wait_lines(1, WAIT), ["news/a 1"]);

    // alice may now read news/keep only: nobody is disconnected, and the next delivery of
    // news/a to her subscription is not made.
    write_acl("user alice\ntopic read news/keep\nuser bob\ntopic write news/#\n");
    sighup(&b, 1);
    publish_as(&b, BOB, "news/a", "2");
    publish_as(&b, BOB, "news/keep", "3");
    assert_eq!(alice.wait_lines(2, WAIT), ["news/a 1", "news/keep 3"]);

    // bob may no longer write: his next publish is denied.
    write_acl("user alice\ntopic read news/keep\nuser bob\ntopic write elsewhere\n");
    sighup(&b, 2);
    publish_as(&b, BOB, "news/keep", "4");
    assert_logged(&b, "Denied PUBLISH from");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        alice.wait_lines(3, Duration::ZERO),
        ["news/a 1", "news/keep 3"]
    );
    assert_not_logged(&b, "Client sub-alice disconnected");
}

#[test]
fn a_reload_that_fails_changes_nothing() {
    if skip_on_mosquitto("midge's all-or-nothing reload") {
        return;
    }
    let dir = TempDir::new();
    let passwd = alice_and_bob(&dir);
    let files = format!("password_file {}", passwd.display());
    let b = Broker::start_verbose(&files);
    let anon = subscriber(&b, "sub-anon", &[], &["news"], &[]);
    // The new config refuses anonymous clients and logs to a new file, but its password file
    // cannot be read: none of it may apply.
    let new_log = dir.path().join("new.log");
    reload_with(
        &b,
        &format!(
            "allow_anonymous false\npassword_file {}\nlog_dest file {}",
            dir.path().join("missing").display(),
            new_log.display()
        ),
        1,
    );
    assert_logged(&b, "Error: Unable to open password file");
    assert_logged(
        &b,
        "Error: Unable to reload config; the running one is kept.",
    );
    // Still anonymous-friendly, still logging where it did, the client still connected.
    publish_as(&b, &[], "news", "kept");
    assert_eq!(anon.wait_lines(1, WAIT), ["news kept"]);
    assert_logged(&b, "Received PUBLISH from");
    let new_log_text = std::fs::read_to_string(&new_log).unwrap_or_default();
    assert!(new_log_text.is_empty(), "{new_log_text}");
    assert_not_logged(&b, "Client sub-anon disconnected");
    // The old password file is still in force.
    publish_as(&b, ALICE, "news", "alice too");
    assert_eq!(anon.wait_lines(2, WAIT), ["news kept", "news alice too"]);
}

#[test]
fn with_per_listener_settings_each_listener_is_rechecked_with_its_own_rules() {
    let second = free_port();
    // The harness's listener comes first; its allow_anonymous is repeated once settings are
    // per listener.
    let listeners = |anonymous_on_second: bool| {
        format!(
            "per_listener_settings true\nallow_anonymous true\nlistener {second} 127.0.0.1\nallow_anonymous {anonymous_on_second}"
        )
    };
    let b = Broker::start_verbose(&listeners(true));
    let _first = subscriber(&b, "on-first", &[], &["news"], &[]);
    let mut args = vec!["-v", "-q", "1", "-i", "on-second", "-t", "news"];
    args.extend_from_slice(&["-W", "30"]);
    let mut cmd = Command::new("/usr/bin/mosquitto_sub");
    cmd.args(["-h", "127.0.0.1", "-p", &second.to_string()])
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut on_second = cmd.spawn().expect("spawn mosquitto_sub");
    assert_logged(&b, "on-second 1 news");
    reload_with(&b, &listeners(false), 1);
    assert_logged(&b, "Client on-second disconnected.");
    assert_not_logged(&b, "Client on-first disconnected");
    let _ = on_second.kill();
    let _ = on_second.wait();
}

/// Messages queued for a persistent subscriber while it was away are checked against the ACL
/// in force when they go: after a reload that takes away its right to read them, they are
/// dropped (counted and logged), not delivered, as by Mosquitto.
#[test]
fn messages_queued_before_an_acl_change_go_only_if_still_readable() {
    let dir = TempDir::new();
    let passwd = alice_and_bob(&dir);
    let acl = dir.path().join("acl");
    let write_acl = |text: &str| std::fs::write(&acl, text).expect("write acl");
    write_acl("user alice\ntopic read news/#\nuser bob\ntopic write news/#\n");
    let b = Broker::start_verbose(&format!(
        "allow_anonymous false\npassword_file {}\nacl_file {}",
        passwd.display(),
        acl.display()
    ));
    let persistent = ["-c", "-C", "1"];
    let alice = subscriber(&b, "sub-alice", ALICE, &["news/#"], &persistent);
    publish_as(&b, BOB, "news/a", "1");
    assert_eq!(alice.finish(WAIT).0, ["news/a 1"]);
    // alice is away; two messages wait in her session.
    publish_as(&b, BOB, "news/a", "2");
    publish_as(&b, BOB, "news/keep", "3");
    write_acl("user alice\ntopic read news/keep\nuser bob\ntopic write news/#\n");
    sighup(&b, 1);
    let alice = subscriber(&b, "sub-alice", ALICE, &["news/#"], &persistent);
    assert_eq!(alice.finish(WAIT).0, ["news/keep 3"]);
    if !is_mosquitto() {
        assert_logged(
            &b,
            "Outgoing messages are being dropped for client sub-alice: the ACL no longer lets it read 'news/a'.",
        );
    }
}
