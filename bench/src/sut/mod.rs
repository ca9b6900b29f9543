//! The systems under test, each run as its own process pinned to the SUT CPU, and
//! configured from a [`Topology`].
//!
//! - [`prism`]: the `prism-forwarder` binary (io_uring, mmsg or AF_XDP driver), over its control socket,
//!   with plain RTP or, on the io_uring driver, SRTP under either profile (every transport
//!   with its own keys; see [`crate::srtp`]);
//! - [`reflector`]: the ceiling, `prism-bench serve reflector` on the forwarder's I/O drivers;
//! - [`conventional`]: `prism-bench serve conventional`, tokio and a packet copy per subscriber;
//! - [`rtpengine`]: Debian's rtpengine in userspace mode, over its ng protocol (relay only).
//!
//! On loopback every system binds 127.0.0.1. In veth mode ([`Env::net`]) the system runs
//! inside the far network namespace (`ip netns exec`), bound to the far end's address,
//! and the AF_XDP systems attach to the far end's interface.

pub mod conventional;
pub mod prism;
pub mod proc;
pub mod reflector;
pub mod routes;
pub mod rtpengine;
pub mod server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use anyhow::{Context, Result};
use prism_forwarder::srtp::SrtpProfile;
use serde::Serialize;

use crate::scenario::{self, Kind, Topology};
use routes::{RouteClient, RouteCommand};

/// Which system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SystemKind {
    Ceiling,
    PrismUring,
    PrismMmsg,
    Conventional,
    Rtpengine,
    /// Prism on io_uring, every transport SRTP with AEAD_AES_128_GCM.
    PrismUringSrtpGcm,
    /// Prism on io_uring, every transport SRTP with AES_CM_128_HMAC_SHA1_80.
    PrismUringSrtpCm,
    /// Prism on io_uring, half the subscribers behind a relay between two cores, as a
    /// room spanning two nodes (`prism::PrismControl::setup_relayed`).
    PrismRelayed,
    /// The reflector on the mmsg driver.
    CeilingMmsg,
    /// The reflector on the AF_XDP driver (veth mode only).
    CeilingAfXdp,
    /// Prism on the AF_XDP driver (veth mode only).
    PrismAfXdp,
}

impl SystemKind {
    pub const ALL: [SystemKind; 8] = [
        SystemKind::Ceiling,
        SystemKind::PrismUring,
        SystemKind::PrismMmsg,
        SystemKind::Conventional,
        SystemKind::Rtpengine,
        SystemKind::PrismUringSrtpGcm,
        SystemKind::PrismUringSrtpCm,
        SystemKind::PrismRelayed,
    ];

    /// Every system [`SystemKind::parse`] knows, the loopback suite's and veth mode's.
    pub const KNOWN: [SystemKind; 11] = [
        SystemKind::Ceiling,
        SystemKind::PrismUring,
        SystemKind::PrismMmsg,
        SystemKind::Conventional,
        SystemKind::Rtpengine,
        SystemKind::PrismUringSrtpGcm,
        SystemKind::PrismUringSrtpCm,
        SystemKind::PrismRelayed,
        SystemKind::CeilingMmsg,
        SystemKind::CeilingAfXdp,
        SystemKind::PrismAfXdp,
    ];

    /// Veth mode's systems: the reflector and Prism on each driver.
    pub const VETH: [SystemKind; 6] = [
        SystemKind::Ceiling,
        SystemKind::CeilingMmsg,
        SystemKind::CeilingAfXdp,
        SystemKind::PrismUring,
        SystemKind::PrismMmsg,
        SystemKind::PrismAfXdp,
    ];

    /// The I/O driver the system runs on (`None`: not one of the forwarder's drivers).
    pub fn driver(self) -> Option<&'static str> {
        match self {
            SystemKind::Ceiling
            | SystemKind::PrismUring
            | SystemKind::PrismUringSrtpGcm
            | SystemKind::PrismUringSrtpCm
            | SystemKind::PrismRelayed => Some("io_uring"),
            SystemKind::CeilingMmsg | SystemKind::PrismMmsg => Some("mmsg"),
            SystemKind::CeilingAfXdp | SystemKind::PrismAfXdp => Some("af_xdp"),
            SystemKind::Conventional | SystemKind::Rtpengine => None,
        }
    }

    /// Whether this is the I/O-only reflector.
    pub fn is_reflector(self) -> bool {
        matches!(
            self,
            SystemKind::Ceiling | SystemKind::CeilingMmsg | SystemKind::CeilingAfXdp
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            SystemKind::Ceiling => "ceiling (io_uring reflector)",
            SystemKind::PrismUring => "Prism io_uring",
            SystemKind::PrismMmsg => "Prism mmsg",
            SystemKind::Conventional => "conventional (tokio)",
            SystemKind::Rtpengine => "rtpengine (userspace)",
            SystemKind::PrismUringSrtpGcm => "Prism io_uring, SRTP AES-GCM",
            SystemKind::PrismUringSrtpCm => "Prism io_uring, SRTP AES-CM/HMAC-SHA1-80",
            SystemKind::PrismRelayed => "Prism io_uring, half the subscribers over a relay",
            SystemKind::CeilingMmsg => "ceiling (mmsg reflector)",
            SystemKind::CeilingAfXdp => "ceiling (AF_XDP reflector)",
            SystemKind::PrismAfXdp => "Prism AF_XDP",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            SystemKind::Ceiling => "ceiling",
            SystemKind::PrismUring => "prism-uring",
            SystemKind::PrismMmsg => "prism-mmsg",
            SystemKind::Conventional => "conventional",
            SystemKind::Rtpengine => "rtpengine",
            SystemKind::PrismUringSrtpGcm => "prism-uring-srtp-gcm",
            SystemKind::PrismUringSrtpCm => "prism-uring-srtp-cm",
            SystemKind::PrismRelayed => "prism-relayed",
            SystemKind::CeilingMmsg => "ceiling-mmsg",
            SystemKind::CeilingAfXdp => "ceiling-af-xdp",
            SystemKind::PrismAfXdp => "prism-af-xdp",
        }
    }

    /// The SRTP profile every transport uses, for the SRTP variants.
    pub fn srtp(self) -> Option<SrtpProfile> {
        match self {
            SystemKind::PrismUringSrtpGcm => Some(SrtpProfile::AeadAes128Gcm),
            SystemKind::PrismUringSrtpCm => Some(SrtpProfile::AesCm128HmacSha1_80),
            _ => None,
        }
    }

    /// The plain system an SRTP variant is compared with (itself for the others).
    pub fn plain(self) -> SystemKind {
        match self {
            SystemKind::PrismUringSrtpGcm | SystemKind::PrismUringSrtpCm => SystemKind::PrismUring,
            k => k,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::KNOWN.into_iter().find(|k| k.short() == s)
    }

    /// Whether this system takes part in a scenario. The SRTP variants run the relay and
    /// the fan-outs: one stream per subscriber makes the per-copy cost of encryption plain
    /// to see, and the full run stays within a quarter of an hour or so.
    pub fn runs(self, kind: Kind) -> bool {
        match self {
            SystemKind::Rtpengine => kind == Kind::Relay,
            SystemKind::PrismUringSrtpGcm | SystemKind::PrismUringSrtpCm => {
                matches!(kind, Kind::Relay | Kind::Fanout)
            }
            SystemKind::PrismRelayed => kind == Kind::Fanout,
            _ => true,
        }
    }
}

/// Where the bench finds its programs and puts its scratch files.
#[derive(Clone, Debug)]
pub struct Env {
    pub forwarder_bin: PathBuf,
    pub bench_bin: PathBuf,
    pub rtpengine_bin: Option<PathBuf>,
    /// CPU the system under test is pinned to (None: not pinned).
    pub sut_cpu: Option<usize>,
    /// CPU the generator and sinks are pinned to (None: not pinned).
    pub gen_cpu: Option<usize>,
    pub scratch: PathBuf,
    /// Veth mode: where the system under test runs (None: loopback, in this namespace).
    pub net: Option<VethSide>,
}

/// The far side of veth mode's pair: the system under test's namespace, its address and
/// interface, and the near side's address (where the generator and sinks bind).
#[derive(Clone, Debug)]
pub struct VethSide {
    pub netns: String,
    pub interface: String,
    pub sut_ip: Ipv4Addr,
    pub load_ip: Ipv4Addr,
}

impl Env {
    /// The address the generator and the sinks bind.
    pub fn load_ip(&self) -> IpAddr {
        match &self.net {
            Some(n) => IpAddr::V4(n.load_ip),
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }

    /// The address the system under test binds.
    pub fn sut_ip(&self) -> IpAddr {
        match &self.net {
            Some(n) => IpAddr::V4(n.sut_ip),
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// A running system under test.
pub struct System {
    pub kind: SystemKind,
    child: Child,
    control: Control,
    /// Where each publisher sends, per publisher.
    pub targets: Vec<SocketAddr>,
    /// RSS right after start, before any configuration.
    pub rss_at_start: u64,
    stopped: bool,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("kind", &self.kind)
            .field("pid", &self.child.id())
            .finish()
    }
}

enum Control {
    Prism(prism::PrismControl),
    Routes(RouteClient),
    Rtpengine,
}

/// A free UDP port on loopback (bound and released; good enough on a quiet host).
pub fn free_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Two free consecutive UDP ports on loopback (a forwarder with two cores binds both).
pub fn free_port_pair() -> Result<u16> {
    for _ in 0..64 {
        let a = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let port = a.local_addr()?.port();
        if port < u16::MAX && std::net::UdpSocket::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no two consecutive free UDP ports on loopback")
}

impl System {
    /// Starts `kind` and configures it for `topo` with the given publisher and sink sockets.
    pub fn start(
        kind: SystemKind,
        env: &Env,
        topo: &Topology,
        pubs: &[SocketAddr],
        sinks: &[SocketAddr],
    ) -> Result<Self> {
        let port = if kind == SystemKind::PrismRelayed {
            free_port_pair()?
        } else {
            free_port()?
        };
        let tag = format!("{}-{}", kind.short(), std::process::id());
        let sock_path = env.scratch.join(format!("{tag}.sock"));
        let log = env.scratch.join(format!("{tag}.log"));
        let ingress = SocketAddr::new(env.sut_ip(), port);
        let netns = env.net.as_ref().map(|n| n.netns.as_str());
        if kind.driver() == Some("af_xdp") && env.net.is_none() {
            anyhow::bail!("{} runs in veth mode only (prism-bench veth)", kind.short());
        }
        let (child, control, targets) = match kind {
            SystemKind::PrismUring
            | SystemKind::PrismMmsg
            | SystemKind::PrismAfXdp
            | SystemKind::PrismUringSrtpGcm
            | SystemKind::PrismUringSrtpCm
            | SystemKind::PrismRelayed => {
                let driver = kind.driver().unwrap_or("io_uring");
                let cpu = env.sut_cpu.unwrap_or(0).to_string();
                // Relayed: two cores (the origin and the far node) on the one SUT CPU.
                let cores = if kind == SystemKind::PrismRelayed {
                    format!("{cpu},{cpu}")
                } else {
                    cpu
                };
                let mut args: Vec<String> = [
                    "--control-unix",
                    &sock_path.display().to_string(),
                    "--cores",
                    &cores,
                    "--driver",
                    driver,
                    "--port",
                    &port.to_string(),
                    "--log",
                    "warn",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                if let Some(n) = &env.net {
                    args.extend(["--bind".into(), n.sut_ip.to_string()]);
                    if kind == SystemKind::PrismAfXdp {
                        args.extend(["--interface".into(), n.interface.clone()]);
                    }
                }
                let child = proc::spawn_in(netns, env.sut_cpu, &env.forwarder_bin, &args, &log)?;
                let c = prism::PrismControl::connect(&sock_path, Duration::from_secs(10))
                    .with_context(|| format!("connecting to prism-forwarder (log {log:?})"))?;
                (
                    child,
                    Control::Prism(c),
                    vec![ingress; topo.publishers.len()],
                )
            }
            SystemKind::Ceiling
            | SystemKind::CeilingMmsg
            | SystemKind::CeilingAfXdp
            | SystemKind::Conventional => {
                let mut args = vec!["serve".to_string()];
                if let Some(driver) = kind.driver() {
                    args.extend(["reflector".into(), "--driver".into(), driver.into()]);
                } else {
                    args.push("conventional".into());
                }
                args.extend([
                    "--port".into(),
                    port.to_string(),
                    "--control".into(),
                    sock_path.display().to_string(),
                ]);
                if let Some(n) = &env.net {
                    args.extend(["--bind".into(), n.sut_ip.to_string()]);
                    if kind == SystemKind::CeilingAfXdp {
                        args.extend(["--interface".into(), n.interface.clone()]);
                    }
                }
                let child = proc::spawn_in(netns, env.sut_cpu, &env.bench_bin, &args, &log)?;
                let c = RouteClient::connect(&sock_path, Duration::from_secs(10))
                    .with_context(|| format!("connecting to the bench server (log {log:?})"))?;
                (
                    child,
                    Control::Routes(c),
                    vec![ingress; topo.publishers.len()],
                )
            }
            SystemKind::Rtpengine => {
                let bin = env
                    .rtpengine_bin
                    .as_deref()
                    .context("rtpengine is not installed")?;
                let (child, targets) = rtpengine::start(bin, env, topo, pubs, sinks, &log)?;
                (child, Control::Rtpengine, targets)
            }
        };
        let pid = child.id();
        let mut sys = System {
            kind,
            child,
            control,
            targets,
            rss_at_start: proc::rss_bytes(pid).unwrap_or(0),
            stopped: false,
        };
        if let Err(e) = sys.configure(topo, pubs, sinks, port) {
            sys.stop();
            return Err(e);
        }
        Ok(sys)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn configure(
        &mut self,
        topo: &Topology,
        pubs: &[SocketAddr],
        sinks: &[SocketAddr],
        port: u16,
    ) -> Result<()> {
        match &mut self.control {
            Control::Prism(c) if self.kind == SystemKind::PrismRelayed => {
                c.setup_relayed(topo, pubs, sinks, port, port + 1)
            }
            Control::Prism(c) => c.setup(topo, pubs, sinks, self.kind.srtp()),
            Control::Routes(c) => {
                let cmds: Vec<RouteCommand> = topo
                    .subscriptions
                    .iter()
                    .enumerate()
                    .map(|(i, s)| RouteCommand::Route {
                        ssrc: scenario::source_ssrc(s.publisher, s.spatial),
                        to: sinks[s.subscriber],
                        out_ssrc: scenario::output_ssrc(i),
                    })
                    .collect();
                Ok(c.apply(&cmds)?)
            }
            Control::Rtpengine => Ok(()),
        }
    }

    /// Moves subscription `sub` of `topo` from layer `from` to layer `to`.
    pub fn switch_layer(
        &mut self,
        topo: &Topology,
        sinks: &[SocketAddr],
        sub: usize,
        from: usize,
        to: usize,
    ) -> Result<()> {
        let s = topo.subscriptions[sub];
        match &mut self.control {
            Control::Prism(c) => c.set_layer(sub, to),
            Control::Routes(c) => Ok(c.apply(&[
                RouteCommand::Unroute {
                    ssrc: scenario::source_ssrc(s.publisher, from),
                    to: sinks[s.subscriber],
                },
                RouteCommand::Route {
                    ssrc: scenario::source_ssrc(s.publisher, to),
                    to: sinks[s.subscriber],
                    out_ssrc: scenario::output_ssrc(sub),
                },
            ])?),
            Control::Rtpengine => Ok(()),
        }
    }

    /// Prism's own counters, as a one-line summary (other systems have none).
    pub fn counters(&mut self) -> Option<String> {
        match &mut self.control {
            Control::Prism(c) => c.summary().ok(),
            _ => None,
        }
    }

    pub fn stop(&mut self) {
        if !self.stopped {
            self.stopped = true;
            proc::stop(&mut self.child);
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The bench's scratch directory for sockets and logs.
pub fn scratch_dir(base: &Path) -> Result<PathBuf> {
    let d = base.join("prism-bench");
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
