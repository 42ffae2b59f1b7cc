//! Client identities that come from the transport rather than from CONNECT.
//!
//! On a TLS listener with `use_identity_as_username` or `use_subject_as_username`, Mosquitto
//! takes the username from the client certificate (its CN, or its whole subject) and ignores
//! the username and password in CONNECT: the certificate, already verified against the
//! listener's CA during the TLS handshake, is the authentication. The server loop learns the
//! certificate when the handshake completes and hands it over with
//! [`Broker::handle_certificate_identity`], before any CONNECT byte reaches the broker; CONNECT
//! handling then asks [`Broker::apply_certificate_identity`].

use super::{Broker, ConnId};
use crate::auth::CertIdentity;
use crate::codec::Connect;

impl Broker {
    /// Records the certificate identity of connection `id` (call before its first bytes).
    pub(crate) fn handle_certificate_identity(&mut self, id: ConnId, identity: CertIdentity) {
        if let Some(conn) = self.conn_mut(id) {
            conn.extra_mut().cert_identity = Some(identity);
        }
    }

    /// For CONNECT: when the connection has a certificate identity, it replaces the username
    /// and password in `c` and decides authentication (`Some(true)`: connect as that user;
    /// `Some(false)`: refuse). `None`: the listener does not use certificates as identities,
    /// and the usual password rules apply.
    pub(super) fn apply_certificate_identity(&self, id: ConnId, c: &mut Connect) -> Option<bool> {
        let identity = self.conn(id)?.cert_identity()?;
        c.password = None;
        match identity {
            CertIdentity::Username(name) => {
                c.username = Some(name.to_string());
                Some(true)
            }
            CertIdentity::Missing => {
                c.username = None;
                Some(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Settings;
    use crate::codec::{Packet, Properties, ProtocolVersion};
    use std::net::SocketAddr;
    use std::time::Instant;

    /// CONNACK bytes the broker answers a 3.1.1 CONNECT with, when the connection's
    /// certificate identity is `identity` and CONNECT carries `user`/`password`.
    fn connack_for(identity: Option<CertIdentity>, user: Option<&str>) -> Vec<u8> {
        let now = Instant::now();
        let settings = Settings {
            allow_anonymous: false,
            ..Settings::default()
        };
        let mut broker = Broker::new(settings, now, 1);
        let peer: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let via = super::super::Via::Listener {
            index: 0,
            port: 8883,
        };
        broker.handle_connection_opened(0, peer, via, now);
        if let Some(identity) = identity {
            broker.handle_certificate_identity(0, identity);
        }
        let connect = Packet::Connect(Box::new(Connect {
            version: ProtocolVersion::V311,
            bridge: false,
            clean_start: true,
            keep_alive: 60,
            client_id: "dev1".into(),
            will: None,
            username: user.map(str::to_string),
            password: user.map(|_| b"wrong".to_vec()),
            properties: Properties::default(),
        }));
        broker.handle_bytes(0, &connect.to_bytes(ProtocolVersion::V311), now);
        broker
            .poll_transmit(0)
            .map(|o| o.clone())
            .unwrap_or_default()
    }

    #[test]
    fn certificate_username_authenticates_without_password() {
        let name = CertIdentity::Username("device-1".into());
        assert_eq!(connack_for(Some(name.clone()), None), [0x20, 2, 0, 0]);
        // A username and password in CONNECT are ignored, as in Mosquitto.
        assert_eq!(connack_for(Some(name), Some("mallory")), [0x20, 2, 0, 0]);
    }

    #[test]
    fn missing_certificate_is_refused_even_with_a_username() {
        assert_eq!(
            connack_for(Some(CertIdentity::Missing), Some("alice")),
            [0x20, 2, 0, 5]
        );
    }

    #[test]
    fn without_certificate_identity_the_usual_rules_apply() {
        // allow_anonymous false and no password file: nobody gets in.
        assert_eq!(connack_for(None, None), [0x20, 2, 0, 5]);
    }
}
