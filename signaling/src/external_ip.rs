//! `rtc.use_external_ip`: ask STUN servers which address this host has on the internet.
//!
//! On a cloud VM the public address is on no interface: the provider's NAT maps it to the
//! private one. A STUN Binding request (RFC 8489) sent from the media address comes back
//! with the address the server saw it from, XOR-MAPPED-ADDRESS, which is the address
//! clients must be given. This runs once at startup, blocking, before the media plane is
//! up; each server is tried in order with the RFC's retransmissions, and the first answer
//! wins.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use prism_forwarder::wire::stun::{Class, StunMessage, MAGIC_COOKIE};

/// The default STUN port (RFC 8489 §18.5).
pub const STUN_PORT: u16 = 3478;

/// Why discovery found no address.
#[derive(Debug)]
pub struct DiscoveryError(pub String);

impl std::fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DiscoveryError {}

/// Asks each of `servers` (`host[:port]`) in turn, from a socket bound to `from`'s
/// address, for the address it sees; gives up on a server after `per_server`.
pub fn discover(
    servers: &[String],
    from: IpAddr,
    per_server: Duration,
) -> Result<IpAddr, DiscoveryError> {
    if servers.is_empty() {
        return Err(DiscoveryError(
            "rtc.use_external_ip needs rtc.stun_servers to ask (no public STUN server is \
             assumed)"
                .into(),
        ));
    }
    let mut failures = Vec::new();
    for server in servers {
        match ask(server, from, per_server) {
            Ok(ip) => return Ok(ip),
            Err(e) => failures.push(format!("{server}: {e}")),
        }
    }
    Err(DiscoveryError(format!(
        "no STUN server told this host its external address ({})",
        failures.join("; ")
    )))
}

fn resolve(server: &str) -> Result<SocketAddr, String> {
    let with_port = if server.parse::<SocketAddr>().is_ok() || server.rsplit_once(':').is_some() {
        server.to_owned()
    } else {
        format!("{server}:{STUN_PORT}")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_owned())
}

fn ask(server: &str, from: IpAddr, per_server: Duration) -> Result<IpAddr, String> {
    let to = resolve(server)?;
    let local = match (from, to) {
        (ip, _) if !ip.is_unspecified() => SocketAddr::new(ip, 0),
        (_, SocketAddr::V4(_)) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        (_, SocketAddr::V6(_)) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    let sock = UdpSocket::bind(local).map_err(|e| format!("binding {local}: {e}"))?;
    let mut txid = [0u8; 12];
    getrandom::fill(&mut txid).map_err(|e| e.to_string())?;
    let request = binding_request(txid);
    let deadline = Instant::now() + per_server;
    // RFC 8489 §6.2.1: retransmit with a doubling interval from 500 ms.
    let mut rto = Duration::from_millis(500);
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err("no answer".into());
        }
        sock.send_to(&request, to)
            .map_err(|e| format!("sending: {e}"))?;
        let wait_until = (now + rto).min(deadline);
        rto *= 2;
        while let Some(left) = wait_until.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left))
                .map_err(|e| e.to_string())?;
            let (n, src) = match sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                // ICMP unreachable from an earlier send: keep listening until the deadline.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(format!("receiving: {e}")),
            };
            if src != to {
                continue;
            }
            if let Some(ip) = parse_answer(&buf[..n], txid) {
                return Ok(ip);
            }
        }
    }
}

/// A Binding request with no attributes.
pub fn binding_request(txid: [u8; 12]) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..2].copy_from_slice(&0x0001u16.to_be_bytes());
    m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m[8..20].copy_from_slice(&txid);
    m
}

/// The mapped address of a Binding success answer to `txid`; `None` for anything else.
pub fn parse_answer(datagram: &[u8], txid: [u8; 12]) -> Option<IpAddr> {
    let msg = StunMessage::new_checked(datagram).ok()?;
    if msg.class() != Class::SuccessResponse || msg.transaction_id() != txid {
        return None;
    }
    msg.xor_mapped_address().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A STUN server on loopback that answers as if the client were 203.0.113.9.
    fn fake_server(mapped: SocketAddr) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            let req = &buf[..n];
            let mut answer = Vec::new();
            answer.extend_from_slice(&0x0101u16.to_be_bytes());
            answer.extend_from_slice(&12u16.to_be_bytes());
            answer.extend_from_slice(&req[4..20]);
            answer.extend_from_slice(&0x0020u16.to_be_bytes());
            answer.extend_from_slice(&8u16.to_be_bytes());
            answer.extend_from_slice(&[0, 1]);
            let port = mapped.port() ^ (MAGIC_COOKIE >> 16) as u16;
            answer.extend_from_slice(&port.to_be_bytes());
            let IpAddr::V4(v4) = mapped.ip() else {
                unreachable!()
            };
            let ip = u32::from(v4) ^ MAGIC_COOKIE;
            answer.extend_from_slice(&ip.to_be_bytes());
            let _ = sock.send_to(&answer, from);
        });
        addr
    }

    #[test]
    fn the_mapped_address_is_the_external_one() {
        let mapped: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let server = fake_server(mapped);
        let dead = UdpSocket::bind("127.0.0.1:0").unwrap(); // never answers
        let servers = vec![dead.local_addr().unwrap().to_string(), server.to_string()];
        let ip = discover(
            &servers,
            "127.0.0.1".parse().unwrap(),
            Duration::from_millis(600),
        )
        .unwrap();
        assert_eq!(ip, mapped.ip());
    }

    #[test]
    fn no_server_or_no_answer_is_an_error_naming_each() {
        assert!(discover(&[], "127.0.0.1".parse().unwrap(), Duration::from_millis(10)).is_err());
        let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = discover(
            &[dead.local_addr().unwrap().to_string()],
            "127.0.0.1".parse().unwrap(),
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no answer"), "{e}");
    }

    #[test]
    fn answers_to_other_requests_or_garbage_are_ignored() {
        let txid = [7u8; 12];
        assert_eq!(parse_answer(&[0u8; 3], txid), None);
        assert_eq!(parse_answer(&binding_request(txid), txid), None); // a request
        let mut other = binding_request([8u8; 12]);
        other[0..2].copy_from_slice(&0x0101u16.to_be_bytes());
        assert_eq!(parse_answer(&other, txid), None); // no address, other txid
    }
}
