//! Bridges over TLS end to end: midge bridging to another midge's TLS listener (messages both
//! ways, a client certificate the remote requires, a remote certificate from another CA, a
//! certificate for another name with and without `bridge_insecure`, a plain port), and midge
//! bridging to Debian's Mosquitto over TLS. Certificates are made by rcgen for each test.

use crate::common::certs::{listener_ports, s, Ca, Pair};
use crate::common::*;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use std::process::Child;
use std::time::{Duration, Instant};

fn skip() -> bool {
    skip_on_mosquitto("drives midge's bridge; Mosquitto is used as a peer inside")
}

/// A remote midge with the harness plain listener and a TLS listener (`listen` is the
/// listener line: `listener 0 127.0.0.1`, or `listener 0` for every interface) with `server`
/// and `extra` lines; returns (broker, plain port, TLS port).
fn tls_remote(listen: &str, server: &Pair, extra: &str) -> (Broker, u16, u16) {
    let b = Broker::start(&format!(
        "{listen}\ncertfile {}\nkeyfile {}\n{extra}\n",
        s(&server.cert),
        s(&server.key)
    ));
    let ports = listener_ports(&b, 2);
    (b, ports[0], ports[1])
}

/// A `connection` block with quick retries, its topics and TLS lines.
fn bridge(name: &str, address: &str, topics: &[&str], tls: &[String]) -> String {
    let mut c = format!(
        "connection {name}\naddress {address}\nremote_clientid {name}\nrestart_timeout 1 2\n\
         keepalive_interval 5\n"
    );
    for t in topics {
        c.push_str(&format!("topic {t}\n"));
    }
    for line in tls {
        c.push_str(line);
        c.push('\n');
    }
    c
}

/// Messages go from `local` to `remote` on `out/...` and back on `in/...`.
fn carries_both_ways(local: u16, remote: u16) {
    let mut sub_remote = Raw::mqtt_connect(remote, "sub-remote");
    sub_remote.subscribe(1, &[("out/#", 1)], &[1]);
    until_bridged(local, &mut sub_remote, "out/x");
    let mut sub_local = Raw::mqtt_connect(local, "sub-local");
    sub_local.subscribe(1, &[("in/#", 1)], &[1]);
    until_bridged(remote, &mut sub_local, "in/x");
    // A QoS 1 message each way arrives intact.
    let mut p = Raw::mqtt_connect(local, "qos1-pub");
    p.send(&publish("out/q1", b"up over tls", 1, false, false, 1));
    p.expect_bytes(&puback(1), WAIT);
    let got = sub_remote.expect_packet(WAIT);
    assert_eq!(
        (got.topic(), got.payload()),
        ("out/q1".into(), &b"up over tls"[..])
    );
}

const TOPICS: &[&str] = &["out/# out 1", "in/# in 1"];

/// Counts log lines of `b` containing `needle`.
fn count_logs(b: &Broker, needle: &str) -> usize {
    b.logs().iter().filter(|l| l.contains(needle)).count()
}

/// Waits until `needle` has been logged `n` times.
fn wait_for_logs(b: &Broker, needle: &str, n: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if count_logs(b, needle) >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A CA and a server certificate that names only `wrong.example`: good chain, wrong name.
fn misnamed_server(dir: &TempDir) -> (std::path::PathBuf, Pair) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "misnamed test CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("self-sign CA");
    let key = KeyPair::generate().expect("leaf key");
    let mut leaf = CertificateParams::new(vec!["wrong.example".to_string()]).expect("params");
    leaf.distinguished_name
        .push(DnType::CommonName, "wrong.example");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).expect("sign leaf");
    let pair = Pair {
        cert: dir.write("wrong.pem", &cert.pem()),
        key: dir.write("wrong.key", &key.serialize_pem()),
    };
    (dir.write("misnamed-ca.pem", &ca_cert.pem()), pair)
}

#[test]
fn two_midges_bridged_over_tls_carry_messages_both_ways() {
    if skip() {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("bridge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let (_b, plain_b, tls_b) = tls_remote("listener 0 127.0.0.1", &ca.server(&dir, "b"), "");
    let a = Broker::start(&bridge(
        "tlsab",
        &format!("127.0.0.1:{tls_b}"),
        TOPICS,
        &[
            format!("bridge_cafile {}", s(&ca_file)),
            "bridge_tls_version tlsv1.3".into(),
        ],
    ));
    assert!(
        a.wait_for_log("Bridge tlsab connected.", Duration::from_secs(15)),
        "logs:\n{}",
        a.logs().join("\n")
    );
    carries_both_ways(a.port(), plain_b);
}

#[test]
fn client_certificate_for_a_remote_that_requires_one() {
    if skip() {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("bridge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let client = ca.client(&dir, "garage", "garage");
    // Every interface, so `localhost` works whichever address it resolves to first.
    let (b, plain_b, tls_b) = tls_remote(
        "listener 0",
        &ca.server(&dir, "b"),
        &format!(
            "cafile {}\nrequire_certificate true\nuse_identity_as_username true",
            s(&ca_file)
        ),
    );
    let cafile = format!("bridge_cafile {}", s(&ca_file));
    let with_cert = bridge(
        "withcert",
        &format!("localhost:{tls_b}"),
        TOPICS,
        &[
            cafile.clone(),
            format!("bridge_certfile {}", s(&client.cert)),
            format!("bridge_keyfile {}", s(&client.key)),
        ],
    );
    let without = bridge(
        "nocert",
        &format!("127.0.0.1:{tls_b}"),
        &["nothing/# out 0"],
        &[cafile],
    );
    let a = Broker::start(&format!("{with_cert}\n{without}"));
    assert!(
        a.wait_for_log("Bridge withcert connected.", Duration::from_secs(15)),
        "logs:\n{}",
        a.logs().join("\n")
    );
    // The remote took the username from our certificate.
    assert!(b.wait_for_log("u'garage'", WAIT), "{}", b.logs().join("\n"));
    carries_both_ways(a.port(), plain_b);
    // Without a certificate the remote refuses, and the bridge says so and keeps trying.
    let refused = format!("Bridge nocert (127.0.0.1:{tls_b}) TLS");
    assert!(
        wait_for_logs(&a, &refused, 2, Duration::from_secs(20)),
        "logs:\n{}",
        a.logs().join("\n")
    );
    assert!(
        a.logs()
            .iter()
            .any(|l| l.contains(&refused) && l.contains("client certificate")),
        "{}",
        a.logs().join("\n")
    );
    assert_eq!(count_logs(&a, "Bridge nocert connected."), 0);
}

#[test]
fn remote_certificate_from_another_ca_is_refused_and_retried() {
    if skip() {
        return;
    }
    let dir = TempDir::new();
    let theirs = Ca::new("their CA");
    let ours = Ca::new("our CA");
    let our_ca_file = ours.write(&dir, "ours.pem");
    let (b, _plain_b, tls_b) = tls_remote("listener 0 127.0.0.1", &theirs.server(&dir, "b"), "");
    let mut a = Broker::start(&bridge(
        "wrongca",
        &format!("127.0.0.1:{tls_b}"),
        TOPICS,
        &[format!("bridge_cafile {}", s(&our_ca_file))],
    ));
    let line = format!(
        "Bridge wrongca (127.0.0.1:{tls_b}) TLS handshake failed: the remote broker's \
         certificate is not signed by a CA in bridge_cafile"
    );
    // Logged, and retried (the back-off applies: a second attempt within a few seconds).
    assert!(
        wait_for_logs(&a, &line, 2, Duration::from_secs(20)),
        "logs:\n{}",
        a.logs().join("\n")
    );
    assert_eq!(count_logs(&a, "Bridge wrongca connected."), 0);
    assert_eq!(count_logs(&b, "as wrongca"), 0, "{}", b.logs().join("\n"));
    // Local clients are still served meanwhile.
    a.assert_serves();
}

#[test]
fn bridge_insecure_accepts_a_certificate_for_another_name() {
    if skip() {
        return;
    }
    let dir = TempDir::new();
    let (ca_file, server) = misnamed_server(&dir);
    let (_b, plain_b, tls_b) = tls_remote("listener 0 127.0.0.1", &server, "");
    let address = format!("127.0.0.1:{tls_b}");
    let cafile = format!("bridge_cafile {}", s(&ca_file));
    let loose = bridge(
        "loose",
        &address,
        TOPICS,
        &[cafile.clone(), "bridge_insecure true".into()],
    );
    let strict = bridge("strict", &address, &["never/# out 0"], &[cafile]);
    let a = Broker::start(&format!("{loose}\n{strict}"));
    assert!(
        a.wait_for_log("Bridge loose connected.", Duration::from_secs(15)),
        "logs:\n{}",
        a.logs().join("\n")
    );
    assert!(a.wait_for_log("Bridge loose: bridge_insecure is true", WAIT));
    carries_both_ways(a.port(), plain_b);
    // The same certificate without bridge_insecure: refused because of the name.
    assert!(
        a.wait_for_log(
            &format!(
                "Bridge strict ({address}) TLS handshake failed: the remote broker's \
                 certificate is not valid for the host in address (it names wrong.example)"
            ),
            Duration::from_secs(15)
        ),
        "logs:\n{}",
        a.logs().join("\n")
    );
    assert_eq!(count_logs(&a, "Bridge strict connected."), 0);
}

#[test]
fn tls_bridge_to_a_plain_port_says_so_and_retries() {
    if skip() {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("bridge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let b = Broker::start("");
    let mut a = Broker::start(&bridge(
        "plainport",
        &format!("127.0.0.1:{}", b.port()),
        TOPICS,
        &[format!("bridge_cafile {}", s(&ca_file))],
    ));
    let line = format!("Bridge plainport (127.0.0.1:{}) TLS", b.port());
    assert!(
        wait_for_logs(&a, &line, 2, Duration::from_secs(20)),
        "logs:\n{}",
        a.logs().join("\n")
    );
    assert_eq!(count_logs(&a, "Bridge plainport connected."), 0);
    a.assert_serves();
}

#[test]
fn tls_files_are_read_at_start_and_a_missing_one_is_named() {
    if skip() {
        return;
    }
    let dir = TempDir::new();
    let missing = dir.path().join("no-such-ca.pem");
    let conf = dir.write(
        "a.conf",
        &format!(
            "listener 0 127.0.0.1\nallow_anonymous true\n{}",
            bridge(
                "nofile",
                "127.0.0.1:1",
                TOPICS,
                &[format!("bridge_cafile {}", s(&missing))]
            )
        ),
    );
    let out = run_midge(&["-c", s(&conf)], Duration::from_secs(10));
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(s(&missing)) && text.contains("nofile"),
        "{text}"
    );

    // A client certificate without a CA would mean plain text: refused too.
    let ca = Ca::new("bridge test CA");
    let client = ca.client(&dir, "c", "c");
    let conf = dir.write(
        "b.conf",
        &format!(
            "listener 0 127.0.0.1\nallow_anonymous true\n{}",
            bridge(
                "noca",
                "127.0.0.1:1",
                TOPICS,
                &[
                    format!("bridge_certfile {}", s(&client.cert)),
                    format!("bridge_keyfile {}", s(&client.key)),
                ]
            )
        ),
    );
    let out = run_midge(&["-c", s(&conf)], Duration::from_secs(10));
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("bridge_certfile"), "{text}");
}

/// Debian's Mosquitto with a TLS listener on `port`; killed on drop.
struct Mosquitto {
    child: Child,
    _dir: TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto_tls(plain: u16, tls: u16, server: &Pair) -> Mosquitto {
    let dir = TempDir::new();
    let conf = dir.write(
        "m.conf",
        &format!(
            "user root\nallow_anonymous true\nlistener {plain} 127.0.0.1\n\
             listener {tls} 127.0.0.1\ncertfile {}\nkeyfile {}\n",
            s(&server.cert),
            s(&server.key)
        ),
    );
    let child = spawn_mosquitto(&conf);
    let m = Mosquitto { child, _dir: dir };
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", tls)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", plain)).is_err()
    {
        assert!(Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    m
}

#[test]
fn midge_bridges_to_mosquitto_over_tls() {
    if skip() {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("bridge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let (plain_m, tls_m) = (free_port(), free_port());
    let _m = mosquitto_tls(plain_m, tls_m, &ca.server(&dir, "m"));
    let a = Broker::start(&bridge(
        "tomosq",
        &format!("127.0.0.1:{tls_m}"),
        TOPICS,
        &[
            format!("bridge_cafile {}", s(&ca_file)),
            "bridge_alpn mqtt".into(),
        ],
    ));
    assert!(
        a.wait_for_log("Bridge tomosq connected.", Duration::from_secs(15)),
        "logs:\n{}",
        a.logs().join("\n")
    );
    carries_both_ways(a.port(), plain_m);
}
