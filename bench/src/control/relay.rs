//! Data relay: a room of participants, each with a publisher connection and a `_reliable`
//! channel, all sending at once; every message must reach everyone else, stamped with its
//! sender's identity.
//!
//! Each message is a LiveKit `DataPacket` (kind RELIABLE, a `user` payload) whose payload
//! is a [`Stamp`]: sender, sequence, and send time in nanoseconds since an epoch every
//! participant of this process shares, so delivery latency needs no clock sync.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use prism_proto::livekit as lk;
use prost::Message as _;
use tokio::sync::Barrier;

use super::measure::Measured;
use super::peer::{DataPeer, LocalPeer};
use super::sdp::{data_offer, parse_answer};
use super::session::Session;
use super::stats::Latencies;
use super::token::dev_token;
use crate::sut::proc;

/// How long a participant may take to join and open its channel.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// A receiver that has everything keeps running this long, so its last SACKs go out.
const LINGER: Duration = Duration::from_millis(300);

/// The payload of every bench message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u32,
    pub seq: u32,
    /// Nanoseconds since the shared epoch.
    pub sent_ns: u64,
}

impl Stamp {
    pub const LEN: usize = 16;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[..4].copy_from_slice(&self.sender.to_be_bytes());
        b[4..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..].copy_from_slice(&self.sent_ns.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Stamp> {
        let b: &[u8; Self::LEN] = b.try_into().ok()?;
        let word = |r: std::ops::Range<usize>| b[r].iter().fold(0u64, |a, x| a << 8 | *x as u64);
        Some(Stamp {
            sender: word(0..4) as u32,
            seq: word(4..8) as u32,
            sent_ns: word(8..16),
        })
    }
}

/// A reliable user `DataPacket` carrying `stamp`.
pub fn packet(stamp: Stamp) -> Vec<u8> {
    lk::DataPacket {
        kind: lk::data_packet::Kind::Reliable as i32,
        value: Some(lk::data_packet::Value::User(lk::UserPacket {
            payload: stamp.encode().to_vec(),
            ..Default::default()
        })),
        ..Default::default()
    }
    .encode_to_vec()
}

/// What one participant saw.
#[derive(Debug, Default)]
struct Received {
    delivered: u64,
    /// Relayed without the sender's identity stamped, or not ours at all.
    unstamped: u64,
    latency: Latencies,
    first_send: Option<Instant>,
    last_delivery: Option<Instant>,
}

/// Joins, offers and connects one participant.
async fn connect(http: SocketAddr, room: &str, i: usize) -> Result<(Session, DataPeer)> {
    let (mut session, _) = Session::join(http, &dev_token(room, &format!("{room}-p{i}"))).await?;
    let local = LocalPeer::new()?;
    let offer = data_offer(&local.offer, 1000 + i as u64);
    let (answer, _) = session.offer(offer, 1).await?;
    let answer = parse_answer(&answer).map_err(|e| anyhow!("{e}"))?;
    let mut peer = DataPeer::new(local, answer).await?;
    peer.connect(Instant::now() + CONNECT_TIMEOUT).await?;
    Ok((session, peer))
}

/// Sends `messages` at once, then receives until it has `expect` or the deadline passes.
async fn exchange(
    peer: &mut DataPeer,
    i: usize,
    messages: usize,
    expect: u64,
    epoch: Instant,
    timeout: Duration,
    done_receiving: impl FnOnce(),
) -> Result<Received> {
    let mut done_receiving = Some(done_receiving);
    let mut r = Received::default();
    let start = Instant::now();
    r.first_send = Some(start);
    for seq in 0..messages {
        let now = Instant::now();
        let stamp = Stamp {
            sender: i as u32,
            seq: seq as u32,
            sent_ns: now.saturating_duration_since(epoch).as_nanos() as u64,
        };
        peer.send(&packet(stamp))?;
    }
    let deadline = start + timeout;
    let mut done_at = None;
    loop {
        let until = done_at.map_or(deadline, |d: Instant| d + LINGER);
        peer.turn(until).await?;
        for (at, m) in peer.take_messages() {
            let dp = lk::DataPacket::decode(m.as_slice()).ok();
            let stamp = dp.as_ref().and_then(|dp| match &dp.value {
                Some(lk::data_packet::Value::User(u)) => Stamp::decode(&u.payload),
                _ => None,
            });
            let (Some(dp), Some(stamp)) = (dp, stamp) else {
                r.unstamped += 1;
                continue;
            };
            let expected_identity = format!("-p{}", stamp.sender);
            if !dp.participant_identity.ends_with(&expected_identity) {
                r.unstamped += 1;
            }
            r.delivered += 1;
            r.latency
                .record(at.saturating_duration_since(epoch + Duration::from_nanos(stamp.sent_ns)));
            r.last_delivery = Some(at);
        }
        let now = Instant::now();
        if done_at.is_none() && r.delivered >= expect {
            done_at = Some(now);
        }
        if done_at.is_some() || now >= until {
            if let Some(f) = done_receiving.take() {
                f();
            }
        }
        if now >= until {
            return Ok(r);
        }
    }
}

/// The whole scenario; `epoch` is shared by every participant of this process.
pub async fn relay(
    http: SocketAddr,
    server_pid: u32,
    tag: &str,
    participants: usize,
    messages: usize,
    timeout: Duration,
    epoch: Instant,
) -> Measured {
    let room = format!("{tag}-room");
    let barrier = Arc::new(Barrier::new(participants));
    let expect = ((participants - 1) * messages) as u64;
    // CPU seconds of this process and of the server when the barrier releases, to tell
    // whether the exchange was the server's limit or the load generator's.
    let cpu = move || {
        (
            proc::cpu_seconds(std::process::id()).unwrap_or(0.0),
            proc::cpu_seconds(server_pid).unwrap_or(0.0),
            Instant::now(),
        )
    };
    let released: Arc<Mutex<Option<(f64, f64, Instant)>>> = Arc::default();
    // … and when the last receiver has everything (before lingering and leaving).
    let finished: Arc<Mutex<Option<(f64, f64, Instant)>>> = Arc::default();
    let receiving = Arc::new(AtomicUsize::new(participants));
    let tasks: Vec<_> = (0..participants)
        .map(|i| {
            let (room, barrier, released) = (room.clone(), barrier.clone(), released.clone());
            let (finished, receiving) = (finished.clone(), receiving.clone());
            let done_receiving = move || {
                if receiving.fetch_sub(1, Ordering::AcqRel) == 1 {
                    if let Ok(mut f) = finished.lock() {
                        *f = Some(cpu());
                    }
                }
            };
            tokio::spawn(async move {
                let conn = connect(http, &room, i).await;
                let (session, mut peer) = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        barrier.wait().await;
                        done_receiving();
                        return Err(e.context(format!("participant {i}")));
                    }
                };
                // Keep the connection served while the others get ready.
                {
                    let all_ready = barrier.wait();
                    tokio::pin!(all_ready);
                    let far = Instant::now() + Duration::from_secs(3600);
                    loop {
                        tokio::select! {
                            w = &mut all_ready => {
                                if w.is_leader() {
                                    if let Ok(mut r) = released.lock() {
                                        *r = Some(cpu());
                                    }
                                }
                                break;
                            }
                            r = peer.turn(far) => r?,
                        }
                    }
                }
                let r = exchange(
                    &mut peer,
                    i,
                    messages,
                    expect,
                    epoch,
                    timeout,
                    done_receiving,
                )
                .await;
                session.leave().await;
                r
            })
        })
        .collect();
    let mut m = Measured::default();
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    let mut unstamped = 0;
    let mut connected = 0u64;
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => {
                connected += 1;
                m.events += r.delivered;
                unstamped += r.unstamped;
                m.latency.merge(&r.latency);
                first = match (first, r.first_send) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                last = last.max(r.last_delivery);
            }
            Ok(Err(e)) => m.fail(format!("{e:#}")),
            Err(e) => m.fail(format!("relay task: {e}")),
        }
    }
    if let (Some(f), Some(l)) = (first, last) {
        m.span = l.saturating_duration_since(f);
    }
    // Deliveries that should have happened among the participants that connected.
    let wanted = connected * connected.saturating_sub(1) * messages as u64;
    let missing = wanted.saturating_sub(m.events);
    if missing > 0 {
        m.failures += missing;
        m.errors
            .push(format!("{missing} of {wanted} deliveries missing"));
    }
    let at_release = released.lock().ok().and_then(|r| *r);
    let at_finish = finished.lock().ok().and_then(|r| *r);
    if let (Some((load0, server0, t0)), Some((load1, server1, t1))) = (at_release, at_finish) {
        let wall = t1.saturating_duration_since(t0).as_secs_f64();
        m.extra.insert("exchange_wall_s".into(), wall);
        m.extra.insert("exchange_load_cpu_s".into(), load1 - load0);
        m.extra
            .insert("exchange_server_cpu_s".into(), server1 - server0);
    }
    m.extra.insert("connected".into(), connected as f64);
    m.extra.insert("unstamped".into(), unstamped as f64);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_a_data_packet() {
        let s = Stamp {
            sender: 49,
            seq: 19,
            sent_ns: 0x0102_0304_0506_0708,
        };
        let dp = lk::DataPacket::decode(packet(s).as_slice()).unwrap();
        assert_eq!(dp.kind, lk::data_packet::Kind::Reliable as i32);
        let Some(lk::data_packet::Value::User(u)) = dp.value else {
            panic!("not a user packet")
        };
        assert_eq!(Stamp::decode(&u.payload), Some(s));
        assert_eq!(Stamp::decode(&u.payload[1..]), None);
    }
}
