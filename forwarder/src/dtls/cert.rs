//! The endpoint's certificate and the SHA-256 fingerprints that SDP carries.
//!
//! WebRTC authenticates DTLS peers by certificate fingerprint, not by a CA chain: each side
//! generates a throwaway self-signed certificate, puts `a=fingerprint:sha-256 AB:CD:..` in its
//! SDP, and the handshake succeeds only if the peer's certificate hashes to that value
//! (RFC 8122 §5, RFC 8827 §6.5). A [`DtlsCert`] is cheap to clone (the OpenSSL objects are
//! reference counted), so one per process or per core can serve every transport.
//!
//! Invariant: a [`Fingerprint`] always holds exactly 32 bytes of SHA-256 digest; parsing
//! rejects any other algorithm or length rather than guessing.

use std::fmt;

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509NameBuilder, X509Ref, X509};

use super::DtlsError;

/// How long before "now" a generated certificate becomes valid, so that a peer whose clock
/// runs behind ours still accepts it.
const VALID_BEFORE_SECS: i64 = 30 * 24 * 3600;
/// How long after "now" a generated certificate stays valid.
const VALID_FOR_DAYS: u32 = 365;

/// A self-signed certificate and its private key.
#[derive(Clone)]
pub struct DtlsCert {
    pub(crate) key: PKey<Private>,
    pub(crate) x509: X509,
    fingerprint: Fingerprint,
}

impl fmt::Debug for DtlsCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("DtlsCert")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl DtlsCert {
    /// Generates an ECDSA P-256 key and a self-signed certificate for it (CN "prism",
    /// random 128-bit serial, valid from 30 days ago to a year from now).
    ///
    /// Reads the wall clock for the validity window: this is setup, not protocol time.
    pub fn generate() -> Result<Self, DtlsError> {
        Self::try_generate().map_err(|_| DtlsError::Crypto)
    }

    fn try_generate() -> Result<Self, openssl::error::ErrorStack> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let key = PKey::from_ec_key(EcKey::generate(&group)?)?;

        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, "prism")?;
        let name = name.build();

        let mut serial = BigNum::new()?;
        // Top bit clear keeps the DER integer positive without a padding byte.
        serial.rand(127, MsbOption::MAYBE_ZERO, false)?;

        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);

        let mut b = X509::builder()?;
        b.set_version(2)?;
        b.set_serial_number(serial.to_asn1_integer()?.as_ref())?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(&key)?;
        b.set_not_before(Asn1Time::from_unix((unix_now - VALID_BEFORE_SECS).max(0))?.as_ref())?;
        b.set_not_after(Asn1Time::days_from_now(VALID_FOR_DAYS)?.as_ref())?;
        b.sign(&key, MessageDigest::sha256())?;
        let x509 = b.build();
        let fingerprint = Fingerprint::of(&x509).ok_or_else(openssl::error::ErrorStack::get)?;
        Ok(DtlsCert {
            key,
            x509,
            fingerprint,
        })
    }

    /// The SHA-256 fingerprint to advertise in SDP.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The certificate in PEM form (for logging or for handing to another stack in tests).
    pub fn certificate_pem(&self) -> Result<Vec<u8>, DtlsError> {
        self.x509.to_pem().map_err(|_| DtlsError::Crypto)
    }
}

/// A SHA-256 certificate fingerprint, as carried by `a=fingerprint` in SDP.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// Why an SDP fingerprint string could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FingerprintError {
    /// The hash function is not `sha-256` (the only one WebRTC endpoints must support).
    UnsupportedHash,
    /// The value is not 32 colon-separated hex octets.
    BadValue,
}

impl fmt::Display for FingerprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FingerprintError::UnsupportedHash => "unsupported fingerprint hash",
            FingerprintError::BadValue => "malformed fingerprint value",
        })
    }
}

impl std::error::Error for FingerprintError {}

impl Fingerprint {
    /// Wraps a raw SHA-256 digest.
    pub fn from_bytes(digest: [u8; 32]) -> Self {
        Fingerprint(digest)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Hashes a DER certificate as RFC 8122 prescribes.
    pub(crate) fn of(cert: &X509Ref) -> Option<Self> {
        let digest = cert.digest(MessageDigest::sha256()).ok()?;
        let bytes: [u8; 32] = digest.as_ref().try_into().ok()?;
        Some(Fingerprint(bytes))
    }

    /// Parses the SDP form `sha-256 AB:CD:...` (hash name case-insensitive, hex either case,
    /// surrounding whitespace ignored). A bare `AB:CD:..` value is accepted too.
    pub fn parse(s: &str) -> Result<Self, FingerprintError> {
        let s = s.trim();
        let value = match s.split_once(char::is_whitespace) {
            Some((hash, value)) => {
                if !hash.eq_ignore_ascii_case("sha-256") {
                    return Err(FingerprintError::UnsupportedHash);
                }
                value.trim()
            }
            None => s,
        };
        let mut out = [0u8; 32];
        let mut n = 0;
        for octet in value.split(':') {
            let hex = octet.len() == 2 && octet.bytes().all(|c| c.is_ascii_hexdigit());
            if !hex || n >= out.len() {
                return Err(FingerprintError::BadValue);
            }
            out[n] = u8::from_str_radix(octet, 16).map_err(|_| FingerprintError::BadValue)?;
            n += 1;
        }
        if n != out.len() {
            return Err(FingerprintError::BadValue);
        }
        Ok(Fingerprint(out))
    }
}

impl fmt::Display for Fingerprint {
    /// The SDP form: `sha-256 AB:CD:...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha-256 ")?;
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = FingerprintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fingerprint::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_cert_round_trips_its_fingerprint() {
        let cert = DtlsCert::generate().unwrap();
        let fp = cert.fingerprint();
        let text = fp.to_string();
        assert!(text.starts_with("sha-256 "));
        assert_eq!(text.len(), "sha-256 ".len() + 32 * 3 - 1);
        assert_eq!(Fingerprint::parse(&text), Ok(fp));
        assert_eq!(Fingerprint::parse(&text.to_lowercase()), Ok(fp));
        assert_eq!(Fingerprint::of(&cert.x509), Some(fp));
    }

    #[test]
    fn two_certs_differ() {
        let a = DtlsCert::generate().unwrap();
        let b = DtlsCert::generate().unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(
            a.x509.serial_number().to_bn().unwrap(),
            b.x509.serial_number().to_bn().unwrap()
        );
    }

    #[test]
    fn parse_rejects_bad_input() {
        let good = ["AB"; 32].join(":");
        assert!(Fingerprint::parse(&good).is_ok());
        assert_eq!(
            Fingerprint::parse(&format!("sha-1 {good}")),
            Err(FingerprintError::UnsupportedHash)
        );
        assert_eq!(Fingerprint::parse(""), Err(FingerprintError::BadValue));
        assert_eq!(
            Fingerprint::parse("sha-256 AB:CD"),
            Err(FingerprintError::BadValue)
        );
        assert_eq!(
            Fingerprint::parse(&format!("sha-256 {good}:AB")),
            Err(FingerprintError::BadValue)
        );
        assert_eq!(
            Fingerprint::parse(&format!("sha-256 {}", ["G1"; 32].join(":"))),
            Err(FingerprintError::BadValue)
        );
        assert_eq!(
            Fingerprint::parse("sha-256 ::::"),
            Err(FingerprintError::BadValue)
        );
        assert_eq!(
            Fingerprint::parse(&format!("sha-256 {}", ["+1"; 32].join(":"))),
            Err(FingerprintError::BadValue)
        );
    }
}
