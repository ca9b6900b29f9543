//! DTLS endpoints handshaking with each other in memory, in virtual time, with loss and
//! garbage on the wire.

use std::time::{Duration, Instant};

use prism_forwarder::dtls::{
    srtp, DtlsCert, DtlsEndpoint, DtlsError, DtlsEvent, DtlsFailure, DtlsRole, Fingerprint,
    SrtpKeyMaterial,
};

/// Deterministic xorshift so lossy runs repeat exactly.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Default, Debug)]
struct Seen {
    connected: Option<(Option<SrtpKeyMaterial>, Fingerprint)>,
    failed: Option<DtlsFailure>,
    app: Vec<Vec<u8>>,
    closed: bool,
}

fn drain_events(ep: &mut DtlsEndpoint, seen: &mut Seen) {
    while let Some(e) = ep.poll_event() {
        match e {
            DtlsEvent::Connected {
                srtp,
                remote_fingerprint,
            } => {
                assert!(seen.connected.is_none(), "Connected twice");
                seen.connected = Some((srtp, remote_fingerprint));
            }
            DtlsEvent::Failed(f) => seen.failed = Some(f),
            DtlsEvent::ApplicationData(d) => seen.app.push(d),
            DtlsEvent::Closed => seen.closed = true,
            other => panic!("unexpected event {other:?}"),
        }
    }
}

struct Pair {
    client: DtlsEndpoint,
    server: DtlsEndpoint,
    cs: Seen,
    ss: Seen,
    now: Instant,
    rng: Rng,
    loss_percent: u64,
    garbage_every: usize,
    delivered: usize,
    max_datagram: usize,
}

impl Pair {
    fn new(client_cert: &DtlsCert, server_cert: &DtlsCert) -> Self {
        let now = Instant::now();
        let mut client = DtlsEndpoint::new(DtlsRole::Client, client_cert).unwrap();
        let server = DtlsEndpoint::new(DtlsRole::Server, server_cert).unwrap();
        client.handle_timeout(now);
        Pair {
            client,
            server,
            cs: Seen::default(),
            ss: Seen::default(),
            now,
            rng: Rng(0x9E37_79B9_7F4A_7C15),
            loss_percent: 0,
            garbage_every: 0,
            delivered: 0,
            max_datagram: 0,
        }
    }

    fn pair_with_fingerprints() -> Self {
        let cc = DtlsCert::generate().unwrap();
        let sc = DtlsCert::generate().unwrap();
        let mut p = Pair::new(&cc, &sc);
        p.client.set_remote_fingerprint(sc.fingerprint()).unwrap();
        p.server.set_remote_fingerprint(cc.fingerprint()).unwrap();
        p
    }

    fn garbage(&mut self) -> Vec<u8> {
        let len = (self.rng.next() % 200) as usize;
        let mut g: Vec<u8> = (0..len).map(|_| self.rng.next() as u8).collect();
        match self.rng.next() % 5 {
            // Looks like DTLS by first byte only.
            0 => g.insert(0, 22),
            // A valid-looking header with a bogus body in epoch 1.
            1 => {
                let mut r = vec![23, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 9];
                r.extend_from_slice(&(g.len() as u16).to_be_bytes());
                r.extend_from_slice(&g);
                g = r;
            }
            // Truncated header.
            2 => g = vec![22, 0xFE, 0xFD, 0, 0],
            // Wrong content type.
            3 => g.insert(0, 30),
            _ => {}
        }
        g
    }

    /// Moves datagrams both ways once; true if any moved.
    fn exchange(&mut self) -> bool {
        let mut moved = false;
        for dir in 0..2 {
            loop {
                let (from, to) = if dir == 0 {
                    (&mut self.client, &mut self.server)
                } else {
                    (&mut self.server, &mut self.client)
                };
                let Some(d) = from.poll_transmit() else { break };
                moved = true;
                self.max_datagram = self.max_datagram.max(d.len());
                if self.rng.chance(self.loss_percent) {
                    continue;
                }
                let _ = to.handle_datagram(self.now, &d);
                self.delivered += 1;
                if self.garbage_every > 0 && self.delivered % self.garbage_every == 0 {
                    let g = self.garbage();
                    let to = if dir == 0 {
                        &mut self.server
                    } else {
                        &mut self.client
                    };
                    let _ = to.handle_datagram(self.now, &g);
                }
            }
        }
        drain_events(&mut self.client, &mut self.cs);
        drain_events(&mut self.server, &mut self.ss);
        moved
    }

    /// Runs until both sides connected or one failed, or the virtual deadline passes.
    fn run_handshake(&mut self, limit: Duration) {
        let start = self.now;
        while self.now - start < limit {
            while self.exchange() {}
            let done = self.cs.connected.is_some() && self.ss.connected.is_some();
            if done || self.cs.failed.is_some() || self.ss.failed.is_some() {
                return;
            }
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(self.now + Duration::from_millis(100));
            self.now = next.max(self.now + Duration::from_millis(1));
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
        }
    }
}

fn assert_keys_agree(p: &Pair) {
    let (c_srtp, c_fp) = p.cs.connected.clone().expect("client connected");
    let (s_srtp, s_fp) = p.ss.connected.clone().expect("server connected");
    let c_srtp = c_srtp.expect("client srtp");
    let s_srtp = s_srtp.expect("server srtp");
    assert_eq!(c_srtp, s_srtp);
    assert_eq!(c_srtp.profile_id, srtp::SRTP_AEAD_AES_128_GCM);
    assert_eq!(c_srtp.material.len(), 2 * (16 + 12));
    assert!(c_srtp.material.iter().any(|&b| b != 0));
    let (cl, cr) = c_srtp.split(DtlsRole::Client).unwrap();
    let (sl, sr) = s_srtp.split(DtlsRole::Server).unwrap();
    assert_eq!(cl, sr);
    assert_eq!(cr, sl);
    assert!(p.client.remote_fingerprint_matches(&c_fp));
    assert!(!p.client.remote_fingerprint_matches(&s_fp));
    assert!(p.server.remote_fingerprint_matches(&s_fp));
}

#[test]
fn handshake_completes_and_keys_agree() {
    let mut p = Pair::pair_with_fingerprints();
    p.run_handshake(Duration::from_secs(5));
    assert_keys_agree(&p);
    assert!(p.client.is_connected() && p.server.is_connected());
    assert!(
        p.max_datagram <= prism_forwarder::dtls::MTU as usize,
        "{}",
        p.max_datagram
    );
    assert_eq!(p.client.stats().retransmits, 0);
    assert_eq!(p.server.stats().retransmits, 0);
    assert_eq!(p.client.poll_timeout(), None);
    assert_eq!(p.server.poll_timeout(), None);
}

#[test]
fn fingerprint_mismatch_fails_handshake() {
    let cc = DtlsCert::generate().unwrap();
    let sc = DtlsCert::generate().unwrap();
    let other = DtlsCert::generate().unwrap();
    let mut p = Pair::new(&cc, &sc);
    p.client
        .set_remote_fingerprint(other.fingerprint())
        .unwrap();
    p.server.set_remote_fingerprint(cc.fingerprint()).unwrap();
    p.run_handshake(Duration::from_secs(5));
    assert_eq!(p.cs.failed, Some(DtlsFailure::FingerprintMismatch));
    assert!(p.cs.connected.is_none());
    assert!(p.ss.connected.is_none());
    assert!(p.client.is_closed());
    assert_eq!(p.client.send_application_data(b"x"), Err(DtlsError::Closed));
}

#[test]
fn server_rejects_wrong_client_fingerprint() {
    let cc = DtlsCert::generate().unwrap();
    let sc = DtlsCert::generate().unwrap();
    let other = DtlsCert::generate().unwrap();
    let mut p = Pair::new(&cc, &sc);
    p.client.set_remote_fingerprint(sc.fingerprint()).unwrap();
    p.server
        .set_remote_fingerprint(other.fingerprint())
        .unwrap();
    p.run_handshake(Duration::from_secs(5));
    assert_eq!(p.ss.failed, Some(DtlsFailure::FingerprintMismatch));
    assert!(p.ss.connected.is_none());
}

#[test]
fn missing_remote_fingerprint_fails_closed() {
    let cc = DtlsCert::generate().unwrap();
    let sc = DtlsCert::generate().unwrap();
    let mut p = Pair::new(&cc, &sc);
    p.server.set_remote_fingerprint(cc.fingerprint()).unwrap();
    p.run_handshake(Duration::from_secs(5));
    assert_eq!(p.cs.failed, Some(DtlsFailure::NoRemoteFingerprint));
}

#[test]
fn fingerprint_cannot_be_changed_once_set() {
    let cert = DtlsCert::generate().unwrap();
    let other = DtlsCert::generate().unwrap();
    let mut ep = DtlsEndpoint::new(DtlsRole::Server, &cert).unwrap();
    ep.set_remote_fingerprint(other.fingerprint()).unwrap();
    ep.set_remote_fingerprint(other.fingerprint()).unwrap();
    assert_eq!(
        ep.set_remote_fingerprint(cert.fingerprint()),
        Err(DtlsError::FingerprintAlreadySet)
    );
}

#[test]
fn handshake_survives_30_percent_loss() {
    for seed in 1..=12u64 {
        let mut p = Pair::pair_with_fingerprints();
        p.rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
        p.loss_percent = 30;
        p.run_handshake(Duration::from_secs(120));
        assert!(
            p.cs.failed.is_none() && p.ss.failed.is_none(),
            "seed {seed}"
        );
        assert_keys_agree(&p);
    }
}

#[test]
fn lost_final_flight_is_resent_on_peer_retransmission() {
    let mut p = Pair::pair_with_fingerprints();
    // ClientHello → server.
    let ch = p.client.poll_transmit().unwrap();
    p.server.handle_datagram(p.now, &ch).unwrap();
    // Server flight 2 → client.
    while let Some(d) = p.server.poll_transmit() {
        p.client.handle_datagram(p.now, &d).unwrap();
    }
    // Client flight 3 → server; the server completes.
    while let Some(d) = p.client.poll_transmit() {
        p.server.handle_datagram(p.now, &d).unwrap();
    }
    drain_events(&mut p.server, &mut p.ss);
    assert!(p.ss.connected.is_some());
    // Server's final flight is lost.
    while p.server.poll_transmit().is_some() {}
    // The client's timer resends flight 3; the server answers with its final flight.
    p.run_handshake(Duration::from_secs(10));
    assert_keys_agree(&p);
    assert!(p.server.stats().retransmits >= 1);
}

#[test]
fn garbage_mid_handshake_is_dropped() {
    for seed in 1..=16u64 {
        let mut p = Pair::pair_with_fingerprints();
        p.rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        p.garbage_every = 1;
        p.run_handshake(Duration::from_secs(30));
        assert!(
            p.cs.failed.is_none() && p.ss.failed.is_none(),
            "seed {seed}"
        );
        assert_keys_agree(&p);
    }
    let mut p = Pair::pair_with_fingerprints();
    p.garbage_every = 1;
    p.run_handshake(Duration::from_secs(30));
    assert_keys_agree(&p);
    let dropped = p.client.stats().dropped_bad_record + p.server.stats().dropped_bad_record;
    assert!(dropped > 0);
    // Bad framing is reported as an error, not a panic, and the endpoint keeps going.
    let r = p.server.handle_datagram(p.now, &[22, 1, 2]);
    assert!(matches!(r, Err(DtlsError::BadRecord(_))), "{r:?}");
    assert!(matches!(
        p.server.handle_datagram(p.now, &[]),
        Err(DtlsError::BadRecord(_))
    ));
    assert!(p.server.is_connected());
}

#[test]
fn application_data_both_ways() {
    let mut p = Pair::pair_with_fingerprints();
    assert_eq!(
        p.client.send_application_data(b"early"),
        Err(DtlsError::NotConnected)
    );
    p.run_handshake(Duration::from_secs(5));
    assert_keys_agree(&p);
    p.client.send_application_data(b"hello server").unwrap();
    p.server.send_application_data(b"hello client").unwrap();
    let big = vec![0xAB; 1100];
    p.server.send_application_data(&big).unwrap();
    assert_eq!(
        p.server.send_application_data(&vec![0; 20000]),
        Err(DtlsError::TooLarge)
    );
    while p.exchange() {}
    assert_eq!(p.ss.app, vec![b"hello server".to_vec()]);
    assert_eq!(p.cs.app, vec![b"hello client".to_vec(), big]);

    p.client.close();
    while p.exchange() {}
    assert!(p.cs.closed);
    assert!(p.ss.closed);
    assert_eq!(p.server.send_application_data(b"x"), Err(DtlsError::Closed));
}

#[test]
fn handshake_gives_up_without_peer() {
    let cert = DtlsCert::generate().unwrap();
    let mut c = DtlsEndpoint::new(DtlsRole::Client, &cert).unwrap();
    let mut now = Instant::now();
    c.handle_timeout(now);
    let mut sent = 0;
    let mut failed = None;
    for _ in 0..20 {
        while c.poll_transmit().is_some() {
            sent += 1;
        }
        let Some(t) = c.poll_timeout() else { break };
        now = t;
        c.handle_timeout(now);
        while let Some(e) = c.poll_event() {
            if let DtlsEvent::Failed(f) = e {
                failed = Some(f);
            }
        }
    }
    assert_eq!(failed, Some(DtlsFailure::Timeout));
    assert_eq!(sent, 8, "ClientHello plus seven resends");
    assert!(c.is_closed());
}

#[test]
fn server_ignores_non_handshake_before_hello() {
    let cert = DtlsCert::generate().unwrap();
    let mut s = DtlsEndpoint::new(DtlsRole::Server, &cert).unwrap();
    let now = Instant::now();
    let mut rec = vec![23, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 1, 0, 4];
    rec.extend_from_slice(b"junk");
    let _ = s.handle_datagram(now, &rec);
    let mut hs = vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 2, 0, 4];
    hs.extend_from_slice(&[1, 0, 0, 0]);
    let _ = s.handle_datagram(now, &hs);
    // Whatever OpenSSL made of it, no panic and no event other than a failure.
    while let Some(e) = s.poll_event() {
        assert!(matches!(e, DtlsEvent::Failed(_)), "{e:?}");
    }
}

#[test]
fn short_encrypted_records_are_refused_at_every_stage() {
    // OpenSSL 3.0 turns an epoch-1 record shorter than an AEAD nonce + tag into a fatal
    // internal error; the framing check must refuse it first.
    for len in [1usize, 8, 16, 23, 24, 40] {
        for stage in 0..3 {
            let mut p = Pair::pair_with_fingerprints();
            let ch = p.client.poll_transmit().unwrap();
            let mut rec = vec![23, 0xFE, 0xFD, 0, 1, 0, 0, 0, 0, 0, 9];
            rec.extend_from_slice(&(len as u16).to_be_bytes());
            rec.extend(std::iter::repeat_n(0x5A, len));
            let inject = |p: &mut Pair| {
                let r = p.server.handle_datagram(p.now, &rec);
                assert_eq!(r.is_err(), len < 24, "len {len} stage {stage}: {r:?}");
            };
            if stage == 0 {
                inject(&mut p);
            }
            p.server.handle_datagram(p.now, &ch).unwrap();
            if stage == 1 {
                inject(&mut p);
            }
            p.run_handshake(Duration::from_secs(5));
            if stage == 2 {
                inject(&mut p);
            }
            assert_keys_agree(&p);
            assert!(p.server.is_connected(), "len {len} stage {stage}");
        }
    }
}
