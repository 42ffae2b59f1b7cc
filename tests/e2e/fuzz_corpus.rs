//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same checks the
//! fuzz targets run (`common::fuzz`), on stable and without a fuzzing engine, so `cargo
//! test` keeps every input the fuzzers found interesting passing. Crashes the fuzzers found are
//! kept below as explicit regression inputs. How to run the fuzzers: docs/fuzzing.md.

use crate::common::fuzz;
use midge::codec::ProtocolVersion;
use std::path::PathBuf;

/// Every file of one target's corpus, with its name (for the failure message).
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            (path.display().to_string(), bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    files
}

/// Runs `check` on every corpus file of `target`, naming the file that fails.
fn replay(target: &str, check: impl Fn(&[u8])) {
    for (name, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&bytes)));
        if let Err(e) = outcome {
            eprintln!("corpus file {name} failed: {}", hex(&bytes));
            std::panic::resume_unwind(e);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn mosquitto_db_corpus_reads_without_panic() {
    replay("mosquitto_db", fuzz::check_mosquitto_db);
}

#[test]
fn decode_v311_corpus_decodes_and_round_trips() {
    replay("decode_v311", |b| {
        fuzz::check_decode(b, ProtocolVersion::V311)
    });
}

#[test]
fn decode_v5_corpus_decodes_and_round_trips() {
    replay("decode_v5", |b| fuzz::check_decode(b, ProtocolVersion::V5));
}

#[test]
fn broker_session_corpus_keeps_the_broker_invariants() {
    replay("broker_session", fuzz::run_program);
}

// Regression inputs: crashes the fuzzers found, minimized (`cargo fuzz tmin`).

/// Decodes one framed packet and, if it decodes, checks its round trip.
fn decode_and_round_trip(hex_input: &str, version: ProtocolVersion) {
    let bytes = unhex(hex_input);
    let h = midge::codec::parse_fixed_header(&bytes)
        .expect("valid fixed header")
        .expect("complete fixed header");
    let body = &bytes[h.header_len..h.total()];
    if let Ok(packet) = midge::codec::decode(h.first, body, version) {
        fuzz::check_round_trip(&packet, version);
    }
}

/// Found by decode_v311 within seconds (at fb06a7b): a 3.1.1 UNSUBACK has no payload
/// (v311 §3.11.3, remaining length 2), but bytes after its packet id were decoded as reason
/// codes, which encoding for 3.1.1 drops, so encode → decode changed the packet.
#[test]
fn v311_unsuback_with_bytes_after_the_packet_id_round_trips() {
    decode_and_round_trip("b0 03 00 01 00", ProtocolVersion::V311);
    decode_and_round_trip("b0 06 ff ff ff ff ff ff", ProtocolVersion::V311);
}
