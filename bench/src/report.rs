//! The results: JSON with every trial, a Markdown table with the headline figures and the
//! issue's targets checked, the cost of SRTP (each SRTP variant against plain Prism on the
//! same driver, measured in the same run), and the README's Performance section
//! regenerated from them.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::machine::Machine;
use crate::runner::{Outcome, Plan, MAX_LOSS, MAX_QUEUE};
use crate::scenario::Kind;
use crate::sut::SystemKind;

pub const README_START: &str = "<!-- bench:start -->";
pub const README_END: &str = "<!-- bench:end -->";

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub mode: &'static str,
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub started: String,
    pub duration_s: f64,
    pub machine: Machine,
    /// CPU of the load generator and sinks, and of the system under test.
    pub generator_cpu: Option<usize>,
    pub sut_cpu: Option<usize>,
    pub plan: Plan,
    pub note: String,
    pub outcomes: Vec<Outcome>,
}

/// `(YYYY-MM-DD, HH:MM)` in UTC for seconds since the Unix epoch.
pub fn utc(secs: u64) -> (String, String) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}", rem / 3600, rem % 3600 / 60),
    )
}

fn kpps(x: f64) -> String {
    if x <= 0.0 {
        "—".into()
    } else {
        format!("{:.1}", x / 1000.0)
    }
}

fn find(outs: &[Outcome], kind: Kind, n: usize, sys: SystemKind) -> Option<&Outcome> {
    outs.iter()
        .find(|o| o.kind == kind && o.n == n && o.system == sys && o.max_egress_pps > 0.0)
}

fn ratio_line(label: &str, a: Option<&Outcome>, b: Option<&Outcome>, goal: f64) -> String {
    match (a, b) {
        (Some(a), Some(b)) => {
            let r = a.max_egress_pps / b.max_egress_pps;
            let c = if b.pps_per_core > 0.0 {
                a.pps_per_core / b.pps_per_core
            } else {
                0.0
            };
            let verdict = match (r >= goal, c >= goal) {
                (true, true) => "met",
                (false, true) => "met per core only",
                (true, false) => "met in rate only",
                (false, false) => "**not met**",
            };
            format!("| {label} | {r:.2}× | {c:.2}× | ≥ {goal}× | {verdict} |\n")
        }
        _ => format!("| {label} | n/a | n/a | ≥ {goal}× | not measured |\n"),
    }
}

impl Report {
    /// The headline table and the targets, as Markdown.
    pub fn markdown(&self, plot_link: Option<&str>) -> String {
        let m = &self.machine;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Run of {} UTC ({} mode, {:.0} s) on `{}`: {} × {}, Linux {}, io_uring {} [{}]; \
             generator and sinks on CPU {}, system under test on CPU {}. Load average at start: {}.\n",
            self.started,
            self.mode,
            self.duration_s,
            m.host,
            m.cpus,
            m.cpu_model,
            m.kernel,
            if m.io_uring_usable { "usable" } else { "unusable" },
            m.io_uring_features.join(", "),
            self.generator_cpu.map_or("any".into(), |c| c.to_string()),
            self.sut_cpu.map_or("any".into(), |c| c.to_string()),
            m.loadavg_at_start,
        );
        if !self.note.is_empty() {
            let _ = writeln!(s, "{}\n", self.note);
        }
        if let Some(link) = plot_link {
            let _ = writeln!(s, "![egress packet rate against subscribers]({link})\n");
        }
        s.push_str(
            "| scenario | system | max egress kpps (≤ 0.1% loss, p50 ≤ 50 ms) | stopped by | SUT CPU % \
             | load CPU % | CPU s / M pkt | kpps per SUT core | latency at half load p50 / p99 \
             / p99.9 / max (µs) | RSS MB | KB / subscriber |\n\
             |---|---|---:|---|---:|---:|---:|---:|---|---:|---:|\n",
        );
        for o in &self.outcomes {
            let l = &o.latency_half_load;
            let lat = if l.samples > 0 {
                format!(
                    "{:.0} / {:.0} / {:.0} / {:.0}",
                    l.p50_us, l.p99_us, l.p999_us, l.max_us
                )
            } else {
                "—".into()
            };
            let stopped = if o.limited_by.starts_with("error") {
                o.limited_by
                    .chars()
                    .take(60)
                    .collect::<String>()
                    .replace('|', "/")
            } else {
                o.limited_by.clone()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {} | {} | {:.1} | {:.1} |",
                o.scenario,
                o.system.label(),
                kpps(o.max_egress_pps),
                stopped,
                o.cpu_share * 100.0,
                o.load_cpu_share * 100.0,
                o.cpu_s_per_mpkt,
                kpps(o.pps_per_core),
                lat,
                o.rss_bytes as f64 / 1048576.0,
                o.bytes_per_subscriber / 1024.0,
            );
        }
        if self.mode == "smoke" {
            s.push_str(
                "\nSmoke mode: one short trial at a fixed low load per cell, no search; the \
                 ratios below compare equal offered loads and mean nothing.\n",
            );
        }
        s.push_str(
            "\n| target | max egress ratio | per-core ratio | goal | verdict |\n\
             |---|---:|---:|---:|---|\n",
        );
        for n in [10, 100, 1000] {
            s.push_str(&ratio_line(
                &format!("Prism io_uring / ceiling, fan-out 1→{n}"),
                find(&self.outcomes, Kind::Fanout, n, SystemKind::PrismUring),
                find(&self.outcomes, Kind::Fanout, n, SystemKind::Ceiling),
                0.8,
            ));
        }
        for n in [10, 100, 1000] {
            s.push_str(&ratio_line(
                &format!("Prism io_uring / conventional, fan-out 1→{n}"),
                find(&self.outcomes, Kind::Fanout, n, SystemKind::PrismUring),
                find(&self.outcomes, Kind::Fanout, n, SystemKind::Conventional),
                3.0,
            ));
        }
        let relay = |sys| find(&self.outcomes, Kind::Relay, 1, sys);
        s.push_str(&ratio_line(
            "Prism io_uring / rtpengine, relay 1:1 (per core)",
            relay(SystemKind::PrismUring),
            relay(SystemKind::Rtpengine),
            1.0,
        ));
        let prism_p99: Vec<&Outcome> = self
            .outcomes
            .iter()
            .filter(|o| o.system == SystemKind::PrismUring && o.latency_half_load.samples > 0)
            .collect();
        let worst = prism_p99
            .iter()
            .map(|o| o.latency_half_load.p99_us)
            .fold(0.0f64, f64::max);
        let _ = writeln!(
            s,
            "| Prism io_uring p99 one-way latency at half of max load (worst scenario) | {worst:.0} µs | | < 1000 µs | {} |",
            if prism_p99.is_empty() {
                "not measured"
            } else if worst < 1000.0 {
                "met"
            } else {
                "**not met**"
            }
        );
        s.push_str(&self.srtp_cost());
        s.push_str(&self.relay_cost());
        let _ = writeln!(
            s,
            "\nEgress = packets received by all sinks per second in the best trial with at most \
             {:.1}% loss and a median one-way latency of at most {} ms; \"stopped by\": `loss` \
             (the system dropped), `queue` (it kept up only by letting a queue stand in front \
             of it), `generator` (the load \
             generator could not keep its schedule: the figure is a lower bound), `smoke` (one \
             short trial, no search). CPU is the system's own user + system time from /proc; \
             \"load CPU\" is the generator and sinks' share of their CPU (near 100%: the load side \
             set the pace, and \"kpps per SUT core\" = 10⁶ / (CPU s per M packets) is the fairer \
             comparison). Packets arriving over 250 ms late count as lost. \
             KB / subscriber is (RSS at the end − RSS at start) / subscribers, fixed buffers \
             touched during the run included.",
            MAX_LOSS * 100.0,
            MAX_QUEUE.as_millis()
        );
        s
    }

    /// The SRTP table: every scenario where an SRTP variant and its plain counterpart were
    /// both measured, with SRTP / plain ratios. Empty when no SRTP variant ran.
    pub fn srtp_cost(&self) -> String {
        let mut rows = String::new();
        for o in self.outcomes.iter().filter(|o| o.system.srtp().is_some()) {
            let Some(p) = self
                .outcomes
                .iter()
                .find(|p| p.system == o.system.plain() && p.kind == o.kind && p.n == o.n)
            else {
                continue;
            };
            let ratio = |a: f64, b: f64| {
                if a > 0.0 && b > 0.0 {
                    format!("{:.2}×", a / b)
                } else {
                    "—".into()
                }
            };
            let added = if o.cpu_s_per_mpkt > 0.0 && p.cpu_s_per_mpkt > 0.0 {
                format!("{:+.2}", o.cpu_s_per_mpkt - p.cpu_s_per_mpkt)
            } else {
                "—".into()
            };
            let _ = writeln!(
                rows,
                "| {} | {} | {} → {} | {} | {} → {} | {} | {:.2} → {:.2} ({added}) | {} → {} | {:.0} → {:.0} | {} |",
                o.scenario,
                o.system.srtp().map_or("", crate::srtp::profile_name),
                kpps(p.max_egress_pps),
                kpps(o.max_egress_pps),
                ratio(o.max_egress_pps, p.max_egress_pps),
                kpps(p.pps_per_core),
                kpps(o.pps_per_core),
                ratio(o.pps_per_core, p.pps_per_core),
                p.cpu_s_per_mpkt,
                o.cpu_s_per_mpkt,
                half_load_latency(p),
                half_load_latency(o),
                p.load_cpu_share * 100.0,
                o.load_cpu_share * 100.0,
                o.srtp_auth_failed,
            );
        }
        if rows.is_empty() {
            return rows;
        }
        format!(
            "\n**Cost of SRTP** (each SRTP variant against plain {} in this run; every \
             transport has its own keys, so the forwarder decrypts each ingress packet once and \
             encrypts each egress copy under the subscriber's key; the sinks decrypt and verify \
             every packet, which costs the load side CPU):\n\n\
             | scenario | profile | max egress kpps plain → SRTP | ratio | kpps per SUT core \
             plain → SRTP | ratio | SUT µs per egress packet plain → SRTP (added) | latency at \
             half load p50 / p99 (µs) plain → SRTP | load CPU % plain → SRTP | tags refused |\n\
             |---|---|---:|---:|---:|---:|---:|---|---:|---:|\n{rows}",
            SystemKind::PrismUring.label(),
        )
    }

    /// The relay table: the relayed system against plain Prism on io_uring in the same
    /// scenarios of this run. Empty when it did not run.
    pub fn relay_cost(&self) -> String {
        let mut rows = String::new();
        for o in self
            .outcomes
            .iter()
            .filter(|o| o.system == SystemKind::PrismRelayed)
        {
            let Some(p) = self
                .outcomes
                .iter()
                .find(|p| p.system == SystemKind::PrismUring && p.kind == o.kind && p.n == o.n)
            else {
                continue;
            };
            let relay = o
                .sut_counters
                .as_deref()
                .and_then(|c| c.split("relay: ").nth(1))
                .unwrap_or("—");
            let _ = writeln!(
                rows,
                "| {} | {} → {} | {:.2} → {:.2} | {} → {} | {} |",
                o.scenario,
                kpps(p.max_egress_pps),
                kpps(o.max_egress_pps),
                p.cpu_s_per_mpkt,
                o.cpu_s_per_mpkt,
                half_load_latency(p),
                half_load_latency(o),
                relay,
            );
        }
        if rows.is_empty() {
            return rows;
        }
        format!(
            "\n**Across a relay** ({} against {} in this run: the publisher and half the \
             subscribers on one core, the other half on a second core of the same SUT CPU that \
             gets the track over an SRTP relay, one copy per layer, as a room spanning two \
             nodes does; latency is publisher to sink, for every sink):\n\n\
             | scenario | max egress kpps one node → relayed | SUT µs per egress packet one \
             node → relayed | latency at half load p50 / p99 (µs) one node → relayed | origin \
             egress toward the far core |\n|---|---:|---:|---|---|\n{rows}",
            SystemKind::PrismRelayed.label(),
            SystemKind::PrismUring.label(),
        )
    }

    /// Writes `<stem>.json`, `<stem>.md` and `<stem>.svg` into `dir`; returns the stem.
    pub fn write(&self, dir: &Path) -> Result<String> {
        std::fs::create_dir_all(dir)?;
        let stem = format!(
            "{}-{}{}",
            self.started.replace([' ', ':'], "-"),
            self.machine.host,
            if self.mode == "smoke" { "-smoke" } else { "" }
        );
        std::fs::write(
            dir.join(format!("{stem}.json")),
            serde_json::to_string_pretty(self)?,
        )?;
        let svg = format!("{stem}.svg");
        crate::plot::write(
            &self.outcomes,
            &format!("Egress packet rate, one SUT core ({})", self.machine.host),
            &dir.join(&svg),
        )?;
        std::fs::write(
            dir.join(format!("{stem}.md")),
            format!(
                "# prism-bench {}\n\n{}",
                self.started,
                self.markdown(Some(&svg))
            ),
        )?;
        Ok(stem)
    }

    /// Replaces the Performance section of `readme` (creating it, or the file, if absent).
    pub fn update_readme(&self, readme: &Path, plot_path: &str, json_path: &str) -> Result<()> {
        let section = format!(
            "{README_START}\n## Performance\n\nMeasured by `scripts/bench.sh` (`prism-bench`); \
             method and analysis in [docs/performance.md](docs/performance.md), raw figures in \
             [`{json_path}`]({json_path}).\n\n{}{README_END}\n",
            self.markdown(Some(plot_path))
        );
        let old = std::fs::read_to_string(readme).unwrap_or_default();
        let new = match (old.find(README_START), old.find(README_END)) {
            (Some(a), Some(b)) if b > a => {
                let tail = &old[b + README_END.len()..];
                format!("{}{}{}", &old[..a], section.trim_end(), tail)
            }
            _ if old.trim().is_empty() => section,
            _ => format!("{}\n\n{section}", old.trim_end()),
        };
        std::fs::write(readme, new)?;
        Ok(())
    }
}

/// p50 / p99 latency at half load, in µs ("—" if nothing was sampled).
fn half_load_latency(x: &Outcome) -> String {
    let l = &x.latency_half_load;
    if l.samples > 0 {
        format!("{:.0} / {:.0}", l.p50_us, l.p99_us)
    } else {
        "—".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srtp_cost_compares_each_variant_with_plain_prism_of_the_same_scenario() {
        use crate::runner::{failed, Plan};
        use crate::scenario::Topology;
        let topo = Topology::fanout(10);
        let err = anyhow::anyhow!("x");
        let cell = |sys, egress: f64, cpu: f64| {
            let mut o = failed(&topo, sys, &err);
            o.max_egress_pps = egress;
            o.cpu_s_per_mpkt = cpu;
            o.pps_per_core = 1e6 / cpu;
            o
        };
        let mut r = Report {
            tool: "prism-bench",
            mode: "full",
            started: String::new(),
            duration_s: 0.0,
            machine: Machine::probe(),
            generator_cpu: None,
            sut_cpu: None,
            plan: Plan::full(),
            note: String::new(),
            outcomes: vec![
                cell(SystemKind::PrismUring, 200_000.0, 4.0),
                cell(SystemKind::PrismUringSrtpGcm, 150_000.0, 5.0),
            ],
        };
        let t = r.srtp_cost();
        assert!(t.contains("| fan-out 1→10 | AEAD_AES_128_GCM | 200.0 → 150.0 | 0.75× | 250.0 → 200.0 | 0.80× | 4.00 → 5.00 (+1.00)"), "{t}");
        // Without its plain counterpart, no row (and no table).
        r.outcomes.remove(0);
        assert_eq!(r.srtp_cost(), "");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), ("1970-01-01".into(), "00:00".into()));
        assert_eq!(
            utc(951_782_400 + 3_660),
            ("2000-02-29".into(), "01:01".into())
        );
    }
}
