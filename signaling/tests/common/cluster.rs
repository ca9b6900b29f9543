//! What the cluster tests share: a real `redis-server` on a free port, `prism serve` nodes
//! joined to it, the directory read back with `redis-cli`, and a TCP load balancer in
//! front of the nodes, as a deployment has one.
//!
//! The balancer sends each new connection to the next node (round-robin) whose `/readyz`
//! answers 200 within a second, and splices bytes both ways without looking at them. So
//! when an SDK reconnects by itself, it lands on a live, serving node, as it would behind
//! a real load balancer with readiness checks; a stopped node (no answer) and a draining
//! one (503) are passed over.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::Server;

/// `redis-server` on a free port, killed on drop.
pub struct Redis {
    pub child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    /// On `port` (a restart after an outage: empty, as without persistence).
    pub fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed: run scripts/setup.sh");
        let r = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while r.cli(&["PING"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(100));
        }
        r
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One `redis-cli` command; its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A field of `room`'s directory record (`owner`, `epoch`, `sid`; empty if none).
    pub fn room_field(&self, room: &str, field: &str) -> String {
        self.cli(&["HGET", &format!("prism:room:{{{room}}}"), field])
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster node: the server and its node id (from its start-up line).
pub struct Node {
    pub server: Server,
    pub id: String,
}

impl Node {
    /// `host:port` of its HTTP server.
    pub fn host(&self) -> String {
        self.server.http.trim_start_matches("http://").to_string()
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-TERM`, …) to the node's process.
    pub fn signal(&self, signal: &str) {
        let pid = self.server.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success(),
            "kill {signal} {pid}"
        );
    }

    /// Waits for the node's process to end by itself (after SIGTERM); its exit status.
    /// Fails the test if it is still running after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.server.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the node still runs after {within:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A node of the cluster at `redis`, with more `prism serve` arguments.
pub fn start_node(redis: &Redis, extra: &[&str]) -> Node {
    let addr = redis.addr();
    let mut args = vec!["--redis-host", addr.as_str()];
    args.extend_from_slice(extra);
    node_of(Server::start_with(&args))
}

/// The cluster node a started server is (its id from its start-up line).
pub fn node_of(server: Server) -> Node {
    let id = server.log[0]
        .lock()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("prism: cluster node "))
        .and_then(|l| l.split_whitespace().next())
        .expect("the node printed its cluster id")
        .to_string();
    Node { server, id }
}

/// Polls `f` every 200 ms until it holds; fails the test after `within`.
pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(200));
    }
}

/// The owner of `room` in the directory (empty if none).
pub fn owner(redis: &Redis, room: &str) -> String {
    redis.room_field(room, "owner")
}

/// A counter or gauge of the node's `/metrics` (0 if absent).
pub fn metric(node: &Node, name: &str) -> f64 {
    super::metric(&node.server, name)
}

/// A raw `/rtc` upgrade with extra header lines; the status.
pub fn rtc_status(node: &Node, token: &str, extra: &str) -> (u16, String) {
    let host = node.host();
    let mut s = TcpStream::connect(&host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET /rtc?access_token={token}&protocol=15 HTTP/1.1\r\nHost: {host}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// `GET path` on `host` with a deadline for the whole exchange: the status, or `None`
/// when the node does not answer in time (stopped) or refuses the connection (dead).
pub fn status_within(host: &str, path: &str, within: Duration) -> Option<(u16, String)> {
    let addr: SocketAddr = host.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, within).ok()?;
    s.set_read_timeout(Some(within)).ok()?;
    s.set_write_timeout(Some(within)).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 16384];
    loop {
        if Instant::now() > deadline {
            return None;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => resp.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Some((status, body))
}

/// A TCP load balancer in front of the nodes (see the module's doc). Stops on drop.
pub struct Balancer {
    pub addr: String,
    backends: Arc<Mutex<Vec<String>>>,
    /// Connections sent to each backend, by its `host:port`.
    pub sent: Arc<Mutex<Vec<(String, usize)>>>,
    stop: Arc<AtomicBool>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Balancer {
    /// Balances over `backends` (`host:port` of the nodes' HTTP servers).
    pub fn start(backends: Vec<String>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let backends = Arc::new(Mutex::new(backends));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (backends, sent, stop) = (backends.clone(), sent.clone(), stop.clone());
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let (backends, sent, next) = (backends.clone(), sent.clone(), next.clone());
                    // The readiness checks take up to a second per node: off the accept loop.
                    thread::spawn(move || {
                        let list = backends.lock().unwrap().clone();
                        let Some(up) = pick(&list, &next) else {
                            let _ = client.shutdown(Shutdown::Both);
                            return;
                        };
                        let Ok(server) = TcpStream::connect(&up) else {
                            let _ = client.shutdown(Shutdown::Both);
                            return;
                        };
                        {
                            let mut s = sent.lock().unwrap();
                            match s.iter_mut().find(|(b, _)| *b == up) {
                                Some((_, n)) => *n += 1,
                                None => s.push((up.clone(), 1)),
                            }
                        }
                        splice(client, server);
                    });
                }
            })
        };
        Balancer {
            addr,
            backends,
            sent,
            stop,
            accept: Some(accept),
        }
    }

    /// The URL LiveKit's SDKs are given.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Drops a backend from the rotation (a node gone for good).
    pub fn remove(&self, backend: &str) {
        self.backends.lock().unwrap().retain(|b| b != backend);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// The next backend, round-robin, whose `/readyz` is 200 within a second.
fn pick(backends: &[String], next: &AtomicUsize) -> Option<String> {
    for _ in 0..backends.len() {
        let i = next.fetch_add(1, Ordering::Relaxed) % backends.len();
        let b = &backends[i];
        if matches!(
            status_within(b, "/readyz", Duration::from_secs(1)),
            Some((200, _))
        ) {
            return Some(b.clone());
        }
    }
    None
}

/// Copies bytes both ways until either side ends, then closes both.
fn splice(client: TcpStream, server: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = thread::spawn(move || pump(client, server));
    pump(s2, c2);
    let _ = up.join();
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    // Either side ending ends both: the other pump's read returns at once.
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
