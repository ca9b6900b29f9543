//! `prism-bench veth`: the forwarder's three I/O drivers, AF_XDP included, measured over a
//! veth pair between two network namespaces.
//!
//! Why: AF_XDP needs a link with a driver (it does not run on `lo`), and the loopback suite
//! cannot show it. Here the bench creates two namespaces joined by a veth pair
//! ([`VethPair`]: near side `va` for the load, far side `vb` for the system under test),
//! moves itself (generator and sinks, pinned to the load CPU) into the near namespace and
//! starts each system inside the far one with `ip netns exec`, pinned to the SUT CPU. The
//! I/O-only reflector and Prism's forwarder each run on `io_uring`, `mmsg` and `af_xdp`
//! (native XDP on `vb`, copy mode: veth has no zero-copy) over the same pair, in one run.
//!
//! A shared machine moves between measurements, so the run is made of rounds, each of
//! which measures every system on every scenario, the order reversed from one round to the
//! next (A B C … then … C B A): a drift in the machine's load weighs on both ends of the
//! order alike. Ratios are taken within a round and then averaged ([`report`]).
//!
//! The pair is removed when the run ends, also on error, panic, or SIGINT/SIGTERM/SIGHUP
//! (a signal thread removes the namespaces and exits). Without root the mode prints why it
//! skipped and succeeds.

pub mod report;

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use prism_forwarder::io::netns;
use prism_forwarder::testing::veth::{is_root, VethPair};

use crate::machine::Machine;
use crate::runner::{self, Plan};
use crate::scenario::{self, Topology};
use crate::sut::{self, Env, SystemKind, VethSide};
use report::{Measured, VethReport};

const USAGE: &str = "\
prism-bench veth: the reflector and Prism on io_uring, mmsg and af_xdp over a veth pair
between two network namespaces (root; skips with a reason otherwise)

USAGE:
    prism-bench veth [OPTIONS]

OPTIONS:
    --smoke             one short trial per scenario and system, one round (CI); results in
                        target/bench-smoke
    --rounds N          rounds, the order of systems reversed every other round (default 2)
    --out DIR           results directory (default bench/results)
    --forwarder PATH    prism-forwarder binary (default: next to this binary)
    --gen-cpu N         CPU of the generator and sinks (default 0)
    --sut-cpu N         CPU of the systems under test (default 1)
    --systems LIST      subset of ceiling,ceiling-mmsg,ceiling-af-xdp,prism-uring,prism-mmsg,
                        prism-af-xdp
    --scenarios LIST    fanout:N (1→N of 1200 B video) and relay:N (N × 1:1 of 200 B);
                        default fanout:100,relay:50
    --note TEXT         a note printed with the results
";

/// What the command line asked for.
#[derive(Debug)]
struct Args {
    smoke: bool,
    rounds: usize,
    out: Option<PathBuf>,
    forwarder: PathBuf,
    gen_cpu: usize,
    sut_cpu: usize,
    systems: Vec<SystemKind>,
    suite: Vec<Topology>,
    note: String,
}

fn parse_scenario(s: &str) -> Result<Topology> {
    let (kind, n) = s.split_once(':').unwrap_or((s, ""));
    let n = |default: usize| -> Result<usize> {
        if n.is_empty() {
            Ok(default)
        } else {
            n.parse().with_context(|| format!("scenario {s:?}"))
        }
    };
    match kind {
        "fanout" => Ok(Topology::fanout(n(100)?)),
        "relay" => Ok(Topology::small_relay(n(50)?)),
        _ => bail!("scenario {s:?}: fanout:N or relay:N"),
    }
}

fn parse(args: &[String]) -> Result<Option<Args>> {
    let exe = std::env::current_exe()?;
    let mut a = Args {
        smoke: false,
        rounds: 2,
        out: None,
        forwarder: exe.with_file_name("prism-forwarder"),
        gen_cpu: 0,
        sut_cpu: 1,
        systems: SystemKind::VETH.to_vec(),
        suite: scenario::veth_suite(),
        note: String::new(),
    };
    let mut rounds = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut val = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--smoke" => a.smoke = true,
            "--rounds" => rounds = Some(val()?.parse::<usize>()?.max(1)),
            "--out" => a.out = Some(PathBuf::from(val()?)),
            "--forwarder" => a.forwarder = PathBuf::from(val()?),
            "--gen-cpu" => a.gen_cpu = val()?.parse()?,
            "--sut-cpu" => a.sut_cpu = val()?.parse()?,
            "--systems" => {
                a.systems = val()?
                    .split(',')
                    .map(|s| {
                        SystemKind::parse(s.trim())
                            .filter(|k| SystemKind::VETH.contains(k))
                            .with_context(|| format!("system {s:?} (veth mode runs {:?})", names()))
                    })
                    .collect::<Result<_>>()?
            }
            "--scenarios" => {
                a.suite = val()?
                    .split(',')
                    .map(|s| parse_scenario(s.trim()))
                    .collect::<Result<_>>()?
            }
            "--note" => a.note = val()?.clone(),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    a.rounds = rounds.unwrap_or(if a.smoke { 1 } else { 2 });
    Ok(Some(a))
}

fn names() -> Vec<&'static str> {
    SystemKind::VETH.iter().map(|k| k.short()).collect()
}

/// Removes the pair's namespaces and exits when the bench is interrupted: a signal does
/// not unwind, so the pair's `Drop` would not run.
fn clean_up_on_signal(pair: &VethPair) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let names = [pair.a.clone(), pair.b.clone()];
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            stop_children();
            for n in &names {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", n])
                    .status();
            }
            eprintln!("prism-bench veth: signal {sig}: namespaces removed");
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

/// Sends SIGTERM to this process's children (the system under test running in the far
/// namespace), found through `/proc`: a signal sent to the bench alone would otherwise
/// leave them running in a namespace being removed.
fn stop_children() {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // The parent's pid is the second field after the parenthesised command name.
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1));
        if ppid == Some(me.as_str()) {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &name])
                .status();
        }
    }
}

/// `prism-bench veth`.
pub fn main(args: &[String]) -> Result<()> {
    let Some(a) = parse(args)? else {
        return Ok(());
    };
    if !is_root() {
        println!(
            "prism-bench veth: skipped: needs root (network namespaces, a veth pair, XDP and \
             AF_XDP sockets)"
        );
        return Ok(());
    }
    if !a.forwarder.exists() {
        bail!(
            "no prism-forwarder at {:?} (cargo build --release -p prism-forwarder)",
            a.forwarder
        );
    }
    // Probed before pinning (a pinned process sees one CPU) and in our own namespace.
    let machine = Machine::probe();
    if machine.cpus < 2 || a.gen_cpu == a.sut_cpu {
        bail!("veth mode needs two CPUs: the load and the system under test on different ones");
    }
    let pair = VethPair::new().context(
        "could not create two network namespaces joined by a veth pair (`ip netns add`, \
         `ip link add … type veth`)",
    )?;
    clean_up_on_signal(&pair)?;
    let result = run(&a, machine, &pair);
    drop(pair);
    result
}

fn run(a: &Args, machine: Machine, pair: &VethPair) -> Result<()> {
    // Every socket the generator and the sinks open from here on is in the near namespace.
    netns::enter(&pair.a).context("entering the load's namespace")?;
    if !core_affinity::set_for_current(core_affinity::CoreId { id: a.gen_cpu }) {
        eprintln!("prism-bench veth: could not pin to CPU {}", a.gen_cpu);
    }
    let env = Env {
        forwarder_bin: a.forwarder.clone(),
        bench_bin: std::env::current_exe()?,
        rtpengine_bin: None,
        sut_cpu: Some(a.sut_cpu),
        gen_cpu: Some(a.gen_cpu),
        scratch: sut::scratch_dir(&std::env::temp_dir())?,
        net: Some(VethSide {
            netns: pair.b.clone(),
            interface: "vb".into(),
            sut_ip: pair.ip_b,
            load_ip: pair.ip_a,
        }),
    };
    let plan = if a.smoke { Plan::smoke() } else { Plan::full() };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let (date, time) = crate::report::utc(now);
    let jobs = a.rounds * a.suite.len() * a.systems.len();
    eprintln!(
        "prism-bench veth: {} mode, {} rounds, {jobs} measurements on {} ({} CPUs, load {}); \
         {} ({}) ↔ {} ({})",
        if a.smoke { "smoke" } else { "full" },
        a.rounds,
        machine.host,
        machine.cpus,
        machine.loadavg_at_start,
        pair.a,
        pair.ip_a,
        pair.b,
        pair.ip_b,
    );
    let t0 = Instant::now();
    let mut measured = Vec::new();
    let mut done = 0;
    for round in 0..a.rounds {
        for topo in &a.suite {
            let mut order = a.systems.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for kind in order {
                done += 1;
                eprintln!(
                    "[{done}/{jobs}, {:.0} s] round {} {} on {}",
                    t0.elapsed().as_secs_f64(),
                    round + 1,
                    topo.name,
                    kind.label()
                );
                let outcome = runner::measure(&env, topo, kind, &plan).unwrap_or_else(|e| {
                    eprintln!("  error: {e:#}");
                    runner::failed(topo, kind, &e)
                });
                measured.push(Measured { round, outcome });
            }
        }
    }
    let report = VethReport {
        tool: "prism-bench veth",
        mode: if a.smoke { "smoke" } else { "full" },
        started: format!("{date} {time}"),
        duration_s: t0.elapsed().as_secs_f64(),
        machine,
        generator_cpu: a.gen_cpu,
        sut_cpu: a.sut_cpu,
        link: report::Link::of(pair),
        rounds: a.rounds,
        plan,
        note: a.note.clone(),
        measured,
    };
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from(if a.smoke {
            "target/bench-smoke"
        } else {
            "bench/results"
        })
    });
    let stem = report.write(&out)?;
    println!("{}", report.markdown());
    println!(
        "prism-bench veth: {:.1} s; results in {}/{stem}.{{json,md}}",
        report.duration_s,
        out.display()
    );
    let broken = report.broken();
    if a.smoke && !broken.is_empty() {
        bail!("veth smoke run failed:\n  {}", broken.join("\n  "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_and_systems_parse() {
        assert_eq!(parse_scenario("fanout:10").unwrap().subscribers, 10);
        assert_eq!(parse_scenario("relay").unwrap().publishers.len(), 50);
        assert!(parse_scenario("meeting:10").is_err());
        let a = parse(&["--smoke".into(), "--systems".into(), "prism-af-xdp".into()])
            .unwrap()
            .unwrap();
        assert_eq!(a.rounds, 1);
        assert_eq!(a.systems, vec![SystemKind::PrismAfXdp]);
        assert!(parse(&["--systems".into(), "rtpengine".into()]).is_err());
        assert_eq!(parse(&[]).unwrap().unwrap().rounds, 2);
    }
}
