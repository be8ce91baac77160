//! `Authorization: Bearer` for the Azure dialect: configured static tokens, and JWTs
//! verified against a configured key (signature, issuer, audience, expiry).

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::error::AzureError;
use fulcrum_api_core::auth::ApiToken;
use fulcrum_api_core::auth::{authenticate, bearer};

/// `[[azure.tokens]]`: a static bearer token and the principal it stands for, optionally
/// limited to some subscriptions.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureToken {
    pub name: String,
    pub token: String,
    /// Subscription ids (UUIDs) the token may see and change; absent: every one.
    #[serde(default)]
    pub subscriptions: Option<Vec<String>>,
}

/// An authenticated Azure caller.
#[derive(Clone, Debug)]
pub(crate) struct AzureCaller {
    /// Rate limits and retry tokens are kept per principal.
    pub principal: String,
    /// The subscriptions it may see and change (lower-cased); `None`: every one.
    pub subscriptions: Option<Vec<String>>,
}

impl AzureCaller {
    /// Whether the caller may act in `subscription` (ids compare without case, as ARM's).
    pub fn admits_subscription(&self, subscription: &str) -> bool {
        self.subscriptions
            .as_ref()
            .is_none_or(|subs| subs.iter().any(|s| s.eq_ignore_ascii_case(subscription)))
    }

    /// The control plane's view of the same limit: services (load balancers) labelled
    /// with one of its subscriptions.
    pub fn scope(&self) -> fulcrum_control::Scope {
        let Some(subs) = self.subscriptions.clone() else {
            return fulcrum_control::Scope::All;
        };
        fulcrum_control::Scope::limited(
            format!("the subscriptions {}", subs.join(", ")),
            move |lb| {
                lb.spec
                    .labels
                    .get(super::wire::LABEL_SUBSCRIPTION)
                    .is_some_and(|s| subs.iter().any(|x| x == s))
            },
        )
    }
}

impl std::fmt::Debug for AzureToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureToken")
            .field("name", &self.name)
            .field("token", &"***")
            .field("subscriptions", &self.subscriptions)
            .finish()
    }
}

/// `[azure.jwt]` as written in fulcrum.toml: exactly one of the two keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtFile {
    issuer: String,
    audience: String,
    #[serde(default)]
    hs256_secret: Option<String>,
    #[serde(default)]
    rsa_public_key_pem: Option<String>,
}

/// JWT verification: HS256 with a shared secret or RS256 with an RSA public key. The key
/// is checked when the configuration is read, so a bad one stops `fulcrum serve`.
#[derive(Clone, Deserialize)]
#[serde(try_from = "JwtFile")]
pub struct JwtConfig {
    issuer: String,
    audience: String,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl TryFrom<JwtFile> for JwtConfig {
    type Error = String;

    fn try_from(f: JwtFile) -> Result<Self, String> {
        let (algorithm, key) = match (f.hs256_secret, f.rsa_public_key_pem) {
            (Some(secret), None) if secret.len() >= 32 => (
                Algorithm::HS256,
                DecodingKey::from_secret(secret.as_bytes()),
            ),
            (Some(_), None) => {
                return Err("azure.jwt.hs256_secret must be at least 32 bytes".into());
            }
            (None, Some(pem)) => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| format!("azure.jwt.rsa_public_key_pem: {e}"))?,
            ),
            _ => {
                return Err(
                    "azure.jwt needs exactly one of hs256_secret or rsa_public_key_pem".into(),
                );
            }
        };
        if f.issuer.is_empty() || f.audience.is_empty() {
            return Err("azure.jwt.issuer and azure.jwt.audience must not be empty".into());
        }
        Ok(JwtConfig {
            issuer: f.issuer,
            audience: f.audience,
            algorithm,
            key,
        })
    }
}

/// Who may call the Azure dialect.
pub(crate) struct Authenticator {
    tokens: Vec<ApiToken>,
    /// Each token's subscriptions (lower-cased), by token name.
    subscriptions: std::collections::HashMap<String, Vec<String>>,
    jwt: Option<(JwtConfig, Validation)>,
}

impl Authenticator {
    pub fn new(tokens: &[AzureToken], jwt: Option<&JwtConfig>) -> Self {
        Authenticator {
            tokens: tokens
                .iter()
                .map(|t| ApiToken::admin(t.name.clone(), t.token.clone()))
                .collect(),
            subscriptions: tokens
                .iter()
                .filter_map(|t| {
                    let subs = t.subscriptions.as_ref()?;
                    Some((
                        t.name.clone(),
                        subs.iter().map(|s| s.to_ascii_lowercase()).collect(),
                    ))
                })
                .collect(),
            jwt: jwt.map(|j| {
                let mut v = Validation::new(j.algorithm);
                v.set_issuer(&[&j.issuer]);
                v.set_audience(&[&j.audience]);
                v.set_required_spec_claims(&["exp", "iss", "aud"]);
                (j.clone(), v)
            }),
        }
    }

    /// The principal (rate limits are kept per principal) for an `Authorization` header.
    pub fn authenticate(&self, header: Option<&str>) -> Result<AzureCaller, AzureError> {
        let Some(token) = header.and_then(bearer) else {
            return Err(AzureError::unauthenticated(
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing or is not 'Bearer <token>'.",
            ));
        };
        if let Some(p) = authenticate(&self.tokens, token) {
            return Ok(AzureCaller {
                principal: format!("azure:{}", p.name),
                subscriptions: self.subscriptions.get(&p.name).cloned(),
            });
        }
        let invalid = || {
            AzureError::unauthenticated(
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            )
        };
        let Some((cfg, validation)) = &self.jwt else {
            return Err(invalid());
        };
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &cfg.key, validation).map_err(
            |e| {
                tracing::debug!(error = %e, "azure: JWT refused");
                invalid()
            },
        )?;
        let subject = ["sub", "oid", "appid"]
            .iter()
            .find_map(|c| data.claims.get(*c).and_then(|v| v.as_str()))
            .unwrap_or("anonymous");
        Ok(AzureCaller {
            principal: format!("jwt:{subject}"),
            subscriptions: None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth() -> Authenticator {
        let jwt: JwtConfig = serde_json::from_value(json!({
            "issuer": "https://issuer.example/",
            "audience": "https://management.azure.com/",
            "hs256_secret": SECRET,
        }))
        .unwrap();
        Authenticator::new(
            &[
                AzureToken {
                    name: "ci".into(),
                    token: "static-token".into(),
                    subscriptions: None,
                },
                AzureToken {
                    name: "team".into(),
                    token: "team-token".into(),
                    subscriptions: Some(vec!["0000000A-0000-0000-0000-000000000001".into()]),
                },
            ],
            Some(&jwt),
        )
    }

    fn jwt(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn a_token_limited_to_subscriptions_admits_only_those() {
        let a = auth();
        let all = a.authenticate(Some("Bearer static-token")).unwrap();
        assert!(all.admits_subscription("00000000-0000-0000-0000-000000000002"));
        assert!(all.scope().is_all());
        let team = a.authenticate(Some("Bearer team-token")).unwrap();
        assert_eq!(team.principal, "azure:team");
        assert!(team.admits_subscription("0000000a-0000-0000-0000-000000000001"));
        assert!(team.admits_subscription("0000000A-0000-0000-0000-000000000001"));
        assert!(!team.admits_subscription("00000000-0000-0000-0000-000000000002"));
        let lb = |sub: &str| fulcrum_model::LoadBalancer {
            id: fulcrum_model::LoadBalancerId("x".into()),
            spec: serde_json::from_value(
                json!({"name": "x", "labels": {"azure.subscription": sub}}),
            )
            .unwrap(),
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        };
        let scope = team.scope();
        assert!(scope.admits(&lb("0000000a-0000-0000-0000-000000000001")));
        assert!(!scope.admits(&lb("00000000-0000-0000-0000-000000000002")));
    }

    #[test]
    fn static_tokens_and_verified_jwts_pass_everything_else_is_401() {
        let a = auth();
        assert_eq!(
            a.authenticate(Some("Bearer static-token"))
                .unwrap()
                .principal,
            "azure:ci"
        );
        let exp = chrono::Utc::now().timestamp() + 600;
        let good = json!({"iss": "https://issuer.example/", "aud": "https://management.azure.com/", "exp": exp, "sub": "alice"});
        assert_eq!(
            a.authenticate(Some(&format!("Bearer {}", jwt(good.clone(), SECRET))))
                .unwrap()
                .principal,
            "jwt:alice"
        );
        let mut wrong_aud = good.clone();
        wrong_aud["aud"] = json!("other");
        let mut wrong_iss = good.clone();
        wrong_iss["iss"] = json!("other");
        let mut expired = good.clone();
        expired["exp"] = json!(chrono::Utc::now().timestamp() - 3600);
        for token in [
            jwt(wrong_aud, SECRET),
            jwt(wrong_iss, SECRET),
            jwt(expired, SECRET),
            jwt(good, "another-secret-another-secret-xx"),
            "static-token-x".into(),
        ] {
            let e = a
                .authenticate(Some(&format!("Bearer {token}")))
                .unwrap_err();
            assert_eq!(e.code, "InvalidAuthenticationToken");
        }
        assert_eq!(
            a.authenticate(None).unwrap_err().code,
            "AuthenticationFailed"
        );
        assert_eq!(
            a.authenticate(Some("Basic abc")).unwrap_err().status,
            http::StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn bad_jwt_configuration_is_refused_when_read() {
        for bad in [
            json!({"issuer": "i", "audience": "a"}),
            json!({"issuer": "i", "audience": "a", "hs256_secret": "short"}),
            json!({"issuer": "i", "audience": "a", "rsa_public_key_pem": "not a key"}),
            json!({"issuer": "i", "audience": "a", "hs256_secret": SECRET, "rsa_public_key_pem": "x"}),
        ] {
            assert!(
                serde_json::from_value::<JwtConfig>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
