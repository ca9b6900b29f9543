//! A WebRTC transport end to end in virtual time, against peers built from independent
//! parts of this crate: a STUN check signed with the server's ICE password, a DTLS client
//! with its own certificate, SRTP keys from the DTLS export. A publisher's SRTP audio
//! reaches a subscriber decrypted and re-encrypted under the subscriber's keys.
//!
//! Bad input is dropped and counted, and the session goes on:
//! - a STUN check with a wrong integrity;
//! - a garbage DTLS record;
//! - SRTP with a bad tag;
//! - a replayed SRTP packet.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use pb::command::Body;
use prism_forwarder::dtls::{DtlsCert, DtlsEndpoint, DtlsEvent, DtlsRole, Fingerprint};
use prism_forwarder::engine::{DropReason, Engine, EngineConfig};
use prism_forwarder::sctp::{DataChannelEvent, DataChannels, Reliability};
use prism_forwarder::srtp::{SrtpContext, SrtpKeys, SrtpProfile, MAX_OVERHEAD};
use prism_forwarder::testing::{cmd, CollectEgress};
use prism_forwarder::wire::rtp::RtpPacket;
use prism_forwarder::wire::stun::{attr, Class, Method, StunWriter};
use prism_proto::control as pb;
use sha1::Sha1;

const SERVER: &str = "127.0.0.1:7000";

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

/// A WebRTC client reduced to what an SFU sees: ICE checks, DTLS, SRTP.
struct Peer {
    addr: SocketAddr,
    ufrag: String,
    server_ufrag: String,
    server_pwd: String,
    dtls: DtlsEndpoint,
    srtp_out: Option<SrtpContext>,
    srtp_in: Option<SrtpContext>,
    cert: DtlsCert,
}

impl Peer {
    fn new(addr: &str, ufrag: &str, server_ufrag: &str) -> Self {
        let cert = DtlsCert::generate().unwrap();
        let dtls = DtlsEndpoint::new(DtlsRole::Client, &cert).unwrap();
        Self {
            addr: addr.parse().unwrap(),
            ufrag: ufrag.into(),
            server_ufrag: server_ufrag.into(),
            server_pwd: format!("{server_ufrag}-password-0123456789"),
            dtls,
            srtp_out: None,
            srtp_in: None,
            cert,
        }
    }

    fn binding_request(&self, key: &str) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let mut w = StunWriter::new(&mut buf, Class::Request, Method::BINDING, &[7u8; 12]).unwrap();
        w.attr(
            attr::USERNAME,
            format!("{}:{}", self.server_ufrag, self.ufrag).as_bytes(),
        )
        .unwrap();
        w.attr(attr::PRIORITY, &1_845_501_695u32.to_be_bytes())
            .unwrap();
        w.attr(attr::ICE_CONTROLLING, &42u64.to_be_bytes()).unwrap();
        w.attr(attr::USE_CANDIDATE, &[]).unwrap();
        let key = key.as_bytes().to_vec();
        let n = w
            .finish_with_integrity(&move |d: &[u8]| hmac_sha1(&key, d))
            .unwrap();
        buf.truncate(n);
        buf
    }
}

fn ok(e: &mut Engine, now: Instant, body: Body) -> pb::event::Body {
    let ev = e.handle_command(
        now,
        pb::Command {
            request_id: 1,
            body: Some(body),
        },
    );
    match ev.body.unwrap() {
        pb::event::Body::Error(err) => panic!("{}", err.message),
        b => b,
    }
}

/// Delivers what the engine sent to `peer` into its DTLS endpoint (or returns RTP).
fn deliver(peer: &mut Peer, now: Instant, out: &[(SocketAddr, Vec<u8>)]) -> Vec<Vec<u8>> {
    let mut media = Vec::new();
    for (to, d) in out {
        if *to != peer.addr {
            continue;
        }
        match d[0] {
            20..=63 => peer.dtls.handle_datagram(now, d).unwrap(),
            128..=191 => media.push(d.clone()),
            _ => {}
        }
    }
    media
}

/// ICE: a nominating check answered with a success response.
fn ice(engine: &mut Engine, eg: &mut CollectEgress, peer: &Peer, now: Instant) {
    let check = peer.binding_request(&peer.server_pwd.clone());
    eg.begin(&check);
    engine.handle_datagram(now, peer.addr, &mut check.clone(), eg);
    let replies = eg.take();
    assert_eq!(replies.len(), 1, "a binding response");
    assert_eq!(replies[0].1[0..2], [0x01, 0x01], "Binding success");
}

fn connect(engine: &mut Engine, eg: &mut CollectEgress, peer: &mut Peer, now: &mut Instant) {
    ice(engine, eg, peer, *now);
    // DTLS, pumped both ways until both ends are connected.
    peer.dtls.handle_timeout(*now);
    for _ in 0..20 {
        while let Some(d) = peer.dtls.poll_transmit() {
            eg.begin(&d);
            engine.handle_datagram(*now, peer.addr, &mut d.clone(), eg);
        }
        let out = eg.take();
        deliver(peer, *now, &out);
        while let Some(ev) = peer.dtls.poll_event() {
            if let DtlsEvent::Connected { srtp, .. } = ev {
                let km = srtp.expect("SRTP negotiated");
                let profile = SrtpProfile::from_dtls_id(km.profile_id).unwrap();
                let (local, remote) =
                    SrtpKeys::from_dtls_export(profile, &km.material, true).unwrap();
                peer.srtp_out = Some(SrtpContext::new(profile, &local).unwrap());
                peer.srtp_in = Some(SrtpContext::new(profile, &remote).unwrap());
            }
        }
        *now += Duration::from_millis(5);
        engine.handle_timeout(*now, eg);
        if peer.srtp_out.is_some() {
            break;
        }
    }
    assert!(peer.srtp_out.is_some(), "DTLS connected");
    // Flush whatever the server still had to say (its final flight).
    let out = eg.take();
    deliver(peer, *now, &out);
}

/// Runs a peer's data channels over its DTLS endpoint against the engine until quiet;
/// returns what the peer's data channels reported.
fn pump_data(
    engine: &mut Engine,
    eg: &mut CollectEgress,
    peer: &mut Peer,
    sctp: &mut DataChannels,
    now: &mut Instant,
) -> Vec<DataChannelEvent> {
    let mut events = Vec::new();
    for _ in 0..200 {
        let mut progressed = false;
        sctp.handle_timeout(*now);
        while let Some(d) = sctp.poll_dtls_transmit() {
            peer.dtls.send_application_data(&d).unwrap();
            progressed = true;
        }
        while let Some(d) = peer.dtls.poll_transmit() {
            eg.begin(&d);
            engine.handle_datagram(*now, peer.addr, &mut d.clone(), eg);
            progressed = true;
        }
        engine.handle_timeout(*now, eg);
        for (to, d) in eg.take() {
            if to == peer.addr && (20..=63).contains(&d[0]) {
                peer.dtls.handle_datagram(*now, &d).unwrap();
                progressed = true;
            }
        }
        while let Some(ev) = peer.dtls.poll_event() {
            if let DtlsEvent::ApplicationData(a) = ev {
                sctp.handle_dtls_data(*now, &a);
                progressed = true;
            }
        }
        while let Some(ev) = sctp.poll_event() {
            events.push(ev);
            progressed = true;
        }
        *now += Duration::from_millis(5);
        if !progressed && sctp.is_connected() {
            break;
        }
    }
    events
}

fn create_transport(e: &mut Engine, now: Instant, id: u64, peer: &Peer) -> String {
    let b = ok(
        e,
        now,
        Body::CreateWebrtcTransport(pb::CreateWebRtcTransport {
            room_id: 1,
            transport_id: id,
            local_ufrag: peer.server_ufrag.clone(),
            local_pwd: peer.server_pwd.clone(),
            remote_ufrag: peer.ufrag.clone(),
            remote_pwd: "client-password-0123456789".into(),
            remote_fingerprint: peer.cert.fingerprint().to_string(),
            dtls_client: false,
        }),
    );
    let pb::event::Body::TransportCreated(t) = b else {
        panic!("{b:?}")
    };
    assert_eq!(t.local, SERVER);
    t.fingerprint
}

fn opus(seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn protect(peer: &mut Peer, plain: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; plain.len() + MAX_OVERHEAD];
    buf[..plain.len()].copy_from_slice(plain);
    let n = peer
        .srtp_out
        .as_mut()
        .unwrap()
        .protect_rtp(&mut buf, plain.len())
        .unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn srtp_media_flows_and_bad_input_is_counted() {
    let mut now = Instant::now();
    let mut e = Engine::new(0, SERVER.parse().unwrap(), EngineConfig::default());
    let mut eg = CollectEgress::default();
    ok(&mut e, now, cmd::room(1));
    let mut publisher = Peer::new("10.1.0.1:5000", "pubC", "pubS");
    let mut viewer = Peer::new("10.1.0.2:6000", "subC", "subS");
    let fp1 = create_transport(&mut e, now, 10, &publisher);
    let fp2 = create_transport(&mut e, now, 20, &viewer);
    assert_eq!(fp1, fp2, "one certificate per core");
    for p in [&mut publisher, &mut viewer] {
        p.dtls
            .set_remote_fingerprint(Fingerprint::parse(&fp1).unwrap())
            .unwrap();
    }
    ok(&mut e, now, cmd::opus_track(1, 10, 1, 0x1111));
    ok(&mut e, now, cmd::down_track(1, 1, 2, 20, 0x2222, 109, 0));

    // Media before ICE comes from nobody known; after ICE but before DTLS it is refused.
    let early = opus(1, 0x1111, b"too early");
    eg.begin(&early);
    e.handle_datagram(now, publisher.addr, &mut early.clone(), &mut eg);
    assert_eq!(e.counters.dropped(DropReason::UnknownSource), 1);
    ice(&mut e, &mut eg, &publisher, now);
    e.handle_datagram(now, publisher.addr, &mut early.clone(), &mut eg);
    connect(&mut e, &mut eg, &mut publisher, &mut now);
    connect(&mut e, &mut eg, &mut viewer, &mut now);
    let connected: Vec<u64> = e
        .drain_events()
        .filter_map(|ev| match ev.body {
            Some(pb::event::Body::TransportConnected(c)) => Some(c.transport_id),
            _ => None,
        })
        .collect();
    assert_eq!(connected, vec![10, 20]);

    let send = |e: &mut Engine, eg: &mut CollectEgress, from: SocketAddr, d: &[u8], now| {
        eg.begin(d);
        e.handle_datagram(now, from, &mut d.to_vec(), eg);
        eg.take()
    };
    let mut received = Vec::new();
    for seq in 2..12u16 {
        let srtp = protect(
            &mut publisher,
            &opus(seq, 0x1111, format!("frame {seq}").as_bytes()),
        );
        let out = send(&mut e, &mut eg, publisher.addr, &srtp, now);
        for mut m in deliver(&mut viewer, now, &out) {
            let n = viewer
                .srtp_in
                .as_mut()
                .unwrap()
                .unprotect_rtp(&mut m)
                .expect("viewer decrypts");
            let p = RtpPacket::new_checked(&m[..n]).unwrap();
            assert_eq!((p.ssrc().0, p.payload_type().0), (0x2222, 109));
            received.push(String::from_utf8(p.payload().to_vec()).unwrap());
        }
        // Bad input between good packets.
        match seq {
            3 => {
                let bad = viewer.binding_request("not the password");
                send(&mut e, &mut eg, viewer.addr, &bad, now);
            }
            4 => {
                let mut garbage = vec![23u8, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 3];
                garbage.extend_from_slice(&[0xab; 40]);
                send(&mut e, &mut eg, publisher.addr, &garbage, now);
            }
            5 => {
                let mut forged = protect(&mut publisher, &opus(100, 0x1111, b"forged"));
                let last = forged.len() - 1;
                forged[last] ^= 0x01;
                send(&mut e, &mut eg, publisher.addr, &forged, now);
            }
            6 => {
                send(&mut e, &mut eg, publisher.addr, &srtp, now);
            }
            _ => {}
        }
        now += Duration::from_millis(20);
    }
    let expected: Vec<String> = (2..12).map(|s| format!("frame {s}")).collect();
    assert_eq!(received, expected, "every frame arrives once, in order");
    let pub_c = e.transport_counters(10).unwrap();
    assert_eq!(pub_c.dropped(DropReason::NotConnected), 1);
    assert_eq!(pub_c.dropped(DropReason::DtlsRejected), 1);
    assert_eq!(pub_c.dropped(DropReason::SrtpAuthFailed), 1);
    assert_eq!(pub_c.dropped(DropReason::Replayed), 1);
    assert_eq!(
        e.transport_counters(20)
            .unwrap()
            .dropped(DropReason::IceRejected),
        1
    );

    // A viewer NACK for a sent packet is answered, re-encrypted for the viewer.
    let seq_out = {
        let srtp = protect(&mut publisher, &opus(12, 0x1111, b"frame 12"));
        let out = send(&mut e, &mut eg, publisher.addr, &srtp, now);
        let mut m = deliver(&mut viewer, now, &out).pop().unwrap();
        let n = viewer
            .srtp_in
            .as_mut()
            .unwrap()
            .unprotect_rtp(&mut m)
            .unwrap();
        RtpPacket::new_checked(&m[..n]).unwrap().sequence_number()
    };
    let mut nack = vec![0x81, 205, 0, 3];
    nack.extend_from_slice(&0x9999u32.to_be_bytes());
    nack.extend_from_slice(&0x2222u32.to_be_bytes());
    nack.extend_from_slice(&seq_out.to_be_bytes());
    nack.extend_from_slice(&[0, 0]);
    let mut buf = vec![0u8; nack.len() + MAX_OVERHEAD];
    buf[..nack.len()].copy_from_slice(&nack);
    let n = viewer
        .srtp_out
        .as_mut()
        .unwrap()
        .protect_rtcp(&mut buf, nack.len())
        .unwrap();
    let out = send(&mut e, &mut eg, viewer.addr, &buf[..n], now);
    let resent = deliver(&mut viewer, now, &out);
    assert_eq!(resent.len(), 1, "retransmitted");
    // Same index as the original: SRTP replay protection at the viewer rejects a copy it
    // already has, which proves it is byte-identical in sequence and SSRC.
    let mut r = resent[0].clone();
    assert!(viewer
        .srtp_in
        .as_mut()
        .unwrap()
        .unprotect_rtp(&mut r)
        .is_err());
    assert_eq!(e.transport_counters(20).unwrap().retransmits_sent, 1);

    // Data channels: the viewer opens "_reliable" (as LiveKit clients do) and sends; the
    // message surfaces as an event. Control sends back on the same channel by label.
    let mut dc = DataChannels::new(DtlsRole::Client);
    let id = dc
        .open_channel("_reliable", true, Reliability::Reliable)
        .unwrap();
    pump_data(&mut e, &mut eg, &mut viewer, &mut dc, &mut now);
    dc.send(id, false, b"hello from the viewer").unwrap();
    pump_data(&mut e, &mut eg, &mut viewer, &mut dc, &mut now);
    let got: Vec<pb::DataMessage> = e
        .drain_events()
        .filter_map(|ev| match ev.body {
            Some(pb::event::Body::DataMessage(m)) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0].transport_id, got[0].label.as_str()),
        (20, "_reliable")
    );
    assert_eq!(got[0].data, b"hello from the viewer");
    ok(
        &mut e,
        now,
        Body::SendData(pb::SendData {
            room_id: 1,
            transport_id: 20,
            label: "_reliable".into(),
            binary: true,
            data: b"hello from the server".to_vec(),
            also_transport_ids: Vec::new(),
        }),
    );
    let events = pump_data(&mut e, &mut eg, &mut viewer, &mut dc, &mut now);
    let received: Vec<_> = events
        .into_iter()
        .filter_map(|ev| match ev {
            DataChannelEvent::Message {
                id: got_id,
                binary,
                data,
            } => Some((got_id, binary, data)),
            _ => None,
        })
        .collect();
    assert_eq!(
        received,
        vec![(id, true, b"hello from the server".to_vec())]
    );
    let missing = e.handle_command(
        now,
        pb::Command {
            request_id: 2,
            body: Some(Body::SendData(pb::SendData {
                room_id: 1,
                transport_id: 20,
                label: "_lossy".into(),
                binary: false,
                data: vec![1],
                also_transport_ids: Vec::new(),
            })),
        },
    );
    assert!(
        matches!(missing.body, Some(pb::event::Body::Error(_))),
        "unknown label refused"
    );
}

/// ICE restart through control (RFC 8445 §9). The viewer's network changes: signaling
/// restarts ICE with new credentials on both sides, and the viewer checks from a new
/// address. Until the new credentials nominate, media keeps going to the old address; the
/// old ufrag no longer routes a check from anywhere new, and once the new credentials have
/// nominated the old ones are refused from every address (dropped and counted). Media
/// moves to the new address under the same SRTP keys (no DTLS handshake is repeated), and
/// consent restarts there: the transport outlives the 30 s after its last old-path check,
/// and closes 30 s after its last new-path one.
#[test]
fn ice_restart_moves_the_viewer_and_keeps_dtls_and_srtp() {
    let t0 = Instant::now();
    let mut now = t0;
    let mut e = Engine::new(0, SERVER.parse().unwrap(), EngineConfig::default());
    let mut eg = CollectEgress::default();
    ok(&mut e, now, cmd::room(1));
    let mut publisher = Peer::new("10.2.0.1:5000", "pubC", "pubS");
    let mut viewer = Peer::new("10.2.0.2:6000", "subC", "subS");
    let fp = create_transport(&mut e, now, 10, &publisher);
    create_transport(&mut e, now, 20, &viewer);
    for p in [&mut publisher, &mut viewer] {
        p.dtls
            .set_remote_fingerprint(Fingerprint::parse(&fp).unwrap())
            .unwrap();
    }
    ok(&mut e, now, cmd::opus_track(1, 10, 1, 0x1111));
    ok(&mut e, now, cmd::down_track(1, 1, 2, 20, 0x2222, 111, 0));
    connect(&mut e, &mut eg, &mut publisher, &mut now);
    connect(&mut e, &mut eg, &mut viewer, &mut now);
    // Every event from here on, to check what was (not) reported.
    let mut events: Vec<pb::Event> = e.drain_events().collect();

    let stun = |e: &mut Engine, eg: &mut CollectEgress, from: SocketAddr, d: &[u8], now| {
        eg.begin(d);
        e.handle_datagram(now, from, &mut d.to_vec(), eg);
        eg.take()
    };
    // One publisher packet: where it went, and its sequence number as the viewer decrypts
    // it with the keys from the first (and only) DTLS handshake.
    let mut seq_in = 1u16;
    let mut relay = |e: &mut Engine,
                     eg: &mut CollectEgress,
                     publisher: &mut Peer,
                     viewer: &mut Peer,
                     now: Instant| {
        seq_in += 1;
        let srtp = protect(publisher, &opus(seq_in, 0x1111, b"voice"));
        let out = stun(e, eg, publisher.addr, &srtp, now);
        assert!(
            out.iter().all(|(_, d)| !(20..=63).contains(&d[0])),
            "no DTLS: the handshake is not repeated"
        );
        let [(to, d)] = &out[..] else {
            panic!("one copy for the viewer, got {}", out.len())
        };
        let mut m = d.clone();
        let n = viewer
            .srtp_in
            .as_mut()
            .unwrap()
            .unprotect_rtp(&mut m)
            .expect("the viewer's SRTP keys still work");
        (
            *to,
            RtpPacket::new_checked(&m[..n]).unwrap().sequence_number(),
        )
    };
    let old_addr = viewer.addr;
    let new_addr: SocketAddr = "10.2.9.9:7000".parse().unwrap();
    let (to, s1) = relay(&mut e, &mut eg, &mut publisher, &mut viewer, now);
    assert_eq!(to, old_addr);

    // 20 s without a check from the viewer (its network is going away); the publisher keeps
    // its own consent fresh.
    for _ in 0..4 {
        now += Duration::from_secs(5);
        ice(&mut e, &mut eg, &publisher, now);
        e.handle_timeout(now, &mut eg);
        eg.take();
    }

    // Refused restarts change nothing.
    let restart = |ufrag: &str, pwd: &str| pb::RestartIce {
        room_id: 1,
        transport_id: 20,
        local_ufrag: ufrag.into(),
        local_pwd: pwd.into(),
        remote_ufrag: "subC2".into(),
        remote_pwd: "client-password-9876543210".into(),
    };
    for (why, body) in [
        (
            "another transport's ufrag",
            restart("pubS", "pubS-password-0123456789"),
        ),
        (
            "the same ufrag",
            restart("subS", "subS-password-0123456789"),
        ),
        ("no password", restart("subS2", "")),
        (
            "an unknown transport",
            pb::RestartIce {
                transport_id: 99,
                ..restart("subS2", "x")
            },
        ),
    ] {
        let ev = e.handle_command(
            now,
            pb::Command {
                request_id: 3,
                body: Some(Body::RestartIce(body)),
            },
        );
        assert!(
            matches!(ev.body, Some(pb::event::Body::Error(_))),
            "{why} refused"
        );
    }
    let server_pwd2 = "subS2-password-0123456789";
    ok(&mut e, now, Body::RestartIce(restart("subS2", server_pwd2)));

    // Until the new credentials nominate, media keeps flowing on the old path.
    let (to, s2) = relay(&mut e, &mut eg, &mut publisher, &mut viewer, now);
    assert_eq!((to, s2), (old_addr, s1.wrapping_add(1)));

    // The old ufrag no longer routes: a check with the old credentials from the new address
    // is dropped unanswered and counted.
    let old_check = viewer.binding_request(&viewer.server_pwd.clone());
    let unknown = e.counters.dropped(DropReason::UnknownSource);
    assert!(stun(&mut e, &mut eg, new_addr, &old_check, now).is_empty());
    assert_eq!(e.counters.dropped(DropReason::UnknownSource), unknown + 1);

    // The viewer checks from its new address with the new credentials: answered there, and
    // the transport moves.
    viewer.addr = new_addr;
    viewer.ufrag = "subC2".into();
    viewer.server_ufrag = "subS2".into();
    viewer.server_pwd = server_pwd2.into();
    let rejected = e
        .transport_counters(20)
        .unwrap()
        .dropped(DropReason::IceRejected);
    let forged = viewer.binding_request("not the new password");
    assert!(stun(&mut e, &mut eg, new_addr, &forged, now).is_empty());
    let new_check = viewer.binding_request(server_pwd2);
    let replies = stun(&mut e, &mut eg, new_addr, &new_check, now);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].0, new_addr);
    assert_eq!(replies[0].1[0..2], [0x01, 0x01], "Binding success");
    let restarted_at = now;

    // Media now goes to the new address, numbered on from the old path, under the same keys.
    let (to, s3) = relay(&mut e, &mut eg, &mut publisher, &mut viewer, now);
    assert_eq!((to, s3), (new_addr, s2.wrapping_add(1)));

    // The old credentials are retired: refused from the new (selected) address, and from
    // the old one they route nowhere. Both counted.
    assert!(stun(&mut e, &mut eg, new_addr, &old_check, now).is_empty());
    assert_eq!(
        e.transport_counters(20)
            .unwrap()
            .dropped(DropReason::IceRejected),
        rejected + 2,
        "the forged check and the retired credentials"
    );
    assert!(stun(&mut e, &mut eg, old_addr, &old_check, now).is_empty());
    assert_eq!(e.counters.dropped(DropReason::UnknownSource), unknown + 2);

    // Consent restarted with the nomination: 35 s after the viewer's last old-path check
    // (more than the 30 s that would have failed it) the transport is alive. Nothing sent
    // meanwhile is DTLS.
    let idle_until = |e: &mut Engine,
                      eg: &mut CollectEgress,
                      publisher: &Peer,
                      events: &mut Vec<pb::Event>,
                      now: &mut Instant,
                      until: Instant| {
        while *now < until {
            *now += Duration::from_secs(5);
            ice(e, eg, publisher, *now);
            e.handle_timeout(*now, eg);
            assert!(eg.take().iter().all(|(_, d)| !(20..=63).contains(&d[0])));
            events.extend(e.drain_events());
        }
        !events.iter().any(|ev| {
            matches!(&ev.body, Some(pb::event::Body::TransportClosed(c)) if c.transport_id == 20)
        })
    };
    let until = t0 + Duration::from_secs(36);
    assert!(
        idle_until(&mut e, &mut eg, &publisher, &mut events, &mut now, until),
        "consent restarted at the new address"
    );
    let (to, _) = relay(&mut e, &mut eg, &mut publisher, &mut viewer, now);
    assert_eq!(to, new_addr);
    // And it is enforced there: 30 s without a check from the new address close it.
    let until = restarted_at + Duration::from_secs(31);
    assert!(
        !idle_until(&mut e, &mut eg, &publisher, &mut events, &mut now, until),
        "consent lapsed on the new path"
    );
    assert_eq!(
        events
            .iter()
            .filter(|ev| matches!(ev.body, Some(pb::event::Body::TransportConnected(_))))
            .count(),
        2,
        "each transport connected once, at setup, never again"
    );
}
