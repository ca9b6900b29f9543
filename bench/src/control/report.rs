//! The control-plane results: JSON with the machine, the plan, every row and the goals,
//! and a markdown table of new/old ratios.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use super::measure::Plan;
use super::runner::{Build, Row, Scenario};
use super::stats::{ratio, LatencySummary};
use crate::machine::Machine;

#[derive(Debug, Serialize)]
pub struct ControlReport {
    pub tool: &'static str,
    pub mode: &'static str,
    pub started: String,
    pub duration_s: f64,
    pub machine: Machine,
    pub load_cpu: Option<usize>,
    pub server_cpu: Option<usize>,
    pub builds: Vec<Build>,
    /// Both builds are the same code: the run proves the tool, it compares nothing.
    pub same_code: bool,
    pub plan: Plan,
    pub note: String,
    pub rows: Vec<RowOut>,
    pub goals: Vec<Goal>,
}

#[derive(Debug, Serialize)]
pub struct RowOut {
    pub scenario: Scenario,
    pub description: String,
    pub build: String,
    pub rounds: usize,
    pub events: u64,
    pub failures: u64,
    /// The median of the rounds' rates.
    pub rate_per_s: f64,
    pub round_rates: Vec<f64>,
    pub latency: LatencySummary,
    pub load_cpu_s: f64,
    pub server_cpu_s: f64,
    pub wall_s: f64,
    pub extra: BTreeMap<String, f64>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Goal {
    pub goal: &'static str,
    pub value: Option<f64>,
    pub met: Option<bool>,
    pub detail: String,
}

impl RowOut {
    pub fn from_row(r: &Row, builds: &[Build], plan: &Plan) -> RowOut {
        RowOut {
            scenario: r.scenario,
            description: r.scenario.describe(plan),
            build: builds[r.build].role.clone(),
            rounds: r.rounds,
            events: r.measured.events,
            failures: r.measured.failures,
            rate_per_s: median(&r.round_rates),
            round_rates: r.round_rates.clone(),
            latency: r.measured.summary(),
            load_cpu_s: r.load_cpu_s,
            server_cpu_s: r.server_cpu_s,
            wall_s: r.wall_s,
            extra: r.measured.extra.clone(),
            errors: r.measured.errors.clone(),
        }
    }
}

impl ControlReport {
    fn row(&self, s: Scenario, build: &str) -> Option<&RowOut> {
        self.rows
            .iter()
            .find(|r| r.scenario == s && r.build == build)
    }

    /// The build the goals are about: `new` when there are two, else the only one.
    fn subject(&self) -> &str {
        self.builds
            .iter()
            .find(|b| b.role == "new")
            .or(self.builds.first())
            .map_or("new", |b| b.role.as_str())
    }

    /// The goals, from the rows (call once every row is in).
    pub fn judge(&mut self) {
        let subject = self.subject().to_string();
        fn ok(r: Option<&RowOut>) -> Option<&RowOut> {
            r.filter(|r| r.events > 0 && r.failures == 0)
        }
        let mut goals = Vec::new();
        let (old, new) = (
            ok(self.row(Scenario::Relay, "old")),
            ok(self.row(Scenario::Relay, "new")),
        );
        let rate = old
            .zip(new)
            .and_then(|(o, n)| ratio(n.rate_per_s, o.rate_per_s));
        goals.push(Goal {
            goal: "data relay delivers >= 10x the old shape's rate",
            value: rate,
            met: rate.map(|r| r >= 10.0),
            detail: format!(
                "{} vs {} deliveries/s",
                fmt_rate(new.map(|r| r.rate_per_s)),
                fmt_rate(old.map(|r| r.rate_per_s))
            ),
        });
        let lat = old
            .zip(new)
            .and_then(|(o, n)| ratio(o.latency.p50_ms, n.latency.p50_ms));
        goals.push(Goal {
            goal: "data relay median latency >= 10x lower than the old shape's",
            value: lat,
            met: lat.map(|r| r >= 10.0),
            detail: format!(
                "p50 {} vs {} ms",
                fmt_ms(new.map(|r| r.latency.p50_ms)),
                fmt_ms(old.map(|r| r.latency.p50_ms))
            ),
        });
        let joins = ok(self.row(Scenario::JoinsOneRoom, &subject));
        let p99 = joins.map(|r| r.latency.p99_ms);
        goals.push(Goal {
            goal: "200 concurrent joins: p99 < 30 ms",
            value: p99,
            met: p99
                .filter(|_| self.plan.joins_one_room >= 200)
                .map(|v| v < 30.0),
            detail: format!("{subject}: p99 {} ms", fmt_ms(p99)),
        });
        for build in self
            .builds
            .iter()
            .map(|b| b.role.clone())
            .collect::<Vec<_>>()
        {
            let idle = ok(self.row(Scenario::OfferIdle, &build));
            let busy = ok(self.row(Scenario::OfferBusy, &build));
            let r = idle
                .zip(busy)
                .and_then(|(i, b)| ratio(b.latency.p99_ms, i.latency.p99_ms));
            goals.push(Goal {
                goal: if build == subject {
                    "offer p99 with a busy neighbour <= 2x idle"
                } else {
                    "(reference) offer p99 busy/idle, other build"
                },
                value: r,
                met: r.filter(|_| build == subject).map(|r| r <= 2.0),
                detail: format!(
                    "{build}: busy {} ms vs idle {} ms",
                    fmt_ms(busy.map(|r| r.latency.p99_ms)),
                    fmt_ms(idle.map(|r| r.latency.p99_ms))
                ),
            });
        }
        if self.mode == "smoke" {
            // Smoke sizes are not the sizes the goals are stated for.
            for g in &mut goals {
                g.met = None;
            }
        }
        self.goals = goals;
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## Control plane: {}\n", self.started);
        let m = &self.machine;
        let _ = writeln!(
            s,
            "{} ({} CPUs), kernel {}, load average at start {}; load generator on CPU {}, \
             servers on CPU {}; {} round(s) per scenario and build, alternating.\n",
            m.cpu_model,
            m.cpus,
            m.kernel,
            m.loadavg_at_start,
            self.load_cpu.map_or("any".into(), |c| c.to_string()),
            self.server_cpu.map_or("any".into(), |c| c.to_string()),
            self.plan.rounds
        );
        for b in &self.builds {
            let _ = writeln!(s, "- **{}**: {} (`{}`)", b.role, b.label, b.bin.display());
        }
        if self.same_code {
            let _ = writeln!(
                s,
                "\n> Both builds are the same code: this run proves the tool works; the \
                 ratios measure noise, not a change."
            );
        }
        if !self.note.is_empty() {
            let _ = writeln!(s, "\nNote: {}", self.note);
        }
        let roles: Vec<&str> = self.builds.iter().map(|b| b.role.as_str()).collect();
        let two = roles.len() == 2;
        let _ = write!(s, "\n| scenario | figure |");
        for r in &roles {
            let _ = write!(s, " {r} |");
        }
        if two {
            let _ = write!(s, " {}/{} |", roles[1], roles[0]);
        }
        let _ = write!(s, "\n|---|---|");
        for _ in &roles {
            let _ = write!(s, "---:|");
        }
        if two {
            let _ = write!(s, "---:|");
        }
        s.push('\n');
        let scenarios: Vec<Scenario> = Scenario::ALL
            .into_iter()
            .filter(|sc| self.rows.iter().any(|r| r.scenario == *sc))
            .collect();
        for sc in scenarios {
            let rows: Vec<Option<&RowOut>> = roles.iter().map(|b| self.row(sc, b)).collect();
            let unit = match sc {
                Scenario::Relay => "deliveries/s",
                Scenario::JoinsOneRoom | Scenario::JoinsManyRooms => "joins/s",
                _ => "offers/s",
            };
            let figures = [
                Figure {
                    name: unit,
                    get: |r| r.rate_per_s,
                    is_rate: true,
                },
                Figure {
                    name: "p50 ms",
                    get: |r| r.latency.p50_ms,
                    is_rate: false,
                },
                Figure {
                    name: "p99 ms",
                    get: |r| r.latency.p99_ms,
                    is_rate: false,
                },
            ];
            for (i, f) in figures.iter().enumerate() {
                let (name, get, is_rate) = (f.name, f.get, f.is_rate);
                let first = if i == 0 { sc.name() } else { "" };
                let _ = write!(s, "| {first} | {name} |");
                let vals: Vec<Option<f64>> = rows.iter().map(|r| r.map(get)).collect();
                for (v, r) in vals.iter().zip(&rows) {
                    let bad = r.is_some_and(|r| r.failures > 0);
                    let cell = match v {
                        Some(v) if is_rate => fmt_rate(Some(*v)),
                        v => fmt_ms(*v),
                    };
                    let _ = write!(s, " {cell}{} |", if bad && i == 0 { " ⚠" } else { "" });
                }
                if two {
                    let r = vals[0].zip(vals[1]).and_then(|(o, n)| ratio(n, o));
                    let _ = write!(s, " {} |", r.map_or("—".into(), |r| format!("{r:.2}×")));
                }
                s.push('\n');
            }
        }
        for r in &self.rows {
            let (Some(load), Some(srv), Some(wall)) = (
                r.extra.get("exchange_load_cpu_s"),
                r.extra.get("exchange_server_cpu_s"),
                // /proc counts CPU in 10 ms ticks: shorter exchanges say little.
                r.extra.get("exchange_wall_s").filter(|w| **w >= 0.2),
            ) else {
                continue;
            };
            let _ = writeln!(
                s,
                "\n{} on {}: during the exchange the load generator used {:.0} % of its CPU \
                 and the server {:.0} % of its{}",
                r.scenario.name(),
                r.build,
                100.0 * load / wall,
                100.0 * srv / wall,
                if load / wall > 0.7 {
                    " — **load-bound**: the rate is a lower bound for the server"
                } else {
                    ""
                }
            );
        }
        for r in &self.rows {
            if let (Some(j), Some(t)) = (
                r.extra.get("neighbour_joins"),
                r.extra.get("neighbour_s").filter(|t| **t > 0.0),
            ) {
                let _ = writeln!(
                    s,
                    "\n{} on {}: the busy neighbour joined and left {:.0} times a second",
                    r.scenario.name(),
                    r.build,
                    j / t
                );
            }
            if let Some(n) = r.extra.get("listen_overflows").filter(|n| **n > 0.0) {
                let _ = writeln!(
                    s,
                    "\n{} on {}: {n:.0} SYN(s) dropped by a full listen queue \
                     (TcpExtListenOverflows, host-wide); a join that hit one waited ≥ 1 s",
                    r.scenario.name(),
                    r.build
                );
            }
        }
        let failed: Vec<&RowOut> = self.rows.iter().filter(|r| r.failures > 0).collect();
        if !failed.is_empty() {
            let _ = writeln!(s, "\n⚠ failures:");
            for r in failed {
                let _ = writeln!(
                    s,
                    "- {} on {}: {} ({})",
                    r.scenario.name(),
                    r.build,
                    r.failures,
                    r.errors.join("; ")
                );
            }
        }
        let _ = writeln!(s, "\n| goal | value | met |\n|---|---:|---|");
        for g in &self.goals {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                g.goal,
                g.value.map_or("—".into(), |v| format!("{v:.2}")),
                match g.met {
                    Some(true) => format!("met ({})", g.detail),
                    Some(false) => format!("**not met** ({})", g.detail),
                    None => format!("n/a ({})", g.detail),
                }
            );
        }
        s
    }

    /// Writes `<stem>.json` and `<stem>.md` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(format!("{stem}.json")),
            serde_json::to_string_pretty(self)? + "\n",
        )?;
        std::fs::write(dir.join(format!("{stem}.md")), self.markdown())?;
        Ok(())
    }
}

/// The median (mean of the middle two for an even count); 0 for none.
pub fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One line of a scenario in the markdown table.
struct Figure {
    name: &'static str,
    get: fn(&RowOut) -> f64,
    is_rate: bool,
}

fn fmt_rate(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 10_000.0 => format!("{:.1}k", v / 1000.0),
        Some(v) if v > 0.0 => format!("{v:.0}"),
        _ => "—".into(),
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v > 0.0 => format!("{v:.1}"),
        _ => "—".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_ignores_one_disturbed_round() {
        assert_eq!(median(&[4000.0, 196.0, 4500.0]), 4000.0);
        assert_eq!(median(&[1.0, 3.0]), 2.0);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
    }
}
