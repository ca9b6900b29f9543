//! Building blocks shared by the answer and offer builders: typed `webrtc-sdp` attributes for
//! the server's transport (ICE-lite credentials, DTLS fingerprint and role, host
//! candidates) and for codecs.
//!
//! Attributes with many optional fields (`fmtp`, `rtcp-fb`) are produced by the crate's own
//! line parser from their value, so they are exactly what the crate would read back;
//! everything else is constructed field by field.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use webrtc_sdp::address::{Address, ExplicitlyTypedAddress};
use webrtc_sdp::attribute_type::{
    SdpAttribute, SdpAttributeCandidate, SdpAttributeCandidateTcpType,
    SdpAttributeCandidateTransport, SdpAttributeCandidateType, SdpAttributeExtmap,
    SdpAttributeFingerprint, SdpAttributeFingerprintHashType, SdpAttributeMsid, SdpAttributeRtpmap,
    SdpAttributeSetup, SdpAttributeSsrc, SdpSsrcGroupSemantic,
};
use webrtc_sdp::media_type::{
    SdpFormatList, SdpMedia, SdpMediaLine, SdpMediaValue, SdpProtocolValue,
};
use webrtc_sdp::{SdpConnection, SdpOrigin, SdpSession, SdpTiming, SdpType};

use super::model::{CodecParams, MediaKind, SetupRole};
use super::params::ServerParams;
use super::SdpError;

/// Parses one `a=` value through the crate, for attributes with many optional fields.
pub(crate) fn attr_from_text(text: &str) -> Result<SdpAttribute, SdpError> {
    match webrtc_sdp::parse_sdp_line(&format!("a={text}"), 0) {
        Ok(line) => match line.sdp_type {
            SdpType::Attribute(a) => Ok(a),
            _ => Err(SdpError::BadServerParams("not an attribute")),
        },
        Err(e) => Err(SdpError::Syntax {
            line: None,
            message: e.to_string(),
        }),
    }
}

pub(crate) fn push(m: &mut SdpMedia, a: SdpAttribute) -> Result<(), SdpError> {
    m.add_attribute(a).map_err(|e| SdpError::Syntax {
        line: None,
        message: e.to_string(),
    })
}

pub(crate) fn push_session(s: &mut SdpSession, a: SdpAttribute) -> Result<(), SdpError> {
    s.add_attribute(a).map_err(|e| SdpError::Syntax {
        line: None,
        message: e.to_string(),
    })
}

/// `v=`, `o=`, `s=`, `t=` of a server description.
pub(crate) fn session(p: &ServerParams) -> SdpSession {
    let origin = SdpOrigin {
        username: "-".to_owned(),
        session_id: p.session_id,
        session_version: p.session_version,
        unicast_addr: ExplicitlyTypedAddress::from(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
    };
    let mut s = SdpSession::new(0, origin, "-".to_owned());
    s.set_timing(SdpTiming { start: 0, stop: 0 });
    s
}

pub(crate) fn media_value(kind: MediaKind) -> SdpMediaValue {
    match kind {
        MediaKind::Audio => SdpMediaValue::Audio,
        MediaKind::Video => SdpMediaValue::Video,
        MediaKind::Application => SdpMediaValue::Application,
        MediaKind::Other => SdpMediaValue::Unknown("text".to_owned()),
    }
}

/// An m-line plus its `c=` line. A live section carries the first candidate's address
/// (ICE-lite servers have no other), a rejected one port 0 and `0.0.0.0`.
pub(crate) fn media(
    value: SdpMediaValue,
    proto: SdpProtocolValue,
    formats: SdpFormatList,
    at: Option<SocketAddr>,
) -> SdpMedia {
    let (ip, port) = match at {
        Some(a) => (a.ip(), u32::from(a.port())),
        None => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
    };
    let mut m = SdpMedia::new(SdpMediaLine {
        media: value,
        port,
        port_count: 0,
        proto,
        formats,
    });
    m.set_connection(SdpConnection {
        address: ExplicitlyTypedAddress::from(ip),
        ttl: None,
        amount: None,
    });
    m
}

pub(crate) fn fingerprint(p: &ServerParams) -> Result<SdpAttribute, SdpError> {
    let hash = SdpAttributeFingerprintHashType::try_from_name(&p.fingerprint.algorithm)
        .map_err(|_| SdpError::BadServerParams("unknown fingerprint hash"))?;
    let fp = SdpAttributeFingerprint::try_from((hash, p.fingerprint.value.clone()))
        .map_err(|_| SdpError::BadServerParams("fingerprint length does not match its hash"))?;
    Ok(SdpAttribute::Fingerprint(fp))
}

pub(crate) fn setup(role: SetupRole) -> SdpAttribute {
    SdpAttribute::Setup(match role {
        SetupRole::Active => SdpAttributeSetup::Active,
        SetupRole::Passive => SdpAttributeSetup::Passive,
        SetupRole::ActPass => SdpAttributeSetup::Actpass,
        SetupRole::HoldConn => SdpAttributeSetup::Holdconn,
    })
}

/// ICE credentials, fingerprint, setup role: repeated in every live section, which every
/// browser accepts and which keeps each section usable if the peer does not bundle.
pub(crate) fn transport(
    m: &mut SdpMedia,
    p: &ServerParams,
    role: SetupRole,
) -> Result<(), SdpError> {
    push(m, SdpAttribute::IceUfrag(p.ice_ufrag.clone()))?;
    push(m, SdpAttribute::IcePwd(p.ice_pwd.clone()))?;
    push(m, fingerprint(p)?)?;
    push(m, setup(role))
}

/// Host candidates (RFC 8445 §5.1.2): type preference 126, local preference falling with
/// each address so the first listed is preferred; component 1 only (rtcp-mux).
pub(crate) fn candidates(m: &mut SdpMedia, p: &ServerParams) -> Result<(), SdpError> {
    for (i, addr) in p.candidates.iter().enumerate() {
        let local_pref = 65535u64.saturating_sub(i as u64);
        let priority = (126u64 << 24) | (local_pref << 8) | 255;
        let c = SdpAttributeCandidate::new(
            (i + 1).to_string(),
            1,
            SdpAttributeCandidateTransport::Udp,
            priority,
            Address::Ip(addr.ip()),
            u32::from(addr.port()),
            SdpAttributeCandidateType::Host,
        );
        push(m, SdpAttribute::Candidate(c))?;
    }
    tcp_candidates(m, p, p.candidates.len())?;
    push(m, SdpAttribute::EndOfCandidates)
}

/// Passive TCP host candidates (RFC 6544 §4.5), after the UDP ones. Priority per RFC 6544
/// §4.2: the host type preference, and a local preference of direction preference (4 for
/// passive host candidates) × 2^13 plus an other-preference falling with each address.
/// Every UDP candidate's local preference (65535 and down) is above 4 × 2^13 + 8191, so
/// a client tries TCP only when UDP fails.
fn tcp_candidates(m: &mut SdpMedia, p: &ServerParams, first: usize) -> Result<(), SdpError> {
    for (i, addr) in p.tcp_candidates.iter().enumerate() {
        let local_pref = (4u64 << 13) + 8191u64.saturating_sub(i as u64);
        let priority = (126u64 << 24) | (local_pref << 8) | 255;
        let mut c = SdpAttributeCandidate::new(
            (first + i + 1).to_string(),
            1,
            SdpAttributeCandidateTransport::Tcp,
            priority,
            Address::Ip(addr.ip()),
            u32::from(addr.port()),
            SdpAttributeCandidateType::Host,
        );
        c.tcp_type = Some(SdpAttributeCandidateTcpType::Passive);
        push(m, SdpAttribute::Candidate(c))?;
    }
    Ok(())
}

pub(crate) fn extmap(id: u16, uri: &str) -> SdpAttribute {
    SdpAttribute::Extmap(SdpAttributeExtmap {
        id,
        direction: None,
        url: uri.to_owned(),
        extension_attributes: None,
    })
}

/// `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines for one codec.
pub(crate) fn codec(m: &mut SdpMedia, c: &CodecParams) -> Result<(), SdpError> {
    let mut map = SdpAttributeRtpmap::new(c.pt, c.name.clone(), c.clock_rate);
    map.channels = c.channels;
    push(m, SdpAttribute::Rtpmap(map))?;
    if !c.fmtp.is_empty() {
        let mut fmtp = attr_from_text(&format!("fmtp:{} {}", c.pt, c.fmtp))?;
        if let SdpAttribute::Fmtp(f) = &mut fmtp {
            // The crate joins unknown parameters with `,` when writing; one token joined
            // with `;` comes out as valid fmtp.
            let unknown = std::mem::take(&mut f.parameters.unknown_tokens);
            if !unknown.is_empty() {
                f.parameters.unknown_tokens = vec![unknown.join(";")];
            }
        }
        push(m, fmtp)?;
    }
    for fb in &c.rtcp_fb {
        push(m, attr_from_text(&format!("rtcp-fb:{} {}", c.pt, fb))?)?;
    }
    Ok(())
}

fn ssrc_attr(id: u32, key: &str, value: &str) -> SdpAttribute {
    SdpAttribute::Ssrc(SdpAttributeSsrc {
        id,
        attribute: Some(key.to_owned()),
        value: Some(value.to_owned()),
    })
}

/// The identity of one track the server sends: `a=msid:<stream> <track>`, and the SSRCs
/// announced the pre-unified-plan way as well (`a=ssrc:N cname:…` and `msid:…`, with
/// `a=ssrc-group:FID <media> <rtx>` when there is an RTX stream) so that clients that do
/// not read the mid header extension can still map packets to the track.
pub(crate) fn sender(
    m: &mut SdpMedia,
    stream_id: &str,
    track_id: &str,
    cname: &str,
    ssrc: u32,
    rtx_ssrc: Option<u32>,
) -> Result<(), SdpError> {
    push(
        m,
        SdpAttribute::Msid(SdpAttributeMsid {
            id: stream_id.to_owned(),
            appdata: Some(track_id.to_owned()),
        }),
    )?;
    let msid = format!("{stream_id} {track_id}");
    let mut ssrcs = vec![ssrc];
    if let Some(rtx) = rtx_ssrc {
        ssrcs.push(rtx);
        push(
            m,
            SdpAttribute::SsrcGroup(
                SdpSsrcGroupSemantic::FlowIdentification,
                ssrcs.iter().map(|&id| SdpAttributeSsrc::new(id)).collect(),
            ),
        )?;
    }
    for id in ssrcs {
        push(m, ssrc_attr(id, "cname", cname))?;
        push(m, ssrc_attr(id, "msid", &msid))?;
    }
    Ok(())
}
