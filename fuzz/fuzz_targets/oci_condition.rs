//! OCI routing policy conditions (V1): parsed, and mapped onto the model's routes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum_api::fuzzing::oci_condition(data));
