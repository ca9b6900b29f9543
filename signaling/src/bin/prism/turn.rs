//! `turn:` and `rtc.turn_servers`: the embedded TURN server's settings for the media plane,
//! and the list of TURN servers every participant is given.

use std::net::IpAddr;

use anyhow::{bail, Context, Result};
use prism_forwarder::turn::front::{FrontConfig, StreamMode};
use prism_forwarder::turn::server::TurnConfig as ServerConfig;
use prism_signaling::config::{Config, TurnConfig};
use prism_signaling::rtc::ice_servers::{
    derive_turn_secret, turn_url, Credentials, IceServerSpec, IceServers,
};

/// LiveKit's defaults.
const UDP_PORT: u16 = 3478;
const TLS_PORT: u16 = 5349;
const TTL_SECS: u64 = 300;
const EXTERNAL_TTL_SECS: u64 = 14_400;
const MAX_TTL_SECS: u64 = 86_400;
const PER_USER_ALLOCATIONS: usize = 12;

/// What the embedded server needs and what clients are told.
pub struct TurnSetup {
    pub front: Option<FrontConfig>,
    pub ice_servers: IceServers,
}

/// Builds both from the configuration. `media_ip` is where the media sockets bind,
/// `ips` the addresses clients are given for media, `api_secret` the secret the embedded
/// server's is derived from.
pub fn setup(
    file: &Config,
    turn: &TurnConfig,
    media_ip: IpAddr,
    ips: &[IpAddr],
    api_secret: &str,
    warnings: &mut Vec<String>,
) -> Result<TurnSetup> {
    let mut servers = Vec::new();
    let mut front = None;
    if turn.enabled {
        let bind_ip = turn.bind_addresses.first().copied().unwrap_or(media_ip);
        let public_ip = ips.first().copied().unwrap_or(bind_ip);
        if public_ip.is_unspecified() {
            bail!("turn.enabled: give the media an address clients reach (rtc.node_ip)");
        }
        let host = turn.domain.clone().unwrap_or_else(|| public_ip.to_string());
        let udp_port = turn.udp_port.unwrap_or(UDP_PORT);
        let tls_port = turn.tls_port.unwrap_or(TLS_PORT);
        let stream = match (&turn.cert_file, &turn.key_file, turn.external_tls) {
            _ if tls_port == 0 => None,
            (_, _, true) => Some(StreamMode::Plain),
            (Some(cert), Some(key), false) => Some(StreamMode::Tls {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => {
                if turn.tls_port.is_some() {
                    warnings.push(
                        "turn.tls_port: TURN over TLS needs turn.cert_file and turn.key_file \
                         (or turn.external_tls); only UDP is served"
                            .into(),
                    );
                }
                None
            }
        };
        if udp_port == 0 && stream.is_none() {
            bail!("turn.enabled with neither a UDP port nor TLS: nothing to serve");
        }
        let mut urls = Vec::new();
        if udp_port != 0 {
            urls.push(turn_url(&host, udp_port, "udp"));
        }
        if stream.is_some() {
            // Behind a TLS-terminating load balancer, clients reach it on 443.
            let port = if turn.external_tls { 443 } else { tls_port };
            urls.push(turn_url(&host, port, "tls"));
        }
        let secret = derive_turn_secret(api_secret);
        let ttl = positive(turn.ttl_seconds)
            .unwrap_or(TTL_SECS)
            .min(MAX_TTL_SECS);
        servers.push(IceServerSpec {
            urls,
            credentials: Credentials::Rest {
                secret: secret.clone(),
                ttl_secs: ttl,
            },
        });
        let mut server = ServerConfig::new(&host, &secret, Vec::new());
        server.max_allocations_per_user = positive(turn.per_user_relay_allocation_limit)
            .map_or(PER_USER_ALLOCATIONS, |n| n as usize);
        for (what, set) in [
            (
                "turn.allow_restricted_peer_cidrs",
                !turn.allow_restricted_peer_cidrs.is_empty(),
            ),
            ("turn.deny_peer_cidrs", !turn.deny_peer_cidrs.is_empty()),
            (
                "turn.relay_range_start/end",
                turn.relay_range_start.is_some() || turn.relay_range_end.is_some(),
            ),
        ] {
            if set {
                warnings.push(format!(
                    "{what}: ignored, the embedded TURN server relays only to this node's \
                     media sockets (no relay ports, no other peers)"
                ));
            }
        }
        front = Some(FrontConfig {
            udp: (udp_port != 0).then(|| std::net::SocketAddr::new(bind_ip, udp_port)),
            stream: stream.map(|m| (std::net::SocketAddr::new(bind_ip, tls_port), m)),
            relay_ip: bind_ip,
            relay_advertise_ip: Some(public_ip),
            relay_ports: None,
            peers: Vec::new(),
            peer_ips: ips.to_vec(),
            server,
        });
    }
    for (i, t) in file.rtc.turn_servers.iter().enumerate() {
        let secret = if !t.secret.is_empty() {
            Some(t.secret.clone())
        } else if let Some(path) = &t.secret_file {
            let s = std::fs::read_to_string(path)
                .with_context(|| format!("rtc.turn_servers[{i}].secret_file"))?;
            Some(s.trim().to_string())
        } else {
            None
        };
        let credentials = match secret {
            Some(s) => Credentials::Rest {
                secret: s.into_bytes(),
                ttl_secs: u64::try_from(t.ttl)
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or(EXTERNAL_TTL_SECS)
                    .min(MAX_TTL_SECS),
            },
            None => Credentials::Static {
                username: t.username.clone(),
                credential: t.credential.clone(),
            },
        };
        let protocol = if t.protocol.is_empty() {
            "udp"
        } else {
            t.protocol.as_str()
        };
        servers.push(IceServerSpec {
            urls: vec![turn_url(&t.host, t.port, protocol)],
            credentials,
        });
    }
    Ok(TurnSetup {
        front,
        ice_servers: IceServers { servers },
    })
}

fn positive(v: Option<i64>) -> Option<u64> {
    v.and_then(|n| u64::try_from(n).ok()).filter(|&n| n > 0)
}
