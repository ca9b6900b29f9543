//! Two network namespaces joined by a veth pair, created with `ip` and removed on drop.
//!
//! Side A (`10.91.N.1`, interface `va`) is for peers, side B (`10.91.N.2`, `vb`) for the
//! system under test; a thread moves into a side with [`crate::io::netns::enter`]. Names
//! carry the process id and a counter, so tests running at once do not collide.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether this process runs as root (namespaces, XDP and raw sockets need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// The pair; see the module docs.
#[derive(Debug)]
pub struct VethPair {
    pub a: String,
    pub b: String,
    pub ip_a: Ipv4Addr,
    pub ip_b: Ipv4Addr,
}

impl VethPair {
    /// Creates the namespaces and the link, both ends up. None (after cleaning up) if any
    /// step fails, e.g. without root.
    pub fn new() -> Option<VethPair> {
        Self::with_queues(1)
    }

    /// As [`VethPair::new`], with `queues` receive and transmit queues on each end (a
    /// frame sent on `va`'s transmit queue *i* arrives on `vb`'s receive queue *i*).
    pub fn with_queues(queues: u32) -> Option<VethPair> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = std::process::id() % 100_000;
        let subnet = (n % 250) as u8;
        let p = VethPair {
            a: format!("pxa{id}n{n}"),
            b: format!("pxb{id}n{n}"),
            ip_a: Ipv4Addr::new(10, 91, subnet, 1),
            ip_b: Ipv4Addr::new(10, 91, subnet, 2),
        };
        let (cidr_a, cidr_b) = (format!("{}/24", p.ip_a), format!("{}/24", p.ip_b));
        let q = queues.max(1).to_string();
        let ok = ip(&["netns", "add", &p.a])
            && ip(&["netns", "add", &p.b])
            && ip(&[
                "link",
                "add",
                "va",
                "netns",
                &p.a,
                "numrxqueues",
                &q,
                "numtxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                "vb",
                "netns",
                &p.b,
                "numrxqueues",
                &q,
                "numtxqueues",
                &q,
            ])
            && ip(&["-n", &p.a, "addr", "add", &cidr_a, "dev", "va"])
            && ip(&["-n", &p.b, "addr", "add", &cidr_b, "dev", "vb"])
            && ip(&["-n", &p.a, "link", "set", "va", "up"])
            && ip(&["-n", &p.b, "link", "set", "vb", "up"])
            && ip(&["-n", &p.a, "link", "set", "lo", "up"])
            && ip(&["-n", &p.b, "link", "set", "lo", "up"]);
        ok.then_some(p)
    }

    /// The MAC address of `va` (side A) or `vb` (side B).
    pub fn mac(&self, side_b: bool) -> Option<[u8; 6]> {
        let (ns, dev) = if side_b {
            (&self.b, "vb")
        } else {
            (&self.a, "va")
        };
        let out = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", dev])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)?;
        let mut mac = [0u8; 6];
        let mut parts = hex.split(':');
        for m in &mut mac {
            *m = u8::from_str_radix(parts.next()?, 16).ok()?;
        }
        Some(mac)
    }

    /// Steers what side A sends by CPU (XPS): a datagram sent from CPU *i* leaves `va` on
    /// transmit queue *i*, so it arrives on `vb`'s receive queue *i*: what RSS or ntuple
    /// rules do on a NIC. False if it could not be set.
    pub fn steer_by_cpu(&self, queues: u32) -> bool {
        let script: String = (0..queues)
            .map(|i| {
                format!(
                    "printf %x {} > /sys/class/net/va/queues/tx-{i}/xps_cpus;",
                    1u64 << i
                )
            })
            .collect();
        Command::new("ip")
            .args(["netns", "exec", &self.a, "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Makes each side's neighbour entry for the other permanent, so no datagram waits
    /// for ARP: one that does is sent later from whichever CPU handles the reply, which
    /// defeats [`VethPair::steer_by_cpu`]. False if it could not be set.
    pub fn static_neighbours(&self) -> bool {
        let (Some(mac_a), Some(mac_b)) = (self.mac(false), self.mac(true)) else {
            return false;
        };
        let hex = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let set = |ns: &str, addr: Ipv4Addr, mac: [u8; 6], dev: &str| {
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &hex(mac),
                "dev",
                dev,
                "nud",
                "permanent",
            ])
        };
        set(&self.a, self.ip_b, mac_b, "va") && set(&self.b, self.ip_a, mac_a, "vb")
    }

    /// Whether an XDP program is attached to `vb`.
    pub fn xdp_attached(&self) -> bool {
        Command::new("ip")
            .args(["-n", &self.b, "link", "show", "vb"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("xdp"))
            .unwrap_or(false)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.a]);
        ip(&["netns", "del", &self.b]);
    }
}
