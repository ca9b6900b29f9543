//! What one scenario run yields, and the sizes of every scenario (the plan).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::stats::{per_second, Latencies, LatencySummary};

/// Sizes of the scenarios; the defaults are the ones the goals are stated for.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Each scenario runs this many times per build, the builds alternating.
    pub rounds: usize,
    /// `joins-1x200`: sessions joining one room at once.
    pub joins_one_room: usize,
    /// `joins-20x10`: rooms × sessions per room, all at once.
    pub rooms: usize,
    pub per_room: usize,
    /// `relay`: participants with a `_reliable` channel, each sending this many messages
    /// at once to everyone else.
    pub relay_participants: usize,
    pub relay_messages: usize,
    /// How long a relay round may take once the messages are sent.
    pub relay_timeout_s: u64,
    /// `offer-idle` / `offer-busy`: fresh participants, one offer each, one at a time.
    pub offers: usize,
    /// `offer-busy`: sessions joining and leaving another room in a loop, concurrently.
    pub churn_workers: usize,
    /// Pause between runs so that the server finishes closing what the last one left.
    pub settle_ms: u64,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            rounds: 3,
            joins_one_room: 200,
            rooms: 20,
            per_room: 10,
            relay_participants: 50,
            relay_messages: 20,
            relay_timeout_s: 90,
            offers: 50,
            churn_workers: 50,
            settle_ms: 1500,
        }
    }

    /// Seconds, one server: proves every scenario works end to end.
    pub fn smoke() -> Plan {
        Plan {
            rounds: 1,
            joins_one_room: 5,
            rooms: 2,
            per_room: 2,
            relay_participants: 3,
            relay_messages: 3,
            relay_timeout_s: 20,
            offers: 3,
            churn_workers: 2,
            settle_ms: 200,
        }
    }
}

/// One run of one scenario against one build.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// Joins, deliveries or answered offers.
    pub events: u64,
    /// Joins or offers that failed, participants that never got a data channel, or
    /// messages that were never delivered.
    pub failures: u64,
    /// The time the events took, for the rate.
    pub span: Duration,
    pub latency: Latencies,
    /// Scenario-specific figures (e.g. the busy neighbour's join rate).
    pub extra: BTreeMap<String, f64>,
    /// The first few errors, for the report.
    pub errors: Vec<String>,
}

impl Measured {
    pub fn fail(&mut self, why: impl std::fmt::Display) {
        self.failures += 1;
        if self.errors.len() < 5 {
            self.errors.push(why.to_string());
        }
    }

    /// Adds another round: counts and spans add up, latencies merge.
    pub fn absorb(&mut self, other: &Measured) {
        self.events += other.events;
        self.failures += other.failures;
        self.span += other.span;
        self.latency.merge(&other.latency);
        for (k, v) in &other.extra {
            *self.extra.entry(k.clone()).or_default() += v;
        }
        for e in &other.errors {
            if self.errors.len() < 5 {
                self.errors.push(e.clone());
            }
        }
    }

    pub fn rate(&self) -> f64 {
        per_second(self.events, self.span)
    }

    pub fn summary(&self) -> LatencySummary {
        self.latency.summary()
    }
}
