//! Keys registered at run time through the native API (`/v1/oci-api-keys`), found in the
//! view by key id. Each is parsed once per stored version and kept while it is registered.
//! A key in `[oci] keys` wins over a registered one with the same key id.

use std::collections::HashMap;
use std::sync::Arc;

use fulcrum_control::{Config, Revision};
use fulcrum_model::OciApiKeyId;
use parking_lot::Mutex;

use crate::signature::{ApiKey, KeyRing, KeySource, parse_public_key};

/// Parsed public keys of registered keys, by resource id, with the mod revision read.
#[derive(Default)]
pub(crate) struct RegisteredKeys {
    parsed: Mutex<HashMap<OciApiKeyId, (Revision, Arc<ApiKey>)>>,
}

impl RegisteredKeys {
    fn find(&self, view: &Config, key_id: &str) -> Option<Arc<ApiKey>> {
        let stored = view
            .oci_api_keys
            .values()
            .find(|k| k.value.key_id == key_id)?;
        let mut parsed = self.parsed.lock();
        if let Some((revision, key)) = parsed.get(&stored.value.id)
            && *revision == stored.mod_revision
        {
            return Some(key.clone());
        }
        // Checked when it was registered; a key this build cannot read is no key.
        let public = match parse_public_key(&stored.value.spec.public_key_pem) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(key = %stored.value.id, "registered OCI key unreadable: {e}");
                return None;
            }
        };
        let key = Arc::new(ApiKey {
            principal: stored.value.principal().to_owned(),
            key: public,
            compartments: stored.value.spec.compartments.clone(),
        });
        // Forget keys removed since (the map stays as small as the registry).
        parsed.retain(|id, _| view.oci_api_keys.contains_key(id));
        parsed.insert(stored.value.id.clone(), (stored.mod_revision, key.clone()));
        Some(key)
    }
}

/// The keys a request may be signed with: the configured ones, then the registered ones
/// of `view`.
pub(crate) struct Keys<'a> {
    pub configured: &'a KeyRing,
    pub registered: &'a RegisteredKeys,
    pub view: &'a Config,
}

impl KeySource for Keys<'_> {
    fn find(&self, key_id: &str) -> Option<Arc<ApiKey>> {
        self.configured
            .find(key_id)
            .or_else(|| self.registered.find(self.view, key_id))
    }
}
