//! Fleet mode: several nodes share one store (etcd). Each node publishes the revision its
//! data plane serves under a session key (bound to a lease, so it vanishes when the node
//! dies or loses the store); every node watches those keys, and a revision counts as
//! applied once every live node serves it. Work requests succeed only then.
//!
//! Node keys live under [`keys::NODES`], outside the configuration prefix: the config watch
//! never sees them, so publishing cannot feed back into another publish.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;
use fulcrum_model::Timestamp;
use fulcrum_store::{EventKind, KeyValue, Revision, StoreError};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::engine::Refusal;
use crate::secret_key::SecretKey;
use crate::{Config, ControlError, ControlPlane, keys, records};

/// Who this node is in a fleet.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Unique in the fleet; stable across restarts.
    pub id: String,
    /// What the node runs (`all` or `data-plane`), for operators reading the node list.
    pub role: String,
    /// Where the node keeps its last configuration, so a restart while the store is
    /// unreachable serves traffic at once.
    pub snapshot_cache: Option<PathBuf>,
}

/// What a node publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub role: String,
    /// The configuration revision its data plane serves.
    pub applied: Revision,
    /// What its data plane cannot serve of that revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<Refusal>,
    pub updated_at: Timestamp,
}

/// How far a revision has spread through the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spread {
    pub serving: usize,
    pub live: usize,
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.serving >= self.live {
            write!(f, "served by all {} nodes", self.live)
        } else {
            write!(f, "served by {} of {} nodes", self.serving, self.live)
        }
    }
}

/// The live nodes as this node last saw them.
#[derive(Default)]
pub(crate) struct FleetView {
    /// False until the node list was read once: before that nothing counts as applied,
    /// or a node starting while the store is away would count only itself.
    pub loaded: bool,
    pub nodes: BTreeMap<String, NodeRecord>,
}

impl FleetView {
    /// The newest revision every live node serves. This node counts with what it serves
    /// now, whatever its published record says.
    pub fn common_applied(&self, me: &str, local: Revision) -> Revision {
        if !self.loaded {
            return 0;
        }
        self.nodes
            .values()
            .filter(|n| n.id != me)
            .map(|n| n.applied)
            .fold(local, Revision::min)
    }

    pub fn spread(&self, me: &str, local: Revision, revision: Revision) -> Spread {
        let others = self.nodes.values().filter(|n| n.id != me);
        Spread {
            serving: others.clone().filter(|n| n.applied >= revision).count()
                + usize::from(local >= revision),
            live: others.count() + 1,
        }
    }

    fn put(&mut self, kv: &KeyValue) {
        match serde_json::from_slice::<NodeRecord>(&kv.value) {
            Ok(record) => {
                self.nodes.insert(record.id.clone(), record);
            }
            Err(e) => tracing::warn!(key = %kv.key, error = %e, "skipping unreadable node record"),
        }
    }
}

impl ControlPlane {
    /// Recomputes the fleet-wide applied revision after the node list changed.
    pub(crate) fn refresh_common_applied(&self) {
        let Some(node) = &self.opts.node else { return };
        let local = *self.local_applied.borrow();
        let common = self.fleet_view.read().common_applied(&node.id, local);
        self.applied.send_if_modified(|r| {
            let changed = *r != common;
            *r = common;
            changed
        });
    }

    /// How many live nodes serve `revision`, in fleet mode.
    pub fn spread(&self, revision: Revision) -> Option<Spread> {
        let node = self.opts.node.as_ref()?;
        let local = *self.local_applied.borrow();
        Some(self.fleet_view.read().spread(&node.id, local, revision))
    }

    /// The live nodes and what they serve, in fleet mode. This node is listed as it is
    /// now: its published record can lag a moment behind, and work requests already count
    /// it with what it serves (a list that said otherwise would contradict them).
    pub fn nodes(&self) -> Vec<NodeRecord> {
        let Some(node) = &self.opts.node else {
            return Vec::new();
        };
        let mut nodes = self.fleet_view.read().nodes.clone();
        let applied = *self.local_applied.borrow();
        let refused = self.local_refused.borrow().to_vec();
        let me = nodes.entry(node.id.clone()).or_insert_with(|| NodeRecord {
            id: node.id.clone(),
            role: node.role.clone(),
            applied,
            refused: refused.clone(),
            updated_at: Utc::now(),
        });
        if me.applied != applied || me.refused != refused {
            me.applied = applied;
            me.refused = refused;
            me.updated_at = Utc::now();
        }
        nodes.into_values().collect()
    }
}

/// Publishes this node's served revision and what it refuses whenever either changes, and
/// again after a failure.
pub(crate) async fn publish_applied(cp: Weak<ControlPlane>) {
    let Some(this) = cp.upgrade() else { return };
    let Some(node) = this.opts.node.clone() else {
        return;
    };
    let mut local = this.local_applied.subscribe();
    let mut refused = this.local_refused.subscribe();
    drop(this);
    let key = keys::node(&node.id);
    let mut published: Option<(Revision, Arc<Vec<Refusal>>)> = None;
    loop {
        let now = (
            *local.borrow_and_update(),
            refused.borrow_and_update().clone(),
        );
        if published.as_ref() != Some(&now) {
            let Some(this) = cp.upgrade() else { return };
            let record = NodeRecord {
                id: node.id.clone(),
                role: node.role.clone(),
                applied: now.0,
                refused: now.1.to_vec(),
                updated_at: Utc::now(),
            };
            let value = serde_json::to_vec(&record).unwrap_or_default();
            match this.store().put_session(&key, value).await {
                Ok(_) => published = Some(now.clone()),
                Err(e) => tracing::debug!(error = %e, "cannot publish the served revision yet"),
            }
        }
        let retry = published.as_ref() != Some(&now);
        tokio::select! {
            changed = local.changed() => if changed.is_err() { return },
            changed = refused.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(500)), if retry => {}
        }
    }
}

/// Keeps the fleet view current: list the node keys, then watch them.
pub(crate) async fn watch_nodes(cp: Weak<ControlPlane>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(this) = cp.upgrade() else { return };
        let store = this.store().clone();
        drop(this);
        let range = match store.range(keys::NODES).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list fleet nodes yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        {
            let Some(this) = cp.upgrade() else { return };
            let mut view = FleetView {
                loaded: true,
                ..FleetView::default()
            };
            for kv in &range.kvs {
                view.put(kv);
            }
            *this.fleet_view.write() = view;
            this.refresh_common_applied();
        }
        let mut stream = match store.watch(keys::NODES, range.revision + 1).await {
            Ok(s) => s,
            Err(_) => continue,
        };
        backoff = Duration::from_millis(100);
        while let Some(item) = stream.next().await {
            let Some(this) = cp.upgrade() else { return };
            match item {
                Ok(batch) => {
                    {
                        let mut view = this.fleet_view.write();
                        for event in &batch.events {
                            match event.kind {
                                EventKind::Put => view.put(&event.kv),
                                EventKind::Delete => {
                                    let id = event.kv.key.trim_start_matches(keys::NODES);
                                    view.nodes.remove(id);
                                }
                            }
                        }
                    }
                    this.refresh_common_applied();
                }
                Err(StoreError::Compacted { .. }) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "fleet watch broke");
                    tokio::time::sleep(backoff).await;
                    break;
                }
            }
        }
    }
}

/// Writes the view to the snapshot cache whenever it changes (at most every 200 ms):
/// write a temporary file, fsync, rename, so a crash leaves the old or the new one.
pub(crate) async fn keep_snapshot(cp: Weak<ControlPlane>, path: PathBuf) {
    let Some(this) = cp.upgrade() else { return };
    let mut seen = this.subscribe_seen();
    drop(this);
    let mut written: Option<Revision> = None;
    loop {
        let revision = *seen.borrow_and_update();
        if written != Some(revision) {
            let Some(this) = cp.upgrade() else { return };
            // Secrets sealed as in the store: the file is as safe to lose as the store.
            let sealed = records::sealed_config(&this.opts.secret_key, &this.view())
                .map_err(|e| e.to_string())
                .and_then(|c| serde_json::to_vec(&c).map_err(|e| e.to_string()));
            let bytes = match sealed {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot serialise the configuration snapshot");
                    return;
                }
            };
            drop(this);
            let target = path.clone();
            let result = tokio::task::spawn_blocking(move || write_atomically(&target, &bytes))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r);
            match result {
                Ok(()) => written = Some(revision),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the configuration snapshot")
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if seen.changed().await.is_err() {
            return;
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    // It holds secrets (upstream credentials, TLS keys): the owner's only.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The configuration a node last saved, if any, its secrets opened with `key`.
pub(crate) fn load_snapshot(path: &Path, key: &SecretKey) -> Result<Option<Config>, ControlError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let mut config: Config = serde_json::from_slice(&bytes).map_err(|e| {
                ControlError::Internal(format!("unreadable snapshot {}: {e}", path.display()))
            })?;
            records::open_config(key, &mut config).map_err(|e| {
                ControlError::SecretKey(format!(
                    "cannot open the secrets of the snapshot {}: {e}",
                    path.display()
                ))
            })?;
            Ok(Some(config))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ControlError::Internal(format!(
            "cannot read snapshot {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, applied: Revision) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            role: "all".into(),
            applied,
            refused: Vec::new(),
            updated_at: Utc::now(),
        }
    }

    fn view(nodes: &[(&str, Revision)]) -> FleetView {
        FleetView {
            loaded: true,
            nodes: nodes
                .iter()
                .map(|(id, rev)| (id.to_string(), record(id, *rev)))
                .collect(),
        }
    }

    #[test]
    fn a_revision_counts_once_every_live_node_serves_it() {
        let v = view(&[("a", 10), ("b", 7), ("c", 12)]);
        assert_eq!(v.common_applied("a", 10), 7);
        // This node counts with what it serves now, not its published record.
        assert_eq!(v.common_applied("b", 11), 10);
        let spread = v.spread("a", 10, 9);
        assert_eq!(
            spread,
            Spread {
                serving: 2,
                live: 3
            }
        );
        assert_eq!(spread.to_string(), "served by 2 of 3 nodes");
        assert_eq!(v.spread("a", 10, 7).to_string(), "served by all 3 nodes");
    }

    #[test]
    fn a_node_not_yet_listed_counts_itself_and_nothing_counts_before_the_first_list() {
        let v = view(&[("a", 10)]);
        assert_eq!(v.common_applied("b", 4), 4);
        assert_eq!(
            v.spread("b", 4, 5),
            Spread {
                serving: 1,
                live: 2
            }
        );
        let unknown = FleetView::default();
        assert_eq!(unknown.common_applied("a", 10), 0);
    }
}
