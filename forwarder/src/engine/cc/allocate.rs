//! Fitting a transport's down tracks into its bandwidth estimate by capping their spatial
//! layers, with hysteresis so that the choice does not flap.
//!
//! Each down track is an [`Item`]: the recent bitrate of each layer of its track (measured
//! on ingress), which layers are active, the subscriber's preferred layer, and the current
//! cap. The layer it gets is the highest active one at or below both the cap and the
//! preference (as `DownTrack::retarget` picks it). One round ([`Allocator::run`], every
//! [`ALLOCATION_INTERVAL`]):
//! - **down, at once:** while the layers in use add up to more than the estimate, the item
//!   on the highest layer drops one layer;
//! - **up, slowly:** otherwise, when no decrease happened for the hold time and the last
//!   increase had [`SETTLE_US`] to show in feedback, the item on the lowest layer goes up
//!   one layer if the new total stays under the estimate by [`UP_MARGIN`]. One item per
//!   round, so a switch is a probe whose effect the estimator sees before the next one.
//! - **backoff:** a decrease within [`TRIAL_US`] of an increase means the increase did not
//!   fit: the hold time doubles (up to [`MAX_HOLD_US`]); a decrease at any other time
//!   resets it to [`BASE_HOLD_US`].
//!
//! Layer switches still happen only at a keyframe of the new layer (the down track's own
//! rule); the cap only moves its target.

use std::time::Duration;

pub const ALLOCATION_INTERVAL: Duration = Duration::from_millis(200);
/// An increase needs the estimate to exceed the new total by this factor.
pub const UP_MARGIN: f64 = 1.2;
pub const BASE_HOLD_US: u64 = 3_000_000;
pub const MAX_HOLD_US: u64 = 60_000_000;
pub const SETTLE_US: u64 = 2_000_000;
pub const TRIAL_US: u64 = 5_000_000;
/// No cap: the down track follows its preference.
pub const UNCAPPED: u8 = u8::MAX;

/// One down track as the allocator sees it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Item {
    /// Bits per second of each spatial layer (0 when not measured yet).
    pub rates: [u64; 8],
    /// Bit `i` set while layer `i` is received.
    pub active: u8,
    pub preferred: u8,
    pub cap: u8,
}

impl Item {
    /// The layer the down track uses under `cap`.
    fn layer_under(&self, cap: u8) -> Option<u8> {
        let top = self.preferred.min(cap).min(7);
        (0..=top)
            .rev()
            .find(|l| self.active & (1 << l) != 0)
            .or_else(|| (0..8).find(|l| self.active & (1 << l) != 0))
    }

    pub fn layer(&self) -> Option<u8> {
        self.layer_under(self.cap)
    }

    fn rate(&self) -> u64 {
        self.layer().map_or(0, |l| self.rates[usize::from(l)])
    }

    /// The next active layer below the current one.
    fn below(&self) -> Option<u8> {
        let cur = self.layer()?;
        (0..cur).rev().find(|l| self.active & (1 << l) != 0)
    }

    /// The next active layer above the current one, within the preference.
    fn above(&self) -> Option<u8> {
        let cur = self.layer()?;
        (cur + 1..=self.preferred.min(7)).find(|l| self.active & (1 << l) != 0)
    }
}

/// Hysteresis state of one transport.
#[derive(Clone, Copy, Debug)]
pub struct Allocator {
    last_down_us: Option<u64>,
    last_up_us: Option<u64>,
    hold_us: u64,
}

impl Default for Allocator {
    fn default() -> Self {
        Self {
            last_down_us: None,
            last_up_us: None,
            hold_us: BASE_HOLD_US,
        }
    }
}

impl Allocator {
    /// One round at `now_us` with `estimate_bps` for `items` plus `reserve_bps` of streams
    /// without layers (audio). Updates the caps; true if any changed.
    pub fn run(
        &mut self,
        now_us: u64,
        estimate_bps: u64,
        reserve_bps: u64,
        items: &mut [Item],
    ) -> bool {
        let total = |items: &[Item]| reserve_bps + items.iter().map(Item::rate).sum::<u64>();
        let mut changed = false;
        while total(items) > estimate_bps {
            let victim = items
                .iter()
                .enumerate()
                .filter_map(|(i, it)| it.below().map(|b| (i, it.layer(), it.rate(), b)))
                .max_by_key(|&(_, l, r, _)| (l, r));
            let Some((i, _, _, below)) = victim else {
                break;
            };
            items[i].cap = below;
            changed = true;
        }
        if changed {
            let failed_probe = self
                .last_up_us
                .is_some_and(|u| now_us.saturating_sub(u) < TRIAL_US);
            self.hold_us = if failed_probe {
                (self.hold_us * 2).min(MAX_HOLD_US)
            } else {
                BASE_HOLD_US
            };
            self.last_down_us = Some(now_us);
            return true;
        }
        let held = self
            .last_down_us
            .is_some_and(|d| now_us.saturating_sub(d) < self.hold_us);
        let settling = self
            .last_up_us
            .is_some_and(|u| now_us.saturating_sub(u) < SETTLE_US);
        if held || settling {
            return false;
        }
        let candidate = items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| it.above().map(|a| (i, it.layer(), a)))
            .min_by_key(|&(_, l, _)| l);
        let Some((i, _, above)) = candidate else {
            return false;
        };
        let now_total = total(items);
        let item = items[i];
        let after = now_total - item.rate() + item.rates[usize::from(above)];
        if after as f64 * UP_MARGIN > estimate_bps as f64 {
            return false;
        }
        // Going up to the preferred layer lifts the cap altogether.
        items[i].cap = if item.layer_under(UNCAPPED) == Some(above) {
            UNCAPPED
        } else {
            above
        };
        self.last_up_us = Some(now_us);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> Item {
        Item {
            rates: [150_000, 500_000, 1_500_000, 0, 0, 0, 0, 0],
            active: 0b111,
            preferred: 2,
            cap: UNCAPPED,
        }
    }

    #[test]
    fn drops_the_highest_layer_first_until_it_fits() {
        let mut a = Allocator::default();
        let mut items = [item(), item()];
        items[1].preferred = 1;
        // 1.5 M + 0.5 M + 64 k audio do not fit in 1.2 M: the layer-2 one drops to 1.
        assert!(a.run(0, 1_200_000, 64_000, &mut items));
        assert_eq!((items[0].layer(), items[1].layer()), (Some(1), Some(1)));
        // 720 k: one more drop (of the later item, on a tie).
        assert!(a.run(200_000, 720_000, 64_000, &mut items));
        assert_eq!((items[0].layer(), items[1].layer()), (Some(1), Some(0)));
    }

    #[test]
    fn goes_up_one_step_after_the_hold_and_backs_off_when_that_fails() {
        let mut a = Allocator::default();
        let mut items = [item()];
        assert!(a.run(0, 600_000, 0, &mut items));
        assert_eq!(items[0].layer(), Some(1));
        // Plenty of room, but the hold is on.
        assert!(!a.run(1_000_000, 5_000_000, 0, &mut items));
        assert!(a.run(BASE_HOLD_US, 5_000_000, 0, &mut items));
        assert_eq!(items[0].layer(), Some(2));
        assert_eq!(items[0].cap, UNCAPPED, "back at the preference");
        // The increase did not fit: down again, and the next hold is twice as long.
        let t = BASE_HOLD_US + 1_000_000;
        assert!(a.run(t, 600_000, 0, &mut items));
        assert!(!a.run(t + BASE_HOLD_US, 5_000_000, 0, &mut items));
        assert!(a.run(t + 2 * BASE_HOLD_US, 5_000_000, 0, &mut items));
    }

    #[test]
    fn needs_a_margin_to_go_up_and_never_passes_the_preference() {
        let mut a = Allocator::default();
        let mut items = [item()];
        items[0].cap = 1;
        // 1.5 M * 1.2 = 1.8 M needed.
        assert!(!a.run(10_000_000, 1_700_000, 0, &mut items));
        assert!(a.run(10_000_000, 1_900_000, 0, &mut items));
        items[0].preferred = 1;
        items[0].cap = UNCAPPED;
        assert!(!a.run(30_000_000, 50_000_000, 0, &mut items));
        assert_eq!(items[0].layer(), Some(1));
    }
}
