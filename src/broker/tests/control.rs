//! The administration API on `$CONTROL/midge/v1` (`control.rs`): who may use it, what it tells
//! and how it kicks.

use super::*;
use serde_json::{json, Value};

const API: &str = "$CONTROL/midge/v1";
const RESPONSE: &str = "$CONTROL/midge/v1/response";

/// An ACL that lets user `admin` use the API and read its answers; everyone else gets the
/// whole tree, which does not cover `$` topics.
const ADMIN_ACL: &str = "\
topic readwrite #
user admin
topic write $CONTROL/midge/v1
topic read $CONTROL/midge/v1/response
topic readwrite #
user other
topic readwrite #
user auditor
topic read $CONTROL/midge/v1/response
topic readwrite #
";

impl World {
    /// Connects `client` (user `user`) on connection `id` and subscribes it to `filters`.
    fn client(&mut self, id: ConnId, client: &str, user: Option<&str>, filters: &[&str]) {
        assert_eq!(self.login(id, client, user, None), 0);
        if !filters.is_empty() {
            let f: Vec<(&str, QoS)> = filters.iter().map(|f| (*f, QoS::AtLeastOnce)).collect();
            self.send(id, &subscribe_bytes(1, &f));
            assert!(matches!(self.take(id).as_slice(), [Out::Suback(1, _)]));
        }
    }

    /// Sends `request` to the API from connection `id` and returns the response it gets, if any.
    fn ask(&mut self, id: ConnId, request: &[u8]) -> Option<Value> {
        self.send(id, &publish(API, request, QoS::AtMostOnce, false, 0));
        let out = self.take(id);
        let responses: Vec<&Out> = out
            .iter()
            .filter(|o| matches!(o, Out::Publish { topic, .. } if topic == RESPONSE))
            .collect();
        assert!(responses.len() <= 1, "one response per request: {out:?}");
        responses.first().map(|o| match o {
            Out::Publish { payload, .. } => {
                serde_json::from_slice(payload).unwrap_or_else(|e| panic!("response JSON: {e}"))
            }
            _ => unreachable!(),
        })
    }
}

#[test]
fn list_clients_tells_who_is_connected_and_what_they_hold() {
    let mut w = World::new(secured(None, Some(ADMIN_ACL), true));
    w.broker.set_wall_clock(w.now, 1_700_000_000);
    w.advance(Duration::from_secs(5));
    w.client(1, "admin-tool", Some("admin"), &[RESPONSE]);
    w.advance(Duration::from_secs(10));
    w.client(2, "sensor-b", None, &["cmd/b", "cmd/all"]);
    w.client(3, "sensor-a", Some("other"), &[]);
    // A message waits for sensor-b in flight: counted.
    w.client(4, "pub", None, &[]);
    w.send(4, &publish("cmd/b", b"x", QoS::AtLeastOnce, false, 1));

    let r = w.ask(
        1,
        br#"{"commands":[{"command":"listClients","correlationData":"c1"}]}"#,
    );
    let r = r.unwrap_or_else(|| panic!("no response"));
    let entry = &r["responses"][0];
    assert_eq!(entry["command"], "listClients");
    assert_eq!(entry["correlationData"], "c1");
    assert!(entry.get("error").is_none(), "{entry}");
    let data = &entry["data"];
    assert_eq!(data["totalCount"], 4);
    let ids: Vec<&str> = data["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["clientid"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["admin-tool", "pub", "sensor-a", "sensor-b"],
        "in client id order"
    );
    let b = &data["clients"][3];
    assert_eq!(b["username"], Value::Null);
    assert_eq!(b["address"], "127.0.0.1");
    assert_eq!(b["port"], 40002);
    assert_eq!(b["listenerPort"], 1883);
    assert_eq!(b["protocolVersion"], 4);
    assert_eq!(b["keepalive"], 60);
    assert_eq!(b["connectedAt"], 1_700_000_015);
    assert_eq!(
        b["subscriptions"],
        json!([{"topic": "cmd/b", "qos": 1}, {"topic": "cmd/all", "qos": 1}])
    );
    assert_eq!(b["inflightMessages"], 1);
    assert_eq!(b["queuedMessages"], 0);
    assert_eq!(data["clients"][2]["username"], "other");
    assert_eq!(data["clients"][0]["connectedAt"], 1_700_000_005);

    // A page of them, and one by id.
    let r = w.ask(
        1,
        br#"{"commands":[{"command":"listClients","offset":1,"count":2},
                         {"command":"getClient","clientid":"sensor-a"},
                         {"command":"getClient","clientid":"nobody"}]}"#,
    );
    let r = r.unwrap_or_else(|| panic!("no response"));
    let page: Vec<&str> = r["responses"][0]["data"]["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["clientid"].as_str())
        .collect();
    assert_eq!(page, ["pub", "sensor-a"]);
    assert_eq!(r["responses"][0]["data"]["totalCount"], 4);
    assert_eq!(r["responses"][1]["data"]["client"]["clientid"], "sensor-a");
    assert_eq!(r["responses"][2]["error"], "Client not found");
}

#[test]
fn kick_disconnects_without_the_will_and_keeps_other_clients() {
    let mut w = World::new(secured(None, Some(ADMIN_ACL), true));
    w.client(1, "admin-tool", Some("admin"), &[RESPONSE]);
    // connect_as gives every client a will on "wills".
    w.client(2, "victim", Some("other"), &[]);
    w.client(3, "watcher", Some("other"), &["wills", "$CONTROL/#"]);
    let r = w.ask(
        1,
        br#"{"commands":[{"command":"kickClient","clientid":"victim"},
                         {"command":"getClient","clientid":"victim"}]}"#,
    );
    let r = r.unwrap_or_else(|| panic!("no response"));
    assert_eq!(r["responses"][0], json!({"command": "kickClient"}));
    assert_eq!(
        r["responses"][1]["error"], "Client not found",
        "commands apply in order"
    );
    assert!(w.closed(2), "the victim is disconnected");
    assert!(!w.closed(3));
    assert!(
        w.take(3).is_empty(),
        "no will, and the request was not routed to a $CONTROL/# subscriber"
    );
    let again = w.ask(
        1,
        br#"{"commands":[{"command":"kickClient","clientid":"victim"}]}"#,
    );
    assert_eq!(
        again.map(|r| r["responses"][0]["error"].clone()),
        Some(json!("Client not found"))
    );
}

#[test]
fn kick_tells_an_mqtt5_client_administrative_action() {
    let mut w = World::new(secured(None, Some(ADMIN_ACL), true));
    w.client(1, "admin-tool", Some("admin"), &[RESPONSE]);
    w.open(2);
    let mut c = Connect {
        version: ProtocolVersion::V5,
        bridge: false,
        clean_start: true,
        keep_alive: 60,
        client_id: "v5-victim".into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    };
    c.username = Some("other".into());
    w.send(
        2,
        &Packet::Connect(Box::new(c)).to_bytes(ProtocolVersion::V5),
    );
    let connack = w.broker.poll_transmit(2).map(std::mem::take);
    assert!(connack.is_some_and(|b| !b.is_empty()));
    w.ask(
        1,
        br#"{"commands":[{"command":"kickClient","clientid":"v5-victim"}]}"#,
    );
    let out = w
        .broker
        .poll_transmit(2)
        .map(std::mem::take)
        .unwrap_or_default();
    // DISCONNECT with reason 0x98, Administrative action.
    assert_eq!(out, [0xE0, 0x01, 0x98]);
    assert!(w.closed(2));
}

#[test]
fn without_any_acl_the_api_is_refused() {
    // No acl_file: every topic is open to everyone, but not this one.
    let mut w = World::new(secured(None, None, true));
    w.client(1, "admin-tool", Some("admin"), &[RESPONSE]);
    w.client(2, "victim", None, &[]);
    w.client(3, "watcher", None, &["$CONTROL/#"]);
    let r = w.ask(
        1,
        br#"{"commands":[{"command":"kickClient","clientid":"victim"}]}"#,
    );
    assert_eq!(r, None, "no response");
    assert!(!w.closed(2), "nothing ran");
    assert!(w.take(3).is_empty(), "not routed either");
    // A QoS 1 request is still acknowledged (with Not authorized for MQTT 5).
    w.send(1, &publish(API, b"{}", QoS::AtLeastOnce, false, 7));
    assert_eq!(w.take(1), vec![Out::Puback(7)]);
}

#[test]
fn an_acl_without_a_rule_for_the_api_refuses_it() {
    // `other` may read and write `#`, which covers no `$` topic.
    let mut w = World::new(secured(None, Some(ADMIN_ACL), true));
    w.client(1, "other-tool", Some("other"), &[RESPONSE]);
    w.client(2, "victim", None, &[]);
    let r = w.ask(
        1,
        br#"{"commands":[{"command":"kickClient","clientid":"victim"}]}"#,
    );
    assert_eq!(r, None);
    assert!(!w.closed(2));
    // Anonymous clients get the anonymous list: `#` again.
    w.client(3, "anon-tool", None, &[RESPONSE]);
    assert_eq!(
        w.ask(3, br#"{"commands":[{"command":"listClients"}]}"#),
        None
    );
}

#[test]
fn a_pattern_rule_grants_the_api() {
    // (Every client here has a will on "wills", which the ACL must let it publish.)
    let acl = "pattern write $CONTROL/midge/v1\npattern read $CONTROL/midge/v1/response\n\
               pattern write wills\n";
    let mut w = World::new(secured(None, Some(acl), true));
    w.client(1, "tool", Some("anyone"), &[RESPONSE]);
    let r = w.ask(1, br#"{"commands":[{"command":"listClients"}]}"#);
    assert_eq!(
        r.map(|r| r["responses"][0]["data"]["totalCount"].clone()),
        Some(json!(1))
    );
}

#[test]
fn the_response_needs_read_access_and_a_subscription() {
    // Allowed to ask, not to read the answer: the request runs, the answer is not delivered.
    let acl = "topic wills\nuser admin\ntopic write $CONTROL/midge/v1\ntopic wills\n";
    let mut w = World::new(secured(None, Some(acl), true));
    w.client(1, "admin-tool", Some("admin"), &[RESPONSE]);
    w.client(2, "victim", None, &[]);
    let r = w.ask(
        1,
        br#"{"commands":[{"command":"kickClient","clientid":"victim"}]}"#,
    );
    assert_eq!(r, None);
    assert!(w.closed(2), "the command ran");
    // With read access but no subscription, nothing comes back either.
    let mut w = World::new(secured(None, Some(ADMIN_ACL), true));
    w.client(1, "admin-tool", Some("admin"), &[]);
    assert_eq!(
        w.ask(1, br#"{"commands":[{"command":"listClients"}]}"#),
        None
    );
}

#[test]
fn bad_requests_get_errors_and_change_nothing() {
    let mut w = World::new(secured(None, Some(ADMIN_ACL), true));
    w.client(1, "admin-tool", Some("admin"), &[RESPONSE]);
    w.client(2, "victim", None, &[]);
    let cases: [(&[u8], Value); 9] = [
        (
            b"not json",
            json!({"command": "Unknown command", "error": "Payload not valid JSON"}),
        ),
        (
            b"{}",
            json!({"command": "Unknown command", "error": "Invalid/missing commands"}),
        ),
        (
            br#"{"commands":"kickClient"}"#,
            json!({"command": "Unknown command", "error": "Invalid/missing commands"}),
        ),
        (
            br#"{"commands":["kickClient"]}"#,
            json!({"command": "Unknown command", "error": "Command not an object"}),
        ),
        (
            br#"{"commands":[{"command":6}]}"#,
            json!({"command": "Unknown command", "error": "Missing command"}),
        ),
        (
            br#"{"commands":[{"command":"shutdown"}]}"#,
            json!({"command": "shutdown", "error": "Unknown command"}),
        ),
        (
            br#"{"commands":[{"command":"kickClient","clientid":["victim"]}]}"#,
            json!({"command": "kickClient", "error": "Invalid/missing clientid"}),
        ),
        (
            br#"{"commands":[{"command":"kickClient","clientid":"victim","correlationData":5}]}"#,
            json!({"command": "kickClient", "error": "Invalid correlationData data type."}),
        ),
        (
            br#"{"commands":[{"command":"listClients","count":"all"}]}"#,
            json!({"command": "listClients", "error": "Invalid count"}),
        ),
    ];
    for (request, expected) in cases {
        let r = w.ask(1, request);
        assert_eq!(
            r,
            Some(json!({ "responses": [expected] })),
            "{}",
            String::from_utf8_lossy(request)
        );
    }
    // A huge request is not parsed at all.
    let mut huge = br#"{"commands":[{"command":"kickClient","clientid":"victim","x":""#.to_vec();
    huge.resize(70_000, b'a');
    huge.extend_from_slice(br#""}]}"#);
    let r = w.ask(1, &huge);
    assert_eq!(
        r,
        Some(json!({"responses": [{"command": "Unknown command", "error": "Payload too large"}]}))
    );
    assert!(!w.closed(2), "nothing was kicked");
}

#[test]
fn the_response_is_a_normal_message_for_every_reader() {
    let mut w = World::new(secured(None, Some(ADMIN_ACL), true));
    w.client(1, "admin-tool", Some("admin"), &[RESPONSE]);
    // May read the responses (a rule names the topic), may not ask.
    w.client(2, "auditor", Some("auditor"), &["$CONTROL/midge/#"]);
    // `#` covers no `$` topic: subscribed, but not allowed to read.
    w.client(3, "other", Some("other"), &["$CONTROL/#"]);
    let asked = w.ask(
        1,
        br#"{"commands":[{"command":"listClients","correlationData":"a"}]}"#,
    );
    let asked = asked.unwrap_or_else(|| panic!("no response"));
    let seen = w.take(2);
    let [Out::Publish { topic, payload, .. }] = seen.as_slice() else {
        panic!("the auditor gets the response: {seen:?}")
    };
    assert_eq!(topic, RESPONSE);
    assert_eq!(serde_json::from_slice::<Value>(payload).ok(), Some(asked));
    assert!(w.take(3).is_empty(), "no READ rule, no response");
    assert_eq!(
        w.ask(2, br#"{"commands":[{"command":"listClients"}]}"#),
        None
    );
    assert!(w.take(1).is_empty(), "the auditor's request did not run");
}

#[test]
fn an_mqtt5_request_gets_its_correlation_data_back_and_a_refusal_says_why() {
    let acl = "pattern write $CONTROL/midge/v1\npattern read $CONTROL/midge/v1/response\n";
    let mut w = World::new(secured(None, Some(acl), true));
    connect5(&mut w, 1, "v5-admin", Properties::default());
    let options = SubscribeOptions::qos(QoS::AtLeastOnce);
    w.send(1, &subscribe_v5(1, RESPONSE, options, Some(9)));
    take_v5(&mut w, 1);
    let props: Properties = PropertySet {
        correlation_data: Some(b"req-1".to_vec()),
        ..PropertySet::default()
    }
    .into();
    let request = br#"{"commands":[{"command":"listClients"}]}"#;
    w.send(1, &publish_v5(API, request, QoS::AtLeastOnce, 3, props));
    let out = take_v5(&mut w, 1);
    let acked = out
        .iter()
        .any(|p| matches!(p, Packet::Puback(a) if a.packet_id == 3 && a.reason == 0));
    assert!(acked, "{out:?}");
    let response = out.iter().find_map(|p| match p {
        Packet::Publish(p) if p.topic == RESPONSE => Some(p),
        _ => None,
    });
    let response = response.unwrap_or_else(|| panic!("no response: {out:?}"));
    assert_eq!(response.qos, QoS::AtLeastOnce, "the request's QoS");
    assert_eq!(
        response.properties.correlation_data.as_deref(),
        Some(&b"req-1"[..])
    );
    assert_eq!(response.properties.subscription_identifiers, [9]);

    // No ACL: refused, and an MQTT 5 client is told Not authorized.
    let mut w = World::new(secured(None, None, true));
    connect5(&mut w, 1, "v5-admin", Properties::default());
    w.send(
        1,
        &publish_v5(API, request, QoS::AtLeastOnce, 4, Properties::default()),
    );
    let out = take_v5(&mut w, 1);
    assert!(
        matches!(out.as_slice(), [Packet::Puback(a)] if a.packet_id == 4 && a.reason == 0x87),
        "{out:?}"
    );
}
