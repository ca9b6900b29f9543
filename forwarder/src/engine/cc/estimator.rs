//! The send-side bandwidth estimate of one transport, from the peer's transport-cc
//! feedback on the packets we sent it: a delay-based part (inter-arrival delay gradient
//! with a trendline filter and an adaptive threshold, the structure of libwebrtc's GCC)
//! and a loss-based part. docs/bandwidth-estimation.md explains the constants and why.
//!
//! Feedback is fed packet by packet ([`Estimator::on_packet`]) and closed with
//! [`Estimator::on_feedback`], so nothing is collected or allocated: the state is a few
//! fixed arrays. Times are µs; send times on our clock, arrival times on the peer's clock
//! (only differences of each are used).

/// Packets sent within this span form one group (a frame's burst); delays are measured
/// between groups, so pacing inside a burst does not count as queueing.
const BURST_US: u64 = 5_000;
/// Trendline: smoothing of the accumulated delay, window of points, and gain.
const SMOOTHING: f64 = 0.9;
const WINDOW: usize = 20;
const TREND_GAIN: f64 = 4.0;
/// Adaptive threshold on the modified trend (ms): initial, bounds, and adaptation rates
/// up (slow, so a steady queue does not raise it) and down (fast).
const THRESHOLD_INIT: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// Overuse must last this long (ms) before it is declared.
const OVERUSE_TIME_MS: f64 = 10.0;

/// On overuse the estimate drops to this share of what the peer acknowledged receiving.
pub const BETA: f64 = 0.85;
/// Multiplicative increase per second while far from the last known link capacity.
pub const INCREASE_PER_S: f64 = 1.08;
/// Additive increase per second near the link capacity (about one 1200-byte packet per
/// 200 ms response time).
pub const ADDITIVE_BPS_PER_S: f64 = 48_000.0;
/// Growth bound while application-limited: HEADROOM x acknowledged + HEADROOM_BPS.
pub const HEADROOM: f64 = 5.0;
pub const HEADROOM_BPS: f64 = 500_000.0;
/// At most one decrease per this interval: the previous one must show in feedback first.
const DECREASE_INTERVAL_US: u64 = 300_000;
/// Loss-based: above this share lost the estimate shrinks by half the loss; below
/// `LOSS_LOW` it may grow; in between it holds.
pub const LOSS_HIGH: f64 = 0.10;
pub const LOSS_LOW: f64 = 0.02;
/// Packets a loss figure needs before it counts.
const LOSS_MIN_PACKETS: u32 = 20;
pub const MIN_BPS: f64 = 50_000.0;
pub const MAX_BPS: f64 = 50_000_000.0;
/// Acknowledged throughput window.
const ACKED_WINDOW_US: u64 = 1_000_000;
const ACKED_SLOTS: usize = 64;

/// The delay-gradient detector's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DelayState {
    #[default]
    Normal,
    Overusing,
    Underusing,
}

impl DelayState {
    pub fn name(self) -> &'static str {
        match self {
            DelayState::Normal => "normal",
            DelayState::Overusing => "overusing",
            DelayState::Underusing => "underusing",
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Group {
    first_send: u64,
    last_send: u64,
    last_arrival: i64,
}

/// A send-side estimator (see the module docs).
#[derive(Debug)]
pub struct Estimator {
    group: Option<Group>,
    prev: Option<Group>,
    // Trendline.
    accumulated_ms: f64,
    smoothed_ms: f64,
    first_arrival: Option<i64>,
    points: [(f64, f64); WINDOW],
    n_points: usize,
    head: usize,
    deltas: u32,
    // Detector.
    threshold: f64,
    prev_trend: f64,
    over_ms: f64,
    over_count: u32,
    last_threshold_at: Option<i64>,
    state: DelayState,
    // Rate.
    estimate: Option<f64>,
    capacity: Option<f64>,
    last_update_us: Option<u64>,
    last_decrease_us: Option<u64>,
    first_feedback_us: Option<u64>,
    acked: [(u64, u64); ACKED_SLOTS],
    acked_head: usize,
    // Loss, over the current window of feedback.
    lost: u32,
    total: u32,
    loss: f64,
    bytes_this_feedback: u64,
    pub feedbacks: u64,
}

impl Default for Estimator {
    fn default() -> Self {
        Self {
            group: None,
            prev: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            first_arrival: None,
            points: [(0.0, 0.0); WINDOW],
            n_points: 0,
            head: 0,
            deltas: 0,
            threshold: THRESHOLD_INIT,
            prev_trend: 0.0,
            over_ms: -1.0,
            over_count: 0,
            last_threshold_at: None,
            state: DelayState::Normal,
            estimate: None,
            capacity: None,
            last_update_us: None,
            last_decrease_us: None,
            first_feedback_us: None,
            acked: [(0, 0); ACKED_SLOTS],
            acked_head: 0,
            lost: 0,
            total: 0,
            loss: 0.0,
            bytes_this_feedback: 0,
            feedbacks: 0,
        }
    }
}

impl Estimator {
    /// The estimate in bits per second, once there is one.
    pub fn estimate_bps(&self) -> Option<u64> {
        self.estimate.map(|e| e as u64)
    }

    pub fn state(&self) -> DelayState {
        self.state
    }

    /// Share lost in the last complete loss window.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// What the peer acknowledged over the last second, in bits per second.
    pub fn acked_bps(&self, now_us: u64) -> u64 {
        let Some(first) = self.first_feedback_us else {
            return 0;
        };
        let from = now_us.saturating_sub(ACKED_WINDOW_US);
        let bytes: u64 = self
            .acked
            .iter()
            .filter(|(at, b)| *b > 0 && *at > from && *at <= now_us)
            .map(|(_, b)| b)
            .sum();
        // Before a full window has passed, divide by the time feedback has covered.
        let span = now_us.saturating_sub(first).clamp(200_000, ACKED_WINDOW_US);
        bytes * 8 * 1_000_000 / span
    }

    /// A packet the feedback reports as lost.
    pub fn on_lost(&mut self) {
        self.lost += 1;
        self.total += 1;
    }

    /// A packet the feedback reports as received: sent at `send_us` (our clock) with
    /// `size` bytes, arrived at `arrival_us` (the peer's clock). In sequence order.
    pub fn on_packet(&mut self, send_us: u64, arrival_us: i64, size: u32) {
        self.total += 1;
        self.bytes_this_feedback += u64::from(size);
        match &mut self.group {
            None => {
                self.group = Some(Group {
                    first_send: send_us,
                    last_send: send_us,
                    last_arrival: arrival_us,
                })
            }
            Some(g) if send_us < g.first_send => {} // reordered from an older group
            Some(g) if send_us - g.first_send <= BURST_US => {
                g.last_send = g.last_send.max(send_us);
                g.last_arrival = g.last_arrival.max(arrival_us);
            }
            Some(g) => {
                let done = *g;
                *g = Group {
                    first_send: send_us,
                    last_send: send_us,
                    last_arrival: arrival_us,
                };
                if let Some(prev) = self.prev {
                    self.on_group_delta(prev, done);
                }
                self.prev = Some(done);
            }
        }
    }

    fn on_group_delta(&mut self, prev: Group, cur: Group) {
        let send_ms = (cur.last_send as f64 - prev.last_send as f64) / 1000.0;
        let arrival_ms = (cur.last_arrival - prev.last_arrival) as f64 / 1000.0;
        if arrival_ms < 0.0 {
            return; // reordered groups say nothing about queueing
        }
        let first = *self.first_arrival.get_or_insert(cur.last_arrival);
        let at_ms = (cur.last_arrival - first) as f64 / 1000.0;
        self.accumulated_ms += arrival_ms - send_ms;
        self.smoothed_ms = SMOOTHING * self.smoothed_ms + (1.0 - SMOOTHING) * self.accumulated_ms;
        self.points[self.head] = (at_ms, self.smoothed_ms);
        self.head = (self.head + 1) % WINDOW;
        self.n_points = (self.n_points + 1).min(WINDOW);
        self.deltas = (self.deltas + 1).min(1000);
        let slope = if self.n_points == WINDOW {
            slope(&self.points)
        } else {
            0.0
        };
        let trend = f64::from(self.deltas.min(60)) * slope * TREND_GAIN;
        self.detect(trend, send_ms, cur.last_arrival);
    }

    fn detect(&mut self, trend: f64, send_ms: f64, arrival: i64) {
        if trend > self.threshold {
            if self.over_ms < 0.0 {
                self.over_ms = send_ms / 2.0;
            } else {
                self.over_ms += send_ms;
            }
            self.over_count += 1;
            if self.over_ms > OVERUSE_TIME_MS && self.over_count > 1 && trend >= self.prev_trend {
                self.over_ms = 0.0;
                self.over_count = 0;
                self.state = DelayState::Overusing;
            }
        } else if trend < -self.threshold {
            self.over_ms = -1.0;
            self.over_count = 0;
            self.state = DelayState::Underusing;
        } else {
            self.over_ms = -1.0;
            self.over_count = 0;
            self.state = DelayState::Normal;
        }
        self.prev_trend = trend;
        // Adapt the threshold toward |trend|, ignoring outliers far above it.
        let dt_ms = self
            .last_threshold_at
            .map_or(0.0, |t| ((arrival - t) as f64 / 1000.0).clamp(0.0, 100.0));
        self.last_threshold_at = Some(arrival);
        if trend.abs() <= self.threshold + 15.0 {
            let k = if trend.abs() < self.threshold {
                K_DOWN
            } else {
                K_UP
            };
            self.threshold += k * (trend.abs() - self.threshold) * dt_ms;
            self.threshold = self.threshold.clamp(THRESHOLD_MIN, THRESHOLD_MAX);
        }
    }

    /// Closes one feedback packet received at `now_us` (our clock): updates the
    /// throughput, the loss figure and the estimate.
    pub fn on_feedback(&mut self, now_us: u64) {
        self.feedbacks += 1;
        self.first_feedback_us.get_or_insert(now_us);
        self.acked[self.acked_head] = (now_us, self.bytes_this_feedback);
        self.acked_head = (self.acked_head + 1) % ACKED_SLOTS;
        self.bytes_this_feedback = 0;
        let acked = self.acked_bps(now_us) as f64;
        let full_window = self
            .first_feedback_us
            .is_some_and(|f| now_us.saturating_sub(f) >= ACKED_WINDOW_US);
        let mut loss_verdict = None;
        if self.total >= LOSS_MIN_PACKETS {
            self.loss = f64::from(self.lost) / f64::from(self.total);
            self.lost = 0;
            self.total = 0;
            loss_verdict = Some(self.loss);
        }
        let dt_s = self
            .last_update_us
            .map_or(0.0, |t| (now_us.saturating_sub(t) as f64 / 1e6).min(1.0));
        self.last_update_us = Some(now_us);
        let may_decrease = self
            .last_decrease_us
            .is_none_or(|t| now_us.saturating_sub(t) >= DECREASE_INTERVAL_US);

        if self.state == DelayState::Overusing && may_decrease {
            // Drop below what actually got through, and remember it as the capacity.
            let base = if acked > 0.0 {
                acked
            } else {
                self.estimate.unwrap_or(MIN_BPS)
            };
            let new = BETA * base;
            self.estimate = Some(self.estimate.map_or(new, |e| e.min(new)));
            self.capacity = Some(match self.capacity {
                Some(c) => 0.5 * c + 0.5 * acked.max(MIN_BPS),
                None => acked.max(MIN_BPS),
            });
            self.last_decrease_us = Some(now_us);
        } else if let Some(e) = self.estimate.as_mut() {
            if self.state == DelayState::Normal && self.loss < LOSS_LOW {
                let near = self.capacity.is_some_and(|c| *e < 1.5 * c);
                let grown = if near {
                    *e + ADDITIVE_BPS_PER_S * dt_s
                } else {
                    *e * INCREASE_PER_S.powf(dt_s)
                };
                // While the sender is application-limited nothing proves the path can
                // carry more; growth stops at a bound wide enough to let the next
                // simulcast layer be tried (layers differ by up to about 4x).
                *e = e.max(grown.min(HEADROOM * acked + HEADROOM_BPS));
            }
        } else if full_window && acked > 0.0 {
            // The first estimate: half again what flows now, so a transport that is fine
            // keeps its layers until delay or loss says otherwise.
            self.estimate = Some(1.5 * acked + 10_000.0);
        }
        if let (Some(l), Some(e)) = (loss_verdict, self.estimate.as_mut()) {
            if l > LOSS_HIGH && may_decrease {
                *e *= 1.0 - 0.5 * l;
                self.last_decrease_us = Some(now_us);
            }
        }
        if let Some(c) = self.capacity.as_mut() {
            // Throughput above the remembered capacity proves it stale.
            if acked > *c {
                *c = acked;
            }
        }
        if let Some(e) = self.estimate.as_mut() {
            *e = e.clamp(MIN_BPS, MAX_BPS);
        }
    }
}

/// Least-squares slope of (x, y) points.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `seconds` of a `send_bps` stream of 1200-byte packets through a bottleneck
    /// of `link_bps` (a FIFO queue, 20 ms one way; `lose_every` drops every n-th packet),
    /// with feedback every 100 ms reporting what has arrived by then. Returns the time.
    fn run(
        e: &mut Estimator,
        t0_us: u64,
        seconds: u64,
        send_bps: u64,
        link_bps: u64,
        lose_every: Option<u64>,
    ) -> u64 {
        let size = 1200u64;
        let interval_us = size * 8 * 1_000_000 / send_bps;
        let service = (size * 8 * 1_000_000 / link_bps) as i64;
        let mut queue_free_at = t0_us as i64;
        let mut pending = std::collections::VecDeque::new();
        let mut t = t0_us;
        let mut next_fb = t0_us + 100_000;
        let mut n = 0u64;
        while t < t0_us + seconds * 1_000_000 {
            let arrive = queue_free_at.max(t as i64) + service;
            queue_free_at = arrive;
            let lost = lose_every.is_some_and(|k| n % k == 0);
            pending.push_back((t, arrive + 20_000, lost));
            n += 1;
            t += interval_us;
            if t >= next_fb {
                while let Some(&(sent, at, lost)) = pending.front() {
                    if at > t as i64 {
                        break;
                    }
                    pending.pop_front();
                    if lost {
                        e.on_lost();
                    } else {
                        e.on_packet(sent, at, size as u32);
                    }
                }
                e.on_feedback(t);
                next_fb += 100_000;
            }
        }
        t
    }

    #[test]
    fn ample_link_keeps_and_grows_the_estimate() {
        let mut e = Estimator::default();
        run(&mut e, 0, 5, 1_000_000, 10_000_000, None);
        assert_eq!(e.state(), DelayState::Normal);
        let est = e.estimate_bps().unwrap();
        assert!(est > 1_500_000, "{est}");
    }

    #[test]
    fn a_bottleneck_brings_the_estimate_below_it() {
        let mut e = Estimator::default();
        let t = run(&mut e, 0, 3, 1_000_000, 10_000_000, None);
        run(&mut e, t, 3, 1_000_000, 600_000, None);
        let est = e.estimate_bps().unwrap();
        assert!(est < 600_000, "{est}");
        assert!(est > 300_000, "{est}");
    }

    #[test]
    fn heavy_loss_shrinks_the_estimate() {
        let mut e = Estimator::default();
        let t = run(&mut e, 0, 3, 1_000_000, 10_000_000, None);
        let before = e.estimate_bps().unwrap();
        run(&mut e, t, 2, 1_000_000, 10_000_000, Some(4));
        let after = e.estimate_bps().unwrap();
        assert!(e.loss() > 0.2, "{}", e.loss());
        assert!(after * 10 < before * 6, "{before} -> {after}");
    }
}
