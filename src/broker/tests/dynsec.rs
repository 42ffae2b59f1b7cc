//! Dynamic security in the broker (`broker/dynsec.rs`): who gets in, in Mosquitto 2.0's order
//! (the plugin, then the password file, then `allow_anonymous`); access checks that fall
//! through to the ACL file where the plugin defers; `$CONTROL/dynamic-security/v1` served and
//! never routed; kicks without the will; saves handed to the server.

use super::*;
use crate::auth::dynsec::DynSec;
use crate::auth::{DynsecFile, SharedDynsec};
use std::cell::RefCell;

/// `mosquitto_ctrl dynsec init FILE admin secretpw`'s file.
const INIT: &str = include_str!("../../auth/dynsec/testdata/ctrl-init.json");
const CONTROL: &str = "$CONTROL/dynamic-security/v1";
const RESPONSE: &str = "$CONTROL/dynamic-security/v1/response";

/// The init file, then `commands` (a JSON array) run on it.
fn dynsec(commands: &str) -> SharedDynsec {
    let mut state = DynSec::from_json("init", INIT.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let request = format!(r#"{{"commands":{commands}}}"#);
    let outcome = state.control(request.as_bytes());
    let text = String::from_utf8_lossy(&outcome.response).into_owned();
    assert!(!text.contains("error"), "{text}");
    Rc::new(RefCell::new(DynsecFile {
        path: "/nonexistent/dynamic-security.json".into(),
        state,
        known: Vec::new(),
    }))
}

/// [`secured`] with dynamic security on.
fn with_dynsec(d: &SharedDynsec, passwords: Option<&str>, acl: Option<&str>) -> Settings {
    let mut settings = secured(passwords, acl, true);
    if let Some(security) = Rc::get_mut(&mut settings.security) {
        security.dynsec = Some(d.clone());
    }
    settings
}

/// dyn (password d1) may publish to a/# and to "wills" (where [`World::login`]'s will goes).
const DYN: &str = r#"[
    {"command":"createClient","username":"dyn","password":"d1"},
    {"command":"createRole","rolename":"a"},
    {"command":"addRoleACL","rolename":"a","acltype":"publishClientSend","topic":"a/#","allow":true},
    {"command":"addRoleACL","rolename":"a","acltype":"publishClientSend","topic":"wills","allow":true},
    {"command":"addClientRole","username":"dyn","rolename":"a"}]"#;

impl World {
    /// [`World::login`] without a will; returns the CONNACK code.
    fn login_plain(
        &mut self,
        id: ConnId,
        client: &str,
        user: Option<&str>,
        pw: Option<&str>,
    ) -> u8 {
        let connect = Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V311,
            bridge: false,
            clean_start: true,
            keep_alive: 60,
            client_id: client.into(),
            will: None,
            username: user.map(str::to_string),
            password: pw.map(|p| p.as_bytes().to_vec()),
            properties: Properties::default(),
        }));
        self.open(id);
        self.send(id, &connect.to_bytes(ProtocolVersion::V311));
        match self.take(id).first() {
            Some(Out::Connack(_, code)) => *code,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

#[test]
fn the_plugin_is_asked_first_then_the_password_file_then_allow_anonymous() {
    let d = dynsec(DYN);
    let file = password_line("dyn", "from-file", b"s1") + &password_line("file", "f1", b"s2");
    let mut w = World::new(with_dynsec(&d, Some(&file), None));
    // Known to dynamic security: its answer stands, whatever the password file says.
    assert_eq!(w.login_plain(1, "c1", Some("dyn"), Some("d1")), 0);
    assert_eq!(w.login_plain(2, "c2", Some("dyn"), Some("from-file")), 5);
    // Unknown to it (it defers): the password file decides.
    assert_eq!(w.login_plain(3, "c3", Some("file"), Some("f1")), 0);
    assert_eq!(w.login_plain(4, "c4", Some("file"), Some("bad")), 5);
    // Unknown to both: refused, allow_anonymous or not; no username: allow_anonymous.
    assert_eq!(w.login_plain(5, "c5", Some("ghost"), Some("x")), 5);
    assert_eq!(w.login_plain(6, "c6", None, None), 0);
    let mut w = World::new(with_dynsec(&d, None, None));
    assert_eq!(w.login_plain(7, "c7", Some("ghost"), Some("x")), 5);
    assert_eq!(w.login_plain(8, "c8", Some("dyn"), None), 5);
}

#[test]
fn where_the_plugin_defers_the_acl_file_decides() {
    let d = dynsec(DYN);
    let file = password_line("file", "f1", b"s2");
    let acl = "user file\ntopic readwrite #\n";
    let mut w = World::new(with_dynsec(&d, Some(&file), Some(acl)));
    assert_eq!(w.login_plain(1, "reader", Some("file"), Some("f1")), 0);
    // A password file user: dynamic security does not know it, the ACL file lets it subscribe.
    w.send(1, &subscribe_bytes(1, &[("#", QoS::AtMostOnce)]));
    assert_eq!(w.take(1), vec![Out::Suback(1, vec![0])]);
    assert_eq!(w.login_plain(2, "writer", Some("dyn"), Some("d1")), 0);
    // dyn's role allows a/#; b/x matches no rule and the default denies: the plugin defers,
    // and the ACL file has nothing for dyn.
    w.send(2, &publish("a/x", b"1", QoS::AtMostOnce, false, 0));
    w.send(2, &publish("b/x", b"2", QoS::AtMostOnce, false, 0));
    w.send(1, &publish("f/x", b"3", QoS::AtMostOnce, false, 0));
    assert_eq!(
        w.take(1),
        vec![pub_out("a/x", b"1", 0, 0), pub_out("f/x", b"3", 0, 0)]
    );
}

#[test]
fn control_requests_are_served_never_routed_and_kicks_skip_the_will() {
    let d = dynsec(DYN);
    let mut w = World::new(with_dynsec(&d, None, None));
    assert_eq!(
        w.login_plain(1, "admin-1", Some("admin"), Some("secretpw")),
        0
    );
    w.send(
        1,
        &subscribe_bytes(
            1,
            &[
                (RESPONSE, QoS::AtMostOnce),
                ("$CONTROL/dynamic-security/#", QoS::AtMostOnce),
                ("wills", QoS::AtMostOnce),
            ],
        ),
    );
    assert_eq!(w.take(1), vec![Out::Suback(1, vec![0, 0, 0])]);
    // dyn logs in (with a will on "wills") and may not administer: denied, nothing runs.
    assert_eq!(w.login(2, "dyn-1", Some("dyn"), Some("d1")), 0);
    let disable = br#"{"commands":[{"command":"disableClient","username":"dyn"}]}"#;
    w.send(2, &publish(CONTROL, disable, QoS::AtLeastOnce, false, 7));
    assert_eq!(w.take(2), vec![Out::Puback(7)]);
    assert_eq!(w.take(1), vec![]);
    assert!(!w.closed(2));
    // The administrator's request: the response, and only the response, is published; dyn
    // is disconnected without its will; the file is handed over to be saved.
    w.send(1, &publish(CONTROL, disable, QoS::AtMostOnce, false, 0));
    let got = w.take(1);
    assert_eq!(
        got,
        vec![pub_out(
            RESPONSE,
            br#"{"responses":[{"command":"disableClient"}]}"#,
            0,
            0
        )]
    );
    assert!(w.closed(2));
    assert_eq!(w.take(1), vec![]);
    let (path, json) = w
        .broker
        .poll_dynsec_save()
        .unwrap_or_else(|| panic!("a save"));
    assert_eq!(
        path,
        std::path::Path::new("/nonexistent/dynamic-security.json")
    );
    assert!(String::from_utf8_lossy(&json).contains("\"disabled\": true"));
    assert_eq!(w.broker.poll_dynsec_save(), None);
    assert_eq!(w.login_plain(3, "dyn-2", Some("dyn"), Some("d1")), 5);
}

#[test]
fn a_refused_unsubscribe_keeps_the_subscription() {
    let d = dynsec(
        r#"[{"command":"createClient","username":"u","password":"p"},
        {"command":"createRole","rolename":"r"},
        {"command":"addRoleACL","rolename":"r","acltype":"subscribePattern","topic":"t/#","allow":true},
        {"command":"addRoleACL","rolename":"r","acltype":"publishClientSend","topic":"t/#","allow":true},
        {"command":"addRoleACL","rolename":"r","acltype":"unsubscribeLiteral","topic":"t/keep","allow":false},
        {"command":"addClientRole","username":"u","rolename":"r"}]"#,
    );
    let mut w = World::new(with_dynsec(&d, None, None));
    assert_eq!(w.login_plain(1, "u-1", Some("u"), Some("p")), 0);
    let filters = [
        ("t/keep", QoS::AtMostOnce),
        ("t/go", QoS::AtMostOnce),
        ("x", QoS::AtMostOnce),
    ];
    w.send(1, &subscribe_bytes(1, &filters));
    // Subscribing outside the role: refused in SUBACK, as Mosquitto's plugin.
    assert_eq!(w.take(1), vec![Out::Suback(1, vec![0, 0, 0x80])]);
    let unsubscribe = Packet::Unsubscribe(crate::codec::Unsubscribe {
        packet_id: 2,
        filters: vec!["t/keep".into(), "t/go".into()],
        properties: Properties::default(),
    })
    .to_bytes(ProtocolVersion::V311);
    w.send(1, &unsubscribe);
    assert_eq!(w.take(1), vec![Out::Unsuback(2)]);
    w.send(1, &publish("t/keep", b"k", QoS::AtMostOnce, false, 0));
    w.send(1, &publish("t/go", b"g", QoS::AtMostOnce, false, 0));
    assert_eq!(w.take(1), vec![pub_out("t/keep", b"k", 0, 0)]);
}

#[test]
fn a_file_reloaded_from_disk_logs_out_the_clients_it_admitted_only() {
    let d = dynsec(DYN);
    let file = password_line("file", "f1", b"s2");
    let mut w = World::new(with_dynsec(
        &d,
        Some(&file),
        Some("user file\ntopic readwrite #\n"),
    ));
    assert_eq!(w.login_plain(1, "c1", Some("dyn"), Some("d1")), 0);
    assert_eq!(w.login_plain(2, "c2", Some("file"), Some("f1")), 0);
    assert_eq!(w.login_plain(3, "c3", None, None), 0);
    let fresh = DynSec::from_json("new", INIT.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let now = w.now;
    assert_eq!(
        w.broker.handle_dynsec_reloaded(&d, fresh, Vec::new(), now),
        1
    );
    assert!(w.closed(1));
    assert_eq!(w.take(2), vec![]);
    // The new file has no dyn.
    assert_eq!(w.login_plain(4, "c4", Some("dyn"), Some("d1")), 5);
    assert!(w.closed(4));
    // A configuration reload keeps the running state and the clients it admitted.
    let mut settings = with_dynsec(&d, Some(&file), None);
    if let Some(security) = Rc::get_mut(&mut settings.security) {
        security.dynsec = None;
    }
    assert_eq!(w.reload(settings), Vec::<ConnId>::new());
    assert_eq!(w.login_plain(5, "c5", Some("admin"), Some("secretpw")), 0);
}

#[test]
fn a_dynsec_role_grants_the_administration_api() {
    let d = dynsec(
        r#"[{"command":"createClient","username":"ops","password":"o"},
        {"command":"createRole","rolename":"ops"},
        {"command":"addRoleACL","rolename":"ops","acltype":"publishClientSend","topic":"$CONTROL/midge/v1","allow":true},
        {"command":"addRoleACL","rolename":"ops","acltype":"subscribeLiteral","topic":"$CONTROL/midge/v1/response","allow":true},
        {"command":"addRoleACL","rolename":"ops","acltype":"publishClientReceive","topic":"$CONTROL/midge/v1/response","allow":true},
        {"command":"addClientRole","username":"ops","rolename":"ops"}]"#,
    );
    let mut w = World::new(with_dynsec(&d, None, None));
    let list = br#"{"commands":[{"command":"listClients"}]}"#;
    // The init file's admin may administer dynamic security, not midge.
    assert_eq!(
        w.login_plain(1, "admin-1", Some("admin"), Some("secretpw")),
        0
    );
    w.send(
        1,
        &publish("$CONTROL/midge/v1", list, QoS::AtLeastOnce, false, 1),
    );
    assert_eq!(w.take(1), vec![Out::Puback(1)]);
    assert_eq!(w.login_plain(2, "ops-1", Some("ops"), Some("o")), 0);
    w.send(
        2,
        &subscribe_bytes(1, &[("$CONTROL/midge/v1/response", QoS::AtMostOnce)]),
    );
    assert_eq!(w.take(2), vec![Out::Suback(1, vec![0])]);
    w.send(
        2,
        &publish("$CONTROL/midge/v1", list, QoS::AtMostOnce, false, 0),
    );
    let got = w.take(2);
    assert!(
        matches!(&got[..], [Out::Publish { topic, payload, .. }]
            if topic == "$CONTROL/midge/v1/response"
                && String::from_utf8_lossy(payload).contains("\"totalCount\":2")),
        "{got:?}"
    );
}
