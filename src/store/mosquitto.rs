//! Reading Mosquitto's persistence file (`mosquitto.db`), so that switching from Mosquitto keeps
//! its retained messages and persistent sessions. Sans-IO: bytes in, [`Record`]s out; the
//! caller reads the file (read-only) and decides what to keep (`import.rs`).
//!
//! # The format (versions 5 and 6: Mosquitto 1.6 and 2.0)
//! A 15-byte signature (`00 B5 00 "mosquitto db"`), a 4-byte CRC that Mosquitto leaves at zero,
//! and the format version (big-endian `u32`). Then chunks, each an 8-byte header (type and body
//! length, big-endian `u32`s) and a body: a fixed part written as Mosquitto's C struct (padding
//! included), then the strings it announces, then, for messages, MQTT 5 properties to the end of
//! the body. 16-bit lengths and 32-bit counts in the fixed parts are big-endian; 64-bit fields
//! (message ids, times) are in the writer's byte order, little-endian on every machine midge
//! runs on.
//!
//! Mosquitto writes, in this order: one configuration chunk, every stored message (each once,
//! however many sessions hold it), each persistent client followed by its queued and in-flight
//! messages (which refer to stored messages by id), the subscriptions of persistent clients,
//! and the retained messages (again by id).
//!
//! # Damage
//! The file has no checksum. A chunk whose lengths do not fit, a value out of range (QoS 3),
//! invalid UTF-8 or a file cut short ends the reading there: [`Parsed::damage`] says at which
//! byte and why, and only the chunks before it are returned. Nothing after a damaged chunk
//! can be trusted, since its length may be what was damaged.

use std::fmt;

use super::MOSQUITTO_SIGNATURE;

const CHUNK_CFG: u32 = 1;
const CHUNK_MSG_STORE: u32 = 2;
const CHUNK_CLIENT_MSG: u32 = 3;
const CHUNK_RETAIN: u32 = 4;
const CHUNK_SUB: u32 = 5;
const CHUNK_CLIENT: u32 = 6;

/// Signature, CRC, version.
const HEADER_LEN: usize = 15 + 4 + 4;
const CHUNK_HEADER_LEN: usize = 8;

/// Fixed parts of the chunks, as Mosquitto's structs lay them out (with their padding).
const CFG_LEN: usize = 16;
const MSG_STORE_LEN: usize = 32;
const CLIENT_MSG_LEN: usize = 16;
const RETAIN_LEN: usize = 8;
const SUB_LEN: usize = 12;
const CLIENT_V5_LEN: usize = 16;
const CLIENT_V6_LEN: usize = 24;

/// Mosquitto's `session_expiry_interval` for a session that never expires (3.x clean session
/// 0, or v5 0xFFFFFFFF).
pub const EXPIRY_NEVER: u32 = u32::MAX;

/// Which way a client message was going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// An inbound QoS 2 message the client sent, held until its PUBREL.
    In,
    /// A message on its way to the client.
    Out,
}

/// A message as Mosquitto stored it once (`DB_CHUNK_MSG_STORE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMsg {
    /// The id client messages and retained entries refer to.
    pub store_id: u64,
    /// When its v5 Message Expiry Interval runs out, in Unix seconds; 0: never.
    pub expiry_time: i64,
    pub source_id: String,
    pub source_username: Option<String>,
    /// Port of the listener the publisher was connected to; 0: none (the broker, a bridge).
    pub source_port: u16,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 properties with their variable-byte length prefix (empty: none). Mosquitto keeps
    /// the Message Expiry Interval apart, in `expiry_time`.
    pub properties: Vec<u8>,
}

/// A persistent session (`DB_CHUNK_CLIENT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    /// Username of its last connection (version 6 only).
    pub username: Option<String>,
    /// When the offline session expires, in Unix seconds; 0 while connected or never.
    pub session_expiry_time: i64,
    /// In seconds; [`EXPIRY_NEVER`]: never.
    pub session_expiry_interval: u32,
    /// The last packet id Mosquitto gave out to it.
    pub last_mid: u16,
    /// Port of the listener it last connected to (version 6 only; 0: unknown).
    pub listener_port: u16,
}

/// A message queued or in flight for a session (`DB_CHUNK_CLIENT_MSG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMsg {
    pub client_id: String,
    /// The [`StoredMsg`] it carries.
    pub store_id: u64,
    /// Packet id (may be set while still queued).
    pub mid: u16,
    /// QoS of this delivery.
    pub qos: u8,
    /// Mosquitto's `mosquitto_msg_state`; see `import.rs` for the values.
    pub state: u8,
    /// Retain flag of this delivery.
    pub retain: bool,
    pub dup: bool,
    pub direction: Direction,
    /// Properties of this delivery (its subscription identifiers), with their length prefix.
    pub properties: Vec<u8>,
}

/// A subscription of a persistent session (`DB_CHUNK_SUB`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sub {
    pub client_id: String,
    pub filter: String,
    pub qos: u8,
    /// No Local (bit 2) and Retain As Published (bit 3), as in a SUBSCRIBE options byte.
    pub options: u8,
    /// MQTT 5 subscription identifier; 0: none.
    pub identifier: u32,
}

/// One chunk of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `DB_CHUNK_CFG`: `shutdown` is true when Mosquitto wrote the file as it stopped (false
    /// for an `autosave_interval` save while running).
    Config {
        last_db_id: u64,
        shutdown: bool,
    },
    Message(StoredMsg),
    Client(Client),
    ClientMessage(ClientMsg),
    Subscription(Sub),
    /// `DB_CHUNK_RETAIN`: the stored message with this id is the retained one of its topic.
    Retain {
        store_id: u64,
    },
    /// A chunk type this reader does not know (a newer Mosquitto); skipped, as Mosquitto does.
    Unknown {
        chunk: u32,
        length: u32,
    },
}

/// Where and why reading stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset of the chunk (or header field) that could not be read.
    pub offset: usize,
    pub reason: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.reason)
    }
}

/// What could be read from a file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    /// The format version in the header (0 when the header itself could not be read).
    pub version: u32,
    /// The chunks up to the end of the file, or up to the damage.
    pub records: Vec<Record>,
    /// Set when reading stopped before the end of the file.
    pub damage: Option<Damage>,
}

/// Reads a whole `mosquitto.db`. Never fails: damage ends the records and is reported in
/// [`Parsed::damage`].
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    if let Err(reason) = header(bytes, &mut parsed.version) {
        parsed.damage = Some(Damage { offset: 0, reason });
        return parsed;
    }
    let mut offset = HEADER_LEN;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        match chunk(rest, parsed.version) {
            Ok((record, used)) => {
                parsed.records.push(record);
                offset += used;
            }
            Err(reason) => {
                parsed.damage = Some(Damage { offset, reason });
                break;
            }
        }
    }
    parsed
}

fn header(bytes: &[u8], version: &mut u32) -> Result<(), String> {
    if !bytes.starts_with(MOSQUITTO_SIGNATURE) {
        return Err("no Mosquitto signature".into());
    }
    let mut c = Cursor::new(bytes.get(MOSQUITTO_SIGNATURE.len()..).unwrap_or_default());
    let _crc = c.u32().map_err(|_| "the header is cut short".to_string())?;
    *version = c.u32().map_err(|_| "the header is cut short".to_string())?;
    match *version {
        5 | 6 => Ok(()),
        v => Err(format!(
            "format version {v} is not supported (midge reads versions 5 and 6, written by \
             Mosquitto 1.6 and 2.0)"
        )),
    }
}

/// Reads the chunk at the start of `bytes`; returns it and the bytes it took.
fn chunk(bytes: &[u8], version: u32) -> Result<(Record, usize), String> {
    let mut c = Cursor::new(bytes);
    let (kind, length) = match (c.u32(), c.u32()) {
        (Ok(k), Ok(l)) => (k, l),
        _ => {
            return Err(format!(
                "a chunk header is cut short ({} bytes)",
                bytes.len()
            ))
        }
    };
    let body = c.take(length as usize).map_err(|_| {
        format!(
            "chunk type {kind} announces {length} bytes but only {} remain",
            bytes.len() - CHUNK_HEADER_LEN
        )
    })?;
    let record = body_record(kind, length, body, version)
        .map_err(|why| format!("chunk type {kind} of {length} bytes: {why}"))?;
    Ok((record, CHUNK_HEADER_LEN + body.len()))
}

fn body_record(kind: u32, length: u32, body: &[u8], version: u32) -> Result<Record, String> {
    let mut c = Cursor::new(body);
    let record = match kind {
        CHUNK_CFG => {
            let fixed = c.fixed(CFG_LEN)?;
            let mut f = Cursor::new(fixed);
            let last_db_id = f.u64_le()?;
            let shutdown = f.u8()? != 0;
            let dbid_size = f.u8()?;
            if dbid_size != 8 {
                return Err(format!("message ids of {dbid_size} bytes (8 expected)"));
            }
            Record::Config {
                last_db_id,
                shutdown,
            }
        }
        CHUNK_MSG_STORE => {
            let mut f = Cursor::new(c.fixed(MSG_STORE_LEN)?);
            let store_id = f.u64_le()?;
            let expiry_time = f.u64_le()? as i64;
            let payload_len = f.u32()? as usize;
            let _source_mid = f.u16()?;
            let source_id_len = f.u16()? as usize;
            let username_len = f.u16()? as usize;
            let topic_len = f.u16()? as usize;
            let source_port = f.u16()?;
            let qos = valid_qos(f.u8()?)?;
            let retain = f.u8()? != 0;
            let source_id = c.string(source_id_len, "source client id")?;
            let username = c.string(username_len, "source username")?;
            let topic = c.string(topic_len, "topic")?;
            if topic.is_empty() {
                return Err("empty topic".into());
            }
            let payload = c
                .take(payload_len)
                .map_err(|_| "payload runs past the chunk")?;
            Record::Message(StoredMsg {
                store_id,
                expiry_time,
                source_id,
                source_username: Some(username).filter(|u| !u.is_empty()),
                source_port,
                topic,
                payload: payload.to_vec(),
                qos,
                retain,
                properties: c.rest().to_vec(),
            })
        }
        CHUNK_CLIENT_MSG => {
            let mut f = Cursor::new(c.fixed(CLIENT_MSG_LEN)?);
            let store_id = f.u64_le()?;
            let mid = f.u16()?;
            let id_len = f.u16()? as usize;
            let qos = valid_qos(f.u8()?)?;
            let state = f.u8()?;
            let retain_dup = f.u8()?;
            let direction = match f.u8()? {
                0 => Direction::In,
                1 => Direction::Out,
                d => return Err(format!("direction {d}")),
            };
            let client_id = c.string(id_len, "client id")?;
            Record::ClientMessage(ClientMsg {
                client_id,
                store_id,
                mid,
                qos,
                state,
                retain: retain_dup >> 4 != 0,
                dup: retain_dup & 0x0F != 0,
                direction,
                properties: c.rest().to_vec(),
            })
        }
        CHUNK_RETAIN => {
            let mut f = Cursor::new(c.fixed(RETAIN_LEN)?);
            Record::Retain {
                store_id: f.u64_le()?,
            }
        }
        CHUNK_SUB => {
            let mut f = Cursor::new(c.fixed(SUB_LEN)?);
            let identifier = f.u32()?;
            let id_len = f.u16()? as usize;
            let topic_len = f.u16()? as usize;
            let qos = valid_qos(f.u8()?)?;
            let options = f.u8()?;
            let client_id = c.string(id_len, "client id")?;
            let filter = c.string(topic_len, "topic filter")?;
            Record::Subscription(Sub {
                client_id,
                filter,
                qos,
                options,
                identifier,
            })
        }
        CHUNK_CLIENT => {
            let fixed_len = if version == 5 {
                CLIENT_V5_LEN
            } else {
                CLIENT_V6_LEN
            };
            let mut f = Cursor::new(c.fixed(fixed_len)?);
            let session_expiry_time = f.u64_le()? as i64;
            let session_expiry_interval = f.u32()?;
            let last_mid = f.u16()?;
            let id_len = f.u16()? as usize;
            let (listener_port, username_len) = if version == 5 {
                (0, 0)
            } else {
                (f.u16()?, f.u16()? as usize)
            };
            let client_id = c.string(id_len, "client id")?;
            let username = c.string(username_len, "username")?;
            Record::Client(Client {
                client_id,
                username: Some(username).filter(|u| !u.is_empty()),
                session_expiry_time,
                session_expiry_interval,
                last_mid,
                listener_port,
            })
        }
        _ => Record::Unknown {
            chunk: kind,
            length,
        },
    };
    Ok(record)
}

fn valid_qos(q: u8) -> Result<u8, String> {
    if q <= 2 {
        Ok(q)
    } else {
        Err(format!("QoS {q}"))
    }
}

/// A bounds-checked reader over one chunk.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!("{n} bytes needed, {} left", self.buf.len()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// The fixed part of a chunk, which must be there whole.
    fn fixed(&mut self, n: usize) -> Result<&'a [u8], String> {
        self.take(n)
            .map_err(|_| format!("shorter than its fixed part ({n} bytes)"))
    }

    fn string(&mut self, n: usize, what: &str) -> Result<String, String> {
        let bytes = self
            .take(n)
            .map_err(|_| format!("the {what} runs past the chunk"))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("the {what} is not UTF-8"))
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64_le(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_chunk(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
    }

    /// A version 6 file with one retained message, as Mosquitto 2.0 lays it out.
    fn sample() -> Vec<u8> {
        let mut f = MOSQUITTO_SIGNATURE.to_vec();
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 6]);
        let mut cfg = 9u64.to_le_bytes().to_vec();
        cfg.extend_from_slice(&[1, 8, 0, 0, 0, 0, 0, 0]);
        put_chunk(&mut f, CHUNK_CFG, &cfg);
        let mut msg = 9u64.to_le_bytes().to_vec();
        msg.extend_from_slice(&0u64.to_le_bytes());
        msg.extend_from_slice(&2u32.to_be_bytes()); // payload
        msg.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 3, 0x07, 0x5b, 1, 1]);
        msg.extend_from_slice(b"pa/bhi");
        put_chunk(&mut f, CHUNK_MSG_STORE, &msg);
        put_chunk(&mut f, CHUNK_RETAIN, &9u64.to_le_bytes());
        f
    }

    #[test]
    fn reads_a_retained_message() {
        let p = parse(&sample());
        assert_eq!(p.damage, None);
        assert_eq!(p.version, 6);
        assert_eq!(p.records.len(), 3);
        let Record::Message(m) = &p.records[1] else {
            panic!("{:?}", p.records[1]);
        };
        assert_eq!((m.topic.as_str(), &m.payload[..]), ("a/b", &b"hi"[..]));
        assert_eq!((m.source_id.as_str(), m.source_port, m.qos), ("p", 1883, 1));
        assert!(m.retain);
        assert_eq!(p.records[2], Record::Retain { store_id: 9 });
    }

    #[test]
    fn a_cut_file_keeps_the_chunks_before_the_cut() {
        let whole = sample();
        let boundaries = [HEADER_LEN, HEADER_LEN + CHUNK_HEADER_LEN + CFG_LEN];
        for cut in 0..whole.len() {
            let p = parse(&whole[..cut]);
            assert!(p.records.len() < 3, "{cut}");
            match p.damage {
                // A cut between two chunks leaves a whole, shorter file.
                None => assert!(
                    boundaries.contains(&cut) || cut == whole.len() - 16,
                    "{cut}"
                ),
                Some(d) => assert!(d.offset <= cut, "{cut}: {d}"),
            }
        }
        // Cut inside the retain chunk: the configuration and the message were whole.
        let p = parse(&whole[..whole.len() - 1]);
        assert_eq!(p.records.len(), 2);
        assert!(p
            .damage
            .is_some_and(|d| d.reason.contains("announces 8 bytes")));
    }

    #[test]
    fn impossible_values_are_damage() {
        let mut bad = sample();
        // The message's QoS byte.
        let qos_at = HEADER_LEN + CHUNK_HEADER_LEN + CFG_LEN + CHUNK_HEADER_LEN + 30;
        bad[qos_at] = 3;
        let p = parse(&bad);
        assert_eq!(p.records.len(), 1);
        assert!(p.damage.is_some_and(|d| d.reason.contains("QoS 3")));

        let mut v = sample();
        v[22] = 4;
        let p = parse(&v);
        assert!(p.records.is_empty());
        assert!(p.damage.is_some_and(|d| d.reason.contains("version 4")));
    }
}
