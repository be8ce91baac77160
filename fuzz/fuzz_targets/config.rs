//! `fulcrum.toml`: parsed, then every check `serve` and `validate --config` make without
//! touching a file.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = fulcrum::config::parse(text) {
        let _ = config.check();
    }
});
