//! A control plane on a fresh embedded store, for the unit tests of this crate and of the
//! front doors and data plane (feature `testing`).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use fulcrum_store::EmbeddedStore;

use crate::{ControlPlane, Options};

/// A control plane on a fresh embedded store (kept alive by the returned directory).
pub async fn control() -> (tempfile::TempDir, Arc<ControlPlane>) {
    control_with(Options::default()).await
}

/// As [`control`], with `opts`.
pub async fn control_with(opts: Options) -> (tempfile::TempDir, Arc<ControlPlane>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("s.redb")).unwrap();
    let cp = ControlPlane::start(Arc::new(store), opts).await.unwrap();
    (dir, cp)
}
