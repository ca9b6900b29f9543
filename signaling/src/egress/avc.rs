//! H.264 for the recorder: the parameter sets a container needs (picture size from the
//! SPS, the `avcC` decoder configuration record of ISO/IEC 14496-15 §5.3.3), and NAL
//! unit helpers. Depacketizing RTP into access units is in [`super::depack`].
//!
//! Why parse the SPS at all: MP4 and Matroska headers carry the picture size, and
//! players size their surfaces from it; only the fields before the size are walked
//! (with emulation-prevention bytes removed), and a malformed SPS is `None`, never a
//! panic.

/// NAL unit types used here (ITU-T H.264 Table 7-1).
pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;

pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |h| h & 0x1F)
}

/// The latest SPS and PPS of a stream (they arrive in-band, before IDRs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamSets {
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
}

impl ParamSets {
    pub fn complete(&self) -> bool {
        self.sps.len() >= 4 && !self.pps.is_empty()
    }

    /// The `AVCDecoderConfigurationRecord`: one SPS, one PPS, 4-byte NAL lengths.
    pub fn avcc(&self) -> Vec<u8> {
        let mut out = vec![1, self.sps[1], self.sps[2], self.sps[3], 0xFC | 3, 0xE0 | 1];
        out.extend_from_slice(&(self.sps.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.sps);
        out.push(1);
        out.extend_from_slice(&(self.pps.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.pps);
        out
    }
}

/// Reads bits MSB first from an RBSP (emulation prevention already removed).
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = *self.data.get(self.at / 8)?;
        let b = (byte >> (7 - self.at % 8)) & 1;
        self.at += 1;
        Some(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// Exp-Golomb ue(v); values past 2^31 are malformed here.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        let m = k.div_ceil(2) as i32;
        Some(if k % 2 == 1 { m } else { -m })
    }
}

/// The RBSP of a NAL unit: the header byte dropped, emulation prevention bytes removed.
fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal.iter().skip(1) {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

fn skip_scaling_list(r: &mut Bits, size: u32) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + i64::from(r.se()?)).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// The picture size an SPS declares (after cropping); `None` if it is malformed.
pub fn sps_size(sps: &[u8]) -> Option<(u16, u16)> {
    if nal_type(sps) != NAL_SPS {
        return None;
    }
    let data = rbsp(sps);
    let mut r = Bits { data: &data, at: 0 };
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma = 1;
    let mut separate = false;
    if matches!(
        profile,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma = r.ue()?;
        if chroma == 3 {
            separate = r.bit()? == 1;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let lists = if chroma == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            for _ in 0..r.ue()?.min(255) {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let w_mbs = u64::from(r.ue()?) + 1;
    let h_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.bit()?;
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut cl, mut cr, mut ct, mut cb) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? == 1 {
        cl = u64::from(r.ue()?);
        cr = u64::from(r.ue()?);
        ct = u64::from(r.ue()?);
        cb = u64::from(r.ue()?);
    }
    let fields = 2 - frame_mbs_only;
    let (cx, cy) = match (chroma, separate) {
        (1, false) => (2, 2 * fields),
        (2, false) => (2, fields),
        _ => (1, fields),
    };
    // Every value is below 2^33, so none of these products overflows 64 bits.
    let w = (w_mbs * 16).checked_sub(cx * (cl + cr))?;
    let h = (fields * h_units * 16).checked_sub(cy * (ct + cb))?;
    Some((u16::try_from(w).ok()?, u16::try_from(h).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x264's baseline SPS for 640×360 (368 lines coded, 8 cropped), from ffmpeg.
    const SPS_640X360: &[u8] = &[
        0x67, 0x42, 0xC0, 0x1E, 0xD9, 0x00, 0xA0, 0x2F, 0xF9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00,
        0x01, 0x00, 0x00, 0x03, 0x00, 0x3C, 0x0F, 0x16, 0x2E, 0x48,
    ];

    #[test]
    fn the_size_comes_from_the_sps_with_cropping() {
        assert_eq!(sps_size(SPS_640X360), Some((640, 360)));
        // x264's high-profile SPS (chroma format, bit depths) for 1280×720.
        let high = [
            0x67, 0x64, 0x00, 0x1F, 0xAC, 0xD9, 0x40, 0x50, 0x05, 0xBB, 0x01, 0x10, 0x00, 0x00,
            0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xC0, 0xF1, 0x83, 0x19, 0x60,
        ];
        assert_eq!(sps_size(&high), Some((1280, 720)));
        assert_eq!(sps_size(&[0x67, 0x42]), None);
        assert_eq!(sps_size(&[0x68, 0x42, 0, 0]), None);
        // Huge exp-Golomb values (32 leading zeros) and garbage: None, no overflow.
        let mut huge = vec![0x67, 0x42, 0, 0x1E, 0x80];
        huge.extend_from_slice(&[0; 12]);
        huge.push(0xFF);
        assert_eq!(sps_size(&huge), None);
        for seed in 0u32..2000 {
            let mut x = seed.wrapping_mul(2_654_435_761);
            let junk: Vec<u8> = std::iter::once(0x67)
                .chain((0..24).map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                }))
                .collect();
            let _ = sps_size(&junk);
        }
    }

    #[test]
    fn avcc_holds_profile_level_and_both_sets() {
        let p = ParamSets {
            sps: SPS_640X360.to_vec(),
            pps: vec![0x68, 0xCE, 0x38, 0x80],
        };
        let c = p.avcc();
        assert_eq!(&c[..6], &[1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1]);
        assert_eq!(
            usize::from(u16::from_be_bytes([c[6], c[7]])),
            SPS_640X360.len()
        );
        let at = 8 + SPS_640X360.len();
        assert_eq!(&c[at..], &[1, 0, 4, 0x68, 0xCE, 0x38, 0x80]);
    }
}
