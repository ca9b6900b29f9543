//! FLV tag bodies as RTMP carries them (Adobe's FLV specification, section E.4): the
//! video tag's frame type and codec id, then for AVC (H.264) the packet type, composition
//! time and either the `AVCDecoderConfigurationRecord` (SPS and PPS, ISO 14496-15) or
//! length-prefixed NAL units; the audio tag's sound format, then for AAC the packet type
//! and either the `AudioSpecificConfig` or one raw AAC frame.
//!
//! Codecs Prism does not pass or transcode are errors that name the codec, so an ingress
//! reports what the encoder sent ("video codec HEVC is not supported").

/// A parsed video tag.
#[derive(Debug, PartialEq, Eq)]
pub enum Video {
    /// The decoder configuration: NAL length size, SPS and PPS.
    Config(AvcConfig),
    /// One access unit: composition time offset (ms); its NAL units are read with
    /// [`split_nalus`].
    Frame { cts: i32, keyframe: bool },
    /// End of sequence, or a command frame: nothing to send.
    Nothing,
}

/// `AVCDecoderConfigurationRecord`, the parts that matter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AvcConfig {
    pub length_size: usize,
    pub sps: Vec<Vec<u8>>,
    pub pps: Vec<Vec<u8>>,
}

impl AvcConfig {
    /// The `profile-level-id` of the first SPS ("42c01e").
    pub fn profile_level_id(&self) -> Option<String> {
        let s = self.sps.first()?;
        Some(format!(
            "{:02x}{:02x}{:02x}",
            s.get(1)?,
            s.get(2)?,
            s.get(3)?
        ))
    }
}

/// A parsed audio tag.
#[derive(Debug, PartialEq, Eq)]
pub enum Audio<'a> {
    /// The AAC `AudioSpecificConfig`.
    Config(Vec<u8>),
    /// One raw AAC frame.
    Frame(&'a [u8]),
}

/// A tag Prism cannot use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagError {
    /// The codec is named; the ingress cannot go on with this stream.
    Unsupported(String),
    /// The tag does not parse.
    Malformed(&'static str),
}

impl std::fmt::Display for TagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TagError::Unsupported(m) => f.write_str(m),
            TagError::Malformed(m) => write!(f, "malformed FLV tag: {m}"),
        }
    }
}

fn video_codec_name(id: u8) -> String {
    match id {
        2 => "Sorenson H.263".into(),
        3 => "Screen Video".into(),
        4 => "On2 VP6".into(),
        5 => "On2 VP6 with alpha".into(),
        6 => "Screen Video 2".into(),
        12 => "HEVC".into(),
        13 => "AV1".into(),
        n => format!("id {n}"),
    }
}

fn fourcc_name(f: &[u8]) -> String {
    match f {
        b"hvc1" => "HEVC".into(),
        b"av01" => "AV1".into(),
        b"vp09" => "VP9".into(),
        b"avc1" => "H.264 (enhanced RTMP)".into(),
        b"Opus" => "Opus (enhanced RTMP)".into(),
        b".mp3" => "MP3".into(),
        b"fLaC" => "FLAC".into(),
        b"ac-3" => "AC-3".into(),
        b"ec-3" => "E-AC-3".into(),
        other => format!("fourcc {:?}", String::from_utf8_lossy(other)),
    }
}

/// Parses a video tag body.
pub fn video(tag: &[u8]) -> Result<Video, TagError> {
    let &b0 = tag.first().ok_or(TagError::Malformed("empty video tag"))?;
    if b0 & 0x80 != 0 {
        // Enhanced RTMP: the codec is a FourCC after the first byte.
        let fourcc = tag
            .get(1..5)
            .ok_or(TagError::Malformed("enhanced header"))?;
        return Err(TagError::Unsupported(format!(
            "video codec {} is not supported (send H.264)",
            fourcc_name(fourcc)
        )));
    }
    let frame_type = b0 >> 4;
    let codec = b0 & 0x0F;
    if codec != 7 {
        return Err(TagError::Unsupported(format!(
            "video codec {} is not supported (send H.264)",
            video_codec_name(codec)
        )));
    }
    if frame_type == 5 {
        return Ok(Video::Nothing);
    }
    let head = tag.get(1..5).ok_or(TagError::Malformed("AVC header"))?;
    let cts = (((u32::from(head[1]) << 16 | u32::from(head[2]) << 8 | u32::from(head[3])) << 8)
        as i32)
        >> 8;
    let body = &tag[5..];
    match head[0] {
        0 => avc_config(body).map(Video::Config),
        1 => Ok(Video::Frame {
            cts,
            keyframe: frame_type == 1,
        }),
        2 => Ok(Video::Nothing),
        _ => Err(TagError::Malformed("AVC packet type")),
    }
}

/// Splits an AVC frame body into NAL units with the configured length size.
pub fn split_nalus(tag: &[u8], length_size: usize) -> Result<Vec<&[u8]>, TagError> {
    let mut body = tag.get(5..).ok_or(TagError::Malformed("AVC header"))?;
    let mut out = Vec::new();
    while !body.is_empty() {
        let len_bytes = body
            .get(..length_size)
            .ok_or(TagError::Malformed("NAL unit length"))?;
        let len = len_bytes
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        let nal = body
            .get(length_size..length_size + len)
            .ok_or(TagError::Malformed("NAL unit longer than the tag"))?;
        if !nal.is_empty() {
            out.push(nal);
        }
        body = &body[length_size + len..];
    }
    Ok(out)
}

fn avc_config(b: &[u8]) -> Result<AvcConfig, TagError> {
    const BAD: TagError = TagError::Malformed("AVCDecoderConfigurationRecord");
    if b.len() < 6 || b[0] != 1 {
        return Err(BAD);
    }
    let length_size = usize::from(b[4] & 3) + 1;
    if length_size == 3 {
        return Err(BAD);
    }
    // Parameter sets: a count, then each as a 16-bit length and its bytes.
    let sets = |count: usize, at: &mut usize| -> Result<Vec<Vec<u8>>, TagError> {
        let mut v = Vec::new();
        for _ in 0..count {
            let l = b.get(*at..*at + 2).ok_or(BAD)?;
            let l = usize::from(u16::from_be_bytes([l[0], l[1]]));
            v.push(b.get(*at + 2..*at + 2 + l).ok_or(BAD)?.to_vec());
            *at += 2 + l;
        }
        Ok(v)
    };
    let mut at = 6;
    let sps = sets(usize::from(b[5] & 0x1F), &mut at)?;
    let n_pps = usize::from(*b.get(at).ok_or(BAD)?);
    at += 1;
    let pps = sets(n_pps, &mut at)?;
    if sps.is_empty() || pps.is_empty() {
        return Err(TagError::Malformed("AVC configuration without SPS or PPS"));
    }
    Ok(AvcConfig {
        length_size,
        sps,
        pps,
    })
}

fn audio_format_name(id: u8) -> &'static str {
    match id {
        0 | 3 => "Linear PCM",
        1 => "ADPCM",
        2 => "MP3",
        4..=6 => "Nellymoser",
        7 => "G.711 A-law",
        8 => "G.711 mu-law",
        11 => "Speex",
        14 => "MP3 8 kHz",
        15 => "device-specific sound",
        _ => "unknown",
    }
}

/// Parses an audio tag body.
pub fn audio(tag: &[u8]) -> Result<Audio<'_>, TagError> {
    let &b0 = tag.first().ok_or(TagError::Malformed("empty audio tag"))?;
    let format = b0 >> 4;
    if format == 9 {
        let fourcc = tag
            .get(1..5)
            .ok_or(TagError::Malformed("enhanced header"))?;
        return Err(TagError::Unsupported(format!(
            "audio codec {} is not supported (send AAC)",
            fourcc_name(fourcc)
        )));
    }
    if format != 10 {
        return Err(TagError::Unsupported(format!(
            "audio codec {} is not supported (send AAC)",
            audio_format_name(format)
        )));
    }
    match tag.get(1) {
        Some(0) => Ok(Audio::Config(tag[2..].to_vec())),
        Some(1) => Ok(Audio::Frame(&tag[2..])),
        _ => Err(TagError::Malformed("AAC packet type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02];
    const PPS: &[u8] = &[0x68, 0xCE, 0x3C, 0x80];

    fn config_tag() -> Vec<u8> {
        let mut t = vec![0x17, 0, 0, 0, 0, 1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1];
        t.extend_from_slice(&(SPS.len() as u16).to_be_bytes());
        t.extend_from_slice(SPS);
        t.push(1);
        t.extend_from_slice(&(PPS.len() as u16).to_be_bytes());
        t.extend_from_slice(PPS);
        t
    }

    #[test]
    fn avc_configuration_and_frames_parse() {
        let Video::Config(c) = video(&config_tag()).unwrap() else {
            panic!("not a config");
        };
        assert_eq!(c.length_size, 4);
        assert_eq!(c.sps, [SPS.to_vec()]);
        assert_eq!(c.pps, [PPS.to_vec()]);
        assert_eq!(c.profile_level_id().as_deref(), Some("42c01e"));
        let mut f = vec![0x17, 1, 0, 0, 0x21];
        for n in [&[0x65u8, 1, 2, 3][..], &[0x06, 9]] {
            f.extend_from_slice(&(n.len() as u32).to_be_bytes());
            f.extend_from_slice(n);
        }
        let Video::Frame { cts, keyframe, .. } = video(&f).unwrap() else {
            panic!("not a frame");
        };
        assert_eq!((cts, keyframe), (33, true));
        let nalus = split_nalus(&f, 4).unwrap();
        assert_eq!(nalus, [&[0x65u8, 1, 2, 3][..], &[0x06, 9]]);
        // A negative composition time, sign-extended from 24 bits.
        let Video::Frame { cts, .. } = video(&[0x27, 1, 0xFF, 0xFF, 0xFE]).unwrap() else {
            panic!();
        };
        assert_eq!(cts, -2);
    }

    #[test]
    fn other_codecs_are_named_and_garbage_is_malformed() {
        let e = video(&[0x2C, 0, 0, 0, 0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "video codec HEVC is not supported (send H.264)"
        );
        let e = video(&[0x90, b'h', b'v', b'c', b'1']).unwrap_err();
        assert!(e.to_string().contains("HEVC"), "{e}");
        let e = video(&[0x12]).unwrap_err();
        assert!(e.to_string().contains("Sorenson H.263"), "{e}");
        let e = audio(&[0x2F, 0xFF]).unwrap_err();
        assert_eq!(e.to_string(), "audio codec MP3 is not supported (send AAC)");
        for t in [
            &[][..],
            &[0x17],
            &[0x17, 0, 0, 0, 0, 1, 2],
            &[0x17, 9, 0, 0, 0],
        ] {
            assert!(video(t).is_err(), "{t:?}");
        }
        let mut long = vec![0x17, 1, 0, 0, 0, 0, 0, 0, 9, 1];
        assert!(split_nalus(&long, 4).is_err());
        long.truncate(7);
        assert!(split_nalus(&long, 4).is_err());
        assert_eq!(
            audio(&[0xAF, 0, 0x12, 0x10]).unwrap(),
            Audio::Config(vec![0x12, 0x10])
        );
        assert!(audio(&[0xAF]).is_err());
    }
}
