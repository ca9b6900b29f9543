//! AAC to Opus, for RTMP audio: WebRTC clients (LiveKit's SDKs among them) decode Opus,
//! encoders on RTMP send AAC. AAC-LC frames are decoded by symphonia's AAC decoder,
//! resampled to 48 kHz (Opus's clock) by linear interpolation, and encoded by libopus (the
//! `opus` crate) in 20 ms frames, mono or stereo as the source is.
//!
//! Linear interpolation is enough for speech and a monitoring feed; a polyphase resampler
//! would be the next step for music. 48 kHz sources skip it.

use symphonia::core::audio::{AudioBufferRef, SampleBuffer};
use symphonia::core::codecs::{CodecParameters, Decoder, DecoderOptions, CODEC_TYPE_AAC};
use symphonia::core::formats::Packet;
use symphonia::default::codecs::AacDecoder;

/// Opus's sample rate.
pub const OPUS_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms Opus frame.
pub const FRAME: usize = 960;

/// A transcoder of one AAC stream.
pub struct AacToOpus {
    decoder: AacDecoder,
    encoder: opus::Encoder,
    channels: usize,
    in_rate: u32,
    /// Interleaved 48 kHz samples waiting for a whole frame.
    pending: Vec<f32>,
    /// Resampler state: position of the next output sample in input samples, and the last
    /// input frame of the previous block.
    pos: f64,
    last: Vec<f32>,
    samples: Option<SampleBuffer<f32>>,
    out: Vec<u8>,
}

impl std::fmt::Debug for AacToOpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacToOpus")
            .field("channels", &self.channels)
            .field("in_rate", &self.in_rate)
            .finish_non_exhaustive()
    }
}

/// What the source's `AudioSpecificConfig` says, for the ingress state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioFormat {
    pub sample_rate: u32,
    pub channels: u32,
}

impl AacToOpus {
    /// A transcoder for the stream that `asc` (the AAC `AudioSpecificConfig`) describes.
    /// Errors name what is not supported (HE-AAC, more than two channels).
    pub fn new(asc: &[u8]) -> Result<(Self, AudioFormat), String> {
        let mut params = CodecParameters::new();
        params.for_codec(CODEC_TYPE_AAC).with_extra_data(asc.into());
        let decoder = AacDecoder::try_new(&params, &DecoderOptions::default()).map_err(|e| {
            format!("AAC configuration not supported ({e}): send AAC-LC, mono or stereo")
        })?;
        let spec = decoder
            .codec_params()
            .sample_rate
            .zip(decoder.codec_params().channels);
        // The decoder's parameters are its input's; read the rate and channels from the
        // configuration as the decoder understood it.
        let (in_rate, channels) = match spec {
            Some((r, c)) => (r, c.count()),
            None => asc_format(asc).ok_or("AAC configuration without a sample rate")?,
        };
        let ch = if channels >= 2 {
            opus::Channels::Stereo
        } else {
            opus::Channels::Mono
        };
        let mut encoder = opus::Encoder::new(OPUS_RATE, ch, opus::Application::Audio)
            .map_err(|e| format!("Opus encoder: {e}"))?;
        let bitrate = if channels >= 2 { 96_000 } else { 64_000 };
        let _ = encoder.set_bitrate(opus::Bitrate::Bits(bitrate));
        let channels = channels.clamp(1, 2);
        Ok((
            Self {
                decoder,
                encoder,
                channels,
                in_rate,
                pending: Vec::new(),
                pos: 0.0,
                last: vec![0.0; channels],
                samples: None,
                out: vec![0; 1500],
            },
            AudioFormat {
                sample_rate: in_rate,
                channels: channels as u32,
            },
        ))
    }

    /// Decodes one raw AAC frame and hands every whole Opus frame now ready to `emit`.
    /// A frame that does not decode is skipped (counted by the caller), as decoders do.
    pub fn push(&mut self, aac: &[u8], emit: &mut impl FnMut(&[u8])) -> Result<(), String> {
        let packet = Packet::new_from_slice(0, 0, 1024, aac);
        let decoded = self
            .decoder
            .decode(&packet)
            .map_err(|e| format!("AAC frame: {e}"))?;
        let interleaved = interleave(&mut self.samples, decoded, self.channels);
        self.resample(&interleaved);
        let n = FRAME * self.channels;
        while self.pending.len() >= n {
            let len = self
                .encoder
                .encode_float(&self.pending[..n], &mut self.out)
                .map_err(|e| format!("Opus encoding: {e}"))?;
            self.pending.drain(..n);
            emit(&self.out[..len]);
        }
        Ok(())
    }

    /// Appends `input` (interleaved, at the source rate) to `pending` at 48 kHz.
    fn resample(&mut self, input: &[f32]) {
        let ch = self.channels;
        if self.in_rate == OPUS_RATE {
            self.pending.extend_from_slice(input);
            return;
        }
        let frames = input.len() / ch;
        if frames == 0 {
            return;
        }
        let step = f64::from(self.in_rate) / f64::from(OPUS_RATE);
        // Input frame i is at position i; the previous block's last frame is at -1.
        let sample = |i: isize, c: usize| -> f32 {
            if i < 0 {
                self.last[c]
            } else {
                input[i as usize * ch + c]
            }
        };
        while self.pos < (frames - 1) as f64 {
            let i = self.pos.floor();
            let frac = (self.pos - i) as f32;
            let i = i as isize;
            for c in 0..ch {
                let a = sample(i, c);
                let b = sample(i + 1, c);
                self.pending.push(a + (b - a) * frac);
            }
            self.pos += step;
        }
        self.pos -= frames as f64;
        for c in 0..ch {
            self.last[c] = input[(frames - 1) * ch + c];
        }
    }
}

/// The decoded block as interleaved f32 with `channels` channels (a third channel and up
/// are dropped; mono stays mono).
fn interleave(
    buf: &mut Option<SampleBuffer<f32>>,
    decoded: AudioBufferRef<'_>,
    channels: usize,
) -> Vec<f32> {
    let spec = *decoded.spec();
    let frames = decoded.frames();
    let needs_new = buf
        .as_ref()
        .is_none_or(|b| b.capacity() < frames * spec.channels.count());
    if needs_new {
        *buf = Some(SampleBuffer::new(decoded.capacity() as u64, spec));
    }
    let Some(b) = buf.as_mut() else {
        return Vec::new();
    };
    b.copy_interleaved_ref(decoded);
    let src = spec.channels.count().max(1);
    if src == channels {
        return b.samples().to_vec();
    }
    b.samples()
        .chunks(src)
        .flat_map(|f| (0..channels).map(move |c| f[c.min(f.len() - 1)]))
        .collect()
}

/// Sample rate and channels from an `AudioSpecificConfig` (ISO 14496-3), for a
/// configuration the decoder accepted without saying.
fn asc_format(asc: &[u8]) -> Option<(u32, usize)> {
    const RATES: [u32; 13] = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ];
    let bits = u16::from_be_bytes([*asc.first()?, *asc.get(1)?]);
    let index = usize::from((bits >> 7) & 0x0F);
    let channels = usize::from((bits >> 3) & 0x0F);
    Some((*RATES.get(index)?, channels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_are_read_and_refused_by_name() {
        // AAC-LC, 44.1 kHz, mono.
        let (_, f) = AacToOpus::new(&[0x12, 0x08]).unwrap();
        assert_eq!((f.sample_rate, f.channels), (44100, 1));
        // AAC-LC, 48 kHz, stereo.
        let (_, f) = AacToOpus::new(&[0x11, 0x90]).unwrap();
        assert_eq!((f.sample_rate, f.channels), (48000, 2));
        // HE-AAC signalled explicitly (object type 5) decodes its AAC-LC core.
        let (_, f) = AacToOpus::new(&[0x2B, 0x92, 0x08, 0x00]).unwrap();
        assert_eq!(f.sample_rate, 22050);
        // 5.1 is refused, and the error says what to send.
        let e = AacToOpus::new(&[0x11, 0xB0]).unwrap_err();
        assert!(e.contains("AAC-LC, mono or stereo"), "{e}");
        assert!(AacToOpus::new(&[]).is_err());
    }

    #[test]
    fn garbage_aac_frames_are_errors_not_panics() {
        let (mut t, _) = AacToOpus::new(&[0x12, 0x08]).unwrap();
        let mut seed = 0x9E37_79B9u32;
        for n in 0..2000 {
            let frame: Vec<u8> = (0..(n % 700))
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    seed as u8
                })
                .collect();
            let _ = t.push(&frame, &mut |_: &[u8]| {});
        }
    }

    #[test]
    fn resampling_44_1_to_48_khz_keeps_the_rate() {
        let (mut t, _) = AacToOpus::new(&[0x12, 0x08]).unwrap();
        let block: Vec<f32> = (0..1024).map(|i| (i as f32 / 100.0).sin()).collect();
        for _ in 0..441 {
            t.resample(&block);
        }
        // 441 blocks of 1024 samples at 44.1 kHz are 10.24 s: 491,520 samples at 48 kHz.
        let want = 441.0 * 1024.0 * 48_000.0 / 44_100.0;
        assert!(
            (t.pending.len() as f64 - want).abs() < 2.0,
            "{}",
            t.pending.len()
        );
    }
}
