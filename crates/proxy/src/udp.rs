//! UDP listeners. Datagrams from one client address and port are a flow: its first
//! datagram picks a member (the pool's algorithm, source-IP persistence, tiers, drain, as
//! for TCP connections, through `select::SourceAffinity`), and the flow gets a socket of its
//! own connected to that member. Client datagrams go out on it; a relay task reads what the
//! member sends back on it and sends that to the client through the listener's socket.
//!
//! Each worker has its own `SO_REUSEPORT` socket of the listener, and the kernel hashes a
//! client's 4-tuple to one socket of the group, so a flow lives on one worker: each worker
//! keeps its own `FlowTable`, and only the count of open flows (the listener's cap) is
//! shared. A flow ends when neither side sent anything for the listener's idle timeout, or
//! when the listener goes; it is then logged (one access-log record per flow) and its
//! member lease released.
//!
//! QUIC pools (`QUIC_CID`; a UDP or QUIC listener) route each datagram by its QUIC header
//! ([`quic_route`], the QUIC-LB draft's forwarding order): a connection ID that carries a
//! live member's server ID goes to that member, even from a client address never seen
//! before (connection migration, NAT rebinding: the new address gets a flow of its own to
//! the same member, which validates the new path itself); an Initial or 0-RTT packet goes by
//! the consistent hash of the DCID its client chose; anything else follows the client's
//! flow, else the pool's source-IP persistence and hash. A flow is keyed by client address
//! alone, so a client address talks to one member at a time: a datagram whose server ID
//! names another member than its flow's ends that flow and opens one to the named member.
//! Since a server ID needs no table, any worker routes it the same (no BPF steering).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fulcrum_balance::quic::{self, Header};
use fulcrum_model::{Algorithm, ListenerId, PoolProtocol};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::access_log::{Entry, Termination};
use crate::context::Shared;
use crate::select::{SourceAffinity, Tried, pick};
use crate::settings::Target;
use crate::snapshot::PoolRt;
use crate::state::Lease;
use crate::stats::{ListenerCounters, QuicPath, UdpDrop};

/// Flows a UDP listener keeps open at most when its `connection_limit` does not say: each
/// costs a socket (a file descriptor and an ephemeral port).
pub const DEFAULT_MAX_FLOWS: u32 = 16_384;

/// Room for any UDP datagram (65,507 bytes of IPv4 payload, 65,527 of IPv6), so none is
/// ever cut short on its way in.
const DATAGRAM_BUFFER: usize = 64 * 1024;

/// Linux's EMSGSIZE: a datagram larger than the path (or the socket) allows.
const EMSGSIZE: i32 = 90;

/// Idle flows are looked for this often at most, and at least every 5 s (a flow may
/// outlive its timeout by this much).
const SWEEP_MIN: Duration = Duration::from_millis(50);
const SWEEP_MAX: Duration = Duration::from_secs(5);

thread_local! {
    /// The relay tasks' buffer: every task of a worker reads into it and sends from it
    /// without awaiting in between, so one buffer per worker serves all its flows.
    static RELAY_BUFFER: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0; DATAGRAM_BUFFER]);
}

/// One worker's flows of one listener, by client address and port. Pure: times are
/// milliseconds on a clock of the caller's, and the count of the listener's open flows
/// (shared by the tables of all workers, the cap's count) is passed in.
pub(crate) struct FlowTable<V> {
    flows: HashMap<SocketAddr, Slot<V>>,
}

struct Slot<V> {
    value: V,
    /// The last client datagram.
    last_ms: u64,
}

/// Why a new flow was not admitted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The listener has `cap` flows open already.
    Full,
    /// The flow could not be made (no member, no socket).
    Failed,
}

impl<V> Default for FlowTable<V> {
    fn default() -> Self {
        FlowTable {
            flows: HashMap::new(),
        }
    }
}

impl<V> FlowTable<V> {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// The client's flow, marked active at `now_ms`.
    pub fn get(&mut self, client: &SocketAddr, now_ms: u64) -> Option<&mut V> {
        let slot = self.flows.get_mut(client)?;
        slot.last_ms = slot.last_ms.max(now_ms);
        Some(&mut slot.value)
    }

    /// A new flow for `client`, if the listener has fewer than `cap` open (counted in
    /// `open`, which this increments): `make` builds it, and a flow it cannot build takes
    /// no room.
    pub fn insert(
        &mut self,
        client: SocketAddr,
        now_ms: u64,
        open: &AtomicU64,
        cap: u64,
        make: impl FnOnce() -> Option<V>,
    ) -> Result<&mut V, Refused> {
        open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < cap).then_some(n + 1)
        })
        .map_err(|_| Refused::Full)?;
        let Some(value) = make() else {
            open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::Failed);
        };
        if let Some(old) = self.flows.insert(
            client,
            Slot {
                value,
                last_ms: now_ms,
            },
        ) {
            // Never happens (a caller inserts only what `get` did not find), but the count
            // must stay right.
            drop(old);
            open.fetch_sub(1, Ordering::Relaxed);
        }
        let slot = self.flows.get_mut(&client).expect("just inserted");
        Ok(&mut slot.value)
    }

    /// Removes the flows that saw nothing for `idle_ms` up to `now_ms` (neither a client
    /// datagram nor, by `replied_ms`, an answer of the member), into `out`.
    pub fn expire(
        &mut self,
        now_ms: u64,
        idle_ms: u64,
        replied_ms: impl Fn(&V) -> u64,
        open: &AtomicU64,
        out: &mut Vec<(SocketAddr, V)>,
    ) {
        let before = out.len();
        let quiet: Vec<SocketAddr> = self
            .flows
            .iter()
            .filter(|(_, s)| now_ms.saturating_sub(s.last_ms.max(replied_ms(&s.value))) >= idle_ms)
            .map(|(k, _)| *k)
            .collect();
        for k in quiet {
            if let Some(s) = self.flows.remove(&k) {
                out.push((k, s.value));
            }
        }
        open.fetch_sub((out.len() - before) as u64, Ordering::Relaxed);
    }

    /// Removes the client's flow.
    pub fn remove(&mut self, client: &SocketAddr, open: &AtomicU64) -> Option<V> {
        let slot = self.flows.remove(client)?;
        open.fetch_sub(1, Ordering::Relaxed);
        Some(slot.value)
    }

    /// Removes every flow (the listener is going), into `out`.
    pub fn drain(&mut self, open: &AtomicU64, out: &mut Vec<(SocketAddr, V)>) {
        let n = self.flows.len();
        out.extend(self.flows.drain().map(|(k, s)| (k, s.value)));
        open.fetch_sub(n as u64, Ordering::Relaxed);
    }
}

/// What a flow carried, written by the listener's loop (client → member) and the flow's
/// relay task (member → client), both on the flow's worker.
#[derive(Default)]
struct FlowIo {
    packets_in: AtomicU64,
    bytes_in: AtomicU64,
    packets_out: AtomicU64,
    bytes_out: AtomicU64,
    /// The member's last answer, in ms on the worker loop's clock.
    replied_ms: AtomicU64,
    /// An EMSGSIZE was logged for this flow (later ones are only counted).
    too_large_logged: AtomicBool,
}

struct Flow {
    pool: Arc<PoolRt>,
    idx: usize,
    affinity: SourceAffinity,
    _lease: Lease,
    upstream: Arc<UdpSocket>,
    relay: tokio::task::JoinHandle<()>,
    io: Arc<FlowIo>,
    started: Instant,
    logged: bool,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// Serves one worker's socket of a UDP listener until `stop`.
pub(crate) async fn serve(
    dp: Arc<Shared>,
    id: ListenerId,
    socket: std::net::UdpSocket,
    mut stop: watch::Receiver<bool>,
    counters: Arc<ListenerCounters>,
) {
    let socket = match UdpSocket::from_std(socket) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(listener = %id, error = %e, "cannot register the UDP socket");
            return;
        }
    };
    let epoch = Instant::now();
    let now_ms = || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut table: FlowTable<Flow> = FlowTable::default();
    let mut ended: Vec<(SocketAddr, Flow)> = Vec::new();
    let mut buf = vec![0u8; DATAGRAM_BUFFER];
    let mut idle = idle_timeout(&dp, &id);
    let sweep = tokio::time::sleep(sweep_interval(idle));
    tokio::pin!(sweep);
    loop {
        let (n, client) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors of earlier sends (the listener socket is not connected,
                    // so Linux reports none) and the like: nothing to do but go on.
                    tracing::debug!(listener = %id, error = %e, "UDP receive failed");
                    continue;
                }
            },
            _ = &mut sweep => {
                idle = idle_timeout(&dp, &id);
                let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
                table.expire(
                    now_ms(),
                    idle_ms,
                    |f| f.io.replied_ms.load(Ordering::Relaxed),
                    &counters.udp.flows_open,
                    &mut ended,
                );
                for (client, flow) in ended.drain(..) {
                    end(&dp, &id, client, flow, Termination::IdleTimeout);
                }
                sweep.as_mut().reset(tokio::time::Instant::now() + sweep_interval(idle));
                continue;
            }
            _ = stop.changed() => break,
        };
        let datagram = &buf[..n];
        counters.udp.datagrams_in.fetch_add(1, Ordering::Relaxed);
        counters.bytes(n as u64, 0);
        let now = now_ms();
        // A QUIC datagram whose server ID names another member than its flow's: that
        // flow ends, and one to the named member opens.
        if let Some(flow) = table.get(&client, now)
            && let QuicRoute::Member(idx) = quic_route(&flow.pool, datagram)
            && idx != flow.idx
            && let Some(old) = table.remove(&client, &counters.udp.flows_open)
        {
            end(&dp, &id, client, old, Termination::Done);
        }
        let flow = match table.get(&client, now) {
            Some(flow) => flow,
            None => {
                match open_flow(&dp, &id, &socket, client, datagram, &mut table, now, epoch).await {
                    Some(flow) => flow,
                    None => continue,
                }
            }
        };
        flow.io.packets_in.fetch_add(1, Ordering::Relaxed);
        flow.io.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        // Sent with a plain system call: tokio's `try_send` answers WouldBlock until the
        // reactor has seen the new socket writable, which would drop each flow's first datagram.
        if let Err(e) = socket2::SockRef::from(flow.upstream.as_ref()).send(datagram) {
            send_failed(&counters, flow, &e, n, "to the member");
        }
    }
    table.drain(&counters.udp.flows_open, &mut ended);
    for (client, flow) in ended.drain(..) {
        end(&dp, &id, client, flow, Termination::Done);
    }
    tracing::debug!(listener = %id, "UDP listener stopped");
}

/// The listener's idle timeout (a removed listener's flows end at the next sweep).
fn idle_timeout(dp: &Shared, id: &ListenerId) -> Duration {
    dp.snapshot
        .load()
        .listeners
        .get(id)
        .map_or(Duration::ZERO, |l| {
            Duration::from_millis(u64::from(l.timeouts.idle_ms))
        })
}

fn sweep_interval(idle: Duration) -> Duration {
    (idle / 8).clamp(SWEEP_MIN, SWEEP_MAX)
}

/// How a QUIC pool's datagram picks its member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QuicRoute {
    /// Its connection ID carries the server ID of this member, which may serve it (a
    /// drained member still serves its connections; an offline or failed one does not).
    Member(usize),
    /// An Initial or 0-RTT packet: the consistent hash of the DCID its client chose, so all
    /// of a connection's first packets land together.
    Hash(u64),
    /// Anything else (not QUIC, no valid server ID): the client's flow, else source-IP
    /// persistence and hash, as a UDP flow.
    Source,
}

/// The route of `datagram` in `pool` (always [`QuicRoute::Source`] but for a QUIC pool
/// balanced by `QUIC_CID`: a QUIC pool with another algorithm is balanced as a UDP pool).
/// Allocates nothing.
pub(crate) fn quic_route(pool: &PoolRt, datagram: &[u8]) -> QuicRoute {
    if pool.protocol != PoolProtocol::Quic || pool.algorithm != Algorithm::QuicCid {
        return QuicRoute::Source;
    }
    let short_dcid_len = pool.quic_lb.map_or(0, |q| q.cid_len());
    let Ok(header) = quic::parse(datagram, short_dcid_len) else {
        return QuicRoute::Source;
    };
    if let Some(cfg) = &pool.quic_lb
        && let Some(sid) = cfg.server_id(header.dcid())
        && let Some(&idx) = pool.by_server_id.get(sid)
        && pool.bound(idx).is_some()
    {
        return QuicRoute::Member(idx);
    }
    match header {
        Header::Long { kind, dcid, .. } if kind.client_chosen_dcid() => {
            QuicRoute::Hash(fulcrum_balance::hash_bytes(dcid))
        }
        _ => QuicRoute::Source,
    }
}

/// Picks a member for a new flow and connects its socket; None when the datagram is
/// dropped (counted: no pool or member, the cap, no socket).
#[allow(clippy::too_many_arguments)]
async fn open_flow<'t>(
    dp: &Arc<Shared>,
    id: &ListenerId,
    listener: &Arc<UdpSocket>,
    client: SocketAddr,
    datagram: &[u8],
    table: &'t mut FlowTable<Flow>,
    now: u64,
    epoch: Instant,
) -> Option<&'t mut Flow> {
    let (pool, cap, logged, counters) = {
        let snap = dp.snapshot.load();
        let l = snap.listeners.get(id)?;
        let cap = l.connection_limit.unwrap_or(DEFAULT_MAX_FLOWS);
        (
            l.default_pool
                .clone()
                .filter(|p| matches!(p.protocol, PoolProtocol::Udp | PoolProtocol::Quic)),
            u64::from(cap),
            dp.log_for(l).is_some(),
            l.counters.clone(),
        )
    };
    let Some(pool) = pool else {
        counters.udp.dropped(UdpDrop::NoMember);
        return None;
    };
    if counters.udp.flows_open.load(Ordering::Relaxed) >= cap {
        counters.udp.dropped(UdpDrop::FlowCap);
        return None;
    }
    let mut affinity = SourceAffinity::of(&pool, client.ip());
    let client_hash = fulcrum_balance::hash_ip(client.ip());
    let route = quic_route(&pool, datagram);
    if pool.algorithm == Algorithm::QuicCid {
        counters.udp.quic(match route {
            QuicRoute::Member(_) => QuicPath::ServerId,
            QuicRoute::Hash(_) => QuicPath::DcidHash,
            QuicRoute::Source => QuicPath::Source,
        });
    }
    let mut tried = Tried::default();
    // A member whose name does not resolve, or whose socket cannot be made, is passed over
    // for the next one (as a failed TCP connect is).
    let (idx, upstream) = loop {
        let next = match route {
            QuicRoute::Member(idx) => (!tried.contains(idx)).then_some(idx),
            QuicRoute::Hash(h) => pick(&pool, h, &tried),
            QuicRoute::Source => affinity.next(&pool, client_hash, &tried),
        };
        let Some(idx) = next else {
            counters.udp.dropped(UdpDrop::NoMember);
            return None;
        };
        tried.add(idx);
        match connect(&pool.members[idx].target).await {
            Ok(s) => break (idx, Arc::new(s)),
            Err(e) => {
                tracing::debug!(member = %pool.members[idx].authority, error = %e, "cannot open a UDP flow socket");
                crate::exchange::failed(&pool, idx, crate::stats::ErrorKind::Connect);
            }
        }
    };
    let made = table.insert(client, now, &counters.udp.flows_open, cap, || {
        let io = Arc::new(FlowIo::default());
        let relay = tokio::spawn(relay(
            upstream.clone(),
            listener.clone(),
            client,
            io.clone(),
            epoch,
            counters.clone(),
            pool.clone(),
            idx,
        ));
        affinity.bind(&pool, idx);
        Some(Flow {
            _lease: Lease::new(&pool.members[idx].state),
            pool: pool.clone(),
            idx,
            affinity,
            upstream,
            relay,
            io,
            started: Instant::now(),
            logged,
        })
    });
    match made {
        Ok(flow) => {
            counters.udp.flows.fetch_add(1, Ordering::Relaxed);
            counters.connections.fetch_add(1, Ordering::Relaxed);
            Some(flow)
        }
        Err(_) => {
            counters.udp.dropped(UdpDrop::FlowCap);
            None
        }
    }
}

/// A socket of the member's address family on an ephemeral port, connected to the member:
/// only its datagrams reach it, and the kernel reports its port unreachable.
async fn connect(target: &Target) -> std::io::Result<UdpSocket> {
    let addr = match target {
        Target::Addr(a) => *a,
        Target::Host(h, p) => tokio::net::lookup_host((h.as_str(), *p))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{h} resolves to no address")))?,
    };
    let local: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Counts (and for an oversize datagram, logs once per flow) a datagram that did not go.
fn send_failed(counters: &ListenerCounters, flow: &Flow, e: &std::io::Error, len: usize, to: &str) {
    match e.raw_os_error() {
        Some(EMSGSIZE) => {
            counters.udp.dropped(UdpDrop::TooLarge);
            if !flow.io.too_large_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(member = %flow.pool.members[flow.idx].authority, bytes = len, "UDP datagram larger than the path {to} allows: dropped (EMSGSIZE; later ones of this flow are only counted)");
            }
        }
        _ => {
            counters.udp.dropped(UdpDrop::SendFailed);
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                // The member's port was unreachable (ICMP): a passive health signal.
                crate::exchange::failed(&flow.pool, flow.idx, crate::stats::ErrorKind::Connect);
            }
        }
    }
}

/// Relays what the member sends on the flow's socket to the client, until aborted (the
/// flow ended). Errors never end it: an ICMP port unreachable (ECONNREFUSED) is counted
/// against the member, and the flow lives on until idle.
#[allow(clippy::too_many_arguments)]
async fn relay(
    upstream: Arc<UdpSocket>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    io: Arc<FlowIo>,
    epoch: Instant,
    counters: Arc<ListenerCounters>,
    pool: Arc<PoolRt>,
    idx: usize,
) {
    loop {
        if upstream.readable().await.is_err() {
            return;
        }
        // Read and sent without awaiting, so the worker's one buffer serves every flow.
        let pending = RELAY_BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            let n = match upstream.try_recv(&mut b) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::ConnectionRefused {
                        crate::exchange::failed(&pool, idx, crate::stats::ErrorKind::Connect);
                    }
                    counters.udp.dropped(UdpDrop::SendFailed);
                    return None;
                }
            };
            io.replied_ms.store(
                u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            if io.packets_out.fetch_add(1, Ordering::Relaxed) == 0 {
                // The member answers on this flow: its streak of failures (ICMP port
                // unreachable) ends, as a TCP connect that succeeds ends it.
                crate::exchange::connected(&pool.members[idx]);
            }
            io.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
            counters.udp.datagrams_out.fetch_add(1, Ordering::Relaxed);
            counters.bytes(0, n as u64);
            match socket2::SockRef::from(listener.as_ref()).send_to(&b[..n], &client.into()) {
                Ok(_) => None,
                // The listener's send buffer is full: this one waits for room (a copy).
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(b[..n].to_vec()),
                Err(e) => {
                    if e.raw_os_error() == Some(EMSGSIZE) {
                        counters.udp.dropped(UdpDrop::TooLarge);
                        tracing::warn!(%client, bytes = n, "UDP datagram larger than the path to the client allows: dropped (EMSGSIZE)");
                    } else {
                        counters.udp.dropped(UdpDrop::SendFailed);
                    }
                    None
                }
            }
        });
        if let Some(datagram) = pending
            && listener.send_to(&datagram, client).await.is_err()
        {
            counters.udp.dropped(UdpDrop::SendFailed);
        }
    }
}

/// Logs a flow that ended and lets go of it (its socket, relay task and member lease).
fn end(dp: &Shared, id: &ListenerId, client: SocketAddr, flow: Flow, how: Termination) {
    // Persistence counts from the flow's last activity, not its first datagram.
    flow.affinity.bind(&flow.pool, flow.idx);
    if flow.logged
        && let Some(sink) = &dp.access_log
    {
        let mut entry = Entry::default();
        entry.begin("UDP", flow.started, None);
        entry.served_by(&flow.pool, flow.idx);
        entry.attempts = 1;
        entry.sticky = flow.affinity.bound_to == Some(flow.idx);
        entry.bytes_in = flow.io.bytes_in.load(Ordering::Relaxed);
        entry.bytes_out = flow.io.bytes_out.load(Ordering::Relaxed);
        entry.packets = Some((
            flow.io.packets_in.load(Ordering::Relaxed),
            flow.io.packets_out.load(Ordering::Relaxed),
        ));
        entry.termination = how;
        sink.emit(&entry, id.as_str(), client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_cap_is_shared_and_refuses_new_flows() {
        let open = AtomicU64::new(0);
        let (mut a, mut b) = (FlowTable::default(), FlowTable::default());
        assert!(a.insert(addr(1), 0, &open, 2, || Some("a1")).is_ok());
        assert!(b.insert(addr(2), 0, &open, 2, || Some("b2")).is_ok());
        // Both workers' tables count against one cap.
        assert_eq!(
            a.insert(addr(3), 0, &open, 2, || Some("a3")),
            Err(Refused::Full)
        );
        assert_eq!(
            b.insert(addr(4), 0, &open, 2, || Some("b4")),
            Err(Refused::Full)
        );
        assert_eq!(open.load(Ordering::Relaxed), 2);
        // An existing flow is still found at the cap.
        assert_eq!(a.get(&addr(1), 5).copied(), Some("a1"));
        // A flow that cannot be made takes no room.
        let mut ended = Vec::new();
        b.drain(&open, &mut ended);
        assert_eq!(ended, vec![(addr(2), "b2")]);
        assert_eq!(
            b.insert(addr(5), 0, &open, 2, || None),
            Err(Refused::Failed)
        );
        assert_eq!(open.load(Ordering::Relaxed), 1);
        assert!(b.insert(addr(5), 0, &open, 2, || Some("b5")).is_ok());
        assert_eq!(open.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn flows_expire_after_idling_either_way() {
        let open = AtomicU64::new(0);
        let mut t = FlowTable::default();
        // (name, the member's last answer in ms)
        t.insert(addr(1), 0, &open, 10, || Some(("quiet", 0)))
            .unwrap();
        t.insert(addr(2), 0, &open, 10, || Some(("client_active", 0)))
            .unwrap();
        t.insert(addr(3), 0, &open, 10, || Some(("member_active", 900)))
            .unwrap();
        assert!(t.get(&addr(2), 800).is_some());
        let mut out = Vec::new();
        t.expire(999, 1000, |v| v.1, &open, &mut out);
        assert!(out.is_empty(), "nothing idle for 1 s yet");
        t.expire(1000, 1000, |v| v.1, &open, &mut out);
        assert_eq!(out, vec![(addr(1), ("quiet", 0))]);
        assert_eq!(open.load(Ordering::Relaxed), 2);
        out.clear();
        t.expire(1850, 1000, |v| v.1, &open, &mut out);
        assert_eq!(out, vec![(addr(2), ("client_active", 0))]);
        out.clear();
        t.expire(1900, 1000, |v| v.1, &open, &mut out);
        assert_eq!(out, vec![(addr(3), ("member_active", 900))]);
        assert_eq!((t.len(), open.load(Ordering::Relaxed)), (0, 0));
        // A client that comes back after its flow expired gets a new one.
        assert!(t.get(&addr(1), 2000).is_none());
    }

    #[test]
    fn sweeps_follow_the_idle_timeout_within_bounds() {
        assert_eq!(sweep_interval(Duration::from_secs(60)), SWEEP_MAX);
        assert_eq!(
            sweep_interval(Duration::from_secs(1)),
            Duration::from_millis(125)
        );
        assert_eq!(sweep_interval(Duration::from_millis(1)), SWEEP_MIN);
    }
}
