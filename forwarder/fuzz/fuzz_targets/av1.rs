//! Fuzzes the AV1 aggregation-header / OBU walk and keyframe detection.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prism_forwarder::codec::{self, av1, Codec};

fuzz_target!(|data: &[u8]| {
    let _ = av1::ObuHeader::parse(data);
    let _ = av1::is_keyframe(data);
    let _ = codec::inspect(Codec::Av1, data);
});
