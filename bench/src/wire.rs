//! MQTT 3.1.1 on the wire: the few packets the load generator and the forward server send,
//! encoded by hand, and an incremental decoder that says "need more bytes" as a normal result.
//!
//! Nothing here touches a socket or a clock. Decoding never panics on hostile input: every
//! length is checked against the buffer before it is used, and a malformed packet is a
//! [`DecodeError`] that the caller turns into an error message.
//!
//! Independent of `midge::codec` on purpose: a second implementation of the wire format, so a
//! broker that encodes a packet wrongly fails the benchmark instead of agreeing with itself.

use std::fmt;

/// First byte of CONNECT.
pub const CONNECT: u8 = 0x10;
/// First byte of PUBACK.
pub const PUBACK: u8 = 0x40;
/// First byte of PUBREC.
pub const PUBREC: u8 = 0x50;
/// First byte of PUBREL (flags 0b0010 are mandatory, MQTT-3.6.1-1).
pub const PUBREL: u8 = 0x62;
/// First byte of PUBCOMP.
pub const PUBCOMP: u8 = 0x70;

/// Largest packet either side accepts; anything bigger is treated as a protocol error rather
/// than buffered, so a misbehaving peer cannot make us allocate without bound.
pub const MAX_PACKET: usize = 16 << 20;

/// Bytes at the start of every benchmark payload: publisher id (u32), sequence (u64) and send
/// time in ns since the run's epoch (u64), all little-endian.
pub const STAMP_LEN: usize = 20;

/// Why bytes from a peer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The remaining-length field runs past four bytes (MQTT-2.2.3).
    MalformedLength,
    /// The remaining length exceeds [`MAX_PACKET`].
    TooLarge(usize),
    /// A packet's body is shorter than its fixed fields.
    Truncated(u8),
    /// A packet type this tool does not expect or a reserved type.
    Unexpected(u8),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::MalformedLength => write!(f, "malformed remaining length"),
            DecodeError::TooLarge(n) => write!(f, "packet of {n} bytes exceeds the limit"),
            DecodeError::Truncated(b) => write!(f, "packet 0x{b:02x} shorter than its fields"),
            DecodeError::Unexpected(b) => write!(f, "unexpected packet type 0x{b:02x}"),
        }
    }
}

/// A decoded packet, borrowing from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// CONNECT; the forward server only needs to know that it arrived.
    Connect,
    /// CONNACK with its return code (0 = accepted).
    ConnAck {
        /// Return code, 0 when the connection is accepted.
        code: u8,
    },
    /// PUBLISH.
    Publish {
        /// QoS from the fixed header.
        qos: u8,
        /// Retain flag.
        retain: bool,
        /// Topic name bytes.
        topic: &'a [u8],
        /// Packet identifier, 0 at QoS 0.
        id: u16,
        /// Application payload.
        payload: &'a [u8],
    },
    /// PUBACK.
    PubAck(u16),
    /// PUBREC.
    PubRec(u16),
    /// PUBREL.
    PubRel(u16),
    /// PUBCOMP.
    PubComp(u16),
    /// SUBSCRIBE: packet id and the raw list of (filter, QoS) pairs.
    Subscribe {
        /// Packet identifier.
        id: u16,
        /// Raw topic-filter list, read with [`filters`].
        list: &'a [u8],
    },
    /// SUBACK: packet id and one return code per filter.
    SubAck {
        /// Packet identifier.
        id: u16,
        /// Return codes; 0x80 is a failure.
        codes: &'a [u8],
    },
    /// UNSUBSCRIBE (packet id only).
    Unsubscribe(u16),
    /// UNSUBACK.
    UnsubAck(u16),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect,
}

/// Appends an MQTT variable-byte remaining length.
pub fn put_len(buf: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.push(byte);
        if len == 0 {
            break;
        }
    }
}

/// Number of bytes [`put_len`] writes for `len`.
pub fn len_len(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u16).to_be_bytes());
    buf.extend_from_slice(s);
}

/// Appends a CONNECT (protocol level 4, no will, no credentials). Clean session, unless the
/// environment has `MIDGE_BENCH_PERSISTENT=1`: then every session is persistent (clean
/// session 0), which is what a broker with `persistence true` has to store.
pub fn connect(buf: &mut Vec<u8>, client_id: &str, keepalive: u16) {
    let persistent = std::env::var_os("MIDGE_BENCH_PERSISTENT").is_some_and(|v| v == "1");
    connect_session(buf, client_id, keepalive, persistent);
}

/// Appends a CONNECT like [`connect`], persistent (clean session 0) when `persistent` is set
/// whatever the environment says.
pub fn connect_session(buf: &mut Vec<u8>, client_id: &str, keepalive: u16, persistent: bool) {
    let rem = 10 + 2 + client_id.len();
    buf.push(CONNECT);
    put_len(buf, rem);
    put_str(buf, b"MQTT");
    buf.push(4); // protocol level 3.1.1
    buf.push(if persistent { 0x00 } else { 0x02 });
    buf.extend_from_slice(&keepalive.to_be_bytes());
    put_str(buf, client_id.as_bytes());
}

/// Appends a SUBSCRIBE for one filter.
pub fn subscribe(buf: &mut Vec<u8>, id: u16, filter: &[u8], qos: u8) {
    buf.push(0x82);
    put_len(buf, 2 + 2 + filter.len() + 1);
    buf.extend_from_slice(&id.to_be_bytes());
    put_str(buf, filter);
    buf.push(qos);
}

/// Appends the fixed header, topic and packet id of a PUBLISH whose payload (`payload_len`
/// bytes) the caller appends next.
pub fn publish_head(
    buf: &mut Vec<u8>,
    topic: &[u8],
    qos: u8,
    retain: bool,
    id: u16,
    payload_len: usize,
) {
    let id_len = if qos > 0 { 2 } else { 0 };
    buf.push(0x30 | (qos << 1) | u8::from(retain));
    put_len(buf, 2 + topic.len() + id_len + payload_len);
    put_str(buf, topic);
    if qos > 0 {
        buf.extend_from_slice(&id.to_be_bytes());
    }
}

/// Total encoded size of a PUBLISH.
pub fn publish_len(topic_len: usize, qos: u8, payload_len: usize) -> usize {
    let rem = 2 + topic_len + if qos > 0 { 2 } else { 0 } + payload_len;
    1 + len_len(rem) + rem
}

/// Appends a two-byte-body acknowledgement (`kind` is [`PUBACK`], [`PUBREC`], [`PUBREL`] or
/// [`PUBCOMP`]).
pub fn ack(buf: &mut Vec<u8>, kind: u8, id: u16) {
    let [hi, lo] = id.to_be_bytes();
    buf.extend_from_slice(&[kind, 2, hi, lo]);
}

/// Appends a PINGREQ.
pub fn pingreq(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&[0xC0, 0]);
}

/// Appends a DISCONNECT.
pub fn disconnect(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&[0xE0, 0]);
}

/// Writes the benchmark stamp into the first [`STAMP_LEN`] bytes of `payload`.
pub fn stamp(payload: &mut [u8], publisher: u32, seq: u64, sent_ns: u64) {
    payload[0..4].copy_from_slice(&publisher.to_le_bytes());
    payload[4..12].copy_from_slice(&seq.to_le_bytes());
    payload[12..20].copy_from_slice(&sent_ns.to_le_bytes());
}

/// Reads the stamp written by [`stamp`]; `None` if the payload is too short to hold one.
pub fn read_stamp(payload: &[u8]) -> Option<(u32, u64, u64)> {
    let p = payload.get(..STAMP_LEN)?;
    let publisher = u32::from_le_bytes(p[0..4].try_into().ok()?);
    let seq = u64::from_le_bytes(p[4..12].try_into().ok()?);
    let sent = u64::from_le_bytes(p[12..20].try_into().ok()?);
    Some((publisher, seq, sent))
}

fn be16(b: &[u8], at: usize, kind: u8) -> Result<u16, DecodeError> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(DecodeError::Truncated(kind)),
    }
}

/// Decodes the packet at the start of `buf`: `Ok(None)` when more bytes are needed, otherwise
/// the packet and its total length in bytes.
pub fn decode(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut rem = 0usize;
    let mut shift = 0;
    let mut pos = 1;
    loop {
        let Some(&b) = buf.get(pos) else {
            return Ok(None);
        };
        rem |= usize::from(b & 0x7F) << shift;
        pos += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if pos > 4 {
            return Err(DecodeError::MalformedLength);
        }
    }
    if rem > MAX_PACKET {
        return Err(DecodeError::TooLarge(rem));
    }
    let total = pos + rem;
    let Some(body) = buf.get(pos..total) else {
        return Ok(None);
    };
    let packet = match first >> 4 {
        1 => Packet::Connect,
        2 => Packet::ConnAck {
            code: *body.get(1).ok_or(DecodeError::Truncated(first))?,
        },
        3 => {
            let qos = (first >> 1) & 3;
            if qos == 3 {
                return Err(DecodeError::Unexpected(first));
            }
            let tlen = usize::from(be16(body, 0, first)?);
            let topic = body.get(2..2 + tlen).ok_or(DecodeError::Truncated(first))?;
            let mut at = 2 + tlen;
            let mut id = 0;
            if qos > 0 {
                id = be16(body, at, first)?;
                at += 2;
            }
            Packet::Publish {
                qos,
                retain: first & 1 == 1,
                topic,
                id,
                payload: body.get(at..).ok_or(DecodeError::Truncated(first))?,
            }
        }
        4 => Packet::PubAck(be16(body, 0, first)?),
        5 => Packet::PubRec(be16(body, 0, first)?),
        6 => Packet::PubRel(be16(body, 0, first)?),
        7 => Packet::PubComp(be16(body, 0, first)?),
        8 => Packet::Subscribe {
            id: be16(body, 0, first)?,
            list: &body[2..],
        },
        9 => Packet::SubAck {
            id: be16(body, 0, first)?,
            codes: &body[2..],
        },
        10 => Packet::Unsubscribe(be16(body, 0, first)?),
        11 => Packet::UnsubAck(be16(body, 0, first)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect,
        _ => return Err(DecodeError::Unexpected(first)),
    };
    Ok(Some((packet, total)))
}

/// Splits a SUBSCRIBE's filter list into (filter, requested QoS) pairs; stops at the first
/// malformed entry.
pub fn filters(mut list: &[u8]) -> Vec<(&[u8], u8)> {
    let mut out = Vec::new();
    while list.len() >= 3 {
        let n = usize::from(u16::from_be_bytes([list[0], list[1]]));
        let (Some(filter), Some(&qos)) = (list.get(2..2 + n), list.get(2 + n)) else {
            break;
        };
        out.push((filter, qos.min(2)));
        list = &list[3 + n..];
    }
    out
}

/// MQTT topic matching with `+` and `#` wildcards (MQTT-4.7); `$` topics are not matched by a
/// leading wildcard (MQTT-4.7.2-1).
pub fn topic_matches(filter: &[u8], topic: &[u8]) -> bool {
    if topic.first() == Some(&b'$') && matches!(filter.first(), Some(b'+' | b'#')) {
        return false;
    }
    let mut f = filter.split(|&b| b == b'/');
    let mut t = topic.split(|&b| b == b'/');
    loop {
        match (f.next(), t.next()) {
            (Some(b"#"), _) => return true,
            (Some(b"+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips_across_split_reads() {
        let mut buf = Vec::new();
        let payload = [7u8; 300];
        publish_head(&mut buf, b"a/b", 1, false, 42, payload.len());
        buf.extend_from_slice(&payload);
        assert_eq!(buf.len(), publish_len(3, 1, 300));
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Ok(None));
        }
        let Ok(Some((
            Packet::Publish {
                qos,
                topic,
                id,
                payload: p,
                ..
            },
            n,
        ))) = decode(&buf)
        else {
            panic!("not a publish");
        };
        assert_eq!(
            (qos, topic, id, p.len(), n),
            (1, &b"a/b"[..], 42, 300, buf.len())
        );
    }

    #[test]
    fn connect_is_exact_3_1_1() {
        let mut buf = Vec::new();
        connect(&mut buf, "ab", 60);
        assert_eq!(
            buf,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'a', b'b']
        );
    }

    #[test]
    fn five_byte_length_is_malformed() {
        assert_eq!(
            decode(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::MalformedLength)
        );
    }

    #[test]
    fn wildcards_match() {
        assert!(topic_matches(b"#", b"a/b"));
        assert!(topic_matches(b"a/+", b"a/b"));
        assert!(!topic_matches(b"a/+", b"a/b/c"));
        assert!(topic_matches(b"a/#", b"a"));
        assert!(!topic_matches(b"#", b"$SYS/x"));
    }
}
