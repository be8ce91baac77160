//! Azure backend bodies, translated into the model.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum_api::fuzzing::azure_body(data));
