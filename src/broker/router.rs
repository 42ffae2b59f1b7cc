//! The routing table: which sessions want a message published on a topic.
//!
//! Most subscriptions name an exact topic (`home/kitchen/temp`), so those live in a `HashMap`
//! from topic to subscribers: one hash lookup per publish. Filters with wildcards live in a tree
//! with one level per node: `+` is a child that matches any one level, and `#` a list at a node
//! that matches that level and everything below it (so `a/#` also matches `a`,
//! v311 §4.7.1.2). Topics starting with `$` are not matched by a filter whose first level is a
//! wildcard (v311:[MQTT-4.7.2-1], v5:[MQTT-4.7.2-1]).
//!
//! Subscribers are sessions ([`SessionId`]), never connections: a persistent session keeps
//! receiving (into its queue) while its client is away.
//!
//! Shared subscriptions (`$share/GROUP/FILTER`, v5 §4.8.2) are kept apart: each group is a list
//! of members, and a matching message goes to one member, taken in turn (round robin),
//! preferring members whose client is connected.

use super::session::GroupKey;
use super::SessionId;
use crate::codec::SubscribeOptions;
use crate::topic::topic_matches;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

/// A small, fast hasher for topic strings (FNV-1a): the router hashes every published topic,
/// and SipHash's protection against hash flooding buys little for a table keyed by the
/// subscriptions clients chose.
#[derive(Default)]
pub struct FnvHasher(u64);

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A `HashMap` keyed by topic strings, using [`FnvHasher`].
pub type TopicMap<V> = HashMap<Box<str>, V, BuildHasherDefault<FnvHasher>>;

/// One subscription as the router stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscriber {
    pub session: SessionId,
    pub options: SubscribeOptions,
    /// MQTT 5 subscription identifier; 0 when none was given.
    pub sub_id: u32,
}

#[derive(Default)]
struct Node {
    children: TopicMap<Node>,
    plus: Option<Box<Node>>,
    /// Subscribers whose filter ends with `#` right below this node.
    hash: Vec<Subscriber>,
    /// Subscribers whose filter ends exactly at this node.
    here: Vec<Subscriber>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_empty()
            && self.here.is_empty()
    }
}

/// Adds `sub` to `list`, replacing the same session's entry; true if it replaced one.
fn upsert(list: &mut Vec<Subscriber>, sub: Subscriber) -> bool {
    match list.iter_mut().find(|s| s.session == sub.session) {
        Some(s) => {
            *s = sub;
            true
        }
        None => {
            list.push(sub);
            false
        }
    }
}

fn remove(list: &mut Vec<Subscriber>, session: SessionId) -> bool {
    let before = list.len();
    list.retain(|s| s.session != session);
    list.len() != before
}

/// One shared subscription group: `$share/{name}/{filter}`.
struct SharedGroup {
    /// The whole `$share/...` string, which identifies the group.
    key: GroupKey,
    filter: Box<str>,
    members: Vec<Subscriber>,
    next: usize,
}

/// Splits `$share/GROUP/FILTER` into group and filter; `None` for an ordinary filter.
pub fn parse_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix("$share/")?;
    let (group, filter) = rest.split_once('/')?;
    Some((group, filter))
}

/// True for a valid shared subscription (v5:[MQTT-4.8.2-1], [MQTT-4.8.2-2]): a non-empty
/// group name without wildcards or `/`, then a valid filter.
pub fn valid_shared(filter: &str) -> bool {
    match parse_shared(filter) {
        Some((group, f)) => {
            !group.is_empty() && !group.contains(['+', '#']) && crate::codec::valid_topic_filter(f)
        }
        None => false,
    }
}

/// The routing table.
#[derive(Default)]
pub struct Router {
    exact: TopicMap<Vec<Subscriber>>,
    tree: Node,
    shared: Vec<SharedGroup>,
    count: usize,
}

fn has_wildcard(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

impl Router {
    /// Number of subscriptions held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Number of shared subscriptions (members of all groups).
    pub fn shared_count(&self) -> usize {
        self.shared.iter().map(|g| g.members.len()).sum()
    }

    /// True when any shared subscription exists.
    pub fn has_shared(&self) -> bool {
        !self.shared.is_empty()
    }

    /// True when nobody subscribes to anything.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds or replaces (same session, same filter) a subscription. Returns true if it
    /// replaced an existing one (v311:[MQTT-3.8.4-3]).
    pub fn subscribe(&mut self, filter: &str, sub: Subscriber) -> bool {
        let replaced = if let Some((_, f)) = parse_shared(filter) {
            match self.shared.iter_mut().find(|g| g.key.as_str() == filter) {
                Some(g) => upsert(&mut g.members, sub),
                None => {
                    self.shared.push(SharedGroup {
                        key: GroupKey::new(filter.to_string()),
                        filter: f.into(),
                        members: vec![sub],
                        next: 0,
                    });
                    false
                }
            }
        } else if !has_wildcard(filter) {
            match self.exact.get_mut(filter) {
                Some(list) => upsert(list, sub),
                None => {
                    self.exact.insert(filter.into(), vec![sub]);
                    false
                }
            }
        } else {
            let mut node = &mut self.tree;
            let mut replaced = false;
            let mut levels = filter.split('/').peekable();
            while let Some(level) = levels.next() {
                if level == "#" {
                    replaced = upsert(&mut node.hash, sub);
                    break;
                }
                node = if level == "+" {
                    node.plus.get_or_insert_with(Box::default)
                } else {
                    node.children.entry(level.into()).or_default()
                };
                if levels.peek().is_none() {
                    replaced = upsert(&mut node.here, sub);
                }
            }
            replaced
        };
        if !replaced {
            self.count += 1;
        }
        replaced
    }

    /// Removes a session's subscription to `filter`; true if there was one.
    pub fn unsubscribe(&mut self, filter: &str, session: SessionId) -> bool {
        let removed = if parse_shared(filter).is_some() {
            match self.shared.iter().position(|g| g.key.as_str() == filter) {
                Some(i) => {
                    let removed = remove(&mut self.shared[i].members, session);
                    if self.shared[i].members.is_empty() {
                        self.shared.swap_remove(i);
                    }
                    removed
                }
                None => false,
            }
        } else if !has_wildcard(filter) {
            match self.exact.get_mut(filter) {
                Some(list) => {
                    let removed = remove(list, session);
                    if list.is_empty() {
                        self.exact.remove(filter);
                    }
                    removed
                }
                None => false,
            }
        } else {
            let levels: Vec<&str> = filter.split('/').collect();
            Self::remove_in(&mut self.tree, &levels, session)
        };
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Removes from the subtree, pruning nodes left empty.
    fn remove_in(node: &mut Node, levels: &[&str], session: SessionId) -> bool {
        let Some((&level, rest)) = levels.split_first() else {
            return remove(&mut node.here, session);
        };
        if level == "#" {
            return remove(&mut node.hash, session);
        }
        if level == "+" {
            let Some(child) = node.plus.as_deref_mut() else {
                return false;
            };
            let removed = Self::remove_in(child, rest, session);
            if child.is_empty() {
                node.plus = None;
            }
            removed
        } else {
            let Some(child) = node.children.get_mut(level) else {
                return false;
            };
            let removed = Self::remove_in(child, rest, session);
            if child.is_empty() {
                node.children.remove(level);
            }
            removed
        }
    }

    /// Appends every subscription matching `topic` to `out`. Returns whether a session may
    /// appear more than once: only when the matches come from more than one filter, since a
    /// filter holds each session once.
    pub fn collect(&self, topic: &str, out: &mut Vec<Subscriber>) -> bool {
        let mut m = Matches { out, filters: 0 };
        if let Some(list) = self.exact.get(topic) {
            m.add(list);
        }
        if !self.tree.is_empty() {
            let dollar = topic.starts_with('$');
            if !dollar {
                m.add(&self.tree.hash);
            }
            Self::walk_children(&self.tree, topic.split('/'), !dollar, &mut m);
        }
        m.filters > 1
    }

    /// For each shared group matching `topic`, picks the member whose turn it is, preferring
    /// members for which `online` is true, and appends it with the group's key.
    pub fn collect_shared(
        &mut self,
        topic: &str,
        online: impl Fn(SessionId) -> bool,
        out: &mut Vec<(Subscriber, GroupKey)>,
    ) {
        for g in &mut self.shared {
            if !topic_matches(&g.filter, topic) {
                continue;
            }
            if let Some(sub) = Self::next_member(g, None, &online) {
                out.push((sub, g.key.clone()));
            }
        }
    }

    /// Another member of the group `key` than `not`, for a message whose member went away
    /// (v5:[MQTT-4.8.2-4]).
    pub fn pick_shared(
        &mut self,
        key: &str,
        not: SessionId,
        online: impl Fn(SessionId) -> bool,
    ) -> Option<Subscriber> {
        let g = self.shared.iter_mut().find(|g| g.key.as_str() == key)?;
        Self::next_member(g, Some(not), &online)
    }

    fn next_member(
        g: &mut SharedGroup,
        not: Option<SessionId>,
        online: &impl Fn(SessionId) -> bool,
    ) -> Option<Subscriber> {
        let n = g.members.len();
        let eligible = |s: &Subscriber| Some(s.session) != not;
        // First choice: the next connected member in turn; else the next member at all.
        for want_online in [true, false] {
            for k in 0..n {
                let i = (g.next + k) % n;
                let m = g.members[i];
                if eligible(&m) && (!want_online || online(m.session)) {
                    g.next = (i + 1) % n;
                    return Some(m);
                }
            }
        }
        None
    }

    /// Matches the remaining `levels` against `node`'s children.
    fn walk_children(
        node: &Node,
        mut levels: std::str::Split<'_, char>,
        allow_plus: bool,
        out: &mut Matches<'_>,
    ) {
        let Some(level) = levels.next() else {
            return;
        };
        if let Some(child) = node.children.get(level) {
            Self::walk(child, levels.clone(), out);
        }
        if allow_plus {
            if let Some(child) = node.plus.as_deref() {
                Self::walk(child, levels, out);
            }
        }
    }

    /// `node` matched one level; `levels` are those still to match.
    fn walk(node: &Node, levels: std::str::Split<'_, char>, out: &mut Matches<'_>) {
        // `x/#` matches `x` itself and everything below it.
        out.add(&node.hash);
        if levels.clone().next().is_none() {
            out.add(&node.here);
            return;
        }
        Self::walk_children(node, levels, true, out);
    }
}

/// The subscriptions a topic matches, gathered, and how many filters they came from.
struct Matches<'a> {
    out: &'a mut Vec<Subscriber>,
    filters: usize,
}

impl Matches<'_> {
    fn add(&mut self, filter: &[Subscriber]) {
        if !filter.is_empty() {
            self.out.extend_from_slice(filter);
            self.filters += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::QoS;

    fn sid(i: u32) -> SessionId {
        SessionId { idx: i, gen: 0 }
    }

    fn sub(i: u32) -> Subscriber {
        Subscriber {
            session: sid(i),
            options: SubscribeOptions::qos(QoS::AtMostOnce),
            sub_id: 0,
        }
    }

    fn matching(r: &Router, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        r.collect(topic, &mut out);
        let mut ids: Vec<u32> = out.iter().map(|s| s.session.idx).collect();
        ids.sort();
        ids
    }

    #[test]
    fn collect_says_when_a_session_may_appear_twice() {
        let mut r = Router::default();
        for i in 0..3 {
            r.subscribe("a/b", sub(i));
        }
        let mut out = Vec::new();
        assert!(
            !r.collect("a/b", &mut out),
            "one filter holds each session once"
        );
        assert_eq!(out.len(), 3);
        r.subscribe("a/+", sub(1));
        out.clear();
        assert!(r.collect("a/b", &mut out), "two filters matched");
        assert_eq!(out.len(), 4);
        out.clear();
        assert!(!r.collect("a/c", &mut out));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn wildcards_match_as_mqtt_4_7_1() {
        let mut r = Router::default();
        r.subscribe("a/b", sub(1));
        r.subscribe("a/+", sub(2));
        r.subscribe("a/#", sub(3));
        r.subscribe("#", sub(4));
        r.subscribe("+/b", sub(5));
        r.subscribe("+", sub(6));
        r.subscribe("a/+/c", sub(7));
        assert_eq!(matching(&r, "a/b"), vec![1, 2, 3, 4, 5]);
        assert_eq!(matching(&r, "a"), vec![3, 4, 6]);
        assert_eq!(matching(&r, "a/x/c"), vec![3, 4, 7]);
        assert_eq!(matching(&r, "b"), vec![4, 6]);
        assert_eq!(matching(&r, "a/"), vec![2, 3, 4]);
        assert_eq!(r.len(), 7);
    }

    #[test]
    fn dollar_topics_not_matched_by_leading_wildcards_mqtt_4_7_2_1() {
        let mut r = Router::default();
        r.subscribe("#", sub(1));
        r.subscribe("+/x", sub(2));
        r.subscribe("$SYS/#", sub(3));
        r.subscribe("$SYS/x", sub(4));
        assert_eq!(matching(&r, "$SYS/x"), vec![3, 4]);
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(!topic_matches("+/x", "$SYS/x"));
        assert!(topic_matches("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn resubscribe_replaces_mqtt_3_8_4_3() {
        let mut r = Router::default();
        assert!(!r.subscribe("a/#", sub(1)));
        assert!(r.subscribe("a/#", sub(1)));
        assert!(!r.subscribe("x", sub(1)));
        assert!(r.subscribe("x", sub(1)));
        assert_eq!(r.len(), 2);
        assert_eq!(matching(&r, "a/q"), vec![1]);
    }

    #[test]
    fn unsubscribe_removes_and_prunes() {
        let mut r = Router::default();
        r.subscribe("a/+/c", sub(1));
        r.subscribe("a/b", sub(2));
        assert!(r.unsubscribe("a/+/c", sid(1)));
        assert!(!r.unsubscribe("a/+/c", sid(1)));
        assert!(r.tree.is_empty());
        assert!(r.unsubscribe("a/b", sid(2)));
        assert!(r.exact.is_empty());
        assert!(r.is_empty());
    }

    #[test]
    fn shared_groups_take_turns_mqtt_4_8_2() {
        let mut r = Router::default();
        r.subscribe("$share/g/t/+", sub(1));
        r.subscribe("$share/g/t/+", sub(2));
        r.subscribe("$share/h/t/#", sub(3));
        let mut picks = Vec::new();
        for _ in 0..4 {
            let mut out = Vec::new();
            r.collect_shared("t/x", |_| true, &mut out);
            picks.extend(out.into_iter().map(|(s, _)| s.session.idx));
        }
        assert_eq!(picks, vec![1, 3, 2, 3, 1, 3, 2, 3]);
        // Offline members are skipped while a connected one exists.
        let mut out = Vec::new();
        r.collect_shared("t/x", |s| s.idx != 1, &mut out);
        assert_eq!(out[0].0.session.idx, 2);
        assert_eq!(
            r.pick_shared("$share/g/t/+", sid(2), |_| true)
                .map(|s| s.session.idx),
            Some(1)
        );
        assert!(r.unsubscribe("$share/g/t/+", sid(1)));
        assert!(r.unsubscribe("$share/g/t/+", sid(2)));
        assert_eq!(r.len(), 1);
        assert!(valid_shared("$share/g/a/#"));
        assert!(!valid_shared("$share//a"));
        assert!(!valid_shared("$share/g+/a"));
        assert!(!valid_shared("$share/g"));
    }

    #[test]
    fn topic_matches_agrees_with_router() {
        let filters = [
            "a/b", "a/+", "a/#", "#", "+/b", "+", "a/+/c", "+/+", "/#", "+/",
        ];
        let topics = ["a/b", "a", "a/x/c", "b", "a/", "/", "/a", "x/b/c"];
        for (i, f) in filters.iter().enumerate() {
            let mut r = Router::default();
            r.subscribe(f, sub(i as u32));
            for t in topics {
                assert_eq!(
                    !matching(&r, t).is_empty(),
                    topic_matches(f, t),
                    "filter {f} topic {t}"
                );
            }
        }
    }
}
