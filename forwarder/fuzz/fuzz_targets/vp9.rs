//! Fuzzes the VP9 descriptor parser and keyframe/layer inspection.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prism_forwarder::codec::{self, vp9, Codec};

fuzz_target!(|data: &[u8]| {
    if let Ok(desc) = vp9::parse_descriptor(data) {
        assert!(desc.header_len <= data.len());
        let _ = desc.is_keyframe();
    }
    let _ = vp9::is_keyframe(data);
    let _ = codec::inspect(Codec::Vp9, data);
});
