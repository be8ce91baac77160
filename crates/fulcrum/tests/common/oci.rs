//! OCI's request signing (HTTP signatures, `rsa-sha256`) as the SDK does it, over the
//! harness's client: a test calls the OCI dialect with [`Oci::call`] as it calls the native
//! API with [`Api::call`]. The key is the OCI router's test key (`api-oci/src/testdata`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Api, Resp};

const PRIVATE_KEY: &str = include_str!("../../../api-oci/src/testdata/router_test_key.pem");

fn private_key() -> rsa::RsaPrivateKey {
    rsa::RsaPrivateKey::from_pkcs8_pem(PRIVATE_KEY).expect("the test key")
}

/// The public half of the test key, PEM, for `[[oci.keys]] public_key_pem`.
pub fn public_key_pem() -> String {
    private_key()
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("encode the public key")
}

/// An OCI caller: the harness's client signing with the test key under `key_id`.
pub struct Oci {
    pub api: Api,
    pub key_id: String,
}

impl Oci {
    pub fn new(api: &Api, key_id: &str) -> Oci {
        Oci {
            api: api.anonymous(),
            key_id: key_id.to_owned(),
        }
    }

    /// `method` on `target` (path and query, as sent), signed over `date`,
    /// `(request-target)` and `host`, and for a body its length, type and digest.
    pub async fn call(&self, method: &str, target: &str, body: Option<Value>) -> Resp {
        let body = body.map(|b| b.to_string());
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        let host = self
            .api
            .base
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_owned();
        let mut lines = vec![
            format!("date: {date}"),
            format!("(request-target): {} {target}", method.to_lowercase()),
            format!("host: {host}"),
        ];
        let mut names = "date (request-target) host".to_owned();
        let mut headers = vec![("date", date.clone())];
        if let Some(b) = &body {
            let digest = B64.encode(Sha256::digest(b.as_bytes()));
            // The harness sends the length and `application/json` with every body.
            lines.push(format!("content-length: {}", b.len()));
            lines.push("content-type: application/json".into());
            lines.push(format!("x-content-sha256: {digest}"));
            names.push_str(" content-length content-type x-content-sha256");
            headers.push(("x-content-sha256", digest));
        }
        let key = SigningKey::<Sha256>::new(private_key());
        let signature = B64.encode(key.sign(lines.join("\n").as_bytes()).to_bytes());
        let authorization = format!(
            r#"Signature version="1",headers="{names}",keyId="{}",algorithm="rsa-sha256",signature="{signature}""#,
            self.key_id
        );
        headers.push(("authorization", authorization));
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.api
            .raw(method, target, body.as_deref(), &headers)
            .await
    }
}
