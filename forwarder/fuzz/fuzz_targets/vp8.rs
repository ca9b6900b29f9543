//! Fuzzes the VP8 descriptor parser, keyframe check, rewrite (on a copy) and munger.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prism_forwarder::codec::{self, vp8, Codec};

fuzz_target!(|data: &[u8]| {
    let _ = vp8::is_keyframe(data);
    let _ = codec::inspect(Codec::Vp8, data);
    if let Ok(desc) = vp8::parse_descriptor(data) {
        assert!(desc.header_len <= data.len());
        let mut munger = vp8::Vp8Munger::default();
        let (pid, tl0) = munger.next(&desc, data.len() % 2 == 0);
        let mut copy = [0u8; 64];
        let len = data.len().min(copy.len());
        copy[..len].copy_from_slice(&data[..len]);
        let copy = &mut copy[..len];
        // The copy may be shorter than the original; rewrite must reject, not panic.
        if vp8::rewrite(copy, &desc, pid, tl0).is_ok() {
            let again = vp8::parse_descriptor(copy).expect("rewrite keeps layout");
            assert_eq!(again.header_len, desc.header_len);
            assert_eq!(&copy[desc.header_len..], &data[desc.header_len..len]);
        }
    }
});
