//! Fuzz target: see `entries::profile_json`.

#![no_main]

#[allow(dead_code, reason = "each target uses one of the shared entries")]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::profile_json(data));
