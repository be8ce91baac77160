//! The Huawei dialect's request bodies, decoded, patched and validated.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum_api::fuzzing::huawei_body(data));
