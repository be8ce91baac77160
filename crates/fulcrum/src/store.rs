//! Which store `serve` uses: the embedded one in the data directory (one node), or etcd
//! shared by a fleet (`--store etcd://h1:2379,h2:2379`, built with `--features etcd`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use fulcrum_store::{EmbeddedStore, Store};
use serde::Deserialize;

use crate::paths;

/// `[store]` in `fulcrum.toml`. Parsed in every build, so one config file stays valid whether
/// or not this binary has etcd support; only builds with it read the etcd fields.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `etcd://host:port,host:port` (plain) or `etcds://…` (TLS); absent: embedded.
    pub url: Option<String>,
    /// etcd user (with `password`), when etcd has authentication on.
    pub user: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA that signed etcd's certificates (`etcds://`).
    pub ca_file: Option<String>,
    /// PEM client certificate and key, when etcd asks for client certificates.
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// How long a node's record outlives it in etcd (default 5 s): a dead node stops
    /// holding back work requests after this long.
    pub session_ttl_secs: Option<u64>,
}

/// A fleet store's endpoints, parsed from `etcd://a:2379,b:2379` or `etcds://…`.
pub fn etcd_endpoints(url: &str) -> anyhow::Result<Vec<String>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("etcd://") {
        ("http", rest)
    } else if let Some(rest) = url.strip_prefix("etcds://") {
        ("https", rest)
    } else {
        anyhow::bail!("unknown store {url:?}: use etcd://host:port[,host:port…] or etcds://…");
    };
    let endpoints: Vec<String> = rest
        .trim_end_matches('/')
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{h}"))
        .collect();
    anyhow::ensure!(
        !endpoints.is_empty(),
        "the store URL {url:?} names no etcd host"
    );
    Ok(endpoints)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_urls_name_every_endpoint() {
        assert_eq!(
            etcd_endpoints("etcd://h1:2379,h2:2379").ok(),
            Some(vec!["http://h1:2379".into(), "http://h2:2379".into()])
        );
        assert_eq!(
            etcd_endpoints("etcds://e:2379/").ok(),
            Some(vec!["https://e:2379".into()])
        );
        assert!(etcd_endpoints("http://h1:2379").is_err());
        assert!(etcd_endpoints("etcd://").is_err());
    }
}
