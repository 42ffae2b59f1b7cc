//! `$SYS`: the broker describing itself on `$SYS/broker/...` topics.
//!
//! Every `sys_interval` seconds the broker publishes Mosquitto's set of statistics as retained
//! messages, each only when its value changed (uptime changes every time). Subscribers see them
//! like any message; a filter starting with a wildcard never matches a `$` topic, so `#`
//! subscribers are not flooded (v311:[MQTT-4.7.2-1]). Load figures are moving averages of a
//! per-minute rate over 1, 5 and 15 minutes, as Mosquitto computes them.
//!
//! With `persistence true`, midge adds what Mosquitto has no equivalent for, the state of its
//! store (`$SYS/broker/store/healthy`, `syncs`, `batches/committed`, `commit/latency_us`):
//! the server hands the broker the store's [`StoreStatus`] at the end of each turn.

use super::{Broker, Stats};
use crate::codec::QoS;
use crate::store::StoreStatus;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Counters whose rates are averaged (`$SYS/broker/load/...`).
const LOAD_NAMES: [&str; 9] = [
    "connections",
    "sockets",
    "bytes/received",
    "bytes/sent",
    "messages/received",
    "messages/sent",
    "publish/received",
    "publish/sent",
    "publish/dropped",
];

fn load_counters(s: &Stats) -> [u64; 9] {
    [
        s.connections,
        s.connections,
        s.bytes_received,
        s.bytes_sent,
        s.messages_received,
        s.messages_sent,
        s.publish_received,
        s.publish_sent,
        s.publish_dropped,
    ]
}

/// What `$SYS` remembers between updates.
pub struct SysState {
    started: Instant,
    interval: Duration,
    last_update: Instant,
    last_counters: [u64; 9],
    /// Per counter, the 1, 5 and 15 minute averages.
    loads: [[f64; 3]; 9],
    /// Last payload published on each topic, to publish only changes.
    published: HashMap<String, String>,
    /// The store's figures as of the last turn; `None` without persistence.
    store: Option<StoreStatus>,
}

impl SysState {
    /// `$SYS` for a broker started at `now`, updated every `interval` (zero disables it).
    pub fn new(now: Instant, interval: Duration) -> SysState {
        SysState {
            started: now,
            interval,
            last_update: now,
            last_counters: [0; 9],
            loads: [[0.0; 3]; 9],
            published: HashMap::new(),
            store: None,
        }
    }

    /// When the next update is due, or `None` when `$SYS` is off.
    pub fn next_due(&self) -> Option<Instant> {
        (!self.interval.is_zero()).then(|| self.last_update + self.interval)
    }

    /// Changes the interval (SIGHUP).
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// Takes the store's current figures (once a turn, before the timers run).
    pub fn set_store_status(&mut self, status: Option<StoreStatus>) {
        self.store = status;
    }

    /// When the broker started.
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    /// The store's figures as of the last turn; `None` without persistence.
    pub(super) fn store_status(&self) -> Option<StoreStatus> {
        self.store
    }
}

impl Broker {
    /// Publishes the `$SYS` topics whose values changed.
    pub(super) fn publish_sys(&mut self, now: Instant) {
        let values = self.sys_values(now);
        for (topic, payload) in values {
            if self.sys.published.get(&topic) == Some(&payload) {
                continue;
            }
            self.publish_internal(&topic, payload.as_bytes(), QoS::AtMostOnce, true, now);
            self.sys.published.insert(topic, payload);
        }
    }

    /// Every `$SYS` topic and its current payload, updating the load averages.
    fn sys_values(&mut self, now: Instant) -> Vec<(String, String)> {
        let dt = now
            .saturating_duration_since(self.sys.last_update)
            .as_secs_f64();
        let counters = load_counters(&self.stats);
        if dt > 0.0 {
            for (i, &c) in counters.iter().enumerate() {
                let per_minute = (c.saturating_sub(self.sys.last_counters[i])) as f64 * 60.0 / dt;
                for (j, window) in [60.0, 300.0, 900.0].iter().enumerate() {
                    let e = (-dt / window).exp();
                    let avg = &mut self.sys.loads[i][j];
                    *avg = per_minute + e * (*avg - per_minute);
                }
            }
        }
        self.sys.last_counters = counters;
        self.sys.last_update = now;

        let s = &self.stats;
        let sessions = self.sessions.len();
        let connected = s.clients_connected;
        let disconnected = sessions.saturating_sub(connected);
        let (stored, stored_bytes) = self.stored_messages();
        let shared = self.router.shared_count();
        let mut v: Vec<(String, String)> = vec![
            (
                "version",
                format!("midge version {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "uptime",
                format!(
                    "{} seconds",
                    now.saturating_duration_since(self.sys.started).as_secs()
                ),
            ),
            ("bytes/received", s.bytes_received.to_string()),
            ("bytes/sent", s.bytes_sent.to_string()),
            ("clients/connected", connected.to_string()),
            ("clients/active", connected.to_string()),
            ("clients/disconnected", disconnected.to_string()),
            ("clients/inactive", disconnected.to_string()),
            ("clients/expired", s.clients_expired.to_string()),
            ("clients/maximum", s.clients_maximum.to_string()),
            ("clients/total", sessions.to_string()),
            ("messages/received", s.messages_received.to_string()),
            ("messages/sent", s.messages_sent.to_string()),
            ("messages/stored", stored.to_string()),
            ("store/messages/count", stored.to_string()),
            ("store/messages/bytes", stored_bytes.to_string()),
            ("publish/messages/received", s.publish_received.to_string()),
            ("publish/messages/sent", s.publish_sent.to_string()),
            ("publish/messages/dropped", s.publish_dropped.to_string()),
            (
                "publish/bytes/received",
                s.publish_bytes_received.to_string(),
            ),
            ("publish/bytes/sent", s.publish_bytes_sent.to_string()),
            ("retained messages/count", self.retained.len().to_string()),
            (
                "subscriptions/count",
                (self.router.len() - shared).to_string(),
            ),
            ("shared_subscriptions/count", shared.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("$SYS/broker/{k}"), v))
        .collect();
        if let Some(st) = self.sys.store {
            for (k, val) in [
                ("healthy", u64::from(st.healthy)),
                ("syncs", st.syncs),
                ("batches/committed", st.batches_committed),
                ("commit/latency_us", st.last_commit_us),
            ] {
                v.push((format!("$SYS/broker/store/{k}"), val.to_string()));
            }
        }
        for (i, name) in LOAD_NAMES.iter().enumerate() {
            for (j, w) in ["1min", "5min", "15min"].iter().enumerate() {
                v.push((
                    format!("$SYS/broker/load/{name}/{w}"),
                    format!("{:.2}", self.sys.loads[i][j]),
                ));
            }
        }
        v
    }

    /// Messages held: retained ones plus every queued and in-flight delivery (those of long
    /// queues that are in the store only too), and the payload bytes of those in memory.
    fn stored_messages(&self) -> (usize, usize) {
        let mut count = self.retained.len();
        let mut bytes: usize = self.retained.payload_bytes();
        for (_, s) in &self.sessions {
            count += s.queue.len() + s.queue.spilled() + s.inflight.len();
            bytes += s.queue.iter().map(|d| d.msg.payload().len()).sum::<usize>();
            bytes += s
                .inflight
                .iter()
                .map(|m| m.delivery.msg.payload().len())
                .sum::<usize>();
        }
        (count, bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_average_converges_to_the_rate() {
        let now = Instant::now();
        let mut b = Broker::new(super::super::Settings::default(), now, 1);
        b.sys = SysState::new(now, Duration::from_secs(10));
        let mut t = now;
        for _ in 0..200 {
            t += Duration::from_secs(10);
            b.stats.publish_received += 100; // 600 per minute
            b.sys_values(t);
        }
        let one_min = b.sys.loads[6][0];
        assert!((one_min - 600.0).abs() < 1.0, "{one_min}");
    }

    #[test]
    fn uptime_and_counts_are_formatted_like_mosquitto() {
        let now = Instant::now();
        let mut b = Broker::new(super::super::Settings::default(), now, 1);
        b.sys = SysState::new(now, Duration::from_secs(10));
        let v: HashMap<String, String> = b
            .sys_values(now + Duration::from_secs(42))
            .into_iter()
            .collect();
        assert_eq!(v["$SYS/broker/uptime"], "42 seconds");
        assert_eq!(v["$SYS/broker/retained messages/count"], "0");
        assert_eq!(v["$SYS/broker/load/publish/dropped/15min"], "0.00");
        assert!(v["$SYS/broker/version"].starts_with("midge version "));
        assert!(!v.contains_key("$SYS/broker/store/healthy"));
    }

    #[test]
    fn store_figures_appear_with_a_store() {
        let now = Instant::now();
        let mut b = Broker::new(super::super::Settings::default(), now, 1);
        b.sys = SysState::new(now, Duration::from_secs(10));
        b.sys.set_store_status(Some(StoreStatus {
            healthy: false,
            syncs: 3,
            batches_committed: 17,
            last_commit_us: 1250,
        }));
        let v: HashMap<String, String> = b.sys_values(now).into_iter().collect();
        assert_eq!(v["$SYS/broker/store/healthy"], "0");
        assert_eq!(v["$SYS/broker/store/syncs"], "3");
        assert_eq!(v["$SYS/broker/store/batches/committed"], "17");
        assert_eq!(v["$SYS/broker/store/commit/latency_us"], "1250");
    }
}
