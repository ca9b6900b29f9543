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
            if s.trim().is_empty() {
                // As LiveKit: an empty secret file is a mistake, not a reason to fall back
                // to static credentials.
                bail!(
                    "rtc.turn_servers[{i}].secret_file {} is empty",
                    path.display()
                );
            }
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
    // `rtc.stun_servers` go to clients too, as in LiveKit (no credentials).
    let stun: Vec<String> = file
        .rtc
        .stun_servers
        .iter()
        .map(|s| format!("stun:{s}"))
        .collect();
    if !stun.is_empty() {
        servers.push(IceServerSpec {
            urls: stun,
            credentials: Credentials::Static {
                username: String::new(),
                credential: String::new(),
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_servers_and_external_turn_servers_reach_clients() {
        let file = Config::parse(
            "rtc:\n  stun_servers: [stun.example.net:3478]\n  turn_servers:\n    \
             - host: turn.example.net\n      port: 443\n      protocol: tls\n      \
             username: u\n      credential: p\n",
        )
        .unwrap();
        let mut warnings = Vec::new();
        let s = setup(
            &file,
            &file.turn,
            "127.0.0.1".parse().unwrap(),
            &[],
            "secret",
            &mut warnings,
        )
        .unwrap();
        assert!(s.front.is_none(), "turn.enabled is off");
        let given = s.ice_servers.for_participant("PA_x", 1_000);
        assert_eq!(given.len(), 2, "{given:?}");
        assert!(
            given[0].urls[0].starts_with("turns:turn.example.net:443"),
            "{given:?}"
        );
        assert_eq!(given[1].urls, ["stun:stun.example.net:3478"]);
        assert!(given[1].username.is_empty());
    }

    #[test]
    fn an_empty_secret_file_stops_the_server() {
        let path = std::env::temp_dir().join(format!("prism-empty-secret-{}", std::process::id()));
        std::fs::write(&path, "  \n").unwrap();
        let file = Config::parse(&format!(
            "rtc:\n  turn_servers:\n    - host: h\n      port: 3478\n      secret_file: {}\n",
            path.display()
        ))
        .unwrap();
        let e = setup(
            &file,
            &file.turn,
            "127.0.0.1".parse().unwrap(),
            &[],
            "s",
            &mut Vec::new(),
        );
        let _ = std::fs::remove_file(&path);
        assert!(e.is_err());
    }
}
