//! Which values are secret. One list per resource, used both to seal them at rest (the
//! store boundary, in `fulcrum-control`) and to mask them on reads, so the two never
//! disagree about what a secret is.

use crate::{
    Certificate, HealthMonitor, Listener, ListenerTls, LoadBalancer, Member, OciApiKey, Pool,
    Subnet, UpstreamSettings, Vpc, WorkRequest,
};

/// A resource that may hold secret values: upstream credentials, a forward proxy's
/// password, private keys. Only these fields are sealed in the store; names, ids and every
/// other field stay readable there.
pub trait Secrets {
    /// Every secret value the resource holds now, to seal, open or mask in place.
    fn secrets_mut(&mut self) -> Vec<&mut String>;
}

impl Secrets for UpstreamSettings {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        let c = &mut self.credentials;
        let mut out: Vec<&mut String> = c.headers.values_mut().flatten().collect();
        out.extend(c.query.values_mut().flatten());
        out.extend(c.authorization.as_mut().map(|a| &mut a.parameter));
        // The PEM chain is followed by its private key: sealed whole.
        out.extend(c.client_certificate_pem.as_mut());
        if let Some(p) = &mut self.proxy {
            // The URL too: ones stored before URLs with credentials were refused may hold
            // a `user:password@`.
            out.push(&mut p.url);
            out.extend(p.password.as_mut());
        }
        out
    }
}

impl Secrets for ListenerTls {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        // An empty key is no secret: the certificate is named by reference.
        let mut out: Vec<&mut String> = Some(&mut self.private_key_pem)
            .into_iter()
            .filter(|k| !k.is_empty())
            .collect();
        out.extend(
            self.sni_certificates
                .iter_mut()
                .map(|sni| &mut sni.private_key_pem),
        );
        out
    }
}

impl Secrets for Certificate {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        self.spec.private_key_pem.iter_mut().collect()
    }
}

impl Secrets for Pool {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        self.spec.upstream.secrets_mut()
    }
}

impl Secrets for Member {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        self.spec
            .upstream
            .as_mut()
            .map(|u| u.secrets_mut())
            .unwrap_or_default()
    }
}

impl Secrets for Listener {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        self.spec
            .tls
            .as_mut()
            .map(ListenerTls::secrets_mut)
            .unwrap_or_default()
    }
}

// Stored resources with no secret field: said here, so a field added to them is a
// decision to make in this file.
impl Secrets for LoadBalancer {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        Vec::new()
    }
}

impl Secrets for HealthMonitor {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        Vec::new()
    }
}

impl Secrets for Subnet {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        Vec::new()
    }
}

/// A public key: nothing to hide.
impl Secrets for OciApiKey {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        Vec::new()
    }
}

impl Secrets for Vpc {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        Vec::new()
    }
}

impl Secrets for WorkRequest {
    fn secrets_mut(&mut self) -> Vec<&mut String> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Authorization, ForwardProxy, SniCertificate};

    #[test]
    fn every_secret_field_is_listed_and_nothing_else() {
        let mut u = UpstreamSettings::default();
        u.credentials
            .headers
            .insert("x-key".into(), vec!["h1".into(), "h2".into()]);
        u.credentials.query.insert("code".into(), vec!["q".into()]);
        u.credentials.authorization = Some(Authorization {
            scheme: "Bearer".into(),
            parameter: "a".into(),
        });
        u.credentials.client_certificate_pem = Some("pem".into());
        u.proxy = Some(ForwardProxy {
            url: "http://proxy:3128".into(),
            username: Some("user".into()),
            password: Some("pw".into()),
        });
        let mut seen: Vec<String> = u.secrets_mut().into_iter().map(|s| s.clone()).collect();
        seen.sort();
        assert_eq!(
            seen,
            ["a", "h1", "h2", "http://proxy:3128", "pem", "pw", "q"]
        );

        let mut tls = ListenerTls {
            certificate_chain_pem: "cert".into(),
            private_key_pem: "key".into(),
            sni_certificates: vec![SniCertificate {
                server_name: "a.example".into(),
                certificate_chain_pem: "cert2".into(),
                private_key_pem: "key2".into(),
                ocsp_response_base64: None,
            }],
            ocsp_response_base64: None,
            certificate_id: None,
            sni_certificate_ids: Vec::new(),
        };
        let seen: Vec<String> = tls.secrets_mut().into_iter().map(|s| s.clone()).collect();
        assert_eq!(seen, ["key", "key2"]);
    }
}
