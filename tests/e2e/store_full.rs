//! A full disk: while the store cannot commit, midge withholds the PUBACK of what it cannot
//! store (back-pressure, never a false acknowledgement), says so in its log, keeps serving
//! QoS 0, and acknowledges and delivers once space returns. A store on a read-only filesystem
//! stops start-up instead.

use crate::common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A size-limited tmpfs on a temporary directory, unmounted on drop.
struct SmallFs {
    dir: TempDir,
}

impl SmallFs {
    /// Mounts `bytes` of tmpfs (with `extra` mount options, e.g. `,ro`), or returns None (and
    /// says why) where mounting is not allowed.
    fn mount(bytes: u64, extra: &str) -> Option<SmallFs> {
        let dir = TempDir::new();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes}{extra}"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallFs { dir }),
            other => {
                eprintln!(
                    "skipped: this test needs to mount a small tmpfs (run as root with \
                     CAP_SYS_ADMIN): {other:?}"
                );
                assert!(
                    std::env::var_os("MIDGE_TEST_REQUIRE_ALL").is_none(),
                    "MIDGE_TEST_REQUIRE_ALL is set but mount -t tmpfs failed"
                );
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the filesystem refuses (ENOSPC) and returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let page = [0u8; 4096];
        loop {
            match f.write(&page) {
                Ok(n) if n > 0 => {}
                Ok(_) => break,
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(28), "expected ENOSPC, got {e}");
                    break;
                }
            }
        }
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_withholds_the_puback_keeps_qos0_and_resumes_when_space_returns() {
    if skip_on_mosquitto("Mosquitto keeps messages in memory and acknowledges at once") {
        return;
    }
    let Some(fs) = SmallFs::mount(4 << 20, "") else {
        return;
    };
    let b = Broker::start(&format!(
        "persistence true\npersistence_location {}",
        fs.path().display()
    ));
    let port = b.port();
    // A persistent QoS 1 subscriber that is offline: what it is sent must be stored.
    let mut s = Raw::mqtt_connect_with(port, &Connect::v311("parked").clean(false), &CONNACK_OK);
    s.subscribe(1, &[("q/#", 1)], &[1]);
    s.send(&DISCONNECT);
    assert!(s.closes_within(WAIT));
    let mut p = Raw::mqtt_connect(port, "producer");
    p.send(&publish("q/x", b"before", 1, false, false, 1));
    p.expect_bytes(&puback(1), WAIT);

    let filler = fs.fill();
    p.send(&publish("q/x", b"while-full", 1, false, false, 2));
    // No PUBACK while the message is not stored (the writer retries every second).
    p.expect_silence(secs(3.0));
    let line = b
        .wait_for_log_line("store: commit of", WAIT)
        .expect("a log line about the failed commit");
    assert!(line.contains("failed") && line.contains("full"), "{line}");

    // QoS 0 between two other clients still flows.
    let mut watcher = Raw::mqtt_connect(port, "watcher");
    watcher.subscribe(1, &[("live/#", 0)], &[0]);
    mosquitto_pub(port, &["-t", "live/t", "-m", "still here", "-q", "0"]);
    let got = watcher.expect_packet(WAIT);
    assert_eq!(
        (got.topic(), got.payload()),
        ("live/t".into(), &b"still here"[..])
    );

    // Space returns: the retry commits, the PUBACK leaves, the subscriber gets both messages.
    std::fs::remove_file(filler).unwrap();
    p.expect_bytes(&puback(2), secs(3.0));
    assert!(b.wait_for_log("store: commits work again", WAIT));
    let mut s = Raw::connect(port);
    s.send(&Connect::v311("parked").clean(false).bytes());
    s.expect_bytes(&[0x20, 2, 1, 0], WAIT);
    for want in [&b"before"[..], b"while-full"] {
        let m = s.expect_packet(WAIT);
        assert_eq!(m.payload(), want);
        s.send(&puback(m.pid()));
    }
    s.expect_silence(secs(0.3));
}

/// A store that cannot be written at all is a start-up error naming the place and the reason,
/// not a broker that would acknowledge what it cannot keep. (A mounted filesystem cannot be
/// remounted read-only under an open store: Linux refuses with EBUSY; one that turns read-only
/// on its own fails commits with EROFS, the path the test above takes with ENOSPC.)
#[test]
fn a_read_only_store_stops_start_up_with_the_reason() {
    if skip_on_mosquitto("Mosquitto starts without its persistence file") {
        return;
    }
    let Some(fs) = SmallFs::mount(1 << 20, ",ro") else {
        return;
    };
    let conf = TempDir::new();
    let path = conf.write(
        "broker.conf",
        &format!(
            "listener {} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n\
             persistence_location {}\n",
            free_port(),
            fs.path().display()
        ),
    );
    let out = run_midge(&["-c", path.to_str().unwrap()], WAIT);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Unable to open the store") && text.contains("Read-only file system"),
        "{text}"
    );
}

/// The last value `mosquitto_sub -v` printed for `topic`, parsed as a number.
fn last_number(sub: &Sub, topic: &str) -> Option<u64> {
    sub.wait_lines(0, Duration::ZERO)
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(topic)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the last value of `topic` satisfies `want`; returns it.
fn wait_number(sub: &Sub, topic: &str, want: impl Fn(u64) -> bool) -> Option<u64> {
    let deadline = Instant::now() + secs(8.0);
    loop {
        let v = last_number(sub, topic);
        if v.is_some_and(&want) || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// midge's `$SYS/broker/store/...` figures (Mosquitto has none): commits succeed (healthy 1),
/// batches are committed and synced, the last commit's latency; healthy turns 0 while the disk
/// is full and back to 1 once a commit works again.
#[test]
fn store_sys_topics_show_commits_syncs_and_a_full_disk() {
    if skip_on_mosquitto("midge's own $SYS/broker/store topics") {
        return;
    }
    let Some(fs) = SmallFs::mount(4 << 20, "") else {
        return;
    };
    let b = Broker::start(&format!(
        "persistence true\npersistence_location {}\nsys_interval 1",
        fs.path().display()
    ));
    let port = b.port();
    let sub = Sub::spawn(port, 40, &["-v", "-t", "$SYS/broker/store/#"]);
    let mut s = Raw::mqtt_connect_with(port, &Connect::v311("parked").clean(false), &CONNACK_OK);
    s.subscribe(1, &[("q/#", 1)], &[1]);
    s.send(&DISCONNECT);
    assert!(s.closes_within(WAIT));
    let mut p = Raw::mqtt_connect(port, "producer");
    p.send(&publish("q/x", b"stored", 1, false, false, 1));
    p.expect_bytes(&puback(1), WAIT);

    let healthy = "$SYS/broker/store/healthy";
    assert_eq!(wait_number(&sub, healthy, |v| v == 1), Some(1));
    let batches = wait_number(&sub, "$SYS/broker/store/batches/committed", |v| v >= 2);
    assert!(batches.is_some_and(|n| n >= 2), "{batches:?}");
    let syncs = wait_number(&sub, "$SYS/broker/store/syncs", |v| v >= 1);
    assert!(syncs.is_some_and(|n| n >= 1), "{syncs:?}");
    let latency = last_number(&sub, "$SYS/broker/store/commit/latency_us");
    assert!(latency.is_some_and(|us| us > 0), "{latency:?}");

    let filler = fs.fill();
    p.send(&publish("q/x", b"while-full", 1, false, false, 2));
    assert_eq!(wait_number(&sub, healthy, |v| v == 0), Some(0));
    std::fs::remove_file(filler).unwrap();
    p.expect_bytes(&puback(2), secs(3.0));
    assert_eq!(wait_number(&sub, healthy, |v| v == 1), Some(1));
}
