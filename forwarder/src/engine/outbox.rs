//! The engine's queue of events for control (keyframe needed, transport closed, data
//! messages, audio levels), drained by the worker after each loop turn.
//!
//! It is allocated once with room for a turn's worth of events. Events raised on the packet
//! path or by timers are advisory and repeat, so [`Outbox::emit`] drops them rather than
//! grow the queue when it is full; that keeps the fast path free of allocation. Events of
//! the slow path that must not be lost (a data channel message) use [`Outbox::push`].

use prism_proto::control as pb;

#[derive(Debug, Default)]
pub struct Outbox {
    events: Vec<pb::Event>,
}

impl Outbox {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            events: Vec::with_capacity(n),
        }
    }

    /// Queues `ev` if there is room without growing; drops it otherwise.
    pub fn emit(&mut self, ev: pb::Event) {
        if self.events.len() < self.events.capacity() {
            self.events.push(ev);
        }
    }

    /// Queues `ev`, growing the queue if needed (slow path only).
    pub fn push(&mut self, ev: pb::Event) {
        self.events.push(ev);
    }

    /// Unsolicited event with `body` (request id 0), queued as [`Outbox::emit`] does.
    pub fn emit_body(&mut self, body: pb::event::Body) {
        self.emit(pb::Event {
            request_id: 0,
            body: Some(body),
        });
    }

    pub fn drain(&mut self) -> std::vec::Drain<'_, pb::Event> {
        self.events.drain(..)
    }
}
