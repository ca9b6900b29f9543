#![no_main]
//! The demultiplexer is total; when it says STUN or RTP, the parsers must not panic either.
use libfuzzer_sys::fuzz_target;
use prism_forwarder::wire::demux::{classify, PacketKind};
use prism_forwarder::wire::{rtp::RtpPacket, stun::StunMessage};

fuzz_target!(|data: &[u8]| {
    match classify(data) {
        PacketKind::Stun => {
            if let Ok(m) = StunMessage::new_checked(data) {
                let _ = (m.class(), m.attributes().count(), m.check_fingerprint());
            }
        }
        PacketKind::Rtp => {
            if let Ok(p) = RtpPacket::new_checked(data) {
                let _ = (p.payload(), p.extensions().count());
            }
        }
        PacketKind::Unknown => assert!(data.is_empty() || !matches!(data[0], 0..=3 | 20..=79)),
        PacketKind::Rtcp | PacketKind::Dtls | PacketKind::Turn => {}
    }
});
