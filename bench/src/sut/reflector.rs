//! The ceiling: a reflector that only does the I/O, on Prism's own I/O path.
//!
//! It runs the forwarder's [`Driver`] (io_uring, recvmmsg/sendmmsg, or AF_XDP on an
//! interface in veth mode) and, for each datagram
//! of a batch, queues it unchanged to every destination of its SSRC (a 4-byte load at a
//! fixed offset and one table lookup: no validation, no header rewrite, no per-subscriber
//! state). Whatever Prism does above that costs egress rate relative to this.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use prism_forwarder::io::{
    bind_udp, Driver, DriverKind, DriverUser, Egress, SocketConfig, XdpMode, XdpTarget,
};

use super::routes::RouteCommand;
use super::server;

/// Where and on what the reflector runs.
#[derive(Clone, Debug)]
pub struct ReflectorConfig {
    /// The address it binds (127.0.0.1 on loopback; the far end of the pair in veth mode).
    pub bind: std::net::IpAddr,
    pub port: u16,
    pub driver: DriverKind,
    /// AF_XDP: the interface (queue 0, native XDP).
    pub interface: Option<String>,
}

/// Runs the reflector until SIGTERM/SIGINT.
pub fn serve(cfg: &ReflectorConfig, control: &Path) -> Result<()> {
    let sock = bind_udp(&SocketConfig::bound_to(SocketAddr::new(cfg.bind, cfg.port)))
        .context("binding the reflector socket")?;
    let xdp = cfg.interface.as_ref().map(|i| XdpTarget {
        interface: i.clone(),
        queue: 0,
        mode: XdpMode::Native,
        bind: prism_forwarder::io::XdpBind::Copy,
    });
    cfg.driver
        .open_on(sock, xdp.as_ref(), Reflect { control })
        .map_err(|(e, _)| anyhow::Error::new(e).context("opening the reflector's driver"))?
}

/// The reflector's loop, on whichever driver [`DriverKind::open`] built.
struct Reflect<'a> {
    control: &'a Path,
}

impl DriverUser for Reflect<'_> {
    type Output = Result<()>;

    fn run<D: Driver>(self, driver: D) -> Result<()> {
        run(driver, self.control)
    }
}

fn run<D: Driver>(mut driver: D, control: &Path) -> Result<()> {
    let (tx, rx) = mpsc::channel::<RouteCommand>();
    let waker = driver.waker();
    let tx = std::sync::Mutex::new(tx);
    let _control = server::listen(control, move |c| {
        if let Ok(tx) = tx.lock() {
            let _ = tx.send(c);
        }
        waker.wake();
    })?;
    let stop = stop_flag()?;
    let mut routes: HashMap<u32, Vec<SocketAddr>> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        for c in rx.try_iter() {
            apply(&mut routes, c);
        }
        let mut handler = |_from: SocketAddr, d: &mut [u8], eg: &mut D::Egress| {
            let Some(k) = d.get(8..12) else { return };
            let ssrc = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
            if let Some(dests) = routes.get(&ssrc) {
                for &to in dests {
                    eg.send_split(to, &[], 0..d.len());
                }
            }
        };
        driver.turn(Some(Duration::from_millis(50)), &mut handler)?;
    }
    Ok(())
}

fn apply(routes: &mut HashMap<u32, Vec<SocketAddr>>, c: RouteCommand) {
    match c {
        RouteCommand::Route { ssrc, to, .. } => routes.entry(ssrc).or_default().push(to),
        RouteCommand::Unroute { ssrc, to } => {
            if let Some(v) = routes.get_mut(&ssrc) {
                v.retain(|&a| a != to);
            }
        }
    }
}

/// A flag raised by SIGTERM or SIGINT.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).context("installing signal handlers")?;
    }
    Ok(flag)
}
