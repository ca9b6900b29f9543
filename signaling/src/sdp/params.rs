//! What the server puts in every description it writes (its ICE credentials, certificate
//! fingerprint, candidates and session ids): shared by the answer and offer builders and the
//! emitters below them, so it lives apart from all of them.

use std::net::SocketAddr;

use super::model::{Fingerprint, SetupRole};
use super::SdpError;

/// What the server puts in every description it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerParams {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    /// The DTLS certificate's fingerprint, e.g. `sha-256` and 32 bytes.
    pub fingerprint: Fingerprint,
    /// Host UDP candidates: the core's `ip:port` (one per core that may carry the
    /// transport, or just the owning core's). The first is also the m-line address.
    pub candidates: Vec<SocketAddr>,
    /// Passive ICE-TCP candidates (RFC 6544), for clients whose networks block UDP:
    /// listed after the UDP ones, at a lower priority, so clients prefer UDP.
    pub tcp_candidates: Vec<SocketAddr>,
    /// The DTLS role taken when the peer offers `actpass`. Passive by default: the
    /// browser then starts the handshake as soon as ICE connects.
    pub setup_when_actpass: SetupRole,
    /// `o=` session id and version; bump the version on every new description.
    pub session_id: u64,
    pub session_version: u64,
    /// Advertised `a=sctp-port` and `a=max-message-size` for data channels.
    pub sctp_port: u16,
    pub max_message_size: u64,
}

impl ServerParams {
    /// Parameters with the defaults above; `fingerprint` is `sha-256` of the certificate.
    pub fn new(
        ice_ufrag: &str,
        ice_pwd: &str,
        sha256_fingerprint: [u8; 32],
        candidates: Vec<SocketAddr>,
    ) -> Self {
        Self {
            ice_ufrag: ice_ufrag.to_owned(),
            ice_pwd: ice_pwd.to_owned(),
            fingerprint: Fingerprint {
                algorithm: "sha-256".to_owned(),
                value: sha256_fingerprint.to_vec(),
            },
            candidates,
            tcp_candidates: Vec::new(),
            setup_when_actpass: SetupRole::Passive,
            session_id: 1,
            session_version: 1,
            sctp_port: 5000,
            max_message_size: 262_144,
        }
    }

    pub(crate) fn check(&self) -> Result<SocketAddr, SdpError> {
        if self.ice_ufrag.len() < 4 || self.ice_pwd.len() < 22 {
            // RFC 8839 §5.4: ufrag ≥ 4 and pwd ≥ 22 characters.
            return Err(SdpError::BadServerParams("ICE ufrag/pwd too short"));
        }
        self.candidates
            .first()
            .copied()
            .ok_or(SdpError::BadServerParams("no candidate"))
    }
}
