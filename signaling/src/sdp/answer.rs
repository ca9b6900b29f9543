//! The ICE-lite answer to a client's offer (JSEP §5.3, RFC 8843 BUNDLE, RFC 8853 simulcast).
//!
//! Rules, each checked by `tests/sdp_answer.rs`:
//! - one answer m-section per offered one, same order and mid; what cannot be accepted is
//!   rejected with port 0, never left out;
//! - codecs are the offered ones Prism forwards ([`super::codecs::classify`]), in the
//!   offerer's order and with its payload types and format parameters; RTX only for an
//!   accepted codec; RTCP feedback and header extensions intersected with what Prism uses,
//!   keeping the offered extension ids;
//! - direction mirrors the offer from the receiving side: the server receives what a
//!   publisher sends (`sendonly`/`sendrecv` → `recvonly`), and a `recvonly` offer is
//!   answered `inactive` unless a track is attached to it ([`AnswerBuilder::send`]);
//! - sending (WHEP viewers): a section the offerer receives on, with a track attached
//!   whose codec was offered, is answered `sendonly` (`sendrecv` only on request) with
//!   just that codec and its RTX, under the offered payload types (the forwarder rewrites
//!   to them, see [`SectionChoice`]), `a=msid` and `a=ssrc` lines, and the accepted header
//!   extensions the forwarder writes on egress (mid, abs-send-time, transport-wide CC,
//!   audio level: [`codecs::extension_sendable`]), so the viewer's estimator gets the
//!   timing it needs;
//! - one id per extension across the answer (BUNDLE: the forwarder keeps one map per
//!   transport): an extension offered in a later section under another id, or an id
//!   offered for another extension, is left out of that section's answer;
//! - RTX where the server receives only while [`AnswerBuilder::accept_rtx`] is on;
//! - simulcast: offered `a=rid:X send` + `a=simulcast:send …` become `a=rid:X recv` +
//!   `a=simulcast:recv …` with the same layers, if the rid header extension is accepted;
//! - transport: `a=ice-lite`, the server's credentials, fingerprint and host candidates in
//!   every live section; `a=setup:passive` when the offer says `actpass` (RFC 5763 §5: the
//!   server then waits for the client's DTLS ClientHello), the opposite role otherwise;
//!   `a=rtcp-mux` always (the forwarder demultiplexes RTP and RTCP on one port);
//! - `a=group:BUNDLE` lists the accepted mids of the offered group, in its order.

use std::net::SocketAddr;

use webrtc_sdp::attribute_type::{
    SdpAttribute, SdpAttributeGroup, SdpAttributeGroupSemantic, SdpAttributeMsidSemantic,
    SdpAttributeRid, SdpAttributeRidParameters, SdpAttributeSimulcast, SdpAttributeSimulcastId,
    SdpAttributeSimulcastVersion, SdpSingleDirection,
};
use webrtc_sdp::media_type::{SdpFormatList, SdpMedia, SdpProtocolValue};
use webrtc_sdp::SdpSession;

use super::codecs::{self, ext, Codec};
use super::emit;
use super::model::{CodecParams, Direction, MediaKind, MediaSection, SessionOffer, SetupRole};
pub use super::params::ServerParams;
use super::SdpError;

/// A track the server sends in a section the offerer can receive on (a WHEP viewer's
/// `recvonly` section, or a subscriber's `sendrecv` one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerTrack {
    pub ssrc: u32,
    /// SSRC of the RTX stream; announced (`a=ssrc-group:FID`) only if the offer has RTX for
    /// the codec sent, see [`SectionChoice::rtx_pt`].
    pub rtx_ssrc: Option<u32>,
    pub cname: String,
    /// `msid` stream id (LiveKit: the publishing participant's sid).
    pub stream_id: String,
    /// `msid` track id (LiveKit: the track sid).
    pub track_id: String,
    /// The codec the forwarded track is in; the section sends only if it was offered.
    pub codec: Codec,
}

/// What the answer chose for one section, in m-line order: what the forwarder needs to
/// send to a viewer (its payload types) or to read a publisher's packets (payload types
/// and header extension ids).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionChoice {
    pub mid: String,
    pub kind: MediaKind,
    /// As written in the answer, from the server's side. Rejected sections are `Inactive`;
    /// a data channel is `SendRecv`.
    pub direction: Direction,
    /// The codec media flows in, with the offerer's payload type: for a sending section
    /// the attached track's codec (the sender must rewrite to this payload type), for a
    /// receiving one the first accepted codec. `None` when no media flows (inactive,
    /// rejected, data channel).
    pub codec: Option<CodecParams>,
    /// The answered RTX payload type repairing `codec`, if any.
    pub rtx_pt: Option<u8>,
    /// The answered header extensions, with the offer's ids.
    pub extmaps: Vec<(u16, String)>,
}

/// Builds the answer to one offer.
///
/// Without attached tracks every section only receives (publishers). [`Self::send`]
/// attaches a forwarded track to a section the offerer receives on (viewers).
#[derive(Debug)]
pub struct AnswerBuilder<'a> {
    offer: &'a SessionOffer,
    params: &'a ServerParams,
    /// Attached tracks by mid; a later `send` to the same mid replaces the earlier one.
    tracks: Vec<(String, AnswerTrack)>,
    /// Mids of `sendrecv` sections answered `sendrecv` despite an attached track.
    also_receive: Vec<String>,
    /// Mids whose sending section keeps every accepted header extension, receive-only
    /// ones included.
    with_extensions: Vec<String>,
    /// Mids answered with no header extension at all.
    without_extensions: Vec<String>,
    accept_rtx: bool,
}

/// How one accepted RTP section is answered.
#[derive(Debug)]
struct Plan<'t> {
    direction: Direction,
    codecs: Vec<CodecParams>,
    extmaps: Vec<(u16, String)>,
    /// The codec media flows in (sent or received), if any.
    chosen: Option<CodecParams>,
    rtx_pt: Option<u8>,
    /// The track sent, when the section sends.
    track: Option<&'t AnswerTrack>,
}

/// What the answer does with one offered section.
#[derive(Debug)]
enum Verdict {
    Reject,
    Rtp {
        codecs: Vec<CodecParams>,
        extmaps: Vec<(u16, String)>,
    },
    Data,
}

fn decide(m: &MediaSection) -> Verdict {
    if m.is_rejected() || m.mid.is_empty() {
        return Verdict::Reject;
    }
    match m.kind {
        MediaKind::Application if m.is_data_channel() => Verdict::Data,
        MediaKind::Audio | MediaKind::Video if m.protocol.contains("RTP/SAVPF") => {
            let mut accepted: Vec<CodecParams> = m
                .codecs
                .iter()
                .filter(|c| codecs::classify(m.kind, c).is_some())
                .cloned()
                .collect();
            if accepted.is_empty() {
                return Verdict::Reject;
            }
            let primaries: Vec<u8> = accepted.iter().map(|c| c.pt).collect();
            let rtx = m.codecs.iter().filter(|c| {
                codecs::is_rtx(c) && m.rtx.get(&c.pt).is_some_and(|apt| primaries.contains(apt))
            });
            accepted.extend(rtx.cloned());
            // Keep the offerer's order (its preference).
            accepted.sort_by_key(|c| m.codecs.iter().position(|o| o.pt == c.pt));
            for c in &mut accepted {
                c.rtcp_fb
                    .retain(|fb| codecs::feedback_supported(m.kind, fb));
                c.rtcp_fb.dedup();
            }
            let extmaps = m
                .extmaps
                .iter()
                .filter(|(_, uri)| codecs::extension_supported(m.kind, uri))
                .cloned()
                .collect();
            Verdict::Rtp {
                codecs: accepted,
                extmaps,
            }
        }
        _ => Verdict::Reject,
    }
}

fn direction_of(send: bool, recv: bool) -> Direction {
    match (send, recv) {
        (true, true) => Direction::SendRecv,
        (true, false) => Direction::SendOnly,
        (false, true) => Direction::RecvOnly,
        (false, false) => Direction::Inactive,
    }
}

/// The RTX payload type in `codecs` that repairs `pt`.
fn rtx_for(m: &MediaSection, codecs: &[CodecParams], pt: u8) -> Option<u8> {
    codecs
        .iter()
        .find(|c| c.is_rtx() && m.rtx.get(&c.pt) == Some(&pt))
        .map(|c| c.pt)
}

fn direction_attr(d: Direction) -> SdpAttribute {
    match d {
        Direction::SendRecv => SdpAttribute::Sendrecv,
        Direction::SendOnly => SdpAttribute::Sendonly,
        Direction::RecvOnly => SdpAttribute::Recvonly,
        Direction::Inactive => SdpAttribute::Inactive,
    }
}

fn rid_attr(id: &str, direction: SdpSingleDirection) -> SdpAttribute {
    SdpAttribute::Rid(SdpAttributeRid {
        id: id.to_owned(),
        direction,
        formats: Vec::new(),
        params: SdpAttributeRidParameters {
            max_width: 0,
            max_height: 0,
            max_fps: 0,
            max_fs: 0,
            max_br: 0,
            max_pps: 0,
            unknown: Vec::new(),
        },
        depends: Vec::new(),
    })
}

/// `a=rid:X recv` for each offered send rid, and `a=simulcast:recv` mirroring the offer.
fn simulcast(out: &mut SdpMedia, m: &MediaSection) -> Result<(), SdpError> {
    let send: Vec<&str> = m.send_rids().collect();
    let Some(sc) = &m.simulcast else {
        return Ok(());
    };
    if send.is_empty() || sc.send.is_empty() {
        return Ok(());
    }
    for rid in &send {
        emit::push(out, rid_attr(rid, SdpSingleDirection::Recv))?;
    }
    let receive = sc
        .send
        .iter()
        .map(|alts| SdpAttributeSimulcastVersion {
            ids: alts
                .iter()
                .filter(|(id, _)| send.contains(&id.as_str()))
                .map(|(id, paused)| SdpAttributeSimulcastId {
                    id: id.clone(),
                    paused: *paused,
                })
                .collect(),
        })
        .filter(|v| !v.ids.is_empty())
        .collect();
    emit::push(
        out,
        SdpAttribute::Simulcast(SdpAttributeSimulcast {
            send: Vec::new(),
            receive,
        }),
    )
}

impl<'a> AnswerBuilder<'a> {
    pub fn new(offer: &'a SessionOffer, params: &'a ServerParams) -> Self {
        Self {
            offer,
            params,
            tracks: Vec::new(),
            also_receive: Vec::new(),
            with_extensions: Vec::new(),
            without_extensions: Vec::new(),
            accept_rtx: true,
        }
    }

    /// Sends `track` in the section `mid`. An offered `recvonly` or `sendrecv` section is
    /// then answered `sendonly` (see [`Self::also_receive`]), listing only the track's
    /// codec (and its RTX, if the offer has it and the track has an RTX SSRC) with the
    /// offered payload types, and announcing the SSRCs, with the accepted header
    /// extensions the forwarder writes.
    ///
    /// If the offerer cannot receive there or did not offer the track's codec, the
    /// section is answered as if no track were attached; [`Self::build_with_choices`]
    /// tells. A mid missing from the offer or a codec of the wrong kind is an
    /// [`SdpError::BadTrack`] at build time.
    pub fn send(mut self, mid: &str, track: AnswerTrack) -> Self {
        self.tracks.retain(|(m, _)| m != mid);
        self.tracks.push((mid.to_owned(), track));
        self
    }

    /// Answers an offered `sendrecv` section that has a track attached with `sendrecv`
    /// instead of `sendonly`: the server receives there too, with the receive rules
    /// (all accepted codecs, RTX per [`Self::accept_rtx`], header extensions kept).
    pub fn also_receive(mut self, mid: &str) -> Self {
        self.also_receive.push(mid.to_owned());
        self
    }

    /// Keeps every accepted header extension on the sending section `mid`, including the
    /// receive-only ones (RID) that the forwarder does not write. By default a sending
    /// section answers only the ones it writes.
    pub fn with_header_extensions_for(mut self, mid: &str) -> Self {
        self.with_extensions.push(mid.to_owned());
        self
    }

    /// Answers section `mid` with no `a=extmap` at all, whatever its direction (wins over
    /// [`Self::with_header_extensions_for`]).
    pub fn without_header_extensions_for(mut self, mid: &str) -> Self {
        self.without_extensions.push(mid.to_owned());
        self
    }

    /// Whether sections the server receives on accept the publisher's RTX payload types
    /// (default `true`). With `false` no RTX is answered where the server receives, so
    /// the publisher retransmits in the original stream. Sending-only sections follow
    /// the attached track's `rtx_ssrc` instead.
    pub fn accept_rtx(mut self, accept: bool) -> Self {
        self.accept_rtx = accept;
        self
    }

    /// The answer as SDP text (CRLF line ends).
    pub fn build(&self) -> Result<String, SdpError> {
        Ok(self.build_session()?.to_string())
    }

    /// The answer as SDP text, and what was chosen for each section, in m-line order.
    pub fn build_with_choices(&self) -> Result<(String, Vec<SectionChoice>), SdpError> {
        let (s, choices) = self.build_all()?;
        Ok((s.to_string(), choices))
    }

    /// The answer as a `webrtc-sdp` session.
    pub fn build_session(&self) -> Result<SdpSession, SdpError> {
        Ok(self.build_all()?.0)
    }

    fn check_tracks(&self) -> Result<(), SdpError> {
        for (mid, t) in &self.tracks {
            let Some(m) = self.offer.section(mid) else {
                return Err(SdpError::BadTrack {
                    mid: mid.clone(),
                    why: "no such mid in the offer",
                });
            };
            if t.codec.kind() != m.kind {
                return Err(SdpError::BadTrack {
                    mid: mid.clone(),
                    why: "the track's codec is not of the section's kind",
                });
            }
        }
        Ok(())
    }

    fn build_all(&self) -> Result<(SdpSession, Vec<SectionChoice>), SdpError> {
        self.offer.validate()?;
        self.check_tracks()?;
        let first = self.params.check()?;
        let mut s = emit::session(self.params);
        let mut media = Vec::with_capacity(self.offer.media.len());
        let mut choices = Vec::with_capacity(self.offer.media.len());
        let mut accepted_mids = Vec::new();
        // (id, uri) answered so far: one map for the whole bundle.
        let mut ids: Vec<(u16, String)> = Vec::new();
        for (i, m) in self.offer.media.iter().enumerate() {
            let raw = self.offer.raw.media.get(i);
            let mut choice = SectionChoice {
                mid: m.mid.clone(),
                kind: m.kind,
                direction: Direction::Inactive,
                codec: None,
                rtx_pt: None,
                extmaps: Vec::new(),
            };
            let out = match decide(m) {
                Verdict::Reject => self.rejected(m, raw),
                Verdict::Data => {
                    choice.direction = Direction::SendRecv;
                    self.data(m, first)?
                }
                Verdict::Rtp { codecs, extmaps } => {
                    let mut plan = self.plan(m, codecs, extmaps);
                    plan.extmaps.retain(|(id, uri)| {
                        let clash = ids.iter().any(|(i, u)| (i == id) != (u == uri));
                        if !clash && !ids.iter().any(|(i, _)| i == id) {
                            ids.push((*id, uri.clone()));
                        }
                        !clash
                    });
                    let out = self.rtp(m, &plan, first)?;
                    choice.direction = plan.direction;
                    choice.codec = plan.chosen;
                    choice.rtx_pt = plan.rtx_pt;
                    choice.extmaps = plan.extmaps;
                    out
                }
            };
            if out.get_port() != 0 {
                accepted_mids.push(m.mid.clone());
            }
            media.push(out);
            choices.push(choice);
        }
        if !self.offer.bundle.is_empty() {
            let tags: Vec<String> = self
                .offer
                .bundle
                .iter()
                .filter(|mid| accepted_mids.contains(mid))
                .cloned()
                .collect();
            if !tags.is_empty() {
                emit::push_session(
                    &mut s,
                    SdpAttribute::Group(SdpAttributeGroup {
                        semantics: SdpAttributeGroupSemantic::Bundle,
                        tags,
                    }),
                )?;
            }
        }
        if self.offer.extmap_allow_mixed {
            emit::push_session(&mut s, SdpAttribute::ExtmapAllowMixed)?;
        }
        emit::push_session(&mut s, SdpAttribute::IceLite)?;
        emit::push_session(
            &mut s,
            SdpAttribute::MsidSemantic(SdpAttributeMsidSemantic {
                semantic: "WMS".to_owned(),
                msids: Vec::new(),
            }),
        )?;
        s.extend_media(media);
        Ok((s, choices))
    }

    /// Direction, codecs and extensions of an accepted RTP section. `codecs` are all the
    /// accepted ones (RTX included), in the offerer's order.
    fn plan(
        &self,
        m: &MediaSection,
        codecs: Vec<CodecParams>,
        extmaps: Vec<(u16, String)>,
    ) -> Plan<'_> {
        let has = |list: &[String]| list.contains(&m.mid);
        let attached = self
            .tracks
            .iter()
            .find(|(mid, _)| *mid == m.mid)
            .map(|(_, t)| t);
        // The first offered payload type of the track's codec is the one to send with.
        let sent = attached.filter(|_| m.direction.receives()).and_then(|t| {
            codecs
                .iter()
                .find(|c| codecs::classify(m.kind, c) == Some(t.codec))
                .map(|c| (t, c.clone()))
        });
        let send = sent.is_some();
        let recv = m.direction.sends() && (!send || has(&self.also_receive));
        let direction = direction_of(send, recv);

        let (codecs, chosen) = match &sent {
            Some((t, c)) if !recv => {
                // Only what will be sent: the codec and, if the track has an RTX
                // stream and the offerer can take it, its RTX.
                let rtx = t
                    .rtx_ssrc
                    .and_then(|_| rtx_for(m, &codecs, c.pt))
                    .and_then(|pt| codecs.iter().find(|r| r.pt == pt).cloned());
                (
                    std::iter::once(c.clone()).chain(rtx).collect(),
                    Some(c.clone()),
                )
            }
            _ => {
                let mut codecs = codecs;
                if !self.accept_rtx {
                    codecs.retain(|c| !c.is_rtx());
                }
                let chosen = match &sent {
                    Some((_, c)) => Some(c.clone()),
                    None if recv => codecs.iter().find(|c| !c.is_rtx()).cloned(),
                    None => None,
                };
                (codecs, chosen)
            }
        };
        let rtx_pt = chosen.as_ref().and_then(|c| rtx_for(m, &codecs, c.pt));
        let extmaps = if has(&self.without_extensions) {
            Vec::new()
        } else if send && !recv && !has(&self.with_extensions) {
            let mut e = extmaps;
            e.retain(|(_, uri)| codecs::extension_sendable(m.kind, uri));
            e
        } else {
            extmaps
        };
        Plan {
            direction,
            codecs,
            extmaps,
            chosen,
            rtx_pt,
            track: sent.map(|(t, _)| t),
        }
    }

    fn role(&self, m: &MediaSection) -> SetupRole {
        match m.setup {
            Some(SetupRole::ActPass) | None => self.params.setup_when_actpass,
            Some(SetupRole::Active) => SetupRole::Passive,
            Some(SetupRole::Passive) => SetupRole::Active,
            Some(SetupRole::HoldConn) => SetupRole::HoldConn,
        }
    }

    fn rejected(&self, m: &MediaSection, raw: Option<&SdpMedia>) -> SdpMedia {
        let proto = raw
            .map(|r| r.get_proto().clone())
            .unwrap_or(SdpProtocolValue::UdpTlsRtpSavpf);
        let value = raw
            .map(|r| r.get_type().clone())
            .unwrap_or_else(|| emit::media_value(m.kind));
        let formats = raw
            .map(|r| r.get_formats().clone())
            .unwrap_or_else(|| SdpFormatList::Strings(m.formats.clone()));
        let mut out = emit::media(value, proto, formats, None);
        if !m.mid.is_empty() {
            // Infallible at media level; a failure would only drop the mid.
            let _ = emit::push(&mut out, SdpAttribute::Mid(m.mid.clone()));
        }
        out
    }

    fn data(&self, m: &MediaSection, at: SocketAddr) -> Result<SdpMedia, SdpError> {
        let mut out = emit::media(
            webrtc_sdp::media_type::SdpMediaValue::Application,
            SdpProtocolValue::UdpDtlsSctp,
            SdpFormatList::Strings(vec!["webrtc-datachannel".to_owned()]),
            Some(at),
        );
        emit::push(&mut out, SdpAttribute::Mid(m.mid.clone()))?;
        emit::transport(&mut out, self.params, self.role(m))?;
        emit::push(
            &mut out,
            SdpAttribute::SctpPort(u64::from(self.params.sctp_port)),
        )?;
        emit::push(
            &mut out,
            SdpAttribute::MaxMessageSize(self.params.max_message_size),
        )?;
        emit::candidates(&mut out, self.params)?;
        Ok(out)
    }

    fn rtp(&self, m: &MediaSection, plan: &Plan<'_>, at: SocketAddr) -> Result<SdpMedia, SdpError> {
        let formats =
            SdpFormatList::Integers(plan.codecs.iter().map(|c| u32::from(c.pt)).collect());
        let mut out = emit::media(
            emit::media_value(m.kind),
            SdpProtocolValue::UdpTlsRtpSavpf,
            formats,
            Some(at),
        );
        emit::push(&mut out, SdpAttribute::Mid(m.mid.clone()))?;
        emit::push(&mut out, direction_attr(plan.direction))?;
        emit::transport(&mut out, self.params, self.role(m))?;
        for (id, uri) in &plan.extmaps {
            emit::push(&mut out, emit::extmap(*id, uri))?;
        }
        emit::push(&mut out, SdpAttribute::RtcpMux)?;
        if m.rtcp_rsize {
            emit::push(&mut out, SdpAttribute::RtcpRsize)?;
        }
        for c in &plan.codecs {
            emit::codec(&mut out, c)?;
        }
        if plan.direction.receives() && plan.extmaps.iter().any(|(_, u)| u == ext::RID) {
            simulcast(&mut out, m)?;
        }
        if let Some(t) = plan.track {
            // Announce the RTX SSRC only if an RTX payload type was answered for it.
            let rtx = t.rtx_ssrc.filter(|_| plan.rtx_pt.is_some());
            emit::sender(&mut out, &t.stream_id, &t.track_id, &t.cname, t.ssrc, rtx)?;
        }
        emit::candidates(&mut out, self.params)?;
        Ok(out)
    }
}
