//! SRTP on the load side: the keys of every bench endpoint, and its two contexts.
//!
//! Prism's plain transports take SRTP keys from control (`CreatePlainTransport.srtp`),
//! one pair per transport: `send` for what the forwarder sends, `recv` for what it
//! receives. The bench gives every publisher and every sink its own keys, as real
//! subscribers have, so the forwarder encrypts each copy under a different key. The bench
//! end of a transport holds the mirror image: it protects with the forwarder's `recv` keys
//! and unprotects with its `send` keys.
//!
//! The load side uses the forwarder crate's own `srtp` module, so a packet the sinks
//! accept has a tag that module verified; the module itself is checked byte for byte
//! against libsrtp in its tests. Sinks decrypt every packet (the bench trailer is inside
//! the encrypted payload), which costs the load side CPU: see docs/performance.md.

use prism_forwarder::srtp::{SrtpContext, SrtpError, SrtpKeys, SrtpProfile};
use prism_proto::control as pb;

/// A transport end of the bench.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Publisher(usize),
    Sink(usize),
}

/// The RFC 4568 name control expects for `profile`.
pub fn profile_name(profile: SrtpProfile) -> &'static str {
    match profile {
        SrtpProfile::AeadAes128Gcm => "AEAD_AES_128_GCM",
        SrtpProfile::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
        SrtpProfile::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        // A profile added later: control also accepts OpenSSL's names.
        p => p.openssl_name(),
    }
}

/// Direction of a key, from the forwarder's side.
#[derive(Clone, Copy)]
enum Dir {
    /// What the forwarder sends (the bench end unprotects with it).
    ForwarderSends,
    /// What the forwarder receives (the bench end protects with it).
    ForwarderReceives,
}

/// Key and salt of one direction of one endpoint: distinct for every endpoint and
/// direction, and reproducible, so a failed run can be replayed.
fn key_and_salt(profile: SrtpProfile, at: Endpoint, dir: Dir) -> (Vec<u8>, Vec<u8>) {
    let (role, index) = match at {
        Endpoint::Publisher(i) => (1u64, i as u64),
        Endpoint::Sink(i) => (2u64, i as u64),
    };
    let d = match dir {
        Dir::ForwarderSends => 1u64,
        Dir::ForwarderReceives => 2u64,
    };
    // splitmix64 over (role, index, direction): cheap, well-mixed bytes.
    let mut state = (role << 56) ^ (d << 48) ^ index;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut bytes = Vec::with_capacity(32);
    for _ in 0..4 {
        bytes.extend_from_slice(&next().to_be_bytes());
    }
    let key = bytes[..profile.key_len()].to_vec();
    let salt = bytes[16..16 + profile.salt_len()].to_vec();
    (key, salt)
}

/// The keys control gives the forwarder for the transport of `at`.
pub fn params(profile: SrtpProfile, at: Endpoint) -> pb::SrtpParams {
    let (send_key, send_salt) = key_and_salt(profile, at, Dir::ForwarderSends);
    let (recv_key, recv_salt) = key_and_salt(profile, at, Dir::ForwarderReceives);
    pb::SrtpParams {
        profile: profile_name(profile).into(),
        send_key,
        send_salt,
        recv_key,
        recv_salt,
    }
}

/// The bench end of one SRTP transport.
pub struct EndpointSrtp {
    /// Protects what the bench sends to the forwarder.
    pub protect: SrtpContext,
    /// Unprotects what the forwarder sends to the bench.
    pub unprotect: SrtpContext,
}

impl std::fmt::Debug for EndpointSrtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSrtp")
            .field("profile", &self.protect.profile())
            .finish_non_exhaustive()
    }
}

impl EndpointSrtp {
    pub fn new(profile: SrtpProfile, at: Endpoint) -> Result<Self, SrtpError> {
        let ctx = |dir| {
            let (k, s) = key_and_salt(profile, at, dir);
            SrtpContext::new(profile, &SrtpKeys::new(profile, &k, &s)?)
        };
        Ok(Self {
            protect: ctx(Dir::ForwarderReceives)?,
            unprotect: ctx(Dir::ForwarderSends)?,
        })
    }
}

/// What unprotecting one datagram at a sink came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// SRTP: the plain RTP packet is the first `n` bytes.
    Rtp(usize),
    /// SRTCP, authenticated (feedback or reports, not bench media).
    Rtcp,
    /// The tag did not verify (wrong key, corrupted, or not SRTP at all).
    AuthFailed,
    /// Authentic, but already received or older than the replay window.
    Replayed,
}

/// RTCP packet types live in 192..=223 of the second byte (RFC 5761 §4).
pub fn is_rtcp(d: &[u8]) -> bool {
    d.get(1).is_some_and(|&b| (192..=223).contains(&b))
}

/// Unprotects one datagram a sink received, in place.
pub fn open(ctx: &mut SrtpContext, d: &mut [u8]) -> Opened {
    let r = if is_rtcp(d) {
        ctx.unprotect_rtcp(d).map(|_| Opened::Rtcp)
    } else {
        ctx.unprotect_rtp(d).map(Opened::Rtp)
    };
    match r {
        Ok(o) => o,
        Err(SrtpError::Replayed | SrtpError::TooOld) => Opened::Replayed,
        Err(_) => Opened::AuthFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_forwarder::srtp::MAX_OVERHEAD;

    /// The forwarder side of a transport, built from the control parameters the way the
    /// engine builds it (send keys protect, recv keys unprotect).
    fn forwarder_side(p: &pb::SrtpParams, profile: SrtpProfile) -> (SrtpContext, SrtpContext) {
        let send = SrtpKeys::new(profile, &p.send_key, &p.send_salt).unwrap();
        let recv = SrtpKeys::new(profile, &p.recv_key, &p.recv_salt).unwrap();
        (
            SrtpContext::new(profile, &send).unwrap(),
            SrtpContext::new(profile, &recv).unwrap(),
        )
    }

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 96, 0, 0, 0, 0, 0, 1, 0x10, 0, 0, 1];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0xab; 100]);
        p
    }

    #[test]
    fn both_ends_agree_and_other_endpoints_do_not() {
        for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::AesCm128HmacSha1_80] {
            let params = params(profile, Endpoint::Sink(3));
            assert_eq!(params.profile, profile_name(profile));
            let (mut fwd_send, mut fwd_recv) = forwarder_side(&params, profile);
            let mut mine = EndpointSrtp::new(profile, Endpoint::Sink(3)).unwrap();
            let mut other = EndpointSrtp::new(profile, Endpoint::Sink(4)).unwrap();

            // Forwarder → sink.
            let plain = rtp(7);
            let mut out = vec![0u8; plain.len() + MAX_OVERHEAD];
            let n = fwd_send.protect_rtp_into(&plain, &mut out).unwrap();
            let mut copy = out[..n].to_vec();
            assert_eq!(open(&mut other.unprotect, &mut copy), Opened::AuthFailed);
            let mut d = out[..n].to_vec();
            assert_eq!(open(&mut mine.unprotect, &mut d), Opened::Rtp(plain.len()));
            assert_eq!(&d[..plain.len()], &plain[..]);
            let mut again = out[..n].to_vec();
            assert_eq!(open(&mut mine.unprotect, &mut again), Opened::Replayed);

            // Sink → forwarder.
            let n = mine.protect.protect_rtp_into(&plain, &mut out).unwrap();
            assert_eq!(fwd_recv.unprotect_rtp(&mut out[..n]).unwrap(), plain.len());

            // SRTCP from the forwarder is recognised and authenticated.
            let mut pli = vec![0x81, 206, 0, 2, 0, 0, 0, 1, 0x10, 0, 0, 1];
            let len = pli.len();
            pli.resize(len + MAX_OVERHEAD, 0);
            let n = fwd_send.protect_rtcp(&mut pli, len).unwrap();
            assert_eq!(open(&mut mine.unprotect, &mut pli[..n]), Opened::Rtcp);
        }
    }

    #[test]
    fn keys_differ_per_endpoint_and_direction() {
        let p = SrtpProfile::AeadAes128Gcm;
        let a = params(p, Endpoint::Publisher(0));
        let b = params(p, Endpoint::Sink(0));
        let c = params(p, Endpoint::Sink(1));
        assert_ne!(a.send_key, a.recv_key);
        assert_ne!(a.send_key, b.send_key);
        assert_ne!(b.send_key, c.send_key);
        assert_eq!(a.send_salt.len(), 12);
        assert_eq!(
            params(SrtpProfile::AesCm128HmacSha1_80, Endpoint::Sink(0))
                .send_salt
                .len(),
            14
        );
    }
}
