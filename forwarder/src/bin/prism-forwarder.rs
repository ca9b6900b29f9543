//! `prism-forwarder`: the media plane alone, driven over a control socket by another
//! signaling front end (or by `prism-bench`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use prism_forwarder::control::socket::{serve, ControlListen};
use prism_forwarder::io::DriverKind;
use prism_forwarder::runtime::{Forwarder, ForwarderConfig};

const USAGE: &str = "\
prism-forwarder: Prism's media plane, controlled over a socket

USAGE:
    prism-forwarder [OPTIONS]

OPTIONS:
    --control-unix PATH     serve control on a Unix socket (default: /tmp/prism-forwarder.sock)
    --control-tcp ADDR      serve control on TCP (loopback only unless --secret is given)
    --secret S              shared secret the control client sends first (or PRISM_CONTROL_SECRET)
    --bind IP               address the media sockets bind to (default 127.0.0.1)
    --port N                UDP port of core 0; core i uses N+i (default 0: kernel chooses)
    --tcp-port N            ICE over TCP: passive candidates on this TCP port (0: kernel
                            chooses; default: no ICE-TCP)
    --cores LIST            CPU ids to run cores on, e.g. 0,1 (default: every CPU)
    --no-pin                do not pin core threads to their CPUs
    --driver KIND           auto | io_uring | mmsg (default auto)
    --log LEVEL             error | warn | info | debug | trace (default info, or RUST_LOG)
    -h, --help              this text
";

fn main() -> Result<()> {
    let mut cfg = ForwarderConfig::default();
    let mut listen: Option<ControlListen> = None;
    let mut secret = std::env::var("PRISM_CONTROL_SECRET").ok();
    let mut log = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            "--control-unix" => listen = Some(ControlListen::Unix(PathBuf::from(val()?))),
            "--control-tcp" => {
                let addr: SocketAddr = val()?.parse().context("--control-tcp")?;
                listen = Some(ControlListen::Tcp { addr, secret: None });
            }
            "--secret" => secret = Some(val()?),
            "--bind" => cfg.bind_ip = val()?.parse::<IpAddr>().context("--bind")?,
            "--port" => cfg.base_port = val()?.parse().context("--port")?,
            "--tcp-port" => cfg.tcp_port = Some(val()?.parse().context("--tcp-port")?),
            "--cores" => {
                cfg.cores = val()?
                    .split(',')
                    .map(|c| c.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--cores")?
            }
            "--no-pin" => cfg.pin = false,
            "--driver" => {
                cfg.driver = match val()?.as_str() {
                    "auto" => DriverKind::Auto,
                    "io_uring" | "uring" => DriverKind::IoUring,
                    "mmsg" => DriverKind::Mmsg,
                    other => bail!("unknown driver {other:?} (auto, io_uring, mmsg)"),
                }
            }
            "--log" => log = val()?,
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(log))
        .init();
    let listen = match listen.unwrap_or(ControlListen::Unix("/tmp/prism-forwarder.sock".into())) {
        ControlListen::Tcp { addr, .. } => ControlListen::Tcp { addr, secret },
        unix => unix,
    };
    let fwd = Forwarder::start(cfg).context("starting the media plane")?;
    let handle = serve(listen, fwd.client()).context("serving control")?;
    println!(
        "prism-forwarder: driver {}, cores at {:?}, ICE-TCP {:?}, control on {:?}",
        fwd.driver_name(),
        fwd.core_addrs(),
        fwd.tcp_addr(),
        handle.local_addr()
    );
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, term.clone()).context("installing signal handlers")?;
    }
    while !term.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("prism-forwarder: stopping");
    handle.shutdown();
    fwd.shutdown();
    Ok(())
}
