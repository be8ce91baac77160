use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    CertificateId, Checker, LoadBalancerId, MAX_NAME_LEN, Timestamp, ValidationError, is_host_name,
};

/// What a certificate is for.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CertificateKind {
    /// A server certificate with its private key: listeners present it to clients.
    #[default]
    Server,
    /// A CA's certificate (no key): what client certificates are checked against.
    Ca,
}

/// The largest PEM text a certificate may hold (a chain of a few certificates, a key).
pub const MAX_PEM_LEN: usize = 64 * 1024;

/// Most server names one certificate may be given.
pub const MAX_CERTIFICATE_DOMAINS: usize = 100;

/// A certificate stored once and named by listeners (`ListenerTls::certificate_id`,
/// `sni_certificate_ids`), so that replacing it re-keys every listener that uses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub kind: CertificateKind,
    /// The certificate first, then its intermediates (PEM).
    pub certificate_chain_pem: String,
    /// Server certificates only. Write-only: reads return it masked; sealed in the store
    /// (see `Secrets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_pem: Option<String>,
    /// The server names (exact, or `*.example.com`) a listener serves this certificate for
    /// when it is one of its SNI certificates; empty: the names the certificate itself
    /// carries (its DNS subject alternative names, else its common name).
    #[serde(default)]
    pub domains: Vec<String>,
    /// Facts a dialect keeps about it (the Huawei project that owns it).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// What the control plane reads from a certificate's PEM when it is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    pub common_name: Option<String>,
    pub subject_alternative_names: Vec<String>,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Certificate {
    pub id: CertificateId,
    /// The load balancer it belongs to (OCI: certificates live under one and are deleted
    /// with it); absent for certificates of no load balancer (Huawei: a project's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadbalancer_id: Option<LoadBalancerId>,
    #[serde(flatten)]
    pub spec: CertificateSpec,
    /// Read from the leaf certificate when it is stored: its subject common name.
    #[serde(default)]
    pub common_name: Option<String>,
    /// Its DNS subject alternative names.
    #[serde(default)]
    pub subject_alternative_names: Vec<String>,
    #[schema(value_type = String, format = DateTime)]
    pub not_before: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub not_after: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: Timestamp,
}

impl Certificate {
    /// The certificate `spec` as stored: `info` is what its validation read from the PEM.
    pub fn new(
        id: CertificateId,
        loadbalancer_id: Option<LoadBalancerId>,
        spec: CertificateSpec,
        info: CertificateInfo,
        created_at: Timestamp,
        updated_at: Timestamp,
    ) -> Self {
        Certificate {
            id,
            loadbalancer_id,
            spec,
            common_name: info.common_name,
            subject_alternative_names: info.subject_alternative_names,
            not_before: info.not_before,
            not_after: info.not_after,
            created_at,
            updated_at,
        }
    }

    /// The server names a listener serves it for as an SNI certificate.
    pub fn server_names(&self) -> Vec<String> {
        if !self.spec.domains.is_empty() {
            return self.spec.domains.clone();
        }
        if !self.subject_alternative_names.is_empty() {
            return self.subject_alternative_names.clone();
        }
        self.common_name
            .iter()
            .filter(|cn| is_host_name(cn, true))
            .cloned()
            .collect()
    }
}

impl CertificateSpec {
    /// Checks the certificate on its own and reads its leaf: the returned info is what the
    /// control plane stores beside it. Whether the private key matches the certificate is
    /// checked by the control plane (it needs a crypto provider).
    pub fn validate(&self) -> Result<CertificateInfo, ValidationError> {
        let mut c = Checker::new();
        c.max_len("name", &self.name, MAX_NAME_LEN);
        c.max_len("description", &self.description, MAX_NAME_LEN);
        c.check(
            self.certificate_chain_pem.len() <= MAX_PEM_LEN,
            "certificate_chain_pem",
            || format!("certificate_chain_pem must be at most {MAX_PEM_LEN} bytes"),
        );
        let info = match parse_certificate_pem(&self.certificate_chain_pem) {
            Ok(info) => Some(info),
            Err(e) => {
                c.fail(
                    "certificate_chain_pem",
                    format!("certificate_chain_pem {e}"),
                );
                None
            }
        };
        match (self.kind, &self.private_key_pem) {
            (CertificateKind::Server, None) => c.missing("private_key_pem"),
            (CertificateKind::Server, Some(key)) => {
                c.check(
                    key.len() <= MAX_PEM_LEN && key.contains("PRIVATE KEY-----"),
                    "private_key_pem",
                    || "private_key_pem must hold a PEM private key".into(),
                );
            }
            (CertificateKind::Ca, Some(_)) => c.fail(
                "private_key_pem",
                "private_key_pem is only valid for server certificates",
            ),
            (CertificateKind::Ca, None) => {}
        }
        c.check(
            self.domains.len() <= MAX_CERTIFICATE_DOMAINS,
            "domains",
            || format!("domains may name at most {MAX_CERTIFICATE_DOMAINS} server names"),
        );
        for (i, d) in self.domains.iter().enumerate() {
            c.check(is_host_name(d, true), &format!("domains[{i}]"), || {
                format!("domains[{i}] {d:?} is not a host name")
            });
        }
        c.finish()?;
        Ok(info.expect("a certificate that does not parse failed validation"))
    }
}

/// Reads the first certificate of a PEM chain: its names and validity. Every block of the
/// chain must be a certificate that parses.
pub fn parse_certificate_pem(pem: &str) -> Result<CertificateInfo, String> {
    let mut info = None;
    let mut rest = pem.as_bytes();
    let mut n = 0;
    loop {
        let text = std::str::from_utf8(rest).map_err(|_| "is not UTF-8 text".to_owned())?;
        if text.trim().is_empty() {
            break;
        }
        let (remaining, block) = x509_parser::pem::parse_x509_pem(rest)
            .map_err(|_| format!("block {} is not a PEM certificate", n + 1))?;
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "block {} is a {:?}, not a CERTIFICATE",
                n + 1,
                block.label
            ));
        }
        let cert = block
            .parse_x509()
            .map_err(|e| format!("block {} is not an X.509 certificate: {e}", n + 1))?;
        if info.is_none() {
            info = Some(leaf_info(&cert)?);
        }
        n += 1;
        rest = remaining;
    }
    info.ok_or_else(|| "must hold a PEM certificate".to_owned())
}

fn leaf_info(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<CertificateInfo, String> {
    use x509_parser::extensions::GeneralName;
    let time = |t: x509_parser::time::ASN1Time| {
        chrono::DateTime::from_timestamp(t.timestamp(), 0)
            .ok_or_else(|| "has a validity date out of range".to_owned())
    };
    let validity = cert.validity();
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut subject_alternative_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(d) = name {
                subject_alternative_names.push(d.to_ascii_lowercase());
            }
        }
    }
    Ok(CertificateInfo {
        common_name,
        subject_alternative_names,
        not_before: time(validity.not_before)?,
        not_after: time(validity.not_after)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(names: &[&str], not_after: (i32, u8, u8)) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "leaf.example");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn spec(chain: &str, key: Option<&str>) -> CertificateSpec {
        CertificateSpec {
            name: "c".into(),
            description: String::new(),
            kind: CertificateKind::Server,
            certificate_chain_pem: chain.into(),
            private_key_pem: key.map(str::to_owned),
            domains: Vec::new(),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn validity_and_names_are_read_from_the_leaf() {
        let (leaf, key) = generated(&["a.example", "*.b.example"], (2031, 7, 9));
        let (other, _) = generated(&["other.example"], (2040, 1, 1));
        // A chain: the first certificate is the one described.
        let info = spec(&format!("{leaf}{other}"), Some(&key))
            .validate()
            .unwrap();
        assert_eq!(info.not_before.to_rfc3339(), "2026-01-02T00:00:00+00:00");
        assert_eq!(info.not_after.to_rfc3339(), "2031-07-09T00:00:00+00:00");
        assert_eq!(info.subject_alternative_names, ["a.example", "*.b.example"]);
        assert_eq!(info.common_name.as_deref(), Some("leaf.example"));
        let cert = Certificate::new(
            CertificateId("x".into()),
            None,
            spec(&leaf, Some(&key)),
            info,
            chrono::DateTime::UNIX_EPOCH,
            chrono::DateTime::UNIX_EPOCH,
        );
        assert_eq!(cert.server_names(), ["a.example", "*.b.example"]);
        let mut given = cert.clone();
        given.spec.domains = vec!["c.example".into()];
        assert_eq!(given.server_names(), ["c.example"], "domains win");
    }

    #[test]
    fn bad_input_is_refused_by_field() {
        let (leaf, key) = generated(&["a.example"], (2031, 1, 1));
        let field = |s: CertificateSpec| {
            s.validate()
                .unwrap_err()
                .errors
                .iter()
                .map(|e| e.field.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(field(spec("", Some(&key))), ["certificate_chain_pem"]);
        assert_eq!(
            field(spec(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                Some(&key)
            )),
            ["certificate_chain_pem"]
        );
        assert_eq!(
            field(spec(&format!("{leaf}{key}"), Some(&key))),
            ["certificate_chain_pem"],
            "a key inside the chain"
        );
        assert_eq!(field(spec(&leaf, None)), ["private_key_pem"]);
        assert_eq!(field(spec(&leaf, Some("nope"))), ["private_key_pem"]);
        let mut ca = spec(&leaf, Some(&key));
        ca.kind = CertificateKind::Ca;
        assert_eq!(field(ca.clone()), ["private_key_pem"], "a CA has no key");
        ca.private_key_pem = None;
        ca.validate().unwrap();
        let mut bad_domain = spec(&leaf, Some(&key));
        bad_domain.domains = vec!["not a host".into()];
        assert_eq!(field(bad_domain), ["domains[0]"]);
    }

    #[test]
    fn listeners_resolve_references_to_inline_pem() {
        let (leaf, key) = generated(&["a.example"], (2031, 1, 1));
        let (sni, sni_key) = generated(&["s1.example", "s2.example"], (2031, 1, 1));
        let make = |id: &str, chain: &str, key: &str| {
            let s = spec(chain, Some(key));
            let info = s.validate().unwrap();
            Certificate::new(
                CertificateId(id.into()),
                None,
                s,
                info,
                chrono::DateTime::UNIX_EPOCH,
                chrono::DateTime::UNIX_EPOCH,
            )
        };
        let certs = [make("d", &leaf, &key), make("s", &sni, &sni_key)];
        let lookup = |id: &CertificateId| certs.iter().find(|c| &c.id == id);
        let tls = crate::ListenerTls::by_reference("d".into(), vec!["s".into()]);
        let r = tls.resolved(lookup).unwrap();
        assert_eq!(r.certificate_chain_pem, leaf);
        assert_eq!(r.private_key_pem, key);
        let names: Vec<&str> = r
            .sni_certificates
            .iter()
            .map(|s| s.server_name.as_str())
            .collect();
        assert_eq!(names, ["s1.example", "s2.example"]);
        assert!(r.certificate_id.is_none() && r.sni_certificate_ids.is_empty());
        let missing = crate::ListenerTls::by_reference("gone".into(), Vec::new());
        assert!(missing.resolved(lookup).unwrap_err().contains("gone"));
    }
}
