//! `SrtpContext`: protect and unprotect RTP and RTCP for one direction of a transport.
//!
//! The context owns the keyed cipher contexts for SRTP and SRTCP and two fixed tables of
//! per-SSRC state: for RTP the replay window, whose top is also the highest index and so
//! carries the rollover counter; for RTCP the replay window and the last SRTCP index
//! sent. A sending context uses the RTP window only for its top (the index estimate); a
//! receiving one uses all of it.
//!
//! Invariants:
//! - Nothing after `new` allocates: buffers are the caller's, state is inline.
//! - On the receive side, state is read, the packet is authenticated, and only then is the
//!   state written back (or a slot taken). Any error leaves the context as it was.
//! - Every slice is taken with a checked accessor after explicit length checks, so
//!   malformed input ends in an `SrtpError`, never a panic.
//! - On any `unprotect_*` error the buffer's payload bytes are unspecified (GCM decrypts
//!   while it authenticates); the packet is to be dropped.

use super::crypto::{tags_equal, AesCtr, AesGcm, HmacSha1, GCM_TAG_LEN};
use super::kdf::{SessionKeys, SrtpKeys, RTCP_LABEL_OFFSET};
use super::replay::{estimate_index, ReplayWindow};
use super::table::SsrcTable;
use super::{SrtpError, SrtpProfile};
use crate::ids::Ssrc;

/// How many SSRCs a context tracks, per RTP and per RTCP.
pub const MAX_SSRCS: usize = 64;

/// Fixed RTP header length.
const RTP_HEADER_LEN: usize = 12;
/// The part of an SRTCP packet left in the clear: the first RTCP header and sender SSRC.
const RTCP_HEADER_LEN: usize = 8;
/// The E flag and 31-bit SRTCP index.
const E_INDEX_LEN: usize = 4;
const E_FLAG: u32 = 1 << 31;
const MAX_SRTCP_INDEX: u32 = E_FLAG - 1;

// The AES-CM variant holds two HMAC states inline (~1.7 KB). A context is built once and
// stays where it is, so the size costs nothing per packet and saves a pointer chase.
#[allow(clippy::large_enum_variant)]
enum Cipher {
    Cm { ctr: AesCtr, mac: HmacSha1 },
    Gcm(AesGcm),
}

/// The keyed primitives and session salt of one of SRTP or SRTCP.
struct Keyed {
    cipher: Cipher,
    salt: [u8; 14],
}

impl Keyed {
    fn new(profile: SrtpProfile, keys: &SessionKeys) -> Result<Self, SrtpError> {
        let cipher = if profile.is_aead() {
            Cipher::Gcm(AesGcm::new(&keys.key)?)
        } else {
            Cipher::Cm {
                ctr: AesCtr::new(&keys.key)?,
                mac: HmacSha1::new(&keys.auth),
            }
        };
        Ok(Self {
            cipher,
            salt: keys.salt,
        })
    }
}

/// RFC 3711 §4.1.1: `(salt << 16) XOR (SSRC << 64) XOR (index << 16)`.
fn cm_iv(salt: &[u8; 14], ssrc: Ssrc, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    xor_into(&mut iv[4..8], &ssrc.0.to_be_bytes());
    xor_into(&mut iv[8..14], &index.to_be_bytes()[2..]);
    iv
}

/// RFC 7714 §8.1 / §9.1: `salt XOR (00 00 | SSRC | 48-bit index)`. For SRTCP the index
/// field is `00 00 | 0 | SRTCP index`, which is the same layout for a 31-bit value.
fn gcm_iv(salt: &[u8; 14], ssrc: Ssrc, index: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv.copy_from_slice(&salt[..12]);
    xor_into(&mut iv[2..6], &ssrc.0.to_be_bytes());
    xor_into(&mut iv[6..12], &index.to_be_bytes()[2..]);
    iv
}

fn xor_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= s;
    }
}

fn rd16(b: &[u8], at: usize) -> Option<u16> {
    match b.get(at..at + 2)? {
        &[x, y] => Some(u16::from_be_bytes([x, y])),
        _ => None,
    }
}

fn rd32(b: &[u8], at: usize) -> Option<u32> {
    match b.get(at..at + 4)? {
        &[w, x, y, z] => Some(u32::from_be_bytes([w, x, y, z])),
        _ => None,
    }
}

/// Length of the RTP header (fixed part, CSRCs, extension block): the part SRTP leaves in
/// the clear. Checks the version and that the header fits in `b`.
fn rtp_header_len(b: &[u8]) -> Result<usize, SrtpError> {
    let &first = b.first().ok_or(SrtpError::Truncated)?;
    if b.len() < RTP_HEADER_LEN || first >> 6 != 2 {
        return Err(SrtpError::Truncated);
    }
    let mut len = RTP_HEADER_LEN + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = rd16(b, len + 2).ok_or(SrtpError::Truncated)?;
        len += 4 + 4 * usize::from(words);
    }
    if len > b.len() {
        return Err(SrtpError::Truncated);
    }
    Ok(len)
}

fn rtp_ids(b: &[u8]) -> Result<(Ssrc, u16), SrtpError> {
    let seq = rd16(b, 2).ok_or(SrtpError::Truncated)?;
    let ssrc = rd32(b, 8).ok_or(SrtpError::Truncated)?;
    Ok((Ssrc(ssrc), seq))
}

fn rtcp_ssrc(b: &[u8]) -> Result<Ssrc, SrtpError> {
    match b.first() {
        Some(first) if first >> 6 == 2 => {}
        _ => return Err(SrtpError::Truncated),
    }
    rd32(b, 4).map(Ssrc).ok_or(SrtpError::Truncated)
}

/// RFC 7714 §9.3 SRTCP AAD: the first 8 bytes, then the E flag and index.
fn rtcp_gcm_aad(header: &[u8], e_index: u32) -> Result<[u8; 12], SrtpError> {
    let mut aad = [0u8; RTCP_HEADER_LEN + E_INDEX_LEN];
    write(&mut aad, 0, header)?;
    write(&mut aad, RTCP_HEADER_LEN, &e_index.to_be_bytes())?;
    Ok(aad)
}

/// Splits `b` at `mid` without panicking.
fn split(b: &mut [u8], mid: usize) -> Result<(&mut [u8], &mut [u8]), SrtpError> {
    b.split_at_mut_checked(mid).ok_or(SrtpError::Truncated)
}

fn write(b: &mut [u8], at: usize, v: &[u8]) -> Result<(), SrtpError> {
    b.get_mut(at..at + v.len())
        .ok_or(SrtpError::BufferTooSmall)?
        .copy_from_slice(v);
    Ok(())
}

#[derive(Clone, Copy, Debug, Default)]
struct RtcpState {
    window: ReplayWindow,
    /// The last SRTCP index sent; 0 before the first, so the first sent is 1 (as libsrtp).
    last_sent: u32,
}

/// SRTP/SRTCP state for one direction of one transport: use one to protect what is sent
/// and another to unprotect what is received.
pub struct SrtpContext {
    profile: SrtpProfile,
    rtp: Keyed,
    rtcp: Keyed,
    rtp_streams: SsrcTable<ReplayWindow, MAX_SSRCS>,
    rtcp_streams: SsrcTable<RtcpState, MAX_SSRCS>,
}

impl core::fmt::Debug for SrtpContext {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SrtpContext")
            .field("profile", &self.profile)
            .field("rtp_ssrcs", &self.rtp_streams.len())
            .field("rtcp_ssrcs", &self.rtcp_streams.len())
            .finish_non_exhaustive()
    }
}

impl SrtpContext {
    /// Derives the session keys from `keys` and keys the cipher contexts. Slow path: this
    /// is where the context allocates (key schedules inside aws-lc), once.
    pub fn new(profile: SrtpProfile, keys: &SrtpKeys) -> Result<Self, SrtpError> {
        let rtp = SessionKeys::derive(profile, keys, 0)?;
        let rtcp = SessionKeys::derive(profile, keys, RTCP_LABEL_OFFSET)?;
        Self::from_session_keys(profile, &rtp, &rtcp)
    }

    pub(crate) fn from_session_keys(
        profile: SrtpProfile,
        rtp: &SessionKeys,
        rtcp: &SessionKeys,
    ) -> Result<Self, SrtpError> {
        Ok(Self {
            profile,
            rtp: Keyed::new(profile, rtp)?,
            rtcp: Keyed::new(profile, rtcp)?,
            rtp_streams: SsrcTable::new(),
            rtcp_streams: SsrcTable::new(),
        })
    }

    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// Forgets the RTP and RTCP state of `ssrc`, freeing its table slots (e.g. when a track
    /// ends). A packet of it seen later starts a new stream, replay window included.
    pub fn remove_ssrc(&mut self, ssrc: Ssrc) {
        self.rtp_streams.remove(ssrc);
        self.rtcp_streams.remove(ssrc);
    }

    /// Number of SSRCs with RTP state.
    pub fn rtp_ssrc_count(&self) -> usize {
        self.rtp_streams.len()
    }

    /// Authenticates the SRTP packet `buf`, checks it against the replay window, decrypts
    /// it in place and returns the length of the plain RTP packet (`buf.len()` minus the
    /// tag). The replay window and rollover counter move only if all of that succeeds.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.profile.rtp_tag_len();
        let body_end = buf.len().checked_sub(tag_len).ok_or(SrtpError::Truncated)?;
        let header_len = rtp_header_len(buf.get(..body_end).ok_or(SrtpError::Truncated)?)?;
        let (ssrc, seq) = rtp_ids(buf)?;

        let known = self.rtp_streams.get(ssrc).copied();
        let mut window = match known {
            Some(w) => w,
            None if self.rtp_streams.has_room_for(ssrc) => ReplayWindow::default(),
            None => return Err(SrtpError::TableFull),
        };
        let index = estimate_index(window.max(), seq)?;
        window.check(index)?;

        let (body, tag) = split(buf, body_end)?;
        let Keyed { cipher, salt } = &mut self.rtp;
        match cipher {
            Cipher::Cm { ctr, mac } => {
                let roc = (index >> 16) as u32;
                let mut m = mac.start();
                m.update(body);
                m.update(&roc.to_be_bytes());
                let full = mac.finish(m);
                if !tags_equal(full.get(..tag_len).unwrap_or(&[]), tag) {
                    return Err(SrtpError::AuthFailed);
                }
                let iv = cm_iv(salt, ssrc, index);
                let (_, payload) = split(body, header_len)?;
                ctr.apply(&iv, payload)?;
            }
            Cipher::Gcm(gcm) => {
                let iv = gcm_iv(salt, ssrc, index);
                let (header, payload) = split(body, header_len)?;
                gcm.open(&iv, header, payload, tag)?;
            }
        }

        window.accept(index);
        self.rtp_streams.insert(ssrc, window)?;
        Ok(body_end)
    }

    /// Protects the plain RTP packet `buf[..len]` in place and appends the tag; `buf` must
    /// have [`SrtpProfile::rtp_tag_len`] bytes of room past `len`. Returns the new length.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let plain = buf.get(..len).ok_or(SrtpError::BufferTooSmall)?;
        let header_len = rtp_header_len(plain)?;
        self.seal_rtp(buf, header_len, len, None)
    }

    /// Protects the plain RTP packet `plain` into `out`: the header is copied, the payload
    /// encrypted on the way, the tag appended. `out` needs `plain.len()` plus the tag
    /// length. Returns the length written.
    pub fn protect_rtp_into(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, SrtpError> {
        let header_len = rtp_header_len(plain)?;
        let (header, payload) = plain
            .split_at_checked(header_len)
            .ok_or(SrtpError::Truncated)?;
        write(out, 0, header)?;
        self.seal_rtp(out, header_len, plain.len(), Some(payload))
    }

    /// Protects a packet whose (rewritten) RTP header is already at the start of `out` and
    /// whose plain payload, padding included, is `payload`: the payload is encrypted into
    /// `out` after the header and the tag appended. This is the fan-out form: each
    /// subscriber's header is written straight into its egress slot and the shared
    /// ingress payload is read once per copy. Returns the length written.
    pub fn protect_rtp_with_header(
        &mut self,
        out: &mut [u8],
        payload: &[u8],
    ) -> Result<usize, SrtpError> {
        let header_len = rtp_header_len(out)?;
        let len = header_len + payload.len();
        self.seal_rtp(out, header_len, len, Some(payload))
    }

    /// Encrypts `buf[header_len..len]` (from `src` if given, else in place) and writes the
    /// tag at `len`.
    fn seal_rtp(
        &mut self,
        buf: &mut [u8],
        header_len: usize,
        len: usize,
        src: Option<&[u8]>,
    ) -> Result<usize, SrtpError> {
        let tag_len = self.profile.rtp_tag_len();
        let out_len = len + tag_len;
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall);
        }
        let (ssrc, seq) = rtp_ids(buf)?;
        let window = self.rtp_streams.get_or_insert(ssrc)?;
        let index = estimate_index(window.max(), seq)?;
        window.accept(index);

        let (body, rest) = split(buf, len)?;
        let tag = rest.get_mut(..tag_len).ok_or(SrtpError::BufferTooSmall)?;
        let (header, payload) = split(body, header_len)?;
        let Keyed { cipher, salt } = &mut self.rtp;
        match cipher {
            Cipher::Cm { ctr, mac } => {
                let iv = cm_iv(salt, ssrc, index);
                match src {
                    Some(s) => ctr.apply_into(&iv, s, payload)?,
                    None => ctr.apply(&iv, payload)?,
                }
                let roc = (index >> 16) as u32;
                let mut m = mac.start();
                m.update(header);
                m.update(payload);
                m.update(&roc.to_be_bytes());
                let full = mac.finish(m);
                tag.copy_from_slice(full.get(..tag_len).ok_or(SrtpError::Crypto)?);
            }
            Cipher::Gcm(gcm) => {
                let iv = gcm_iv(salt, ssrc, index);
                match src {
                    Some(s) => gcm.seal_into(&iv, header, s, payload, tag)?,
                    None => gcm.seal(&iv, header, payload, tag)?,
                }
            }
        }
        Ok(out_len)
    }

    /// Authenticates the SRTCP packet `buf`, checks its index against the replay window,
    /// decrypts it in place (if its E flag is set) and returns the length of the plain
    /// compound RTCP packet.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.profile.rtcp_tag_len();
        let plain_len = buf
            .len()
            .checked_sub(tag_len + E_INDEX_LEN)
            .filter(|&l| l >= RTCP_HEADER_LEN)
            .ok_or(SrtpError::Truncated)?;
        let ssrc = rtcp_ssrc(buf)?;
        // AES-CM: plain | E+index | tag. GCM: plain | tag | E+index.
        let e_index_at = if self.profile.is_aead() {
            plain_len + tag_len
        } else {
            plain_len
        };
        let e_index = rd32(buf, e_index_at).ok_or(SrtpError::Truncated)?;
        let index = e_index & MAX_SRTCP_INDEX;
        let encrypted = e_index & E_FLAG != 0;

        let known = self.rtcp_streams.get(ssrc).copied();
        let mut state = match known {
            Some(s) => s,
            None if self.rtcp_streams.has_room_for(ssrc) => RtcpState::default(),
            None => return Err(SrtpError::TableFull),
        };
        state.window.check(u64::from(index))?;

        let (plain, trailer) = split(buf, plain_len)?;
        let Keyed { cipher, salt } = &mut self.rtcp;
        match cipher {
            Cipher::Cm { ctr, mac } => {
                let (e_index_bytes, tag) = split(trailer, E_INDEX_LEN)?;
                let mut m = mac.start();
                m.update(plain);
                m.update(e_index_bytes);
                let full = mac.finish(m);
                if !tags_equal(full.get(..tag_len).unwrap_or(&[]), tag) {
                    return Err(SrtpError::AuthFailed);
                }
                if encrypted {
                    let iv = cm_iv(salt, ssrc, u64::from(index));
                    let (_, body) = split(plain, RTCP_HEADER_LEN)?;
                    ctr.apply(&iv, body)?;
                }
            }
            Cipher::Gcm(gcm) => {
                let iv = gcm_iv(salt, ssrc, u64::from(index));
                let (tag, _) = split(trailer, tag_len)?;
                if encrypted {
                    let (header, body) = split(plain, RTCP_HEADER_LEN)?;
                    let aad = rtcp_gcm_aad(header, e_index)?;
                    gcm.open(&iv, &aad, body, tag)?;
                } else {
                    // RFC 7714 §9.2: unencrypted SRTCP authenticates the whole packet and
                    // the E+index word as AAD. Those are not adjacent (the tag sits
                    // between), so the tag moves to the stack and the word next to the
                    // packet, making the AAD one slice; the bytes past `plain_len` are
                    // not part of the result anyway.
                    let mut saved = [0u8; GCM_TAG_LEN];
                    saved.copy_from_slice(tag);
                    write(trailer, 0, &e_index.to_be_bytes())?;
                    let aad = buf
                        .get(..plain_len + E_INDEX_LEN)
                        .ok_or(SrtpError::Truncated)?;
                    gcm.open(&iv, aad, &mut [], &saved)?;
                }
            }
        }

        state.window.accept(u64::from(index));
        self.rtcp_streams.insert(ssrc, state)?;
        Ok(plain_len)
    }

    /// Protects the compound RTCP packet `buf[..len]` in place under the next SRTCP index
    /// of its sender SSRC and appends the trailer; `buf` must have
    /// [`SrtpProfile::rtcp_overhead`] bytes of room past `len`. Returns the new length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.profile.rtcp_tag_len();
        let out_len = len + tag_len + E_INDEX_LEN;
        if buf.len() < out_len {
            return Err(SrtpError::BufferTooSmall);
        }
        if len < RTCP_HEADER_LEN {
            return Err(SrtpError::Truncated);
        }
        let ssrc = rtcp_ssrc(buf)?;
        let state = self.rtcp_streams.get_or_insert(ssrc)?;
        if state.last_sent >= MAX_SRTCP_INDEX {
            return Err(SrtpError::IndexExhausted);
        }
        let index = state.last_sent + 1;
        state.last_sent = index;
        let e_index = (E_FLAG | index).to_be_bytes();

        let (plain, trailer) = split(buf, len)?;
        let (header, body) = split(plain, RTCP_HEADER_LEN)?;
        let Keyed { cipher, salt } = &mut self.rtcp;
        match cipher {
            Cipher::Cm { ctr, mac } => {
                let iv = cm_iv(salt, ssrc, u64::from(index));
                ctr.apply(&iv, body)?;
                write(trailer, 0, &e_index)?;
                let mut m = mac.start();
                m.update(header);
                m.update(body);
                m.update(&e_index);
                let full = mac.finish(m);
                write(
                    trailer,
                    E_INDEX_LEN,
                    full.get(..tag_len).ok_or(SrtpError::Crypto)?,
                )?;
            }
            Cipher::Gcm(gcm) => {
                let iv = gcm_iv(salt, ssrc, u64::from(index));
                let tag = trailer
                    .get_mut(..GCM_TAG_LEN)
                    .ok_or(SrtpError::BufferTooSmall)?;
                let aad = rtcp_gcm_aad(header, u32::from_be_bytes(e_index))?;
                gcm.seal(&iv, &aad, body, tag)?;
                write(trailer, GCM_TAG_LEN, &e_index)?;
            }
        }
        Ok(out_len)
    }

    /// Sets the next SRTCP index `protect_rtcp` uses for `ssrc` (test vectors start
    /// mid-stream).
    #[cfg(test)]
    pub(crate) fn set_next_rtcp_index(&mut self, ssrc: Ssrc, index: u32) {
        if let Ok(s) = self.rtcp_streams.get_or_insert(ssrc) {
            s.last_sent = index.wrapping_sub(1);
        }
    }
}
