//! MQTT 5 properties (v5 §2.2.2).
//!
//! A property list is a variable-byte length followed by `identifier value` pairs. Each packet
//! type allows only some identifiers, and most may appear at most once; breaking either rule is
//! a Protocol Error (v5 §2.2.2.2), while a list that runs past its length is a Malformed Packet.
//! [`Properties`] holds every property a packet can carry; unused ones stay `None`/empty.

use super::decode::{DecodeError, Reader};
use super::encode::{put_binary, put_str, put_varint, varint_len};

/// Which packet (or will) a property list belongs to; decides which identifiers are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropContext {
    Connect,
    Will,
    Connack,
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    Ack,
    Subscribe,
    Suback,
    Unsubscribe,
    Unsuback,
    Disconnect,
    Auth,
}

/// The properties of one packet: nothing at all when it has none (every MQTT 3 packet and most
/// MQTT 5 acknowledgements), else a [`PropertySet`] on the heap. A packet moves through the
/// decoder and the broker by value several times; with every property inline it was some
/// 400 bytes, and copying it cost more than handling a PUBACK. Reads see the empty set when
/// there is none; the first write makes one.
#[derive(Clone, Default)]
pub struct Properties(Option<Box<PropertySet>>);

/// The empty set, which a packet without properties reads.
static EMPTY: PropertySet = PropertySet {
    payload_format_indicator: None,
    message_expiry_interval: None,
    content_type: None,
    response_topic: None,
    correlation_data: None,
    subscription_identifiers: Vec::new(),
    session_expiry_interval: None,
    assigned_client_identifier: None,
    server_keep_alive: None,
    authentication_method: None,
    authentication_data: None,
    request_problem_information: None,
    will_delay_interval: None,
    request_response_information: None,
    response_information: None,
    server_reference: None,
    reason_string: None,
    receive_maximum: None,
    topic_alias_maximum: None,
    topic_alias: None,
    maximum_qos: None,
    retain_available: None,
    user_properties: Vec::new(),
    maximum_packet_size: None,
    wildcard_subscription_available: None,
    subscription_identifier_available: None,
    shared_subscription_available: None,
};

impl std::ops::Deref for Properties {
    type Target = PropertySet;
    fn deref(&self) -> &PropertySet {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl std::ops::DerefMut for Properties {
    fn deref_mut(&mut self) -> &mut PropertySet {
        self.0.get_or_insert_with(Box::default)
    }
}

impl From<PropertySet> for Properties {
    fn from(set: PropertySet) -> Properties {
        Properties(Some(Box::new(set)))
    }
}

impl PartialEq for Properties {
    fn eq(&self, other: &Properties) -> bool {
        **self == **other
    }
}

impl Eq for Properties {}

impl std::fmt::Debug for Properties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// Every property of MQTT 5.0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertySet {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub subscription_identifiers: Vec<u32>,
    pub session_expiry_interval: Option<u32>,
    pub assigned_client_identifier: Option<String>,
    pub server_keep_alive: Option<u16>,
    pub authentication_method: Option<String>,
    pub authentication_data: Option<Vec<u8>>,
    pub request_problem_information: Option<u8>,
    pub will_delay_interval: Option<u32>,
    pub request_response_information: Option<u8>,
    pub response_information: Option<String>,
    pub server_reference: Option<String>,
    pub reason_string: Option<String>,
    pub receive_maximum: Option<u16>,
    pub topic_alias_maximum: Option<u16>,
    pub topic_alias: Option<u16>,
    pub maximum_qos: Option<u8>,
    pub retain_available: Option<u8>,
    pub user_properties: Vec<(String, String)>,
    pub maximum_packet_size: Option<u32>,
    pub wildcard_subscription_available: Option<u8>,
    pub subscription_identifier_available: Option<u8>,
    pub shared_subscription_available: Option<u8>,
}

mod id {
    pub(crate) const PAYLOAD_FORMAT_INDICATOR: u32 = 0x01;
    pub(crate) const MESSAGE_EXPIRY_INTERVAL: u32 = 0x02;
    pub(crate) const CONTENT_TYPE: u32 = 0x03;
    pub(crate) const RESPONSE_TOPIC: u32 = 0x08;
    pub(crate) const CORRELATION_DATA: u32 = 0x09;
    pub(crate) const SUBSCRIPTION_IDENTIFIER: u32 = 0x0B;
    pub(crate) const SESSION_EXPIRY_INTERVAL: u32 = 0x11;
    pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u32 = 0x12;
    pub(crate) const SERVER_KEEP_ALIVE: u32 = 0x13;
    pub(crate) const AUTHENTICATION_METHOD: u32 = 0x15;
    pub(crate) const AUTHENTICATION_DATA: u32 = 0x16;
    pub(crate) const REQUEST_PROBLEM_INFORMATION: u32 = 0x17;
    pub(crate) const WILL_DELAY_INTERVAL: u32 = 0x18;
    pub(crate) const REQUEST_RESPONSE_INFORMATION: u32 = 0x19;
    pub(crate) const RESPONSE_INFORMATION: u32 = 0x1A;
    pub(crate) const SERVER_REFERENCE: u32 = 0x1C;
    pub(crate) const REASON_STRING: u32 = 0x1F;
    pub(crate) const RECEIVE_MAXIMUM: u32 = 0x21;
    pub(crate) const TOPIC_ALIAS_MAXIMUM: u32 = 0x22;
    pub(crate) const TOPIC_ALIAS: u32 = 0x23;
    pub(crate) const MAXIMUM_QOS: u32 = 0x24;
    pub(crate) const RETAIN_AVAILABLE: u32 = 0x25;
    pub(crate) const USER_PROPERTY: u32 = 0x26;
    pub(crate) const MAXIMUM_PACKET_SIZE: u32 = 0x27;
    pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u32 = 0x28;
    pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u32 = 0x29;
    pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u32 = 0x2A;
}

/// True when property `id` may appear in `ctx` (the table of v5 §2.2.2.2).
fn allowed(id: u32, ctx: PropContext) -> bool {
    use PropContext::*;
    match id {
        id::PAYLOAD_FORMAT_INDICATOR
        | id::MESSAGE_EXPIRY_INTERVAL
        | id::CONTENT_TYPE
        | id::RESPONSE_TOPIC
        | id::CORRELATION_DATA => matches!(ctx, Publish | Will),
        id::SUBSCRIPTION_IDENTIFIER => matches!(ctx, Publish | Subscribe),
        id::SESSION_EXPIRY_INTERVAL => matches!(ctx, Connect | Connack | Disconnect),
        id::ASSIGNED_CLIENT_IDENTIFIER
        | id::SERVER_KEEP_ALIVE
        | id::RESPONSE_INFORMATION
        | id::MAXIMUM_QOS
        | id::RETAIN_AVAILABLE
        | id::WILDCARD_SUBSCRIPTION_AVAILABLE
        | id::SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | id::SHARED_SUBSCRIPTION_AVAILABLE => ctx == Connack,
        id::AUTHENTICATION_METHOD | id::AUTHENTICATION_DATA => {
            matches!(ctx, Connect | Connack | Auth)
        }
        id::REQUEST_PROBLEM_INFORMATION | id::REQUEST_RESPONSE_INFORMATION => ctx == Connect,
        id::WILL_DELAY_INTERVAL => ctx == Will,
        id::SERVER_REFERENCE => matches!(ctx, Connack | Disconnect),
        id::REASON_STRING => matches!(ctx, Connack | Ack | Suback | Unsuback | Disconnect | Auth),
        id::RECEIVE_MAXIMUM | id::TOPIC_ALIAS_MAXIMUM | id::MAXIMUM_PACKET_SIZE => {
            matches!(ctx, Connect | Connack)
        }
        id::TOPIC_ALIAS => ctx == Publish,
        id::USER_PROPERTY => true,
        _ => false,
    }
}

/// Stores `v` in `slot`, or fails if the property was already there (v5 §2.2.2.2).
fn set_once<T>(slot: &mut Option<T>, v: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::DuplicateProperty);
    }
    *slot = Some(v);
    Ok(())
}

/// A byte property that may only be 0 or 1.
fn flag(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    match r.u8()? {
        v @ (0 | 1) => Ok(v),
        _ => Err(DecodeError::Protocol("property value must be 0 or 1")),
    }
}

impl Properties {
    /// The set, if the packet has one, to change without making one.
    pub fn set_mut(&mut self) -> Option<&mut PropertySet> {
        self.0.as_deref_mut()
    }

    /// True when no property is set (a v3 packet, or a v5 packet with an empty list).
    pub(crate) fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(|set| *set == EMPTY)
    }

    /// Reads a property list (length prefix included) for a packet of kind `ctx`.
    pub(crate) fn read(r: &mut Reader<'_>, ctx: PropContext) -> Result<Properties, DecodeError> {
        let len = r.varint()? as usize;
        if len == 0 {
            return Ok(Properties::default());
        }
        let mut r = r.sub(len)?;
        let mut p = PropertySet::default();
        while !r.is_empty() {
            let id = r.varint()?;
            if !allowed(id, ctx) {
                // v5 §2.2.2.2: an identifier not valid for the packet is a Malformed Packet.
                return Err(DecodeError::Malformed(
                    "property not allowed in this packet",
                ));
            }
            match id {
                id::PAYLOAD_FORMAT_INDICATOR => {
                    set_once(&mut p.payload_format_indicator, flag(&mut r)?)?
                }
                id::MESSAGE_EXPIRY_INTERVAL => set_once(&mut p.message_expiry_interval, r.u32()?)?,
                id::CONTENT_TYPE => set_once(&mut p.content_type, r.string()?)?,
                id::RESPONSE_TOPIC => {
                    let t = r.string()?;
                    if !super::packet::valid_topic_name(&t) {
                        return Err(DecodeError::Protocol("response topic must be a topic name"));
                    }
                    set_once(&mut p.response_topic, t)?
                }
                id::CORRELATION_DATA => set_once(&mut p.correlation_data, r.binary()?.to_vec())?,
                id::SUBSCRIPTION_IDENTIFIER => {
                    let v = r.varint()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("subscription identifier 0"));
                    }
                    if ctx == PropContext::Subscribe && !p.subscription_identifiers.is_empty() {
                        return Err(DecodeError::DuplicateProperty);
                    }
                    p.subscription_identifiers.push(v);
                }
                id::SESSION_EXPIRY_INTERVAL => set_once(&mut p.session_expiry_interval, r.u32()?)?,
                id::ASSIGNED_CLIENT_IDENTIFIER => {
                    set_once(&mut p.assigned_client_identifier, r.string()?)?
                }
                id::SERVER_KEEP_ALIVE => set_once(&mut p.server_keep_alive, r.u16()?)?,
                id::AUTHENTICATION_METHOD => set_once(&mut p.authentication_method, r.string()?)?,
                id::AUTHENTICATION_DATA => {
                    set_once(&mut p.authentication_data, r.binary()?.to_vec())?
                }
                id::REQUEST_PROBLEM_INFORMATION => {
                    set_once(&mut p.request_problem_information, flag(&mut r)?)?
                }
                id::WILL_DELAY_INTERVAL => set_once(&mut p.will_delay_interval, r.u32()?)?,
                id::REQUEST_RESPONSE_INFORMATION => {
                    set_once(&mut p.request_response_information, flag(&mut r)?)?
                }
                id::RESPONSE_INFORMATION => set_once(&mut p.response_information, r.string()?)?,
                id::SERVER_REFERENCE => set_once(&mut p.server_reference, r.string()?)?,
                id::REASON_STRING => set_once(&mut p.reason_string, r.string()?)?,
                id::RECEIVE_MAXIMUM => {
                    let v = r.u16()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("receive maximum 0"));
                    }
                    set_once(&mut p.receive_maximum, v)?
                }
                id::TOPIC_ALIAS_MAXIMUM => set_once(&mut p.topic_alias_maximum, r.u16()?)?,
                id::TOPIC_ALIAS => set_once(&mut p.topic_alias, r.u16()?)?,
                id::MAXIMUM_QOS => set_once(&mut p.maximum_qos, flag(&mut r)?)?,
                id::RETAIN_AVAILABLE => set_once(&mut p.retain_available, flag(&mut r)?)?,
                id::USER_PROPERTY => {
                    let k = r.string()?;
                    let v = r.string()?;
                    p.user_properties.push((k, v));
                }
                id::MAXIMUM_PACKET_SIZE => {
                    let v = r.u32()?;
                    if v == 0 {
                        return Err(DecodeError::Protocol("maximum packet size 0"));
                    }
                    set_once(&mut p.maximum_packet_size, v)?
                }
                id::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                    set_once(&mut p.wildcard_subscription_available, flag(&mut r)?)?
                }
                id::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                    set_once(&mut p.subscription_identifier_available, flag(&mut r)?)?
                }
                id::SHARED_SUBSCRIPTION_AVAILABLE => {
                    set_once(&mut p.shared_subscription_available, flag(&mut r)?)?
                }
                _ => return Err(DecodeError::Malformed("unknown property")),
            }
        }
        Ok(p.into())
    }

    /// Calls `f(id, value)` for each property, in wire order; the single place that knows how
    /// each property is laid out, used both to size and to write a list.
    fn for_each(&self, mut f: impl FnMut(u32, Value<'_>)) {
        use Value::*;
        let opt_u8 = |id, v: Option<u8>, f: &mut dyn FnMut(u32, Value<'_>)| {
            if let Some(v) = v {
                f(id, Byte(v));
            }
        };
        opt_u8(
            id::PAYLOAD_FORMAT_INDICATOR,
            self.payload_format_indicator,
            &mut f,
        );
        if let Some(v) = self.message_expiry_interval {
            f(id::MESSAGE_EXPIRY_INTERVAL, U32(v));
        }
        if let Some(v) = &self.content_type {
            f(id::CONTENT_TYPE, Str(v));
        }
        if let Some(v) = &self.response_topic {
            f(id::RESPONSE_TOPIC, Str(v));
        }
        if let Some(v) = &self.correlation_data {
            f(id::CORRELATION_DATA, Bin(v));
        }
        for v in &self.subscription_identifiers {
            f(id::SUBSCRIPTION_IDENTIFIER, VarInt(*v));
        }
        if let Some(v) = self.session_expiry_interval {
            f(id::SESSION_EXPIRY_INTERVAL, U32(v));
        }
        if let Some(v) = &self.assigned_client_identifier {
            f(id::ASSIGNED_CLIENT_IDENTIFIER, Str(v));
        }
        if let Some(v) = self.server_keep_alive {
            f(id::SERVER_KEEP_ALIVE, U16(v));
        }
        if let Some(v) = &self.authentication_method {
            f(id::AUTHENTICATION_METHOD, Str(v));
        }
        if let Some(v) = &self.authentication_data {
            f(id::AUTHENTICATION_DATA, Bin(v));
        }
        opt_u8(
            id::REQUEST_PROBLEM_INFORMATION,
            self.request_problem_information,
            &mut f,
        );
        if let Some(v) = self.will_delay_interval {
            f(id::WILL_DELAY_INTERVAL, U32(v));
        }
        opt_u8(
            id::REQUEST_RESPONSE_INFORMATION,
            self.request_response_information,
            &mut f,
        );
        if let Some(v) = &self.response_information {
            f(id::RESPONSE_INFORMATION, Str(v));
        }
        if let Some(v) = &self.server_reference {
            f(id::SERVER_REFERENCE, Str(v));
        }
        if let Some(v) = &self.reason_string {
            f(id::REASON_STRING, Str(v));
        }
        if let Some(v) = self.receive_maximum {
            f(id::RECEIVE_MAXIMUM, U16(v));
        }
        if let Some(v) = self.topic_alias_maximum {
            f(id::TOPIC_ALIAS_MAXIMUM, U16(v));
        }
        if let Some(v) = self.topic_alias {
            f(id::TOPIC_ALIAS, U16(v));
        }
        opt_u8(id::MAXIMUM_QOS, self.maximum_qos, &mut f);
        opt_u8(id::RETAIN_AVAILABLE, self.retain_available, &mut f);
        for (k, v) in &self.user_properties {
            f(id::USER_PROPERTY, Pair(k, v));
        }
        if let Some(v) = self.maximum_packet_size {
            f(id::MAXIMUM_PACKET_SIZE, U32(v));
        }
        opt_u8(
            id::WILDCARD_SUBSCRIPTION_AVAILABLE,
            self.wildcard_subscription_available,
            &mut f,
        );
        opt_u8(
            id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            self.subscription_identifier_available,
            &mut f,
        );
        opt_u8(
            id::SHARED_SUBSCRIPTION_AVAILABLE,
            self.shared_subscription_available,
            &mut f,
        );
    }

    /// Bytes of the property list, without its own length prefix.
    pub(crate) fn body_len(&self) -> usize {
        if self.0.is_none() {
            return 0;
        }
        let mut n = 0;
        self.for_each(|id, v| n += varint_len(id) + v.len());
        n
    }

    /// Bytes of the property list including its length prefix.
    pub(crate) fn wire_len(&self) -> usize {
        let n = self.body_len();
        varint_len(n as u32) + n
    }

    /// Writes the property list with its length prefix.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        put_varint(out, self.body_len() as u32);
        self.for_each(|id, v| {
            put_varint(out, id);
            v.write(out);
        });
    }
}

/// One property value, borrowed, for sizing and writing.
enum Value<'a> {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(&'a str),
    Bin(&'a [u8]),
    Pair(&'a str, &'a str),
}

impl Value<'_> {
    fn len(&self) -> usize {
        match self {
            Value::Byte(_) => 1,
            Value::U16(_) => 2,
            Value::U32(_) => 4,
            Value::VarInt(v) => varint_len(*v),
            Value::Str(s) => 2 + s.len(),
            Value::Bin(b) => 2 + b.len(),
            Value::Pair(k, v) => 4 + k.len() + v.len(),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Value::Byte(v) => out.push(*v),
            Value::U16(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::U32(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::VarInt(v) => put_varint(out, *v),
            Value::Str(s) => put_str(out, s),
            Value::Bin(b) => put_binary(out, b),
            Value::Pair(k, v) => {
                put_str(out, k);
                put_str(out, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(p: &Properties, ctx: PropContext) -> Properties {
        let mut out = Vec::new();
        p.write(&mut out);
        assert_eq!(out.len(), p.wire_len());
        let mut r = Reader::new(&out);
        let back = Properties::read(&mut r, ctx).expect("decodes");
        assert!(r.is_empty());
        back
    }

    #[test]
    fn a_packet_without_properties_carries_a_pointer_at_most() {
        assert_eq!(std::mem::size_of::<Properties>(), 8);
        assert!(Properties::default().0.is_none());
        let mut r = Reader::new(&[0]);
        let none = Properties::read(&mut r, PropContext::Ack).expect("decodes");
        assert!(none.0.is_none() && none.is_empty());
        let mut p = Properties::default();
        assert_eq!(p.reason_string, None, "reads see the empty set");
        assert!(p.set_mut().is_none());
        p.reason_string = Some("why".into());
        assert!(!p.is_empty() && p.set_mut().is_some());
        // What the decoder hands the broker, moved by value: 48 bytes (with inline properties
        // it was over 400).
        assert!(std::mem::size_of::<crate::codec::Packet<'_>>() <= 48);
    }

    #[test]
    fn publish_properties_round_trip() {
        let p: Properties = PropertySet {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(30),
            content_type: Some("text/plain".into()),
            response_topic: Some("r/t".into()),
            correlation_data: Some(vec![1, 2, 3]),
            subscription_identifiers: vec![7, 300],
            topic_alias: Some(3),
            user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            ..PropertySet::default()
        }
        .into();
        assert_eq!(roundtrip(&p, PropContext::Publish), p);
    }

    #[test]
    fn connack_properties_round_trip() {
        let p: Properties = PropertySet {
            session_expiry_interval: Some(10),
            assigned_client_identifier: Some("auto-1".into()),
            server_keep_alive: Some(60),
            receive_maximum: Some(20),
            topic_alias_maximum: Some(10),
            maximum_qos: Some(1),
            retain_available: Some(1),
            maximum_packet_size: Some(1000),
            wildcard_subscription_available: Some(1),
            subscription_identifier_available: Some(1),
            shared_subscription_available: Some(1),
            reason_string: Some("ok".into()),
            ..PropertySet::default()
        }
        .into();
        assert_eq!(roundtrip(&p, PropContext::Connack), p);
    }

    #[test]
    fn duplicate_property_is_a_protocol_error_v5_2_2_2_2() {
        // length 4: two message expiry intervals would need 10 bytes; use two payload format flags
        let bytes = [4, 0x01, 0, 0x01, 1];
        let mut r = Reader::new(&bytes);
        assert_eq!(
            Properties::read(&mut r, PropContext::Publish),
            Err(DecodeError::DuplicateProperty)
        );
    }

    #[test]
    fn property_not_allowed_in_packet_is_malformed_v5_2_2_2_2() {
        // session expiry interval inside PUBLISH
        let bytes = [5, 0x11, 0, 0, 0, 1];
        let mut r = Reader::new(&bytes);
        assert!(matches!(
            Properties::read(&mut r, PropContext::Publish),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn property_list_longer_than_packet_is_malformed() {
        let bytes = [9, 0x01, 0];
        let mut r = Reader::new(&bytes);
        assert_eq!(
            Properties::read(&mut r, PropContext::Publish),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn receive_maximum_zero_is_a_protocol_error() {
        let bytes = [3, 0x21, 0, 0];
        let mut r = Reader::new(&bytes);
        assert!(Properties::read(&mut r, PropContext::Connect).is_err());
    }
}
