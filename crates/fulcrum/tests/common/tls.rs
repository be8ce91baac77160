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
