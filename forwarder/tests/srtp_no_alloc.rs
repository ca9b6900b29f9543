//! Proves the SRTP fast path allocates nothing: after a warm-up packet per SSRC,
//! `protect_*` and `unprotect_*` (success and failure paths) run under a counting global
//! allocator with the count unchanged. Its own test binary so no other test's allocations
//! are counted; one test function so nothing runs concurrently.
//!
//! The counter sees Rust allocations only; the C crypto library (aws-lc) does not allocate
//! on these calls either (keys are scheduled at context creation, per-packet state lives
//! on the stack), which the per-packet cost in `docs/srtp.md` is consistent with.

use std::alloc::System;

use prism_forwarder::srtp::{SrtpContext, SrtpKeys, SrtpProfile, MAX_OVERHEAD};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations and reallocations made so far, by every thread.
fn allocations() -> usize {
    let s = GLOBAL.stats();
    s.allocations + s.reallocations
}

fn rtp(buf: &mut [u8], seq: u16, ssrc: u32, payload: usize) -> usize {
    buf[0] = 0x80;
    buf[1] = 96;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&[0, 0, 0, 9]);
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    buf[12..12 + payload].fill(0x5a);
    12 + payload
}

fn rtcp(buf: &mut [u8], ssrc: u32) -> usize {
    buf[..4].copy_from_slice(&[0x80, 201, 0, 1]);
    buf[4..8].copy_from_slice(&ssrc.to_be_bytes());
    8
}

#[test]
fn protect_and_unprotect_do_not_allocate_after_warm_up() {
    for profile in SrtpProfile::ALL {
        let keys = SrtpKeys::new(profile, &[1; 16], &[2; 14][..profile.salt_len()]).unwrap();
        let mut tx = SrtpContext::new(profile, &keys).unwrap();
        let mut rx = SrtpContext::new(profile, &keys).unwrap();
        let mut buf = vec![0u8; 1500];
        let mut out = vec![0u8; 1500];
        let mut copy = vec![0u8; 1500];

        // Warm-up: one packet of each kind takes the table slots.
        let n = rtp(&mut buf, 1, 42, 1200);
        let n = tx.protect_rtp(&mut buf, n).unwrap();
        rx.unprotect_rtp(&mut buf[..n]).unwrap();
        let n = rtcp(&mut buf, 42);
        let n = tx.protect_rtcp(&mut buf, n).unwrap();
        rx.unprotect_rtcp(&mut buf[..n]).unwrap();

        // The counter is process-wide: another thread (the test harness) may allocate once
        // during a round. An allocation per packet would show in every round (hundreds of
        // them), so the cleanest of three rounds must be zero.
        let mut seq_base = 0u16;
        let mut cleanest = usize::MAX;
        for _round in 0..3 {
            let before = allocations();
            for s in 2..1000u16 {
                let seq = seq_base.wrapping_add(s);
                let n = rtp(&mut buf, seq, 42, 1200);
                let m = tx.protect_rtp_into(&buf[..n], &mut out).unwrap();
                copy[..12].copy_from_slice(&buf[..12]);
                let m2 = tx.protect_rtp_with_header(&mut copy, &buf[12..n]).unwrap();
                assert_eq!(copy[..m2], out[..m]);
                let k = tx.protect_rtp(&mut buf, n).unwrap();
                assert_eq!(k, m);
                // Forged, then genuine, then replayed.
                out[20] ^= 1;
                assert!(rx.unprotect_rtp(&mut out[..m]).is_err());
                assert!(rx.unprotect_rtp(&mut buf[..k]).is_ok());
                assert!(rx.unprotect_rtp(&mut buf[..k]).is_err());

                let n = rtcp(&mut buf, 42);
                let k = tx.protect_rtcp(&mut buf, n).unwrap();
                assert!(k <= n + MAX_OVERHEAD);
                assert!(rx.unprotect_rtcp(&mut buf[..k]).is_ok());
            }
            cleanest = cleanest.min(allocations() - before);
            seq_base = seq_base.wrapping_add(1000);
        }
        assert_eq!(cleanest, 0, "{profile:?} allocated on the fast path");
    }
}
