//! Fuzzes H.264 keyframe detection over single NAL, STAP-A and FU-A payloads.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prism_forwarder::codec::{self, h264, Codec};

fuzz_target!(|data: &[u8]| {
    let _ = h264::is_keyframe(data);
    let _ = codec::inspect(Codec::H264, data);
});
