//! Trials and the search over offered load.
//!
//! A trial drives the generator and the sinks from one loop for a fixed time at one load
//! factor, then drains what is still in flight. The search doubles the offered egress rate
//! until a trial loses more than [`MAX_LOSS`], delivers half its packets later than
//! [`MAX_QUEUE`] (or the generator cannot keep up), then bisects between the last passing
//! and the first failing rate. Latency is measured in a separate trial at half the highest
//! passing rate.
//!
//! Why a bound on the median latency: a system past its limit with megabytes of socket
//! buffer loses nothing in a 2-second trial: it queues, and delivers everything late
//! (medians of 100-400 ms were seen). Counted as passing, the trial would credit it with a
//! rate it cannot sustain, and a system that sheds a standing queue (Prism's drivers) would
//! look slower than one that lets it stand.
//!
//! For an SRTP system the generator and the sinks get their keys before the first trial;
//! a trial in which any sink saw a tag that did not verify fails, whatever its loss.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::accounting::Tally;
use crate::generator::Generator;
use crate::scenario::{self, Kind, Topology};
use crate::sink::Sinks;
use crate::sut::proc::CoreTimes;
use crate::sut::{proc, Env, System, SystemKind};

/// Highest loss fraction a trial may show and still pass.
pub const MAX_LOSS: f64 = 0.001;

/// Highest median one-way latency a trial may show and still pass: above it a queue stands
/// in front of the system. The same bound as the forwarder's drivers shed at
/// (`prism_forwarder::io::MAX_SOJOURN`); idle, the median is under 2 ms on loopback and veth.
pub const MAX_QUEUE: Duration = Duration::from_millis(50);

/// How long trials last and how hard the search works.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Plan {
    pub trial: Duration,
    pub warmup: Duration,
    /// Egress packets/s of the first trial.
    pub start_pps: f64,
    /// Bisection steps after the ramp (0: ramp only).
    pub bisect: u32,
    /// Smoke: one trial at `start_pps`, no search.
    pub smoke: bool,
}

impl Plan {
    pub fn full() -> Self {
        Self {
            trial: Duration::from_millis(2000),
            warmup: Duration::from_millis(400),
            start_pps: 20_000.0,
            bisect: 3,
            smoke: false,
        }
    }

    pub fn smoke() -> Self {
        Self {
            trial: Duration::from_millis(500),
            warmup: Duration::from_millis(300),
            start_pps: 5_000.0,
            bisect: 0,
            smoke: true,
        }
    }
}

/// Latency percentiles, microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub samples: u64,
}

impl Latency {
    fn of(t: &Tally) -> Self {
        let h = &t.latency;
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            p50_us: us(h.value_at_quantile(0.5)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            samples: h.len(),
        }
    }
}

/// One trial's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Trial {
    /// Where the SUT's CPU and the load's CPU spent the trial (all of it, whoever ran:
    /// on a shared machine other work shows here too).
    pub sut_core: CoreTimes,
    pub load_core: CoreTimes,
    pub target_egress_pps: f64,
    pub factor: f64,
    pub seconds: f64,
    pub sent: u64,
    pub ingress_pps: f64,
    pub expected: u64,
    pub received: u64,
    pub egress_pps: f64,
    /// Loss over the subscriptions that kept their layer, against what was sent.
    pub loss: f64,
    /// Loss inside each stream's received span, over every subscription.
    pub gap_loss: f64,
    /// Switching subscriptions that received their new layer during the trial.
    pub switches_done: usize,
    pub duplicates: u64,
    pub reordered: u64,
    pub skipped_frames: u64,
    pub send_errors: u64,
    pub sut_cpu_s: f64,
    /// Share of its CPU the generator and sinks used during the trial (near 1: the load
    /// side, not the system under test, set the pace).
    pub load_cpu_share: f64,
    /// Packets that arrived too late to count (see [`crate::accounting::LATE_NS`]).
    pub late: u64,
    /// SRTP runs: packets whose tag did not verify at a sink (any fails the trial), packets
    /// the sinks' replay windows refused, and SRTCP at the publishers that did not verify.
    pub srtp_auth_failed: u64,
    pub srtp_replayed: u64,
    pub srtcp_failures: u64,
    pub latency: Latency,
    /// Loss within limits, no standing queue, the generator kept its schedule, and (SRTP)
    /// every tag verified.
    pub pass: bool,
    /// Half the packets or more arrived later than [`MAX_QUEUE`].
    pub queued: bool,
    /// The generator fell behind its schedule (the trial measured the generator).
    pub generator_limited: bool,
}

/// A system's figures for one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub scenario: String,
    pub kind: Kind,
    pub n: usize,
    pub subscribers: usize,
    pub system: SystemKind,
    /// Highest egress rate measured in a passing trial.
    pub max_egress_pps: f64,
    pub max_ingress_pps: f64,
    pub loss_at_max: f64,
    /// What stopped the search: "loss", "generator", "cap" or "error: …".
    pub limited_by: String,
    /// CPU seconds of the system under test per million egress packets, at max.
    pub cpu_s_per_mpkt: f64,
    /// Share of one CPU the system used at max.
    pub cpu_share: f64,
    /// Egress packets per second one fully busy SUT core would move at this cost
    /// (1e6 / `cpu_s_per_mpkt`): comparable even where the load side set the pace.
    pub pps_per_core: f64,
    /// Share of its CPU the load side used in the trial at max.
    pub load_cpu_share: f64,
    pub latency_half_load: Latency,
    pub latency_egress_pps: f64,
    pub rss_bytes: u64,
    /// (RSS at the end − RSS at start) / subscribers.
    pub bytes_per_subscriber: f64,
    pub sut_counters: Option<String>,
    /// SRTP runs: tags that did not verify at the sinks, over every trial and the warm-up.
    pub srtp_auth_failed: u64,
    pub trials: Vec<Trial>,
}

/// The sockets and the running system of one (scenario, system) measurement.
struct Rig<'a> {
    topo: &'a Topology,
    sys: System,
    gen: Generator,
    sinks: Sinks,
    sink_addrs: Vec<SocketAddr>,
    /// Current layer of each switching subscription.
    layers: Vec<usize>,
    trials: usize,
    sut_cpu: Option<usize>,
    gen_cpu: Option<usize>,
}

impl Rig<'_> {
    /// Unique packets expected and received over the subscriptions that keep their layer
    /// (a switching subscription's streams start and stop at the forwarder's discretion),
    /// and how many switching subscriptions received their current layer.
    fn account(&self, tally: &Tally) -> (u64, u64, usize) {
        let switching: Vec<usize> = self.topo.switches.iter().map(|w| w.subscription).collect();
        let (mut expected, mut received) = (0, 0);
        for (i, s) in self.topo.subscriptions.iter().enumerate() {
            if switching.contains(&i) {
                continue;
            }
            expected += self
                .gen
                .sent
                .per_layer
                .get(s.publisher)
                .and_then(|l| l.get(s.spatial))
                .copied()
                .unwrap_or(0);
            received += tally
                .streams
                .get(&(
                    s.subscriber as u32,
                    scenario::stream_id(s.publisher, s.spatial),
                ))
                .map_or(0, |t| t.unique);
        }
        let switched = self
            .topo
            .switches
            .iter()
            .zip(&self.layers)
            .filter(|(w, &layer)| {
                let s = self.topo.subscriptions[w.subscription];
                tally
                    .streams
                    .get(&(s.subscriber as u32, scenario::stream_id(s.publisher, layer)))
                    .is_some_and(|t| t.unique > 0)
            })
            .count();
        (expected, received, switched)
    }

    fn flip_layers(&mut self) -> Result<()> {
        for (i, w) in self.topo.switches.iter().enumerate() {
            let orig = self.topo.subscriptions[w.subscription].spatial;
            let from = self.layers[i];
            let to = if from == orig { w.spatial } else { orig };
            self.sys
                .switch_layer(self.topo, &self.sink_addrs, w.subscription, from, to)?;
            self.layers[i] = to;
        }
        Ok(())
    }

    /// Runs traffic at `target` egress packets/s for `dur`.
    fn trial(&mut self, target: f64, dur: Duration) -> Result<Trial> {
        let factor = target / self.topo.base_egress_pps();
        let pid = self.sys.pid();
        let cpu0 = proc::cpu_seconds(pid).unwrap_or(0.0);
        let own0 = proc::cpu_seconds(std::process::id()).unwrap_or(0.0);
        let core = |c: Option<usize>| c.and_then(CoreTimes::read).unwrap_or_default();
        let (sut_core0, load_core0) = (core(self.sut_cpu), core(self.gen_cpu));
        let refused0 = self.sinks.srtp;
        let t0 = Instant::now();
        self.sinks.reset(crate::clock::nanos_at(t0));
        self.gen.start(factor, t0);
        let end = t0 + dur;
        let mut switch_at = (!self.topo.switches.is_empty()).then(|| t0 + dur / 2);
        self.trials += 1;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let next = self.gen.send_due(now);
            if switch_at.is_some_and(|s| now >= s) {
                switch_at = None;
                self.flip_layers()?;
            }
            let wait = next.min(end).saturating_duration_since(Instant::now());
            self.sinks.poll(wait)?;
        }
        let seconds = t0.elapsed().as_secs_f64();
        let own = proc::cpu_seconds(std::process::id()).unwrap_or(0.0) - own0;
        // Drain what is in flight (a system that fell behind may hold seconds of backlog in
        // its socket buffers): until 100 ms pass without a datagram, 5 s at most.
        let drain_end = Instant::now() + Duration::from_secs(5);
        let mut quiet_since = Instant::now();
        while Instant::now() < drain_end && quiet_since.elapsed() < Duration::from_millis(100) {
            if self.sinks.poll(Duration::from_millis(10))? > 0 {
                quiet_since = Instant::now();
            }
        }
        self.sinks.drain_all();
        let cpu = proc::cpu_seconds(pid).unwrap_or(0.0) - cpu0;
        let sut_core = core(self.sut_cpu).since(&sut_core0);
        let load_core = core(self.gen_cpu).since(&load_core0);
        let tally = self.sinks.reset(u64::MAX);
        let (expected, received_steady, switched) = self.account(&tally);
        let sent = self.gen.sent.clone();
        let totals = tally.totals();
        let loss = if expected == 0 {
            0.0
        } else {
            expected.saturating_sub(received_steady) as f64 / expected as f64
        };
        let target_sent =
            target * seconds * self.topo.base_ingress_pps() / self.topo.base_egress_pps();
        // Frames skipped after a scheduling stall only lower the offered load a little (and
        // egress is what was received); the generator is the limit when it could not send
        // nine tenths of what was due.
        let generator_limited = (sent.datagrams as f64) < 0.9 * target_sent;
        let alive = self.sys.alive();
        let refused = self.sinks.srtp;
        let srtp_auth_failed = refused.auth_failed - refused0.auth_failed;
        let latency = Latency::of(&tally);
        let queued = latency.p50_us > MAX_QUEUE.as_secs_f64() * 1e6;
        Ok(Trial {
            sut_core,
            load_core,
            target_egress_pps: target,
            factor,
            seconds,
            sent: sent.datagrams,
            ingress_pps: sent.datagrams as f64 / seconds,
            expected,
            received: totals.unique,
            egress_pps: totals.unique as f64 / seconds,
            loss,
            gap_loss: tally.gap_loss(),
            switches_done: switched,
            duplicates: totals.duplicates,
            reordered: totals.reordered,
            skipped_frames: sent.skipped_frames,
            send_errors: sent.send_errors,
            sut_cpu_s: cpu,
            load_cpu_share: own / seconds,
            late: tally.late,
            srtp_auth_failed,
            srtp_replayed: refused.replayed - refused0.replayed,
            srtcp_failures: sent.srtcp_failures,
            latency,
            pass: alive
                && loss <= MAX_LOSS
                && !queued
                && !generator_limited
                && totals.unique > 0
                && srtp_auth_failed == 0,
            queued,
            generator_limited,
        })
    }
}

fn progress(topo: &Topology, kind: SystemKind, what: &str, t: &Trial) {
    eprintln!(
        "  [{:<18} {:<20}] {what:<8} target {:>8.0} pps → egress {:>8.0} pps, loss {:>7.3}%, \
         p50 {:>8.0} p99 {:>8.0} µs, sut cpu {:>3.0}%, load cpu {:>3.0}%{}{}{}{}",
        topo.name,
        kind.short(),
        t.target_egress_pps,
        t.egress_pps,
        t.loss * 100.0,
        t.latency.p50_us,
        t.latency.p99_us,
        t.sut_cpu_s / t.seconds * 100.0,
        t.load_cpu_share * 100.0,
        if t.generator_limited {
            ", generator behind"
        } else {
            ""
        },
        if t.srtp_auth_failed > 0 {
            format!(", {} SRTP tags refused", t.srtp_auth_failed)
        } else {
            String::new()
        },
        if t.queued { ", queue stands" } else { "" },
        if t.pass { "" } else { "  FAIL" },
    );
}

/// Measures `kind` on `topo`.
pub fn measure(env: &Env, topo: &Topology, kind: SystemKind, plan: &Plan) -> Result<Outcome> {
    let mut sinks = Sinks::bind_on(topo.subscribers, env.load_ip())?;
    let sink_addrs = sinks.addrs()?;
    let mut gen = Generator::bind_on(topo, env.load_ip())?;
    if let Some(profile) = kind.srtp() {
        let keyed = |e| anyhow::anyhow!("SRTP keys: {e:?}");
        gen.enable_srtp(profile).map_err(keyed)?;
        sinks.enable_srtp(profile).map_err(keyed)?;
    }
    let sys = System::start(kind, env, topo, &gen.addrs()?, &sink_addrs)?;
    gen.set_targets(&sys.targets);
    let mut rig = Rig {
        topo,
        sys,
        gen,
        sinks,
        sink_addrs,
        layers: topo
            .switches
            .iter()
            .map(|w| topo.subscriptions[w.subscription].spatial)
            .collect(),
        trials: 0,
        sut_cpu: env.sut_cpu,
        gen_cpu: env.gen_cpu,
    };
    // Warm-up: every video down track starts on a keyframe, caches fill, pages are touched.
    let warm = rig.trial(
        plan.start_pps.min(topo.base_egress_pps().max(2_000.0)),
        plan.warmup,
    )?;
    // Its loss is not judged: the first packets may beat the last routes to the server.
    progress(topo, kind, "warm-up", &Trial { pass: true, ..warm });

    let mut trials = Vec::new();
    let mut best: Option<Trial> = None;
    let mut fail: Option<Trial> = None;
    let mut target = plan.start_pps;
    let cap = 4_000_000.0;
    if plan.smoke {
        let t = rig.trial(target, plan.trial)?;
        progress(topo, kind, "smoke", &t);
        if t.pass {
            best = Some(t.clone());
        } else {
            fail = Some(t.clone());
        }
        trials.push(t);
    } else {
        // Ramp: up while passing, or down until passing.
        loop {
            let t = rig.trial(target, plan.trial)?;
            progress(topo, kind, "ramp", &t);
            trials.push(t.clone());
            if t.pass {
                best = Some(t);
                if fail.is_some() || target * 2.0 > cap {
                    break;
                }
                target *= 2.0;
            } else {
                fail = Some(t);
                // Down until something passes, whether the system or a busy generator
                // failed the trial: one hiccup must not end the search with nothing.
                if best.is_some() || target < 1_000.0 {
                    break;
                }
                target /= 2.0;
            }
        }
        if let (Some(_), Some(_)) = (&best, &fail) {
            for _ in 0..plan.bisect {
                let lo = best.as_ref().map_or(0.0, |t| t.target_egress_pps);
                let hi = fail.as_ref().map_or(0.0, |t| t.target_egress_pps);
                let mid = (lo + hi) / 2.0;
                let t = rig.trial(mid, plan.trial)?;
                progress(topo, kind, "bisect", &t);
                trials.push(t.clone());
                if t.pass {
                    best = Some(t);
                } else {
                    fail = Some(t);
                }
            }
        }
    }
    let limited_by = match (&best, &fail) {
        (_, Some(f)) if f.generator_limited => "generator".to_string(),
        (_, Some(f)) if f.queued && f.loss <= MAX_LOSS => "queue".to_string(),
        (_, Some(_)) => "loss".to_string(),
        (_, None) if plan.smoke => "smoke".to_string(),
        (_, None) => "cap".to_string(),
    };
    let latency_trial = match &best {
        Some(b) if !plan.smoke => {
            let t = rig.trial(b.egress_pps / 2.0, plan.trial)?;
            progress(topo, kind, "latency", &t);
            trials.push(t.clone());
            Some(t)
        }
        Some(b) => Some(b.clone()),
        None => trials.last().cloned(),
    };
    let pid = rig.sys.pid();
    let rss = proc::rss_bytes(pid).unwrap_or(0);
    let counters = rig.sys.counters();
    rig.sys.stop();
    let at_max = best.clone().or(fail.clone());
    let (max_egress, max_ingress, loss_at_max, cpu_per, share) = match &at_max {
        Some(t) => (
            if best.is_some() { t.egress_pps } else { 0.0 },
            if best.is_some() { t.ingress_pps } else { 0.0 },
            t.loss,
            if t.received > 0 {
                t.sut_cpu_s / (t.received as f64 / 1e6)
            } else {
                0.0
            },
            t.sut_cpu_s / t.seconds,
        ),
        None => (0.0, 0.0, 0.0, 0.0, 0.0),
    };
    Ok(Outcome {
        scenario: topo.name.clone(),
        kind: topo.kind,
        n: topo.n,
        subscribers: topo.subscribers,
        system: kind,
        max_egress_pps: max_egress,
        max_ingress_pps: max_ingress,
        loss_at_max,
        limited_by,
        cpu_s_per_mpkt: cpu_per,
        cpu_share: share,
        pps_per_core: if cpu_per > 0.0 { 1e6 / cpu_per } else { 0.0 },
        load_cpu_share: at_max.as_ref().map_or(0.0, |t| t.load_cpu_share),
        latency_half_load: latency_trial
            .as_ref()
            .map(|t| t.latency)
            .unwrap_or_default(),
        latency_egress_pps: latency_trial.as_ref().map_or(0.0, |t| t.egress_pps),
        rss_bytes: rss,
        bytes_per_subscriber: rss.saturating_sub(rig.sys.rss_at_start) as f64
            / topo.subscribers.max(1) as f64,
        sut_counters: counters,
        srtp_auth_failed: rig.sinks.srtp.auth_failed,
        trials,
    })
}

/// An outcome for a system that could not be measured.
pub fn failed(topo: &Topology, kind: SystemKind, err: &anyhow::Error) -> Outcome {
    Outcome {
        scenario: topo.name.clone(),
        kind: topo.kind,
        n: topo.n,
        subscribers: topo.subscribers,
        system: kind,
        max_egress_pps: 0.0,
        max_ingress_pps: 0.0,
        loss_at_max: 0.0,
        limited_by: format!("error: {err:#}"),
        cpu_s_per_mpkt: 0.0,
        cpu_share: 0.0,
        pps_per_core: 0.0,
        load_cpu_share: 0.0,
        latency_half_load: Latency::default(),
        latency_egress_pps: 0.0,
        rss_bytes: 0,
        bytes_per_subscriber: 0.0,
        sut_counters: None,
        srtp_auth_failed: 0,
        trials: Vec::new(),
    }
}
