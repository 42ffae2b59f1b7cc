//! Mosquitto's ACL file (`acl_file`): parsing and the access checks for publish, delivery and
//! subscribe.
//!
//! ```text
//! # comment (a '#' as the first character of the line)
//! topic [read|write|readwrite|deny] <filter>     before any `user` line: anonymous clients
//! user <username>                                 following `topic` lines: this username
//! topic [read|write|readwrite|deny] <filter>
//! pattern [read|write|readwrite|deny] <filter>    any position: every client, with %c / %u
//! ```
//!
//! The access word is optional (default `readwrite`); the filter is the rest of the line and may
//! contain spaces. In `pattern` lines `%c` stands for the client id and `%u` for the username,
//! each only as a whole topic level (`devices/%c/#`); `pattern` lines using `%u` do not apply to
//! clients without a username. A line that cannot be parsed makes the whole file fail to load,
//! with the file name and line number, as Mosquitto does.
//!
//! Evaluation follows Mosquitto 2.0's `src/security_default.c`: the client's own list (its
//! username's `topic` lines, or the anonymous ones) is consulted first, then the patterns; within
//! each list a matching `deny` refuses, otherwise a matching rule with the wanted access allows;
//! nothing matching refuses. A topic starting with `$` only matches rules whose filter starts with
//! `$` (so `#` never grants `$SYS`). When any `pattern` exists, clients whose username or client id
//! contains `+` or `#` are refused everything (CVE-2017-7650).
//!
//! Mosquitto 2.0 grants every SUBSCRIBE and filters only at delivery, and so does midge by
//! default; with midge's `refuse_unreadable_subscriptions`, a filter no READ rule could
//! satisfy is refused: see [`Acl::can_subscribe`], built on [`filters_intersect`] and
//! [`filter_covers`].
//!
//! This module is pure logic: no sockets, no logging, no knowledge of packets or reason codes.

use crate::topic::levels_match;
use std::collections::HashMap;
use std::path::Path;

/// What a rule grants. `Deny` grants nothing and, when it matches, overrides grants of its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// `deny`
    Deny,
    /// `read`: receive messages (and, in midge, subscribe).
    Read,
    /// `write`: publish.
    Write,
    /// `readwrite` (the default when the access word is left out).
    ReadWrite,
}

impl Access {
    fn parse(word: &str) -> Option<Access> {
        match word {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }

    fn grants(self, want: Want) -> bool {
        matches!(
            (self, want),
            (Access::ReadWrite, _) | (Access::Read, Want::Read) | (Access::Write, Want::Write)
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Read,
    Write,
}

/// A `topic` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: String,
}

/// One level of a `pattern` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternLevel {
    Literal(String),
    ClientId,
    Username,
}

/// A `pattern` line, split into levels so that checks substitute without allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    access: Access,
    levels: Vec<PatternLevel>,
}

impl Pattern {
    fn uses_username(&self) -> bool {
        self.levels.contains(&PatternLevel::Username)
    }

    /// The filter's levels for this client. A substituted value containing `/` spans several
    /// levels, as in Mosquitto's textual substitution.
    fn levels<'a>(
        &'a self,
        client_id: &'a str,
        username: &'a str,
    ) -> impl Iterator<Item = &'a str> + 'a {
        self.levels.iter().flat_map(move |level| {
            match level {
                PatternLevel::Literal(text) => text.as_str(),
                PatternLevel::ClientId => client_id,
                PatternLevel::Username => username,
            }
            .split('/')
        })
    }

    fn substitute(&self, client_id: &str, username: &str) -> String {
        self.levels(client_id, username)
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// A loaded ACL file.
/// Equality lets a SIGHUP reload tell whether anything changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Acl {
    /// `topic` lines before the first `user` line.
    anonymous: Vec<Rule>,
    /// `topic` lines per `user` section (sections with the same name are merged).
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Pattern>,
    warnings: Vec<String>,
}

impl Acl {
    /// Reads and parses the ACL file at `path`. The error names the file (and line) and says
    /// what is wrong, ready for a log line.
    pub(crate) fn load(path: impl AsRef<Path>) -> Result<Acl, String> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read ACL file {}: {e}", path.display()))?;
        Acl::parse(
            &path.display().to_string(),
            &String::from_utf8_lossy(&bytes),
        )
    }

    /// Parses ACL file text; `source` names the file in messages.
    pub(crate) fn parse(source: &str, text: &str) -> Result<Acl, String> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let error = |what: String| format!("{source}:{line_no}: {what}");
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(line);
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(error("missing username after \"user\"".into()));
                    }
                    user = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    let (access, filter) = parse_access_and_filter(rest).map_err(&error)?;
                    check_filter(filter).map_err(&error)?;
                    if keyword == "topic" {
                        let rule = Rule {
                            access,
                            filter: filter.to_string(),
                        };
                        match &user {
                            Some(name) => acl.users.entry(name.clone()).or_default().push(rule),
                            None => acl.anonymous.push(rule),
                        }
                    } else {
                        let pattern = parse_pattern(access, filter).map_err(&error)?;
                        if !pattern
                            .levels
                            .iter()
                            .any(|l| !matches!(l, PatternLevel::Literal(_)))
                        {
                            acl.warnings.push(error(format!(
                                "pattern \"{filter}\" contains neither %c nor %u, so it applies \
                                 to every client alike"
                            )));
                        }
                        acl.patterns.push(pattern);
                    }
                }
                other => {
                    return Err(error(format!(
                        "unknown keyword \"{other}\" (expected topic, pattern or user)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    /// Non-fatal remarks from loading (e.g. a pattern without `%c`/`%u`), `file:line: …`.
    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether the client may PUBLISH to `topic` (a topic name, no wildcards).
    pub(crate) fn can_publish(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.check(username, client_id, topic, Want::Write)
    }

    /// Whether a message on `topic` may be delivered to the client: checked for every message,
    /// retained ones included.
    pub(crate) fn can_read(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.check(username, client_id, topic, Want::Read)
    }

    /// Whether the client may SUBSCRIBE to `filter` (midge's rule; Mosquitto 2.0 always grants).
    ///
    /// Refused when no `read`/`readwrite` rule of the client *intersects* the filter (no topic
    /// could match both, so nothing could ever be delivered), or when a `deny` rule *covers* it
    /// (every topic the filter matches is denied). The lists keep Mosquitto's precedence, so the
    /// answer agrees with [`Acl::can_read`]: the client's own `topic` rules are looked at first
    /// (a covering deny there refuses, an intersecting grant there allows), then the patterns.
    /// A grant can still leave part of the filter undeliverable; [`Acl::can_read`] filters those
    /// messages one by one.
    pub(crate) fn can_subscribe(
        &self,
        username: Option<&str>,
        client_id: &str,
        filter: &str,
    ) -> bool {
        if let Some(rules) = self.own_rules(username) {
            let rules = rules.iter().map(|r| (r.access, r.filter.as_str()));
            if let Some(decision) = subscribe_decision(rules, filter) {
                return decision;
            }
        }
        if self.patterns.is_empty() || is_dangerous(username, client_id) {
            return false;
        }
        let substituted: Vec<(Access, String)> = self
            .applicable_patterns(username)
            .map(|p| {
                (
                    p.access,
                    p.substitute(client_id, username.unwrap_or_default()),
                )
            })
            .collect();
        subscribe_decision(substituted.iter().map(|(a, f)| (*a, f.as_str())), filter)
            .unwrap_or(false)
    }

    fn own_rules(&self, username: Option<&str>) -> Option<&[Rule]> {
        match username {
            Some(name) => self.users.get(name).map(Vec::as_slice),
            None => Some(&self.anonymous),
        }
    }

    fn applicable_patterns<'a>(
        &'a self,
        username: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Pattern> + Clone + 'a {
        self.patterns
            .iter()
            .filter(move |p| username.is_some() || !p.uses_username())
    }

    /// Mosquitto's evaluation for one topic name. This runs for every delivered message, so
    /// patterns are matched level by level without building the substituted filter.
    fn check(&self, username: Option<&str>, client_id: &str, topic: &str, want: Want) -> bool {
        if let Some(rules) = self.own_rules(username) {
            let decision = list_decision(
                rules.iter().map(|r| (r.access, r.filter.split('/'))),
                topic,
                want,
            );
            if let Some(decision) = decision {
                return decision;
            }
        }
        if self.patterns.is_empty() || is_dangerous(username, client_id) {
            return false;
        }
        let name = username.unwrap_or_default();
        let patterns = self
            .applicable_patterns(username)
            .map(move |p| (p.access, p.levels(client_id, name)));
        list_decision(patterns, topic, want).unwrap_or(false)
    }
}

/// A client whose name could act as a wildcard once substituted into a pattern.
fn is_dangerous(username: Option<&str>, client_id: &str) -> bool {
    let wild = |s: &str| s.contains(['+', '#']);
    username.is_some_and(wild) || wild(client_id)
}

/// One list's verdict on a topic: `Some(false)` if a deny matches, else `Some(true)` if a rule
/// with the wanted access matches, else `None` (ask the next list).
fn list_decision<'a, L>(
    rules: impl Iterator<Item = (Access, L)> + Clone,
    topic: &str,
    want: Want,
) -> Option<bool>
where
    L: Iterator<Item = &'a str>,
{
    let matching = |access_wanted: &dyn Fn(Access) -> bool| {
        rules
            .clone()
            .any(|(access, levels)| access_wanted(access) && levels_match(levels, topic))
    };
    if matching(&|a| a == Access::Deny) {
        Some(false)
    } else if matching(&|a| a.grants(want)) {
        Some(true)
    } else {
        None
    }
}

/// One list's verdict on a SUBSCRIBE filter (see [`Acl::can_subscribe`]).
fn subscribe_decision<'a>(
    rules: impl Iterator<Item = (Access, &'a str)> + Clone,
    filter: &str,
) -> Option<bool> {
    if rules
        .clone()
        .any(|(a, f)| a == Access::Deny && filter_covers(f, filter))
    {
        Some(false)
    } else if rules
        .clone()
        .any(|(a, f)| a.grants(Want::Read) && filters_intersect(f, filter))
    {
        Some(true)
    } else {
        None
    }
}

/// Whether a wildcard first level of one filter faces a `$` literal first level of the other:
/// MQTT-4.7.2-1 keeps `+`/`#` at the start from matching `$` topics, so nothing can match both.
fn dollar_mismatch(a: &str, b: &str) -> bool {
    let wild = |level: &str| level == "+" || level == "#";
    (wild(a) && b.starts_with('$')) || (wild(b) && a.starts_with('$'))
}

/// Whether some topic name matches both filters (`a/+` and `+/b` share `a/b`; `+/x` and
/// `$SYS/x` share nothing, since `+` at the start does not match `$` topics).
pub(crate) fn filters_intersect(a: &str, b: &str) -> bool {
    let (mut a_levels, mut b_levels) = (a.split('/'), b.split('/'));
    let mut first = true;
    loop {
        match (a_levels.next(), b_levels.next()) {
            (Some(x), Some(y)) if first && dollar_mismatch(x, y) => return false,
            // `#` matches any remainder, including none at all (`a/#` matches `a`).
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// Whether every topic name matched by `specific` is also matched by `general` (`a/#` covers
/// `a/b/+` and `a`; `a/+` does not cover `a/#`; `#` does not cover `$SYS/#`).
pub(crate) fn filter_covers(general: &str, specific: &str) -> bool {
    let (mut g_levels, mut s_levels) = (general.split('/'), specific.split('/'));
    let mut first = true;
    loop {
        match (g_levels.next(), s_levels.next()) {
            (Some(g), Some(s)) if first && dollar_mismatch(g, s) && !s.starts_with(['+', '#']) => {
                return false
            }
            (Some("#"), _) => return true,
            (Some("+"), Some(s)) if s != "#" => {}
            (Some(g), Some(s)) if g == s => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// Splits off the first space-separated word; the rest is trimmed.
fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    }
}

/// `[access] filter`: with two or more words the first is the access; a single word is the
/// filter with `readwrite` access (Mosquitto's reading: `topic read` is the topic "read").
fn parse_access_and_filter(rest: &str) -> Result<(Access, &str), String> {
    if rest.is_empty() {
        return Err("missing topic filter".into());
    }
    let (word, filter) = split_word(rest);
    if filter.is_empty() {
        return Ok((Access::ReadWrite, word));
    }
    match Access::parse(word) {
        Some(access) => Ok((access, filter)),
        None => Err(format!(
            "invalid access \"{word}\" (expected read, write, readwrite or deny)"
        )),
    }
}

/// MQTT filter syntax: `+` and `#` only as whole levels, `#` only last.
fn check_filter(filter: &str) -> Result<(), String> {
    if filter.len() > 65535 {
        return Err("topic filter longer than 65535 bytes".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.len() > 1 && level.contains(['+', '#']) {
            return Err(format!(
                "invalid topic filter \"{filter}\": '+' and '#' must be a whole topic level"
            ));
        }
        if *level == "#" && i + 1 != levels.len() {
            return Err(format!(
                "invalid topic filter \"{filter}\": '#' must be the last level"
            ));
        }
    }
    Ok(())
}

fn parse_pattern(access: Access, filter: &str) -> Result<Pattern, String> {
    let mut levels = Vec::new();
    for level in filter.split('/') {
        levels.push(match level {
            "%c" => PatternLevel::ClientId,
            "%u" => PatternLevel::Username,
            _ if level.contains("%c") || level.contains("%u") => {
                return Err(format!(
                    "pattern \"{filter}\": %c and %u must be a whole topic level (as in \
                     \"devices/%c/#\"), not part of one"
                ))
            }
            _ => PatternLevel::Literal(level.to_string()),
        });
    }
    Ok(Pattern { access, levels })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> Acl {
        Acl::parse("acl", text).unwrap()
    }

    fn load_error(text: &str) -> String {
        Acl::parse("acl", text).unwrap_err()
    }

    // ---- filter algebra ----

    #[test]
    fn intersect_examples() {
        let yes = [
            ("a/+", "+/b"),
            ("a/b", "a/b"),
            ("#", "a/b/c"),
            ("a/#", "a"),
            ("a/#", "+/b/#"),
            ("+", "x"),
            ("+/+", "a/#"),
            ("$SYS/#", "$SYS/broker/+"),
            ("$SYS/x", "$SYS/+"),
            ("a//b", "a/+/b"),
            ("a/+/c", "+/b/#"),
        ];
        for (a, b) in yes {
            assert!(filters_intersect(a, b), "{a} ∩ {b}");
            assert!(filters_intersect(b, a), "{b} ∩ {a}");
        }
        let no = [
            ("a/b", "a/c"),
            ("a/+", "a"),
            ("a/+", "a/b/c"),
            ("+", "a/b"),
            ("+/x", "$SYS/x"),
            ("#", "$SYS/#"),
            ("#", "$SYS"),
            ("+/#", "$share/x"),
            ("a/b/#", "a/c/#"),
            ("a", "b"),
        ];
        for (a, b) in no {
            assert!(!filters_intersect(a, b), "{a} ∩ {b}");
            assert!(!filters_intersect(b, a), "{b} ∩ {a}");
        }
    }

    #[test]
    fn covers_examples() {
        let yes = [
            ("a/#", "a/b/+"),
            ("a/#", "a"),
            ("a/#", "a/#"),
            ("#", "a/#"),
            ("#", "+/+"),
            ("#", "#"),
            ("+/b", "a/b"),
            ("+/b", "+/b"),
            ("a/b", "a/b"),
            ("$SYS/#", "$SYS/broker/load/+"),
            ("+/+/#", "a/b"),
            ("+/#", "+"),
        ];
        for (g, s) in yes {
            assert!(filter_covers(g, s), "{g} covers {s}");
        }
        let no = [
            ("a/+", "a/#"),
            ("a/b", "a/+"),
            ("a/b", "a/b/c"),
            ("a", "a/#"),
            ("+", "#"),
            ("+/b", "+/+"),
            ("#", "$SYS/#"),
            ("+/x", "$SYS/x"),
            ("+/+/#", "a"),
            ("a/b/#", "a"),
            ("a/+", "a"),
        ];
        for (g, s) in no {
            assert!(!filter_covers(g, s), "{g} must not cover {s}");
        }
    }

    #[test]
    fn covering_implies_intersecting_on_examples() {
        let filters = [
            "#", "a", "a/#", "a/+", "+/b", "a/b", "+", "+/+", "$SYS/#", "$SYS/x", "a/b/c",
        ];
        for g in filters {
            for s in filters {
                if filter_covers(g, s) {
                    assert!(
                        filters_intersect(g, s),
                        "{g} covers {s} but does not intersect"
                    );
                }
            }
        }
    }

    // ---- parsing ----

    #[test]
    fn parses_the_mosquitto_example_layout() {
        let acl = acl("# anonymous\n\
             topic read $SYS/#\n\
             topic public/#\n\
             \n\
             user alice\n\
             topic readwrite alice/#\n\
             topic deny alice/secret\n\
             \n\
             user bob smith\n\
             topic write sensors/+/set\n\
             pattern read devices/%c/#\n");
        assert_eq!(acl.anonymous.len(), 2);
        assert_eq!(
            acl.anonymous[1],
            Rule {
                access: Access::ReadWrite,
                filter: "public/#".into()
            }
        );
        assert_eq!(acl.users["alice"].len(), 2);
        assert_eq!(acl.users["bob smith"][0].access, Access::Write);
        assert_eq!(acl.patterns.len(), 1);
        assert!(acl.warnings().is_empty());
    }

    #[test]
    fn filters_may_contain_spaces_and_a_single_word_is_the_filter() {
        let acl = acl("topic read a b/c \ntopic read\n");
        assert_eq!(acl.anonymous[0].filter, "a b/c");
        assert_eq!(
            acl.anonymous[1],
            Rule {
                access: Access::ReadWrite,
                filter: "read".into()
            }
        );
    }

    #[test]
    fn repeated_user_sections_merge() {
        let acl = acl("user a\ntopic x\nuser b\ntopic y\nuser a\ntopic z\n");
        assert_eq!(acl.users["a"].len(), 2);
        assert_eq!(acl.users["b"].len(), 1);
    }

    #[test]
    fn invalid_lines_fail_with_file_and_line() {
        assert!(load_error("topic a\n\ntopic bogus a/b\n").starts_with("acl:3: invalid access"));
        assert!(load_error("user\n").starts_with("acl:1: missing username"));
        assert!(load_error("topic\n").starts_with("acl:1: missing topic"));
        assert!(load_error("topicx read a\n").starts_with("acl:1: unknown keyword \"topicx\""));
        assert!(load_error("topic read a/#/b\n").starts_with("acl:1: invalid topic filter"));
        assert!(load_error("topic read a/b+\n").starts_with("acl:1: invalid topic filter"));
        assert!(load_error("pattern read a/x%c/#\n").starts_with("acl:1: pattern"));
        assert!(load_error("pattern read a/%u%c\n").contains("whole topic level"));
    }

    #[test]
    fn a_pattern_without_substitution_warns() {
        let acl = acl("pattern read a/b\n");
        assert_eq!(acl.warnings().len(), 1);
        assert!(acl.warnings()[0].starts_with("acl:1: "));
    }

    #[test]
    fn load_names_the_file_when_it_cannot_be_read() {
        let err = Acl::load("/nonexistent/midge.acl").unwrap_err();
        assert!(err.contains("/nonexistent/midge.acl"), "{err}");
    }

    // ---- publish / read ----

    #[test]
    fn anonymous_rules_apply_only_to_anonymous_clients() {
        let acl = acl("topic read public/#\nuser alice\ntopic alice/#\n");
        assert!(acl.can_read(None, "c1", "public/x"));
        assert!(!acl.can_publish(None, "c1", "public/x"));
        assert!(!acl.can_read(Some("alice"), "c1", "public/x"));
        assert!(acl.can_publish(Some("alice"), "c1", "alice/x"));
        assert!(acl.can_read(Some("alice"), "c1", "alice/x"));
        assert!(!acl.can_read(None, "c1", "alice/x"));
        assert!(
            !acl.can_read(Some("bob"), "c1", "alice/x"),
            "user without rules"
        );
    }

    #[test]
    fn empty_acl_denies_everything() {
        let acl = acl("# nothing\n");
        assert!(!acl.can_publish(None, "c", "a"));
        assert!(!acl.can_read(Some("u"), "c", "a"));
        assert!(!acl.can_subscribe(Some("u"), "c", "#"));
    }

    #[test]
    fn deny_wins_within_a_list_whatever_the_order() {
        let acl = acl("user u\ntopic readwrite a/#\ntopic deny a/secret\n");
        assert!(acl.can_publish(Some("u"), "c", "a/open"));
        assert!(!acl.can_publish(Some("u"), "c", "a/secret"));
        assert!(!acl.can_read(Some("u"), "c", "a/secret"));
        let reversed = self::acl("user u\ntopic deny a/secret\ntopic readwrite a/#\n");
        assert!(!reversed.can_read(Some("u"), "c", "a/secret"));
    }

    #[test]
    fn own_grant_is_consulted_before_pattern_deny() {
        let acl = acl("user u\ntopic read a/#\npattern deny a/%c\n");
        assert!(
            acl.can_read(Some("u"), "c1", "a/c1"),
            "own list answers first"
        );
        assert!(!acl.can_read(Some("v"), "c1", "a/c1"));
    }

    #[test]
    fn read_and_write_are_separate() {
        let acl = acl("user u\ntopic read r\ntopic write w\n");
        assert!(acl.can_read(Some("u"), "c", "r"));
        assert!(!acl.can_publish(Some("u"), "c", "r"));
        assert!(acl.can_publish(Some("u"), "c", "w"));
        assert!(!acl.can_read(Some("u"), "c", "w"));
    }

    #[test]
    fn dollar_topics_need_dollar_rules() {
        let acl = acl("user u\ntopic #\ntopic read $SYS/broker/#\n");
        assert!(acl.can_read(Some("u"), "c", "anything/at/all"));
        assert!(!acl.can_read(Some("u"), "c", "$SYS/other"));
        assert!(acl.can_read(Some("u"), "c", "$SYS/broker/uptime"));
        let patterns = self::acl("pattern read +/%c\n");
        assert!(patterns.can_read(None, "c", "x/c"));
        assert!(!patterns.can_read(None, "c", "$x/c"));
    }

    #[test]
    fn patterns_substitute_client_id_and_username() {
        let acl = acl("pattern readwrite devices/%c/#\npattern read users/%u/inbox\n");
        assert!(acl.can_publish(None, "dev1", "devices/dev1/temp"));
        assert!(!acl.can_publish(None, "dev1", "devices/dev2/temp"));
        assert!(acl.can_read(Some("alice"), "c", "users/alice/inbox"));
        assert!(!acl.can_publish(Some("alice"), "c", "users/alice/inbox"));
        assert!(!acl.can_read(Some("bob"), "c", "users/alice/inbox"));
        assert!(
            !acl.can_read(None, "c", "users//inbox"),
            "%u patterns skip anonymous clients"
        );
    }

    #[test]
    fn substituted_values_with_slashes_span_levels_like_mosquitto() {
        let acl = acl("pattern read d/%c\n");
        assert!(acl.can_read(None, "a/b", "d/a/b"));
        assert!(!acl.can_read(None, "a/b", "d/a"));
    }

    #[test]
    fn wildcard_names_are_refused_when_patterns_exist_cve_2017_7650() {
        let acl = acl("pattern readwrite devices/%c/#\nuser u+\ntopic read own/#\n");
        assert!(!acl.can_publish(None, "#", "devices/x/y"));
        assert!(!acl.can_publish(None, "+", "devices/x/y"));
        assert!(!acl.can_read(Some("a#"), "c", "devices/c/y"));
        assert!(!acl.can_subscribe(None, "+", "devices/+/y"));
        // The client's own list is still consulted first, as in Mosquitto.
        assert!(acl.can_read(Some("u+"), "c", "own/x"));
        // Without patterns the characters are harmless.
        let plain = self::acl("topic read t\n");
        assert!(plain.can_read(None, "c+#", "t"));
    }

    // ---- subscribe ----

    #[test]
    fn subscribe_needs_an_intersecting_read_rule() {
        let acl = acl("user u\ntopic read a/+\ntopic write w/#\n");
        assert!(acl.can_subscribe(Some("u"), "c", "a/b"));
        assert!(acl.can_subscribe(Some("u"), "c", "+/b"), "a/+ ∩ +/b = a/b");
        assert!(acl.can_subscribe(Some("u"), "c", "#"), "# intersects a/+");
        assert!(!acl.can_subscribe(Some("u"), "c", "b/#"));
        assert!(
            !acl.can_subscribe(Some("u"), "c", "w/#"),
            "write does not allow reading"
        );
        assert!(!acl.can_subscribe(Some("u"), "c", "a/b/c"));
        assert!(!acl.can_subscribe(Some("u"), "c", "$SYS/#"));
    }

    #[test]
    fn subscribe_refused_when_a_deny_covers_the_filter() {
        let acl = acl("user u\ntopic read #\ntopic deny secret/#\n");
        assert!(!acl.can_subscribe(Some("u"), "c", "secret/#"));
        assert!(!acl.can_subscribe(Some("u"), "c", "secret/+/x"));
        assert!(!acl.can_subscribe(Some("u"), "c", "secret"));
        assert!(
            acl.can_subscribe(Some("u"), "c", "#"),
            "deny covers only part of #"
        );
        assert!(acl.can_subscribe(Some("u"), "c", "+/x"));
        assert!(acl.can_subscribe(Some("u"), "c", "public/x"));
    }

    #[test]
    fn subscribe_uses_patterns_after_own_rules() {
        let acl = acl("pattern read devices/%c/#\npattern deny devices/%c/private\n");
        assert!(acl.can_subscribe(None, "d1", "devices/d1/#"));
        assert!(acl.can_subscribe(None, "d1", "devices/+/temp"));
        assert!(!acl.can_subscribe(None, "d1", "devices/d2/#"));
        assert!(!acl.can_subscribe(None, "d1", "devices/d1/private"));
        let with_own = self::acl("user u\ntopic read devices/#\npattern deny devices/%c/#\n");
        assert!(
            with_own.can_subscribe(Some("u"), "d1", "devices/d1/#"),
            "own grant first"
        );
        assert!(!with_own.can_subscribe(Some("v"), "d1", "devices/d1/#"));
    }

    #[test]
    fn subscribe_and_read_agree_on_anonymous_clients() {
        let acl = acl("topic read public/#\nuser u\ntopic read private/#\n");
        assert!(acl.can_subscribe(None, "c", "public/+"));
        assert!(!acl.can_subscribe(None, "c", "private/+"));
        assert!(acl.can_subscribe(Some("u"), "c", "private/+"));
        assert!(!acl.can_subscribe(Some("u"), "c", "public/+"));
    }
}
