//! The cluster on the two other Redis deployments LiveKit's `redis:` keys describe: a Redis
//! Cluster (`cluster_addresses`) and a master found through Sentinel (`sentinel_addresses`,
//! `sentinel_master_name`), each started here from `redis-server`. Two `prism serve` nodes
//! configured only by those keys register, become ready, and share a room: a join through
//! each node ends on one owner recorded in Redis (the claim script runs in one Cluster
//! slot thanks to the room's hash tag; through Sentinel it runs on the master).

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{node_of, rtc_status, wait_until, Node};
use common::*;

const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `redis-cli` against `port` (following Cluster redirections); its output, trimmed.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-c", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Redis processes started by the test, killed on drop, in a scratch directory.
struct Processes {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Processes {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("prism-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Processes {
            children: Vec::new(),
            dir,
        }
    }

    fn redis(&mut self, args: &[&str]) {
        let child = Command::new("redis-server")
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed: run scripts/setup.sh");
        self.children.push(child);
    }

    fn config(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_pong(port: u16) {
    wait_until("redis-server up", Duration::from_secs(20), || {
        cli(port, &["PING"]) == "PONG"
    });
}

fn node(config: &str) -> Node {
    node_of(Server::start_with(&["--config", config]))
}

/// Two nodes on the Redis described by `config`: both ready and registered, and a room
/// joined through each ends on one owner. `redis` answers `redis-cli` for the data.
fn two_nodes_share_a_room(config: &str, redis: u16) {
    let nodes = [node(config), node(config)];
    wait_until("both nodes ready", WAIT, || {
        nodes
            .iter()
            .all(|n| http(&n.server, "GET", "/readyz", None, None).0 == 200)
    });
    assert_eq!(cli(redis, &["ZCARD", "prism:nodes"]), "2");
    for n in &nodes {
        let entry = cli(redis, &["GET", &format!("prism:node:{{{}}}", n.id)]);
        assert!(entry.contains("SERVING"), "{}: {entry}", n.id);
    }
    let room = "modes";
    for (i, n) in nodes.iter().enumerate() {
        let (status, text) = rtc_status(n, &token(room, &format!("p{i}"), &[]), "");
        assert_eq!(status, 101, "join through node {i}: {text}");
    }
    let owner = cli(redis, &["HGET", &format!("prism:room:{{{room}}}"), "owner"]);
    assert!(
        nodes.iter().any(|n| n.id == owner),
        "one of the nodes owns the room: {owner:?}"
    );
    assert_eq!(
        cli(redis, &["HGET", &format!("prism:room:{{{room}}}"), "epoch"]),
        "1"
    );
}

#[test]
fn a_redis_cluster_carries_the_directory() {
    let _g = serial();
    let mut p = Processes::new("redis-cluster");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    for port in &ports {
        let conf = format!("nodes-{port}.conf");
        p.redis(&[
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &conf,
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
    }
    for port in &ports {
        wait_pong(*port);
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli --cluster create");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stdout)
    );
    wait_until("the Redis Cluster is up", WAIT, || {
        ports
            .iter()
            .all(|p| cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
    });
    let config = p.config(
        "prism.yaml",
        &format!("redis:\n  cluster_addresses: [{}]\n", addrs.join(", ")),
    );
    two_nodes_share_a_room(&config, ports[0]);
}

#[test]
fn a_master_found_through_sentinel_carries_the_directory() {
    let _g = serial();
    let mut p = Processes::new("redis-sentinel");
    let master = free_port();
    p.redis(&[
        "--port",
        &master.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    wait_pong(master);
    let sentinel = free_port();
    let conf = p.config(
        "sentinel.conf",
        &format!("port {sentinel}\nbind 127.0.0.1\nsentinel monitor prism 127.0.0.1 {master} 1\n"),
    );
    p.redis(&[&conf, "--sentinel"]);
    let deadline = Instant::now() + WAIT;
    loop {
        let a = cli(sentinel, &["SENTINEL", "get-master-addr-by-name", "prism"]);
        if a.contains(&master.to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sentinel does not know the master: {a:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let config = p.config(
        "prism.yaml",
        &format!(
            "redis:\n  sentinel_master_name: prism\n  sentinel_addresses: [127.0.0.1:{sentinel}]\n"
        ),
    );
    two_nodes_share_a_room(&config, master);
}
