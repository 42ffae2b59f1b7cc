//! Arbitrary bytes as a Mosquitto `mosquitto.db`: the reader behind the import must never
//! panic, and damage must be reported inside the file.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/e2e/common/fuzz.rs"]
// Each target runs one of the shared checks; the others are unused here.
#[allow(dead_code)]
mod support;

fuzz_target!(|data: &[u8]| support::check_mosquitto_db(data));
