//! Deterministic engine test of the send-side bandwidth estimate: a VP8 simulcast
//! publisher, one subscriber preferring the top layer behind a simulated bottleneck that
//! answers with transport-cc feedback every 100 ms, all in virtual time.
//!
//! - ample link: the subscriber stays on the top layer;
//! - the link drops below the top layer's bitrate: queueing delay grows, the estimate
//!   drops, and the subscriber moves down, at a keyframe of the lower layer;
//! - the link recovers: the subscriber goes back up, once, without flapping;
//! - heavy loss on an ample link: the loss-based part brings it down again.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prism_forwarder::codec::vp8;
use prism_forwarder::engine::{Engine, EngineConfig};
use prism_forwarder::ids::Ssrc;
use prism_forwarder::testing::cmd::{self, expect_ok};
use prism_forwarder::testing::{CollectEgress, SimulcastSource, Tag};
use prism_forwarder::wire::rtcp::TwccRepr;
use prism_forwarder::wire::rtp::RtpPacket;
use prism_proto::control as pb;

const PUB: &str = "127.0.0.1:5000";
const SUB: &str = "127.0.0.1:6000";
const TCC_ID: u8 = 3;
const FRAME: Duration = Duration::from_micros(33_333);

/// A FIFO bottleneck with a fixed propagation delay, tail drop past 400 ms of queue,
/// and optional random-looking loss (every `lose_every`-th packet).
struct Link {
    bps: u64,
    lose_every: Option<u64>,
    free_at: Instant,
    count: u64,
    /// Transport-wide number → arrival time (None: lost), not yet reported.
    pending: BTreeMap<u64, Option<Instant>>,
    unwrap_last: Option<u64>,
}

impl Link {
    fn new(t0: Instant) -> Self {
        Self {
            bps: 10_000_000,
            lose_every: None,
            free_at: t0,
            count: 0,
            pending: BTreeMap::new(),
            unwrap_last: None,
        }
    }

    fn unwrap(&mut self, seq: u16) -> u64 {
        let ext = match self.unwrap_last {
            None => 1 << 16 | u64::from(seq),
            Some(l) => l.saturating_add_signed(i64::from(seq.wrapping_sub(l as u16) as i16)),
        };
        self.unwrap_last = Some(self.unwrap_last.map_or(ext, |l| l.max(ext)));
        ext
    }

    fn send(&mut self, now: Instant, tseq: u16, size: usize) {
        self.count += 1;
        let ext = self.unwrap(tseq);
        let start = self.free_at.max(now);
        let lost = self.lose_every.is_some_and(|k| self.count % k == 0)
            || start.duration_since(now) > Duration::from_millis(400);
        if lost {
            self.pending.insert(ext, None);
            return;
        }
        let done = start + Duration::from_nanos(size as u64 * 8 * 1_000_000_000 / self.bps);
        self.free_at = done;
        self.pending
            .insert(ext, Some(done + Duration::from_millis(20)));
    }

    /// Feedback for everything that arrived (or was lost before something that arrived)
    /// by `now`, as the receiver would send it.
    fn feedback(&mut self, now: Instant, t0: Instant) -> Option<Vec<u8>> {
        let last_arrived = self
            .pending
            .iter()
            .filter(|(_, a)| a.is_some_and(|a| a <= now))
            .map(|(s, _)| *s)
            .next_back()?;
        let reported: Vec<(u64, Option<Instant>)> = self
            .pending
            .range(..=last_arrived)
            .map(|(s, a)| (*s, a.filter(|a| *a <= now)))
            .collect();
        for (s, _) in &reported {
            self.pending.remove(s);
        }
        let first_at = reported.iter().find_map(|(_, a)| *a)?;
        let first_us = first_at.duration_since(t0).as_micros() as i64;
        let reference = first_us / 64_000;
        let mut prev = reference * 64_000;
        let mut packets = vec![];
        for (s, a) in reported {
            let d = a.map(|a| {
                let us = a.duration_since(t0).as_micros() as i64;
                let d = us - prev;
                prev = us;
                d as i32
            });
            packets.push((s as u16, d));
        }
        let repr =
            TwccRepr::from_packets(Ssrc(77), Ssrc(0xfeed), reference as i32, 0, &packets).ok()?;
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut buf).ok()?;
        Some(buf)
    }
}

struct Run {
    /// (virtual time, layer of each forwarded packet, whether it started a keyframe).
    forwarded: Vec<(Duration, u8, bool)>,
    estimates: Vec<(Duration, u64)>,
}

fn run(phases: &[(Duration, u64, Option<u64>)]) -> Run {
    let t0 = Instant::now();
    let mut src = SimulcastSource::three_layers(0x1000, 30);
    let mut e = Engine::new(
        0,
        "127.0.0.1:7000".parse().unwrap(),
        EngineConfig::default(),
    );
    expect_ok(&mut e, t0, cmd::room(1));
    expect_ok(&mut e, t0, cmd::plain(1, 10, PUB));
    expect_ok(&mut e, t0, cmd::plain(1, 20, SUB));
    let ids = pb::RtpHeaderExtensions {
        transport_cc: u32::from(TCC_ID),
        ..Default::default()
    };
    expect_ok(&mut e, t0, cmd::header_extensions(1, 20, ids, false));
    expect_ok(&mut e, t0, cmd::vp8_track(1, 10, 100, &src.ssrcs()));
    expect_ok(&mut e, t0, cmd::down_track(1, 100, 200, 20, 0xfeed, 96, 2));
    let publisher: SocketAddr = PUB.parse().unwrap();
    let subscriber: SocketAddr = SUB.parse().unwrap();
    let ssrcs = src.ssrcs();
    let mut eg = CollectEgress::default();
    let mut link = Link::new(t0);
    let mut out = Run {
        forwarded: vec![],
        estimates: vec![],
    };
    let mut now = t0;
    let mut next_fb = t0 + Duration::from_millis(100);
    let end: Duration = phases.iter().map(|p| p.0).sum();
    while now.duration_since(t0) < end {
        let elapsed = now.duration_since(t0);
        let mut acc = Duration::ZERO;
        for &(len, bps, loss) in phases {
            acc += len;
            if elapsed < acc {
                link.bps = bps;
                link.lose_every = loss;
                break;
            }
        }
        for (_, pkt) in src.next_frame() {
            eg.begin(&pkt);
            let mut buf = pkt.clone();
            e.handle_datagram(now, publisher, &mut buf, &mut eg);
        }
        e.handle_timeout(now, &mut eg);
        for (to, bytes) in eg.take() {
            if to == publisher {
                let media = u32::from_be_bytes(bytes[8..12].try_into().unwrap());
                if let Some(l) = ssrcs.iter().position(|s| s.0 == media) {
                    src.request_keyframe(l);
                }
                continue;
            }
            assert_eq!(to, subscriber);
            let p = RtpPacket::new_checked(&bytes[..]).unwrap();
            let t = p.extension(TCC_ID).expect("transport-wide number");
            link.send(now, u16::from_be_bytes([t[0], t[1]]), bytes.len());
            let tag = Tag::read(&bytes).unwrap();
            let key = vp8::is_keyframe(p.payload()) && tag.index == 0;
            out.forwarded.push((elapsed, tag.layer, key));
        }
        // The subscriber's feedback, every 100 ms.
        while next_fb <= now {
            if let Some(mut fb) = link.feedback(next_fb, t0) {
                e.handle_datagram(now, subscriber, &mut fb, &mut eg);
            }
            next_fb += Duration::from_millis(100);
        }
        let stats = e.stats(now);
        if let Some(b) = stats
            .transports
            .iter()
            .find(|t| t.transport_id == 20)
            .and_then(|t| t.bandwidth.as_ref())
        {
            if b.estimate_bps > 0 {
                out.estimates.push((elapsed, b.estimate_bps));
            }
        }
        now += FRAME;
    }
    out
}

/// The layer forwarded last before `at`.
fn layer_at(r: &Run, at: Duration) -> u8 {
    r.forwarded
        .iter()
        .rev()
        .find(|(t, ..)| *t < at)
        .map(|f| f.1)
        .unwrap()
}

/// Every layer change, as (time, new layer); each must start with a keyframe.
fn switches(r: &Run) -> Vec<(Duration, u8)> {
    let mut out = vec![];
    let mut cur = None;
    for &(t, layer, key) in &r.forwarded {
        if cur.is_some() && cur != Some(layer) {
            assert!(
                key,
                "switch to layer {layer} at {t:?} starts with a keyframe"
            );
            out.push((t, layer));
        }
        cur = Some(layer);
    }
    out
}

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

#[test]
fn estimate_moves_the_layer_down_on_delay_and_back_up_without_flapping() {
    // Layer bitrates are about 0.3, 0.62 and 1.24 Mbps (keyframes every second).
    let r = run(&[
        (s(10), 10_000_000, None),
        (s(12), 1_000_000, None),
        (s(40), 10_000_000, None),
    ]);
    assert_eq!(layer_at(&r, s(10)), 2, "ample: top layer");
    assert!(r
        .estimates
        .iter()
        .any(|(t, e)| *t < s(10) && *e > 1_500_000));
    let sw = switches(&r);
    let down = sw.iter().find(|(t, l)| *t >= s(10) && *l < 2).copied();
    let (down_at, down_to) = down.expect("moved down when the link dropped");
    assert!(
        down_at < s(14),
        "within a few seconds of the drop: {down_at:?}"
    );
    assert_eq!(down_to, 1, "to the layer that fits");
    let min_est = r
        .estimates
        .iter()
        .filter(|(t, _)| *t >= s(10) && *t < s(22))
        .map(|e| e.1)
        .min()
        .unwrap();
    assert!(
        min_est < 1_000_000,
        "estimate below the bottleneck: {min_est}"
    );
    assert_eq!(
        layer_at(&r, s(22)),
        1,
        "stays down while the link is narrow"
    );
    assert_eq!(layer_at(&r, s(62)), 2, "recovers to the top layer");
    let after: Vec<_> = sw.iter().filter(|(t, _)| *t >= s(22)).collect();
    assert_eq!(after.len(), 1, "one switch back up, no flapping: {sw:?}");
    let unique: HashSet<u8> = r.forwarded.iter().map(|f| f.1).collect();
    assert!(!unique.contains(&0), "never lower than needed: {sw:?}");
}

#[test]
fn heavy_loss_moves_the_layer_down() {
    let r = run(&[(s(8), 10_000_000, None), (s(10), 10_000_000, Some(5))]);
    assert_eq!(layer_at(&r, s(8)), 2);
    assert!(layer_at(&r, s(18)) < 2, "switches: {:?}", switches(&r));
}
