//! `prism-bench record`: what recording costs the forwarder, and what the recorder costs
//! per packet (Egress, issue 15).
//!
//! A `prism serve --dev` pinned to the SUT CPU forwards a WHIP publisher's VP8 tracks to
//! WHEP viewers (both the bench's own WebRTC peers, [`peer`], driven by [`load`] on the
//! load CPU). Phases alternate between forwarding only and forwarding while every track is
//! recorded through LiveKit's Egress API (Twirp, JSON, a `roomRecord` token; [`http`]),
//! and [`run`] measures each phase's window: packets delivered to viewers and lost, the
//! forwarding core's CPU per packet, the recorder threads' CPU per recorded packet, and
//! the bytes written. [`report`] gives the ratios within the run.

pub mod http;
pub mod load;
pub mod peer;
pub mod report;
pub mod run;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::machine::Machine;
use run::{Condition, Config};

const USAGE: &str = "\
prism-bench record: the forwarder's egress with every track recorded against none, and
the recorder's CPU per recorded packet

OPTIONS:
    --smoke            one short round with few viewers (CI); results in target/bench-smoke
    --prism PATH       prism binary (default: next to this binary)
    --tracks N         VP8 tracks published, each recorded (default 10)
    --viewers N        WHEP viewers of every track (default 40)
    --fps F            frames per second of every track (default 30; 4 packets a frame,
                       12 on keyframes, about 1.2 Mbit/s)
    --rounds N         rounds of every condition, ABBA order (default 7)
    --warmup S         seconds sent before each window, not measured (default 3)
    --window S         seconds measured per phase (default 10)
    --conditions LIST  of none,record,record-shared (default all three): record pins the
                       recorder threads to the load CPU, off the forwarding core;
                       record-shared leaves them on the forwarding core's CPU
    --gen-cpu N        pin the load side to CPU N (default 0)
    --sut-cpu N        pin prism serve and its forwarding core to CPU N (default 1)
    --out DIR          results directory (default bench/results)
    --note TEXT        a note printed with the results
";

/// `prism-bench record …`.
pub fn main(args: &[String]) -> Result<()> {
    let mut cfg = Config {
        tracks: 10,
        viewers: 40,
        fps: 30.0,
        rounds: 7,
        warmup_s: 3.0,
        window_s: 10.0,
        conditions: vec![Condition::None, Condition::Record, Condition::RecordShared],
        gen_cpu: Some(0),
        sut_cpu: Some(1),
    };
    let mut smoke = false;
    let mut prism = std::env::current_exe()?.with_file_name("prism");
    let mut out = None;
    let mut note = String::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--smoke" => {
                smoke = true;
                cfg.viewers = 4;
                cfg.rounds = 1;
                cfg.warmup_s = 1.0;
                cfg.window_s = 1.5;
                cfg.conditions = vec![Condition::None, Condition::Record];
            }
            "--prism" => prism = PathBuf::from(val()?),
            "--tracks" => cfg.tracks = val()?.parse()?,
            "--viewers" => cfg.viewers = val()?.parse()?,
            "--fps" => cfg.fps = val()?.parse()?,
            "--rounds" => cfg.rounds = val()?.parse()?,
            "--warmup" => cfg.warmup_s = val()?.parse()?,
            "--window" => cfg.window_s = val()?.parse()?,
            "--conditions" => {
                cfg.conditions = val()?
                    .split(',')
                    .map(|c| Condition::parse(c.trim()).with_context(|| format!("condition {c:?}")))
                    .collect::<Result<_>>()?
            }
            "--gen-cpu" => cfg.gen_cpu = Some(val()?.parse()?),
            "--sut-cpu" => cfg.sut_cpu = Some(val()?.parse()?),
            "--out" => out = Some(PathBuf::from(val()?)),
            "--note" => note = val()?.clone(),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    if cfg.tracks == 0 || cfg.viewers == 0 || cfg.rounds == 0 || cfg.fps <= 0.0 {
        bail!("--tracks, --viewers, --rounds and --fps must be positive");
    }
    if !cfg.conditions.contains(&Condition::None) || cfg.conditions.len() < 2 {
        bail!("--conditions needs none and at least one recording condition");
    }
    // Probed before pinning: a pinned process sees one CPU.
    let machine = Machine::probe();
    if machine.cpus < 2 {
        eprintln!("prism-bench record: one CPU only: load and server share it");
        cfg.gen_cpu = None;
        cfg.sut_cpu = None;
    }
    if let Some(c) = cfg.gen_cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            eprintln!("prism-bench record: could not pin to CPU {c}");
        }
    }
    let out = out.unwrap_or_else(|| {
        PathBuf::from(if smoke {
            "target/bench-smoke"
        } else {
            "bench/results"
        })
    });
    let scratch = std::env::temp_dir().join(format!("prism-bench-record-{}", std::process::id()));
    eprintln!(
        "prism-bench record: {} tracks, {} viewers, {} rounds of {:?} on {} ({} CPUs, load {})",
        cfg.tracks,
        cfg.viewers,
        cfg.rounds,
        cfg.conditions.iter().map(|c| c.label()).collect::<Vec<_>>(),
        machine.host,
        machine.cpus,
        machine.loadavg_at_start
    );
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let t0 = std::time::Instant::now();
    let phases = match run::run(&prism, &cfg, &scratch) {
        Ok(p) => {
            let _ = std::fs::remove_dir_all(&scratch);
            p
        }
        Err(e) => {
            // The server's log stays for the post-mortem.
            return Err(e.context(format!(
                "server log in {}",
                scratch.join("prism.log").display()
            )));
        }
    };
    let rep = report::Report::new(
        machine,
        cfg,
        smoke,
        note,
        started,
        t0.elapsed().as_secs_f64(),
        phases,
    );
    let stem = rep.write(&out)?;
    print!("{}", rep.markdown());
    eprintln!(
        "prism-bench record: results in {}/{stem}.{{json,md}}",
        out.display()
    );
    let broken = rep.failures();
    if !broken.is_empty() {
        bail!("record bench failed:\n  {}", broken.join("\n  "));
    }
    Ok(())
}
