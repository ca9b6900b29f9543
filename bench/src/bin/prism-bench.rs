//! `prism-bench`: runs the benchmark suite (`run`), or serves one of the bench's own
//! systems under test (`serve reflector|conventional`) as a separate, pinned process.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use prism_bench::machine::Machine;
use prism_bench::report::{self, Report};
use prism_bench::runner::{self, Plan};
use prism_bench::scenario;
use prism_bench::sut::{self, Env, SystemKind};
use prism_forwarder::io::DriverKind;

const USAGE: &str = "\
prism-bench: end-to-end load benchmark of Prism's media plane

USAGE:
    prism-bench run [OPTIONS]
    prism-bench serve reflector [--driver io_uring|mmsg|af_xdp] [--bind IP] [--interface IF]
                                --port N --control PATH
    prism-bench veth [OPTIONS]               the drivers over a veth pair between two network
                                             namespaces, AF_XDP included (root; see veth --help)
    prism-bench serve conventional --port N --control PATH
    prism-bench control compare|smoke ...   control-plane benchmark (see control --help)
    prism-bench ice-tcp [OPTIONS]            ICE-over-TCP cost against UDP (see ice-tcp --help)
    prism-bench record [OPTIONS]             recording's cost to the forwarder, and the
                                             recorder's per packet (see record --help)
    prism-bench load --http ADDR [OPTIONS]   steady WHIP/WHEP load on one prism serve node,
                                             for as long as asked (see load --help)
    prism-bench turn [--subscribers N] [--pps N] [--secs N] [--gen-cpu N] [--sut-cpu N]
                     [--out DIR]    embedded TURN against direct UDP, one run (writes
                                    DIR/turn-<date>.md and .json; default bench/results)

RUN OPTIONS:
    --smoke                 one short trial per scenario and system (CI), no search
    --out DIR               results directory (default bench/results; smoke: target/bench-smoke)
    --readme PATH           README whose Performance section is regenerated (full runs;
                            default README.md, but only when every system and scenario ran:
                            a partial run leaves it alone unless --readme is given; 'none'
                            to skip)
    --forwarder PATH        prism-forwarder binary (default: next to this binary)
    --rtpengine PATH        rtpengine binary (default /usr/bin/rtpengine if present)
    --gen-cpu N             pin the generator and sinks to CPU N (default 0)
    --sut-cpu N             pin the systems under test to CPU N (default 1)
    --systems LIST          subset of ceiling,prism-uring,prism-mmsg,conventional,rtpengine,
                            prism-uring-srtp-gcm,prism-uring-srtp-cm (the SRTP variants run
                            the relay and fan-out scenarios; every transport has its own keys),
                            prism-relayed (fan-outs, half the subscribers behind a relay
                            between two cores, as a room spanning two nodes)
    --scenarios LIST        subset of relay,fanout,audio,meeting,simulcast (kind or kind:N)
    --note TEXT             a note printed with the results (e.g. the machine was shared)
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("serve") => serve(&args[1..]),
        Some("control") => prism_bench::control::cli::main(&args[1..]),
        Some("ice-tcp") => prism_bench::icetcp::main(&args[1..]),
        Some("record") => prism_bench::record::main(&args[1..]),
        Some("load") => prism_bench::load::main(&args[1..]),
        Some("veth") => prism_bench::veth::main(&args[1..]),
        Some("turn") => turn(&args[1..]),
        Some("-h" | "--help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

fn turn(args: &[String]) -> Result<()> {
    let mut cfg = prism_bench::turn::TurnBench {
        subscribers: 10,
        ingress_pps: 5_000,
        secs: 10,
        gen_cpu: 0,
        sut_cpu: 1,
    };
    let mut out = PathBuf::from("bench/results");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--subscribers" => cfg.subscribers = val()?.parse()?,
            "--pps" => cfg.ingress_pps = val()?.parse()?,
            "--secs" => cfg.secs = val()?.parse()?,
            "--gen-cpu" => cfg.gen_cpu = val()?.parse()?,
            "--sut-cpu" => cfg.sut_cpu = val()?.parse()?,
            "--out" => out = PathBuf::from(val()?),
            other => bail!("unknown option {other:?}"),
        }
    }
    let (machine, results) = prism_bench::turn::run(&cfg)?;
    let secs = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let when = utc_stamp(secs);
    let md = prism_bench::turn::markdown(&cfg, &machine, &results, &when);
    print!("{md}");
    std::fs::create_dir_all(&out)?;
    let stem = format!("turn-{}", when.replace([' ', ':'], "-"));
    std::fs::write(out.join(format!("{stem}.md")), &md)?;
    std::fs::write(
        out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&results)?,
    )?;
    Ok(())
}

/// `YYYY-MM-DD HH:MM` in UTC for a Unix time.
fn utc_stamp(secs: u64) -> String {
    let days = secs / 86_400;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}")
}

fn serve(args: &[String]) -> Result<()> {
    let what = args.first().context("serve what?")?;
    let mut cfg = sut::reflector::ReflectorConfig {
        bind: std::net::Ipv4Addr::LOCALHOST.into(),
        port: 0,
        driver: DriverKind::IoUring,
        interface: None,
    };
    let mut control = None;
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--port" => cfg.port = val()?.parse()?,
            "--bind" => cfg.bind = val()?.parse()?,
            "--interface" => cfg.interface = Some(val()?.clone()),
            "--control" => control = Some(PathBuf::from(val()?)),
            "--driver" => {
                cfg.driver = match val()?.parse() {
                    Ok(DriverKind::Auto) | Err(_) => bail!("--driver io_uring|mmsg|af_xdp"),
                    Ok(k) => k,
                }
            }
            other => bail!("unknown option {other:?}"),
        }
    }
    let control = control.context("--control PATH is required")?;
    match what.as_str() {
        "reflector" => sut::reflector::serve(&cfg, &control),
        "conventional" => sut::conventional::serve(cfg.port, &control),
        other => bail!("unknown server {other:?}"),
    }
}

fn run(args: &[String]) -> Result<()> {
    let mut smoke = false;
    let mut out = None;
    let mut readme = Some(PathBuf::from("README.md"));
    let mut readme_given = false;
    let exe = std::env::current_exe()?;
    let mut forwarder = exe.with_file_name("prism-forwarder");
    let mut rtpengine = Some(PathBuf::from("/usr/bin/rtpengine")).filter(|p| p.exists());
    let mut gen_cpu = Some(0usize);
    let mut sut_cpu = Some(1usize);
    let mut systems: Vec<SystemKind> = SystemKind::ALL.to_vec();
    let mut filter: Option<Vec<String>> = None;
    let mut note = String::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--smoke" => smoke = true,
            "--out" => out = Some(PathBuf::from(val()?)),
            "--readme" => {
                let v = val()?;
                readme = (v != "none").then(|| PathBuf::from(v));
                readme_given = true;
            }
            "--forwarder" => forwarder = PathBuf::from(val()?),
            "--rtpengine" => rtpengine = Some(PathBuf::from(val()?)),
            "--gen-cpu" => gen_cpu = Some(val()?.parse()?),
            "--sut-cpu" => sut_cpu = Some(val()?.parse()?),
            "--systems" => {
                systems = val()?
                    .split(',')
                    .map(|s| SystemKind::parse(s.trim()).with_context(|| format!("system {s:?}")))
                    .collect::<Result<_>>()?
            }
            "--scenarios" => {
                filter = Some(val()?.split(',').map(|s| s.trim().to_string()).collect())
            }
            "--note" => note = val()?.clone(),
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    // Probed before pinning: a pinned process sees one CPU.
    let machine = Machine::probe();
    let cpus = machine.cpus;
    if cpus < 2 {
        eprintln!("prism-bench: one CPU only: generator and system under test share it");
        gen_cpu = None;
        sut_cpu = None;
    }
    if let Some(c) = gen_cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
            eprintln!("prism-bench: could not pin to CPU {c}");
        }
    }
    if !forwarder.exists() {
        bail!("no prism-forwarder at {forwarder:?} (cargo build --release -p prism-forwarder)");
    }
    let plan = if smoke { Plan::smoke() } else { Plan::full() };
    let out = out.unwrap_or_else(|| {
        PathBuf::from(if smoke {
            "target/bench-smoke"
        } else {
            "bench/results"
        })
    });
    let env = Env {
        forwarder_bin: forwarder,
        bench_bin: exe,
        rtpengine_bin: rtpengine,
        sut_cpu,
        gen_cpu,
        scratch: sut::scratch_dir(&std::env::temp_dir())?,
        net: None,
    };
    let suite: Vec<_> = scenario::suite()
        .into_iter()
        .filter(|t| {
            filter.as_ref().is_none_or(|f| {
                let kind = serde_json::to_value(t.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                f.iter()
                    .any(|x| *x == kind || *x == format!("{kind}:{}", t.n))
            })
        })
        .collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let (date, time) = report::utc(now);
    let t0 = Instant::now();
    let jobs: usize = suite
        .iter()
        .map(|t| systems.iter().filter(|s| s.runs(t.kind)).count())
        .sum();
    eprintln!(
        "prism-bench: {} mode, {jobs} measurements on {} ({} CPUs, load {})",
        if smoke { "smoke" } else { "full" },
        machine.host,
        machine.cpus,
        machine.loadavg_at_start
    );
    let mut outcomes = Vec::new();
    let mut done = 0;
    for topo in &suite {
        for &kind in systems.iter().filter(|s| s.runs(topo.kind)) {
            done += 1;
            eprintln!(
                "[{done}/{jobs}, {:.0} s] {} on {}",
                t0.elapsed().as_secs_f64(),
                topo.name,
                kind.label()
            );
            let o = if kind == SystemKind::Rtpengine && env.rtpengine_bin.is_none() {
                runner::failed(topo, kind, &anyhow::anyhow!("rtpengine not installed"))
            } else {
                runner::measure(&env, topo, kind, &plan).unwrap_or_else(|e| {
                    eprintln!("  error: {e:#}");
                    runner::failed(topo, kind, &e)
                })
            };
            outcomes.push(o);
        }
    }
    let report = Report {
        tool: "prism-bench",
        mode: if smoke { "smoke" } else { "full" },
        started: format!("{date} {time}"),
        duration_s: t0.elapsed().as_secs_f64(),
        machine,
        generator_cpu: gen_cpu,
        sut_cpu,
        plan,
        note,
        outcomes,
    };
    let stem = report.write(&out)?;
    println!("{}", report.markdown(None));
    println!(
        "prism-bench: {:.1} s; results in {}/{stem}.{{json,md,svg}}",
        report.duration_s,
        out.display()
    );
    let partial = filter.is_some() || systems != SystemKind::ALL;
    if partial && !readme_given && !smoke {
        eprintln!("prism-bench: partial run (--systems/--scenarios): README left as it is");
        readme = None;
    }
    if !smoke {
        if let Some(readme) = readme {
            let rel = |ext: &str| format!("{}/{stem}.{ext}", out.display());
            report.update_readme(&readme, &rel("svg"), &rel("json"))?;
        }
    }
    let broken: Vec<String> = report
        .outcomes
        .iter()
        .filter(|o| !o.limited_by.contains("not installed"))
        .filter(|o| {
            o.limited_by.starts_with("error")
                || o.trials.iter().all(|t| t.received == 0)
                || o.srtp_auth_failed > 0
        })
        .map(|o| {
            let why = if o.srtp_auth_failed > 0 {
                format!("{} SRTP tags did not verify", o.srtp_auth_failed)
            } else {
                o.limited_by.clone()
            };
            format!("{} on {}: {why}", o.scenario, o.system.short())
        })
        .collect();
    if smoke && !broken.is_empty() {
        bail!("smoke run failed:\n  {}", broken.join("\n  "));
    }
    Ok(())
}
