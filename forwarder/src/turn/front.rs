//! The TURN server's sockets, on one thread: a UDP socket on `turn.udp_port`, a TLS (or,
//! behind a TLS-terminating load balancer, plain TCP) listener on `turn.tls_port`, all on
//! one mio poll.
//!
//! TURN carries little traffic next to the media plane (only the clients that cannot reach
//! it directly), so one thread is enough, and it keeps the media cores free of TLS and of
//! TURN state.
//!
//! Peer data takes one of two paths:
//! - **Through the tunnel seam** (`crate::tunnel`, the embedded case): the only peers are
//!   this node's media sockets, so what a client sends to core *i*'s address is pushed into
//!   core *i*'s inbound queue as from the allocation's virtual address
//!   (`tunnel::virtual_addr(FrontKind::Turn, relay id)`), and what the core sends to that
//!   address comes back through its outbound queue. No relay socket, no kernel round trip
//!   between TURN and the forwarder. The XOR-RELAYED-ADDRESS given to clients is that
//!   virtual address (IPv4, in the reserved `240.0.0.0/4`): it is what the core answers
//!   ICE checks with as the client's mapped address, so the client sees its relay
//!   candidate confirmed. No socket is bound there; nothing but this node is reachable.
//! - **Through relay sockets** (a front started alone, [`TurnFront::start`]): one UDP
//!   socket per allocation, sending to the peer's real address.
//!
//! Streams: each connection buffers what it read until [`super::next_frame`] cuts a whole
//! STUN message or ChannelData frame, and what it could not write yet (capped; a client
//! that does not read loses datagrams, counted). Anything that is neither, a failed TLS
//! handshake, or a handshake that takes longer than [`HANDSHAKE_TIMEOUT`] closes the
//! connection and is counted in [`FrontStats`]. Other sessions are unaffected.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use openssl::ssl::{ErrorCode, Ssl, SslAcceptor, SslFiletype, SslMethod, SslStream};

use super::server::{ClientKey, Proto, RelayId, TurnConfig, TurnIo, TurnServer, TurnStats};
use super::{next_frame, Frame};
use crate::tunnel::{self, FrontCounters, FrontEnd, TunnelDrop};

const UDP: Token = Token(0);
const TCP: Token = Token(1);
const WAKE: Token = Token(2);
const FIRST_DYNAMIC: usize = 16;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// What a stream client may leave unread before it is closed.
const MAX_PENDING_OUT: usize = 1 << 20;
const MAX_STREAMS: usize = 4096;
const BUF: usize = 65_536;

/// How the stream listener speaks.
#[derive(Clone, Debug)]
pub enum StreamMode {
    /// TLS with this certificate chain and key (PEM files).
    Tls { cert: PathBuf, key: PathBuf },
    /// Plain TCP, for TLS terminated by a load balancer in front (`turn.external_tls`).
    Plain,
}

/// Where the front listens and relays.
#[derive(Clone, Debug)]
pub struct FrontConfig {
    pub udp: Option<SocketAddr>,
    pub stream: Option<(SocketAddr, StreamMode)>,
    /// Address relay sockets bind to.
    pub relay_ip: IpAddr,
    /// Address given to clients as XOR-RELAYED-ADDRESS, if not `relay_ip`.
    pub relay_advertise_ip: Option<IpAddr>,
    /// Inclusive port range for relay sockets; `None` lets the kernel choose.
    pub relay_ports: Option<(u16, u16)>,
    /// The media sockets clients may reach. Filled in by the forwarder when it starts the
    /// front itself.
    pub peers: Vec<Peer>,
    /// The addresses clients are given for media (each core's port on each is a peer);
    /// empty: the forwarder's advertised address.
    pub peer_ips: Vec<IpAddr>,
    pub server: TurnConfig,
}

/// The peers core `core` offers through TURN: its socket `local` as clients name it (the
/// advertised address first, then the bound one if it differs and is not a wildcard).
pub fn core_peers(core: usize, local: SocketAddr, advertise: &[IpAddr]) -> Vec<Peer> {
    let mut out = Vec::new();
    let actual = if local.ip().is_unspecified() {
        let lo: IpAddr = if local.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(lo, local.port())
    } else {
        local
    };
    for &ip in advertise {
        out.push(Peer {
            named: SocketAddr::new(ip, local.port()),
            actual,
            core,
        });
    }
    if !local.ip().is_unspecified() && !advertise.contains(&local.ip()) {
        out.push(Peer {
            named: local,
            actual,
            core,
        });
    }
    out
}

/// A media socket a client may reach through TURN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The address clients name (the advertised candidate).
    pub named: SocketAddr,
    /// The address the socket is bound to (where relay sockets send).
    pub actual: SocketAddr,
    /// The core that owns it (index into the tunnel links).
    pub core: usize,
}

/// Counters of the front, with the server's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontStats {
    pub server: TurnStats,
    pub streams_accepted: u64,
    pub streams_active: u64,
    pub tls_handshake_failed: u64,
    pub handshake_timeout: u64,
    /// Bytes on a stream that are neither STUN nor ChannelData.
    pub stream_invalid: u64,
    pub stream_slow_reader: u64,
    pub streams_refused: u64,
    pub relay_bind_failed: u64,
    /// Datagrams on a relay from an address that is not a media socket.
    pub unknown_peer: u64,
    pub send_errors: u64,
}

/// A running TURN front.
pub struct TurnFront {
    udp_addr: Option<SocketAddr>,
    stream_addr: Option<SocketAddr>,
    stats: Arc<Mutex<FrontStats>>,
    counters: Arc<FrontCounters>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    join: Option<JoinHandle<()>>,
    pending: Option<Box<Loop>>,
}

impl std::fmt::Debug for TurnFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnFront")
            .field("udp", &self.udp_addr)
            .field("stream", &self.stream_addr)
            .finish_non_exhaustive()
    }
}

struct FrontWaker(Arc<Waker>);

impl crate::io::Waker for FrontWaker {
    fn wake(&self) {
        let _ = self.0.wake();
    }
}

impl TurnFront {
    /// Binds every listener and starts the thread, relaying through sockets of its own.
    pub fn start(cfg: FrontConfig) -> io::Result<Self> {
        let mut f = Self::bind(cfg)?;
        f.spawn(Vec::new())?;
        Ok(f)
    }

    /// Binds every listener; [`spawn`](Self::spawn) runs it once the cores are linked.
    pub fn bind(cfg: FrontConfig) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let mut udp = match cfg.udp {
            Some(a) => Some(UdpSocket::bind(a)?),
            None => None,
        };
        let (mut tcp, acceptor) = match &cfg.stream {
            Some((a, mode)) => {
                let acceptor = match mode {
                    StreamMode::Tls { cert, key } => Some(tls_acceptor(cert, key)?),
                    StreamMode::Plain => None,
                };
                (Some(TcpListener::bind(*a)?), acceptor)
            }
            None => (None, None),
        };
        if let Some(u) = udp.as_mut() {
            poll.registry().register(u, UDP, Interest::READABLE)?;
        }
        if let Some(t) = tcp.as_mut() {
            poll.registry().register(t, TCP, Interest::READABLE)?;
        }
        let udp_addr = udp.as_ref().map(|u| u.local_addr()).transpose()?;
        let stream_addr = tcp.as_ref().map(|t| t.local_addr()).transpose()?;
        let stats = Arc::new(Mutex::new(FrontStats::default()));
        let counters = Arc::new(FrontCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let relay_advertise_ip = cfg
            .relay_advertise_ip
            .or(udp_addr.map(|a| a.ip()))
            .unwrap_or(cfg.relay_ip);
        let lp = Loop {
            poll,
            server: TurnServer::new(cfg.server.clone()),
            net: Net {
                udp,
                relays: HashMap::new(),
                streams: HashMap::new(),
                by_addr: HashMap::new(),
                next_token: FIRST_DYNAMIC,
                relay_ip: cfg.relay_ip,
                relay_advertise_ip,
                relay_ports: cfg.relay_ports,
                relay_cursor: 0,
                peers: cfg.peers,
                stats: FrontStats::default(),
                registry: None,
                dirty: Vec::new(),
                cores: Vec::new(),
                wake_cores: Vec::new(),
                counters: counters.clone(),
                next_relay: 1,
            },
            tcp,
            acceptor,
            shared: stats.clone(),
            stop: stop.clone(),
            buf: vec![0u8; BUF].into_boxed_slice(),
        };
        tracing::info!(udp = ?udp_addr, stream = ?stream_addr, "TURN server bound");
        Ok(Self {
            udp_addr,
            stream_addr,
            stats,
            counters,
            stop,
            waker,
            join: None,
            pending: Some(Box::new(lp)),
        })
    }

    /// The waker cores use when they queued datagrams for the front.
    pub fn waker(&self) -> Arc<dyn crate::io::Waker> {
        Arc::new(FrontWaker(self.waker.clone()))
    }

    /// Counters shared with the cores (a full outbound queue) and `GetStats`.
    pub fn counters(&self) -> Arc<FrontCounters> {
        self.counters.clone()
    }

    /// Runs the front linked to the cores, relaying only to `peers` (from [`core_peers`]).
    pub fn spawn_linked(&mut self, cores: Vec<FrontEnd>, peers: Vec<Peer>) -> io::Result<()> {
        if let Some(lp) = self.pending.as_mut() {
            lp.server
                .set_allowed_peers(peers.iter().map(|p| p.named).collect());
            lp.net.peers = peers;
        }
        self.spawn(cores)
    }

    /// Runs the front on its thread. With `cores` (one link per core, in core order),
    /// peer data goes through the tunnel seam; without, through relay sockets.
    pub fn spawn(&mut self, cores: Vec<FrontEnd>) -> io::Result<()> {
        let Some(mut lp) = self.pending.take() else {
            return Ok(());
        };
        lp.net.wake_cores = vec![false; cores.len()];
        lp.net.cores = cores;
        self.join = Some(
            std::thread::Builder::new()
                .name("prism-turn".into())
                .spawn(move || lp.run())?,
        );
        Ok(())
    }

    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    pub fn stream_addr(&self) -> Option<SocketAddr> {
        self.stream_addr
    }

    /// A snapshot of the counters (updated at every loop turn).
    pub fn stats(&self) -> FrontStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

impl Drop for TurnFront {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> io::Result<SslAcceptor> {
    let err = |what: &str, e: openssl::error::ErrorStack| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("TURN TLS {what}: {e}"))
    };
    let mut b =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(|e| err("context", e))?;
    b.set_certificate_chain_file(cert)
        .map_err(|e| err(&format!("certificate {}", cert.display()), e))?;
    b.set_private_key_file(key, SslFiletype::PEM)
        .map_err(|e| err(&format!("key {}", key.display()), e))?;
    b.check_private_key().map_err(|e| err("key check", e))?;
    Ok(b.build())
}

enum Conn {
    Tls(SslStream<TcpStream>),
    Plain(TcpStream),
}

impl Conn {
    fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Conn::Tls(s) => s.get_mut(),
            Conn::Plain(s) => s,
        }
    }
}

struct Stream {
    conn: Conn,
    addr: SocketAddr,
    handshaking: bool,
    since: Instant,
    inbuf: Vec<u8>,
    out: Vec<u8>,
}

struct Relay {
    sock: UdpSocket,
    id: RelayId,
}

/// The sockets the server writes to: the [`TurnIo`] of the front.
struct Net {
    udp: Option<UdpSocket>,
    relays: HashMap<Token, Relay>,
    streams: HashMap<Token, Stream>,
    by_addr: HashMap<SocketAddr, Token>,
    next_token: usize,
    relay_ip: IpAddr,
    relay_advertise_ip: IpAddr,
    relay_ports: Option<(u16, u16)>,
    relay_cursor: u32,
    peers: Vec<Peer>,
    stats: FrontStats,
    registry: Option<mio::Registry>,
    /// Streams with bytes to write.
    dirty: Vec<Token>,
    /// Tunnel links, one per core; empty when relaying through sockets.
    cores: Vec<FrontEnd>,
    /// Cores that got datagrams this loop turn, woken once at its end.
    wake_cores: Vec<bool>,
    counters: Arc<FrontCounters>,
    next_relay: u64,
}

impl Net {
    fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1).max(FIRST_DYNAMIC);
        t
    }

    fn bind_relay(&mut self) -> Option<UdpSocket> {
        let Some((lo, hi)) = self.relay_ports else {
            return UdpSocket::bind(SocketAddr::new(self.relay_ip, 0)).ok();
        };
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        for _ in 0..span {
            let port = lo as u32 + self.relay_cursor % span;
            self.relay_cursor = self.relay_cursor.wrapping_add(1);
            if let Ok(s) = UdpSocket::bind(SocketAddr::new(self.relay_ip, port as u16)) {
                return Some(s);
            }
        }
        None
    }
}

impl TurnIo for Net {
    fn to_client(&mut self, client: ClientKey, bytes: &[u8]) {
        match client.proto {
            Proto::Udp => {
                if let Some(u) = &self.udp {
                    if u.send_to(bytes, client.addr).is_err() {
                        self.stats.send_errors += 1;
                    }
                }
            }
            Proto::Stream => {
                let Some(&tok) = self.by_addr.get(&client.addr) else {
                    return;
                };
                if let Some(s) = self.streams.get_mut(&tok) {
                    if s.out.len() + bytes.len() > MAX_PENDING_OUT {
                        self.stats.stream_slow_reader += 1;
                        return;
                    }
                    if s.out.is_empty() {
                        self.dirty.push(tok);
                    }
                    s.out.extend_from_slice(bytes);
                }
            }
        }
    }

    fn to_peer(&mut self, relay: RelayId, peer: SocketAddr, bytes: &[u8]) {
        let Some(p) = self.peers.iter().find(|p| p.named == peer).copied() else {
            return;
        };
        if !self.cores.is_empty() {
            let Some(link) = self.cores.get(p.core) else {
                return;
            };
            let from = tunnel::virtual_addr_v4(relay.0);
            // The relayed address is the one the core must report back (XOR-MAPPED-ADDRESS).
            if link.inbound.push(from, from, bytes) {
                if let Some(w) = self.wake_cores.get_mut(p.core) {
                    *w = true;
                }
                self.counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes_in
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            } else {
                self.counters.dropped(TunnelDrop::CoreQueueFull);
            }
            return;
        }
        let Some(r) = self.relays.get(&Token(relay.0 as usize)) else {
            return;
        };
        if r.sock.send_to(bytes, p.actual).is_err() {
            self.stats.send_errors += 1;
        }
    }

    fn open_relay(&mut self, _client: ClientKey) -> Option<(RelayId, SocketAddr)> {
        if !self.cores.is_empty() {
            // No socket: the relayed address is the allocation's virtual address, the one
            // the core sees its datagrams come from (see the module docs).
            let id = self.next_relay;
            self.next_relay = (self.next_relay + 1) & tunnel::MAX_V4_CONN_ID;
            return Some((RelayId(id), tunnel::virtual_addr_v4(id)));
        }
        let Some(mut sock) = self.bind_relay() else {
            self.stats.relay_bind_failed += 1;
            return None;
        };
        let tok = self.token();
        let reg = self.registry.as_ref()?;
        reg.register(&mut sock, tok, Interest::READABLE).ok()?;
        let local = sock.local_addr().ok()?;
        let id = RelayId(tok.0 as u64);
        self.relays.insert(tok, Relay { sock, id });
        let ip = if local.ip().is_unspecified() {
            self.relay_advertise_ip
        } else {
            local.ip()
        };
        Some((id, SocketAddr::new(ip, local.port())))
    }

    fn close_relay(&mut self, relay: RelayId) {
        if let Some(mut r) = self.relays.remove(&Token(relay.0 as usize)) {
            if let Some(reg) = &self.registry {
                let _ = reg.deregister(&mut r.sock);
            }
        }
    }
}

struct Loop {
    poll: Poll,
    server: TurnServer,
    net: Net,
    tcp: Option<TcpListener>,
    acceptor: Option<SslAcceptor>,
    shared: Arc<Mutex<FrontStats>>,
    stop: Arc<AtomicBool>,
    buf: Box<[u8]>,
}

impl Loop {
    fn run(&mut self) {
        self.net.registry = self.poll.registry().try_clone().ok();
        let mut events = Events::with_capacity(256);
        let mut last_sweep = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(500)))
            {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "TURN poll failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    UDP => self.udp_readable(now),
                    TCP => self.accept(now),
                    WAKE => {}
                    tok if self.net.relays.contains_key(&tok) => self.relay_readable(now, tok),
                    tok => self.stream_event(now, tok),
                }
            }
            self.relay_core_datagrams(now);
            self.flush_streams();
            for (core, wake) in self.net.wake_cores.iter_mut().enumerate() {
                if std::mem::take(wake) {
                    if let Some(w) = self.net.cores.get(core).and_then(|c| c.wake_core.as_ref()) {
                        w.wake();
                    }
                }
            }
            if now.duration_since(last_sweep) >= Duration::from_secs(1) {
                last_sweep = now;
                self.server.handle_timeout(now, &mut self.net);
                self.expire_handshakes(now);
            }
            if let Ok(mut s) = self.shared.lock() {
                *s = self.net.stats;
                s.server = self.server.stats();
                s.streams_active = self.net.streams.len() as u64;
            }
        }
    }

    /// What the cores sent to allocations' virtual addresses, relayed to their clients.
    fn relay_core_datagrams(&mut self, now: Instant) {
        for core in 0..self.net.cores.len() {
            while let Some(d) = self.net.cores.get(core).and_then(|c| c.outbound.pop()) {
                let relay = tunnel::parse_virtual(&d.peer).map(|(_, id)| RelayId(id));
                // The peer is the core's media socket as the client names it.
                let peer = self
                    .net
                    .peers
                    .iter()
                    .find(|p| p.core == core)
                    .map(|p| p.named);
                match (relay, peer) {
                    (Some(relay), Some(peer)) => {
                        self.net
                            .counters
                            .datagrams_out
                            .fetch_add(1, Ordering::Relaxed);
                        self.net
                            .counters
                            .bytes_out
                            .fetch_add(d.bytes().len() as u64, Ordering::Relaxed);
                        self.server
                            .handle_peer(now, relay, peer, d.bytes(), &mut self.net);
                    }
                    _ => self.net.counters.dropped(TunnelDrop::NoConnection),
                }
                if let Some(c) = self.net.cores.get(core) {
                    c.outbound.recycle(d);
                }
            }
        }
    }

    fn udp_readable(&mut self, now: Instant) {
        loop {
            let Some(u) = self.net.udp.as_ref() else {
                return;
            };
            match u.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    let key = ClientKey {
                        proto: Proto::Udp,
                        addr: from,
                    };
                    let data = self.buf.get(..n).unwrap_or(&[]);
                    self.server.handle_client(now, key, data, &mut self.net);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP errors surface here on Linux; they concern one peer, not the socket.
                Err(_) => {}
            }
        }
    }

    fn relay_readable(&mut self, now: Instant, tok: Token) {
        loop {
            let Some(r) = self.net.relays.get(&tok) else {
                return;
            };
            let id = r.id;
            match r.sock.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    // Name the peer as the client knows it (the advertised media address).
                    let Some(peer) = self
                        .net
                        .peers
                        .iter()
                        .find(|p| p.actual == from)
                        .map(|p| p.named)
                    else {
                        self.net.stats.unknown_peer += 1;
                        continue;
                    };
                    let data = self.buf.get(..n).unwrap_or(&[]);
                    self.server.handle_peer(now, id, peer, data, &mut self.net);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {}
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let Some(l) = self.tcp.as_ref() else { return };
            let (mut sock, addr) = match l.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return,
            };
            if self.net.streams.len() >= MAX_STREAMS {
                self.net.stats.streams_refused += 1;
                continue;
            }
            let _ = sock.set_nodelay(true);
            let tok = self.net.token();
            if self
                .poll
                .registry()
                .register(&mut sock, tok, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            let conn = match &self.acceptor {
                Some(acc) => match Ssl::new(acc.context()).and_then(|ssl| {
                    SslStream::new(ssl, sock).map_err(|_| openssl::error::ErrorStack::get())
                }) {
                    Ok(s) => Conn::Tls(s),
                    Err(_) => continue,
                },
                None => Conn::Plain(sock),
            };
            let handshaking = matches!(conn, Conn::Tls(_));
            self.net.stats.streams_accepted += 1;
            self.net.by_addr.insert(addr, tok);
            self.net.streams.insert(
                tok,
                Stream {
                    conn,
                    addr,
                    handshaking,
                    since: now,
                    inbuf: Vec::new(),
                    out: Vec::new(),
                },
            );
            // The first bytes may already be there (edge-triggered).
            self.stream_event(now, tok);
        }
    }

    fn stream_event(&mut self, now: Instant, tok: Token) {
        if let Err(why) = self.stream_io(now, tok) {
            match why {
                Close::Handshake => self.net.stats.tls_handshake_failed += 1,
                Close::Invalid => self.net.stats.stream_invalid += 1,
                Close::Eof => {}
            }
            self.close_stream(tok);
        }
    }

    fn stream_io(&mut self, now: Instant, tok: Token) -> Result<(), Close> {
        let Some(s) = self.net.streams.get_mut(&tok) else {
            return Ok(());
        };
        if s.handshaking {
            let Conn::Tls(tls) = &mut s.conn else {
                return Err(Close::Handshake);
            };
            match tls.accept() {
                Ok(()) => s.handshaking = false,
                Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                    return Ok(())
                }
                Err(_) => return Err(Close::Handshake),
            }
        }
        // Read everything there is (edge-triggered), cutting frames as they complete.
        let mut eof = false;
        loop {
            let r = match &mut s.conn {
                Conn::Tls(t) => match t.ssl_read(&mut self.buf) {
                    Ok(0) => Ok(0),
                    Ok(n) => Ok(n),
                    Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                        Err(io::ErrorKind::WouldBlock)
                    }
                    Err(e) if e.code() == ErrorCode::ZERO_RETURN => Ok(0),
                    Err(_) => Err(io::ErrorKind::ConnectionReset),
                },
                Conn::Plain(p) => p.read(&mut self.buf).map_err(|e| e.kind()),
            };
            match r {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => s.inbuf.extend_from_slice(self.buf.get(..n).unwrap_or(&[])),
                Err(io::ErrorKind::WouldBlock) => break,
                Err(io::ErrorKind::Interrupted) => {}
                Err(_) => return Err(Close::Eof),
            }
            if s.inbuf.len() > BUF {
                break;
            }
        }
        let key = ClientKey {
            proto: Proto::Stream,
            addr: s.addr,
        };
        let mut inbuf = std::mem::take(&mut s.inbuf);
        let mut at = 0;
        let res = loop {
            match next_frame(inbuf.get(at..).unwrap_or(&[])) {
                Frame::Complete(n) => {
                    let frame = inbuf.get(at..at + n).unwrap_or(&[]);
                    self.server.handle_client(now, key, frame, &mut self.net);
                    at += n;
                }
                Frame::Partial => break Ok(()),
                Frame::Invalid => break Err(Close::Invalid),
            }
        };
        inbuf.drain(..at.min(inbuf.len()));
        if let Some(s) = self.net.streams.get_mut(&tok) {
            s.inbuf = inbuf;
        }
        res?;
        self.flush_stream(tok)?;
        if eof {
            return Err(Close::Eof);
        }
        Ok(())
    }

    fn flush_streams(&mut self) {
        let dirty = std::mem::take(&mut self.net.dirty);
        for tok in dirty {
            if self.flush_stream(tok).is_err() {
                self.close_stream(tok);
            }
        }
    }

    fn flush_stream(&mut self, tok: Token) -> Result<(), Close> {
        let Some(s) = self.net.streams.get_mut(&tok) else {
            return Ok(());
        };
        if s.handshaking {
            return Ok(());
        }
        let mut done = 0;
        while done < s.out.len() {
            let chunk = s.out.get(done..).unwrap_or(&[]);
            let r = match &mut s.conn {
                Conn::Tls(t) => match t.ssl_write(chunk) {
                    Ok(n) => Ok(n),
                    Err(e) if matches!(e.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                        Err(io::ErrorKind::WouldBlock)
                    }
                    Err(_) => Err(io::ErrorKind::ConnectionReset),
                },
                Conn::Plain(p) => p.write(chunk).map_err(|e| e.kind()),
            };
            match r {
                Ok(0) => return Err(Close::Eof),
                Ok(n) => done += n,
                Err(io::ErrorKind::WouldBlock) => break,
                Err(io::ErrorKind::Interrupted) => {}
                Err(_) => return Err(Close::Eof),
            }
        }
        s.out.drain(..done);
        let _ = s.conn.tcp().flush();
        Ok(())
    }

    fn expire_handshakes(&mut self, now: Instant) {
        let late: Vec<Token> = self
            .net
            .streams
            .iter()
            .filter(|(_, s)| s.handshaking && now.duration_since(s.since) > HANDSHAKE_TIMEOUT)
            .map(|(&t, _)| t)
            .collect();
        for t in late {
            self.net.stats.handshake_timeout += 1;
            self.close_stream(t);
        }
    }

    fn close_stream(&mut self, tok: Token) {
        let Some(mut s) = self.net.streams.remove(&tok) else {
            return;
        };
        self.net.by_addr.remove(&s.addr);
        let _ = self.poll.registry().deregister(s.conn.tcp());
        let key = ClientKey {
            proto: Proto::Stream,
            addr: s.addr,
        };
        self.server.client_closed(key, &mut self.net);
    }
}

enum Close {
    Handshake,
    Invalid,
    Eof,
}
