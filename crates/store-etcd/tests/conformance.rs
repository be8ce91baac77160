//! The etcd backend passes the same conformance suite as the embedded store, against a
//! real etcd started for the test.

#![allow(clippy::unwrap_used)]

use fulcrum_store_etcd::testing::{EtcdCluster, require_etcd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_backend_passes_the_store_conformance_suite() {
    require_etcd();
    // Cases namespace their keys and check revisions relative to where they start, so
    // one etcd serves them all.
    let cluster = EtcdCluster::start(1).await;
    fulcrum_store::conformance::run_all(|| cluster.store()).await;
}

/// etcd, started as the README asks (`--max-txn-ops`), takes a transaction as large as
/// fulcrum's largest change; a larger one is refused as too large (which the API answers
/// with a 400 naming the setting), not as an internal failure, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_etcds_limit_is_refused_as_too_large() {
    use fulcrum_store::{NEEDED_TXN_OPS, Op, Store, StoreError, Txn};
    require_etcd();
    let cluster = EtcdCluster::start(1).await;
    let store = cluster.store().await;
    let puts = |prefix: &str, n: usize| Txn {
        compares: Vec::new(),
        success: (0..n)
            .map(|i| Op::Put {
                key: format!("{prefix}/{i}"),
                value: b"v".to_vec(),
            })
            .collect(),
        failure: Vec::new(),
    };
    assert!(
        store
            .txn(puts("large", NEEDED_TXN_OPS))
            .await
            .unwrap()
            .succeeded
    );
    match store.txn(puts("larger", NEEDED_TXN_OPS + 1)).await {
        Err(StoreError::TooLarge(m)) => assert!(m.contains("too many operations"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(store.range("larger/").await.unwrap().kvs.is_empty());
    assert_eq!(
        store.range("large/").await.unwrap().kvs.len(),
        NEEDED_TXN_OPS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_keys_vanish_when_the_session_ends_and_return_when_it_resumes() {
    use fulcrum_store::Store;
    use std::time::Duration;
    require_etcd();
    let cluster = EtcdCluster::start(1).await;
    let observer = cluster.store().await;
    let node = session_node(&cluster).await;
    assert_eq!(observer.get("nodes/a").await.unwrap().unwrap().value, b"1");
    // Renewed: still there after twice the TTL.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(observer.get("nodes/a").await.unwrap().is_some());
    // The node goes away: its key follows within the TTL (plus etcd's expiry tick).
    drop(node);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while observer.get("nodes/a").await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "session key outlived its node"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A watch with nothing to report for longer than the stall probe stays open: etcd answers
/// the progress request, so quiet configurations are not re-listed over and over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_watch_stays_open() {
    use fulcrum_store::{Op, Store, Txn};
    use futures::StreamExt;
    use std::time::Duration;
    require_etcd();
    let cluster = EtcdCluster::start(1).await;
    let store = cluster.store().await;
    let from = store.revision().await.unwrap() + 1;
    let mut watch = store.watch("quiet/", from).await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let put = store
        .txn(Txn {
            success: vec![Op::Put {
                key: "quiet/a".into(),
                value: b"1".to_vec(),
            }],
            ..Txn::default()
        })
        .await
        .unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("an event")
        .expect("the stream is open")
        .expect("no error");
    assert_eq!(batch.revision, put.revision);
}

/// One member of three lost, quorum intact: the session lease lives on. Renewals that
/// happen to go to the dead member fail and are retried under the same lease, instead of
/// granting a new one and putting every session key back (which watchers would see).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_member_does_not_churn_the_session_lease() {
    use fulcrum_store::Store;
    use std::time::Duration;
    require_etcd();
    let mut cluster = EtcdCluster::start(3).await;
    let leader = cluster.leader().await.unwrap();
    let observer = cluster.store().await;
    let node = session_node(&cluster).await;
    let before = observer.get("nodes/a").await.unwrap().unwrap();
    // Lose a follower: a quorum of two stays.
    cluster.kill((leader + 1) % 3);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = observer.get("nodes/a").await.unwrap().unwrap();
    assert_eq!(
        after.mod_revision, before.mod_revision,
        "the session key was put back: its lease was granted again"
    );
    drop(node);
}

/// A store of the cluster with a 2 s session that has put `nodes/a`.
async fn session_node(cluster: &EtcdCluster) -> fulcrum_store_etcd::EtcdStore {
    use fulcrum_store::Store;
    let mut options = fulcrum_store_etcd::EtcdOptions::new(cluster.endpoints());
    options.session_ttl = std::time::Duration::from_secs(2);
    let node = fulcrum_store_etcd::EtcdStore::connect(options)
        .await
        .unwrap();
    node.put_session("nodes/a", b"1".to_vec()).await.unwrap();
    node
}
