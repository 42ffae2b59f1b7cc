//! The MQTT codec: bytes in, packets out, and back again.
//!
//! Every MQTT control packet starts with a *fixed header*: one byte holding the packet type
//! (high nibble) and flags (low nibble), then the *remaining length*, a variable-byte integer of
//! one to four bytes that says how many bytes follow. [`parse_fixed_header`] finds packet
//! boundaries in a byte stream using only that header, so a connection can check
//! `max_packet_size` before it buffers a body, and can wait calmly when a packet arrives in
//! pieces. [`decode()`] turns one complete packet into a [`Packet`]; `encode` writes packets
//! back out. MQTT 3.1, 3.1.1 and 5.0 share the same framing; 5.0 adds *properties*
//! ([`Properties`]) and *reason codes* to most packets.
//!
//! The codec never touches a socket, a clock or broker state: it is pure functions over byte
//! slices, unit-tested byte for byte.

pub(crate) mod decode;
pub(crate) mod encode;
pub(crate) mod frame;
pub(crate) mod packet;
pub(crate) mod properties;

pub use decode::{decode, DecodeError};
pub use frame::{parse_fixed_header, FixedHeader, MAX_PACKET, MAX_VARINT};
pub use packet::*;
pub use properties::{Properties, PropertySet};
