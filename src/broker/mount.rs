//! `mount_point`: the clients of a listener with one live in their own topic tree.
//!
//! As in Mosquitto, the listener's prefix goes in front of every topic such a client publishes
//! (its will's too) and of every filter it subscribes to, so ACLs, retained messages and the
//! other listeners all see the full topic; on the way out the prefix comes off again. A
//! message outside the tree never reaches the client: its subscriptions are all mounted, so
//! only a session resumed from another listener could have one, and it is not delivered.
//! The prefix is plain text, as in Mosquitto: `tenant1/` gives `tenant1/x` for `x`, and `$SYS`
//! is no exception (a mounted client sees only `PREFIX$SYS/...`, which the broker never
//! publishes).

use super::router::parse_shared;

/// A topic name under `mount_point`.
pub(super) fn mount(mount_point: &str, topic: &str) -> String {
    format!("{mount_point}{topic}")
}

/// A subscription filter under `mount_point`. A shared subscription stays shared: the prefix
/// goes in front of its filter, after `$share/GROUP/`. (Mosquitto prefixes the whole text,
/// which turns `$share/g/x` into an ordinary filter that matches nothing.)
pub(super) fn mount_filter(mount_point: &str, filter: &str) -> String {
    match parse_shared(filter) {
        Some((group, f)) => format!("$share/{group}/{mount_point}{f}"),
        None => mount(mount_point, filter),
    }
}

/// The name a client under `mount_point` knows `topic` by; `None` when the topic is outside
/// its tree (or is the bare prefix, which leaves no topic name).
pub(super) fn unmount<'t>(mount_point: &str, topic: &'t str) -> Option<&'t str> {
    topic.strip_prefix(mount_point).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_filters_get_the_prefix_and_lose_it_on_the_way_out() {
        assert_eq!(mount("tenant1/", "a/b"), "tenant1/a/b");
        assert_eq!(
            mount("tenant1/", "$SYS/broker/uptime"),
            "tenant1/$SYS/broker/uptime"
        );
        assert_eq!(mount_filter("tenant1/", "+/b/#"), "tenant1/+/b/#");
        assert_eq!(
            mount_filter("tenant1/", "$share/g/a/#"),
            "$share/g/tenant1/a/#"
        );
        assert_eq!(unmount("tenant1/", "tenant1/a/b"), Some("a/b"));
        assert_eq!(unmount("tenant1/", "tenant2/a/b"), None);
        assert_eq!(unmount("tenant1/", "tenant1/"), None);
        assert_eq!(unmount("tenant1/", "tenant1"), None);
    }
}
