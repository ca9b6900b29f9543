//! `prism serve --config`: the YAML file, the environment's keys and the flags, as the
//! binary reads them.
//!
//! What passing proves: a config file alone (no `--dev`) sets the port, the keys (a token
//! signed with the file's key is accepted by the RoomService, the development key is not),
//! the room defaults (a room created without timeouts gets the file's) and JSON logs;
//! `LIVEKIT_KEYS` replaces the file's keys; media bound to every interface is advertised
//! as `rtc.node_ip` (or `NODE_IP`, or `--node-ip`) in WHIP answers, and refused without
//! one; a misspelt key or a missing file stops the server with a message naming the
//! problem.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prism_signaling::auth::{sign, unix_now, Claims, VideoGrant, DEV_KEY, DEV_SECRET};
use serde_json::Value;

use common::{drain, http_at, serial};

const CFG_KEY: &str = "cfgkey";
const CFG_SECRET: &str = "cfg-secret-that-is-long-enough-for-a-test-0123";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn token(key: &str, secret: &str, grant: VideoGrant) -> String {
    token_for("", key, secret, grant)
}

fn token_for(identity: &str, key: &str, secret: &str, grant: VideoGrant) -> String {
    let now = unix_now();
    sign(
        &Claims {
            iss: key.into(),
            sub: identity.into(),
            nbf: Some(now),
            exp: Some(now + 600),
            video: Some(grant),
            ..Default::default()
        },
        secret,
    )
}

/// A running `prism serve --config …`, killed on drop; its output collected.
struct Serve {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Serve {
    fn start(config: &Path, env: &[(&str, &str)]) -> Serve {
        Self::start_with(config, env, &[])
    }

    fn start_with(config: &Path, env: &[(&str, &str)], flags: &[&str]) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_prism"));
        cmd.args(["serve", "--config"])
            .arg(config)
            .args(flags)
            .env_remove("LIVEKIT_KEYS")
            .env_remove("PRISM_KEYS")
            .env_remove("RUST_LOG")
            .env_remove("NODE_IP")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning prism serve");
        let (tx, rx) = mpsc::channel();
        drain(child.stdout.take().unwrap(), Some(tx.clone()));
        drain(child.stderr.take().unwrap(), Some(tx));
        Serve {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line matching `f`.
    fn wait_for(&mut self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if f(&l) {
                        return l;
                    }
                }
                Err(_) => panic!("no {what} within 20 s; output:\n{}", self.seen.join("\n")),
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn post(port: u16, method: &str, token: &str, body: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /twirp/livekit.RoomService/{method} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("prism-{name}-{}.yaml", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn config_file_sets_port_keys_room_defaults_and_json_logs() {
    let _g = serial();
    let port = free_port();
    let cfg = write_config(
        "cfg",
        &format!(
            "port: {port}\nbind_address: 127.0.0.1\nkeys:\n  {CFG_KEY}: {CFG_SECRET}\n\
             rtc:\n  udp_port: 0\n  cores: [0]\nlogging:\n  level: info\n  json: true\n\
             room:\n  empty_timeout: 77\n  departure_timeout: 9\n"
        ),
    );
    let mut serve = Serve::start(&cfg, &[]);
    serve.wait_for("listening line", |l| {
        l.starts_with(&format!("prism: listening on http://127.0.0.1:{port}"))
    });
    // Logs are JSON objects with a level.
    let json = serve.wait_for("a JSON log line", |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["level"].is_string())
    });
    assert!(json.contains("listening"), "{json}");

    let create = VideoGrant {
        room_create: true,
        ..Default::default()
    };
    let (status, room) = post(
        port,
        "CreateRoom",
        &token(CFG_KEY, CFG_SECRET, create.clone()),
        r#"{"name":"cfg-room"}"#,
    );
    assert_eq!(status, 200, "{room}");
    assert_eq!(room["empty_timeout"], 77, "the file's default: {room}");
    assert_eq!(room["departure_timeout"], 9, "{room}");
    // Not in development mode: the development key is unknown.
    let (status, err) = post(
        port,
        "CreateRoom",
        &token(DEV_KEY, DEV_SECRET, create),
        r#"{"name":"x"}"#,
    );
    assert_eq!(
        (status, err["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let _ = std::fs::remove_file(&cfg);
}

#[test]
fn livekit_keys_replace_the_files_keys() {
    let _g = serial();
    let port = free_port();
    let cfg = write_config(
        "env",
        &format!(
            "port: {port}\nkeys:\n  {CFG_KEY}: {CFG_SECRET}\nrtc:\n  udp_port: 0\n  cores: [0]\n"
        ),
    );
    let env_secret = "env-secret-that-is-long-enough-for-a-test-456";
    let spec = format!("envkey: {env_secret}");
    let mut serve = Serve::start(&cfg, &[("LIVEKIT_KEYS", &spec)]);
    serve.wait_for("listening line", |l| l.starts_with("prism: listening on"));
    let list = VideoGrant {
        room_list: true,
        ..Default::default()
    };
    let (status, v) = post(
        port,
        "ListRooms",
        &token("envkey", env_secret, list.clone()),
        "{}",
    );
    assert_eq!(status, 200, "{v}");
    let (status, _) = post(port, "ListRooms", &token(CFG_KEY, CFG_SECRET, list), "{}");
    assert_eq!(status, 401, "the file's key was replaced");
    let _ = std::fs::remove_file(&cfg);
}

/// Media bound to every interface: clients are given the advertised address, with the
/// socket's port. The file's `rtc.node_ip`, then `NODE_IP` over it, then `--node-ip` over
/// both.
#[test]
fn media_bound_to_every_interface_is_advertised_as_the_node_ip() {
    let _g = serial();
    let offer = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aiortc_offer.sdp"),
    )
    .unwrap();
    let publish = VideoGrant {
        room_join: true,
        room: "advertised".into(),
        can_publish: Some(true),
        ..Default::default()
    };
    // (environment, flags, the address clients must be given)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: [Case; 3] = [
        (&[], &[], "127.0.0.2"),
        (&[("NODE_IP", "127.0.0.3")], &[], "127.0.0.3"),
        (
            &[("NODE_IP", "127.0.0.3")],
            &["--node-ip", "127.0.0.4"],
            "127.0.0.4",
        ),
    ];
    for (env, flags, want) in cases {
        let port = free_port();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = write_config(
            "advertise",
            &format!(
                "port: {port}\nkeys:\n  {CFG_KEY}: {CFG_SECRET}\n\
                 rtc:\n  ip: 0.0.0.0\n  node_ip: 127.0.0.2\n  udp_port: {udp}\n  cores: [0]\n"
            ),
        );
        let mut serve = Serve::start_with(&cfg, env, flags);
        serve.wait_for("listening line", |l| l.starts_with("prism: listening on"));
        let (status, answer) = http_at(
            &format!("127.0.0.1:{port}"),
            "POST",
            "/whip/advertised",
            Some(&token_for("whip-pub", CFG_KEY, CFG_SECRET, publish.clone())),
            Some(&offer),
        );
        assert_eq!(status, 201, "{env:?} {flags:?}: {answer}");
        let candidates: Vec<&str> = answer
            .lines()
            .filter(|l| l.starts_with("a=candidate:"))
            .collect();
        assert!(
            !candidates.is_empty()
                && candidates
                    .iter()
                    .all(|c| c.contains(&format!(" {want} {udp} "))),
            "{env:?} {flags:?}: want candidates at {want}:{udp}, got {candidates:?}"
        );
        drop(serve);
        let _ = std::fs::remove_file(&cfg);
    }
}

#[test]
fn bad_configs_stop_the_server_with_a_reason() {
    let _g = serial();
    let cases = [
        ("typo", "prot: 7880\nkeys:\n  k: s\n", "prot"),
        (
            "range",
            "keys:\n  k: s\nrtc:\n  cores: [0, 1]\n  port_range_start: 50000\n  port_range_end: 50000\n",
            "port range",
        ),
        ("nokeys", "port: 7880\n", "no API keys"),
        (
            "unadvertised",
            "keys:\n  k: s\nrtc:\n  ip: 0.0.0.0\n  cores: [0]\n",
            "advertise",
        ),
    ];
    for (name, text, want) in cases {
        let cfg = write_config(name, text);
        let out = Command::new(env!("CARGO_BIN_EXE_prism"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env_remove("LIVEKIT_KEYS")
            .env_remove("PRISM_KEYS")
            .env_remove("NODE_IP")
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&cfg);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: started anyway");
        assert!(err.contains(want), "{name}: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["serve", "--config", "/nonexistent/prism.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/prism.yaml"));
}
