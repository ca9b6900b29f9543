//! Borrowed views over the datagrams the forwarder handles.
//!
//! Every view wraps a `T: AsRef<[u8]>`, checks lengths once in `new_checked`, and then
//! offers accessors that cannot panic. Setters exist only for `T: AsMut<[u8]>`, so headers
//! are rewritten in place and nothing is copied or allocated on the forwarding path. Each
//! format also has a small owned `*Repr` whose `emit` writes canonical bytes, used by the
//! slow path (tests, RTCP generation) and by the round-trip tests.

pub mod demux;
pub mod frame;
pub mod neigh;
pub mod rtcp;
pub mod rtp;
pub mod stun;

/// Why a datagram could not be parsed. Unit-like and `Copy` so that parsing never
/// allocates; the engine turns it into a counted drop reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// Shorter than its fixed header, or than a length field says.
    Truncated,
    /// The version bits are not the ones the format requires.
    BadVersion,
    /// The padding count is zero or runs past the header.
    BadPadding,
    /// A header extension is malformed.
    BadExtension,
    /// A length or count field is inconsistent with the data.
    BadLength,
    /// A field holds a value the format forbids (e.g. a STUN magic cookie mismatch).
    BadField,
    /// Larger than the forwarder accepts.
    TooLarge,
    /// A destination buffer is too small for `emit`.
    BufferTooSmall,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Error::Truncated => "truncated",
            Error::BadVersion => "bad version",
            Error::BadPadding => "bad padding",
            Error::BadExtension => "bad header extension",
            Error::BadLength => "bad length",
            Error::BadField => "bad field",
            Error::TooLarge => "too large",
            Error::BufferTooSmall => "buffer too small",
        };
        f.write_str(s)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = core::result::Result<T, Error>;
