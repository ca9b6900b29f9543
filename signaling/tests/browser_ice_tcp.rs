//! ICE over TCP with real clients: LiveKit's JS SDK in Chromium, inside a network namespace
//! whose UDP is dropped by nftables, joins a room on `prism serve` and sees and hears a
//! LiveKit Python SDK participant (on UDP, in the root namespace), which decodes the
//! browser's video in turn.
//!
//! Layout: a veth pair joins the root namespace (Prism and the Python client, at
//! 10.201.N.1) and the test's namespace (node, Chromium, at 10.201.N.2). Nothing is routed
//! anywhere else. In the namespace an nftables table drops every UDP datagram in and out, so
//! the browser's only way to Prism's media is the passive TCP candidate.
//!
//! What passing proves:
//! - with ICE-TCP on: both ways decode video (browser: getStats frames decoded from the
//!   Python participant; Python: ≥ 30 frames of the browser's camera), the browser's
//!   selected candidate pairs (publisher and subscriber connections) are TCP, and Prism's
//!   ICE-TCP front counted datagrams both ways (`/metrics`);
//! - the same setup with ICE-TCP off (`--tcp-port 0`) gets no media at all: the test can
//!   fail.
//!
//! Needs root (namespaces, veth, nftables): without it the tests print why and pass
//! without running. CI runs as root. `PRISM_SKIP_BROWSER=1` / `PRISM_SKIP_INTEROP=1` skip.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A network namespace joined to the root one by a veth pair, with UDP dropped inside.
struct UdpBlockedNetns {
    name: String,
    veth: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

impl UdpBlockedNetns {
    /// `None` (with the reason printed) where namespaces cannot be made: not root.
    fn create(slot: u32) -> Option<Self> {
        for var in ["PRISM_SKIP_BROWSER", "PRISM_SKIP_INTEROP"] {
            if std::env::var(var).as_deref() == Ok("1") {
                eprintln!("{var}=1: ICE-TCP browser test skipped");
                return None;
            }
        }
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if uid != "0" {
            eprintln!(
                "ICE-TCP browser test skipped: it needs root to make a network namespace, a \
                 veth pair and nftables rules (uid {uid})"
            );
            return None;
        }
        for tool in ["ip", "nft"] {
            assert!(
                sh(&["sh", "-c", &format!("command -v {tool}")]).is_ok(),
                "`{tool}` is missing: run scripts/setup.sh"
            );
        }
        let pid = std::process::id();
        let n = (pid % 200 + slot * 7) % 250 + 1;
        let ns = Self {
            name: format!("prism-tcp-{pid}-{slot}"),
            veth: format!("pt{pid}{slot}"),
            host_ip: Ipv4Addr::new(10, 201, n as u8, 1),
            ns_ip: Ipv4Addr::new(10, 201, n as u8, 2),
        };
        let peer = format!("{}p", ns.veth);
        let host_cidr = format!("{}/24", ns.host_ip);
        let ns_cidr = format!("{}/24", ns.ns_ip);
        let steps: Vec<Vec<&str>> = vec![
            vec!["ip", "netns", "add", &ns.name],
            vec![
                "ip", "link", "add", &ns.veth, "type", "veth", "peer", "name", &peer,
            ],
            vec!["ip", "link", "set", &peer, "netns", &ns.name],
            vec!["ip", "addr", "add", &host_cidr, "dev", &ns.veth],
            vec!["ip", "link", "set", &ns.veth, "up"],
            vec![
                "ip", "netns", "exec", &ns.name, "ip", "link", "set", "lo", "up",
            ],
            vec![
                "ip", "netns", "exec", &ns.name, "ip", "addr", "add", &ns_cidr, "dev", &peer,
            ],
            vec![
                "ip", "netns", "exec", &ns.name, "ip", "link", "set", &peer, "up",
            ],
        ];
        for s in steps {
            if let Err(e) = sh(&s) {
                if e.contains("Operation not permitted") || e.contains("Permission denied") {
                    eprintln!("ICE-TCP browser test skipped: {e}");
                    return None;
                }
                panic!("{e}");
            }
        }
        // Every UDP datagram in or out of the namespace is dropped (loopback included).
        let rules = "table inet prism_no_udp {\n\
             chain input { type filter hook input priority 0; policy accept; meta l4proto udp drop; }\n\
             chain output { type filter hook output priority 0; policy accept; meta l4proto udp drop; }\n\
             }\n";
        let path = std::env::temp_dir().join(format!("{}.nft", ns.name));
        std::fs::write(&path, rules).unwrap();
        sh(&[
            "ip",
            "netns",
            "exec",
            &ns.name,
            "nft",
            "-f",
            path.to_str().unwrap(),
        ])
        .unwrap();
        let _ = std::fs::remove_file(&path);
        Some(ns)
    }
}

impl Drop for UdpBlockedNetns {
    fn drop(&mut self) {
        // Deleting the namespace removes its end of the pair, which removes ours.
        let _ = sh(&["ip", "netns", "del", &self.name]);
        let _ = sh(&["ip", "link", "del", &self.veth]);
    }
}

/// `prism serve --dev` on the root namespace's end of the veth pair.
fn serve(ns: &UdpBlockedNetns, extra: &[&str]) -> Server {
    let port = TcpListener::bind((ns.host_ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = SocketAddr::from((ns.host_ip, port)).to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["serve", "--dev", "--bind", &bind])
        .args(["--media-ip", &ns.host_ip.to_string()])
        .args(["--media-port", "0", "--cores", "0"])
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning prism serve");
    let (tx, rx) = mpsc::channel();
    let out = drain(child.stdout.take().unwrap(), Some(tx));
    let err = drain(child.stderr.take().unwrap(), None);
    let log = vec![out.text_handle(), err.text_handle()];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut listening = false;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if line.starts_with("prism: listening on ") {
            listening = true;
            break;
        }
    }
    let server = Server {
        child,
        http: format!("http://{bind}"),
        log,
    };
    assert!(listening, "prism serve did not start");
    server
}

/// Runs `interop.mjs` inside the namespace; returns its success, summary and output.
fn run_browser_in(
    ns: &UdpBlockedNetns,
    server: &Server,
    args: &[&str],
    timeout: Duration,
) -> (bool, Value, String) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "node"])
        .arg(browser_dir().join("interop.mjs"))
        .args(["--url", &server.http])
        .args(args)
        .env(
            "CHROMIUM_EXTRA_ARGS",
            format!("--unsafely-treat-insecure-origin-as-secure={}", server.http),
        );
    run_interop(cmd, timeout)
}

/// A `/metrics` counter of the ICE-TCP front.
fn front_metric(server: &Server, name: &str) -> f64 {
    metric(server, &format!("{name}{{front=\"ice_tcp\"}}"))
}

fn frames_decoded_by_python(summary: &Value) -> u64 {
    summary["video_frames"]
        .as_object()
        .and_then(|m| m.values().filter_map(Value::as_u64).max())
        .unwrap_or(0)
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_f64().unwrap_or(-1.0)
}

/// The browser (UDP blocked) and the Python participant (UDP) in one room: media both
/// ways. Returns the browser's summary, the Python client's summary and whether each
/// side succeeded.
fn browser_and_python(
    ns: &UdpBlockedNetns,
    server: &Server,
    py: &Path,
    room: &str,
    browser_timeout: u64,
    py_duration: u64,
) -> (bool, Value, String, bool, Value, String) {
    let url = server.http.replacen("http://", "ws://", 1);
    let tok = token(room, "py", &[]);
    let duration = py_duration.to_string();
    let py_client = client(
        py,
        "py",
        "lk_client.py",
        &[
            "--url",
            &url,
            "--token",
            &tok,
            "--publish",
            "--send-data",
            "hello over tcp",
            "--want-frames",
            "30",
            "--duration",
            &duration,
        ],
    );
    let timeout = browser_timeout.to_string();
    let (ok, s, text) = run_browser_in(
        ns,
        server,
        &[
            "--scenario",
            "with-python",
            "--room",
            room,
            "--peer",
            "py",
            "--timeout",
            &timeout,
        ],
        Duration::from_secs(browser_timeout + 30),
    );
    let py_out = py_client.finish();
    let py_text = py_out.to_string();
    (ok, s, text, py_out.ok(), py_out.summary.clone(), py_text)
}

#[test]
fn browser_without_udp_joins_over_ice_tcp_and_decodes_both_ways() {
    let Some(ns) = UdpBlockedNetns::create(0) else {
        return;
    };
    if !browser_ready() {
        return;
    }
    let Some(py) = python("livekit.rtc") else {
        return;
    };
    let _guard = serial();
    let mut server = serve(&ns, &[]);
    let (ok, s, text, py_ok, py_summary, py_text) =
        browser_and_python(&ns, &server, &py, "tcp-only", 110, 50);
    assert!(ok, "the browser scenario failed: {}\n{text}", s["failures"]);
    assert!(py_ok, "the Python participant failed:\n{py_text}");
    assert!(
        num(&s, &["received", "video", "framesDecoded"]) > 0.0,
        "{s}"
    );
    assert!(
        num(&s, &["received", "audio", "bytesReceived"]) > 0.0,
        "{s}"
    );
    assert_eq!(s["data"]["text"], "hello over tcp", "{s}");
    assert!(
        frames_decoded_by_python(&py_summary) >= 30,
        "Python decoded too few of the browser's frames:\n{py_text}"
    );
    // Chromium's own view: both connections run over the passive TCP candidate.
    for pc in ["publisher", "subscriber"] {
        let pair = &s["transports"][pc];
        assert_eq!(
            pair["local"]["protocol"], "tcp",
            "{pc}: {}",
            s["transports"]
        );
        assert_eq!(
            pair["remote"]["protocol"], "tcp",
            "{pc}: {}",
            s["transports"]
        );
        assert_eq!(
            pair["remote"]["tcpType"], "passive",
            "{pc}: {}",
            s["transports"]
        );
        assert_eq!(
            pair["remote"]["address"],
            ns.host_ip.to_string(),
            "{pc}: {}",
            s["transports"]
        );
    }
    // Prism's view: its ICE-TCP front carried datagrams both ways.
    let (dg_in, dg_out) = (
        front_metric(&server, "prism_front_datagrams_in_total"),
        front_metric(&server, "prism_front_datagrams_out_total"),
    );
    println!(
        "ICE-TCP front: {dg_in} datagrams in, {dg_out} out; pairs {}",
        s["transports"]
    );
    assert!(dg_in > 100.0 && dg_out > 100.0, "{dg_in} in, {dg_out} out");
    server.assert_alive();
}

#[test]
fn without_the_tcp_listener_the_same_browser_gets_no_media() {
    let Some(ns) = UdpBlockedNetns::create(1) else {
        return;
    };
    if !browser_ready() {
        return;
    }
    let Some(py) = python("livekit.rtc") else {
        return;
    };
    let _guard = serial();
    let mut server = serve(&ns, &["--tcp-port", "0"]);
    let (ok, s, text, _py_ok, py_summary, py_text) =
        browser_and_python(&ns, &server, &py, "no-tcp", 45, 30);
    assert!(
        !ok,
        "the browser got media with UDP blocked and no TCP:\n{text}"
    );
    assert!(
        num(&s, &["received", "video", "framesDecoded"]) <= 0.0,
        "{s}"
    );
    assert_eq!(
        frames_decoded_by_python(&py_summary),
        0,
        "Python decoded the browser's video without a path:\n{py_text}"
    );
    assert_eq!(front_metric(&server, "prism_front_datagrams_in_total"), 0.0);
    server.assert_alive();
}
