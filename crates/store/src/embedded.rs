//! The embedded backend: a revisioned key-value store on one redb file.
//!
//! Layout (three tables):
//! * `kv`: key → `(create_rev, mod_rev, version, value)`, the current state, so `get` and
//!   `range` are plain B-tree lookups;
//! * `changes`: revision → every event of that revision, the history `watch` replays;
//! * `meta`: the current revision and the compacted revision.
//!
//! Every transaction that writes something bumps the revision by one, writes its keys and
//! appends one `changes` row. Transactions are committed in groups: those that arrive while
//! a commit is being made durable queue up and go into the next redb write transaction
//! together, each with its own compares and revision, and one commit (redb's default
//! `Durability::Immediate`, one fsync) makes them all durable before any `txn` returns. The
//! commit and the live notification happen under one writer lock: watchers therefore see
//! revisions in commit order.
//!
//! Conventions where etcd leaves a choice or differs:
//! * an empty store is at revision 0; the first write makes revision 1;
//! * `watch(prefix, 0)` (or any revision below 1) replays from the first revision still in
//!   the log, like `watch(prefix, 1)`; etcd would start at the current revision instead;
//! * a delete event carries the key, an empty value, `mod_revision` = the deleting revision,
//!   and `create_revision` = `version` = 0 (what etcd reports too);
//! * `compact(rev)` keeps revision `rev` watchable and records `rev - 1` as compacted;
//!   compacting below an earlier compaction is a no-op, beyond the current revision an error.
//!
//! An I/O error while writing (a full disk, a failing device) poisons a redb `Database`: it
//! refuses everything after. The store then answers `Unavailable` with the cause and, on the
//! next call at most every [`REOPEN_EVERY`], closes the file and opens it again (redb rolls
//! back to the last commit that reached the disk), so it recovers by itself once the cause
//! is gone. A failed commit was never acknowledged, so nothing acknowledged is lost.
//!
//! Transactions may not name the same key twice in one branch (etcd refuses such requests
//! too: "duplicate key given in txn request"); they fail with `Internal("duplicate key in
//! txn")` before touching the store. This keeps "which write wins" out of the data model.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, oneshot};

use crate::{
    Compare, Event, EventKind, KeyValue, Op, RangeResponse, Revision, Store, StoreError, Txn,
    TxnResponse, WatchBatch, WatchStream,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const CHANGES: TableDefinition<i64, &[u8]> = TableDefinition::new("changes");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
/// Counts the writes that proved the disk works again after an I/O error.
const META_PROBE: &str = "probe";

/// First byte of every encoded row, so the format can evolve without guessing.
const FORMAT_V1: u8 = 1;

/// Live notifications kept for slow watchers; a watcher further behind re-reads `changes`.
/// redb's page cache. Its default (1 GiB) fills with every page a write touches, while nearly
/// all reads are served by the control plane's in-memory view instead: at 20,000 members it
/// held 26 MB of a 72 MB heap (heaptrack). Capped, 200-member batches into 100,000 members
/// took as long as before, within run-to-run noise. Pages it misses come from the kernel's
/// page cache.
const CACHE_BYTES: usize = 16 << 20;

const DEFAULT_BROADCAST_CAPACITY: usize = 1024;
/// Revisions read per blocking call while a watcher catches up, to bound memory and latency.
const HISTORY_CHUNK: usize = 256;

/// The redb-backed [`Store`]. Cheap to share behind an `Arc`: reads run concurrently with the
/// single writer, all blocking work runs on tokio's blocking pool.
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    path: PathBuf,
}

impl Drop for EmbeddedStore {
    /// Closes the file before returning: calls still finishing on the blocking pool (the
    /// committer replies before it lets go of the store) hold it for a moment more, and
    /// opening the file again (a restart in the same process, a test) must not race them.
    fn drop(&mut self) {
        let deadline = Instant::now() + CLOSE_WAIT;
        while Arc::strong_count(&self.inner) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

struct Inner {
    path: PathBuf,
    /// The open file; `None` between closing it after an I/O error and opening it again.
    db: RwLock<Option<Arc<Database>>>,
    /// Why the store cannot be used, after an I/O error, until it is reopened.
    fault: Mutex<Option<Fault>>,
    /// Serialises commit + notification so live batches leave in revision order; a reopen
    /// holds it too.
    write_lock: Mutex<()>,
    changes_tx: broadcast::Sender<Arc<Change>>,
    /// Transactions waiting to be committed together.
    queue: Mutex<Queue>,
    /// redb commits made by `txn` (each one fsync), for group-commit accounting.
    commits: std::sync::atomic::AtomicU64,
    /// The file was let go for another process (`Store::release`): no reopening until
    /// `Store::reacquire`.
    released: std::sync::atomic::AtomicBool,
}

/// Why a released store answers `Unavailable`.
const RELEASED: &str = "the store was handed over to another fulcrum process";

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    /// A caller is committing batches (and will take what is queued before it stops).
    committing: bool,
}

struct Pending {
    txn: Txn,
    reply: oneshot::Sender<Result<TxnResponse, StoreError>>,
}

struct Fault {
    reason: String,
    next_attempt: Instant,
}

/// How often a store that failed tries to reopen its file (on the next call after that).
pub const REOPEN_EVERY: Duration = Duration::from_millis(500);
/// Free space a store that failed waits for before it takes changes again.
const MIN_FREE_BYTES: u64 = 1 << 20;
/// How long a reopen waits for reads still using the old file to finish.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// One committed revision with all its events (unfiltered), as broadcast to watchers.
#[derive(Debug)]
struct Change {
    revision: Revision,
    events: Vec<Event>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`, creating parent directories as needed.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_capacity(path, DEFAULT_BROADCAST_CAPACITY)
    }

    fn open_with_capacity(path: &Path, capacity: usize) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Internal(format!("create store directory {}: {e}", parent.display()))
            })?;
        }
        create_private(path)?;
        let db = open_database(path)?;
        let (changes_tx, _) = broadcast::channel(capacity.max(1));
        tracing::debug!(path = %path.display(), "embedded store opened");
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                db: RwLock::new(Some(Arc::new(db))),
                fault: Mutex::new(None),
                write_lock: Mutex::new(()),
                changes_tx,
                queue: Mutex::new(Queue::default()),
                released: std::sync::atomic::AtomicBool::new(false),
                commits: std::sync::atomic::AtomicU64::new(0),
            }),
            path: path.to_owned(),
        })
    }

    /// How many durable commits writing transactions took so far (several transactions
    /// share one when they arrive together).
    pub fn commits(&self) -> u64 {
        self.inner
            .commits
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `f` on the blocking pool: redb is synchronous and may fsync.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        run_blocking(self.inner.clone(), f).await
    }
}

/// Opens the file (redb repairs it if the last commit did not complete) and creates the
/// tables up front so read transactions never meet a missing table.
/// The store file is the owner's only (its secrets are sealed, the rest is not): created
/// 0600, so it is never readable by others even for a moment, and tightened with a warning
/// when an older version left it open.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::Internal(format!("open store file {}: {e}", path.display())))?;
    let mode = file
        .metadata()
        .map_err(|e| StoreError::Internal(format!("stat store file {}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777),
            "the store file was readable by others; making it the owner's only");
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| {
                StoreError::Internal(format!("chmod store file {}: {e}", path.display()))
            })?;
    }
    Ok(())
}

fn open_database(path: &Path) -> Result<Database, StoreError> {
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .ctx(&format!("open redb file {}", path.display()))?;
    let wtx = db.begin_write().ctx("begin init transaction")?;
    {
        wtx.open_table(KV).ctx("create kv table")?;
        wtx.open_table(CHANGES).ctx("create changes table")?;
        wtx.open_table(META).ctx("create meta table")?;
    }
    wtx.commit().ctx("commit init transaction")?;
    Ok(db)
}

/// Bytes an unprivileged writer may still use on the file system holding `path`.
fn free_bytes(path: &Path) -> Result<u64, String> {
    let dir = path.parent().unwrap_or(path);
    let st = rustix::fs::statvfs(dir).map_err(|e| format!("statvfs {}: {e}", dir.display()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// One durable write outside the revisioned data (a counter in `meta`): whether the disk
/// takes commits again.
fn probe_write(db: &Database) -> Result<(), StoreError> {
    let wtx = db.begin_write().ctx("begin probe write")?;
    {
        let mut meta = wtx.open_table(META).ctx("open meta table")?;
        let n = read_meta(&meta, META_PROBE)?;
        meta.insert(META_PROBE, n + 1).ctx("probe write")?;
    }
    wtx.commit().ctx("commit probe write")
}

async fn run_blocking<T, F>(inner: Arc<Inner>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let result = f(&inner);
        if let Err(StoreError::Unavailable(reason)) = &result {
            inner.failed(reason);
        }
        result
    })
    .await
    .map_err(|e| StoreError::Internal(format!("store worker failed: {e}")))?
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |inner| {
            let rtx = inner.db()?.begin_read().ctx("begin read")?;
            let kv = rtx.open_table(KV).ctx("open kv table")?;
            let found = kv.get(key.as_str()).ctx("read key")?;
            found.map(|v| decode_kv(&key, v.value())).transpose()
        })
        .await
    }

    async fn range(&self, prefix: &str) -> Result<RangeResponse, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| {
            let rtx = inner.db()?.begin_read().ctx("begin read")?;
            let meta = rtx.open_table(META).ctx("open meta table")?;
            let revision = read_meta(&meta, META_REVISION)?;
            let kv = rtx.open_table(KV).ctx("open kv table")?;
            let mut kvs = Vec::new();
            for entry in kv.range(prefix.as_str()..).ctx("range kv table")? {
                let (k, v) = entry.ctx("range kv table")?;
                let key = k.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                kvs.push(decode_kv(key, v.value())?);
            }
            Ok(RangeResponse { kvs, revision })
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        reject_duplicates(&txn.success)?;
        reject_duplicates(&txn.failure)?;
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut queue = self.inner.queue.lock();
            queue.pending.push(Pending { txn, reply });
            !std::mem::replace(&mut queue.committing, true)
        };
        if lead {
            let inner = self.inner.clone();
            tokio::task::spawn_blocking(move || inner.commit_queued());
        }
        answer
            .await
            .map_err(|_| StoreError::Internal("the store's committer stopped".into()))?
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        // Subscribe before any history is read: every commit is then either visible to the
        // history read or delivered live (or both, which `next_rev` deduplicates).
        let rx = self.inner.changes_tx.subscribe();
        let state = WatchState {
            inner: Arc::downgrade(&self.inner),
            prefix: prefix.to_owned(),
            next_rev: from_revision.max(1),
            rx,
            pending: VecDeque::new(),
            phase: Phase::CatchUp,
        };
        Ok(Box::pin(futures::stream::unfold(state, WatchState::step)))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.compact(revision)).await
    }

    async fn release(&self) -> Result<(), StoreError> {
        self.blocking(|inner| {
            let _writer = inner.write_lock.lock();
            *inner.fault.lock() = Some(Fault {
                reason: RELEASED.into(),
                next_attempt: Instant::now(),
            });
            inner
                .released
                .store(true, std::sync::atomic::Ordering::SeqCst);
            if let Some(old) = inner.db.write().take() {
                let deadline = Instant::now() + CLOSE_WAIT;
                while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if Arc::strong_count(&old) > 1 {
                    *inner.db.write() = Some(old);
                    return Err(StoreError::Unavailable(
                        "reads still hold the store file".into(),
                    ));
                }
            }
            tracing::info!(path = %inner.path.display(), "store file closed for another process");
            Ok(())
        })
        .await
    }

    async fn reacquire(&self) -> Result<(), StoreError> {
        self.blocking(|inner| {
            let _writer = inner.write_lock.lock();
            inner
                .released
                .store(false, std::sync::atomic::Ordering::SeqCst);
            if let Some(f) = inner.fault.lock().as_mut() {
                f.next_attempt = Instant::now();
            }
            inner.recover()
        })
        .await
    }

    async fn check(&self) -> Result<(), StoreError> {
        if self.inner.fault.lock().is_none() {
            return Ok(());
        }
        self.blocking(|inner| {
            let _writer = inner.write_lock.lock();
            inner.recover()
        })
        .await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.blocking(|inner| {
            let rtx = inner.db()?.begin_read().ctx("begin read")?;
            let meta = rtx.open_table(META).ctx("open meta table")?;
            read_meta(&meta, META_REVISION)
        })
        .await
    }
}

impl Inner {
    /// The open database, for reads: they go on while writes fail (redb refuses writes,
    /// not reads, after an I/O error).
    fn db(&self) -> Result<Arc<Database>, StoreError> {
        self.db.read().clone().ok_or_else(|| {
            let reason = self.fault.lock().as_ref().map(|f| f.reason.clone());
            StoreError::Unavailable(reason.unwrap_or_else(|| "the store file is closed".into()))
        })
    }

    /// The open database, for a writer holding `write_lock`: after an I/O error, only once
    /// the store has recovered.
    fn db_locked(&self) -> Result<Arc<Database>, StoreError> {
        self.recover()?;
        self.db()
    }

    /// Records an I/O error: writes are refused until [`Self::recover`] succeeds.
    fn failed(&self, reason: &str) {
        let mut fault = self.fault.lock();
        if fault.is_none() {
            tracing::error!(path = %self.path.display(), error = reason,
                "the store cannot write; changes answer unavailable until it recovers");
            *fault = Some(Fault {
                reason: reason.to_owned(),
                next_attempt: Instant::now(),
            });
        }
    }

    /// After an I/O error, at most every [`REOPEN_EVERY`]: closes the file, opens it again
    /// (redb rolls back to the last complete commit) and proves a durable write works before
    /// writes are taken again. The caller holds `write_lock`, so no commit runs meanwhile.
    fn recover(&self) -> Result<(), StoreError> {
        let reason = {
            let mut fault = self.fault.lock();
            let Some(f) = fault.as_mut() else {
                return Ok(());
            };
            if Instant::now() < f.next_attempt
                || self.released.load(std::sync::atomic::Ordering::SeqCst)
            {
                return Err(StoreError::Unavailable(f.reason.clone()));
            }
            f.next_attempt = Instant::now() + REOPEN_EVERY;
            f.reason.clone()
        };
        let unavailable = |why: String| {
            if let Some(f) = self.fault.lock().as_mut() {
                f.reason = why.clone();
            }
            StoreError::Unavailable(why)
        };
        // redb allows one `Database` per file: the old one must be gone before the new one
        // opens. Reads that hold it finish quickly.
        if let Some(old) = self.db.write().take() {
            let deadline = Instant::now() + CLOSE_WAIT;
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if Arc::strong_count(&old) > 1 {
                *self.db.write() = Some(old);
                return Err(StoreError::Unavailable(reason));
            }
        }
        let db = open_database(&self.path).map_err(|e| unavailable(e.to_string()))?;
        let probe = probe_write(&db);
        *self.db.write() = Some(Arc::new(db));
        probe.map_err(|e| unavailable(e.to_string()))?;
        // A small commit can fit in pages the file already has while the disk is still full:
        // wait for room to grow as well.
        let free = free_bytes(&self.path).map_err(|e| unavailable(format!("{reason}; {e}")))?;
        if free < MIN_FREE_BYTES {
            return Err(unavailable(format!(
                "{reason}; {free} bytes are free on its file system, waiting for {MIN_FREE_BYTES}"
            )));
        }
        *self.fault.lock() = None;
        tracing::info!(path = %self.path.display(), "the store recovered and takes changes again");
        Ok(())
    }

    /// Commits every queued transaction, batch after batch, until the queue is empty; run
    /// by the caller that found no commit under way (the leader). Transactions that arrive
    /// while a batch is being made durable wait for the next one, so under load one fsync
    /// serves many writers, and a lone writer waits for nothing.
    fn commit_queued(&self) {
        loop {
            let batch = {
                let mut queue = self.queue.lock();
                if queue.pending.is_empty() {
                    queue.committing = false;
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            let (txns, replies): (Vec<Txn>, Vec<_>) =
                batch.into_iter().map(|p| (p.txn, p.reply)).unzip();
            match self.apply_batch(txns) {
                Ok(responses) => {
                    for (reply, response) in replies.into_iter().zip(responses) {
                        // A caller that went away no longer needs its answer.
                        let _ = reply.send(Ok(response));
                    }
                }
                Err(e) => {
                    if let StoreError::Unavailable(reason) = &e {
                        self.failed(reason);
                    }
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// Applies transactions in order in one redb write transaction and one commit: each
    /// evaluates its compares against the state the ones before it left, and writes its own
    /// revision (if it writes anything). All are durable, or none is (the error is then
    /// every transaction's). Watchers are told after the commit, in revision order.
    fn apply_batch(&self, txns: Vec<Txn>) -> Result<Vec<TxnResponse>, StoreError> {
        let _writer = self.write_lock.lock();
        let wtx = self.db_locked()?.begin_write().ctx("begin write")?;
        let mut responses = Vec::with_capacity(txns.len());
        let mut changes = Vec::new();
        {
            let mut meta = wtx.open_table(META).ctx("open meta table")?;
            let mut kv = wtx.open_table(KV).ctx("open kv table")?;
            let mut history = wtx.open_table(CHANGES).ctx("open changes table")?;
            let mut current = read_meta(&meta, META_REVISION)?;
            for txn in txns {
                let succeeded = txn.compares.iter().try_fold(true, |all, c| {
                    Ok::<_, StoreError>(all && compare_holds(&kv, c)?)
                })?;
                let ops = if succeeded { txn.success } else { txn.failure };
                let events = apply_ops(&mut kv, ops, current + 1)?;
                if !events.is_empty() {
                    current += 1;
                    history
                        .insert(current, encode_events(&events)?.as_slice())
                        .ctx("append change")?;
                    changes.push(Change {
                        revision: current,
                        events,
                    });
                }
                responses.push(TxnResponse {
                    succeeded,
                    revision: current,
                });
            }
            if !changes.is_empty() {
                meta.insert(META_REVISION, current).ctx("write revision")?;
            }
        }
        if changes.is_empty() {
            // Nothing written: no new revision, nothing to make durable.
            wtx.abort().ctx("abort empty transaction")?;
        } else {
            wtx.commit().ctx("commit transaction")?;
            self.commits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for change in changes {
                // No receiver is fine: nobody is watching.
                let _ = self.changes_tx.send(Arc::new(change));
            }
        }
        Ok(responses)
    }

    /// Drops `changes` rows below `revision`; the current key values are untouched.
    fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let _writer = self.write_lock.lock();
        let wtx = self.db_locked()?.begin_write().ctx("begin write")?;
        let changed = {
            let mut meta = wtx.open_table(META).ctx("open meta table")?;
            let current = read_meta(&meta, META_REVISION)?;
            let compacted = read_meta(&meta, META_COMPACTED)?;
            if revision > current {
                return Err(StoreError::Internal(format!(
                    "cannot compact to revision {revision}: current revision is {current}"
                )));
            }
            if revision - 1 <= compacted {
                false
            } else {
                let mut changes = wtx.open_table(CHANGES).ctx("open changes table")?;
                changes
                    .retain_in(..revision, |_, _| false)
                    .ctx("drop old changes")?;
                meta.insert(META_COMPACTED, revision - 1)
                    .ctx("write compacted revision")?;
                true
            }
        };
        if changed {
            wtx.commit().ctx("commit compaction")?;
        } else {
            wtx.abort().ctx("abort no-op compaction")?;
        }
        Ok(())
    }

    /// Reads up to [`HISTORY_CHUNK`] `changes` rows from `from` on, in one snapshot.
    fn read_history(&self, prefix: &str, from: Revision) -> Result<History, StoreError> {
        let rtx = self.db()?.begin_read().ctx("begin read")?;
        let meta = rtx.open_table(META).ctx("open meta table")?;
        let current = read_meta(&meta, META_REVISION)?;
        let compacted = read_meta(&meta, META_COMPACTED)?;
        if from <= compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compacted,
            });
        }
        let changes = rtx.open_table(CHANGES).ctx("open changes table")?;
        let mut batches = Vec::new();
        let mut last_scanned = None;
        for row in changes
            .range(from..)
            .ctx("range changes table")?
            .take(HISTORY_CHUNK)
        {
            let (rev, data) = row.ctx("range changes table")?;
            let revision = rev.value();
            let events = decode_events(revision, data.value())?;
            let events: Vec<Event> = events
                .into_iter()
                .filter(|e| e.kv.key.starts_with(prefix))
                .collect();
            if !events.is_empty() {
                batches.push(WatchBatch { revision, events });
            }
            last_scanned = Some(revision);
        }
        Ok(History {
            batches,
            last_scanned,
            current,
        })
    }
}

struct History {
    batches: Vec<WatchBatch>,
    last_scanned: Option<Revision>,
    current: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading `changes` rows from `next_rev` until the snapshot's current revision.
    CatchUp,
    /// Following the broadcast of new commits.
    Live,
    /// An error was yielded; the stream is over.
    Done,
}

/// The state of one watch stream. It runs inside the consumer's task (no spawned task), and
/// holds the store only weakly so an open watch does not keep the database file open.
struct WatchState {
    inner: Weak<Inner>,
    prefix: String,
    /// The next revision this watcher has not yet yielded or skipped.
    next_rev: Revision,
    rx: broadcast::Receiver<Arc<Change>>,
    pending: VecDeque<WatchBatch>,
    phase: Phase,
}

impl WatchState {
    async fn step(mut self) -> Option<(Result<WatchBatch, StoreError>, Self)> {
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Some((Ok(batch), self));
            }
            match self.phase {
                Phase::Done => return None,
                Phase::CatchUp => {
                    if let Err(e) = self.catch_up().await {
                        self.phase = Phase::Done;
                        return Some((Err(e), self));
                    }
                }
                Phase::Live => match self.rx.recv().await {
                    Ok(change) => {
                        if change.revision == self.next_rev {
                            self.next_rev += 1;
                            let events: Vec<Event> = change
                                .events
                                .iter()
                                .filter(|e| e.kv.key.starts_with(self.prefix.as_str()))
                                .cloned()
                                .collect();
                            if !events.is_empty() {
                                self.pending.push_back(WatchBatch {
                                    revision: change.revision,
                                    events,
                                });
                            }
                        } else if change.revision > self.next_rev {
                            // A gap: the missing revisions are committed, so read them back.
                            self.phase = Phase::CatchUp;
                        }
                        // Older revisions were already yielded from history.
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "watcher lagged; re-reading the change log");
                        self.phase = Phase::CatchUp;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        self.phase = Phase::Done;
                        return Some((Err(closed()), self));
                    }
                },
            }
        }
    }

    async fn catch_up(&mut self) -> Result<(), StoreError> {
        let inner = self.inner.upgrade().ok_or_else(closed)?;
        let prefix = self.prefix.clone();
        let from = self.next_rev;
        let history = run_blocking(inner, move |inner| inner.read_history(&prefix, from)).await?;
        self.pending.extend(history.batches);
        match history.last_scanned {
            Some(last) => self.next_rev = last + 1,
            // Rows exist for every revision after the compaction point: a missing one means
            // the file is damaged, and looping on it would spin.
            None if self.next_rev <= history.current => {
                return Err(StoreError::Internal(format!(
                    "change log has no row for revision {} (current {})",
                    self.next_rev, history.current
                )));
            }
            None => {}
        }
        if self.next_rev > history.current {
            self.phase = Phase::Live;
        }
        Ok(())
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("embedded store closed".into())
}

fn reject_duplicates(ops: &[Op]) -> Result<(), StoreError> {
    let mut seen = HashSet::new();
    for op in ops {
        if !seen.insert(op.key()) {
            return Err(StoreError::Internal("duplicate key in txn".into()));
        }
    }
    Ok(())
}

/// Writes one transaction branch at revision `rev`; the events it made (none: nothing
/// changed, and the revision is not used).
fn apply_ops(
    kv: &mut redb::Table<&'static str, &'static [u8]>,
    ops: Vec<Op>,
    rev: Revision,
) -> Result<Vec<Event>, StoreError> {
    let mut events = Vec::new();
    for op in ops {
        let (key, value) = match op {
            Op::Put { key, value } => (key, Some(value)),
            // A touch writes the value the key has.
            Op::Touch { key } => (key, None),
            Op::Delete { key } => {
                if kv.remove(key.as_str()).ctx("delete key")?.is_some() {
                    events.push(Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key,
                            value: Vec::new(),
                            create_revision: 0,
                            mod_revision: rev,
                            version: 0,
                        },
                    });
                }
                continue;
            }
        };
        let prev = match kv.get(key.as_str()).ctx("read key")? {
            Some(v) => Some(decode_kv(&key, v.value())?),
            None => None,
        };
        let (create_revision, version, value) = match (prev, value) {
            (Some(p), Some(value)) => (p.create_revision, p.version + 1, value),
            (Some(p), None) => (p.create_revision, p.version + 1, p.value),
            (None, Some(value)) => (rev, 1, value),
            // Touching a key that is not there changes nothing.
            (None, None) => continue,
        };
        let encoded = encode_kv(create_revision, rev, version, &value);
        kv.insert(key.as_str(), encoded.as_slice())
            .ctx("write key")?;
        events.push(Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key,
                value,
                create_revision,
                mod_revision: rev,
                version,
            },
        });
    }
    Ok(events)
}

fn compare_holds(
    kv: &impl ReadableTable<&'static str, &'static [u8]>,
    compare: &Compare,
) -> Result<bool, StoreError> {
    let key = match compare {
        Compare::ModRevision { key, .. }
        | Compare::CreateRevision { key, .. }
        | Compare::Value { key, .. } => key.as_str(),
    };
    let current = match kv.get(key).ctx("read key")? {
        Some(v) => Some(decode_kv(key, v.value())?),
        None => None,
    };
    Ok(match compare {
        Compare::ModRevision { revision, .. } => {
            current.map_or(0, |kv| kv.mod_revision) == *revision
        }
        Compare::CreateRevision { revision, .. } => {
            current.map_or(0, |kv| kv.create_revision) == *revision
        }
        Compare::Value { value, .. } => current.is_some_and(|kv| kv.value == *value),
    })
}

fn read_meta(
    meta: &impl ReadableTable<&'static str, i64>,
    name: &str,
) -> Result<Revision, StoreError> {
    Ok(meta
        .get(name)
        .ctx("read meta")?
        .map(|v| v.value())
        .unwrap_or(0))
}

/// Adds context to a redb error and turns it into a `StoreError`: I/O errors (and redb's
/// refusal after one) are `Unavailable`, which makes the store reopen its file; anything
/// else is `Internal`.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, StoreError> {
        self.map_err(|e| match e.into() {
            redb::Error::Io(e) => StoreError::Unavailable(format!("{what}: {}", describe_io(&e))),
            redb::Error::PreviousIo => StoreError::Unavailable(format!(
                "{what}: an earlier write failed with an I/O error"
            )),
            e => StoreError::Internal(format!("{what}: {e}")),
        })
    }
}

/// An I/O error in words an operator acts on.
fn describe_io(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(28) => format!("the disk is full ({e})"),
        Some(122) => format!("the disk quota is exceeded ({e})"),
        Some(30) => format!("the file system is read-only ({e})"),
        _ => e.to_string(),
    }
}

// Row encoding: a format byte, then fixed-width little-endian integers and u32
// length-prefixed byte strings. Hand-rolled to stay dependency-free and compact.

fn encode_kv(create: Revision, modified: Revision, version: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + 24 + value.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&create.to_le_bytes());
    out.extend_from_slice(&modified.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_kv(key: &str, bytes: &[u8]) -> Result<KeyValue, StoreError> {
    let mut r = Reader::new(bytes, "kv row");
    r.format()?;
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    let version = r.i64()?;
    Ok(KeyValue {
        key: key.to_owned(),
        value: r.rest().to_vec(),
        create_revision,
        mod_revision,
        version,
    })
}

fn encode_events(events: &[Event]) -> Result<Vec<u8>, StoreError> {
    let size: usize = events
        .iter()
        .map(|e| 25 + e.kv.key.len() + e.kv.value.len())
        .sum();
    let mut out = Vec::with_capacity(5 + size);
    out.push(FORMAT_V1);
    put_len(&mut out, events.len())?;
    for e in events {
        out.push(match e.kind {
            EventKind::Put => 0,
            EventKind::Delete => 1,
        });
        out.extend_from_slice(&e.kv.create_revision.to_le_bytes());
        out.extend_from_slice(&e.kv.version.to_le_bytes());
        put_len(&mut out, e.kv.key.len())?;
        out.extend_from_slice(e.kv.key.as_bytes());
        put_len(&mut out, e.kv.value.len())?;
        out.extend_from_slice(&e.kv.value);
    }
    Ok(out)
}

fn decode_events(revision: Revision, bytes: &[u8]) -> Result<Vec<Event>, StoreError> {
    let mut r = Reader::new(bytes, "changes row");
    r.format()?;
    let count = r.len()?;
    let mut events = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let kind = match r.take(1)?[0] {
            0 => EventKind::Put,
            1 => EventKind::Delete,
            other => return Err(r.corrupt(&format!("unknown event kind {other}"))),
        };
        let create_revision = r.i64()?;
        let version = r.i64()?;
        let key_len = r.len()?;
        let key = std::str::from_utf8(r.take(key_len)?)
            .map_err(|_| r.corrupt("key is not UTF-8"))?
            .to_owned();
        let value_len = r.len()?;
        let value = r.take(value_len)?.to_vec();
        events.push(Event {
            kind,
            kv: KeyValue {
                key,
                value,
                create_revision,
                mod_revision: revision,
                version,
            },
        });
    }
    Ok(events)
}

/// Lengths are u32 on disk: a key or value of 4 GiB or more is refused, not truncated.
fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), StoreError> {
    let len = u32::try_from(len)
        .map_err(|_| StoreError::Internal(format!("entry of {len} bytes is too large")))?;
    out.extend_from_slice(&len.to_le_bytes());
    Ok(())
}

struct Reader<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self { bytes, what }
    }

    fn corrupt(&self, why: &str) -> StoreError {
        StoreError::Internal(format!("corrupt {}: {why}", self.what))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn format(&mut self) -> Result<(), StoreError> {
        match self.take(1)?[0] {
            FORMAT_V1 => Ok(()),
            other => Err(self.corrupt(&format!("unknown format {other}"))),
        }
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(buf))
    }

    fn len(&mut self) -> Result<usize, StoreError> {
        let mut buf = [0u8; 4];
        buf.copy_from_slice(self.take(4)?);
        usize::try_from(u32::from_le_bytes(buf)).map_err(|_| self.corrupt("length overflow"))
    }

    fn rest(self) -> &'a [u8] {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::conformance;

    const STEP: Duration = Duration::from_secs(10);

    fn fresh() -> (tempfile::TempDir, Arc<EmbeddedStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("fulcrum.redb")).unwrap();
        (dir, Arc::new(store))
    }

    /// Created the owner's only whatever the umask (there is no moment when others could
    /// open it), and one an older version left open is tightened.
    #[test]
    fn the_store_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fulcrum.redb");
        drop(EmbeddedStore::open(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(EmbeddedStore::open(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
    }

    macro_rules! conformance_cases {
        ($($case:ident),* $(,)?) => {
            mod conformance_suite {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $case() {
                        let (_dir, store) = fresh();
                        conformance::$case(store).await;
                    }
                )*
            }
        };
    }

    conformance_cases!(
        put_get_bookkeeping,
        range_by_prefix,
        txn_compares,
        txn_rejects_duplicate_keys,
        revision_monotonic,
        cas_counter_race,
        create_if_absent_race,
        watch_replay_then_live,
        watch_prefix_and_deletes,
        watch_concurrent_writes_no_gaps,
        watch_future_revision,
        watch_compacted,
        compaction_keeps_values,
        value_compare_and_touch,
    );

    /// `run_all` itself, as other backends will call it: one fresh file per case.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_run_all() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        conformance::run_all(|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.path().join(format!("case{i}.redb"));
            async move { EmbeddedStore::open(&path).unwrap() }
        })
        .await;
    }

    /// Concurrent writers share commits, and each still gets its own revision, its own
    /// compares and a durable write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_commits() {
        let (dir, store) = fresh();
        let writers = 200;
        let tasks: Vec<_> = (0..writers)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    // Every writer also races on one shared key: exactly one creates it.
                    let won = store
                        .txn(Txn {
                            compares: vec![Compare::absent("shared")],
                            success: vec![Op::Put {
                                key: "shared".into(),
                                value: format!("{i}").into_bytes(),
                            }],
                            failure: vec![],
                        })
                        .await
                        .unwrap()
                        .succeeded;
                    let own = store.txn(put(&format!("k{i:03}"), b"v")).await.unwrap();
                    assert!(own.succeeded);
                    (won, own.revision)
                })
            })
            .collect();
        let mut revisions = Vec::new();
        let mut winners = 0;
        for t in tasks {
            let (won, rev) = t.await.unwrap();
            winners += usize::from(won);
            revisions.push(rev);
        }
        assert_eq!(winners, 1);
        revisions.sort_unstable();
        revisions.dedup();
        assert_eq!(revisions.len(), writers, "two writers got one revision");
        assert_eq!(store.revision().await.unwrap(), writers as i64 + 1);
        let commits = store.commits();
        assert!(
            commits < writers as u64,
            "{commits} commits for {} writes: nothing was grouped",
            writers + 1
        );
        // Durable: a fresh open of the file sees every write.
        drop(store);
        let reopened = EmbeddedStore::open(&dir.path().join("fulcrum.redb")).unwrap();
        assert_eq!(reopened.range("k").await.unwrap().kvs.len(), writers);
    }

    fn put(key: &str, value: &[u8]) -> Txn {
        Txn {
            success: vec![Op::Put {
                key: key.into(),
                value: value.to_vec(),
            }],
            ..Txn::default()
        }
    }

    async fn next(w: &mut WatchStream) -> Option<Result<WatchBatch, StoreError>> {
        tokio::time::timeout(STEP, w.next())
            .await
            .expect("watch stalled")
    }

    #[tokio::test]
    async fn reopen_keeps_values_revisions_and_history() {
        let dir = tempfile::tempdir().unwrap();
        // Parent directories are created on open.
        let path = dir.path().join("nested/deeper/fulcrum.redb");
        {
            let store = EmbeddedStore::open(&path).unwrap();
            assert_eq!(store.revision().await.unwrap(), 0);
            for i in 0..5u8 {
                store.txn(put("r/a", &[i])).await.unwrap();
            }
            store.txn(put("r/b", b"b")).await.unwrap();
            let del = Txn {
                success: vec![Op::Delete { key: "r/a".into() }],
                ..Txn::default()
            };
            assert_eq!(store.txn(del).await.unwrap().revision, 7);
            store.txn(put("r/a", b"new")).await.unwrap();
            store.compact(3).await.unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(store.revision().await.unwrap(), 8);
        let a = store.get("r/a").await.unwrap().unwrap();
        assert_eq!(
            (
                a.value.as_slice(),
                a.create_revision,
                a.mod_revision,
                a.version
            ),
            (&b"new"[..], 8, 8, 1)
        );
        let b = store.get("r/b").await.unwrap().unwrap();
        assert_eq!((b.create_revision, b.mod_revision, b.version), (6, 6, 1));

        // History after the compaction point survived, with its events.
        let mut w = store.watch("r/", 3).await.unwrap();
        let mut revs = Vec::new();
        while revs.last() != Some(&8) {
            let batch = next(&mut w).await.unwrap().unwrap();
            if batch.revision == 7 {
                assert_eq!(batch.events[0].kind, EventKind::Delete);
            }
            revs.push(batch.revision);
        }
        assert_eq!(revs, [3, 4, 5, 6, 7, 8]);
        // And so did the compaction itself.
        let mut w = store.watch("r/", 2).await.unwrap();
        assert_eq!(
            next(&mut w).await,
            Some(Err(StoreError::Compacted {
                requested: 2,
                compacted: 2
            }))
        );
        assert_eq!(next(&mut w).await, None);

        // Writes carry on from the persisted revision and version.
        let resp = store.txn(put("r/b", b"b2")).await.unwrap();
        assert_eq!(resp.revision, 9);
        assert_eq!(store.get("r/b").await.unwrap().unwrap().version, 2);
    }

    #[tokio::test]
    async fn watch_from_zero_or_one_replays_everything() {
        let (_dir, store) = fresh();
        store.txn(put("z/a", b"1")).await.unwrap();
        store.txn(put("z/b", b"1")).await.unwrap();
        for from in [0, 1, -5] {
            let mut w = store.watch("z/", from).await.unwrap();
            assert_eq!(next(&mut w).await.unwrap().unwrap().revision, 1);
            assert_eq!(next(&mut w).await.unwrap().unwrap().revision, 2);
        }
        store.compact(2).await.unwrap();
        let mut w = store.watch("z/", 0).await.unwrap();
        assert_eq!(
            next(&mut w).await,
            Some(Err(StoreError::Compacted {
                requested: 1,
                compacted: 1
            }))
        );
    }

    #[tokio::test]
    async fn compaction_rules() {
        let (_dir, store) = fresh();
        for i in 0..6u8 {
            store.txn(put("c/a", &[i])).await.unwrap();
        }
        let err = store.compact(7).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Internal(ref m) if m.contains("current revision is 6")),
            "{err}"
        );
        store.compact(4).await.unwrap();
        // Below an earlier compaction: nothing happens, history from 4 is still there.
        store.compact(2).await.unwrap();
        store.compact(4).await.unwrap();
        let mut w = store.watch("c/", 4).await.unwrap();
        assert_eq!(next(&mut w).await.unwrap().unwrap().revision, 4);
        let mut w = store.watch("c/", 3).await.unwrap();
        assert_eq!(
            next(&mut w).await,
            Some(Err(StoreError::Compacted {
                requested: 3,
                compacted: 3
            }))
        );
        // Compacting to the current revision keeps it watchable.
        store.compact(6).await.unwrap();
        let mut w = store.watch("c/", 6).await.unwrap();
        assert_eq!(next(&mut w).await.unwrap().unwrap().revision, 6);
        assert_eq!(store.revision().await.unwrap(), 6);
    }

    /// A released store lets another opener have the file and refuses calls meanwhile;
    /// reacquired, it works again on what the file holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn release_hands_the_file_over_and_reacquire_takes_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let first = EmbeddedStore::open(&path).unwrap();
        first.txn(put("h/a", b"1")).await.unwrap();
        assert!(EmbeddedStore::open(&path).is_err(), "one opener at a time");
        first.release().await.unwrap();
        assert!(matches!(
            first.txn(put("h/b", b"2")).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(first.check().await.is_err(), "released: not writable here");
        {
            let second = EmbeddedStore::open(&path).unwrap();
            assert_eq!(second.revision().await.unwrap(), 1);
            second.txn(put("h/c", b"3")).await.unwrap();
        }
        first.reacquire().await.unwrap();
        assert_eq!(first.revision().await.unwrap(), 2);
        first.txn(put("h/d", b"4")).await.unwrap();
        assert_eq!(first.revision().await.unwrap(), 3);
    }

    /// A live watcher that falls further behind than the broadcast buffer re-reads the
    /// missed revisions from the change log and misses nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lagging_live_watcher_recovers_from_change_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_capacity(&dir.path().join("s.redb"), 2).unwrap();
        store.txn(put("l/0", b"0")).await.unwrap();
        let mut w = store.watch("l/", 1).await.unwrap();
        assert_eq!(next(&mut w).await.unwrap().unwrap().revision, 1);
        // Now live; let 40 commits pile up unread (the buffer holds 2).
        for i in 1..=40 {
            store.txn(put(&format!("l/{i}"), b"x")).await.unwrap();
        }
        for rev in 2..=41 {
            let batch = next(&mut w).await.unwrap().unwrap();
            assert_eq!(batch.revision, rev);
            assert_eq!(batch.events[0].kv.key, format!("l/{}", rev - 1));
        }
        // And it keeps following live commits afterwards.
        store.txn(put("l/last", b"x")).await.unwrap();
        assert_eq!(next(&mut w).await.unwrap().unwrap().revision, 42);
    }

    /// A lagging watcher whose missed revisions were compacted meanwhile gets `Compacted`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lagging_watcher_after_compaction_gets_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with_capacity(&dir.path().join("s.redb"), 2).unwrap();
        store.txn(put("l/0", b"0")).await.unwrap();
        let mut w = store.watch("l/", 1).await.unwrap();
        assert_eq!(next(&mut w).await.unwrap().unwrap().revision, 1);
        for i in 1..=20 {
            store.txn(put(&format!("l/{i}"), b"x")).await.unwrap();
        }
        store.compact(15).await.unwrap();
        assert_eq!(
            next(&mut w).await,
            Some(Err(StoreError::Compacted {
                requested: 2,
                compacted: 14
            }))
        );
        assert_eq!(next(&mut w).await, None);
    }

    /// Watches hold the store weakly: dropping the store closes the file (it can be
    /// reopened) and ends the stream with `Unavailable`.
    #[tokio::test]
    async fn open_watch_does_not_keep_the_store_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = EmbeddedStore::open(&path).unwrap();
        store.txn(put("w/a", b"1")).await.unwrap();
        let mut w = store.watch("w/", 1).await.unwrap();
        assert_eq!(next(&mut w).await.unwrap().unwrap().revision, 1);
        drop(store);
        let reopened = EmbeddedStore::open(&path).unwrap();
        assert!(matches!(
            next(&mut w).await,
            Some(Err(StoreError::Unavailable(_)))
        ));
        assert_eq!(next(&mut w).await, None);
        assert_eq!(reopened.revision().await.unwrap(), 1);
    }

    #[test]
    fn row_encoding_round_trips_and_rejects_garbage() {
        let events = vec![
            Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: "k/ü".into(),
                    value: vec![0, 1, 2, 255],
                    create_revision: 3,
                    mod_revision: 9,
                    version: 4,
                },
            },
            Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: "k/2".into(),
                    value: vec![],
                    create_revision: 0,
                    mod_revision: 9,
                    version: 0,
                },
            },
        ];
        let row = encode_events(&events).unwrap();
        assert_eq!(decode_events(9, &row).unwrap(), events);
        assert!(decode_events(9, &row[..row.len() - 1]).is_err());
        assert!(decode_events(9, &[2]).is_err());

        let kv = encode_kv(3, 9, 4, b"value");
        let decoded = decode_kv("k", &kv).unwrap();
        assert_eq!(
            (
                decoded.create_revision,
                decoded.mod_revision,
                decoded.version
            ),
            (3, 9, 4)
        );
        assert_eq!(decoded.value, b"value");
        assert!(decode_kv("k", &kv[..10]).is_err());
    }
}
