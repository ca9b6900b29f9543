//! Debian's rtpengine as a 1:1 relay in userspace (`--table=-1`), set up through its ng
//! control protocol: bencoded dictionaries over UDP, each request prefixed by a cookie.
//!
//! One call: an `offer` carrying the publisher's SDP, an `answer` carrying the subscriber's;
//! the answer's reply names the rtpengine port the publisher sends to, and rtpengine relays
//! what arrives there to the address in the subscriber's SDP.

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{free_port, proc, Env};
use crate::scenario::Topology;
use crate::source::VIDEO_PT;

/// A bencode value, as much of it as the ng protocol needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bencode {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Bencode>),
    Dict(BTreeMap<Vec<u8>, Bencode>),
}

impl Bencode {
    pub fn str(s: &str) -> Self {
        Bencode::Bytes(s.as_bytes().to_vec())
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Bencode::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Bencode::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Bencode::List(l) => {
                out.push(b'l');
                l.iter().for_each(|v| v.encode(out));
                out.push(b'e');
            }
            Bencode::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Bencode::Bytes(k.clone()).encode(out);
                    v.encode(out);
                }
                out.push(b'e');
            }
        }
    }

    /// Decodes one value from the front of `input`; returns it and the rest.
    pub fn decode(input: &[u8]) -> Option<(Bencode, &[u8])> {
        match *input.first()? {
            b'i' => {
                let end = input.iter().position(|&c| c == b'e')?;
                let i = std::str::from_utf8(&input[1..end]).ok()?.parse().ok()?;
                Some((Bencode::Int(i), &input[end + 1..]))
            }
            b'l' => {
                let mut rest = &input[1..];
                let mut l = Vec::new();
                while *rest.first()? != b'e' {
                    let (v, r) = Bencode::decode(rest)?;
                    l.push(v);
                    rest = r;
                }
                Some((Bencode::List(l), &rest[1..]))
            }
            b'd' => {
                let mut rest = &input[1..];
                let mut d = BTreeMap::new();
                while *rest.first()? != b'e' {
                    let (Bencode::Bytes(k), r) = Bencode::decode(rest)? else {
                        return None;
                    };
                    let (v, r) = Bencode::decode(r)?;
                    d.insert(k, v);
                    rest = r;
                }
                Some((Bencode::Dict(d), &rest[1..]))
            }
            b'0'..=b'9' => {
                let colon = input.iter().position(|&c| c == b':')?;
                let n: usize = std::str::from_utf8(&input[..colon]).ok()?.parse().ok()?;
                let body = input.get(colon + 1..colon + 1 + n)?;
                Some((Bencode::Bytes(body.to_vec()), &input[colon + 1 + n..]))
            }
            _ => None,
        }
    }

    /// The string under `key` of a dictionary.
    pub fn get_str(&self, key: &str) -> Option<String> {
        match self {
            Bencode::Dict(d) => match d.get(key.as_bytes())? {
                Bencode::Bytes(b) => String::from_utf8(b.clone()).ok(),
                _ => None,
            },
            _ => None,
        }
    }
}

fn dict(pairs: &[(&str, Bencode)]) -> Bencode {
    Bencode::Dict(
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.clone()))
            .collect(),
    )
}

/// An ng protocol client.
#[derive(Debug)]
pub struct NgClient {
    socket: UdpSocket,
    server: SocketAddr,
    cookie: u64,
}

impl NgClient {
    pub fn new(server: SocketAddr) -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        Ok(Self {
            socket,
            server,
            cookie: 0,
        })
    }

    /// Sends `msg` and waits for the answer with the same cookie, resending a few times.
    pub fn request(&mut self, msg: &Bencode) -> Result<Bencode> {
        self.cookie += 1;
        let cookie = format!("bench{}", self.cookie);
        let mut out = format!("{cookie} ").into_bytes();
        msg.encode(&mut out);
        let mut buf = vec![0u8; 65536];
        for _ in 0..10 {
            self.socket.send_to(&out, self.server)?;
            let Ok(n) = self.socket.recv(&mut buf) else {
                continue;
            };
            let reply = &buf[..n];
            let Some(sp) = reply.iter().position(|&c| c == b' ') else {
                continue;
            };
            if &reply[..sp] != cookie.as_bytes() {
                continue;
            }
            let (v, _) = Bencode::decode(&reply[sp + 1..]).context("undecodable ng reply")?;
            if v.get_str("result").as_deref() != Some("ok")
                && v.get_str("result").as_deref() != Some("pong")
            {
                bail!("rtpengine answered {v:?}");
            }
            return Ok(v);
        }
        bail!("rtpengine does not answer on {}", self.server)
    }
}

fn sdp(addr: SocketAddr, session: u64) -> String {
    format!(
        "v=0\r\no=- {session} 1 IN IP4 {ip}\r\ns=bench\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=video {port} RTP/AVP {pt}\r\na=rtpmap:{pt} VP8/90000\r\na=sendrecv\r\n",
        ip = addr.ip(),
        port = addr.port(),
        pt = VIDEO_PT
    )
}

/// The media port of the first `m=` line of an SDP.
pub fn media_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find(|l| l.starts_with("m="))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Starts rtpengine pinned to the SUT CPU and sets up one call from `pubs[0]` to
/// `sinks[0]`; returns the process and where the publisher must send.
pub fn start(
    bin: &Path,
    env: &Env,
    topo: &Topology,
    pubs: &[SocketAddr],
    sinks: &[SocketAddr],
    log: &Path,
) -> Result<(Child, Vec<SocketAddr>)> {
    if topo.publishers.len() != 1 || sinks.len() != 1 {
        bail!("rtpengine runs the 1:1 relay only");
    }
    let ng = free_port()?;
    let base = 30_000 + (std::process::id() % 1000) as u16 * 20;
    let args: Vec<String> = [
        "--config-file=none".to_string(),
        "--interface=127.0.0.1".into(),
        format!("--listen-ng=127.0.0.1:{ng}"),
        "--table=-1".into(),
        "--foreground".into(),
        "--log-stderr".into(),
        "--log-level=4".into(),
        "--num-threads=1".into(),
        format!("--port-min={base}"),
        format!("--port-max={}", base + 19),
    ]
    .to_vec();
    let mut child = proc::spawn_pinned(env.sut_cpu, bin, &args, log)?;
    let setup = || -> Result<Vec<SocketAddr>> {
        let mut c = NgClient::new(SocketAddr::from(([127, 0, 0, 1], ng)))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while c
            .request(&dict(&[("command", Bencode::str("ping"))]))
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("rtpengine did not start (log {log:?})");
            }
        }
        let call = format!("bench-{}", std::process::id());
        c.request(&dict(&[
            ("command", Bencode::str("offer")),
            ("call-id", Bencode::str(&call)),
            ("from-tag", Bencode::str("pub")),
            ("sdp", Bencode::str(&sdp(pubs[0], 1))),
        ]))?;
        let answer = c.request(&dict(&[
            ("command", Bencode::str("answer")),
            ("call-id", Bencode::str(&call)),
            ("from-tag", Bencode::str("pub")),
            ("to-tag", Bencode::str("sub")),
            ("sdp", Bencode::str(&sdp(sinks[0], 2))),
        ]))?;
        let port = answer
            .get_str("sdp")
            .as_deref()
            .and_then(media_port)
            .context("no media port in rtpengine's answer")?;
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    };
    match setup() {
        Ok(t) => Ok((child, t)),
        Err(e) => {
            proc::stop(&mut child);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_round_trip_and_sdp_port() {
        let v = dict(&[
            ("command", Bencode::str("offer")),
            (
                "flags",
                Bencode::List(vec![Bencode::str("a"), Bencode::Int(-3)]),
            ),
        ]);
        let mut out = Vec::new();
        v.encode(&mut out);
        assert_eq!(&out[..], &b"d7:command5:offer5:flagsl1:ai-3eee"[..]);
        let (back, rest) = Bencode::decode(&out).unwrap();
        assert!(rest.is_empty());
        assert_eq!(back, v);
        assert_eq!(back.get_str("command").as_deref(), Some("offer"));
        assert_eq!(Bencode::decode(b"5:abc"), None);
        assert_eq!(
            media_port("v=0\r\nm=video 30004 RTP/AVP 96\r\n"),
            Some(30004)
        );
    }
}
