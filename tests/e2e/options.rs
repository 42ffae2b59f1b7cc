//! No option fails open. midge's option table is held to a list of
//! mosquitto.conf(5)'s options written from Mosquitto 2.0.20's man page and to
//! `docs/options.md`; then the real binary is run on broken configs: an unknown name anywhere
//! (main file, `include_dir` file, listener block, bridge block), a missing value, a bad value
//! and each refused option stop start-up with Mosquitto's words, file and line, and exit
//! status 3; on SIGHUP a broken file keeps the running config.

use crate::common::*;
use midge::config::options::{Class, Origin, Scope, OPTIONS};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MAN_PAGE_LIST: &str = "tests/fixtures/mosquitto-2.0.20-options.txt";

fn manifest_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn man_page_options() -> BTreeSet<String> {
    manifest_file(MAN_PAGE_LIST)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_table_lists_exactly_the_man_page_options() {
    let man = man_page_options();
    assert_eq!(man.len(), 108, "the 2.0.20 man page has 108 options");
    let table: BTreeSet<String> = OPTIONS
        .iter()
        .filter(|o| o.origin == Origin::ManPage)
        .map(|o| o.name.to_string())
        .collect();
    let missing: Vec<_> = man.difference(&table).collect();
    let extra: Vec<_> = table.difference(&man).collect();
    assert!(
        missing.is_empty(),
        "in the man page, not in the table: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "marked ManPage but not in the man page: {extra:?}"
    );
    let all: BTreeSet<&str> = OPTIONS.iter().map(|o| o.name).collect();
    assert_eq!(all.len(), OPTIONS.len(), "an option is listed twice");
}

#[test]
fn the_docs_give_every_option_its_class() {
    let docs = manifest_file("docs/options.md");
    for o in OPTIONS {
        let row = docs
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", o.name)))
            .unwrap_or_else(|| panic!("docs/options.md has no row for {}", o.name));
        assert!(
            row.contains(&format!("| {} |", o.class.label())),
            "{}: docs say {row:?}, the table says {}",
            o.name,
            o.class.label()
        );
    }
    let rows = docs.lines().filter(|l| l.starts_with("| `")).count();
    assert_eq!(
        rows,
        OPTIONS.len(),
        "docs/options.md lists options the table does not"
    );
}

/// Runs midge on `conf` (written to `dir/midge.conf`); returns the exit code and stderr.
fn run_conf(dir: &TempDir, conf: &str) -> (Option<i32>, String, std::path::PathBuf) {
    let path = dir.write("midge.conf", conf);
    let out = run_midge(&["-c", path.to_str().unwrap()], Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), stderr, path)
}

/// Asserts that `conf` stops start-up with status 3 and exactly `lines` on stderr.
fn assert_refused(dir: &TempDir, conf: &str, lines: &[String]) {
    let (code, stderr, _) = run_conf(dir, conf);
    assert_eq!(code, Some(3), "{conf:?}: {stderr}");
    let got: Vec<&str> = stderr.lines().collect();
    assert_eq!(got, lines, "{conf:?}");
}

fn unknown(name: &str) -> String {
    format!("Error: Unknown configuration variable \"{name}\".")
}

#[test]
fn a_misspelt_option_in_the_main_file_is_fatal() {
    let dir = TempDir::new();
    let path = dir.path().join("midge.conf");
    assert_refused(
        &dir,
        "listener 0 127.0.0.1\n# the ACL\nacl_flie /etc/mosquitto/acl\n",
        &[
            unknown("acl_flie"),
            format!("Error found at {}:3.", path.display()),
        ],
    );
}

#[test]
fn a_misspelt_option_in_an_include_dir_file_is_fatal() {
    let dir = TempDir::new();
    let inc = TempDir::new();
    inc.write("a.conf", "max_keepalive 60\n");
    let bad = inc.write("b.conf", "\nacl_flie /etc/acl\n");
    let main = dir.path().join("midge.conf");
    assert_refused(
        &dir,
        &format!(
            "listener 0 127.0.0.1\ninclude_dir {}\n",
            inc.path().display()
        ),
        &[
            unknown("acl_flie"),
            format!("Error found at {}:2.", bad.display()),
            format!("Error found at {}:2.", main.display()),
        ],
    );
}

#[test]
fn a_misspelt_option_in_a_listener_block_is_fatal() {
    let dir = TempDir::new();
    let path = dir.path().join("midge.conf");
    assert_refused(
        &dir,
        "listener 0 127.0.0.1\nlistener 0 127.0.0.1\nprotocol websockets\nmount_pont tenant/\n",
        &[
            unknown("mount_pont"),
            format!("Error found at {}:4.", path.display()),
        ],
    );
}

#[test]
fn a_misspelt_option_in_a_bridge_block_is_fatal() {
    let dir = TempDir::new();
    let path = dir.path().join("midge.conf");
    assert_refused(
        &dir,
        "listener 0 127.0.0.1\nconnection hub\naddress 127.0.0.1:1\ntopic # out\n\
         remote_pasword secret\n",
        &[
            unknown("remote_pasword"),
            format!("Error found at {}:5.", path.display()),
        ],
    );
}

#[test]
fn missing_and_bad_values_are_fatal() {
    let dir = TempDir::new();
    let at = |line: usize| {
        format!(
            "Error found at {}:{line}.",
            dir.path().join("midge.conf").display()
        )
    };
    assert_refused(
        &dir,
        "listener 0 127.0.0.1\nmax_keepalive\n",
        &[
            "Error: Empty max_keepalive value in configuration.".into(),
            at(2),
        ],
    );
    assert_refused(
        &dir,
        "listener 0 127.0.0.1\nmax_qos 7\n",
        &["Error: Invalid max_qos value (7).".into(), at(2)],
    );
    assert_refused(
        &dir,
        "port abc\n",
        &["Error: Invalid port value (abc).".into(), at(1)],
    );
    assert_refused(
        &dir,
        "listener 0 127.0.0.1\nallow_anonymous yes\n",
        &["Error: Invalid allow_anonymous value (yes).".into(), at(2)],
    );
    // Authentication options read before `per_listener_settings true` would apply to no
    // listener: refused, as Mosquitto does.
    assert_refused(
        &dir,
        "listener 0 127.0.0.1\nacl_file /etc/acl\nper_listener_settings true\n",
        &[
            "Error: per_listener_settings must be set before any other security settings.".into(),
            at(3),
        ],
    );
    // A bridge option outside a bridge, in Mosquitto's words.
    assert_refused(
        &dir,
        "listener 0 127.0.0.1\nremote_username u\n",
        &["Error: Invalid bridge configuration.".into(), at(2)],
    );
}

#[test]
fn every_refused_option_stops_start_up_with_its_reason() {
    let dir = TempDir::new();
    let path = dir.path().join("midge.conf");
    let refused: Vec<_> = OPTIONS
        .iter()
        .filter(|o| o.class == Class::Refused)
        .collect();
    assert!(
        !refused.is_empty(),
        "the table refuses nothing: this test has nothing to check"
    );
    for o in refused {
        let name = o.name.replace('*', "x");
        let (conf, line) = match o.scope {
            Scope::Bridge => (
                format!("listener 0 127.0.0.1\nconnection hub\naddress 127.0.0.1:1\n{name} not-harmless\n"),
                4,
            ),
            _ => (format!("listener 0 127.0.0.1\n{name} not-harmless\n"), 2),
        };
        let (code, stderr, _) = run_conf(&dir, &conf);
        assert_eq!(code, Some(3), "{name}: {stderr}");
        let first = stderr.lines().next().unwrap_or("");
        // The value is only repeated when it is what is refused: an option refused whatever
        // its value may hold a secret (`bridge_psk`, `local_password`).
        let shown = if o.accepts.is_empty() {
            assert!(!stderr.contains("not-harmless"), "{name}: {stderr}");
            String::new()
        } else {
            " not-harmless".to_string()
        };
        assert!(
            first.starts_with(&format!(
                "Error: {name}{shown} in {}:{line} is not supported",
                path.display()
            )),
            "{name}: {first}"
        );
        assert!(first.ends_with(o.note), "{name}: {first}");
        assert!(
            stderr.contains(&format!("Error found at {}:{line}.", path.display())),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn harmless_values_of_refused_options_start() {
    if skip_on_mosquitto("midge's option table") {
        return;
    }
    let mut b = Broker::start(
        "tls_keyform pem\nretained_persistence false\nsocket_domain ipv4\nlog_facility 3",
    );
    b.assert_serves();
}

fn sighup(b: &Broker) {
    let ok = Command::new("kill")
        .args(["-HUP", &b.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success());
}

// A broken file on SIGHUP changes nothing: the broker keeps serving with the config it had,
// the ACL included (the broken file also points at an ACL that would allow everything, so a
// half-applied reload would show), and the log says why.
#[test]
fn sighup_with_a_broken_file_keeps_the_running_config() {
    if skip_on_mosquitto("midge's log wording") {
        return;
    }
    let acl_dir = TempDir::new();
    let strict = acl_dir.write("strict.acl", "topic readwrite allowed/#\n");
    let open = acl_dir.write("open.acl", "topic readwrite #\n");
    // The ACL shows in SUBACK with midge's `refuse_unreadable_subscriptions`.
    let mut b = Broker::start(&format!(
        "acl_file {}\nrefuse_unreadable_subscriptions true",
        strict.display()
    ));
    let mut c = Raw::mqtt_connect(b.port(), "before");
    c.subscribe(1, &[("denied/x", 0)], &[0x80]);

    let conf = std::fs::read_to_string(b.conf_path()).expect("read conf");
    let broken = conf.replace(&strict.display().to_string(), &open.display().to_string())
        + "acl_flie /etc/acl\n";
    let typo_line = broken.lines().count();
    std::fs::write(b.conf_path(), &broken).expect("write conf");
    sighup(&b);
    let want = format!("Error found at {}:{typo_line}.", b.conf_path().display());
    assert!(
        b.wait_for_log(&want, WAIT),
        "no {want:?} in:\n{}",
        b.logs().join("\n")
    );
    assert!(b.wait_for_log("Unknown configuration variable \"acl_flie\"", WAIT));
    assert!(b.wait_for_log("the running one is kept", WAIT));

    // Still serving, old connections and new ones, and the strict ACL still applies.
    assert!(b.alive());
    c.send(&PINGREQ);
    c.expect_bytes(&PINGRESP, WAIT);
    let mut d = Raw::mqtt_connect(b.port(), "after");
    d.subscribe(1, &[("denied/x", 0), ("allowed/x", 0)], &[0x80, 0]);

    // The same reload with the typo fixed does apply the open ACL (so the check above could
    // fail).
    std::fs::write(b.conf_path(), broken.replace("acl_flie /etc/acl\n", "")).expect("write");
    sighup(&b);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut e = Raw::mqtt_connect(b.port(), "fixed");
        e.send(&subscribe(1, &[("denied/x", 0)]));
        let granted = e.expect_packet(WAIT);
        if granted.body().last() == Some(&0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fixed file was not applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when a TCP connection to `ip`:`port` is accepted.
fn connects(ip: &str, port: u16) -> bool {
    let addr = std::net::SocketAddr::new(ip.parse().expect("an IP"), port);
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
}

// `socket_domain` limits a listener on all interfaces to one address family.
#[test]
fn socket_domain_binds_one_family() {
    if skip_on_mosquitto("midge's log lines") {
        return;
    }
    let (v4, v6, both) = (free_port(), free_port(), free_port());
    let b = Broker::start(&format!(
        "listener {v4}\nsocket_domain ipv4\nlistener {v6}\nsocket_domain ipv6\nlistener {both}"
    ));
    assert!(b.wait_for_log(&format!("Opening ipv6 listen socket on port {both}."), WAIT));
    assert!(connects("127.0.0.1", v4));
    assert!(!connects("::1", v4));
    assert!(connects("::1", v6));
    assert!(!connects("127.0.0.1", v6));
    assert!(connects("127.0.0.1", both) && connects("::1", both));
    assert!(!b
        .logs()
        .iter()
        .any(|l| l.contains(&format!("Opening ipv6 listen socket on port {v4}."))));
}
