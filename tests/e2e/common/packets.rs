//! MQTT packets written by hand from the specification, for every protocol level the tests
//! speak (3.1, 3.1.1 and 5.0): the fixed header and its remaining length, strings, a CONNECT
//! builder, PUBLISH/SUBSCRIBE/UNSUBSCRIBE/acks, and the MQTT 5 property list (which also parses
//! itself, for the parsers in `v5`). It is deliberately independent of `midge::codec`, so the
//! tests do not share the codec's mistakes.

// ---------------------------------------------------------------------------------------------
// Framing and MQTT 3.1 / 3.1.1 packets

pub fn encode_len(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// Fixed header byte + remaining length + body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    encode_len(body.len(), &mut v);
    v.extend_from_slice(body);
    v
}

pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A will message of a CONNECT.
#[derive(Clone, Debug)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// Will properties, written only at protocol level 5.
    pub props: Props,
}

/// A CONNECT packet of any protocol level, field by field.
#[derive(Clone, Debug)]
pub struct Connect {
    pub proto: &'static str,
    pub level: u8,
    pub client_id: String,
    pub clean: bool,
    pub keepalive: u16,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    /// Overrides the computed connect flags byte when set.
    pub flags: Option<u8>,
    /// CONNECT properties, written only at protocol level 5.
    pub props: Props,
}

impl Connect {
    pub fn v311(id: &str) -> Connect {
        Connect {
            proto: "MQTT",
            level: 4,
            client_id: id.to_string(),
            clean: true,
            keepalive: 60,
            will: None,
            username: None,
            password: None,
            flags: None,
            props: Props::new(),
        }
    }

    pub fn v31(id: &str) -> Connect {
        Connect {
            proto: "MQIsdp",
            level: 3,
            ..Connect::v311(id)
        }
    }

    pub fn v5(id: &str) -> Connect {
        Connect {
            level: 5,
            ..Connect::v311(id)
        }
    }

    pub fn clean(mut self, c: bool) -> Self {
        self.clean = c;
        self
    }

    pub fn keepalive(mut self, k: u16) -> Self {
        self.keepalive = k;
        self
    }

    pub fn will(mut self, topic: &str, payload: &[u8], qos: u8, retain: bool) -> Self {
        self.will = Some(Will {
            topic: topic.to_string(),
            payload: payload.to_vec(),
            qos,
            retain,
            props: Props::new(),
        });
        self
    }

    /// Properties of the will set by [`Connect::will`] (MQTT 5).
    pub fn will_props(mut self, p: Props) -> Self {
        self.will.as_mut().expect("will_props after will").props = p;
        self
    }

    /// CONNECT properties (MQTT 5).
    pub fn props(mut self, p: Props) -> Self {
        self.props = p;
        self
    }

    /// Adds a Session Expiry Interval property (MQTT 5).
    pub fn session_expiry(mut self, s: u32) -> Self {
        self.props = self.props.u32(id::SESSION_EXPIRY, s);
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let v5 = self.level == 5;
        let mut flags = 0u8;
        if self.clean {
            flags |= 0x02;
        }
        if let Some(w) = &self.will {
            flags |= 0x04 | (w.qos << 3);
            if w.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        let flags = self.flags.unwrap_or(flags);
        let mut b = Vec::new();
        put_str(&mut b, self.proto.as_bytes());
        b.push(self.level);
        b.push(flags);
        b.extend_from_slice(&self.keepalive.to_be_bytes());
        if v5 {
            b.extend_from_slice(&self.props.with_len());
        }
        put_str(&mut b, self.client_id.as_bytes());
        if let Some(w) = &self.will {
            if v5 {
                b.extend_from_slice(&w.props.with_len());
            }
            put_str(&mut b, w.topic.as_bytes());
            put_str(&mut b, &w.payload);
        }
        if let Some(u) = &self.username {
            put_str(&mut b, u.as_bytes());
        }
        if let Some(p) = &self.password {
            put_str(&mut b, p);
        }
        packet(0x10, &b)
    }
}

pub fn publish(topic: &str, payload: &[u8], qos: u8, retain: bool, dup: bool, pid: u16) -> Vec<u8> {
    publish_raw_topic(topic.as_bytes(), payload, qos, retain, dup, pid)
}

pub fn publish_raw_topic(
    topic: &[u8],
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pid: u16,
) -> Vec<u8> {
    publish_with(topic, payload, qos, retain, dup, pid, None)
}

/// PUBLISH; `props` (MQTT 5 only) go between the packet id and the payload.
fn publish_with(
    topic: &[u8],
    payload: &[u8],
    qos: u8,
    retain: bool,
    dup: bool,
    pid: u16,
    props: Option<&Props>,
) -> Vec<u8> {
    let first = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
    let mut b = Vec::new();
    put_str(&mut b, topic);
    if qos > 0 {
        b.extend_from_slice(&pid.to_be_bytes());
    }
    if let Some(p) = props {
        b.extend_from_slice(&p.with_len());
    }
    b.extend_from_slice(payload);
    packet(first, &b)
}

pub fn subscribe(pid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    subscribe_with(pid, None, filters)
}

/// SUBSCRIBE; each filter is followed by its QoS (3.1.1) or options byte (MQTT 5, see [`opts`]).
fn subscribe_with(pid: u16, props: Option<&Props>, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut b = pid.to_be_bytes().to_vec();
    if let Some(p) = props {
        b.extend_from_slice(&p.with_len());
    }
    for (f, q) in filters {
        put_str(&mut b, f.as_bytes());
        b.push(*q);
    }
    packet(0x82, &b)
}

pub fn unsubscribe(pid: u16, filters: &[&str]) -> Vec<u8> {
    unsubscribe_with(pid, None, filters)
}

fn unsubscribe_with(pid: u16, props: Option<&Props>, filters: &[&str]) -> Vec<u8> {
    let mut b = pid.to_be_bytes().to_vec();
    if let Some(p) = props {
        b.extend_from_slice(&p.with_len());
    }
    for f in filters {
        put_str(&mut b, f.as_bytes());
    }
    packet(0xa2, &b)
}

pub fn suback(pid: u16, codes: &[u8]) -> Vec<u8> {
    let mut b = pid.to_be_bytes().to_vec();
    b.extend_from_slice(codes);
    packet(0x90, &b)
}

fn ack(first: u8, pid: u16) -> Vec<u8> {
    let [h, l] = pid.to_be_bytes();
    vec![first, 2, h, l]
}

pub fn puback(pid: u16) -> Vec<u8> {
    ack(0x40, pid)
}
pub fn pubrec(pid: u16) -> Vec<u8> {
    ack(0x50, pid)
}
pub fn pubrel(pid: u16) -> Vec<u8> {
    ack(0x62, pid)
}
pub fn pubcomp(pid: u16) -> Vec<u8> {
    ack(0x70, pid)
}
pub fn unsuback(pid: u16) -> Vec<u8> {
    ack(0xb0, pid)
}
pub const PINGREQ: [u8; 2] = [0xc0, 0];
pub const PINGRESP: [u8; 2] = [0xd0, 0];
pub const DISCONNECT: [u8; 2] = [0xe0, 0];
pub const CONNACK_OK: [u8; 4] = [0x20, 2, 0, 0];

// ---------------------------------------------------------------------------------------------
// MQTT 5 properties

/// Property identifiers (v5 section 2.2.2.2).
pub mod id {
    pub const PAYLOAD_FORMAT: u8 = 0x01;
    pub const MESSAGE_EXPIRY: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_ID: u8 = 0x0b;
    pub const SESSION_EXPIRY: u8 = 0x11;
    pub const ASSIGNED_CLIENT_ID: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTH_METHOD: u8 = 0x15;
    pub const AUTH_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
    pub const WILL_DELAY: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFO: u8 = 0x19;
    pub const RESPONSE_INFO: u8 = 0x1a;
    pub const SERVER_REFERENCE: u8 = 0x1c;
    pub const REASON_STRING: u8 = 0x1f;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUB_AVAILABLE: u8 = 0x28;
    pub const SUB_ID_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUB_AVAILABLE: u8 = 0x2a;
}

/// One property value, typed as the spec types it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PV {
    Byte(u8),
    U16(u16),
    U32(u32),
    Var(u32),
    Str(String),
    Bin(Vec<u8>),
    Pair(String, String),
}

#[derive(Clone, Copy)]
enum Kind {
    Byte,
    U16,
    U32,
    Var,
    Str,
    Bin,
    Pair,
}

fn kind_of(pid: u8) -> Option<Kind> {
    use id::*;
    Some(match pid {
        PAYLOAD_FORMAT
        | REQUEST_PROBLEM_INFO
        | REQUEST_RESPONSE_INFO
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUB_AVAILABLE
        | SUB_ID_AVAILABLE
        | SHARED_SUB_AVAILABLE => Kind::Byte,
        SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => Kind::U16,
        MESSAGE_EXPIRY | SESSION_EXPIRY | WILL_DELAY | MAXIMUM_PACKET_SIZE => Kind::U32,
        SUBSCRIPTION_ID => Kind::Var,
        CONTENT_TYPE | RESPONSE_TOPIC | ASSIGNED_CLIENT_ID | AUTH_METHOD | RESPONSE_INFO
        | SERVER_REFERENCE | REASON_STRING => Kind::Str,
        CORRELATION_DATA | AUTH_DATA => Kind::Bin,
        USER_PROPERTY => Kind::Pair,
        _ => return None,
    })
}

pub fn vbi(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    encode_len(n, &mut v);
    v
}

/// Reads a variable byte integer at `b[*at..]`.
pub fn read_vbi(b: &[u8], at: &mut usize) -> Result<u32, String> {
    let mut v = 0u32;
    for i in 0..4 {
        let x = *b.get(*at).ok_or("vbi runs past the end")?;
        *at += 1;
        v |= u32::from(x & 0x7f) << (7 * i);
        if x & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("vbi longer than 4 bytes".into())
}

/// Reads a two-byte integer at `b[*at..]`.
pub fn read_u16(b: &[u8], at: &mut usize) -> Result<u16, String> {
    let s = b.get(*at..*at + 2).ok_or("u16 runs past the end")?;
    *at += 2;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

fn read_bin(b: &[u8], at: &mut usize) -> Result<Vec<u8>, String> {
    let n = read_u16(b, at)? as usize;
    let s = b.get(*at..*at + n).ok_or("string runs past the end")?;
    *at += n;
    Ok(s.to_vec())
}

/// Reads a UTF-8 string at `b[*at..]`.
pub fn read_str(b: &[u8], at: &mut usize) -> Result<String, String> {
    String::from_utf8(read_bin(b, at)?).map_err(|_| "invalid UTF-8".to_string())
}

/// An ordered property list (order matters for User Properties).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Props(pub Vec<(u8, PV)>);

impl Props {
    pub fn new() -> Props {
        Props(Vec::new())
    }
    pub fn byte(mut self, pid: u8, v: u8) -> Self {
        self.0.push((pid, PV::Byte(v)));
        self
    }
    pub fn u16(mut self, pid: u8, v: u16) -> Self {
        self.0.push((pid, PV::U16(v)));
        self
    }
    pub fn u32(mut self, pid: u8, v: u32) -> Self {
        self.0.push((pid, PV::U32(v)));
        self
    }
    pub fn var(mut self, pid: u8, v: u32) -> Self {
        self.0.push((pid, PV::Var(v)));
        self
    }
    pub fn str(mut self, pid: u8, v: &str) -> Self {
        self.0.push((pid, PV::Str(v.to_string())));
        self
    }
    pub fn bin(mut self, pid: u8, v: &[u8]) -> Self {
        self.0.push((pid, PV::Bin(v.to_vec())));
        self
    }
    pub fn user(mut self, k: &str, v: &str) -> Self {
        self.0
            .push((id::USER_PROPERTY, PV::Pair(k.to_string(), v.to_string())));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The properties without their length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for (pid, v) in &self.0 {
            b.push(*pid);
            match v {
                PV::Byte(x) => b.push(*x),
                PV::U16(x) => b.extend_from_slice(&x.to_be_bytes()),
                PV::U32(x) => b.extend_from_slice(&x.to_be_bytes()),
                PV::Var(x) => encode_len(*x as usize, &mut b),
                PV::Str(s) => put_str(&mut b, s.as_bytes()),
                PV::Bin(s) => put_str(&mut b, s),
                PV::Pair(k, v) => {
                    put_str(&mut b, k.as_bytes());
                    put_str(&mut b, v.as_bytes());
                }
            }
        }
        b
    }

    /// Property Length followed by the properties.
    pub fn with_len(&self) -> Vec<u8> {
        let e = self.encode();
        let mut b = vbi(e.len());
        b.extend_from_slice(&e);
        b
    }

    /// Parses a Property Length and the properties at `b[*at..]`.
    pub fn parse(b: &[u8], at: &mut usize) -> Result<Props, String> {
        let len = read_vbi(b, at)? as usize;
        let end = *at + len;
        if end > b.len() {
            return Err(format!("property length {len} runs past the packet"));
        }
        let mut p = Props::new();
        while *at < end {
            let pid = b[*at];
            *at += 1;
            let v = match kind_of(pid).ok_or(format!("unknown property 0x{pid:02x}"))? {
                Kind::Byte => {
                    let x = *b.get(*at).ok_or("byte past the end")?;
                    *at += 1;
                    PV::Byte(x)
                }
                Kind::U16 => PV::U16(read_u16(b, at)?),
                Kind::U32 => {
                    let s = b.get(*at..*at + 4).ok_or("u32 past the end")?;
                    *at += 4;
                    PV::U32(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
                }
                Kind::Var => PV::Var(read_vbi(b, at)?),
                Kind::Str => PV::Str(read_str(b, at)?),
                Kind::Bin => PV::Bin(read_bin(b, at)?),
                Kind::Pair => PV::Pair(read_str(b, at)?, read_str(b, at)?),
            };
            p.0.push((pid, v));
        }
        if *at != end {
            return Err("properties overrun their length".into());
        }
        Ok(p)
    }

    pub fn get(&self, pid: u8) -> Option<&PV> {
        self.0.iter().find(|(i, _)| *i == pid).map(|(_, v)| v)
    }
    pub fn has(&self, pid: u8) -> bool {
        self.get(pid).is_some()
    }
    pub fn ids(&self) -> Vec<u8> {
        self.0.iter().map(|(i, _)| *i).collect()
    }
    /// Any integer-typed property as u32.
    pub fn int(&self, pid: u8) -> Option<u32> {
        match self.get(pid)? {
            PV::Byte(x) => Some(u32::from(*x)),
            PV::U16(x) => Some(u32::from(*x)),
            PV::U32(x) | PV::Var(x) => Some(*x),
            _ => None,
        }
    }
    pub fn string(&self, pid: u8) -> Option<String> {
        match self.get(pid)? {
            PV::Str(s) => Some(s.clone()),
            _ => None,
        }
    }
    pub fn binary(&self, pid: u8) -> Option<Vec<u8>> {
        match self.get(pid)? {
            PV::Bin(s) => Some(s.clone()),
            _ => None,
        }
    }
    /// Every Subscription Identifier, in order.
    pub fn sub_ids(&self) -> Vec<u32> {
        self.0
            .iter()
            .filter_map(|(i, v)| match (i, v) {
                (&id::SUBSCRIPTION_ID, PV::Var(x)) => Some(*x),
                _ => None,
            })
            .collect()
    }
    /// Every User Property, in order.
    pub fn users(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .filter_map(|(_, v)| match v {
                PV::Pair(k, v) => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }
    /// The same list without the given property ids.
    pub fn without(&self, ids: &[u8]) -> Props {
        Props(
            self.0
                .iter()
                .filter(|(i, _)| !ids.contains(i))
                .cloned()
                .collect(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// MQTT 5 packets

/// A v5 PUBLISH (topic may be empty when a Topic Alias is given).
pub fn publish5(
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    pid: u16,
    p: &Props,
) -> Vec<u8> {
    publish_with(topic.as_bytes(), payload, qos, retain, false, pid, Some(p))
}

/// Subscription options byte: QoS, No Local, Retain As Published, Retain Handling.
pub fn opts(qos: u8, no_local: bool, rap: bool, retain_handling: u8) -> u8 {
    qos | (u8::from(no_local) << 2) | (u8::from(rap) << 3) | (retain_handling << 4)
}

pub fn subscribe5(pid: u16, p: &Props, filters: &[(&str, u8)]) -> Vec<u8> {
    subscribe_with(pid, Some(p), filters)
}

pub fn unsubscribe5(pid: u16, filters: &[&str]) -> Vec<u8> {
    unsubscribe_with(pid, Some(&Props::new()), filters)
}

/// PUBACK/PUBREC/PUBREL/PUBCOMP: the short form when the reason is 0 and there are no
/// properties (v5 3.4.2.1).
pub fn ack5(first: u8, pid: u16, rc: u8, p: &Props) -> Vec<u8> {
    let mut b = pid.to_be_bytes().to_vec();
    if rc != 0 || !p.is_empty() {
        b.push(rc);
        if !p.is_empty() {
            b.extend_from_slice(&p.with_len());
        }
    }
    packet(first, &b)
}

/// DISCONNECT with a reason code and properties (the short form for 0 without properties).
pub fn disconnect5(rc: u8, p: &Props) -> Vec<u8> {
    let mut b = Vec::new();
    if rc != 0 || !p.is_empty() {
        b.push(rc);
        if !p.is_empty() {
            b.extend_from_slice(&p.with_len());
        }
    }
    packet(0xe0, &b)
}
