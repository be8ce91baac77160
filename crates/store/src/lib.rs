//! A revisioned key-value store with etcd's semantics.
//!
//! Every backend (the embedded redb one here, etcd in fleet mode) implements [`Store`]:
//! one global revision that every committed transaction bumps by exactly one; per key a
//! create revision, a mod revision and a version; atomic compare-and-swap transactions;
//! an ordered change feed (`watch`) that can start at any revision not yet compacted.
//!
//! The control plane relies on these guarantees and nothing more, so a fleet of nodes on
//! etcd behaves exactly like a single node on the embedded store.

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod embedded;
mod pace;
mod wal;

pub use embedded::EmbeddedStore;

/// A store revision. Revisions start at 1 (an empty store is at revision 0 or 1, as the
/// backend chooses) and grow by one per committed write transaction.
pub type Revision = i64;

/// One key with its value and bookkeeping, as etcd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision of the transaction that created the key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the transaction that last wrote the key.
    pub mod_revision: Revision,
    /// Number of writes since creation; 1 after the first put.
    pub version: i64,
}

/// What a transaction checks before it applies its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod revision equals the given one; `0` means "the key does not exist".
    ModRevision { key: String, revision: Revision },
    /// The key's create revision equals the given one; `0` means "the key does not exist".
    CreateRevision { key: String, revision: Revision },
    /// The key exists and holds exactly this value (whatever its revisions).
    Value { key: String, value: Vec<u8> },
}

impl Compare {
    pub fn absent(key: impl Into<String>) -> Self {
        Compare::CreateRevision {
            key: key.into(),
            revision: 0,
        }
    }
    pub fn unchanged(key: impl Into<String>, mod_revision: Revision) -> Self {
        Compare::ModRevision {
            key: key.into(),
            revision: mod_revision,
        }
    }
    pub fn value(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Compare::Value {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// A write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
    },
    /// Deleting a key that does not exist is not an error and changes nothing.
    Delete {
        key: String,
    },
    /// Writes a key again with the value it has (etcd: a put with `ignore_value`): its mod
    /// revision and version move, so watchers and ETags see it changed, while two touches
    /// never overwrite each other's value. Only touch a key a compare proves exists (etcd
    /// fails the transaction otherwise; the embedded store skips it).
    Touch {
        key: String,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Touch { key } => key,
        }
    }
}

/// All compares must hold for `success` to apply; otherwise `failure` applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held (and `success` was applied).
    pub succeeded: bool,
    /// The store's revision after the transaction. A transaction that wrote something
    /// gets a new revision; one that wrote nothing leaves the revision as it was.
    pub revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResponse {
    /// Keys under the prefix, in ascending key order.
    pub kvs: Vec<KeyValue>,
    /// The revision the range was read at: watching from `revision + 1` misses nothing.
    pub revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. For a delete, `kv.value` is empty and `kv.mod_revision` is the deleting revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// All events of one revision that match the watched prefix, in the order the
/// transaction applied them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchBatch {
    pub revision: Revision,
    pub events: Vec<Event>,
}

/// Batches in strictly increasing revision order. The stream ends after yielding an error
/// (`Compacted` when the start revision is gone: re-list with `range` and watch again).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchBatch, StoreError>> + Send>>;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("revision {requested} has been compacted (compacted up to {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A write reached the store but no answer came back: it may or may not have been
    /// applied. Only `txn` answers this; reads and unsent writes are `Unavailable`.
    #[error("no answer from the store; the write may have been applied: {0}")]
    Indeterminate(String),
    /// The store refuses a transaction this large (etcd's `--max-txn-ops` and
    /// `--max-request-bytes`): retrying cannot help, a smaller change or a store configured
    /// for larger ones can.
    #[error("the configuration store refuses a transaction this large: {0}")]
    TooLarge(String),
    #[error("store failure: {0}")]
    Internal(String),
}

/// Operations (and compares) one change may need in a single transaction: a batch that
/// replaces 200 members deletes 200 keys and writes 200 more, besides its compares and
/// bookkeeping. A shared store must accept transactions this large.
pub const NEEDED_TXN_OPS: usize = 1024;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Every key that starts with `prefix`.
    async fn range(&self, prefix: &str) -> Result<RangeResponse, StoreError>;
    /// Atomic and serializable; durable before it returns. `Indeterminate` when the
    /// transaction was sent and no answer came.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError>;
    /// Changes under `prefix` from `from_revision` (inclusive), then live ones as they commit.
    async fn watch(&self, prefix: &str, from_revision: Revision)
    -> Result<WatchStream, StoreError>;
    /// Forget the change history before `revision`; watches from older revisions answer `Compacted`.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;
    /// The current revision.
    async fn revision(&self) -> Result<Revision, StoreError>;

    /// Whether the store can take writes, as far as it knows without writing: an embedded
    /// store after an I/O error answers `Unavailable` with the cause (and tries to recover
    /// first). A shared store's reachability is learned from its calls instead.
    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Lets go of the store for another process on this machine (a hitless restart): an
    /// embedded store closes its file and answers `Unavailable` until [`Store::reacquire`];
    /// a shared store has nothing to let go of.
    async fn release(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Takes the store back after [`Store::release`] (the other process did not take over).
    async fn reacquire(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Puts a key that lives only as long as this client's session. A shared store ties it
    /// to a lease the process keeps renewing, so the key disappears soon after the process
    /// dies or loses the store, and is put back when the session resumes. A store with no
    /// sessions (the embedded one, which only its own process uses) keeps it like any key.
    async fn put_session(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let resp = self
            .txn(Txn {
                success: vec![Op::Put {
                    key: key.to_owned(),
                    value,
                }],
                ..Txn::default()
            })
            .await?;
        Ok(resp.revision)
    }
}
