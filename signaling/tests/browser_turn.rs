//! TURN with LiveKit's JS SDK in Chromium: two browsers join with relay-only ICE (the
//! try-it page's `?relay=1`, livekit-client's `rtcConfig.iceTransportPolicy = 'relay'`),
//! so media can only flow through the TURN servers Prism hands out in
//! `JoinResponse.ice_servers`. Each must decode the other's video, and the selected
//! candidate pair of every connection (getStats) must be a relay candidate over the
//! expected protocol, so a TURN server that is not used fails the test.
//!
//! Three servers: Prism's embedded TURN over UDP, over TLS (a certificate made by the
//! test; Chromium runs with `--ignore-certificate-errors`), and a coturn started by the
//! test with `use-auth-secret` (Prism gives each participant TURN REST credentials from
//! the shared secret in `rtc.turn_servers`).
//!
//! Skipped with `PRISM_SKIP_BROWSER=1` or `PRISM_SKIP_INTEROP=1`; a missing coturn is a
//! failure (scripts/setup.sh installs it).

mod common;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

const BROWSER_TIMEOUT: Duration = Duration::from_secs(150);

/// Runs the `relay` scenario against `server`; returns its summary, asserting success.
fn run_relay(server: &Server, room: &str, protocol: &str) -> Value {
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join("interop.mjs"))
        .args(["--url", &server.http, "--scenario", "relay", "--room", room])
        .args(["--relay-protocol", protocol, "--timeout", "120"]);
    let (ok, summary, text) = run_interop(cmd, BROWSER_TIMEOUT);
    assert!(
        ok,
        "relay-only browsers failed: {}\n{text}",
        summary["failures"]
    );
    // Checked again here, so a broken script cannot pass.
    for who in ["alice", "bob"] {
        let got = &summary[format!("{who}_received")]["video"]["framesDecoded"];
        assert!(got.as_f64().unwrap_or(0.0) > 0.0, "{who}: {summary}");
        let pairs = summary[format!("{who}_pairs")]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(pairs.len() >= 2, "{who}: {summary}");
        for p in pairs {
            assert_eq!(p["local"], "relay", "{who}: {p}");
            assert_eq!(p["relayProtocol"], protocol, "{who}: {p}");
        }
    }
    summary
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509NameBuilder, X509};
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "localhost").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let (cert, keyf) = (dir.join("turn.crt"), dir.join("turn.key"));
    std::fs::write(&cert, b.build().to_pem().unwrap()).unwrap();
    std::fs::write(&keyf, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert, keyf)
}

#[test]
fn relay_only_browsers_through_the_embedded_turn_over_udp() {
    if !browser_ready() {
        return;
    }
    let _guard = serial();
    let port = free_udp_port();
    let config = format!("turn:\n  enabled: true\n  udp_port: {port}\n  tls_port: 0\n");
    let server = Server::start_with(&["--config-body", &config]);
    run_relay(&server, "turn-udp", "udp");
}

#[test]
fn relay_only_browsers_through_the_embedded_turn_over_tls() {
    if !browser_ready() {
        return;
    }
    let _guard = serial();
    let dir = std::env::temp_dir().join(format!("prism-turn-tls-{}", std::process::id()));
    let (cert, key) = self_signed(&dir);
    let port = free_tcp_port();
    let config = format!(
        "turn:\n  enabled: true\n  udp_port: 0\n  tls_port: {port}\n  cert_file: {}\n  \
         key_file: {}\n",
        cert.display(),
        key.display()
    );
    let server = Server::start_with(&["--config-body", &config]);
    run_relay(&server, "turn-tls", "tls");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A coturn on loopback with a shared secret; killed on drop.
struct Coturn(Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Coturn {
    fn start(port: u16, secret: &str) -> Coturn {
        let child = Command::new("turnserver")
            .args([
                "-n",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--log-file=stdout",
            ])
            .arg("--listening-ip=127.0.0.1")
            .arg("--relay-ip=127.0.0.1")
            .arg(format!("--listening-port={port}"))
            .args(["--min-port=40000", "--max-port=40999"])
            .arg("--use-auth-secret")
            .arg(format!("--static-auth-secret={secret}"))
            .arg("--realm=prism.test")
            .arg("--allow-loopback-peers")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning turnserver (apt-get install coturn, or run scripts/setup.sh)");
        let c = Coturn(child);
        // Ready when it answers a STUN Binding request.
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut req = [0u8; 20];
        req[1] = 1;
        req[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
        req[8..].copy_from_slice(b"prism-coturn");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 512];
        loop {
            let _ = sock.send_to(&req, ("127.0.0.1", port));
            if sock.recv_from(&mut buf).is_ok_and(|(n, _)| n >= 20) {
                return c;
            }
            assert!(Instant::now() < deadline, "coturn never answered on {port}");
        }
    }
}

#[test]
fn relay_only_browsers_through_coturn_with_turn_rest_credentials() {
    if !browser_ready() {
        return;
    }
    let _guard = serial();
    let port = free_udp_port();
    let secret = "coturn-shared-secret-for-the-test";
    let _coturn = Coturn::start(port, secret);
    let config = format!(
        "rtc:\n  turn_servers:\n    - host: 127.0.0.1\n      port: {port}\n      \
         protocol: udp\n      secret: {secret}\n      ttl: 600\n"
    );
    let server = Server::start_with(&["--config-body", &config]);
    run_relay(&server, "turn-coturn", "udp");
}
