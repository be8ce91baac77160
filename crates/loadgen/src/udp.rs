//! `udp`: UDP request/response packets per second (closed loop). Each flow owns a socket on its
//! own local port, connected to the target: it sends one datagram, waits for the one datagram
//! that answers it (up to `--timeout-ms`), and sends the next. A reply that does not come in
//! time is a loss; the flow then goes on with its next datagram. Each datagram carries the
//! flow's sequence number, so a late reply to an earlier datagram is told apart (and dropped)
//! instead of being counted as the answer to the current one; an echo that sends the payload
//! back is checked for that, and a member that answers with something else (its name) is
//! counted as answering whatever it was sent.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Args;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::stats::{ms, percentile, round, sorted};
use crate::{Outcome, check_window};

#[derive(Args)]
pub struct UdpArgs {
    /// Where to send, e.g. 127.0.0.1:9000
    #[arg(long)]
    target: SocketAddr,
    /// Concurrent flows, one socket (one local port) each.
    #[arg(long, default_value_t = 64)]
    flows: usize,
    /// Bytes per request datagram (at least 8: the sequence number).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// How long a flow waits for a reply before counting a loss and sending the next.
    #[arg(long, default_value_t = 200)]
    timeout_ms: u64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds of the same load first.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
}

#[derive(Default)]
struct Tally {
    /// Round-trip times (ms) of the answered datagrams.
    rtt: Vec<f64>,
    losses: u64,
    /// Replies that were not the answer to the datagram in flight (late ones).
    stray: u64,
    errors: u64,
    bytes_in: u64,
}

#[derive(Serialize)]
struct Report {
    target: String,
    flows: usize,
    size: usize,
    timeout_ms: u64,
    duration_s: f64,
    /// Request datagrams answered within the measured window.
    replies: u64,
    replies_per_s: f64,
    losses: u64,
    loss_ratio: f64,
    stray_replies: u64,
    send_errors: u64,
    bytes_in: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

/// The request datagram: the sequence number (8 bytes, big-endian), then padding to `size`.
fn request(seq: u64, size: usize) -> Vec<u8> {
    let mut d = vec![b'.'; size.max(8)];
    d[..8].copy_from_slice(&seq.to_be_bytes());
    d
}

/// Whether `reply` answers request `seq`: an echo must carry `seq` back; anything that does
/// not look like an echo of some request of this size answers whatever is in flight.
fn answers(reply: &[u8], seq: u64, size: usize) -> bool {
    if reply.len() != size.max(8) || reply[8..].iter().any(|&b| b != b'.') {
        return true;
    }
    reply.get(..8) == Some(&seq.to_be_bytes()[..])
}

async fn flow(
    target: SocketAddr,
    size: usize,
    timeout: Duration,
    measure_from: Instant,
    until: Instant,
) -> anyhow::Result<Tally> {
    let local: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sock = UdpSocket::bind(local)
        .await
        .context("binding a flow socket")?;
    sock.connect(target)
        .await
        .context("connecting a flow socket")?;
    let mut t = Tally::default();
    let mut buf = vec![0u8; 65536];
    let mut seq = 0u64;
    let mut logged = 0;
    loop {
        let sent = Instant::now();
        if sent >= until {
            return Ok(t);
        }
        seq += 1;
        let measured_send = sent >= measure_from;
        if let Err(e) = sock.send(&request(seq, size)).await {
            // ECONNREFUSED from an earlier ICMP port unreachable, or a full buffer.
            if measured_send {
                t.errors += 1;
            }
            if logged < 3 {
                logged += 1;
                eprintln!("fulcrum-loadgen udp: send: {e}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let deadline = sent + timeout;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => {
                    if measured_send && deadline <= until {
                        t.losses += 1;
                    }
                    break;
                }
                Ok(Err(_)) => {
                    // An ICMP error for an earlier datagram: wait out this one's deadline.
                    continue;
                }
                Ok(Ok(n)) => {
                    if !answers(&buf[..n], seq, size) {
                        t.stray += 1;
                        continue;
                    }
                    let done = Instant::now();
                    if measured_send && done < until {
                        t.rtt.push(ms(done - sent));
                        t.bytes_in += n as u64;
                    }
                    break;
                }
            }
        }
    }
}

pub async fn run(a: UdpArgs) -> anyhow::Result<Outcome> {
    ensure!(a.flows > 0, "--flows must be at least 1");
    ensure!(
        (8..=65507).contains(&a.size),
        "--size must be 8 to 65507 bytes"
    );
    ensure!(a.timeout_ms > 0, "--timeout-ms must be positive");
    check_window(a.duration, a.warmup)?;
    eprintln!(
        "fulcrum-loadgen udp: {} flow(s) to {}, {} B datagrams, {} ms timeout; {} s warm-up, {} s measured",
        a.flows, a.target, a.size, a.timeout_ms, a.warmup, a.duration
    );
    let measure_from = Instant::now() + Duration::from_secs_f64(a.warmup);
    let until = measure_from + Duration::from_secs_f64(a.duration);
    let timeout = Duration::from_millis(a.timeout_ms);
    let mut tasks = Vec::with_capacity(a.flows);
    for _ in 0..a.flows {
        tasks.push(tokio::spawn(flow(
            a.target,
            a.size,
            timeout,
            measure_from,
            until,
        )));
    }
    let mut all = Tally::default();
    for task in tasks {
        let t = task.await.context("a UDP flow panicked")??;
        all.rtt.extend(t.rtt);
        all.losses += t.losses;
        all.stray += t.stray;
        all.errors += t.errors;
        all.bytes_in += t.bytes_in;
    }
    let lat = sorted(all.rtt);
    let replies = lat.len() as u64;
    let asked = replies + all.losses;
    let report = Report {
        target: a.target.to_string(),
        flows: a.flows,
        size: a.size,
        timeout_ms: a.timeout_ms,
        duration_s: a.duration,
        replies,
        replies_per_s: round(replies as f64 / a.duration, 1),
        losses: all.losses,
        loss_ratio: if asked == 0 {
            0.0
        } else {
            round(all.losses as f64 / asked as f64, 5)
        },
        stray_replies: all.stray,
        send_errors: all.errors,
        bytes_in: all.bytes_in,
        p50_ms: percentile(&lat, 50.0).map(|x| round(x, 3)),
        p99_ms: percentile(&lat, 99.0).map(|x| round(x, 3)),
        max_ms: percentile(&lat, 100.0).map(|x| round(x, 3)),
    };
    let failure = (replies == 0).then(|| format!("no datagram to {} was answered", a.target));
    Ok(Outcome {
        json: serde_json::to_string(&report)?,
        failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_their_sequence_number() {
        let d = request(258, 16);
        assert_eq!(d.len(), 16);
        assert_eq!(&d[..8], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert!(d[8..].iter().all(|&b| b == b'.'));
        assert_eq!(
            request(1, 3).len(),
            8,
            "never shorter than the sequence number"
        );
    }

    #[test]
    fn echoes_must_match_and_other_answers_count() {
        assert!(answers(&request(5, 32), 5, 32));
        assert!(!answers(&request(4, 32), 5, 32), "a late echo is stray");
        assert!(
            answers(b"fulcrum-bench-1", 5, 32),
            "a member's name answers"
        );
        assert!(answers(&request(4, 16), 5, 32), "not an echo of this size");
    }

    /// A real echo server on loopback: every request is answered, none lost.
    #[tokio::test]
    async fn measures_an_echo_server() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, peer)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], peer).await;
            }
        });
        let out = run(UdpArgs {
            target,
            flows: 4,
            size: 32,
            timeout_ms: 500,
            duration: 0.3,
            warmup: 0.05,
        })
        .await
        .unwrap();
        assert!(out.failure.is_none());
        let v: serde_json::Value = serde_json::from_str(&out.json).unwrap();
        assert!(v["replies"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["losses"], 0, "{v}");
        assert_eq!(v["stray_replies"], 0, "{v}");
    }

    /// Nothing answers: every datagram is a loss and the run counts as failed.
    #[tokio::test]
    async fn silence_is_loss() {
        let quiet = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let out = run(UdpArgs {
            target: quiet.local_addr().unwrap(),
            flows: 2,
            size: 8,
            timeout_ms: 20,
            duration: 0.2,
            warmup: 0.0,
        })
        .await
        .unwrap();
        assert!(out.failure.is_some());
        let v: serde_json::Value = serde_json::from_str(&out.json).unwrap();
        assert_eq!(v["replies"], 0, "{v}");
        assert!(v["losses"].as_u64().unwrap() > 0, "{v}");
    }
}
