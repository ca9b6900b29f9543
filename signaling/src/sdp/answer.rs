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
//!   publisher sends (`sendonly`/`sendrecv` → `recvonly`); it sends only in sections of a
//!   server-side offer ([`super::offer`]), so a `recvonly` offer is answered `inactive`;
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

use super::codecs::{self, ext};
use super::emit;
use super::model::{
    CodecParams, Direction, Fingerprint, MediaKind, MediaSection, SessionOffer, SetupRole,
};
use super::SdpError;

/// What the server puts in every description it writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerParams {
    pub ice_ufrag: String,
    pub ice_pwd: String,
    /// The DTLS certificate's fingerprint, e.g. `sha-256` and 32 bytes.
    pub fingerprint: Fingerprint,
    /// Host UDP candidates: the core's `ip:port` (one per core that may carry the
    /// transport, or just the owning core's). The first is also the m-line address.
    pub candidates: Vec<SocketAddr>,
    /// The DTLS role taken when the peer offers `actpass`. Passive by default: the
    /// browser then starts the handshake as soon as ICE connects.
    pub setup_when_actpass: SetupRole,
    /// `o=` session id and version; bump the version on every new description.
    pub session_id: u64,
    pub session_version: u64,
    /// Advertised `a=sctp-port` and `a=max-message-size` for data channels.
    pub sctp_port: u16,
    pub max_message_size: u64,
}

impl ServerParams {
    /// Parameters with the defaults above; `fingerprint` is `sha-256` of the certificate.
    pub fn new(
        ice_ufrag: &str,
        ice_pwd: &str,
        sha256_fingerprint: [u8; 32],
        candidates: Vec<SocketAddr>,
    ) -> Self {
        Self {
            ice_ufrag: ice_ufrag.to_owned(),
            ice_pwd: ice_pwd.to_owned(),
            fingerprint: Fingerprint {
                algorithm: "sha-256".to_owned(),
                value: sha256_fingerprint.to_vec(),
            },
            candidates,
            setup_when_actpass: SetupRole::Passive,
            session_id: 1,
            session_version: 1,
            sctp_port: 5000,
            max_message_size: 262_144,
        }
    }

    pub(crate) fn check(&self) -> Result<SocketAddr, SdpError> {
        if self.ice_ufrag.len() < 4 || self.ice_pwd.len() < 22 {
            // RFC 8839 §5.4: ufrag ≥ 4 and pwd ≥ 22 characters.
            return Err(SdpError::BadServerParams("ICE ufrag/pwd too short"));
        }
        self.candidates
            .first()
            .copied()
            .ok_or(SdpError::BadServerParams("no candidate"))
    }
}

/// Builds the answer to one offer.
#[derive(Debug)]
pub struct AnswerBuilder<'a> {
    offer: &'a SessionOffer,
    params: &'a ServerParams,
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

fn answer_direction(offered: Direction) -> Direction {
    match offered {
        Direction::SendOnly | Direction::SendRecv => Direction::RecvOnly,
        Direction::RecvOnly | Direction::Inactive => Direction::Inactive,
    }
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
        Self { offer, params }
    }

    /// The answer as SDP text (CRLF line ends).
    pub fn build(&self) -> Result<String, SdpError> {
        Ok(self.build_session()?.to_string())
    }

    /// The answer as a `webrtc-sdp` session.
    pub fn build_session(&self) -> Result<SdpSession, SdpError> {
        self.offer.validate()?;
        let first = self.params.check()?;
        let mut s = emit::session(self.params);
        let mut media = Vec::with_capacity(self.offer.media.len());
        let mut accepted_mids = Vec::new();
        for (i, m) in self.offer.media.iter().enumerate() {
            let raw = self.offer.raw.media.get(i);
            let verdict = decide(m);
            let out = match verdict {
                Verdict::Reject => self.rejected(m, raw),
                Verdict::Data => self.data(m, first)?,
                Verdict::Rtp { codecs, extmaps } => self.rtp(m, &codecs, &extmaps, first)?,
            };
            if out.get_port() != 0 {
                accepted_mids.push(m.mid.clone());
            }
            media.push(out);
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
        Ok(s)
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

    fn rtp(
        &self,
        m: &MediaSection,
        codecs: &[CodecParams],
        extmaps: &[(u16, String)],
        at: SocketAddr,
    ) -> Result<SdpMedia, SdpError> {
        let formats = SdpFormatList::Integers(codecs.iter().map(|c| u32::from(c.pt)).collect());
        let mut out = emit::media(
            emit::media_value(m.kind),
            SdpProtocolValue::UdpTlsRtpSavpf,
            formats,
            Some(at),
        );
        emit::push(&mut out, SdpAttribute::Mid(m.mid.clone()))?;
        emit::push(&mut out, direction_attr(answer_direction(m.direction)))?;
        emit::transport(&mut out, self.params, self.role(m))?;
        for (id, uri) in extmaps {
            emit::push(&mut out, emit::extmap(*id, uri))?;
        }
        emit::push(&mut out, SdpAttribute::RtcpMux)?;
        if m.rtcp_rsize {
            emit::push(&mut out, SdpAttribute::RtcpRsize)?;
        }
        for c in codecs {
            emit::codec(&mut out, c)?;
        }
        if m.direction.sends() && extmaps.iter().any(|(_, u)| u == ext::RID) {
            simulcast(&mut out, m)?;
        }
        emit::candidates(&mut out, self.params)?;
        Ok(out)
    }
}
