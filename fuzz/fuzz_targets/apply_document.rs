//! Apply files (`fulcrum apply -f`): the first byte picks the format (YAML, JSON, TOML, as
//! the file's extension would), then the document is parsed and checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((format, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let extension = match format % 3 {
        0 => "yaml",
        1 => "json",
        _ => "toml",
    };
    if let Ok(doc) = fulcrum::document::parse_document(text, extension) {
        let _ = fulcrum::document::check_document(&doc);
    }
});
