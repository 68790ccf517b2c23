//! Fuzz target: see `entries::bitcode`.

#![no_main]

#[allow(dead_code, reason = "each target uses one of the shared entries")]
mod entries;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entries::bitcode(data));
