//! Decoding one complete packet (fixed header byte + body) into a [`Packet`].
//!
//! Framing has already happened ([`super::frame`]): `decode` sees exactly one packet's body.
//! Every way a body can be wrong is a [`DecodeError`] variant, and each maps to the MQTT 5
//! reason code a server answers it with ([`DecodeError::reason_code`]). Nothing here panics on
//! any input: all reads are bounds-checked through [`Reader`].

use super::packet::*;
use super::properties::{PropContext, Properties};
use std::fmt;

/// Why a packet could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The remaining length used more than four bytes (v311:[MQTT-2.2.3], v5 §1.5.5).
    MalformedLength,
    /// The packet is larger than the configured maximum.
    PacketTooLarge(usize),
    /// A field runs past the end of the packet.
    Truncated,
    /// Bytes left over after the last field.
    TrailingBytes,
    /// A string is not well-formed UTF-8, or contains U+0000 (v311:[MQTT-1.5.3-1], [MQTT-1.5.3-2]).
    InvalidUtf8,
    /// Reserved bits of the fixed header are wrong (v311:[MQTT-2.2.2-1], [MQTT-2.2.2-2]).
    InvalidFlags,
    /// Packet type 0, or 15 (AUTH) outside MQTT 5.
    InvalidPacketType(u8),
    /// QoS 3 (v311:[MQTT-3.3.1-4]).
    InvalidQos,
    /// A property appears twice where it may appear once.
    DuplicateProperty,
    /// Protocol name or level not supported; carries the level seen (answered with CONNACK).
    UnsupportedProtocol(u8),
    /// Any other breach of the protocol's rules, with a short explanation for the log.
    Protocol(&'static str),
    /// Any other malformed field, with a short explanation for the log.
    Malformed(&'static str),
}

impl DecodeError {
    /// The MQTT 5 reason code a server sends for this error (v5 §4.13).
    pub(crate) fn reason_code(&self) -> u8 {
        match self {
            DecodeError::PacketTooLarge(_) => reason::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocol(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
            DecodeError::DuplicateProperty | DecodeError::Protocol(_) => reason::PROTOCOL_ERROR,
            _ => reason::MALFORMED_PACKET,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::MalformedLength => write!(f, "malformed remaining length"),
            DecodeError::PacketTooLarge(n) => write!(f, "packet of {n} bytes is too large"),
            DecodeError::Truncated => write!(f, "packet shorter than its fields"),
            DecodeError::TrailingBytes => write!(f, "unexpected bytes at the end of the packet"),
            DecodeError::InvalidUtf8 => write!(f, "invalid UTF-8 string"),
            DecodeError::InvalidFlags => write!(f, "invalid fixed header flags"),
            DecodeError::InvalidPacketType(t) => write!(f, "invalid packet type {t}"),
            DecodeError::InvalidQos => write!(f, "invalid QoS 3"),
            DecodeError::DuplicateProperty => write!(f, "duplicate property"),
            DecodeError::UnsupportedProtocol(l) => write!(f, "unsupported protocol version {l}"),
            DecodeError::Protocol(s) => write!(f, "protocol error: {s}"),
            DecodeError::Malformed(s) => write!(f, "malformed packet: {s}"),
        }
    }
}

/// A bounds-checked cursor over a packet body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// True when every byte has been read.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Splits off a sub-reader over the next `n` bytes.
    pub(crate) fn sub(&mut self, n: usize) -> Result<Reader<'a>, DecodeError> {
        Ok(Reader::new(self.take(n)?))
    }

    /// Takes everything that is left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// One byte.
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// A big-endian two byte integer.
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian four byte integer.
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A variable byte integer of at most four bytes (v5 §1.5.5).
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for i in 0..4 {
            let b = self.u8()?;
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::MalformedLength)
    }

    /// Length-prefixed binary data.
    pub(crate) fn binary(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// A length-prefixed UTF-8 string, borrowed.
    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let bytes = self.binary()?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        if bytes.contains(&0) {
            return Err(DecodeError::InvalidUtf8);
        }
        Ok(s)
    }

    /// A length-prefixed UTF-8 string, owned.
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        Ok(self.str()?.to_owned())
    }

    /// A non-zero packet identifier (v311:[MQTT-2.3.1-1]).
    fn packet_id(&mut self) -> Result<u16, DecodeError> {
        match self.u16()? {
            0 => Err(DecodeError::Protocol("packet identifier 0")),
            id => Ok(id),
        }
    }

    fn end(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Decodes the body of one packet whose first byte is `header`, for a connection speaking
/// `version` (ignored for CONNECT, which says its own version).
pub fn decode(
    header: u8,
    body: &[u8],
    version: ProtocolVersion,
) -> Result<Packet<'_>, DecodeError> {
    let flags = header & 0x0f;
    let mut r = Reader::new(body);
    let v5 = version.is_v5();
    let expect_flags = |want: u8| {
        if flags == want {
            Ok(())
        } else {
            Err(DecodeError::InvalidFlags)
        }
    };
    let packet = match header >> 4 {
        kind::CONNECT => {
            expect_flags(0)?;
            Packet::Connect(Box::new(decode_connect(&mut r)?))
        }
        kind::CONNACK => {
            expect_flags(0)?;
            let ack_flags = r.u8()?;
            if ack_flags & 0xfe != 0 {
                return Err(DecodeError::Malformed("CONNACK flags"));
            }
            let code = r.u8()?;
            let properties = props_if(v5, &mut r, PropContext::Connack)?;
            Packet::Connack(Connack {
                session_present: ack_flags & 1 == 1,
                code,
                properties,
            })
        }
        kind::PUBLISH => Packet::Publish(decode_publish(flags, &mut r, v5)?),
        kind::PUBACK => {
            expect_flags(0)?;
            Packet::Puback(decode_ack(&mut r, v5)?)
        }
        kind::PUBREC => {
            expect_flags(0)?;
            Packet::Pubrec(decode_ack(&mut r, v5)?)
        }
        kind::PUBREL => {
            expect_flags(2)?;
            Packet::Pubrel(decode_ack(&mut r, v5)?)
        }
        kind::PUBCOMP => {
            expect_flags(0)?;
            Packet::Pubcomp(decode_ack(&mut r, v5)?)
        }
        kind::SUBSCRIBE => {
            expect_flags(2)?;
            Packet::Subscribe(decode_subscribe(&mut r, v5)?)
        }
        kind::SUBACK => {
            expect_flags(0)?;
            let packet_id = r.u16()?;
            let properties = props_if(v5, &mut r, PropContext::Suback)?;
            Packet::Suback(Suback {
                packet_id,
                codes: r.rest().to_vec(),
                properties,
            })
        }
        kind::UNSUBSCRIBE => {
            expect_flags(2)?;
            let packet_id = r.packet_id()?;
            let properties = props_if(v5, &mut r, PropContext::Unsubscribe)?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                filters.push(r.string()?);
            }
            if filters.is_empty() {
                // v311:[MQTT-3.10.3-2], v5:[MQTT-3.10.3-2]
                return Err(DecodeError::Protocol("UNSUBSCRIBE with no topic filter"));
            }
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        }
        kind::UNSUBACK => {
            expect_flags(0)?;
            let packet_id = r.u16()?;
            let properties = props_if(v5, &mut r, PropContext::Unsuback)?;
            // 3.x UNSUBACK is just the packet id; only 5.0 has reason codes.
            let codes = if v5 { r.rest().to_vec() } else { Vec::new() };
            Packet::Unsuback(Unsuback {
                packet_id,
                codes,
                properties,
            })
        }
        kind::PINGREQ => {
            expect_flags(0)?;
            Packet::Pingreq
        }
        kind::PINGRESP => {
            expect_flags(0)?;
            Packet::Pingresp
        }
        kind::DISCONNECT => {
            expect_flags(0)?;
            let (reason, properties) = reason_and_props(&mut r, v5, PropContext::Disconnect)?;
            Packet::Disconnect(Disconnect { reason, properties })
        }
        kind::AUTH if v5 => {
            expect_flags(0)?;
            let (reason, properties) = reason_and_props(&mut r, v5, PropContext::Auth)?;
            Packet::Auth(Auth { reason, properties })
        }
        t => return Err(DecodeError::InvalidPacketType(t)),
    };
    r.end()?;
    Ok(packet)
}

fn props_if(v5: bool, r: &mut Reader<'_>, ctx: PropContext) -> Result<Properties, DecodeError> {
    if v5 {
        Properties::read(r, ctx)
    } else {
        Ok(Properties::default())
    }
}

/// DISCONNECT and AUTH: in 5.0 the reason code and properties may each be left out.
fn reason_and_props(
    r: &mut Reader<'_>,
    v5: bool,
    ctx: PropContext,
) -> Result<(u8, Properties), DecodeError> {
    if !v5 || r.is_empty() {
        return Ok((reason::SUCCESS, Properties::default()));
    }
    let reason = r.u8()?;
    let properties = if r.is_empty() {
        Properties::default()
    } else {
        Properties::read(r, ctx)?
    };
    Ok((reason, properties))
}

fn decode_ack(r: &mut Reader<'_>, v5: bool) -> Result<Ack, DecodeError> {
    let packet_id = r.packet_id()?;
    let (reason, properties) = reason_and_props(r, v5, PropContext::Ack)?;
    Ok(Ack {
        packet_id,
        reason,
        properties,
    })
}

fn decode_connect(r: &mut Reader<'_>) -> Result<Connect, DecodeError> {
    let name = r.binary()?;
    let raw_level = r.u8()?;
    let level = raw_level & 0x7f;
    let version = match (name, level) {
        (b"MQIsdp", 3) => ProtocolVersion::V31,
        (b"MQTT", 4) => ProtocolVersion::V311,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQTT", _) | (b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocol(raw_level)),
        // v311:[MQTT-3.1.2-1]: a wrong protocol name may simply be disconnected.
        _ => return Err(DecodeError::Protocol("unknown protocol name")),
    };
    let flags = r.u8()?;
    // v311:[MQTT-3.1.2-3], v5:[MQTT-3.1.2-3]: the reserved bit must be zero.
    if flags & 0x01 != 0 {
        return Err(DecodeError::Malformed("CONNECT reserved flag set"));
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let has_password = flags & 0x40 != 0;
    let has_username = flags & 0x80 != 0;
    if !will_flag && (will_qos != 0 || will_retain) {
        // v311:[MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15]
        return Err(DecodeError::Malformed(
            "will QoS or retain without will flag",
        ));
    }
    let will_qos = QoS::from_u8(will_qos).ok_or(DecodeError::InvalidQos)?;
    if version != ProtocolVersion::V5 && has_password && !has_username {
        // v311:[MQTT-3.1.2-22]
        return Err(DecodeError::Malformed("password without username"));
    }
    let keep_alive = r.u16()?;
    let v5 = version.is_v5();
    let properties = props_if(v5, r, PropContext::Connect)?;
    let client_id = r.string()?;
    let will = if will_flag {
        let properties = props_if(v5, r, PropContext::Will)?;
        let topic = r.string()?;
        if !valid_topic_name(&topic) {
            return Err(DecodeError::Protocol("invalid will topic"));
        }
        let payload = r.binary()?.to_vec();
        Some(LastWill {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?.to_vec())
    } else {
        None
    };
    Ok(Connect {
        version,
        bridge: raw_level & 0x80 != 0,
        clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

fn decode_publish<'a>(flags: u8, r: &mut Reader<'a>, v5: bool) -> Result<Publish<'a>, DecodeError> {
    let dup = flags & 0x08 != 0;
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::InvalidQos)?;
    let retain = flags & 0x01 != 0;
    if dup && qos == QoS::AtMostOnce {
        // v311:[MQTT-3.3.1-2], v5:[MQTT-3.3.1-2]
        return Err(DecodeError::Malformed("DUP set on a QoS 0 PUBLISH"));
    }
    let topic = r.str()?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        r.packet_id()?
    };
    let properties = props_if(v5, r, PropContext::Publish)?;
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        // v311:[MQTT-3.3.2-2], v5:[MQTT-3.3.2-2]
        return Err(DecodeError::Protocol("wildcard in PUBLISH topic"));
    }
    if topic.is_empty() && properties.topic_alias.is_none() {
        // v311:[MQTT-4.7.3-1], v5:[MQTT-3.3.2-1]
        return Err(DecodeError::Protocol("empty PUBLISH topic"));
    }
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        payload: r.rest(),
        properties,
    })
}

fn decode_subscribe(r: &mut Reader<'_>, v5: bool) -> Result<Subscribe, DecodeError> {
    let packet_id = r.packet_id()?;
    let properties = props_if(v5, r, PropContext::Subscribe)?;
    let mut subscriptions = Vec::new();
    while !r.is_empty() {
        let filter = r.string()?;
        let o = r.u8()?;
        let reserved = if v5 { 0xc0 } else { 0xfc };
        if o & reserved != 0 {
            // v311:[MQTT-3.8.3-4], v5:[MQTT-3.8.3-5]
            return Err(DecodeError::Malformed(
                "reserved subscription option bits set",
            ));
        }
        let qos = QoS::from_u8(o & 0x03).ok_or(DecodeError::InvalidQos)?;
        let retain_handling = (o >> 4) & 0x03;
        if retain_handling == 3 {
            return Err(DecodeError::Protocol("retain handling 3"));
        }
        subscriptions.push(Subscription {
            filter,
            options: SubscribeOptions {
                qos,
                no_local: o & 0x04 != 0,
                retain_as_published: o & 0x08 != 0,
                retain_handling,
            },
        });
    }
    if subscriptions.is_empty() {
        // v311:[MQTT-3.8.3-3], v5:[MQTT-3.8.3-2]
        return Err(DecodeError::Protocol("SUBSCRIBE with no topic filter"));
    }
    Ok(Subscribe {
        packet_id,
        subscriptions,
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::frame::parse_fixed_header;
    use crate::codec::PropertySet;

    fn round_trip(p: &Packet<'_>, v: ProtocolVersion) {
        let bytes = p.to_bytes(v);
        let h = parse_fixed_header(&bytes).unwrap().unwrap();
        assert_eq!(h.total(), bytes.len());
        let back = decode(h.first, &bytes[h.header_len..], v).unwrap();
        assert_eq!(&back, p);
    }

    fn props() -> Properties {
        PropertySet {
            user_properties: vec![("k".into(), "v".into())],
            reason_string: Some("why".into()),
            ..PropertySet::default()
        }
        .into()
    }

    #[test]
    fn every_packet_round_trips_v311_and_v5() {
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            let p5 = |p: Properties| if v.is_v5() { p } else { Properties::default() };
            let connect = Connect {
                version: v,
                bridge: false,
                clean_start: true,
                keep_alive: 15,
                client_id: "esp32".into(),
                will: Some(LastWill {
                    topic: "s".into(),
                    payload: b"offline".to_vec(),
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    properties: p5(PropertySet {
                        will_delay_interval: Some(5),
                        ..PropertySet::default()
                    }
                    .into()),
                }),
                username: Some("u".into()),
                password: Some(b"p".to_vec()),
                properties: p5(PropertySet {
                    session_expiry_interval: Some(60),
                    receive_maximum: Some(10),
                    ..PropertySet::default()
                }
                .into()),
            };
            round_trip(&Packet::Connect(Box::new(connect)), v);
            round_trip(
                &Packet::Connack(Connack {
                    session_present: true,
                    code: 0,
                    properties: p5(PropertySet {
                        topic_alias_maximum: Some(10),
                        ..PropertySet::default()
                    }
                    .into()),
                }),
                v,
            );
            round_trip(
                &Packet::Publish(Publish {
                    dup: true,
                    qos: QoS::ExactlyOnce,
                    retain: true,
                    topic: "a/b",
                    packet_id: 7,
                    payload: b"hello",
                    properties: p5(PropertySet {
                        content_type: Some("text".into()),
                        ..PropertySet::default()
                    }
                    .into()),
                }),
                v,
            );
            let ack = Ack {
                packet_id: 3,
                reason: if v.is_v5() { 0x10 } else { 0 },
                properties: p5(props()),
            };
            round_trip(&Packet::Puback(ack.clone()), v);
            round_trip(&Packet::Pubrec(ack.clone()), v);
            round_trip(&Packet::Pubrel(ack.clone()), v);
            round_trip(&Packet::Pubcomp(ack), v);
            round_trip(
                &Packet::Subscribe(Subscribe {
                    packet_id: 2,
                    subscriptions: vec![Subscription {
                        filter: "a/#".into(),
                        options: SubscribeOptions {
                            qos: QoS::AtLeastOnce,
                            no_local: v.is_v5(),
                            retain_as_published: v.is_v5(),
                            retain_handling: if v.is_v5() { 2 } else { 0 },
                        },
                    }],
                    properties: p5(PropertySet {
                        subscription_identifiers: vec![9],
                        ..PropertySet::default()
                    }
                    .into()),
                }),
                v,
            );
            round_trip(
                &Packet::Suback(Suback {
                    packet_id: 2,
                    codes: vec![0, 1, 0x80],
                    properties: p5(props()),
                }),
                v,
            );
            round_trip(
                &Packet::Unsubscribe(Unsubscribe {
                    packet_id: 4,
                    filters: vec!["a".into(), "b/+".into()],
                    properties: Properties::default(),
                }),
                v,
            );
            round_trip(&Packet::Pingreq, v);
            round_trip(&Packet::Pingresp, v);
            round_trip(
                &Packet::Disconnect(Disconnect {
                    reason: 0,
                    properties: Properties::default(),
                }),
                v,
            );
        }
    }

    #[test]
    fn v5_disconnect_without_properties_is_three_bytes() {
        let d = Packet::Disconnect(Disconnect {
            reason: reason::PROTOCOL_ERROR,
            properties: Properties::default(),
        });
        assert_eq!(d.to_bytes(ProtocolVersion::V5), [0xe0, 0x01, 0x82]);
        round_trip(&d, ProtocolVersion::V5);
    }

    #[test]
    fn pubsubclient_connect_from_fixture_decodes() {
        // The CONNECT of tests/fixtures/pubsubclient-2.8-session.md, connection 1.
        let hex = "105700044d51545404ee000f000f65737033322d73696d2d3234323336001f657370333273696d2f65737033322d73696d2d32343233362f73746174757300076f66666c696e65000565737033320009657370333270617373";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let h = parse_fixed_header(&bytes).unwrap().unwrap();
        let Packet::Connect(c) =
            decode(h.first, &bytes[h.header_len..], ProtocolVersion::V311).unwrap()
        else {
            panic!("not CONNECT");
        };
        assert_eq!(c.client_id, "esp32-sim-24236");
        assert_eq!(c.keep_alive, 15);
        let will = c.will.unwrap();
        assert_eq!(
            (will.topic.as_str(), will.qos, will.retain),
            ("esp32sim/esp32-sim-24236/status", QoS::AtLeastOnce, true)
        );
        assert_eq!(c.username.as_deref(), Some("esp32"));
        assert_eq!(c.password.as_deref(), Some(&b"esp32pass"[..]));
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        let v = ProtocolVersion::V311;
        // PUBREL without its required flags (v311:[MQTT-3.6.1-1])
        assert_eq!(decode(0x60, &[0, 1], v), Err(DecodeError::InvalidFlags));
        // SUBSCRIBE with flags 0 (v311:[MQTT-3.8.1-1])
        assert_eq!(
            decode(0x80, &[0, 1, 0, 1, b'a', 0], v),
            Err(DecodeError::InvalidFlags)
        );
        // QoS 3 PUBLISH
        assert_eq!(
            decode(0x36, &[0, 1, b'a', 0, 1], v),
            Err(DecodeError::InvalidQos)
        );
        // wildcard in topic name
        assert!(matches!(
            decode(0x30, &[0, 1, b'#'], v),
            Err(DecodeError::Protocol(_))
        ));
        // invalid UTF-8 topic
        assert_eq!(
            decode(0x30, &[0, 1, 0xff], v),
            Err(DecodeError::InvalidUtf8)
        );
        // U+0000 in a string (v311:[MQTT-1.5.3-2])
        assert_eq!(decode(0x30, &[0, 1, 0], v), Err(DecodeError::InvalidUtf8));
        // truncated PUBACK
        assert_eq!(decode(0x40, &[0], v), Err(DecodeError::Truncated));
        // PUBACK with an extra byte in 3.1.1
        assert_eq!(decode(0x40, &[0, 1, 0], v), Err(DecodeError::TrailingBytes));
        // packet id 0 (v311:[MQTT-2.3.1-1])
        assert!(matches!(
            decode(0x40, &[0, 0], v),
            Err(DecodeError::Protocol(_))
        ));
        // subscription options with reserved bits (v311:[MQTT-3.8.3-4])
        assert!(matches!(
            decode(0x82, &[0, 1, 0, 1, b'a', 0x04], v),
            Err(DecodeError::Malformed(_))
        ));
        // SUBSCRIBE without filters (v311:[MQTT-3.8.3-3])
        assert!(matches!(
            decode(0x82, &[0, 1], v),
            Err(DecodeError::Protocol(_))
        ));
        // AUTH is not a 3.1.1 packet
        assert_eq!(
            decode(0xf0, &[], v),
            Err(DecodeError::InvalidPacketType(15))
        );
        // CONNECT reserved flag (v311:[MQTT-3.1.2-3])
        let c = [0, 4, b'M', b'Q', b'T', b'T', 4, 0x03, 0, 60, 0, 1, b'c'];
        assert!(matches!(
            decode(0x10, &c, v),
            Err(DecodeError::Malformed(_))
        ));
        // Unsupported level → the CONNACK 0x01 path
        let c = [0, 4, b'M', b'Q', b'T', b'T', 6, 0x02, 0, 60, 0, 1, b'c'];
        assert_eq!(
            decode(0x10, &c, v),
            Err(DecodeError::UnsupportedProtocol(6))
        );
    }

    #[test]
    fn decoder_never_panics_on_any_prefix_or_mutation() {
        let p = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "x/y",
            packet_id: 1,
            payload: b"payload",
            properties: PropertySet {
                user_properties: vec![("a".into(), "b".into())],
                ..PropertySet::default()
            }
            .into(),
        })
        .to_bytes(ProtocolVersion::V5);
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for cut in 0..p.len() {
                let _ = decode(p[0], &p[2..cut.max(2)], v);
            }
            for i in 2..p.len() {
                for b in [0u8, 0x7f, 0x80, 0xff] {
                    let mut m = p.clone();
                    m[i] = b;
                    let _ = decode(m[0], &m[2..], v);
                }
            }
        }
    }
}
