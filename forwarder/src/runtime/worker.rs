//! One core's thread: a pinned loop that owns a [`Driver`] and an [`Engine`].
//!
//! Each turn reads the clock once, drains the command queue, runs the engine's timers,
//! then lets the driver wait for datagrams (bounded by the next timer; cut short by the
//! waker when a command arrives) and hands each one to the engine. Events the engine
//! produced go back to the router afterwards. Nothing here is shared with other cores.
//!
//! Peers behind a front (ICE over TCP, `crate::tunnel`) arrive through the core's inbound
//! tunnel queues, drained before the driver's turn; every send goes through a
//! `TunnelEgress`, which hands datagrams for virtual addresses to their front. Fronts that
//! got datagrams are woken once at the end of the turn.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use prism_proto::control as pb;

use crate::engine::Engine;
use crate::io::afxdp::XdpStats;
use crate::io::{Driver, IoStats};
use crate::tunnel::CoreTunnels;

/// Longest sleep in one turn when no timer is due.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Commands applied per turn at most, so a burst of control cannot starve media.
const COMMANDS_PER_TURN: usize = 256;

/// What a worker shares with the router: its load for room placement.
#[derive(Debug, Default)]
pub struct WorkerShared {
    pub load: AtomicUsize,
    pub stop: AtomicBool,
}

pub(crate) fn run<D: Driver>(
    mut driver: D,
    mut engine: Engine,
    commands: Receiver<pb::Command>,
    events: Sender<pb::Event>,
    shared: Arc<WorkerShared>,
    mut tunnels: CoreTunnels,
) {
    tracing::info!(
        core = engine.core,
        local = %driver.local_addr(),
        driver = driver.name(),
        "core started"
    );
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut applied = 0;
        while applied < COMMANDS_PER_TURN {
            let Ok(cmd) = commands.try_recv() else { break };
            applied += 1;
            let stats_request = matches!(cmd.body, Some(pb::command::Body::GetStats(_)));
            let mut ev = engine.handle_command(now, cmd);
            if stats_request {
                fill_io_stats(&mut ev, driver.name(), &driver.stats());
                if let Some(x) = driver.xdp_stats() {
                    fill_xdp_stats(&mut ev, &x);
                }
            }
            if events.send(ev).is_err() {
                return;
            }
        }
        if applied > 0 {
            shared.load.store(engine.load(), Ordering::Relaxed);
        }
        engine.handle_timeout(now, &mut tunnels.egress(driver.egress()));
        let mut wait = engine
            .poll_timeout()
            .map_or(MAX_WAIT, |t| t.saturating_duration_since(now).min(MAX_WAIT));
        if !tunnels.is_empty() {
            tunnels.drain(driver.egress(), &mut |from, data, eg| {
                engine.handle_datagram(now, from, data, eg);
            });
            if tunnels.has_inbound() {
                wait = Duration::ZERO;
            }
        }
        let mut turn_now: Option<Instant> = None;
        let res = driver.turn(
            Some(wait),
            &mut |from: SocketAddr, data: &mut [u8], eg: &mut D::Egress| {
                let now = *turn_now.get_or_insert_with(Instant::now);
                engine.handle_datagram(now, from, data, &mut tunnels.egress(eg));
            },
        );
        tunnels.wake_fronts();
        if let Err(e) = res {
            tracing::error!(core = engine.core, error = %e, "I/O turn failed");
            std::thread::sleep(Duration::from_millis(10));
        }
        for ev in engine.drain_events() {
            // Unsolicited events are advisory: if the router is behind, drop them.
            let _ = events.try_send(ev);
        }
    }
    let _ = driver.flush();
    tracing::info!(core = engine.core, "core stopped");
}

fn fill_io_stats(ev: &mut pb::Event, driver: &str, io: &IoStats) {
    if let Some(pb::event::Body::Stats(s)) = ev.body.as_mut() {
        for c in &mut s.cores {
            c.loop_turns = io.turns;
            c.batches_received = io.recv_batches;
            c.datagrams_received = io.datagrams_received;
            c.batches_sent = io.send_batches;
            c.datagrams_sent = io.datagrams_sent;
            c.driver = driver.to_string();
            c.max_recv_batch = io.max_recv_batch;
            c.max_send_batch = io.max_send_batch;
            c.send_errors = io.send_errors;
            c.queue_full = io.queue_full;
            c.recv_no_buffers = io.recv_no_buffers;
            if let Some(counters) = c.counters.as_mut() {
                if io.recv_shed > 0 {
                    counters.drops.push(pb::DropCount {
                        reason: "io_shed".to_string(),
                        count: io.recv_shed,
                    });
                }
                if io.oversized > 0 {
                    counters.drops.push(pb::DropCount {
                        reason: crate::engine::DropReason::Oversized.name().to_string(),
                        count: io.oversized,
                    });
                }
            }
        }
    }
}

/// The AF_XDP driver's frame-level counters: its drops join the core's drops (`frame_*`
/// reasons), the rest goes in `CoreStats.xdp`.
fn fill_xdp_stats(ev: &mut pb::Event, x: &XdpStats) {
    let Some(pb::event::Body::Stats(s)) = ev.body.as_mut() else {
        return;
    };
    let count = |(reason, count): (&str, u64)| pb::DropCount {
        reason: reason.to_string(),
        count,
    };
    for c in &mut s.cores {
        if let Some(counters) = c.counters.as_mut() {
            counters.drops.extend(x.counters.drops().map(count));
        }
        let k = &x.kernel;
        c.xdp = Some(pb::XdpStats {
            interface: x.interface.clone(),
            queue: x.queue,
            bind_mode: if x.zero_copy { "zerocopy" } else { "copy" }.to_string(),
            passed: x.passed.iter().copied().map(count).collect(),
            kernel_received: x.counters.kernel_received,
            kernel_sent: x.counters.kernel_sent,
            partial_checksums: x.counters.partial_checksums,
            rx_dropped: k.rx_dropped,
            rx_invalid_descs: k.rx_invalid_descs,
            tx_invalid_descs: k.tx_invalid_descs,
            rx_ring_full: k.rx_ring_full,
            rx_fill_ring_empty: k.rx_fill_ring_empty_descs,
            tx_ring_empty: k.tx_ring_empty_descs,
        });
    }
}
