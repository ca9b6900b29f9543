//! Master keys from DTLS-SRTP and the RFC 3711 §4.3 session key derivation.
//!
//! DTLS-SRTP (RFC 5764 §4.2) exports `client_key | server_key | client_salt | server_salt`;
//! the client protects with the client pair and the server with the server pair. Each
//! master pair is expanded by the AES-CM PRF into the session encryption key, session salt
//! and (for HMAC profiles) the 160-bit session authentication key, once for SRTP (labels
//! 0-2) and once for SRTCP (labels 3-5). The key derivation rate is 0, so the index term of
//! the PRF input is always zero and derivation happens exactly once per context.
//!
//! RFC 7714 profiles carry a 96-bit master salt; it occupies the first 12 of the 14 salt
//! bytes the PRF input is built from, the last two being zero (as libsrtp does).

use super::crypto::{aes_cm_prf, SHA1_LEN};
use super::{SrtpError, SrtpProfile};

/// A master key and salt for one direction. For 12-byte-salt profiles (AEAD) the last two
/// bytes of `master_salt` are zero.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub master_key: [u8; 16],
    pub master_salt: [u8; 14],
}

impl core::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Key material stays out of logs.
        f.write_str("SrtpKeys { .. }")
    }
}

impl SrtpKeys {
    /// Checks `key` and `salt` against the profile's lengths.
    pub fn new(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Result<Self, SrtpError> {
        if key.len() != profile.key_len() || salt.len() != profile.salt_len() {
            return Err(SrtpError::BadKeyLength);
        }
        let mut keys = SrtpKeys {
            master_key: [0; 16],
            master_salt: [0; 14],
        };
        keys.master_key.copy_from_slice(key);
        keys.master_salt[..salt.len()].copy_from_slice(salt);
        Ok(keys)
    }

    /// Splits RFC 5764 §4.2 keying material (the DTLS exporter output with label
    /// `EXTRACTOR-dtls_srtp`, [`SrtpProfile::keying_material_len`] bytes) into
    /// `(local, remote)`: the keys this endpoint protects with and the keys it
    /// unprotects with. Extra trailing bytes are ignored.
    pub fn from_dtls_export(
        profile: SrtpProfile,
        material: &[u8],
        is_client: bool,
    ) -> Result<(SrtpKeys, SrtpKeys), SrtpError> {
        let (k, s) = (profile.key_len(), profile.salt_len());
        if material.len() < 2 * (k + s) {
            return Err(SrtpError::BadKeyLength);
        }
        let client = SrtpKeys::new(profile, &material[..k], &material[2 * k..2 * k + s])?;
        let server = SrtpKeys::new(
            profile,
            &material[k..2 * k],
            &material[2 * k + s..2 * (k + s)],
        )?;
        Ok(if is_client {
            (client, server)
        } else {
            (server, client)
        })
    }
}

/// RFC 3711 §4.3.1 labels; SRTCP's are SRTP's plus 3.
const LABEL_ENCRYPTION: u8 = 0;
const LABEL_AUTH: u8 = 1;
const LABEL_SALT: u8 = 2;
pub(crate) const RTCP_LABEL_OFFSET: u8 = 3;

/// The session keys of one of SRTP or SRTCP. `salt` holds 14 bytes for AES-CM and 12
/// (then two zero bytes) for GCM; `auth` is unused by GCM.
#[derive(Clone)]
pub(crate) struct SessionKeys {
    pub(crate) key: [u8; 16],
    pub(crate) salt: [u8; 14],
    pub(crate) auth: [u8; SHA1_LEN],
}

/// One PRF output: `x = (label << 48) XOR master_salt`, padded to a counter block.
fn prf(master: &SrtpKeys, label: u8, out: &mut [u8]) -> Result<(), SrtpError> {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(&master.master_salt);
    // key_id = label || r (r = 0 with KDR 0) is 7 bytes aligned to the salt's low end.
    iv[7] ^= label;
    aes_cm_prf(&master.master_key, &iv, out)
}

impl SessionKeys {
    /// Derives the SRTP (`label_offset` 0) or SRTCP (`RTCP_LABEL_OFFSET`) session keys.
    pub(crate) fn derive(
        profile: SrtpProfile,
        master: &SrtpKeys,
        label_offset: u8,
    ) -> Result<Self, SrtpError> {
        let mut keys = SessionKeys {
            key: [0; 16],
            salt: [0; 14],
            auth: [0; SHA1_LEN],
        };
        prf(master, LABEL_ENCRYPTION + label_offset, &mut keys.key)?;
        let salt_len = profile.salt_len();
        prf(
            master,
            LABEL_SALT + label_offset,
            &mut keys.salt[..salt_len],
        )?;
        if !profile.is_aead() {
            prf(master, LABEL_AUTH + label_offset, &mut keys.auth)?;
        }
        Ok(keys)
    }
}
