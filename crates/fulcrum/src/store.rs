//! Which store `serve` uses: the embedded one in the data directory (one node), or etcd
//! shared by a fleet (`--store etcd://h1:2379,h2:2379`, built with `--features etcd`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use fulcrum::config::{StoreSection, etcd_endpoints};
use fulcrum_store::{EmbeddedStore, Store};

use crate::paths;

/// Opens the store: `(store, shared)`, where `shared` says several nodes may use it.
pub async fn open(
    section: &StoreSection,
    url: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<(Arc<dyn Store>, bool)> {
    match url.or(section.url.as_deref()) {
        None => {
            let path = paths::store_file(data_dir);
            let store = EmbeddedStore::open(&path)
                .with_context(|| format!("cannot open the store {}", path.display()))?;
            Ok((Arc::new(store), false))
        }
        Some(url) => Ok((open_etcd(section, url).await?, true)),
    }
}

#[cfg(feature = "etcd")]
async fn open_etcd(section: &StoreSection, url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let read = |p: &str| std::fs::read_to_string(p).with_context(|| format!("cannot read {p}"));
    let mut options = fulcrum_store_etcd::EtcdOptions::new(etcd_endpoints(url)?);
    if let Some(user) = &section.user {
        options.user = Some((user.clone(), section.password.clone().unwrap_or_default()));
    }
    if let Some(ca) = &section.ca_file {
        options.ca_pem = Some(read(ca)?);
    }
    match (&section.cert_file, &section.key_file) {
        (Some(cert), Some(key)) => options.client_identity_pem = Some((read(cert)?, read(key)?)),
        (None, None) => {}
        _ => anyhow::bail!("[store] cert_file and key_file go together"),
    }
    if let Some(secs) = section.session_ttl_secs {
        anyhow::ensure!(secs >= 1, "[store] session_ttl_secs must be at least 1");
        options.session_ttl = std::time::Duration::from_secs(secs);
    }
    let store = fulcrum_store_etcd::EtcdStore::connect(options)
        .await
        .context("cannot reach etcd")?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "etcd"))]
async fn open_etcd(_section: &StoreSection, url: &str) -> anyhow::Result<Arc<dyn Store>> {
    etcd_endpoints(url)?;
    anyhow::bail!(
        "this fulcrum was built without etcd support; build it with \
         `cargo build --release -p fulcrum --features etcd` (needs protobuf-compiler)"
    )
}
