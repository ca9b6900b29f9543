//! ICE-lite agent tests: RFC 5769 vectors, checks built by a simulated full agent, nomination,
//! consent timers in virtual time, restart, and random input.

use super::*;
use crate::wire::stun::{attr, Class, Method, StunWriter};
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|c| (c as char).to_digit(16).unwrap() as u8)
        .collect();
    digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
}

/// RFC 5769 §2.1: USERNAME "evtj:h6vY", password "VOkJxbRl1RmTxUk/WvJxBt".
fn rfc5769_request() -> Vec<u8> {
    hex("00010058 2112a442 b7e7a701 bc34d686 fa87dfae
         80220010 5354554e 20746573 7420636c 69656e74
         00240004 6e0001ff
         80290008 932ff9b1 51263b36
         00060009 6576746a 3a683676 59202020
         00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
         80280004 e57a3bcf")
}

const RFC_PWD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
const LOCAL_UFRAG: &str = "srvU";
const LOCAL_PWD: &str = "server-password-0123456789";
const REMOTE_UFRAG: &str = "cliU";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// What a full agent (the browser) sends: a Binding request keyed with the server's pwd.
fn check(local: &str, remote: &str, pwd: &str, use_candidate: bool, tid: u8) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let t = [tid; 12];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::BINDING, &t).unwrap();
    w.attr(attr::USERNAME, format!("{local}:{remote}").as_bytes())
        .unwrap();
    w.attr(attr::PRIORITY, &0x6e00_01ffu32.to_be_bytes())
        .unwrap();
    w.attr(attr::ICE_CONTROLLING, &[1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    if use_candidate {
        w.attr(attr::USE_CANDIDATE, &[]).unwrap();
    }
    let key = pwd.as_bytes().to_vec();
    let n = w
        .finish_with_integrity(&|d: &[u8]| hmac_sha1(&key, &[d]))
        .unwrap();
    buf[..n].to_vec()
}

fn agent() -> IceLite {
    let mut a = IceLite::new(LOCAL_UFRAG, LOCAL_PWD);
    a.set_remote_credentials(REMOTE_UFRAG, "client-password-abcdefghij");
    a
}

fn ok_check(a: &mut IceLite, now: Instant, from: SocketAddr, nominate: bool) -> IceOutcome {
    let req = check(LOCAL_UFRAG, REMOTE_UFRAG, LOCAL_PWD, nominate, 7);
    let mut reply = [0u8; 128];
    a.handle_stun(now, from, &req, &mut reply)
}

fn drain(a: &mut IceLite) -> Vec<IceEvent> {
    std::iter::from_fn(|| a.poll_event()).collect()
}

/// Checks that a reply is a Binding success for `tid`, mapped to `from`, keyed with `pwd`.
fn assert_reply(reply: &[u8], tid: [u8; 12], from: SocketAddr, pwd: &str) {
    let m = StunMessage::new_checked(reply).unwrap();
    let r = BindingResponseRepr::parse(&m).unwrap();
    assert_eq!(r.transaction_id, tid);
    assert_eq!(r.xor_mapped, from);
    assert_eq!(m.check_fingerprint(), Some(true));
    let key = pwd.as_bytes();
    assert!(m.verify_message_integrity(&|h, r| hmac_sha1(key, &[h, r])));
}

#[test]
fn rfc5769_request_verifies_and_is_answered() {
    let mut a = IceLite::new("evtj", RFC_PWD);
    a.set_remote_credentials("h6vY", "unused");
    let req = rfc5769_request();
    let from = addr("192.0.2.1:32853");
    let mut reply = [0u8; 128];
    let out = a.handle_stun(Instant::now(), from, &req, &mut reply);
    let IceOutcome::Reply { len, nominated } = out else {
        panic!("dropped: {out:?}");
    };
    assert!(!nominated, "the sample has no USE-CANDIDATE");
    let tid = StunMessage::new_checked(&req[..]).unwrap().transaction_id();
    assert_reply(&reply[..len], tid, from, RFC_PWD);
    assert_eq!(a.state(), IceState::New);
}

#[test]
fn rfc5769_request_with_wrong_password_is_bad_integrity() {
    let mut a = IceLite::new("evtj", "not-the-password-at-all");
    let mut reply = [0u8; 128];
    let out = a.handle_stun(
        Instant::now(),
        addr("192.0.2.1:1"),
        &rfc5769_request(),
        &mut reply,
    );
    assert_eq!(out, IceOutcome::Dropped(IceDrop::BadIntegrity));
}

#[test]
fn check_from_simulated_client_is_answered() {
    let mut a = agent();
    let from = addr("[2001:db8::1]:40000");
    let req = check(LOCAL_UFRAG, REMOTE_UFRAG, LOCAL_PWD, false, 9);
    let mut reply = [0u8; 128];
    let IceOutcome::Reply { len, .. } = a.handle_stun(Instant::now(), from, &req, &mut reply)
    else {
        panic!("dropped");
    };
    assert_reply(&reply[..len], [9; 12], from, LOCAL_PWD);
}

#[test]
fn rejections_are_typed() {
    let mut a = agent();
    let now = Instant::now();
    let from = addr("10.0.0.1:5000");
    let mut reply = [0u8; 128];
    let bad_pwd = check(LOCAL_UFRAG, REMOTE_UFRAG, "wrong", true, 1);
    assert_eq!(
        a.handle_stun(now, from, &bad_pwd, &mut reply),
        IceOutcome::Dropped(IceDrop::BadIntegrity)
    );
    let bad_local = check("nope", REMOTE_UFRAG, LOCAL_PWD, true, 1);
    assert_eq!(
        a.handle_stun(now, from, &bad_local, &mut reply),
        IceOutcome::Dropped(IceDrop::UnknownUser)
    );
    let bad_remote = check(LOCAL_UFRAG, "other", LOCAL_PWD, true, 1);
    assert_eq!(
        a.handle_stun(now, from, &bad_remote, &mut reply),
        IceOutcome::Dropped(IceDrop::UnknownUser)
    );
    let mut bad_fp = check(LOCAL_UFRAG, REMOTE_UFRAG, LOCAL_PWD, true, 1);
    let last = bad_fp.len() - 1;
    bad_fp[last] ^= 1;
    assert_eq!(
        a.handle_stun(now, from, &bad_fp, &mut reply),
        IceOutcome::Dropped(IceDrop::BadFingerprint)
    );
    assert_eq!(
        a.handle_stun(now, from, &[0x80, 1, 2, 3], &mut reply),
        IceOutcome::Dropped(IceDrop::Malformed)
    );
    // A Binding success response is not a request.
    let resp = BindingResponseRepr {
        transaction_id: [1; 12],
        xor_mapped: from,
    };
    let mut rb = [0u8; 64];
    let n = resp.emit(&mut rb).unwrap();
    assert_eq!(
        a.handle_stun(now, from, &rb[..n], &mut reply),
        IceOutcome::Dropped(IceDrop::NotARequest)
    );
    // No USERNAME at all.
    let mut nb = [0u8; 64];
    let w = StunWriter::new(&mut nb, Class::Request, Method::BINDING, &[2; 12]).unwrap();
    let n = w.finish().unwrap();
    assert_eq!(
        a.handle_stun(now, from, &nb[..n], &mut reply),
        IceOutcome::Dropped(IceDrop::UnknownUser)
    );
    // Valid, but the reply does not fit.
    let good = check(LOCAL_UFRAG, REMOTE_UFRAG, LOCAL_PWD, true, 1);
    assert_eq!(
        a.handle_stun(now, from, &good, &mut reply[..40]),
        IceOutcome::Dropped(IceDrop::ReplyBufferTooSmall)
    );
    // None of that touched the state.
    assert_eq!(a.state(), IceState::New);
    assert_eq!(a.selected(), None);
    assert!(drain(&mut a).is_empty());
}

#[test]
fn checks_before_remote_credentials_are_accepted_by_password() {
    let mut a = IceLite::new(LOCAL_UFRAG, LOCAL_PWD);
    let from = addr("10.0.0.1:5000");
    let out = ok_check(&mut a, Instant::now(), from, true);
    assert!(matches!(
        out,
        IceOutcome::Reply {
            nominated: true,
            ..
        }
    ));
    assert_eq!(a.selected(), Some(from));
}

#[test]
fn nomination_selects_and_newer_nomination_switches() {
    let mut a = agent();
    let t0 = Instant::now();
    let wifi = addr("192.168.1.20:50000");
    let lte = addr("100.64.3.4:61000");
    // A plain check does not select.
    assert!(matches!(
        ok_check(&mut a, t0, wifi, false),
        IceOutcome::Reply {
            nominated: false,
            ..
        }
    ));
    assert_eq!(a.selected(), None);
    assert_eq!(a.poll_timeout(), None);
    // USE-CANDIDATE selects.
    assert!(matches!(
        ok_check(&mut a, t0, wifi, true),
        IceOutcome::Reply {
            nominated: true,
            ..
        }
    ));
    assert_eq!(a.selected(), Some(wifi));
    assert_eq!(a.state(), IceState::Connected);
    assert_eq!(
        drain(&mut a),
        vec![
            IceEvent::Selected(wifi),
            IceEvent::State(IceState::Connected)
        ]
    );
    // A check from another path without USE-CANDIDATE does not switch.
    ok_check(&mut a, t0, lte, false);
    assert_eq!(a.selected(), Some(wifi));
    // The client moves: a nomination from the new path switches.
    ok_check(&mut a, t0 + Duration::from_secs(1), lte, true);
    assert_eq!(a.selected(), Some(lte));
    assert_eq!(drain(&mut a), vec![IceEvent::Selected(lte)]);
    // Re-nominating the same path emits nothing.
    ok_check(&mut a, t0 + Duration::from_secs(2), lte, true);
    assert!(drain(&mut a).is_empty());
}

#[test]
fn consent_expires_in_virtual_time() {
    let cfg = IceConfig::default();
    let mut a = agent();
    let t0 = Instant::now();
    let from = addr("10.1.1.1:3478");
    let other = addr("10.9.9.9:3478");
    ok_check(&mut a, t0, from, true);
    drain(&mut a);
    assert_eq!(a.poll_timeout(), Some(t0 + cfg.disconnected_after));

    // Checks from the selected address keep it alive.
    let t1 = t0 + Duration::from_secs(4);
    ok_check(&mut a, t1, from, false);
    a.handle_timeout(t0 + cfg.disconnected_after);
    assert_eq!(a.state(), IceState::Connected);

    // A check from another address does not refresh consent.
    ok_check(&mut a, t1 + Duration::from_secs(3), other, false);
    let t2 = t1 + cfg.disconnected_after;
    assert_eq!(a.poll_timeout(), Some(t2));
    a.handle_timeout(t2);
    assert_eq!(a.state(), IceState::Disconnected);
    assert_eq!(a.selected(), Some(from), "disconnected still sends");
    assert_eq!(drain(&mut a), vec![IceEvent::State(IceState::Disconnected)]);

    // A check brings it back.
    let t3 = t2 + Duration::from_secs(1);
    ok_check(&mut a, t3, from, false);
    assert_eq!(a.state(), IceState::Connected);
    assert_eq!(drain(&mut a), vec![IceEvent::State(IceState::Connected)]);

    // Silence: disconnected, then failed at 30 s.
    a.handle_timeout(t3 + cfg.disconnected_after);
    assert_eq!(a.poll_timeout(), Some(t3 + cfg.failed_after));
    a.handle_timeout(t3 + cfg.failed_after - Duration::from_millis(1));
    assert_eq!(a.state(), IceState::Disconnected);
    a.handle_timeout(t3 + cfg.failed_after);
    assert_eq!(a.state(), IceState::Failed);
    assert_eq!(a.selected(), None, "no media after consent is lost");
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(
        drain(&mut a),
        vec![
            IceEvent::State(IceState::Disconnected),
            IceEvent::State(IceState::Failed)
        ]
    );

    // Late checks are answered but do not revive the transport.
    let late = t3 + Duration::from_secs(40);
    assert!(matches!(
        ok_check(&mut a, late, from, true),
        IceOutcome::Reply {
            nominated: false,
            ..
        }
    ));
    assert_eq!(a.state(), IceState::Failed);
}

#[test]
fn restart_keeps_path_until_new_credentials_nominate() {
    let mut a = agent();
    let t0 = Instant::now();
    let old_path = addr("10.0.0.1:1000");
    let new_path = addr("10.0.0.2:2000");
    ok_check(&mut a, t0, old_path, true);
    drain(&mut a);

    a.restart("newU", "new-password-0123456789");
    a.set_remote_credentials("cli2", "client-pwd-2");
    assert!(a.restart_pending());
    assert_eq!(a.selected(), Some(old_path));
    assert_eq!(a.local_ufrag(), "newU");

    // Consent checks under the old credentials still work and refresh consent, but the
    // old credentials cannot nominate a new path any more.
    let t1 = t0 + Duration::from_secs(5);
    let mut reply = [0u8; 128];
    let old = check(LOCAL_UFRAG, REMOTE_UFRAG, LOCAL_PWD, true, 3);
    let out = a.handle_stun(t1, new_path, &old, &mut reply);
    assert!(matches!(
        out,
        IceOutcome::Reply {
            nominated: false,
            ..
        }
    ));
    assert_eq!(a.selected(), Some(old_path));
    let out = a.handle_stun(t1, old_path, &old, &mut reply);
    assert!(matches!(out, IceOutcome::Reply { .. }));
    assert_eq!(
        a.poll_timeout(),
        Some(t1 + IceConfig::default().disconnected_after)
    );

    // The new credentials with the new pwd; the old pwd under the new ufrag fails.
    let wrong = check("newU", "cli2", LOCAL_PWD, true, 4);
    assert_eq!(
        a.handle_stun(t1, new_path, &wrong, &mut reply),
        IceOutcome::Dropped(IceDrop::BadIntegrity)
    );
    let new = check("newU", "cli2", "new-password-0123456789", true, 5);
    let IceOutcome::Reply { len, nominated } = a.handle_stun(t1, new_path, &new, &mut reply) else {
        panic!("dropped");
    };
    assert!(nominated);
    assert_reply(&reply[..len], [5; 12], new_path, "new-password-0123456789");
    assert_eq!(a.selected(), Some(new_path));
    assert!(!a.restart_pending());
    assert_eq!(drain(&mut a), vec![IceEvent::Selected(new_path)]);

    // The old credentials are retired.
    assert_eq!(
        a.handle_stun(t1, old_path, &old, &mut reply),
        IceOutcome::Dropped(IceDrop::UnknownUser)
    );
}

#[test]
fn restart_after_failure_starts_over() {
    let mut a = agent();
    let t0 = Instant::now();
    let from = addr("10.0.0.1:1000");
    ok_check(&mut a, t0, from, true);
    a.handle_timeout(t0 + Duration::from_secs(31));
    assert_eq!(a.state(), IceState::Failed);
    a.restart("r2", "restart-password-xyz");
    assert_eq!(a.state(), IceState::New);
    assert!(!a.restart_pending());
    let mut reply = [0u8; 128];
    let req = check("r2", "whatever", "restart-password-xyz", true, 6);
    let out = a.handle_stun(t0 + Duration::from_secs(32), from, &req, &mut reply);
    assert!(matches!(
        out,
        IceOutcome::Reply {
            nominated: true,
            ..
        }
    ));
    assert_eq!(a.state(), IceState::Connected);
}

#[test]
fn username_of_splits_local_and_remote() {
    let req = check("srvU", "cliU", LOCAL_PWD, false, 1);
    assert_eq!(username_of(&req), Some((&b"srvU"[..], &b"cliU"[..])));
    assert_eq!(
        username_of(&rfc5769_request()),
        Some((&b"evtj"[..], &b"h6vY"[..]))
    );
    assert_eq!(username_of(&[0u8; 10]), None);
    let mut nb = [0u8; 64];
    let mut w = StunWriter::new(&mut nb, Class::Request, Method::BINDING, &[2; 12]).unwrap();
    w.attr(attr::USERNAME, b"nocolon").unwrap();
    let n = w.finish().unwrap();
    assert_eq!(username_of(&nb[..n]), None);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut a = agent();
        let mut reply = [0u8; 128];
        let out = a.handle_stun(Instant::now(), addr("10.0.0.1:1"), &data, &mut reply);
        prop_assert!(matches!(out, IceOutcome::Dropped(_)));
        let _ = username_of(&data);
    }

    /// Any single-bit flip in a valid check is caught (FINGERPRINT covers every byte, and
    /// MESSAGE-INTEGRITY all but the fingerprint) and never panics. The one exception: a
    /// flip in FINGERPRINT's own type field turns it into an unknown attribute after
    /// MESSAGE-INTEGRITY, which RFC 8489 says to ignore.
    #[test]
    fn corrupted_checks_never_panic(pos in 0usize..200, bit in 0u8..8) {
        let mut req = check(LOCAL_UFRAG, REMOTE_UFRAG, LOCAL_PWD, true, 1);
        let at = pos % req.len();
        req[at] ^= 1 << bit;
        let mut a = agent();
        let mut reply = [0u8; 128];
        let out = a.handle_stun(Instant::now(), addr("10.0.0.1:1"), &req, &mut reply);
        let fp_type = req.len() - 8..req.len() - 6;
        prop_assert!(matches!(out, IceOutcome::Dropped(_)) || fp_type.contains(&at));
    }
}
