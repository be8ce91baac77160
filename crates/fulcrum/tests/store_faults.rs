//! The embedded store on a disk that fills up: changes answer 503 with the cause (never
//! 500), health says so, reads and traffic carry on, the store recovers by itself once space
//! is freed, and every acknowledged change is on disk afterwards.
//!
//! The small disk is a real tmpfs, mounted in a mount namespace of its own (an unprivileged
//! user namespace: `unshare` and `nsenter` from util-linux), so the test needs no root.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::backend::Backend;
use common::stack::{client, eventually, get};
use common::{Api, Server, free_port, unlimited_config};
use serde_json::{Value, json};

/// A tmpfs of a few MiB, mounted at `dir` in a mount namespace that `holder` keeps alive.
struct SmallDisk {
    holder: Child,
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mut holder = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o size="$1" tmpfs "$2" && echo mounted && exec sleep 600"#)
            .arg("sh")
            .arg(format!("{mib}m"))
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run unshare (util-linux)");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "mounted",
            "cannot mount a tmpfs in a user namespace (is kernel.unprivileged_userns_clone off?)"
        );
        SmallDisk { holder, dir }
    }

    /// Where `rel` inside the small disk is, seen from outside its namespace.
    fn outside(&self, rel: &str) -> PathBuf {
        let inside = self.dir.path().join(rel);
        PathBuf::from(format!(
            "/proc/{}/root{}",
            self.holder.id(),
            inside.display()
        ))
    }

    /// A command that runs fulcrum inside the namespace, where the small disk is mounted.
    fn fulcrum(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.holder.id().to_string()])
            .args(["--user", "--mount", "--preserve-credentials"])
            .arg(env!("CARGO_BIN_EXE_fulcrum"));
        c
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Writes zeros into `path` until the disk refuses.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
}

/// Adds one 1,000-byte label to the load balancer: the status, and the body.
async fn label(api: &Api, lb: &str, i: usize) -> (u16, Value, Option<String>) {
    let r = api
        .call(
            "PATCH",
            &format!("/v1/loadbalancers/{lb}"),
            Some(json!({"labels": {format!("k{i}"): "x".repeat(1000)}})),
        )
        .await;
    let retry_after = r.header("retry-after");
    (r.status, r.body, retry_after)
}

#[tokio::test]
async fn a_full_disk_answers_503_and_the_store_recovers_when_space_is_freed() {
    let disk = SmallDisk::mount(8);
    let config_dir = tempfile::tempdir().unwrap();
    let config = unlimited_config(config_dir.path());
    let data = disk.dir.path().join("data");
    let server = Server::start_through(disk.fulcrum(), &data, &["--config", &config]);
    let api = server.client();

    // Something to serve throughout.
    let backend = Backend::start("a").await;
    let lb = api.loadbalancer().await;
    let pool = api.pool(&lb, "HTTP", "ROUND_ROBIN").await;
    api.member(&pool, backend.port(), json!({})).await;
    let port = free_port();
    api.listener(&lb, "HTTP", port, Some(&pool)).await;
    let http = client();
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(get(&http, &url).await.0, 200);

    // Fill the disk, then change until a change is refused.
    fill(&disk.outside("filler"));
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..2_000 {
        let (status, body, retry_after) = label(&api, &lb, i).await;
        match status {
            200 => acknowledged.push(i),
            503 => {
                refused = Some((i, body, retry_after));
                break;
            }
            other => panic!("change {i} answered {other}: {body}"),
        }
    }
    let (first_refused, body, retry_after) = refused.expect("no change was refused on a full disk");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("disk is full"), "{body}");
    assert!(retry_after.is_some(), "503 without Retry-After");

    // Health says so; reads and traffic carry on; changes keep answering 503, not 500.
    let health = api.ok("GET", "/v1/health", None).await.body;
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["store_writable"], false, "{health}");
    assert!(
        health["store_error"]
            .as_str()
            .unwrap_or_default()
            .contains("disk is full"),
        "{health}"
    );
    api.ok("GET", &format!("/v1/loadbalancers/{lb}"), None)
        .await;
    for _ in 0..20 {
        assert_eq!(get(&http, &url).await.0, 200);
    }
    let (status, body, _) = label(&api, &lb, first_refused + 1).await;
    assert_eq!(status, 503, "{body}");

    // Space is freed: the store reopens its file by itself and takes changes again.
    std::fs::remove_file(disk.outside("filler")).unwrap();
    let mut next = first_refused + 2;
    let recovered = eventually(Duration::from_secs(10), || {
        let i = next;
        next += 1;
        let api = &api;
        let lb = &lb;
        async move {
            let (status, body, _) = label(api, lb, i).await;
            assert!(status == 200 || status == 503, "{status}: {body}");
            status == 200
        }
    })
    .await;
    assert!(recovered, "the store never took changes again");
    acknowledged.push(next - 1);
    for i in next..next + 5 {
        assert_eq!(label(&api, &lb, i).await.0, 200);
        acknowledged.push(i);
    }
    let health = api.ok("GET", "/v1/health", None).await.body;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["store_writable"], true, "{health}");
    assert_eq!(get(&http, &url).await.0, 200);

    // Killed and started again from what is on disk: every acknowledged change is there,
    // and no refused one.
    let served = api
        .ok("GET", &format!("/v1/loadbalancers/{lb}"), None)
        .await
        .body;
    server.kill9();
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(disk.outside("data")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    let restarted = Server::start(copy.path());
    let after = restarted
        .client()
        .ok("GET", &format!("/v1/loadbalancers/{lb}"), None)
        .await
        .body;
    for i in &acknowledged {
        assert!(
            after["labels"].get(format!("k{i}")).is_some(),
            "acknowledged change {i} was lost"
        );
    }
    for i in first_refused..first_refused + 2 {
        assert!(
            after["labels"].get(format!("k{i}")).is_none(),
            "refused change {i} was applied"
        );
    }
    assert_eq!(after["labels"], served["labels"]);
}
