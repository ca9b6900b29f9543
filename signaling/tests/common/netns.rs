//! Network namespaces for the deployment tests: a host behind NAT, a client behind a
//! firewall. Each [`Netns`] is created by the test, named after the test and its process so
//! that concurrent runs never share one, and deleted on drop (its veth ends with it).
//!
//! They need root (CI runs as root); [`Netns::available`] says why not otherwise, and the
//! tests skip with that reason printed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

/// A network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Netns {
    /// `None` when namespaces can be made here, else why not. As root (CI), being unable
    /// to is a failure, not a reason to skip: a test that runs nothing must not pass there.
    pub fn available() -> Option<String> {
        static PROBE: OnceLock<Option<String>> = OnceLock::new();
        let why = PROBE.get_or_init(|| {
            let probe = format!("prism-probe-{}", std::process::id());
            let added = Command::new("ip")
                .args(["netns", "add", &probe])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !added {
                return Some("cannot create network namespaces (needs root and iproute2)".into());
            }
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            let nft = Command::new("nft")
                .args(["--version"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            (!nft).then(|| "nft (nftables) is not installed: run scripts/setup.sh".into())
        });
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        if let (Some(why), true) = (why, root) {
            panic!("running as root, yet: {why}");
        }
        why.clone()
    }

    pub fn new(tag: &str) -> Netns {
        let name = format!("prism-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        run(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command in the namespace; it must succeed.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["ip", "netns", "exec", &self.name];
        all.extend_from_slice(args);
        run(&all)
    }

    /// A command prefix that runs a program in the namespace.
    pub fn prefix(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Loads an nftables ruleset into the namespace.
    pub fn nft(&self, ruleset: &str) {
        let path = std::env::temp_dir().join(format!("{}.nft", self.name));
        std::fs::write(&path, ruleset).unwrap();
        self.exec(&["nft", "-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(&path);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A veth pair between two namespaces, each end up with its address (`10.0.0.1/24`).
pub fn veth(a: &Netns, a_if: &str, a_ip: &str, b: &Netns, b_if: &str, b_ip: &str) {
    run(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", b_if, "netns", &b.name,
    ]);
    for (ns, ifname, ip) in [(a, a_if, a_ip), (b, b_if, b_ip)] {
        ns.exec(&["ip", "addr", "add", ip, "dev", ifname]);
        ns.exec(&["ip", "link", "set", ifname, "up"]);
    }
}

/// `prism serve --dev` inside a namespace (HTTP on 0.0.0.0:7880, media on UDP 7882, one
/// core), killed on drop.
pub struct NsServer {
    child: Child,
    /// The `prism: listening on …` line (it names the driver in use).
    pub listening: String,
}

impl NsServer {
    pub fn start(ns: &Netns, extra: &[&str]) -> NsServer {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_prism")])
            .args([
                "serve",
                "--dev",
                "--bind",
                "0.0.0.0:7880",
                "--udp-port",
                "7882",
            ])
            .args(["--cores", "0", "--log-level", "info"])
            .args(extra)
            .env_remove("NODE_IP")
            .env_remove("LIVEKIT_CONFIG")
            .env_remove("UDP_PORT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawning prism in its namespace");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let err = super::drain(child.stderr.take().unwrap(), None);
        let listening = loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(l) if l.starts_with("prism: listening on") => break l,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("prism did not start in its namespace:\n{}", err.take());
                }
            }
        };
        // Keep draining so the server never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        NsServer { child, listening }
    }
}

impl Drop for NsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
