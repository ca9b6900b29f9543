//! Reading a process's CPU time and memory from `/proc`, and running it pinned (and, in
//! veth mode, inside a network namespace).

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// CPU seconds (user + system, all threads) the process has used.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may itself contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (0-based 11, 12).
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks() as f64)
}

/// Where one CPU's time went (seconds), from its line in `/proc/stat`: user (with nice),
/// system, softirq (with irq) and idle (with iowait). With tick-based accounting the
/// kernel bills softirq work to whichever task the tick interrupted too, so a process's
/// own CPU time and its core's split are two views of the same work: the split shows the
/// part done in softirq, e.g. veth delivering the other side's packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct CoreTimes {
    pub user: f64,
    pub system: f64,
    pub softirq: f64,
    pub idle: f64,
}

impl CoreTimes {
    /// CPU `cpu`'s counters now (None: no such CPU, or no `/proc/stat`).
    pub fn read(cpu: usize) -> Option<Self> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let name = format!("cpu{cpu}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
        Self::parse(line)
    }

    fn parse(line: &str) -> Option<Self> {
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse::<f64>().map(|t| t / clock_ticks() as f64))
            .collect::<Result<_, _>>()
            .ok()?;
        let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
        Some(Self {
            user: at(0) + at(1),
            system: at(2),
            idle: at(3) + at(4),
            softirq: at(5) + at(6),
        })
    }

    /// What was spent between `earlier` and `self`.
    pub fn since(&self, earlier: &CoreTimes) -> CoreTimes {
        CoreTimes {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
            softirq: self.softirq - earlier.softirq,
            idle: self.idle - earlier.idle,
        }
    }

    /// Seconds the CPU was busy.
    pub fn busy(&self) -> f64 {
        self.user + self.system + self.softirq
    }
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux this runs on (USER_HZ is fixed by the ABI).
fn clock_ticks() -> u64 {
    100
}

/// Resident memory in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Starts `program args` pinned to `cpu` with `taskset` (when given), output to `log`.
pub fn spawn_pinned(
    cpu: Option<usize>,
    program: &Path,
    args: &[String],
    log: &Path,
) -> std::io::Result<Child> {
    spawn_in(None, cpu, program, args, log)
}

/// As [`spawn_pinned`], inside the network namespace `netns` (`ip netns exec`) when given.
/// `ip netns exec` and `taskset` both exec what follows them, so the child's pid is the
/// program's: its CPU time and memory are read from `/proc` as usual, and SIGTERM reaches
/// it.
pub fn spawn_in(
    netns: Option<&str>,
    cpu: Option<usize>,
    program: &Path,
    args: &[String],
    log: &Path,
) -> std::io::Result<Child> {
    let out = fs::File::create(log)?;
    let err = out.try_clone()?;
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Some(ns) = netns {
        argv.extend(["ip", "netns", "exec", ns].map(Into::into));
    }
    if let Some(c) = cpu {
        argv.extend(["taskset".into(), "-c".into(), c.to_string().into()]);
    }
    argv.push(program.as_os_str().to_owned());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
}

/// Asks `child` to stop (SIGTERM through `kill`), then reaps it, killing it if it lingers.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stderr(Stdio::null())
        .status();
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_cpu_and_memory() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some());
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(CoreTimes::read(0).is_some_and(|t| t.busy() + t.idle > 0.0));
        assert!(CoreTimes::read(100_000).is_none());
    }

    #[test]
    fn parses_a_cpu_line() {
        let t = CoreTimes::parse("cpu1 100 50 200 1000 20 5 45 0 0 0").unwrap();
        assert_eq!(
            t,
            CoreTimes {
                user: 1.5,
                system: 2.0,
                softirq: 0.5,
                idle: 10.2,
            }
        );
        let d = t.since(&CoreTimes::default());
        assert!((d.busy() - 4.0).abs() < 1e-9);
    }
}
