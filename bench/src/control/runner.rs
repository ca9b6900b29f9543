//! Runs the scenarios against one or two builds, alternating between them round by round
//! (old then new, then new then old, …) so that a drift in the machine's load is shared
//! rather than billed to one build. Both servers run the whole time, each on its own
//! ports; only the one being measured has work.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use super::joins;
use super::measure::{Measured, Plan};
use super::offers;
use super::relay;
use super::server::Server;
use crate::sut::proc;

/// The scenarios, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    JoinsOneRoom,
    JoinsManyRooms,
    Relay,
    OfferIdle,
    OfferBusy,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::JoinsOneRoom,
        Scenario::JoinsManyRooms,
        Scenario::Relay,
        Scenario::OfferIdle,
        Scenario::OfferBusy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::JoinsOneRoom => "joins-one-room",
            Scenario::JoinsManyRooms => "joins-many-rooms",
            Scenario::Relay => "relay",
            Scenario::OfferIdle => "offer-idle",
            Scenario::OfferBusy => "offer-busy",
        }
    }

    /// `joins`, `relay` and `offers` select groups; full names select one.
    pub fn parse_list(s: &str) -> Option<Vec<Scenario>> {
        let mut out = Vec::new();
        for w in s.split(',').map(str::trim) {
            let add: &[Scenario] = match w {
                "joins" => &[Scenario::JoinsOneRoom, Scenario::JoinsManyRooms],
                "offers" => &[Scenario::OfferIdle, Scenario::OfferBusy],
                _ => {
                    let one = Scenario::ALL.iter().find(|x| x.name() == w)?;
                    std::slice::from_ref(one)
                }
            };
            out.extend_from_slice(add);
        }
        out.sort_by_key(|s| Scenario::ALL.iter().position(|x| x == s));
        out.dedup();
        Some(out)
    }

    /// What the scenario does with `plan`'s sizes.
    pub fn describe(self, p: &Plan) -> String {
        match self {
            Scenario::JoinsOneRoom => {
                format!("{} sessions join one room at once", p.joins_one_room)
            }
            Scenario::JoinsManyRooms => {
                format!("{} rooms × {} sessions join at once", p.rooms, p.per_room)
            }
            Scenario::Relay => format!(
                "{} participants each send {} reliable messages at once",
                p.relay_participants, p.relay_messages
            ),
            Scenario::OfferIdle => {
                format!("{} publisher offers, one at a time, idle server", p.offers)
            }
            Scenario::OfferBusy => format!(
                "{} publisher offers while {} sessions join and leave another room",
                p.offers, p.churn_workers
            ),
        }
    }

    async fn run(
        self,
        http: std::net::SocketAddr,
        server_pid: u32,
        tag: &str,
        p: &Plan,
        epoch: Instant,
    ) -> Measured {
        match self {
            Scenario::JoinsOneRoom => joins::burst(http, tag, 1, p.joins_one_room).await,
            Scenario::JoinsManyRooms => joins::burst(http, tag, p.rooms, p.per_room).await,
            Scenario::Relay => {
                let timeout = Duration::from_secs(p.relay_timeout_s);
                relay::relay(
                    http,
                    server_pid,
                    tag,
                    p.relay_participants,
                    p.relay_messages,
                    timeout,
                    epoch,
                )
                .await
            }
            Scenario::OfferIdle => offers::offers(http, tag, p.offers, None).await,
            Scenario::OfferBusy => offers::offers(http, tag, p.offers, Some(p.churn_workers)).await,
        }
    }
}

/// A server build under test.
#[derive(Clone, Debug, Serialize)]
pub struct Build {
    /// `old` or `new` (or `smoke`).
    pub role: String,
    /// What was built: a git revision, or a description.
    pub label: String,
    pub bin: PathBuf,
}

/// One scenario against one build, every round merged.
#[derive(Debug)]
pub struct Row {
    pub scenario: Scenario,
    pub build: usize,
    pub rounds: usize,
    pub measured: Measured,
    /// Each round's rate: the report gives their median, which one disturbed round
    /// cannot move (summed spans would let it).
    pub round_rates: Vec<f64>,
    pub load_cpu_s: f64,
    pub server_cpu_s: f64,
    pub wall_s: f64,
}

/// `TcpExtListenOverflows` from `/proc/net/netstat`: connections the kernel refused because
/// a listen queue was full (host-wide). A join that hits one waits a second for the SYN
/// to be resent, which shows as a 1 s outlier.
pub fn listen_overflows() -> u64 {
    let Ok(t) = std::fs::read_to_string("/proc/net/netstat") else {
        return 0;
    };
    let mut lines = t.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ListenOverflows")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Waits (at most 20 s) until no server is busy: the run just measured leaves work behind
/// (leaves, closing transports), and both servers share one CPU, so the next run would be
/// billed for it.
fn quiesce(servers: &[Server]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let busy = || servers.iter().map(Server::cpu_seconds).sum::<f64>();
    let mut before = busy();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = busy();
        // Under 8 % of a CPU (the /proc clock ticks at 10 ms).
        if now - before < 0.02 {
            return;
        }
        before = now;
    }
    eprintln!("  (servers still busy after 20 s; going on)");
}

/// Runs `scenarios` against every build. `log_dir` gets each server's log.
pub fn run(
    plan: &Plan,
    scenarios: &[Scenario],
    builds: &[Build],
    server_cpu: Option<usize>,
    log_dir: &Path,
) -> Result<Vec<Row>> {
    std::fs::create_dir_all(log_dir)?;
    let mut servers = builds
        .iter()
        .map(|b| {
            Server::start(
                &b.bin,
                server_cpu,
                &log_dir.join(format!("prism-{}.log", b.role)),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    // One thread: the load generator is pinned to one CPU, and sharing it between threads
    // would only add switches.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let epoch = Instant::now();
    let me = std::process::id();
    let mut rows = Vec::new();
    for &scenario in scenarios {
        let mut merged: Vec<Row> = (0..builds.len())
            .map(|b| Row {
                scenario,
                build: b,
                rounds: 0,
                measured: Measured::default(),
                round_rates: Vec::new(),
                load_cpu_s: 0.0,
                server_cpu_s: 0.0,
                wall_s: 0.0,
            })
            .collect();
        for round in 0..plan.rounds {
            for k in 0..builds.len() {
                let b = (k + round) % builds.len();
                let server = &mut servers[b];
                let tag = format!("{}-{}-{round}", scenario.name(), builds[b].role);
                let (load0, srv0, t0) = (
                    proc::cpu_seconds(me).unwrap_or(0.0),
                    server.cpu_seconds(),
                    Instant::now(),
                );
                let overflows = listen_overflows();
                let mut m = rt.block_on(scenario.run(server.http, server.pid(), &tag, plan, epoch));
                let dropped = listen_overflows().saturating_sub(overflows);
                m.extra.insert("listen_overflows".into(), dropped as f64);
                let row = &mut merged[b];
                row.wall_s += t0.elapsed().as_secs_f64();
                row.load_cpu_s += proc::cpu_seconds(me).unwrap_or(0.0) - load0;
                row.server_cpu_s += server.cpu_seconds() - srv0;
                row.rounds += 1;
                row.round_rates.push(m.rate());
                let s = m.summary();
                eprintln!(
                    "  {:<17} round {round} {:<4} {:>9.1}/s  p50 {:>8.2} ms  p99 {:>8.2} ms  failures {}{}",
                    scenario.name(),
                    builds[b].role,
                    m.rate(),
                    s.p50_ms,
                    s.p99_ms,
                    m.failures,
                    m.errors.first().map(|e| format!("  ({e})")).unwrap_or_default()
                );
                row.measured.absorb(&m);
                if !server.alive() {
                    row.measured
                        .fail(format!("server exited; log {}", server.log.display()));
                    *server = Server::start(&builds[b].bin, server_cpu, &server.log.clone())?;
                }
                std::thread::sleep(Duration::from_millis(plan.settle_ms));
                quiesce(&servers);
            }
        }
        rows.extend(merged);
    }
    Ok(rows)
}
