//! The crash torture test, `scripts/crash-torture.py`, in its short mode: persistent paho
//! publishers (QoS 1 over 3.1.1, QoS 2 over 5) and slower persistent subscribers while midge,
//! with `persistence true`, is stopped every 1-2 s and restarted on the same port and store.
//! Every message midge acknowledged must reach both subscribers, each QoS 2 message once. The
//! long mode (50 SIGKILLs) and the comparison with Mosquitto are for humans: docs/store.md,
//! "Crash test".

use crate::common::*;
use std::process::Command;
use std::time::Duration;

/// Runs the script's short mode against the midge under test (or Mosquitto under
/// `MIDGE_TEST_BROKER=mosquitto`) with `args`; returns its exit code and everything it printed.
fn torture(args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("scripts/crash-torture.py"))
        .args(["--short", "--midge", midge_bin()])
        .args(args);
    if is_mosquitto() {
        cmd.args(["--broker", "mosquitto"]);
    }
    // The script bounds its own waits; this only catches a hang.
    let out = run_with_timeout(cmd, None, Duration::from_secs(150));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn sigkill_loses_nothing_acknowledged_and_repeats_no_qos2_message() {
    if skip_on_mosquitto("Mosquitto loses what it acknowledged since its last autosave")
        || !paho_available()
    {
        return;
    }
    let (code, out) = torture(&["--signal", "KILL"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("5 x SIGKILL") && out.contains("verdict: PASS"),
        "{out}"
    );
}

#[test]
fn sigterm_loses_nothing_acknowledged_and_repeats_no_qos2_message() {
    if !paho_available() {
        return;
    }
    let (code, out) = torture(&["--signal", "TERM", "--kills", "3"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("3 x SIGTERM") && out.contains("verdict: PASS"),
        "{out}"
    );
}

/// The verdict can fail: a broker without persistence forgets the subscribers' sessions and
/// what was queued for them at each kill.
#[test]
fn the_verdict_catches_a_broker_that_forgets() {
    if !paho_available() {
        return;
    }
    let (code, out) = torture(&["--no-persistence", "--kills", "2", "--discard"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("verdict: FAIL") && out.contains("acknowledged, never reached"),
        "{out}"
    );
}

/// The verdict on made-up results (no broker): a QoS 2 message delivered twice fails it, which
/// the runs above cannot show on demand.
#[test]
fn the_verdict_counts_a_qos2_message_twice_as_a_failure() {
    if !paho_available() {
        return;
    }
    let (code, out) = torture(&["--self-check"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("self-check: ok"), "{out}");
}
