//! Starts the media plane: one pinned worker thread per configured core, and a router
//! thread between control and the workers.
//!
//! The router is the only place that knows which core holds which room. It places a new
//! room on the least-loaded core (each worker publishes its load in an atomic), forwards
//! every other command to the core of the room the command names, and merges the per-core
//! answers to `GetStats` into one. Workers never talk to each other.
//!
//! With `tcp_port` set, an ICE-TCP front (`crate::tunnel::ice_tcp`) runs on a thread of
//! its own beside them, linked to every core by a pair of bounded queues. The router tells
//! it which core owns which local ICE ufrag ([`IceRoutes`]), from the `CreateWebrtcTransport`
//! and `RestartIce` commands it routes, so a new TCP connection reaches the right core.

pub mod worker;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, select, Receiver, Sender};
use pb::command::Body;
use prism_proto::control as pb;

use crate::control::{self, ControlClient, ControlServer};
use crate::engine::{Engine, EngineConfig};
use crate::io::socket::{bind_udp, SocketConfig};
use crate::io::{Driver, DriverKind, DriverUser, Waker, XdpBind, XdpMode, XdpTarget};
use crate::tunnel::ice_tcp::{IceTcpConfig, IceTcpFront};
use crate::tunnel::{self, CoreTunnels, FrontCounters, FrontEnd, FrontKind, IceRoutes};
use crate::turn::front::TurnFront;
use worker::WorkerShared;

/// How the media plane is laid out.
#[derive(Clone, Debug)]
pub struct ForwarderConfig {
    /// CPU ids to run workers on, one worker each. Empty: one per available CPU.
    pub cores: Vec<usize>,
    /// Pin each worker to its CPU.
    pub pin: bool,
    /// Address the UDP sockets bind to.
    pub bind_ip: IpAddr,
    /// Worker `i` binds `base_port + i`; 0 lets the kernel choose each port.
    pub base_port: u16,
    pub driver: DriverKind,
    pub recv_buffer: usize,
    pub send_buffer: usize,
    pub busy_poll_us: Option<u32>,
    pub engine: EngineConfig,
    /// ICE over TCP (RFC 6544): the TCP port of the passive candidate, on `bind_ip`
    /// (0: any free port). None: no TCP front.
    pub tcp_port: Option<u16>,
    /// Limits of the ICE-TCP front.
    pub ice_tcp: IceTcpConfig,
    /// The embedded TURN server; its peers are filled in with the cores' addresses.
    pub turn: Option<crate::turn::front::FrontConfig>,
    /// The interface (and XDP mode) of the `AfXdp` driver: one XDP program for every core
    /// on it, core `i` on receive queue `xdp_first_queue + i`.
    pub xdp: Option<(String, XdpMode)>,
    /// The receive queue core 0 serves with af_xdp; core `i` serves `xdp_first_queue + i`.
    pub xdp_first_queue: u32,
    /// How the af_xdp sockets are bound (copy, zero-copy, or zero-copy where possible).
    pub xdp_bind: XdpBind,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            cores: Vec::new(),
            pin: true,
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: 0,
            driver: DriverKind::Auto,
            recv_buffer: 8 << 20,
            send_buffer: 8 << 20,
            busy_poll_us: None,
            engine: EngineConfig::default(),
            tcp_port: None,
            ice_tcp: IceTcpConfig::default(),
            turn: None,
            xdp: None,
            xdp_first_queue: 0,
            xdp_bind: XdpBind::Copy,
        }
    }
}

struct Worker {
    commands: Sender<pb::Command>,
    waker: Arc<dyn Waker>,
    shared: Arc<WorkerShared>,
    local: SocketAddr,
    driver: &'static str,
    join: Option<JoinHandle<()>>,
}

/// A running media plane.
pub struct Forwarder {
    workers: Vec<Worker>,
    tcp: Option<TcpFront>,
    turn: Option<TurnFront>,
    router: Option<JoinHandle<()>>,
    stop_router: Sender<()>,
    client: ControlClient,
}

/// The running ICE-TCP front.
struct TcpFront {
    local: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    waker: Arc<dyn Waker>,
    join: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("cores", &self.core_addrs())
            .finish()
    }
}

impl Forwarder {
    /// Binds every worker's socket, starts the workers and the router.
    pub fn start(cfg: ForwarderConfig) -> io::Result<Self> {
        let cpus: Vec<usize> = if cfg.cores.is_empty() {
            (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
        } else {
            cfg.cores.clone()
        };
        if cfg.bind_ip.is_unspecified() && cfg.engine.advertise_ip.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "media sockets bound to {} need an address to give clients: set one to \
                     advertise (rtc.node_ip, --node-ip or NODE_IP)",
                    cfg.bind_ip
                ),
            ));
        }
        let kind = cfg.driver.resolve();
        if kind == DriverKind::AfXdp && cfg.xdp.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the af_xdp driver needs an interface (--interface or rtc.interface)",
            ));
        }
        let (events_tx, events_rx) = bounded::<pb::Event>(65_536);
        let mut ecfg = cfg.engine;
        let front = match cfg.tcp_port {
            Some(port) => {
                let f = IceTcpFront::bind(SocketAddr::new(cfg.bind_ip, port), cfg.ice_tcp)?;
                ecfg.tcp_port = Some(f.local_addr().port());
                Some(f)
            }
            None => None,
        };
        let mut front_ends: Vec<FrontEnd> = Vec::new();
        let mut turn = cfg.turn.clone().map(TurnFront::bind).transpose()?;
        let (mut turn_ends, mut turn_peers) = (Vec::new(), Vec::new());
        let mut workers = Vec::with_capacity(cpus.len());
        for (i, &cpu) in cpus.iter().enumerate() {
            let port = if cfg.base_port == 0 {
                0
            } else {
                cfg.base_port
                    .checked_add(i as u16)
                    .ok_or_else(|| io::Error::other("port range overflows"))?
            };
            let sock = bind_udp(&SocketConfig {
                bind: SocketAddr::new(cfg.bind_ip, port),
                recv_buffer: cfg.recv_buffer,
                send_buffer: cfg.send_buffer,
                busy_poll_us: cfg.busy_poll_us,
                reuse_port: false,
            })?;
            let (cmd_tx, cmd_rx) = bounded::<pb::Command>(4096);
            let events = events_tx.clone();
            let mut ends = Vec::new();
            if let Some(f) = &front {
                let (fe, ce) = tunnel::link(
                    FrontKind::IceTcp,
                    tunnel::QUEUE_CAPACITY,
                    f.waker(),
                    f.counters(),
                );
                front_ends.push(fe);
                ends.push(ce);
            }
            if let Some(t) = &turn {
                let (fe, ce) = tunnel::link(
                    FrontKind::Turn,
                    tunnel::QUEUE_CAPACITY,
                    t.waker(),
                    t.counters(),
                );
                turn_ends.push(fe);
                ends.push(ce);
                let ips = match &cfg.turn {
                    Some(c) if !c.peer_ips.is_empty() => c.peer_ips.clone(),
                    _ => ecfg.advertise_ip.into_iter().collect(),
                };
                turn_peers.extend(crate::turn::front::core_peers(i, sock.local_addr()?, &ips));
            }
            let xdp = cfg.xdp.as_ref().map(|(interface, mode)| XdpTarget {
                interface: interface.clone(),
                queue: cfg.xdp_first_queue + i as u32,
                mode: *mode,
                bind: cfg.xdp_bind,
            });
            let worker = spawn(
                i,
                cpu,
                cfg.pin,
                (kind, xdp),
                sock,
                ecfg,
                cmd_rx,
                events,
                cmd_tx,
                CoreTunnels::new(ends),
            )?;
            if let Some(fe) = front_ends.get_mut(i) {
                fe.wake_core = Some(worker.waker.clone());
            }
            if let Some(fe) = turn_ends.get_mut(i) {
                fe.wake_core = Some(worker.waker.clone());
            }
            workers.push(worker);
        }
        let routes = IceRoutes::default();
        let mut fronts = Vec::new();
        if let Some(t) = &mut turn {
            let listen = t.udp_addr().or(t.stream_addr()).map(|a| a.to_string());
            fronts.push((FrontKind::Turn, listen.unwrap_or_default(), t.counters()));
            t.spawn_linked(turn_ends, turn_peers)?;
        }
        let tcp = match front {
            Some(f) => {
                let local = f.local_addr();
                let waker = f.waker();
                fronts.push((FrontKind::IceTcp, local.to_string(), f.counters()));
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let join = f.spawn(front_ends, routes.clone(), stop.clone())?;
                Some(TcpFront {
                    local,
                    stop,
                    waker,
                    join: Some(join),
                })
            }
            None => None,
        };
        let (client, server) = control::channel(4096);
        let (stop_tx, stop_rx) = bounded(1);
        let route = Router {
            server,
            events: events_rx,
            cmd: workers
                .iter()
                .map(|w| CoreLink {
                    commands: w.commands.clone(),
                    waker: w.waker.clone(),
                    shared: w.shared.clone(),
                })
                .collect(),
            rooms: HashMap::new(),
            pending_stats: HashMap::new(),
            ice: tcp.as_ref().map(|_| IceIndex {
                routes,
                ufrags: HashMap::new(),
            }),
            fronts,
        };
        let router = std::thread::Builder::new()
            .name("prism-router".into())
            .spawn(move || route.run(stop_rx))?;
        Ok(Self {
            workers,
            tcp,
            turn,
            router: Some(router),
            stop_router: stop_tx,
            client,
        })
    }

    /// A handle for sending commands and receiving events.
    pub fn client(&self) -> ControlClient {
        self.client.clone()
    }

    /// Each core's UDP address, in core order.
    pub fn core_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.local).collect()
    }

    /// The ICE-TCP front's listening address, when it runs.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|t| t.local)
    }

    /// The embedded TURN server, when it runs.
    pub fn turn(&self) -> Option<&TurnFront> {
        self.turn.as_ref()
    }

    /// The I/O driver the cores use.
    pub fn driver_name(&self) -> &'static str {
        self.workers.first().map_or("none", |w| w.driver)
    }

    /// Stops the router and every worker and waits for them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // TURN first: it feeds the cores.
        drop(self.turn.take());
        let _ = self.stop_router.try_send(());
        if let Some(r) = self.router.take() {
            let _ = r.join();
        }
        for w in &mut self.workers {
            w.shared.stop.store(true, Ordering::Relaxed);
            w.waker.wake();
        }
        for w in &mut self.workers {
            if let Some(j) = w.join.take() {
                let _ = j.join();
            }
        }
        if let Some(t) = &mut self.tcp {
            t.stop.store(true, Ordering::Relaxed);
            t.waker.wake();
            if let Some(j) = t.join.take() {
                let _ = j.join();
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts worker `i` on `cpu`. The driver is built on the worker's own thread: an io_uring
/// ring belongs to the task that set it up (its completions run as task work there), so
/// building it elsewhere would interrupt the builder's blocking calls with `EINTR`.
#[allow(clippy::too_many_arguments)]
fn spawn(
    i: usize,
    cpu: usize,
    pin: bool,
    (kind, xdp): (DriverKind, Option<XdpTarget>),
    sock: std::net::UdpSocket,
    ecfg: EngineConfig,
    cmd_rx: Receiver<pb::Command>,
    events: Sender<pb::Event>,
    cmd_tx: Sender<pb::Command>,
    tunnels: CoreTunnels,
) -> io::Result<Worker> {
    let shared = Arc::new(WorkerShared::default());
    let sh = shared.clone();
    let (ready_tx, ready_rx) = bounded::<io::Result<Ready>>(1);
    let join = std::thread::Builder::new()
        .name(format!("prism-core-{i}"))
        .spawn(move || {
            if pin && !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                tracing::warn!(cpu, "could not pin worker to its CPU");
            }
            let worker = WorkerStart {
                i,
                ecfg,
                cmd_rx,
                events,
                shared: sh,
                ready: ready_tx,
                tunnels,
            };
            if let Err((e, worker)) = kind.open_on(sock, xdp.as_ref(), worker) {
                let _ = worker.ready.send(Err(e));
            }
        })?;
    let ready = ready_rx
        .recv()
        .map_err(|_| io::Error::other("worker thread exited during start"))??;
    Ok(Worker {
        commands: cmd_tx,
        waker: ready.waker,
        shared,
        local: ready.local,
        driver: ready.driver,
        join: Some(join),
    })
}

/// What a worker reports once its driver is up.
struct Ready {
    waker: Arc<dyn Waker>,
    local: SocketAddr,
    driver: &'static str,
}

/// Everything a worker thread needs besides its driver.
struct WorkerStart {
    i: usize,
    ecfg: EngineConfig,
    cmd_rx: Receiver<pb::Command>,
    events: Sender<pb::Event>,
    shared: Arc<WorkerShared>,
    ready: Sender<io::Result<Ready>>,
    tunnels: CoreTunnels,
}

impl DriverUser for WorkerStart {
    type Output = ();

    fn run<D: Driver>(self, driver: D) {
        let local = driver.local_addr();
        let _ = self.ready.send(Ok(Ready {
            waker: driver.waker(),
            local,
            driver: driver.name(),
        }));
        let engine = Engine::new(self.i as u32, local, self.ecfg);
        worker::run(
            driver,
            engine,
            self.cmd_rx,
            self.events,
            self.shared,
            self.tunnels,
        );
    }
}

/// The router's side of one worker.
struct CoreLink {
    commands: Sender<pb::Command>,
    waker: Arc<dyn Waker>,
    shared: Arc<WorkerShared>,
}

struct Router {
    server: ControlServer,
    events: Receiver<pb::Event>,
    cmd: Vec<CoreLink>,
    rooms: HashMap<u64, usize>,
    /// request id → (answers still expected, merged stats so far).
    pending_stats: HashMap<u64, (usize, pb::Stats)>,
    /// Which core owns which local ufrag, for the ICE-TCP front (None: no front).
    ice: Option<IceIndex>,
    /// Fronts whose counters go into every `GetStats` answer.
    fronts: Vec<(FrontKind, String, Arc<FrontCounters>)>,
}

/// The router's record of local ufrags, to keep [`IceRoutes`] in step with transports.
struct IceIndex {
    routes: IceRoutes,
    /// (room, transport) → its current local ufrag.
    ufrags: HashMap<(u64, u64), Vec<u8>>,
}

impl IceIndex {
    /// Records the ufrag a command gives a transport on `core`, or forgets those of a
    /// transport or room it closes.
    fn note(&mut self, body: &Body, core: usize) {
        let (key, ufrag) = match body {
            Body::CreateWebrtcTransport(c) => ((c.room_id, c.transport_id), &c.local_ufrag),
            Body::RestartIce(c) => ((c.room_id, c.transport_id), &c.local_ufrag),
            Body::CloseTransport(c) => {
                if let Some(old) = self.ufrags.remove(&(c.room_id, c.transport_id)) {
                    self.routes.remove(&old);
                }
                return;
            }
            Body::CloseRoom(c) => {
                let routes = &self.routes;
                self.ufrags.retain(|(room, _), u| {
                    if *room == c.room_id {
                        routes.remove(u);
                    }
                    *room != c.room_id
                });
                return;
            }
            _ => return,
        };
        let ufrag = ufrag.as_bytes().to_vec();
        self.routes.insert(&ufrag, core);
        if let Some(old) = self.ufrags.insert(key, ufrag) {
            if self.ufrags.get(&key) != Some(&old) {
                self.routes.remove(&old);
            }
        }
    }
}

impl Router {
    fn run(mut self, stop: Receiver<()>) {
        let commands = self.server.commands().clone();
        loop {
            select! {
                recv(commands) -> c => match c {
                    Ok(c) => self.route(c),
                    Err(_) => return,
                },
                recv(self.events) -> e => match e {
                    Ok(e) => self.on_core_event(e),
                    Err(_) => return,
                },
                recv(stop) -> _ => return,
            }
        }
    }

    fn reply(&self, ev: pb::Event) {
        let _ = self.server.send_event(ev);
    }

    fn to_core(&self, core: usize, cmd: pb::Command) {
        let Some(link) = self.cmd.get(core) else {
            return;
        };
        let id = cmd.request_id;
        if link.commands.send(cmd).is_err() {
            self.reply(control::error_event(id, "core stopped"));
        } else {
            link.waker.wake();
        }
    }

    fn route(&mut self, cmd: pb::Command) {
        let id = cmd.request_id;
        let room = match &cmd.body {
            None => return self.reply(control::error_event(id, "command without a body")),
            Some(Body::GetStats(_)) => {
                self.pending_stats
                    .insert(id, (self.cmd.len(), pb::Stats::default()));
                for core in 0..self.cmd.len() {
                    self.to_core(core, cmd.clone());
                }
                return;
            }
            Some(Body::CreateRoom(c)) => {
                let core = if let Some(&core) = self.rooms.get(&c.room_id) {
                    core
                } else if c.pin_core {
                    if c.core as usize >= self.cmd.len() {
                        return self.reply(control::error_event(
                            id,
                            format!("no core {} (have {})", c.core, self.cmd.len()),
                        ));
                    }
                    c.core as usize
                } else {
                    self.least_loaded()
                };
                self.rooms.insert(c.room_id, core);
                // Count the room at once so a burst of creations spreads out.
                if let Some(link) = self.cmd.get(core) {
                    link.shared.load.fetch_add(1, Ordering::Relaxed);
                }
                return self.to_core(core, cmd);
            }
            Some(Body::CloseRoom(c)) => {
                let r = c.room_id;
                match self.rooms.remove(&r) {
                    Some(core) => {
                        if let (Some(ice), Some(b)) = (self.ice.as_mut(), cmd.body.as_ref()) {
                            ice.note(b, core);
                        }
                        return self.to_core(core, cmd);
                    }
                    None => r,
                }
            }
            Some(Body::CreatePlainTransport(c)) => c.room_id,
            Some(Body::CreateWebrtcTransport(c)) => c.room_id,
            Some(Body::AddTrack(c)) => c.room_id,
            Some(Body::AddDownTrack(c)) => c.room_id,
            Some(Body::SetPreferredLayer(c)) => c.room_id,
            Some(Body::SetPaused(c)) => c.room_id,
            Some(Body::CloseTransport(c)) => c.room_id,
            Some(Body::RemoveTrack(c)) => c.room_id,
            Some(Body::RemoveDownTrack(c)) => c.room_id,
            Some(Body::SendData(c)) => c.room_id,
            Some(Body::SetHeaderExtensions(c)) => c.room_id,
            Some(Body::RestartIce(c)) => c.room_id,
        };
        match self.rooms.get(&room) {
            Some(&core) => {
                if let (Some(ice), Some(b)) = (self.ice.as_mut(), cmd.body.as_ref()) {
                    ice.note(b, core);
                }
                self.to_core(core, cmd)
            }
            None => self.reply(control::error_event(id, format!("no room {room}"))),
        }
    }

    fn least_loaded(&self) -> usize {
        self.cmd
            .iter()
            .enumerate()
            .min_by_key(|(_, link)| link.shared.load.load(Ordering::Relaxed))
            .map_or(0, |(i, _)| i)
    }

    fn on_core_event(&mut self, ev: pb::Event) {
        if let Some((left, merged)) = self.pending_stats.get_mut(&ev.request_id) {
            if let Some(pb::event::Body::Stats(s)) = ev.body {
                merged.cores.extend(s.cores);
                merged.transports.extend(s.transports);
            }
            *left -= 1;
            if *left == 0 {
                if let Some((_, mut merged)) = self.pending_stats.remove(&ev.request_id) {
                    merged.cores.sort_by_key(|c| c.core);
                    for (kind, listen, counters) in &self.fronts {
                        merged.fronts.push(counters.to_proto(*kind, listen.clone()));
                    }
                    self.reply(pb::Event {
                        request_id: ev.request_id,
                        body: Some(pb::event::Body::Stats(merged)),
                    });
                }
            }
            return;
        }
        self.reply(ev);
    }
}
