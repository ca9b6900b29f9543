//! The ICE-TCP front: passive TCP candidates (RFC 6544) with RFC 4571 framing, for clients
//! whose networks block UDP.
//!
//! One thread (mio, edge-triggered) accepts on the TCP port, reads frames, and hands each
//! to the core that owns the connection's transport, under the connection's virtual
//! address (see [`super`]). A new connection is routed by its first frame, which must be a
//! STUN binding request: its USERNAME names our local ufrag, and [`IceRoutes`] says which
//! core owns that ufrag. From then on every frame goes to that core; what the core sends
//! back comes through its outbound queue and is written, framed, to the connection.
//!
//! Bad input closes the connection with a counted [`CloseReason`] and never touches
//! other connections: a first frame that is not a STUN binding request (`garbage`), a
//! length prefix above the largest datagram (`frame_too_large`), no valid check answered
//! by a core within the handshake timeout, silence after that for the idle timeout, and
//! connections beyond the maximum (`too_many_connections`, closed at accept). Each
//! connection's write backlog is bounded: a slow reader's datagrams are dropped and
//! counted (`write_backlog`), as a full UDP socket buffer would drop them.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::framing::{self, Deframer, FrameError, PREFIX};
use super::{
    parse_virtual, virtual_addr, CloseReason, FrontCounters, FrontEnd, FrontKind, IceRoutes,
    TunnelDrop,
};
use crate::io::Waker;
use crate::wire::demux::{self, PacketKind};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection tokens are the connection id plus this.
const FIRST_CONN: usize = 2;

/// Limits of the ICE-TCP front.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IceTcpConfig {
    /// Connections held at most; more are closed at accept.
    pub max_connections: usize,
    /// A connection no core has answered (no valid ICE check) within this is closed.
    pub handshake_timeout: Duration,
    /// An answered connection that receives nothing for this long is closed (ICE consent
    /// checks arrive every few seconds; consent itself lapses after 30 s).
    pub idle_timeout: Duration,
    /// Bytes waiting to be written per connection at most; beyond, datagrams are dropped.
    pub max_write_backlog: usize,
}

impl Default for IceTcpConfig {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(40),
            max_write_backlog: 256 * 1024,
        }
    }
}

/// A waker for the front's poll loop, given to the cores.
struct FrontWaker(mio::Waker);

impl Waker for FrontWaker {
    fn wake(&self) {
        let _ = self.0.wake();
    }
}

/// A front built but not yet running: the cores need its waker and counters before they
/// start, and it needs theirs before it runs.
pub struct IceTcpFront {
    poll: Poll,
    listener: TcpListener,
    local: SocketAddr,
    waker: Arc<dyn Waker>,
    counters: Arc<FrontCounters>,
    cfg: IceTcpConfig,
}

impl std::fmt::Debug for IceTcpFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceTcpFront")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl IceTcpFront {
    /// Binds the listening socket.
    pub fn bind(addr: SocketAddr, cfg: IceTcpConfig) -> io::Result<Self> {
        let poll = Poll::new()?;
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(std_listener);
        let local = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker: Arc<dyn Waker> = Arc::new(FrontWaker(mio::Waker::new(poll.registry(), WAKER)?));
        Ok(Self {
            poll,
            listener,
            local,
            waker,
            counters: Arc::new(FrontCounters::default()),
            cfg,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn waker(&self) -> Arc<dyn Waker> {
        self.waker.clone()
    }

    pub fn counters(&self) -> Arc<FrontCounters> {
        self.counters.clone()
    }

    /// Runs the front on a thread of its own until `stop` is set (and the front woken).
    pub fn spawn(
        self,
        cores: Vec<FrontEnd>,
        routes: IceRoutes,
        stop: Arc<AtomicBool>,
    ) -> io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("prism-ice-tcp".into())
            .spawn(move || {
                let mut f = Front {
                    poll: self.poll,
                    listener: self.listener,
                    counters: self.counters,
                    cfg: self.cfg,
                    cores,
                    routes,
                    conns: HashMap::new(),
                    next_id: 1,
                    wake_cores: Vec::new(),
                };
                f.run(&stop);
            })
    }
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    vaddr: SocketAddr,
    core: Option<usize>,
    /// A core has sent something to it (a check was answered).
    answered: bool,
    opened: Instant,
    last_rx: Instant,
    rx: Deframer,
    /// Framed bytes not yet written, from `wpos`.
    wbuf: Vec<u8>,
    wpos: usize,
}

struct Front {
    poll: Poll,
    listener: TcpListener,
    counters: Arc<FrontCounters>,
    cfg: IceTcpConfig,
    cores: Vec<FrontEnd>,
    routes: IceRoutes,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    /// Cores that got datagrams in this round, woken once at its end.
    wake_cores: Vec<bool>,
}

/// What reading a connection came to.
enum ReadEnd {
    WouldBlock,
    Close(CloseReason),
}

impl Front {
    fn run(&mut self, stop: &AtomicBool) {
        tracing::info!(listen = ?self.listener.local_addr().ok(), "ICE-TCP front started");
        self.wake_cores = vec![false; self.cores.len()];
        let mut events = Events::with_capacity(256);
        let mut next_sweep = Instant::now() + Duration::from_secs(1);
        while !stop.load(Ordering::Relaxed) {
            let timeout = next_sweep.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "ICE-TCP poll failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let now = Instant::now();
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(now),
                    WAKER => {}
                    Token(t) => {
                        let id = (t - FIRST_CONN) as u64;
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            if let ReadEnd::Close(r) = self.read(id, now) {
                                self.close(id, r);
                                continue;
                            }
                        }
                        if ev.is_writable() {
                            if let Err(r) = self.flush(id) {
                                self.close(id, r);
                            }
                        }
                    }
                }
            }
            self.drain_cores();
            for (core, wake) in self.wake_cores.iter_mut().enumerate() {
                if std::mem::take(wake) {
                    if let Some(w) = self.cores.get(core).and_then(|c| c.wake_core.as_ref()) {
                        w.wake();
                    }
                }
            }
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + Duration::from_secs(1);
            }
        }
        tracing::info!("ICE-TCP front stopped");
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: leave the rest in the backlog for the next round.
                    tracing::warn!(error = %e, "ICE-TCP accept failed");
                    return;
                }
            };
            self.counters.accepted.fetch_add(1, Ordering::Relaxed);
            if self.conns.len() >= self.cfg.max_connections {
                self.counters.closed(CloseReason::TooManyConnections);
                drop(stream);
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let _ = stream.set_nodelay(true);
            let token = Token(id as usize + FIRST_CONN);
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(error = %e, "ICE-TCP register failed");
                self.counters.closed(CloseReason::IoError);
                continue;
            }
            self.counters.open.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, id, "ICE-TCP connection accepted");
            let mut conn = Conn {
                stream,
                peer,
                vaddr: virtual_addr(FrontKind::IceTcp, id),
                core: None,
                answered: false,
                opened: now,
                last_rx: now,
                rx: Deframer::new(),
                wbuf: Vec::new(),
                wpos: 0,
            };
            // Edge-triggered: bytes may already wait.
            let end = read_conn(
                &mut conn,
                now,
                &self.cores,
                &self.routes,
                &self.counters,
                &mut self.wake_cores,
            );
            self.conns.insert(id, conn);
            if let ReadEnd::Close(r) = end {
                self.close(id, r);
            }
        }
    }

    fn read(&mut self, id: u64, now: Instant) -> ReadEnd {
        let Some(conn) = self.conns.get_mut(&id) else {
            return ReadEnd::WouldBlock;
        };
        read_conn(
            conn,
            now,
            &self.cores,
            &self.routes,
            &self.counters,
            &mut self.wake_cores,
        )
    }

    /// Datagrams the cores sent, framed into their connections' write buffers.
    fn drain_cores(&mut self) {
        let mut touched: Vec<u64> = Vec::new();
        for fe in &self.cores {
            while let Some(d) = fe.outbound.pop() {
                let id = parse_virtual(&d.peer).map(|(_, id)| id);
                match id.and_then(|id| self.conns.get_mut(&id).map(|c| (id, c))) {
                    None => self.counters.dropped(TunnelDrop::NoConnection),
                    Some((id, c)) => {
                        c.answered = true;
                        let len = d.bytes().len();
                        if c.wbuf.len() - c.wpos + PREFIX + len > self.cfg.max_write_backlog {
                            self.counters.dropped(TunnelDrop::WriteBacklog);
                        } else {
                            if c.wpos > 0 && c.wpos == c.wbuf.len() {
                                c.wbuf.clear();
                                c.wpos = 0;
                            }
                            framing::encode(d.bytes(), &mut c.wbuf);
                            self.counters.datagrams_out.fetch_add(1, Ordering::Relaxed);
                            self.counters
                                .bytes_out
                                .fetch_add(len as u64, Ordering::Relaxed);
                            if touched.last() != Some(&id) {
                                touched.push(id);
                            }
                        }
                    }
                }
                fe.outbound.recycle(d);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for id in touched {
            if let Err(r) = self.flush(id) {
                self.close(id, r);
            }
        }
    }

    /// Writes what the connection's buffer holds until the socket would block.
    fn flush(&mut self, id: u64) -> Result<(), CloseReason> {
        let Some(c) = self.conns.get_mut(&id) else {
            return Ok(());
        };
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => return Err(CloseReason::PeerClosed),
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_reason(&e)),
            }
        }
        if c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
        } else if c.wpos > c.wbuf.len() / 2 {
            c.wbuf.drain(..c.wpos);
            c.wpos = 0;
        }
        Ok(())
    }

    fn close(&mut self, id: u64, why: CloseReason) {
        if let Some(mut c) = self.conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.counters.open.fetch_sub(1, Ordering::Relaxed);
            self.counters.closed(why);
            tracing::debug!(peer = %c.peer, id, why = why.name(), "ICE-TCP connection closed");
        }
    }

    /// Closes connections past their handshake or idle timeout.
    fn sweep(&mut self, now: Instant) {
        let cfg = self.cfg;
        let expired: Vec<(u64, CloseReason)> = self
            .conns
            .iter()
            .filter_map(|(&id, c)| {
                if !c.answered {
                    (now.saturating_duration_since(c.opened) >= cfg.handshake_timeout)
                        .then_some((id, CloseReason::HandshakeTimeout))
                } else {
                    (now.saturating_duration_since(c.last_rx) >= cfg.idle_timeout)
                        .then_some((id, CloseReason::IdleTimeout))
                }
            })
            .collect();
        for (id, r) in expired {
            self.close(id, r);
        }
    }
}

fn io_reason(e: &io::Error) -> CloseReason {
    match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => CloseReason::PeerClosed,
        _ => CloseReason::IoError,
    }
}

/// Reads until the socket would block, routing each whole frame.
fn read_conn(
    c: &mut Conn,
    now: Instant,
    cores: &[FrontEnd],
    routes: &IceRoutes,
    counters: &FrontCounters,
    wake: &mut [bool],
) -> ReadEnd {
    loop {
        let spare = c.rx.spare();
        let n = match c.stream.read(spare) {
            Ok(0) => return ReadEnd::Close(CloseReason::PeerClosed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadEnd::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return ReadEnd::Close(io_reason(&e)),
        };
        c.rx.filled(n);
        c.last_rx = now;
        loop {
            let frame = match c.rx.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(FrameError::TooLarge(_)) => return ReadEnd::Close(CloseReason::FrameTooLarge),
            };
            counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
            counters
                .bytes_in
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
            let core = match c.core {
                Some(core) => core,
                None => {
                    // RFC 6544: the active side's first frame is its connectivity check.
                    if demux::classify(frame) != PacketKind::Stun {
                        return ReadEnd::Close(CloseReason::Garbage);
                    }
                    let Some((local, _)) = crate::ice::username_of(frame) else {
                        return ReadEnd::Close(CloseReason::Garbage);
                    };
                    match routes.core_of(local) {
                        Some(core) if core < cores.len() => {
                            tracing::debug!(peer = %c.peer, core, "ICE-TCP connection routed");
                            c.core = Some(core);
                            core
                        }
                        // Maybe the transport is not created yet: the client checks again.
                        _ => {
                            counters.dropped(TunnelDrop::Unrouted);
                            continue;
                        }
                    }
                }
            };
            if cores[core].inbound.push(c.vaddr, c.peer, frame) {
                wake[core] = true;
            } else {
                counters.dropped(TunnelDrop::CoreQueueFull);
            }
        }
    }
}
