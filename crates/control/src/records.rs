//! How records cross the store boundary: JSON, with exactly their secret fields (the
//! model's [`Secrets`]) sealed on the way in and opened on the way out. The one place that
//! does either, for the store and for a fleet node's snapshot file, so everything above it
//! (operations, the view, the API, the data plane) holds plaintext in memory only.

use std::collections::BTreeMap;

use fulcrum_model::Secrets;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{Config, Versioned};
use crate::error::ControlError;
use crate::secret_key::{SecretKey, SecretKeyError};

/// What the store keeps under `/fulcrum/secret-key-check`: sealed with the key every node
/// must share, so a node with another key refuses to start instead of serving without the
/// secrets it cannot open.
pub(crate) const KEY_CHECK_PLAINTEXT: &str = "fulcrum secret key check v1";

/// A record on its way to the store, encoded only when the transaction is built (the plan
/// does not hold the key).
pub(crate) trait Record: Send + Sync {
    fn encode(&self, key: &SecretKey) -> Result<Vec<u8>, ControlError>;
}

impl<T: Serialize + Secrets + Clone + Send + Sync> Record for T {
    fn encode(&self, key: &SecretKey) -> Result<Vec<u8>, ControlError> {
        encode(key, self)
    }
}

/// `record` as stored: JSON with its secret fields sealed.
pub(crate) fn encode<T: Serialize + Secrets + Clone>(
    key: &SecretKey,
    record: &T,
) -> Result<Vec<u8>, ControlError> {
    let mut sealed = record.clone();
    seal(key, &mut sealed).map_err(|e| ControlError::Internal(e.to_string()))?;
    serde_json::to_vec(&sealed).map_err(|e| ControlError::Internal(e.to_string()))
}

/// Why a stored value could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("not a record this version reads: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Secret(#[from] SecretKeyError),
}

/// A stored record, its secret fields opened.
pub(crate) fn decode<T: DeserializeOwned + Secrets>(
    key: &SecretKey,
    bytes: &[u8],
) -> Result<T, DecodeError> {
    let mut record: T = serde_json::from_slice(bytes)?;
    open(key, &mut record)?;
    Ok(record)
}

fn seal<T: Secrets>(key: &SecretKey, record: &mut T) -> Result<(), SecretKeyError> {
    for secret in record.secrets_mut() {
        *secret = key.seal(secret)?;
    }
    Ok(())
}

fn open<T: Secrets>(key: &SecretKey, record: &mut T) -> Result<(), SecretKeyError> {
    for secret in record.secrets_mut() {
        *secret = key.open(secret)?;
    }
    Ok(())
}

/// A copy of the view to save in a fleet node's snapshot file: every record with its
/// secrets sealed, work requests left out (they are not saved).
pub(crate) fn sealed_config(key: &SecretKey, cfg: &Config) -> Result<Config, SecretKeyError> {
    fn sealed<K: Ord + Clone, T: Secrets + Clone>(
        key: &SecretKey,
        map: &BTreeMap<K, Versioned<T>>,
    ) -> Result<BTreeMap<K, Versioned<T>>, SecretKeyError> {
        map.iter()
            .map(|(id, v)| {
                let mut v = v.clone();
                seal(key, &mut v.value)?;
                Ok((id.clone(), v))
            })
            .collect()
    }
    let mut members = BTreeMap::new();
    for (pool, of_pool) in &cfg.members {
        members.insert(pool.clone(), sealed(key, of_pool)?);
    }
    Ok(Config {
        revision: cfg.revision,
        traffic_revision: cfg.traffic_revision,
        loadbalancers: sealed(key, &cfg.loadbalancers)?,
        listeners: sealed(key, &cfg.listeners)?,
        pools: sealed(key, &cfg.pools)?,
        members,
        monitors: sealed(key, &cfg.monitors)?,
        subnets: sealed(key, &cfg.subnets)?,
        vpcs: sealed(key, &cfg.vpcs)?,
        certificates: sealed(key, &cfg.certificates)?,
        oci_api_keys: sealed(key, &cfg.oci_api_keys)?,
        vip_claims: cfg.vip_claims.clone(),
        ..Config::default()
    })
}

/// Opens every secret of a view read back from a snapshot file, in place.
pub(crate) fn open_config(key: &SecretKey, cfg: &mut Config) -> Result<(), SecretKeyError> {
    fn opened<K, T: Secrets>(
        key: &SecretKey,
        map: &mut BTreeMap<K, Versioned<T>>,
    ) -> Result<(), SecretKeyError> {
        map.values_mut().try_for_each(|v| open(key, &mut v.value))
    }
    opened(key, &mut cfg.loadbalancers)?;
    opened(key, &mut cfg.listeners)?;
    opened(key, &mut cfg.pools)?;
    for of_pool in cfg.members.values_mut() {
        opened(key, of_pool)?;
    }
    opened(key, &mut cfg.monitors)?;
    opened(key, &mut cfg.subnets)?;
    opened(key, &mut cfg.vpcs)?;
    opened(key, &mut cfg.certificates)?;
    opened(key, &mut cfg.oci_api_keys)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use fulcrum_model::{LoadBalancerId, Pool, PoolId, PoolSpec};

    fn pool_with_credentials(secret: &str) -> Pool {
        let mut spec: PoolSpec = serde_json::from_value(serde_json::json!({
            "name": "app", "protocol": "HTTP",
            "upstream": {
                "credentials": {
                    "headers": {"x-api-key": [secret]},
                    "query": {"code": [secret]},
                    "authorization": {"scheme": "Bearer", "parameter": secret}
                },
                "proxy": {"url": "http://proxy:3128", "username": "u", "password": secret}
            }
        }))
        .unwrap();
        spec.upstream.base_path = "/base".into();
        Pool {
            id: PoolId::from("pool-1".to_owned()),
            loadbalancer_id: LoadBalancerId::from("lb-1".to_owned()),
            spec,
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn only_secret_fields_are_sealed_and_they_come_back() {
        let key = SecretKey::generate().unwrap().0;
        let pool = pool_with_credentials("pl4nted-secret");
        let bytes = encode(&key, &pool).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("pl4nted-secret"), "{text}");
        // Names, ids and other fields stay readable in the store.
        for readable in ["pool-1", "lb-1", "\"app\"", "x-api-key", "Bearer", "/base"] {
            assert!(text.contains(readable), "{readable} in {text}");
        }
        assert_eq!(decode::<Pool>(&key, &bytes).unwrap(), pool);
        let other = SecretKey::generate().unwrap().0;
        assert!(matches!(
            decode::<Pool>(&other, &bytes),
            Err(DecodeError::Secret(SecretKeyError::CannotOpen))
        ));
    }

    #[test]
    fn records_written_before_sealing_read_as_they_were() {
        let key = SecretKey::generate().unwrap().0;
        let pool = pool_with_credentials("legacy-secret");
        let legacy = serde_json::to_vec(&pool).unwrap();
        assert_eq!(decode::<Pool>(&key, &legacy).unwrap(), pool);
    }
}
