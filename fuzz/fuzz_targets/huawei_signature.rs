//! The Huawei SDK-HMAC-SHA256 signature (Authorization header, canonical request, date, HMAC).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fulcrum_api::fuzzing::huawei_signature(data));
