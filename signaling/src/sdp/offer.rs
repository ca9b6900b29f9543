//! Server-initiated offers to a subscriber (LiveKit's subscriber PeerConnection, WHEP).
//!
//! Each forwarded track gets a `sendonly` section with the server's SSRCs announced the
//! pre-unified-plan way as well (`a=ssrc … cname`/`msid`, `a=ssrc-group:FID` for RTX) so
//! that every client, including ones that do not read the mid header extension, can map
//! packets to tracks; `a=msid:<stream> <track>` carries the LiveKit participant and track
//! ids. A removed track keeps its m-line as `inactive` (m-lines are never removed or
//! reordered across renegotiations, JSEP §5.2.2). The data channel section is
//! `UDP/DTLS/SCTP webrtc-datachannel` with `a=sctp-port`.
//!
//! The offerer must say `a=setup:actpass` (RFC 5763 §5); the client then picks its role.

use webrtc_sdp::attribute_type::{
    SdpAttribute, SdpAttributeGroup, SdpAttributeGroupSemantic, SdpAttributeMsidSemantic,
};
use webrtc_sdp::media_type::{SdpFormatList, SdpMediaValue, SdpProtocolValue};
use webrtc_sdp::SdpSession;

use super::codecs;
use super::emit;
use super::model::{CodecParams, MediaKind, SetupRole};
use super::params::ServerParams;
use super::SdpError;

/// One track the server sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendTrack {
    pub mid: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// `msid` stream id (LiveKit: the publishing participant's sid).
    pub stream_id: String,
    /// `msid` track id (LiveKit: the track sid).
    pub track_id: String,
    pub cname: String,
    pub ssrc: u32,
    /// SSRC of the RTX stream, announced with `a=ssrc-group:FID <ssrc> <rtx>` (video).
    pub rtx_ssrc: Option<u32>,
    /// Codecs to offer; empty means every codec Prism supports for `kind`.
    pub codecs: Vec<CodecParams>,
}

/// One m-section of a server offer, in m-line order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OfferSection {
    Track(SendTrack),
    /// A section kept for its position after its track went away.
    Inactive {
        mid: String,
        kind: MediaKind,
    },
    DataChannel {
        mid: String,
    },
}

impl OfferSection {
    fn mid(&self) -> &str {
        match self {
            OfferSection::Track(t) => &t.mid,
            OfferSection::Inactive { mid, .. } | OfferSection::DataChannel { mid } => mid,
        }
    }
}

/// Builds a server-side offer.
#[derive(Debug)]
pub struct OfferBuilder<'a> {
    params: &'a ServerParams,
    sections: Vec<OfferSection>,
}

impl<'a> OfferBuilder<'a> {
    pub fn new(params: &'a ServerParams) -> Self {
        Self {
            params,
            sections: Vec::new(),
        }
    }

    pub fn section(mut self, s: OfferSection) -> Self {
        self.sections.push(s);
        self
    }

    pub fn track(self, t: SendTrack) -> Self {
        self.section(OfferSection::Track(t))
    }

    pub fn data_channel(self, mid: &str) -> Self {
        self.section(OfferSection::DataChannel {
            mid: mid.to_owned(),
        })
    }

    pub fn build(&self) -> Result<String, SdpError> {
        Ok(self.build_session()?.to_string())
    }

    pub fn build_session(&self) -> Result<SdpSession, SdpError> {
        let at = self.params.check()?;
        let mut mids: Vec<String> = Vec::with_capacity(self.sections.len());
        for s in &self.sections {
            let mid = s.mid();
            if mid.is_empty() {
                return Err(SdpError::MissingMid { index: mids.len() });
            }
            if mids.iter().any(|m| m == mid) {
                return Err(SdpError::DuplicateMid(mid.to_owned()));
            }
            mids.push(mid.to_owned());
        }
        let mut s = emit::session(self.params);
        if !mids.is_empty() {
            emit::push_session(
                &mut s,
                SdpAttribute::Group(SdpAttributeGroup {
                    semantics: SdpAttributeGroupSemantic::Bundle,
                    tags: mids,
                }),
            )?;
        }
        emit::push_session(&mut s, SdpAttribute::IceLite)?;
        emit::push_session(
            &mut s,
            SdpAttribute::MsidSemantic(SdpAttributeMsidSemantic {
                semantic: "WMS".to_owned(),
                msids: Vec::new(),
            }),
        )?;
        let mut media = Vec::with_capacity(self.sections.len());
        for sec in &self.sections {
            media.push(match sec {
                OfferSection::Track(t) => self.track_section(t, at)?,
                OfferSection::Inactive { mid, kind } => self.inactive_section(mid, *kind, at)?,
                OfferSection::DataChannel { mid } => self.data_section(mid, at)?,
            });
        }
        s.extend_media(media);
        Ok(s)
    }

    fn rtp_common(
        &self,
        mid: &str,
        kind: MediaKind,
        codecs: &[CodecParams],
        direction: SdpAttribute,
        at: std::net::SocketAddr,
    ) -> Result<webrtc_sdp::media_type::SdpMedia, SdpError> {
        if !matches!(kind, MediaKind::Audio | MediaKind::Video) {
            return Err(SdpError::BadServerParams("a track must be audio or video"));
        }
        let formats = SdpFormatList::Integers(codecs.iter().map(|c| u32::from(c.pt)).collect());
        let mut m = emit::media(
            emit::media_value(kind),
            SdpProtocolValue::UdpTlsRtpSavpf,
            formats,
            Some(at),
        );
        emit::push(&mut m, SdpAttribute::Mid(mid.to_owned()))?;
        emit::push(&mut m, direction)?;
        emit::transport(&mut m, self.params, SetupRole::ActPass)?;
        // Every section here sends (or did): only what the forwarder writes.
        for (id, uri) in codecs::sending_extmaps(kind) {
            emit::push(&mut m, emit::extmap(id, &uri))?;
        }
        emit::push(&mut m, SdpAttribute::RtcpMux)?;
        emit::push(&mut m, SdpAttribute::RtcpRsize)?;
        for c in codecs {
            emit::codec(&mut m, c)?;
        }
        Ok(m)
    }

    fn track_section(
        &self,
        t: &SendTrack,
        at: std::net::SocketAddr,
    ) -> Result<webrtc_sdp::media_type::SdpMedia, SdpError> {
        let defaults;
        let codecs = if t.codecs.is_empty() {
            defaults = codecs::default_codecs(t.kind);
            &defaults
        } else {
            &t.codecs
        };
        let mut m = self.rtp_common(&t.mid, t.kind, codecs, SdpAttribute::Sendonly, at)?;
        emit::sender(
            &mut m,
            &t.stream_id,
            &t.track_id,
            &t.cname,
            t.ssrc,
            t.rtx_ssrc,
        )?;
        emit::candidates(&mut m, self.params)?;
        Ok(m)
    }

    fn inactive_section(
        &self,
        mid: &str,
        kind: MediaKind,
        at: std::net::SocketAddr,
    ) -> Result<webrtc_sdp::media_type::SdpMedia, SdpError> {
        let codecs = codecs::default_codecs(kind);
        let mut m = self.rtp_common(mid, kind, &codecs, SdpAttribute::Inactive, at)?;
        emit::candidates(&mut m, self.params)?;
        Ok(m)
    }

    fn data_section(
        &self,
        mid: &str,
        at: std::net::SocketAddr,
    ) -> Result<webrtc_sdp::media_type::SdpMedia, SdpError> {
        let mut m = emit::media(
            SdpMediaValue::Application,
            SdpProtocolValue::UdpDtlsSctp,
            SdpFormatList::Strings(vec!["webrtc-datachannel".to_owned()]),
            Some(at),
        );
        emit::push(&mut m, SdpAttribute::Mid(mid.to_owned()))?;
        emit::transport(&mut m, self.params, SetupRole::ActPass)?;
        emit::push(
            &mut m,
            SdpAttribute::SctpPort(u64::from(self.params.sctp_port)),
        )?;
        emit::push(
            &mut m,
            SdpAttribute::MaxMessageSize(self.params.max_message_size),
        )?;
        emit::candidates(&mut m, self.params)?;
        Ok(m)
    }
}
