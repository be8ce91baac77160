//! Crash safety of the embedded store: a real child process is SIGKILLed while it commits,
//! and every commit it acknowledged must be found after reopening the file.
//!
//! The test binary re-executes itself as the writer: with `FULCRUM_STORE_CRASH_CHILD=<file>`
//! set, the test function writes instead of supervising. The child prints `ack <n>` only
//! after `txn` returned, i.e. after the commit was fsynced.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fulcrum_store::{EmbeddedStore, Op, Store, Txn};

const TEST_NAME: &str = "sigkill_during_acknowledged_writes_loses_nothing";
const CHILD_ENV: &str = "FULCRUM_STORE_CRASH_CHILD";
const START_ENV: &str = "FULCRUM_STORE_CRASH_START";
const ROUNDS: usize = 3;
const ACKS_BEFORE_KILL: u64 = 300;
/// Kill after this long even with fewer acks (a slow disk), so the test stays bounded.
const MAX_WAIT: Duration = Duration::from_secs(3);
/// A child whose parent vanished stops on its own after this long.
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

fn key(n: u64) -> String {
    format!("k/{n}")
}

fn value(n: u64) -> Vec<u8> {
    format!("value of {n};").repeat(16).into_bytes()
}

fn write_txn(n: u64) -> Txn {
    Txn {
        success: vec![
            Op::Put {
                key: key(n),
                value: value(n),
            },
            Op::Put {
                key: "last".into(),
                value: n.to_string().into_bytes(),
            },
        ],
        ..Txn::default()
    }
}

#[test]
fn sigkill_during_acknowledged_writes_loses_nothing() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        writer_child(Path::new(&path));
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fulcrum.redb");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut next_start = 0u64;
    let mut total_acks = 0u64;

    for round in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .env(START_ENV, next_start.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();

        // A reader thread, so waiting for acks is bounded even if the child goes silent.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<u64>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest prints its own lines too; only acks matter.
                if let Some(n) = line.strip_prefix("ack ")
                    && tx.send(n.trim().parse().unwrap()).is_err()
                {
                    break;
                }
            }
        });

        let started = Instant::now();
        let deadline = started + MAX_WAIT;
        let mut acks = Vec::new();
        while (acks.len() as u64) < ACKS_BEFORE_KILL {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(n) => acks.push(n),
                Err(_) => break,
            }
        }
        // `Child::kill` is SIGKILL on Unix: no destructors, no flush, mid-commit.
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "the writer must have been killed, got {status}"
        );
        reader.join().unwrap();
        // Acks printed between our last read and the kill were acknowledged too.
        acks.extend(rx.try_iter());

        assert!(
            !acks.is_empty(),
            "round {round}: the writer acknowledged nothing within {MAX_WAIT:?}"
        );
        let expected: Vec<u64> = (next_start..next_start + acks.len() as u64).collect();
        assert_eq!(acks, expected, "acks must be sequential");
        let last_ack = next_start + acks.len() as u64 - 1;
        total_acks += acks.len() as u64;
        eprintln!(
            "round {round}: killed after {} acks in {:?}",
            acks.len(),
            started.elapsed()
        );

        rt.block_on(async {
            let opened = Instant::now();
            let store = EmbeddedStore::open(&path).unwrap();
            eprintln!("round {round}: reopened in {:?}", opened.elapsed());
            // Every acknowledged write of every round so far.
            for n in 0..=last_ack {
                let kv = store.get(&key(n)).await.unwrap();
                let kv = kv.unwrap_or_else(|| panic!("acknowledged key {} lost", key(n)));
                assert_eq!(kv.value, value(n), "value of {}", key(n));
            }
            let last = store.get("last").await.unwrap().unwrap();
            let last: u64 = String::from_utf8(last.value).unwrap().parse().unwrap();
            assert!(
                last >= last_ack,
                "last written {last} < last acknowledged {last_ack}"
            );
            let revision = store.revision().await.unwrap();
            assert!(
                revision >= total_acks as i64,
                "revision {revision} < {total_acks} acks"
            );

            // The store still takes writes, at the next revision.
            let resp = store
                .txn(write_txn(1_000_000 + round as u64))
                .await
                .unwrap();
            assert_eq!(resp.revision, revision + 1);
        });
        next_start = last_ack + 1;
    }
}

/// The writer: sequential durable txns, each acknowledged on stdout after `txn` returned.
fn writer_child(path: &Path) {
    let start: u64 = std::env::var(START_ENV)
        .expect("start env")
        .parse()
        .expect("start number");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = EmbeddedStore::open(path).expect("open store in child");
        let began = Instant::now();
        let mut out = std::io::stdout().lock();
        // libtest has printed "test <name> ... " without a newline: end that line first.
        if writeln!(out).is_err() {
            std::process::exit(0);
        }
        for n in start.. {
            store.txn(write_txn(n)).await.expect("child txn");
            // A write error means the parent is gone: stop quietly.
            if writeln!(out, "ack {n}").and_then(|()| out.flush()).is_err()
                || began.elapsed() > CHILD_LIFETIME
            {
                std::process::exit(0);
            }
        }
    });
}
