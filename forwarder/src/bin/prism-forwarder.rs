//! `prism-forwarder`: the media plane alone, driven over a control socket by another
//! signaling front end (or by `prism-bench`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use prism_forwarder::control::socket::{serve, ControlListen};
use prism_forwarder::io::XdpMode;
use prism_forwarder::runtime::{Forwarder, ForwarderConfig};

/// Prism's media plane, controlled over a socket.
#[derive(Parser, Debug)]
#[command(name = "prism-forwarder", version)]
struct Cli {
    /// Serve control on a Unix socket (default /tmp/prism-forwarder.sock).
    #[arg(long, value_name = "PATH")]
    control_unix: Option<PathBuf>,
    /// Serve control on TCP (loopback only unless --secret is given).
    #[arg(long, value_name = "ADDR", conflicts_with = "control_unix")]
    control_tcp: Option<SocketAddr>,
    /// Shared secret the control client sends first.
    #[arg(long, env = "PRISM_CONTROL_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Address the media sockets bind to (default 127.0.0.1).
    #[arg(long, value_name = "IP")]
    bind: Option<IpAddr>,
    /// Address clients are given for media when it is not the bound one (behind NAT, or
    /// with --bind 0.0.0.0).
    #[arg(long, value_name = "IP", env = "NODE_IP")]
    node_ip: Option<IpAddr>,
    /// UDP port of core 0; core i uses PORT+i (default 0: the kernel chooses).
    #[arg(long, alias = "udp-port", value_name = "PORT", default_value_t = 0)]
    port: u16,
    /// ICE over TCP: passive candidates on this TCP port (0: the kernel chooses; default:
    /// no ICE-TCP).
    #[arg(long, value_name = "PORT")]
    tcp_port: Option<u16>,
    /// CPU ids to run cores on, e.g. 0,1 (default: every CPU).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    cores: Vec<usize>,
    /// Do not pin core threads to their CPUs.
    #[arg(long)]
    no_pin: bool,
    /// I/O driver (af_xdp needs --interface and --bind to that interface's IPv4 address).
    #[arg(long, value_name = "KIND", default_value = "auto", value_parser = ["auto", "io_uring", "uring", "mmsg", "af_xdp"])]
    driver: String,
    /// The interface the af_xdp driver attaches to (core i serves its queue
    /// --xdp-first-queue + i).
    #[arg(long, value_name = "IF")]
    interface: Option<String>,
    /// The receive queue core 0 serves with af_xdp.
    #[arg(long, value_name = "N", default_value_t = 0)]
    xdp_first_queue: u32,
    /// How af_xdp sockets bind: copy, zerocopy (refused where the NIC's driver has no
    /// zero-copy) or auto (zero-copy where possible, else copy).
    #[arg(long, value_name = "MODE", default_value = "copy", value_parser = ["copy", "zerocopy", "auto"])]
    xdp_bind: String,
    /// Attach the XDP program in the generic path instead of the NIC driver.
    #[arg(long)]
    xdp_generic: bool,
    /// error, warn, info, debug, trace, or a tracing filter (default: RUST_LOG, else info).
    #[arg(long, alias = "log-level", value_name = "LEVEL")]
    log: Option<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut cfg = ForwarderConfig::default();
    if let Some(ip) = cli.bind {
        cfg.bind_ip = ip;
    }
    cfg.engine.advertise_ip = cli.node_ip;
    cfg.base_port = cli.port;
    cfg.tcp_port = cli.tcp_port;
    cfg.cores = cli.cores;
    cfg.pin = !cli.no_pin;
    cfg.driver = cli.driver.parse().map_err(anyhow::Error::msg)?;
    cfg.xdp = cli.interface.map(|i| {
        let mode = if cli.xdp_generic {
            XdpMode::Generic
        } else {
            XdpMode::Native
        };
        (i, mode)
    });
    cfg.xdp_first_queue = cli.xdp_first_queue;
    cfg.xdp_bind = cli.xdp_bind.parse().map_err(anyhow::Error::msg)?;
    let secret = cli.secret;
    let log = cli
        .log
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".into());
    let listen = match (cli.control_tcp, cli.control_unix) {
        (Some(addr), _) => Some(ControlListen::Tcp { addr, secret: None }),
        (None, Some(p)) => Some(ControlListen::Unix(p)),
        (None, None) => None,
    };
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
