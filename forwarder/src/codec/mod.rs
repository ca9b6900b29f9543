//! Codec payload inspection: keyframe and layer detection, and the in-place rewriting a
//! decoder needs to see one continuous stream across a simulcast switch. Nothing here
//! decodes media; it reads payload descriptors and the first bytes of NAL/OBU units.

pub mod av1;
pub mod h264;
pub mod vp8;
pub mod vp9;
