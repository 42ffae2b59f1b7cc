//! Fixtures made with Debian's Mosquitto 2.0.11: `ctrl-init.json` by `mosquitto_ctrl dynsec init
//! FILE admin secretpw`; `mosquitto-saved.json` by the plugin after mosquitto_ctrl created roles
//! r1/r2, groups g1/anon (anonymous), clients alice (password alicepw, client id alice-id) and
//! bob (bobpw, disabled); `mosquitto-responses.txt` holds requests sent to that broker, each
//! line followed by the plugin's response (2.0.11's answers match 2.0.20's source for these);
//! `mosquitto-session.txt` the same for a series of changes made to `mosquitto-saved.json`,
//! after which the plugin saved `mosquitto-session-saved.json`.

use super::model::AclType;
use super::*;

const INIT: &str = include_str!("testdata/ctrl-init.json");
const SAVED: &str = include_str!("testdata/mosquitto-saved.json");
const RESPONSES: &str = include_str!("testdata/mosquitto-responses.txt");
const SESSION: &str = include_str!("testdata/mosquitto-session.txt");
const SESSION_SAVED: &str = include_str!("testdata/mosquitto-session-saved.json");

fn load(text: &str) -> DynSec {
    match DynSec::from_json("test.json", text.as_bytes()) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    }
}

/// Runs one request and returns the response text.
fn ask(d: &mut DynSec, request: &str) -> String {
    String::from_utf8(d.control(request.as_bytes()).response).unwrap_or_else(|e| panic!("{e}"))
}

/// The single response of a one-command request, as JSON.
fn one(d: &mut DynSec, command: serde_json::Value) -> serde_json::Value {
    let request = serde_json::json!({ "commands": [command] }).to_string();
    let mut v: serde_json::Value =
        serde_json::from_str(&ask(d, &request)).unwrap_or_else(|e| panic!("{e}"));
    v["responses"][0].take()
}

fn error_of(d: &mut DynSec, command: serde_json::Value) -> String {
    one(d, command)["error"].as_str().unwrap_or("").to_owned()
}

// ---- the file ----

#[test]
fn a_file_from_mosquitto_ctrl_init_loads_and_its_admin_logs_in() {
    let d = load(INIT);
    assert!(d.warnings().is_empty(), "{:?}", d.warnings());
    assert_eq!(
        d.authenticate(Some("admin"), Some(b"secretpw"), "any"),
        DynAuth::Allowed
    );
    assert_eq!(
        d.authenticate(Some("admin"), Some(b"wrong"), "any"),
        DynAuth::Denied
    );
    // "textName" as mosquitto_ctrl writes it: cJSON's lookup ignores case.
    assert_eq!(
        d.model.clients["admin"].textname.as_deref(),
        Some("Dynsec admin user")
    );
    assert!(d.allowed(
        Some("admin"),
        "c",
        DynAccess::PublishSend,
        "$CONTROL/dynamic-security/v1"
    ));
    assert!(!d.allowed(Some("admin"), "c", DynAccess::PublishSend, "some/topic"));
}

#[test]
fn a_file_saved_by_the_plugin_loads_with_everything_in_it() {
    let d = load(SAVED);
    assert!(d.warnings().is_empty(), "{:?}", d.warnings());
    let m = &d.model;
    assert_eq!(m.clients.len(), 3);
    assert_eq!(m.clients["alice"].clientid.as_deref(), Some("alice-id"));
    assert_eq!(m.clients["alice"].groups[0].name, "g1");
    assert_eq!(m.clients["alice"].groups[0].priority, 4);
    assert!(m.clients["bob"].disabled);
    assert_eq!(m.anonymous_group.as_deref(), Some("anon"));
    assert_eq!(
        m.roles["r1"].acls[AclType::PublishClientSend.index()][0].priority,
        5
    );
    assert!(m.default_access.publish_client_receive && !m.default_access.subscribe);
}

#[test]
fn what_midge_writes_reads_back_the_same() {
    for text in [INIT, SAVED] {
        let d = load(text);
        let again = load(std::str::from_utf8(&d.to_json()).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!(again.model, d.model);
    }
}

#[test]
fn the_written_file_has_the_plugins_keys_in_its_order() {
    let text = String::from_utf8(load(SAVED).to_json()).unwrap_or_else(|e| panic!("{e}"));
    let ours: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let theirs: serde_json::Value = serde_json::from_str(SAVED).unwrap_or_else(|e| panic!("{e}"));
    // Same keys, values and order (preserve_order keeps insertion order in both).
    assert_eq!(ours, theirs);
    assert_eq!(
        serde_json::to_string(&ours).unwrap_or_else(|e| panic!("{e}")),
        serde_json::to_string(&theirs).unwrap_or_else(|e| panic!("{e}"))
    );
    assert!(text.starts_with("{\n\t\"defaultACLAccess\""), "{text}");
}

#[test]
fn load_errors_name_the_file_and_reason() {
    let err = DynSec::from_json("/etc/ds.json", b"{\"clients\": 5}").unwrap_err();
    assert_eq!(err, "/etc/ds.json: \"clients\" is not an array");
    let err = DynSec::from_json("/etc/ds.json", b"{not json").unwrap_err();
    assert!(err.starts_with("/etc/ds.json: not valid JSON"), "{err}");
    let err = DynSec::from_json("/etc/ds.json", b"[]").unwrap_err();
    assert_eq!(err, "/etc/ds.json: the file is not a JSON object");
    let missing = DynSec::load(Path::new("/nonexistent/ds.json")).unwrap_err();
    assert!(missing.starts_with("/nonexistent/ds.json: "), "{missing}");
    // An empty file is an empty configuration, as for the plugin.
    assert_eq!(
        DynSec::from_json("e", b"").unwrap_or_else(|e| panic!("{e}")),
        DynSec::default()
    );
}

#[test]
fn entries_the_plugin_skips_are_skipped_with_a_warning() {
    let d = load(
        r#"{"clients":[{"password":"x"},{"username":"u","password":"AAAA","salt":"AAAA","iterations":101},
            {"username":"v","roles":[{"rolename":"ghost"}]}],
            "groups":[{"groupname":"g","clients":[{"username":"nobody"}]}],
            "anonymousGroup":"missing"}"#,
    );
    assert_eq!(d.model.clients.len(), 1);
    assert!(d.model.clients["v"].roles.is_empty());
    assert_eq!(d.model.anonymous_group, None);
    let w = d.warnings().join("\n");
    for needle in [
        "clients[0] has no \"username\"",
        "client \"u\": the password hash is 3 bytes",
        "no role \"ghost\"",
        "no client \"nobody\"",
        "anonymousGroup \"missing\"",
    ] {
        assert!(w.contains(needle), "{needle} not in {w}");
    }
    assert!(w.lines().all(|l| l.starts_with("test.json: ")));
}

// ---- authentication ----

#[test]
fn authentication_follows_the_plugin() {
    let d = load(SAVED);
    assert_eq!(
        d.authenticate(Some("alice"), Some(b"alicepw"), "alice-id"),
        DynAuth::Allowed
    );
    // Bound client id.
    assert_eq!(
        d.authenticate(Some("alice"), Some(b"alicepw"), "other"),
        DynAuth::Denied
    );
    assert_eq!(
        d.authenticate(Some("alice"), Some(b"nope"), "alice-id"),
        DynAuth::Denied
    );
    // Disabled, even with the right password.
    assert_eq!(
        d.authenticate(Some("bob"), Some(b"bobpw"), "b"),
        DynAuth::Denied
    );
    // Unknown user, no password, no username: someone else decides.
    assert_eq!(
        d.authenticate(Some("carol"), Some(b"x"), "c"),
        DynAuth::Defer
    );
    assert_eq!(
        d.authenticate(Some("alice"), None, "alice-id"),
        DynAuth::Defer
    );
    assert_eq!(d.authenticate(None, Some(b"x"), "c"), DynAuth::Defer);
}

#[test]
fn a_client_without_a_password_defers() {
    let mut d = load(SAVED);
    one(
        &mut d,
        serde_json::json!({"command":"createClient","username":"nopw"}),
    );
    assert_eq!(
        d.authenticate(Some("nopw"), Some(b"x"), "c"),
        DynAuth::Defer
    );
}

// ---- access ----

const ORDERING: &str = r#"{
  "defaultACLAccess": {"publishClientSend": false, "publishClientReceive": true,
                       "subscribe": false, "unsubscribe": true},
  "roles": [
    {"rolename": "low", "acls": [{"acltype": "publishClientSend", "topic": "a/#", "allow": true}]},
    {"rolename": "high", "acls": [
        {"acltype": "publishClientSend", "topic": "a/secret", "allow": false, "priority": 1},
        {"acltype": "publishClientSend", "topic": "a/+", "allow": true, "priority": 5},
        {"acltype": "subscribeLiteral", "topic": "a/+", "allow": false},
        {"acltype": "subscribePattern", "topic": "a/#", "allow": true},
        {"acltype": "unsubscribePattern", "topic": "x/#", "allow": false},
        {"acltype": "publishClientReceive", "topic": "private/#", "allow": false}]},
    {"rolename": "group_role", "acls": [{"acltype": "publishClientSend", "topic": "g/#", "allow": true},
                                         {"acltype": "publishClientSend", "topic": "a/denied", "allow": false}]},
    {"rolename": "anon_role", "acls": [{"acltype": "publishClientSend", "topic": "public/#", "allow": true}]}
  ],
  "clients": [
    {"username": "u", "roles": [{"rolename": "low", "priority": 1}, {"rolename": "high", "priority": 2}]},
    {"username": "member"}
  ],
  "groups": [
    {"groupname": "grp", "roles": [{"rolename": "group_role"}], "clients": [{"username": "member"}, {"username": "u"}]},
    {"groupname": "anon", "roles": [{"rolename": "anon_role"}]}
  ],
  "anonymousGroup": "anon"
}"#;

#[test]
fn roles_are_consulted_by_priority_and_acls_by_priority_within_a_role() {
    let d = load(ORDERING);
    let send = |t: &str| d.access(Some("u"), DynAccess::PublishSend, t);
    // "high" (priority 2) comes first: its a/+ (priority 5) allows before its a/secret deny.
    assert_eq!(send("a/secret"), Some(true));
    // a/x/y: no match in "high", "low" allows.
    assert_eq!(send("a/x/y"), Some(true));
    // Client roles come before group roles: "low" allows a/denied before the group denies it.
    assert_eq!(send("a/denied"), Some(true));
    // Only the group grants g/#.
    assert_eq!(send("g/1"), Some(true));
    // Nothing matches: publishClientSend defaults to deny, which is a deferral.
    assert_eq!(send("elsewhere"), None);
    assert!(!d.allowed(Some("u"), "c", DynAccess::PublishSend, "elsewhere"));
    // A group member without own roles gets the group's.
    assert_eq!(
        d.access(Some("member"), DynAccess::PublishSend, "a/denied"),
        Some(false)
    );
}

#[test]
fn subscribe_checks_literal_before_pattern_within_a_role() {
    let d = load(ORDERING);
    let sub = |t: &str| d.access(Some("u"), DynAccess::Subscribe, t);
    assert_eq!(sub("a/+"), Some(false));
    assert_eq!(sub("a/b"), Some(true));
    assert_eq!(sub("a/#"), Some(true));
    // The pattern must cover the whole filter.
    assert_eq!(sub("#"), None);
    assert_eq!(
        d.access(Some("u"), DynAccess::Unsubscribe, "x/1"),
        Some(false)
    );
    // Default unsubscribe is allow.
    assert_eq!(d.access(Some("u"), DynAccess::Unsubscribe, "y"), Some(true));
}

#[test]
fn default_access_applies_but_never_to_control_topics() {
    let d = load(ORDERING);
    assert_eq!(
        d.access(Some("u"), DynAccess::PublishReceive, "any/topic"),
        Some(true)
    );
    assert_eq!(
        d.access(Some("u"), DynAccess::PublishReceive, "private/x"),
        Some(false)
    );
    assert_eq!(
        d.access(
            Some("u"),
            DynAccess::PublishReceive,
            "$CONTROL/dynamic-security/v1/response"
        ),
        None
    );
}

#[test]
fn clients_without_username_use_the_anonymous_group_and_unknown_users_defer() {
    let d = load(ORDERING);
    assert_eq!(
        d.access(None, DynAccess::PublishSend, "public/x"),
        Some(true)
    );
    assert_eq!(d.access(None, DynAccess::PublishSend, "a/x"), None);
    // Unknown username: no decision at all, not even the default access.
    assert_eq!(
        d.access(Some("stranger"), DynAccess::PublishReceive, "any"),
        None
    );
    let mut no_anon = load(ORDERING);
    no_anon.model.anonymous_group = None;
    no_anon.index = Index::build(&no_anon.model);
    assert_eq!(
        no_anon.access(None, DynAccess::PublishSend, "public/x"),
        None
    );
}

#[test]
fn publish_wildcards_do_not_reach_dollar_topics() {
    let d = load(INIT);
    // admin's "publishClientReceive #" does not cover $SYS…, its own $SYS/# rule does.
    assert!(d.allowed(
        Some("admin"),
        "c",
        DynAccess::PublishReceive,
        "$SYS/broker/uptime"
    ));
    let d = load(
        r##"{"roles":[{"rolename":"r","acls":[{"acltype":"publishClientReceive","topic":"#","allow":true},
            {"acltype":"subscribePattern","topic":"#","allow":true}]}],
            "clients":[{"username":"u","roles":[{"rolename":"r"}]}]}"##,
    );
    assert_eq!(
        d.access(Some("u"), DynAccess::PublishReceive, "$SYS/x"),
        None
    );
    // The plugin's subscribe check has no `$` rule: `#` covers `$SYS/#`.
    assert_eq!(
        d.access(Some("u"), DynAccess::Subscribe, "$SYS/#"),
        Some(true)
    );
}

#[test]
fn subscribe_patterns_cover_filters_as_the_plugins_sub_acl_check() {
    // The plugin's own test table (sub_matches_sub.c).
    for (acl, sub, expected) in [
        ("foo/+/bar", "foo/#", false),
        ("foo/+/ba℞/#", "foo/baz/ba℞", true),
        ("foo/+/ba℞/#", "foo/baz/ba℞/+", true),
        ("foo/+/ba℞/#", "foo/baz/ba℞/#", true),
        ("foo/+/ba℞/#", "foo/baz/+/#", false),
        ("/+//#", "/foo///#", true),
        ("#", "#", true),
        ("#", "+", true),
        ("/#", "+", false),
        ("/#", "/+", true),
        ("/+", "#", false),
        ("/+", "+", false),
        ("+/+", "topic/topic", true),
        ("+/+", "topic/topic/", false),
        ("+", "#", false),
        ("+", "+", true),
        ("a/b/c/d/e", "a/b/c/d/e", true),
        ("a/b/ /d/e", "a/b/c/d/e", false),
    ] {
        assert_eq!(
            super::check::sub_acl_check(acl, sub),
            expected,
            "{acl} : {sub}"
        );
    }
}

#[test]
fn changes_take_effect_in_the_next_check() {
    let mut d = load(ORDERING);
    assert_eq!(
        d.access(Some("member"), DynAccess::PublishSend, "new/x"),
        None
    );
    let out = d.control(
        br#"{"commands":[{"command":"addRoleACL","rolename":"group_role","acltype":"publishClientSend","topic":"new/#","allow":true}]}"#,
    );
    assert!(out.changed);
    assert_eq!(
        d.access(Some("member"), DynAccess::PublishSend, "new/x"),
        Some(true)
    );
}

// ---- commands: against the plugin's own answers ----

#[test]
fn responses_match_mosquittos_for_the_recorded_requests() {
    let mut d = load(SAVED);
    let mut lines = RESPONSES.lines();
    let mut n = 0;
    while let (Some(request), Some(expected)) = (lines.next(), lines.next()) {
        let got = ask(&mut d, request);
        assert_eq!(got, expected, "request {request}");
        n += 1;
    }
    assert_eq!(n, 21);
    // None of those requests changed anything.
    assert_eq!(d.model, load(SAVED).model);
}

#[test]
fn a_series_of_changes_answers_as_mosquitto_did() {
    let mut d = load(SAVED);
    let mut lines = SESSION.lines();
    let mut n = 0;
    while let (Some(request), Some(expected)) = (lines.next(), lines.next()) {
        let out = d.control(request.as_bytes());
        n += 1;
        if expected.is_empty() {
            // The plugin disconnected the asking admin (a member of the changed group) before
            // its answer could be read.
            assert!(out.kick.contains(&Some("admin".into())), "{request}");
            continue;
        }
        assert_eq!(
            String::from_utf8(out.response).unwrap_or_else(|e| panic!("{e}")),
            expected,
            "{request}"
        );
    }
    assert_eq!(n, 15);
    // And the plugin saved the same state (carol's new hash aside: its salt is random).
    let mut theirs = load(SESSION_SAVED).model;
    let ours = &d.model;
    assert!(ours.clients["carol"].password.is_some());
    theirs
        .clients
        .get_mut("carol")
        .unwrap_or_else(|| panic!("missing"))
        .password
        .clone_from(&ours.clients["carol"].password);
    assert_eq!(&theirs, ours);
}

#[test]
fn every_command_succeeds_with_the_plugins_reply() {
    let mut d = load(SAVED);
    let cmds = [
        r#"{"command":"createRole","rolename":"r3","textname":"t","acls":[{"acltype":"publishClientSend","topic":"x","allow":true}]}"#,
        r#"{"command":"modifyRole","rolename":"r3","textdescription":"d"}"#,
        r#"{"command":"addRoleACL","rolename":"r3","acltype":"subscribePattern","topic":"x/#","allow":true,"priority":2}"#,
        r#"{"command":"removeRoleACL","rolename":"r3","acltype":"subscribePattern","topic":"x/#"}"#,
        r#"{"command":"createGroup","groupname":"g3","roles":[{"rolename":"r3","priority":1}]}"#,
        r#"{"command":"modifyGroup","groupname":"g3","textname":"G"}"#,
        r#"{"command":"addGroupRole","groupname":"g3","rolename":"r1"}"#,
        r#"{"command":"removeGroupRole","groupname":"g3","rolename":"r1"}"#,
        r#"{"command":"createClient","username":"carol","password":"pw","clientid":"","groups":[{"groupname":"g3"}],"roles":[{"rolename":"r1"}]}"#,
        r#"{"command":"modifyClient","username":"carol","textname":"Carol"}"#,
        r#"{"command":"setClientPassword","username":"carol","password":"pw2"}"#,
        r#"{"command":"setClientId","username":"carol","clientid":"cid"}"#,
        r#"{"command":"addClientRole","username":"carol","rolename":"r2","priority":9}"#,
        r#"{"command":"removeClientRole","username":"carol","rolename":"r2"}"#,
        r#"{"command":"addGroupClient","username":"carol","groupname":"g1"}"#,
        r#"{"command":"removeGroupClient","username":"carol","groupname":"g1"}"#,
        r#"{"command":"disableClient","username":"carol"}"#,
        r#"{"command":"enableClient","username":"carol"}"#,
        r#"{"command":"setAnonymousGroup","groupname":"g3"}"#,
        r#"{"command":"setDefaultACLAccess","acls":[{"acltype":"subscribe","allow":true}]}"#,
        r#"{"command":"deleteClient","username":"bob"}"#,
        r#"{"command":"deleteGroup","groupname":"g1"}"#,
        r#"{"command":"deleteRole","rolename":"r2"}"#,
    ];
    for cmd in cmds {
        let request = format!(r#"{{"commands":[{cmd}]}}"#);
        let name: serde_json::Value = serde_json::from_str(cmd).unwrap_or_else(|e| panic!("{e}"));
        let expected = format!(
            r#"{{"responses":[{{"command":"{}"}}]}}"#,
            name["command"]
                .as_str()
                .unwrap_or_else(|| panic!("missing"))
        );
        assert_eq!(ask(&mut d, &request), expected, "{cmd}");
    }
    let carol = &d.model.clients["carol"];
    assert_eq!(carol.clientid.as_deref(), Some("cid"));
    assert_eq!(carol.textname.as_deref(), Some("Carol"));
    assert_eq!(
        d.authenticate(Some("carol"), Some(b"pw2"), "cid"),
        DynAuth::Allowed
    );
    assert_eq!(d.model.anonymous_group.as_deref(), Some("g3"));
    assert!(d.model.default_access.subscribe);
    assert!(!d.model.clients.contains_key("bob"));
    assert!(!d.model.groups.contains_key("g1"));
    assert!(d.model.clients["alice"].groups.is_empty());
    assert!(!d.model.roles.contains_key("r2"));
    // The result loads in the same shape again.
    assert_eq!(
        load(std::str::from_utf8(&d.to_json()).unwrap_or_else(|e| panic!("{e}"))).model,
        d.model
    );
}

#[test]
fn error_strings_are_the_plugins() {
    let mut d = load(SAVED);
    use serde_json::json;
    let cases = [
        (
            json!({"command":"createClient","username":"x","clientid":5}),
            "Invalid/missing client id",
        ),
        (
            json!({"command":"createClient","username":"x","textname":5}),
            "Invalid/missing textname",
        ),
        (
            json!({"command":"createClient","username":"x","textdescription":[]}),
            "Invalid/missing textdescription",
        ),
        (
            json!({"command":"createClient","username":"a\u{1}b"}),
            "Username not valid UTF-8",
        ),
        (
            json!({"command":"createClient","username":"x","clientid":"a\u{85}"}),
            "Client ID not valid UTF-8",
        ),
        (
            json!({"command":"deleteClient"}),
            "Invalid/missing username",
        ),
        (
            json!({"command":"deleteClient","username":"zz"}),
            "Client not found",
        ),
        (
            json!({"command":"enableClient","username":"zz"}),
            "Client not found",
        ),
        (
            json!({"command":"disableClient","username":5}),
            "Invalid/missing username",
        ),
        (
            json!({"command":"setClientId","username":"alice","clientid":5}),
            "Invalid/missing client ID",
        ),
        (
            json!({"command":"setClientPassword","username":"alice"}),
            "Invalid/missing password",
        ),
        (
            json!({"command":"setClientPassword","username":"zz","password":"p"}),
            "Client not found",
        ),
        (
            json!({"command":"getClient","username":"zz"}),
            "Client not found",
        ),
        (
            json!({"command":"removeClientRole","username":"alice","rolename":"zz"}),
            "Role not found",
        ),
        (
            json!({"command":"removeClientRole","username":"alice"}),
            "Invalid/missing rolename",
        ),
        (
            json!({"command":"createGroup"}),
            "Invalid/missing groupname",
        ),
        (
            json!({"command":"getGroup","groupname":"zz"}),
            "Group not found",
        ),
        (
            json!({"command":"addGroupRole","groupname":"zz","rolename":"r1"}),
            "Group not found",
        ),
        (
            json!({"command":"removeGroupClient","username":"zz","groupname":"g1"}),
            "Client not found",
        ),
        (
            json!({"command":"deleteGroup","groupname":"anon"}),
            "Deleting the anonymous group is forbidden",
        ),
        (json!({"command":"createRole"}), "Invalid/missing rolename"),
        (
            json!({"command":"createRole","rolename":"n","textname":1}),
            "Invalid/missing textname",
        ),
        (
            json!({"command":"getRole","rolename":"zz"}),
            "Role not found",
        ),
        (
            json!({"command":"addRoleACL","rolename":"zz"}),
            "Role not found",
        ),
        (
            json!({"command":"addRoleACL","rolename":"r1"}),
            "Invalid/missing acltype",
        ),
        (
            json!({"command":"addRoleACL","rolename":"r1","acltype":"subscribeLiteral","topic":"a+"}),
            "Invalid ACL topic",
        ),
        (
            json!({"command":"removeRoleACL","rolename":"r1","acltype":"x"}),
            "Unknown acltype",
        ),
        (
            json!({"command":"removeRoleACL","rolename":"r1","acltype":"publishClientSend","topic":"\u{7f}"}),
            "Topic not valid UTF-8",
        ),
    ];
    let before = d.model.clone();
    for (cmd, expected) in cases {
        assert_eq!(error_of(&mut d, cmd.clone()), expected, "{cmd}");
    }
    assert_eq!(d.model, before);
}

#[test]
fn modify_client_and_modify_group_never_half_apply() {
    use serde_json::json;
    let mut d = load(SAVED);
    let before = d.model.clone();
    let out = d.control(
        json!({"commands":[{"command":"modifyClient","username":"alice","textname":"changed",
            "clientid":"new","password":"new","groups":[{"groupname":"nope"}]}]})
        .to_string()
        .as_bytes(),
    );
    let text = String::from_utf8(out.response).unwrap_or_else(|e| panic!("{e}"));
    assert!(text.contains("'groups' contains an object with a 'groupname' that does not exist"));
    assert!(!out.changed && out.kick.is_empty());
    assert_eq!(
        error_of(
            &mut d,
            json!({"command":"modifyClient","username":"alice","textname":"c","groups":[{"priority":1}]})
        ),
        "'groups' contains an object with an invalid 'groupname'"
    );
    assert_eq!(
        error_of(
            &mut d,
            json!({"command":"modifyClient","username":"alice","textname":"c","roles":[{"rolename":"zz"}]})
        ),
        "Role not found"
    );
    assert_eq!(
        error_of(
            &mut d,
            json!({"command":"modifyGroup","groupname":"g1","textname":"c","clients":[{"username":"zz"}]})
        ),
        "'clients' contains an object with a 'username' that does not exist"
    );
    assert_eq!(
        error_of(
            &mut d,
            json!({"command":"modifyGroup","groupname":"g1","textname":"c","clients":[{"x":1}]})
        ),
        "'clients' contains an object with an invalid 'username'"
    );
    assert_eq!(
        error_of(
            &mut d,
            json!({"command":"modifyGroup","groupname":"g1","roles":"x"})
        ),
        "'roles' not an array or missing/invalid rolename"
    );
    assert_eq!(d.model, before);
}

#[test]
fn set_default_acl_access_accepts_mosquitto_ctrl_2_0_11s_strings() {
    // mosquitto_ctrl 2.0.11 `setDefaultACLAccess subscribe allow` sends a string.
    let mut d = load(SAVED);
    let out = d.control(br#"{"commands":[{"command":"setDefaultACLAccess","acls":[{"acltype":"subscribe","allow":"allow"},{"acltype":"publishClientReceive","allow":"deny"}]}]}"#);
    assert!(out.changed);
    assert!(d.model.default_access.subscribe);
    assert!(!d.model.default_access.publish_client_receive);
}

#[test]
fn commands_apply_in_order_and_a_bad_correlation_stops_the_rest() {
    let mut d = load(SAVED);
    let out = d.control(
        br#"{"commands":[{"command":"createRole","rolename":"n1"},{"command":"deleteRole","rolename":"n1","correlationData":1},{"command":"createRole","rolename":"n2"}]}"#,
    );
    assert!(out.changed);
    assert!(d.model.roles.contains_key("n1"));
    assert!(!d.model.roles.contains_key("n2"));
    // Names are matched without regard to case, answered with the canonical name.
    assert_eq!(
        ask(
            &mut d,
            r#"{"commands":[{"command":"GETANONYMOUSGROUP","correlationData":"x"}]}"#
        ),
        r#"{"responses":[{"command":"getAnonymousGroup","data":{"group":{"groupname":"anon"}},"correlationData":"x"}]}"#
    );
}

#[test]
fn hostile_requests_get_error_responses_and_change_nothing() {
    let mut d = load(SAVED);
    let before = d.model.clone();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let huge_name = format!(
        r#"{{"commands":[{{"command":"createClient","username":"{}"}}]}}"#,
        "x".repeat(70_000)
    );
    for request in [
        &b""[..],
        b"\xff\xfe",
        deep.as_bytes(),
        b"{\"commands\":{}}",
        b"null",
        huge_name.as_bytes(),
    ] {
        let out = d.control(request);
        let v: serde_json::Value =
            serde_json::from_slice(&out.response).unwrap_or_else(|e| panic!("{e}"));
        assert!(v["responses"][0]["error"].is_string(), "{v}");
        assert!(!out.changed && out.kick.is_empty());
    }
    assert_eq!(d.model, before);
}

#[test]
fn passwords_never_appear_in_responses() {
    let mut d = load(SAVED);
    let out = d.control(br#"{"commands":[{"command":"createClient","username":"p","password":"hunter2"},{"command":"getClient","username":"p"},{"command":"listClients","verbose":true}]}"#);
    let text = String::from_utf8(out.response).unwrap_or_else(|e| panic!("{e}"));
    let hash = crate::auth::base64::encode(
        d.model.clients["p"]
            .password
            .as_ref()
            .unwrap_or_else(|| panic!("missing"))
            .hash(),
    );
    assert!(!text.contains("hunter2") && !text.contains("password") && !text.contains(&hash));
    assert!(!format!("{d:?}").contains("hunter2"));
}

// ---- kick lists ----

fn kicks(d: &mut DynSec, command: &str) -> Vec<Option<String>> {
    d.control(format!(r#"{{"commands":[{command}]}}"#).as_bytes())
        .kick
}

fn users(names: &[&str]) -> Vec<Option<String>> {
    names.iter().map(|n| Some((*n).to_owned())).collect()
}

#[test]
fn kick_lists_follow_the_plugin() {
    let mut d = load(SAVED);
    let none: Vec<Option<String>> = Vec::new();
    assert_eq!(
        kicks(
            &mut d,
            r#"{"command":"createClient","username":"c","password":"p"}"#
        ),
        none
    );
    assert_eq!(
        kicks(&mut d, r#"{"command":"enableClient","username":"bob"}"#),
        none
    );
    assert_eq!(
        kicks(&mut d, r#"{"command":"disableClient","username":"bob"}"#),
        users(&["bob"])
    );
    assert_eq!(
        kicks(
            &mut d,
            r#"{"command":"setClientPassword","username":"c","password":"q"}"#
        ),
        users(&["c"])
    );
    assert_eq!(
        kicks(&mut d, r#"{"command":"setClientId","username":"c"}"#),
        users(&["c"])
    );
    assert_eq!(
        kicks(&mut d, r#"{"command":"modifyClient","username":"c"}"#),
        users(&["c"])
    );
    assert_eq!(
        kicks(
            &mut d,
            r#"{"command":"addClientRole","username":"c","rolename":"r2"}"#
        ),
        users(&["c"])
    );
    assert_eq!(
        kicks(
            &mut d,
            r#"{"command":"removeClientRole","username":"c","rolename":"r2"}"#
        ),
        users(&["c"])
    );
    // Group membership commands kick the username even when they fail.
    assert_eq!(
        kicks(
            &mut d,
            r#"{"command":"addGroupClient","username":"ghost","groupname":"g1"}"#
        ),
        users(&["ghost"])
    );
    assert_eq!(
        kicks(
            &mut d,
            r#"{"command":"addGroupClient","username":"c","groupname":"g1","priority":9}"#
        ),
        users(&["c"])
    );
    assert_eq!(
        kicks(
            &mut d,
            r#"{"command":"removeGroupClient","username":"c","groupname":"zz"}"#
        ),
        users(&["c"])
    );
    // A group change kicks its members (by username), plus anonymous clients when it
    // is the anonymous group.
    assert_eq!(
        kicks(
            &mut d,
            r#"{"command":"addGroupRole","groupname":"g1","rolename":"r1"}"#
        ),
        users(&["alice", "c"])
    );
    assert_eq!(
        kicks(
            &mut d,
            r#"{"command":"addGroupRole","groupname":"anon","rolename":"r1"}"#
        ),
        vec![None]
    );
    assert_eq!(
        kicks(
            &mut d,
            r#"{"command":"setAnonymousGroup","groupname":"anon"}"#
        ),
        vec![None]
    );
    // modifyGroup with clients: the old members, then the new ones.
    assert_eq!(
        kicks(
            &mut d,
            r#"{"command":"modifyGroup","groupname":"g1","clients":[{"username":"bob"}]}"#
        ),
        users(&["alice", "c", "bob"])
    );
    // A role's ACL change kicks its clients and its groups' clients.
    assert_eq!(
        kicks(
            &mut d,
            r#"{"command":"addRoleACL","rolename":"r1","acltype":"publishClientSend","topic":"z","allow":true}"#
        ),
        vec![Some("alice".into()), None, Some("bob".into())]
    );
    // modifyRole kicks nobody in the plugin.
    assert_eq!(
        kicks(
            &mut d,
            r#"{"command":"modifyRole","rolename":"r1","acls":[]}"#
        ),
        none
    );
    assert_eq!(
        kicks(&mut d, r#"{"command":"deleteRole","rolename":"r1"}"#),
        vec![Some("alice".into()), None, Some("bob".into())]
    );
    assert_eq!(
        kicks(&mut d, r#"{"command":"deleteGroup","groupname":"g1"}"#),
        users(&["bob"])
    );
    assert_eq!(
        kicks(&mut d, r#"{"command":"deleteClient","username":"c"}"#),
        users(&["c"])
    );
    // Errors before the plugin's kick decide nothing.
    assert_eq!(
        kicks(&mut d, r#"{"command":"deleteClient","username":"c"}"#),
        none
    );
}

#[test]
fn list_paging_is_the_plugins() {
    let mut d = load(SAVED);
    let list = |d: &mut DynSec, extra: &str| {
        one(
            d,
            serde_json::from_str(&format!(r#"{{"command":"listRoles"{extra}}}"#))
                .unwrap_or_else(|e| panic!("{e}")),
        )["data"]["roles"]
            .clone()
    };
    assert_eq!(list(&mut d, ""), serde_json::json!(["admin", "r1", "r2"]));
    assert_eq!(list(&mut d, r#","offset":2"#), serde_json::json!(["r2"]));
    assert_eq!(
        list(&mut d, r#","count":2"#),
        serde_json::json!(["admin", "r1"])
    );
    assert_eq!(list(&mut d, r#","count":0"#), serde_json::json!(["admin"]));
    assert_eq!(list(&mut d, r#","offset":9"#), serde_json::json!([]));
}
