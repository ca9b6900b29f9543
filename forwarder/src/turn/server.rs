//! The sans-IO TURN server: allocations, permissions, channels and authentication.
//!
//! Inputs are bytes with the time: [`TurnServer::handle_client`] for what a client sent to
//! the TURN port, [`TurnServer::handle_peer`] for what a peer sent to an allocation's relay,
//! [`TurnServer::handle_timeout`] to expire what lapsed. Outputs go through [`TurnIo`],
//! which also opens and closes relays, so the same code serves real sockets (`front`) and
//! tests. Nothing here panics on network input, and the data path (ChannelData and Send
//! indications one way, peer datagrams the other) does not allocate: a hash lookup of the
//! client, a scan of its few channels or permissions, and one write into a scratch buffer.
//!
//! Authentication is the long-term mechanism with TURN REST credentials (`creds`):
//! a request without MESSAGE-INTEGRITY gets 401 with REALM and a fresh NONCE; a stale nonce
//! 438; a bad or expired password 401 with a fresh nonce; a request on an allocation made
//! under another username 441. Every refusal is counted in [`TurnStats`] by reason.
//!
//! Peers are checked against [`TurnConfig::allowed_peers`]: the embedded server relays only
//! to this node's media sockets, so CreatePermission and ChannelBind for anything else get
//! 403, and data toward anything else is dropped and counted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::turn::creds::{self, NonceKey, NONCE_LEN};
use crate::turn::{attr, code, method, CHANNEL_MAX, CHANNEL_MIN};
use crate::wire::stun::{self, Class, StunMessage, StunWriter};

/// How a client reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    /// TCP or TLS: ChannelData is padded to 4 bytes.
    Stream,
}

/// A client's 5-tuple as far as the server cares: transport and remote address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub proto: Proto,
    pub addr: SocketAddr,
}

/// Names a relay the I/O side opened for an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelayId(pub u64);

/// What the server asks of the I/O side.
pub trait TurnIo {
    /// Send `bytes` (one STUN message or ChannelData frame) to a client.
    fn to_client(&mut self, client: ClientKey, bytes: &[u8]);
    /// Send `bytes` from the relay to a peer.
    fn to_peer(&mut self, relay: RelayId, peer: SocketAddr, bytes: &[u8]);
    /// Open a relay for a new allocation; its address goes to the client as
    /// XOR-RELAYED-ADDRESS. `None` refuses the allocation (508).
    fn open_relay(&mut self, client: ClientKey) -> Option<(RelayId, SocketAddr)>;
    /// The allocation is gone; release its relay.
    fn close_relay(&mut self, relay: RelayId);
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct TurnConfig {
    pub realm: String,
    /// The TURN REST shared secret.
    pub secret: Vec<u8>,
    /// The only peers data may be relayed to (this node's media sockets).
    pub allowed_peers: Vec<SocketAddr>,
    pub max_allocations: usize,
    pub max_allocations_per_user: usize,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    /// Unix time at `epoch`, to check credential expiry against.
    pub epoch_unix: u64,
    pub epoch: Instant,
}

impl TurnConfig {
    pub fn new(realm: &str, secret: &[u8], allowed_peers: Vec<SocketAddr>) -> Self {
        let epoch_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            realm: realm.to_string(),
            secret: secret.to_vec(),
            allowed_peers,
            max_allocations: 10_000,
            max_allocations_per_user: 10,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            epoch_unix,
            epoch: Instant::now(),
        }
    }
}

/// Counters, by outcome and by refusal reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TurnStats {
    pub allocations: u64,
    pub allocations_active: u64,
    pub expired: u64,
    pub from_client_packets: u64,
    pub to_client_packets: u64,
    pub to_peer_packets: u64,
    pub from_peer_packets: u64,
    /// Neither STUN nor ChannelData, or an inconsistent length.
    pub malformed: u64,
    pub bad_fingerprint: u64,
    /// Requests without credentials (the normal first Allocate).
    pub unauthenticated: u64,
    pub wrong_credentials: u64,
    pub expired_credentials: u64,
    pub stale_nonce: u64,
    pub quota: u64,
    pub capacity: u64,
    pub forbidden_peer: u64,
    pub no_allocation: u64,
    pub no_permission: u64,
    pub bad_request: u64,
    pub unknown_attribute: u64,
    pub unsupported_transport: u64,
    pub unknown_method: u64,
    pub unknown_channel: u64,
}

const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
const MAX_PERMISSIONS: usize = 16;
const MAX_CHANNELS: usize = 16;
const SCRATCH: usize = 4096;
const SOFTWARE: &[u8] = b"prism";

#[derive(Debug)]
struct Allocation {
    relay: RelayId,
    relay_addr: SocketAddr,
    username: Box<[u8]>,
    key: [u8; 16],
    expires: Instant,
    /// The transaction that created it, so a retransmitted Allocate gets the same answer.
    tid: [u8; 12],
    permissions: Vec<(IpAddr, Instant)>,
    channels: Vec<(u16, SocketAddr, Instant)>,
}

impl Allocation {
    /// Whether a live permission lets `ip` through (RFC 8656 §9).
    fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|&(p, exp)| p == ip && exp > now)
    }
}

/// The TURN server state.
pub struct TurnServer {
    cfg: TurnConfig,
    nonces: NonceKey,
    allocs: HashMap<ClientKey, Allocation>,
    by_relay: HashMap<RelayId, ClientKey>,
    per_user: HashMap<Box<[u8]>, usize>,
    stats: TurnStats,
    scratch: Box<[u8]>,
}

impl std::fmt::Debug for TurnServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnServer")
            .field("realm", &self.cfg.realm)
            .field("allocations", &self.allocs.len())
            .finish()
    }
}

/// Why a request is refused, with the code to answer.
#[derive(Clone, Copy, Debug)]
struct Refusal {
    code: u16,
    /// Include REALM and a fresh NONCE (401, 438).
    challenge: bool,
}

fn refuse(code: u16) -> Refusal {
    Refusal {
        code,
        challenge: false,
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        code::BAD_REQUEST => "Bad Request",
        code::UNAUTHORIZED => "Unauthorized",
        code::FORBIDDEN => "Forbidden",
        code::UNKNOWN_ATTRIBUTE => "Unknown Attribute",
        code::ALLOCATION_MISMATCH => "Allocation Mismatch",
        code::STALE_NONCE => "Stale Nonce",
        code::ADDRESS_FAMILY_NOT_SUPPORTED => "Address Family not Supported",
        code::WRONG_CREDENTIALS => "Wrong Credentials",
        code::UNSUPPORTED_TRANSPORT => "Unsupported Transport Protocol",
        code::ALLOCATION_QUOTA_REACHED => "Allocation Quota Reached",
        code::INSUFFICIENT_CAPACITY => "Insufficient Capacity",
        _ => "Error",
    }
}

/// Attributes this server understands; any other comprehension-required one is refused
/// with 420 (RFC 8489 §6.3.1).
fn known(ty: u16) -> bool {
    ty >= 0x8000
        || matches!(
            ty,
            attr::USERNAME
                | attr::MESSAGE_INTEGRITY
                | attr::MESSAGE_INTEGRITY_SHA256
                | attr::ERROR_CODE
                | attr::CHANNEL_NUMBER
                | attr::LIFETIME
                | attr::XOR_PEER_ADDRESS
                | attr::DATA
                | attr::REALM
                | attr::NONCE
                | attr::REQUESTED_ADDRESS_FAMILY
                | attr::REQUESTED_TRANSPORT
                | attr::DONT_FRAGMENT
                | attr::PRIORITY
                | attr::USE_CANDIDATE
        )
}

fn read_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

impl TurnServer {
    pub fn new(cfg: TurnConfig) -> Self {
        Self::with_nonce_key(cfg, NonceKey::random())
    }

    pub fn with_nonce_key(cfg: TurnConfig, nonces: NonceKey) -> Self {
        Self {
            cfg,
            nonces,
            allocs: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            stats: TurnStats::default(),
            scratch: vec![0u8; SCRATCH].into_boxed_slice(),
        }
    }

    pub fn stats(&self) -> TurnStats {
        let mut s = self.stats;
        s.allocations_active = self.allocs.len() as u64;
        s
    }

    pub fn config(&self) -> &TurnConfig {
        &self.cfg
    }

    /// Replaces the peers data may be relayed to.
    pub fn set_allowed_peers(&mut self, peers: Vec<SocketAddr>) {
        self.cfg.allowed_peers = peers;
    }

    /// The client of the allocation holding `relay`.
    pub fn relay_client(&self, relay: RelayId) -> Option<ClientKey> {
        self.by_relay.get(&relay).copied()
    }

    fn secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.cfg.epoch).as_secs()
    }

    fn unix(&self, now: Instant) -> u64 {
        self.cfg.epoch_unix + self.secs(now)
    }

    fn peer_allowed(&self, peer: SocketAddr) -> bool {
        self.cfg.allowed_peers.contains(&peer)
    }

    fn peer_ip_allowed(&self, ip: IpAddr) -> bool {
        self.cfg.allowed_peers.iter().any(|p| p.ip() == ip)
    }

    /// Bytes a client sent: a STUN message or a ChannelData frame. Over a stream, `data`
    /// is one frame as [`super::next_frame`] cut it.
    pub fn handle_client(
        &mut self,
        now: Instant,
        client: ClientKey,
        data: &[u8],
        io: &mut dyn TurnIo,
    ) {
        self.stats.from_client_packets += 1;
        match data.first().map(|b| b >> 6) {
            Some(1) => self.client_channel_data(now, client, data, io),
            Some(0) => match StunMessage::new_checked(data) {
                Ok(m) => self.client_stun(now, client, &m, io),
                Err(_) => self.stats.malformed += 1,
            },
            _ => self.stats.malformed += 1,
        }
    }

    fn client_channel_data(
        &mut self,
        now: Instant,
        client: ClientKey,
        data: &[u8],
        io: &mut dyn TurnIo,
    ) {
        let (Some(&[c0, c1]), Some(&[l0, l1])) = (data.get(0..2), data.get(2..4)) else {
            self.stats.malformed += 1;
            return;
        };
        let channel = u16::from_be_bytes([c0, c1]);
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let Some(payload) = data.get(4..4 + len) else {
            self.stats.malformed += 1;
            return;
        };
        let Some(a) = self.allocs.get(&client) else {
            self.stats.no_allocation += 1;
            return;
        };
        let Some(&(_, peer, exp)) = a.channels.iter().find(|c| c.0 == channel) else {
            self.stats.unknown_channel += 1;
            return;
        };
        if exp <= now {
            self.stats.unknown_channel += 1;
            return;
        }
        let relay = a.relay;
        self.stats.to_peer_packets += 1;
        io.to_peer(relay, peer, payload);
    }

    fn client_stun(
        &mut self,
        now: Instant,
        client: ClientKey,
        m: &StunMessage<&[u8]>,
        io: &mut dyn TurnIo,
    ) {
        if m.check_fingerprint() == Some(false) {
            self.stats.bad_fingerprint += 1;
            return;
        }
        match (m.class(), m.method()) {
            (Class::Indication, method::SEND) => self.send_indication(now, client, m, io),
            (Class::Request, method::BINDING) => {
                let tid = m.transaction_id();
                let n = write_msg(
                    &mut self.scratch,
                    Class::SuccessResponse,
                    method::BINDING,
                    &tid,
                    None,
                    |w| w.xor_mapped_address(client.addr),
                );
                if let Some(bytes) = n.and_then(|n| self.scratch.get(..n)) {
                    self.stats.to_client_packets += 1;
                    io.to_client(client, bytes);
                }
            }
            (
                Class::Request,
                method::ALLOCATE
                | method::REFRESH
                | method::CREATE_PERMISSION
                | method::CHANNEL_BIND,
            ) => self.request(now, client, m, io),
            (Class::Request, meth) => {
                self.stats.unknown_method += 1;
                self.answer_error(now, client, m, meth, refuse(code::BAD_REQUEST), None, io);
            }
            // Responses and other indications have no business here.
            _ => self.stats.unknown_method += 1,
        }
    }

    fn send_indication(
        &mut self,
        now: Instant,
        client: ClientKey,
        m: &StunMessage<&[u8]>,
        io: &mut dyn TurnIo,
    ) {
        let tid = m.transaction_id();
        let peer = m
            .attribute(attr::XOR_PEER_ADDRESS)
            .and_then(|v| stun::decode_xor_address(v, &tid));
        let (Some(peer), Some(data)) = (peer, m.attribute(attr::DATA)) else {
            self.stats.bad_request += 1;
            return;
        };
        let Some(a) = self.allocs.get(&client) else {
            self.stats.no_allocation += 1;
            return;
        };
        if !a.permits(peer.ip(), now) {
            self.stats.no_permission += 1;
            return;
        }
        let relay = a.relay;
        if !self.peer_allowed(peer) {
            self.stats.forbidden_peer += 1;
            return;
        }
        self.stats.to_peer_packets += 1;
        io.to_peer(relay, peer, data);
    }

    /// Checks the long-term credentials of a request; returns the username's key.
    fn authenticate(
        &mut self,
        now: Instant,
        client: ClientKey,
        m: &StunMessage<&[u8]>,
    ) -> Result<[u8; 16], Refusal> {
        let challenge = |code| Refusal {
            code,
            challenge: true,
        };
        if m.message_integrity().is_none() {
            self.stats.unauthenticated += 1;
            return Err(challenge(code::UNAUTHORIZED));
        }
        let (Some(user), Some(realm), Some(nonce)) = (
            m.attribute(attr::USERNAME),
            m.attribute(attr::REALM),
            m.attribute(attr::NONCE),
        ) else {
            self.stats.bad_request += 1;
            return Err(refuse(code::BAD_REQUEST));
        };
        if !self.nonces.check(nonce, self.secs(now), client.addr) {
            self.stats.stale_nonce += 1;
            return Err(challenge(code::STALE_NONCE));
        }
        if realm != self.cfg.realm.as_bytes() {
            self.stats.wrong_credentials += 1;
            return Err(challenge(code::UNAUTHORIZED));
        }
        let key = creds::rest_key(&self.cfg.secret, realm, user);
        let ok = m.verify_message_integrity(&|head: &[u8; 4], rest: &[u8]| {
            creds::hmac_sha1(&key, &[head, rest])
        });
        if !ok {
            self.stats.wrong_credentials += 1;
            return Err(challenge(code::UNAUTHORIZED));
        }
        match self.allocs.get(&client) {
            // The expiry bounds when credentials may open an allocation; one they opened
            // lives on through refreshes (as a call outlives its join token).
            Some(a) if *a.username == *user => Ok(key),
            Some(_) => {
                self.stats.wrong_credentials += 1;
                Err(refuse(code::WRONG_CREDENTIALS))
            }
            None => match creds::rest_expiry(user) {
                Some(exp) if exp > self.unix(now) => Ok(key),
                _ => {
                    self.stats.expired_credentials += 1;
                    Err(challenge(code::UNAUTHORIZED))
                }
            },
        }
    }

    fn request(
        &mut self,
        now: Instant,
        client: ClientKey,
        m: &StunMessage<&[u8]>,
        io: &mut dyn TurnIo,
    ) {
        let meth = m.method();
        if let Some(unknown) = m.attributes().map(|(t, _)| t).find(|&t| !known(t)) {
            self.stats.unknown_attribute += 1;
            self.answer_error(
                now,
                client,
                m,
                meth,
                refuse(code::UNKNOWN_ATTRIBUTE),
                Some(unknown),
                io,
            );
            return;
        }
        let key = match self.authenticate(now, client, m) {
            Ok(k) => k,
            Err(r) => {
                self.answer_error(now, client, m, meth, r, None, io);
                return;
            }
        };
        let res = match meth {
            method::ALLOCATE => self.allocate(now, client, m, &key, io),
            method::REFRESH => self.refresh(now, client, m, &key, io),
            method::CREATE_PERMISSION => self.create_permission(now, client, m, &key, io),
            _ => self.channel_bind(now, client, m, &key, io),
        };
        if let Err(r) = res {
            self.answer_error(now, client, m, meth, r, None, io);
        }
    }

    fn send_success(
        &mut self,
        client: ClientKey,
        meth: stun::Method,
        tid: &[u8; 12],
        key: &[u8; 16],
        body: impl FnOnce(&mut StunWriter<'_>) -> crate::wire::Result<()>,
        io: &mut dyn TurnIo,
    ) {
        let n = write_msg(
            &mut self.scratch,
            Class::SuccessResponse,
            meth,
            tid,
            Some(key),
            body,
        );
        if let Some(bytes) = n.and_then(|n| self.scratch.get(..n)) {
            self.stats.to_client_packets += 1;
            io.to_client(client, bytes);
        }
    }

    fn allocate(
        &mut self,
        now: Instant,
        client: ClientKey,
        m: &StunMessage<&[u8]>,
        key: &[u8; 16],
        io: &mut dyn TurnIo,
    ) -> Result<(), Refusal> {
        let tid = m.transaction_id();
        if let Some(a) = self.allocs.get(&client) {
            if a.tid != tid {
                self.stats.bad_request += 1;
                return Err(refuse(code::ALLOCATION_MISMATCH));
            }
            // A retransmission: answer again.
            let (relay_addr, left) = (a.relay_addr, a.expires.saturating_duration_since(now));
            self.send_success(
                client,
                method::ALLOCATE,
                &tid,
                key,
                |w| {
                    w.xor_address(attr::XOR_RELAYED_ADDRESS, relay_addr)?;
                    w.attr(attr::LIFETIME, &(left.as_secs() as u32).to_be_bytes())?;
                    w.xor_mapped_address(client.addr)?;
                    w.attr(attr::SOFTWARE, SOFTWARE)
                },
                io,
            );
            return Ok(());
        }
        match m.attribute(attr::REQUESTED_TRANSPORT) {
            None => {
                self.stats.bad_request += 1;
                return Err(refuse(code::BAD_REQUEST));
            }
            Some(v) if v.first() != Some(&17) => {
                self.stats.unsupported_transport += 1;
                return Err(refuse(code::UNSUPPORTED_TRANSPORT));
            }
            Some(_) => {}
        }
        let user = m.attribute(attr::USERNAME).unwrap_or_default();
        if self.allocs.len() >= self.cfg.max_allocations {
            self.stats.capacity += 1;
            return Err(refuse(code::INSUFFICIENT_CAPACITY));
        }
        if self.per_user.get(user).copied().unwrap_or(0) >= self.cfg.max_allocations_per_user {
            self.stats.quota += 1;
            return Err(refuse(code::ALLOCATION_QUOTA_REACHED));
        }
        let Some((relay, relay_addr)) = io.open_relay(client) else {
            self.stats.capacity += 1;
            return Err(refuse(code::INSUFFICIENT_CAPACITY));
        };
        let family_ok = match m
            .attribute(attr::REQUESTED_ADDRESS_FAMILY)
            .and_then(|v| v.first())
        {
            None => relay_addr.is_ipv4(),
            Some(1) => relay_addr.is_ipv4(),
            Some(2) => relay_addr.is_ipv6(),
            Some(_) => false,
        };
        if !family_ok {
            io.close_relay(relay);
            self.stats.bad_request += 1;
            return Err(refuse(code::ADDRESS_FAMILY_NOT_SUPPORTED));
        }
        // At least the default: a client asking for less (or 0) gets the default.
        let lifetime = self
            .lifetime(m)
            .max(self.cfg.default_lifetime.min(self.cfg.max_lifetime));
        *self.per_user.entry(user.into()).or_insert(0) += 1;
        self.by_relay.insert(relay, client);
        self.allocs.insert(
            client,
            Allocation {
                relay,
                relay_addr,
                username: user.into(),
                key: *key,
                expires: now + lifetime,
                tid,
                permissions: Vec::new(),
                channels: Vec::new(),
            },
        );
        self.stats.allocations += 1;
        self.send_success(
            client,
            method::ALLOCATE,
            &tid,
            key,
            |w| {
                w.xor_address(attr::XOR_RELAYED_ADDRESS, relay_addr)?;
                w.attr(attr::LIFETIME, &(lifetime.as_secs() as u32).to_be_bytes())?;
                w.xor_mapped_address(client.addr)?;
                w.attr(attr::SOFTWARE, SOFTWARE)
            },
            io,
        );
        Ok(())
    }

    /// The requested LIFETIME, capped by the configured maximum.
    fn lifetime(&self, m: &StunMessage<&[u8]>) -> Duration {
        let req = m
            .attribute(attr::LIFETIME)
            .and_then(read_u32)
            .map_or(self.cfg.default_lifetime, |s| {
                Duration::from_secs(u64::from(s))
            });
        req.min(self.cfg.max_lifetime)
    }

    fn refresh(
        &mut self,
        now: Instant,
        client: ClientKey,
        m: &StunMessage<&[u8]>,
        key: &[u8; 16],
        io: &mut dyn TurnIo,
    ) -> Result<(), Refusal> {
        if !self.allocs.contains_key(&client) {
            self.stats.no_allocation += 1;
            return Err(refuse(code::ALLOCATION_MISMATCH));
        }
        let lifetime = self.lifetime(m);
        if lifetime.is_zero() {
            self.remove(client, io);
        } else if let Some(a) = self.allocs.get_mut(&client) {
            a.expires = now + lifetime;
        }
        let tid = m.transaction_id();
        self.send_success(
            client,
            method::REFRESH,
            &tid,
            key,
            |w| w.attr(attr::LIFETIME, &(lifetime.as_secs() as u32).to_be_bytes()),
            io,
        );
        Ok(())
    }

    fn create_permission(
        &mut self,
        now: Instant,
        client: ClientKey,
        m: &StunMessage<&[u8]>,
        key: &[u8; 16],
        io: &mut dyn TurnIo,
    ) -> Result<(), Refusal> {
        if !self.allocs.contains_key(&client) {
            self.stats.no_allocation += 1;
            return Err(refuse(code::ALLOCATION_MISMATCH));
        }
        let tid = m.transaction_id();
        let mut any = false;
        for (t, v) in m.attributes() {
            if t == attr::MESSAGE_INTEGRITY {
                break;
            }
            if t != attr::XOR_PEER_ADDRESS {
                continue;
            }
            any = true;
            let Some(peer) = stun::decode_xor_address(v, &tid) else {
                self.stats.bad_request += 1;
                return Err(refuse(code::BAD_REQUEST));
            };
            if !self.peer_ip_allowed(peer.ip()) {
                self.stats.forbidden_peer += 1;
                return Err(refuse(code::FORBIDDEN));
            }
        }
        if !any {
            self.stats.bad_request += 1;
            return Err(refuse(code::BAD_REQUEST));
        }
        let Some(a) = self.allocs.get_mut(&client) else {
            return Err(refuse(code::ALLOCATION_MISMATCH));
        };
        for (t, v) in m.attributes() {
            if t == attr::MESSAGE_INTEGRITY {
                break;
            }
            if t != attr::XOR_PEER_ADDRESS {
                continue;
            }
            if let Some(peer) = stun::decode_xor_address(v, &tid) {
                install_permission(a, peer.ip(), now)?;
            }
        }
        self.send_success(client, method::CREATE_PERMISSION, &tid, key, |_| Ok(()), io);
        Ok(())
    }

    fn channel_bind(
        &mut self,
        now: Instant,
        client: ClientKey,
        m: &StunMessage<&[u8]>,
        key: &[u8; 16],
        io: &mut dyn TurnIo,
    ) -> Result<(), Refusal> {
        let tid = m.transaction_id();
        let channel = m
            .attribute(attr::CHANNEL_NUMBER)
            .and_then(|v| v.get(..2))
            .map(|v| u16::from_be_bytes([v[0], v[1]]));
        let peer = m
            .attribute(attr::XOR_PEER_ADDRESS)
            .and_then(|v| stun::decode_xor_address(v, &tid));
        let (Some(channel), Some(peer)) = (channel, peer) else {
            self.stats.bad_request += 1;
            return Err(refuse(code::BAD_REQUEST));
        };
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
            self.stats.bad_request += 1;
            return Err(refuse(code::BAD_REQUEST));
        }
        if !self.peer_allowed(peer) {
            self.stats.forbidden_peer += 1;
            return Err(refuse(code::FORBIDDEN));
        }
        let Some(a) = self.allocs.get_mut(&client) else {
            self.stats.no_allocation += 1;
            return Err(refuse(code::ALLOCATION_MISMATCH));
        };
        let clash = a
            .channels
            .iter()
            .any(|&(c, p, exp)| exp > now && ((c == channel) != (p == peer)));
        if clash {
            self.stats.bad_request += 1;
            return Err(refuse(code::BAD_REQUEST));
        }
        let exp = now + CHANNEL_LIFETIME;
        if let Some(c) = a.channels.iter_mut().find(|c| c.0 == channel) {
            *c = (channel, peer, exp);
        } else {
            a.channels.retain(|c| c.2 > now);
            if a.channels.len() >= MAX_CHANNELS {
                self.stats.quota += 1;
                return Err(refuse(code::INSUFFICIENT_CAPACITY));
            }
            a.channels.push((channel, peer, exp));
        }
        install_permission(a, peer.ip(), now)?;
        self.send_success(client, method::CHANNEL_BIND, &tid, key, |_| Ok(()), io);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn answer_error(
        &mut self,
        now: Instant,
        client: ClientKey,
        m: &StunMessage<&[u8]>,
        meth: stun::Method,
        r: Refusal,
        unknown: Option<u16>,
        io: &mut dyn TurnIo,
    ) {
        let tid = m.transaction_id();
        // Authenticated refusals carry MESSAGE-INTEGRITY with the allocation's key.
        let key = if r.challenge || r.code == code::WRONG_CREDENTIALS {
            None
        } else {
            self.allocs.get(&client).map(|a| a.key).or_else(|| {
                let user = m.attribute(attr::USERNAME)?;
                m.message_integrity()?;
                let key = creds::rest_key(&self.cfg.secret, self.cfg.realm.as_bytes(), user);
                m.verify_message_integrity(&|h: &[u8; 4], rest: &[u8]| {
                    creds::hmac_sha1(&key, &[h, rest])
                })
                .then_some(key)
            })
        };
        let nonce: Option<[u8; NONCE_LEN]> = r
            .challenge
            .then(|| self.nonces.issue(self.secs(now), client.addr));
        let realm = self.cfg.realm.clone();
        let n = write_msg(
            &mut self.scratch,
            Class::ErrorResponse,
            meth,
            &tid,
            key.as_ref(),
            |w| {
                let mut v = [0u8; 64];
                let text = reason(r.code).as_bytes();
                v[2] = (r.code / 100) as u8;
                v[3] = (r.code % 100) as u8;
                let l = 4 + text.len().min(60);
                v[4..l].copy_from_slice(&text[..l - 4]);
                w.attr(attr::ERROR_CODE, &v[..l])?;
                if let Some(nonce) = &nonce {
                    w.attr(attr::REALM, realm.as_bytes())?;
                    w.attr(attr::NONCE, nonce)?;
                }
                if let Some(u) = unknown {
                    w.attr(attr::UNKNOWN_ATTRIBUTES, &u.to_be_bytes())?;
                }
                w.attr(attr::SOFTWARE, SOFTWARE)
            },
        );
        if let Some(bytes) = n.and_then(|n| self.scratch.get(..n)) {
            self.stats.to_client_packets += 1;
            io.to_client(client, bytes);
        }
    }

    /// A datagram `peer` sent to `relay`: relayed to the client as ChannelData if a channel
    /// is bound to the peer, else as a Data indication, if the peer has a permission.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        relay: RelayId,
        peer: SocketAddr,
        data: &[u8],
        io: &mut dyn TurnIo,
    ) {
        self.stats.from_peer_packets += 1;
        let Some(client) = self.by_relay.get(&relay).copied() else {
            self.stats.no_allocation += 1;
            return;
        };
        let Some(a) = self.allocs.get(&client) else {
            self.stats.no_allocation += 1;
            return;
        };
        if !a.permits(peer.ip(), now) {
            self.stats.no_permission += 1;
            return;
        }
        let channel = a
            .channels
            .iter()
            .find(|&&(_, p, exp)| p == peer && exp > now)
            .map(|c| c.0);
        let n = match channel {
            Some(ch) => {
                let padded = match client.proto {
                    Proto::Udp => data.len(),
                    Proto::Stream => data.len().div_ceil(4) * 4,
                };
                let (Ok(len), Some(out)) = (
                    u16::try_from(data.len()),
                    self.scratch.get_mut(..4 + padded),
                ) else {
                    self.stats.malformed += 1;
                    return;
                };
                out[..2].copy_from_slice(&ch.to_be_bytes());
                out[2..4].copy_from_slice(&len.to_be_bytes());
                out[4..4 + data.len()].copy_from_slice(data);
                out[4 + data.len()..].fill(0);
                Some(4 + padded)
            }
            None => {
                let tid = data_tid(self.stats.from_peer_packets);
                let mut w =
                    match StunWriter::new(&mut self.scratch, Class::Indication, method::DATA, &tid)
                    {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                w.xor_address(attr::XOR_PEER_ADDRESS, peer)
                    .and_then(|()| w.attr(attr::DATA, data))
                    .ok()
                    .and_then(|()| w.finish_plain().ok())
            }
        };
        if let Some(bytes) = n.and_then(|n| self.scratch.get(..n)) {
            self.stats.to_client_packets += 1;
            io.to_client(client, bytes);
        }
    }

    /// Expires allocations, permissions and channels that lapsed. Call about once a second.
    pub fn handle_timeout(&mut self, now: Instant, io: &mut dyn TurnIo) {
        let expired: Vec<ClientKey> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(&k, _)| k)
            .collect();
        for k in expired {
            self.stats.expired += 1;
            self.remove(k, io);
        }
        for a in self.allocs.values_mut() {
            a.permissions.retain(|p| p.1 > now);
            a.channels.retain(|c| c.2 > now);
        }
    }

    /// A stream client went away: its allocation goes with it (RFC 6062 §... as for TCP).
    pub fn client_closed(&mut self, client: ClientKey, io: &mut dyn TurnIo) {
        self.remove(client, io);
    }

    fn remove(&mut self, client: ClientKey, io: &mut dyn TurnIo) {
        let Some(a) = self.allocs.remove(&client) else {
            return;
        };
        self.by_relay.remove(&a.relay);
        if let Some(n) = self.per_user.get_mut(&a.username) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_user.remove(&a.username);
            }
        }
        io.close_relay(a.relay);
    }
}

fn install_permission(a: &mut Allocation, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
    let exp = now + PERMISSION_LIFETIME;
    if let Some(p) = a.permissions.iter_mut().find(|p| p.0 == ip) {
        p.1 = exp;
        return Ok(());
    }
    a.permissions.retain(|p| p.1 > now);
    if a.permissions.len() >= MAX_PERMISSIONS {
        return Err(refuse(code::INSUFFICIENT_CAPACITY));
    }
    a.permissions.push((ip, exp));
    Ok(())
}

/// A transaction id for a Data indication (indications need one; nobody checks it).
fn data_tid(n: u64) -> [u8; 12] {
    let mut t = [0u8; 12];
    t[..8].copy_from_slice(&n.to_be_bytes());
    t[8..].copy_from_slice(b"prsm");
    t
}

/// Writes one STUN message into `buf`: `body`'s attributes, then MESSAGE-INTEGRITY with
/// `key` if given, then FINGERPRINT. Returns its length.
fn write_msg(
    buf: &mut [u8],
    class: Class,
    meth: stun::Method,
    tid: &[u8; 12],
    key: Option<&[u8; 16]>,
    body: impl FnOnce(&mut StunWriter<'_>) -> crate::wire::Result<()>,
) -> Option<usize> {
    let mut w = StunWriter::new(buf, class, meth, tid).ok()?;
    body(&mut w).ok()?;
    match key {
        Some(k) => w
            .finish_with_integrity(&|d: &[u8]| creds::hmac_sha1(k, &[d]))
            .ok(),
        None => w.finish().ok(),
    }
}
