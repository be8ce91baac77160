//! How a body that does not decode is described, in every front door: by the field and the
//! kind of value found, never the value itself (it may be a secret: a credential header, a
//! proxy password, a private key).

/// `err`'s message with the value it quotes replaced by its kind: serde's
/// `invalid type: string "hunter2", expected a sequence` becomes
/// `invalid type: a string, expected a sequence`.
pub fn describe(err: &serde_json::Error) -> String {
    let text = err.to_string();
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = text.strip_prefix(prefix)
            && let Some(expected) = rest.find(", expected")
        {
            let found = &rest[..expected];
            let kind = match found.split_once([' ', '`', '"']).map_or(found, |(k, _)| k) {
                "string" => "a string",
                "integer" => "an integer",
                "floating" => "a number",
                "boolean" => "a boolean",
                "map" => "an object",
                "sequence" => "a list",
                "null" => "null",
                "unit" => "null",
                "char" => "a character",
                _ => "a value",
            };
            return format!("{prefix}{kind}{}", &rest[expected..]);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::describe;

    fn error_of<T: serde::de::DeserializeOwned + std::fmt::Debug>(json: &str) -> String {
        describe(&serde_json::from_str::<T>(json).expect_err("does not decode"))
    }

    #[test]
    fn values_are_never_quoted() {
        let e = error_of::<Vec<String>>(r#""hunter2""#);
        assert!(
            e.starts_with("invalid type: a string, expected a sequence"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = error_of::<String>("123456789");
        assert!(
            e.starts_with("invalid type: an integer, expected a string"),
            "{e}"
        );
        assert!(!e.contains("123456789"), "{e}");
        let e = error_of::<u8>("300");
        assert!(!e.contains("300"), "{e}");
        let e = error_of::<bool>("1.5");
        assert!(e.starts_with("invalid type: a number"), "{e}");
        // Messages that quote no value are kept.
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct S {
            a: u8,
        }
        let e = error_of::<S>(r#"{"b": 1}"#);
        assert!(e.contains("unknown field `b`"), "{e}");
    }
}
