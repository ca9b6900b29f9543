//! RTX (RFC 4588) in virtual time, both ways through the engine.
//!
//! - A subscriber that negotiated RTX gets its NACKs answered on its RTX SSRC and payload
//!   type, in a sequence space of its own that stays continuous (a NACK that cannot be
//!   answered uses no number), with the original sequence number (in the subscriber's
//!   numbering) ahead of the payload it was first sent. A subscriber without RTX still
//!   gets the packet byte for byte as first sent.
//! - A publisher's RTX packet for a lost packet is unwrapped into its layer: the
//!   subscriber gets the missing number with the missing payload, the forwarder stops
//!   NACKing it, and recovery is counted. Duplicates, truncated RTX and RTX under a
//!   payload type without `apt=` are dropped and counted, not forwarded.
//! - With RID simulcast the RTX SSRC is learnt from the repaired-rtp-stream-id extension.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pb::command::Body;
use prism_forwarder::engine::{DropReason, Engine, EngineConfig};
use prism_forwarder::ids::Ssrc;
use prism_forwarder::testing::cmd::{self, expect_ok};
use prism_forwarder::testing::{CollectEgress, SimulcastSource, Tag};
use prism_forwarder::wire::rtcp::{self, RtcpPacket};
use prism_forwarder::wire::rtp::RtpPacket;
use prism_proto::control as pb;

const PUB: &str = "127.0.0.1:5000";
const SUB_RTX: &str = "127.0.0.1:6000";
const SUB_PLAIN: &str = "127.0.0.1:6001";
const PUB_RTX_PT: u32 = 97;
const OUT_SSRC: u32 = 0xa0;
const OUT_RTX_SSRC: u32 = 0xa1;
const OUT_PT: u8 = 100;
const OUT_RTX_PT: u8 = 101;
const PLAIN_SSRC: u32 = 0xb0;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `cmd::vp8_track` with RTX: payload type 97 and an RTX SSRC per layer.
fn vp8_track_with_rtx(ssrcs: &[Ssrc], rtx: &[u32], repaired_rid_ext: u32) -> Body {
    match cmd::vp8_track(1, 10, 100, ssrcs) {
        Body::AddTrack(mut t) => {
            for (l, r) in t.layers.iter_mut().zip(rtx) {
                l.rtx_ssrc = *r;
            }
            t.rtx_payload_type = PUB_RTX_PT;
            t.repaired_rid_ext_id = repaired_rid_ext;
            Body::AddTrack(t)
        }
        _ => unreachable!(),
    }
}

/// Publisher on transport 10, subscribers on 20 (with RTX) and 30 (without), both on
/// spatial layer 1 of track 100.
fn setup(now: Instant, track: Body) -> Engine {
    let mut e = Engine::new(0, addr("127.0.0.1:7000"), EngineConfig::default());
    expect_ok(&mut e, now, cmd::room(1));
    expect_ok(&mut e, now, cmd::plain(1, 10, PUB));
    expect_ok(&mut e, now, cmd::plain(1, 20, SUB_RTX));
    expect_ok(&mut e, now, cmd::plain(1, 30, SUB_PLAIN));
    expect_ok(&mut e, now, track);
    let with_rtx = match cmd::down_track(1, 100, 200, 20, OUT_SSRC, OUT_PT.into(), 1) {
        Body::AddDownTrack(mut d) => {
            d.rtx_ssrc = OUT_RTX_SSRC;
            d.rtx_payload_type = OUT_RTX_PT.into();
            Body::AddDownTrack(d)
        }
        _ => unreachable!(),
    };
    expect_ok(&mut e, now, with_rtx);
    expect_ok(
        &mut e,
        now,
        cmd::down_track(1, 100, 201, 30, PLAIN_SSRC, OUT_PT.into(), 1),
    );
    e
}

fn nack(media: u32, lost: &[u16]) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    let n = rtcp::emit_nack(&mut b, Ssrc(0x5eed), Ssrc(media), lost).unwrap();
    b.truncate(n);
    b
}

/// The RTX form of `original` (a packet without padding): RFC 4588 §4, built by hand.
fn rtx_of(original: &[u8], ssrc: u32, pt: u8, seq: u16) -> Vec<u8> {
    let p = RtpPacket::new_checked(original).unwrap();
    let mut out = original[..p.header_len()].to_vec();
    out[1] = (out[1] & 0x80) | pt;
    out[2..4].copy_from_slice(&seq.to_be_bytes());
    out[8..12].copy_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(&p.sequence_number().to_be_bytes());
    out.extend_from_slice(p.payload());
    out
}

fn rtp(bytes: &[u8]) -> RtpPacket<&[u8]> {
    RtpPacket::new_checked(bytes).unwrap()
}

/// Sends `frames` frames of `src` (except packets `skip` rejects), running the timer
/// after each, and returns what went out.
fn run(
    e: &mut Engine,
    eg: &mut CollectEgress,
    src: &mut SimulcastSource,
    now: &mut Instant,
    frames: usize,
    skip: &mut dyn FnMut(u64, usize, &[u8]) -> bool,
    rewrite: &dyn Fn(u64, usize, Vec<u8>) -> Vec<u8>,
) -> Vec<(SocketAddr, Vec<u8>)> {
    for _ in 0..frames {
        let frame = src.frame();
        for (layer, p) in src.next_frame() {
            if skip(frame, layer, &p) {
                continue;
            }
            let p = rewrite(frame, layer, p);
            eg.feed(e, *now, addr(PUB), &p);
        }
        e.handle_timeout(*now, eg);
        *now += Duration::from_millis(33);
    }
    eg.take()
}

/// The RTP packets (not RTCP, RFC 5761 §4) sent to `to`.
fn media_to(out: &[(SocketAddr, Vec<u8>)], to: &str) -> Vec<Vec<u8>> {
    out.iter()
        .filter(|(a, d)| *a == addr(to) && !(192..=223).contains(&d[1]))
        .map(|(_, d)| d.clone())
        .collect()
}

#[test]
fn nacks_are_answered_with_rtx_in_a_continuous_sequence_space() {
    let t0 = Instant::now();
    let mut src = SimulcastSource::three_layers(0x100, 32);
    let mut e = setup(
        t0,
        vp8_track_with_rtx(&src.ssrcs(), &[0x200, 0x201, 0x202], 0),
    );
    let mut eg = CollectEgress::default();
    let mut now = t0;
    let out = run(
        &mut e,
        &mut eg,
        &mut src,
        &mut now,
        60,
        &mut |_, _, _| false,
        &|_, _, p| p,
    );
    let rtx_sub = media_to(&out, SUB_RTX);
    let plain_sub = media_to(&out, SUB_PLAIN);
    assert!(rtx_sub.len() > 100, "{}", rtx_sub.len());
    let by_seq = |list: &[Vec<u8>], seq: u16| {
        list.iter()
            .find(|d| rtp(d).sequence_number() == seq)
            .cloned()
            .unwrap()
    };
    let s = rtp(&rtx_sub[rtx_sub.len() - 30]).sequence_number();

    // One NACK for three packets: three RTX packets, numbered one after the other.
    let wanted = [s, s.wrapping_add(2), s.wrapping_add(5)];
    eg.feed(&mut e, now, addr(SUB_RTX), &nack(OUT_SSRC, &wanted));
    let answers = eg.take();
    assert_eq!(answers.len(), 3, "{answers:?}");
    let mut rtx_seqs = Vec::new();
    for ((to, d), &osn) in answers.iter().zip(&wanted) {
        assert_eq!(*to, addr(SUB_RTX));
        let p = rtp(d);
        let original = by_seq(&rtx_sub, osn);
        let o = rtp(&original);
        assert_eq!(p.ssrc(), Ssrc(OUT_RTX_SSRC));
        assert_eq!(p.payload_type().0, OUT_RTX_PT);
        assert_eq!(&p.payload()[..2], &osn.to_be_bytes(), "OSN first");
        assert_eq!(
            &p.payload()[2..],
            o.payload(),
            "then the payload as first sent"
        );
        assert_eq!(p.timestamp(), o.timestamp());
        assert_eq!(p.marker(), o.marker());
        rtx_seqs.push(p.sequence_number());
    }
    let r = rtx_seqs[0];
    assert_eq!(rtx_seqs, [r, r.wrapping_add(1), r.wrapping_add(2)]);

    // A NACK that cannot be answered uses no RTX number.
    eg.feed(
        &mut e,
        now,
        addr(SUB_RTX),
        &nack(OUT_SSRC, &[s.wrapping_sub(3000)]),
    );
    assert!(eg.take().is_empty());
    assert_eq!(
        e.transport_counters(20)
            .unwrap()
            .dropped(DropReason::NotInCache),
        1
    );
    eg.feed(
        &mut e,
        now,
        addr(SUB_RTX),
        &nack(OUT_SSRC, &[s.wrapping_add(1)]),
    );
    let next = eg.take();
    assert_eq!(next.len(), 1);
    assert_eq!(rtp(&next[0].1).sequence_number(), r.wrapping_add(3));
    assert_eq!(
        &rtp(&next[0].1).payload()[..2],
        &s.wrapping_add(1).to_be_bytes()
    );

    // Without RTX the packet is resent as it was first sent.
    let p = rtp(&plain_sub[plain_sub.len() - 30]).sequence_number();
    eg.feed(&mut e, now, addr(SUB_PLAIN), &nack(PLAIN_SSRC, &[p]));
    let resent = eg.take();
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].1, by_seq(&plain_sub, p));

    let c = e.transport_counters(20).unwrap();
    assert_eq!((c.retransmits_sent, c.rtx_sent), (4, 4));
    let c = e.transport_counters(30).unwrap();
    assert_eq!((c.retransmits_sent, c.rtx_sent), (1, 0));
    assert_eq!(e.counters.rtx_sent, 4);
}

/// The sequence numbers NACKed to the publisher in `out`, for media SSRC `media`.
fn nacked(out: &[(SocketAddr, Vec<u8>)], media: Ssrc) -> Vec<u16> {
    let mut seqs = Vec::new();
    for (to, d) in out {
        if *to != addr(PUB) {
            continue;
        }
        for p in rtcp::packets(d).flatten() {
            if let RtcpPacket::Nack(n) = p {
                if n.media_ssrc() == media {
                    seqs.extend(n.lost());
                }
            }
        }
    }
    seqs
}

#[test]
fn rtx_from_the_publisher_fills_the_gap_it_left() {
    let t0 = Instant::now();
    let mut src = SimulcastSource::three_layers(0x100, 32);
    let ssrcs = src.ssrcs();
    let mut e = setup(t0, vp8_track_with_rtx(&ssrcs, &[0x200, 0x201, 0x202], 0));
    let mut eg = CollectEgress::default();
    let mut now = t0;
    // Frame 35 on layer 1 (a delta frame, two packets): its first packet is lost.
    let mut lost = None;
    let out = run(
        &mut e,
        &mut eg,
        &mut src,
        &mut now,
        40,
        &mut |frame, layer, p| {
            let drop = frame == 35 && layer == 1 && lost.is_none();
            if drop {
                lost = Some(p.to_vec());
            }
            drop
        },
        &|_, _, p| p,
    );
    let lost = lost.unwrap();
    let lost_seq = rtp(&lost).sequence_number();
    let asked = nacked(&out, ssrcs[1]);
    assert!(!asked.is_empty(), "the forwarder asks for it");
    assert!(
        asked.iter().all(|&s| s == lost_seq),
        "{asked:?}, lost {lost_seq}"
    );
    let before = media_to(&out, SUB_RTX);
    let seqs: Vec<u16> = before.iter().map(|d| rtp(d).sequence_number()).collect();
    let gap = seqs
        .windows(2)
        .find(|w| w[1] != w[0].wrapping_add(1))
        .map(|w| w[0].wrapping_add(1))
        .expect("a gap where the packet was lost");

    // The publisher answers on its RTX stream.
    let answer = rtx_of(&lost, 0x201, PUB_RTX_PT as u8, 777);
    eg.feed(&mut e, now, addr(PUB), &answer);
    let got = eg.take();
    let to_rtx_sub = media_to(&got, SUB_RTX);
    assert_eq!(to_rtx_sub.len(), 1, "{got:?}");
    let p = rtp(&to_rtx_sub[0]);
    assert_eq!(p.sequence_number(), gap, "the missing number");
    assert_eq!(p.ssrc(), Ssrc(OUT_SSRC));
    assert_eq!(p.payload_type().0, OUT_PT);
    assert_eq!(
        Tag::read(&to_rtx_sub[0]),
        Tag::read(&lost),
        "the missing payload"
    );
    assert_eq!(media_to(&got, SUB_PLAIN).len(), 1);
    let c = e.transport_counters(10).unwrap();
    assert_eq!((c.rtx_received, c.rtx_recovered), (1, 1));

    // Repaired: not asked for again.
    let later = run(
        &mut e,
        &mut eg,
        &mut src,
        &mut now,
        10,
        &mut |_, _, _| false,
        &|_, _, p| p,
    );
    assert!(nacked(&later, ssrcs[1]).is_empty());

    // A second copy is a duplicate; a truncated one and one under a payload type with no
    // apt= are malformed; a padding-only probe is counted as padding. None reaches a
    // subscriber.
    let drops = |e: &Engine, r| e.transport_counters(10).unwrap().dropped(r);
    let duplicates = drops(&e, DropReason::Duplicate);
    eg.feed(&mut e, now, addr(PUB), &answer);
    let mut short = answer[..12].to_vec();
    short.push(0);
    eg.feed(&mut e, now, addr(PUB), &short);
    let mut wrong_pt = answer.clone();
    wrong_pt[1] = 98;
    eg.feed(&mut e, now, addr(PUB), &wrong_pt);
    // A bandwidth probe on the RTX stream: no payload, 4 bytes of padding.
    let mut probe = answer[..12].to_vec();
    probe[0] |= 0x20;
    probe[2..4].copy_from_slice(&778u16.to_be_bytes());
    probe.extend_from_slice(&[0, 0, 0, 4]);
    eg.feed(&mut e, now, addr(PUB), &probe);
    assert!(media_to(&eg.take(), SUB_RTX).is_empty());
    assert_eq!(drops(&e, DropReason::Duplicate), duplicates + 1);
    assert_eq!(drops(&e, DropReason::RtxTruncated), 1);
    assert_eq!(drops(&e, DropReason::RtxUnknownApt), 1);
    assert_eq!(drops(&e, DropReason::Padding), 1, "a probe, not bad input");
    assert_eq!(drops(&e, DropReason::BadPayload), 0);
    let c = e.transport_counters(10).unwrap();
    assert_eq!((c.rtx_received, c.rtx_recovered), (2, 1));
}

const MID_EXT: u8 = 4;
const RID_EXT: u8 = 10;
const RRID_EXT: u8 = 11;

/// `pkt` with a one-byte header extension block (RFC 8285) of `(id, value)` elements.
fn with_ext(pkt: &[u8], elements: &[(u8, &str)]) -> Vec<u8> {
    let mut ext = Vec::new();
    for (id, v) in elements {
        ext.push((id << 4) | (v.len() as u8 - 1));
        ext.extend_from_slice(v.as_bytes());
    }
    while ext.len() % 4 != 0 {
        ext.push(0);
    }
    let mut out = pkt[..12].to_vec();
    out[0] |= 0x10;
    out.extend_from_slice(&[0xbe, 0xde]);
    out.extend_from_slice(&((ext.len() / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ext);
    out.extend_from_slice(&pkt[12..]);
    out
}

#[test]
fn rtx_ssrc_of_a_rid_layer_is_learnt_from_repaired_rid() {
    let t0 = Instant::now();
    let mut src = SimulcastSource::three_layers(0x500, 32);
    let track = match vp8_track_with_rtx(&[Ssrc(0), Ssrc(0), Ssrc(0)], &[], u32::from(RRID_EXT)) {
        Body::AddTrack(mut t) => {
            for (l, r) in t.layers.iter_mut().zip(["q", "h", "f"]) {
                l.rid = r.into();
            }
            t.mid = "1".into();
            t.mid_ext_id = MID_EXT.into();
            t.rid_ext_id = RID_EXT.into();
            Body::AddTrack(t)
        }
        _ => unreachable!(),
    };
    let mut e = setup(t0, track);
    let mut eg = CollectEgress::default();
    let mut now = t0;
    let mut lost = None;
    // The first frame carries MID and RID (as browsers send until the SSRC is bound);
    // frame 10's first layer-1 packet is lost.
    let out = run(
        &mut e,
        &mut eg,
        &mut src,
        &mut now,
        12,
        &mut |frame, layer, p| {
            let drop = frame == 10 && layer == 1 && lost.is_none();
            if drop {
                lost = Some(p.to_vec());
            }
            drop
        },
        &|frame, layer, p| match frame {
            0 => with_ext(&p, &[(MID_EXT, "1"), (RID_EXT, ["q", "h", "f"][layer])]),
            _ => p,
        },
    );
    let lost = lost.unwrap();
    assert!(!media_to(&out, SUB_RTX).is_empty());

    // An RTX packet with a repaired RID but another MID binds nothing.
    let answer = rtx_of(&lost, 0xbeef, PUB_RTX_PT as u8, 1);
    let other_mid = with_ext(&answer, &[(MID_EXT, "0"), (RRID_EXT, "h")]);
    eg.feed(&mut e, now, addr(PUB), &other_mid);
    assert!(media_to(&eg.take(), SUB_RTX).is_empty());
    assert_eq!(
        e.transport_counters(10)
            .unwrap()
            .dropped(DropReason::UnknownSsrc),
        1
    );
    // With the track's MID it binds 0xbeef to layer h and repairs the loss.
    let named = with_ext(&answer, &[(MID_EXT, "1"), (RRID_EXT, "h")]);
    eg.feed(&mut e, now, addr(PUB), &named);
    let got = media_to(&eg.take(), SUB_RTX);
    assert_eq!(got.len(), 1);
    assert_eq!(Tag::read(&got[0]), Tag::read(&lost));
    // From then on the SSRC alone is enough (a duplicate now: dropped as such).
    eg.feed(&mut e, now, addr(PUB), &answer);
    let c = e.transport_counters(10).unwrap();
    assert_eq!((c.rtx_received, c.rtx_recovered), (2, 1));
    assert_eq!(c.dropped(DropReason::Duplicate), 1);
}
