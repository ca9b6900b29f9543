//! The next-hop MAC table of a frame-level driver: which Ethernet address a datagram to
//! an IPv4 peer goes to.
//!
//! A socket driver never needs this (the kernel resolves neighbours with ARP); a driver
//! that puts raw frames on the wire must fill in the destination MAC itself. An SFU is in
//! a lucky position: every peer it sends to has sent to it first (ICE checks come before
//! any media), so the table *learns* `source IPv4 → source MAC` from received frames and
//! answers from that. A peer behind a router is learnt with the router's MAC, which is
//! exactly the next hop; refreshing on every frame follows a router failover. Entries the
//! driver looks up in the kernel's neighbour table (a peer not heard from yet) go in the
//! same way. A lookup that finds nothing is the caller's cue to send through the
//! kernel's socket instead, which also makes the kernel resolve the address.
//!
//! Fixed capacity, open addressing with a short probe, no allocation after construction:
//! learning runs on every received frame. When a probe window is full, the entry heard
//! from longest ago is replaced.

use std::net::Ipv4Addr;

use super::frame::Mac;

/// Slots probed from a key's home slot before one is evicted.
const PROBE: usize = 8;

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// The peer's address as an integer; 0 (0.0.0.0, never a peer) marks an empty slot.
    ip: u32,
    mac: Mac,
    /// When the entry was last learnt, in the caller's ticks.
    seen: u64,
}

/// What the table did with a learnt address (for counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learnt {
    /// Known with the same MAC: only refreshed.
    Same,
    /// New, or known with another MAC (a router failover).
    Updated,
    /// New, and it replaced an older entry.
    Evicted,
    /// Not learnt: 0.0.0.0, broadcast or multicast sources, or a multicast source MAC.
    Ignored,
}

/// A fixed-size IPv4 → MAC table.
#[derive(Debug)]
pub struct NeighbourTable {
    slots: Box<[Slot]>,
    mask: usize,
}

impl NeighbourTable {
    /// A table of at least `capacity` slots (rounded up to a power of two, at least
    /// [`PROBE`]).
    pub fn new(capacity: usize) -> Self {
        let n = capacity.max(PROBE).next_power_of_two();
        Self {
            slots: vec![Slot::default(); n].into_boxed_slice(),
            mask: n - 1,
        }
    }

    fn home(&self, ip: u32) -> usize {
        // Fibonacci hashing: addresses of one subnet differ in their low bits.
        (ip.wrapping_mul(0x9e37_79b9) >> 7) as usize & self.mask
    }

    /// Records that `ip` was heard from `mac` at `now`.
    pub fn learn(&mut self, ip: Ipv4Addr, mac: Mac, now: u64) -> Learnt {
        let key = u32::from(ip);
        if key == 0 || ip.is_broadcast() || ip.is_multicast() || mac[0] & 1 == 1 {
            return Learnt::Ignored;
        }
        let home = self.home(key);
        let mut oldest = home;
        for i in 0..PROBE {
            let at = (home + i) & self.mask;
            let slot = &mut self.slots[at];
            if slot.ip == key {
                slot.seen = now;
                if slot.mac == mac {
                    return Learnt::Same;
                }
                slot.mac = mac;
                return Learnt::Updated;
            }
            if slot.ip == 0 {
                *slot = Slot {
                    ip: key,
                    mac,
                    seen: now,
                };
                return Learnt::Updated;
            }
            if slot.seen < self.slots[oldest].seen {
                oldest = at;
            }
        }
        self.slots[oldest] = Slot {
            ip: key,
            mac,
            seen: now,
        };
        Learnt::Evicted
    }

    /// The MAC to send to `ip` through, if known.
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<Mac> {
        let key = u32::from(ip);
        if key == 0 {
            return None;
        }
        let home = self.home(key);
        (0..PROBE)
            .map(|i| &self.slots[(home + i) & self.mask])
            .find(|s| s.ip == key)
            .map(|s| s.mac)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.ip != 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        [0x02, 0, 0, 0, 0, n]
    }

    #[test]
    fn learns_refreshes_and_follows_a_new_mac() {
        let mut t = NeighbourTable::new(64);
        let ip = Ipv4Addr::new(10, 0, 0, 7);
        assert_eq!(t.lookup(ip), None);
        assert_eq!(t.learn(ip, mac(1), 1), Learnt::Updated);
        assert_eq!(t.learn(ip, mac(1), 2), Learnt::Same);
        assert_eq!(t.lookup(ip), Some(mac(1)));
        assert_eq!(t.learn(ip, mac(2), 3), Learnt::Updated);
        assert_eq!(t.lookup(ip), Some(mac(2)));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn ignores_addresses_that_are_never_peers() {
        let mut t = NeighbourTable::new(8);
        assert_eq!(t.learn(Ipv4Addr::UNSPECIFIED, mac(1), 1), Learnt::Ignored);
        assert_eq!(t.learn(Ipv4Addr::BROADCAST, mac(1), 1), Learnt::Ignored);
        assert_eq!(
            t.learn(Ipv4Addr::new(224, 0, 0, 1), mac(1), 1),
            Learnt::Ignored
        );
        let multicast_mac = [0x01, 0, 0x5e, 0, 0, 1];
        assert_eq!(
            t.learn(Ipv4Addr::new(10, 0, 0, 1), multicast_mac, 1),
            Learnt::Ignored
        );
        assert!(t.is_empty());
        assert_eq!(t.lookup(Ipv4Addr::UNSPECIFIED), None);
    }

    #[test]
    fn a_full_table_evicts_the_entry_heard_from_longest_ago() {
        let mut t = NeighbourTable::new(8);
        for i in 0..8u8 {
            t.learn(Ipv4Addr::new(10, 0, 0, i + 1), mac(i), u64::from(i) + 10);
        }
        assert_eq!(t.len(), 8);
        // 10.0.0.1 was heard first; refresh it so 10.0.0.2 is now the oldest.
        t.learn(Ipv4Addr::new(10, 0, 0, 1), mac(0), 100);
        assert_eq!(
            t.learn(Ipv4Addr::new(10, 0, 1, 1), mac(9), 101),
            Learnt::Evicted
        );
        assert_eq!(t.lookup(Ipv4Addr::new(10, 0, 0, 2)), None);
        assert_eq!(t.lookup(Ipv4Addr::new(10, 0, 0, 1)), Some(mac(0)));
        assert_eq!(t.lookup(Ipv4Addr::new(10, 0, 1, 1)), Some(mac(9)));
        assert_eq!(t.len(), 8);
    }

    #[test]
    fn many_peers_in_a_large_table_are_all_found() {
        let mut t = NeighbourTable::new(4096);
        for i in 0..1000u32 {
            let ip = Ipv4Addr::from(0x0a00_0000 + i);
            t.learn(ip, mac(i as u8), 1);
        }
        let found = (0..1000u32)
            .filter(|i| t.lookup(Ipv4Addr::from(0x0a00_0000 + i)) == Some(mac(*i as u8)))
            .count();
        // A probe window can overflow only with pathological clustering; at a quarter
        // load, essentially all fit.
        assert!(found >= 995, "found {found} of 1000");
    }
}
