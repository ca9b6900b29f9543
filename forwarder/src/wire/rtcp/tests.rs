//! Compound-packet tests and property tests across every RTCP view.

use super::*;
use crate::ids::Ssrc;
use proptest::collection::vec;
use proptest::prelude::*;
use std::collections::BTreeSet;

fn emit_vec(len: usize, f: impl FnOnce(&mut [u8]) -> Result<usize>) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let n = f(&mut out).unwrap();
    assert_eq!(n, len);
    out
}

fn sr_repr() -> SenderReportRepr {
    SenderReportRepr {
        info: SenderInfo {
            ssrc: Ssrc(0x1111),
            ntp_timestamp: 0xe84c_2a10_0000_0001,
            rtp_timestamp: 90_000,
            packet_count: 10,
            octet_count: 12_000,
        },
        reports: vec![],
    }
}

#[test]
fn walks_sr_plus_sdes() {
    let sr = sr_repr();
    let sdes = SdesRepr::cname(Ssrc(0x1111), b"{a1b2c3}");
    let mut buf = emit_vec(sr.buffer_len(), |b| sr.emit(b));
    buf.extend(emit_vec(sdes.buffer_len(), |b| sdes.emit(b)));
    let mut it = packets(&buf);
    match it.next() {
        Some(Ok(RtcpPacket::SenderReport(s))) => assert_eq!(SenderReportRepr::parse(&s), sr),
        other => panic!("{other:?}"),
    }
    match it.next() {
        Some(Ok(RtcpPacket::Sdes(s))) => {
            let chunk = s.chunks().next().unwrap();
            assert_eq!(chunk.cname(), Some(&b"{a1b2c3}"[..]));
        }
        other => panic!("{other:?}"),
    }
    assert!(it.next().is_none());
    assert!(Compound::new_checked(&buf[..]).is_ok());
}

#[test]
fn walks_rr_plus_remb_plus_unknown() {
    let rr = ReceiverReportRepr {
        ssrc: Ssrc(1),
        reports: vec![ReportBlockRepr {
            ssrc: Ssrc(2),
            fraction_lost: 3,
            cumulative_lost: 4,
            ext_highest_seq: 5,
            jitter: 6,
            lsr: 7,
            dlsr: 8,
        }],
    };
    let remb = RembRepr {
        sender_ssrc: Ssrc(1),
        bitrate_bps: 1_500_000,
        ssrcs: vec![Ssrc(2), Ssrc(3)],
    };
    let mut buf = emit_vec(rr.buffer_len(), |b| rr.emit(b));
    buf.extend(emit_vec(remb.buffer_len(), |b| remb.emit(b)));
    // An APP packet and an XR packet are passed through as `Other`.
    buf.extend([0x80 | 3, PT_APP, 0, 2, 0, 0, 0, 1, b'n', b'a', b'm', b'e']);
    buf.extend([0x80, 207, 0, 1, 0, 0, 0, 1]);
    let got: Vec<_> = packets(&buf).collect::<Result<_>>().unwrap();
    assert_eq!(got.len(), 4);
    match &got[0] {
        RtcpPacket::ReceiverReport(r) => assert_eq!(ReceiverReportRepr::parse(r), rr),
        other => panic!("{other:?}"),
    }
    match &got[1] {
        RtcpPacket::Remb(r) => {
            assert_eq!(r.bitrate_bps(), 1_500_000);
            assert_eq!(r.ssrcs().count(), 2);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        got[2],
        RtcpPacket::Other {
            pt: PT_APP,
            fmt: 3,
            ..
        }
    ));
    assert!(matches!(got[3], RtcpPacket::Other { pt: 207, .. }));
    assert_eq!(got[3].pt(), 207);
}

#[test]
fn padding_before_the_last_packet_ends_the_walk() {
    // PLI, then a PLI followed by one word of padding.
    let mut buf = [0u8; 28];
    emit_pli(&mut buf[..12], Ssrc(1), Ssrc(2)).unwrap();
    emit_pli(&mut buf[12..], Ssrc(1), Ssrc(3)).unwrap();
    buf[15] = 3;
    buf[12] |= 0x20;
    buf[27] = 4;
    let got: Vec<_> = packets(&buf).collect();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|p| p.is_ok()));
    assert!(Compound::new_checked(&buf[..]).is_ok());
    // A zero padding count is malformed.
    buf[27] = 0;
    let last = packets(&buf).nth(1).unwrap();
    assert_eq!(last.err(), Some(Error::BadPadding));
    // Padding on the first packet ends the walk.
    buf[0] |= 0x20;
    let got: Vec<_> = packets(&buf).collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].as_ref().err(), Some(&Error::BadPadding));
    assert_eq!(
        Compound::new_checked(&buf[..]).err(),
        Some(Error::BadPadding)
    );
}

#[test]
fn framing_errors_stop_and_body_errors_do_not() {
    // A NACK with no room for its SSRCs (body error), then a valid PLI.
    let mut buf = vec![0x81, PT_RTPFB, 0, 1, 0, 0, 0, 1];
    let mut pli = [0u8; 12];
    emit_pli(&mut pli, Ssrc(1), Ssrc(2)).unwrap();
    buf.extend(pli);
    let got: Vec<_> = packets(&buf).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].as_ref().err(), Some(&Error::BadLength));
    assert!(matches!(got[1], Ok(RtcpPacket::Pli(_))));
    // Bad version, and a length past the end, both end the walk after one error.
    let mut v1 = pli;
    v1[0] = 0x41;
    let errs = |b: &[u8]| packets(b).map(|p| p.err()).collect::<Vec<_>>();
    assert_eq!(errs(&v1), vec![Some(Error::BadVersion)]);
    let mut long = pli;
    long[3] = 3;
    assert_eq!(errs(&long), vec![Some(Error::Truncated)]);
    assert_eq!(packets(&[0x80, 200]).count(), 1);
    assert_eq!(packets(&[]).count(), 0);
    assert_eq!(Compound::new_checked(&[][..]).err(), Some(Error::Truncated));
}

#[test]
fn mutable_walk_rewrites_feedback_ssrcs() {
    let mut buf = vec![0u8; 12 + 16 + 20];
    emit_pli(&mut buf[..12], Ssrc(1), Ssrc(2)).unwrap();
    emit_nack(&mut buf[12..28], Ssrc(1), Ssrc(2), &[7, 9]).unwrap();
    emit_fir(&mut buf[28..], Ssrc(1), Ssrc(2), 3).unwrap();
    for pkt in packets_mut(&mut buf) {
        match pkt.unwrap() {
            RtcpPacket::Pli(mut p) => p.set_media_ssrc(Ssrc(20)),
            RtcpPacket::Nack(mut n) => {
                n.set_media_ssrc(Ssrc(20));
                n.set_sender_ssrc(Ssrc(10));
            }
            RtcpPacket::Fir(mut f) => f.set_entry_ssrc(0, Ssrc(20)).unwrap(),
            other => panic!("{other:?}"),
        }
    }
    let mut seen = 0;
    for pkt in packets(&buf) {
        match pkt.unwrap() {
            RtcpPacket::Pli(p) => assert_eq!(p.media_ssrc(), Ssrc(20)),
            RtcpPacket::Nack(n) => {
                assert_eq!((n.sender_ssrc(), n.media_ssrc()), (Ssrc(10), Ssrc(20)));
                assert_eq!(n.lost().collect::<Vec<_>>(), vec![7, 9]);
            }
            RtcpPacket::Fir(f) => assert_eq!(f.entries().next().unwrap().ssrc, Ssrc(20)),
            other => panic!("{other:?}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 3);
}

/// Touches every accessor and iterator of a view; returns a checksum so nothing is elided.
fn visit(pkt: &RtcpPacket<&[u8]>) -> u64 {
    let mut acc = u64::from(pkt.pt());
    match pkt {
        RtcpPacket::SenderReport(s) => {
            acc ^= s.ntp_timestamp() ^ u64::from(s.sender_info().octet_count);
            for b in s.report_blocks() {
                acc ^= u64::from(b.to_repr().dlsr);
            }
        }
        RtcpPacket::ReceiverReport(r) => {
            acc ^= u64::from(r.ssrc().0);
            for b in r.report_blocks() {
                acc ^= b.cumulative_lost() as u64 ^ u64::from(b.fraction_lost());
            }
        }
        RtcpPacket::Sdes(s) => {
            for c in s.chunks() {
                acc ^= u64::from(c.ssrc().0) ^ c.cname().map_or(0, |v| v.len() as u64);
                for i in c.items() {
                    acc ^= u64::from(i.kind) ^ i.value.len() as u64;
                }
            }
        }
        RtcpPacket::Bye(b) => {
            acc ^= b.ssrcs().map(|s| u64::from(s.0)).sum::<u64>();
            acc ^= b.reason().map_or(0, |r| r.len() as u64);
        }
        RtcpPacket::Nack(n) => {
            acc ^= u64::from(n.media_ssrc().0) ^ u64::from(n.sender_ssrc().0);
            acc ^= n.pairs().count() as u64;
            acc ^= n.lost().map(u64::from).sum::<u64>();
        }
        RtcpPacket::Twcc(t) => {
            acc ^= u64::from(t.base_seq()) ^ t.reference_time_us() as u64;
            acc ^= u64::from(t.fb_pkt_count()) ^ u64::from(t.status_count());
            for s in t.statuses() {
                acc ^= u64::from(s.seq) ^ s.delta_us.map_or(1, |d| d as u64);
            }
        }
        RtcpPacket::Pli(p) => acc ^= u64::from(p.media_ssrc().0),
        RtcpPacket::Fir(f) => {
            for e in f.entries() {
                acc ^= u64::from(e.ssrc.0) ^ u64::from(e.seq_nr);
            }
        }
        RtcpPacket::Remb(r) => {
            acc ^= r.bitrate_bps() ^ r.ssrcs().count() as u64;
        }
        RtcpPacket::Other { fmt, packet, .. } => acc ^= u64::from(*fmt) ^ packet.len() as u64,
    }
    acc
}

/// Re-emits a parsed packet from its repr and checks the repr survives a second parse.
fn round_trip(pkt: &RtcpPacket<&[u8]>) {
    fn again<R: PartialEq + std::fmt::Debug>(
        repr: &R,
        len: usize,
        emit: impl Fn(&R, &mut [u8]) -> Result<usize>,
        parse: impl Fn(&[u8]) -> R,
    ) {
        let mut out = vec![0u8; len];
        if let Ok(n) = emit(repr, &mut out) {
            assert_eq!(n, len);
            assert_eq!(&parse(&out), repr);
        }
    }
    match pkt {
        RtcpPacket::SenderReport(s) => {
            let r = SenderReportRepr::parse(s);
            again(&r, r.buffer_len(), SenderReportRepr::emit, |b| {
                SenderReportRepr::parse(&SenderReport::new_checked(b).unwrap())
            });
        }
        RtcpPacket::ReceiverReport(s) => {
            let r = ReceiverReportRepr::parse(s);
            again(&r, r.buffer_len(), ReceiverReportRepr::emit, |b| {
                ReceiverReportRepr::parse(&ReceiverReport::new_checked(b).unwrap())
            });
        }
        RtcpPacket::Sdes(s) => {
            let r = SdesRepr::parse(s);
            again(&r, r.buffer_len(), SdesRepr::emit, |b| {
                SdesRepr::parse(&Sdes::new_checked(b).unwrap())
            });
        }
        RtcpPacket::Bye(s) => {
            let r = ByeRepr::parse(s);
            again(&r, r.buffer_len(), ByeRepr::emit, |b| {
                ByeRepr::parse(&Bye::new_checked(b).unwrap())
            });
        }
        RtcpPacket::Nack(s) => {
            let r = NackRepr::parse(s);
            again(&r, r.buffer_len(), NackRepr::emit, |b| {
                NackRepr::parse(&Nack::new_checked(b).unwrap())
            });
        }
        RtcpPacket::Twcc(s) => {
            let r = TwccRepr::parse(s);
            again(&r, r.buffer_len(), TwccRepr::emit, |b| {
                TwccRepr::parse(&Twcc::new_checked(b).unwrap())
            });
        }
        RtcpPacket::Pli(s) => {
            let r = PliRepr::parse(s);
            again(&r, r.buffer_len(), PliRepr::emit, |b| {
                PliRepr::parse(&Pli::new_checked(b).unwrap())
            });
        }
        RtcpPacket::Fir(s) => {
            let r = FirRepr::parse(s);
            again(&r, r.buffer_len(), FirRepr::emit, |b| {
                FirRepr::parse(&Fir::new_checked(b).unwrap())
            });
        }
        RtcpPacket::Remb(s) => {
            // The bitrate may saturate or lose low bits, so compare after one re-encode.
            let r = RembRepr::parse(s);
            let mut out = vec![0u8; r.buffer_len()];
            r.emit(&mut out).unwrap();
            let r2 = RembRepr::parse(&Remb::new_checked(&out[..]).unwrap());
            again(&r2, r2.buffer_len(), RembRepr::emit, |b| {
                RembRepr::parse(&Remb::new_checked(b).unwrap())
            });
        }
        RtcpPacket::Other { .. } => {}
    }
}

/// One plausibly framed packet: a known type and format, a length field matching the
/// random body, sometimes the padding bit.
fn framed_packet() -> impl Strategy<Value = Vec<u8>> {
    let types = prop::sample::select(vec![
        (PT_SR, 0u8),
        (PT_RR, 0),
        (PT_SDES, 0),
        (PT_BYE, 0),
        (PT_RTPFB, FMT_NACK),
        (PT_RTPFB, FMT_TWCC),
        (PT_PSFB, FMT_PLI),
        (PT_PSFB, FMT_FIR),
        (PT_PSFB, FMT_AFB),
        (PT_APP, 0),
    ]);
    (types, 0u8..32, any::<bool>(), 0usize..40, any::<bool>()).prop_flat_map(
        |((pt, fmt), count, pad, words, remb)| {
            (vec(any::<u8>(), words * 4)).prop_map(move |mut body| {
                let fb = pt == PT_RTPFB || pt == PT_PSFB;
                let c = if fb { fmt } else { count };
                let mut p = vec![0x80 | if pad { 0x20 } else { 0 } | c, pt];
                p.extend((words as u16).to_be_bytes());
                if remb && pt == PT_PSFB && body.len() >= 12 {
                    body[8..12].copy_from_slice(b"REMB");
                }
                p.extend(body);
                p
            })
        },
    )
}

fn block() -> impl Strategy<Value = ReportBlockRepr> {
    (
        any::<u32>(),
        any::<u8>(),
        -(1i32 << 23)..(1 << 23),
        any::<[u32; 4]>(),
    )
        .prop_map(
            |(ssrc, fraction_lost, cumulative_lost, [a, b, c, d])| ReportBlockRepr {
                ssrc: Ssrc(ssrc),
                fraction_lost,
                cumulative_lost,
                ext_highest_seq: a,
                jitter: b,
                lsr: c,
                dlsr: d,
            },
        )
}

fn check_repr<R: PartialEq + std::fmt::Debug>(
    repr: &R,
    len: usize,
    emit: impl Fn(&R, &mut [u8]) -> Result<usize>,
    parse: impl Fn(RtcpPacket<&[u8]>) -> R,
) -> std::result::Result<(), TestCaseError> {
    let mut out = vec![0u8; len];
    prop_assert_eq!(emit(repr, &mut out), Ok(len));
    let pkt = packets(&out).next().unwrap().unwrap();
    let back = parse(pkt);
    prop_assert_eq!(&back, repr);
    let mut again = vec![0u8; len];
    prop_assert_eq!(emit(&back, &mut again), Ok(len));
    prop_assert_eq!(again, out);
    Ok(())
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in vec(any::<u8>(), 0..600)) {
        for pkt in packets(&data).flatten() {
            visit(&pkt);
            round_trip(&pkt);
        }
        let _ = Compound::new_checked(&data[..]);
    }

    #[test]
    fn framed_random_packets_never_panic(pkts in vec(framed_packet(), 1..5)) {
        let mut data: Vec<u8> = pkts.concat();
        for pkt in packets(&data).flatten() {
            visit(&pkt);
            round_trip(&pkt);
        }
        for pkt in packets_mut(&mut data).flatten() {
            match pkt {
                RtcpPacket::SenderReport(mut s) => {
                    s.set_ssrc(Ssrc(1));
                    s.set_rtp_timestamp(2);
                }
                RtcpPacket::ReceiverReport(mut r) => r.set_ssrc(Ssrc(1)),
                RtcpPacket::Nack(mut n) => n.set_media_ssrc(Ssrc(1)),
                RtcpPacket::Pli(mut p) => p.set_sender_ssrc(Ssrc(1)),
                RtcpPacket::Fir(mut f) => {
                    let _ = f.set_entry_ssrc(usize::MAX, Ssrc(1));
                    let _ = f.set_entry_ssrc(0, Ssrc(1));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn sr_and_rr_reprs_round_trip(info in any::<(u32, u64, u32, u32, u32)>(),
                                  blocks in vec(block(), 0..32)) {
        let sr = SenderReportRepr {
            info: SenderInfo {
                ssrc: Ssrc(info.0),
                ntp_timestamp: info.1,
                rtp_timestamp: info.2,
                packet_count: info.3,
                octet_count: info.4,
            },
            reports: blocks.clone(),
        };
        check_repr(&sr, sr.buffer_len(), SenderReportRepr::emit, |p| match p {
            RtcpPacket::SenderReport(s) => SenderReportRepr::parse(&s),
            _ => SenderReportRepr::default(),
        })?;
        let rr = ReceiverReportRepr { ssrc: Ssrc(info.0), reports: blocks };
        check_repr(&rr, rr.buffer_len(), ReceiverReportRepr::emit, |p| match p {
            RtcpPacket::ReceiverReport(s) => ReceiverReportRepr::parse(&s),
            _ => ReceiverReportRepr::default(),
        })?;
    }

    #[test]
    fn sdes_and_bye_reprs_round_trip(
        chunks in vec((any::<u32>(), vec((1u8..=255, vec(any::<u8>(), 0..40)), 0..4)), 0..6),
        ssrcs in vec(any::<u32>(), 0..32),
        reason in proptest::option::of(vec(any::<u8>(), 0..256)),
    ) {
        let sdes = SdesRepr {
            chunks: chunks.into_iter().map(|(ssrc, items)| SdesChunkRepr {
                ssrc: Ssrc(ssrc),
                items: items.into_iter().map(|(kind, value)| SdesItemRepr { kind, value })
                    .collect(),
            }).collect(),
        };
        check_repr(&sdes, sdes.buffer_len(), SdesRepr::emit, |p| match p {
            RtcpPacket::Sdes(s) => SdesRepr::parse(&s),
            _ => SdesRepr::default(),
        })?;
        let bye = ByeRepr { ssrcs: ssrcs.into_iter().map(Ssrc).collect(), reason };
        check_repr(&bye, bye.buffer_len(), ByeRepr::emit, |p| match p {
            RtcpPacket::Bye(s) => ByeRepr::parse(&s),
            _ => ByeRepr::default(),
        })?;
    }

    #[test]
    fn feedback_reprs_round_trip(s in any::<(u32, u32)>(),
                                 entries in vec(any::<(u32, u8)>(), 0..8),
                                 mantissa in 0u64..(1 << 18), exp in 0u32..47,
                                 remb_ssrcs in vec(any::<u32>(), 0..10)) {
        let pli = PliRepr { sender_ssrc: Ssrc(s.0), media_ssrc: Ssrc(s.1) };
        check_repr(&pli, 12, PliRepr::emit, |p| match p {
            RtcpPacket::Pli(s) => PliRepr::parse(&s),
            _ => PliRepr::default(),
        })?;
        let fir = FirRepr {
            sender_ssrc: Ssrc(s.0),
            media_ssrc: Ssrc(0),
            entries: entries.into_iter().map(|(ssrc, seq_nr)| FirEntry { ssrc: Ssrc(ssrc), seq_nr })
                .collect(),
        };
        check_repr(&fir, fir.buffer_len(), FirRepr::emit, |p| match p {
            RtcpPacket::Fir(s) => FirRepr::parse(&s),
            _ => FirRepr::default(),
        })?;
        let remb = RembRepr {
            sender_ssrc: Ssrc(s.0),
            bitrate_bps: mantissa << exp,
            ssrcs: remb_ssrcs.into_iter().map(Ssrc).collect(),
        };
        check_repr(&remb, remb.buffer_len(), RembRepr::emit, |p| match p {
            RtcpPacket::Remb(s) => RembRepr::parse(&s),
            _ => RembRepr::default(),
        })?;
    }

    #[test]
    fn twcc_reprs_round_trip(base in any::<u16>(), reference_time in -(1i32 << 23)..(1 << 23),
                             fb in any::<u8>(),
                             deltas in vec(prop_oneof![
                                 3 => Just(None),
                                 6 => (0i32..=255).prop_map(Some),
                                 1 => (i32::from(i16::MIN)..=i32::from(i16::MAX)).prop_map(Some),
                             ], 0..300),
                             runs in vec((0usize..300, 1usize..200), 0..3)) {
        let mut deltas_us: Vec<Option<i32>> = deltas.into_iter().map(|d| d.map(|t| t * 250)).collect();
        // Splice in long runs so that run-length chunks beyond 14 symbols are exercised.
        for (at, len) in runs {
            let at = at.min(deltas_us.len());
            let fill = deltas_us.get(at).copied().flatten().filter(|d| *d < 64_000);
            deltas_us.splice(at..at, std::iter::repeat_n(fill, len));
        }
        let twcc = TwccRepr {
            sender_ssrc: Ssrc(1),
            media_ssrc: Ssrc(2),
            base_seq: base,
            reference_time,
            fb_pkt_count: fb,
            deltas_us,
        };
        check_repr(&twcc, twcc.buffer_len(), TwccRepr::emit, |p| match p {
            RtcpPacket::Twcc(s) => TwccRepr::parse(&s),
            _ => TwccRepr::default(),
        })?;
    }

    /// Any set of lost sequence numbers, including ones straddling 65535 → 0, survives
    /// NACK emission and parsing, through both the repr and the borrowed fast path.
    #[test]
    fn nack_any_lost_set_round_trips(
        start in any::<u16>(),
        offsets in vec(0u16..600, 1..200),
        scattered in vec(any::<u16>(), 0..20),
    ) {
        let lost: BTreeSet<u16> = offsets.iter().map(|o| start.wrapping_add(*o))
            .chain(scattered).collect();
        let repr = NackRepr::new(Ssrc(1), Ssrc(2), lost.iter().copied());
        let mut out = vec![0u8; repr.buffer_len()];
        prop_assert_eq!(repr.emit(&mut out), Ok(out.len()));
        let nack = Nack::new_checked(&out[..]).unwrap();
        let back: BTreeSet<u16> = nack.lost().collect();
        prop_assert_eq!(&back, &lost);
        prop_assert_eq!(NackRepr::parse(&nack), repr);
        // The fast path takes any order; it must still cover exactly the set.
        let unordered: Vec<u16> = offsets.iter().rev().map(|o| start.wrapping_add(*o)).collect();
        let mut buf = vec![0u8; nack_buffer_len(&unordered)];
        let n = emit_nack(&mut buf, Ssrc(1), Ssrc(2), &unordered).unwrap();
        let got: BTreeSet<u16> = Nack::new_checked(&buf[..n]).unwrap().lost().collect();
        let want: BTreeSet<u16> = unordered.into_iter().collect();
        prop_assert_eq!(got, want);
    }
}
