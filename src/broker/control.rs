//! PUBLISHes to `$CONTROL/...`: requests to the broker itself, never routed to subscribers.
//!
//! Mosquitto 2.0 hands every PUBLISH whose topic starts with `$CONTROL/` to whatever serves
//! that exact topic, once the publish access check has let it through, and passes none of them
//! on to other clients; a topic nothing serves is acknowledged and dropped. midge does the
//! same, and [`Broker::handle_control`] is the one place that decides what each topic does.
//!
//! # `$CONTROL/midge/v1`: the administration API
//!
//! A request is JSON in the shape of Mosquitto's control APIs, one or more commands:
//!
//! ```text
//! {"commands":[{"command":"listClients","correlationData":"1"},
//!              {"command":"getClient","clientid":"sensor-7"},
//!              {"command":"kickClient","clientid":"sensor-7"}]}
//! ```
//!
//! The answers, one per command and in order, go to `$CONTROL/midge/v1/response` as
//! `{"responses":[{"command":..,"data":..,"error":..,"correlationData":..}]}`, where `data`
//! comes with a successful command that returns something, `error` with a failed one, and
//! `correlationData` echoes the command's. Commands run in order: a client kicked by one command
//! is gone for the next. `docs/admin.md` lists the commands and every field.
//!
//! The response goes out as a normal message at the request's QoS, to every subscriber of the
//! response topic that the ACL lets read it (which again takes a rule naming the topic), so a
//! requester tells its answer apart by `correlationData`. The v5 Correlation Data property of
//! the request, if any, is copied to the response.
//!
//! ## Who may use it
//!
//! Only a client that a rule explicitly grants writing to `$CONTROL/midge/v1`: with an
//! `acl_file`, a `topic write` (or `pattern`) line whose filter covers the topic. A filter
//! starting with `#` or `+` never covers a `$` topic, so `topic readwrite #` grants nothing here.
//! With dynamic security, a role's `publishClientSend` ACL covering the topic (its default
//! access never opens a `$CONTROL` topic).
//! Without any ACL every other topic is open to every client, but this one is refused: an
//! administration API must not be open by default (fail closed). A refused request is
//! acknowledged with Not authorized (MQTT 5) and logged at notice, and nothing runs.
//!
//! The JSON work is sans-IO, like the rest of the broker: bytes in, bytes out.

use super::conn::Conn;
use super::inbound::PublishSummary;
use super::route::MsgRef;
use super::session::Session;
use super::{dynsec, Broker, CloseReason, ConnId, ConnState, SessionId};
use crate::auth::dynsec::DynAccess;
use crate::auth::Security;
use crate::codec::{reason, Properties, PropertySet, ProtocolVersion, Publish, QoS};
use serde_json::{json, Map, Value};
use std::time::Instant;

/// The administration API's request topic.
const MIDGE_API: &str = "$CONTROL/midge/v1";
/// Where its responses go.
const MIDGE_RESPONSE: &str = "$CONTROL/midge/v1/response";
/// The largest request served: a few commands take a few hundred bytes, so anything near this
/// is not a request but an attempt to make the broker parse a lot of JSON.
const MAX_REQUEST: usize = 64 * 1024;

/// True for a topic that is a request to the broker and never a message to route.
pub(super) fn is_control(topic: &str) -> bool {
    topic.starts_with("$CONTROL/")
}

/// Whether this client may use the administration API (see the module documentation).
fn admin_granted(security: &Security, s: &Session) -> bool {
    // With dynamic security, a role (its default access never opens `$CONTROL` topics).
    if let Some(granted) = dynsec::session_verdict(security, s, DynAccess::PublishSend, MIDGE_API) {
        return granted;
    }
    match &security.acl {
        Some(acl) => acl.can_publish(s.username(), &s.client_id, MIDGE_API),
        // No rules at all: every other topic is open, this one is not.
        None => false,
    }
}

/// What one command answers: data (or nothing) on success, an error string on failure.
type Outcome = Result<Option<Value>, &'static str>;

impl Broker {
    /// A PUBLISH from connection `id` (session `sid`) to `$CONTROL/...` `topic` that passed the
    /// publish access check. Returns the reason code to acknowledge it with.
    pub(super) fn handle_control(
        &mut self,
        id: ConnId,
        sid: SessionId,
        p: &Publish<'_>,
        topic: &str,
        from_bridge: bool,
        now: Instant,
    ) -> u8 {
        match topic {
            // A bridge's message came through no access check: never served.
            MIDGE_API if !from_bridge => self.serve_admin(id, sid, p, now),
            dynsec::CONTROL_TOPIC if !from_bridge => self.serve_dynsec(id, sid, p, now),
            // Nothing serves this topic: acknowledged and dropped, as Mosquitto does.
            _ => reason::SUCCESS,
        }
    }

    /// Runs an administration request and sends the response to its client.
    fn serve_admin(&mut self, id: ConnId, sid: SessionId, p: &Publish<'_>, now: Instant) -> u8 {
        let granted = self
            .session(sid)
            .is_some_and(|s| admin_granted(self.settings.security_for(s.listener), s));
        if !granted {
            log::info!(
                target: "notice",
                "Denied PUBLISH from {} {}",
                self.conn_name(id),
                PublishSummary::of(p, MIDGE_API)
            );
            return reason::NOT_AUTHORIZED;
        }
        let admin = self.conn_name(id);
        let responses = match parse_request(p.payload) {
            Ok(tree) => match tree.get("commands") {
                Some(Value::Array(commands)) => commands
                    .iter()
                    .map(|c| self.run_command(c, &admin, now))
                    .collect(),
                _ => vec![reply(
                    "Unknown command",
                    Err("Invalid/missing commands"),
                    None,
                )],
            },
            Err(error) => vec![reply("Unknown command", Err(error), None)],
        };
        let body = json!({ "responses": responses }).to_string();
        let properties = p.properties.correlation_data.clone().map(|c| {
            PropertySet {
                correlation_data: Some(c),
                ..PropertySet::default()
            }
            .into()
        });
        self.respond(body.as_bytes(), p.qos, properties.as_ref(), now);
        reason::SUCCESS
    }

    /// One command of a request, and its entry in the response.
    fn run_command(&mut self, command: &Value, admin: &str, now: Instant) -> Value {
        let Some(c) = command.as_object() else {
            return reply("Unknown command", Err("Command not an object"), None);
        };
        let correlation = match c.get("correlationData") {
            None => None,
            Some(Value::String(text)) => Some(text.as_str()),
            Some(_) => {
                let name = c.get("command").and_then(Value::as_str);
                let error = Err("Invalid correlationData data type.");
                return reply(name.unwrap_or("Unknown command"), error, None);
            }
        };
        let Some(name) = c.get("command").and_then(Value::as_str) else {
            return reply("Unknown command", Err("Missing command"), correlation);
        };
        let outcome = match name {
            "listClients" => self.list_clients(c),
            "getClient" => self.get_client(c),
            "kickClient" => self.kick_client(c, admin, now),
            _ => Err("Unknown command"),
        };
        reply(name, outcome, correlation)
    }

    /// `listClients`: the connected clients in client id order, `offset` and `count` picking a
    /// page of them (a negative count: all the rest).
    fn list_clients(&self, c: &Map<String, Value>) -> Outcome {
        let offset = match c.get("offset") {
            None => 0,
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or("Invalid offset")?,
        };
        let count = match c.get("count") {
            None => None,
            Some(v) => match v.as_i64().ok_or("Invalid count")? {
                n if n < 0 => None,
                n => Some(usize::try_from(n).unwrap_or(usize::MAX)),
            },
        };
        let mut clients = self.connected_clients();
        clients.sort_unstable_by(|a, b| a.1.client_id.cmp(&b.1.client_id));
        let total = clients.len();
        let page: Vec<Value> = clients
            .into_iter()
            .skip(offset)
            .take(count.unwrap_or(usize::MAX))
            .map(|(conn, s)| self.client_json(conn, s))
            .collect();
        Ok(Some(json!({ "totalCount": total, "clients": page })))
    }

    /// `getClient`: one connected client, by `clientid`.
    fn get_client(&self, c: &Map<String, Value>) -> Outcome {
        let id = self.find_connected(c)?;
        let (conn, s) = self.client_at(id).ok_or("Client not found")?;
        Ok(Some(json!({ "client": self.client_json(conn, s) })))
    }

    /// `kickClient`: disconnects one client, by `clientid`, as Mosquitto kicks: an MQTT 5
    /// client is told Administrative action, and its will is not published. Its session stays
    /// (a persistent session waits for the client's return as after any disconnection).
    fn kick_client(&mut self, c: &Map<String, Value>, admin: &str, now: Instant) -> Outcome {
        let id = self.find_connected(c)?;
        log::info!(
            target: "notice",
            "Client {} kicked by {admin} through {MIDGE_API}.",
            self.conn_name(id)
        );
        self.send_disconnect(id, reason::ADMINISTRATIVE_ACTION);
        self.close(id, CloseReason::Kicked, now);
        Ok(None)
    }

    /// The connection of the connected client a command's `clientid` names.
    fn find_connected(&self, c: &Map<String, Value>) -> Result<ConnId, &'static str> {
        let client_id = c
            .get("clientid")
            .and_then(Value::as_str)
            .ok_or("Invalid/missing clientid")?;
        self.session_of(client_id)
            .and_then(|sid| self.session(sid))
            .and_then(Session::conn)
            .filter(|&id| self.client_at(id).is_some())
            .ok_or("Client not found")
    }

    /// Connection `id` and its session, if it is a connected client (midge's own bridge
    /// connections are not clients).
    fn client_at(&self, id: ConnId) -> Option<(&Conn, &Session)> {
        let conn = self.conn(id).filter(|c| c.bridge().is_none())?;
        match conn.state {
            ConnState::Active(sid) => Some((conn, self.session(sid)?)),
            _ => None,
        }
    }

    /// Every client connected now.
    fn connected_clients(&self) -> Vec<(&Conn, &Session)> {
        (0..self.conns.len())
            .filter_map(|id| self.client_at(id))
            .collect()
    }

    /// What the API tells about one connected client.
    fn client_json(&self, conn: &Conn, s: &Session) -> Value {
        let subscriptions: Vec<Value> = s
            .subscriptions
            .iter()
            .map(|(filter, options, _)| json!({ "topic": &**filter, "qos": options.qos as u8 }))
            .collect();
        json!({
            "clientid": &*s.client_id,
            "username": s.username(),
            "address": conn.peer.ip().to_string(),
            "port": conn.peer.port(),
            "listenerPort": conn.local_port,
            "protocolVersion": protocol_level(conn.version),
            "keepalive": conn.keep_alive,
            "connectedAt": self.unix_time(conn.connected_at),
            "subscriptions": subscriptions,
            "queuedMessages": s.queue.count(),
            "inflightMessages": s.inflight.len(),
        })
    }

    /// Publishes a response: a normal message, for every subscriber the ACL lets read it.
    fn respond(&mut self, payload: &[u8], qos: QoS, properties: Option<&Properties>, now: Instant) {
        let m = MsgRef {
            topic: MIDGE_RESPONSE,
            payload,
            qos,
            retain: false,
            properties,
            expires_at: None,
            origin: None,
            source: None,
        };
        self.route(&m, now);
    }
}

/// A request's JSON, or the error that answers the whole request.
fn parse_request(payload: &[u8]) -> Result<Value, &'static str> {
    if payload.len() > MAX_REQUEST {
        return Err("Payload too large");
    }
    serde_json::from_slice(payload).map_err(|_| "Payload not valid JSON")
}

/// One entry of `responses`.
fn reply(command: &str, outcome: Outcome, correlation: Option<&str>) -> Value {
    let mut r = Map::new();
    r.insert("command".into(), command.into());
    match outcome {
        Ok(Some(data)) => {
            r.insert("data".into(), data);
        }
        Ok(None) => {}
        Err(error) => {
            r.insert("error".into(), error.into());
        }
    }
    if let Some(c) = correlation {
        r.insert("correlationData".into(), c.into());
    }
    Value::Object(r)
}

/// The protocol level CONNECT names: 3 (MQTT 3.1), 4 (3.1.1) or 5.
fn protocol_level(v: ProtocolVersion) -> u8 {
    match v {
        ProtocolVersion::V31 => 3,
        ProtocolVersion::V311 => 4,
        ProtocolVersion::V5 => 5,
    }
}
