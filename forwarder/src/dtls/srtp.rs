//! SRTP protection profiles negotiated through the DTLS `use_srtp` extension (RFC 5764) and
//! the keying material exported for them.
//!
//! The exporter label is "EXTRACTOR-dtls_srtp" with no context, and its output is laid out
//! as client key | server key | client salt | server salt (RFC 5764 §4.2). The DTLS client
//! protects what it sends with the client half; the split is by DTLS role, not by who
//! offered in SDP.

use super::DtlsRole;

/// The profiles Prism offers, most preferred first, in OpenSSL's `set_tlsext_use_srtp` syntax.
pub(crate) const OFFERED_PROFILES: &str = "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80";

/// IANA id of SRTP_AES128_CM_HMAC_SHA1_80 (RFC 5764 §4.1.2).
pub const SRTP_AES128_CM_SHA1_80: u16 = 0x0001;
/// IANA id of SRTP_AEAD_AES_128_GCM (RFC 7714 §14.2).
pub const SRTP_AEAD_AES_128_GCM: u16 = 0x0007;

/// Master key and master salt lengths, in bytes, of a supported profile.
pub fn key_salt_len(profile_id: u16) -> Option<(usize, usize)> {
    match profile_id {
        SRTP_AES128_CM_SHA1_80 => Some((16, 14)),
        SRTP_AEAD_AES_128_GCM => Some((16, 12)),
        _ => None,
    }
}

/// Keying material exported after a DTLS-SRTP handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeyMaterial {
    /// The negotiated profile's IANA id ([`SRTP_AEAD_AES_128_GCM`] or [`SRTP_AES128_CM_SHA1_80`]).
    pub profile_id: u16,
    /// `2 * (key_len + salt_len)` exported bytes, in RFC 5764 order.
    pub material: Vec<u8>,
}

impl std::fmt::Debug for SrtpKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print keys.
        f.debug_struct("SrtpKeyMaterial")
            .field("profile_id", &self.profile_id)
            .field("len", &self.material.len())
            .finish()
    }
}

/// One direction's master key and salt, borrowed from a [`SrtpKeyMaterial`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrtpMasterKey<'a> {
    pub key: &'a [u8],
    pub salt: &'a [u8],
}

impl SrtpKeyMaterial {
    /// Splits the material into (local, remote) master keys for an endpoint of `role`:
    /// local protects what this side sends, remote unprotects what it receives. `None` if
    /// the profile is unknown or the material has the wrong length.
    pub fn split(&self, role: DtlsRole) -> Option<(SrtpMasterKey<'_>, SrtpMasterKey<'_>)> {
        let (k, s) = key_salt_len(self.profile_id)?;
        if self.material.len() != 2 * (k + s) {
            return None;
        }
        let m = &self.material;
        let client = SrtpMasterKey {
            key: &m[..k],
            salt: &m[2 * k..2 * k + s],
        };
        let server = SrtpMasterKey {
            key: &m[k..2 * k],
            salt: &m[2 * k + s..],
        };
        Some(match role {
            DtlsRole::Client => (client, server),
            DtlsRole::Server => (server, client),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_follows_rfc5764_layout() {
        let material: Vec<u8> = (0..60).collect();
        let km = SrtpKeyMaterial {
            profile_id: SRTP_AES128_CM_SHA1_80,
            material,
        };
        let (local, remote) = km.split(DtlsRole::Client).unwrap();
        assert_eq!(local.key, &(0..16).collect::<Vec<u8>>()[..]);
        assert_eq!(remote.key, &(16..32).collect::<Vec<u8>>()[..]);
        assert_eq!(local.salt, &(32..46).collect::<Vec<u8>>()[..]);
        assert_eq!(remote.salt, &(46..60).collect::<Vec<u8>>()[..]);
        let (s_local, s_remote) = km.split(DtlsRole::Server).unwrap();
        assert_eq!(s_local, remote);
        assert_eq!(s_remote, local);
    }

    #[test]
    fn split_rejects_wrong_length_or_profile() {
        let km = SrtpKeyMaterial {
            profile_id: SRTP_AEAD_AES_128_GCM,
            material: vec![0; 60],
        };
        assert!(km.split(DtlsRole::Client).is_none());
        let km = SrtpKeyMaterial {
            profile_id: 0x0002,
            material: vec![0; 60],
        };
        assert!(km.split(DtlsRole::Client).is_none());
    }
}
