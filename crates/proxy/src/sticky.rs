//! Session persistence state: which member a client (by source address, or by the value
//! of an application cookie) is bound to. One table per pool, kept in the registry so
//! bindings survive config swaps; bounded in size, entries expire after idling.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fulcrum_model::MemberId;
use parking_lot::Mutex;

/// Most bindings one pool keeps; past it, expired entries go first, then the oldest.
const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StickyKey {
    Addr(std::net::IpAddr),
    Cookie(String),
}

struct Binding {
    member: MemberId,
    seen: Instant,
}

#[derive(Default)]
pub struct StickyTable {
    entries: Mutex<HashMap<StickyKey, Binding>>,
}

impl StickyTable {
    /// The member a key is bound to, if the binding has not idled past `ttl`; refreshes it.
    pub fn get(&self, key: &StickyKey, ttl: Duration) -> Option<MemberId> {
        let mut entries = self.entries.lock();
        let b = entries.get_mut(key)?;
        if b.seen.elapsed() > ttl {
            entries.remove(key);
            return None;
        }
        b.seen = Instant::now();
        Some(b.member.clone())
    }

    pub fn bind(&self, key: StickyKey, member: &MemberId, ttl: Duration) {
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.retain(|_, b| b.seen.elapsed() <= ttl);
            if entries.len() >= MAX_ENTRIES
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, b)| b.seen)
                    .map(|(k, _)| k.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            key,
            Binding {
                member: member.clone(),
                seen: Instant::now(),
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_refreshes_and_expires() {
        let t = StickyTable::default();
        let k = StickyKey::Cookie("v".into());
        let ttl = Duration::from_millis(50);
        assert_eq!(t.get(&k, ttl), None);
        t.bind(k.clone(), &MemberId::from("m1"), ttl);
        assert_eq!(t.get(&k, ttl), Some(MemberId::from("m1")));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(t.get(&k, ttl), None, "idle past the timeout");
        assert_eq!(t.len(), 0);
    }
}
