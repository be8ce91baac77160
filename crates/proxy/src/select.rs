//! Picking a member for one request: tier by tier (priority groups, backups last), each
//! balanced by the pool's algorithm over the members available right now.

use fulcrum_balance::View;

use crate::snapshot::{PoolRt, Tier};

/// Members this request already tried (at most a few), so a retry goes elsewhere.
#[derive(Default, Clone, Copy)]
pub struct Tried {
    idx: [usize; 4],
    len: usize,
}

impl Tried {
    pub fn add(&mut self, idx: usize) {
        if self.len < self.idx.len() {
            self.idx[self.len] = idx;
            self.len += 1;
        }
    }

    pub fn contains(&self, idx: usize) -> bool {
        self.idx[..self.len].contains(&idx)
    }
}

struct TierView<'a> {
    pool: &'a PoolRt,
    tier: &'a Tier,
    tried: &'a Tried,
}

impl View for TierView<'_> {
    fn eligible(&self, i: usize) -> bool {
        let idx = self.tier.members[i];
        let m = &self.pool.members[idx];
        m.accepts_new
            && m.state.is_available()
            && m.state.breaker_allows()
            && !self.tried.contains(idx)
            && m.max_connections
                .is_none_or(|max| m.state.in_flight() < u64::from(max))
    }

    fn effective_weight(&self, i: usize, configured: u32) -> u32 {
        // Slow start, except for a member alone in its group: it takes everything anyway.
        match self.pool.slow_start {
            Some(window) if self.tier.members.len() > 1 => {
                let f = self.pool.members[self.tier.members[i]]
                    .state
                    .warm_factor(window);
                ((f64::from(configured) * f).ceil() as u32).clamp(1, configured.max(1))
            }
            _ => configured,
        }
    }

    fn in_flight(&self, i: usize) -> u64 {
        self.pool.members[self.tier.members[i]].state.in_flight()
    }
}

/// The pool member index for a request, or None when no member is available.
pub fn pick(pool: &PoolRt, client_hash: u64, tried: &Tried) -> Option<usize> {
    pool.tiers.iter().find_map(|tier| {
        let view = TierView { pool, tier, tried };
        tier.selector
            .select(client_hash, &view)
            .map(|i| tier.members[i])
    })
}

/// Persistence by source address, as L4 pools have it (seed 002: TCP and UDP pools persist
/// by source IP whatever the configured type): the member the client is bound to comes
/// first, then the pool's algorithm. TCP connections and UDP flows both choose through it.
pub(crate) struct SourceAffinity {
    key: Option<(crate::sticky::StickyKey, std::time::Duration)>,
    bound: Option<usize>,
    /// The member the table named, if it could take the client.
    pub bound_to: Option<usize>,
}

impl SourceAffinity {
    /// Looks the client up in the pool's persistence table (when persistence is on).
    pub fn of(pool: &PoolRt, client: std::net::IpAddr) -> SourceAffinity {
        let key = match pool.persistence {
            fulcrum_model::EffectivePersistence::SourceIp { timeout_minutes } => Some((
                crate::sticky::StickyKey::Addr(client),
                std::time::Duration::from_secs(u64::from(timeout_minutes) * 60),
            )),
            _ => None,
        };
        let bound = key.as_ref().and_then(|(key, ttl)| {
            let id = pool.sticky.get(key, *ttl)?;
            pool.by_id.get(&id).and_then(|&i| pool.bound(i))
        });
        SourceAffinity {
            key,
            bound,
            bound_to: bound,
        }
    }

    /// The next member to try: the bound one first (once), then the pool's algorithm over
    /// the members not tried yet. The caller adds what it returns to `tried`.
    pub fn next(&mut self, pool: &PoolRt, client_hash: u64, tried: &Tried) -> Option<usize> {
        self.bound.take().or_else(|| pick(pool, client_hash, tried))
    }

    /// The client reached `idx`: bind it there (refreshing the binding's time).
    pub fn bind(&self, pool: &PoolRt, idx: usize) {
        if let Some((key, ttl)) = &self.key {
            pool.sticky.bind(key.clone(), &pool.members[idx].id, *ttl);
        }
    }
}
