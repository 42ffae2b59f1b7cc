//! Encoding packets into bytes.
//!
//! Each packet knows its remaining length before it is written, so the fixed header goes out
//! first and the body follows with no second pass or copy. [`write_publish`] is the hot path:
//! it writes a message for one subscriber straight from the broker's shared message, without
//! building a [`Publish`] first.

use super::packet::*;
use super::properties::Properties;

/// Bytes a variable byte integer takes.
pub(crate) fn varint_len(v: u32) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let mut b = (v & 0x7f) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.push(b);
        if v == 0 {
            break;
        }
    }
}

/// Writes length-prefixed binary data.
pub(crate) fn put_binary(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

/// Writes a length-prefixed UTF-8 string.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_binary(out, s.as_bytes());
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn header(out: &mut Vec<u8>, first: u8, remaining: usize) {
    out.push(first);
    put_varint(out, remaining as u32);
}

/// Total bytes of a packet whose body is `remaining` bytes long.
pub(crate) fn packet_len(remaining: usize) -> usize {
    1 + varint_len(remaining as u32) + remaining
}

fn props_len(v5: bool, p: &Properties) -> usize {
    if v5 {
        p.wire_len()
    } else {
        0
    }
}

fn put_props(out: &mut Vec<u8>, v5: bool, p: &Properties) {
    if v5 {
        p.write(out);
    }
}

/// What makes up one outgoing PUBLISH for one subscriber.
pub(crate) struct PublishOut<'a> {
    pub(crate) topic: &'a str,
    pub(crate) payload: &'a [u8],
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) dup: bool,
    pub(crate) packet_id: u16,
    /// Properties for MQTT 5 subscribers (ignored for 3.x), already including any subscription
    /// identifiers and the remaining expiry interval.
    pub(crate) properties: Option<&'a Properties>,
}

impl PublishOut<'_> {
    fn remaining(&self, v5: bool) -> usize {
        let mut n = 2 + self.topic.len() + self.payload.len();
        if self.qos != QoS::AtMostOnce {
            n += 2;
        }
        if v5 {
            n += match self.properties {
                Some(p) => p.wire_len(),
                None => 1,
            };
        }
        n
    }

    /// Size of the whole packet on the wire.
    pub(crate) fn wire_len(&self, v5: bool) -> usize {
        packet_len(self.remaining(v5))
    }
}

/// Writes one PUBLISH for a subscriber speaking `version`.
pub(crate) fn write_publish(out: &mut Vec<u8>, p: &PublishOut<'_>, version: ProtocolVersion) {
    let v5 = version.is_v5();
    let remaining = p.remaining(v5);
    out.reserve(packet_len(remaining));
    let first =
        (kind::PUBLISH << 4) | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain);
    header(out, first, remaining);
    put_str(out, p.topic);
    if p.qos != QoS::AtMostOnce {
        put_u16(out, p.packet_id);
    }
    if v5 {
        match p.properties {
            Some(props) => props.write(out),
            None => out.push(0),
        }
    }
    out.extend_from_slice(p.payload);
}

/// Writes PUBACK/PUBREC/PUBREL/PUBCOMP; `first` is the full first byte (type and flags).
fn write_ack(out: &mut Vec<u8>, first: u8, a: &Ack, v5: bool) {
    // v5 §3.4.2.1: the reason code and properties may be left out when Success and empty.
    if !v5 || (a.reason == reason::SUCCESS && a.properties.is_empty()) {
        header(out, first, 2);
        put_u16(out, a.packet_id);
    } else if a.properties.is_empty() {
        header(out, first, 3);
        put_u16(out, a.packet_id);
        out.push(a.reason);
    } else {
        header(out, first, 3 + a.properties.wire_len());
        put_u16(out, a.packet_id);
        out.push(a.reason);
        a.properties.write(out);
    }
}

impl Packet<'_> {
    /// Appends this packet, encoded for `version`, to `out`.
    pub(crate) fn encode(&self, version: ProtocolVersion, out: &mut Vec<u8>) {
        let v5 = version.is_v5();
        match self {
            Packet::Connect(c) => encode_connect(c, out),
            Packet::Connack(c) => {
                header(out, kind::CONNACK << 4, 2 + props_len(v5, &c.properties));
                out.push(u8::from(c.session_present));
                out.push(c.code);
                put_props(out, v5, &c.properties);
            }
            Packet::Publish(p) => write_publish(
                out,
                &PublishOut {
                    topic: p.topic,
                    payload: p.payload,
                    qos: p.qos,
                    retain: p.retain,
                    dup: p.dup,
                    packet_id: p.packet_id,
                    properties: Some(&p.properties),
                },
                version,
            ),
            Packet::Puback(a) => write_ack(out, kind::PUBACK << 4, a, v5),
            Packet::Pubrec(a) => write_ack(out, kind::PUBREC << 4, a, v5),
            Packet::Pubrel(a) => write_ack(out, (kind::PUBREL << 4) | 2, a, v5),
            Packet::Pubcomp(a) => write_ack(out, kind::PUBCOMP << 4, a, v5),
            Packet::Subscribe(s) => {
                let mut n = 2 + props_len(v5, &s.properties);
                n += s
                    .subscriptions
                    .iter()
                    .map(|s| 3 + s.filter.len())
                    .sum::<usize>();
                header(out, (kind::SUBSCRIBE << 4) | 2, n);
                put_u16(out, s.packet_id);
                put_props(out, v5, &s.properties);
                for sub in &s.subscriptions {
                    put_str(out, &sub.filter);
                    let o = &sub.options;
                    out.push(
                        o.qos as u8
                            | (u8::from(o.no_local) << 2)
                            | (u8::from(o.retain_as_published) << 3)
                            | (o.retain_handling << 4),
                    );
                }
            }
            Packet::Suback(s) => {
                header(
                    out,
                    kind::SUBACK << 4,
                    2 + props_len(v5, &s.properties) + s.codes.len(),
                );
                put_u16(out, s.packet_id);
                put_props(out, v5, &s.properties);
                out.extend_from_slice(&s.codes);
            }
            Packet::Unsubscribe(u) => {
                let mut n = 2 + props_len(v5, &u.properties);
                n += u.filters.iter().map(|f| 2 + f.len()).sum::<usize>();
                header(out, (kind::UNSUBSCRIBE << 4) | 2, n);
                put_u16(out, u.packet_id);
                put_props(out, v5, &u.properties);
                for f in &u.filters {
                    put_str(out, f);
                }
            }
            Packet::Unsuback(u) => {
                // 3.x UNSUBACK has no payload.
                let codes: &[u8] = if v5 { &u.codes } else { &[] };
                header(
                    out,
                    kind::UNSUBACK << 4,
                    2 + props_len(v5, &u.properties) + codes.len(),
                );
                put_u16(out, u.packet_id);
                put_props(out, v5, &u.properties);
                out.extend_from_slice(codes);
            }
            Packet::Pingreq => out.extend_from_slice(&[kind::PINGREQ << 4, 0]),
            Packet::Pingresp => out.extend_from_slice(&[kind::PINGRESP << 4, 0]),
            Packet::Disconnect(d) => {
                if !v5 || (d.reason == reason::SUCCESS && d.properties.is_empty()) {
                    out.extend_from_slice(&[kind::DISCONNECT << 4, 0]);
                } else if d.properties.is_empty() {
                    // v5 §3.14.2.2.1: the Property Length may be left out when there are none
                    // (Mosquitto's `e0 01 RC`).
                    out.extend_from_slice(&[kind::DISCONNECT << 4, 1, d.reason]);
                } else {
                    header(out, kind::DISCONNECT << 4, 1 + d.properties.wire_len());
                    out.push(d.reason);
                    d.properties.write(out);
                }
            }
            Packet::Auth(a) => {
                header(out, kind::AUTH << 4, 1 + a.properties.wire_len());
                out.push(a.reason);
                a.properties.write(out);
            }
        }
    }

    /// Encodes into a new vector (for tests and rare packets).
    pub fn to_bytes(&self, version: ProtocolVersion) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(version, &mut out);
        out
    }
}

fn encode_connect(c: &Connect, out: &mut Vec<u8>) {
    let v5 = c.version.is_v5();
    let (name, level): (&str, u8) = match c.version {
        ProtocolVersion::V31 => ("MQIsdp", 3),
        ProtocolVersion::V311 => ("MQTT", 4),
        ProtocolVersion::V5 => ("MQTT", 5),
    };
    let mut n = 2 + name.len() + 1 + 1 + 2 + props_len(v5, &c.properties) + 2 + c.client_id.len();
    let mut flags = u8::from(c.clean_start) << 1;
    if let Some(w) = &c.will {
        n += props_len(v5, &w.properties) + 2 + w.topic.len() + 2 + w.payload.len();
        flags |= 0x04 | ((w.qos as u8) << 3) | (u8::from(w.retain) << 5);
    }
    if let Some(u) = &c.username {
        n += 2 + u.len();
        flags |= 0x80;
    }
    if let Some(p) = &c.password {
        n += 2 + p.len();
        flags |= 0x40;
    }
    header(out, kind::CONNECT << 4, n);
    put_str(out, name);
    out.push(level | if c.bridge { 0x80 } else { 0 });
    out.push(flags);
    put_u16(out, c.keep_alive);
    put_props(out, v5, &c.properties);
    put_str(out, &c.client_id);
    if let Some(w) = &c.will {
        put_props(out, v5, &w.properties);
        put_str(out, &w.topic);
        put_binary(out, &w.payload);
    }
    if let Some(u) = &c.username {
        put_str(out, u);
    }
    if let Some(p) = &c.password {
        put_binary(out, p);
    }
}
