//! Certificates for the TLS and WebSocket tests, made by rcgen at test time (nothing secret is
//! committed, nothing expires): a CA, server certificates for 127.0.0.1 and localhost, client
//! certificates with a chosen CN. Also finds the ports of a broker's extra listeners.

use crate::common::{Broker, TempDir};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// A certificate authority.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key as PEM files.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        Ca { cert, key }
    }

    /// Writes the CA certificate to `dir/name`.
    pub fn write(&self, dir: &TempDir, name: &str) -> PathBuf {
        dir.write(name, &self.cert.pem())
    }

    fn issue(&self, params: CertificateParams) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }

    /// A server certificate for 127.0.0.1 and localhost, written as `dir/NAME.pem` and
    /// `dir/NAME.key`.
    pub fn server(&self, dir: &TempDir, name: &str) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (cert, key) = self.issue(params);
        Pair {
            cert: dir.write(&format!("{name}.pem"), &cert),
            key: dir.write(&format!("{name}.key"), &key),
        }
    }

    /// A client certificate with subject `O=Home, OU=Garden, CN=cn`.
    pub fn client(&self, dir: &TempDir, name: &str, cn: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        // A fresh name: rcgen's default one already holds a CN, which would come first.
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Home");
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "Garden");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let (cert, key) = self.issue(params);
        Pair {
            cert: dir.write(&format!("{name}.pem"), &cert),
            key: dir.write(&format!("{name}.key"), &key),
        }
    }
}

/// The ports of the broker's first `n` IPv4 listeners, in config order (the harness's plain
/// listener first), from the "Opening ipv4 listen socket on port N." lines.
pub fn listener_ports(b: &Broker, n: usize) -> Vec<u16> {
    const MARK: &str = "Opening ipv4 listen socket on port ";
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ports: Vec<u16> = b
            .logs()
            .iter()
            .filter_map(|l| {
                let rest = &l[l.find(MARK)? + MARK.len()..];
                let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                digits.parse().ok()
            })
            .collect();
        if ports.len() >= n {
            return ports[..n].to_vec();
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} listeners; logs:\n{}",
            b.logs().join("\n")
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// `path` as a string for command lines and config files.
pub fn s(path: &std::path::Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}
