//! Fuzz target: see `entries::trace_json`.

#![no_main]

#[allow(dead_code, reason = "each target uses one of the shared entries")]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::trace_json(data));
