//! The full data-channel stack in memory and virtual time: DataChannels ↔ DtlsEndpoint ↔
//! wire ↔ DtlsEndpoint ↔ DataChannels, as a LiveKit client and Prism would run it.

use std::time::{Duration, Instant};

use prism_forwarder::dtls::{DtlsCert, DtlsEndpoint, DtlsEvent, DtlsRole};
use prism_forwarder::sctp::{DataChannelEvent, DataChannels, Reliability, SctpError};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Side {
    dtls: DtlsEndpoint,
    dc: Option<DataChannels>,
    events: Vec<DataChannelEvent>,
    open_on_connect: Option<u16>,
}

impl Side {
    fn new(role: DtlsRole, cert: &DtlsCert, peer: &DtlsCert) -> Self {
        let mut dtls = DtlsEndpoint::new(role, cert).unwrap();
        dtls.set_remote_fingerprint(peer.fingerprint()).unwrap();
        Side {
            dtls,
            dc: None,
            events: Vec::new(),
            open_on_connect: None,
        }
    }

    fn dc(&mut self) -> &mut DataChannels {
        self.dc.as_mut().expect("data channels up")
    }

    fn timeout(&self) -> Option<Instant> {
        let a = self.dtls.poll_timeout();
        let b = self.dc.as_ref().and_then(|d| d.poll_timeout());
        a.into_iter().chain(b).min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.dtls.handle_timeout(now);
        if let Some(dc) = self.dc.as_mut() {
            dc.handle_timeout(now);
        }
    }

    /// Moves DTLS events into the data channel layer, and SCTP packets into DTLS.
    fn service(&mut self, now: Instant) {
        while let Some(e) = self.dtls.poll_event() {
            match e {
                DtlsEvent::Connected { .. } => {
                    let role = self.dtls.role();
                    let mut dc = DataChannels::new(role);
                    if self.open_on_connect.is_some() {
                        let id = dc
                            .open_channel("_reliable", true, Reliability::Reliable)
                            .unwrap();
                        assert_eq!(dc.send(id, false, b"x"), Err(SctpError::NotOpen));
                        self.open_on_connect = Some(id);
                    }
                    dc.handle_timeout(now);
                    self.dc = Some(dc);
                }
                DtlsEvent::ApplicationData(d) => {
                    if let Some(dc) = self.dc.as_mut() {
                        dc.handle_dtls_data(now, &d);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if let Some(dc) = self.dc.as_mut() {
            while let Some(p) = dc.poll_dtls_transmit() {
                // DTLS adds 37 bytes (header, GCM nonce and tag) and must stay within 1200.
                assert!(p.len() <= 1200 - 37, "SCTP packet {}", p.len());
                self.dtls.send_application_data(&p).unwrap();
            }
            while let Some(e) = dc.poll_event() {
                self.events.push(e);
            }
        }
    }
}

struct Net {
    client: Side,
    server: Side,
    now: Instant,
    rng: Rng,
    loss_percent: u64,
}

impl Net {
    fn new() -> Self {
        let cc = DtlsCert::generate().unwrap();
        let sc = DtlsCert::generate().unwrap();
        let now = Instant::now();
        let mut client = Side::new(DtlsRole::Client, &cc, &sc);
        client.dtls.handle_timeout(now);
        let server = Side::new(DtlsRole::Server, &sc, &cc);
        Net {
            client,
            server,
            now,
            rng: Rng(0x1234_5678_9ABC_DEF1),
            loss_percent: 0,
        }
    }

    fn exchange(&mut self) -> bool {
        let mut moved = false;
        self.client.service(self.now);
        self.server.service(self.now);
        for dir in 0..2 {
            let (from, to) = if dir == 0 {
                (&mut self.client, &mut self.server)
            } else {
                (&mut self.server, &mut self.client)
            };
            while let Some(d) = from.dtls.poll_transmit() {
                moved = true;
                assert!(d.len() <= 1200, "datagram {}", d.len());
                if self.rng.next() % 100 < self.loss_percent {
                    continue;
                }
                let _ = to.dtls.handle_datagram(self.now, &d);
            }
        }
        self.client.service(self.now);
        self.server.service(self.now);
        moved
    }

    /// Runs until `done` holds, advancing virtual time to the next timer when idle.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) {
        let start = self.now;
        loop {
            while self.exchange() {}
            if done(self) {
                return;
            }
            assert!(self.now - start < limit, "gave up waiting");
            let next = [self.client.timeout(), self.server.timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(self.now + Duration::from_millis(50));
            self.now = next.clamp(
                self.now + Duration::from_millis(1),
                self.now + Duration::from_millis(200),
            );
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
        }
    }

    fn connected() -> Self {
        let mut net = Net::new();
        net.run_until(Duration::from_secs(30), |n| {
            let up = |s: &Side| s.dc.as_ref().is_some_and(|d| d.is_connected());
            up(&n.client) && up(&n.server)
        });
        net
    }
}

fn opens(events: &[DataChannelEvent]) -> Vec<(u16, String, bool, Reliability)> {
    events
        .iter()
        .filter_map(|e| match e {
            DataChannelEvent::Open {
                id,
                label,
                ordered,
                reliability,
                ..
            } => Some((*id, label.clone(), *ordered, *reliability)),
            _ => None,
        })
        .collect()
}

fn messages(events: &[DataChannelEvent]) -> Vec<(u16, bool, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            DataChannelEvent::Message { id, binary, data } => Some((*id, *binary, data.clone())),
            _ => None,
        })
        .collect()
}

/// A LiveKit client opens "_reliable" and "_lossy"; both sides see them open.
fn livekit_channels(net: &mut Net) -> (u16, u16) {
    let reliable = net
        .client
        .dc()
        .open_channel("_reliable", true, Reliability::Reliable)
        .unwrap();
    let lossy = net
        .client
        .dc()
        .open_channel("_lossy", false, Reliability::MaxRetransmits(0))
        .unwrap();
    net.run_until(Duration::from_secs(10), |n| {
        opens(&n.server.events).len() == 2 && opens(&n.client.events).len() == 2
    });
    (reliable, lossy)
}

#[test]
fn client_channels_open_on_server_with_labels_and_reliability() {
    let mut net = Net::connected();
    let (reliable, lossy) = livekit_channels(&mut net);
    assert_eq!(reliable % 2, 0, "DTLS client uses even ids");
    assert_eq!(lossy % 2, 0);
    assert_ne!(reliable, lossy);
    let server_opens = opens(&net.server.events);
    assert_eq!(
        server_opens,
        vec![
            (
                reliable,
                "_reliable".to_string(),
                true,
                Reliability::Reliable
            ),
            (
                lossy,
                "_lossy".to_string(),
                false,
                Reliability::MaxRetransmits(0)
            ),
        ]
    );
    assert_eq!(opens(&net.client.events), server_opens);
    assert!(net.server.events.contains(&DataChannelEvent::Connected));
}

#[test]
fn messages_flow_both_ways() {
    let mut net = Net::connected();
    let (reliable, lossy) = livekit_channels(&mut net);
    let big: Vec<u8> = (0..60 * 1024).map(|i| (i % 251) as u8).collect();

    net.client.dc().send(reliable, false, b"hello").unwrap();
    net.client.dc().send(reliable, true, &big).unwrap();
    net.client.dc().send(lossy, true, &[1, 2, 3]).unwrap();
    net.client.dc().send(reliable, false, b"").unwrap();
    net.client.dc().send(reliable, true, b"").unwrap();
    net.server
        .dc()
        .send(reliable, false, "héllo".as_bytes())
        .unwrap();
    net.server.dc().send(lossy, true, &big).unwrap();

    net.run_until(Duration::from_secs(10), |n| {
        messages(&n.server.events).len() == 5 && messages(&n.client.events).len() == 2
    });
    let got = messages(&net.server.events);
    let on_reliable: Vec<_> = got.iter().filter(|m| m.0 == reliable).cloned().collect();
    assert_eq!(
        on_reliable,
        vec![
            (reliable, false, b"hello".to_vec()),
            (reliable, true, big.clone()),
            (reliable, false, vec![]),
            (reliable, true, vec![]),
        ]
    );
    assert!(got.contains(&(lossy, true, vec![1, 2, 3])));
    let got = messages(&net.client.events);
    assert!(got.contains(&(reliable, false, "héllo".as_bytes().to_vec())));
    assert!(got.contains(&(lossy, true, big)));
}

#[test]
fn server_opens_its_own_channel_with_odd_id() {
    let mut net = Net::connected();
    let id = net
        .server
        .dc()
        .open_channel_with(
            "server-events",
            "json",
            true,
            Reliability::MaxPacketLifetime(500),
        )
        .unwrap();
    assert_eq!(id % 2, 1);
    net.run_until(Duration::from_secs(10), |n| {
        opens(&n.client.events).len() == 1
    });
    let DataChannelEvent::Open {
        label,
        protocol,
        ordered,
        reliability,
        ..
    } = net
        .client
        .events
        .iter()
        .find(|e| matches!(e, DataChannelEvent::Open { .. }))
        .unwrap()
        .clone()
    else {
        unreachable!()
    };
    assert_eq!(label, "server-events");
    assert_eq!(protocol, "json");
    assert!(ordered);
    assert_eq!(reliability, Reliability::MaxPacketLifetime(500));
    net.client.dc().send(id, false, b"ack").unwrap();
    net.run_until(Duration::from_secs(10), |n| {
        messages(&n.server.events).len() == 1
    });
    assert_eq!(
        messages(&net.server.events),
        vec![(id, false, b"ack".to_vec())]
    );
}

#[test]
fn channel_close_reaches_both_sides() {
    let mut net = Net::connected();
    let (reliable, lossy) = livekit_channels(&mut net);
    net.client.dc().close(lossy).unwrap();
    net.run_until(Duration::from_secs(10), |n| {
        let closed = |s: &Side| s.events.contains(&DataChannelEvent::Closed { id: lossy });
        closed(&n.client) && closed(&n.server)
    });
    assert_eq!(
        net.client.dc().send(lossy, true, b"x"),
        Err(SctpError::UnknownChannel)
    );
    // The other channel still works.
    net.client
        .dc()
        .send(reliable, false, b"still here")
        .unwrap();
    net.run_until(Duration::from_secs(10), |n| {
        !messages(&n.server.events).is_empty()
    });
    assert_eq!(
        messages(&net.server.events),
        vec![(reliable, false, b"still here".to_vec())]
    );
    // The server closing works too.
    net.server.dc().close(reliable).unwrap();
    net.run_until(Duration::from_secs(10), |n| {
        n.client
            .events
            .contains(&DataChannelEvent::Closed { id: reliable })
    });
}

#[test]
fn open_before_association_is_deferred() {
    let mut net = Net::new();
    // The client opens in the same turn DTLS connects, before SCTP has said anything.
    net.client.open_on_connect = Some(u16::MAX);
    net.run_until(Duration::from_secs(10), |n| {
        opens(&n.server.events).len() == 1
    });
    let id = net.client.open_on_connect.unwrap();
    assert_eq!(opens(&net.server.events)[0].1, "_reliable");
    net.client.dc().send(id, false, b"now").unwrap();
    net.run_until(Duration::from_secs(10), |n| {
        messages(&n.server.events).len() == 1
    });
}

#[test]
fn unconnected_channel_can_be_closed() {
    let mut dc = DataChannels::new(DtlsRole::Server);
    let id = dc.open_channel("x", true, Reliability::Reliable).unwrap();
    assert_eq!(id, 1);
    assert_eq!(dc.send(id, true, b"x"), Err(SctpError::NotOpen));
    assert_eq!(dc.send(id + 2, true, b"x"), Err(SctpError::UnknownChannel));
    dc.close(id).unwrap();
    assert_eq!(dc.poll_event(), Some(DataChannelEvent::Closed { id }));
    assert_eq!(dc.close(id), Err(SctpError::UnknownChannel));
    // A server with no peer INIT sends nothing and has no timer.
    assert_eq!(dc.poll_dtls_transmit(), None);
    assert_eq!(dc.poll_timeout(), None);
}

#[test]
fn data_channels_survive_loss() {
    let mut net = Net::connected();
    let (reliable, _lossy) = livekit_channels(&mut net);
    net.loss_percent = 10;
    let big: Vec<u8> = (0..60 * 1024).map(|i| (i % 253) as u8).collect();
    for i in 0..20u8 {
        net.client.dc().send(reliable, true, &[i; 300]).unwrap();
    }
    net.client.dc().send(reliable, true, &big).unwrap();
    net.run_until(Duration::from_secs(120), |n| {
        messages(&n.server.events).len() == 21
    });
    let got = messages(&net.server.events);
    for (i, m) in got.iter().take(20).enumerate() {
        assert_eq!(m.2, vec![i as u8; 300], "in order, none lost");
    }
    assert_eq!(got[20].2, big);
}

#[test]
fn garbage_sctp_is_dropped() {
    let mut net = Net::connected();
    let (reliable, _) = livekit_channels(&mut net);
    let dc = net.server.dc();
    let before = dc.stats().packets_dropped;
    let now = net.now;
    for g in [&b""[..], &[0u8; 3], &[0xFF; 12], &[7; 200]] {
        dc.handle_dtls_data(now, g);
    }
    assert!(dc.stats().packets_dropped > before);
    net.client.dc().send(reliable, false, b"ok").unwrap();
    net.run_until(Duration::from_secs(10), |n| {
        !messages(&n.server.events).is_empty()
    });
}

#[test]
fn oversized_message_is_refused() {
    let mut net = Net::connected();
    let (reliable, _) = livekit_channels(&mut net);
    let huge = vec![0; prism_forwarder::sctp::MAX_MESSAGE_SIZE + 1];
    assert_eq!(
        net.client.dc().send(reliable, true, &huge),
        Err(SctpError::TooLarge)
    );
}
