//! TLS with rustls, driven by the loop without blocking.
//!
//! A TLS listener holds a [`TlsListener`]: the rustls `ServerConfig` built from the listener's
//! options (certificate chain and key, CAs for client certificates and for completing the
//! chain, TLS versions, cipher suites) and how client certificates name users. Each accepted socket gets a [`TlsSession`]
//! wrapping a rustls `ServerConnection`, used sans-IO: bytes read from the socket go in with
//! [`TlsSession::received`] (`read_tls` + `process_new_packets`, then the plaintext is drained
//! for the layer above), plaintext to send goes in with [`TlsSession::send`] (the connection's
//! `writer`, bounded by rustls' buffer limit, which is the back-pressure towards the broker),
//! and [`TlsSession::write_to`] moves TLS records to the socket until it would block. Nothing
//! here waits: a handshake advances whenever bytes arrive.
//!
//! The same session type carries the client side of outgoing bridge connections: its rustls
//! `ClientConnection` is built by [`super::tls_client`], and the loop drives it exactly like a
//! server session (the remote's answer to our ClientHello arrives through `received`).
//!
//! Failures are described in words a user can act on ("the client sent plain MQTT to a TLS
//! port", "certificate not signed by the configured CA"), because "TLS error" alone sends
//! people to packet captures. A listener's configuration is rebuilt on SIGHUP; sessions already
//! open keep the configuration they started with.

use super::x509;
use crate::auth::CertIdentity;
use crate::config::{TlsOptions, TlsVersion};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    AlertDescription, CertificateError, CipherSuite, ClientConnection, Connection, RootCertStore,
    ServerConfig, ServerConnection, SupportedCipherSuite,
};
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::path::Path;
use std::sync::Arc;

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// The first byte of an MQTT CONNECT.
const MQTT_CONNECT: u8 = 0x10;

/// How a listener turns client certificates into usernames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentityMode {
    /// Usernames come from CONNECT.
    Connect,
    /// `use_identity_as_username`: the certificate's CN.
    CommonName,
    /// `use_subject_as_username`: the certificate's subject, RFC 2253 style.
    Subject,
}

/// A TLS listener's settings.
#[derive(Clone)]
pub(crate) struct TlsListener {
    /// The rustls configuration new connections use.
    pub(crate) config: Arc<ServerConfig>,
    /// How client certificates name users.
    pub(crate) identity: IdentityMode,
}

impl TlsListener {
    /// Reads the certificate, key and CA files named by `opts` and builds the rustls
    /// configuration. Returns warnings too (cipher names rustls cannot use). The error says
    /// which file or option is at fault.
    pub(crate) fn load(opts: &TlsOptions) -> Result<(TlsListener, Vec<String>), String> {
        let mut warnings = Vec::new();
        let (certfile, keyfile) = match (&opts.certfile, &opts.keyfile) {
            (Some(c), Some(k)) => (c, k),
            _ => return Err("both certfile and keyfile are needed for TLS".into()),
        };
        let certs = load_certs(certfile).map_err(|e| {
            format!(
                "Unable to load server certificate \"{}\": {e}",
                certfile.display()
            )
        })?;
        let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| {
            format!(
                "Unable to load server key file \"{}\": {e}",
                keyfile.display()
            )
        })?;
        let provider = Arc::new(provider_for(opts, &mut warnings));
        let versions: &[&rustls::SupportedProtocolVersion] = match opts.tls_version {
            Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
            Some(TlsVersion::Tls12) | None => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| {
                format!("the ciphers and tls_version options leave nothing usable: {e}")
            })?;
        let mut ca_certs = Vec::new();
        let builder = if opts.cafile.is_some() || opts.capath.is_some() {
            let (roots, certs) = load_cas(opts.cafile.as_deref(), opts.capath.as_deref())?;
            ca_certs = certs;
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if let Some(crlfile) = &opts.crlfile {
                verifier = verifier.with_crls(load_crls(crlfile)?);
            }
            if !opts.require_certificate {
                // Mosquitto: with a CA but without require_certificate, a client may present a
                // certificate (then it is checked) or none.
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier
                .build()
                .map_err(|e| format!("Unable to use the CA certificates: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(complete_chain(certs, &ca_certs), key)
            .map_err(|e| format!("certfile and keyfile do not go together: {e}"))?;
        let identity = if opts.use_identity_as_username {
            IdentityMode::CommonName
        } else if opts.use_subject_as_username {
            IdentityMode::Subject
        } else {
            IdentityMode::Connect
        };
        let listener = TlsListener {
            config: Arc::new(config),
            identity,
        };
        Ok((listener, warnings))
    }

    /// A TLS session for a newly accepted socket.
    pub(crate) fn session(&self) -> Result<TlsSession, rustls::Error> {
        Ok(TlsSession {
            conn: Connection::Server(ServerConnection::new(self.config.clone())?),
            identity: self.identity,
            phase: Phase::AwaitClientHello,
        })
    }
}

pub(super) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

/// The certificate chain a listener sends. A `certfile` holding more than one certificate is
/// the chain the operator chose, sent as it is. A `certfile` holding only the server's own
/// certificate gets its issuers appended from the CA certificates (`cafile`, `capath`), up to
/// a self-signed root, as OpenSSL builds the chain for Mosquitto: a client that trusts only
/// the root can then verify a certificate signed by an intermediate CA. Each issuer is the CA
/// whose subject is the name the certificate below gives as issuer and, when both carry key
/// identifiers, whose key is the one that certificate names (a renewed CA keeps its name).
fn complete_chain(
    mut chain: Vec<CertificateDer<'static>>,
    cas: &[CertificateDer<'static>],
) -> Vec<CertificateDer<'static>> {
    if chain.len() != 1 {
        return chain;
    }
    while let Some(last) = chain.last() {
        let Some((issuer, subject)) = x509::issuer_and_subject(last) else {
            break;
        };
        if issuer == subject {
            break;
        }
        let issuer_key = x509::authority_key_id(last);
        let next = cas.iter().find(|ca| {
            let named = x509::issuer_and_subject(ca).is_some_and(|(_, s)| s == issuer);
            let same_key = match (issuer_key, x509::subject_key_id(ca)) {
                (Some(wanted), Some(key)) => wanted == key,
                _ => true,
            };
            named && same_key && !chain.contains(ca)
        });
        match next {
            Some(ca) => chain.push(ca.clone()),
            None => break,
        }
    }
    chain
}

/// The CAs of `cafile` and of every PEM file in `capath`.
pub(super) fn load_roots(
    cafile: Option<&Path>,
    capath: Option<&Path>,
) -> Result<RootCertStore, String> {
    load_cas(cafile, capath).map(|(roots, _)| roots)
}

/// The CAs of `cafile` and of every PEM file in `capath`, as trust anchors and as the
/// certificates themselves.
fn load_cas(
    cafile: Option<&Path>,
    capath: Option<&Path>,
) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), String> {
    let mut roots = RootCertStore::empty();
    let mut all = Vec::new();
    if let Some(cafile) = cafile {
        let certs = load_certs(cafile).map_err(|e| {
            format!(
                "Unable to load CA certificates \"{}\": {e}",
                cafile.display()
            )
        })?;
        all.extend(certs.iter().cloned());
        let (_, bad) = roots.add_parsable_certificates(certs);
        if bad > 0 {
            return Err(format!(
                "Unable to load CA certificates \"{}\": {bad} of them are not valid CA certificates",
                cafile.display()
            ));
        }
    }
    if let Some(capath) = capath {
        let entries = std::fs::read_dir(capath)
            .map_err(|e| format!("Unable to read capath \"{}\": {e}", capath.display()))?;
        let mut files: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();
        for file in files.iter().filter(|f| f.is_file()) {
            // Like OpenSSL's hashed directories, files that are not PEM certificates are
            // skipped rather than fatal.
            if let Ok(certs) = load_certs(file) {
                all.extend(certs.iter().cloned());
                roots.add_parsable_certificates(certs);
            }
        }
    }
    if roots.is_empty() {
        return Err("no CA certificate found in cafile or capath".into());
    }
    Ok((roots, all))
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("Unable to load crlfile \"{}\": {e}", path.display()))
}

/// Cipher suites by their OpenSSL and IANA names. rustls offers only these (all AEAD with
/// forward secrecy), so any other name in `ciphers` cannot be honoured.
const SUITES: &[(&str, &str, CipherSuite)] = &[
    (
        "TLS_AES_256_GCM_SHA384",
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// The ring provider with the cipher suites `ciphers` (TLS 1.2) and `ciphers_tls1.3` allow.
fn provider_for(opts: &TlsOptions, warnings: &mut Vec<String>) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    let tls12 = opts
        .ciphers
        .as_deref()
        .and_then(|list| chosen_suites("ciphers", list, false, warnings));
    let tls13 = opts
        .ciphers_tls13
        .as_deref()
        .and_then(|list| chosen_suites("ciphers_tls1.3", list, true, warnings));
    provider.cipher_suites.retain(|s: &SupportedCipherSuite| {
        let chosen = if is_tls13(s.suite()) { &tls13 } else { &tls12 };
        chosen.as_ref().is_none_or(|c| c.contains(&s.suite()))
    });
    provider
}

fn is_tls13(suite: CipherSuite) -> bool {
    SUITES[..3].iter().any(|(_, _, s)| *s == suite)
}

/// The suites of one cipher list that rustls can use; `None` (keep the defaults) when it
/// names none. Names rustls cannot honour (`HIGH`, `!aNULL`, CBC suites, ...) are reported.
fn chosen_suites(
    option: &str,
    list: &str,
    tls13: bool,
    warnings: &mut Vec<String>,
) -> Option<Vec<CipherSuite>> {
    let mut chosen = Vec::new();
    let mut ignored = Vec::new();
    for name in list.split([':', ',', ' ']).filter(|n| !n.is_empty()) {
        match SUITES
            .iter()
            .find(|(openssl, iana, _)| name == *openssl || name == *iana)
        {
            Some((_, _, suite)) if is_tls13(*suite) == tls13 => chosen.push(*suite),
            _ => ignored.push(name),
        }
    }
    if !ignored.is_empty() {
        warnings.push(format!(
            "Warning: {option}: rustls cannot use {}; ignored (it offers only modern AEAD \
             suites).",
            ignored.join(", ")
        ));
    }
    if chosen.is_empty() {
        warnings.push(format!(
            "Warning: {option} names no suite rustls offers; using its default suites."
        ));
        return None;
    }
    Some(chosen)
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing received yet: the first byte tells whether the client speaks TLS at all.
    AwaitClientHello,
    Handshaking,
    Established,
}

/// What one [`TlsSession::received`] call learnt besides plaintext.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// The handshake completed in this call, on a listener that takes usernames from
    /// certificates: the identity to give the broker before any plaintext.
    pub(crate) identity: Option<CertIdentity>,
    /// The client sent close_notify.
    pub(crate) peer_closed: bool,
}

/// One connection's TLS state: a client of a TLS listener (server side), or an outgoing bridge
/// connection (client side).
pub(crate) struct TlsSession {
    conn: Connection,
    identity: IdentityMode,
    phase: Phase,
}

impl TlsSession {
    /// The client side of an outgoing connection; its ClientHello is ready to be written.
    pub(super) fn client(conn: ClientConnection) -> TlsSession {
        TlsSession {
            conn: Connection::Client(conn),
            identity: IdentityMode::Connect,
            phase: Phase::Handshaking,
        }
    }

    /// True until the handshake has completed.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// A rustls error as this side of the connection words it.
    fn error(&self, during_handshake: bool, e: rustls::Error) -> TlsError {
        match (&self.conn, during_handshake) {
            (Connection::Server(_), true) => TlsError::Handshake(e),
            (Connection::Server(_), false) => TlsError::Session(e),
            (Connection::Client(_), true) => TlsError::RemoteHandshake(e),
            (Connection::Client(_), false) => TlsError::RemoteSession(e),
        }
    }

    /// Feeds bytes read from the socket; decrypted bytes are appended to `plain`.
    pub(crate) fn received(
        &mut self,
        data: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<Received, TlsError> {
        let mut result = Received::default();
        if self.phase == Phase::AwaitClientHello {
            match data.first() {
                Some(&TLS_HANDSHAKE_RECORD) => self.phase = Phase::Handshaking,
                Some(&other) => return Err(TlsError::NotTls(other)),
                None => return Ok(result),
            }
        }
        let mut input = data;
        while !input.is_empty() {
            match self.conn.read_tls(&mut input) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(TlsError::Buffer(e)),
            }
            let handshaking = self.conn.is_handshaking();
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => return Err(self.error(handshaking, e)),
            };
            if self.phase == Phase::Handshaking && !self.conn.is_handshaking() {
                self.phase = Phase::Established;
                result.identity = self.certificate_identity();
            }
            self.drain_plaintext(state.plaintext_bytes_to_read(), plain);
            result.peer_closed |= state.peer_has_closed();
        }
        Ok(result)
    }

    fn drain_plaintext(&mut self, mut available: usize, plain: &mut Vec<u8>) {
        while available > 0 {
            let start = plain.len();
            plain.resize(start + available, 0);
            match self.conn.reader().read(&mut plain[start..]) {
                Ok(n) if n > 0 => {
                    plain.truncate(start + n);
                    available -= n.min(available);
                }
                _ => {
                    plain.truncate(start);
                    return;
                }
            }
        }
    }

    /// The broker-facing identity of the client certificate, on listeners that use one.
    fn certificate_identity(&self) -> Option<CertIdentity> {
        let der = self.conn.peer_certificates().and_then(|c| c.first());
        let name = match self.identity {
            IdentityMode::Connect => return None,
            IdentityMode::CommonName => der.and_then(|d| x509::common_name(d)),
            IdentityMode::Subject => der.and_then(|d| x509::subject_rfc2253(d)),
        };
        Some(match name {
            Some(name) => CertIdentity::Username(name.into()),
            None => CertIdentity::Missing,
        })
    }

    /// Takes as much plaintext as rustls will buffer; returns how many bytes it took.
    pub(crate) fn send(&mut self, plain: &[u8]) -> usize {
        if plain.is_empty() {
            return 0;
        }
        // The writer only refuses bytes when rustls' buffer limit is reached.
        self.conn.writer().write(plain).unwrap_or(0)
    }

    /// Writes TLS records to `socket` until there are none or it would block (`Ok(true)`).
    pub(crate) fn write_to(&mut self, socket: &mut dyn Write) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(socket) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// True while TLS records wait for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Queues close_notify.
    pub(crate) fn close(&mut self) {
        self.conn.send_close_notify();
    }
}

/// Why a TLS session failed.
#[derive(Debug)]
pub(crate) enum TlsError {
    /// The first byte was not a TLS handshake record.
    NotTls(u8),
    /// The handshake failed.
    Handshake(rustls::Error),
    /// A TLS error after the handshake.
    Session(rustls::Error),
    /// Our handshake with a remote broker (a bridge) failed.
    RemoteHandshake(rustls::Error),
    /// A TLS error on a bridge connection after the handshake.
    RemoteSession(rustls::Error),
    /// rustls could not take more input (it should not happen: plaintext is drained each time).
    Buffer(io::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::NotTls(MQTT_CONNECT) => write!(
                f,
                "TLS handshake failed: the client sent plain MQTT to a TLS port"
            ),
            TlsError::NotTls(b'G') => write!(
                f,
                "TLS handshake failed: the client sent a plain HTTP request (ws:// instead of \
                 wss://?) to a TLS port"
            ),
            TlsError::NotTls(byte) => write!(
                f,
                "TLS handshake failed: the client does not speak TLS (first byte 0x{byte:02x})"
            ),
            TlsError::Handshake(e) => write!(f, "TLS handshake failed: {}", describe(e)),
            TlsError::Session(e) => write!(f, "TLS error: {}", describe(e)),
            TlsError::RemoteHandshake(e) => {
                write!(
                    f,
                    "TLS handshake failed: {}",
                    super::tls_client::describe(e)
                )
            }
            TlsError::RemoteSession(e) => {
                write!(f, "TLS error: {}", super::tls_client::describe(e))
            }
            TlsError::Buffer(e) => write!(f, "TLS error: {e}"),
        }
    }
}

/// A rustls error in words a user can act on.
fn describe(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::NoCertificatesPresented => {
            "no certificate presented but require_certificate is true".into()
        }
        E::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "certificate not signed by the configured CA".into()
        }
        E::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "the client certificate has expired".into(),
        E::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "the client certificate is not valid yet (check the clocks)".into(),
        E::InvalidCertificate(CertificateError::Revoked) => {
            "the client certificate is revoked (crlfile)".into()
        }
        E::InvalidCertificate(other) => format!("the client certificate was refused ({other:?})"),
        E::AlertReceived(
            alert @ (AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired),
        ) => format!(
            "the client does not accept the server certificate (alert {alert:?}); check the \
             CA file the client uses and the names in certfile"
        ),
        E::AlertReceived(alert) => format!("the client ended the handshake (alert {alert:?})"),
        E::PeerIncompatible(why) => format!(
            "the client and this listener have no TLS version or cipher suite in common \
             ({why:?})"
        ),
        E::InvalidMessage(why) => format!("the client sent a malformed TLS message ({why:?})"),
        other => other.to_string(),
    }
}
