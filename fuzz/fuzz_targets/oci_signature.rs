//! The OCI request signature (Authorization header, signing string, RSA, body digest).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum_api::fuzzing::oci_signature(data));
