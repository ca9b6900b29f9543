//! The little SDP a data-only publisher needs: the offer a LiveKit client sends right after
//! joining (one `m=application` section, SCTP on port 5000), and the few answer lines that
//! tell it where and how to connect (server ICE credentials, fingerprint, setup role, host
//! candidate).

use std::net::SocketAddr;

use prism_forwarder::dtls::{DtlsRole, Fingerprint};

/// What the client puts in its offer.
#[derive(Clone, Debug)]
pub struct OfferParams {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    pub fingerprint: Fingerprint,
}

/// A publisher offer with only a data section, `a=setup:actpass`, no candidates (the
/// server is ICE-lite: it learns our address from our checks).
pub fn data_offer(p: &OfferParams, session_id: u64) -> String {
    let lines = [
        "v=0".to_string(),
        format!("o=- {session_id} 2 IN IP4 127.0.0.1"),
        "s=-".into(),
        "t=0 0".into(),
        "a=group:BUNDLE 0".into(),
        "a=msid-semantic:WMS *".into(),
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel".into(),
        "c=IN IP4 0.0.0.0".into(),
        format!("a=ice-ufrag:{}", p.ice_ufrag),
        format!("a=ice-pwd:{}", p.ice_pwd),
        "a=ice-options:trickle".into(),
        format!("a=fingerprint:{}", p.fingerprint),
        "a=setup:actpass".into(),
        "a=mid:0".into(),
        "a=sctp-port:5000".into(),
        "a=max-message-size:262144".into(),
    ];
    let mut s = lines.join("\r\n");
    s.push_str("\r\n");
    s
}

/// What the answer tells the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerParams {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    pub fingerprint: Fingerprint,
    /// Our DTLS role: the answer's `active` makes the server the client, so we serve.
    pub our_role: DtlsRole,
    pub candidate: SocketAddr,
}

/// Why an answer could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerError {
    Missing(&'static str),
    BadFingerprint,
    /// The data section was refused (port 0).
    DataRejected,
}

impl std::fmt::Display for AnswerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnswerError::Missing(what) => write!(f, "answer has no {what}"),
            AnswerError::BadFingerprint => f.write_str("answer fingerprint is not sha-256"),
            AnswerError::DataRejected => f.write_str("answer rejects the data section"),
        }
    }
}

impl std::error::Error for AnswerError {}

/// Reads the first of each attribute: Prism repeats them identically in every section.
pub fn parse_answer(sdp: &str) -> Result<AnswerParams, AnswerError> {
    let attr = |name: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(name))
            .map(str::trim)
    };
    if sdp
        .lines()
        .any(|l| l.starts_with("m=application 0 ") || l.starts_with("m=application 0\t"))
    {
        return Err(AnswerError::DataRejected);
    }
    let ice_ufrag = attr("a=ice-ufrag:").ok_or(AnswerError::Missing("ice-ufrag"))?;
    let ice_pwd = attr("a=ice-pwd:").ok_or(AnswerError::Missing("ice-pwd"))?;
    let fp = attr("a=fingerprint:").ok_or(AnswerError::Missing("fingerprint"))?;
    let fingerprint = Fingerprint::parse(fp).map_err(|_| AnswerError::BadFingerprint)?;
    let our_role = match attr("a=setup:") {
        Some("active") => DtlsRole::Server,
        Some("passive") => DtlsRole::Client,
        _ => return Err(AnswerError::Missing("setup active or passive")),
    };
    let candidate = sdp
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=candidate:"))
        .find_map(host_udp_candidate)
        .ok_or(AnswerError::Missing("UDP host candidate"))?;
    Ok(AnswerParams {
        ice_ufrag: ice_ufrag.to_string(),
        ice_pwd: ice_pwd.to_string(),
        fingerprint,
        our_role,
        candidate,
    })
}

/// `foundation component transport priority address port typ type …` → the address, for
/// UDP candidates.
fn host_udp_candidate(c: &str) -> Option<SocketAddr> {
    let f: Vec<&str> = c.split_whitespace().collect();
    if f.len() < 6 || !f[2].eq_ignore_ascii_case("udp") {
        return None;
    }
    let ip = f[4].parse().ok()?;
    let port = f[5].parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "sha-256 27:2D:96:16:5E:CF:8F:EC:16:1F:A7:B1:1F:E3:63:BB:19:B7:77:B1:\
                      2D:0B:68:40:0B:5D:CE:01:D9:46:D7:FE";

    fn answer(setup: &str, port: u16) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n\
             m=application {port} UDP/DTLS/SCTP webrtc-datachannel\r\n\
             c=IN IP4 127.0.0.1\r\na=ice-ufrag:srvU\r\na=ice-pwd:0123456789abcdefghijkl\r\n\
             a=fingerprint:{}\r\na=setup:{setup}\r\na=mid:0\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host\r\n",
            FP
        )
    }

    #[test]
    fn passive_answer_makes_us_the_dtls_client() {
        let a = parse_answer(&answer("passive", 7882)).unwrap();
        assert_eq!(a.ice_ufrag, "srvU");
        assert_eq!(a.ice_pwd, "0123456789abcdefghijkl");
        assert_eq!(a.our_role, DtlsRole::Client);
        assert_eq!(a.candidate, "127.0.0.1:7882".parse().unwrap());
        assert_eq!(a.fingerprint.as_bytes()[0], 0x27);
    }

    #[test]
    fn active_answer_makes_us_the_dtls_server() {
        let a = parse_answer(&answer("active", 7882)).unwrap();
        assert_eq!(a.our_role, DtlsRole::Server);
    }

    #[test]
    fn rejected_or_incomplete_answers_are_errors() {
        assert_eq!(
            parse_answer(&answer("passive", 0)),
            Err(AnswerError::DataRejected)
        );
        let no_cand: String = answer("passive", 9)
            .lines()
            .filter(|l| !l.starts_with("a=candidate"))
            .collect::<Vec<_>>()
            .join("\r\n");
        assert_eq!(
            parse_answer(&no_cand),
            Err(AnswerError::Missing("UDP host candidate"))
        );
    }

    #[test]
    fn offer_carries_our_credentials_and_one_data_section() {
        let p = OfferParams {
            ice_ufrag: "abcd".into(),
            ice_pwd: "0123456789abcdefghijkl".into(),
            fingerprint: Fingerprint::parse(FP).unwrap(),
        };
        let o = data_offer(&p, 42);
        assert!(o.contains("a=ice-ufrag:abcd\r\n"));
        assert!(o.contains("a=fingerprint:sha-256 27:2D:"));
        assert_eq!(o.matches("m=").count(), 1);
        assert!(o.ends_with("a=max-message-size:262144\r\n"));
    }
}
