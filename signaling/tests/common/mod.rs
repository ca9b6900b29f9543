//! The harness shared by the interop tests: `prism serve --dev` as a subprocess on free
//! ports, tokens from `prism token create`, raw HTTP requests, and the Python clients of
//! `tests/interop/` run from the project venv with a timeout, their last JSON line parsed
//! (or, for a `live_client`, driven step by step through stdin and their event lines).
#![allow(dead_code)]

pub mod cluster;
pub mod media;
pub mod netns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The venv's python, or `None` when the user asked to skip with `PRISM_SKIP_INTEROP=1`.
/// A missing venv is a failure, not a skip: CI must not pass by running nothing.
pub fn python(modules: &str) -> Option<PathBuf> {
    if std::env::var("PRISM_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("PRISM_SKIP_INTEROP=1: interop test skipped");
        return None;
    }
    let py = repo().join(".venv/bin/python");
    let usable = Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        usable,
        "{} cannot import {modules}: run scripts/setup.sh to create the venv \
         (or set PRISM_SKIP_INTEROP=1 to skip the interop tests)",
        py.display()
    );
    Some(py)
}

/// The agents venv's python (`.venv-agents`, with `livekit-agents`, which pins an older
/// `livekit` than the test venv), or `None` under `PRISM_SKIP_INTEROP=1`.
pub fn agents_python() -> Option<PathBuf> {
    if std::env::var("PRISM_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("PRISM_SKIP_INTEROP=1: interop test skipped");
        return None;
    }
    let py = repo().join(".venv-agents/bin/python");
    let usable = Command::new(&py)
        .args(["-c", "import livekit.agents"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        usable,
        "{} cannot import livekit.agents: run scripts/setup.sh to create the agents venv \
         (or set PRISM_SKIP_INTEROP=1 to skip the interop tests)",
        py.display()
    );
    Some(py)
}

/// Collects a pipe into a string on its own thread, optionally passing each line on.
pub fn drain(pipe: impl Read + Send + 'static, lines: Option<mpsc::Sender<String>>) -> Pipe {
    let text = Arc::new(Mutex::new(String::new()));
    let t = text.clone();
    let handle = thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut s = t.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    });
    Pipe { text, handle }
}

pub struct Pipe {
    text: Arc<Mutex<String>>,
    handle: JoinHandle<()>,
}

impl Pipe {
    /// What was collected so far, shared (for a log printed when a test fails).
    pub fn text_handle(&self) -> Arc<Mutex<String>> {
        self.text.clone()
    }

    pub fn take(self) -> String {
        let _ = self.handle.join();
        let s = self.text.lock().unwrap();
        s.clone()
    }
}

/// `prism serve --dev` on a free port; killed on drop, its log printed if the test failed.
pub struct Server {
    pub child: Child,
    pub http: String,
    pub log: Vec<Arc<Mutex<String>>>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// As [`Server::start`], with more arguments for `prism serve`.
    pub fn start_with(extra: &[&str]) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Ephemeral media ports, unless the test chose one.
        let media: &[&str] = if extra.contains(&"--udp-port") {
            &[]
        } else {
            &["--media-port", "0"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_prism"))
            .args(["serve", "--dev", "--bind", &format!("127.0.0.1:{port}")])
            .args(media)
            .args(["--cores", "0", "--rtmp-port", "0"])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning prism serve");
        let (tx, rx) = mpsc::channel();
        let out = drain(child.stdout.take().unwrap(), Some(tx));
        let err = drain(child.stderr.take().unwrap(), None);
        let log = vec![out.text.clone(), err.text.clone()];
        let deadline = Instant::now() + Duration::from_secs(20);
        let http = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("prism: listening on ") {
                        break rest.split_whitespace().next().unwrap().to_string();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "prism serve did not report listening within 20 s\nstdout:\n{}\nstderr:\n{}",
                        out.take(),
                        err.take()
                    );
                }
            }
        };
        Server { child, http, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// Everything the server has logged so far (stdout and stderr).
    pub fn log_text(&self) -> String {
        self.log
            .iter()
            .map(|t| t.lock().unwrap().clone())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn assert_alive(&mut self) {
        let exited = self.child.try_wait().unwrap();
        assert!(exited.is_none(), "prism serve exited: {exited:?}");
        let (status, body) = http(self, "GET", "/healthz", None, None);
        assert_eq!(status, 200, "/healthz answered {status}: {body}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() || std::env::var("PRISM_TEST_LOG").as_deref() == Ok("1") {
            for text in &self.log {
                eprintln!("---- prism serve ----\n{}", text.lock().unwrap());
            }
        }
    }
}

/// A UDP port free on both 127.0.0.1 and 127.0.0.2: tests bind a server's media port on
/// the first and a relay of their own in front of it on the second.
pub fn free_udp_port() -> u16 {
    loop {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.2", port)).is_ok() {
            return port;
        }
    }
}

/// A value of `/metrics`: `series` is a name with its labels, as in
/// `prism_front_datagrams_in_total{front="ice_tcp"}`, or a bare name, which sums every
/// labelled sample of it (all cores); 0 when there is none.
pub fn metric(server: &Server, series: &str) -> f64 {
    let (status, body) = http(server, "GET", "/metrics", None, None);
    assert_eq!(status, 200, "/metrics: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(key, _)| {
            *key == series
                || (!series.contains('{')
                    && key.strip_prefix(series).is_some_and(|r| r.starts_with('{')))
        })
        .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
        .sum()
}

/// Mints a token with `prism token create`; `extra` adds options such as `--no-publish`.
pub fn token(room: &str, identity: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["token", "create", "--room", room, "--identity", identity])
        .args(extra)
        .output()
        .expect("running prism token create");
    assert!(out.status.success(), "prism token create: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the whole response.
pub fn http(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    sdp: Option<&str>,
) -> (u16, String) {
    http_at(
        server.http.trim_start_matches("http://"),
        method,
        path,
        token,
        sdp,
    )
}

/// [`http`] to a server at `host` ("ip:port").
pub fn http_at(
    host: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    sdp: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(host).expect("connecting to prism");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req += &format!("Authorization: Bearer {t}\r\n");
    }
    let body = sdp.unwrap_or("");
    if sdp.is_some() {
        req += "Content-Type: application/sdp\r\n";
    }
    req += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {resp:?}"));
    (status, resp)
}

/// A running test client (one of the Python scripts); killed on drop if still running.
pub struct Client {
    name: String,
    child: Option<Child>,
    stdout: Option<Pipe>,
    stderr: Option<Pipe>,
    deadline: Instant,
    /// For a `live_client`: its stdout lines as they come, and its stdin.
    lines: Option<mpsc::Receiver<String>>,
    stdin: Option<ChildStdin>,
}

/// What a client did: exit status (`None`: killed at the timeout), output, summary line.
pub struct Outcome {
    pub name: String,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub summary: Value,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => "killed after the timeout".into(),
        };
        write!(
            f,
            "---- {} ({status}) ----\nstdout:\n{}stderr:\n{}",
            self.name, self.stdout, self.stderr
        )
    }
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub fn num(&self, key: &str) -> f64 {
        self.summary[key].as_f64().unwrap_or(-1.0)
    }
}

pub fn client(py: &Path, name: &str, script: &str, args: &[&str]) -> Client {
    spawn_client(&[], py, name, script, args, false)
}

/// As [`client`], run under a command prefix (e.g. `ip netns exec NS`).
pub fn client_under(
    prefix: &[String],
    py: &Path,
    name: &str,
    script: &str,
    args: &[&str],
) -> Client {
    spawn_client(prefix, py, name, script, args, false)
}

/// A client driven step by step: it reads commands from stdin (`tell`) and prints
/// `event: NAME {json}` lines (`common.event` in Python), which `wait_event` waits for.
pub fn live_client(py: &Path, name: &str, script: &str, args: &[&str]) -> Client {
    spawn_client(&[], py, name, script, args, true)
}

fn spawn_client(
    prefix: &[String],
    py: &Path,
    name: &str,
    script: &str,
    args: &[&str],
    live: bool,
) -> Client {
    let mut cmd = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(py);
            c
        }
        None => Command::new(py),
    };
    let mut child = cmd
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/interop")
                .join(script),
        )
        .args(args)
        .stdin(if live { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {script}: {e}"));
    let stdout: ChildStdout = child.stdout.take().unwrap();
    let stderr: ChildStderr = child.stderr.take().unwrap();
    let (tx, lines) = if live {
        let (tx, rx) = mpsc::channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    Client {
        name: name.to_string(),
        stdin: child.stdin.take(),
        child: Some(child),
        stdout: Some(drain(stdout, tx)),
        stderr: Some(drain(stderr, None)),
        deadline: Instant::now() + PROCESS_TIMEOUT,
        lines,
    }
}

impl Client {
    /// Gives the client this long (from now) before it is killed.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.deadline = Instant::now() + d;
        self
    }

    /// Waits (at most `within`) for the client's next `event: NAME …` line whose JSON
    /// satisfies `pred`, skipping other lines (they stay in the outcome's stdout). `None`
    /// if it does not come in time or the client exits first.
    pub fn wait_event_where(
        &mut self,
        name: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let lines = self.lines.as_ref().expect("wait_event needs a live_client");
        let deadline = Instant::now() + within;
        let prefix = format!("event: {name} ");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).ok()?;
            if let Some(json) = line.strip_prefix(&prefix) {
                let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
                if pred(&v) {
                    return Some(v);
                }
            }
        }
    }

    /// The client's next `event: NAME …` line, within `within`.
    pub fn wait_event(&mut self, name: &str, within: Duration) -> Option<Value> {
        self.wait_event_where(name, within, |_| true)
    }

    /// As `wait_event`, but a missing event fails the test, with all the client printed.
    pub fn expect_event(&mut self, name: &str, within: Duration) -> Value {
        if let Some(v) = self.wait_event(name, within) {
            return v;
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let stdout = self.stdout.take().map(Pipe::take).unwrap_or_default();
        let stderr = self.stderr.take().map(Pipe::take).unwrap_or_default();
        panic!(
            "{}: no {name:?} event within {within:?}\nstdout:\n{stdout}stderr:\n{stderr}",
            self.name
        );
    }

    /// Kills the client at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Writes one command line to the client's stdin (ignored if it has exited).
    pub fn tell(&mut self, command: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{command}");
            let _ = stdin.flush();
        }
    }

    /// Waits for the client to end by itself (a live client: as told, or on its own
    /// terms; its stdin stays open meanwhile), at most until its timeout.
    pub fn finish(mut self) -> Outcome {
        let mut child = self.child.take().unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > self.deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(50));
        };
        drop(self.stdin.take());
        let stdout = self.stdout.take().unwrap().take();
        let stderr = self.stderr.take().unwrap().take();
        let summary = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null);
        let outcome = Outcome {
            name: self.name.clone(),
            status,
            stdout,
            stderr,
            summary,
        };
        // Shown by cargo test for a failing test, and always with --nocapture.
        println!("{outcome}");
        outcome
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The server's LiveKit signaling URL (`ws://…`).
/// The RTMP listener's address, from the line `prism serve` prints before it listens.
pub fn rtmp_addr(server: &Server) -> String {
    let log = server.log[0].lock().unwrap().clone();
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("prism: rtmp ingress on "))
        .unwrap_or_else(|| panic!("no RTMP listener line in:\n{log}"));
    line.split_whitespace().next().unwrap().to_string()
}

pub fn ws_url(server: &Server) -> String {
    server.http.replacen("http://", "ws://", 1)
}

/// A LiveKit SDK participant watching its room (`lk_watch.py`), driven step by step.
pub fn lk_watch(py: &Path, server: &Server, room: &str, identity: &str, args: &[&str]) -> Client {
    let (url, tok) = (ws_url(server), token(room, identity, &[]));
    let mut all = vec!["--url", &url, "--token", &tok];
    all.extend_from_slice(args);
    live_client(py, identity, "lk_watch.py", &all).timeout(Duration::from_secs(150))
}

/// A LiveKit SDK publisher (`lk_publisher.py`) of VP8 video of one colour ("R,G,B") and
/// Opus audio, driven step by step; `args` adds options such as `--allow-only`.
pub fn lk_publisher(
    py: &Path,
    server: &Server,
    room: &str,
    identity: &str,
    rgb: &str,
    args: &[&str],
) -> Client {
    let (url, tok) = (ws_url(server), token(room, identity, &[]));
    let mut all = vec![
        "--url",
        &url,
        "--token",
        &tok,
        "--color",
        rgb,
        "--duration",
        "140",
    ];
    all.extend_from_slice(args);
    live_client(py, identity, "lk_publisher.py", &all).timeout(Duration::from_secs(150))
}

/// The tracks of `identity` in an `lk_watch.py` state (its summary or a `report` event),
/// as ("audio" or "video", track) pairs.
pub fn tracks_of<'a>(state: &'a Value, identity: &str) -> Vec<(&'a str, &'a Value)> {
    state["participants"][identity]["tracks"]
        .as_object()
        .map(|t| {
            t.values()
                .map(|v| (v["kind"].as_str().unwrap_or(""), v))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs a browser driver (`tests/browser/interop.mjs`, however `cmd` starts it: directly
/// or inside a network namespace) with piped output, killing it after `timeout`; returns
/// its exit success, its last JSON line and everything it printed (also printed, for a
/// failing test).
pub fn run_interop(mut cmd: Command, timeout: Duration) -> (bool, Value, String) {
    let mut child = cmd
        .current_dir(browser_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning node (install Node.js, or set PRISM_SKIP_BROWSER=1)");
    let out = drain(child.stdout.take().unwrap(), None);
    let err = drain(child.stderr.take().unwrap(), None);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (out.take(), err.take());
    let summary = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    let text = format!("---- interop.mjs ({status:?}) ----\nstdout:\n{stdout}\nstderr:\n{stderr}");
    println!("{text}");
    (status.is_some_and(|s| s.success()), summary, text)
}

/// The browser driver's directory (`tests/browser`).
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Node's modules and Chromium are there, or `false` when the user asked to skip
/// (`PRISM_SKIP_BROWSER=1` or `PRISM_SKIP_INTEROP=1`). Missing pieces fail the test: CI must
/// not pass by running nothing.
pub fn browser_ready() -> bool {
    for var in ["PRISM_SKIP_BROWSER", "PRISM_SKIP_INTEROP"] {
        if std::env::var(var).as_deref() == Ok("1") {
            eprintln!("{var}=1: browser test skipped");
            return false;
        }
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/setup.sh (or set PRISM_SKIP_BROWSER=1)"
    );
    assert!(
        browser_dir()
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "signaling/tests/browser/node_modules is missing: run scripts/setup.sh \
         (or set PRISM_SKIP_BROWSER=1)"
    );
    true
}
