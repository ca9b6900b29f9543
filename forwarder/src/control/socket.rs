//! The control protocol over a Unix or TCP socket, so `prism-forwarder` can run as its own
//! process beside a signaling front end that is not Prism's.
//!
//! Each connection speaks length-prefixed frames ([`super::frame`]): the client sends
//! [`Command`]s, the server sends [`Event`]s. Every command is answered by one event with the
//! same `request_id`; unsolicited events (`request_id` 0) go to every connection.
//!
//! Design: one accept thread (mio, so [`ControlSocketHandle::shutdown`] can wake it), one
//! pump thread that takes every event from the in-process [`ControlClient`] and routes it, and
//! per connection a reader thread (decode, forward) and a writer thread (encode, send). The
//! reader rewrites each command's connection-local `request_id` into a fresh id from the
//! client's counter and records `global -> (connection, local)`; the pump maps answers back.
//!
//! Invariants:
//! - Nothing a peer sends can panic the server or affect another connection: an oversized,
//!   truncated or undecodable frame, a wrong secret, or a client too slow to take its events
//!   (more than [`CONN_EVENT_QUEUE`] pending) closes that connection only, with a log line.
//! - TCP binds to a loopback address unless a shared secret is configured; [`serve`] refuses
//!   anything else. With a secret, the first frame from the client must be the secret's UTF-8
//!   bytes (a raw frame, not a protobuf message). It is compared in constant time; a wrong or
//!   missing secret closes the connection with no reply. Unix sockets rely on file
//!   permissions instead (the socket file is made `0600`).
//! - The pump never blocks on a connection; a connection's reader may block on the command
//!   queue, which is the backpressure a busy forwarder exerts.
//! - A client that closes its write half ends its session: answers still in flight are lost.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::frame::{self, FrameDecoder, FrameError};
use super::{command, error_event, Command, ControlClient, ControlError, Event};

/// Most connections served at once; more are closed on accept.
pub const MAX_CONNECTIONS: usize = 64;
/// Events queued for one connection before it counts as too slow and is closed.
pub const CONN_EVENT_QUEUE: usize = 1024;
/// Longest accepted shared secret, in bytes.
pub const MAX_SECRET: usize = 4096;
/// How long a client has to send its secret after connecting.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the pump looks at the stop flag while no event arrives.
const PUMP_TICK: Duration = Duration::from_millis(50);

/// Where the control socket listens (or, for a client, where it connects).
#[derive(Clone, PartialEq, Eq)]
pub enum ControlListen {
    /// A Unix stream socket at this path.
    Unix(PathBuf),
    /// TCP. Without a secret the address must be loopback.
    Tcp {
        /// The address to bind (port 0 picks a free port).
        addr: SocketAddr,
        /// Shared secret clients present in their first frame.
        secret: Option<String>,
    },
}

impl fmt::Debug for ControlListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => f.debug_tuple("Unix").field(path).finish(),
            // Never print the secret.
            Self::Tcp { addr, secret } => f
                .debug_struct("Tcp")
                .field("addr", addr)
                .field("secret", &secret.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

impl fmt::Display for ControlListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Tcp { addr, .. } => write!(f, "tcp:{addr}"),
        }
    }
}

/// A connected control socket of either kind.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(match self {
            Self::Tcp(s) => Self::Tcp(s.try_clone()?),
            Self::Unix(s) => Self::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        // Already-closed sockets report ENOTCONN; there is nothing more to do then.
        let _ = match self {
            Self::Tcp(s) => s.shutdown(Shutdown::Both),
            Self::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.set_read_timeout(t),
            Self::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn connect(target: &ControlListen) -> io::Result<Self> {
        Ok(match target {
            ControlListen::Unix(path) => Self::Unix(UnixStream::connect(path)?),
            ControlListen::Tcp { addr, .. } => {
                let s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                Self::Tcp(s)
            }
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.flush(),
            Self::Unix(s) => s.flush(),
        }
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<Stream> {
        let stream = match self {
            Self::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            Self::Unix(l) => Stream::Unix(l.accept()?.0),
        };
        // The listener is non-blocking for the accept loop; connections are served blocking.
        match &stream {
            Stream::Tcp(s) => s.set_nonblocking(false)?,
            Stream::Unix(s) => s.set_nonblocking(false)?,
        }
        Ok(stream)
    }

    fn raw_fd(&self) -> RawFd {
        match self {
            Self::Tcp(l) => l.as_raw_fd(),
            Self::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// One live connection as the rest of the server sees it.
struct Conn {
    /// A clone of the socket, to close it from outside its threads.
    stream: Stream,
    /// Set once authenticated: where the pump puts this connection's events.
    events: Option<Sender<Event>>,
    /// The reader thread; taken by shutdown to join it.
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Router {
    conns: HashMap<u64, Conn>,
    /// Global request id -> (connection, the connection's own request id).
    routes: HashMap<u64, (u64, u64)>,
}

struct Hub {
    router: Mutex<Router>,
    stop: AtomicBool,
    next_conn: AtomicU64,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Router> {
        // Every update keeps the maps consistent, so a poisoned lock is still usable.
        self.router.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `ev` for connection `id`; closes the connection if it is not keeping up.
    fn deliver(router: &Router, id: u64, ev: Event) {
        let Some(conn) = router.conns.get(&id) else {
            return;
        };
        let Some(tx) = &conn.events else {
            return;
        };
        match tx.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!(conn = id, "control client too slow to take events, closing");
                conn.stream.shutdown();
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// The running control socket server. Dropping it shuts it down.
pub struct ControlSocketHandle {
    local: ControlListen,
    hub: Arc<Hub>,
    waker: Arc<mio::Waker>,
    accept: Option<JoinHandle<()>>,
    pump: Option<JoinHandle<()>>,
    unix_path: Option<PathBuf>,
}

impl fmt::Debug for ControlSocketHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlSocketHandle")
            .field("local", &self.local)
            .field("connections", &self.connections())
            .finish_non_exhaustive()
    }
}

impl ControlSocketHandle {
    /// The bound address (with the real port when 0 was asked for). The secret is not
    /// repeated here: a client passes its own to [`SocketControlClient::connect`].
    pub fn local_addr(&self) -> &ControlListen {
        &self.local
    }

    /// Authenticated connections currently open.
    pub fn connections(&self) -> usize {
        self.hub
            .lock()
            .conns
            .values()
            .filter(|c| c.events.is_some())
            .count()
    }

    /// Stops accepting, closes every connection, waits for the server's threads and removes
    /// the Unix socket file.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.hub.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.waker.wake() {
            tracing::warn!("cannot wake the control accept thread: {e}");
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        if let Some(t) = self.pump.take() {
            let _ = t.join();
        }
        let threads: Vec<_> = {
            let mut router = self.hub.lock();
            router
                .conns
                .values_mut()
                .filter_map(|c| {
                    c.stream.shutdown();
                    c.thread.take()
                })
                .collect()
        };
        for t in threads {
            let _ = t.join();
        }
        if let Some(path) = self.unix_path.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("cannot remove control socket {}: {e}", path.display());
            }
        }
    }
}

impl Drop for ControlSocketHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves the control protocol on `listen`, forwarding commands through `client`.
///
/// The server takes every event that reaches `client` (and its clones) except answers to
/// in-process [`ControlClient::request`] calls; don't read events from another clone.
pub fn serve(listen: ControlListen, client: ControlClient) -> io::Result<ControlSocketHandle> {
    let (listener, local, unix_path, secret) = bind(&listen)?;
    let secret: Option<Arc<[u8]>> = secret.map(|s| Arc::from(s.into_bytes()));

    let hub = Arc::new(Hub {
        router: Mutex::new(Router::default()),
        stop: AtomicBool::new(false),
        next_conn: AtomicU64::new(1),
    });

    const LISTENER: mio::Token = mio::Token(0);
    const WAKER: mio::Token = mio::Token(1);
    let poll = mio::Poll::new()?;
    let fd = listener.raw_fd();
    poll.registry().register(
        &mut mio::unix::SourceFd(&fd),
        LISTENER,
        mio::Interest::READABLE,
    )?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), WAKER)?);

    let accept = {
        let hub = hub.clone();
        let client = client.clone();
        thread::Builder::new()
            .name("prism-ctl-accept".into())
            .spawn(move || accept_loop(poll, listener, hub, client, secret))?
    };
    let pump = {
        let hub = hub.clone();
        thread::Builder::new()
            .name("prism-ctl-pump".into())
            .spawn(move || pump_loop(hub, client))?
    };
    tracing::info!("control socket listening on {local}");
    Ok(ControlSocketHandle {
        local,
        hub,
        waker,
        accept: Some(accept),
        pump: Some(pump),
        unix_path,
    })
}

type Bound = (Listener, ControlListen, Option<PathBuf>, Option<String>);

fn bind(listen: &ControlListen) -> io::Result<Bound> {
    match listen {
        ControlListen::Tcp { addr, secret } => {
            if let Some(s) = secret {
                if s.is_empty() || s.len() > MAX_SECRET {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("control socket secret must be 1 to {MAX_SECRET} bytes long"),
                    ));
                }
            } else if !addr.ip().is_loopback() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "refusing to serve the control socket on non-loopback address {addr} \
                         without a shared secret"
                    ),
                ));
            }
            let l = TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            let local = ControlListen::Tcp {
                addr: l.local_addr()?,
                secret: None,
            };
            Ok((Listener::Tcp(l), local, None, secret.clone()))
        }
        ControlListen::Unix(path) => {
            remove_stale_socket(path)?;
            let l = UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            l.set_nonblocking(true)?;
            Ok((
                Listener::Unix(l),
                ControlListen::Unix(path.clone()),
                Some(path.clone()),
                None,
            ))
        }
    }
}

/// A socket file left by a server that died is removed; a live one or a non-socket file is
/// an error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("a control server already listens on {}", path.display()),
        ));
    }
    std::fs::remove_file(path)
}

fn accept_loop(
    mut poll: mio::Poll,
    listener: Listener,
    hub: Arc<Hub>,
    client: ControlClient,
    secret: Option<Arc<[u8]>>,
) {
    let mut events = mio::Events::with_capacity(8);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!("control accept loop stopped: {e}");
            return;
        }
        if hub.stop.load(Ordering::SeqCst) {
            return;
        }
        // Readiness is edge-triggered: accept until the backlog is empty.
        loop {
            match listener.accept() {
                Ok(stream) => admit(stream, &hub, &client, &secret),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    break;
                }
            }
        }
    }
}

/// Registers an accepted connection and starts its reader thread.
fn admit(stream: Stream, hub: &Arc<Hub>, client: &ControlClient, secret: &Option<Arc<[u8]>>) {
    let id = hub.next_conn.fetch_add(1, Ordering::Relaxed);
    let outside = match stream.try_clone() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(conn = id, "cannot clone control connection: {e}");
            return;
        }
    };
    let mut router = hub.lock();
    if router.conns.len() >= MAX_CONNECTIONS {
        tracing::warn!(
            conn = id,
            "too many control connections, closing the new one"
        );
        stream.shutdown();
        return;
    }
    let spawned = {
        let hub = hub.clone();
        let client = client.clone();
        let secret = secret.clone();
        thread::Builder::new()
            .name(format!("prism-ctl-conn-{id}"))
            .spawn(move || serve_conn(id, stream, hub, client, secret))
    };
    match spawned {
        Ok(thread) => {
            router.conns.insert(
                id,
                Conn {
                    stream: outside,
                    events: None,
                    thread: Some(thread),
                },
            );
        }
        Err(e) => {
            tracing::warn!(conn = id, "cannot start control connection thread: {e}");
            outside.shutdown();
        }
    }
}

/// Reader side of one connection; owns its writer thread. Cleans up after itself.
fn serve_conn(
    id: u64,
    mut stream: Stream,
    hub: Arc<Hub>,
    client: ControlClient,
    secret: Option<Arc<[u8]>>,
) {
    let writer = match start_session(id, &mut stream, &hub, secret.as_deref()) {
        Ok(writer) => writer,
        Err(why) => {
            tracing::warn!(conn = id, "control connection refused: {why}");
            finish(id, &stream, &hub, None);
            return;
        }
    };
    tracing::debug!(conn = id, "control connection open");
    loop {
        match frame::read_frame::<_, Command>(&mut stream) {
            Ok(None) => {
                tracing::debug!(conn = id, "control connection closed by peer");
                break;
            }
            Ok(Some(cmd)) => {
                if !forward(id, cmd, &hub, &client) {
                    break;
                }
            }
            Err(e) => {
                if !hub.stop.load(Ordering::SeqCst) {
                    tracing::warn!(conn = id, "closing control connection: {e}");
                }
                break;
            }
        }
    }
    finish(id, &stream, &hub, Some(writer));
}

/// Authenticates if needed, then makes the connection visible to the pump and starts its
/// writer thread.
fn start_session(
    id: u64,
    stream: &mut Stream,
    hub: &Hub,
    secret: Option<&[u8]>,
) -> Result<JoinHandle<()>, String> {
    if let Some(secret) = secret {
        stream
            .set_read_timeout(Some(AUTH_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let got = match frame::read_raw_frame(stream, MAX_SECRET) {
            Ok(Some(got)) => got,
            Ok(None) => return Err("closed before authenticating".into()),
            Err(e) => return Err(format!("no valid secret frame: {e}")),
        };
        if !constant_time_eq(&got, secret) {
            return Err("wrong secret".into());
        }
        stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    }
    let mut out = stream.try_clone().map_err(|e| e.to_string())?;
    let (tx, rx) = crossbeam_channel::bounded(CONN_EVENT_QUEUE);
    let writer = thread::Builder::new()
        .name(format!("prism-ctl-write-{id}"))
        .spawn(move || write_loop(id, &mut out, rx))
        .map_err(|e| e.to_string())?;
    match hub.lock().conns.get_mut(&id) {
        Some(conn) => conn.events = Some(tx),
        // Shutdown already took this connection out.
        None => return Err("server shutting down".into()),
    }
    Ok(writer)
}

/// Rewrites the command's request id to a global one, records the route and sends it on.
/// False when the forwarder is gone.
fn forward(id: u64, mut cmd: Command, hub: &Hub, client: &ControlClient) -> bool {
    let local = cmd.request_id;
    let global = client.next_request_id();
    hub.lock().routes.insert(global, (id, local));
    cmd.request_id = global;
    // Wait for room in the command queue, but notice a shutdown while the forwarder stalls.
    loop {
        match client.tx.send_timeout(cmd, PUMP_TICK) {
            Ok(()) => return true,
            Err(crossbeam_channel::SendTimeoutError::Timeout(back)) => {
                if hub.stop.load(Ordering::SeqCst) {
                    return false;
                }
                cmd = back;
            }
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => break,
        }
    }
    let router = &mut *hub.lock();
    router.routes.remove(&global);
    Hub::deliver(router, id, error_event(local, "forwarder stopped"));
    false
}

fn write_loop(id: u64, out: &mut Stream, rx: Receiver<Event>) {
    for ev in rx {
        if let Err(e) = frame::write_frame(out, &ev) {
            tracing::debug!(conn = id, "control connection write failed: {e}");
            out.shutdown();
            return;
        }
    }
}

/// Removes the connection and its routes, closes the socket, lets the writer drain.
fn finish(id: u64, stream: &Stream, hub: &Hub, writer: Option<JoinHandle<()>>) {
    {
        let mut router = hub.lock();
        // Dropping the entry drops the event sender, which ends the writer once it has
        // written what is queued, and detaches our own join handle.
        router.conns.remove(&id);
        router.routes.retain(|_, (conn, _)| *conn != id);
    }
    if let Some(w) = writer {
        let _ = w.join();
    }
    stream.shutdown();
}

fn pump_loop(hub: Arc<Hub>, client: ControlClient) {
    while !hub.stop.load(Ordering::SeqCst) {
        let mut ev = match client.next_event(PUMP_TICK) {
            Ok(ev) => ev,
            Err(ControlError::Timeout) => continue,
            Err(ControlError::Disconnected) => {
                tracing::info!("forwarder gone; control socket stops relaying events");
                return;
            }
            Err(e) => {
                tracing::warn!("control event pump: {e}");
                continue;
            }
        };
        let router = &mut *hub.lock();
        if ev.request_id == 0 {
            let ids: Vec<u64> = router.conns.keys().copied().collect();
            for id in ids {
                Hub::deliver(router, id, ev.clone());
            }
        } else if let Some((id, local)) = router.routes.remove(&ev.request_id) {
            ev.request_id = local;
            Hub::deliver(router, id, ev);
        } else {
            tracing::debug!(
                request_id = ev.request_id,
                "control event for no open connection, dropped"
            );
        }
    }
}

/// Compares in time that depends only on `want`'s length, not on where the bytes differ.
fn constant_time_eq(got: &[u8], want: &[u8]) -> bool {
    let mut diff = u8::from(got.len() != want.len());
    for (i, w) in want.iter().enumerate() {
        diff |= got.get(i).copied().unwrap_or(0) ^ w;
    }
    std::hint::black_box(diff) == 0
}

/// A blocking control socket client, for tests, tools and the bench. Not for concurrent use:
/// open one per thread.
#[derive(Debug)]
pub struct SocketControlClient {
    stream: Stream,
    decoder: FrameDecoder,
    next_id: u64,
    queue: VecDeque<Event>,
    buf: Vec<u8>,
}

impl SocketControlClient {
    /// Connects to `target` (a [`ControlSocketHandle::local_addr`] or the configured address)
    /// and, given a `secret`, authenticates with it. The secret inside `target` is ignored.
    pub fn connect(target: &ControlListen, secret: Option<&str>) -> io::Result<Self> {
        let mut stream = Stream::connect(target)?;
        if let Some(secret) = secret {
            frame::write_raw_frame(&mut stream, secret.as_bytes()).map_err(|e| match e {
                FrameError::Io(e) => e,
                e => io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
            })?;
        }
        Ok(Self {
            stream,
            decoder: FrameDecoder::new(),
            next_id: 1,
            queue: VecDeque::new(),
            buf: vec![0; 16 * 1024],
        })
    }

    /// Sends a command as is; its answer arrives through [`Self::next_event`].
    pub fn send(&mut self, cmd: &Command) -> Result<(), ControlError> {
        frame::write_frame(&mut self.stream, cmd)?;
        Ok(())
    }

    /// Sends `body` under a fresh request id and waits up to `timeout` for its answer.
    /// Events received meanwhile are kept for [`Self::next_event`].
    pub fn request(
        &mut self,
        body: command::Body,
        timeout: Duration,
    ) -> Result<Event, ControlError> {
        let deadline = Instant::now() + timeout;
        let id = self.next_id;
        self.next_id += 1;
        self.send(&Command {
            request_id: id,
            body: Some(body),
        })?;
        loop {
            let ev = self.read_event(deadline)?;
            if ev.request_id == id {
                return Ok(ev);
            }
            self.queue.push_back(ev);
        }
    }

    /// The next event that no [`Self::request`] consumed, waiting up to `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Event, ControlError> {
        if let Some(ev) = self.queue.pop_front() {
            return Ok(ev);
        }
        self.read_event(Instant::now() + timeout)
    }

    fn read_event(&mut self, deadline: Instant) -> Result<Event, ControlError> {
        loop {
            if let Some(ev) = self.decoder.pop::<Event>()? {
                return Ok(ev);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ControlError::Timeout);
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut self.buf) {
                Ok(0) => return Err(ControlError::Disconnected),
                Ok(n) => self.decoder.feed(&self.buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ControlError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_matches_only_equal_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret!", b"secret"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"secret\0", b"secret"));
    }

    #[test]
    fn debug_redacts_secret() {
        let l = ControlListen::Tcp {
            addr: "127.0.0.1:1".parse().unwrap(),
            secret: Some("hunter2".into()),
        };
        let s = format!("{l:?}");
        assert!(!s.contains("hunter2"), "{s}");
    }
}
