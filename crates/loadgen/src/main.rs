//! `fulcrum-loadgen`: a load driver for fulcrum's native management API, used by `bench/run`.
//!
//! - `writes`: closed loop. Sets up load balancers, pools and one member per client through the
//!   API, then every client PATCHes its own member's weight back to back on its own keep-alive
//!   connection. Measures acknowledged durable writes per second and their latency.
//! - `churn`: open loop. PATCHes the members of the benchmark's HTTP pool (from the state file
//!   `bench/lib/fulcrum_api.py setup` writes) at a fixed rate for a fixed time, next to the
//!   proxy's traffic, and reports what was achieved.
//! - `udp`: closed loop over UDP. N flows, each its own socket, send a datagram and wait for its
//!   reply (with a timeout) back to back; reports replies/s, round-trip p50/p99 and losses.
//! - `quic-members` and `quic`: quinn QUIC members (QUIC-LB server IDs in their connection IDs)
//!   and closed-loop QUIC connections through a proxy: connections/s, p50/p99, failures.
//!
//! Each subcommand prints exactly one JSON object on stdout; human logs go to stderr. Each client
//! owns one HTTP/1.1 keep-alive connection (hyper's low-level client, `TCP_NODELAY`).

mod churn;
mod client;
mod quic;
mod stats;
mod udp;
mod writes;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "fulcrum-loadgen", version, about)]
struct Cli {
    /// Runtime threads (1: a single-threaded runtime, the least CPU next to a measured proxy).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where the API is and how to authenticate.
#[derive(Args, Clone)]
pub struct ApiArgs {
    /// Base URL of the native API, e.g. http://127.0.0.1:9000
    #[arg(long)]
    pub api: String,
    /// Bearer token
    #[arg(long)]
    pub token: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Closed-loop durable member writes: acknowledged writes/s and their latency.
    Writes(writes::WritesArgs),
    /// Open-loop member weight changes at a fixed rate (the `churn` scenario).
    Churn(churn::ChurnArgs),
    /// Closed-loop UDP request/response: answered datagrams/s, round trips and losses.
    Udp(udp::UdpArgs),
    /// QUIC members answering every stream with their name, until SIGTERM.
    QuicMembers(quic::MembersArgs),
    /// Closed-loop QUIC connections (handshake, one stream, close): connections/s.
    Quic(quic::QuicArgs),
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with the causes, without a backtrace even when RUST_BACKTRACE is set.
            eprintln!("fulcrum-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    }
    .context("starting the runtime")?;
    let out = rt.block_on(async {
        match cli.cmd {
            Cmd::Writes(a) => writes::run(a).await,
            Cmd::Churn(a) => churn::run(a).await,
            Cmd::Udp(a) => udp::run(a).await,
            Cmd::QuicMembers(a) => quic::members(a).await,
            Cmd::Quic(a) => quic::run(a).await,
        }
    })?;
    println!("{}", out.json);
    match out.failure {
        None => Ok(()),
        Some(why) => Err(anyhow::anyhow!(why)),
    }
}

/// Checks a closed-loop run's `--duration` (positive) and `--warmup` (not negative) seconds.
pub fn check_window(duration: f64, warmup: f64) -> anyhow::Result<()> {
    anyhow::ensure!(
        duration.is_finite() && duration > 0.0,
        "--duration must be positive"
    );
    anyhow::ensure!(
        warmup.is_finite() && warmup >= 0.0,
        "--warmup must not be negative"
    );
    Ok(())
}

/// What a subcommand hands back: its JSON report (always printed), and why the run counts as
/// failed, if it does (then the exit status is non-zero).
pub struct Outcome {
    pub json: String,
    pub failure: Option<String>,
}
