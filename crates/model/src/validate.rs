//! Validation errors and the small checks every resource shares.

use serde::Serialize;

/// Why a field was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldErrorKind {
    /// A required field is absent (OCI `MissingParameter`).
    Missing,
    /// A field is present but out of range, malformed or not allowed here.
    Invalid,
}

/// One refused field, named by its path in the request (`members[3].weight`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
    pub message: String,
}

/// Every field a request got wrong. Never empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ValidationError {
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            errors: vec![FieldError {
                field: field.into(),
                kind: FieldErrorKind::Invalid,
                message: message.into(),
            }],
        }
    }

    pub fn missing(field: impl Into<String>) -> Self {
        let field = field.into();
        Self {
            errors: vec![FieldError {
                message: format!("{field} is required"),
                field,
                kind: FieldErrorKind::Missing,
            }],
        }
    }

    /// The first refused field: what a one-line error message names.
    pub fn first(&self) -> &FieldError {
        // Constructors never build an empty list.
        &self.errors[0]
    }

    /// Prefixes every field path, e.g. `weight` → `members[3].weight`.
    pub fn within(mut self, prefix: &str) -> Self {
        for e in &mut self.errors {
            e.field = if e.field.is_empty() {
                prefix.to_owned()
            } else {
                format!("{prefix}.{}", e.field)
            };
        }
        self
    }
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if e.message.starts_with(&e.field) {
                f.write_str(&e.message)?;
            } else {
                write!(f, "{}: {}", e.field, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

/// Collects field errors while a validator walks a resource.
#[derive(Default, Debug)]
pub struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fail(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid,
            message: message.into(),
        });
    }

    pub fn missing(&mut self, field: impl Into<String>) {
        let field = field.into();
        self.errors.push(FieldError {
            message: format!("{field} is required"),
            field,
            kind: FieldErrorKind::Missing,
        });
    }

    pub fn check(&mut self, ok: bool, field: &str, message: impl FnOnce() -> String) {
        if !ok {
            self.fail(field, message());
        }
    }

    pub fn max_len(&mut self, field: &str, value: &str, max: usize) {
        let n = value.chars().count();
        if n > max {
            self.fail(
                field,
                format!("{field} must be at most {max} characters (got {n})"),
            );
        }
    }

    pub fn range<T: PartialOrd + std::fmt::Display + Copy>(
        &mut self,
        field: &str,
        value: T,
        min: T,
        max: T,
    ) {
        if value < min || value > max {
            self.fail(
                field,
                format!("{field} must be between {min} and {max} (got {value})"),
            );
        }
    }

    /// Merges errors of a nested value under `prefix`.
    pub fn nested(&mut self, prefix: &str, result: Result<(), ValidationError>) {
        if let Err(e) = result {
            self.errors.extend(e.within(prefix).errors);
        }
    }

    pub fn finish(self) -> Result<(), ValidationError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                errors: self.errors,
            })
        }
    }
}

/// A DNS host name (RFC 1123 labels), optionally with one leading `*.` wildcard label.
pub fn is_host_name(s: &str, allow_wildcard: bool) -> bool {
    let s = match s.strip_prefix("*.") {
        Some(rest) if allow_wildcard => rest,
        _ => s,
    };
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A virtual host name as a listener serves it: a host name, `*.example.com` (a wildcard
/// for the first label) or `app.example.*` (for the last). See [`crate::host_matches`].
pub fn is_virtual_host_name(s: &str) -> bool {
    match s.strip_suffix(".*") {
        Some(head) => is_host_name(head, false),
        None => is_host_name(s, true),
    }
}

/// An HTTP header field name (RFC 9110 token).
pub fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// An HTTP header field value: visible ASCII, spaces and tabs, no line breaks.
pub fn is_header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_prefixed_and_displayed_in_order() {
        let inner = Checker {
            errors: vec![FieldError {
                field: String::new(),
                kind: FieldErrorKind::Invalid,
                message: "must not be empty".into(),
            }],
        }
        .finish();
        let mut c = Checker::new();
        c.nested(
            "members[3]",
            Err(ValidationError::invalid("weight", "too heavy")),
        );
        c.nested("members[4]", inner);
        c.nested("members[5]", Ok(()));
        c.fail("name", "bad");
        let err = c.finish().unwrap_err();
        assert_eq!(err.first().field, "members[3].weight");
        // One "; " between errors, none before the first or after the last.
        assert_eq!(
            err.to_string(),
            "members[3].weight: too heavy; members[4]: must not be empty; name: bad"
        );
        // A message that starts with its field is not prefixed again.
        let missing = ValidationError::missing("pool_id");
        assert_eq!(missing.to_string(), "pool_id is required");
        assert_eq!(
            missing.within("listener").to_string(),
            "listener.pool_id: pool_id is required"
        );
    }
}
