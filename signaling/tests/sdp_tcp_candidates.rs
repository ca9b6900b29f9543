//! Passive ICE-TCP candidates (RFC 6544) in the descriptions Prism writes: after the UDP
//! ones, `tcptype passive`, at a lower priority than every UDP candidate, in answers and
//! offers alike; and absent when there is no TCP front.

use std::net::SocketAddr;

use prism_signaling::sdp::{
    AnswerBuilder, MediaKind, OfferBuilder, OfferSection, SendTrack, ServerParams, SessionOffer,
};

const CHROME: &str = include_str!("fixtures/chrome_simulcast_offer.sdp");

fn params(tcp: bool) -> ServerParams {
    let udp: SocketAddr = "203.0.113.7:7882".parse().unwrap();
    let udp2: SocketAddr = "[2001:db8::7]:7882".parse().unwrap();
    let mut p = ServerParams::new(
        "prsm",
        "prism-ice-password-0123456",
        [0xAB; 32],
        vec![udp, udp2],
    );
    if tcp {
        p.tcp_candidates = vec!["203.0.113.7:7881".parse().unwrap()];
    }
    p
}

/// (transport, priority, address, port, rest) of each candidate line of the first section.
fn candidates(sdp: &str) -> Vec<(String, u64, String, u16, String)> {
    let section = sdp.split("\r\nm=").nth(1).expect("a media section");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("a=candidate:"))
        .map(|c| {
            let f: Vec<&str> = c.split_whitespace().collect();
            (
                f[2].to_ascii_lowercase(),
                f[3].parse().unwrap(),
                f[4].to_string(),
                f[5].parse().unwrap(),
                f[6..].join(" "),
            )
        })
        .collect()
}

fn check(sdp: &str) {
    let c = candidates(sdp);
    assert_eq!(c.len(), 3, "{sdp}");
    assert_eq!(c[0].0, "udp");
    assert_eq!(c[1].0, "udp");
    let tcp = &c[2];
    assert_eq!(tcp.0, "tcp", "TCP listed last");
    assert_eq!((tcp.2.as_str(), tcp.3), ("203.0.113.7", 7881));
    assert_eq!(tcp.4, "typ host tcptype passive");
    assert!(c[..2].iter().all(|u| u.1 > tcp.1), "UDP preferred: {c:?}");
    // Host type preference 126, component 1.
    assert_eq!(tcp.1 >> 24, 126);
    assert_eq!(tcp.1 & 0xff, 255);
    assert!(sdp.contains("a=end-of-candidates"));
    SessionOffer::parse(sdp).expect("parses back");
}

#[test]
fn answers_list_a_passive_tcp_candidate_after_udp() {
    let offer = SessionOffer::parse(CHROME).unwrap();
    let text = AnswerBuilder::new(&offer, &params(true)).build().unwrap();
    check(&text);
}

#[test]
fn offers_list_a_passive_tcp_candidate_after_udp() {
    let p = params(true);
    let text = OfferBuilder::new(&p)
        .section(OfferSection::Track(SendTrack {
            mid: "0".into(),
            kind: MediaKind::Audio,
            stream_id: "s".into(),
            track_id: "t".into(),
            cname: "c".into(),
            ssrc: 1234,
            rtx_ssrc: None,
            codecs: Vec::new(),
        }))
        .build()
        .unwrap();
    check(&text);
}

#[test]
fn no_tcp_front_no_tcp_candidate() {
    let offer = SessionOffer::parse(CHROME).unwrap();
    let text = AnswerBuilder::new(&offer, &params(false)).build().unwrap();
    assert!(candidates(&text).iter().all(|c| c.0 == "udp"), "{text}");
}
