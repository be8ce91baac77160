//! The native API's request bodies, decoded and validated into the model.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum_api::fuzzing::native_body(data));
