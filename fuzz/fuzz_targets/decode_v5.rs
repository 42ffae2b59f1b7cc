//! Arbitrary bytes as a stream of packets on a connection speaking MQTT 5: framing and
//! decoding must not panic, and every packet that decodes must survive encode → decode.

#![no_main]

use libfuzzer_sys::fuzz_target;
use midge::codec::ProtocolVersion;

#[path = "../../tests/e2e/common/fuzz.rs"]
// Each target runs one of the shared checks; the others are unused here.
#[allow(dead_code)]
mod support;

fuzz_target!(|data: &[u8]| support::check_decode(data, ProtocolVersion::V5));
