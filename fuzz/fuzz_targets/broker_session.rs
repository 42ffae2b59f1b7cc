//! Arbitrary bytes as a program driving the sans-IO broker with a simulated clock: open and
//! lose connections, send CONNECTs, packets, garbled packets and raw bytes, advance time. The
//! broker must not panic, must write only well-formed packets, and must leave no session or
//! subscription behind once every client has ended its session (see tests/e2e/common/fuzz.rs).

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/e2e/common/fuzz.rs"]
// Each target runs one of the shared checks; the others are unused here.
#[allow(dead_code)]
mod support;

fuzz_target!(|data: &[u8]| support::run_program(data));
