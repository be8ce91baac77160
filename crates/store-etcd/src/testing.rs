//! Real etcd clusters for tests: Debian's `etcd` binary, started on free loopback ports
//! with throwaway data directories, and stopped (or killed) on demand.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fulcrum_store::Store;

use crate::{EtcdOptions, EtcdStore};

/// Why a test that needs etcd cannot run, or None when `etcd` is installed.
/// Fails the calling test unless etcd is installed: a test that passes without running
/// proves nothing. `scripts/test` installs it (Debian: `apt-get install etcd-server`).
pub fn require_etcd() {
    match Command::new("etcd").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => panic!(
            "etcd is not installed (Debian: apt-get install etcd-server); scripts/test installs it"
        ),
    }
}

struct MemberProc {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// A running etcd cluster of one or more members on 127.0.0.1.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<MemberProc>,
    initial_cluster: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl EtcdCluster {
    /// Starts `size` members and waits until every one answers. A member that exits while
    /// starting (most often a port another test took between `free_port` and etcd's bind)
    /// fails the attempt, and the cluster starts again on new ports, up to three times.
    pub async fn start(size: usize) -> Self {
        let mut failure = String::new();
        for _attempt in 0..3 {
            let mut cluster = Self::spawn_new(size);
            match cluster.wait_all().await {
                Ok(()) => return cluster,
                Err(why) => failure = why,
            }
        }
        panic!("{failure}")
    }

    fn spawn_new(size: usize) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let members: Vec<MemberProc> = (0..size)
            .map(|i| MemberProc {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            dir,
            members,
            initial_cluster,
        };
        for i in 0..size {
            cluster.spawn(i, "new");
        }
        cluster
    }

    async fn wait_all(&mut self) -> Result<(), String> {
        for i in 0..self.members.len() {
            self.wait_member(i).await?;
        }
        Ok(())
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.etcd", self.members[i].name))
    }

    fn spawn(&mut self, i: usize, state: &str) {
        let data_dir = self.data_dir(i);
        let log = std::fs::File::create(self.dir.path().join(format!("m{i}.log"))).expect("log");
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "fulcrum-test"])
            // etcd's default timings (heartbeat 100 ms, election 1 s): shorter ones hold
            // spurious elections on a busy machine. Transactions as large as fulcrum's
            // biggest changes, as the README asks of a fleet's etcd.
            .arg(format!("--max-txn-ops={}", fulcrum_store::NEEDED_TXN_OPS))
            .args(["--logger", "zap", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.members[i].child = Some(child);
    }

    /// Client URLs of every member, live or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// A store client over every member.
    pub async fn store(&self) -> EtcdStore {
        EtcdStore::connect(EtcdOptions::new(self.endpoints()))
            .await
            .expect("etcd client")
    }

    /// Waits until member `i` answers; fails with the end of its log when it exits or
    /// stays silent for 30 s (the log's directory goes away with the cluster).
    async fn wait_member(&mut self, i: usize) -> Result<(), String> {
        let endpoint = vec![format!("http://127.0.0.1:{}", self.members[i].client_port)];
        let store = EtcdStore::connect(EtcdOptions::new(endpoint))
            .await
            .expect("etcd client");
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.revision().await.is_err() {
            let exited = self.members[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!(
                    "etcd member {i} exited while starting ({status}); its log ends:\n{}",
                    self.log_tail(i)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "etcd member {i} did not answer within 30 s; its log ends:\n{}",
                    self.log_tail(i)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn log_tail(&self, i: usize) -> String {
        let log = std::fs::read_to_string(self.dir.path().join(format!("m{i}.log")))
            .unwrap_or_else(|e| format!("(no log: {e})"));
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops member `i` with SIGTERM (a leader hands over leadership first).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a stopped member with its data and waits until it answers.
    pub async fn restart(&mut self, i: usize) {
        self.spawn(i, "existing");
        if let Err(why) = self.wait_member(i).await {
            panic!("{why}");
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) every member: a cluster that accepts
    /// connections and never answers.
    pub fn freeze_all(&self, frozen: bool) {
        let signal = if frozen { "-STOP" } else { "-CONT" };
        for m in &self.members {
            if let Some(child) = &m.child {
                let _ = Command::new("kill")
                    .args([signal, &child.id().to_string()])
                    .status();
            }
        }
    }

    pub fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }

    /// Restarts every stopped member, all at once (a quorum must form).
    pub async fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.spawn(i, "existing");
            }
        }
        if let Err(why) = self.wait_all().await {
            panic!("{why}");
        }
    }

    /// The index of the current leader, asked of any live member.
    pub async fn leader(&self) -> Option<usize> {
        for m in &self.members {
            if m.child.is_none() {
                continue;
            }
            let url = format!("http://127.0.0.1:{}", m.client_port);
            let Ok(Ok(mut client)) = tokio::time::timeout(
                Duration::from_secs(2),
                etcd_client::Client::connect([url], None),
            )
            .await
            else {
                continue;
            };
            let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_secs(2), client.status()).await
            else {
                continue;
            };

            let leader = status.leader();
            let Ok(Ok(list)) =
                tokio::time::timeout(Duration::from_secs(2), client.member_list()).await
            else {
                continue;
            };
            for member in list.members() {
                if member.id() == leader {
                    return self.members.iter().position(|m| m.name == member.name());
                }
            }
        }
        None
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
