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
        let mut args = vec!["serve".to_owned(), "--config".to_owned()];
        args.push(config.display().to_string());
        args.extend(flags.iter().map(|f| f.to_string()));
        Self::start_args(&args, env)
    }

    fn start_args(args: &[String], env: &[(&str, &str)]) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_prism"));
        cmd.args(args)
            .env_remove("LIVEKIT_KEYS")
            .env_remove("PRISM_KEYS")
            .env_remove("RUST_LOG")
            .env_remove("NODE_IP")
            .env_remove("LIVEKIT_CONFIG")
            .env_remove("UDP_PORT")
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
    // Logs are JSON objects with a level (other threads log too, in no set order: wait for
    // the one that says the server is listening).
    serve.wait_for("a JSON log line saying the server listens", |l| {
        serde_json::from_str::<Value>(l)
            .is_ok_and(|v| v["level"].is_string() && v["fields"]["message"] == "listening")
    });

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
            .filter(|l| l.starts_with("a=candidate:") && l.contains(" UDP "))
            .collect();
        // The passive ICE-TCP candidate (default port 7881 here) is advertised the same way.
        assert!(
            answer
                .lines()
                .filter(|l| l.contains(" TCP "))
                .all(|c| c.contains(&format!(" {want} ")) && c.ends_with("tcptype passive")),
            "{env:?} {flags:?}: {answer}"
        );
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

/// A STUN server on loopback that tells every asker it is `mapped` (the NAT's address of
/// a cloud VM); it answers until the test process ends.
fn fake_stun(mapped: std::net::Ipv4Addr) -> std::net::SocketAddr {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            if n < 20 {
                continue;
            }
            let mut a = Vec::with_capacity(32);
            a.extend_from_slice(&0x0101u16.to_be_bytes()); // Binding success
            a.extend_from_slice(&12u16.to_be_bytes());
            a.extend_from_slice(&buf[4..20]); // cookie and transaction id
            a.extend_from_slice(&0x0020u16.to_be_bytes()); // XOR-MAPPED-ADDRESS
            a.extend_from_slice(&8u16.to_be_bytes());
            a.extend_from_slice(&[0, 1]);
            a.extend_from_slice(&(from.port() ^ 0x2112).to_be_bytes());
            a.extend_from_slice(&(u32::from(mapped) ^ 0x2112_A442).to_be_bytes());
            let _ = sock.send_to(&a, from);
        }
    });
    addr
}

/// LiveKit's own `config-sample.yaml` with every key uncommented (the fixture, made by
/// `scripts/livekit-config-sample.py` from the stored LiveKit repository), given the way
/// a container gives it (`LIVEKIT_CONFIG`). Only values are changed: ports to free ones,
/// the STUN server to one on loopback, the coturn secret file to a temporary one.
fn livekit_sample(port: u16, tcp: u16, stun: std::net::SocketAddr, secret: &Path) -> String {
    let sample = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/livekit-config-sample.yaml"),
    )
    .unwrap();
    let mut out = String::new();
    for line in sample.lines() {
        let line = match line {
            "port: 7880" => format!("port: {port}"),
            "  port_range_start: 50000" => "  port_range_start: 0".into(),
            "  port_range_end: 60000" => "  port_range_end: 0".into(),
            "  tcp_port: 7881" => format!("  tcp_port: {tcp}"),
            "    - server1" => format!("    - {stun}"),
            l if l.contains("/var/lib/coturn/secret") => {
                format!("      secret_file: {}", secret.display())
            }
            l => l.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Prism starts on LiveKit's sample configuration: one warning line for each LiveKit key
/// it does not implement (and none for the keys it does), and the keys it implements take
/// effect: the port, `keys`, `use_external_ip` (the address the STUN server reports is
/// advertised, first) with `advertise_internal_ip` (the bound address after it), `redis:`
/// (a cluster node, refusing new rooms while its directory is unreachable).
#[test]
fn livekit_config_sample_starts_and_names_each_key_it_ignores() {
    let _g = serial();
    let port = free_port();
    let tcp = free_port();
    let stun = fake_stun("198.51.100.20".parse().unwrap());
    let secret = std::env::temp_dir().join(format!("prism-coturn-{}", std::process::id()));
    std::fs::write(&secret, "a-shared-secret-for-the-test\n").unwrap();
    let body = livekit_sample(port, tcp, stun, &secret);
    let mut serve = Serve::start_args(
        &["serve".to_owned(), "--cores".to_owned(), "0".to_owned()],
        &[("LIVEKIT_CONFIG", &body)],
    );
    let banner = serve.wait_for("listening line", |l| l.starts_with("prism: listening on"));
    assert!(
        banner.contains(&format!("http://127.0.0.1:{port}"))
            && banner.contains("advertised as 198.51.100.20, 127.0.0.1"),
        "{banner}"
    );
    let ignored: Vec<String> = serve
        .seen
        .iter()
        .filter(|l| l.contains("Prism does not implement it"))
        .filter_map(|l| l.split('`').nth(1).map(str::to_owned))
        .collect();
    let mut unique = ignored.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ignored.len(), "one line per key: {ignored:?}");
    for key in [
        "redis.tls.enabled",
        "redis.tls.ca_cert_file",
        "rtc.congestion_control.allow_pause",
        "rtc.skip_external_ip_validation",
        "rtc.pli_throttle.low_quality",
        "rtc.interfaces.includes",
        "rtc.batch_io.batch_size",
        "prometheus_port",
        "debug_handler_port.port",
        "logging.pion_level",
        "room.enabled_codecs",
        "room.playout_delay.min",
        "webhook.urls",
        "signal_relay.retry_timeout",
        "psrpc.max_attempts",
        "audio.active_red_encoding",
        "region",
        "node_selector.regions",
        "limit.max_api_request_body_size",
    ] {
        assert!(
            ignored.iter().any(|k| k == key),
            "no warning for {key}: {ignored:?}"
        );
    }
    for implemented in [
        "port",
        "keys",
        "rtc.tcp_port",
        "rtc.node_ip",
        "rtc.use_external_ip",
        "rtc.stun_servers",
        "rtc.turn_servers",
        "rtc.packet_buffer_size_video",
        "room.max_participants",
        "turn.udp_port",
        "ingress.rtmp_base_url",
        "ingress.whip_base_url",
        "redis.address",
        "redis.sentinel_addresses",
        "redis.cluster_addresses",
    ] {
        assert!(
            !ignored
                .iter()
                .any(|k| k == implemented || k.starts_with(&format!("{implemented}."))),
            "{implemented} is implemented but was reported as ignored"
        );
    }
    // The sample's own key signs tokens. Its `redis:` section puts the node in a cluster
    // whose directory is unreachable here (the sample's hosts do not exist): a WHIP
    // publisher opening a new room is refused with 503 naming Redis, as every new room is
    // while the directory cannot be reached (docs/cluster.md).
    let publish = VideoGrant {
        room_join: true,
        room: "sample".into(),
        can_publish: Some(true),
        ..Default::default()
    };
    let offer = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aiortc_offer.sdp"),
    )
    .unwrap();
    let (status, answer) = http_at(
        &format!("127.0.0.1:{port}"),
        "POST",
        "/whip/sample",
        Some(&token_for("whip-pub", "key1", "secret1", publish)),
        Some(&offer),
    );
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("Redis"), "{answer}");
    // The status page's data shows the same addresses.
    let list = VideoGrant {
        room_list: true,
        ..Default::default()
    };
    let (status, state) = http_at(
        &format!("127.0.0.1:{port}"),
        "GET",
        "/api/state",
        Some(&token("key1", "secret1", list)),
        None,
    );
    assert_eq!(status, 200, "{state}");
    let json = state.split("\r\n\r\n").nth(1).unwrap_or("");
    let state: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let advertised = &state["cores"][0]["advertised"];
    assert!(
        advertised[0]
            .as_str()
            .is_some_and(|a| a.starts_with("198.51.100.20:"))
            && advertised[1]
                .as_str()
                .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{}",
        state["cores"]
    );
    drop(serve);

    // A key that is nobody's is still refused, by name; --disable-strict-config lets it by.
    let typo = format!("{body}rtc_typo: 1\n");
    let out = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["serve", "--config-body", &typo])
        .env_remove("LIVEKIT_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("`rtc_typo`"), "{err}");
    let mut serve = Serve::start_args(
        &[
            "serve".to_owned(),
            "--disable-strict-config".to_owned(),
            "--cores".to_owned(),
            "0".to_owned(),
            "--config-body".to_owned(),
            typo,
        ],
        &[],
    );
    serve.wait_for("listening line", |l| l.starts_with("prism: listening on"));
    assert!(
        serve
            .seen
            .iter()
            .any(|l| l.contains("`rtc_typo` is neither Prism's nor LiveKit's")),
        "{:?}",
        serve.seen
    );
    let _ = std::fs::remove_file(&secret);
}

/// `--help` answers on every subcommand, and LiveKit's flags are known.
#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["token", "--help"],
        &["token", "create", "--help"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_prism"))
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("Usage:"),
            "{args:?}: {text}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--dev",
        "--bind",
        "--config",
        "--config-body",
        "--keys",
        "--key-file",
        "--node-ip",
        "--udp-port",
        "--redis-host",
        "--redis-password",
        "--turn-cert",
        "--disable-strict-config",
    ] {
        assert!(text.contains(flag), "serve --help lacks {flag}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_prism"))
        .args([
            "token",
            "create",
            "--room",
            "r",
            "--identity",
            "i",
            "--bogus",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
}

/// LiveKit's `--key-file` (and `key_file:` in the file) replaces the file's `keys`.
#[test]
fn a_key_file_replaces_the_files_keys() {
    let _g = serial();
    let secret = "file-secret-that-is-long-enough-for-a-test-789";
    let keys = write_config("keyfile", &format!("filekey: {secret}\n"));
    for (how, flags, extra) in [
        (
            "--key-file",
            vec!["--key-file", keys.to_str().unwrap()],
            String::new(),
        ),
        (
            "key_file:",
            vec![],
            format!("key_file: {}\n", keys.display()),
        ),
    ] {
        let port = free_port();
        let cfg = write_config(
            "withkeyfile",
            &format!(
                "port: {port}\nkeys:\n  {CFG_KEY}: {CFG_SECRET}\n{extra}\
                 rtc:\n  udp_port: 0\n  cores: [0]\n"
            ),
        );
        let mut serve = Serve::start_with(&cfg, &[], &flags);
        serve.wait_for("listening line", |l| l.starts_with("prism: listening on"));
        let list = VideoGrant {
            room_list: true,
            ..Default::default()
        };
        let (status, v) = post(
            port,
            "ListRooms",
            &token("filekey", secret, list.clone()),
            "{}",
        );
        assert_eq!(status, 200, "{how}: {v}");
        let (status, _) = post(port, "ListRooms", &token(CFG_KEY, CFG_SECRET, list), "{}");
        assert_eq!(status, 401, "{how}: the file's keys were replaced");
        drop(serve);
        let _ = std::fs::remove_file(&cfg);
    }
    let _ = std::fs::remove_file(&keys);
}
