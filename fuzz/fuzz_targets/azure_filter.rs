//! Azure's `$filter` on backend lists.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum_api::fuzzing::azure_filter(data));
