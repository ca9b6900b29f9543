//! A pre-check of DTLS record framing before a datagram reaches OpenSSL.
//!
//! OpenSSL already discards malformed DTLS records silently, but silently is the problem: the
//! engine wants every dropped datagram named and counted. `check_datagram` walks the record
//! headers of one datagram (RFC 6347 §4.1: type, version, epoch, sequence number, length) and
//! rejects the whole datagram if any record has an unknown content type, a non-DTLS version,
//! or a length that runs past the end. It never allocates and never panics; it says nothing
//! about cryptographic validity, which stays OpenSSL's job.

/// Length of a DTLS 1.0/1.2 record header.
pub const RECORD_HEADER_LEN: usize = 13;

/// Largest record body DTLS 1.2 allows (2^14 plaintext + 2048 expansion).
const MAX_RECORD_BODY: usize = 16384 + 2048;

/// Shortest possible protected record: an AES-GCM explicit nonce (8) and tag (16). Prism
/// negotiates only AES-GCM suites, so anything shorter in epoch 1 or later is forged or
/// corrupt, and OpenSSL 3.0 treats some such records as a fatal internal error rather than
/// discarding them, which would let one stray datagram kill a transport.
pub const MIN_PROTECTED_LEN: usize = 8 + 16;

/// DTLS content types (RFC 6347 §4.1, RFC 5246 §6.2.1).
pub const CONTENT_CHANGE_CIPHER_SPEC: u8 = 20;
pub const CONTENT_ALERT: u8 = 21;
pub const CONTENT_HANDSHAKE: u8 = 22;
pub const CONTENT_APPLICATION_DATA: u8 = 23;

/// Why a datagram's record framing was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordError {
    /// Empty, or shorter than a record header, or a length field runs past the end.
    Truncated,
    /// A content type outside 20..=23.
    BadContentType,
    /// A protocol version other than DTLS 1.0 (0xFEFF) or 1.2 (0xFEFD).
    BadVersion,
    /// A record body larger than DTLS permits.
    TooLarge,
    /// A protected (epoch ≥ 1), non-empty record too short to hold an AEAD nonce and tag.
    ShortCiphertext,
}

/// What a well-framed datagram holds, for the endpoint's bookkeeping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatagramSummary {
    /// Number of records in the datagram.
    pub records: usize,
    /// Whether any record is a handshake record (a peer retransmitting its flight).
    pub has_handshake: bool,
}

/// Checks the framing of every record in `datagram`.
pub fn check_datagram(datagram: &[u8]) -> Result<DatagramSummary, RecordError> {
    if datagram.is_empty() {
        return Err(RecordError::Truncated);
    }
    let mut summary = DatagramSummary::default();
    let mut rest = datagram;
    while !rest.is_empty() {
        let Some(header) = rest.get(..RECORD_HEADER_LEN) else {
            return Err(RecordError::Truncated);
        };
        let content_type = header[0];
        if !(CONTENT_CHANGE_CIPHER_SPEC..=CONTENT_APPLICATION_DATA).contains(&content_type) {
            return Err(RecordError::BadContentType);
        }
        if header[1] != 0xFE || !matches!(header[2], 0xFF | 0xFD) {
            return Err(RecordError::BadVersion);
        }
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        if len > MAX_RECORD_BODY {
            return Err(RecordError::TooLarge);
        }
        let epoch = u16::from_be_bytes([header[3], header[4]]);
        if epoch != 0 && len != 0 && len < MIN_PROTECTED_LEN {
            return Err(RecordError::ShortCiphertext);
        }
        let Some(after) = rest.get(RECORD_HEADER_LEN + len..) else {
            return Err(RecordError::Truncated);
        };
        summary.records += 1;
        summary.has_handshake |= content_type == CONTENT_HANDSHAKE;
        rest = after;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content_type: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![content_type, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 1];
        v.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn accepts_several_records() {
        let mut d = record(CONTENT_HANDSHAKE, &[1, 2, 3]);
        d.extend(record(CONTENT_CHANGE_CIPHER_SPEC, &[1]));
        d.extend(record(CONTENT_APPLICATION_DATA, &[]));
        let s = check_datagram(&d).unwrap();
        assert_eq!(s.records, 3);
        assert!(s.has_handshake);
        let s = check_datagram(&record(CONTENT_APPLICATION_DATA, &[9; 100])).unwrap();
        assert!(!s.has_handshake);
    }

    #[test]
    fn rejects_bad_framing() {
        assert_eq!(check_datagram(&[]), Err(RecordError::Truncated));
        assert_eq!(
            check_datagram(&[22, 0xFE, 0xFD]),
            Err(RecordError::Truncated)
        );
        let mut d = record(CONTENT_HANDSHAKE, &[1, 2, 3]);
        d.pop();
        assert_eq!(check_datagram(&d), Err(RecordError::Truncated));
        let mut d = record(CONTENT_HANDSHAKE, &[1, 2, 3]);
        d.push(22);
        assert_eq!(check_datagram(&d), Err(RecordError::Truncated));
        assert_eq!(
            check_datagram(&record(24, &[1])),
            Err(RecordError::BadContentType)
        );
        assert_eq!(
            check_datagram(&record(63, &[1])),
            Err(RecordError::BadContentType)
        );
        let mut d = record(CONTENT_HANDSHAKE, &[1]);
        d[1] = 3;
        d[2] = 3;
        assert_eq!(check_datagram(&d), Err(RecordError::BadVersion));
        let mut d = record(CONTENT_HANDSHAKE, &[]);
        d[11] = 0xFF;
        d[12] = 0xFF;
        assert_eq!(check_datagram(&d), Err(RecordError::TooLarge));
        let mut d = record(CONTENT_APPLICATION_DATA, &[0; 23]);
        d[4] = 1;
        assert_eq!(check_datagram(&d), Err(RecordError::ShortCiphertext));
        let mut d = record(CONTENT_APPLICATION_DATA, &[0; 24]);
        d[4] = 1;
        assert!(check_datagram(&d).is_ok());
    }

    #[test]
    fn never_panics_on_prefixes() {
        let mut d = record(CONTENT_HANDSHAKE, &[7; 40]);
        d.extend(record(CONTENT_ALERT, &[2, 40]));
        for n in 0..=d.len() {
            let _ = check_datagram(&d[..n]);
        }
    }
}
