//! The `control` subcommand's arguments.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use super::measure::Plan;
use super::report::{ControlReport, RowOut};
use super::runner::{self, Build, Scenario};
use crate::machine::Machine;
use crate::report::utc;

pub const USAGE: &str = "\
prism-bench control: control-plane benchmark of `prism serve --dev` (LiveKit protocol)

USAGE:
    prism-bench control compare --old PRISM --new PRISM [OPTIONS]
    prism-bench control smoke --prism PRISM [--out DIR]

Scenarios: joins-one-room, joins-many-rooms (group: joins), relay, offer-idle,
offer-busy (group: offers).

COMPARE OPTIONS:
    --old-label TEXT, --new-label TEXT   what each binary was built from (e.g. a commit)
    --same-code             both builds are the same code (the report says so)
    --rounds N              rounds per scenario and build (default 3)
    --scenarios LIST        subset, comma-separated (default: all)
    --joins N               sessions in joins-one-room (default 200)
    --relay N:M             relay participants and messages each (default 50:20)
    --offers N              offers per offer scenario (default 50)
    --out DIR               results directory (default bench/results)
    --load-cpu N            pin this process to CPU N (default 0)
    --server-cpu N          pin the servers to CPU N (default 1)
    --no-pin                pin nothing (tests)
    --note TEXT             a note kept with the results
";

/// `prism-bench control …`
pub fn main(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("compare") => compare(&args[1..], false),
        Some("smoke") => compare(&args[1..], true),
        Some("-h" | "--help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown control command {other:?}\n\n{USAGE}"),
    }
}

fn compare(args: &[String], smoke: bool) -> Result<()> {
    let mut plan = if smoke { Plan::smoke() } else { Plan::full() };
    let (mut old, mut new, mut one) = (None, None, None);
    let (mut old_label, mut new_label) = (String::new(), String::new());
    let mut same_code = false;
    let mut scenarios = Scenario::ALL.to_vec();
    let mut out = PathBuf::from(if smoke {
        "target/ctlbench-smoke"
    } else {
        "bench/results"
    });
    let (mut load_cpu, mut server_cpu) = (Some(0usize), Some(1usize));
    let mut note = String::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--old" => old = Some(PathBuf::from(val()?)),
            "--new" => new = Some(PathBuf::from(val()?)),
            "--prism" => one = Some(PathBuf::from(val()?)),
            "--old-label" => old_label = val()?.clone(),
            "--new-label" => new_label = val()?.clone(),
            "--same-code" => same_code = true,
            "--rounds" => plan.rounds = val()?.parse()?,
            "--scenarios" => {
                let v = val()?;
                scenarios = Scenario::parse_list(v).with_context(|| format!("scenarios {v:?}"))?
            }
            "--joins" => plan.joins_one_room = val()?.parse()?,
            "--relay" => {
                let v = val()?;
                let (p, m) = v.split_once(':').context("--relay N:M")?;
                plan.relay_participants = p.parse()?;
                plan.relay_messages = m.parse()?;
            }
            "--offers" => plan.offers = val()?.parse()?,
            "--out" => out = PathBuf::from(val()?),
            "--load-cpu" => load_cpu = Some(val()?.parse()?),
            "--server-cpu" => server_cpu = Some(val()?.parse()?),
            "--no-pin" => (load_cpu, server_cpu) = (None, None),
            "--note" => note = val()?.clone(),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    if plan.relay_participants < 2 || plan.rounds == 0 {
        bail!("the relay needs two participants and every scenario one round");
    }
    let builds = if smoke {
        let bin = one.context("--prism PATH is required")?;
        vec![Build {
            role: "smoke".into(),
            label: bin.display().to_string(),
            bin,
        }]
    } else {
        let old = old.context("--old PATH is required")?;
        let new = new.context("--new PATH is required")?;
        same_code |= old == new;
        vec![
            Build {
                role: "old".into(),
                label: if old_label.is_empty() {
                    old.display().to_string()
                } else {
                    old_label
                },
                bin: old,
            },
            Build {
                role: "new".into(),
                label: if new_label.is_empty() {
                    new.display().to_string()
                } else {
                    new_label
                },
                bin: new,
            },
        ]
    };
    // Probed before pinning: a pinned process sees one CPU.
    let machine = Machine::probe();
    if machine.cpus < 2 {
        eprintln!("prism-bench control: one CPU only: load and servers share it");
        load_cpu = None;
        server_cpu = None;
    }
    if let Some(c) = load_cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            eprintln!("prism-bench control: could not pin to CPU {c}");
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let (date, time) = utc(now);
    let stem = format!("control-{date}-{}", time.replace(':', "-"));
    eprintln!(
        "prism-bench control: {} scenario(s) × {} build(s) × {} round(s) on {} (load {})",
        scenarios.len(),
        builds.len(),
        plan.rounds,
        machine.cpu_model,
        machine.loadavg_at_start
    );
    let t0 = Instant::now();
    let log_dir = std::env::temp_dir().join(format!("prism-ctlbench-{}", std::process::id()));
    let rows = runner::run(&plan, &scenarios, &builds, server_cpu, &log_dir)?;
    let mut report = ControlReport {
        tool: "prism-bench control",
        mode: if smoke { "smoke" } else { "compare" },
        started: format!("{date} {time} UTC"),
        duration_s: t0.elapsed().as_secs_f64(),
        machine,
        load_cpu,
        server_cpu,
        rows: rows
            .iter()
            .map(|r| RowOut::from_row(r, &builds, &plan))
            .collect(),
        builds,
        same_code,
        plan,
        note,
        goals: Vec::new(),
    };
    report.judge();
    report.write(&out, &stem)?;
    println!("{}", report.markdown());
    println!(
        "prism-bench control: {:.0} s; results in {}/{stem}.{{json,md}}; server logs in {}",
        report.duration_s,
        out.display(),
        log_dir.display()
    );
    let failed: Vec<String> = report
        .rows
        .iter()
        .filter(|r| r.failures > 0 || r.events == 0)
        .map(|r| {
            format!(
                "{} on {}: {}",
                r.scenario.name(),
                r.build,
                r.errors.join("; ")
            )
        })
        .collect();
    if smoke && !failed.is_empty() {
        bail!("control smoke failed:\n  {}", failed.join("\n  "));
    }
    Ok(())
}
