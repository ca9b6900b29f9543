//! Plain RTP transports with SRTP keys given by control (SDES-style, as ingest and
//! recorders use): a publisher encrypting with AES-CM/HMAC-SHA1-80 reaches a subscriber
//! that decrypts with AES-GCM, each with its own keys; a packet with a bad tag is dropped
//! and counted; unknown profiles and bad key lengths are refused.

use std::net::SocketAddr;
use std::time::Instant;

use pb::command::Body;
use prism_forwarder::engine::{DropReason, Engine, EngineConfig};
use prism_forwarder::srtp::{SrtpContext, SrtpKeys, SrtpProfile, MAX_OVERHEAD};
use prism_forwarder::testing::{self, CollectEgress};
use prism_forwarder::wire::rtp::RtpPacket;
use prism_proto::control as pb;

fn cmd(e: &mut Engine, body: Body) -> pb::event::Body {
    e.handle_command(
        Instant::now(),
        pb::Command {
            request_id: 1,
            body: Some(body),
        },
    )
    .body
    .unwrap()
}

fn params(profile: &str, key: u8, salt_len: usize) -> pb::SrtpParams {
    pb::SrtpParams {
        profile: profile.into(),
        send_key: vec![key; 16],
        send_salt: vec![key + 1; salt_len],
        recv_key: vec![key + 2; 16],
        recv_salt: vec![key + 3; salt_len],
    }
}

#[test]
fn plain_transports_encrypt_with_keys_from_control() {
    let now = Instant::now();
    let mut e = Engine::new(0, "127.0.0.1:9".parse().unwrap(), EngineConfig::default());
    cmd(&mut e, testing::cmd::room(1));
    let publisher: SocketAddr = "10.0.0.1:1000".parse().unwrap();
    let subscriber: SocketAddr = "10.0.0.2:2000".parse().unwrap();
    for (id, remote, p) in [
        (1, publisher, params("AES_CM_128_HMAC_SHA1_80", 10, 14)),
        (2, subscriber, params("AEAD_AES_128_GCM", 20, 12)),
    ] {
        let b = cmd(
            &mut e,
            Body::CreatePlainTransport(pb::CreatePlainTransport {
                room_id: 1,
                transport_id: id,
                remote: remote.to_string(),
                comedia: false,
                srtp: Some(p),
                relay: None,
            }),
        );
        assert!(matches!(b, pb::event::Body::TransportCreated(_)), "{b:?}");
    }
    for (why, p) in [
        ("unknown profile", params("NULL_CIPHER", 1, 14)),
        ("bad salt length", params("AEAD_AES_128_GCM", 1, 5)),
    ] {
        let bad = cmd(
            &mut e,
            Body::CreatePlainTransport(pb::CreatePlainTransport {
                room_id: 1,
                transport_id: 3,
                remote: "10.0.0.3:3000".into(),
                comedia: false,
                srtp: Some(p),
                relay: None,
            }),
        );
        assert!(matches!(bad, pb::event::Body::Error(_)), "{why} refused");
    }
    cmd(&mut e, testing::cmd::opus_track(1, 1, 1, 5));
    cmd(&mut e, testing::cmd::down_track(1, 1, 1, 2, 6, 0, 0));
    // The publisher's "send" keys are the forwarder's "recv" keys, and the other way round.
    let cm = SrtpProfile::AesCm128HmacSha1_80;
    let mut pub_ctx =
        SrtpContext::new(cm, &SrtpKeys::new(cm, &[12; 16], &[13; 14]).unwrap()).unwrap();
    let gcm = SrtpProfile::AeadAes128Gcm;
    let mut sub_ctx =
        SrtpContext::new(gcm, &SrtpKeys::new(gcm, &[20; 16], &[21; 12]).unwrap()).unwrap();
    let mut eg = CollectEgress::default();
    for seq in 0..5u16 {
        let mut pkt = vec![0x80, 111, 0, seq as u8, 0, 0, 0, 0, 0, 0, 0, 5];
        pkt.extend_from_slice(b"hello srtp");
        let n = pkt.len();
        pkt.resize(n + MAX_OVERHEAD, 0);
        let n = pub_ctx.protect_rtp(&mut pkt, n).unwrap();
        pkt.truncate(n);
        if seq == 3 {
            let mut forged = pkt.clone();
            forged[n - 1] ^= 1;
            eg.begin(&forged);
            e.handle_datagram(now, publisher, &mut forged, &mut eg);
        }
        eg.begin(&pkt);
        e.handle_datagram(now, publisher, &mut pkt, &mut eg);
    }
    let out = eg.take();
    assert_eq!(out.len(), 5);
    let mut last: Option<u16> = None;
    for (to, mut d) in out {
        assert_eq!(to, subscriber);
        let n = sub_ctx
            .unprotect_rtp(&mut d)
            .expect("subscriber decrypts with its keys");
        let p = RtpPacket::new_checked(&d[..n]).unwrap();
        assert_eq!((p.ssrc().0, p.payload()), (6, &b"hello srtp"[..]));
        if let Some(l) = last {
            assert_eq!(
                p.sequence_number(),
                l.wrapping_add(1),
                "consecutive numbers"
            );
        }
        last = Some(p.sequence_number());
    }
    assert_eq!(
        e.transport_counters(1)
            .unwrap()
            .dropped(DropReason::SrtpAuthFailed),
        1
    );
}
