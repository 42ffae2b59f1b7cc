//! The pieces of X.509 midge reads itself: the subject name of a client certificate, for
//! `use_identity_as_username` (its CN) and `use_subject_as_username` (the whole subject), and
//! the names and key identifiers that link a server certificate to the CA certificates above it.
//!
//! rustls and webpki verify the certificate but do not expose its subject, and a full X.509
//! parser is a large dependency for two fields. The certificate reaching this code has already
//! been verified against the listener's CA by webpki, so it is well-formed DER signed by a CA
//! the operator trusts; the walk below still checks every length and returns `None` rather than
//! panicking on anything unexpected.
//!
//! The subject string follows OpenSSL's `X509_NAME_print_ex(..., XN_FLAG_RFC2253)`, which is
//! what Mosquitto uses: RDNs in reverse order joined by `,`, short attribute names (`CN`, `O`,
//! `emailAddress`, ...), RFC 2253 escaping, and bytes outside printable ASCII as `\XX`.

/// DER tags used below.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT Extensions` at the end of a v3 TBSCertificate.
const EXTENSIONS: u8 = 0xA3;
/// `[0] IMPLICIT KeyIdentifier` inside an AuthorityKeyIdentifier.
const KEY_IDENTIFIER: u8 = 0x80;
/// `[0] EXPLICIT Version` at the start of a v3 TBSCertificate.
const VERSION: u8 = 0xA0;

/// Splits one DER element off `input`: (tag, contents, rest). Only the forms certificates use
/// (low tag numbers, definite lengths of up to four bytes).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// Like [`element`], but the tag must be `want`.
fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, contents, rest) = element(input)?;
    (tag == want).then_some((contents, rest))
}

/// One attribute of a name: its OID (raw DER contents), its value's tag and contents.
struct Attribute<'a> {
    oid: &'a [u8],
    tag: u8,
    value: &'a [u8],
    /// The whole DER encoding of the value, for attributes printed as `#hex`.
    value_der: &'a [u8],
}

/// The TBSCertificate fields after the version, starting at serialNumber.
fn tbs_fields(cert_der: &[u8]) -> Option<&[u8]> {
    let (cert, _) = expect(cert_der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    if tbs.first() == Some(&VERSION) {
        return Some(element(tbs)?.2);
    }
    Some(tbs)
}

/// The issuer and subject names as they are encoded (whole DER elements). A certificate was
/// issued by the certificate whose subject encodes exactly as its issuer.
pub(crate) fn issuer_and_subject(cert_der: &[u8]) -> Option<(&[u8], &[u8])> {
    // serialNumber, signature, then issuer, validity, subject.
    let mut rest = tbs_fields(cert_der)?;
    for _ in 0..2 {
        rest = element(rest)?.2;
    }
    let after_issuer = element(rest)?.2;
    let issuer = &rest[..rest.len() - after_issuer.len()];
    let subject_start = element(after_issuer)?.2;
    let after_subject = element(subject_start)?.2;
    let subject = &subject_start[..subject_start.len() - after_subject.len()];
    let is_name = |der: &[u8]| der.first() == Some(&SEQUENCE);
    (is_name(issuer) && is_name(subject)).then_some((issuer, subject))
}

/// The DER contents of the OIDs of the subjectKeyIdentifier (2.5.29.14) and
/// authorityKeyIdentifier (2.5.29.35) extensions.
const SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1D, 0x0E];
const AUTHORITY_KEY_ID: &[u8] = &[0x55, 0x1D, 0x23];

/// The value (the contents of extnValue) of the certificate's extension `oid`.
fn extension<'a>(cert_der: &'a [u8], oid: &[u8]) -> Option<&'a [u8]> {
    // serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, then the
    // optional unique ids and the extensions.
    let mut rest = tbs_fields(cert_der)?;
    for _ in 0..6 {
        rest = element(rest)?.2;
    }
    while !rest.is_empty() {
        let (tag, contents, after) = element(rest)?;
        rest = after;
        if tag != EXTENSIONS {
            continue;
        }
        let (mut list, _) = expect(contents, SEQUENCE)?;
        while !list.is_empty() {
            let (ext, after) = expect(list, SEQUENCE)?;
            list = after;
            let (id, mut fields) = expect(ext, OID)?;
            if fields.first() == Some(&BOOLEAN) {
                fields = element(fields)?.2;
            }
            if id == oid {
                return Some(expect(fields, OCTET_STRING)?.0);
            }
        }
    }
    None
}

/// The certificate's subject key identifier, if it has one.
pub(crate) fn subject_key_id(cert_der: &[u8]) -> Option<&[u8]> {
    Some(expect(extension(cert_der, SUBJECT_KEY_ID)?, OCTET_STRING)?.0)
}

/// The key identifier of the certificate's issuer, if it names one.
pub(crate) fn authority_key_id(cert_der: &[u8]) -> Option<&[u8]> {
    let (fields, _) = expect(extension(cert_der, AUTHORITY_KEY_ID)?, SEQUENCE)?;
    let (tag, id, _) = element(fields)?;
    (tag == KEY_IDENTIFIER).then_some(id)
}

/// The RDNs of a certificate's subject, in certificate order, each a list of attributes.
fn subject_rdns(cert_der: &[u8]) -> Option<Vec<Vec<Attribute<'_>>>> {
    let mut rest = tbs_fields(cert_der)?;
    // serialNumber, signature, issuer, validity, then subject.
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (mut name, _) = expect(rest, SEQUENCE)?;
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (mut set, after) = expect(name, SET)?;
        name = after;
        let mut rdn = Vec::new();
        while !set.is_empty() {
            let (pair, after) = expect(set, SEQUENCE)?;
            set = after;
            let (oid, value_part) = expect(pair, OID)?;
            let (tag, value, _) = element(value_part)?;
            let value_der = &value_part[..value_part.len() - element(value_part)?.2.len()];
            rdn.push(Attribute {
                oid,
                tag,
                value,
                value_der,
            });
        }
        rdns.push(rdn);
    }
    Some(rdns)
}

/// The DER contents of the commonName OID, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The certificate's subject CN (the first one, as Mosquitto takes). `None` when there is
/// none or it is not text.
pub(crate) fn common_name(cert_der: &[u8]) -> Option<String> {
    let rdns = subject_rdns(cert_der)?;
    let cn = rdns.iter().flatten().find(|a| a.oid == COMMON_NAME)?;
    decode_string(cn.tag, cn.value)
}

/// The certificate's subject as OpenSSL prints it with `XN_FLAG_RFC2253`, e.g.
/// `CN=sensor-7,OU=Garden,O=Home`.
pub(crate) fn subject_rfc2253(cert_der: &[u8]) -> Option<String> {
    let rdns = subject_rdns(cert_der)?;
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match short_name(attr.oid) {
                Some(name) => {
                    out.push_str(name);
                    out.push('=');
                    match decode_string(attr.tag, attr.value) {
                        Some(text) => escape_rfc2253(&text, &mut out),
                        None => push_hex_der(attr.value_der, &mut out),
                    }
                }
                None => {
                    out.push_str(&dotted_oid(attr.oid)?);
                    out.push('=');
                    push_hex_der(attr.value_der, &mut out);
                }
            }
        }
    }
    Some(out)
}

/// OpenSSL's short names for the attributes certificates commonly carry.
fn short_name(oid: &[u8]) -> Option<&'static str> {
    const X520: &[u8] = &[0x55, 0x04];
    if let Some(&[n]) = oid.strip_prefix(X520) {
        return Some(match n {
            3 => "CN",
            4 => "SN",
            5 => "serialNumber",
            6 => "C",
            7 => "L",
            8 => "ST",
            9 => "street",
            10 => "O",
            11 => "OU",
            12 => "title",
            17 => "postalCode",
            42 => "GN",
            43 => "initials",
            44 => "generationQualifier",
            46 => "dnQualifier",
            65 => "pseudonym",
            _ => return None,
        });
    }
    match oid {
        // 1.2.840.113549.1.9.1
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => Some("emailAddress"),
        // 0.9.2342.19200300.100.1.25 and .1
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => Some("DC"),
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => Some("UID"),
        _ => None,
    }
}

/// An OID in dotted form, as OpenSSL prints attributes it has no name for.
fn dotted_oid(oid: &[u8]) -> Option<String> {
    let (&first, rest) = oid.split_first()?;
    let mut out = format!("{}.{}", first / 40, first % 40);
    let mut n: u64 = 0;
    for &b in rest {
        n = n.checked_mul(128)? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            out.push_str(&format!(".{n}"));
            n = 0;
        }
    }
    Some(out)
}

/// The text of a DirectoryString-like value; `None` for types that are not text.
fn decode_string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, VisibleString, NumericString.
        0x0c | 0x13 | 0x16 | 0x1a | 0x12 => String::from_utf8(value.to_vec()).ok(),
        // TeletexString: treated as Latin-1, as OpenSSL does.
        0x14 => Some(value.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16 big endian.
        0x1e => {
            let units: Vec<u16> = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        // UniversalString: UTF-32 big endian.
        0x1c => value
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    }
}

/// RFC 2253 escaping with OpenSSL's `ASN1_STRFLGS_RFC2253` (bytes outside printable ASCII,
/// UTF-8 included, become `\XX`).
fn escape_rfc2253(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let special = matches!(b, b',' | b'+' | b'"' | b'\\' | b'<' | b'>' | b';')
            || (i == 0 && matches!(b, b'#' | b' '))
            || (i + 1 == bytes.len() && b == b' ');
        if special {
            out.push('\\');
            out.push(char::from(b));
        } else if !(0x20..0x7f).contains(&b) {
            out.push_str(&format!("\\{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
}

fn push_hex_der(der: &[u8], out: &mut String) {
    out.push('#');
    for b in der {
        out.push_str(&format!("{b:02X}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, DnValue, KeyPair};

    fn cert_with(dn: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in dn {
            params.distinguished_name.push(ty.clone(), *value);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn common_name_is_found() {
        let der = cert_with(&[
            (DnType::CountryName, "GB"),
            (DnType::OrganizationName, "Home"),
            (DnType::CommonName, "sensor-7"),
        ]);
        assert_eq!(common_name(&der).as_deref(), Some("sensor-7"));
        assert_eq!(
            common_name(&cert_with(&[(DnType::OrganizationName, "Home")])),
            None
        );
    }

    #[test]
    fn subject_prints_like_openssl_rfc2253() {
        let der = cert_with(&[
            (DnType::CountryName, "GB"),
            (DnType::OrganizationName, "Home, Inc"),
            (DnType::OrganizationalUnitName, "Garden"),
            (DnType::CommonName, "sensor-7"),
        ]);
        assert_eq!(
            subject_rfc2253(&der).as_deref(),
            Some("CN=sensor-7,OU=Garden,O=Home\\, Inc,C=GB")
        );
    }

    #[test]
    fn non_ascii_is_escaped_as_utf8_bytes_and_unknown_oids_are_dumped() {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, DnValue::Utf8String("café".into()));
        params.distinguished_name.push(
            DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 99999, 1]),
            DnValue::Utf8String("x".into()),
        );
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(common_name(&der).as_deref(), Some("café"));
        let subject = subject_rfc2253(&der).unwrap();
        assert!(subject.contains("CN=caf\\C3\\A9"), "{subject}");
        assert!(subject.contains("1.3.6.1.4.1.99999.1=#0C0178"), "{subject}");
    }

    #[test]
    fn issuer_and_subject_link_a_certificate_to_its_issuer() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name.push(DnType::CommonName, "Root");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".into()]).unwrap();
        leaf.use_authority_key_identifier_extension = true;
        let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        let (ca_issuer, ca_subject) = issuer_and_subject(ca.der()).unwrap();
        let (leaf_issuer, leaf_subject) = issuer_and_subject(leaf.der()).unwrap();
        assert_eq!(ca_issuer, ca_subject, "self-signed");
        assert_eq!(leaf_issuer, ca_subject);
        assert_ne!(leaf_subject, ca_subject);
        let ca_key_id = subject_key_id(ca.der()).unwrap();
        assert_eq!(authority_key_id(leaf.der()), Some(ca_key_id));
        assert_ne!(subject_key_id(leaf.der()), Some(ca_key_id));
        let der = leaf.der().to_vec();
        for cut in 0..der.len() {
            let _ = issuer_and_subject(&der[..cut]);
            let _ = authority_key_id(&der[..cut]);
            let _ = subject_key_id(&der[..cut]);
        }
    }

    #[test]
    fn garbage_gives_none_not_a_panic() {
        let der = cert_with(&[(DnType::CommonName, "a")]);
        for cut in 0..der.len() {
            let _ = common_name(&der[..cut]);
            let _ = subject_rfc2253(&der[..cut]);
        }
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(subject_rfc2253(&[0x1f, 0x00]), None);
        assert_eq!(common_name(&[]), None);
    }
}
