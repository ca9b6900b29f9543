//! Known-answer vectors (RFC 3711 Appendix B, RFC 7714 §16-17, RFC 2202) and behaviour
//! tests of `SrtpContext`: round trips, rollover, replay, forgery, truncation, fuzzing.

use proptest::prelude::*;

use super::crypto::{AesCtr, HmacSha1};
use super::kdf::{SessionKeys, RTCP_LABEL_OFFSET};
use super::*;
use crate::ids::Ssrc;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    unhex(s).try_into().unwrap()
}

// RFC 3711 §B.2: AES-CM keystream, start and end of the 65282-block segment.
#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let mut ctr = AesCtr::new(&arr("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap();
    let iv = arr("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000");
    let mut ks = vec![0u8; 1_044_512];
    // A first use with another IV proves that re-initialising resets the counter state.
    ctr.apply(&[7; 16], &mut [0; 5]).unwrap();
    ctr.apply(&iv, &mut ks).unwrap();
    assert_eq!(
        ks[..48],
        unhex(
            "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
             41E95B3BB0A2E8DD477901E4FCA894C0"
        )[..]
    );
    assert_eq!(
        ks[ks.len() - 48..],
        unhex(
            "EC8CDF7398607CB0F2D21675EA9EA1E4 362B7C3C6773516318A077D7FC5073AE
             6A2CC3787889374FBEB4C81B17BA6C44"
        )[..]
    );
}

// RFC 3711 §B.3: session key, salt and the first 160 bits of the auth key.
#[test]
fn rfc3711_b3_key_derivation() {
    let master = SrtpKeys::new(
        SrtpProfile::AesCm128HmacSha1_80,
        &unhex("E1F97A0D3E018BE0D64FA32C06DE4139"),
        &unhex("0EC675AD498AFEEBB6960B3AABE6"),
    )
    .unwrap();
    let s = SessionKeys::derive(SrtpProfile::AesCm128HmacSha1_80, &master, 0).unwrap();
    assert_eq!(s.key, arr("C61E7A93744F39EE10734AFE3FF7A087"));
    assert_eq!(s.salt, arr("30CBBC08863D8C85D49DB34A9AE1"));
    assert_eq!(s.auth, arr("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"));
    // SRTCP labels give different keys.
    let c = SessionKeys::derive(SrtpProfile::AesCm128HmacSha1_80, &master, RTCP_LABEL_OFFSET);
    assert_ne!(c.unwrap().key, s.key);
}

// RFC 2202 test case 2.
#[test]
fn hmac_sha1_rfc2202() {
    let mac = HmacSha1::new(b"Jefe");
    let mut m = mac.start();
    m.update(b"what do ya want ");
    m.update(b"for nothing?");
    assert_eq!(
        mac.finish(m),
        arr("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
    );
}

const GCM_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const GCM_SALT: &str = "517569642070726f2071756f";

fn gcm_vector_context() -> SrtpContext {
    let mut salt = [0u8; 14];
    salt[..12].copy_from_slice(&unhex(GCM_SALT));
    let keys = SessionKeys {
        key: arr(GCM_KEY),
        salt,
        auth: [0; 20],
    };
    SrtpContext::from_session_keys(SrtpProfile::AeadAes128Gcm, &keys, &keys).unwrap()
}

const RTP_7714: &str = "8040f17b8041f8d35501a0b247616c6c696120657374206f6d6e69732064697669736120
    696e207061727465732074726573";
const SRTP_7714: &str = "8040f17b8041f8d35501a0b2f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f
    42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce";

// RFC 7714 §16.1.1 / §16.1.2: AEAD_AES_128_GCM SRTP encryption and decryption.
#[test]
fn rfc7714_16_srtp_gcm() {
    let plain = unhex(RTP_7714);
    let expected = unhex(SRTP_7714);

    let mut buf = plain.clone();
    buf.resize(plain.len() + 16, 0);
    let n = gcm_vector_context()
        .protect_rtp(&mut buf, plain.len())
        .unwrap();
    assert_eq!(buf[..n], expected[..]);

    let mut out = vec![0u8; 200];
    let n = gcm_vector_context()
        .protect_rtp_into(&plain, &mut out)
        .unwrap();
    assert_eq!(out[..n], expected[..]);

    let mut buf = expected.clone();
    let n = gcm_vector_context().unprotect_rtp(&mut buf).unwrap();
    assert_eq!(buf[..n], plain[..]);
}

const RTCP_7714: &str = "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61
    deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";
const SRTCP_7714: &str = "81c8000d4d61727363e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1
    730d6fda4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf87245d9eade800005d4";
const SRTCP_7714_TAG_ONLY: &str = "81c8000d4d6172734e5450314e545032525450200000042a0000e930
    4c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef841dd9683dd78ec92ae58790125f62b3000005d4";

// RFC 7714 §17.1 / §17.2: SRTCP encryption and decryption at index 0x5d4.
#[test]
fn rfc7714_17_srtcp_gcm() {
    let plain = unhex(RTCP_7714);
    let expected = unhex(SRTCP_7714);

    let mut ctx = gcm_vector_context();
    ctx.set_next_rtcp_index(Ssrc(0x4d61_7273), 0x5d4);
    let mut buf = plain.clone();
    buf.resize(plain.len() + 20, 0);
    let n = ctx.protect_rtcp(&mut buf, plain.len()).unwrap();
    assert_eq!(buf[..n], expected[..]);

    let mut buf = expected.clone();
    let n = gcm_vector_context().unprotect_rtcp(&mut buf).unwrap();
    assert_eq!(buf[..n], plain[..]);
}

// RFC 7714 §17.3 / §17.4: E flag clear, the packet is authenticated only.
#[test]
fn rfc7714_17_srtcp_gcm_tag_only() {
    let mut buf = unhex(SRTCP_7714_TAG_ONLY);
    let n = gcm_vector_context().unprotect_rtcp(&mut buf).unwrap();
    assert_eq!(buf[..n], unhex(RTCP_7714)[..]);
}

fn keys(profile: SrtpProfile, seed: u8) -> SrtpKeys {
    let key: Vec<u8> = (0..16)
        .map(|i| seed.wrapping_mul(31).wrapping_add(i))
        .collect();
    let salt: Vec<u8> = (0..profile.salt_len() as u8)
        .map(|i| seed ^ (i * 7))
        .collect();
    SrtpKeys::new(profile, &key, &salt).unwrap()
}

fn pair(profile: SrtpProfile) -> (SrtpContext, SrtpContext) {
    let k = keys(profile, 9);
    (
        SrtpContext::new(profile, &k).unwrap(),
        SrtpContext::new(profile, &k).unwrap(),
    )
}

/// A plain RTP packet with a CSRC and a one-byte extension, `payload_len` bytes of payload.
fn rtp(seq: u16, ssrc: u32, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x91, 0x60];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&0xCAFE_F00Du32.to_be_bytes());
    p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]);
    p.extend((0..payload_len).map(|i| i as u8));
    p
}

fn rtcp(ssrc: u32) -> Vec<u8> {
    // RR with one report block, then a PLI.
    let mut p = vec![0x81, 201, 0, 7];
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend((0..24).map(|i| i as u8));
    p.extend_from_slice(&[0x81, 206, 0, 2]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    p
}

fn protect(tx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + MAX_OVERHEAD, 0);
    let n = tx.protect_rtp(&mut buf, plain.len()).unwrap();
    assert_eq!(n, plain.len() + tx.profile().rtp_tag_len());
    buf.truncate(n);
    buf
}

#[test]
fn rtp_round_trip_all_profiles_and_forms() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        let (mut tx2, _) = pair(profile);
        let (mut tx3, _) = pair(profile);
        for seq in [10u16, 11, 12, 300] {
            let plain = rtp(seq, 0x1111, 1200);
            let sealed = protect(&mut tx, &plain);
            assert_ne!(sealed[24..1224], plain[24..]);

            // The copying forms produce the same bytes.
            let mut out = vec![0u8; 1300];
            let n = tx2.protect_rtp_into(&plain, &mut out).unwrap();
            assert_eq!(out[..n], sealed[..]);
            let mut out = vec![0u8; 1300];
            out[..24].copy_from_slice(&plain[..24]);
            let n = tx3.protect_rtp_with_header(&mut out, &plain[24..]).unwrap();
            assert_eq!(out[..n], sealed[..], "{profile:?}");

            let mut buf = sealed.clone();
            let n = rx.unprotect_rtp(&mut buf).unwrap();
            assert_eq!(buf[..n], plain[..], "{profile:?}");
        }
    }
}

#[test]
fn rtcp_round_trip_all_profiles() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        for _ in 0..3 {
            let plain = rtcp(0x2222);
            let mut buf = plain.clone();
            buf.resize(plain.len() + MAX_OVERHEAD, 0);
            let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
            assert_eq!(n, plain.len() + profile.rtcp_overhead());
            assert_ne!(buf[8..plain.len()], plain[8..]);
            let mut sealed = buf[..n].to_vec();
            let m = rx.unprotect_rtcp(&mut sealed).unwrap();
            assert_eq!(sealed[..m], plain[..], "{profile:?}");
            // The same packet again is a replay.
            let mut again = buf[..n].to_vec();
            assert_eq!(rx.unprotect_rtcp(&mut again), Err(SrtpError::Replayed));
        }
    }
}

#[test]
fn rollover_counter_follows_a_sequence_wrap() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        // 65533 .. 65535, 0 .. 3, with one packet reordered across the wrap.
        let seqs = [65533u16, 65534, 0, 65535, 1, 2, 3];
        for seq in seqs {
            let plain = rtp(seq, 0x3333, 100);
            let mut buf = protect(&mut tx, &plain);
            let n = rx.unprotect_rtp(&mut buf).unwrap();
            assert_eq!(buf[..n], plain[..], "{profile:?} seq {seq}");
        }
        // The ROC is bound into the packet: a receiver still at ROC 0 (it saw seq 10 of
        // the first cycle) rejects seq 4 of the second cycle.
        let sealed = protect(&mut tx, &rtp(4, 0x3333, 100));
        let (mut tx0, mut fresh) = pair(profile);
        let mut warm = protect(&mut tx0, &rtp(10, 0x3333, 10));
        fresh.unprotect_rtp(&mut warm).unwrap();
        let mut buf = sealed.clone();
        assert_eq!(fresh.unprotect_rtp(&mut buf), Err(SrtpError::AuthFailed));
    }
}

#[test]
fn replayed_and_too_old_packets_are_rejected() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        let first = protect(&mut tx, &rtp(1000, 7, 50));
        let mut buf = first.clone();
        rx.unprotect_rtp(&mut buf).unwrap();
        let mut buf = first.clone();
        assert_eq!(rx.unprotect_rtp(&mut buf), Err(SrtpError::Replayed));
        let later = protect(&mut tx, &rtp(1200, 7, 50));
        let mut buf = later.clone();
        rx.unprotect_rtp(&mut buf).unwrap();
        let mut buf = first.clone();
        assert_eq!(rx.unprotect_rtp(&mut buf), Err(SrtpError::TooOld));
    }
}

#[test]
fn forged_packet_is_rejected_and_leaves_state_alone() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        let genuine = protect(&mut tx, &rtp(500, 0x4444, 300));
        for flip in [0usize, 3, 11, 25, genuine.len() - 1] {
            let mut bad = genuine.clone();
            bad[flip] ^= 0x40;
            let r = rx.unprotect_rtp(&mut bad);
            assert!(r.is_err(), "{profile:?} flip {flip}");
        }
        // Nothing was recorded: no slot taken, the genuine packet still passes.
        assert_eq!(rx.rtp_ssrc_count(), 0);
        let mut buf = genuine.clone();
        assert!(rx.unprotect_rtp(&mut buf).is_ok());

        let plain = rtcp(0x4444);
        let mut buf = plain.clone();
        buf.resize(plain.len() + MAX_OVERHEAD, 0);
        let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
        let mut bad = buf[..n].to_vec();
        bad[10] ^= 1;
        assert_eq!(rx.unprotect_rtcp(&mut bad), Err(SrtpError::AuthFailed));
        let mut good = buf[..n].to_vec();
        assert!(rx.unprotect_rtcp(&mut good).is_ok());
    }
}

#[test]
fn truncated_and_undersized_buffers_are_errors() {
    for profile in SrtpProfile::ALL {
        let (mut tx, mut rx) = pair(profile);
        let sealed = protect(&mut tx, &rtp(1, 1, 0));
        for n in 0..sealed.len() {
            let mut b = sealed[..n].to_vec();
            assert!(rx.unprotect_rtp(&mut b).is_err(), "{profile:?} len {n}");
            let mut b = sealed[..n].to_vec();
            assert!(rx.unprotect_rtcp(&mut b).is_err());
        }
        let plain = rtp(2, 1, 10);
        let mut small = plain.clone();
        assert_eq!(
            tx.protect_rtp(&mut small, plain.len()),
            Err(SrtpError::BufferTooSmall)
        );
        assert_eq!(
            tx.protect_rtp(&mut small, plain.len() + 1),
            Err(SrtpError::BufferTooSmall)
        );
        let mut out = vec![0u8; plain.len()];
        assert_eq!(
            tx.protect_rtp_into(&plain, &mut out),
            Err(SrtpError::BufferTooSmall)
        );
        let mut b = vec![0x81, 200, 0, 0, 0, 0, 0];
        b.resize(40, 0);
        assert_eq!(tx.protect_rtcp(&mut b, 7), Err(SrtpError::Truncated));
    }
}

#[test]
fn table_full_is_an_error_and_removal_frees_a_slot() {
    let (mut tx, mut rx) = pair(SrtpProfile::AeadAes128Gcm);
    for ssrc in 0..MAX_SSRCS as u32 {
        let mut b = protect(&mut tx, &rtp(1, ssrc, 10));
        rx.unprotect_rtp(&mut b).unwrap();
    }
    let mut b = rtp(1, 999, 10);
    let len = b.len();
    b.resize(len + MAX_OVERHEAD, 0);
    assert_eq!(tx.protect_rtp(&mut b, len), Err(SrtpError::TableFull));
    tx.remove_ssrc(Ssrc(0));
    let mut b = protect(&mut tx, &rtp(1, 999, 10));
    assert_eq!(rx.unprotect_rtp(&mut b), Err(SrtpError::TableFull));
    rx.remove_ssrc(Ssrc(5));
    assert!(rx.unprotect_rtp(&mut b).is_ok());
}

#[test]
fn dtls_export_is_split_client_key_server_key_client_salt_server_salt() {
    for profile in [SrtpProfile::AesCm128HmacSha1_80, SrtpProfile::AeadAes128Gcm] {
        let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
        let (k, s) = (profile.key_len(), profile.salt_len());
        let (c_local, c_remote) = SrtpKeys::from_dtls_export(profile, &material, true).unwrap();
        let (s_local, s_remote) = SrtpKeys::from_dtls_export(profile, &material, false).unwrap();
        assert_eq!(c_local, s_remote);
        assert_eq!(c_remote, s_local);
        assert_eq!(c_local.master_key[..], material[..k]);
        assert_eq!(c_remote.master_key[..], material[k..2 * k]);
        assert_eq!(c_local.master_salt[..s], material[2 * k..2 * k + s]);
        assert_eq!(c_remote.master_salt[..s], material[2 * k + s..]);
        assert_eq!(
            SrtpKeys::from_dtls_export(profile, &material[1..], true),
            Err(SrtpError::BadKeyLength)
        );
    }
    assert_eq!(
        SrtpProfile::from_dtls_id(1),
        Ok(SrtpProfile::AesCm128HmacSha1_80)
    );
    assert_eq!(SrtpProfile::from_dtls_id(7), Ok(SrtpProfile::AeadAes128Gcm));
    assert_eq!(SrtpProfile::from_dtls_id(8), Err(SrtpError::UnknownProfile));
    for p in SrtpProfile::ALL {
        assert_eq!(SrtpProfile::from_dtls_id(p.dtls_id()), Ok(p));
    }
}

fn any_profile() -> impl Strategy<Value = SrtpProfile> {
    prop::sample::select(SrtpProfile::ALL.to_vec())
}

proptest! {
    #[test]
    fn unprotect_never_panics_on_random_bytes(
        profile in any_profile(),
        mut bytes in prop::collection::vec(any::<u8>(), 0..300),
        rtcp_first in any::<bool>(),
    ) {
        let (_, mut rx) = pair(profile);
        if rtcp_first && !bytes.is_empty() {
            bytes[0] = 0x80 | (bytes[0] & 0x3f);
        }
        let mut a = bytes.clone();
        let _ = rx.unprotect_rtp(&mut a);
        let mut b = bytes.clone();
        let _ = rx.unprotect_rtcp(&mut b);
        // Random bytes never authenticate, so nothing was recorded.
        prop_assert_eq!(rx.rtp_ssrc_count(), 0);
    }

    #[test]
    fn protect_then_unprotect_is_identity(
        profile in any_profile(),
        seq in any::<u16>(),
        ssrc in any::<u32>(),
        cc in 0u8..3,
        payload in prop::collection::vec(any::<u8>(), 0..1400),
    ) {
        let (mut tx, mut rx) = pair(profile);
        let mut plain = vec![0x80 | cc, 96];
        plain.extend_from_slice(&seq.to_be_bytes());
        plain.extend_from_slice(&[0, 0, 0, 1]);
        plain.extend_from_slice(&ssrc.to_be_bytes());
        plain.extend(std::iter::repeat_n(7u8, 4 * usize::from(cc)));
        plain.extend_from_slice(&payload);
        let mut buf = protect(&mut tx, &plain);
        let n = rx.unprotect_rtp(&mut buf).unwrap();
        prop_assert_eq!(&buf[..n], &plain[..]);

        let mut rtcp_plain = vec![0x80, 200, 0, 1];
        rtcp_plain.extend_from_slice(&ssrc.to_be_bytes());
        rtcp_plain.extend_from_slice(&payload);
        let mut buf = rtcp_plain.clone();
        buf.resize(rtcp_plain.len() + MAX_OVERHEAD, 0);
        let n = tx.protect_rtcp(&mut buf, rtcp_plain.len()).unwrap();
        let mut sealed = buf[..n].to_vec();
        let m = rx.unprotect_rtcp(&mut sealed).unwrap();
        prop_assert_eq!(&sealed[..m], &rtcp_plain[..]);
    }
}

/// Packets produced by libsrtp 2 (through pylibsrtp 1.0.0) from master key 10..1f and
/// master salt a0..ad (its first 12 bytes for GCM): RTP seq 65535 then 0 (ROC 1) and one
/// SRTCP packet (libsrtp's first index, 1).
const LIBSRTP: [(SrtpProfile, &str, &str, &str); 3] = [
    (
        SrtpProfile::AesCm128HmacSha1_80,
        "9060ffff01020304cafebabebede000110aa0000660c74ad8aac2b457658e3e1ffa56bedae0d1f260a09
         95ba57064b1336ae38b551fe629fc205d283cec5ba33872d98c4a2e658550001149c8f06fee4",
        "9060000001020304cafebabebede000110aa00002e7cbe678d3f792ce6bd2187331a47bf9420c88c1c9d
         d1fcb92f81d2c77a741ca1c9fb5962e6df9687389929cadc8c265e4c2ba786f1df9b49e1f929",
        "81c90007cafebabe4c17fbad008c91e29cf74ad28ff8108e994ba7d2b706f7be80000001e62d591852fe
         21f9f38f",
    ),
    (
        SrtpProfile::AesCm128HmacSha1_32,
        "9060ffff01020304cafebabebede000110aa0000660c74ad8aac2b457658e3e1ffa56bedae0d1f260a09
         95ba57064b1336ae38b551fe629fc205d283cec5ba33872d98c4a2e658550001",
        "9060000001020304cafebabebede000110aa00002e7cbe678d3f792ce6bd2187331a47bf9420c88c1c9d
         d1fcb92f81d2c77a741ca1c9fb5962e6df9687389929cadc8c265e4c2ba786f1",
        "81c90007cafebabe4c17fbad008c91e29cf74ad28ff8108e994ba7d2b706f7be80000001e62d591852fe
         21f9f38f",
    ),
    (
        SrtpProfile::AeadAes128Gcm,
        "9060ffff01020304cafebabebede000110aa000062849ae9076cb7e856c92aa15607eb84719caa5ab64d
         5f2542ba95f96cb96ee940d0c3f4bd342227e10a14e2eef295a5e92572f236affe743c0c5de00bed7112
         9842",
        "9060000001020304cafebabebede000110aa000091e7376baf8c9a54f06caacc93b2c531d10f1af83aec
         5538dd8fe4087a47b84ed9c4f4ee60850847531215cb8bd7380e183e2042c46ec8780c9085d5736c5458
         8df6",
        "81c90007cafebabe7db45017914ade8d124402c4fefe634517480356b297f3c9692e8708a9cfe5257d71
         ccee014e961380000001",
    ),
];

fn interop_rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x90, 0x60];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[1, 2, 3, 4, 0xCA, 0xFE, 0xBA, 0xBE]);
    p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]);
    p.extend((0..50u8).map(|i| i.wrapping_mul(7)));
    p
}

#[test]
fn byte_for_byte_with_libsrtp() {
    for (profile, rtp_a, rtp_b, srtcp) in LIBSRTP {
        let key: Vec<u8> = (0x10..0x20).collect();
        let salt: Vec<u8> = (0xa0..0xae).take(profile.salt_len()).collect();
        let keys = SrtpKeys::new(profile, &key, &salt).unwrap();
        let mut tx = SrtpContext::new(profile, &keys).unwrap();
        let mut rx = SrtpContext::new(profile, &keys).unwrap();
        for (seq, expected) in [(65535u16, rtp_a), (0, rtp_b)] {
            let plain = interop_rtp(seq);
            let sealed = protect(&mut tx, &plain);
            assert_eq!(sealed, unhex(expected), "{profile:?} seq {seq}");
            let mut theirs = unhex(expected);
            let n = rx.unprotect_rtp(&mut theirs).unwrap();
            assert_eq!(theirs[..n], plain[..]);
        }
        let mut plain = vec![0x81, 201, 0, 7, 0xCA, 0xFE, 0xBA, 0xBE];
        plain.extend(0..24u8);
        let mut buf = plain.clone();
        buf.resize(plain.len() + MAX_OVERHEAD, 0);
        let n = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
        assert_eq!(buf[..n], unhex(srtcp)[..], "{profile:?} srtcp");
        let mut theirs = unhex(srtcp);
        let n = rx.unprotect_rtcp(&mut theirs).unwrap();
        assert_eq!(theirs[..n], plain[..]);
    }
}

#[test]
fn context_size_is_bounded() {
    // Documented in docs/srtp.md; a context lives in place, so its size matters only for
    // memory per transport.
    let size = core::mem::size_of::<SrtpContext>();
    assert!(size < 16 * 1024, "{size}");
    println!("SrtpContext: {size} bytes");
}
