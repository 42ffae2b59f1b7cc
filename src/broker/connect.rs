//! CONNECT and CONNACK: who the client is, whether it may connect, and which session it gets.

use super::conn::Conn;
use super::conn::ConnState;
use super::deliver::{Pending, Sent};
use super::session::{Credential, Expiry, Inflight, Session};
use super::{Broker, CloseReason, ConnId, ListenerOptions, SessionId, Timer};
use crate::auth::dynsec::{DynAccess, DynAuth};
use crate::auth::passwd::PasswordHash;
use crate::codec::{
    self, connack_v3, reason, Connack, Connect, Packet, Properties, ProtocolVersion,
};
use std::rc::Rc;
use std::time::Instant;

/// Why a CONNECT is refused, in terms that map to both 3.x and 5.0 codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    IdentifierRejected,
    NotAuthorized,
    BadAuthMethod,
    QosNotSupported,
    RetainNotSupported,
    WillTooLarge,
}

impl Refusal {
    fn code(self, version: ProtocolVersion) -> u8 {
        match (self, version.is_v5()) {
            (Refusal::IdentifierRejected, false) => connack_v3::IDENTIFIER_REJECTED,
            (Refusal::IdentifierRejected, true) => reason::CLIENT_IDENTIFIER_NOT_VALID,
            (Refusal::NotAuthorized, false) => connack_v3::NOT_AUTHORIZED,
            (Refusal::NotAuthorized, true) => reason::NOT_AUTHORIZED,
            (Refusal::BadAuthMethod, false) => connack_v3::NOT_AUTHORIZED,
            (Refusal::BadAuthMethod, true) => reason::BAD_AUTHENTICATION_METHOD,
            (Refusal::QosNotSupported | Refusal::RetainNotSupported, false) => {
                connack_v3::NOT_AUTHORIZED
            }
            (Refusal::QosNotSupported, true) => reason::QOS_NOT_SUPPORTED,
            (Refusal::RetainNotSupported, true) => reason::RETAIN_NOT_SUPPORTED,
            (Refusal::WillTooLarge, false) => connack_v3::NOT_AUTHORIZED,
            (Refusal::WillTooLarge, true) => reason::PACKET_TOO_LARGE,
        }
    }
}

/// The outcome of checking a CONNECT's credentials.
enum Login {
    Refused,
    /// Let in without a password: anonymous where allowed, or by a client certificate.
    Admitted,
    /// The password matched this password file entry (kept to re-check after a reload).
    Password(Rc<PasswordHash>),
    /// Dynamic security knows the username, and the password (and any client id bound to
    /// it) matched.
    Dynsec,
}

impl Broker {
    /// CONNECT with a protocol level midge does not speak: CONNACK 0x01 (3.x numbering, since
    /// that is what such a client can be expected to read, v311:[MQTT-3.1.2-2]), then close.
    pub(super) fn refuse_unsupported_protocol(&mut self, id: ConnId, level: u8, now: Instant) {
        let peer = self
            .conn(id)
            .map(|c| c.peer.to_string())
            .unwrap_or_default();
        log::info!(target: "notice", "Client {peer} rejected: unsupported protocol version {level}.");
        self.send(
            id,
            &Packet::Connack(Connack {
                session_present: false,
                code: connack_v3::UNACCEPTABLE_PROTOCOL_VERSION,
                properties: Properties::default(),
            }),
        );
        self.close(id, CloseReason::Refused, now);
    }

    fn refuse(&mut self, id: ConnId, c: &Connect, why: Refusal, now: Instant) {
        let code = why.code(c.version);
        let name = if c.client_id.is_empty() {
            "<unknown>"
        } else {
            &c.client_id
        };
        log::debug!("Sending CONNACK to {name} (0, {code})");
        if why == Refusal::NotAuthorized {
            // Mosquitto 2.0.20's wording, which log scrapers (fail2ban filters) look for.
            log::info!(target: "notice", "Client {name} disconnected, not authorised.");
        } else {
            let peer = self
                .conn(id)
                .map(|c| c.peer.to_string())
                .unwrap_or_default();
            let what = match why {
                Refusal::IdentifierRejected => "identifier rejected",
                Refusal::BadAuthMethod => "unsupported authentication method",
                Refusal::QosNotSupported => "will QoS above max_qos",
                Refusal::RetainNotSupported => "retained will but retain_available is false",
                Refusal::WillTooLarge => "will payload larger than message_size_limit",
                Refusal::NotAuthorized => "not authorised",
            };
            log::info!(
                target: "notice",
                "Client {name} from {peer} refused: {what} (CONNACK {code})."
            );
        }
        let connack = Connack {
            session_present: false,
            code,
            properties: Properties::default(),
        };
        if let Some(connack) = self.connack_within_limit(id, c, connack) {
            self.send(id, &Packet::Connack(connack));
        }
        self.close(id, CloseReason::Refused, now);
    }

    /// `connack` as it may be sent within the client's Maximum Packet Size: without Reason
    /// String and User Properties if they make it too large (v5:[MQTT-3.2.2-19],
    /// [MQTT-3.2.2-20]); `None` (logged) when it is too large even then and must not be sent
    /// at all (v5:[MQTT-3.1.2-24]): the connection is then closed without CONNACK, as
    /// Mosquitto does.
    pub(super) fn connack_within_limit(
        &self,
        id: ConnId,
        c: &Connect,
        mut connack: Connack,
    ) -> Option<Connack> {
        let limit = match c.properties.maximum_packet_size {
            Some(max) if c.version.is_v5() => max as usize,
            _ => usize::MAX,
        };
        let size = |a: &Connack| codec::encode::packet_len(2 + a.properties.wire_len());
        if size(&connack) > limit {
            connack.properties.reason_string = None;
            connack.properties.user_properties.clear();
        }
        if size(&connack) > limit {
            let peer = self
                .conn(id)
                .map(|c| c.peer.to_string())
                .unwrap_or_default();
            log::info!(
                target: "notice",
                "Client {} from {peer}: CONNACK ({} bytes) exceeds its Maximum Packet Size \
                 ({limit}); closing without it.",
                c.client_id,
                size(&connack)
            );
            return None;
        }
        Some(connack)
    }

    /// Whether a CONNECT's credentials let it in on its listener.
    fn authenticate(&self, id: ConnId, c: &Connect) -> Login {
        let listener = self.conn(id).map_or(0, |c| c.listener);
        let password = c.password.as_deref();
        self.login(listener, c.username.as_deref(), password, &c.client_id)
    }

    /// HTTP Basic credentials for a built-in page on connection `id` (`/metrics`): true when
    /// they log in as a CONNECT with them would, by password (the page asked for credentials:
    /// `allow_anonymous` does not open it).
    pub fn http_login(&self, id: ConnId, username: &str, password: &[u8]) -> bool {
        let Some(conn) = self.conn(id) else {
            return false;
        };
        // No client id over HTTP: a dynamic security client bound to one is refused here.
        let admitted = matches!(
            self.login(conn.listener, Some(username), Some(password), ""),
            Login::Password(_) | Login::Dynsec
        );
        if !admitted {
            log::info!(target: "notice", "HTTP client {} refused: not authorised.", conn.peer);
        }
        admitted
    }

    /// Mosquitto 2.0's rules: without a username a client needs `allow_anonymous`; with one,
    /// the password file (if any) must match; with neither a password file nor
    /// `allow_anonymous`, nobody gets in.
    ///
    /// With dynamic security, Mosquitto 2.0's order (security.c `mosquitto_unpwd_check`): the
    /// plugin first, which admits or refuses a username it knows and defers otherwise (no
    /// username or no password too); then the password file, for a client with a username;
    /// when every one deferred, only a client without a username gets in, and only with
    /// `allow_anonymous`. So a username neither knows is refused even with `allow_anonymous`.
    fn login(
        &self,
        listener: u16,
        username: Option<&str>,
        password: Option<&[u8]>,
        client_id: &str,
    ) -> Login {
        let security = self.settings.security_for(listener);
        let passwords = security.passwords.as_ref();
        let allow_anonymous = self.settings.allow_anonymous_for(listener);
        if let Some(dynsec) = &security.dynsec {
            let answer = dynsec.try_borrow().map_or(DynAuth::Denied, |d| {
                d.state.authenticate(username, password, client_id)
            });
            return match (answer, username, passwords) {
                (DynAuth::Allowed, _, _) => Login::Dynsec,
                (DynAuth::Denied, _, _) => Login::Refused,
                (DynAuth::Defer, Some(user), Some(file)) => {
                    match file.verify(user, password.unwrap_or_default()) {
                        Some(entry) => Login::Password(entry),
                        None => Login::Refused,
                    }
                }
                (DynAuth::Defer, None, _) if allow_anonymous => Login::Admitted,
                (DynAuth::Defer, _, _) => Login::Refused,
            };
        }
        match (username, passwords) {
            (Some(user), Some(file)) => match file.verify(user, password.unwrap_or_default()) {
                Some(entry) => Login::Password(entry),
                None => Login::Refused,
            },
            (_, _) if allow_anonymous => Login::Admitted,
            (_, _) => Login::Refused,
        }
    }

    /// After a reload (Mosquitto's `mosquitto_security_apply_default`): disconnects every
    /// connected client whose login the new settings no longer admit. Returns how many.
    ///
    /// Mosquitto keeps each client's password and verifies it again; midge keeps only the
    /// password file entry it was verified against, so a client whose entry changed at all
    /// (a new password, or the same one hashed again) is disconnected and must log in anew.
    /// Clients that logged in with a TLS certificate keep it (it cannot change on a live
    /// connection), and the broker's own bridge connections are not clients to re-check.
    pub(super) fn recheck_logins(&mut self, now: Instant) -> usize {
        self.revoke_where(
            CloseReason::Revoked,
            |broker, conn, session| {
                conn.cert_identity().is_none() && !broker.still_admitted(conn.listener, session)
            },
            now,
        )
    }

    /// Disconnects every connected client (the broker's own bridge links aside) that `revoke`
    /// picks, without its will, as Mosquitto does when a client's rights change under it:
    /// after a reload ([`CloseReason::Revoked`]: no DISCONNECT), and when dynamic security
    /// kicks it ([`CloseReason::Kicked`]: an MQTT 5 client is told Administrative action, as
    /// Mosquitto's kick tells it). Returns how many.
    pub(super) fn revoke_where(
        &mut self,
        reason: CloseReason,
        revoke: impl Fn(&Broker, &Conn, &Session) -> bool,
        now: Instant,
    ) -> usize {
        let revoked: Vec<ConnId> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(id, conn)| {
                let conn = conn.as_ref()?;
                let ConnState::Active(sid) = conn.state else {
                    return None;
                };
                if conn.bridge().is_some() {
                    return None;
                }
                revoke(self, conn, self.session(sid)?).then_some(id)
            })
            .collect();
        for &id in &revoked {
            if reason == CloseReason::Kicked {
                self.send_disconnect(id, codec::reason::ADMINISTRATIVE_ACTION);
            }
            self.close(id, reason.clone(), now);
        }
        revoked.len()
    }

    /// [`Broker::authenticate`]'s rules applied to a client already connected, with what it
    /// logged in with standing for its password. A client dynamic security admitted stays:
    /// dynamic security disconnects its own clients when it changes.
    fn still_admitted(&self, listener: u16, s: &Session) -> bool {
        let security = self.settings.security_for(listener);
        match (s.username(), s.login(), &security.passwords) {
            (_, Some(Credential::Dynsec), _) => security.dynsec.is_some(),
            (Some(user), login, Some(file)) => {
                matches!(login, Some(Credential::File(entry)) if file.still_valid(user, entry))
            }
            (Some(_), _, None) if security.dynsec.is_some() => false,
            _ => self.settings.allow_anonymous_for(listener),
        }
    }

    fn auto_client_id(&mut self, listener: u16) -> String {
        let a = self.random();
        let b = self.random();
        let hex = format!("{a:016X}{b:016X}");
        format!(
            "{}{}-{}-{}-{}-{}",
            self.settings.auto_id_prefix_for(listener),
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }

    pub(super) fn handle_connect(&mut self, id: ConnId, mut c: Connect, now: Instant) {
        if let Some(conn) = self.conn_mut(id) {
            conn.version = c.version;
        }
        let listener = self.conn(id).map_or(0, |c| c.listener);

        // Client identifier rules.
        let mut assigned = false;
        match c.version {
            // MQTT 3.1 allows 1 to 23 characters.
            ProtocolVersion::V31 if c.client_id.is_empty() || c.client_id.chars().count() > 23 => {
                return self.refuse(id, &c, Refusal::IdentifierRejected, now);
            }
            ProtocolVersion::V311 | ProtocolVersion::V5 if c.client_id.is_empty() => {
                // v311:[MQTT-3.1.3-7], [MQTT-3.1.3-8]: a zero-length id needs Clean Session 1.
                if !self.settings.allow_zero_length_clientid_for(listener)
                    || (c.version == ProtocolVersion::V311 && !c.clean_start)
                {
                    return self.refuse(id, &c, Refusal::IdentifierRejected, now);
                }
                c.client_id = self.auto_client_id(listener);
                assigned = true;
            }
            _ => {}
        }
        // `clientid_prefixes`, checked on the id sent or generated, as Mosquitto.
        if let Some(prefix) = &self.settings.clientid_prefixes {
            if !c.client_id.starts_with(prefix.as_str()) {
                return self.refuse(id, &c, Refusal::NotAuthorized, now);
            }
        }
        let options = self.settings.listener(listener);

        // A will that could never be published (Mosquitto checks it as it reads the will).
        let size_limit = self.settings.message_size_limit;
        if c.will
            .as_ref()
            .is_some_and(|w| size_limit != 0 && w.payload.len() > size_limit)
        {
            return self.refuse(id, &c, Refusal::WillTooLarge, now);
        }

        // Keepalive limits, as Mosquitto 2.0.20 documents them: 3.x clients asking more than
        // max_keepalive are refused; 5.0 clients are told the server's value. Keepalive 0
        // ("never") counts as more than a max_keepalive the user lowered, but the default
        // (65535) accepts it, as Mosquitto 2.0.11 does and as keepalive-0 clients expect.
        let max_ka = self.settings.max_keepalive;
        let mut server_keep_alive = None;
        let zero_too_long = c.keep_alive == 0 && max_ka != 0 && max_ka < u16::MAX;
        if max_ka != 0 && (c.keep_alive > max_ka || zero_too_long) {
            if c.version.is_v5() {
                c.keep_alive = max_ka;
                server_keep_alive = Some(max_ka);
            } else {
                return self.refuse(id, &c, Refusal::IdentifierRejected, now);
            }
        }

        if c.properties.authentication_method.is_some() {
            // v5 §4.12: midge offers no enhanced authentication method.
            return self.refuse(id, &c, Refusal::BadAuthMethod, now);
        }
        // A TLS client certificate, where the listener uses it, replaces username and password.
        let login = match self.apply_certificate_identity(id, &mut c) {
            Some(true) => Login::Admitted,
            Some(false) => Login::Refused,
            None => self.authenticate(id, &c),
        };
        let login = match login {
            Login::Refused => return self.refuse(id, &c, Refusal::NotAuthorized, now),
            Login::Admitted => None,
            Login::Password(entry) => Some(Credential::File(entry)),
            Login::Dynsec => Some(Credential::Dynsec),
        };
        if options.use_username_as_clientid {
            // Mosquitto refuses a client with no username to stand for its id.
            match &c.username {
                Some(user) => c.client_id = user.clone(),
                None => return self.refuse(id, &c, Refusal::NotAuthorized, now),
            }
        }
        if let (Some(w), Some(mount_point)) = (&mut c.will, &options.mount_point) {
            w.topic = super::mount::mount(mount_point, &w.topic);
        }
        if let Some(w) = &c.will {
            // v5:[MQTT-3.2.2-12], [MQTT-3.2.2-13]
            if w.retain && !self.settings.retain_available {
                return self.refuse(id, &c, Refusal::RetainNotSupported, now);
            }
            if w.qos > options.max_qos {
                return self.refuse(id, &c, Refusal::QosNotSupported, now);
            }
            // A will the client could not publish itself is refused at CONNECT, as Mosquitto.
            let security = self.settings.security_for(listener);
            let user = c.username.as_deref();
            let access = DynAccess::PublishSend;
            let allowed =
                match super::dynsec::verdict(security, user, &c.client_id, access, &w.topic) {
                    Some(allowed) => allowed,
                    None => security
                        .acl
                        .as_ref()
                        .is_none_or(|acl| acl.can_publish(user, &c.client_id, &w.topic)),
                };
            if !allowed {
                return self.refuse(id, &c, Refusal::NotAuthorized, now);
            }
        }

        let client_id: Box<str> = c.client_id.as_str().into();
        let connack = Connack {
            session_present: false,
            code: 0,
            properties: if c.version.is_v5() {
                self.connack_properties(&client_id, assigned, server_keep_alive, &options)
            } else {
                Properties::default()
            },
        };
        // A client that cannot receive its CONNACK goes before it takes anything over.
        let Some(mut connack) = self.connack_within_limit(id, &c, connack) else {
            return self.close(id, CloseReason::Refused, now);
        };

        // Take over: a client id already connected loses its old connection
        // (v311:[MQTT-3.1.4-2], v5:[MQTT-3.1.4-3]).
        if let Some(old_conn) = self
            .session_of(&client_id)
            .and_then(|sid| self.session(sid))
            .and_then(|s| s.conn())
        {
            self.send_disconnect(old_conn, reason::SESSION_TAKEN_OVER);
            self.close(old_conn, CloseReason::TakenOver, now);
        }

        let expiry = if c.version.is_v5() {
            match c.properties.session_expiry_interval.unwrap_or(0) {
                0 => Expiry::OnDisconnect,
                u32::MAX => Expiry::Never,
                n => Expiry::After(n),
            }
        } else if c.clean_start {
            Expiry::OnDisconnect
        } else {
            Expiry::Never
        };

        // Clean start discards any previous session (v311:[MQTT-3.1.2-6]).
        let existing = self.session_of(&client_id);
        if let (Some(sid), true) = (existing, c.clean_start) {
            self.remove_session(sid);
        }
        let (sid, session_present) = match self.session_of(&client_id) {
            Some(sid) => (sid, true),
            None => (
                self.create_session(client_id.clone(), c.version, expiry, false),
                false,
            ),
        };
        if let Some(s) = self.session_mut(sid) {
            s.set_conn(Some(id));
            s.version = c.version;
            s.expiry = expiry;
            s.set_expires_at(None);
            s.set_username(c.username.as_deref(), login);
            s.listener = listener;
            // A delayed will is cancelled when its session resumes in time (v5 §3.1.3.2.2).
            let had_will = s.take_pending_will().is_some();
            if had_will {
                self.persist_will(sid);
            }
        }
        self.persist_session(sid);

        let connected_at = self.uptime_secs(now);
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        conn.state = ConnState::Active(sid);
        conn.connected_at = connected_at;

        conn.keep_alive = c.keep_alive;
        conn.remote_bridge = c.bridge;
        conn.max_qos = options.max_qos;
        if let Some(mount_point) = &options.mount_point {
            conn.extra_mut().mount_point = Some(mount_point.clone());
        }
        if let Some(will) = c.will.take() {
            conn.extra_mut().will = Some(will);
        }
        if let Some(rm) = c.properties.receive_maximum {
            conn.receive_maximum = rm;
        }
        if let Some(mps) = c.properties.maximum_packet_size {
            conn.extra_mut().max_packet_size = mps;
        }
        let serial = conn.serial;
        let peer = conn.peer;
        // The connect-timeout timer (due at most connect_timeout from now) re-arms itself to
        // the keepalive deadline; a second heap entry per connection is only needed when the
        // keepalive runs out before it (saves memory with thousands of idle clients).
        if let Some(deadline) = conn.keepalive_deadline() {
            if deadline < now + self.settings.connect_timeout {
                self.timers.push(deadline, Timer::Conn(id, serial));
            }
        }
        self.stats.clients_connected += 1;
        self.stats.clients_maximum = self.stats.clients_maximum.max(self.stats.clients_connected);

        self.now = now;
        if self.settings.connection_messages {
            let p = match c.version {
                ProtocolVersion::V31 => 1,
                ProtocolVersion::V311 => 2,
                ProtocolVersion::V5 => 5,
            };
            match &c.username {
                Some(u) => log::info!(
                    target: "notice",
                    "New client connected from {} as {} (p{}, c{}, k{}, u'{}').",
                    peer, client_id, p, u8::from(c.clean_start), c.keep_alive, u
                ),
                None => log::info!(
                    target: "notice",
                    "New client connected from {} as {} (p{}, c{}, k{}).",
                    peer, client_id, p, u8::from(c.clean_start), c.keep_alive
                ),
            }
            match self.conn(id).and_then(|c| c.will()) {
                Some(w) => {
                    log::debug!(
                        "Will message specified ({} bytes) (r{}, q{}).",
                        w.payload.len(),
                        u8::from(w.retain),
                        w.qos as u8
                    );
                    log::debug!("\t{}", w.topic);
                }
                None => log::debug!("No will message specified."),
            }
        }

        if c.version.is_v5() {
            let alias_max = options.max_topic_alias;
            let client_alias_max = c.properties.topic_alias_maximum.unwrap_or(0);
            if alias_max > 0 || client_alias_max > 0 {
                if let Some(conn) = self.conn_mut(id) {
                    conn.extra_mut().aliases = Some(super::conn::Aliases {
                        inbound_max: alias_max,
                        outbound_max: client_alias_max,
                        ..Default::default()
                    });
                }
            }
        }
        // MQTT 3.1 has no session present flag: the byte is reserved.
        connack.session_present = session_present && c.version != ProtocolVersion::V31;
        log::debug!(
            "Sending CONNACK to {} ({}, 0)",
            client_id,
            u8::from(connack.session_present)
        );
        self.send(id, &Packet::Connack(connack));
        if session_present {
            self.resend_inflight(sid);
        }
        self.pump(sid);
    }

    /// The properties of a successful v5 CONNACK: the limits this server, and the client's
    /// listener (`options`), set (v5 §3.2.2.3).
    fn connack_properties(
        &self,
        client_id: &str,
        assigned: bool,
        server_keep_alive: Option<u16>,
        options: &ListenerOptions,
    ) -> Properties {
        let mut properties = Properties::default();
        let alias_max = options.max_topic_alias;
        if alias_max > 0 {
            properties.topic_alias_maximum = Some(alias_max);
        }
        let receive_maximum = self.settings.receive_maximum();
        if receive_maximum < 65_535 {
            properties.receive_maximum = Some(receive_maximum as u16);
        }
        if assigned {
            properties.assigned_client_identifier = Some(client_id.to_string());
        }
        properties.server_keep_alive = server_keep_alive;
        if self.settings.max_packet_size != 0 {
            properties.maximum_packet_size = Some(self.settings.max_packet_size as u32);
        }
        if !self.settings.retain_available {
            properties.retain_available = Some(0);
        }
        if options.max_qos < codec::QoS::ExactlyOnce {
            properties.maximum_qos = Some(options.max_qos as u8);
        }
        properties
    }

    /// Resends every unacknowledged PUBLISH (with DUP) and PUBREL of a resumed session, in
    /// their original order and with their original ids (v311:[MQTT-4.4.0-1]).
    pub(super) fn resend_inflight(&mut self, sid: SessionId) {
        let now = self.now;
        let Some(mut out) = self.outlet(sid) else {
            return;
        };
        let inflight: Vec<Inflight> = out.session.inflight.drain_all().collect();
        for m in inflight {
            match out.send_delivery(Pending::Again(m), now) {
                // One that cannot be sent again is dropped and forgotten; the rest stay in
                // flight, in order.
                Sent::InFlight | Sent::Dropped | Sent::Written | Sent::Queued => {}
            }
        }
    }
}
