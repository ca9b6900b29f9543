//! Fixed-size retransmission cache of one published stream (one simulcast layer).
//!
//! A ring of `capacity` slots indexed by extended sequence number modulo capacity, each
//! holding a copy of the packet as received (before any per-subscriber rewriting). All
//! memory is allocated when the track is added; storing and looking up never allocate. A
//! slot remembers the extended number it holds, so a lookup for a number that has been
//! overwritten by a newer one (or never arrived) misses instead of returning the wrong
//! packet.

use crate::ids::SeqNo;

/// Largest packet kept; longer packets are not cached (they are rare: the forwarder's
/// datagram limit is larger than any sane RTP MTU).
pub const SLOT_SIZE: usize = 1500;

#[derive(Debug)]
pub struct RetransmitCache {
    data: Vec<u8>,
    /// Extended sequence number held by each slot, and its length (0: empty).
    meta: Vec<(u64, u16)>,
}

impl RetransmitCache {
    /// `capacity` is rounded up to a power of two (at least 1).
    pub fn new(capacity: usize) -> Self {
        let cap = capacity.max(1).next_power_of_two();
        Self {
            data: vec![0; cap * SLOT_SIZE],
            meta: vec![(u64::MAX, 0); cap],
        }
    }

    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// Copies `packet` into the slot of `seq`. Returns false if it is too large to keep.
    pub fn store(&mut self, seq: SeqNo, packet: &[u8]) -> bool {
        if packet.len() > SLOT_SIZE || packet.is_empty() {
            return false;
        }
        let i = (seq.0 as usize) & (self.meta.len() - 1);
        let at = i * SLOT_SIZE;
        if let Some(slot) = self.data.get_mut(at..at + packet.len()) {
            slot.copy_from_slice(packet);
            self.meta[i] = (seq.0, packet.len() as u16);
            true
        } else {
            false
        }
    }

    /// The packet stored for `seq`, if it is still there.
    pub fn get(&self, seq: SeqNo) -> Option<&[u8]> {
        let i = (seq.0 as usize) & (self.meta.len() - 1);
        let (held, len) = self.meta[i];
        if held != seq.0 || len == 0 {
            return None;
        }
        let at = i * SLOT_SIZE;
        self.data.get(at..at + usize::from(len))
    }

    /// Whether `seq` was already stored (a duplicate arrival).
    pub fn contains(&self, seq: SeqNo) -> bool {
        let i = (seq.0 as usize) & (self.meta.len() - 1);
        self.meta[i].0 == seq.0 && self.meta[i].1 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_evicts_by_sequence() {
        let mut c = RetransmitCache::new(4);
        for s in 0..6u64 {
            assert!(c.store(SeqNo(s), &[s as u8; 10]));
        }
        assert!(c.get(SeqNo(1)).is_none(), "overwritten by 5");
        assert_eq!(c.get(SeqNo(5)).unwrap(), &[5u8; 10]);
        assert_eq!(c.get(SeqNo(2)).unwrap(), &[2u8; 10]);
        assert!(c.get(SeqNo(9)).is_none(), "never stored");
        assert!(!c.store(SeqNo(7), &[0; SLOT_SIZE + 1]));
        assert!(c.contains(SeqNo(4)));
    }
}
