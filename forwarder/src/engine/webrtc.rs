//! The WebRTC side of a transport: ICE-lite, DTLS, SRTP contexts and data channels.
//!
//! Everything here but SRTP is slow path: STUN checks arrive a few times a second, DTLS
//! and SCTP only during setup and for data channels. Those paths may allocate. SRTP is used
//! by the engine's packet path through `srtp_in` and `srtp_out`, which are set up once when
//! the DTLS handshake completes and never reallocated.
//!
//! [`WebRtc::pump`] is called after every input (datagram or timer). It moves bytes
//! between the layers until none has anything left to say:
//! - DTLS application data goes into SCTP;
//! - SCTP output goes into DTLS;
//! - DTLS output goes to the network;
//! - connection and data-channel happenings become control events.

use std::net::SocketAddr;
use std::time::Instant;

use prism_proto::control as pb;

use crate::dtls::{DtlsCert, DtlsEndpoint, DtlsError, DtlsEvent, DtlsRole};
use crate::egress::{send_bytes, Egress};
use crate::engine::command::{CommandError, WebRtcParams};
use crate::engine::outbox::Outbox;
use crate::engine::slab::FastMap;
use crate::ice::{IceEvent, IceLite, IceState};
use crate::sctp::DataChannels;
use crate::srtp::{SrtpContext, SrtpKeys, SrtpPair, SrtpProfile};

/// How a pump ended for the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// DTLS failed, closed, or ICE consent was lost: close the transport.
    Dead(&'static str),
}

pub struct WebRtc {
    pub ice: IceLite,
    pub dtls: DtlsEndpoint,
    pub role: DtlsRole,
    /// SRTP contexts made when DTLS completed, until the engine moves them to the transport.
    keys: Option<SrtpPair>,
    pub sctp: Option<DataChannels>,
    pub profile: Option<SrtpProfile>,
    labels: FastMap<u16, String>,
    announced: bool,
}

impl std::fmt::Debug for WebRtc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtc")
            .field("ice", &self.ice.state())
            .field("selected", &self.ice.selected())
            .field("connected", &self.profile.is_some())
            .finish()
    }
}

impl WebRtc {
    /// A transport's WebRTC layers from checked parameters; fails only if OpenSSL cannot
    /// set up the DTLS endpoint.
    pub fn new(p: WebRtcParams, cert: &DtlsCert) -> Result<Self, DtlsError> {
        let mut dtls = DtlsEndpoint::new(p.role, cert)?;
        dtls.set_remote_fingerprint(p.remote_fingerprint)?;
        let mut ice = IceLite::new(&p.local_ufrag, &p.local_pwd);
        if !p.remote_ufrag.is_empty() {
            ice.set_remote_credentials(&p.remote_ufrag, &p.remote_pwd);
        }
        Ok(Self {
            ice,
            dtls,
            role: p.role,
            keys: None,
            sctp: None,
            profile: None,
            labels: FastMap::default(),
            announced: false,
        })
    }

    /// DTLS is done and SRTP keys were derived.
    pub fn connected(&self) -> bool {
        self.profile.is_some()
    }

    /// Queues a message on the data channel labelled `label`.
    pub fn send_data(
        &mut self,
        label: &str,
        binary: bool,
        data: &[u8],
    ) -> Result<(), CommandError> {
        let sctp = self.sctp.as_mut().ok_or(CommandError::DataChannelsDown)?;
        let id = self
            .labels
            .iter()
            .find(|(_, l)| l.as_str() == label)
            .map(|(id, _)| *id)
            .ok_or_else(|| CommandError::NoDataChannel(label.to_string()))?;
        sctp.send(id, binary, data)
            .map_err(CommandError::DataChannel)
    }

    /// The SRTP contexts derived from the handshake, once.
    pub fn take_srtp(&mut self) -> Option<SrtpPair> {
        self.keys.take()
    }

    /// The earliest time any layer wants a timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.ice.poll_timeout(),
            self.dtls.poll_timeout(),
            self.sctp.as_ref().and_then(|s| s.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.ice.handle_timeout(now);
        self.dtls.handle_timeout(now);
        if let Some(s) = self.sctp.as_mut() {
            s.handle_timeout(now);
        }
    }

    /// Moves everything pending between the layers, sends DTLS output to `remote`, and
    /// reports events for `transport_id` into `events`.
    pub fn pump<E: Egress>(
        &mut self,
        now: Instant,
        transport_id: u64,
        remote: Option<SocketAddr>,
        eg: &mut E,
        events: &mut Outbox,
    ) -> Health {
        let mut health = Health::Ok;
        while let Some(ev) = self.ice.poll_event() {
            if let IceEvent::State(IceState::Failed) = ev {
                health = Health::Dead("ICE consent lost");
            }
        }
        for _ in 0..64 {
            let mut progressed = false;
            while let Some(ev) = self.dtls.poll_event() {
                progressed = true;
                match ev {
                    DtlsEvent::Connected { srtp, .. } => {
                        if let Err(e) = self.on_connected(srtp) {
                            tracing::warn!(transport = transport_id, error = %e, "SRTP setup failed");
                            health = Health::Dead("SRTP setup failed");
                        } else {
                            self.sctp = Some(DataChannels::new(self.role));
                        }
                    }
                    DtlsEvent::ApplicationData(d) => {
                        if let Some(s) = self.sctp.as_mut() {
                            s.handle_dtls_data(now, &d);
                        }
                    }
                    DtlsEvent::Closed => health = Health::Dead("DTLS closed"),
                    DtlsEvent::Failed(f) => {
                        tracing::info!(transport = transport_id, failure = ?f, "DTLS failed");
                        health = Health::Dead("DTLS failed");
                    }
                }
            }
            if let Some(s) = self.sctp.as_mut() {
                while let Some(d) = s.poll_dtls_transmit() {
                    progressed = true;
                    let _ = self.dtls.send_application_data(&d);
                }
                while let Some(ev) = s.poll_event() {
                    progressed = true;
                    on_channel_event(&mut self.labels, transport_id, ev, events);
                }
            }
            while let Some(d) = self.dtls.poll_transmit() {
                progressed = true;
                if let Some(to) = remote {
                    send_bytes(eg, to, &d);
                }
            }
            if !progressed {
                break;
            }
        }
        if self.connected() && !self.announced {
            self.announced = true;
            events.push(pb::Event {
                request_id: 0,
                body: Some(pb::event::Body::TransportConnected(
                    pb::TransportConnected {
                        transport_id,
                        remote: remote.map(|a| a.to_string()).unwrap_or_default(),
                        srtp_profile: self
                            .profile
                            .map(|p| p.openssl_name().to_string())
                            .unwrap_or_default(),
                    },
                )),
            });
        }
        health
    }

    fn on_connected(&mut self, srtp: Option<crate::dtls::SrtpKeyMaterial>) -> Result<(), String> {
        let km = srtp.ok_or("no SRTP profile was negotiated")?;
        let profile = SrtpProfile::from_dtls_id(km.profile_id).map_err(|e| format!("{e:?}"))?;
        let (local, remote) =
            SrtpKeys::from_dtls_export(profile, &km.material, self.role == DtlsRole::Client)
                .map_err(|e| format!("{e:?}"))?;
        self.keys = Some(SrtpPair {
            outbound: SrtpContext::new(profile, &local).map_err(|e| format!("{e:?}"))?,
            inbound: SrtpContext::new(profile, &remote).map_err(|e| format!("{e:?}"))?,
        });
        self.profile = Some(profile);
        Ok(())
    }
}

/// Turns a data-channel happening into a control event, remembering channel labels.
fn on_channel_event(
    labels: &mut FastMap<u16, String>,
    transport_id: u64,
    ev: crate::sctp::DataChannelEvent,
    events: &mut Outbox,
) {
    use crate::sctp::DataChannelEvent as D;
    match ev {
        D::Open { id, label, .. } => {
            tracing::debug!(transport = transport_id, id, %label, "data channel open");
            labels.insert(id, label);
        }
        D::Message { id, binary, data } => events.push(pb::Event {
            request_id: 0,
            body: Some(pb::event::Body::DataMessage(pb::DataMessage {
                transport_id,
                label: labels.get(&id).cloned().unwrap_or_default(),
                binary,
                data,
            })),
        }),
        D::Closed { id } => {
            labels.remove(&id);
        }
        _ => {}
    }
}
