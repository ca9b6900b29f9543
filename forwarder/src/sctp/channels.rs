//! [`DataChannels`]: one SCTP association (sctp-proto) plus DCEP channel bookkeeping.
//!
//! Channel life cycle. A channel we open is `PendingOpen` until the association is up, then
//! `AwaitAck` once DATA_CHANNEL_OPEN is written, then `Open` on DATA_CHANNEL_ACK or on the
//! first data message from the peer (an implicit ACK, RFC 8832 §6). Until then its stream
//! sends ordered and reliable, so the OPEN cannot be overtaken by our own data; the
//! requested reliability is applied when the channel opens. A channel the peer opens is
//! `Open` as soon as we write the ACK. Closing resets the outgoing stream (RFC 8831 §6.7);
//! the channel is gone when sctp-proto reports the stream finished, on either side.
//!
//! sctp-proto wants `now` when it builds packets, but `open_channel`, `send` and
//! `poll_dtls_transmit` carry no time: they use the time of the latest `handle_*` call,
//! which the engine makes every loop turn anyway.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use sctp_proto::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event,
    Payload, PayloadProtocolIdentifier as Ppi, ReliabilityType, ServerConfig, StreamEvent,
    Transmit, TransportConfig,
};

use super::dcep::{Dcep, DcepOpen, PRIORITY_NORMAL};
use super::{DataChannelEvent, Reliability, SctpError};
use crate::dtls::DtlsRole;

/// Largest message either side may send (what Chromium advertises as `a=max-message-size`).
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;

/// sctp-proto's `max_payload_size`: the DATA it packs into one packet. Common and chunk
/// headers add up to 28 bytes more (packets of 1148 are seen), and DTLS adds 37 (13 header,
/// 8 GCM nonce, 16 tag), so every record stays within `dtls::MTU` (1200).
pub const SCTP_MAX_PACKET: u32 = 1120;

/// sctp-proto keys associations by remote address; there is exactly one per transport, so
/// any fixed address will do.
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 5000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChannelState {
    PendingOpen,
    AwaitAck,
    Open,
    Closing,
}

#[derive(Debug)]
struct Channel {
    label: String,
    protocol: String,
    ordered: bool,
    reliability: Reliability,
    state: ChannelState,
}

impl Channel {
    fn open_event(&self, id: u16) -> DataChannelEvent {
        DataChannelEvent::Open {
            id,
            label: self.label.clone(),
            protocol: self.protocol.clone(),
            ordered: self.ordered,
            reliability: self.reliability,
        }
    }
}

/// Counters for the engine's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SctpStats {
    pub packets_in: u64,
    /// SCTP packets sctp-proto would not take (bad checksum, unknown association...).
    pub packets_dropped: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Messages dropped: bad DCEP, unknown PPID, or data on a channel never opened.
    pub messages_dropped: u64,
}

/// The data channels of one WebRTC transport.
pub struct DataChannels {
    role: DtlsRole,
    endpoint: Endpoint,
    assoc: Option<(AssociationHandle, Association)>,
    connected: bool,
    lost: bool,
    channels: BTreeMap<u16, Channel>,
    events: VecDeque<DataChannelEvent>,
    transmits: VecDeque<Vec<u8>>,
    /// Whether the association may have something to send that `transmits` lacks. Its
    /// `poll_transmit` scans every chunk in flight, so it is asked once when the engine
    /// drains this layer, not after every packet, timer and message.
    unflushed: bool,
    last_now: Option<Instant>,
    stats: SctpStats,
}

impl std::fmt::Debug for DataChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataChannels")
            .field("role", &self.role)
            .field("connected", &self.connected)
            .field("lost", &self.lost)
            .field("channels", &self.channels)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn transport_config() -> Arc<TransportConfig> {
    let max = u32::try_from(MAX_MESSAGE_SIZE).unwrap_or(u32::MAX);
    Arc::new(
        TransportConfig::default()
            .with_max_send_message_size(max)
            .with_max_receive_message_size(max)
            // WebRTC keeps retrying INIT while DTLS is up; consent freshness ends it.
            .with_max_init_retransmits(None),
    )
}

impl DataChannels {
    /// Creates the data channel layer for a transport whose DTLS handshake just completed.
    /// The DTLS client initiates the SCTP association (its INIT is ready in
    /// `poll_dtls_transmit` at once); the DTLS server waits for the peer's INIT. Stream ids
    /// follow RFC 8832 §6: even for the DTLS client, odd for the server.
    pub fn new(role: DtlsRole) -> Self {
        let mut endpoint_config = EndpointConfig::new();
        endpoint_config.max_payload_size(SCTP_MAX_PACKET);
        let mut server_config = ServerConfig::new();
        server_config.transport = transport_config();
        // Both roles accept an incoming INIT: browsers send one whatever their DTLS role.
        let mut endpoint = Endpoint::new(Arc::new(endpoint_config), Some(Arc::new(server_config)));
        let assoc = match role {
            DtlsRole::Client => {
                let mut cc = ClientConfig::new();
                cc.transport = transport_config();
                endpoint.connect(cc, PEER).ok()
            }
            DtlsRole::Server => None,
        };
        DataChannels {
            role,
            endpoint,
            assoc,
            connected: false,
            lost: false,
            channels: BTreeMap::new(),
            events: VecDeque::new(),
            transmits: VecDeque::new(),
            unflushed: true,
            last_now: None,
            stats: SctpStats::default(),
        }
    }

    pub fn stats(&self) -> SctpStats {
        self.stats
    }

    /// True once the SCTP association is established and until it is lost.
    pub fn is_connected(&self) -> bool {
        self.connected && !self.lost
    }

    /// Feeds one decrypted DTLS application-data record (one SCTP packet).
    pub fn handle_dtls_data(&mut self, now: Instant, data: &[u8]) {
        self.last_now = Some(now);
        self.stats.packets_in += 1;
        if self.lost {
            self.stats.packets_dropped += 1;
            return;
        }
        let handled = self
            .endpoint
            .handle(now, PEER, None, None, data.to_vec().into());
        match handled {
            None => self.stats.packets_dropped += 1,
            Some((handle, DatagramEvent::NewAssociation(a))) => {
                // One association per transport: a second INIT (a collision, or a browser
                // retrying) is left to the existing association's collision handling.
                if self.assoc.is_none() {
                    self.assoc = Some((handle, a));
                } else {
                    self.stats.packets_dropped += 1;
                }
            }
            Some((handle, DatagramEvent::AssociationEvent(ev))) => match self.assoc.as_mut() {
                Some((h, a)) if *h == handle => a.handle_event(ev),
                _ => self.stats.packets_dropped += 1,
            },
        }
        self.process();
    }

    /// The next SCTP packet, to be passed to `DtlsEndpoint::send_application_data`.
    pub fn poll_dtls_transmit(&mut self) -> Option<Vec<u8>> {
        if self.transmits.is_empty() && self.unflushed {
            if let Some(now) = self.last_now {
                self.unflushed = false;
                self.flush(now);
            }
        }
        self.transmits.pop_front()
    }

    /// When `handle_timeout` must next be called (SCTP retransmission, SACK delay,
    /// heartbeat).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.lost {
            return None;
        }
        self.assoc.as_ref().and_then(|(_, a)| a.poll_timeout())
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = Some(now);
        if let Some((_, a)) = self.assoc.as_mut() {
            a.handle_timeout(now);
        }
        self.process();
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<DataChannelEvent> {
        self.events.pop_front()
    }

    /// Opens a channel with an empty protocol; see [`DataChannels::open_channel_with`].
    pub fn open_channel(
        &mut self,
        label: &str,
        ordered: bool,
        reliability: Reliability,
    ) -> Result<u16, SctpError> {
        self.open_channel_with(label, "", ordered, reliability)
    }

    /// Opens a channel in-band (DCEP) and returns its stream id. Usable before the
    /// association is up: the OPEN goes out when it is. `Open` is reported when the peer
    /// acknowledges.
    pub fn open_channel_with(
        &mut self,
        label: &str,
        protocol: &str,
        ordered: bool,
        reliability: Reliability,
    ) -> Result<u16, SctpError> {
        if self.lost {
            return Err(SctpError::AssociationLost);
        }
        let id = self.free_stream_id().ok_or(SctpError::NoFreeStreamId)?;
        self.channels.insert(
            id,
            Channel {
                label: label.to_owned(),
                protocol: protocol.to_owned(),
                ordered,
                reliability,
                state: ChannelState::PendingOpen,
            },
        );
        if self.connected {
            if let Err(e) = self.start_open(id) {
                self.channels.remove(&id);
                return Err(e);
            }
        }
        Ok(id)
    }

    /// Queues one message on an open channel (or one we opened and await the ACK for).
    pub fn send(&mut self, id: u16, binary: bool, data: &[u8]) -> Result<(), SctpError> {
        if self.lost {
            return Err(SctpError::AssociationLost);
        }
        let state = self.channels.get(&id).map(|c| c.state);
        match state {
            None | Some(ChannelState::Closing) => return Err(SctpError::UnknownChannel),
            Some(ChannelState::PendingOpen) => return Err(SctpError::NotOpen),
            Some(ChannelState::AwaitAck | ChannelState::Open) => {}
        }
        if data.len() > MAX_MESSAGE_SIZE {
            return Err(SctpError::TooLarge);
        }
        // RFC 8831 §6.6: an empty message travels as one zero byte with the "empty" PPID.
        let (ppi, payload): (Ppi, &[u8]) = match (binary, data.is_empty()) {
            (true, false) => (Ppi::Binary, data),
            (true, true) => (Ppi::BinaryEmpty, &[0]),
            (false, false) => (Ppi::String, data),
            (false, true) => (Ppi::StringEmpty, &[0]),
        };
        let (_, a) = self.assoc.as_mut().ok_or(SctpError::NotOpen)?;
        let mut stream = a.stream(id).map_err(|_| SctpError::UnknownChannel)?;
        stream
            .write_with_ppi(payload, ppi)
            .map_err(|_| SctpError::Rejected)?;
        self.unflushed = true;
        self.stats.messages_out += 1;
        Ok(())
    }

    /// Closes a channel by resetting its stream; `Closed` follows when the reset is done.
    pub fn close(&mut self, id: u16) -> Result<(), SctpError> {
        let Some(ch) = self.channels.get_mut(&id) else {
            return Err(SctpError::UnknownChannel);
        };
        match ch.state {
            ChannelState::Closing => return Ok(()),
            ChannelState::PendingOpen => {
                self.channels.remove(&id);
                self.events.push_back(DataChannelEvent::Closed { id });
                return Ok(());
            }
            ChannelState::AwaitAck | ChannelState::Open => ch.state = ChannelState::Closing,
        }
        self.unflushed = true;
        let reset = self
            .assoc
            .as_mut()
            .and_then(|(_, a)| a.stream(id).ok())
            .map(|mut s| s.close().is_ok());
        if reset != Some(true) {
            // No stream to reset: nothing will report Finished, so close here.
            self.channels.remove(&id);
            self.events.push_back(DataChannelEvent::Closed { id });
        }
        Ok(())
    }

    fn free_stream_id(&mut self) -> Option<u16> {
        let first: u16 = match self.role {
            DtlsRole::Client => 0,
            DtlsRole::Server => 1,
        };
        let in_assoc: Vec<u16> = self
            .assoc
            .as_ref()
            .map(|(_, a)| a.stream_ids())
            .unwrap_or_default();
        // 65535 is reserved (RFC 8831 §6.5).
        (first..u16::MAX)
            .step_by(2)
            .find(|id| !self.channels.contains_key(id) && !in_assoc.contains(id))
    }

    /// Creates the stream for one of our channels and writes DATA_CHANNEL_OPEN on it.
    fn start_open(&mut self, id: u16) -> Result<(), SctpError> {
        let Some(ch) = self.channels.get_mut(&id) else {
            return Err(SctpError::UnknownChannel);
        };
        let open = Dcep::Open(DcepOpen {
            ordered: ch.ordered,
            reliability: ch.reliability,
            priority: PRIORITY_NORMAL,
            label: ch.label.clone(),
            protocol: ch.protocol.clone(),
        })
        .emit();
        let (_, a) = self.assoc.as_mut().ok_or(SctpError::NotOpen)?;
        self.unflushed = true;
        let mut stream = a
            .open_stream(id, Ppi::Binary)
            .map_err(|_| SctpError::Rejected)?;
        // Ordered and reliable until the ACK, so nothing overtakes the OPEN.
        stream
            .set_reliability_params(false, ReliabilityType::Reliable, 0)
            .map_err(|_| SctpError::Rejected)?;
        stream
            .write_with_ppi(&open, Ppi::Dcep)
            .map_err(|_| SctpError::Rejected)?;
        ch.state = ChannelState::AwaitAck;
        Ok(())
    }

    fn process(&mut self) {
        let mut todo = Vec::new();
        if let Some((handle, a)) = self.assoc.as_mut() {
            while let Some(ev) = a.poll_endpoint_event() {
                if let Some(back) = self.endpoint.handle_event(*handle, ev) {
                    a.handle_event(back);
                }
            }
            while let Some(ev) = a.poll() {
                todo.push(ev);
            }
            // Streams the peer opened are tracked by id; the accept queue only needs draining.
            while a.accept_stream().is_some() {}
        }
        for ev in todo {
            self.on_assoc_event(ev);
        }
        self.unflushed = true;
    }

    fn on_assoc_event(&mut self, ev: Event) {
        match ev {
            Event::Connected if !self.connected => {
                self.connected = true;
                self.events.push_back(DataChannelEvent::Connected);
                let pending: Vec<u16> = self
                    .channels
                    .iter()
                    .filter(|(_, c)| c.state == ChannelState::PendingOpen)
                    .map(|(id, _)| *id)
                    .collect();
                for id in pending {
                    if self.start_open(id).is_err() {
                        self.channels.remove(&id);
                        self.events.push_back(DataChannelEvent::Closed { id });
                    }
                }
            }
            Event::HandshakeFailed { .. } | Event::AssociationLost { .. } => self.lose(),
            Event::Stream(StreamEvent::Opened { id } | StreamEvent::Readable { id }) => {
                self.read_stream(id)
            }
            Event::Stream(StreamEvent::Finished { id } | StreamEvent::Stopped { id, .. }) => {
                self.on_stream_closed(id)
            }
            _ => {}
        }
    }

    fn read_stream(&mut self, id: u16) {
        loop {
            let Some((_, a)) = self.assoc.as_mut() else {
                return;
            };
            let Ok(mut stream) = a.stream(id) else {
                return;
            };
            let Ok(Some(chunks)) = stream.read_sctp() else {
                return;
            };
            let mut data = vec![0u8; chunks.len()];
            if chunks.read(&mut data).is_err() {
                self.stats.messages_dropped += 1;
                continue;
            }
            self.on_message(id, chunks.ppi, data);
        }
    }

    fn on_message(&mut self, id: u16, ppi: Ppi, data: Vec<u8>) {
        let binary = match ppi {
            Ppi::Dcep => return self.on_dcep(id, &data),
            Ppi::String | Ppi::StringEmpty => false,
            Ppi::Binary | Ppi::BinaryEmpty => true,
            _ => {
                self.stats.messages_dropped += 1;
                return;
            }
        };
        let data = if matches!(ppi, Ppi::StringEmpty | Ppi::BinaryEmpty) {
            Vec::new()
        } else {
            data
        };
        let state = self.channels.get(&id).map(|c| c.state);
        match state {
            Some(ChannelState::Open) => {}
            // Data from the peer is an implicit ACK (RFC 8832 §6).
            Some(ChannelState::AwaitAck) => self.on_ack(id),
            _ => {
                self.stats.messages_dropped += 1;
                return;
            }
        }
        self.stats.messages_in += 1;
        self.events
            .push_back(DataChannelEvent::Message { id, binary, data });
    }

    fn on_dcep(&mut self, id: u16, data: &[u8]) {
        match Dcep::parse(data) {
            Ok(Dcep::Open(open)) => self.on_open(id, open),
            Ok(Dcep::Ack) => {
                if self.channels.get(&id).map(|c| c.state) == Some(ChannelState::AwaitAck) {
                    self.on_ack(id);
                } else {
                    self.stats.messages_dropped += 1;
                }
            }
            Err(_) => self.stats.messages_dropped += 1,
        }
    }

    fn on_open(&mut self, id: u16, open: DcepOpen) {
        if self.channels.contains_key(&id) {
            // Both sides picked the same id: a peer breaking the parity rule.
            self.stats.messages_dropped += 1;
            return;
        }
        let Some((_, a)) = self.assoc.as_mut() else {
            return;
        };
        let Ok(mut stream) = a.stream(id) else {
            return;
        };
        let (kind, value) = reliability_params(open.reliability);
        let configured = stream.set_reliability_params(!open.ordered, kind, value);
        let acked = stream.write_with_ppi(&Dcep::Ack.emit(), Ppi::Dcep);
        if configured.is_err() || acked.is_err() {
            let _ = stream.close();
            self.stats.messages_dropped += 1;
            return;
        }
        let ch = Channel {
            label: open.label,
            protocol: open.protocol,
            ordered: open.ordered,
            reliability: open.reliability,
            state: ChannelState::Open,
        };
        self.events.push_back(ch.open_event(id));
        self.channels.insert(id, ch);
    }

    /// Our channel is acknowledged: apply its real reliability and report it open.
    fn on_ack(&mut self, id: u16) {
        let Some(ch) = self.channels.get_mut(&id) else {
            return;
        };
        ch.state = ChannelState::Open;
        let (kind, value) = reliability_params(ch.reliability);
        let unordered = !ch.ordered;
        let event = ch.open_event(id);
        if let Some(mut s) = self.assoc.as_mut().and_then(|(_, a)| a.stream(id).ok()) {
            // Cannot fail for an existing stream; if it did the channel stays reliable.
            let _ = s.set_reliability_params(unordered, kind, value);
        }
        self.events.push_back(event);
    }

    fn on_stream_closed(&mut self, id: u16) {
        if self.channels.remove(&id).is_none() {
            return;
        }
        // RFC 8831 §6.7: answer the peer's reset of its outgoing stream with ours.
        if let Some(mut s) = self.assoc.as_mut().and_then(|(_, a)| a.stream(id).ok()) {
            let _ = s.close();
        }
        self.events.push_back(DataChannelEvent::Closed { id });
    }

    fn lose(&mut self) {
        if self.lost {
            return;
        }
        self.lost = true;
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        self.channels.clear();
        for id in ids {
            self.events.push_back(DataChannelEvent::Closed { id });
        }
        self.events.push_back(DataChannelEvent::AssociationLost);
    }

    fn flush(&mut self, now: Instant) {
        let mut collect = |t: Transmit| {
            if let Payload::RawEncode(packets) = t.payload {
                for p in packets {
                    self.transmits.push_back(p.to_vec());
                }
            }
        };
        if let Some((_, a)) = self.assoc.as_mut() {
            if !self.lost {
                while let Some(t) = a.poll_transmit(now) {
                    collect(t);
                }
            }
        }
        while let Some(t) = self.endpoint.poll_transmit() {
            collect(t);
        }
    }
}

fn reliability_params(r: Reliability) -> (ReliabilityType, u32) {
    match r {
        Reliability::Reliable => (ReliabilityType::Reliable, 0),
        Reliability::MaxRetransmits(n) => (ReliabilityType::Rexmit, n),
        Reliability::MaxPacketLifetime(ms) => (ReliabilityType::Timed, ms),
    }
}
