//! Azure API policy documents and API bodies.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum_api::fuzzing::azure_api(data));
