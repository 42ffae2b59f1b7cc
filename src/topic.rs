//! Topic names against topic filters: the one matcher every part of midge uses (the routing
//! table's tree walk aside, which a test keeps in step with it).
//!
//! The rules are MQTT's (v311:[MQTT-4.7.1], v5:[MQTT-4.7.1]): levels are split at `/`, `+`
//! matches one level, `#` the rest including none at all (`a/#` matches `a`), and a wildcard
//! in the first level never matches a topic whose first level starts with `$`
//! (v5:[MQTT-4.7.2-1]), so `#` does not see `$SYS`.

/// Whether the topic name `topic` matches `filter`.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    levels_match(filter.split('/'), topic)
}

/// [`topic_matches`] for a filter given level by level (an ACL pattern whose `%c`/`%u` levels
/// are substituted as it is read).
pub(crate) fn levels_match<'a>(mut filter: impl Iterator<Item = &'a str>, topic: &str) -> bool {
    let mut topic_levels = topic.split('/');
    let mut first = true;
    loop {
        let level = topic_levels.next();
        let dollar = first && level.is_some_and(|t| t.starts_with('$'));
        match (filter.next(), level) {
            (Some("#"), _) => return !dollar,
            (Some("+"), Some(_)) if !dollar => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn wildcards_match_as_mqtt_4_7_1() {
        assert!(topic_matches("a/+", "a/b"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("#", "a"));
        assert!(topic_matches("+/+", "/x"));
        assert!(topic_matches("+", ""));
        assert!(topic_matches("/#", "/"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(!topic_matches("a/+", "a"));
        assert!(!topic_matches("a/b", "a/b/"));
        assert!(!topic_matches("a/b", "a"));
    }

    #[test]
    fn leading_wildcards_do_not_match_dollar_topics_mqtt_4_7_2_1() {
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(!topic_matches("+/x", "$SYS/x"));
        assert!(!topic_matches("+", "$SYS"));
        assert!(topic_matches("$SYS/#", "$SYS/x"));
        assert!(topic_matches("$SYS/+", "$SYS/x"));
        assert!(topic_matches("$SYS/#", "$SYS"));
        assert!(topic_matches("a/+", "a/$x"));
    }
}
