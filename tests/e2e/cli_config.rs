//! The binary, its flags and its config file: `--help`, `--version`,
//! unknown flags, `-p`, `-c` errors naming the file and line (exit status 3, as Mosquitto),
//! fatal security options, `listener 0`, `include_dir`, `pid_file`, SIGTERM. Unknown and refused
//! options are in tests/e2e/options.rs.

use crate::common::*;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_exits_0_with_usage() {
    if skip_on_mosquitto("midge's CLI") {
        return;
    }
    for flag in ["--help", "-h"] {
        let o = run_midge(&[flag], Duration::from_secs(10));
        assert_eq!(o.status.code(), Some(0), "{flag}: {}", text(&o));
        let t = text(&o);
        for opt in ["-c", "-p", "-v"] {
            assert!(t.contains(opt), "{flag}: usage lacks {opt}: {t}");
        }
    }
}

#[test]
fn unknown_flag_exits_1_with_usage() {
    if skip_on_mosquitto("midge's CLI") {
        return;
    }
    let o = run_midge(&["--bogus-flag"], Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.to_lowercase().contains("usage"), "no usage text: {t}");
    assert!(t.contains("-c"), "usage lacks -c: {t}");
}

#[test]
fn version_flag_prints_version() {
    if skip_on_mosquitto("midge's CLI") {
        return;
    }
    let o = run_midge(&["--version"], Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains(env!("CARGO_PKG_VERSION")), "{t}");
    assert!(t.to_lowercase().contains("midge"), "{t}");
}

/// Spawns the broker with `args`, waits (bounded) until `ports` accept connections.
fn spawn_and_wait(args: &[&str], ports: &[u16]) -> std::process::Child {
    let bin = if is_mosquitto() {
        MOSQUITTO
    } else {
        midge_bin()
    };
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    for &p in ports {
        while TcpStream::connect(("127.0.0.1", p)).is_err() {
            if Instant::now() > deadline || !matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("broker {args:?} never listened on {p}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    child
}

// `-p PORT`, repeatable, like Mosquitto (no config file: loopback, anonymous allowed).
#[test]
fn dash_p_listens_on_each_port() {
    let (p1, p2) = (free_port(), free_port());
    let (s1, s2) = (p1.to_string(), p2.to_string());
    // Debian's Mosquitto 2.0.11 crashes (SIGSEGV) with two -p; check one there.
    let (args, ports): (Vec<&str>, Vec<u16>) = if is_mosquitto() {
        (vec!["-p", &s1], vec![p1])
    } else {
        (vec!["-p", &s1, "-p", &s2], vec![p1, p2])
    };
    let mut child = spawn_and_wait(&args, &ports);
    for &p in &ports {
        let mut c = Raw::mqtt_connect(p, "dash-p");
        c.send(&PINGREQ);
        c.expect_bytes(&PINGRESP, WAIT);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn missing_config_file_exits_3_naming_it() {
    if skip_on_mosquitto("midge's messages") {
        return;
    }
    let dir = TempDir::new();
    let path = dir.path().join("does-not-exist.conf");
    let o = run_midge(&["-c", path.to_str().unwrap()], Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("does-not-exist.conf"), "{}", text(&o));
}

#[test]
fn bad_value_exits_3_naming_file_and_line() {
    if skip_on_mosquitto("midge's messages") {
        return;
    }
    let dir = TempDir::new();
    let path = dir.write(
        "bad.conf",
        "listener 0 127.0.0.1\n# a comment\nmax_inflight_messages banana\n",
    );
    let o = run_midge(&["-c", path.to_str().unwrap()], Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let want = format!("{}:3", path.display());
    assert!(text(&o).contains(&want), "no {want:?} in: {}", text(&o));
    assert!(text(&o).contains("max_inflight_messages"), "{}", text(&o));
}

// Options whose absence would weaken security are never ignored: either midge refuses to start
// (exit 3 naming the option, the rule until the option is implemented), or it starts and
// enforces them — then, with no `allow_anonymous` line, an anonymous client is refused with
// CONNACK 0x05. Never an open broker.
#[test]
fn security_options_never_give_an_open_broker() {
    if skip_on_mosquitto("midge-only rule") {
        return;
    }
    let dir = TempDir::new();
    let pw = dir.write("passwd", "user:$7$101$c2FsdHNhbHRzYWx0$aGFzaA==\n");
    let acl = dir.write("acl", "topic readwrite #\n");
    for (opt, file) in [("password_file", &pw), ("acl_file", &acl)] {
        let path = dir.write(
            &format!("{opt}.conf"),
            &format!("listener 0 127.0.0.1\n{opt} {}\n", file.display()),
        );
        let mut child = Command::new(midge_bin())
            .args(["-c", path.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn midge");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        for pipe in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for l in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(l);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Ok(Some(st)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                let all = lines.lock().unwrap().join("\n");
                assert_eq!(st.code(), Some(3), "{opt}: {all}");
                assert!(all.contains(opt), "{opt} not named: {all}");
                break None;
            }
            let found = lines.lock().unwrap().iter().find_map(|l| {
                l.split("Opening ipv4 listen socket on port ")
                    .nth(1)
                    .and_then(|r| r.trim_end_matches('.').parse::<u16>().ok())
            });
            if found.is_some() {
                break found;
            }
            assert!(
                Instant::now() < deadline,
                "{opt}: neither exited nor listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(port) = port {
            let mut c = Raw::connect(port);
            c.send(&Connect::v311(&format!("anon-{opt}")).bytes());
            c.expect_bytes(&[0x20, 2, 0, 5], WAIT);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

// `listener 0`: the OS picks the port and midge logs the real one.
#[test]
fn listener_0_logs_real_port() {
    if skip_on_mosquitto("midge-only") {
        return;
    }
    let mut b = Broker::start("");
    assert_ne!(b.port(), 0);
    b.assert_serves();
}

// `include_dir`: files are read in name order (the last `max_packet_size` wins).
#[test]
fn include_dir_files_read_in_name_order() {
    let inc = TempDir::new();
    inc.write("b.conf", "max_packet_size 1000\n");
    inc.write("a.conf", "max_packet_size 100000\n");
    inc.write("c.txt", "this file is not a .conf file and is ignored\n");
    let mut b = Broker::start(&format!("include_dir {}", inc.path().display()));
    let mut c = Raw::mqtt_connect(b.port(), "inc-ok");
    c.send(&publish("t", &[b'a'; 900], 1, false, false, 1));
    c.expect_bytes(&puback(1), WAIT);
    let mut c = Raw::mqtt_connect(b.port(), "inc-big");
    c.send(&publish("t", &[b'a'; 1500], 1, false, false, 1));
    c.expect_closed(WAIT);
    b.assert_serves();
}

// `pid_file`: the file holds the broker's pid.
#[test]
fn pid_file_written() {
    let dir = TempDir::new();
    dir.open_to_all();
    let path = dir.path().join("broker.pid");
    let b = Broker::start(&format!("pid_file {}", path.display()));
    let deadline = Instant::now() + WAIT;
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if !text.trim().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(text.trim(), b.pid().to_string());
}

// SIGTERM: a clean exit (status 0) within a few seconds.
#[test]
fn sigterm_exits_cleanly() {
    let mut b = Broker::start("");
    let _c = Raw::mqtt_connect(b.port(), "sigterm-client");
    b.sigterm();
    let st = b
        .wait_exit(Duration::from_secs(5))
        .expect("did not exit on SIGTERM");
    assert!(st.success(), "exit status {st}");
}
