//! TLS termination: rustls server configs built from listeners' PEM certificates, with
//! certificates chosen by SNI and ALPN offering h2 and http/1.1.

use std::collections::HashMap;
use std::sync::Arc;

use fulcrum_model::ListenerTls;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certified_key(
    provider: &CryptoProvider,
    what: &str,
    chain_pem: &str,
    key_pem: &str,
    ocsp: Option<&String>,
) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what}: cannot read the certificate chain: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{what}: no certificate in the chain"));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("{what}: cannot read the private key: {e}"))?;
    let mut certified =
        CertifiedKey::from_der(chain, key, provider).map_err(|e| format!("{what}: {e}"))?;
    if let Some(text) = ocsp {
        certified.ocsp = Some(
            fulcrum_model::decode_ocsp_response(text)
                .ok_or_else(|| format!("{what}: ocsp_response_base64 is not valid"))?,
        );
    }
    Ok(Arc::new(certified))
}

/// Picks the certificate for the server name the client asked for, else the default.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        let found = self.exact.get(&name).or_else(|| {
            name.split_once('.')
                .and_then(|(_, parent)| self.wildcard.get(parent))
        });
        Some(found.unwrap_or(&self.default).clone())
    }
}

/// Sessions a listener remembers for resumption by session ID (TLS 1.2) and for stateful
/// TLS 1.3 tickets: about 10 MB at most (HAProxy's default cache holds 20,000).
const SESSION_CACHE: usize = 20_000;

/// A server config for a listener's certificates; an error names what is wrong.
/// `previous`, the listener's config before this change, passes on its session cache and
/// ticket keys, so clients keep resuming across a certificate or listener change.
pub(crate) fn server_config(
    tls: &ListenerTls,
    previous: Option<&ServerConfig>,
) -> Result<Arc<ServerConfig>, String> {
    let provider = provider();
    let default = certified_key(
        &provider,
        "tls",
        &tls.certificate_chain_pem,
        &tls.private_key_pem,
        tls.ocsp_response_base64.as_ref(),
    )?;
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    for (i, sni) in tls.sni_certificates.iter().enumerate() {
        let key = certified_key(
            &provider,
            &format!("tls.sni_certificates[{i}]"),
            &sni.certificate_chain_pem,
            &sni.private_key_pem,
            sni.ocsp_response_base64.as_ref(),
        )?;
        let name = sni.server_name.to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(parent) => wildcard.insert(parent.to_owned(), key),
            None => exact.insert(name, key),
        };
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver {
            default,
            exact,
            wildcard,
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // Resumption: stateless tickets (TLS 1.2 and 1.3) under keys that rotate every 6 hours
    // (the previous key still accepted), and a bounded cache for session IDs.
    match previous {
        Some(p) => {
            config.ticketer = p.ticketer.clone();
            config.session_storage = p.session_storage.clone();
        }
        None => {
            config.ticketer = rustls::crypto::ring::Ticketer::new()
                .map_err(|e| format!("cannot make session ticket keys: {e}"))?;
            config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        }
    }
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("cert");
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn tls(cert: &str, key: &str) -> ListenerTls {
        ListenerTls {
            certificate_chain_pem: cert.into(),
            private_key_pem: key.into(),
            sni_certificates: Vec::new(),
            ocsp_response_base64: None,
            certificate_id: None,
            sni_certificate_ids: Vec::new(),
        }
    }

    #[test]
    fn builds_from_a_matching_pair_and_refuses_the_rest() {
        let (cert_a, key_a) = pair("a.test");
        let (_, key_b) = pair("b.test");
        assert!(server_config(&tls(&cert_a, &key_a), None).is_ok());
        let mismatch = server_config(&tls(&cert_a, &key_b), None).unwrap_err();
        assert!(mismatch.contains("tls"), "{mismatch}");
        let garbage = server_config(
            &tls(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                &key_a,
            ),
            None,
        );
        assert!(garbage.is_err());
        assert!(
            server_config(&tls("", &key_a), None)
                .unwrap_err()
                .contains("no certificate")
        );
    }
}

/// The client config of HTTPS health checks (built once).
pub(crate) fn health_check_client() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = provider();
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                // Like HAProxy's `check-ssl verify none`: is it TLS and does it answer,
                // not who it is. Handshake signatures are still verified.
                .with_custom_certificate_verifier(Arc::new(MemberVerifier {
                    webpki: None,
                    check_name: false,
                    provider,
                }))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

/// Checks the chain, the name, both or neither, as a member's TLS settings say.
#[derive(Debug)]
struct MemberVerifier {
    /// Chain (and, unless `check_name` is false, name) checks; None: chain not checked.
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for MemberVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match &self.webpki {
            Some(v) => {
                match v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                    Err(rustls::Error::InvalidCertificate(
                        NotValidForName | NotValidForNameContext { .. },
                    )) if !self.check_name => {
                        Ok(rustls::client::danger::ServerCertVerified::assertion())
                    }
                    other => other,
                }
            }
            None => {
                if self.check_name {
                    let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                    rustls::client::verify_server_name(&cert, server_name)?;
                }
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client config for TLS to a member: Mozilla's roots plus the configured CAs, the
/// chain and name checks as configured (both on by default), and a client certificate if
/// one is set. An error names what is wrong.
pub(crate) fn upstream_client(
    tls: &fulcrum_model::UpstreamTls,
    client_cert_pem: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = &tls.ca_certificates_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("upstream.tls.ca_certificates_pem: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("upstream.tls.ca_certificates_pem: {e}"))?;
        }
    }
    let webpki = if tls.validate_certificate_chain {
        Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MemberVerifier {
            webpki,
            check_name: tls.validate_certificate_name,
            provider,
        }));
    let mut config = match client_cert_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("credentials.client_certificate_pem: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| format!("credentials.client_certificate_pem: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("credentials.client_certificate_pem: {e}"))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
