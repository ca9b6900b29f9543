//! A `prism serve --dev` under test: its own HTTP and media ports, pinned with `taskset`,
//! its output in a log file, stopped on drop.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sut::{self, proc};

/// A running server.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub http: SocketAddr,
    pub log: PathBuf,
}

impl Server {
    /// Starts `bin` on free ports, with its media core and every thread on `cpu` when
    /// given; returns once it accepts TCP connections.
    pub fn start(bin: &Path, cpu: Option<usize>, log: &Path) -> Result<Server> {
        Self::start_with_level(bin, cpu, log, "warn")
    }

    /// [`Server::start`] with another `--log-level`.
    pub fn start_with_level(
        bin: &Path,
        cpu: Option<usize>,
        log: &Path,
        level: &str,
    ) -> Result<Server> {
        if !bin.exists() {
            bail!("no prism binary at {}", bin.display());
        }
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let media_port = sut::free_port()?;
        let http: SocketAddr = format!("127.0.0.1:{http_port}").parse()?;
        let args: Vec<String> = [
            "serve",
            "--dev",
            "--bind",
            &http.to_string(),
            "--media-ip",
            "127.0.0.1",
            "--media-port",
            &media_port.to_string(),
            "--cores",
            &cpu.unwrap_or(0).to_string(),
            "--log-level",
            level,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let child = proc::spawn_pinned(cpu, bin, &args, log)
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Server {
            child,
            http,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&http, Duration::from_millis(200)).is_err() {
            if !server.alive() {
                bail!(
                    "{} exited at start; log {}:\n{}",
                    bin.display(),
                    log.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("{} did not listen within 30 s", bin.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// CPU seconds the server has used so far (every thread).
    pub fn cpu_seconds(&self) -> f64 {
        proc::cpu_seconds(self.pid()).unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        proc::stop(&mut self.child);
    }
}
