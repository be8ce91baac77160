//! The embedded backend: a revisioned key-value store on one redb file and a write-ahead log.
//!
//! Layout (three tables):
//! * `kv`: key → `(create_rev, mod_rev, version, value)`, the current state, so `get` and
//!   `range` are plain B-tree lookups;
//! * `changes`: revision → every event of that revision, the history `watch` replays;
//! * `meta`: the current revision and the compacted revision.
//!
//! Every transaction that writes something bumps the revision by one, writes its keys and
//! appends one `changes` row. Transactions are committed in groups: those that arrive while
//! a group is being made durable queue up and go into the next one together, each with its
//! own compares and revision, and one `fdatasync` makes them all durable before any `txn`
//! returns. A group is made durable as one record of a write-ahead log (`wal.rs`, two files
//! next to the redb file), not as a redb commit: that is one small write instead of a copy of
//! every page on the path to each key, which was most of an API change's cost. The revisions
//! in the logs but not yet in redb live in memory too (the overlay: the latest state of each
//! key they wrote, and their `changes` rows), and every read looks there first. When the log
//! being written holds a few hundred revisions, the two logs swap: the other one takes new
//! records while a thread of its own folds the full one into redb in one durable commit (so
//! acknowledgements never wait for redb). Compaction, a hand-over and a clean close fold
//! everything; opening the store folds what the logs hold into redb first, so a crash loses
//! nothing that was acknowledged. The commit and the live notification happen under one
//! writer lock: watchers therefore see revisions in commit order.
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
//! back to the last commit that reached the disk), writes the overlay into it, and so
//! recovers by itself once the cause is gone. A failed write was never acknowledged, and
//! every acknowledged one is in the log or in redb, so nothing acknowledged is lost.
//!
//! Transactions may not name the same key twice in one branch (etcd refuses such requests
//! too: "duplicate key given in txn request"); they fail with `Internal("duplicate key in
//! txn")` before touching the store. This keeps "which write wins" out of the data model.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, oneshot};

use crate::pace::Pace;
use crate::wal::{self, Wal};
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
/// Size of the write-ahead log file, written full of zeros when it is created. A group of
/// changes larger than that goes straight into redb instead.
const WAL_BYTES: u64 = 2 << 20;
/// A checkpoint folds the log into redb once it holds this many bytes of records…
const CHECKPOINT_BYTES: u64 = 512 << 10;
/// …or this many revisions, whichever comes first: each one costs about one redb commit, and
/// the overlay's size (memory, and the readers' merge) stays bounded.
const CHECKPOINT_REVISIONS: usize = 512;
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
    /// On the way out it folds the log into redb, so a clean stop leaves the file whole on
    /// its own (the next open would fold it anyway).
    fn drop(&mut self) {
        let deadline = Instant::now() + CLOSE_WAIT;
        while Arc::strong_count(&self.inner) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let inner = &self.inner;
        let _writer = inner.write_lock.lock();
        if let (Some(logs), Ok(db)) = (inner.wal.lock().as_mut(), inner.db())
            && let Err(e) = inner.checkpoint_all(&db, logs)
        {
            tracing::warn!(error = %e, "could not fold the write-ahead log into the store file");
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
    /// The revisions in the log and not yet in redb. Lock order: `write_lock`, `wal`, then
    /// this; readers take only this, and begin their redb read while they hold it, so what
    /// they see of the overlay and of redb is one cut even while a checkpoint moves one into
    /// the other.
    overlay: Mutex<Overlay>,
    /// Signalled (with `overlay`) when a background fold ends.
    folded: parking_lot::Condvar,
    /// The write-ahead logs; `None` while the store is handed over (`Store::release`).
    wal: Mutex<Option<Logs>>,
    /// Durable group commits made by `txn` (each one log record and one fsync, or one redb
    /// commit when larger than a log), for group-commit accounting.
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
    /// How fast changes arrive: whether a lone one waits for company.
    pace: Pace,
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

/// What the logs hold that redb does not yet: see the module comment.
#[derive(Default)]
struct Overlay {
    /// The current revision: the last one committed, to a log or to redb.
    revision: Revision,
    /// The revisions in the log being written.
    active: Layer,
    /// The revisions of the other log, being folded into redb (or left by a fold that
    /// failed, for the next checkpoint). Older than all of `active`'s.
    frozen: Option<Arc<Layer>>,
    /// A background fold of `frozen` is under way.
    folding: bool,
}

/// Revisions of one log: every key they wrote, at its latest state (`None`: deleted), and
/// the revisions themselves, oldest first, each with its encoded `changes` row.
#[derive(Default)]
struct Layer {
    kv: BTreeMap<String, Option<KeyValue>>,
    changes: Vec<(Arc<Change>, Vec<u8>)>,
    /// Bytes of `changes` rows.
    bytes: u64,
}

impl Overlay {
    /// The latest state of `key` in the overlay (`Some(None)`: deleted there), if it has one.
    fn get(&self, key: &str) -> Option<&Option<KeyValue>> {
        self.active
            .kv
            .get(key)
            .or_else(|| self.frozen.as_ref()?.kv.get(key))
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.active.changes.is_empty() && self.frozen.is_none()
    }

    /// Every overlaid revision, oldest first.
    fn changes(&self) -> impl Iterator<Item = &(Arc<Change>, Vec<u8>)> {
        self.frozen
            .iter()
            .flat_map(|f| f.changes.iter())
            .chain(&self.active.changes)
    }

    /// The keys under `prefix` the overlay has, at their latest state.
    fn range(&self, prefix: &str) -> Vec<(String, Option<KeyValue>)> {
        let under = |layer: &Layer| -> Vec<(String, Option<KeyValue>)> {
            layer
                .kv
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        let mut found = self.frozen.as_deref().map(under).unwrap_or_default();
        found.extend(under(&self.active));
        found
    }
}

impl Layer {
    fn wants_checkpoint(&self) -> bool {
        self.changes.len() >= CHECKPOINT_REVISIONS || self.bytes >= CHECKPOINT_BYTES
    }
}

/// The two write-ahead logs: one takes new records while the other's are folded into redb.
struct Logs {
    files: [Wal; 2],
    active: usize,
}

impl Logs {
    fn active(&mut self) -> &mut Wal {
        &mut self.files[self.active]
    }
}

/// The write-ahead logs that go with the store file at `path`.
fn wal_paths(path: &Path) -> [PathBuf; 2] {
    [path.with_extension("0.wal"), path.with_extension("1.wal")]
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
        let (logs, revision) = open_logs(&db, path)?;
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
                overlay: Mutex::new(Overlay {
                    revision,
                    ..Overlay::default()
                }),
                folded: parking_lot::Condvar::new(),
                wal: Mutex::new(Some(logs)),
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

/// The store file is the owner's only (its secrets are sealed, the rest is not): created
/// 0600, so it is never readable by others even for a moment, and tightened with a warning
/// when an older version left it open.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let file = wal::open_private(path)
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

/// Opens the file (redb repairs it if the last commit did not complete) and creates the
/// tables up front so read transactions never meet a missing table.
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

/// Opens the write-ahead logs next to the store file at `path` (creating them), folds the
/// revisions they hold into `db` and starts them again; returns them with the current
/// revision.
fn open_logs(db: &Database, path: &Path) -> Result<(Logs, Revision), StoreError> {
    let mut rows = Vec::new();
    let mut files = Vec::with_capacity(2);
    for wal_path in wal_paths(path) {
        let (wal, mut held) = Wal::open(&wal_path, WAL_BYTES).map_err(|e| {
            StoreError::Unavailable(format!(
                "open write-ahead log {}: {}",
                wal_path.display(),
                describe_io(&e)
            ))
        })?;
        rows.append(&mut held);
        files.push(wal);
    }
    rows.sort_by_key(|r| r.revision);
    let revision = fold_rows(db, rows)?;
    for wal in &mut files {
        wal.restart().map_err(|e| {
            StoreError::Unavailable(format!("start write-ahead log: {}", describe_io(&e)))
        })?;
    }
    let files: [Wal; 2] = files
        .try_into()
        .map_err(|_| StoreError::Internal("two write-ahead logs expected".into()))?;
    Ok((Logs { files, active: 0 }, revision))
}

/// Writes the rows of the logs (in revision order) that redb does not have yet into it, in
/// one durable commit; returns the current revision.
fn fold_rows(db: &Database, rows: Vec<wal::Row>) -> Result<Revision, StoreError> {
    let current = {
        let rtx = db.begin_read().ctx("begin read")?;
        read_meta(&rtx.open_table(META).ctx("open meta table")?, META_REVISION)?
    };
    let rows: Vec<wal::Row> = rows.into_iter().filter(|r| r.revision > current).collect();
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(current);
    };
    if first.revision != current + 1 {
        return Err(StoreError::Internal(format!(
            "the write-ahead log goes on from revision {} but the store file is at {current}",
            first.revision - 1
        )));
    }
    if let Some(gap) = rows.windows(2).find(|w| w[1].revision != w[0].revision + 1) {
        return Err(StoreError::Internal(format!(
            "the write-ahead logs skip from revision {} to {}",
            gap[0].revision, gap[1].revision
        )));
    }
    let mut kv = BTreeMap::new();
    for row in &rows {
        for e in decode_events(row.revision, &row.bytes)? {
            let key = e.kv.key.clone();
            kv.insert(key, (e.kind == EventKind::Put).then_some(e.kv));
        }
    }
    write_db(
        db,
        &kv,
        rows.iter().map(|r| (r.revision, r.bytes.as_slice())),
        last.revision,
    )?;
    tracing::info!(
        revisions = rows.len(),
        "folded the write-ahead log into the store file"
    );
    Ok(last.revision)
}

/// Writes keys at their latest state (`None`: deleted), `changes` rows and the current
/// revision into `db`, in one durable commit.
fn write_db<'a>(
    db: &Database,
    kv: &BTreeMap<String, Option<KeyValue>>,
    rows: impl Iterator<Item = (Revision, &'a [u8])>,
    revision: Revision,
) -> Result<(), StoreError> {
    let wtx = db.begin_write().ctx("begin write")?;
    {
        let mut table = wtx.open_table(KV).ctx("open kv table")?;
        let mut history = wtx.open_table(CHANGES).ctx("open changes table")?;
        let mut meta = wtx.open_table(META).ctx("open meta table")?;
        for (key, state) in kv {
            match state {
                Some(v) => {
                    let row = encode_kv(v.create_revision, v.mod_revision, v.version, &v.value);
                    table
                        .insert(key.as_str(), row.as_slice())
                        .ctx("write key")?;
                }
                None => {
                    table.remove(key.as_str()).ctx("delete key")?;
                }
            }
        }
        for (rev, row) in rows {
            history.insert(rev, row).ctx("append change")?;
        }
        meta.insert(META_REVISION, revision).ctx("write revision")?;
    }
    wtx.commit().ctx("commit transaction")
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
            if let Some(state) = inner.overlay.lock().get(&key) {
                return Ok(state.clone());
            }
            // Not in the overlay now: its latest state is in redb (a checkpoint meanwhile
            // only moves newer states there).
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
            let (rtx, revision, overlaid) = {
                let overlay = inner.overlay.lock();
                let rtx = inner.db()?.begin_read().ctx("begin read")?;
                (rtx, overlay.revision, overlay.range(&prefix))
            };
            let kv = rtx.open_table(KV).ctx("open kv table")?;
            let mut found = BTreeMap::new();
            for entry in kv.range(prefix.as_str()..).ctx("range kv table")? {
                let (k, v) = entry.ctx("range kv table")?;
                let key = k.value();
                if !key.starts_with(prefix.as_str()) {
                    break;
                }
                found.insert(key.to_owned(), decode_kv(key, v.value())?);
            }
            for (key, state) in overlaid {
                match state {
                    Some(kv) => found.insert(key, kv),
                    None => found.remove(&key),
                };
            }
            Ok(RangeResponse {
                kvs: found.into_values().collect(),
                revision,
            })
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        reject_duplicates(&txn.success)?;
        reject_duplicates(&txn.failure)?;
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut queue = self.inner.queue.lock();
            queue.pace.arrived(Instant::now());
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
            // The next opener folds the log too; folding it here leaves redb whole for
            // whatever else reads the file, and a failure is no reason not to hand over.
            {
                let mut wal = inner.wal.lock();
                if let (Some(logs), Ok(db)) = (wal.as_mut(), inner.db())
                    && let Err(e) = inner.checkpoint_all(&db, logs)
                {
                    tracing::warn!(error = %e, "could not fold the write-ahead log before the hand-over");
                }
                *wal = None;
            }
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
        Ok(self.inner.overlay.lock().revision)
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
        let db = Arc::new(db);
        *self.db.write() = Some(db.clone());
        probe.map_err(|e| unavailable(e.to_string()))?;
        // What the log holds that the file does not yet: after an error, the overlay (every
        // acknowledged revision; a record whose write failed is not in it); after a hand-over,
        // whatever the other process left in the log.
        {
            let mut wal = self.wal.lock();
            match wal.as_mut() {
                Some(logs) => self
                    .checkpoint_all(&db, logs)
                    .map_err(|e| unavailable(e.to_string()))?,
                None => {
                    let (logs, revision) =
                        open_logs(&db, &self.path).map_err(|e| unavailable(e.to_string()))?;
                    *self.overlay.lock() = Overlay {
                        revision,
                        ..Overlay::default()
                    };
                    *wal = Some(logs);
                }
            }
        }
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
    /// serves many writers, and a lone writer waits for nothing. When the log being written
    /// holds enough, the two logs swap roles between batches and the full one is folded
    /// into redb in the background.
    fn commit_queued(self: &Arc<Self>) {
        loop {
            let batch = {
                let mut queue = self.queue.lock();
                if queue.pending.is_empty() {
                    queue.committing = false;
                    return;
                }
                if queue.pending.len() == 1
                    && let Some(window) = queue.pace.window()
                {
                    // Changes are streaming in: the next few share this one's commit.
                    drop(queue);
                    std::thread::sleep(window);
                    queue = self.queue.lock();
                    let gathered = queue.pending.len();
                    queue.pace.window_ended(gathered);
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
            let due = {
                let overlay = self.overlay.lock();
                overlay.active.wants_checkpoint() && overlay.frozen.is_none()
            };
            if due {
                let _writer = self.write_lock.lock();
                if let Some(logs) = self.wal.lock().as_mut()
                    && let Err(StoreError::Unavailable(reason)) = self.freeze(logs)
                {
                    self.failed(&reason);
                }
            }
        }
    }

    /// Applies transactions in order as one group: each evaluates its compares against the
    /// state the ones before it left, and writes its own revision (if it writes anything).
    /// The group is one record of the log (or, larger than a log, one redb commit): all
    /// are durable, or none is (the error is then every transaction's). Watchers are told
    /// afterwards, in revision order.
    fn apply_batch(self: &Arc<Self>, txns: Vec<Txn>) -> Result<Vec<TxnResponse>, StoreError> {
        let _writer = self.write_lock.lock();
        let db = self.db_locked()?;
        let mut responses = Vec::with_capacity(txns.len());
        let mut changes = Vec::new();
        let written = {
            // The redb snapshot is taken under the overlay's lock: a fold that ends
            // meanwhile cannot leave a revision in neither.
            let overlay = self.overlay.lock();
            let rtx = db.begin_read().ctx("begin read")?;
            let table = rtx.open_table(KV).ctx("open kv table")?;
            let mut state = Planned {
                written: BTreeMap::new(),
                overlay: &overlay,
                table: &table,
            };
            let mut current = overlay.revision;
            for txn in txns {
                let succeeded = txn.compares.iter().try_fold(true, |all, c| {
                    Ok::<_, StoreError>(all && compare_holds(&state, c)?)
                })?;
                let ops = if succeeded { txn.success } else { txn.failure };
                let events = apply_ops(&mut state, ops, current + 1)?;
                if !events.is_empty() {
                    current += 1;
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
            state.written
        };
        let (Some(first), Some(last)) = (
            changes.first().map(|c| c.revision),
            changes.last().map(|c| c.revision),
        ) else {
            // Nothing written: no new revision, nothing to make durable.
            return Ok(responses);
        };
        let rows = changes
            .iter()
            .map(|c| encode_events(&c.events))
            .collect::<Result<Vec<_>, _>>()?;
        let row_refs: Vec<&[u8]> = rows.iter().map(Vec::as_slice).collect();
        let mut wal = self.wal.lock();
        let logs = wal
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable(RELEASED.into()))?;
        let logged = self.make_room(&db, logs, &row_refs)?;
        if logged {
            logs.active().append(first, &row_refs).map_err(|e| {
                StoreError::Unavailable(format!("write-ahead log: {}", describe_io(&e)))
            })?;
        } else {
            // Larger than a whole log; `make_room` emptied the overlay.
            write_db(
                &db,
                &written,
                changes.iter().map(|c| c.revision).zip(row_refs),
                last,
            )?;
        }
        drop(wal);
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let changes: Vec<Arc<Change>> = changes.into_iter().map(Arc::new).collect();
        {
            let mut overlay = self.overlay.lock();
            if logged {
                let layer = &mut overlay.active;
                layer.kv.extend(written);
                layer.bytes += rows.iter().map(|r| r.len() as u64).sum::<u64>();
                layer.changes.extend(changes.iter().cloned().zip(rows));
            }
            overlay.revision = last;
        }
        for change in changes {
            // No receiver is fine: nobody is watching.
            let _ = self.changes_tx.send(change);
        }
        Ok(responses)
    }

    /// Makes room in the active log for a record of `rows`: swaps the logs when it is full
    /// (waiting for a fold of the other one to end first). False when the record is larger
    /// than a whole log: everything is then folded and the caller writes to redb directly.
    fn make_room(
        self: &Arc<Self>,
        db: &Database,
        logs: &mut Logs,
        rows: &[&[u8]],
    ) -> Result<bool, StoreError> {
        if logs.active().fits(rows) {
            return Ok(true);
        }
        if !logs.active().could_fit(rows) {
            self.checkpoint_all(db, logs)?;
            return Ok(false);
        }
        let stuck = {
            let mut overlay = self.overlay.lock();
            while overlay.folding {
                self.folded.wait(&mut overlay);
            }
            overlay.frozen.is_some()
        };
        if stuck {
            // The last fold failed: fold both now (which empties both logs).
            self.checkpoint_all(db, logs)?;
        } else {
            self.freeze(logs)?;
        }
        Ok(true)
    }

    /// Swaps the logs: the other one (empty, its revisions folded) is started again and
    /// takes new records, and the active one's revisions are folded into redb by a thread
    /// of their own. Nothing to do while the other log is still being folded. The caller
    /// holds `write_lock` and the logs.
    fn freeze(self: &Arc<Self>, logs: &mut Logs) -> Result<(), StoreError> {
        if self.overlay.lock().frozen.is_some() {
            return Ok(());
        }
        let other = 1 - logs.active;
        logs.files[other].restart().map_err(|e| {
            StoreError::Unavailable(format!("start write-ahead log: {}", describe_io(&e)))
        })?;
        logs.active = other;
        {
            let mut overlay = self.overlay.lock();
            let full = std::mem::take(&mut overlay.active);
            overlay.frozen = Some(Arc::new(full));
            overlay.folding = true;
        }
        let inner = self.clone();
        let spawned = std::thread::Builder::new()
            .name("fulcrum-fold".into())
            .spawn(move || inner.fold_frozen());
        if spawned.is_err() {
            self.fold_frozen();
        }
        Ok(())
    }

    /// Folds the frozen log's revisions into redb (one durable commit) and drops them from
    /// the overlay. On failure they stay, for the next checkpoint, and the store fails.
    fn fold_frozen(&self) {
        let Some(frozen) = self.overlay.lock().frozen.clone() else {
            return;
        };
        let result = match (self.db(), frozen.changes.last()) {
            (Ok(db), Some((last, _))) => write_db(
                &db,
                &frozen.kv,
                frozen
                    .changes
                    .iter()
                    .map(|(c, row)| (c.revision, row.as_slice())),
                last.revision,
            ),
            (Ok(_), None) => Ok(()),
            (Err(e), _) => Err(e),
        };
        {
            let mut overlay = self.overlay.lock();
            overlay.folding = false;
            if result.is_ok() {
                overlay.frozen = None;
            }
        }
        self.folded.notify_all();
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not fold the write-ahead log into the store file");
            if let StoreError::Unavailable(reason) = &e {
                self.failed(reason);
            }
        }
    }

    /// Writes the whole overlay into redb in one durable commit, empties it and starts both
    /// logs again. The caller holds `write_lock` (no revision is added meanwhile) and the
    /// logs; a background fold under way is waited for first.
    fn checkpoint_all(&self, db: &Database, logs: &mut Logs) -> Result<(), StoreError> {
        let (kv, rows, revision) = {
            let mut overlay = self.overlay.lock();
            while overlay.folding {
                self.folded.wait(&mut overlay);
            }
            let mut kv = overlay
                .frozen
                .as_ref()
                .map(|f| f.kv.clone())
                .unwrap_or_default();
            kv.extend(
                overlay
                    .active
                    .kv
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            let rows: Vec<(Revision, Vec<u8>)> = overlay
                .changes()
                .map(|(c, row)| (c.revision, row.clone()))
                .collect();
            (kv, rows, overlay.revision)
        };
        if !rows.is_empty() {
            write_db(
                db,
                &kv,
                rows.iter().map(|(rev, row)| (*rev, row.as_slice())),
                revision,
            )?;
            let mut overlay = self.overlay.lock();
            overlay.active = Layer::default();
            overlay.frozen = None;
        }
        for wal in &mut logs.files {
            wal.restart().map_err(|e| {
                StoreError::Unavailable(format!("start write-ahead log: {}", describe_io(&e)))
            })?;
        }
        Ok(())
    }

    /// Drops `changes` rows below `revision`; the current key values are untouched.
    fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let _writer = self.write_lock.lock();
        let db = self.db_locked()?;
        // The history to drop may still be in the overlay.
        if let Some(logs) = self.wal.lock().as_mut() {
            self.checkpoint_all(&db, logs)?;
        }
        let wtx = db.begin_write().ctx("begin write")?;
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

    /// Reads up to [`HISTORY_CHUNK`] `changes` rows from `from` on, in one snapshot: redb's
    /// rows, then the overlay's.
    fn read_history(&self, prefix: &str, from: Revision) -> Result<History, StoreError> {
        let (rtx, current, overlaid) = {
            let overlay = self.overlay.lock();
            let rtx = self.db()?.begin_read().ctx("begin read")?;
            let overlaid: Vec<Arc<Change>> = overlay
                .changes()
                .filter(|(c, _)| c.revision >= from)
                .take(HISTORY_CHUNK)
                .map(|(c, _)| c.clone())
                .collect();
            (rtx, overlay.revision, overlaid)
        };
        let meta = rtx.open_table(META).ctx("open meta table")?;
        let in_file = read_meta(&meta, META_REVISION)?;
        let compacted = read_meta(&meta, META_COMPACTED)?;
        if from <= compacted {
            return Err(StoreError::Compacted {
                requested: from,
                compacted,
            });
        }
        let keep = |e: &Event| e.kv.key.starts_with(prefix);
        let changes = rtx.open_table(CHANGES).ctx("open changes table")?;
        let mut batches = Vec::new();
        let mut last_scanned = None;
        let mut scanned = 0;
        for row in changes
            .range(from..)
            .ctx("range changes table")?
            .take(HISTORY_CHUNK)
        {
            let (rev, data) = row.ctx("range changes table")?;
            let revision = rev.value();
            let events = decode_events(revision, data.value())?;
            let events: Vec<Event> = events.into_iter().filter(keep).collect();
            if !events.is_empty() {
                batches.push(WatchBatch { revision, events });
            }
            last_scanned = Some(revision);
            scanned += 1;
        }
        // The overlay goes on where the file stops (its rows the file already has, when a
        // checkpoint ran in between, are skipped); not after a full chunk, which may stop
        // short of the file's last row.
        if scanned < HISTORY_CHUNK {
            for change in overlaid
                .iter()
                .filter(|c| c.revision > in_file)
                .take(HISTORY_CHUNK - scanned)
            {
                let events: Vec<Event> =
                    change.events.iter().filter(|e| keep(e)).cloned().collect();
                if !events.is_empty() {
                    batches.push(WatchBatch {
                        revision: change.revision,
                        events,
                    });
                }
                last_scanned = Some(change.revision);
            }
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

/// The state a group of transactions is planned against: what the group wrote so far, then
/// the overlay, then redb.
struct Planned<'a> {
    written: BTreeMap<String, Option<KeyValue>>,
    overlay: &'a Overlay,
    table: &'a redb::ReadOnlyTable<&'static str, &'static [u8]>,
}

impl Planned<'_> {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        if let Some(state) = self.written.get(key).or_else(|| self.overlay.get(key)) {
            return Ok(state.clone());
        }
        match self.table.get(key).ctx("read key")? {
            Some(v) => Ok(Some(decode_kv(key, v.value())?)),
            None => Ok(None),
        }
    }
}

/// Writes one transaction branch at revision `rev`; the events it made (none: nothing
/// changed, and the revision is not used).
fn apply_ops(
    state: &mut Planned<'_>,
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
                if state.get(&key)?.is_some() {
                    state.written.insert(key.clone(), None);
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
        let (create_revision, version, value) = match (state.get(&key)?, value) {
            (Some(p), Some(value)) => (p.create_revision, p.version + 1, value),
            (Some(p), None) => (p.create_revision, p.version + 1, p.value),
            (None, Some(value)) => (rev, 1, value),
            // Touching a key that is not there changes nothing.
            (None, None) => continue,
        };
        let kv = KeyValue {
            key,
            value,
            create_revision,
            mod_revision: rev,
            version,
        };
        state.written.insert(kv.key.clone(), Some(kv.clone()));
        events.push(Event {
            kind: EventKind::Put,
            kv,
        });
    }
    Ok(events)
}

fn compare_holds(state: &Planned<'_>, compare: &Compare) -> Result<bool, StoreError> {
    let key = match compare {
        Compare::ModRevision { key, .. }
        | Compare::CreateRevision { key, .. }
        | Compare::Value { key, .. } => key.as_str(),
    };
    let current = state.get(key)?;
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

    /// The files as a crash leaves them (what the page cache holds, no clean close), copied
    /// while the store is open: every acknowledged revision is there when the copy opens,
    /// whether a checkpoint put it into redb or it was only in the log.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_image_holds_every_acknowledged_revision() {
        let (dir, store) = fresh();
        let total = CHECKPOINT_REVISIONS as i64 + 200;
        for i in 1..=total {
            let txn = if i % 10 == 0 {
                Txn {
                    success: vec![Op::Delete {
                        key: format!("x/{}", i - 1),
                    }],
                    ..Txn::default()
                }
            } else {
                put(&format!("x/{i}"), &i.to_le_bytes())
            };
            assert_eq!(store.txn(txn).await.unwrap().revision, i);
        }
        {
            // A file copy is no crash image while a fold is writing redb.
            let mut overlay = store.inner.overlay.lock();
            while overlay.folding {
                store.inner.folded.wait(&mut overlay);
            }
            assert!(
                !overlay.is_empty(),
                "the last revisions should be in a log only"
            );
        }
        let image = tempfile::tempdir().unwrap();
        for name in ["fulcrum.redb", "fulcrum.0.wal", "fulcrum.1.wal"] {
            std::fs::copy(dir.path().join(name), image.path().join(name)).unwrap();
        }
        let copy = EmbeddedStore::open(&image.path().join("fulcrum.redb")).unwrap();
        assert_eq!(copy.revision().await.unwrap(), total);
        let kvs = copy.range("x/").await.unwrap().kvs;
        assert_eq!(kvs.len() as i64, total - 2 * (total / 10));
        let last = copy
            .get(&format!("x/{}", total - 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(last.value, (total - 1).to_le_bytes());
        assert_eq!(last.mod_revision, total - 1);
        let mut w = copy.watch("x/", 1).await.unwrap();
        for rev in 1..=total {
            assert_eq!(next(&mut w).await.unwrap().unwrap().revision, rev);
        }
        // And it goes on from there.
        assert_eq!(
            copy.txn(put("x/next", b"1")).await.unwrap().revision,
            total + 1
        );
    }

    /// Reads during writes and checkpoints see one cut: a range's revision matches the value
    /// it returns, and neither goes back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn reads_see_one_cut_across_checkpoints() {
        let (_dir, store) = fresh();
        let total = 3 * CHECKPOINT_REVISIONS as i64;
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 1..=total {
                    store.txn(put("cut/n", &i.to_le_bytes())).await.unwrap();
                }
            })
        };
        let mut seen = 0;
        let mut reads = 0;
        while seen < total {
            let r = store.range("cut/").await.unwrap();
            let value = r.kvs.first().map_or(0, |kv| {
                i64::from_le_bytes(kv.value.as_slice().try_into().unwrap())
            });
            assert_eq!(value, r.revision, "a range mixed two cuts");
            assert!(value >= seen, "a read went back from {seen} to {value}");
            if let Some(kv) = store.get("cut/n").await.unwrap() {
                let got = i64::from_le_bytes(kv.value.as_slice().try_into().unwrap());
                assert!(got >= value, "get went back from {value} to {got}");
                assert_eq!(kv.mod_revision, got);
            }
            seen = value;
            reads += 1;
        }
        writer.await.unwrap();
        assert!(reads > 1);
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
