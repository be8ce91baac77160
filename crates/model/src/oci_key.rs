use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::{Checker, OciApiKeyId, Timestamp, ValidationError};

/// The smallest RSA key OCI accepts for API signing, in bits.
pub const MIN_OCI_KEY_BITS: usize = 2048;

/// The largest public key PEM accepted (a 16384-bit key's PEM is under 3 KB).
const MAX_PUBLIC_KEY_PEM_LEN: usize = 8 * 1024;

/// Longest tenancy or user OCID accepted.
const MAX_OCID_LEN: usize = 255;

/// An OCI API signing key registered at run time: what OCI's UploadApiKey records for a
/// user. The OCI front door accepts requests signed with the matching private key under
/// `keyId = "<tenancy>/<user>/<fingerprint>"`, the three values an OCI SDK's config file
/// holds. Public keys only: nothing here is secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OciApiKeySpec {
    /// The tenancy OCID (the SDK config's `tenancy`).
    #[schema(example = "ocid1.tenancy.oc1..aaaa")]
    pub tenancy: String,
    /// The user OCID (the SDK config's `user`).
    #[schema(example = "ocid1.user.oc1..aaaa")]
    pub user: String,
    /// The RSA public key (at least 2048 bits) as SubjectPublicKeyInfo PEM, `-----BEGIN
    /// PUBLIC KEY-----`: what `openssl rsa -in key.pem -pubout` prints.
    pub public_key_pem: String,
    /// The principal rate limits, retry tokens and audit records name (default: the key
    /// id).
    #[serde(default)]
    pub name: String,
    /// Compartment OCIDs the key may see and change; absent: every load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compartments: Option<Vec<String>>,
}

/// What the model reads from a key's PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciKeyInfo {
    /// OCI's fingerprint: the MD5 of the key's DER SubjectPublicKeyInfo, as colon-separated
    /// lowercase hex pairs (what the OCI console and `oci setup keys` show).
    pub fingerprint: String,
    pub bits: usize,
}

impl OciApiKeySpec {
    /// Checks every field and reads the key: its fingerprint and size.
    pub fn validate(&self) -> Result<OciKeyInfo, ValidationError> {
        let mut c = Checker::new();
        for (field, value) in [("tenancy", &self.tenancy), ("user", &self.user)] {
            if value.is_empty() {
                c.missing(field);
                continue;
            }
            c.check(is_ocid(value), field, || {
                format!("{field} must be an OCID (up to {MAX_OCID_LEN} printable characters, no '/' or spaces)")
            });
        }
        c.max_len("name", &self.name, crate::MAX_NAME_LEN);
        if let Some(compartments) = &self.compartments {
            for (i, comp) in compartments.iter().enumerate() {
                c.check(is_ocid(comp), &format!("compartments[{i}]"), || {
                    "a compartment must be an OCID".into()
                });
            }
        }
        let info = if self.public_key_pem.len() > MAX_PUBLIC_KEY_PEM_LEN {
            c.fail(
                "public_key_pem",
                format!("public_key_pem must be at most {MAX_PUBLIC_KEY_PEM_LEN} bytes"),
            );
            None
        } else {
            match read_public_key(&self.public_key_pem) {
                Ok(info) => Some(info),
                Err(e) => {
                    c.fail("public_key_pem", format!("public_key_pem {e}"));
                    None
                }
            }
        };
        c.finish()?;
        info.ok_or_else(|| ValidationError::missing("public_key_pem"))
    }
}

fn is_ocid(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_OCID_LEN && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// Reads an RSA public key from SubjectPublicKeyInfo PEM: its OCI fingerprint and size.
pub fn read_public_key(pem: &str) -> Result<OciKeyInfo, String> {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    use x509_parser::x509::SubjectPublicKeyInfo;

    let (rest, block) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes())
        .map_err(|_| "is not PEM text".to_owned())?;
    if !rest.iter().all(u8::is_ascii_whitespace) {
        return Err("must hold exactly one PEM block".into());
    }
    if block.label != "PUBLIC KEY" {
        return Err(format!(
            "is a {:?} block; it must be a \"PUBLIC KEY\" (openssl rsa -in key.pem -pubout)",
            block.label
        ));
    }
    let (trailing, spki) = SubjectPublicKeyInfo::from_der(&block.contents)
        .map_err(|e| format!("is not a public key: {e}"))?;
    if !trailing.is_empty() {
        return Err("has bytes after its public key".into());
    }
    let bits = match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
        Ok(_) => return Err("is not an RSA key (OCI signs with RSA)".into()),
        Err(e) => return Err(format!("is not a readable RSA key: {e}")),
    };
    if bits < MIN_OCI_KEY_BITS {
        return Err(format!(
            "is a {bits}-bit key; OCI keys have at least {MIN_OCI_KEY_BITS} bits"
        ));
    }
    let digest = Md5::digest(&block.contents);
    let fingerprint = digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(OciKeyInfo { fingerprint, bits })
}

/// A registered key, as stored and read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OciApiKey {
    pub id: OciApiKeyId,
    #[serde(flatten)]
    pub spec: OciApiKeySpec,
    /// `<tenancy>/<user>/<fingerprint>`: the `keyId` signatures name.
    pub key_id: String,
    #[schema(example = "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34")]
    pub fingerprint: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl OciApiKey {
    /// The key id a signature names for `spec` with this fingerprint.
    pub fn key_id_of(spec: &OciApiKeySpec, fingerprint: &str) -> String {
        format!("{}/{}/{fingerprint}", spec.tenancy, spec.user)
    }

    /// The principal its requests act as.
    pub fn principal(&self) -> &str {
        if self.spec.name.is_empty() {
            &self.key_id
        } else {
            &self.spec.name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl genrsa 2048 | openssl rsa -pubout`; its fingerprint from
    /// `openssl rsa -pubin -outform DER | openssl md5 -c`.
    const TEST_KEY_2048: &str = include_str!("../testdata/oci-key-2048.pub.pem");
    const TEST_KEY_2048_FINGERPRINT: &str = include_str!("../testdata/oci-key-2048.fingerprint");
    const TEST_KEY_1024: &str = include_str!("../testdata/oci-key-1024.pub.pem");

    fn spec() -> OciApiKeySpec {
        OciApiKeySpec {
            tenancy: "ocid1.tenancy.oc1..aaaa".into(),
            user: "ocid1.user.oc1..bbbb".into(),
            public_key_pem: TEST_KEY_2048.into(),
            name: String::new(),
            compartments: None,
        }
    }

    #[test]
    fn a_key_reads_with_the_fingerprint_openssl_gives() {
        let info = spec().validate().unwrap();
        assert_eq!(info.fingerprint, TEST_KEY_2048_FINGERPRINT.trim());
        assert_eq!(info.bits, 2048);
    }

    #[test]
    fn short_keys_other_blocks_and_bad_ocids_are_refused() {
        let mut s = spec();
        s.public_key_pem = TEST_KEY_1024.into();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("1024-bit"), "{e}");

        s.public_key_pem = TEST_KEY_2048.replace("PUBLIC KEY", "RSA PUBLIC KEY");
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("-pubout"), "{e}");

        s.public_key_pem = "not a key".into();
        assert!(s.validate().is_err());

        let mut s = spec();
        s.user = "a/b".into();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("user"), "{e}");
        s.user = String::new();
        assert!(s.validate().is_err());

        let mut s = spec();
        s.compartments = Some(vec!["has space".into()]);
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("compartments[0]"), "{e}");
    }

    #[test]
    fn the_pem_may_take_up_to_8_kib() {
        let mut s = spec();
        // Padded with trailing spaces, which the PEM reader ignores.
        s.public_key_pem = format!("{TEST_KEY_2048:<8192}");
        assert_eq!(s.public_key_pem.len(), MAX_PUBLIC_KEY_PEM_LEN);
        assert!(s.validate().is_ok());
        s.public_key_pem.push(' ');
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("at most 8192 bytes"), "{e}");
    }

    #[test]
    fn the_principal_is_the_name_or_else_the_key_id() {
        let mut spec = spec();
        let info = spec.validate().unwrap();
        let key_id = OciApiKey::key_id_of(&spec, &info.fingerprint);
        let key = |spec: &OciApiKeySpec| OciApiKey {
            id: OciApiKeyId::from("key-1"),
            spec: spec.clone(),
            key_id: key_id.clone(),
            fingerprint: info.fingerprint.clone(),
            created_at: Timestamp::default(),
        };
        assert_eq!(key(&spec).principal(), key_id);
        spec.name = "ci-deployer".into();
        assert_eq!(key(&spec).principal(), "ci-deployer");
    }

    #[test]
    fn the_key_id_joins_tenancy_user_and_fingerprint() {
        let s = spec();
        let info = s.validate().unwrap();
        let id = OciApiKey::key_id_of(&s, &info.fingerprint);
        assert_eq!(
            id,
            format!(
                "ocid1.tenancy.oc1..aaaa/ocid1.user.oc1..bbbb/{}",
                info.fingerprint
            )
        );
    }
}
