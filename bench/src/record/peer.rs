//! A WHIP publisher or WHEP viewer built from the forwarder's sans-IO parts, as a browser
//! would be seen by Prism: an SDP offer with one BUNDLEd video section per track, then ICE
//! as the controlling agent (a nominating Binding request signed with the answer's
//! password, repeated as consent), DTLS-SRTP in the role the answer leaves us, and for the
//! publisher an SRTP context to protect what it sends.
//!
//! Set-up is blocking with a deadline; once connected the socket is handed to the
//! measurement loop, which reads it without blocking.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hmac::{Hmac, KeyInit, Mac};
use prism_forwarder::dtls::{DtlsCert, DtlsEndpoint, DtlsEvent, Fingerprint};
use prism_forwarder::srtp::{SrtpContext, SrtpKeys, SrtpProfile};
use prism_forwarder::wire::stun::{attr, Class, Method, StunMessage, StunWriter};
use sha1::Sha1;

use crate::control::sdp::{parse_answer, AnswerParams};
use crate::source::VIDEO_PT;

/// How long ICE and DTLS may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Receive buffer asked for every peer socket.
const RCVBUF: usize = 4 << 20;

/// What our offer carries: ICE credentials and the certificate's fingerprint.
pub struct Local {
    pub ufrag: String,
    pub pwd: String,
    pub cert: DtlsCert,
}

impl std::fmt::Debug for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Local")
            .field("ufrag", &self.ufrag)
            .finish_non_exhaustive()
    }
}

impl Local {
    pub fn new() -> Result<Self> {
        Ok(Local {
            ufrag: random_token(8)?,
            pwd: random_token(24)?,
            cert: DtlsCert::generate().map_err(|e| anyhow!("certificate: {e:?}"))?,
        })
    }

    pub fn fingerprint(&self) -> Fingerprint {
        self.cert.fingerprint()
    }
}

fn random_token(n: usize) -> Result<String> {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = vec![0u8; n];
    getrandom::fill(&mut raw).map_err(|e| anyhow!("getrandom: {e}"))?;
    Ok(raw
        .iter()
        .map(|b| CHARS[*b as usize % CHARS.len()] as char)
        .collect())
}

fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let mut out = [0u8; 20];
    if let Ok(mut m) = <Hmac<Sha1> as KeyInit>::new_from_slice(key) {
        m.update(data);
        out.copy_from_slice(&m.finalize().into_bytes());
    }
    out
}

/// An offer of `ssrcs.len()` VP8 video sections: `sendonly` with those SSRCs (WHIP), or
/// `recvonly` without (WHEP) when `ssrcs` is empty and `recv` sections are asked for.
pub fn video_offer(local: &Local, sections: usize, ssrcs: &[u32]) -> String {
    let mids: Vec<String> = (0..sections).map(|i| i.to_string()).collect();
    let mut s = format!(
        "v=0\r\no=- {} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\n\
         a=msid-semantic:WMS *\r\n",
        u32::from_be_bytes(
            local.cert.fingerprint().as_bytes()[..4]
                .try_into()
                .unwrap_or([1; 4])
        ),
        mids.join(" ")
    );
    for (i, mid) in mids.iter().enumerate() {
        s.push_str(&format!(
            "m=video 9 UDP/TLS/RTP/SAVPF {VIDEO_PT}\r\nc=IN IP4 0.0.0.0\r\n\
             a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\n\
             a=fingerprint:{}\r\na=setup:actpass\r\na=mid:{mid}\r\na=rtcp-mux\r\n\
             a=rtpmap:{VIDEO_PT} VP8/90000\r\na=rtcp-fb:{VIDEO_PT} nack\r\n\
             a=rtcp-fb:{VIDEO_PT} nack pli\r\n",
            local.ufrag,
            local.pwd,
            local.fingerprint()
        ));
        match ssrcs.get(i) {
            Some(ssrc) => s.push_str(&format!(
                "a=sendonly\r\na=msid:bench cam{i}\r\na=ssrc:{ssrc} cname:prism-bench\r\n"
            )),
            None => s.push_str("a=recvonly\r\n"),
        }
    }
    s
}

/// A connected peer: its socket (blocking, with a read timeout) and, once DTLS is done,
/// the context that protects what it sends.
pub struct Peer {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    username: Vec<u8>,
    server_pwd: Vec<u8>,
    /// Protects what we send; unprotects what the server sends.
    pub outbound: SrtpContext,
    pub inbound: SrtpContext,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("sock", &self.sock)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// Completes ICE and DTLS-SRTP against the server that gave `answer_sdp`.
    pub fn connect(local: &Local, answer_sdp: &str) -> Result<Peer> {
        let answer: AnswerParams = parse_answer(answer_sdp).map_err(|e| anyhow!("answer: {e}"))?;
        let sock = UdpSocket::bind("127.0.0.1:0").context("UDP bind")?;
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(RCVBUF);
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let username = format!("{}:{}", answer.ice_ufrag, local.ufrag).into_bytes();
        let server_pwd = answer.ice_pwd.clone().into_bytes();
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let check = binding_request(&username, &server_pwd)?;
        let mut buf = vec![0u8; 2048];
        // ICE: a nominating check until one is answered.
        'ice: loop {
            if Instant::now() > deadline {
                bail!("no ICE answer from {}", answer.candidate);
            }
            sock.send_to(&check, answer.candidate)?;
            let until = Instant::now() + Duration::from_millis(250);
            while Instant::now() < until {
                let Ok((n, _)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let d = &buf[..n];
                if d.first().is_some_and(|b| *b <= 3)
                    && StunMessage::new_checked(d).is_ok_and(|m| {
                        m.class() == Class::SuccessResponse && m.method() == Method::BINDING
                    })
                {
                    break 'ice;
                }
            }
        }
        let mut dtls =
            DtlsEndpoint::new(answer.our_role, &local.cert).map_err(|e| anyhow!("DTLS: {e:?}"))?;
        dtls.set_remote_fingerprint(answer.fingerprint)
            .map_err(|e| anyhow!("DTLS fingerprint: {e:?}"))?;
        dtls.handle_timeout(Instant::now());
        let material = loop {
            while let Some(d) = dtls.poll_transmit() {
                sock.send_to(&d, answer.candidate)?;
            }
            let mut done = None;
            while let Some(e) = dtls.poll_event() {
                match e {
                    DtlsEvent::Connected { srtp, .. } => {
                        done = Some(srtp.context("DTLS negotiated no SRTP profile")?)
                    }
                    DtlsEvent::Failed(f) => bail!("DTLS failed: {f:?}"),
                    _ => {}
                }
            }
            if let Some(m) = done {
                break m;
            }
            if Instant::now() > deadline {
                bail!("DTLS did not complete within {CONNECT_TIMEOUT:?}");
            }
            match sock.recv_from(&mut buf) {
                Ok((n, _)) if (20..=63).contains(&buf[0]) && n > 0 => {
                    let _ = dtls.handle_datagram(Instant::now(), &buf[..n]);
                }
                _ => dtls.handle_timeout(Instant::now()),
            }
        };
        let profile = SrtpProfile::from_dtls_id(material.profile_id)
            .map_err(|e| anyhow!("SRTP profile: {e:?}"))?;
        let is_client = matches!(answer.our_role, prism_forwarder::dtls::DtlsRole::Client);
        let (local_keys, remote_keys) =
            SrtpKeys::from_dtls_export(profile, &material.material, is_client)
                .map_err(|e| anyhow!("SRTP keys: {e:?}"))?;
        let context =
            |k: &SrtpKeys| SrtpContext::new(profile, k).map_err(|e| anyhow!("SRTP context: {e:?}"));
        let outbound = context(&local_keys)?;
        let inbound = context(&remote_keys)?;
        Ok(Peer {
            sock,
            server: answer.candidate,
            username,
            server_pwd,
            outbound,
            inbound,
        })
    }

    /// A consent check (the server closes a transport whose consent lapses).
    pub fn consent(&self) -> Result<()> {
        let b = binding_request(&self.username, &self.server_pwd)?;
        self.sock.send_to(&b, self.server)?;
        Ok(())
    }
}

/// A Binding request as the controlling agent, nominating, signed with `pwd`.
fn binding_request(username: &[u8], pwd: &[u8]) -> Result<Vec<u8>> {
    let mut tid = [0u8; 12];
    getrandom::fill(&mut tid).map_err(|e| anyhow!("getrandom: {e}"))?;
    let mut buf = vec![0u8; 512];
    let stun = |e| anyhow!("STUN: {e:?}");
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::BINDING, &tid).map_err(stun)?;
    w.attr(attr::USERNAME, username).map_err(stun)?;
    w.attr(attr::PRIORITY, &1_845_501_695u32.to_be_bytes())
        .map_err(stun)?;
    w.attr(attr::ICE_CONTROLLING, &7u64.to_be_bytes())
        .map_err(stun)?;
    w.attr(attr::USE_CANDIDATE, &[]).map_err(stun)?;
    let key = pwd.to_vec();
    let n = w
        .finish_with_integrity(&move |d: &[u8]| hmac_sha1(&key, d))
        .map_err(stun)?;
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_bundle_every_section_with_our_credentials() {
        let l = Local::new().unwrap();
        let o = video_offer(&l, 3, &[11, 12, 13]);
        assert!(o.contains("a=group:BUNDLE 0 1 2\r\n"));
        assert_eq!(o.matches("m=video").count(), 3);
        assert_eq!(o.matches("a=sendonly").count(), 3);
        assert!(o.contains("a=ssrc:12 cname:prism-bench"));
        assert_eq!(o.matches(&format!("a=ice-ufrag:{}", l.ufrag)).count(), 3);
        let v = video_offer(&l, 2, &[]);
        assert_eq!(v.matches("a=recvonly").count(), 2);
        assert!(!v.contains("a=ssrc"));
    }
}
