//! Bearer-token authentication for the native API.

use subtle::ConstantTimeEq;

/// A named token; the name is the principal that rate limits and retry tokens are
/// scoped to, and what logs show (never the token).
#[derive(Clone)]
pub struct ApiToken {
    pub name: String,
    pub token: String,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("token", &"***")
            .finish()
    }
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub(crate) struct Principal(pub String);

/// The principal whose token matches `presented`, comparing in constant time.
pub(crate) fn authenticate(tokens: &[ApiToken], presented: &str) -> Option<Principal> {
    let mut found = None;
    for t in tokens {
        if bool::from(t.token.as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(Principal(t.name.clone()));
        }
    }
    found
}

/// The token in an `Authorization: Bearer …` header value.
pub(crate) fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
