//! Arbitrary bytes as a program driving the sans-IO broker with a simulated clock: open and
//! lose connections, send CONNECTs, packets, garbled packets and raw bytes, advance time. The
//! broker must not panic, must write only well-formed packets, and must leave no session or
//! subscription behind once every client has ended its session (see tests/fuzz_support).

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support/mod.rs"]
mod support;

fuzz_target!(|data: &[u8]| support::run_program(data));
