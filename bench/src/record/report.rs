//! The recording bench's results: every phase (JSON), and a markdown summary of the
//! ratios within the run. Each recording phase is paired with the no-recording phase of
//! the same round, and the summary takes the median of those paired ratios, so a drift
//! of the shared machine's load between rounds cancels.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::run::{Condition, Config, Phase};
use crate::machine::Machine;

/// The most recording may slow the forwarder (issue 15): 5 %.
pub const GOAL: f64 = 1.05;

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub mode: &'static str,
    pub started_utc: String,
    pub duration_s: f64,
    pub machine: Machine,
    pub config: Config,
    pub note: String,
    pub phases: Vec<Phase>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Report {
    pub fn new(
        machine: Machine,
        config: Config,
        smoke: bool,
        note: String,
        started: u64,
        duration_s: f64,
        phases: Vec<Phase>,
    ) -> Self {
        let (d, t) = crate::report::utc(started);
        Report {
            tool: "prism-bench record",
            mode: if smoke { "smoke" } else { "full" },
            started_utc: format!("{d} {t}"),
            duration_s,
            machine,
            config,
            note,
            phases,
        }
    }

    fn of(&self, c: Condition) -> impl Iterator<Item = &Phase> {
        self.phases.iter().filter(move |p| p.condition == c)
    }

    /// Median over rounds of `f(recording phase) / f(no-recording phase of its round)`.
    fn paired(&self, c: Condition, f: impl Fn(&Phase) -> f64) -> f64 {
        let ratios = self
            .of(c)
            .filter_map(|p| {
                let base = self.of(Condition::None).find(|b| b.round == p.round)?;
                Some(f(p) / f(base))
            })
            .collect();
        median(ratios)
    }

    /// Whether recording under `c` kept the goal: core CPU per delivered packet at most
    /// [`GOAL`] times that without recording, and loss at most 0.1 point higher.
    pub fn met(&self, c: Condition) -> bool {
        let per = self.paired(c, |p| p.core_us_per_delivered);
        let extra_loss = median(
            self.of(c)
                .filter_map(|p| {
                    let b = self.of(Condition::None).find(|b| b.round == p.round)?;
                    Some(p.loss - b.loss)
                })
                .collect(),
        );
        per <= GOAL && extra_loss <= 0.001
    }

    fn med(&self, c: Condition, f: impl Fn(&Phase) -> f64) -> f64 {
        median(self.of(c).map(f).collect())
    }

    /// `results/record-<date>-<time>.{json,md}`; returns the stem.
    pub fn write(&self, dir: &Path) -> Result<String> {
        std::fs::create_dir_all(dir)?;
        let stem = format!("record-{}", self.started_utc.replace([' ', ':'], "-"));
        std::fs::write(
            dir.join(format!("{stem}.json")),
            serde_json::to_string_pretty(self)?,
        )?;
        std::fs::write(dir.join(format!("{stem}.md")), self.markdown())?;
        Ok(stem)
    }

    /// What makes the run unusable (a smoke run fails CI on any): phases that delivered
    /// nothing, recorders not found, files not complete or not WebM, a size that differs
    /// from the file's.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.phases {
            let at = format!("round {} {}", p.round + 1, p.condition.label());
            if p.counts.sent == 0 || p.counts.received == 0 {
                out.push(format!(
                    "{at}: sent {} received {}",
                    p.counts.sent, p.counts.received
                ));
            }
            if p.condition == Condition::None {
                continue;
            }
            if p.recorder_threads != self.config.tracks || p.files.len() != self.config.tracks {
                out.push(format!(
                    "{at}: {} recorder threads and {} files for {} tracks",
                    p.recorder_threads,
                    p.files.len(),
                    self.config.tracks
                ));
            }
            for (i, f) in p.files.iter().enumerate() {
                if f.status != "EGRESS_COMPLETE"
                    || !f.webm
                    || f.bytes == 0
                    || f.bytes != f.bytes_on_disk
                {
                    out.push(format!(
                        "{at}: file {i}: {} ({}), {} bytes reported, {} on disk, WebM {}",
                        f.status, f.error, f.bytes, f.bytes_on_disk, f.webm
                    ));
                }
            }
        }
        out
    }

    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## Recording cost: {} UTC ({})\n",
            self.started_utc, self.mode
        );
        let cpu = |x: Option<usize>| x.map_or("unpinned".to_string(), |c| format!("CPU {c}"));
        let _ = writeln!(
            s,
            "{} ({} CPUs), kernel {}, load average at start {}. `prism serve --dev` (all \
             threads, and its one forwarding core) on {}; the load side (one WHIP publisher \
             of {} VP8 tracks at {} fps, {} WHEP viewers of every track, all the bench's own \
             WebRTC peers with ICE, DTLS and SRTP) on {}. {} rounds of {:?} in ABBA order, \
             {} s warm-up and {} s measured per phase; {:.0} s in all.\n",
            m.cpu_model,
            m.cpus,
            m.kernel,
            m.loadavg_at_start,
            cpu(c.sut_cpu),
            c.tracks,
            c.fps,
            c.viewers,
            cpu(c.gen_cpu),
            c.rounds,
            c.conditions.iter().map(|x| x.label()).collect::<Vec<_>>(),
            c.warmup_s,
            c.window_s,
            self.duration_s
        );
        let _ = writeln!(
            s,
            "Recording: one StartTrackEgress (Twirp, JSON) per track to a WebM file, stopped \
             with StopEgress after the phase. `record` pins the recorder threads to the load \
             CPU ({}), off the forwarding core, as deployed; `record-shared` leaves them on \
             the server's CPU ({}), sharing it with the forwarding core.\n",
            cpu(c.gen_cpu),
            cpu(c.sut_cpu)
        );
        if !self.note.is_empty() {
            let _ = writeln!(s, "Note: {}\n", self.note);
        }
        let _ = writeln!(
            s,
            "| condition | delivered pps | loss | core CPU µs / delivered packet | core CPU µs / datagram sent | server CPU share | recorder CPU µs / recorded packet (of which idle polling) | written MB/s |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for &cond in &c.conditions {
            if self.of(cond).next().is_none() {
                continue;
            }
            let rec = cond != Condition::None;
            let written = self.med(cond, |p| {
                p.files.iter().map(|f| f.bytes).sum::<u64>() as f64
                    / 1e6
                    / (p.window_s + c.warmup_s)
            });
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.4} % | {:.3} | {:.3} | {:.1} % | {} | {} |",
                cond.label(),
                self.med(cond, |p| p.delivered_pps),
                self.med(cond, |p| p.loss * 100.0),
                self.med(cond, |p| p.core_us_per_delivered),
                self.med(cond, |p| p.core_us_per_sent),
                self.med(cond, |p| p.process_cpu_s / p.window_s * 100.0),
                if rec {
                    format!(
                        "{:.2} ({:.2})",
                        self.med(cond, |p| p.recorder_us_per_packet),
                        self.med(cond, |p| {
                            let packets = p.counts.sent.max(1) as f64;
                            p.recorder_idle_cpu_per_s * p.window_s * 1e6 / packets
                        })
                    )
                } else {
                    "–".into()
                },
                if rec {
                    format!("{written:.2}")
                } else {
                    "–".into()
                },
            );
        }
        let _ = writeln!(s, "\n(Medians over rounds.)\n");
        let _ = writeln!(
            s,
            "Against no recording, paired within each round (median of the rounds' ratios):\n"
        );
        let _ = writeln!(
            s,
            "| condition | delivered / due | core CPU µs / delivered packet | core CPU µs / datagram sent | goal: ≤ {:.0} % more core CPU per delivered packet, no more loss |",
            (GOAL - 1.0) * 100.0
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---|");
        for &cond in c.conditions.iter().filter(|x| **x != Condition::None) {
            let share = self.paired(cond, |p| 1.0 - p.loss);
            let per = self.paired(cond, |p| p.core_us_per_delivered);
            let sent = self.paired(cond, |p| p.core_us_per_sent);
            let met = self.met(cond);
            let _ = writeln!(
                s,
                "| {} | {share:.4}× | {per:.3}× | {sent:.3}× | {} |",
                cond.label(),
                if met { "met" } else { "not met" }
            );
        }
        let _ = writeln!(
            s,
            "\nThe offered load is the same in every phase and below what the core can \
             forward, so the delivered rate follows the publisher's; what recording takes \
             from the forwarder shows as core CPU per delivered packet (its inverse is the \
             rate one core can sustain), and as loss if it ever starved the core. \
             \"Per datagram sent\" counts the recorders' copies as egress too: the \
             difference between the two columns is the cost of the extra subscriber each \
             recording is."
        );
        let _ = writeln!(s, "\nPer phase:\n");
        let _ = writeln!(
            s,
            "| round | condition | sent | delivered | loss | core CPU s | server CPU s | recorder CPU s (threads, CPU) | recorder idle CPU ms/s | rescheduling IPIs per CPU | forwarder datagrams out | NACKs in | retransmits | PLIs | files (bytes) |"
        );
        let _ = writeln!(
            s,
            "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
        );
        for p in &self.phases {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.4} % | {:.3} | {:.2} | {:.3} ({}, {}) | {:.1} | {} | {} | {} | {} | {} | {} ({}) |",
                p.round + 1,
                p.condition.label(),
                p.counts.sent,
                p.counts.received,
                p.loss * 100.0,
                p.core_cpu_s,
                p.process_cpu_s,
                p.recorder_cpu_s,
                p.recorder_threads,
                p.recorder_cpu.map_or("–".to_string(), |c| c.to_string()),
                p.recorder_idle_cpu_per_s * 1e3,
                p.resched_ipis
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" / "),
                p.forwarder_out,
                p.nacks_received,
                p.retransmits,
                p.counts.plis,
                p.files.len(),
                p.files.iter().map(|f| f.bytes).sum::<u64>(),
            );
        }
        let _ = writeln!(
            s,
            "\nThreads' CPU from `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on a CPU): \
             the forwarding core is the thread `prism-core-*`, the recorders the threads \
             `recorder`. The server's CPU is `/proc/<pid>/stat` (10 ms ticks), every thread \
             (signaling, forwarding, recorders). A recorded \
             packet is one the publisher sent on a recorded track during the window (every \
             track is recorded), all of which the forwarder sends to its recorder. \
             \"Datagrams sent\" is the media plane's own count (`/metrics`), recorders' \
             copies and RTCP included."
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::record::load::Counts;
    use crate::record::run::FileResult;

    fn phase(round: usize, condition: Condition, core_us: f64, files: Vec<FileResult>) -> Phase {
        let counts = Counts {
            sent: 100,
            received: 400,
            ..Counts::default()
        };
        Phase {
            round,
            condition,
            recorder_cpu: None,
            recorder_threads: files.len(),
            window_s: 1.0,
            counts,
            delivered_pps: 400.0,
            loss: 0.0,
            core_cpu_s: core_us * 400.0 / 1e6,
            process_cpu_s: 0.0,
            recorder_cpu_s: 0.0,
            recorder_idle_cpu_per_s: 0.0,
            resched_ipis: Vec::new(),
            forwarder_out: 400,
            nacks_received: 0,
            retransmits: 0,
            core_us_per_delivered: core_us,
            core_us_per_sent: core_us,
            recorder_us_per_packet: 0.0,
            files,
        }
    }

    fn file(status: &str, bytes: u64, on_disk: u64) -> FileResult {
        FileResult {
            status: status.into(),
            bytes,
            bytes_on_disk: on_disk,
            duration_s: 1.0,
            webm: true,
            error: String::new(),
        }
    }

    fn report(phases: Vec<Phase>) -> Report {
        let config = Config {
            tracks: 2,
            viewers: 4,
            fps: 30.0,
            rounds: 2,
            warmup_s: 1.0,
            window_s: 1.0,
            conditions: vec![Condition::None, Condition::Record],
            gen_cpu: None,
            sut_cpu: None,
        };
        Report::new(
            Machine::probe(),
            config,
            true,
            String::new(),
            0,
            1.0,
            phases,
        )
    }

    #[test]
    fn failures_name_incomplete_files_and_silent_phases_and_the_goal_is_paired() {
        let good = || {
            vec![
                file("EGRESS_COMPLETE", 10, 10),
                file("EGRESS_COMPLETE", 9, 9),
            ]
        };
        let r = report(vec![
            phase(0, Condition::None, 4.0, Vec::new()),
            phase(0, Condition::Record, 4.1, good()),
            phase(1, Condition::Record, 6.0, good()),
            phase(1, Condition::None, 5.8, Vec::new()),
        ]);
        assert!(r.failures().is_empty(), "{:?}", r.failures());
        // Paired within rounds: 1.025 and 1.034, both within 5 %, though round 1's
        // recording phase costs more than round 0's baseline by half.
        assert!(r.met(Condition::Record));
        let slow = report(vec![
            phase(0, Condition::None, 4.0, Vec::new()),
            phase(0, Condition::Record, 4.4, good()),
        ]);
        assert!(!slow.met(Condition::Record));

        let mut silent = phase(0, Condition::None, 4.0, Vec::new());
        silent.counts.received = 0;
        let bad = report(vec![
            silent,
            phase(
                0,
                Condition::Record,
                4.0,
                vec![file("EGRESS_FAILED", 10, 10), file("EGRESS_COMPLETE", 9, 8)],
            ),
            phase(
                1,
                Condition::Record,
                4.0,
                vec![file("EGRESS_COMPLETE", 9, 9)],
            ),
        ]);
        let f = bad.failures();
        assert_eq!(f.len(), 4, "{f:?}");
        assert!(f[0].contains("received 0"));
        assert!(f[1].contains("EGRESS_FAILED"));
        assert!(f[2].contains("9 bytes reported, 8 on disk"));
        assert!(f[3].contains("1 recorder threads and 1 files for 2 tracks"));
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }
}
