//! A fixed-capacity map from SSRC to per-stream state, sized once at creation.
//!
//! A transport carries a handful of SSRCs, so a linear scan over an inline array beats
//! hashing and never allocates; the last hit is remembered because packets of one stream
//! come in runs. Slots are only taken through [`SsrcTable::insert`], which the contexts
//! call after a packet authenticated, so unauthenticated traffic cannot fill the table.

use super::SrtpError;
use crate::ids::Ssrc;

#[derive(Clone, Copy, Debug)]
struct Slot<S> {
    ssrc: Ssrc,
    used: bool,
    state: S,
}

#[derive(Clone, Debug)]
pub(crate) struct SsrcTable<S, const N: usize> {
    slots: [Slot<S>; N],
    last: usize,
}

impl<S: Copy + Default, const N: usize> SsrcTable<S, N> {
    pub(crate) fn new() -> Self {
        Self {
            slots: [Slot {
                ssrc: Ssrc(0),
                used: false,
                state: S::default(),
            }; N],
            last: 0,
        }
    }

    fn position(&self, ssrc: Ssrc) -> Option<usize> {
        if let Some(s) = self.slots.get(self.last) {
            if s.used && s.ssrc == ssrc {
                return Some(self.last);
            }
        }
        self.slots.iter().position(|s| s.used && s.ssrc == ssrc)
    }

    /// The state of `ssrc`, if it has a slot.
    pub(crate) fn get(&mut self, ssrc: Ssrc) -> Option<&mut S> {
        let i = self.position(ssrc)?;
        self.last = i;
        self.slots.get_mut(i).map(|s| &mut s.state)
    }

    /// Whether `ssrc` has a slot or one is free for it.
    pub(crate) fn has_room_for(&self, ssrc: Ssrc) -> bool {
        self.position(ssrc).is_some() || self.slots.iter().any(|s| !s.used)
    }

    /// The slot of `ssrc`, taking a free one (with default state) if it has none.
    pub(crate) fn get_or_insert(&mut self, ssrc: Ssrc) -> Result<&mut S, SrtpError> {
        let i = match self.position(ssrc) {
            Some(i) => i,
            None => {
                let i = self
                    .slots
                    .iter()
                    .position(|s| !s.used)
                    .ok_or(SrtpError::TableFull)?;
                if let Some(s) = self.slots.get_mut(i) {
                    *s = Slot {
                        ssrc,
                        used: true,
                        state: S::default(),
                    };
                }
                i
            }
        };
        self.last = i;
        self.slots
            .get_mut(i)
            .map(|s| &mut s.state)
            .ok_or(SrtpError::TableFull)
    }

    /// Stores `state` for `ssrc`, taking a slot if needed.
    pub(crate) fn insert(&mut self, ssrc: Ssrc, state: S) -> Result<(), SrtpError> {
        *self.get_or_insert(ssrc)? = state;
        Ok(())
    }

    /// Frees the slot of `ssrc`; returns whether it had one.
    pub(crate) fn remove(&mut self, ssrc: Ssrc) -> bool {
        match self.position(ssrc).and_then(|i| self.slots.get_mut(i)) {
            Some(s) => {
                s.used = false;
                true
            }
            None => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.used).count()
    }
}
