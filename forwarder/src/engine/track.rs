//! A published track: its simulcast layers, their receive state and retransmission caches,
//! and the list of down tracks it feeds.
//!
//! Each layer keeps its own sequence and timestamp unwrappers (layers are independent RTP
//! streams) and its own cache. A layer counts as active while packets arrive; subscribers
//! are retargeted to active layers so that a publisher that stops sending its top layer
//! (bandwidth, CPU) does not leave them frozen. Keyframe requests toward the publisher are
//! throttled per layer: many subscribers waiting for the same keyframe cost one PLI.

use std::time::{Duration, Instant};

use crate::codec::Codec;
use crate::engine::cache::RetransmitCache;
use crate::engine::reports::ReceiveStats;
use crate::ids::{Pt, Rid, SeqUnwrapper, Ssrc, TsUnwrapper};

/// A layer with no packet for this long is inactive.
pub const LAYER_TIMEOUT: Duration = Duration::from_millis(1500);
/// At most one keyframe request per layer within this interval.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(300);

/// Sequence numbers asked for again at most this often.
pub const NACK_INTERVAL: Duration = Duration::from_millis(40);
/// A gap is reported only after this long, to let reordered packets arrive first.
pub const NACK_REORDER_WAIT: Duration = Duration::from_millis(10);
/// How many times one lost packet is asked for.
pub const NACK_ATTEMPTS: u8 = 4;
/// Gaps larger than this are not repaired (a stream restart, not loss).
pub const NACK_MAX_GAP: u64 = 64;

#[derive(Clone, Copy, Debug)]
struct Missing {
    seq: u64,
    since: Instant,
    last_asked: Option<Instant>,
    attempts: u8,
}

/// Finds packets a publisher's stream lost on the way to us and says when to ask for them
/// again (generic NACK, RFC 4585). Fixed capacity: it never allocates after creation.
#[derive(Debug)]
pub struct NackGenerator {
    missing: Vec<Missing>,
    highest: Option<u64>,
}

impl Default for NackGenerator {
    fn default() -> Self {
        Self {
            missing: Vec::with_capacity(NACK_MAX_GAP as usize),
            highest: None,
        }
    }
}

impl NackGenerator {
    /// Notes the arrival of extended sequence number `seq`.
    pub fn on_packet(&mut self, seq: u64, now: Instant) {
        match self.highest {
            None => self.highest = Some(seq),
            Some(h) if seq > h => {
                if seq - h > NACK_MAX_GAP {
                    self.missing.clear();
                } else {
                    for s in h + 1..seq {
                        if self.missing.len() == self.missing.capacity() {
                            self.missing.remove(0);
                        }
                        self.missing.push(Missing {
                            seq: s,
                            since: now,
                            last_asked: None,
                            attempts: 0,
                        });
                    }
                }
                self.highest = Some(seq);
            }
            Some(_) => self.missing.retain(|m| m.seq != seq),
        }
    }

    /// Writes the sequence numbers to ask for now into `out`; returns how many.
    pub fn due(&mut self, now: Instant, out: &mut [u16]) -> usize {
        let mut n = 0;
        for m in self.missing.iter_mut() {
            if n == out.len() {
                break;
            }
            let waited = now.saturating_duration_since(m.since) >= NACK_REORDER_WAIT;
            let spaced = m
                .last_asked
                .is_none_or(|t| now.saturating_duration_since(t) >= NACK_INTERVAL);
            if waited && spaced && m.attempts < NACK_ATTEMPTS {
                out[n] = m.seq as u16;
                n += 1;
                m.attempts += 1;
                m.last_asked = Some(now);
            }
        }
        self.missing
            .retain(|m| m.attempts < NACK_ATTEMPTS || m.last_asked.is_some_and(|t| t == now));
        n
    }

    pub fn pending(&self) -> usize {
        self.missing.len()
    }
}

#[derive(Debug)]
pub struct Layer {
    pub ssrc: Ssrc,
    pub rid: Option<Rid>,
    pub seq: SeqUnwrapper,
    pub ts: TsUnwrapper,
    pub cache: RetransmitCache,
    pub last_packet: Option<Instant>,
    pub last_keyframe_request: Option<Instant>,
    pub keyframe_wanted: bool,
    pub packets: u64,
    pub nack: NackGenerator,
    /// SSRC of the layer's RTX stream (0: none known).
    pub rtx_ssrc: Ssrc,
    /// What the receiver reports to the publisher say about this layer.
    pub recv: ReceiveStats,
    /// Recent bitrate, for fitting subscribers into their bandwidth estimate.
    pub rate: crate::engine::cc::RateMeter,
}

impl Layer {
    pub fn new(ssrc: Ssrc, rid: Option<Rid>, cache_size: usize) -> Self {
        Self {
            ssrc,
            rid,
            seq: SeqUnwrapper::new(),
            ts: TsUnwrapper::new(),
            cache: RetransmitCache::new(cache_size),
            last_packet: None,
            last_keyframe_request: None,
            keyframe_wanted: false,
            packets: 0,
            nack: NackGenerator::default(),
            rtx_ssrc: Ssrc(0),
            recv: ReceiveStats::default(),
            rate: Default::default(),
        }
    }

    pub fn is_active(&self, now: Instant) -> bool {
        self.last_packet
            .is_some_and(|t| now.saturating_duration_since(t) < LAYER_TIMEOUT)
    }

    /// Whether a keyframe request may go out now; if so, records it.
    pub fn take_keyframe_request(&mut self, now: Instant) -> bool {
        if !self.keyframe_wanted {
            return false;
        }
        let due = self
            .last_keyframe_request
            .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_REQUEST_INTERVAL);
        if due {
            self.keyframe_wanted = false;
            self.last_keyframe_request = Some(now);
        }
        due
    }
}

/// How loud a packet must be to count as speech: −35 dBov or louder (RFC 6464 levels are
/// 0 for the loudest to 127 for silence). Voice sits around −20 to −30 dBov; background
/// noise and comfort noise below −40.
pub const SPEECH_DBOV: u8 = 35;
/// Share of an interval's packets (in percent) that must be speech for the track to count
/// as speaking, so that a cough or a click does not.
pub const SPEECH_SHARE_PERCENT: u32 = 40;
/// How often speaking state is read out (and reported when it changed).
pub const SPEAKER_INTERVAL: Duration = Duration::from_millis(400);

/// Voice activity of an audio track, from the audio level its publisher writes into each
/// packet (the ssrc-audio-level header extension). Signaling turns the reports into
/// LiveKit's active speakers; nothing is decoded.
#[derive(Clone, Copy, Debug, Default)]
pub struct AudioMeter {
    packets: u32,
    loud: u32,
    /// Sum of the linear amplitudes (0..1) of the loud packets.
    amplitude: f32,
    /// What was last reported.
    pub speaking: bool,
    pub level: f32,
}

impl AudioMeter {
    /// One packet's level byte (the V bit is ignored: not every sender sets it).
    pub fn observe(&mut self, ext: u8) {
        let dbov = ext & 0x7f;
        self.packets = self.packets.saturating_add(1);
        if dbov <= SPEECH_DBOV {
            self.loud += 1;
            self.amplitude += 10f32.powf(-f32::from(dbov) / 20.0);
        }
    }

    /// Ends an interval. Returns the new state when it is worth telling: speaking started
    /// or stopped, or the level of a speaker moved by 0.05 or more.
    pub fn roll(&mut self) -> Option<(bool, f32)> {
        let speaking = self.packets > 0 && self.loud * 100 >= self.packets * SPEECH_SHARE_PERCENT;
        let level = if speaking && self.loud > 0 {
            (self.amplitude / self.loud as f32).min(1.0)
        } else {
            0.0
        };
        self.packets = 0;
        self.loud = 0;
        self.amplitude = 0.0;
        let changed = speaking != self.speaking || (speaking && (level - self.level).abs() >= 0.05);
        self.speaking = speaking;
        self.level = level;
        changed.then_some((speaking, level))
    }
}

#[derive(Debug)]
pub struct Track {
    pub id: u64,
    pub room: u64,
    /// Index of the publishing transport.
    pub transport: usize,
    pub video: bool,
    pub codec: Codec,
    pub payload_type: Pt,
    pub clock_rate: u32,
    /// Ordered by spatial index: `layers[i]` is spatial layer `i`.
    pub layers: Vec<Layer>,
    /// Indices of the down tracks fed by this track.
    pub subscribers: Vec<usize>,
    /// Audio tracks: voice activity from the audio level extension.
    pub meter: AudioMeter,
    /// Bit `i` set while layer `i` is active.
    pub active: u8,
    /// Whether lost packets are asked for again (negotiated per track).
    pub nack: bool,
    /// For layers announced by RID: the track's MID and the header extension ids that carry
    /// MID and RID (0: none).
    pub mid: Option<crate::ids::Mid>,
    pub mid_ext: u8,
    pub rid_ext: u8,
    /// The publisher's RTX payload type (its `apt=` is `payload_type`), if negotiated, and
    /// the repaired-rtp-stream-id extension id that names the layer of an RTX SSRC not
    /// announced in SDP (0: none).
    pub rtx_pt: Option<Pt>,
    pub repaired_rid_ext: u8,
    /// When the track was added: a layer not seen yet counts as active for
    /// [`LAYER_TIMEOUT`] after that, so that subscribers are not moved off a layer whose
    /// first packet is simply a few microseconds behind another layer's.
    pub created: Instant,
}

impl Track {
    /// Every layer set: the initial `active` mask.
    pub fn all_layers(n: usize) -> u8 {
        if n >= 8 {
            u8::MAX
        } else {
            (1u8 << n) - 1
        }
    }

    pub fn layer_of(&self, ssrc: Ssrc) -> Option<usize> {
        self.layers.iter().position(|l| l.ssrc == ssrc)
    }

    /// Whether some layer still waits to learn its SSRC from its RID.
    pub fn awaits_rids(&self) -> bool {
        self.rid_ext != 0 && self.layers.iter().any(|l| l.ssrc.0 == 0)
    }

    /// The layer a packet with these MID and RID extension values belongs to, if it is one
    /// still waiting for its SSRC.
    pub fn match_rid(&self, mid: Option<&[u8]>, rid: &[u8]) -> Option<usize> {
        if let (Some(want), Some(got)) = (&self.mid, mid) {
            if want.0.as_bytes() != got {
                return None;
            }
        }
        self.layers
            .iter()
            .position(|l| l.ssrc.0 == 0 && l.rid.is_some_and(|r| r.0.as_bytes() == rid))
    }

    /// The layer an RTX packet with these MID and repaired-RID extension values repairs,
    /// if it is one whose RTX SSRC is not known yet.
    pub fn match_repaired_rid(&self, mid: Option<&[u8]>, rid: &[u8]) -> Option<usize> {
        if let (Some(want), Some(got)) = (&self.mid, mid) {
            if want.0.as_bytes() != got {
                return None;
            }
        }
        self.layers
            .iter()
            .position(|l| l.rtx_ssrc.0 == 0 && l.rid.is_some_and(|r| r.0.as_bytes() == rid))
    }

    /// Recomputes which layers are active; true if that changed.
    pub fn refresh_active(&mut self, now: Instant) -> bool {
        let mut mask = 0u8;
        let young = now.saturating_duration_since(self.created) < LAYER_TIMEOUT;
        for (i, l) in self.layers.iter().enumerate().take(8) {
            if l.is_active(now) || (young && l.last_packet.is_none()) {
                mask |= 1 << i;
            }
        }
        let changed = mask != self.active;
        self.active = mask;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_meter_reports_speech_starting_and_stopping_only() {
        let mut m = AudioMeter::default();
        assert_eq!(m.roll(), None, "silence stays unreported");
        for _ in 0..20 {
            m.observe(0x80 | 20); // −20 dBov, voice
        }
        let (speaking, level) = m.roll().expect("speech started");
        assert!(speaking);
        assert!((level - 0.1).abs() < 0.001, "{level}");
        for _ in 0..20 {
            m.observe(21);
        }
        assert_eq!(m.roll(), None, "a small level change is not news");
        // Mostly quiet with a click: not speaking.
        for i in 0..20 {
            m.observe(if i == 0 { 5 } else { 90 });
        }
        assert_eq!(m.roll(), Some((false, 0.0)));
        assert_eq!(m.roll(), None);
    }

    #[test]
    fn keyframe_requests_are_throttled_per_layer() {
        let t0 = Instant::now();
        let mut l = Layer::new(Ssrc(1), None, 8);
        assert!(!l.take_keyframe_request(t0), "nothing wanted");
        l.keyframe_wanted = true;
        assert!(l.take_keyframe_request(t0));
        l.keyframe_wanted = true;
        assert!(!l.take_keyframe_request(t0 + Duration::from_millis(100)));
        assert!(l.take_keyframe_request(t0 + KEYFRAME_REQUEST_INTERVAL));
    }

    #[test]
    fn nack_generator_asks_for_gaps_spaced_and_bounded() {
        let t0 = Instant::now();
        let mut g = NackGenerator::default();
        let mut out = [0u16; 32];
        g.on_packet(100, t0);
        g.on_packet(103, t0);
        assert_eq!(g.due(t0, &mut out), 0, "reordering grace");
        let t1 = t0 + NACK_REORDER_WAIT;
        assert_eq!(g.due(t1, &mut out), 2);
        assert_eq!(&out[..2], &[101, 102]);
        assert_eq!(g.due(t1 + Duration::from_millis(1), &mut out), 0, "spaced");
        g.on_packet(101, t1);
        let mut t = t1;
        let mut asked = 1;
        for _ in 0..10 {
            t += NACK_INTERVAL;
            asked += g.due(t, &mut out);
        }
        assert_eq!(
            asked,
            1 + usize::from(NACK_ATTEMPTS) - 1,
            "102 asked at most 4 times"
        );
        assert_eq!(g.pending(), 0);
        g.on_packet(103 + NACK_MAX_GAP + 1, t);
        assert_eq!(g.pending(), 0, "a jump is a restart, not loss");
    }

    #[test]
    fn layers_go_inactive_after_timeout() {
        let t0 = Instant::now();
        let mut l = Layer::new(Ssrc(1), None, 8);
        assert!(!l.is_active(t0));
        l.last_packet = Some(t0);
        assert!(l.is_active(t0 + Duration::from_millis(10)));
        assert!(!l.is_active(t0 + LAYER_TIMEOUT));
    }
}
