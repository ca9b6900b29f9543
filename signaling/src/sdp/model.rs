//! Prism's view of a session description, built from `webrtc-sdp`'s typed parse.
//!
//! Every [`MediaSection`] is self-contained: session-level ICE credentials, fingerprint,
//! setup role and extmaps are copied into each section that does not override them, so
//! the answer and offer builders never look at two levels. The original parse is kept
//! in [`SessionOffer::raw`] for anything this view does not model.
//!
//! Invariant: `SessionOffer::parse` never panics; every failure is an [`SdpError`].

use std::collections::BTreeMap;

use webrtc_sdp::attribute_type::{
    SdpAttribute, SdpAttributeGroupSemantic, SdpAttributeSetup, SdpSingleDirection,
    SdpSsrcGroupSemantic,
};
use webrtc_sdp::error::SdpParserError;
use webrtc_sdp::media_type::{SdpMedia, SdpMediaValue, SdpProtocolValue};
use webrtc_sdp::SdpSession;

use super::SdpError;

/// What an m-line carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
    Application,
    /// Anything else (`m=text`, `m=message` …); always rejected.
    Other,
}

/// `a=sendrecv` and friends, from the point of view of the description's author.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction the other side answers with, if it accepts everything offered.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }

    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// DTLS role (RFC 4145 / RFC 5763 `a=setup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetupRole {
    Active,
    Passive,
    ActPass,
    HoldConn,
}

/// `a=rid` direction (RFC 8851).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RidDirection {
    Send,
    Recv,
}

/// `a=fingerprint`: hash name as written (`sha-256`) and the digest bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub algorithm: String,
    pub value: Vec<u8>,
}

/// One payload type of an m-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecParams {
    pub pt: u8,
    /// Encoding name as written (`opus`, `VP8`, `rtx` …).
    pub name: String,
    pub clock_rate: u32,
    pub channels: Option<u32>,
    /// The `a=fmtp` parameter text (normalised by `webrtc-sdp`), empty if none.
    pub fmtp: String,
    /// `a=rtcp-fb` values for this payload type, e.g. `nack`, `nack pli`, `transport-cc`.
    pub rtcp_fb: Vec<String>,
}

impl CodecParams {
    /// Value of one `key=value` format parameter, case-insensitive on the key.
    pub fn fmtp_param(&self, key: &str) -> Option<&str> {
        self.fmtp
            .split([';', ','])
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim())
    }

    pub fn is_rtx(&self) -> bool {
        self.name.eq_ignore_ascii_case("rtx")
    }
}

/// One SSRC announced with `a=ssrc`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SsrcInfo {
    pub ssrc: u32,
    pub cname: Option<String>,
    /// `a=ssrc:N msid:<stream> <track>` as written.
    pub msid: Option<String>,
}

/// `a=ssrc-group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SsrcGroup {
    /// `FID`, `SIM`, `FEC`, `FEC-FR` or `DUP`.
    pub semantics: String,
    pub ssrcs: Vec<u32>,
}

/// `a=simulcast` (RFC 8853): each list is the ordered streams, each stream a set of
/// alternative rids (usually one); `(rid, paused)`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Simulcast {
    pub send: Vec<Vec<(String, bool)>>,
    pub recv: Vec<Vec<(String, bool)>>,
}

/// One m-section, with session-level defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSection {
    /// Empty if the section has no `a=mid` (only legal when rejected).
    pub mid: String,
    pub kind: MediaKind,
    /// `0` means rejected (or bundle-only).
    pub port: u32,
    /// The m-line protocol, e.g. `UDP/TLS/RTP/SAVPF`, `UDP/DTLS/SCTP`.
    pub protocol: String,
    /// The m-line format list as written (payload types, or `webrtc-datachannel`).
    pub formats: Vec<String>,
    pub direction: Direction,
    /// Every payload type on the m-line that has an `a=rtpmap`, in m-line order (RTX
    /// included).
    pub codecs: Vec<CodecParams>,
    /// RTX payload type → the payload type it repairs (`apt`).
    pub rtx: BTreeMap<u8, u8>,
    pub extmaps: Vec<(u16, String)>,
    pub ssrcs: Vec<SsrcInfo>,
    pub ssrc_groups: Vec<SsrcGroup>,
    pub rids: Vec<(String, RidDirection)>,
    pub simulcast: Option<Simulcast>,
    /// `a=msid:<stream> <track>` (unified plan), as `(stream, track)`.
    pub msid: Option<(String, Option<String>)>,
    pub ice_ufrag: Option<String>,
    pub ice_pwd: Option<String>,
    /// The first fingerprint (the strongest is usually first; all are in `fingerprints`).
    pub fingerprint: Option<Fingerprint>,
    pub fingerprints: Vec<Fingerprint>,
    pub setup: Option<SetupRole>,
    pub rtcp_mux: bool,
    pub rtcp_rsize: bool,
    pub sctp_port: Option<u64>,
    pub max_message_size: Option<u64>,
    /// `a=candidate` lines as `(ip or fqdn, port)`; ICE-lite servers only need to know
    /// they exist, checks arrive anyway.
    pub candidates: Vec<(String, u32)>,
    pub bundle_only: bool,
}

impl MediaSection {
    /// Port 0 without `a=bundle-only` (RFC 8843 §6: a bundle-only section has port 0 but
    /// is live).
    pub fn is_rejected(&self) -> bool {
        self.port == 0 && !self.bundle_only
    }

    pub fn is_data_channel(&self) -> bool {
        self.kind == MediaKind::Application
            && self.protocol.ends_with("SCTP")
            && self.formats.iter().any(|f| f == "webrtc-datachannel")
    }

    /// The codec with payload type `pt`.
    pub fn codec(&self, pt: u8) -> Option<&CodecParams> {
        self.codecs.iter().find(|c| c.pt == pt)
    }

    /// Rids the author sends (a publisher's simulcast layers).
    pub fn send_rids(&self) -> impl Iterator<Item = &str> {
        self.rids
            .iter()
            .filter(|(_, d)| *d == RidDirection::Send)
            .map(|(r, _)| r.as_str())
    }
}

/// A parsed description: offers from clients, and (in tests, or from a client answering a
/// server offer) answers too.
#[derive(Clone, Debug)]
pub struct SessionOffer {
    pub media: Vec<MediaSection>,
    /// Mids of `a=group:BUNDLE`, in order (the first is the offerer's tagged section).
    pub bundle: Vec<String>,
    pub ice_lite: bool,
    pub extmap_allow_mixed: bool,
    /// `o=` session id and version.
    pub session_id: u64,
    pub session_version: u64,
    /// The full parse, for anything not modelled here.
    pub raw: SdpSession,
}

fn syntax(e: &SdpParserError) -> SdpError {
    let line = match e {
        SdpParserError::Line { line_number, .. }
        | SdpParserError::Unsupported { line_number, .. }
        | SdpParserError::Sequence { line_number, .. } => Some(*line_number),
    };
    SdpError::Syntax {
        line,
        message: e.to_string(),
    }
}

/// Session-level values inherited by each m-section.
#[derive(Default)]
struct SessionDefaults {
    ufrag: Option<String>,
    pwd: Option<String>,
    fingerprints: Vec<Fingerprint>,
    setup: Option<SetupRole>,
    extmaps: Vec<(u16, String)>,
}

fn fingerprint_of(a: &SdpAttribute) -> Option<Fingerprint> {
    match a {
        SdpAttribute::Fingerprint(f) => Some(Fingerprint {
            algorithm: f.hash_algorithm.to_string(),
            value: f.fingerprint.clone(),
        }),
        _ => None,
    }
}

fn setup_of(s: &SdpAttributeSetup) -> SetupRole {
    match s {
        SdpAttributeSetup::Active => SetupRole::Active,
        SdpAttributeSetup::Passive => SetupRole::Passive,
        SdpAttributeSetup::Actpass => SetupRole::ActPass,
        SdpAttributeSetup::Holdconn => SetupRole::HoldConn,
    }
}

fn kind_of(m: &SdpMediaValue) -> MediaKind {
    match m {
        SdpMediaValue::Audio => MediaKind::Audio,
        SdpMediaValue::Video => MediaKind::Video,
        SdpMediaValue::Application => MediaKind::Application,
        SdpMediaValue::Unknown(_) => MediaKind::Other,
    }
}

/// Protocol names as written on the m-line.
pub(crate) fn protocol_name(p: &SdpProtocolValue) -> String {
    p.to_string()
}

fn ssrc_group_name(s: &SdpSsrcGroupSemantic) -> String {
    s.to_string()
}

fn section(m: &SdpMedia, d: &SessionDefaults) -> MediaSection {
    let formats = match m.get_formats() {
        webrtc_sdp::media_type::SdpFormatList::Integers(v) => {
            v.iter().map(u32::to_string).collect()
        }
        webrtc_sdp::media_type::SdpFormatList::Strings(v) => v.clone(),
        webrtc_sdp::media_type::SdpFormatList::Unknown(s) => {
            s.split_whitespace().map(str::to_owned).collect()
        }
    };
    let mut s = MediaSection {
        mid: String::new(),
        kind: kind_of(m.get_type()),
        port: m.get_port(),
        protocol: protocol_name(m.get_proto()),
        formats,
        direction: Direction::SendRecv,
        codecs: Vec::new(),
        rtx: BTreeMap::new(),
        extmaps: Vec::new(),
        ssrcs: Vec::new(),
        ssrc_groups: Vec::new(),
        rids: Vec::new(),
        simulcast: None,
        msid: None,
        ice_ufrag: None,
        ice_pwd: None,
        fingerprint: None,
        fingerprints: Vec::new(),
        setup: None,
        rtcp_mux: false,
        rtcp_rsize: false,
        sctp_port: None,
        max_message_size: None,
        candidates: Vec::new(),
        bundle_only: false,
    };
    let mut fmtps: BTreeMap<u8, String> = BTreeMap::new();
    let mut fbs: Vec<(Option<u8>, String)> = Vec::new();
    for a in m.get_attributes() {
        match a {
            SdpAttribute::Mid(mid) => s.mid.clone_from(mid),
            SdpAttribute::Sendrecv => s.direction = Direction::SendRecv,
            SdpAttribute::Sendonly => s.direction = Direction::SendOnly,
            SdpAttribute::Recvonly => s.direction = Direction::RecvOnly,
            SdpAttribute::Inactive => s.direction = Direction::Inactive,
            SdpAttribute::Rtpmap(r) => s.codecs.push(CodecParams {
                pt: r.payload_type,
                name: r.codec_name.clone(),
                clock_rate: r.frequency,
                channels: r.channels,
                fmtp: String::new(),
                rtcp_fb: Vec::new(),
            }),
            SdpAttribute::Fmtp(f) => {
                if let Some(rtx) = f.parameters.rtx {
                    s.rtx.insert(f.payload_type, rtx.apt);
                }
                // The crate writes unknown parameters joined by `,`; rejoin them with `;`
                // so the text is valid fmtp again.
                let mut params = f.parameters.clone();
                let unknown = std::mem::take(&mut params.unknown_tokens);
                let mut text = params.to_string();
                if params.rtx.is_none() && params.encodings.is_empty() {
                    for t in unknown {
                        if !text.is_empty() {
                            text.push(';');
                        }
                        text.push_str(&t);
                    }
                }
                fmtps.insert(f.payload_type, text);
            }
            SdpAttribute::Rtcpfb(fb) => {
                let pt = match fb.payload_type {
                    webrtc_sdp::attribute_type::SdpAttributePayloadType::PayloadType(p) => Some(p),
                    webrtc_sdp::attribute_type::SdpAttributePayloadType::Wildcard => None,
                };
                // "pt value": drop the payload type prefix from the crate's rendering.
                let text = fb.to_string();
                let value = text.split_once(' ').map_or("", |(_, v)| v).to_owned();
                fbs.push((pt, value));
            }
            SdpAttribute::Extmap(e) => s.extmaps.push((e.id, e.url.clone())),
            SdpAttribute::Ssrc(x) => {
                let idx = match s.ssrcs.iter().position(|i| i.ssrc == x.id) {
                    Some(i) => i,
                    None => {
                        s.ssrcs.push(SsrcInfo {
                            ssrc: x.id,
                            ..SsrcInfo::default()
                        });
                        s.ssrcs.len() - 1
                    }
                };
                if let Some(info) = s.ssrcs.get_mut(idx) {
                    match x.attribute.as_deref() {
                        Some("cname") => info.cname.clone_from(&x.value),
                        Some("msid") => info.msid.clone_from(&x.value),
                        _ => {}
                    }
                }
            }
            SdpAttribute::SsrcGroup(sem, list) => s.ssrc_groups.push(SsrcGroup {
                semantics: ssrc_group_name(sem),
                ssrcs: list.iter().map(|x| x.id).collect(),
            }),
            SdpAttribute::Rid(r) => s.rids.push((
                r.id.clone(),
                match r.direction {
                    SdpSingleDirection::Send => RidDirection::Send,
                    SdpSingleDirection::Recv => RidDirection::Recv,
                },
            )),
            SdpAttribute::Simulcast(sc) => {
                let conv = |v: &Vec<webrtc_sdp::attribute_type::SdpAttributeSimulcastVersion>| {
                    v.iter()
                        .map(|alts| {
                            alts.ids
                                .iter()
                                .map(|id| (id.id.clone(), id.paused))
                                .collect()
                        })
                        .collect()
                };
                s.simulcast = Some(Simulcast {
                    send: conv(&sc.send),
                    recv: conv(&sc.receive),
                });
            }
            SdpAttribute::Msid(ms) => s.msid = Some((ms.id.clone(), ms.appdata.clone())),
            SdpAttribute::IceUfrag(u) => s.ice_ufrag = Some(u.clone()),
            SdpAttribute::IcePwd(p) => s.ice_pwd = Some(p.clone()),
            SdpAttribute::Fingerprint(_) => s.fingerprints.extend(fingerprint_of(a)),
            SdpAttribute::Setup(x) => s.setup = Some(setup_of(x)),
            SdpAttribute::RtcpMux => s.rtcp_mux = true,
            SdpAttribute::BundleOnly => s.bundle_only = true,
            SdpAttribute::RtcpRsize => s.rtcp_rsize = true,
            SdpAttribute::SctpPort(p) => s.sctp_port = Some(*p),
            SdpAttribute::MaxMessageSize(n) => s.max_message_size = Some(*n),
            SdpAttribute::Sctpmap(map) => {
                // Pre-standard data channels: `a=sctpmap:5000 webrtc-datachannel 1024`.
                s.sctp_port.get_or_insert(u64::from(map.port));
            }
            SdpAttribute::Candidate(c) => s.candidates.push((c.address.to_string(), c.port)),
            _ => {}
        }
    }
    // Only payload types on the m-line count; an rtpmap for anything else is stale.
    let listed: Vec<u8> = s.formats.iter().filter_map(|f| f.parse().ok()).collect();
    s.codecs.retain(|c| listed.contains(&c.pt));
    s.codecs
        .sort_by_key(|c| listed.iter().position(|&p| p == c.pt));
    s.rtx.retain(|pt, _| listed.contains(pt));
    for c in &mut s.codecs {
        if let Some(f) = fmtps.remove(&c.pt) {
            c.fmtp = f;
        }
        c.rtcp_fb = fbs
            .iter()
            .filter(|(pt, _)| pt.is_none_or(|p| p == c.pt))
            .map(|(_, v)| v.clone())
            .collect();
    }
    if s.ice_ufrag.is_none() {
        s.ice_ufrag.clone_from(&d.ufrag);
    }
    if s.ice_pwd.is_none() {
        s.ice_pwd.clone_from(&d.pwd);
    }
    if s.fingerprints.is_empty() {
        s.fingerprints.clone_from(&d.fingerprints);
    }
    s.fingerprint = s.fingerprints.first().cloned();
    if s.setup.is_none() {
        s.setup = d.setup;
    }
    if s.extmaps.is_empty() {
        s.extmaps.clone_from(&d.extmaps);
    }
    s
}

impl SessionOffer {
    /// Parses SDP text. Unknown attributes are ignored (they are warnings in
    /// `raw.warnings`); structural errors are [`SdpError::Syntax`].
    pub fn parse(text: &str) -> Result<SessionOffer, SdpError> {
        // `webrtc-sdp` rejects CR-only line ends; accept the sloppy producers that send
        // bare `\n` (handled by the crate) and strip a stray BOM.
        let text = text.trim_start_matches('\u{feff}');
        let raw = webrtc_sdp::parse_sdp(text, false).map_err(|e| syntax(&e))?;
        Ok(Self::from_session(raw))
    }

    /// Builds the view from an already parsed (or constructed) session.
    pub fn from_session(raw: SdpSession) -> SessionOffer {
        let mut d = SessionDefaults::default();
        let mut bundle = Vec::new();
        let (mut ice_lite, mut allow_mixed) = (false, false);
        for a in &raw.attribute {
            match a {
                SdpAttribute::Group(g) => {
                    if matches!(g.semantics, SdpAttributeGroupSemantic::Bundle) {
                        bundle.clone_from(&g.tags);
                    }
                }
                SdpAttribute::IceLite => ice_lite = true,
                SdpAttribute::ExtmapAllowMixed => allow_mixed = true,
                SdpAttribute::IceUfrag(u) => d.ufrag = Some(u.clone()),
                SdpAttribute::IcePwd(p) => d.pwd = Some(p.clone()),
                SdpAttribute::Fingerprint(_) => d.fingerprints.extend(fingerprint_of(a)),
                SdpAttribute::Setup(s) => d.setup = Some(setup_of(s)),
                SdpAttribute::Extmap(e) => d.extmaps.push((e.id, e.url.clone())),
                _ => {}
            }
        }
        let media = raw.media.iter().map(|m| section(m, &d)).collect();
        SessionOffer {
            media,
            bundle,
            ice_lite,
            extmap_allow_mixed: allow_mixed,
            session_id: raw.origin.session_id,
            session_version: raw.origin.session_version,
            raw,
        }
    }

    /// The section with this mid.
    pub fn section(&self, mid: &str) -> Option<&MediaSection> {
        self.media.iter().find(|m| m.mid == mid)
    }

    /// JSEP checks an answerer needs: every live section has a unique mid, ICE
    /// credentials and a fingerprint.
    pub fn validate(&self) -> Result<(), SdpError> {
        let mut seen = std::collections::BTreeSet::new();
        for (index, m) in self.media.iter().enumerate() {
            let live = !m.is_rejected();
            if m.mid.is_empty() {
                if live {
                    return Err(SdpError::MissingMid { index });
                }
                continue;
            }
            if !seen.insert(m.mid.as_str()) {
                return Err(SdpError::DuplicateMid(m.mid.clone()));
            }
            if !live {
                continue;
            }
            if m.ice_ufrag.is_none() || m.ice_pwd.is_none() {
                return Err(SdpError::MissingIceCredentials { mid: m.mid.clone() });
            }
            if m.fingerprint.is_none() {
                return Err(SdpError::MissingFingerprint { mid: m.mid.clone() });
            }
        }
        Ok(())
    }
}
