//! RTCP reports in virtual time.
//!
//! - Receiver reports tell a publisher what this hop lost: under a known loss pattern
//!   and a known arrival jitter, each RR's block has the exact cumulative loss, fraction
//!   lost over its interval, extended highest sequence number (across a wrap), the
//!   jitter, and LSR/DLSR from the publisher's last SR.
//! - Sender reports let a subscriber line audio up with video. The publisher's audio and
//!   video share one NTP clock; the subscriber's video switches simulcast layers (whose
//!   RTP clocks have unrelated bases) twice. Every SR a subscriber gets maps the last
//!   packet it received on that stream to the instant it was captured, within a
//!   millisecond, so both streams end up on the publisher's clock: in sync. No SR goes
//!   out before the publisher sent one, one follows each switch within a timer tick, and
//!   packet and octet counts are what the subscriber was sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use pb::command::Body;
use prism_forwarder::engine::{Engine, EngineConfig, TICK};
use prism_forwarder::ids::Ssrc;
use prism_forwarder::testing::cmd::{self, expect_ok};
use prism_forwarder::testing::{CollectEgress, SimulcastSource, Tag};
use prism_forwarder::wire::rtcp::{self, RtcpPacket, SenderInfo};
use prism_forwarder::wire::rtp::RtpPacket;
use prism_proto::control as pb;

const PUB: &str = "127.0.0.1:5000";
const SUB: &str = "127.0.0.1:6000";
const AUDIO_SSRC: u32 = 0xa0d1;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn opus(seq: u16, ts: u32, index: u64) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&AUDIO_SSRC.to_be_bytes());
    p.push(0xfc); // an Opus TOC byte
    p.extend_from_slice(&index.to_be_bytes());
    p
}

fn sender_report(ssrc: u32, ntp: u64, rtp: u32) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    let info = SenderInfo {
        ssrc: Ssrc(ssrc),
        ntp_timestamp: ntp,
        rtp_timestamp: rtp,
        packet_count: 0,
        octet_count: 0,
    };
    let n = rtcp::emit_sr(&mut b, &info, &[]).unwrap();
    b.truncate(n);
    b
}

#[test]
fn receiver_reports_carry_loss_jitter_and_sr_timing() {
    let t0 = Instant::now();
    let mut e = Engine::new(0, addr("127.0.0.1:7000"), EngineConfig::default());
    expect_ok(&mut e, t0, cmd::room(1));
    expect_ok(&mut e, t0, cmd::plain(1, 10, PUB));
    expect_ok(&mut e, t0, cmd::opus_track(1, 10, 100, AUDIO_SSRC));
    let mut eg = CollectEgress::default();
    e.handle_timeout(t0, &mut eg);

    // 250 packets, 20 ms apart, numbered across the 16-bit wrap; every 10th is lost.
    // Odd packets arrive 1 ms late: |D| is 48 ticks at 48 kHz each time.
    let first_seq = 65_400u16;
    let sr_ntp = 0xe000_0000_1234_5678u64;
    let mut received: Vec<(Instant, u64)> = Vec::new(); // (arrival, extended seq)
    let mut reports = Vec::new();
    let mut sr_at = None;
    for k in 0..250u64 {
        let sent = t0 + Duration::from_millis(20 * k + 5);
        let at = sent + Duration::from_millis(k % 2);
        if k == 120 {
            eg.feed(
                &mut e,
                sent,
                addr(PUB),
                &sender_report(AUDIO_SSRC, sr_ntp, 7),
            );
            sr_at = Some(sent);
        }
        if k % 10 != 9 {
            let seq = first_seq.wrapping_add(k as u16);
            eg.feed(&mut e, at, addr(PUB), &opus(seq, 960 * k as u32, k));
            received.push((at, 65_400 + k));
        }
        e.handle_timeout(at, &mut eg);
        for (to, d) in eg.take() {
            assert_eq!(to, addr(PUB));
            for p in rtcp::packets(&d).flatten() {
                if let RtcpPacket::ReceiverReport(rr) = p {
                    assert_eq!(rr.ssrc(), EngineConfig::default().rtcp_ssrc);
                    let blocks: Vec<_> = rr.report_blocks().map(|b| b.to_repr()).collect();
                    assert_eq!(blocks.len(), 1);
                    reports.push((at, blocks[0]));
                }
            }
        }
    }
    assert!(reports.len() >= 4, "one a second: {}", reports.len());
    let (mut prev_expected, mut prev_received) = (0u64, 0u64);
    for (at, b) in &reports {
        assert_eq!(b.ssrc, Ssrc(AUDIO_SSRC));
        let got: Vec<u64> = received
            .iter()
            .filter(|(t, _)| t <= at)
            .map(|(_, s)| *s)
            .collect();
        let highest = *got.iter().max().unwrap();
        let expected = highest - 65_400 + 1;
        let n = got.len() as u64;
        assert_eq!(b.cumulative_lost as u64, expected - n);
        assert_eq!(b.ext_highest_seq as u64, highest, "cycle count included");
        let (ei, ri) = (expected - prev_expected, n - prev_received);
        assert_eq!(u64::from(b.fraction_lost), (ei - ri) * 256 / ei);
        (prev_expected, prev_received) = (expected, n);
        match sr_at {
            Some(s) if s <= *at => {
                assert_eq!(b.lsr, (sr_ntp >> 16) as u32);
                let dlsr = (*at - s).as_secs_f64() * 65_536.0;
                assert!(
                    (f64::from(b.dlsr) - dlsr).abs() <= 1.0,
                    "{} vs {dlsr}",
                    b.dlsr
                );
            }
            _ => assert_eq!((b.lsr, b.dlsr), (0, 0)),
        }
    }
    let last = reports.last().unwrap().1;
    assert!(last.ext_highest_seq > 0xffff, "crossed the wrap: {last:?}");
    assert!((40..=48).contains(&last.jitter), "jitter {}", last.jitter);
    assert_eq!(
        e.transport_counters(10).unwrap().receiver_reports_sent,
        reports.len() as u64
    );
}

/// NTP 32.32 of `nanos` after the publisher's clock origin.
fn ntp_at(origin: u64, nanos: u64) -> u64 {
    origin + ((u128::from(nanos) << 32) / 1_000_000_000) as u64
}

/// Signed difference of two NTP times in milliseconds.
fn ntp_diff_ms(a: u64, b: u64) -> f64 {
    (a.wrapping_sub(b) as i64) as f64 / 4_294_967.296
}

#[derive(Clone, Copy, Debug)]
struct Sr {
    ntp: u64,
    rtp: u32,
    packets: u32,
    octets: u32,
}

#[test]
fn sender_reports_keep_audio_and_video_in_sync_across_switches() {
    const AUDIO_OUT: u32 = 0x5a;
    const VIDEO_OUT: u32 = 0x5b;
    const NTP0: u64 = 0xe100_0000_0000_0000;
    let t0 = Instant::now();
    let mut src = SimulcastSource::three_layers(0x300, 16);
    let video_ssrcs = src.ssrcs();
    let mut e = Engine::new(0, addr("127.0.0.1:7000"), EngineConfig::default());
    expect_ok(&mut e, t0, cmd::room(1));
    expect_ok(&mut e, t0, cmd::plain(1, 10, PUB));
    expect_ok(&mut e, t0, cmd::plain(1, 20, SUB));
    expect_ok(&mut e, t0, cmd::opus_track(1, 10, 100, AUDIO_SSRC));
    expect_ok(&mut e, t0, cmd::vp8_track(1, 10, 101, &video_ssrcs));
    expect_ok(
        &mut e,
        t0,
        cmd::down_track(1, 100, 200, 20, AUDIO_OUT, 111, 0),
    );
    expect_ok(
        &mut e,
        t0,
        cmd::down_track(1, 101, 201, 20, VIDEO_OUT, 96, 0),
    );
    let mut eg = CollectEgress::default();

    // Capture instants: video frame f at f/30 s, audio packet k at k × 20 ms. Packets
    // arrive 5 ms after capture. SRs every 0.5 s, the first at 0.6 s.
    let audio_ts0 = 0x7fff_0000u32;
    let frame_ns = |f: u64| f * 1_000_000_000 / 30;
    let plan = [(90u64, 2u32), (150, 1)];
    let (mut f, mut k) = (0u64, 0u64);
    let mut next_sr_ns = 600_000_000u64;
    let mut first_pub_sr: Option<Instant> = None;
    // Per output SSRC: last received (ts, capture ns), packets and payload octets so far.
    let mut last: HashMap<u32, (u32, u64)> = HashMap::new();
    let mut counts: HashMap<u32, (u32, u32)> = HashMap::new();
    let mut srs: Vec<(Instant, u32, Sr)> = Vec::new();
    let mut layer_changes: Vec<Instant> = Vec::new();
    let mut layer = None;
    let mut latest_sr: HashMap<u32, Sr> = HashMap::new();
    let mut checked = 0;
    // Each layer's RTP timestamp of frame 0 (captured at 0): its clock's base.
    let mut first_ts = [0u32; 3];
    while f < 240 {
        let (vid, aud) = (frame_ns(f), k * 20_000_000);
        let capture = vid.min(aud);
        let now = t0 + Duration::from_nanos(capture + 5_000_000);
        if capture >= next_sr_ns {
            // The publisher's SRs: each stream's RTP time of this instant.
            next_sr_ns += 500_000_000;
            let ntp = ntp_at(NTP0, capture);
            let rtp = audio_ts0.wrapping_add((capture * 48_000 / 1_000_000_000) as u32);
            eg.feed(&mut e, now, addr(PUB), &sender_report(AUDIO_SSRC, ntp, rtp));
            for (l, s) in video_ssrcs.iter().enumerate() {
                let rtp = first_ts[l].wrapping_add((capture * 90_000 / 1_000_000_000) as u32);
                eg.feed(&mut e, now, addr(PUB), &sender_report(s.0, ntp, rtp));
            }
            first_pub_sr.get_or_insert(now);
        } else if vid <= aud {
            if let Some(&(_, spatial)) = plan.iter().find(|(at, _)| *at == f) {
                let body = Body::SetPreferredLayer(pb::SetPreferredLayer {
                    room_id: 1,
                    down_track_id: 201,
                    spatial,
                    temporal: 2,
                });
                expect_ok(&mut e, now, body);
            }
            for (l, p) in src.next_frame() {
                if f == 0 {
                    first_ts[l] = RtpPacket::new_checked(&p[..]).unwrap().timestamp();
                }
                eg.feed(&mut e, now, addr(PUB), &p);
            }
            f += 1;
        } else {
            let seq = 1000u16.wrapping_add(k as u16);
            let ts = audio_ts0.wrapping_add(960 * k as u32);
            eg.feed(&mut e, now, addr(PUB), &opus(seq, ts, k));
            k += 1;
        }
        e.handle_timeout(now, &mut eg);
        for (to, d) in eg.take() {
            if to != addr(SUB) {
                continue;
            }
            if (192..=223).contains(&d[1]) {
                for p in rtcp::packets(&d).flatten() {
                    if let RtcpPacket::SenderReport(sr) = p {
                        let info = sr.sender_info();
                        let r = Sr {
                            ntp: info.ntp_timestamp,
                            rtp: info.rtp_timestamp,
                            packets: info.packet_count,
                            octets: info.octet_count,
                        };
                        srs.push((now, info.ssrc.0, r));
                        latest_sr.insert(info.ssrc.0, r);
                        // This SR maps the stream's last packet to its capture instant.
                        let (ts, cap) = last[&info.ssrc.0];
                        let rate = if info.ssrc.0 == AUDIO_OUT { 48.0 } else { 90.0 };
                        let ms = f64::from(ts.wrapping_sub(r.rtp) as i32) / rate;
                        let err = ntp_diff_ms(r.ntp, ntp_at(NTP0, cap)) + ms;
                        assert!(err.abs() < 1.0, "{:#x}: off by {err} ms", info.ssrc.0);
                        assert_eq!((r.packets, r.octets), counts[&info.ssrc.0]);
                        checked += 1;
                    }
                }
                continue;
            }
            let p = RtpPacket::new_checked(&d[..]).unwrap();
            let ssrc = p.ssrc().0;
            let cap = if ssrc == AUDIO_OUT {
                let index = u64::from_be_bytes(p.payload()[1..9].try_into().unwrap());
                index * 20_000_000
            } else {
                let tag = Tag::read(&d).unwrap();
                if layer != Some(tag.layer) {
                    layer = Some(tag.layer);
                    layer_changes.push(now);
                }
                frame_ns(tag.frame)
            };
            last.insert(ssrc, (p.timestamp(), cap));
            let c = counts.entry(ssrc).or_default();
            c.0 += 1;
            c.1 += p.payload().len() as u32;
        }
    }

    let first = first_pub_sr.unwrap();
    assert!(
        srs.iter().all(|(at, _, _)| *at >= first),
        "no SR before the publisher's"
    );
    assert_eq!(layer_changes.len(), 3, "started, then two switches");
    // The SR goes out on the first timer run after the switch: the timer runs every
    // TICK and this loop comes back at least every 20 ms.
    for at in &layer_changes[1..] {
        let next = srs
            .iter()
            .find(|(t, s, _)| t >= at && *s == VIDEO_OUT)
            .map(|(t, _, _)| *t)
            .expect("an SR after the switch");
        assert!(
            next - *at <= 2 * TICK,
            "SR {:?} after the switch",
            next - *at
        );
    }
    let audio_srs = srs.iter().filter(|(_, s, _)| *s == AUDIO_OUT).count();
    assert!(audio_srs >= 6, "about one a second: {audio_srs}");
    assert!(checked > 10);

    // In sync at the end: with the last SRs, the receiver dates the last audio and video
    // packets as they were captured, so their difference is the capture difference.
    let date = |ssrc: u32, rate: f64| {
        let (ts, cap) = last[&ssrc];
        let sr = latest_sr[&ssrc];
        let ms = f64::from(ts.wrapping_sub(sr.rtp) as i32) / rate;
        (ntp_diff_ms(sr.ntp, NTP0) + ms, cap as f64 / 1e6)
    };
    let (a, a_cap) = date(AUDIO_OUT, 48.0);
    let (v, v_cap) = date(VIDEO_OUT, 90.0);
    assert!(((a - v) - (a_cap - v_cap)).abs() < 1.0, "A/V skew");
    let c = e.transport_counters(20).unwrap();
    assert_eq!(c.sender_reports_sent, srs.len() as u64);
}
