//! `prism-bench turn`: what relaying through the embedded TURN server costs, against
//! direct UDP, in one run on one machine.
//!
//! The forwarder runs in this process (its core pinned to `--sut-cpu`), with the embedded
//! TURN server on loopback. One audio publisher fans out to N plain-RTP subscribers at a
//! fixed packet rate, twice: every endpoint on its own UDP socket talking to the core
//! directly, then every endpoint a TURN client (an allocation and a channel to the core,
//! ChannelData both ways). The generator and the sinks run on `--gen-cpu`. Per mode:
//! egress packets the sinks received, loss, and the CPU time of the forwarder's threads
//! (the core, and the TURN thread) per million egress packets, from
//! `/proc/self/task/*/stat`.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pb::command::Body;
use prism_forwarder::io::DriverKind;
use prism_forwarder::runtime::{Forwarder, ForwarderConfig};
use prism_forwarder::turn::front::FrontConfig;
use prism_forwarder::turn::server::TurnConfig;
use prism_forwarder::turn::{attr, creds, method};
use prism_forwarder::wire::stun::{Class, StunMessage, StunWriter};
use prism_proto::control as pb;

use crate::machine::Machine;

const SECRET: &[u8] = b"prism-bench turn secret";
const REALM: &str = "bench";
const SSRC: u32 = 0x5EED_0001;
const PT: u8 = 111;
const PAYLOAD: usize = 160;
const CHANNEL: u16 = 0x4000;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of one run.
#[derive(Clone, Debug)]
pub struct TurnBench {
    pub subscribers: usize,
    pub ingress_pps: u32,
    pub secs: u64,
    pub gen_cpu: usize,
    pub sut_cpu: usize,
}

/// The figures of one mode.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModeResult {
    pub mode: &'static str,
    pub sent: u64,
    pub expected_egress: u64,
    pub received: u64,
    pub loss_pct: f64,
    pub egress_kpps: f64,
    pub core_cpu_s: f64,
    pub turn_cpu_s: f64,
    pub cpu_s_per_m_egress: f64,
}

/// A client endpoint: a socket, and how its datagrams are wrapped.
struct Endpoint {
    sock: UdpSocket,
    /// Where it sends: the core, or the TURN server.
    to: SocketAddr,
    /// The address the core sees it as.
    seen_as: SocketAddr,
    turn: bool,
}

fn thread_cpu(prefix: &str) -> f64 {
    let mut ticks = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !stat[open + 1..close].starts_with(prefix) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ut: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
        let st: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        ticks += ut + st;
    }
    // The clock tick is 100 Hz on Linux unless the kernel was built otherwise.
    ticks as f64 / 100.0
}

fn ask(sock: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Result<Vec<u8>> {
    sock.send_to(msg, to)?;
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).context("no answer from TURN")?;
    Ok(buf[..n].to_vec())
}

fn request(
    meth: prism_forwarder::wire::stun::Method,
    tid: u8,
    auth: Option<(&str, &str, &[u8])>,
    body: impl FnOnce(&mut StunWriter<'_>) -> prism_forwarder::wire::Result<()>,
) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 1500];
    let mut w = StunWriter::new(&mut buf, Class::Request, meth, &[tid; 12])?;
    body(&mut w)?;
    let n = match auth {
        Some((user, pass, nonce)) => {
            w.attr(attr::USERNAME, user.as_bytes())?;
            w.attr(attr::REALM, REALM.as_bytes())?;
            w.attr(attr::NONCE, nonce)?;
            let key = creds::long_term_key(user.as_bytes(), REALM.as_bytes(), pass.as_bytes());
            w.finish_with_integrity(&|d: &[u8]| creds::hmac_sha1(&key, &[d]))?
        }
        None => w.finish()?,
    };
    buf.truncate(n);
    Ok(buf)
}

/// Allocates on `turn` and binds [`CHANNEL`] to `core`; returns the relayed address.
fn turn_client(
    sock: &UdpSocket,
    turn: SocketAddr,
    core: SocketAddr,
    who: usize,
) -> Result<SocketAddr> {
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3600;
    let (user, pass) = creds::rest_credentials(SECRET, &format!("bench-{who}"), expiry);
    let alloc = |w: &mut StunWriter<'_>| w.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
    let r = ask(sock, turn, &request(method::ALLOCATE, 1, None, alloc)?)?;
    let m = StunMessage::new_checked(&r[..])?;
    let nonce = m.attribute(attr::NONCE).context("no nonce")?.to_vec();
    let auth = Some((user.as_str(), pass.as_str(), &nonce[..]));
    let r = ask(sock, turn, &request(method::ALLOCATE, 2, auth, alloc)?)?;
    let m = StunMessage::new_checked(&r[..])?;
    if m.class() != Class::SuccessResponse {
        bail!("Allocate refused");
    }
    let relayed = prism_forwarder::wire::stun::decode_xor_address(
        m.attribute(attr::XOR_RELAYED_ADDRESS)
            .context("no relayed address")?,
        &m.transaction_id(),
    )
    .context("bad relayed address")?;
    let r = ask(
        sock,
        turn,
        &request(method::CHANNEL_BIND, 3, auth, |w| {
            w.attr(attr::CHANNEL_NUMBER, &[0x40, 0, 0, 0])?;
            w.xor_address(attr::XOR_PEER_ADDRESS, core)
        })?,
    )?;
    if StunMessage::new_checked(&r[..])?.class() != Class::SuccessResponse {
        bail!("ChannelBind refused");
    }
    Ok(relayed)
}

fn endpoints(n: usize, core: SocketAddr, turn: Option<SocketAddr>) -> Result<Vec<Endpoint>> {
    let mut out = Vec::new();
    for i in 0..n {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(4 << 20);
        sock.set_read_timeout(Some(TIMEOUT))?;
        let ep = match turn {
            Some(t) => {
                let seen_as = turn_client(&sock, t, core, i)?;
                Endpoint {
                    sock,
                    to: t,
                    seen_as,
                    turn: true,
                }
            }
            None => {
                let seen_as = sock.local_addr()?;
                Endpoint {
                    sock,
                    to: core,
                    seen_as,
                    turn: false,
                }
            }
        };
        out.push(ep);
    }
    Ok(out)
}

fn setup_room(
    fwd: &Forwarder,
    room: u64,
    publisher: SocketAddr,
    sinks: &[SocketAddr],
) -> Result<()> {
    let client = fwd.client();
    let mut bodies = vec![
        Body::CreateRoom(pb::CreateRoom {
            room_id: room,
            pin_core: true,
            core: 0,
        }),
        Body::CreatePlainTransport(pb::CreatePlainTransport {
            srtp: None,
            room_id: room,
            transport_id: 1,
            remote: publisher.to_string(),
            comedia: false,
            relay: None,
        }),
        Body::AddTrack(pb::AddTrack {
            room_id: room,
            transport_id: 1,
            track_id: 1,
            kind: pb::MediaKind::Audio as i32,
            codec: Some(pb::Codec {
                kind: pb::CodecKind::Opus as i32,
                payload_type: PT.into(),
                clock_rate: 48_000,
            }),
            layers: vec![pb::Layer {
                ssrc: SSRC,
                rid: String::new(),
                spatial: 0,
                rtx_ssrc: 0,
            }],
            ..Default::default()
        }),
    ];
    for (i, s) in sinks.iter().enumerate() {
        bodies.push(Body::CreatePlainTransport(pb::CreatePlainTransport {
            srtp: None,
            room_id: room,
            transport_id: 100 + i as u64,
            remote: s.to_string(),
            comedia: false,
            relay: None,
        }));
        bodies.push(Body::AddDownTrack(pb::AddDownTrack {
            room_id: room,
            track_id: 1,
            down_track_id: 1 + i as u64,
            transport_id: 100 + i as u64,
            ssrc: 0x0A00_0000 + i as u32,
            payload_type: PT.into(),
            ..Default::default()
        }));
    }
    for b in bodies {
        let ev = client.request(b, TIMEOUT)?;
        if let Some(pb::event::Body::Error(e)) = ev.body {
            bail!("forwarder refused a command: {}", e.message);
        }
    }
    Ok(())
}

fn pin(cpu: usize) {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
}

fn run_mode(fwd: &Forwarder, cfg: &TurnBench, room: u64, turn: bool) -> Result<ModeResult> {
    let core = fwd.core_addrs()[0];
    let turn_addr = if turn {
        fwd.turn().and_then(|t| t.udp_addr())
    } else {
        None
    };
    let publisher = endpoints(1, core, turn_addr)?.remove(0);
    let sinks = endpoints(cfg.subscribers, core, turn_addr)?;
    let sink_addrs: Vec<SocketAddr> = sinks.iter().map(|s| s.seen_as).collect();
    setup_room(fwd, room, publisher.seen_as, &sink_addrs)?;

    let total = cfg.ingress_pps as u64 * cfg.secs;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gen_cpu = cfg.gen_cpu;
    // Sinks: one thread, nonblocking sockets polled with mio.
    let sink_stop = stop.clone();
    let sink = std::thread::spawn(move || -> Result<u64> {
        pin(gen_cpu);
        let mut poll = mio::Poll::new()?;
        let mut socks = Vec::new();
        for (i, s) in sinks.into_iter().enumerate() {
            s.sock.set_nonblocking(true)?;
            let mut m = mio::net::UdpSocket::from_std(s.sock);
            poll.registry()
                .register(&mut m, mio::Token(i), mio::Interest::READABLE)?;
            socks.push(m);
        }
        let mut events = mio::Events::with_capacity(64);
        let mut buf = [0u8; 2048];
        let mut got = 0u64;
        let mut quiet_since: Option<Instant> = None;
        loop {
            poll.poll(&mut events, Some(Duration::from_millis(50)))?;
            let mut any = false;
            for ev in events.iter() {
                let Some(s) = socks.get(ev.token().0) else {
                    continue;
                };
                while let Ok(n) = s.recv(&mut buf) {
                    if n > 12 {
                        got += 1;
                        any = true;
                    }
                }
            }
            if sink_stop.load(std::sync::atomic::Ordering::Relaxed) {
                // After the generator stopped: wait for the queues to drain.
                let q = *quiet_since.get_or_insert_with(Instant::now);
                if any {
                    quiet_since = Some(Instant::now());
                } else if q.elapsed() > Duration::from_millis(300) {
                    return Ok(got);
                }
            }
        }
    });
    let cpu0 = (thread_cpu("prism-core"), thread_cpu("prism-turn"));
    let started = Instant::now();
    // Generator: paced in 1 ms slices.
    pin(cfg.gen_cpu);
    let mut pkt = vec![0u8; 4 + 12 + PAYLOAD];
    let mut sent = 0u64;
    while sent < total {
        let due = (started.elapsed().as_secs_f64() * cfg.ingress_pps as f64) as u64;
        while sent < due.min(total) {
            let seq = sent as u16;
            let ts = (sent as u32).wrapping_mul(960);
            let rtp = &mut pkt[4..];
            rtp[0] = 0x80;
            rtp[1] = PT;
            rtp[2..4].copy_from_slice(&seq.to_be_bytes());
            rtp[4..8].copy_from_slice(&ts.to_be_bytes());
            rtp[8..12].copy_from_slice(&SSRC.to_be_bytes());
            let r = if publisher.turn {
                pkt[0..2].copy_from_slice(&CHANNEL.to_be_bytes());
                pkt[2..4].copy_from_slice(&((12 + PAYLOAD) as u16).to_be_bytes());
                publisher.sock.send_to(&pkt, publisher.to)
            } else {
                publisher.sock.send_to(&pkt[4..], publisher.to)
            };
            if r.is_ok() {
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let received = sink
        .join()
        .map_err(|_| anyhow::anyhow!("sink panicked"))??;
    let cpu1 = (thread_cpu("prism-core"), thread_cpu("prism-turn"));
    let expected = sent * cfg.subscribers as u64;
    let (core_cpu, turn_cpu) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    let _ = fwd
        .client()
        .request(Body::CloseRoom(pb::CloseRoom { room_id: room }), TIMEOUT);
    Ok(ModeResult {
        mode: if turn {
            "embedded TURN (UDP, ChannelData)"
        } else {
            "direct UDP"
        },
        sent,
        expected_egress: expected,
        received,
        loss_pct: 100.0 * (expected.saturating_sub(received)) as f64 / expected.max(1) as f64,
        egress_kpps: received as f64 / elapsed / 1000.0,
        core_cpu_s: core_cpu,
        turn_cpu_s: turn_cpu,
        cpu_s_per_m_egress: (core_cpu + turn_cpu) / (received.max(1) as f64 / 1e6),
    })
}

/// Runs both modes and returns the results with the machine they ran on.
pub fn run(cfg: &TurnBench) -> Result<(Machine, Vec<ModeResult>)> {
    let machine = Machine::probe();
    let fwd = Forwarder::start(ForwarderConfig {
        cores: vec![cfg.sut_cpu],
        pin: true,
        driver: DriverKind::Auto,
        turn: Some(FrontConfig {
            udp: Some("127.0.0.1:0".parse()?),
            stream: None,
            relay_ip: "127.0.0.1".parse()?,
            relay_advertise_ip: None,
            relay_ports: None,
            peers: Vec::new(),
            peer_ips: Vec::new(),
            server: {
                let mut s = TurnConfig::new(REALM, SECRET, Vec::new());
                s.max_allocations_per_user = 4;
                s
            },
        }),
        ..Default::default()
    })?;
    let direct = run_mode(&fwd, cfg, 1, false)?;
    let turn = run_mode(&fwd, cfg, 2, true)?;
    fwd.shutdown();
    Ok((machine, vec![direct, turn]))
}

/// The results as a Markdown report.
pub fn markdown(cfg: &TurnBench, machine: &Machine, results: &[ModeResult], when: &str) -> String {
    let mut s = format!(
        "# Embedded TURN against direct UDP ({when})\n\n\
         `prism-bench turn --subscribers {} --pps {} --secs {}`: one Opus publisher fanned out \
         to {} plain-RTP subscribers ({}-byte RTP packets), first with every endpoint on UDP \
         straight to the core, then with every endpoint a TURN client of the embedded server \
         (ChannelData both ways, through the tunnel seam). Generator and sinks on CPU {}, the \
         forwarder's core on CPU {} (the TURN thread unpinned). CPU is the forwarder's \
         threads' user+system time from `/proc` (10 ms ticks).\n\n\
         Machine: `{}`, {} × {}, Linux {}. Load average at start: {}.\n\n\
         | mode | sent | egress expected | received | loss % | egress kpps | core CPU s | TURN CPU s | CPU s / M egress pkt |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        cfg.subscribers,
        cfg.ingress_pps,
        cfg.secs,
        cfg.subscribers,
        12 + PAYLOAD,
        cfg.gen_cpu,
        cfg.sut_cpu,
        machine.host,
        machine.cpus,
        machine.cpu_model,
        machine.kernel,
        machine.loadavg_at_start.trim(),
    );
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} |\n",
            r.mode,
            r.sent,
            r.expected_egress,
            r.received,
            r.loss_pct,
            r.egress_kpps,
            r.core_cpu_s,
            r.turn_cpu_s,
            r.cpu_s_per_m_egress
        ));
    }
    s
}
