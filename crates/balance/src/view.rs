//! What a selector is built from ([`Candidate`]) and what it asks per request ([`View`]).
//!
//! The view is a trait rather than a slice of flags so that the data plane can answer from its
//! live per-member state without copying it into a per-request buffer: `select()` must not
//! allocate, and most picks look at one or two members only.

/// One pool member as a selector sees it. Its position in the slice given to a constructor is
/// its index: every `select()` returns such an index, and every [`View`] method receives one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Configured weight. 0: never chosen by the weighted algorithms (round robin and least
    /// connections). Ignored by consistent hashing.
    pub weight: u32,
    /// Stable identity for consistent hashing, e.g. [`hash_bytes`](crate::hash_bytes) of the
    /// member id. It must not be derived from the index: keys keep clients on their member when
    /// other members are added or removed. Ignored by the weighted algorithms.
    pub key: u64,
}

impl Candidate {
    pub const fn new(weight: u32, key: u64) -> Self {
        Self { weight, key }
    }
}

/// The per-request state of a pool's members, by index.
///
/// Implementations should be cheap: the O(n) algorithms call them for every member. Answers may
/// change between calls (they usually read live atomics); selectors tolerate that.
///
/// Any `Fn(usize) -> bool` is a view that answers [`eligible`](View::eligible) and keeps the
/// defaults of the other methods.
pub trait View {
    /// May member `idx` be chosen for this request: healthy, not drained or offline, breaker not
    /// tripped, not already tried by this request.
    fn eligible(&self, idx: usize) -> bool;

    /// The weight to use now for an eligible member whose configured weight is `configured`,
    /// e.g. lowered during slow start. 0 excludes the member. Values above `configured` are
    /// clamped to it: a view can lower a weight, not raise it. Ignored by consistent hashing.
    fn effective_weight(&self, idx: usize, configured: u32) -> u32 {
        let _ = idx;
        configured
    }

    /// Requests (or connections) in flight to member `idx`. Used by least connections only.
    fn in_flight(&self, idx: usize) -> u64 {
        let _ = idx;
        0
    }
}

impl<F: Fn(usize) -> bool + ?Sized> View for F {
    fn eligible(&self, idx: usize) -> bool {
        self(idx)
    }
}

/// The weight a weighted algorithm uses for `idx` now: 0 when the member is not eligible or its
/// configured weight is 0, otherwise the effective weight clamped to the configured one.
#[inline]
pub(crate) fn weight_now<V: View + ?Sized>(view: &V, idx: usize, configured: u32) -> u32 {
    if configured == 0 || !view.eligible(idx) {
        return 0;
    }
    view.effective_weight(idx, configured).min(configured)
}
