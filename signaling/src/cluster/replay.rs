//! The signatures of node-to-node requests this node has accepted, remembered for as long
//! as they could be valid, so that a captured request replayed inside that window is
//! refused.
//!
//! Why: a signature only proves that a node made the request; its time bounds how long it
//! verifies (`MAX_SKEW_MS` either side of the receiver's clock), but within that window
//! the same bytes sent again would verify again. Every signed request carries a random
//! nonce, so a genuine request never repeats: seeing one twice means a replay.
//!
//! How: an entry is the first 16 bytes of the request's MAC (which covers the nonce, the
//! time, the sender, the receiver, the method and the path) and the time after which the
//! signature is stale anyway. Entries sit in a hash set (lookup) and a ring in arrival
//! order (expiry); both are sized once for [`CAPACITY`] entries, so remembering a request
//! allocates nothing. Expired entries are dropped from the front of the ring as requests
//! come. When every slot holds a signature that is still valid, a new request is refused
//! rather than an entry forgotten early (forgetting would let that one be replayed): at
//! the default size this takes over a thousand node-to-node requests a second, sustained.

use std::collections::{HashSet, VecDeque};

/// Signatures remembered at most.
pub const CAPACITY: usize = 1 << 16;

/// What [`Seen::admit`] decided.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Admit {
    /// First time seen: remembered.
    Fresh,
    /// Seen before, and still valid: a replay.
    Replayed,
    /// Every slot holds a still-valid signature; the request is refused.
    Full,
}

/// Signatures seen, each until it expires.
#[derive(Debug)]
pub struct Seen {
    keys: HashSet<u128>,
    order: VecDeque<(i64, u128)>,
    capacity: usize,
}

impl Default for Seen {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl Seen {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            keys: HashSet::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Remembers `key` until `expires_ms` (Unix ms) unless it was seen already; `now_ms`
    /// drops what expired.
    pub fn admit(&mut self, key: u128, expires_ms: i64, now_ms: i64) -> Admit {
        while let Some(&(exp, k)) = self.order.front() {
            if exp >= now_ms {
                break;
            }
            self.order.pop_front();
            self.keys.remove(&k);
        }
        if self.keys.contains(&key) {
            return Admit::Replayed;
        }
        if self.order.len() >= self.capacity {
            return Admit::Full;
        }
        self.keys.insert(key);
        self.order.push_back((expires_ms, key));
        Admit::Fresh
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_admitted_once_until_it_expires() {
        let mut s = Seen::with_capacity(4);
        assert_eq!(s.admit(1, 1_000, 0), Admit::Fresh);
        assert_eq!(s.admit(2, 1_000, 0), Admit::Fresh);
        assert_eq!(s.admit(1, 1_000, 500), Admit::Replayed);
        assert_eq!(s.admit(1, 1_000, 1_000), Admit::Replayed);
        // Expired: forgotten (the signature itself is stale by then and refused anyway).
        assert_eq!(s.admit(3, 5_000, 1_001), Admit::Fresh);
        assert_eq!(s.len(), 1);
        assert_eq!(s.admit(1, 5_000, 1_001), Admit::Fresh);
    }

    #[test]
    fn a_full_cache_refuses_rather_than_forgets() {
        let mut s = Seen::with_capacity(3);
        for k in 0..3 {
            assert_eq!(s.admit(k, 10_000, 0), Admit::Fresh);
        }
        assert_eq!(s.admit(9, 10_000, 1), Admit::Full);
        // The remembered ones are still refused as replays.
        for k in 0..3 {
            assert_eq!(s.admit(k, 10_000, 1), Admit::Replayed);
        }
        // Once they expire, room again; memory never grew past the capacity.
        assert_eq!(s.admit(9, 20_000, 10_001), Admit::Fresh);
        assert_eq!(s.len(), 1);
        assert!(s.keys.capacity() >= 3 && s.order.capacity() >= 3);
    }
}
