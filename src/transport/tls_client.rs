//! The client side of TLS, for bridges: midge connecting to a remote broker over TLS.
//!
//! A bridge with `bridge_cafile` or `bridge_capath` gets a [`TlsConnector`] when the server
//! starts (every file is read then, so a missing one stops start-up with its name). Each
//! connection attempt asks it for a [`TlsSession`] bound to the host written in `address`: the
//! remote's certificate must chain to the configured CAs and name that host (DNS name or IP
//! address), unless `bridge_insecure` waives the name check, never the chain. The session is
//! driven by the loop like a listener's, without blocking: the broker's CONNECT is taken as
//! plaintext at once and rustls sends it when the handshake completes.
//!
//! What goes wrong here is told from the bridge's point of view ("the remote broker's
//! certificate is not valid for hub.lan"), so the log line alone says what to fix.

use super::tls::{load_certs, load_roots, TlsSession};
use crate::config::bridge::BridgeTls;
use crate::config::TlsVersion;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct,
    RootCertStore, SignatureScheme,
};
use std::sync::Arc;

/// A client certificate chain and its key.
type ClientCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// TLS settings of one bridge, ready to start sessions.
#[derive(Clone)]
pub(crate) struct TlsConnector {
    config: Arc<ClientConfig>,
}

impl TlsConnector {
    /// Reads the CA, certificate and key files of a bridge and builds the rustls client
    /// configuration; `Ok(None)` when the bridge does not use TLS. The error names the file or
    /// option at fault.
    pub(crate) fn load(opts: &BridgeTls) -> Result<Option<TlsConnector>, String> {
        if !opts.enabled() {
            return match tls_only_option(opts) {
                // Silently connecting in plain text would be a surprise to someone who set a
                // client certificate: refuse, as for any security option midge cannot honour.
                Some(option) => Err(format!(
                    "{option} is set but neither bridge_cafile nor bridge_capath is: TLS is \
                     turned on by a CA to check the remote broker against"
                )),
                None => Ok(None),
            };
        }
        let roots = load_roots(opts.cafile.as_deref(), opts.capath.as_deref())?;
        let client_cert = match (&opts.certfile, &opts.keyfile) {
            (Some(certfile), Some(keyfile)) => {
                let certs = load_certs(certfile).map_err(|e| {
                    format!(
                        "Unable to load bridge_certfile \"{}\": {e}",
                        certfile.display()
                    )
                })?;
                let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| {
                    format!(
                        "Unable to load bridge_keyfile \"{}\": {e}",
                        keyfile.display()
                    )
                })?;
                Some((certs, key))
            }
            (None, None) => None,
            _ => return Err("bridge_certfile and bridge_keyfile must be set together".into()),
        };
        Self::build(roots, client_cert, opts).map(Some)
    }

    /// The rustls client configuration from what the files held.
    fn build(
        roots: RootCertStore,
        client_cert: Option<ClientCert>,
        opts: &BridgeTls,
    ) -> Result<TlsConnector, String> {
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match opts.version {
            Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
            Some(TlsVersion::Tls12) | None => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("bridge_tls_version leaves nothing usable: {e}"))?;
        let builder = if opts.insecure {
            let verifier = AnyName::new(roots, provider)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        } else {
            builder.with_root_certificates(roots)
        };
        let mut config = match client_cert {
            Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(|e| {
                format!("bridge_certfile and bridge_keyfile do not go together: {e}")
            })?,
            None => builder.with_no_client_auth(),
        };
        if let Some(alpn) = &opts.alpn {
            config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
        }
        Ok(TlsConnector {
            config: Arc::new(config),
        })
    }

    /// A session for one connection attempt to `host` (as written in `address`).
    pub(crate) fn session(&self, host: &str) -> Result<TlsSession, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| format!("\"{host}\" is not a host name TLS can check"))?;
        let conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|e| format!("Unable to start TLS: {e}"))?;
        Ok(TlsSession::client(conn))
    }
}

/// A TLS option set on a bridge that does not use TLS, if any.
fn tls_only_option(opts: &BridgeTls) -> Option<&'static str> {
    if opts.certfile.is_some() {
        Some("bridge_certfile")
    } else if opts.keyfile.is_some() {
        Some("bridge_keyfile")
    } else if opts.insecure {
        Some("bridge_insecure")
    } else if opts.version.is_some() {
        Some("bridge_tls_version")
    } else if opts.alpn.is_some() {
        Some("bridge_alpn")
    } else {
        None
    }
}

/// `bridge_insecure`: webpki's verifier, except that a certificate for another name passes.
/// The chain is still checked first (webpki checks the name only once the chain is good), so
/// a certificate from another CA is still refused.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl AnyName {
    fn new(
        roots: Arc<rustls::RootCertStore>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map(AnyName)
            .map_err(|e| format!("Unable to use the CA certificates: {e}"))
    }
}

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A rustls error on a bridge connection, in words a user can act on.
pub(super) fn describe(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the remote broker's certificate is not signed by a CA in bridge_cafile or \
             bridge_capath"
                .into()
        }
        E::InvalidCertificate(CertificateError::NotValidForNameContext { presented, .. }) => {
            format!(
                "the remote broker's certificate is not valid for the host in address (it names \
                 {}); use a name the certificate holds, or bridge_insecure true for tests",
                if presented.is_empty() {
                    "nothing".to_string()
                } else {
                    let names: Vec<&str> = presented.iter().map(|n| plain_name(n)).collect();
                    names.join(", ")
                }
            )
        }
        E::InvalidCertificate(CertificateError::NotValidForName) => {
            "the remote broker's certificate is not valid for the host in address; use a name \
             the certificate holds, or bridge_insecure true for tests"
                .into()
        }
        E::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the remote broker's certificate has expired".into(),
        E::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "the remote broker's certificate is not valid yet (check the clocks)".into(),
        E::InvalidCertificate(CertificateError::Revoked) => {
            "the remote broker's certificate is revoked".into()
        }
        E::InvalidCertificate(other) => {
            format!("the remote broker's certificate was refused ({other:?})")
        }
        E::AlertReceived(
            alert @ (AlertDescription::CertificateRequired
            | AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied),
        ) => format!(
            "the remote broker refused our client certificate (alert {alert:?}); check \
             bridge_certfile and bridge_keyfile, and the CA the remote trusts"
        ),
        E::AlertReceived(AlertDescription::NoApplicationProtocol) => {
            "the remote broker does not accept the protocol in bridge_alpn".into()
        }
        E::AlertReceived(
            alert @ (AlertDescription::ProtocolVersion | AlertDescription::HandshakeFailure),
        ) => format!(
            "the remote broker and this bridge have no TLS version or cipher suite in common \
             (alert {alert:?}; see bridge_tls_version)"
        ),
        E::AlertReceived(alert) => {
            format!("the remote broker ended the handshake (alert {alert:?})")
        }
        E::PeerIncompatible(why) => format!(
            "the remote broker and this bridge have no TLS version or cipher suite in common \
             ({why:?}; see bridge_tls_version)"
        ),
        E::InvalidMessage(why) => format!(
            "the remote broker does not answer in TLS ({why:?}); is that port a TLS listener?"
        ),
        other => other.to_string(),
    }
}

/// A name webpki presents as `DnsName("hub.lan")` or `IpAddress(10.0.0.2)`, as written in
/// a config file.
fn plain_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(presented)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tls::{IdentityMode, TlsListener};
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    use rustls::ServerConfig;

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn roots(ca: &Ca) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        roots
    }

    /// A server session with a certificate from `ca` for `names`.
    fn remote(
        ca: &Ca,
        names: &[&str],
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&str],
    ) -> TlsSession {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca.cert, &ca.key)
            .unwrap();
        let key = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        let listener = TlsListener {
            config: Arc::new(config),
            identity: IdentityMode::Connect,
        };
        listener.session().unwrap()
    }

    const ALL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
        &[&rustls::version::TLS13, &rustls::version::TLS12];

    /// Moves records between the two sessions until both are quiet; returns the plaintext
    /// the server received, or the client's error as the bridge would log it.
    fn drive(client: &mut TlsSession, server: &mut TlsSession) -> Result<Vec<u8>, String> {
        let mut at_server = Vec::new();
        for _ in 0..8 {
            let mut wire = Vec::new();
            client.write_to(&mut wire).unwrap();
            let refused = server.received(&wire, &mut at_server).err();
            // The server's answer, or its alert when it refused: what the bridge sees.
            let mut wire = Vec::new();
            server.write_to(&mut wire).unwrap();
            client
                .received(&wire, &mut Vec::new())
                .map_err(|e| e.to_string())?;
            if let Some(e) = refused {
                return Err(format!("server side: {e}"));
            }
        }
        Ok(at_server)
    }

    fn connector(ca: &Ca, opts: BridgeTls) -> TlsConnector {
        TlsConnector::build(roots(ca), None, &opts).unwrap()
    }

    #[test]
    fn connect_written_before_the_handshake_is_sent_after_it() {
        let ca = ca("test CA");
        let mut server = remote(&ca, &["hub.lan", "127.0.0.1"], ALL_VERSIONS, &[]);
        let mut client = connector(&ca, BridgeTls::default())
            .session("hub.lan")
            .unwrap();
        assert!(client.is_handshaking());
        // The broker writes CONNECT as soon as TCP is up; TLS holds it until it can send it.
        let connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
        assert_eq!(client.send(connect), connect.len());
        assert_eq!(drive(&mut client, &mut server).unwrap(), connect);
        assert!(!client.is_handshaking());
        // IP addresses in `address` are checked against the certificate's IP names.
        let mut client = connector(&ca, BridgeTls::default())
            .session("127.0.0.1")
            .unwrap();
        let mut server2 = remote(&ca, &["127.0.0.1"], ALL_VERSIONS, &[]);
        client.send(b"x");
        assert_eq!(drive(&mut client, &mut server2).unwrap(), b"x");
    }

    #[test]
    fn a_certificate_for_another_name_is_refused_in_words() {
        let ca = ca("test CA");
        let mut server = remote(&ca, &["wrong.example", "10.0.0.2"], ALL_VERSIONS, &[]);
        let mut client = connector(&ca, BridgeTls::default())
            .session("hub.lan")
            .unwrap();
        let e = drive(&mut client, &mut server).unwrap_err();
        assert_eq!(
            e,
            "TLS handshake failed: the remote broker's certificate is not valid for the host in \
             address (it names wrong.example, 10.0.0.2); use a name the certificate holds, or \
             bridge_insecure true for tests"
        );
    }

    #[test]
    fn bridge_insecure_skips_the_name_check_but_not_the_chain() {
        let ours = ca("our CA");
        let insecure = BridgeTls {
            insecure: true,
            ..BridgeTls::default()
        };
        let mut server_ok = remote(&ours, &["wrong.example"], ALL_VERSIONS, &[]);
        let mut client = connector(&ours, insecure.clone())
            .session("hub.lan")
            .unwrap();
        client.send(b"hello");
        assert_eq!(drive(&mut client, &mut server_ok).unwrap(), b"hello");

        let theirs = ca("their CA");
        let mut server_other = remote(&theirs, &["hub.lan"], ALL_VERSIONS, &[]);
        let mut client = connector(&ours, insecure).session("hub.lan").unwrap();
        let e = drive(&mut client, &mut server_other).unwrap_err();
        assert!(e.contains("not signed by a CA in bridge_cafile"), "{e}");
    }

    #[test]
    fn tls13_minimum_refuses_a_tls12_only_remote() {
        let ca = ca("test CA");
        let tls12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
        let opts = BridgeTls {
            version: Some(TlsVersion::Tls13),
            ..BridgeTls::default()
        };
        let mut server12 = remote(&ca, &["hub.lan"], tls12, &[]);
        let mut client = connector(&ca, opts.clone()).session("hub.lan").unwrap();
        let e = drive(&mut client, &mut server12).unwrap_err();
        assert!(e.contains("no TLS version"), "{e}");
        // With the default (1.2 minimum) the same remote is fine.
        let mut server12 = remote(&ca, &["hub.lan"], tls12, &[]);
        let mut client = connector(&ca, BridgeTls::default())
            .session("hub.lan")
            .unwrap();
        client.send(b"ok");
        assert_eq!(drive(&mut client, &mut server12).unwrap(), b"ok");
    }

    #[test]
    fn alpn_is_offered_and_a_refusal_is_named() {
        let ca = ca("test CA");
        let with = |alpn: &str| BridgeTls {
            alpn: Some(alpn.into()),
            ..BridgeTls::default()
        };
        let mut server_mqtt = remote(&ca, &["hub.lan"], ALL_VERSIONS, &["mqtt"]);
        let mut client = connector(&ca, with("mqtt")).session("hub.lan").unwrap();
        client.send(b"ok");
        assert_eq!(drive(&mut client, &mut server_mqtt).unwrap(), b"ok");

        let mut server_mqtt = remote(&ca, &["hub.lan"], ALL_VERSIONS, &["mqtt"]);
        let mut client = connector(&ca, with("x-other")).session("hub.lan").unwrap();
        let e = drive(&mut client, &mut server_mqtt).unwrap_err();
        assert!(
            e.contains("server side:") || e.contains("bridge_alpn"),
            "{e}"
        );
    }

    #[test]
    fn tls_options_without_a_ca_are_refused() {
        let opts = BridgeTls {
            insecure: true,
            ..BridgeTls::default()
        };
        let e = TlsConnector::load(&opts).err().unwrap();
        assert!(e.starts_with("bridge_insecure is set"), "{e}");
        assert!(TlsConnector::load(&BridgeTls::default()).unwrap().is_none());
        let missing = BridgeTls {
            cafile: Some("/nonexistent/midge/ca.pem".into()),
            ..BridgeTls::default()
        };
        let e = TlsConnector::load(&missing).err().unwrap();
        assert!(e.contains("/nonexistent/midge/ca.pem"), "{e}");
    }

    #[test]
    fn a_host_tls_cannot_check_is_an_error_not_a_panic() {
        let ca = ca("test CA");
        let c = connector(&ca, BridgeTls::default());
        assert!(c.session("not a host!").is_err());
        assert!(c.session("::1").is_ok());
    }
}
