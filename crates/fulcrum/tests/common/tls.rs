//! Self-signed certificates for TERMINATED_HTTPS listeners, and a TLS client that trusts
//! one of them and offers chosen ALPN protocols.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;

pub struct Cert {
    pub pem: String,
    pub key: String,
    pub der: CertificateDer<'static>,
}

/// A self-signed certificate for `names`.
pub fn cert(names: &[&str]) -> Cert {
    let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
    let c = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
    Cert {
        pem: c.cert.pem(),
        key: c.signing_key.serialize_pem(),
        der: c.cert.der().clone(),
    }
}

/// The listener fields that make a TERMINATED_HTTPS listener serve `c`.
pub fn listener_tls(c: &Cert) -> Value {
    json!({"tls": {"certificate_chain_pem": c.pem, "private_key_pem": c.key}})
}

/// Connects over TLS to 127.0.0.1:`port` trusting `trust`, asking for `sni` and offering
/// `alpn` (none when empty).
pub async fn tls_connect(
    port: u16,
    sni: &str,
    trust: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).expect("trust the certificate");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the listener");
    tcp.set_nodelay(true).expect("nodelay");
    connector
        .connect(
            ServerName::try_from(sni.to_owned()).expect("server name"),
            tcp,
        )
        .await
        .expect("TLS handshake")
}

/// A certificate authority that issues server and client certificates.
pub struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    /// Its certificate (PEM), to trust it.
    pub pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let pem = issuer.pem();
        Ca { issuer, pem }
    }

    /// Its certificate (DER).
    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Cert {
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("server params");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate whose subject's common name is `cn`.
    pub fn client(&self, cn: &str) -> Cert {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: rcgen::CertificateParams) -> Cert {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Cert {
            pem: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}
