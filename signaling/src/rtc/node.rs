//! What every room of the node shares: the lifetimes a room gets when its creator does not
//! say, and the counters `/metrics` reports. Counters are atomics, so rooms (each its own
//! task) count without talking to each other.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Room lifetimes, in seconds, when the room's creator does not say (LiveKit's defaults).
#[derive(Clone, Debug)]
pub struct RoomDefaults {
    /// A room nobody has joined yet closes after this long.
    pub empty_timeout: u32,
    /// A room closes this long after its last participant left.
    pub departure_timeout: u32,
    /// Participants a room holds at most, 0 for no limit.
    pub max_participants: u32,
    /// The addresses clients are given for media, most preferred first, each with the
    /// room core's port (`rtc.node_ip` with several addresses, or an external address
    /// and the internal one). Empty: the address the core reports.
    pub candidate_ips: Arc<[IpAddr]>,
    /// TURN servers for `JoinResponse.ice_servers`, credentials made per participant.
    pub ice_servers: Arc<super::ice_servers::IceServers>,
    /// The node's recordings, for those rooms start by themselves (auto-egress); the
    /// server sets it (`AppState`), none in tests that record nothing.
    pub egresses: Option<crate::egress::Egresses>,
    /// Where other nodes send relayed media to this one (a room spanning nodes); default:
    /// the first candidate IP.
    pub relay_ip: Option<IpAddr>,
    /// Whether relays between nodes are SRTP-protected (plain only on a trusted link).
    pub relay_srtp: bool,
}

impl RoomDefaults {
    /// The media candidates for a core whose own address is `core`.
    pub fn candidates(&self, core: SocketAddr) -> Vec<SocketAddr> {
        candidates(&self.candidate_ips, core)
    }
}

/// The media candidates for a core whose own address is `core`, given the configured
/// addresses (the core's own port on each; the core's address itself when none).
pub(crate) fn candidates(ips: &[IpAddr], core: SocketAddr) -> Vec<SocketAddr> {
    if ips.is_empty() {
        return vec![core];
    }
    ips.iter()
        .map(|&ip| SocketAddr::new(ip, core.port()))
        .collect()
}

impl Default for RoomDefaults {
    fn default() -> Self {
        Self {
            empty_timeout: 300,
            departure_timeout: 20,
            max_participants: 0,
            candidate_ips: Arc::from(Vec::new()),
            ice_servers: Arc::default(),
            egresses: None,
            relay_ip: None,
            relay_srtp: true,
        }
    }
}

/// What the rooms have done, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub joins: AtomicU64,
    pub leaves: AtomicU64,
    pub refused_data: AtomicU64,
    pub malformed_data: AtomicU64,
    pub data_relayed: AtomicU64,
    pub slow_sessions: AtomicU64,
    pub media_errors: AtomicU64,
    /// Join tokens whose `roomConfig.egress` could not be read or asked for what Prism
    /// does not record (the join went on without it).
    pub refused_egress: AtomicU64,
}

impl Counters {
    pub fn bump(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
