//! Framing: finding where one packet ends and the next begins.
//!
//! TCP delivers a stream, not packets: bytes arrive in any split. The fixed header (one type
//! byte, then a remaining length of one to four bytes) is all it takes to know a packet's size,
//! so [`parse_fixed_header`] looks only at those and answers "complete", "need more" or
//! "malformed". A connection checks the size against `max_packet_size` before it buffers a
//! single byte of the body.

use super::decode::DecodeError;

/// The largest value a variable byte integer holds (four bytes of seven bits): the largest
/// remaining length, and the largest subscription identifier.
pub const MAX_VARINT: u32 = 268_435_455;

/// The largest packet MQTT can express: the largest remaining length plus a five byte fixed
/// header.
pub const MAX_PACKET: usize = MAX_VARINT as usize + 5;

/// A parsed fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The first byte: packet type and flags.
    pub first: u8,
    /// Bytes taken by the fixed header itself (2 to 5).
    pub header_len: usize,
    /// Bytes of body that follow (the remaining length).
    pub remaining: usize,
}

impl FixedHeader {
    /// The whole packet's size in bytes.
    pub fn total(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Parses the fixed header at the start of `buf`. `Ok(None)` means more bytes are needed.
pub fn parse_fixed_header(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(FixedHeader {
                first,
                header_len: 2 + i,
                remaining,
            }));
        }
    }
    Err(DecodeError::MalformedLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_more_bytes_until_the_length_ends() {
        assert_eq!(parse_fixed_header(&[]), Ok(None));
        assert_eq!(parse_fixed_header(&[0x30]), Ok(None));
        assert_eq!(parse_fixed_header(&[0x30, 0x80]), Ok(None));
        assert_eq!(
            parse_fixed_header(&[0x30, 0xee, 0x0f]),
            Ok(Some(FixedHeader {
                first: 0x30,
                header_len: 3,
                remaining: 2030
            }))
        );
    }

    #[test]
    fn largest_remaining_length_is_four_bytes() {
        let h = parse_fixed_header(&[0x30, 0xff, 0xff, 0xff, 0x7f])
            .unwrap()
            .unwrap();
        assert_eq!(h.remaining, 268_435_455);
        assert_eq!(h.header_len, 5);
    }

    #[test]
    fn fifth_length_byte_is_malformed() {
        assert_eq!(
            parse_fixed_header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(DecodeError::MalformedLength)
        );
    }
}
