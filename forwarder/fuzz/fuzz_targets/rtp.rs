#![no_main]
//! Every RTP accessor on arbitrary bytes; a parsed packet must survive RtpRepr round trip.
use libfuzzer_sys::fuzz_target;
use prism_forwarder::ids::{Pt, Ssrc};
use prism_forwarder::wire::rtp::{self, RtpPacket, RtpRepr};

fuzz_target!(|data: &[u8]| {
    let mut slot = data.to_vec();
    let _ = rtp::write_sequence_number(&mut slot, 1);
    let _ = rtp::write_timestamp(&mut slot, 2);
    let _ = rtp::write_ssrc(&mut slot, Ssrc(3));
    let _ = rtp::write_payload_type(&mut slot, Pt(4));
    let _ = rtp::write_padding_bit(&mut slot, true);

    let Ok(p) = RtpPacket::new_checked(data) else {
        return;
    };
    let _ = (p.version(), p.padding(), p.has_extension(), p.marker());
    let _ = (
        p.payload_type(),
        p.sequence_number(),
        p.timestamp(),
        p.ssrc(),
    );
    for i in 0..=usize::from(p.csrc_count()) {
        let _ = p.csrc(i);
    }
    assert!(p.header_len() <= p.payload_range().end);
    assert_eq!(p.payload_range().end + p.padding_len(), p.as_bytes().len());
    assert_eq!(p.payload().len(), p.payload_range().len());
    let _ = p.extension_profile();
    for (id, _) in p.extensions() {
        assert!(p.extension(id).is_some());
    }
    for id in 0..=255u8 {
        let _ = p.extension(id);
    }

    let repr = RtpRepr::parse(&p);
    let mut out = vec![0u8; repr.buffer_len()];
    let n = repr
        .emit(&mut out)
        .expect("a parsed packet is representable");
    assert_eq!(n, out.len());
    let q = RtpPacket::new_checked(&out[..]).expect("emitted bytes parse");
    assert_eq!(RtpRepr::parse(&q), repr);

    let mut m = RtpPacket::new_checked(data.to_vec()).unwrap();
    for id in 0..=255u8 {
        if let Some(e) = m.extension_mut(id) {
            e.fill(0xAB);
        }
    }
    m.payload_mut().fill(0);
    m.set_marker(true);
    m.set_payload_type(Pt(0xFF));
    m.set_sequence_number(7);
    m.set_timestamp(8);
    m.set_ssrc(Ssrc(9));
    assert_eq!(m.header_len(), p.header_len());
    assert_eq!(m.payload_type(), Pt(0x7F));
});
