//! QUIC through a `QUIC_CID` pool, with quinn on both sides.
//!
//! - `quic-members`: QUIC servers (one endpoint per port, all in this process) that answer
//!   every bidirectional stream with their name. With `--server-ids`, each issues its connection
//!   IDs in the QUIC-LB plaintext layout (config 0, the server ID, a 4-byte nonce), so fulcrum
//!   routes their short-header packets by server ID. Their self-signed certificate (DER, for
//!   `localhost`) is written to `--cert-out` once every port is bound; they run until SIGTERM.
//! - `quic`: closed-loop connections. Each client owns one endpoint (one socket, one flow through
//!   the proxy) and, back to back: handshakes, opens a stream, sends a request, reads the
//!   member's name to the end, closes the connection. Reports connections/s, the time from
//!   connect to the answer (p50/p99), failures and which members answered.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, ensure};
use clap::Args;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::rustls;
use quinn::{ConnectionId, ConnectionIdGenerator, Endpoint, EndpointConfig, TokioRuntime};
use serde::Serialize;
use tokio::time::Instant;

use crate::stats::{ms, percentile, round, sorted};
use crate::{Outcome, check_window};

/// Nonce bytes after the server ID in the connection IDs the members issue.
const NONCE_LEN: usize = 4;

#[derive(Args)]
pub struct MembersArgs {
    /// Address the members bind.
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// Comma-separated UDP ports, one member each.
    #[arg(long, value_delimiter = ',', required = true)]
    ports: Vec<u16>,
    /// Comma-separated names the members answer with, one per port.
    #[arg(long, value_delimiter = ',', required = true)]
    names: Vec<String>,
    /// Comma-separated hex server IDs (all the same length), one per port: the members encode
    /// them in their connection IDs (QUIC-LB plaintext, config ID 0).
    #[arg(long, value_delimiter = ',')]
    server_ids: Vec<String>,
    /// Where to write the members' certificate (DER) once they listen.
    #[arg(long)]
    cert_out: std::path::PathBuf,
}

#[derive(Args)]
pub struct QuicArgs {
    /// Where to connect, e.g. 127.0.0.1:9000
    #[arg(long)]
    target: SocketAddr,
    /// The members' certificate (DER), trusted as the only root.
    #[arg(long)]
    cert: std::path::PathBuf,
    /// Concurrent clients, one endpoint (socket) each.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// How long one connection may take, handshake to answer, before it counts as failed.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds of the same load first.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

/// Issues QUIC-LB plaintext connection IDs: config ID 0 with the CID length minus one in the
/// first octet, the server ID, then a random nonce.
struct QuicLbCids {
    server_id: Vec<u8>,
}

impl ConnectionIdGenerator for QuicLbCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let len = 1 + self.server_id.len() + NONCE_LEN;
        let mut cid = Vec::with_capacity(len);
        cid.push((len - 1) as u8);
        cid.extend_from_slice(&self.server_id);
        let nonce = RandomState::new().build_hasher().finish().to_be_bytes();
        cid.extend_from_slice(&nonce[..NONCE_LEN]);
        ConnectionId::new(&cid)
    }

    fn cid_len(&self) -> usize {
        1 + self.server_id.len() + NONCE_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        Duration::from_secs(5)
            .try_into()
            .expect("5 s is a valid idle timeout"),
    ));
    Arc::new(t)
}

fn parse_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    ensure!(
        s.len().is_multiple_of(2) && !s.is_empty(),
        "server ID {s:?}: an even number of hex digits"
    );
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(s.get(i..i + 2).unwrap_or(""), 16)
                .map_err(|_| anyhow!("server ID {s:?} is not hex"))
        })
        .collect()
}

pub async fn members(a: MembersArgs) -> anyhow::Result<Outcome> {
    ensure!(
        a.ports.len() == a.names.len(),
        "--ports and --names must have as many entries"
    );
    ensure!(
        a.server_ids.is_empty() || a.server_ids.len() == a.ports.len(),
        "--server-ids must have one entry per port"
    );
    let ids = a
        .server_ids
        .iter()
        .map(|s| parse_hex(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])
        .context("making the members' certificate")?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
        .map_err(|e| anyhow!("the members' key: {e}"))?;
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    server.transport_config(transport());
    let mut endpoints = Vec::new();
    for (i, (port, name)) in a.ports.iter().zip(&a.names).enumerate() {
        let mut config = EndpointConfig::default();
        if let Some(id) = ids.get(i).cloned() {
            config.cid_generator(move || {
                Box::new(QuicLbCids {
                    server_id: id.clone(),
                })
            });
        }
        let socket = std::net::UdpSocket::bind((a.ip, *port))
            .with_context(|| format!("binding {}:{port}", a.ip))?;
        let endpoint = Endpoint::new(config, Some(server.clone()), socket, Arc::new(TokioRuntime))?;
        let accepting = endpoint.clone();
        let name: Arc<[u8]> = name.as_bytes().into();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let name = name.clone();
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        let name = name.clone();
                        tokio::spawn(async move {
                            let _ = recv.read_to_end(64).await;
                            let _ = send.write_all(&name).await;
                            let _ = send.finish();
                        });
                    }
                });
            }
        });
        endpoints.push(endpoint);
    }
    std::fs::write(&a.cert_out, cert.cert.der().as_ref())
        .with_context(|| format!("writing {}", a.cert_out.display()))?;
    eprintln!(
        "fulcrum-loadgen quic-members: {} member(s) on {}:{:?}",
        endpoints.len(),
        a.ip,
        a.ports
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("waiting for SIGTERM")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    for e in &endpoints {
        e.close(0u32.into(), b"done");
    }
    Ok(Outcome {
        json: serde_json::json!({ "members": endpoints.len() }).to_string(),
        failure: None,
    })
}

#[derive(Default)]
struct Tally {
    /// Connect-to-answer times (ms) of the completed connections.
    done: Vec<f64>,
    failures: u64,
    members: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Report {
    target: String,
    clients: usize,
    duration_s: f64,
    connections: u64,
    connections_per_s: f64,
    failures: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    members: BTreeMap<String, u64>,
}

/// One connection: handshake, one stream with a request, the member's name read to the end,
/// then the connection closed.
async fn one(endpoint: &Endpoint, target: SocketAddr) -> anyhow::Result<String> {
    let conn = endpoint.connect(target, "localhost")?.await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(b"who").await?;
    send.finish()?;
    let name = recv.read_to_end(64).await?;
    conn.close(0u32.into(), b"done");
    Ok(String::from_utf8_lossy(&name).into_owned())
}

pub async fn run(a: QuicArgs) -> anyhow::Result<Outcome> {
    ensure!(a.clients > 0, "--clients must be at least 1");
    ensure!(a.timeout_ms > 0, "--timeout-ms must be positive");
    check_window(a.duration, a.warmup)?;
    let der = std::fs::read(&a.cert).with_context(|| format!("reading {}", a.cert.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(der))?;
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    config.transport_config(transport());
    eprintln!(
        "fulcrum-loadgen quic: {} client(s) to {}; {} s warm-up, {} s measured",
        a.clients, a.target, a.warmup, a.duration
    );
    let local: SocketAddr = if a.target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let measure_from = Instant::now() + Duration::from_secs_f64(a.warmup);
    let until = measure_from + Duration::from_secs_f64(a.duration);
    let timeout = Duration::from_millis(a.timeout_ms);
    let mut tasks = Vec::with_capacity(a.clients);
    for _ in 0..a.clients {
        let mut endpoint = Endpoint::client(local).context("a client endpoint")?;
        endpoint.set_default_client_config(config.clone());
        let target = a.target;
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut logged = 0;
            loop {
                let start = Instant::now();
                if start >= until {
                    break;
                }
                let r = tokio::time::timeout(timeout, one(&endpoint, target)).await;
                let end = Instant::now();
                let measured = start >= measure_from && end < until;
                match r {
                    Ok(Ok(name)) => {
                        if measured {
                            t.done.push(ms(end - start));
                            *t.members.entry(name).or_default() += 1;
                        }
                    }
                    Ok(Err(e)) => {
                        if measured {
                            t.failures += 1;
                        }
                        if logged < 3 {
                            logged += 1;
                            eprintln!("fulcrum-loadgen quic: {e:#}");
                        }
                    }
                    Err(_) => {
                        if measured {
                            t.failures += 1;
                        }
                        if logged < 3 {
                            logged += 1;
                            eprintln!("fulcrum-loadgen quic: no answer within {timeout:?}");
                        }
                    }
                }
            }
            endpoint.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
            t
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.context("a QUIC client panicked")?;
        all.done.extend(t.done);
        all.failures += t.failures;
        for (k, n) in t.members {
            *all.members.entry(k).or_default() += n;
        }
    }
    let lat = sorted(all.done);
    let connections = lat.len() as u64;
    let report = Report {
        target: a.target.to_string(),
        clients: a.clients,
        duration_s: a.duration,
        connections,
        connections_per_s: round(connections as f64 / a.duration, 1),
        failures: all.failures,
        p50_ms: percentile(&lat, 50.0).map(|x| round(x, 3)),
        p99_ms: percentile(&lat, 99.0).map(|x| round(x, 3)),
        max_ms: percentile(&lat, 100.0).map(|x| round(x, 3)),
        members: all.members,
    };
    let failure =
        (connections == 0).then(|| format!("no QUIC connection through {} completed", a.target));
    Ok(Outcome {
        json: serde_json::to_string(&report)?,
        failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_ids_are_hex() {
        assert_eq!(parse_hex("0a0B01").unwrap(), vec![0x0a, 0x0b, 0x01]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
        assert!(parse_hex("").is_err());
    }

    #[test]
    fn connection_ids_carry_the_server_id() {
        let mut g = QuicLbCids {
            server_id: vec![7, 8, 9],
        };
        let cid = g.generate_cid();
        assert_eq!(cid.len(), g.cid_len());
        assert_eq!(cid[0], 7, "config ID 0, length minus one");
        assert_eq!(&cid[1..4], &[7, 8, 9]);
    }

    /// Members and clients over real loopback sockets, no proxy in between.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_connect_to_members() {
        let dir = std::env::temp_dir().join(format!("loadgen-quic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.der");
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let members_task = tokio::spawn(members(MembersArgs {
            ip: "127.0.0.1".parse().unwrap(),
            ports: vec![port],
            names: vec!["m1".into()],
            server_ids: vec!["0a0b0c".into()],
            cert_out: cert.clone(),
        }));
        for _ in 0..100 {
            if cert.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let out = run(QuicArgs {
            target: SocketAddr::from(([127, 0, 0, 1], port)),
            cert,
            clients: 2,
            timeout_ms: 3000,
            duration: 0.5,
            warmup: 0.1,
        })
        .await
        .unwrap();
        members_task.abort();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(out.failure.is_none(), "{}", out.json);
        let v: serde_json::Value = serde_json::from_str(&out.json).unwrap();
        assert!(v["connections"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["failures"], 0, "{v}");
        assert_eq!(
            v["members"].as_object().unwrap().keys().collect::<Vec<_>>(),
            ["m1"]
        );
    }
}
