//! TLS listeners end to end, with Debian's `mosquitto_pub`/`mosquitto_sub` (OpenSSL) as the
//! clients and certificates rcgen (or, for chains through an intermediate CA, the `openssl`
//! command) makes for each test: server authentication with `--cafile`, the chain up to the
//! root sent for a certificate an intermediate signed, client certificates with
//! `require_certificate`, certificates as usernames, the wrong CA, a plain client on the TLS
//! port, and a certificate replaced on SIGHUP. Every test checks that other clients are still
//! served afterwards.

use crate::common::certs::{listener_ports, s, Ca, Pair};
use crate::common::*;
use std::process::{Command, Output};
use std::time::Duration;

/// A broker with its harness plain listener and one TLS listener configured by `extra`
/// (appended after certfile/keyfile); returns (broker, plain port, TLS port).
fn tls_broker(server: &Pair, extra: &str) -> (Broker, u16, u16) {
    let conf = format!(
        "listener 0 127.0.0.1\ncertfile {}\nkeyfile {}\n{extra}\n",
        s(&server.cert),
        s(&server.key)
    );
    let b = Broker::start(&conf);
    let ports = listener_ports(&b, 2);
    (b, ports[0], ports[1])
}

/// Runs a mosquitto client (`mosquitto_pub` or `mosquitto_sub`) with `args`, bounded.
fn mosquitto(bin: &str, port: u16, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    run_with_timeout(cmd, None, Duration::from_secs(20))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Publishes over TLS with `tls_args`, and checks a plain subscriber gets it: the TLS client
/// really got through.
fn tls_publish_arrives(b: &Broker, plain: u16, tls: u16, tls_args: &[&str]) -> Result<(), String> {
    let topic = format!("tls/{}", b.pid());
    let mut sub = Raw::mqtt_connect(plain, "tls-check-sub");
    sub.subscribe(1, &[(&topic, 0)], &[0]);
    let mut args = vec!["-t", &topic, "-m", "over-tls", "-q", "1"];
    args.extend_from_slice(tls_args);
    let out = mosquitto(MOSQUITTO_PUB, tls, &args);
    if !out.status.success() {
        return Err(stderr(&out));
    }
    let p = sub.expect_packet(WAIT);
    assert_eq!((p.topic(), p.payload()), (topic, &b"over-tls"[..]));
    Ok(())
}

#[test]
fn mosquitto_clients_round_trip_over_tls() {
    if skip_on_mosquitto("TLS config made for midge's test harness") {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("midge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let (mut b, plain, tls) = tls_broker(&ca.server(&dir, "server"), "");

    // A TLS subscriber gets messages from a TLS publisher and from a plain one; retained
    // messages too.
    mosquitto_pub(plain, &["-t", "home/retained", "-m", "kept", "-r"]);
    let sub = Sub::spawn(
        tls,
        10,
        &["--cafile", s(&ca_file), "-t", "home/#", "-v", "-C", "3"],
    );
    assert!(b.wait_for_log("as auto-", WAIT) || b.wait_for_log("New client connected", WAIT));
    assert_eq!(sub.wait_lines(1, WAIT), vec!["home/retained kept"]);
    let out = mosquitto(
        MOSQUITTO_PUB,
        tls,
        &[
            "--cafile",
            s(&ca_file),
            "-t",
            "home/tls",
            "-m",
            "secret",
            "-q",
            "2",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    mosquitto_pub(plain, &["-t", "home/plain", "-m", "open", "-q", "1"]);
    let (lines, _) = sub.finish(WAIT);
    assert_eq!(
        lines,
        vec!["home/retained kept", "home/tls secret", "home/plain open"]
    );
    b.assert_serves();
}

#[test]
fn client_certificate_required_and_checked() {
    if skip_on_mosquitto("TLS config made for midge's test harness") {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("midge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let good = ca.client(&dir, "client", "device-1");
    let rogue_ca = Ca::new("someone else's CA");
    let rogue = rogue_ca.client(&dir, "rogue", "device-1");
    let (mut b, plain, tls) = tls_broker(
        &ca.server(&dir, "server"),
        &format!("cafile {}\nrequire_certificate true", s(&ca_file)),
    );

    let with_cert = [
        "--cafile",
        s(&ca_file),
        "--cert",
        s(&good.cert),
        "--key",
        s(&good.key),
    ];
    tls_publish_arrives(&b, plain, tls, &with_cert).expect("client with a good certificate");

    // No certificate at all.
    assert!(tls_publish_arrives(&b, plain, tls, &["--cafile", s(&ca_file)]).is_err());
    let line = b
        .wait_for_log_line(
            "no certificate presented but require_certificate is true",
            WAIT,
        )
        .unwrap_or_else(|| panic!("no log line; logs:\n{}", b.logs().join("\n")));
    assert!(line.contains("Client 127.0.0.1:"), "{line}");
    assert!(line.contains("TLS handshake failed: "), "{line}");

    // A certificate from another CA.
    let rogue_args = [
        "--cafile",
        s(&ca_file),
        "--cert",
        s(&rogue.cert),
        "--key",
        s(&rogue.key),
    ];
    assert!(tls_publish_arrives(&b, plain, tls, &rogue_args).is_err());
    assert!(
        b.wait_for_log(
            "TLS handshake failed: certificate not signed by the configured CA",
            WAIT
        ),
        "logs:\n{}",
        b.logs().join("\n")
    );

    tls_publish_arrives(&b, plain, tls, &with_cert).expect("still served");
    b.assert_serves();
}

#[test]
fn certificate_common_name_becomes_the_username() {
    if skip_on_mosquitto("TLS config made for midge's test harness") {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("midge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let client = ca.client(&dir, "client", "device-1");
    let (mut b, plain, tls) = tls_broker(
        &ca.server(&dir, "server"),
        &format!(
            "cafile {}\nrequire_certificate true\nuse_identity_as_username true",
            s(&ca_file)
        ),
    );
    let out = mosquitto(
        MOSQUITTO_PUB,
        tls,
        &[
            "--cafile",
            s(&ca_file),
            "--cert",
            s(&client.cert),
            "--key",
            s(&client.key),
            "-i",
            "cert-client",
            "-u",
            "ignored-user",
            "-P",
            "ignored",
            "-t",
            "t",
            "-m",
            "x",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The CONNECT username is replaced by the certificate's CN, as in Mosquitto.
    assert!(
        b.wait_for_log("as cert-client (p2, c1, k60, u'device-1')", WAIT),
        "logs:\n{}",
        b.logs().join("\n")
    );
    let _ = plain;
    b.assert_serves();
}

#[test]
fn certificate_subject_becomes_the_username() {
    if skip_on_mosquitto("TLS config made for midge's test harness") {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("midge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let client = ca.client(&dir, "client", "device-2");
    let (mut b, _plain, tls) = tls_broker(
        &ca.server(&dir, "server"),
        &format!(
            "cafile {}\nrequire_certificate true\nuse_subject_as_username true",
            s(&ca_file)
        ),
    );
    let out = mosquitto(
        MOSQUITTO_PUB,
        tls,
        &[
            "--cafile",
            s(&ca_file),
            "--cert",
            s(&client.cert),
            "--key",
            s(&client.key),
            "-i",
            "subject-client",
            "-t",
            "t",
            "-m",
            "x",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        b.wait_for_log(
            "as subject-client (p2, c1, k60, u'CN=device-2,OU=Garden,O=Home')",
            WAIT
        ),
        "logs:\n{}",
        b.logs().join("\n")
    );
    b.assert_serves();
}

#[test]
fn plain_mqtt_on_the_tls_port_is_closed_with_a_clear_log_line() {
    if skip_on_mosquitto("midge's own log wording") {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("midge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let (mut b, plain, tls) = tls_broker(&ca.server(&dir, "server"), "");

    let mut raw = Raw::connect(tls);
    let local = raw.local_port();
    raw.send(&Connect::v311("plain-on-tls").bytes());
    assert!(
        raw.closes_within(WAIT),
        "the broker kept a plain client on the TLS port"
    );
    let want = format!(
        "Client 127.0.0.1:{local} TLS handshake failed: the client sent plain MQTT to a TLS port."
    );
    assert!(
        b.wait_for_log(&want, WAIT),
        "logs:\n{}",
        b.logs().join("\n")
    );

    // mosquitto_pub without --cafile on the TLS port fails the same way.
    let out = mosquitto(MOSQUITTO_PUB, tls, &["-t", "t", "-m", "x"]);
    assert!(!out.status.success());

    tls_publish_arrives(&b, plain, tls, &["--cafile", s(&ca_file)]).expect("TLS still served");
    b.assert_serves();
}

#[test]
fn client_that_does_not_trust_the_server_is_logged() {
    if skip_on_mosquitto("midge's own log wording") {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("midge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let other_ca = Ca::new("another CA").write(&dir, "other-ca.pem");
    let (mut b, plain, tls) = tls_broker(&ca.server(&dir, "server"), "");
    let out = mosquitto(
        MOSQUITTO_PUB,
        tls,
        &["--cafile", s(&other_ca), "-t", "t", "-m", "x"],
    );
    assert!(!out.status.success());
    assert!(
        b.wait_for_log("the client does not accept the server certificate", WAIT),
        "logs:\n{}",
        b.logs().join("\n")
    );
    tls_publish_arrives(&b, plain, tls, &["--cafile", s(&ca_file)]).expect("still served");
    b.assert_serves();
}

/// True when the `openssl` command is there (Debian package `openssl`); says so otherwise.
fn openssl_available() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("skipped: the openssl command is not installed (apt-get install openssl)");
    }
    ok
}

/// `openssl s_client` forced to one TLS version: true when the handshake succeeded.
fn openssl_handshake(port: u16, version_flag: &str, ca_file: &std::path::Path) -> bool {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        version_flag,
    ])
    .args(["-CAfile", s(ca_file), "-verify_return_error", "-brief"]);
    let out = run_with_timeout(cmd, Some(Vec::new()), Duration::from_secs(20));
    out.status.success()
}

#[test]
fn tls_version_sets_the_minimum() {
    if skip_on_mosquitto("TLS config made for midge's test harness") || !openssl_available() {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("midge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let (mut b, plain, tls) = tls_broker(&ca.server(&dir, "server"), "tls_version tlsv1.3");
    assert!(
        !openssl_handshake(tls, "-tls1_2", &ca_file),
        "TLS 1.2 was accepted"
    );
    assert!(
        b.wait_for_log("no TLS version or cipher suite in common", WAIT),
        "logs:\n{}",
        b.logs().join("\n")
    );
    assert!(
        openssl_handshake(tls, "-tls1_3", &ca_file),
        "TLS 1.3 was refused"
    );
    tls_publish_arrives(&b, plain, tls, &["--cafile", s(&ca_file)]).expect("TLS 1.3 accepted");
    b.assert_serves();
}

#[test]
fn default_tls_versions_are_1_2_and_1_3() {
    if skip_on_mosquitto("TLS config made for midge's test harness") || !openssl_available() {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("midge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let (mut b, _plain, tls) = tls_broker(&ca.server(&dir, "server"), "");
    assert!(
        openssl_handshake(tls, "-tls1_2", &ca_file),
        "TLS 1.2 was refused"
    );
    assert!(
        openssl_handshake(tls, "-tls1_3", &ca_file),
        "TLS 1.3 was refused"
    );
    assert!(
        !openssl_handshake(tls, "-tls1_1", &ca_file),
        "TLS 1.1 was accepted"
    );
    b.assert_serves();
}

#[test]
fn sighup_reloads_a_replaced_certificate_and_keeps_it_when_the_new_one_is_broken() {
    if skip_on_mosquitto("midge's own log wording") {
        return;
    }
    let dir = TempDir::new();
    let old_ca = Ca::new("old CA");
    let old_ca_file = old_ca.write(&dir, "old-ca.pem");
    let server = old_ca.server(&dir, "server");
    let (mut b, plain, tls) = tls_broker(&server, "");
    tls_publish_arrives(&b, plain, tls, &["--cafile", s(&old_ca_file)]).expect("old certificate");

    // Replace certificate and key with ones from a new CA, then SIGHUP.
    let new_ca = Ca::new("new CA");
    let new_ca_file = new_ca.write(&dir, "new-ca.pem");
    let fresh = new_ca.server(&dir, "fresh");
    std::fs::copy(&fresh.cert, &server.cert).unwrap();
    std::fs::copy(&fresh.key, &server.key).unwrap();
    unsafe { libc::kill(b.pid() as libc::pid_t, libc::SIGHUP) };
    assert!(
        b.wait_for_log(
            "Reloaded the TLS certificate and key of the listener on port",
            WAIT
        ),
        "logs:\n{}",
        b.logs().join("\n")
    );
    tls_publish_arrives(&b, plain, tls, &["--cafile", s(&new_ca_file)]).expect("new certificate");
    assert!(tls_publish_arrives(&b, plain, tls, &["--cafile", s(&old_ca_file)]).is_err());

    // A broken certificate file: the reload fails, loudly, and the listener keeps serving
    // with the certificate it had.
    std::fs::write(&server.cert, "not a certificate\n").unwrap();
    unsafe { libc::kill(b.pid() as libc::pid_t, libc::SIGHUP) };
    assert!(
        b.wait_for_log("Unable to load TLS for the listener on port", WAIT),
        "logs:\n{}",
        b.logs().join("\n")
    );
    tls_publish_arrives(&b, plain, tls, &["--cafile", s(&new_ca_file)]).expect("kept");
    b.assert_serves();
}

#[test]
fn missing_certificate_file_stops_start_up_with_its_name() {
    if skip_on_mosquitto("midge's own error wording") {
        return;
    }
    let dir = TempDir::new();
    let conf = dir.write(
        "m.conf",
        "listener 0 127.0.0.1\ncertfile /nonexistent/server.pem\nkeyfile /nonexistent/key.pem\n",
    );
    let out = run_midge(&["-c", s(&conf)], Duration::from_secs(10));
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("Unable to load server certificate \"/nonexistent/server.pem\""),
        "{text}"
    );
}

/// A CA hierarchy made by the `openssl` command, as operators make theirs: a root, an
/// intermediate it signs, and server certificates for 127.0.0.1 the intermediate signs
/// (`leaf*.pem`/`.key`) or the root signs (`direct.pem`/`.key`).
struct OpensslPki {
    dir: TempDir,
}

impl OpensslPki {
    fn new() -> OpensslPki {
        let pki = OpensslPki {
            dir: TempDir::new(),
        };
        pki.dir.write(
            "ca.ext",
            "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign,cRLSign\n",
        );
        pki.dir.write(
            "server.ext",
            "basicConstraints=CA:false\nextendedKeyUsage=serverAuth\n\
             subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        );
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "root.key",
            "-out",
            "root.pem",
            "-days",
            "30",
            "-subj",
            "/CN=Test Root",
            "-addext",
            "basicConstraints=critical,CA:true",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        pki.issue("intermediate", "/CN=Test Intermediate", "root", "ca.ext");
        pki.issue("leaf", "/CN=localhost", "intermediate", "server.ext");
        pki.issue("leaf2", "/CN=localhost", "intermediate", "server.ext");
        pki.issue("direct", "/CN=localhost", "root", "server.ext");
        // The intermediate's predecessor: the same name, another key.
        pki.issue(
            "old-intermediate",
            "/CN=Test Intermediate",
            "root",
            "ca.ext",
        );
        pki
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    }

    /// `name.pem` and `name.key`, for `subject`, signed by `issuer` with extensions `ext`.
    fn issue(&self, name: &str, subject: &str, issuer: &str, ext: &str) {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            subject,
        ]);
        let (ca, ca_key) = (format!("{issuer}.pem"), format!("{issuer}.key"));
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "30",
            "-extfile",
            ext,
        ]);
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// The concatenation of `names` written as `to`.
    fn bundle(&self, to: &str, names: &[&str]) -> std::path::PathBuf {
        let text: String = names
            .iter()
            .map(|n| std::fs::read_to_string(self.path(n)).expect("read pem"))
            .collect();
        self.dir.write(to, &text)
    }

    fn pair(&self, name: &str) -> Pair {
        Pair {
            cert: self.path(&format!("{name}.pem")),
            key: self.path(&format!("{name}.key")),
        }
    }
}

/// The subjects of the certificates the server at `port` sends, as `openssl s_client
/// -showcerts` lists them, and whether a client trusting only `root` verified it.
fn served_chain(port: u16, root: &std::path::Path) -> (Vec<String>, bool) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-CAfile", s(root), "-verify_return_error", "-showcerts"]);
    let out = run_with_timeout(cmd, Some(Vec::new()), Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout);
    let subjects = text
        .lines()
        .filter_map(|l| l.trim_start().split_once(" s:").map(|(_, s)| s.to_string()))
        .collect();
    (subjects, out.status.success())
}

#[test]
fn intermediate_certificates_from_cafile_complete_the_chain() {
    if skip_on_mosquitto("TLS config made for midge's test harness") || !openssl_available() {
        return;
    }
    let pki = OpensslPki::new();
    let root = pki.path("root.pem");
    let cas = pki.bundle("cas.pem", &["root.pem", "intermediate.pem"]);
    let (mut b, plain, tls) = tls_broker(&pki.pair("leaf"), &format!("cafile {}", s(&cas)));
    // As Mosquitto (OpenSSL) sends it: the server certificate, then its issuers up to the
    // root.
    assert_eq!(
        served_chain(tls, &root),
        (
            vec![
                "CN = localhost".to_string(),
                "CN = Test Intermediate".to_string(),
                "CN = Test Root".to_string()
            ],
            true
        )
    );
    tls_publish_arrives(&b, plain, tls, &["--cafile", s(&root)])
        .expect("a client trusting only the root connects");
    b.assert_serves();
}

#[test]
fn the_issuer_is_found_by_its_key_when_a_renewed_ca_keeps_its_name() {
    if skip_on_mosquitto("TLS config made for midge's test harness") || !openssl_available() {
        return;
    }
    let pki = OpensslPki::new();
    let root = pki.path("root.pem");
    let cas = pki.bundle(
        "cas.pem",
        &["root.pem", "old-intermediate.pem", "intermediate.pem"],
    );
    let (mut b, plain, tls) = tls_broker(&pki.pair("leaf"), &format!("cafile {}", s(&cas)));
    assert!(served_chain(tls, &root).1, "the chain verifies");
    tls_publish_arrives(&b, plain, tls, &["--cafile", s(&root)])
        .expect("a client trusting only the root connects");
    b.assert_serves();
}

#[test]
fn intermediate_certificates_from_capath_complete_the_chain() {
    if skip_on_mosquitto("TLS config made for midge's test harness") || !openssl_available() {
        return;
    }
    let pki = OpensslPki::new();
    let root = pki.path("root.pem");
    let capath = TempDir::new();
    for name in ["root.pem", "intermediate.pem"] {
        std::fs::copy(pki.path(name), capath.path().join(name)).expect("copy CA");
    }
    let (mut b, plain, tls) =
        tls_broker(&pki.pair("leaf"), &format!("capath {}", s(capath.path())));
    assert!(served_chain(tls, &root).1, "the chain verifies");
    tls_publish_arrives(&b, plain, tls, &["--cafile", s(&root)])
        .expect("a client trusting only the root connects");
    b.assert_serves();
}

#[test]
fn a_certfile_holding_a_chain_is_sent_as_it_is() {
    if skip_on_mosquitto("TLS config made for midge's test harness") || !openssl_available() {
        return;
    }
    let pki = OpensslPki::new();
    let root = pki.path("root.pem");
    let chain = pki.bundle("chain.pem", &["leaf.pem", "intermediate.pem"]);
    let server = Pair {
        cert: chain,
        key: pki.path("leaf.key"),
    };
    // The CA file holds the root only: nothing is added to the operator's chain.
    let (mut b, plain, tls) = tls_broker(&server, &format!("cafile {}", s(&root)));
    assert_eq!(
        served_chain(tls, &root),
        (
            vec![
                "CN = localhost".to_string(),
                "CN = Test Intermediate".to_string()
            ],
            true
        )
    );
    tls_publish_arrives(&b, plain, tls, &["--cafile", s(&root)]).expect("chain from certfile");
    b.assert_serves();
}

#[test]
fn sighup_builds_the_chain_of_a_replaced_certificate() {
    if skip_on_mosquitto("midge's own log wording") || !openssl_available() {
        return;
    }
    let pki = OpensslPki::new();
    let root = pki.path("root.pem");
    let cas = pki.bundle("cas.pem", &["root.pem", "intermediate.pem"]);
    // Start with a certificate the root signs directly, then swap in one the intermediate
    // signs.
    let server = Pair {
        cert: pki.bundle("server.pem", &["direct.pem"]),
        key: pki.bundle("server.key", &["direct.key"]),
    };
    let (mut b, plain, tls) = tls_broker(&server, &format!("cafile {}", s(&cas)));
    tls_publish_arrives(&b, plain, tls, &["--cafile", s(&root)]).expect("direct certificate");
    std::fs::copy(pki.path("leaf2.pem"), &server.cert).unwrap();
    std::fs::copy(pki.path("leaf2.key"), &server.key).unwrap();
    unsafe { libc::kill(b.pid() as libc::pid_t, libc::SIGHUP) };
    assert!(
        b.wait_for_log(
            "Reloaded the TLS certificate and key of the listener on port",
            WAIT
        ),
        "logs:\n{}",
        b.logs().join("\n")
    );
    assert_eq!(
        served_chain(tls, &root).0.len(),
        3,
        "leaf, intermediate, root"
    );
    tls_publish_arrives(&b, plain, tls, &["--cafile", s(&root)])
        .expect("a client trusting only the root connects after the reload");
    b.assert_serves();
}

/// The replay matrix over TLS: 5 000 retained messages arrive whole and once at every
/// protocol level and QoS (the replay is streamed as the TLS session drains).
#[test]
fn a_retained_replay_arrives_whole_over_tls_at_every_protocol_level_and_qos() {
    if skip_on_mosquitto("TLS config made for midge's test harness") {
        return;
    }
    let dir = TempDir::new();
    let ca = Ca::new("midge test CA");
    let ca_file = ca.write(&dir, "ca.pem");
    let (_b, plain, tls) = tls_broker(&ca.server(&dir, "server"), "");
    let n = 5_000;
    fill_retained(plain, "big", n);
    for v in ["mqttv31", "mqttv311", "mqttv5"] {
        for q in ["0", "1", "2"] {
            let count = n.to_string();
            let args = [
                "--cafile",
                s(&ca_file),
                "-V",
                v,
                "-q",
                q,
                "-t",
                "big/#",
                "-C",
                &count,
                "-W",
                "20",
            ];
            let out = mosquitto(MOSQUITTO_SUB, tls, &args);
            let text = String::from_utf8_lossy(&out.stdout);
            let distinct: std::collections::HashSet<&str> = text.lines().collect();
            assert_eq!(
                (text.lines().count(), distinct.len()),
                (n, n),
                "{v} QoS {q}: messages, distinct; {}",
                stderr(&out)
            );
        }
    }
}
