//! `/metrics`: the broker's figures in the Prometheus text exposition format (version 0.0.4),
//! for a WebSocket listener with `metrics true` (see `crate::http`).
//!
//! The figures are those of `$SYS` (`sys.rs`), named by Prometheus conventions: a counter ends
//! in `_total`, a unit is a suffix in base units (`_bytes`, `_seconds`), and what `$SYS`
//! splits into several topics is one metric with a label (`qos`, `port`, `bridge`). Load
//! averages are left out: Prometheus computes rates from the counters. What only the loop knows
//! (connections per listener, the process's memory) comes in as [`LoopFigures`].
//!
//! Rendering reads counters and walks the sessions once (for the messages they hold), so a
//! scrape costs well under a millisecond with 10 000 clients.

use super::Broker;
use std::fmt::Write;
use std::time::Instant;

/// What the loop adds to the broker's own figures.
#[derive(Debug, Clone, Default)]
pub struct LoopFigures {
    /// Per listener: its port and the connections open on it.
    pub listeners: Vec<(u16, u64)>,
    /// The process's resident memory, where the system tells it.
    pub resident_memory_bytes: Option<u64>,
}

/// Writes one metric family: HELP, TYPE, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A family with one sample and no labels.
    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.head(name, kind, help);
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A sample with one label; the value is escaped as the format asks (`\`, `"`, newline).
    fn labelled(&mut self, name: &str, label: &str, value: &str, sample: impl std::fmt::Display) {
        let _ = write!(self.out, "{name}{{{label}=\"");
        for c in value.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '"' => self.out.push_str("\\\""),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        let _ = writeln!(self.out, "\"}} {sample}");
    }
}

impl Broker {
    /// Appends the broker's figures at `now` to `out`, in Prometheus text format.
    pub fn write_metrics(&self, now: Instant, figures: &LoopFigures, out: &mut String) {
        let s = &self.stats;
        let mut f = Family { out };
        f.head("midge_info", "gauge", "The broker's version.");
        f.labelled("midge_info", "version", env!("CARGO_PKG_VERSION"), 1);
        let uptime = now.saturating_duration_since(self.sys.started()).as_secs();
        f.one(
            "midge_uptime_seconds",
            "gauge",
            "Seconds since the broker started.",
            uptime,
        );

        let sessions = self.sessions.len();
        let connected = s.clients_connected;
        f.one(
            "midge_clients_connected",
            "gauge",
            "Clients connected (bridges included).",
            connected,
        );
        f.one(
            "midge_clients_disconnected",
            "gauge",
            "Persistent sessions whose client is not connected.",
            sessions.saturating_sub(connected),
        );
        f.one(
            "midge_clients_maximum",
            "gauge",
            "The most clients connected at once.",
            s.clients_maximum,
        );
        f.one(
            "midge_clients_expired_total",
            "counter",
            "Sessions expired.",
            s.clients_expired,
        );
        f.one(
            "midge_connections_total",
            "counter",
            "Connections accepted.",
            s.connections,
        );

        f.one(
            "midge_received_bytes_total",
            "counter",
            "Bytes received from clients.",
            s.bytes_received,
        );
        f.one(
            "midge_sent_bytes_total",
            "counter",
            "Bytes sent to clients.",
            s.bytes_sent,
        );
        f.one(
            "midge_messages_received_total",
            "counter",
            "MQTT packets of any kind received.",
            s.messages_received,
        );
        f.one(
            "midge_messages_sent_total",
            "counter",
            "MQTT packets of any kind sent.",
            s.messages_sent,
        );

        let by_qos = [
            (
                "midge_publish_messages_received_total",
                "PUBLISH packets received (wills too), by QoS.",
                &s.publish_received_by_qos,
            ),
            (
                "midge_publish_messages_sent_total",
                "PUBLISH packets sent, by QoS.",
                &s.publish_sent_by_qos,
            ),
        ];
        for (name, help, counts) in by_qos {
            f.head(name, "counter", help);
            for (qos, n) in ["0", "1", "2"].iter().zip(counts) {
                f.labelled(name, "qos", qos, n);
            }
        }
        f.one(
            "midge_publish_messages_dropped_total",
            "counter",
            "Messages not delivered to a subscriber (queue full, client gone, not allowed).",
            s.publish_dropped,
        );
        f.one(
            "midge_publish_received_bytes_total",
            "counter",
            "Payload bytes of PUBLISH packets received.",
            s.publish_bytes_received,
        );
        f.one(
            "midge_publish_sent_bytes_total",
            "counter",
            "Payload bytes of PUBLISH packets sent.",
            s.publish_bytes_sent,
        );

        f.one(
            "midge_retained_messages",
            "gauge",
            "Retained messages.",
            self.retained.len(),
        );
        f.one(
            "midge_stored_messages",
            "gauge",
            "Messages held: retained, queued for sessions (in the store only too), in flight.",
            self.held_messages(),
        );
        let shared = self.router.shared_count();
        f.one(
            "midge_subscriptions",
            "gauge",
            "Subscriptions, shared ones not included.",
            self.router.len() - shared,
        );
        f.one(
            "midge_shared_subscriptions",
            "gauge",
            "Shared subscriptions.",
            shared,
        );

        if let Some(st) = self.sys.store_status() {
            f.one(
                "midge_store_healthy",
                "gauge",
                "1 while the store commits; 0 while commits fail.",
                u8::from(st.healthy),
            );
            f.one(
                "midge_store_syncs_total",
                "counter",
                "Syncs of the store's write-ahead log.",
                st.syncs,
            );
            f.one(
                "midge_store_batches_committed_total",
                "counter",
                "Batches of changes committed.",
                st.batches_committed,
            );
            f.one(
                "midge_store_commit_latency_seconds",
                "gauge",
                "From the arrival of the oldest batch of the last commit to that commit.",
                st.last_commit_us as f64 / 1e6,
            );
        }

        if !figures.listeners.is_empty() {
            let name = "midge_listener_connections";
            f.head(
                name,
                "gauge",
                "Connections open on a listener (MQTT, WebSocket and HTTP).",
            );
            for (port, n) in &figures.listeners {
                f.labelled(name, "port", &port.to_string(), n);
            }
        }
        let mut bridges = self.bridge_states().peekable();
        if bridges.peek().is_some() {
            let name = "midge_bridge_up";
            f.head(
                name,
                "gauge",
                "1 while a bridge's link is up (the remote accepted it).",
            );
            for (bridge, up) in bridges {
                f.labelled(name, "bridge", bridge, u8::from(up));
            }
        }
        if let Some(rss) = figures.resident_memory_bytes {
            f.one(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                rss,
            );
        }
    }

    /// Messages held, as `$SYS/broker/messages/stored` counts them, without their bytes (which
    /// would mean walking every queue).
    fn held_messages(&self) -> usize {
        let queued: usize = self
            .sessions
            .iter()
            .map(|(_, s)| s.queue.len() + s.queue.spilled() + s.inflight.len())
            .sum();
        self.retained.len() + queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Settings;

    fn render(b: &Broker, now: Instant, figures: &LoopFigures) -> String {
        let mut out = String::new();
        b.write_metrics(now, figures, &mut out);
        out
    }

    #[test]
    fn every_family_has_help_and_type_and_counters_end_in_total() {
        let now = Instant::now();
        let b = Broker::new(Settings::default(), now, 1);
        let text = render(&b, now, &LoopFigures::default());
        let mut typed = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_default();
                assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
                typed.push(name.to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert!(
                    typed.iter().any(|t| t == name),
                    "{line} has no TYPE before it"
                );
            }
        }
        assert!(text.contains("midge_publish_messages_received_total{qos=\"2\"} 0\n"));
        assert!(!text.contains("midge_store_"), "no store, no store figures");
        assert!(!text.contains("midge_bridge_up"));
    }

    #[test]
    fn labels_are_escaped() {
        let mut out = String::new();
        Family { out: &mut out }.labelled("m", "bridge", "a\"b\\c\nd", 1);
        assert_eq!(out, "m{bridge=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn the_loop_figures_appear_with_their_labels() {
        let now = Instant::now();
        let b = Broker::new(Settings::default(), now, 1);
        let figures = LoopFigures {
            listeners: vec![(1883, 12), (8080, 0)],
            resident_memory_bytes: Some(4096),
        };
        let text = render(&b, now + std::time::Duration::from_secs(7), &figures);
        assert!(text.contains("midge_listener_connections{port=\"1883\"} 12\n"));
        assert!(text.contains("midge_listener_connections{port=\"8080\"} 0\n"));
        assert!(text.contains("process_resident_memory_bytes 4096\n"));
        assert!(text.contains("midge_uptime_seconds 7\n"));
    }
}
