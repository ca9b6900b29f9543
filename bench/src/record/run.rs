//! One run of the recording bench: a `prism serve --dev` pinned to the SUT CPU (its
//! forwarding core pinned there too), a WHIP publisher of N tracks and V WHEP viewers of
//! all of them, then rounds of phases, alternating the conditions (no recording, every
//! track recorded) in ABBA order so that a drift in the shared machine's load is billed to
//! neither.
//!
//! A recording phase starts one track egress per track through Twirp, finds the recorder
//! threads by name in `/proc/<pid>/task` and pins them where the condition says (by
//! default the load CPU: off the forwarding core, where they belong), warms up, then
//! measures a window: the load side's counts, the forwarding core's CPU (thread
//! `prism-core-*`), the recorder threads' CPU (both from each thread's `schedstat`, in
//! nanoseconds), the whole server's CPU (`stat`, every thread) and the media
//! plane's counters from `/metrics`. Every phase stops sending and drains before and after
//! its window, so every packet sent in the window is accounted. Then the egresses are
//! stopped, and the files' sizes (as StopEgress reports them, checked on disk) are kept.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::http;
use super::load::{ssrc_of, Counts, Load};
use super::peer::{video_offer, Local, Peer};
use crate::control::server::Server;

const ROOM: &str = "bench-record";
const PUBLISHER: &str = "camera";

/// What one run does.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub tracks: usize,
    pub viewers: usize,
    pub fps: f64,
    pub rounds: usize,
    pub warmup_s: f64,
    pub window_s: f64,
    pub conditions: Vec<Condition>,
    pub gen_cpu: Option<usize>,
    pub sut_cpu: Option<usize>,
}

/// What a phase measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// Forwarding only.
    None,
    /// Every track recorded; recorder threads on the load CPU (off the forwarding core).
    Record,
    /// Every track recorded; recorder threads left on the forwarding core's CPU.
    RecordShared,
}

impl Condition {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Condition::None),
            "record" => Some(Condition::Record),
            "record-shared" => Some(Condition::RecordShared),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Condition::None => "none",
            Condition::Record => "record",
            Condition::RecordShared => "record-shared",
        }
    }

    fn records(self) -> bool {
        self != Condition::None
    }
}

/// One egress's end, as StopEgress reported it.
#[derive(Clone, Debug, Serialize)]
pub struct FileResult {
    pub status: String,
    pub bytes: u64,
    pub bytes_on_disk: u64,
    pub duration_s: f64,
    /// Whether the file starts with the EBML magic (a WebM file).
    pub webm: bool,
    pub error: String,
}

/// One phase's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub round: usize,
    pub condition: Condition,
    /// Where the recorder threads ran (CPU list, as pinned), when recording.
    pub recorder_cpu: Option<usize>,
    pub recorder_threads: usize,
    pub window_s: f64,
    pub counts: Counts,
    /// Packets the viewers received per second of the window, and the share of what
    /// they were due (sent × viewers) that never arrived.
    pub delivered_pps: f64,
    pub loss: f64,
    pub core_cpu_s: f64,
    pub process_cpu_s: f64,
    pub recorder_cpu_s: f64,
    /// The recorder threads' CPU seconds per second while nothing is sent (after the
    /// window, before StopEgress).
    pub recorder_idle_cpu_per_s: f64,
    /// Rescheduling IPIs each CPU received during the window (and its drain): a thread
    /// woken on another CPU than the waker's costs one (on a VM, an exit of the sender).
    pub resched_ipis: Vec<u64>,
    /// The media plane's own counters over the window (`/metrics`): datagrams sent by the
    /// forwarding core (to viewers, recorders, and RTCP), NACKs it received, and packets it
    /// retransmitted.
    pub forwarder_out: u64,
    pub nacks_received: u64,
    pub retransmits: u64,
    /// Forwarding core CPU per packet delivered to a viewer, and per datagram it sent.
    pub core_us_per_delivered: f64,
    pub core_us_per_sent: f64,
    /// Recorder CPU per packet it was sent (every packet of every recorded track in the
    /// window), and the bytes its files hold.
    pub recorder_us_per_packet: f64,
    pub files: Vec<FileResult>,
}

/// CPU seconds of the thread `tid` of `pid`, from its `schedstat` (nanoseconds on the CPU:
/// `stat`'s 10 ms ticks, truncated per thread, would lose most of a recorder's time).
fn thread_cpu(pid: u32, tid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |ns| ns as f64 / 1e9)
}

/// Thread ids of `pid` whose name starts with `prefix`.
fn threads(pid: u32, prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim().starts_with(prefix))
        })
        .map(|t| t.file_name().to_string_lossy().into_owned())
        .collect()
}

fn cpu_of(pid: u32, tids: &[String]) -> f64 {
    tids.iter().map(|t| thread_cpu(pid, t)).sum()
}

/// Pins thread `tid` to `cpu` (`taskset -p`: affinity is per thread).
fn pin_thread(tid: &str, cpu: usize) -> Result<()> {
    let ok = Command::new("taskset")
        .args(["-p", "-c", &cpu.to_string(), tid])
        .stdout(Stdio::null())
        .status()
        .context("taskset")?
        .success();
    if !ok {
        bail!("taskset could not pin thread {tid} to CPU {cpu}");
    }
    Ok(())
}

/// Rescheduling interrupts (the IPIs a wake-up of a thread on another CPU sends) received
/// by each CPU so far, from `/proc/interrupts`.
fn resched_ipis() -> Vec<u64> {
    std::fs::read_to_string("/proc/interrupts")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.trim_start().starts_with("RES:"))?;
            Some(
                l.split_whitespace()
                    .skip(1)
                    .map_while(|x| x.parse().ok())
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// The media plane's counters summed over cores: (datagrams out, NACKs received,
/// retransmissions).
fn media_counters(http: SocketAddr) -> Result<(u64, u64, u64)> {
    let r = http::request(http, "GET", "/metrics", "", "text/plain", "")?;
    let sum = |name: &str| -> u64 {
        r.body
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    Ok((
        sum("prism_packets_out_total"),
        sum("prism_nacks_received_total"),
        sum("prism_retransmits_total"),
    ))
}

/// The server, its publisher and viewers, and the scratch directory for files.
#[derive(Debug)]
pub struct Bench {
    pub server: Server,
    load: Load,
    tracks: Vec<String>,
    scratch: PathBuf,
}

impl Bench {
    /// Starts the server and connects the publisher and the viewers.
    pub fn start(prism: &Path, cfg: &Config, scratch: &Path) -> Result<Bench> {
        std::fs::create_dir_all(scratch)?;
        let server =
            Server::start_with_level(prism, cfg.sut_cpu, &scratch.join("prism.log"), "info")?;
        let http = server.http;
        let local = Local::new()?;
        let ssrcs: Vec<u32> = (0..cfg.tracks).map(ssrc_of).collect();
        let answer = http::post_sdp(
            http,
            "whip",
            ROOM,
            PUBLISHER,
            &video_offer(&local, cfg.tracks, &ssrcs),
        )?;
        let publisher = Peer::connect(&local, &answer).context("publisher")?;
        let tracks = http::video_tracks(http, ROOM, PUBLISHER)?;
        if tracks.len() != cfg.tracks {
            bail!(
                "the room lists {} video tracks of {PUBLISHER}, not {}",
                tracks.len(),
                cfg.tracks
            );
        }
        let mut viewers = Vec::new();
        for i in 0..cfg.viewers {
            let local = Local::new()?;
            let answer = http::post_sdp(
                http,
                "whep",
                ROOM,
                &format!("viewer-{i}"),
                &video_offer(&local, cfg.tracks, &[]),
            )?;
            viewers.push(Peer::connect(&local, &answer).with_context(|| format!("viewer {i}"))?);
        }
        let load = Load::new(publisher, cfg.tracks, cfg.fps, viewers)?;
        Ok(Bench {
            server,
            load,
            tracks,
            scratch: scratch.to_path_buf(),
        })
    }

    /// Sends for `secs` (not measured), then drains.
    pub fn settle(&mut self, secs: f64) -> Result<()> {
        self.load
            .run(true, Instant::now() + Duration::from_secs_f64(secs))?;
        self.load
            .run(false, Instant::now() + Duration::from_secs(2))
    }

    /// One phase of `condition`.
    pub fn phase(&mut self, cfg: &Config, round: usize, condition: Condition) -> Result<Phase> {
        let http = self.server.http;
        let pid = self.server.pid();
        let mut egresses = Vec::new();
        let mut recorder_cpu = None;
        let mut recorders = Vec::new();
        if condition.records() {
            // Threads of the last phase's recorders may still be exiting.
            let old = threads(pid, "recorder");
            for (i, t) in self.tracks.iter().enumerate() {
                let path = self.scratch.join(format!("r{round}-{i}.webm"));
                egresses.push((
                    http::start_track_egress(http, ROOM, t, &path.to_string_lossy())?,
                    path,
                ));
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while recorders.len() < self.tracks.len() {
                if Instant::now() > deadline {
                    bail!(
                        "{} recorder threads found, {} expected",
                        recorders.len(),
                        self.tracks.len()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
                recorders = threads(pid, "recorder");
                recorders.retain(|t| !old.contains(t));
            }
            recorder_cpu = match condition {
                Condition::Record => cfg.gen_cpu,
                _ => cfg.sut_cpu,
            };
            if let Some(c) = recorder_cpu {
                for t in &recorders {
                    pin_thread(t, c)?;
                }
            }
        }
        self.settle(cfg.warmup_s)?;
        let core = threads(pid, "prism-core");
        let (c0, p0, r0) = (
            cpu_of(pid, &core),
            self.server.cpu_seconds(),
            cpu_of(pid, &recorders),
        );
        let m0 = media_counters(http)?;
        let i0 = resched_ipis();
        let n0 = self.load.counts;
        let t0 = Instant::now();
        self.load
            .run(true, t0 + Duration::from_secs_f64(cfg.window_s))?;
        let window_s = t0.elapsed().as_secs_f64();
        self.load
            .run(false, Instant::now() + Duration::from_secs(2))?;
        let counts = self.load.counts.since(&n0);
        let (c1, p1, r1) = (
            cpu_of(pid, &core),
            self.server.cpu_seconds(),
            cpu_of(pid, &recorders),
        );
        let m1 = media_counters(http)?;
        let ipis: Vec<u64> = resched_ipis()
            .iter()
            .zip(i0.iter().chain(std::iter::repeat(&0)))
            .map(|(b, a)| b.saturating_sub(*a))
            .collect();
        // The recorders' cost with nothing to record: each polls its socket with a short
        // timeout (its timers' resolution).
        let idle = Duration::from_secs(1);
        let recorder_idle_cpu_per_s = if condition.records() {
            let i0 = cpu_of(pid, &recorders);
            std::thread::sleep(idle);
            (cpu_of(pid, &recorders) - i0) / idle.as_secs_f64()
        } else {
            0.0
        };
        let mut files = Vec::new();
        for (id, path) in &egresses {
            let s = http::stop_egress(http, ROOM, id)?;
            let on_disk = std::fs::metadata(path).map_or(0, |m| m.len());
            let mut head = [0u8; 4];
            let _ = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
            files.push(FileResult {
                status: s.status,
                bytes: s.size,
                bytes_on_disk: on_disk,
                duration_s: s.duration_s,
                webm: head.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]),
                error: s.error,
            });
            let _ = std::fs::remove_file(path);
        }
        let (core_cpu_s, recorder_cpu_s) = (c1 - c0, r1 - r0);
        let forwarder_out = m1.0 - m0.0;
        let due = counts.sent * cfg.viewers as u64;
        let per = |cpu: f64, n: u64| if n == 0 { 0.0 } else { cpu * 1e6 / n as f64 };
        Ok(Phase {
            round,
            condition,
            recorder_cpu,
            recorder_threads: recorders.len(),
            window_s,
            counts,
            delivered_pps: counts.received as f64 / window_s,
            loss: if due == 0 {
                1.0
            } else {
                1.0 - counts.received as f64 / due as f64
            },
            core_cpu_s,
            process_cpu_s: p1 - p0,
            recorder_cpu_s,
            recorder_idle_cpu_per_s,
            resched_ipis: ipis,
            forwarder_out,
            nacks_received: m1.1 - m0.1,
            retransmits: m1.2 - m0.2,
            core_us_per_delivered: per(core_cpu_s, counts.received),
            core_us_per_sent: per(core_cpu_s, forwarder_out),
            recorder_us_per_packet: if condition.records() {
                per(recorder_cpu_s, counts.sent)
            } else {
                0.0
            },
            files,
        })
    }
}

/// Rounds of every condition, in ABBA order.
pub fn run(prism: &Path, cfg: &Config, scratch: &Path) -> Result<Vec<Phase>> {
    let mut bench = Bench::start(prism, cfg, scratch)?;
    // Every viewer's down tracks start on a keyframe: get past that before measuring.
    bench.settle(cfg.warmup_s.max(1.0))?;
    let mut phases = Vec::new();
    for round in 0..cfg.rounds {
        let mut order = cfg.conditions.clone();
        if round % 2 == 1 {
            order.reverse();
        }
        for c in order {
            eprintln!("  round {}/{}: {}", round + 1, cfg.rounds, c.label());
            let p = bench.phase(cfg, round, c)?;
            eprintln!(
                "    delivered {:.0} pps, loss {:.4} %, core {:.2} µs/packet, recorder {:.2} µs/packet",
                p.delivered_pps,
                p.loss * 100.0,
                p.core_us_per_delivered,
                p.recorder_us_per_packet
            );
            phases.push(p);
        }
    }
    Ok(phases)
}
