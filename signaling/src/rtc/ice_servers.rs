//! The TURN servers a participant is given in its `JoinResponse.ice_servers`.
//!
//! Two kinds, as in LiveKit: the embedded TURN server (`turn.enabled`: `turn:` and
//! `turns:` URLs on `turn.domain`), and external ones (`rtc.turn_servers`). Credentials
//! are made per participant at join time. For the embedded server and for an external one
//! with a `secret` (coturn's `use-auth-secret`), they are TURN REST credentials
//! (`"<expiry>:<participant sid>"`, `base64(HMAC-SHA1(secret, username))`), valid for
//! the configured ttl, so the only secret a client ever holds is its join token and
//! nothing is stored per participant. An external server with `username`/`credential`
//! gets those as they are (long-term credentials shared by everyone).

use prism_forwarder::turn::creds;
use prism_proto::livekit as lk;

/// How a server's credentials are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// The same for everyone.
    Static {
        username: String,
        credential: String,
    },
    /// TURN REST: derived from this shared secret, valid `ttl_secs`.
    Rest { secret: Vec<u8>, ttl_secs: u64 },
}

/// One entry of `ice_servers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceServerSpec {
    pub urls: Vec<String>,
    pub credentials: Credentials,
}

/// Every TURN server clients are given, in order (the embedded one first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IceServers {
    pub servers: Vec<IceServerSpec>,
}

impl IceServers {
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// The entries for participant `sid` at `now_unix`.
    pub fn for_participant(&self, sid: &str, now_unix: u64) -> Vec<lk::IceServer> {
        self.servers
            .iter()
            .map(|s| {
                let (username, credential) = match &s.credentials {
                    Credentials::Static {
                        username,
                        credential,
                    } => (username.clone(), credential.clone()),
                    Credentials::Rest { secret, ttl_secs } => {
                        creds::rest_credentials(secret, sid, now_unix + ttl_secs)
                    }
                };
                lk::IceServer {
                    urls: s.urls.clone(),
                    username,
                    credential,
                }
            })
            .collect()
    }
}

/// A `turn:` or `turns:` URL (RFC 7065) for `host:port` over `protocol` (`udp`, `tcp` or
/// `tls`).
pub fn turn_url(host: &str, port: u16, protocol: &str) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match protocol {
        "tls" => format!("turns:{host}:{port}?transport=tcp"),
        "tcp" => format!("turn:{host}:{port}?transport=tcp"),
        _ => format!("turn:{host}:{port}?transport=udp"),
    }
}

/// The secret the embedded TURN server shares with signaling, derived from an API secret
/// so that it survives restarts and never needs configuring.
pub fn derive_turn_secret(api_secret: &str) -> Vec<u8> {
    creds::hmac_sha1(api_secret.as_bytes(), &[b"prism embedded TURN v1"]).to_vec()
}

/// The current Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_and_static_credentials() {
        let s = IceServers {
            servers: vec![
                IceServerSpec {
                    urls: vec![turn_url("turn.example.com", 3478, "udp")],
                    credentials: Credentials::Rest {
                        secret: b"s3cret".to_vec(),
                        ttl_secs: 600,
                    },
                },
                IceServerSpec {
                    urls: vec![turn_url("2001:db8::1", 443, "tls")],
                    credentials: Credentials::Static {
                        username: "u".into(),
                        credential: "p".into(),
                    },
                },
            ],
        };
        let got = s.for_participant("PA_x", 1_000);
        assert_eq!(got[0].urls, ["turn:turn.example.com:3478?transport=udp"]);
        assert_eq!(got[0].username, "1600:PA_x");
        assert_eq!(
            got[0].credential,
            creds::rest_password(b"s3cret", "1600:PA_x")
        );
        assert_eq!(got[1].urls, ["turns:[2001:db8::1]:443?transport=tcp"]);
        assert_eq!(
            (got[1].username.as_str(), got[1].credential.as_str()),
            ("u", "p")
        );
    }
}
