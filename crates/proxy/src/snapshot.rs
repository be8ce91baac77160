//! The immutable configuration the proxy serves from, compiled from the control plane's
//! view. Readers take it with one `ArcSwap::load`; nothing in it changes after compile.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use fulcrum_balance::{Candidate, Selector, hash_bytes};
use fulcrum_control::{Config, Refusal};
use fulcrum_model::{
    Algorithm, HealthMonitorSpec, ListenerId, ListenerProtocol, ListenerTimeouts, MemberId, PoolId,
    PoolProtocol,
};
use fulcrum_model::{EffectivePersistence, ResourceKind, ResourceRef};

use crate::settings::{Target, UpstreamRt};
use crate::state::{MemberState, Registry};

/// Weight multiplier in pools with slow start (see `PoolRt::compile`).
const SLOW_START_SCALE: u32 = 100;

pub struct Snapshot {
    pub revision: i64,
    /// Counts compiles (several may share a revision, when binds are retried): a connection
    /// keeps its listener until this moves, instead of looking it up per request.
    pub generation: u64,
    pub listeners: HashMap<ListenerId, Arc<ListenerRt>>,
    pub pools: HashMap<PoolId, Arc<PoolRt>>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Snapshot {
            revision: 0,
            generation: 0,
            listeners: HashMap::new(),
            pools: HashMap::new(),
        }
    }
}

/// How a listener binds: a change here means a new socket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BindKey {
    pub addr: SocketAddr,
    pub udp: bool,
}

pub struct ListenerRt {
    pub id: ListenerId,
    /// Its name and load balancer, for the metrics' info series.
    pub name: String,
    pub loadbalancer: fulcrum_model::LoadBalancerId,
    /// The newest mod revision of the listener key and of the certificates it names: its
    /// TLS config is rebuilt only when it moves (so a certificate update re-keys it).
    pub revision: i64,
    /// For TERMINATED_HTTPS: the server config, or why it could not be built.
    pub tls: Option<Result<Arc<rustls::ServerConfig>, String>>,
    pub bind: BindKey,
    pub protocol: ListenerProtocol,
    pub enabled: bool,
    pub default_pool: Option<Arc<PoolRt>>,
    pub routes: Vec<RouteRt>,
    /// The host names (or `*.` / `.*` patterns) it serves; `None`: every host.
    pub hosts: Option<Vec<String>>,
    pub timeouts: ListenerTimeouts,
    pub connection_limit: Option<u32>,
    pub stats: Arc<crate::stats::Stats>,
    pub counters: Arc<crate::stats::ListenerCounters>,
    /// Requests carry an `X-Request-Id` to the member and back.
    pub request_id: bool,
    /// Log one request in this many to the access log (0: not logged, or the node keeps
    /// no access log).
    pub log_one_in: u32,
}

pub struct RouteRt {
    /// How requests are matched (`L7Route::matches`, allocation-free).
    pub rule: fulcrum_model::L7Route,
    pub pool: Arc<PoolRt>,
}

/// Where a request goes: the pool, and how many leading bytes of its path the member
/// does not get (a stripped route prefix).
pub struct Routed<'a> {
    pub pool: &'a Arc<PoolRt>,
    pub strip: usize,
}

/// Why a request has no pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unrouted {
    /// The listener serves named hosts only, and not this one: 404.
    UnknownHost,
    /// No route matches and there is no default pool: 503.
    NoPool,
}

impl Unrouted {
    /// The status and text the client gets.
    pub fn answer(self) -> (u16, &'static str) {
        match self {
            Unrouted::UnknownHost => (404, "this listener does not serve this host"),
            Unrouted::NoPool => (503, "no pool serves this request"),
        }
    }
}

impl ListenerRt {
    /// The pool for a request: the first route whose host and path match, else the default;
    /// nothing for a host the listener does not serve. Allocation-free.
    pub fn route(&self, host: Option<&str>, path: &[u8]) -> Result<Routed<'_>, Unrouted> {
        let host = host.map(|h| h.split(':').next().unwrap_or(h));
        if let Some(hosts) = &self.hosts
            && !hosts
                .iter()
                .any(|want| fulcrum_model::host_matches(want, host))
        {
            return Err(Unrouted::UnknownHost);
        }
        match self.routes.iter().find(|r| r.rule.matches(host, path)) {
            Some(r) => Ok(Routed {
                pool: &r.pool,
                strip: r.rule.stripped_len(),
            }),
            None => self
                .default_pool
                .as_ref()
                .map(|pool| Routed { pool, strip: 0 })
                .ok_or(Unrouted::NoPool),
        }
    }
}

pub struct MemberRt {
    pub id: MemberId,
    pub name: String,
    pub upstream: Arc<UpstreamRt>,
    pub target: Target,
    /// `host:port` for the Host header and logs.
    pub authority: String,
    /// The `Host` sent instead of the client's (`host_header: member`).
    pub host_override: Option<String>,
    pub weight: u32,
    /// May take new, unbound requests (admin state, drain, offline, weight).
    pub accepts_new: bool,
    /// May take requests bound to it by persistence (a drained member still does).
    pub accepts_bound: bool,
    /// The opaque value of the persistence cookie that names this member.
    pub cookie: String,
    pub max_connections: Option<u32>,
    pub state: Arc<MemberState>,
}

/// Members of one priority: balanced among themselves; the next tier takes over only
/// when no member of this one is available.
pub struct Tier {
    pub selector: Selector,
    /// Pool member index of each selector index.
    pub members: Vec<usize>,
}

pub struct PoolRt {
    pub id: PoolId,
    pub name: String,
    pub loadbalancer: fulcrum_model::LoadBalancerId,
    /// The pool key's mod revision when compiled: any change to the pool, its members or
    /// its monitor moves it, so an unchanged pool is reused as is.
    pub revision: i64,
    pub protocol: PoolProtocol,
    pub algorithm: Algorithm,
    /// The pool's own upstream settings (members without their own share this one).
    pub upstream: Arc<UpstreamRt>,
    /// What of this pool cannot be served (TLS settings that do not load: the pool's, or a
    /// member's own), found once per compile of the pool.
    pub refused: Vec<Refusal>,
    pub members: Vec<MemberRt>,
    pub tiers: Vec<Tier>,
    pub monitor: Option<HealthMonitorSpec>,
    pub persistence: EffectivePersistence,
    /// The slow-start window, for HTTP pools that enable it.
    pub slow_start: Option<std::time::Duration>,
    /// Outlier detection, when on.
    pub outlier: Option<crate::outlier::Policy>,
    pub member_timeouts: fulcrum_model::MemberTimeouts,
    pub sticky: Arc<crate::sticky::StickyTable>,
    /// Responses of its members, counted per pool.
    pub stats: Arc<crate::stats::Stats>,
    pub counters: Arc<crate::stats::PoolCounters>,
    /// Member index by id and by persistence cookie, for bound requests.
    pub by_id: HashMap<MemberId, usize>,
    pub by_cookie: HashMap<String, usize>,
    /// QUIC pools with `quic_lb`: where connection IDs carry a server ID, and the member
    /// index of each member's server ID (members without one are not in it).
    pub quic_lb: Option<fulcrum_balance::quic::PlaintextConfig>,
    pub by_server_id: HashMap<Vec<u8>, usize>,
}

impl PoolRt {
    /// A member that may serve a request bound to it: not offline, not ejected. Drained
    /// members still serve their bound clients.
    pub fn bound(&self, idx: usize) -> Option<usize> {
        let m = self.members.get(idx)?;
        (m.accepts_bound && m.state.is_available() && m.state.breaker_allows()).then_some(idx)
    }
}

impl PoolRt {
    /// `previous` is this pool as last compiled; `starting` is true for the first snapshot
    /// of the process (no slow start then).
    fn compile(
        cfg: &Config,
        id: &PoolId,
        revision: i64,
        registry: &Registry,
        previous: Option<&PoolRt>,
        starting: bool,
    ) -> Option<PoolRt> {
        let pool = &cfg.pools.get(id)?.value;
        // Settings that did not change keep their compiled form: the same `Arc`, so idle
        // connections match it by pointer, and TLS client configs are not built again.
        let pool_upstream = match previous {
            Some(p) if p.upstream.source == pool.spec.upstream => p.upstream.clone(),
            _ => Arc::new(UpstreamRt::compile(&pool.spec.upstream)),
        };
        // A member alone in its pool takes everything anyway: no ramp for it.
        let others_serve = cfg
            .members_of(id)
            .filter(|m| m.value.spec.accepts_new_requests())
            .count()
            > 1;
        let mut members: Vec<MemberRt> = cfg
            .members_of(id)
            .map(|m| {
                let spec = &m.value.spec;
                let target = match spec.address.parse::<IpAddr>() {
                    Ok(ip) => Target::Addr(SocketAddr::new(ip, spec.port)),
                    Err(_) => Target::Host(spec.address.clone(), spec.port),
                };
                let upstream = match &spec.upstream {
                    Some(own) => previous
                        .and_then(|p| p.by_id.get(&m.value.id).map(|&i| &p.members[i].upstream))
                        .filter(|old| old.source == **own)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(UpstreamRt::compile(own))),
                    None => pool_upstream.clone(),
                };
                let host_override = (upstream.source.host_header
                    == fulcrum_model::HostHeader::Member)
                    .then(|| spec.host_for(upstream.source.scheme));
                MemberRt {
                    id: m.value.id.clone(),
                    name: spec.name.clone(),
                    upstream,
                    target,
                    authority: spec.endpoint(),
                    host_override,
                    weight: spec.weight,
                    accepts_new: spec.accepts_new_requests(),
                    accepts_bound: spec.accepts_bound_requests(),
                    cookie: format!(
                        "{:016x}",
                        fulcrum_balance::mix64(hash_bytes(m.value.id.as_str().as_bytes()))
                    ),
                    max_connections: spec
                        .max_connections
                        .or(pool.spec.max_connections_per_member),
                    state: {
                        let (state, new) = registry.member_new(&m.value.id);
                        // Slow start: a member that joins, or comes back from drain or
                        // offline, ramps up (never on process start).
                        let was_out = previous
                            .and_then(|p| p.by_id.get(&m.value.id).map(|&i| &p.members[i]))
                            .is_some_and(|old| !old.accepts_new);
                        if others_serve
                            && ((new && !starting) || (was_out && spec.accepts_new_requests()))
                        {
                            state.start_warming();
                        }
                        state
                    },
                }
            })
            .collect();
        // A stable order keeps round-robin positions and hashing independent of map order.
        members.sort_by(|a, b| a.id.cmp(&b.id));

        let algorithm = match pool.spec.algorithm {
            Algorithm::RoundRobin => fulcrum_balance::Algorithm::RoundRobin,
            Algorithm::LeastConnections => fulcrum_balance::Algorithm::LeastConnections,
            Algorithm::SourceIp | Algorithm::QuicCid => fulcrum_balance::Algorithm::ConsistentHash,
        };
        // Slow start lowers weights by fractions: scale them so a weight of 1 can still be
        // a tenth of itself. Shares are unchanged.
        let weight_scale = if pool.spec.slow_start_secs().is_some() {
            SLOW_START_SCALE
        } else {
            1
        };
        // Tiers: by priority (lower first), backup members after all others.
        let mut keys: Vec<(bool, u8)> = cfg
            .members_of(id)
            .map(|m| (m.value.spec.backup, m.value.spec.priority))
            .collect();
        keys.sort();
        keys.dedup();
        let spec_of = |mid: &MemberId| cfg.member(id, mid).map(|m| &m.value.spec);
        let tiers = keys
            .into_iter()
            .map(|key| {
                let idx: Vec<usize> = members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| spec_of(&m.id).is_some_and(|s| (s.backup, s.priority) == key))
                    .map(|(i, _)| i)
                    .collect();
                let candidates: Vec<Candidate> = idx
                    .iter()
                    .map(|&i| {
                        Candidate::new(
                            members[i].weight.saturating_mul(weight_scale),
                            hash_bytes(members[i].id.as_str().as_bytes()),
                        )
                    })
                    .collect();
                Tier {
                    selector: Selector::build(algorithm, &candidates),
                    members: idx,
                }
            })
            .collect();
        let by_id = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let by_cookie = members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.cookie.clone(), i))
            .collect();
        let quic_lb = pool
            .spec
            .quic_lb
            .filter(|_| pool.spec.protocol == PoolProtocol::Quic)
            .map(|q| fulcrum_balance::quic::PlaintextConfig {
                config_id: q.config_id,
                server_id_len: usize::from(q.server_id_len),
                nonce_len: usize::from(q.nonce_len),
            });
        // Server IDs of another length than the pool's (validation keeps them out) would
        // never match: left out.
        let by_server_id = members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let sid = cfg.member(id, &m.id)?.value.spec.server_id_bytes()?;
                (Some(sid.len()) == quic_lb.map(|q| q.server_id_len)).then_some((sid, i))
            })
            .collect();
        let refused = refusals(id, &pool_upstream, &members);
        Some(PoolRt {
            quic_lb,
            by_server_id,
            name: pool.spec.name.clone(),
            loadbalancer: pool.loadbalancer_id.clone(),
            refused,
            persistence: pool.spec.effective_persistence(),
            slow_start: pool
                .spec
                .slow_start_secs()
                .map(|s| std::time::Duration::from_secs(u64::from(s))),
            outlier: crate::outlier::Policy::of(&pool.spec.outlier_detection),
            member_timeouts: pool.spec.member_timeouts,
            sticky: registry.sticky(id),
            stats: registry.pool_stats.get(id.as_str()),
            counters: registry.pool_counters.get(id.as_str()),
            by_id,
            by_cookie,
            id: id.clone(),
            revision,
            protocol: pool.spec.protocol,
            algorithm: pool.spec.algorithm,
            upstream: pool_upstream,
            members,
            tiers,
            monitor: cfg
                .monitor_of(id)
                .map(|m| m.value.spec.clone())
                .filter(|m| m.admin_state_up),
        })
    }
}

/// Compiles the snapshot for the view, reusing every pool of `previous` that did not change.
/// `bind_address`, when set, replaces every load balancer's VIP for this node.
pub fn compile(
    cfg: &Config,
    previous: &Snapshot,
    registry: &Registry,
    bind_address: Option<std::net::IpAddr>,
    access_log: bool,
) -> Snapshot {
    let mut pools = HashMap::with_capacity(cfg.pools.len());
    for (id, v) in &cfg.pools {
        let reused = previous
            .pools
            .get(id)
            .filter(|p| p.revision == v.mod_revision)
            .cloned();
        let pool = match reused {
            Some(p) => p,
            None => match PoolRt::compile(
                cfg,
                id,
                v.mod_revision,
                registry,
                previous.pools.get(id).map(|p| p.as_ref()),
                previous.revision == 0,
            ) {
                Some(p) => Arc::new(p),
                None => continue,
            },
        };
        pools.insert(id.clone(), pool);
    }
    let mut listeners = HashMap::with_capacity(cfg.listeners.len());
    for (id, v) in &cfg.listeners {
        let l = &v.value;
        let Some(lb) = cfg.loadbalancers.get(&l.loadbalancer_id) else {
            continue;
        };
        let pool = |pid: &PoolId| pools.get(pid).cloned();
        let revision = l
            .spec
            .tls
            .iter()
            .flat_map(|t| t.certificate_refs())
            .filter_map(|(_, c)| cfg.certificates.get(c))
            .map(|c| c.mod_revision)
            .fold(v.mod_revision, i64::max);
        let tls = match (&l.spec.tls, l.spec.protocol) {
            (Some(tls), ListenerProtocol::TerminatedHttps) => {
                let before = previous.listeners.get(id);
                let before_config = before.and_then(|p| p.tls.as_ref()?.as_ref().ok());
                Some(
                    before
                        .filter(|p| p.revision == revision)
                        .and_then(|p| p.tls.clone())
                        .unwrap_or_else(|| {
                            let certs = |c: &fulcrum_model::CertificateId| {
                                cfg.certificates.get(c).map(|c| &c.value)
                            };
                            tls.resolved(certs).and_then(|tls| {
                                crate::tls::server_config(&tls, before_config.map(|c| c.as_ref()))
                            })
                        }),
                )
            }
            (None, ListenerProtocol::TerminatedHttps) => {
                Some(Err("TERMINATED_HTTPS needs a certificate".into()))
            }
            _ => None,
        };
        listeners.insert(
            id.clone(),
            Arc::new(ListenerRt {
                id: id.clone(),
                revision,
                tls,
                bind: BindKey {
                    addr: SocketAddr::new(
                        bind_address.unwrap_or(lb.value.spec.vip_address),
                        l.spec.port,
                    ),
                    udp: l.spec.protocol.is_udp(),
                },
                name: l.spec.name.clone(),
                loadbalancer: l.loadbalancer_id.clone(),
                protocol: l.spec.protocol,
                enabled: l.spec.admin_state_up && lb.value.spec.admin_state_up,
                default_pool: l.spec.default_pool_id.as_ref().and_then(pool),
                routes: l
                    .spec
                    .routes
                    .iter()
                    .chain(
                        l.spec
                            .route_set
                            .as_deref()
                            .and_then(|name| lb.value.spec.route_set(name))
                            .into_iter()
                            .flat_map(|set| set.routes.iter()),
                    )
                    .filter_map(|r| {
                        Some(RouteRt {
                            rule: r.clone(),
                            pool: pool(&r.pool_id)?,
                        })
                    })
                    .collect(),
                hosts: (!l.spec.hostnames.is_empty()).then(|| {
                    l.spec
                        .hostnames
                        .iter()
                        .filter_map(|name| lb.value.spec.hostname(name))
                        .map(|h| h.hostname.clone())
                        .collect()
                }),
                timeouts: l.spec.timeouts,
                connection_limit: l.spec.connection_limit,
                stats: registry.listener_stats.get(id.as_str()),
                counters: registry.listener_counters.get(id.as_str()),
                request_id: l.spec.request_id,
                log_one_in: if access_log && l.spec.access_log.enabled {
                    l.spec.access_log.sample_one_in
                } else {
                    0
                },
            }),
        );
    }
    static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Snapshot {
        revision: cfg.revision,
        generation: GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        listeners,
        pools,
    }
}

/// The pool's TLS settings if they do not load, and those of members with their own.
fn refusals(pool: &PoolId, upstream: &Arc<UpstreamRt>, members: &[MemberRt]) -> Vec<Refusal> {
    let refusal = |kind, id: &str, reason: &str| Refusal {
        resource: ResourceRef {
            kind,
            id: id.to_owned(),
        },
        reason: reason.to_owned(),
    };
    let mut out = Vec::new();
    if let Some(Err(reason)) = &upstream.tls {
        out.push(refusal(ResourceKind::Pool, pool.as_str(), reason));
    }
    for m in members {
        if let Some(Err(reason)) = &m.upstream.tls
            && !Arc::ptr_eq(&m.upstream, upstream)
        {
            out.push(refusal(ResourceKind::Member, m.id.as_str(), reason));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use fulcrum_control::Versioned;
    use fulcrum_model::{Member, Pool};

    use super::*;

    fn versioned<T>(value: T, revision: i64) -> Versioned<T> {
        Versioned {
            value,
            create_revision: 1,
            mod_revision: revision,
            stored: None,
        }
    }

    /// A pool of two members, the second with upstream settings of its own, at `revision`.
    fn config(revision: i64, weight: u32, scheme: &str) -> Config {
        let pool: Pool = serde_json::from_value(serde_json::json!({
            "id": "p", "loadbalancer_id": "lb", "name": "p", "protocol": "HTTP",
            "algorithm": "ROUND_ROBIN", "upstream": {"scheme": scheme},
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        let member = |id: &str, extra: serde_json::Value| -> Member {
            let mut v = serde_json::json!({
                "id": id, "pool_id": "p", "address": "127.0.0.1", "port": 9000,
                "weight": weight,
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
            });
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value(v).unwrap()
        };
        let mut cfg = Config::default();
        let pid = PoolId::from("p".to_owned());
        cfg.pools.insert(pid.clone(), versioned(pool, revision));
        let members = cfg.members.entry(pid).or_default();
        for m in [
            member("m1", serde_json::json!({})),
            member(
                "m2",
                serde_json::json!({"port": 9001, "upstream": {"base_path": "/b"}}),
            ),
        ] {
            members.insert(m.id.clone(), versioned(m, revision));
        }
        cfg
    }

    /// Idle connections are matched to a member's settings by pointer first: a change that
    /// leaves the settings alone (a weight) keeps the compiled settings, one that changes
    /// them does not.
    #[test]
    fn unchanged_upstream_settings_keep_their_compiled_form() {
        let registry = Registry::new(1);
        let pid = PoolId::from("p".to_owned());
        let first = compile(
            &config(2, 1, "http"),
            &Snapshot::empty(),
            &registry,
            None,
            false,
        );
        let second = compile(&config(3, 2, "http"), &first, &registry, None, false);
        let (a, b) = (&first.pools[&pid], &second.pools[&pid]);
        assert_eq!(b.members[0].weight, 2, "the pool was compiled again");
        assert!(Arc::ptr_eq(&a.upstream, &b.upstream));
        assert!(Arc::ptr_eq(&a.members[0].upstream, &b.members[0].upstream));
        assert!(Arc::ptr_eq(&a.members[1].upstream, &b.members[1].upstream));
        assert!(!Arc::ptr_eq(&b.members[0].upstream, &b.members[1].upstream));

        let third = compile(&config(4, 2, "https"), &second, &registry, None, false);
        let c = &third.pools[&pid];
        assert!(!Arc::ptr_eq(&b.upstream, &c.upstream));
        assert!(Arc::ptr_eq(&c.upstream, &c.members[0].upstream));
    }
}
