//! The conformance suite every [`Store`] backend must pass.
//!
//! The control plane relies on the guarantees in the crate docs and nothing more, so each
//! backend (embedded redb now, etcd later) runs this same suite:
//!
//! ```ignore
//! fulcrum_store::conformance::run_all(|| async { make_a_fresh_store().await }).await;
//! ```
//!
//! Each case receives a fresh store from the factory and assumes nobody else writes to it
//! while it runs (revisions are checked exactly, relative to the revision the case starts
//! at: the store does not need to start empty at revision 0). Keys are namespaced per case,
//! so a backend sharing one keyspace between cases still passes. Every wait is bounded, so a
//! broken backend fails instead of hanging. Failures panic, as test assertions do.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::{
    Compare, Event, EventKind, KeyValue, Op, Revision, Store, StoreError, Txn, TxnResponse,
    WatchBatch, WatchStream,
};

/// Upper bound for any single step (one call, one awaited watch batch).
const STEP: Duration = Duration::from_secs(10);
/// Upper bound for the concurrent races as a whole.
const RACE: Duration = Duration::from_secs(60);

/// Runs every case, each against a fresh store from `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    put_get_bookkeeping(Arc::new(make().await)).await;
    range_by_prefix(Arc::new(make().await)).await;
    range_larger_than_a_message(Arc::new(make().await)).await;
    txn_compares(Arc::new(make().await)).await;
    txn_rejects_duplicate_keys(Arc::new(make().await)).await;
    revision_monotonic(Arc::new(make().await)).await;
    cas_counter_race(Arc::new(make().await)).await;
    create_if_absent_race(Arc::new(make().await)).await;
    watch_replay_then_live(Arc::new(make().await)).await;
    watch_prefix_and_deletes(Arc::new(make().await)).await;
    watch_concurrent_writes_no_gaps(Arc::new(make().await)).await;
    watch_future_revision(Arc::new(make().await)).await;
    watch_compacted(Arc::new(make().await)).await;
    compaction_keeps_values(Arc::new(make().await)).await;
    value_compare_and_touch(Arc::new(make().await)).await;
}

/// Create/mod revisions and versions across put, overwrite, delete and re-create.
pub async fn put_get_bookkeeping<S: Store>(store: Arc<S>) {
    let s = store.as_ref();
    assert_eq!(
        bounded("get missing", s.get("pg/a")).await.expect("get"),
        None
    );

    let r1 = put(s, "pg/a", b"one").await;
    assert_eq!(get(s, "pg/a").await, Some(kv("pg/a", b"one", r1, r1, 1)));

    let r2 = put(s, "pg/a", b"two").await;
    assert_eq!(r2, r1 + 1);
    assert_eq!(get(s, "pg/a").await, Some(kv("pg/a", b"two", r1, r2, 2)));

    let r3 = delete(s, "pg/a").await;
    assert_eq!(r3, r2 + 1);
    assert_eq!(get(s, "pg/a").await, None);

    // Re-creation starts a new incarnation: new create revision, version back to 1.
    let r4 = put(s, "pg/a", b"three").await;
    assert_eq!(get(s, "pg/a").await, Some(kv("pg/a", b"three", r4, r4, 1)));

    // Several keys in one transaction share one revision.
    let r5 = txn_ok(
        s,
        Txn {
            success: vec![put_op("pg/b", b"b"), put_op("pg/c", b"c")],
            ..Txn::default()
        },
    )
    .await;
    assert_eq!(r5, r4 + 1);
    assert_eq!(get(s, "pg/b").await, Some(kv("pg/b", b"b", r5, r5, 1)));
    assert_eq!(get(s, "pg/c").await, Some(kv("pg/c", b"c", r5, r5, 1)));

    // Empty values are values.
    let r6 = put(s, "pg/empty", b"").await;
    assert_eq!(
        get(s, "pg/empty").await,
        Some(kv("pg/empty", b"", r6, r6, 1))
    );
}

/// A range far larger than one message of a store's protocol (gRPC's default limit is
/// 4 MiB) comes back whole, in key order, as of one revision: a fleet with tens of
/// thousands of members lists its configuration at start and after compaction.
pub async fn range_larger_than_a_message<S: Store>(store: Arc<S>) {
    let s = store.as_ref();
    const KEYS: usize = 640;
    const VALUE: usize = 10 * 1024;
    // Transactions of 64 keys (640 KiB): within etcd's default request size.
    for chunk in 0..KEYS / 64 {
        let success = (chunk * 64..(chunk + 1) * 64)
            .map(|i| put_op(&format!("big/{i:04}"), &vec![b'a' + (i % 26) as u8; VALUE]))
            .collect();
        txn_ok(
            s,
            Txn {
                success,
                ..Txn::default()
            },
        )
        .await;
    }
    let current = revision(s).await;
    let resp = bounded("range", s.range("big/")).await.expect("range");
    assert_eq!(resp.kvs.len(), KEYS, "every key, 6.25 MiB in all");
    for (i, kv) in resp.kvs.iter().enumerate() {
        assert_eq!(kv.key, format!("big/{i:04}"));
        assert_eq!(kv.value, vec![b'a' + (i % 26) as u8; VALUE], "{}", kv.key);
    }
    assert_eq!(resp.revision, current);
}

/// `range` returns exactly the keys under the prefix, in key order, with its read revision.
pub async fn range_by_prefix<S: Store>(store: Arc<S>) {
    let s = store.as_ref();
    for key in [
        "rp/p/c", "rp/p/a", "rp/pa", "rp/p/b/x", "rp/o/z", "rp/p/b", "rp/q",
    ] {
        put(s, key, key.as_bytes()).await;
    }
    let current = revision(s).await;

    let resp = bounded("range", s.range("rp/p/")).await.expect("range");
    let keys: Vec<&str> = resp.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["rp/p/a", "rp/p/b", "rp/p/b/x", "rp/p/c"]);
    assert_eq!(resp.revision, current);
    for kv in &resp.kvs {
        assert_eq!(kv.value, kv.key.as_bytes());
        assert_eq!(kv.version, 1);
    }

    // The prefix is a plain string prefix, not a path component.
    let resp = bounded("range", s.range("rp/p/b")).await.expect("range");
    let keys: Vec<&str> = resp.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["rp/p/b", "rp/p/b/x"]);

    let resp = bounded("range", s.range("rp/none/")).await.expect("range");
    assert!(resp.kvs.is_empty());
    assert_eq!(resp.revision, current);

    // A deleted key disappears from ranges.
    delete(s, "rp/p/b").await;
    let resp = bounded("range", s.range("rp/p/")).await.expect("range");
    let keys: Vec<&str> = resp.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["rp/p/a", "rp/p/b/x", "rp/p/c"]);
    assert_eq!(resp.revision, current + 1);
}

/// ModRevision / CreateRevision compares pick the branch; `0` means absent.
pub async fn txn_compares<S: Store>(store: Arc<S>) {
    let s = store.as_ref();
    let k = "tc/k";

    // Absent: both compares against 0 hold.
    let resp = txn(
        s,
        Txn {
            compares: vec![Compare::absent(k), Compare::unchanged(k, 0)],
            success: vec![put_op(k, b"v1")],
            failure: vec![put_op("tc/failed", b"1")],
        },
    )
    .await;
    assert!(resp.succeeded);
    let r1 = resp.revision;
    assert_eq!(get(s, k).await, Some(kv(k, b"v1", r1, r1, 1)));
    assert_eq!(get(s, "tc/failed").await, None);

    // Now present: "absent" fails and the failure branch is applied (and gets a revision).
    let resp = txn(
        s,
        Txn {
            compares: vec![Compare::absent(k)],
            success: vec![put_op(k, b"v2")],
            failure: vec![put_op("tc/failed", b"1")],
        },
    )
    .await;
    assert!(!resp.succeeded);
    assert_eq!(resp.revision, r1 + 1);
    assert_eq!(get(s, k).await.map(|kv| kv.value), Some(b"v1".to_vec()));
    assert_eq!(
        get(s, "tc/failed").await.map(|kv| kv.mod_revision),
        Some(r1 + 1)
    );

    // Wrong mod revision fails; a failure branch with no ops writes nothing.
    let resp = txn(
        s,
        Txn {
            compares: vec![Compare::unchanged(k, r1 + 100)],
            success: vec![put_op(k, b"x")],
            ..Txn::default()
        },
    )
    .await;
    assert!(!resp.succeeded);
    assert_eq!(resp.revision, r1 + 1);
    assert_eq!(get(s, k).await.map(|kv| kv.value), Some(b"v1".to_vec()));

    // Right mod revision succeeds.
    let resp = txn(
        s,
        Txn {
            compares: vec![Compare::unchanged(k, r1)],
            success: vec![put_op(k, b"v2")],
            ..Txn::default()
        },
    )
    .await;
    assert!(resp.succeeded);
    let r3 = resp.revision;
    assert_eq!(r3, r1 + 2);
    assert_eq!(get(s, k).await, Some(kv(k, b"v2", r1, r3, 2)));

    // The old mod revision is now stale.
    let resp = txn(
        s,
        Txn {
            compares: vec![Compare::unchanged(k, r1)],
            success: vec![put_op(k, b"x")],
            ..Txn::default()
        },
    )
    .await;
    assert!(!resp.succeeded);

    // The create revision survives updates.
    let create = Compare::CreateRevision {
        key: k.into(),
        revision: r1,
    };
    let resp = txn(
        s,
        Txn {
            compares: vec![create.clone()],
            ..Txn::default()
        },
    )
    .await;
    assert!(resp.succeeded);
    assert_eq!(resp.revision, r3);

    // All compares must hold: one failing compare selects the failure branch.
    let resp = txn(
        s,
        Txn {
            compares: vec![create, Compare::absent("tc/other"), Compare::absent(k)],
            success: vec![put_op("tc/s", b"1")],
            failure: vec![delete_op(k)],
        },
    )
    .await;
    assert!(!resp.succeeded);
    assert_eq!(resp.revision, r3 + 1);
    assert_eq!(get(s, k).await, None);
    assert_eq!(get(s, "tc/s").await, None);

    // After deletion the key is absent again for both kinds of compare.
    let resp = txn(
        s,
        Txn {
            compares: vec![Compare::absent(k), Compare::unchanged(k, 0)],
            success: vec![put_op(k, b"v3")],
            ..Txn::default()
        },
    )
    .await;
    assert!(resp.succeeded);
    assert_eq!(get(s, k).await, Some(kv(k, b"v3", r3 + 2, r3 + 2, 1)));
}

/// A branch that names the same key twice is refused as a whole (as etcd does), whichever
/// branch would have been chosen.
pub async fn txn_rejects_duplicate_keys<S: Store>(store: Arc<S>) {
    let s = store.as_ref();
    let before = revision(s).await;
    let bad = [
        Txn {
            success: vec![put_op("td/k", b"1"), put_op("td/k", b"2")],
            ..Txn::default()
        },
        Txn {
            success: vec![put_op("td/k", b"1"), delete_op("td/k")],
            ..Txn::default()
        },
        Txn {
            compares: vec![Compare::absent("td/none")],
            success: vec![put_op("td/k", b"1")],
            failure: vec![put_op("td/j", b"1"), put_op("td/j", b"2")],
        },
    ];
    for t in bad {
        let res = bounded("txn", s.txn(t.clone())).await;
        assert!(
            res.is_err(),
            "duplicate keys must be refused: {t:?} gave {res:?}"
        );
    }
    assert_eq!(revision(s).await, before);
    assert_eq!(get(s, "td/k").await, None);
    assert_eq!(get(s, "td/j").await, None);
}

/// +1 per writing transaction, unchanged for transactions that write nothing.
pub async fn revision_monotonic<S: Store>(store: Arc<S>) {
    let s = store.as_ref();
    let r0 = revision(s).await;

    let r1 = put(s, "rm/a", b"1").await;
    assert_eq!(r1, r0 + 1);
    assert_eq!(revision(s).await, r1);

    // Failed compare with an empty failure branch.
    let resp = txn(
        s,
        Txn {
            compares: vec![Compare::unchanged("rm/a", r1 + 100)],
            success: vec![put_op("rm/a", b"x")],
            ..Txn::default()
        },
    )
    .await;
    assert_eq!((resp.succeeded, resp.revision), (false, r1));

    // Deleting a missing key writes nothing.
    let resp = txn(
        s,
        Txn {
            success: vec![delete_op("rm/missing")],
            ..Txn::default()
        },
    )
    .await;
    assert_eq!((resp.succeeded, resp.revision), (true, r1));

    // Empty transaction.
    let resp = txn(s, Txn::default()).await;
    assert_eq!((resp.succeeded, resp.revision), (true, r1));
    assert_eq!(revision(s).await, r1);

    // Many ops, one revision.
    let r2 = txn_ok(
        s,
        Txn {
            success: vec![
                put_op("rm/b", b"1"),
                put_op("rm/c", b"1"),
                delete_op("rm/a"),
                delete_op("rm/missing"),
            ],
            ..Txn::default()
        },
    )
    .await;
    assert_eq!(r2, r1 + 1);
    assert_eq!(
        bounded("range", s.range("rm/"))
            .await
            .expect("range")
            .revision,
        r2
    );

    let mut last = r2;
    for i in 0..10u8 {
        let r = put(s, "rm/loop", &[i]).await;
        assert_eq!(r, last + 1);
        last = r;
    }
    assert_eq!(revision(s).await, last);
}

/// 32 tasks increment one counter with read-modify-write + ModRevision compare.
pub async fn cas_counter_race<S: Store>(store: Arc<S>) {
    const TASKS: u64 = 32;
    const KEY: &str = "cas/counter";
    let start = revision(&*store).await;
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut retries = 0u64;
            loop {
                let current = store.get(KEY).await.expect("get counter");
                let (n, mod_rev) = match current {
                    Some(kv) => (parse_u64(&kv.value), kv.mod_revision),
                    None => (0, 0),
                };
                let resp = store
                    .txn(Txn {
                        compares: vec![Compare::unchanged(KEY, mod_rev)],
                        success: vec![put_op(KEY, (n + 1).to_string().as_bytes())],
                        ..Txn::default()
                    })
                    .await
                    .expect("txn counter");
                if resp.succeeded {
                    return retries;
                }
                retries += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    let joined = tokio::time::timeout(RACE, futures::future::join_all(tasks))
        .await
        .expect("CAS race timed out");
    for r in joined {
        r.expect("CAS task panicked");
    }
    let kv = get(&*store, KEY).await.expect("counter exists");
    assert_eq!(parse_u64(&kv.value), TASKS);
    assert_eq!(kv.version, i64::try_from(TASKS).expect("small"));
    // Failed attempts wrote nothing: exactly one revision per increment.
    assert_eq!(
        revision(&*store).await,
        start + i64::try_from(TASKS).expect("small")
    );
}

/// N tasks race to create one key with `Compare::absent`: exactly one wins.
pub async fn create_if_absent_race<S: Store>(store: Arc<S>) {
    const TASKS: usize = 16;
    const KEY: &str = "cia/leader";
    let mut tasks = Vec::new();
    for id in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let resp = store
                .txn(Txn {
                    compares: vec![Compare::absent(KEY)],
                    success: vec![put_op(KEY, id.to_string().as_bytes())],
                    ..Txn::default()
                })
                .await
                .expect("txn create");
            (id, resp)
        }));
    }
    let joined = tokio::time::timeout(RACE, futures::future::join_all(tasks))
        .await
        .expect("create race timed out");
    let results: Vec<(usize, TxnResponse)> = joined
        .into_iter()
        .map(|r| r.expect("create task panicked"))
        .collect();
    let winners: Vec<&(usize, TxnResponse)> = results.iter().filter(|(_, r)| r.succeeded).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one creator must win: {results:?}"
    );
    let (winner, resp) = winners[0];
    let kv = get(&*store, KEY).await.expect("key exists");
    assert_eq!(kv.value, winner.to_string().into_bytes());
    assert_eq!(
        (kv.version, kv.create_revision, kv.mod_revision),
        (1, resp.revision, resp.revision)
    );
    assert_eq!(revision(&*store).await, resp.revision);
}

/// Replay from an old revision, then live events on the same stream.
pub async fn watch_replay_then_live<S: Store>(store: Arc<S>) {
    let s = store.as_ref();
    let p = "wr/";
    let r1 = put(s, "wr/a", b"1").await;
    let r2 = put(s, "wr/b", b"1").await;
    let r3 = put(s, "wr/a", b"2").await;

    let mut from_r2 = bounded("watch", s.watch(p, r2)).await.expect("watch");
    let mut from_r1 = bounded("watch", s.watch(p, r1)).await.expect("watch");

    let b = next_batch(&mut from_r2).await;
    assert_eq!(b, batch(r2, vec![put_ev("wr/b", b"1", r2, r2, 1)]));
    let b = next_batch(&mut from_r2).await;
    assert_eq!(b, batch(r3, vec![put_ev("wr/a", b"2", r1, r3, 2)]));

    // Live.
    let r4 = put(s, "wr/c", b"1").await;
    let b = next_batch(&mut from_r2).await;
    assert_eq!(b, batch(r4, vec![put_ev("wr/c", b"1", r4, r4, 1)]));
    let r5 = delete(s, "wr/b").await;
    let b = next_batch(&mut from_r2).await;
    assert_eq!(b.revision, r5);
    assert_delete(&b.events, "wr/b", r5);

    // A second watcher from further back sees the same history in the same order.
    let all = collect_until(&mut from_r1, r5).await;
    let revs: Vec<Revision> = all.iter().map(|b| b.revision).collect();
    assert_eq!(revs, [r1, r2, r3, r4, r5]);
    assert_eq!(all[0], batch(r1, vec![put_ev("wr/a", b"1", r1, r1, 1)]));
}

/// Prefix filtering, multi-key batches in op order, and delete events.
pub async fn watch_prefix_and_deletes<S: Store>(store: Arc<S>) {
    let s = store.as_ref();
    let p = "wf/in/";
    let start = revision(s).await + 1;

    put(s, "wf/out/x", b"x").await;
    let r2 = txn_ok(
        s,
        Txn {
            success: vec![
                put_op("wf/in/b", b"b"),
                put_op("wf/out/y", b"y"),
                put_op("wf/in/a", b"a"),
            ],
            ..Txn::default()
        },
    )
    .await;
    put(s, "wf/inx", b"not under wf/in/").await;
    put(s, "wf/in", b"not under wf/in/ either").await;
    let r5 = delete(s, "wf/in/a").await;
    delete(s, "wf/out/x").await;
    let r7 = put(s, "wf/in/a", b"again").await;
    // A txn that deletes a missing key under the prefix and writes elsewhere: no event here.
    txn_ok(
        s,
        Txn {
            success: vec![delete_op("wf/in/zz"), put_op("wf/out/z", b"z")],
            ..Txn::default()
        },
    )
    .await;
    let r9 = put(s, "wf/in/end", b"end").await;

    let mut w = bounded("watch", s.watch(p, start)).await.expect("watch");
    let got = collect_until(&mut w, r9).await;
    let revs: Vec<Revision> = got.iter().map(|b| b.revision).collect();
    assert_eq!(revs, [r2, r5, r7, r9]);
    // Events of one revision come in the order the transaction applied them.
    assert_eq!(
        got[0].events,
        vec![
            put_ev("wf/in/b", b"b", r2, r2, 1),
            put_ev("wf/in/a", b"a", r2, r2, 1)
        ]
    );
    assert_delete(&got[1].events, "wf/in/a", r5);
    assert_eq!(got[2].events, vec![put_ev("wf/in/a", b"again", r7, r7, 1)]);

    // Live deletes too.
    let r10 = delete(s, "wf/in/b").await;
    let b = next_batch(&mut w).await;
    assert_eq!(b.revision, r10);
    assert_delete(&b.events, "wf/in/b", r10);
}

/// Watchers opened while a writer commits see every revision exactly once, in order: no
/// gap and no duplicate at the switch from replay to live.
pub async fn watch_concurrent_writes_no_gaps<S: Store>(store: Arc<S>) {
    const WRITES: i64 = 100;
    let base = put(&*store, "wcw/seed", b"seed").await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..WRITES {
                let key = format!("wcw/k{i:03}");
                put(&*store, &key, key.as_bytes()).await;
            }
        })
    };
    let mut first = bounded("watch", store.watch("wcw/", base))
        .await
        .expect("watch");
    let mut second = None;
    let mut got_first = Vec::new();
    while got_first.len() < usize::try_from(WRITES + 1).expect("small") {
        let b = next_batch(&mut first).await;
        got_first.push(b);
        if second.is_none() && got_first.len() == usize::try_from(WRITES / 2).expect("small") {
            // Opened mid-stream, from the very beginning: crosses the boundary later.
            second = Some(
                bounded("watch", store.watch("wcw/", base))
                    .await
                    .expect("watch"),
            );
        }
    }
    bounded("writer", writer).await.expect("writer panicked");
    let mut second = second.expect("second watcher opened");
    let got_second = collect_until(&mut second, base + WRITES).await;

    for got in [&got_first, &got_second] {
        let revs: Vec<Revision> = got.iter().map(|b| b.revision).collect();
        let expected: Vec<Revision> = (base..=base + WRITES).collect();
        assert_eq!(revs, expected);
        for (i, b) in got.iter().skip(1).enumerate() {
            assert_eq!(b.events.len(), 1);
            assert_eq!(b.events[0].kv.key, format!("wcw/k{i:03}"));
        }
    }
    assert_eq!(got_first, got_second);

    // Nothing was yielded twice: the next batch on both streams is the next commit. (The
    // second watcher was opened mid-write but first read after the writer finished, so the
    // same revisions reached it both from history and live.)
    let after = put(&*store, "wcw/after", b"after").await;
    assert_eq!(after, base + WRITES + 1);
    assert_eq!(next_batch(&mut first).await.revision, after);
    assert_eq!(next_batch(&mut second).await.revision, after);
}

/// Watching from a revision that does not exist yet waits for it.
pub async fn watch_future_revision<S: Store>(store: Arc<S>) {
    let s = store.as_ref();
    let current = revision(s).await;
    let mut w = bounded("watch", s.watch("wfr/", current + 3))
        .await
        .expect("watch");
    put(s, "wfr/a", b"1").await;
    put(s, "wfr/b", b"1").await;
    let r3 = put(s, "wfr/c", b"1").await;
    assert_eq!(r3, current + 3);
    let b = next_batch(&mut w).await;
    assert_eq!(b, batch(r3, vec![put_ev("wfr/c", b"1", r3, r3, 1)]));
}

/// After `compact(rev)`, watching from before `rev` answers `Compacted` and ends; from
/// `rev` on it still works. Compacting beyond the current revision is refused.
pub async fn watch_compacted<S: Store>(store: Arc<S>) {
    let s = store.as_ref();
    let r1 = put(s, "wc/a", b"1").await;
    let r2 = put(s, "wc/a", b"2").await;
    let r3 = put(s, "wc/a", b"3").await;
    let r4 = put(s, "wc/b", b"1").await;
    bounded("compact", s.compact(r3)).await.expect("compact");

    expect_compacted(s, "wc/", r2).await;
    expect_compacted(s, "wc/", r1).await;

    let mut w = bounded("watch", s.watch("wc/", r3)).await.expect("watch");
    let got = collect_until(&mut w, r4).await;
    let revs: Vec<Revision> = got.iter().map(|b| b.revision).collect();
    assert_eq!(revs, [r3, r4]);

    let res = bounded("compact", s.compact(r4 + 100)).await;
    assert!(
        res.is_err(),
        "compacting beyond the current revision must fail"
    );
}

/// Compaction forgets history, never current values or their bookkeeping.
pub async fn compaction_keeps_values<S: Store>(store: Arc<S>) {
    let s = store.as_ref();
    let a1 = put(s, "ck/a", b"1").await;
    put(s, "ck/a", b"2").await;
    let a3 = put(s, "ck/a", b"3").await;
    let b1 = put(s, "ck/b", b"1").await;
    put(s, "ck/c", b"1").await;
    delete(s, "ck/c").await;
    let current = revision(s).await;

    bounded("compact", s.compact(current))
        .await
        .expect("compact");

    assert_eq!(get(s, "ck/a").await, Some(kv("ck/a", b"3", a1, a3, 3)));
    assert_eq!(get(s, "ck/b").await, Some(kv("ck/b", b"1", b1, b1, 1)));
    assert_eq!(get(s, "ck/c").await, None);
    let resp = bounded("range", s.range("ck/")).await.expect("range");
    assert_eq!(resp.revision, current);
    assert_eq!(resp.kvs.len(), 2);

    // Writes continue the same bookkeeping, and watching from the compaction point works.
    let mut w = bounded("watch", s.watch("ck/", current + 1))
        .await
        .expect("watch");
    let a4 = put(s, "ck/a", b"4").await;
    assert_eq!(a4, current + 1);
    assert_eq!(get(s, "ck/a").await, Some(kv("ck/a", b"4", a1, a4, 4)));
    let b = next_batch(&mut w).await;
    assert_eq!(b, batch(a4, vec![put_ev("ck/a", b"4", a1, a4, 4)]));
}

/// `Compare::Value` holds on an exact value (never on an absent key); `Op::Touch` moves a
/// key's mod revision and version and tells watchers, keeping its value, so concurrent
/// touches guarded by value compares never undo each other.
pub async fn value_compare_and_touch<S: Store>(store: Arc<S>) {
    let s = store.as_ref();
    let k = "vt/k";
    let guarded_touch = |value: &[u8]| Txn {
        compares: vec![Compare::value(k, value)],
        success: vec![Op::Touch { key: k.into() }],
        failure: vec![],
    };
    assert!(!txn(s, guarded_touch(b"v1")).await.succeeded, "absent key");
    let created = put(s, k, b"v1").await;
    let mut w = bounded("watch", s.watch("vt/", created + 1))
        .await
        .expect("watch");
    assert!(!txn(s, guarded_touch(b"other")).await.succeeded);
    let first = txn(s, guarded_touch(b"v1")).await;
    assert!(first.succeeded);
    assert_eq!(
        get(s, k).await,
        Some(kv(k, b"v1", created, first.revision, 2))
    );
    let second = txn(s, guarded_touch(b"v1")).await;
    assert!(second.succeeded);
    assert_eq!(second.revision, first.revision + 1);
    assert_eq!(
        get(s, k).await,
        Some(kv(k, b"v1", created, second.revision, 3))
    );
    assert_eq!(
        next_batch(&mut w).await,
        batch(
            first.revision,
            vec![put_ev(k, b"v1", created, first.revision, 2)]
        )
    );
    // A real change is seen by the next value compare.
    put(s, k, b"v2").await;
    assert!(!txn(s, guarded_touch(b"v1")).await.succeeded);
}

// ---- helpers ----

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {STEP:?}"),
    }
}

async fn get<S: Store>(s: &S, key: &str) -> Option<KeyValue> {
    bounded("get", s.get(key)).await.expect("get")
}

async fn revision<S: Store>(s: &S) -> Revision {
    bounded("revision", s.revision()).await.expect("revision")
}

async fn txn<S: Store>(s: &S, t: Txn) -> TxnResponse {
    bounded("txn", s.txn(t)).await.expect("txn")
}

/// A transaction whose success branch must apply; returns its revision.
async fn txn_ok<S: Store>(s: &S, t: Txn) -> Revision {
    let resp = txn(s, t).await;
    assert!(resp.succeeded, "unconditional txn must succeed");
    resp.revision
}

async fn put<S: Store>(s: &S, key: &str, value: &[u8]) -> Revision {
    txn_ok(
        s,
        Txn {
            success: vec![put_op(key, value)],
            ..Txn::default()
        },
    )
    .await
}

async fn delete<S: Store>(s: &S, key: &str) -> Revision {
    let before = revision(s).await;
    let r = txn_ok(
        s,
        Txn {
            success: vec![delete_op(key)],
            ..Txn::default()
        },
    )
    .await;
    assert_eq!(r, before + 1, "deleting existing key {key} must write");
    r
}

fn put_op(key: &str, value: &[u8]) -> Op {
    Op::Put {
        key: key.into(),
        value: value.to_vec(),
    }
}

fn delete_op(key: &str) -> Op {
    Op::Delete { key: key.into() }
}

fn kv(key: &str, value: &[u8], create: Revision, modified: Revision, version: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.to_vec(),
        create_revision: create,
        mod_revision: modified,
        version,
    }
}

fn put_ev(key: &str, value: &[u8], create: Revision, modified: Revision, version: i64) -> Event {
    Event {
        kind: EventKind::Put,
        kv: kv(key, value, create, modified, version),
    }
}

fn batch(revision: Revision, events: Vec<Event>) -> WatchBatch {
    WatchBatch { revision, events }
}

/// Delete events carry the key, the deleting revision and no value; other fields are
/// backend-specific (etcd leaves them zero).
fn assert_delete(events: &[Event], key: &str, revision: Revision) {
    assert_eq!(events.len(), 1, "one delete event expected: {events:?}");
    let e = &events[0];
    assert_eq!(e.kind, EventKind::Delete);
    assert_eq!(e.kv.key, key);
    assert_eq!(e.kv.mod_revision, revision);
    assert!(e.kv.value.is_empty());
}

async fn next_batch(w: &mut WatchStream) -> WatchBatch {
    match bounded("watch batch", w.next()).await {
        Some(Ok(b)) => {
            assert!(!b.events.is_empty(), "watch batches are never empty");
            b
        }
        Some(Err(e)) => panic!("watch failed: {e}"),
        None => panic!("watch ended"),
    }
}

/// Collects batches until one at `last` (or later) arrives, checking the order on the way.
async fn collect_until(w: &mut WatchStream, last: Revision) -> Vec<WatchBatch> {
    let mut out: Vec<WatchBatch> = Vec::new();
    while out.last().is_none_or(|b| b.revision < last) {
        let b = next_batch(w).await;
        if let Some(prev) = out.last() {
            assert!(
                b.revision > prev.revision,
                "revisions must increase: {} then {}",
                prev.revision,
                b.revision
            );
        }
        out.push(b);
    }
    out
}

/// `Compacted` either from `watch` itself or as the stream's only item, then the end.
async fn expect_compacted<S: Store>(s: &S, prefix: &str, from: Revision) {
    let check = |e: StoreError| match e {
        StoreError::Compacted { compacted, .. } => {
            assert!(
                compacted >= from,
                "compacted revision {compacted} must cover {from}"
            )
        }
        other => panic!("watch from {from} must answer Compacted, got {other}"),
    };
    match bounded("watch", s.watch(prefix, from)).await {
        Err(e) => check(e),
        Ok(mut w) => {
            match bounded("watch item", w.next()).await {
                Some(Err(e)) => check(e),
                Some(Ok(b)) => panic!("watch from compacted {from} yielded {b:?}"),
                None => panic!("watch from compacted {from} ended without an error"),
            }
            assert!(
                bounded("watch end", w.next()).await.is_none(),
                "the stream must end after an error"
            );
        }
    }
}

fn parse_u64(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("counter value is a number")
}
