//! The etcd backend of [`fulcrum_store::Store`], for fleets of nodes sharing one
//! configuration.
//!
//! etcd already has the semantics the store trait describes (one global revision, create
//! and mod revisions, versions, compare-and-swap transactions, ordered watches that answer
//! "compacted"), so this crate is a translation plus the failure handling a client of a
//! replicated service needs:
//! - every unary call has a deadline, so a dead member or a partition never hangs a caller;
//! - reads are retried on failure (they are safe to repeat), and so is a transaction that
//!   could not even be sent (connection refused: it cannot have been applied). A transaction
//!   that timed out, or failed after it was sent, is *not* retried: it may have committed;
//!   the caller sees `Indeterminate` (the control plane answers "outcome unknown" with the
//!   work request the transaction would have written, so a client can look it up or retry
//!   with its retry token);
//! - session keys are bound to a lease this process keeps alive, and put back under a new
//!   lease when etcd forgot the old one (after an outage longer than the TTL).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions,
    TxnOp, WatchOptions,
};
use fulcrum_store::{
    Compare, Event, EventKind, KeyValue, NEEDED_TXN_OPS, Op, RangeResponse, Revision, Store,
    StoreError, Txn, TxnResponse, WatchBatch, WatchStream,
};
use futures::StreamExt;
use parking_lot::Mutex;
use tonic::Code;

pub mod testing;

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Client URLs, e.g. `http://127.0.0.1:2379` (`https://` with TLS).
    pub endpoints: Vec<String>,
    /// etcd user and password, when etcd has authentication on.
    pub user: Option<(String, String)>,
    /// PEM of the CA that signed etcd's server certificates (TLS endpoints).
    pub ca_pem: Option<String>,
    /// PEM client certificate and key, when etcd asks for client certificates.
    pub client_identity_pem: Option<(String, String)>,
    /// Deadline of every unary call.
    pub call_timeout: Duration,
    /// How long session keys outlive a node that stops renewing them.
    pub session_ttl: Duration,
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            user: None,
            ca_pem: None,
            client_identity_pem: None,
            call_timeout: Duration::from_secs(3),
            session_ttl: Duration::from_secs(5),
        }
    }
}

pub struct EtcdStore {
    client: Client,
    call_timeout: Duration,
    session: Arc<Session>,
}

/// This process's lease and the keys bound to it.
struct Session {
    ttl: Duration,
    state: Mutex<SessionState>,
}

#[derive(Default)]
struct SessionState {
    lease: Option<i64>,
    /// Session keys and their latest values, put back when the lease is replaced.
    keys: BTreeMap<String, Vec<u8>>,
}

/// Transient failures are retried this many times (reads, unsent writes). Generous because
/// the client keeps sending some calls to a dead member until it is back (about one in
/// three with one of three members down), and those fail fast.
const ATTEMPTS: u32 = 6;

impl EtcdStore {
    /// Succeeds without a reachable etcd (unless etcd authentication is configured): calls
    /// fail `Unavailable` until it is back.
    pub async fn connect(options: EtcdOptions) -> Result<Self, StoreError> {
        if options.endpoints.is_empty() {
            return Err(StoreError::Internal("no etcd endpoints given".into()));
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            // HTTP/2 pings notice a dead member under an idle connection. Not more often
            // than every 5 s: etcd's default --grpc-keepalive-min-time, below which it
            // closes the connection ("too many pings"). Watches have their own stall probe.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user, password);
        }
        if options.ca_pem.is_some() || options.client_identity_pem.is_some() {
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &options.ca_pem {
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &options.client_identity_pem {
                tls = tls.identity(etcd_client::Identity::from_pem(cert, key));
            }
            connect = connect.with_tls(tls);
        }
        // The channel connects lazily (with no etcd user, connecting sends nothing), so a
        // node starts and serves its cached configuration while etcd is down.
        let client = tokio::time::timeout(
            options.call_timeout,
            Client::connect(&options.endpoints, Some(connect)),
        )
        .await
        .map_err(|_| StoreError::Unavailable("etcd: no answer while authenticating".into()))?
        .map_err(unavailable)?;
        let session = Arc::new(Session {
            ttl: options.session_ttl,
            state: Mutex::new(SessionState::default()),
        });
        tokio::spawn(keep_session_alive(
            client.clone(),
            Arc::downgrade(&session),
            options.call_timeout,
        ));
        tokio::spawn(check_txn_limit(client.clone(), options.call_timeout));
        Ok(Self {
            client,
            call_timeout: options.call_timeout,
            session,
        })
    }

    /// One call with a deadline, retried after a short pause when that is safe.
    async fn call<T, F, Fut>(&self, what: &str, retry: Retry, f: F) -> Result<T, StoreError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        // A write that may have reached etcd: what came of it is unknown.
        let mut maybe_applied = false;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis((25 << attempt).min(1000))).await;
            }
            match tokio::time::timeout(self.call_timeout, f(self.client.clone())).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    if let Some(fatal) = fatal(&e) {
                        return Err(fatal);
                    }
                    last = Some(format!("{what}: {e}"));
                    if retry == Retry::IfUnsent && !unsent(&e) {
                        maybe_applied = true;
                        break;
                    }
                }
                Err(_) => {
                    last = Some(format!(
                        "{what}: no answer from etcd within {:?}",
                        self.call_timeout
                    ));
                    // A write that timed out may have been applied.
                    if retry == Retry::IfUnsent {
                        maybe_applied = true;
                        break;
                    }
                }
            }
        }
        let why = last.unwrap_or_default();
        Err(if maybe_applied {
            StoreError::Indeterminate(why)
        } else {
            StoreError::Unavailable(why)
        })
    }
}

/// Warns once, when etcd first answers, if it refuses transactions of
/// [`NEEDED_TXN_OPS`] operations (etcd's `--max-txn-ops` is 128 by default): large
/// changes would then be refused, and the operator should know before making one. The
/// probe is a transaction of compares only, which changes nothing.
async fn check_txn_limit(client: Client, call_timeout: Duration) {
    let probe = || {
        let compares = (0..NEEDED_TXN_OPS)
            .map(|_| EtcdCompare::create_revision("/fulcrum/txn-limit-probe", CompareOp::Equal, 0))
            .collect::<Vec<_>>();
        etcd_client::Txn::new().when(compares)
    };
    let mut pause = Duration::from_secs(1);
    loop {
        let mut c = client.clone();
        match tokio::time::timeout(call_timeout, c.txn(probe())).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => match fatal(&e) {
                Some(StoreError::TooLarge(_)) => {
                    tracing::warn!(
                        "etcd refuses transactions of {NEEDED_TXN_OPS} operations: changes \
                         that write more than about 125 keys (a member batch adding more \
                         than 125 members or replacing more than 62, a large apply) will \
                         be refused; start every etcd member with \
                         --max-txn-ops={NEEDED_TXN_OPS} or more (etcd's default is 128)"
                    );
                    return;
                }
                Some(_) => return,
                None => {}
            },
            Err(_) => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// Keys per answer of a range: a whole configuration in one answer could pass any
/// message limit (gRPC's default is 4 MiB, some 8,000 members).
const RANGE_PAGE: i64 = 512;
/// The largest answer read from etcd (a page of records, a watch answer catching up on many
/// revisions): far above etcd's default request limit (1.5 MiB), so that any record etcd
/// took can be read back, even a page of the largest.
const MAX_MESSAGE: usize = 64 << 20;

/// The end of the key range `prefix` starts: the prefix with its last byte below 0xff
/// incremented (etcd's convention; `\0` for the empty prefix, meaning every key).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// When a failed call may be sent again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads and idempotent calls: after any transient failure.
    Always,
    /// Writes: only when the request cannot have reached etcd.
    IfUnsent,
}

/// Whether a failure happened before etcd could have received the request.
fn unsent(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == Code::Unavailable && s.message().contains("connect")
        }
        _ => false,
    }
}

/// Errors that say the request itself is wrong: retrying cannot help.
fn fatal(e: &etcd_client::Error) -> Option<StoreError> {
    match e {
        etcd_client::Error::GRpcStatus(s)
            if matches!(s.code(), Code::InvalidArgument | Code::OutOfRange) =>
        {
            let message = s.message();
            Some(
                if message.contains("too many operations") || message.contains("too large") {
                    StoreError::TooLarge(format!("etcd: {message}"))
                } else if message.contains("required revision has been compacted") {
                    // Only a paged range reads at a past revision; it starts over on this.
                    StoreError::Compacted {
                        requested: 0,
                        compacted: 0,
                    }
                } else {
                    StoreError::Internal(format!("etcd refused the request: {message}"))
                },
            )
        }
        etcd_client::Error::InvalidArgs(m) => Some(StoreError::Internal(m.clone())),
        _ => None,
    }
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn convert_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

fn convert_op(op: Op) -> TxnOp {
    match op {
        Op::Put { key, value } => TxnOp::put(key, value, None),
        Op::Delete { key } => TxnOp::delete(key, None),
        Op::Touch { key } => {
            TxnOp::put(key, Vec::new(), Some(PutOptions::new().with_ignore_value()))
        }
    }
}

fn convert_compare(c: Compare) -> EtcdCompare {
    match c {
        Compare::ModRevision { key, revision } => {
            EtcdCompare::mod_revision(key, CompareOp::Equal, revision)
        }
        Compare::CreateRevision { key, revision } => {
            EtcdCompare::create_revision(key, CompareOp::Equal, revision)
        }
        Compare::Value { key, value } => EtcdCompare::value(key, CompareOp::Equal, value),
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map(|h| h.revision()).unwrap_or_default()
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self
            .call("get", Retry::Always, |mut c| async move {
                c.get(key, None).await
            })
            .await?;
        Ok(resp.kvs().first().map(convert_kv))
    }

    /// In pages of [`RANGE_PAGE`] keys, all read as of the first page's revision: one
    /// consistent listing, however large the configuration.
    async fn range(&self, prefix: &str) -> Result<RangeResponse, StoreError> {
        let end = prefix_end(prefix.as_bytes());
        let mut restarts = 0;
        'listing: loop {
            let (mut kvs, mut revision) = (Vec::new(), 0);
            let mut from = prefix.as_bytes().to_vec();
            loop {
                let mut options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(RANGE_PAGE);
                if revision > 0 {
                    options = options.with_revision(revision);
                }
                let page = self
                    .call("range", Retry::Always, |c| {
                        let (from, options) = (from.clone(), options.clone());
                        let mut kv = c.kv_client().max_decoding_message_size(MAX_MESSAGE);
                        async move { kv.get(from, Some(options)).await }
                    })
                    .await;
                let page = match page {
                    // The listing's revision was compacted between two pages: start over.
                    Err(StoreError::Compacted { .. }) if restarts < 3 => {
                        restarts += 1;
                        continue 'listing;
                    }
                    Err(StoreError::Compacted { .. }) => {
                        return Err(StoreError::Unavailable(
                            "range: history was compacted under every listing tried".into(),
                        ));
                    }
                    other => other?,
                };
                if revision == 0 {
                    revision = header_revision(page.header());
                }
                kvs.extend(page.kvs().iter().map(convert_kv));
                match page.kvs().last() {
                    Some(last) if page.more() => {
                        from = last.key().to_vec();
                        from.push(0);
                    }
                    _ => return Ok(RangeResponse { kvs, revision }),
                }
            }
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse, StoreError> {
        let resp = self
            .call("txn", Retry::IfUnsent, |mut c| {
                let txn = txn.clone();
                async move {
                    let t = etcd_client::Txn::new()
                        .when(
                            txn.compares
                                .into_iter()
                                .map(convert_compare)
                                .collect::<Vec<_>>(),
                        )
                        .and_then(txn.success.into_iter().map(convert_op).collect::<Vec<_>>())
                        .or_else(txn.failure.into_iter().map(convert_op).collect::<Vec<_>>());
                    c.txn(t).await
                }
            })
            .await?;
        Ok(TxnResponse {
            succeeded: resp.succeeded(),
            revision: header_revision(resp.header()),
        })
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        // etcd reads start revision 0 as "now"; the trait means "from the beginning".
        let start = from_revision.max(1);
        let mut client = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let stream = tokio::time::timeout(
            self.call_timeout,
            client.watch(
                prefix,
                Some(WatchOptions::new().with_prefix().with_start_revision(start)),
            ),
        )
        .await
        .map_err(|_| StoreError::Unavailable("watch: no answer from etcd".into()))?
        .map_err(unavailable)?;
        Ok(Box::pin(watch_batches(stream, start)))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.call("compact", Retry::Always, |mut c| async move {
            c.compact(revision, None).await
        })
        .await
        .map(|_| ())
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        // A count-only read of one key returns the header without data.
        let resp = self
            .call("revision", Retry::Always, |mut c| async move {
                c.get("\0", Some(GetOptions::new().with_count_only())).await
            })
            .await?;
        Ok(header_revision(resp.header()))
    }

    async fn put_session(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        // The lease first: the keeper never sees a session key without one (it would grant
        // a second lease of its own).
        let lease = self.ensure_lease().await?;
        self.session
            .state
            .lock()
            .keys
            .insert(key.to_owned(), value.clone());
        let resp = self
            .call("put", Retry::IfUnsent, |mut c| {
                let value = value.clone();
                async move {
                    c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                        .await
                }
            })
            .await;
        match resp {
            Ok(r) => Ok(header_revision(r.header())),
            Err(e) => {
                // "lease not found": etcd expired it while we were cut off; the keeper
                // grants a new one and puts every session key back.
                self.session.state.lock().lease = None;
                Err(e)
            }
        }
    }
}

impl EtcdStore {
    async fn ensure_lease(&self) -> Result<i64, StoreError> {
        if let Some(id) = self.session.state.lock().lease {
            return Ok(id);
        }
        let ttl = self.session.ttl.as_secs().max(1) as i64;
        let granted = self
            .call("lease grant", Retry::Always, |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await?;
        let id = granted.id();
        let mut state = self.session.state.lock();
        Ok(*state.lease.get_or_insert(id))
    }
}

/// Renews the session lease at a third of its TTL. A renewal that fails on the way (a dead
/// member took the call) is retried soon under the same lease, which etcd still holds while
/// a quorum stands. Only when etcd says the lease is gone, or no renewal got through for a
/// whole TTL, is a new one granted and every session key put back under it.
async fn keep_session_alive(
    mut client: Client,
    session: std::sync::Weak<Session>,
    call_timeout: Duration,
) {
    let mut last_renewed = tokio::time::Instant::now();
    let mut retrying = false;
    loop {
        let Some(ttl) = session.upgrade().map(|s| s.ttl) else {
            return;
        };
        let period = (ttl / 3).max(Duration::from_millis(200));
        let pause = if retrying {
            Duration::from_millis(200).min(period)
        } else {
            period
        };
        tokio::time::sleep(pause).await;
        // Read after the pause: a session key put meanwhile comes with its lease.
        let Some(s) = session.upgrade() else { return };
        let (lease, keys) = {
            let state = s.state.lock();
            (state.lease, state.keys.clone())
        };
        drop(s);
        if keys.is_empty() {
            continue;
        }
        // Short enough that a call stuck on a dead member leaves time for more tries
        // within the TTL.
        let renewal = match lease {
            Some(id) => tokio::time::timeout(call_timeout.min(period), renew(&mut client, id))
                .await
                .unwrap_or(Renewal::Failed),
            None => Renewal::Gone,
        };
        match renewal {
            Renewal::Renewed => {
                last_renewed = tokio::time::Instant::now();
                retrying = false;
                continue;
            }
            Renewal::Failed if last_renewed.elapsed() < ttl => {
                retrying = true;
                continue;
            }
            Renewal::Failed | Renewal::Gone => {}
        }
        let Some(s) = session.upgrade() else { return };
        s.state.lock().lease = None;
        let ttl = s.ttl.as_secs().max(1) as i64;
        drop(s);
        let regranted = tokio::time::timeout(call_timeout, async {
            let id = client.lease_grant(ttl, None).await?.id();
            for (key, value) in &keys {
                client
                    .put(
                        key.as_str(),
                        value.clone(),
                        Some(PutOptions::new().with_lease(id)),
                    )
                    .await?;
            }
            Ok::<i64, etcd_client::Error>(id)
        })
        .await;
        match regranted {
            Ok(Ok(id)) => {
                if let Some(s) = session.upgrade() {
                    s.state.lock().lease = Some(id);
                }
                last_renewed = tokio::time::Instant::now();
                retrying = false;
                tracing::info!(lease = id, "etcd session lease granted again after a gap");
            }
            Ok(Err(e)) => {
                retrying = true;
                tracing::debug!(error = %e, "cannot renew the etcd session yet");
            }
            Err(_) => {
                retrying = true;
                tracing::debug!("cannot renew the etcd session yet: timeout");
            }
        }
    }
}

enum Renewal {
    Renewed,
    /// etcd no longer knows the lease (it expired while this process was cut off).
    Gone,
    /// The round trip failed; etcd may well still hold the lease.
    Failed,
}

/// One keep-alive round trip.
async fn renew(client: &mut Client, id: i64) -> Renewal {
    let Ok((mut keeper, mut stream)) = client.lease_keep_alive(id).await else {
        return Renewal::Failed;
    };
    if keeper.keep_alive().await.is_err() {
        return Renewal::Failed;
    }
    match stream.message().await {
        Ok(Some(r)) if r.ttl() > 0 => Renewal::Renewed,
        Ok(Some(_)) => Renewal::Gone,
        _ => Renewal::Failed,
    }
}

/// How long a watch may stay silent before it is asked for a progress note.
const WATCH_QUIET: Duration = Duration::from_secs(3);

/// Turns etcd watch responses into one batch per revision. Ends after the first error:
/// `Compacted` when the start revision is gone, `Unavailable` when the stream broke.
fn watch_batches(
    stream: etcd_client::WatchStream,
    start: Revision,
) -> impl futures::Stream<Item = Result<WatchBatch, StoreError>> + Send {
    futures::stream::unfold(
        (
            Some(stream),
            std::collections::VecDeque::<WatchBatch>::new(),
        ),
        move |(stream, mut ready)| async move {
            if let Some(batch) = ready.pop_front() {
                return Some((Ok(batch), (stream, ready)));
            }
            let mut stream = stream?;
            let mut probing = false;
            loop {
                // A watch on a member that restarted or lost its peers can go silent without
                // an error. After a quiet spell ask etcd for a progress note; no answer to
                // that either means the stream is dead: end it, and the caller re-lists.
                let message = match tokio::time::timeout(WATCH_QUIET, stream.message()).await {
                    Ok(m) => m,
                    Err(_) if probing => {
                        let err = StoreError::Unavailable("etcd watch stalled".into());
                        return Some((Err(err), (None, ready)));
                    }
                    Err(_) => {
                        probing = true;
                        if stream.request_progress().await.is_err() {
                            let err = StoreError::Unavailable("etcd watch stalled".into());
                            return Some((Err(err), (None, ready)));
                        }
                        continue;
                    }
                };
                probing = false;
                match message {
                    Ok(Some(resp)) => {
                        if resp.compact_revision() > 0 {
                            let err = StoreError::Compacted {
                                requested: start,
                                compacted: resp.compact_revision(),
                            };
                            return Some((Err(err), (None, ready)));
                        }
                        if resp.canceled() {
                            let err = StoreError::Unavailable(format!(
                                "etcd cancelled the watch: {}",
                                resp.cancel_reason()
                            ));
                            return Some((Err(err), (None, ready)));
                        }
                        group_by_revision(resp.events(), &mut ready);
                        if let Some(batch) = ready.pop_front() {
                            return Some((Ok(batch), (Some(stream), ready)));
                        }
                    }
                    Ok(None) => {
                        let err = StoreError::Unavailable("etcd closed the watch".into());
                        return Some((Err(err), (None, ready)));
                    }
                    Err(e) => return Some((Err(unavailable(e)), (None, ready))),
                }
            }
        },
    )
    .fuse()
}

/// Appends the events of one watch response as batches, one per revision, in order.
fn group_by_revision(
    events: &[etcd_client::Event],
    out: &mut std::collections::VecDeque<WatchBatch>,
) {
    for event in events {
        let Some(kv) = event.kv() else { continue };
        let revision = kv.mod_revision();
        let converted = match event.event_type() {
            EventType::Put => Event {
                kind: EventKind::Put,
                kv: convert_kv(kv),
            },
            EventType::Delete => Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    value: Vec::new(),
                    create_revision: 0,
                    mod_revision: revision,
                    version: 0,
                },
            },
        };
        match out.back_mut() {
            Some(last) if last.revision == revision => last.events.push(converted),
            _ => out.push_back(WatchBatch {
                revision,
                events: vec![converted],
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_ends_where_its_last_byte_is_one_more() {
        assert_eq!(prefix_end(b"/fulcrum/v1/"), b"/fulcrum/v10");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
