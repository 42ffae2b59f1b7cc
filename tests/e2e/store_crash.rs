//! A writer killed with SIGKILL mid-traffic: every batch it saw committed survives, whole.
//!
//! The test re-runs its own binary as the child (`child_writer`, which does nothing unless
//! `MIDGE_STORE_CHILD_DIR` is set). The child submits batches as fast as the store takes them
//! and prints `committed N` each time the committed number moves; the parent kills it once
//! it has seen enough, then reopens the store.

use crate::common::store::*;
use midge::store::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "MIDGE_STORE_CHILD_DIR";

/// Batch `i` writes three rows; after a crash each batch must be there whole or not at all.
fn batch(i: u64) -> Vec<Change> {
    vec![
        Change::RetainedSet {
            message: message(&format!("r/{i:08}"), &i.to_be_bytes()).into(),
        },
        body(i, "q", &[i as u8; 100]),
        Change::MessageAdd {
            client_id: "c".into(),
            message: queued(i, i),
        },
        Change::SubscriptionSet {
            client_id: "c".into(),
            subscription: Subscription {
                filter: format!("f/{i:08}"),
                options: 1,
                sub_id: 0,
            },
        },
    ]
}

#[test]
fn child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mut store, _) = Store::open(
        std::path::Path::new(&dir),
        None,
        Duration::from_secs(1),
        Box::new(|| {}),
    )
    .unwrap();
    store.submit(vec![Change::SessionUpsert {
        session: session("c"),
    }]);
    let mut out = std::io::stdout();
    let mut reported = 0;
    let mut i = 0u64;
    let start = Instant::now();
    // Bounded: the parent kills us long before this.
    while start.elapsed() < Duration::from_secs(60) {
        i += 1;
        store.submit(batch(i));
        while store.submitted() - store.committed() > 50 {
            std::thread::sleep(Duration::from_micros(100));
        }
        let c = store.committed();
        if c > reported {
            reported = c;
            // Batch 1 is the session; batch k + 1 is batch(k).
            writeln!(out, "committed {}", c - 1).unwrap();
            out.flush().unwrap();
        }
    }
    std::process::exit(3);
}

#[test]
fn sigkill_keeps_every_committed_batch() {
    let dir = scratch("sigkill");
    // libtest names a test by its module path without the crate: `store_crash::child_writer`.
    let module = module_path!().split_once("::").unwrap().1;
    let child_test = format!("{module}::child_writer");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &child_test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.as_os_str())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut last = 0u64;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("committed ") {
            last = n.trim().parse().unwrap();
            if last >= 3000 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(last >= 3000, "child stopped early at {last}");

    let (store, snapshot) = open(&dir);
    assert!(snapshot.recovery.is_none());
    let retained = snapshot.retained.len() as u64;
    let c = &snapshot.sessions[0];
    println!(
        "child killed after reporting batch {last}; store has {retained} batches \
         (uncommitted ones at the kill are lost, as the contract allows)"
    );
    assert!(
        retained >= last,
        "lost committed batches: {retained} < {last}"
    );
    // Each batch is whole, and batches form a prefix 1..=retained.
    // The snapshot holds the head of the queue and counts the rest.
    assert_eq!(c.messages.len() as u64 + c.more.count, retained);
    assert_eq!(c.more.last_seq, retained);
    assert_eq!(c.subscriptions.len() as u64, retained);
    for (k, m) in snapshot.retained.iter().enumerate() {
        let i = k as u64 + 1;
        assert_eq!(m.topic, format!("r/{i:08}"));
        assert_eq!(m.payload, i.to_be_bytes());
        if let Some(q) = c.messages.get(k) {
            assert_eq!(q.seq, i);
        }
        assert_eq!(c.subscriptions[k].filter, format!("f/{i:08}"));
    }
    store.close().unwrap();
}
