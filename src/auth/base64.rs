//! Standard base64 (RFC 4648 §4: `A–Z a–z 0–9 + /`, `=` padding), as OpenSSL's BIO writes it
//! into `mosquitto_passwd` files: one line, no newlines, always padded.
//!
//! Encoding always pads. Decoding accepts padded and unpadded input (some tools that write
//! Mosquitto-compatible files strip the `=`), but nothing else: whitespace, URL-safe characters
//! or a length that cannot come from whole bytes are errors, so a damaged line is reported
//! instead of silently yielding a different salt.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `bytes` as padded standard base64.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 0x3f) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// Why a base64 string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A character outside the standard alphabet (position in the input, 0-based).
    InvalidCharacter(usize),
    /// The length (after removing padding) leaves a lone sextet, or the padding is misplaced.
    InvalidLength,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::InvalidCharacter(at) => {
                write!(f, "invalid base64 character at position {}", at + 1)
            }
            DecodeError::InvalidLength => f.write_str("invalid base64 length or padding"),
        }
    }
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

/// Decodes standard base64, with or without `=` padding.
pub(crate) fn decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    let bytes = text.as_bytes();
    let data_len = bytes.len() - bytes.iter().rev().take_while(|&&c| c == b'=').count();
    let padding = bytes.len() - data_len;
    if padding > 2 || (padding > 0 && !bytes.len().is_multiple_of(4)) || data_len % 4 == 1 {
        return Err(DecodeError::InvalidLength);
    }
    let mut out = Vec::with_capacity(data_len * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for (at, &c) in bytes[..data_len].iter().enumerate() {
        let value = sextet(c).ok_or(DecodeError::InvalidCharacter(at))?;
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 4648 §10 test vectors.
    const VECTORS: &[(&str, &str)] = &[
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn encodes_rfc4648_vectors() {
        for (plain, encoded) in VECTORS {
            assert_eq!(encode(plain.as_bytes()), *encoded, "encode({plain:?})");
        }
    }

    #[test]
    fn decodes_rfc4648_vectors() {
        for (plain, encoded) in VECTORS {
            assert_eq!(
                decode(encoded).unwrap(),
                plain.as_bytes(),
                "decode({encoded:?})"
            );
        }
    }

    #[test]
    fn decodes_without_padding() {
        assert_eq!(decode("Zg").unwrap(), b"f");
        assert_eq!(decode("Zm8").unwrap(), b"fo");
    }

    #[test]
    fn round_trips_every_byte_value_and_length() {
        let all: Vec<u8> = (0..=255).collect();
        for len in 0..all.len() {
            let slice = &all[..len];
            assert_eq!(decode(&encode(slice)).unwrap(), slice);
        }
        assert_eq!(decode(&encode(&[0xff; 5])).unwrap(), [0xff; 5]);
    }

    #[test]
    fn mosquitto_sizes_salt_12_bytes_is_16_chars_hash_64_bytes_is_88_chars() {
        assert_eq!(encode(&[0u8; 12]).len(), 16);
        let hash = encode(&[0u8; 64]);
        assert_eq!(hash.len(), 88);
        assert!(hash.ends_with("=="));
    }

    #[test]
    fn rejects_bad_characters() {
        assert_eq!(decode("Zm9v!A=="), Err(DecodeError::InvalidCharacter(4)));
        assert_eq!(decode("Zm9 vA=="), Err(DecodeError::InvalidCharacter(3)));
        assert_eq!(decode("Zm-_"), Err(DecodeError::InvalidCharacter(2)));
        assert_eq!(decode("Zm=v"), Err(DecodeError::InvalidCharacter(2)));
    }

    #[test]
    fn rejects_bad_lengths_and_padding() {
        assert_eq!(decode("Z"), Err(DecodeError::InvalidLength));
        assert_eq!(decode("Zm9vY"), Err(DecodeError::InvalidLength));
        assert_eq!(decode("Zg="), Err(DecodeError::InvalidLength));
        assert_eq!(decode("Z==="), Err(DecodeError::InvalidLength));
        assert_eq!(decode("===="), Err(DecodeError::InvalidLength));
    }
}
