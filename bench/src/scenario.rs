//! The suite's traffic shapes: who publishes what, and who subscribes to which layer.
//!
//! A [`Topology`] is plain data; every system under test is configured from it (Prism with
//! rooms, transports, tracks and down tracks; the reflector and the conventional forwarder
//! with an SSRC → destinations table; rtpengine with one call), and the runner derives from
//! it what each sink should receive.

use serde::Serialize;

use crate::source::Media;

/// A publisher of the topology.
#[derive(Clone, Debug)]
pub struct Publisher {
    pub media: Media,
}

/// One subscription: `subscriber` receives layer `spatial` of `publisher`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub subscriber: usize,
    pub publisher: usize,
    pub spatial: usize,
}

/// A subscription that moves to another layer in the middle of each trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch {
    /// Index into [`Topology::subscriptions`].
    pub subscription: usize,
    /// The other layer; trials alternate between it and the original one.
    pub spatial: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Fanout,
    Audio,
    Meeting,
    Simulcast,
    Relay,
}

/// A scenario of the suite.
#[derive(Clone, Debug)]
pub struct Topology {
    pub name: String,
    pub kind: Kind,
    /// The N of the scenario (subscribers, or meeting participants).
    pub n: usize,
    pub publishers: Vec<Publisher>,
    pub subscribers: usize,
    pub subscriptions: Vec<Subscription>,
    pub switches: Vec<Switch>,
}

/// Bench stream id of a publisher's layer.
pub fn stream_id(publisher: usize, layer: usize) -> u32 {
    (publisher * 4 + layer) as u32
}

/// RTP SSRC the generator uses for a publisher's layer.
pub fn source_ssrc(publisher: usize, layer: usize) -> u32 {
    0x1000_0000 + stream_id(publisher, layer)
}

/// RTP SSRC a forwarder uses towards the subscriber of a subscription.
pub fn output_ssrc(subscription: usize) -> u32 {
    0x2000_0000 + subscription as u32
}

impl Topology {
    /// One 720p video publisher, `n` subscribers.
    pub fn fanout(n: usize) -> Self {
        Self {
            name: format!("fan-out 1→{n}"),
            kind: Kind::Fanout,
            n,
            publishers: vec![Publisher {
                media: Media::Video,
            }],
            subscribers: n,
            subscriptions: (0..n)
                .map(|s| Subscription {
                    subscriber: s,
                    publisher: 0,
                    spatial: 0,
                })
                .collect(),
            switches: Vec::new(),
        }
    }

    /// Ten audio speakers, `n` listeners of all of them.
    pub fn audio(n: usize) -> Self {
        let speakers = 10;
        Self {
            name: format!("audio 10→{n}"),
            kind: Kind::Audio,
            n,
            publishers: vec![
                Publisher {
                    media: Media::Audio
                };
                speakers
            ],
            subscribers: n,
            subscriptions: (0..n)
                .flat_map(|s| {
                    (0..speakers).map(move |p| Subscription {
                        subscriber: s,
                        publisher: p,
                        spatial: 0,
                    })
                })
                .collect(),
            switches: Vec::new(),
        }
    }

    /// `n` participants each publishing 720p video and receiving everyone else's.
    pub fn meeting(n: usize) -> Self {
        Self {
            name: format!("meeting {n}×{n}"),
            kind: Kind::Meeting,
            n,
            publishers: vec![
                Publisher {
                    media: Media::Video
                };
                n
            ],
            subscribers: n,
            subscriptions: (0..n)
                .flat_map(|s| {
                    (0..n).filter(move |&p| p != s).map(move |p| Subscription {
                        subscriber: s,
                        publisher: p,
                        spatial: 0,
                    })
                })
                .collect(),
            switches: Vec::new(),
        }
    }

    /// One simulcast publisher, `n` subscribers spread over its three layers; every third
    /// subscriber switches layer once per trial.
    pub fn simulcast(n: usize) -> Self {
        let subscriptions: Vec<Subscription> = (0..n)
            .map(|s| Subscription {
                subscriber: s,
                publisher: 0,
                spatial: s % 3,
            })
            .collect();
        let switches = subscriptions
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 == 0)
            .map(|(i, s)| Switch {
                subscription: i,
                spatial: if i % 2 == 0 { 2 } else { (s.spatial + 1) % 3 },
            })
            .collect();
        Self {
            name: format!("simulcast mix 1→{n}"),
            kind: Kind::Simulcast,
            n,
            publishers: vec![Publisher {
                media: Media::Simulcast,
            }],
            subscribers: n,
            subscriptions,
            switches,
        }
    }

    /// One video publisher relayed to one subscriber.
    pub fn relay() -> Self {
        Self {
            name: "relay 1:1".into(),
            kind: Kind::Relay,
            ..Self::fanout(1)
        }
    }

    /// `n` streams of small ([`crate::source::SMALL_PACKET`]-byte) packets, each relayed
    /// 1:1 to a subscriber of its own: per-packet overhead that the kernel's cost hides
    /// for large packets shows here.
    pub fn small_relay(n: usize) -> Self {
        Self {
            name: format!("relay {n}×1:1 200 B"),
            kind: Kind::Relay,
            n,
            publishers: vec![
                Publisher {
                    media: Media::SmallAudio
                };
                n
            ],
            subscribers: n,
            subscriptions: (0..n)
                .map(|s| Subscription {
                    subscriber: s,
                    publisher: s,
                    spatial: 0,
                })
                .collect(),
            switches: Vec::new(),
        }
    }

    /// Egress packets per second at load factor 1 (keyframes averaged in).
    pub fn base_egress_pps(&self) -> f64 {
        self.subscriptions
            .iter()
            .map(|s| {
                let m = self.publishers[s.publisher].media;
                m.base_fps() * m.mean_packets_per_frame(s.spatial)
            })
            .sum()
    }

    /// Ingress packets per second at load factor 1.
    pub fn base_ingress_pps(&self) -> f64 {
        self.publishers
            .iter()
            .map(|p| {
                (0..p.media.layers())
                    .map(|l| p.media.base_fps() * p.media.mean_packets_per_frame(l))
                    .sum::<f64>()
            })
            .sum()
    }
}

/// The standard suite, in run order.
pub fn suite() -> Vec<Topology> {
    vec![
        Topology::relay(),
        Topology::fanout(10),
        Topology::fanout(100),
        Topology::fanout(1000),
        Topology::audio(100),
        Topology::meeting(10),
        Topology::meeting(25),
        Topology::meeting(50),
        Topology::simulcast(100),
    ]
}

/// The veth mode's suite (`prism-bench veth`): a large-packet fan-out and the relay of
/// many small streams.
pub fn veth_suite() -> Vec<Topology> {
    vec![Topology::fanout(100), Topology::small_relay(50)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_have_the_expected_subscriptions() {
        assert_eq!(Topology::fanout(100).subscriptions.len(), 100);
        assert_eq!(Topology::audio(100).subscriptions.len(), 1000);
        assert_eq!(Topology::meeting(10).subscriptions.len(), 90);
        let s = Topology::simulcast(9);
        assert_eq!(s.switches.len(), 3);
        assert!(s
            .switches
            .iter()
            .all(|w| w.spatial != s.subscriptions[w.subscription].spatial));
        let r = Topology::small_relay(50);
        assert_eq!(r.subscriptions.len(), 50);
        assert!(r.subscriptions.iter().all(|s| s.publisher == s.subscriber));
        assert!((r.base_egress_pps() - 2500.0).abs() < 1e-6);
        // 30 fps × 4 packets × (60 + 2) / 60 per subscriber.
        assert!((Topology::fanout(10).base_egress_pps() - 1240.0).abs() < 1e-6);
    }
}
