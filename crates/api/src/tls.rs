//! TLS for the API: a rustls server config built from the PEM files `[api]` names (a
//! certificate chain, its key, and optionally the CAs that client certificates must chain
//! to), reloaded when the files change; and what a verified client certificate says about
//! its holder ([`ClientCertificate`]).
//!
//! A reload builds a whole new config from the files: a pair that does not load (a key
//! written before its certificate, a truncated file) is logged and the config in force
//! stays, so a bad rotation never takes the API down. Each change of the files is tried
//! once; the next change is tried again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};

use fulcrum_api_core::auth::ClientCertificate;

/// Whether a client must present a certificate (`[api] tls_client_auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A client may present one; without one it authenticates with a token as usual.
    Optional,
    /// A client without a certificate that chains to the CAs fails the handshake.
    Required,
}

/// The files the API's TLS is built from.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, or PKCS#1 RSA, or SEC1 EC).
    pub key: PathBuf,
    /// CAs a client certificate must chain to (PEM bundle); none: no client certificates.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// Why the API's TLS files do not make a config. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

fn invalid(path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// How often the files' modification times are looked at.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The API's TLS config in force, and the files it came from.
pub struct ApiTls {
    files: TlsFiles,
    current: parking_lot::RwLock<Loaded>,
    /// The files as they were when last tried, loaded or not.
    tried: parking_lot::Mutex<Vec<Option<Stamp>>>,
}

struct Loaded {
    config: Arc<ServerConfig>,
    leaf: CertificateDer<'static>,
}

/// What tells a file changed: its modification time, size and inode (a rename over it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    inode: u64,
}

impl ApiTls {
    /// Loads the files; an error names the file that is missing, unreadable or invalid.
    pub fn load(files: TlsFiles) -> Result<Arc<ApiTls>, TlsError> {
        let stamps = stamps(&files);
        let loaded = load(&files)?;
        Ok(Arc::new(ApiTls {
            files,
            current: parking_lot::RwLock::new(loaded),
            tried: parking_lot::Mutex::new(stamps),
        }))
    }

    /// The config a new connection is served with.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.current.read().config.clone()
    }

    /// The certificate served now (the chain's first).
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.current.read().leaf.clone()
    }

    /// Whether clients must present a certificate.
    pub fn client_auth_required(&self) -> bool {
        self.files.client_ca.is_some() && self.files.client_auth == ClientAuth::Required
    }

    /// Reloads the files if any changed since they were last tried (`force`: whatever
    /// their times say). A change that does not load is logged, and the config in force
    /// stays. True when a new config was loaded.
    pub fn reload(&self, force: bool) -> bool {
        let now = stamps(&self.files);
        {
            let mut tried = self.tried.lock();
            if !force && *tried == now {
                return false;
            }
            *tried = now;
        }
        match load(&self.files) {
            Ok(loaded) => {
                *self.current.write() = loaded;
                tracing::info!(
                    cert = %self.files.cert.display(),
                    "API TLS certificate reloaded: new connections get it"
                );
                true
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "API TLS files changed but do not load: the certificate in force stays"
                );
                false
            }
        }
    }

    /// Checks the files every `every` for as long as `self` is in use elsewhere.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(tls) = weak.upgrade() else { return };
                tls.reload(false);
            }
        });
    }
}

fn stamps(files: &TlsFiles) -> Vec<Option<Stamp>> {
    use std::os::unix::fs::MetadataExt;
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| {
        std::fs::metadata(path).ok().map(|m| Stamp {
            modified: m.modified().ok(),
            len: m.len(),
            inode: m.ino(),
        })
    })
    .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert)?;
    let leaf = chain[0].clone();
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(|e| {
        invalid(
            &files.key,
            format!("not a PEM private key (PKCS#8, RSA or EC): {e}"),
        )
    })?;
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => invalid(
            &files.key,
            format!(
                "is not the key of the certificate in {}",
                files.cert.display()
            ),
        ),
        other => invalid(&files.key, format!("unusable private key: {other}")),
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| invalid(&files.cert, e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(path)? {
                roots
                    .add(ca)
                    .map_err(|e| invalid(path, format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match files.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| invalid(path, format!("cannot verify clients with it: {e}")))?,
            )
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    // The server speaks both (hyper's auto builder); h2 first, as clients prefer.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        leaf,
    })
}

/// The names a verified client certificate carries: its subject's common names and its
/// DNS subject alternative names. `None` when it does not parse (rustls verified it, so
/// that would be a form this parser does not know).
pub(crate) fn client_certificate(der: &CertificateDer<'_>) -> Option<ClientCertificate> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let subject_cns = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    let dns_names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some(ClientCertificate {
        subject_cns,
        dns_names,
    })
}
