//! `prism-bench ice-tcp`: what ICE over TCP costs the server, against direct UDP, in one run.
//!
//! One `prism-forwarder` process (one core, `--tcp-port 0`, pinned to the SUT CPU with its
//! ICE-TCP front thread) serves two rooms. Each room has one plain-RTP publisher (UDP from
//! this process) and the same number of WebRTC subscribers, which this process completes
//! ICE and DTLS for (so they get SRTP, as browsers do): room A's over UDP, room B's over
//! ICE-TCP. Then, at each offered rate, the publisher of A and then of B sends for a fixed
//! time; the sinks count the datagrams (UDP) or RFC 4571 frames (TCP) that reach them, and
//! the forwarder's CPU time (all threads, and the core and front threads apart) is read
//! from `/proc` around each phase. The figures: delivered packets per second and the
//! forwarder's CPU microseconds per delivered packet, per path.

use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use hmac::{Hmac, KeyInit, Mac};
use pb::command::Body;
use prism_forwarder::control::socket::{ControlListen, SocketControlClient};
use prism_forwarder::dtls::{DtlsCert, DtlsEndpoint, DtlsEvent, DtlsRole, Fingerprint};
use prism_forwarder::tunnel::framing::{self, Deframer};
use prism_forwarder::wire::stun::{attr, Class, Method, StunMessage, StunWriter};
use prism_proto::control as pb;
use serde::Serialize;
use sha1::Sha1;

use crate::machine::Machine;
use crate::sut::proc;

const USAGE: &str = "\
prism-bench ice-tcp: the forwarder's cost per packet through ICE over TCP against UDP

OPTIONS:
    --subscribers N   WebRTC subscribers per path (default 20)
    --rates LIST      publisher packets per second, e.g. 500,2000 (default 500,1000,2000)
    --seconds S       sending time per rate and path (default 5)
    --payload N       RTP payload bytes (default 1000)
    --forwarder PATH  prism-forwarder binary (default: next to this binary)
    --gen-cpu N       pin this process to CPU N (default 0)
    --sut-cpu N       pin the forwarder to CPU N (default 1)
    --out DIR         results directory (default bench/results)
    --note TEXT       a note printed with the results
";

#[derive(Debug, Serialize)]
struct Phase {
    path: &'static str,
    offered_pps: u64,
    sent: u64,
    delivered: u64,
    expected: u64,
    delivered_pps: f64,
    delivered_mbps: f64,
    /// Packets the forwarder's core sent (to its socket, or to the front), and what the
    /// front dropped for a full write backlog.
    forwarder_out: u64,
    front_backlog_drops: u64,
    /// UDP datagrams the host dropped for full receive buffers (the sinks'), from
    /// /proc/net/snmp.
    host_udp_rcvbuf_errors: u64,
    sut_cpu_s: f64,
    core_cpu_s: f64,
    front_cpu_s: f64,
    /// Forwarder CPU per packet it sent.
    cpu_us_per_packet: f64,
}

#[derive(Debug, Serialize)]
struct Results {
    when_utc: String,
    machine: Machine,
    subscribers: usize,
    payload: usize,
    seconds: f64,
    note: String,
    phases: Vec<Phase>,
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

enum Link {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream, Box<Deframer>),
}

impl Link {
    fn send(&mut self, d: &[u8]) -> Result<()> {
        match self {
            Link::Udp(s, to) => {
                s.send_to(d, *to)?;
            }
            Link::Tcp(s, _) => {
                let mut f = Vec::with_capacity(d.len() + 2);
                framing::encode(d, &mut f);
                s.write_all(&f)?;
            }
        }
        Ok(())
    }

    /// The next datagram, blocking (sockets have a read timeout during setup).
    fn recv(&mut self) -> Result<Vec<u8>> {
        match self {
            Link::Udp(s, _) => {
                let mut b = vec![0u8; 2048];
                let n = s.recv(&mut b)?;
                b.truncate(n);
                Ok(b)
            }
            Link::Tcp(s, de) => loop {
                if let Some(f) = de.next_frame().map_err(|e| anyhow::anyhow!("{e:?}"))? {
                    return Ok(f.to_vec());
                }
                let n = s.read(de.spare())?;
                if n == 0 {
                    bail!("connection closed");
                }
                de.filled(n);
            },
        }
    }
}

/// One WebRTC subscriber: ICE check, DTLS client; then only counts what arrives.
struct Sub {
    link: Link,
    ufrag: String,
    server_ufrag: String,
    server_pwd: String,
}

impl Sub {
    fn check(&mut self) -> Result<()> {
        let mut buf = vec![0u8; 512];
        let mut w = StunWriter::new(&mut buf, Class::Request, Method::BINDING, &[9u8; 12])
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let user = format!("{}:{}", self.server_ufrag, self.ufrag);
        w.attr(attr::USERNAME, user.as_bytes())
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        w.attr(attr::ICE_CONTROLLING, &7u64.to_be_bytes())
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        w.attr(attr::USE_CANDIDATE, &[])
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let key = self.server_pwd.as_bytes().to_vec();
        let n = w
            .finish_with_integrity(&move |d: &[u8]| hmac_sha1(&key, d))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        buf.truncate(n);
        self.link.send(&buf)
    }

    fn connect(&mut self, fwd_fingerprint: &str, cert: &DtlsCert) -> Result<()> {
        self.check()?;
        loop {
            let r = self.link.recv()?;
            if StunMessage::new_checked(&r[..]).is_ok_and(|m| m.class() == Class::SuccessResponse) {
                break;
            }
        }
        let mut dtls = DtlsEndpoint::new(DtlsRole::Client, cert)?;
        dtls.set_remote_fingerprint(Fingerprint::parse(fwd_fingerprint)?)?;
        dtls.handle_timeout(Instant::now());
        loop {
            while let Some(d) = dtls.poll_transmit() {
                self.link.send(&d)?;
            }
            if dtls.is_connected() {
                return Ok(());
            }
            let d = self.link.recv()?;
            if (20..=63).contains(&d[0]) {
                dtls.handle_datagram(Instant::now(), &d)?;
            }
            while let Some(ev) = dtls.poll_event() {
                if let DtlsEvent::Connected { .. } = ev {}
            }
        }
    }
}

struct Control {
    client: SocketControlClient,
}

impl Control {
    /// (core packets out, front datagrams out, front write-backlog drops).
    fn counts(&mut self) -> Result<(u64, u64, u64)> {
        let pb::event::Body::Stats(s) = self.request(Body::GetStats(pb::GetStats {}))? else {
            bail!("GetStats answered otherwise");
        };
        let out = s
            .cores
            .iter()
            .filter_map(|c| c.counters.as_ref())
            .map(|c| c.packets_out)
            .sum();
        let (fo, fd) = s.fronts.iter().fold((0, 0), |(o, d), f| {
            let drops = f
                .drops
                .iter()
                .filter(|x| x.reason == "write_backlog")
                .map(|x| x.count)
                .sum::<u64>();
            (o + f.datagrams_out, d + drops)
        });
        Ok((out, fo, fd))
    }

    fn request(&mut self, body: Body) -> Result<pb::event::Body> {
        let ev = self.client.request(body, Duration::from_secs(10))?;
        match ev.body {
            Some(pb::event::Body::Error(e)) => bail!("forwarder refused: {}", e.message),
            Some(b) => Ok(b),
            None => bail!("empty answer"),
        }
    }
}

/// CPU seconds of the threads of `pid` whose name starts with `prefix`.
fn thread_cpu(pid: u32, prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let mut total = 0.0;
    for t in dir.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        total += ticks as f64 / 100.0;
    }
    total
}

/// `Udp: ... RcvbufErrors` of /proc/net/snmp.
fn udp_rcvbuf_errors() -> u64 {
    let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// Counts what reaches a set of sinks until `stop`.
fn count_sinks(
    links: Vec<Link>,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
) {
    let mut poll = mio::Poll::new().unwrap();
    let mut events = mio::Events::with_capacity(256);
    enum Sock {
        Udp(mio::net::UdpSocket),
        Tcp(mio::net::TcpStream, Box<Deframer>),
    }
    let mut socks: Vec<Sock> = Vec::new();
    for (i, l) in links.into_iter().enumerate() {
        let mut s = match l {
            Link::Udp(s, _) => {
                s.set_nonblocking(true).unwrap();
                Sock::Udp(mio::net::UdpSocket::from_std(s))
            }
            Link::Tcp(s, de) => {
                s.set_nonblocking(true).unwrap();
                Sock::Tcp(mio::net::TcpStream::from_std(s), de)
            }
        };
        let r = poll.registry();
        let _ = match &mut s {
            Sock::Udp(u) => r.register(u, mio::Token(i), mio::Interest::READABLE),
            Sock::Tcp(t, _) => r.register(t, mio::Token(i), mio::Interest::READABLE),
        };
        socks.push(s);
    }
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        if poll
            .poll(&mut events, Some(Duration::from_millis(50)))
            .is_err()
        {
            continue;
        }
        for ev in events.iter() {
            let Some(s) = socks.get_mut(ev.token().0) else {
                continue;
            };
            match s {
                Sock::Udp(u) => {
                    while let Ok(n) = u.recv(&mut buf) {
                        count.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                Sock::Tcp(t, de) => loop {
                    match t.read(de.spare()) {
                        Ok(0) => break,
                        Ok(n) => {
                            de.filled(n);
                            while let Ok(Some(f)) = de.next_frame() {
                                count.fetch_add(1, Ordering::Relaxed);
                                bytes.fetch_add(f.len() as u64, Ordering::Relaxed);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                },
            }
        }
    }
}

pub fn main(args: &[String]) -> Result<()> {
    let mut subs_n = 20usize;
    let mut rates: Vec<u64> = vec![500, 1000, 2000];
    let mut seconds = 5.0f64;
    let mut payload = 1000usize;
    let mut forwarder: Option<PathBuf> = None;
    let (mut gen_cpu, mut sut_cpu) = (0usize, 1usize);
    let mut out = PathBuf::from("bench/results");
    let mut note = String::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            "--subscribers" => subs_n = val()?.parse()?,
            "--rates" => {
                rates = val()?
                    .split(',')
                    .map(|r| r.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => seconds = val()?.parse()?,
            "--payload" => payload = val()?.parse()?,
            "--forwarder" => forwarder = Some(val()?.into()),
            "--gen-cpu" => gen_cpu = val()?.parse()?,
            "--sut-cpu" => sut_cpu = val()?.parse()?,
            "--out" => out = val()?.into(),
            "--note" => note = val()?.clone(),
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    let machine = Machine::probe();
    let _ = core_affinity::set_for_current(core_affinity::CoreId { id: gen_cpu });
    let forwarder = match forwarder {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("no binary directory")?
            .join("prism-forwarder"),
    };
    let tmp = std::env::temp_dir().join(format!("prism-bench-icetcp-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let control_path = tmp.join("control.sock");
    let log = tmp.join("forwarder.log");
    let fargs: Vec<String> = [
        "--control-unix",
        control_path.to_str().unwrap(),
        "--cores",
        "0",
        "--no-pin",
        "--tcp-port",
        "0",
        "--driver",
        "auto",
        "--log",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut child = proc::spawn_pinned(Some(sut_cpu), &forwarder, &fargs, &log)
        .with_context(|| format!("starting {}", forwarder.display()))?;
    let res = run(
        &mut child,
        &control_path,
        &log,
        subs_n,
        &rates,
        seconds,
        payload,
    );
    proc::stop(&mut child);
    let _ = std::fs::remove_dir_all(&tmp);
    let phases = res?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let when = utc(now);
    let results = Results {
        when_utc: when.clone(),
        machine,
        subscribers: subs_n,
        payload,
        seconds,
        note,
        phases,
    };
    std::fs::create_dir_all(&out)?;
    let stem = format!("ice-tcp-{}-{:02}", when.replace([' ', ':'], "-"), now % 60);
    std::fs::write(
        out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&results)?,
    )?;
    let md = markdown(&results);
    std::fs::write(out.join(format!("{stem}.md")), &md)?;
    print!("{md}");
    Ok(())
}

/// "YYYY-MM-DD HH:MM" in UTC.
fn utc(secs: u64) -> String {
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

fn tcp_port_from_log(log: &Path, wait: Duration) -> Result<u16> {
    let deadline = Instant::now() + wait;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(rest) = text.split("ICE-TCP Some(").nth(1) {
            let addr: SocketAddr = rest.split(')').next().unwrap_or("").parse()?;
            return Ok(addr.port());
        }
        if Instant::now() > deadline {
            bail!("the forwarder did not report its ICE-TCP port:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    child: &mut std::process::Child,
    control_path: &Path,
    log: &Path,
    subs_n: usize,
    rates: &[u64],
    seconds: f64,
    payload: usize,
) -> Result<Vec<Phase>> {
    let pid = child.id();
    let tcp_port = tcp_port_from_log(log, Duration::from_secs(10))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = loop {
        match SocketControlClient::connect(&ControlListen::Unix(control_path.into()), None) {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut ctl = Control { client };
    let cert = DtlsCert::generate()?;
    let mut phases = Vec::new();
    // Rooms 1 (UDP) and 2 (TCP), both on the forwarder's one core.
    let mut setups = Vec::new();
    for (room, tcp) in [(1u64, false), (2u64, true)] {
        let pb::event::Body::RoomCreated(rc) = ctl.request(Body::CreateRoom(pb::CreateRoom {
            room_id: room,
            pin_core: true,
            core: 0,
        }))?
        else {
            bail!("CreateRoom answered otherwise");
        };
        let udp_addr: SocketAddr = rc.local.parse()?;
        let tcp_addr = SocketAddr::new(udp_addr.ip(), tcp_port);
        let publisher = UdpSocket::bind("127.0.0.1:0")?;
        let pub_t = room * 1000;
        ctl.request(Body::CreatePlainTransport(pb::CreatePlainTransport {
            room_id: room,
            transport_id: pub_t,
            remote: publisher.local_addr()?.to_string(),
            comedia: false,
            srtp: None,
            relay: None,
        }))?;
        ctl.request(prism_forwarder::testing::cmd::opus_track(
            room,
            pub_t,
            room,
            0x1000 + room as u32,
        ))?;
        let mut links = Vec::new();
        for s in 0..subs_n {
            let t = pub_t + 1 + s as u64;
            let mut sub = Sub {
                link: if tcp {
                    let st = TcpStream::connect(tcp_addr)?;
                    st.set_nodelay(true)?;
                    st.set_read_timeout(Some(Duration::from_secs(10)))?;
                    Link::Tcp(st, Box::new(Deframer::new()))
                } else {
                    let u = UdpSocket::bind("127.0.0.1:0")?;
                    u.set_read_timeout(Some(Duration::from_secs(10)))?;
                    let _ = socket2::SockRef::from(&u).set_recv_buffer_size(4 << 20);
                    Link::Udp(u, udp_addr)
                },
                ufrag: format!("c{room}x{s}"),
                server_ufrag: format!("s{room}x{s}"),
                server_pwd: format!("server-password-{room}-{s}-0123456789"),
            };
            let b = ctl.request(Body::CreateWebrtcTransport(pb::CreateWebRtcTransport {
                room_id: room,
                transport_id: t,
                local_ufrag: sub.server_ufrag.clone(),
                local_pwd: sub.server_pwd.clone(),
                remote_ufrag: sub.ufrag.clone(),
                remote_pwd: "client-password-0123456789".into(),
                remote_fingerprint: cert.fingerprint().to_string(),
                dtls_client: false,
            }))?;
            let pb::event::Body::TransportCreated(tc) = b else {
                bail!("CreateWebrtcTransport answered otherwise");
            };
            sub.connect(&tc.fingerprint, &cert)
                .with_context(|| format!("subscriber {s} of room {room}"))?;
            ctl.request(prism_forwarder::testing::cmd::down_track(
                room,
                room,
                t,
                t,
                0x2000 + s as u32,
                111,
                0,
            ))?;
            links.push(sub);
        }
        setups.push((tcp, publisher, udp_addr, links));
    }
    for &rate in rates {
        for (tcp, publisher, udp_addr, subs) in &mut setups {
            // Refresh ICE consent before each phase (it lapses after 30 s of silence).
            for s in subs.iter_mut() {
                s.check()?;
            }
            std::thread::sleep(Duration::from_millis(200));
            let links: Vec<Link> = subs
                .iter_mut()
                .map(|s| match &s.link {
                    Link::Udp(u, to) => Ok(Link::Udp(u.try_clone()?, *to)),
                    Link::Tcp(t, _) => Ok(Link::Tcp(t.try_clone()?, Box::new(Deframer::new()))),
                })
                .collect::<Result<_>>()?;
            // Drain what is already queued (the consent answers) before counting.
            for l in subs.iter_mut() {
                drain_now(&mut l.link);
            }
            let stop = Arc::new(AtomicBool::new(false));
            let count = Arc::new(AtomicU64::new(0));
            let bytes = Arc::new(AtomicU64::new(0));
            let sink = {
                let (stop, count, bytes) = (stop.clone(), count.clone(), bytes.clone());
                std::thread::spawn(move || count_sinks(links, stop, count, bytes))
            };
            let room = if *tcp { 2u64 } else { 1u64 };
            let (out0, _, drops0) = ctl.counts()?;
            let rcvbuf0 = udp_rcvbuf_errors();
            let (cpu0, core0, front0) = (
                proc::cpu_seconds(pid).unwrap_or(0.0),
                thread_cpu(pid, "prism-core"),
                thread_cpu(pid, "prism-ice-tcp"),
            );
            let sent = send_for(publisher, *udp_addr, room, rate, seconds, payload)?;
            // Let the last packets arrive.
            std::thread::sleep(Duration::from_millis(300));
            let (cpu1, core1, front1) = (
                proc::cpu_seconds(pid).unwrap_or(0.0),
                thread_cpu(pid, "prism-core"),
                thread_cpu(pid, "prism-ice-tcp"),
            );
            let (out1, _, drops1) = ctl.counts()?;
            let rcvbuf1 = udp_rcvbuf_errors();
            stop.store(true, Ordering::Relaxed);
            let _ = sink.join();
            let forwarder_out = out1.saturating_sub(out0);
            let delivered = count.load(Ordering::Relaxed);
            let b = bytes.load(Ordering::Relaxed);
            let cpu = cpu1 - cpu0;
            let phase = Phase {
                path: if *tcp { "ice-tcp" } else { "udp" },
                offered_pps: rate,
                sent,
                delivered,
                expected: sent * subs.len() as u64,
                delivered_pps: delivered as f64 / seconds,
                delivered_mbps: b as f64 * 8.0 / seconds / 1e6,
                forwarder_out,
                front_backlog_drops: drops1.saturating_sub(drops0),
                host_udp_rcvbuf_errors: rcvbuf1.saturating_sub(rcvbuf0),
                sut_cpu_s: cpu,
                core_cpu_s: core1 - core0,
                front_cpu_s: front1 - front0,
                cpu_us_per_packet: if forwarder_out > 0 {
                    cpu * 1e6 / forwarder_out as f64
                } else {
                    0.0
                },
            };
            eprintln!("{phase:?}");
            phases.push(phase);
        }
    }
    let _ = child.try_wait();
    Ok(phases)
}

fn drain_now(l: &mut Link) {
    match l {
        Link::Udp(u, _) => {
            let _ = u.set_nonblocking(true);
            let mut b = [0u8; 2048];
            while u.recv(&mut b).is_ok() {}
            let _ = u.set_nonblocking(false);
        }
        Link::Tcp(t, de) => {
            let _ = t.set_nonblocking(true);
            while matches!(t.read(de.spare()), Ok(n) if n > 0) {}
            **de = Deframer::new();
            let _ = t.set_nonblocking(false);
        }
    }
}

/// Sends plain RTP (Opus payload type, `payload` bytes) at `rate` packets per second for
/// `seconds`, paced every millisecond. Returns the packets sent.
fn send_for(
    s: &UdpSocket,
    to: SocketAddr,
    room: u64,
    rate: u64,
    seconds: f64,
    payload: usize,
) -> Result<u64> {
    let ssrc = 0x1000 + room as u32;
    let mut pkt = vec![0u8; 12 + payload];
    pkt[0] = 0x80;
    pkt[1] = 111;
    pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
    let start = Instant::now();
    let total = (rate as f64 * seconds) as u64;
    let mut sent = 0u64;
    let mut seq = 0u16;
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            seq = seq.wrapping_add(1);
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            pkt[4..8].copy_from_slice(&(u32::from(seq) * 960).to_be_bytes());
            s.send_to(&pkt, to)?;
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(sent)
}

fn markdown(r: &Results) -> String {
    let m = &r.machine;
    let mut s = String::new();
    let _ = writeln!(s, "## ICE over TCP against UDP: {} UTC\n", r.when_utc);
    let _ = writeln!(
        s,
        "{} ({} CPUs), kernel {}, io_uring usable: {}, load average at start {}. One \
         `prism-forwarder` core and its ICE-TCP front thread pinned together to the SUT CPU; \
         this process (publisher and sinks) on another. {} SRTP subscribers per path (ICE and \
         DTLS done by the bench), one plain-RTP publisher of {}-byte payloads, {} s per rate \
         and path.\n",
        m.cpu_model,
        m.cpus,
        m.kernel,
        m.io_uring_usable,
        m.loadavg_at_start,
        r.subscribers,
        r.payload,
        r.seconds
    );
    if !r.note.is_empty() {
        let _ = writeln!(s, "Note: {}\n", r.note);
    }
    let _ = writeln!(
        s,
        "| offered pps | path | forwarder sent pps | delivered pps | of expected | Mbit/s delivered | forwarder CPU s (core + front) | CPU µs / packet sent | backlog drops | sink UDP buffer drops |"
    );
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in &r.phases {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {:.1} % | {:.1} | {:.2} ({:.2} + {:.2}) | {:.2} | {} | {} |",
            p.offered_pps,
            p.path,
            p.forwarder_out as f64 / r.seconds,
            p.delivered_pps,
            if p.expected > 0 {
                p.delivered as f64 * 100.0 / p.expected as f64
            } else {
                0.0
            },
            p.delivered_mbps,
            p.sut_cpu_s,
            p.core_cpu_s,
            p.front_cpu_s,
            p.cpu_us_per_packet,
            p.front_backlog_drops,
            p.host_udp_rcvbuf_errors
        );
    }
    let _ = writeln!(s);
    for rate in r
        .phases
        .iter()
        .map(|p| p.offered_pps)
        .collect::<std::collections::BTreeSet<_>>()
    {
        let get = |path| {
            r.phases
                .iter()
                .find(|p| p.offered_pps == rate && p.path == path)
        };
        if let (Some(u), Some(t)) = (get("udp"), get("ice-tcp")) {
            if u.cpu_us_per_packet > 0.0 {
                let _ = writeln!(
                    s,
                    "- {rate} pps in: ICE-TCP costs {:.2}× the forwarder CPU per packet sent of \
                     UDP ({:.2} against {:.2} µs).",
                    t.cpu_us_per_packet / u.cpu_us_per_packet,
                    t.cpu_us_per_packet,
                    u.cpu_us_per_packet
                );
            }
        }
    }
    s
}
