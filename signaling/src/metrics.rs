//! `/metrics` in the Prometheus text format: what signaling knows (rooms, sessions,
//! tracks) and what every core of the media plane counts (packets, bytes, drops by
//! reason, NACKs, retransmissions, keyframe requests, loop turns and batches), and each
//! transport's send-side bandwidth estimate once it has one.

use std::fmt::Write as _;
use std::time::Duration;

use prism_proto::control as pb;

use prism_proto::livekit as lk;

use crate::app::AppState;
use crate::rtc::{Counters, Room};

/// One metric read from a core's counters: name, help, getter.
type CounterMetric = (&'static str, &'static str, fn(&pb::Counters) -> u64);
/// One metric read from a core's I/O statistics.
type CoreMetric = (&'static str, &'static str, fn(&pb::CoreStats) -> u64);

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// What the rooms hold, counted.
#[derive(Clone, Copy, Debug, Default)]
struct Gauges {
    rooms: usize,
    participants: usize,
    publishers: usize,
    tracks: usize,
    transports: usize,
    ingress: usize,
}

impl Gauges {
    fn add(mut self, o: Gauges) -> Gauges {
        self.rooms += o.rooms;
        self.participants += o.participants;
        self.publishers += o.publishers;
        self.tracks += o.tracks;
        self.transports += o.transports;
        self.ingress += o.ingress;
        self
    }
}

fn room_gauges(r: &Room) -> Gauges {
    let ps = &r.participants;
    Gauges {
        rooms: 1,
        participants: ps.len(),
        publishers: ps.iter().filter(|p| !p.tracks.is_empty()).count(),
        tracks: ps.iter().map(|p| p.tracks.len()).sum(),
        transports: ps.iter().map(|p| p.transport_ids().len()).sum(),
        ingress: ps
            .iter()
            .filter(|p| p.kind == lk::participant_info::Kind::Ingress)
            .count(),
    }
}

/// Renders the metrics page: the rooms, each read on its own task, then the media plane's
/// counters (a blocking control request, run off the async threads).
pub async fn render(state: &AppState) -> Result<String, String> {
    let g = state
        .rooms
        .each(room_gauges)
        .await
        .into_iter()
        .fold(Gauges::default(), Gauges::add);
    let control = state.rooms.control().clone();
    let ev = tokio::task::spawn_blocking(move || {
        control.request(
            pb::command::Body::GetStats(pb::GetStats {}),
            Duration::from_secs(5),
        )
    })
    .await
    .map_err(|_| "internal error".to_owned())?
    .map_err(|e| format!("media plane: {e:?}"))?;
    let Some(pb::event::Body::Stats(stats)) = ev.body else {
        return Err("media plane: unexpected answer".into());
    };
    let counters = state.rooms.counters();
    let workers = state.agents.worker_count().await;
    let mut out = String::new();
    let gauges: [(&str, &str, usize); 7] = [
        (
            "prism_agent_workers",
            "Agent workers registered on /agent.",
            workers,
        ),
        ("prism_rooms", "Rooms on this node.", g.rooms),
        (
            "prism_participants",
            "Participants of every kind (LiveKit sessions, WHIP publishers, WHEP viewers).",
            g.participants,
        ),
        (
            "prism_publishers",
            "Participants publishing at least one track.",
            g.publishers,
        ),
        ("prism_tracks", "Published tracks.", g.tracks),
        (
            "prism_ingress_participants",
            "WHIP publishers (participants of kind INGRESS).",
            g.ingress,
        ),
        (
            "prism_transports",
            "WebRTC transports of participants.",
            g.transports,
        ),
    ];
    for (name, help, v) in gauges {
        header(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    // The names of the first LiveKit-only release, kept for dashboards: the same figures.
    let compat: [(&str, &str, usize); 4] = [
        (
            "prism_livekit_rooms",
            "Rooms (same as prism_rooms).",
            g.rooms,
        ),
        (
            "prism_livekit_participants",
            "Participants (same as prism_participants).",
            g.participants,
        ),
        (
            "prism_livekit_tracks",
            "Published tracks (same as prism_tracks).",
            g.tracks,
        ),
        (
            "prism_livekit_transports",
            "WebRTC transports (same as prism_transports).",
            g.transports,
        ),
    ];
    for (name, help, v) in compat {
        header(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let totals: [(&str, &str, u64); 8] = [
        (
            "prism_joins_total",
            "Participants admitted.",
            Counters::get(&counters.joins),
        ),
        (
            "prism_leaves_total",
            "Participants gone.",
            Counters::get(&counters.leaves),
        ),
        (
            "prism_data_relayed_total",
            "Data packets relayed (one per recipient).",
            Counters::get(&counters.data_relayed),
        ),
        (
            "prism_data_refused_total",
            "Data packets from participants not allowed to publish data.",
            Counters::get(&counters.refused_data),
        ),
        (
            "prism_data_malformed_total",
            "Data packets that are not a DataPacket.",
            Counters::get(&counters.malformed_data),
        ),
        (
            "prism_slow_sessions_total",
            "Sessions closed for not draining their signaling queue.",
            Counters::get(&counters.slow_sessions),
        ),
        (
            "prism_media_command_errors_total",
            "Media-plane commands answered with an error.",
            Counters::get(&counters.media_errors),
        ),
        (
            "prism_egress_config_refused_total",
            "Join tokens whose roomConfig.egress was unreadable or refused (joined without it).",
            Counters::get(&counters.refused_egress),
        ),
    ];
    for (name, help, v) in totals {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    header(
        &mut out,
        "prism_media_transports",
        "gauge",
        "Transports the media plane holds, every front end together.",
    );
    let _ = writeln!(out, "prism_media_transports {}", stats.transports.len());

    let counters: Vec<(u32, pb::Counters, &pb::CoreStats)> = stats
        .cores
        .iter()
        .map(|c| (c.core, c.counters.clone().unwrap_or_default(), c))
        .collect();
    let per_core: [CounterMetric; 13] = [
        ("prism_packets_in_total", "Datagrams received.", |c| {
            c.packets_in
        }),
        ("prism_bytes_in_total", "Bytes received.", |c| c.bytes_in),
        ("prism_packets_out_total", "Datagrams sent.", |c| {
            c.packets_out
        }),
        ("prism_bytes_out_total", "Bytes sent.", |c| c.bytes_out),
        (
            "prism_nacks_received_total",
            "NACK packets from subscribers.",
            |c| c.nacks_received,
        ),
        (
            "prism_nacks_sent_total",
            "NACK packets sent to publishers.",
            |c| c.nacks_sent,
        ),
        (
            "prism_retransmits_total",
            "Packets resent from the cache.",
            |c| c.retransmits_sent,
        ),
        (
            "prism_keyframe_requests_total",
            "Keyframe requests sent to publishers.",
            |c| c.keyframe_requests,
        ),
        (
            "prism_rtx_sent_total",
            "Retransmissions sent to subscribers as RTX.",
            |c| c.rtx_sent,
        ),
        (
            "prism_rtx_received_total",
            "RTX packets from publishers unwrapped.",
            |c| c.rtx_received,
        ),
        (
            "prism_rtx_recovered_total",
            "RTX packets from publishers that repaired a loss.",
            |c| c.rtx_recovered,
        ),
        (
            "prism_sender_reports_total",
            "RTCP sender reports sent to subscribers.",
            |c| c.sender_reports_sent,
        ),
        (
            "prism_receiver_reports_total",
            "RTCP receiver reports sent to publishers.",
            |c| c.receiver_reports_sent,
        ),
    ];
    for (name, help, get) in per_core {
        header(&mut out, name, "counter", help);
        for (core, c, _) in &counters {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", get(c));
        }
    }
    header(
        &mut out,
        "prism_dropped_packets_total",
        "counter",
        "Packets dropped, by reason.",
    );
    for (core, c, _) in &counters {
        for d in &c.drops {
            let _ = writeln!(
                out,
                "prism_dropped_packets_total{{core=\"{core}\",reason=\"{}\"}} {}",
                d.reason, d.count
            );
        }
    }
    let io: [CoreMetric; 4] = [
        (
            "prism_loop_turns_total",
            "Turns of each core's loop.",
            |c| c.loop_turns,
        ),
        ("prism_recv_batches_total", "Receive batches.", |c| {
            c.batches_received
        }),
        (
            "prism_send_batches_total",
            "Send batches (one submission each).",
            |c| c.batches_sent,
        ),
        (
            "prism_send_errors_total",
            "Sends the kernel refused.",
            |c| c.send_errors,
        ),
    ];
    for (name, help, get) in io {
        header(&mut out, name, "counter", help);
        for (core, _, cs) in &counters {
            let _ = writeln!(out, "{name}{{core=\"{core}\"}} {}", get(cs));
        }
    }
    xdp(&mut out, &stats.cores);
    fronts(&mut out, &stats.fronts);
    if let Some(c) = &state.cluster {
        c.render_metrics(&mut out);
    }
    header(
        &mut out,
        "prism_transport_bandwidth_estimate_bps",
        "gauge",
        "Send-side bandwidth estimate toward each transport's peer (transport-cc feedback).",
    );
    for t in &stats.transports {
        if let Some(b) = t.bandwidth.as_ref().filter(|b| b.estimate_bps > 0) {
            let _ = writeln!(
                out,
                "prism_transport_bandwidth_estimate_bps{{transport=\"{}\"}} {}",
                t.transport_id, b.estimate_bps
            );
        }
    }
    state.ingresses.render_metrics(&mut out);
    Ok(out)
}

/// The af_xdp driver's frame-level path, for cores that run it (its drops are in
/// `prism_dropped_packets_total`, with `frame_*` reasons).
fn xdp(out: &mut String, cores: &[pb::CoreStats]) {
    let xdp: Vec<(u32, &pb::XdpStats)> = cores
        .iter()
        .filter_map(|c| c.xdp.as_ref().map(|x| (c.core, x)))
        .collect();
    if xdp.is_empty() {
        return;
    }
    header(
        out,
        "prism_xdp_zero_copy",
        "gauge",
        "1 if the core's AF_XDP socket is bound in zero-copy mode, 0 in copy mode.",
    );
    for (core, x) in &xdp {
        let zc = u8::from(x.bind_mode == "zerocopy");
        let _ = writeln!(
            out,
            "prism_xdp_zero_copy{{core=\"{core}\",interface=\"{}\",queue=\"{}\"}} {zc}",
            x.interface, x.queue
        );
    }
    header(
        out,
        "prism_xdp_passed_frames_total",
        "counter",
        "Frames the XDP program passed to the kernel instead of the core's socket, by reason.",
    );
    for (core, x) in &xdp {
        for d in &x.passed {
            let _ = writeln!(
                out,
                "prism_xdp_passed_frames_total{{core=\"{core}\",reason=\"{}\"}} {}",
                d.reason, d.count
            );
        }
    }
    header(
        out,
        "prism_xdp_kernel_path_total",
        "counter",
        "Datagrams of the media port that went through the kernel's socket instead.",
    );
    for (core, x) in &xdp {
        for (dir, n) in [("received", x.kernel_received), ("sent", x.kernel_sent)] {
            let _ = writeln!(
                out,
                "prism_xdp_kernel_path_total{{core=\"{core}\",direction=\"{dir}\"}} {n}"
            );
        }
    }
    header(
        out,
        "prism_xdp_socket_drops_total",
        "counter",
        "The kernel's AF_XDP socket counters (XDP_STATISTICS), by reason.",
    );
    for (core, x) in &xdp {
        for (reason, n) in [
            ("rx_dropped", x.rx_dropped),
            ("rx_ring_full", x.rx_ring_full),
            ("rx_fill_ring_empty", x.rx_fill_ring_empty),
            ("rx_invalid_descs", x.rx_invalid_descs),
            ("tx_invalid_descs", x.tx_invalid_descs),
        ] {
            let _ = writeln!(
                out,
                "prism_xdp_socket_drops_total{{core=\"{core}\",reason=\"{reason}\"}} {n}"
            );
        }
    }
}

/// The user-space fronts (ICE over TCP): connections and datagrams, closes and drops by
/// reason.
fn fronts(out: &mut String, fronts: &[prism_proto::control::FrontStats]) {
    type FrontMetric = (
        &'static str,
        &'static str,
        &'static str,
        fn(&prism_proto::control::FrontStats) -> u64,
    );
    let simple: [FrontMetric; 6] = [
        (
            "prism_front_connections_accepted_total",
            "counter",
            "Connections accepted by each front (ICE over TCP).",
            |f| f.accepted,
        ),
        (
            "prism_front_connections_open",
            "gauge",
            "Connections each front holds now.",
            |f| f.open,
        ),
        (
            "prism_front_datagrams_in_total",
            "counter",
            "Datagrams a front received from its peers.",
            |f| f.datagrams_in,
        ),
        (
            "prism_front_bytes_in_total",
            "counter",
            "Bytes of those datagrams.",
            |f| f.bytes_in,
        ),
        (
            "prism_front_datagrams_out_total",
            "counter",
            "Datagrams a front sent to its peers.",
            |f| f.datagrams_out,
        ),
        (
            "prism_front_bytes_out_total",
            "counter",
            "Bytes of those datagrams.",
            |f| f.bytes_out,
        ),
    ];
    if fronts.is_empty() {
        return;
    }
    for (name, kind, help, get) in simple {
        header(out, name, kind, help);
        for f in fronts {
            let _ = writeln!(out, "{name}{{front=\"{}\"}} {}", f.kind, get(f));
        }
    }
    header(
        out,
        "prism_front_connections_closed_total",
        "counter",
        "Connections a front closed, by reason.",
    );
    for f in fronts {
        for d in &f.closed {
            let _ = writeln!(
                out,
                "prism_front_connections_closed_total{{front=\"{}\",reason=\"{}\"}} {}",
                f.kind, d.reason, d.count
            );
        }
    }
    header(
        out,
        "prism_front_dropped_datagrams_total",
        "counter",
        "Datagrams a front dropped, by reason.",
    );
    for f in fronts {
        for d in &f.drops {
            let _ = writeln!(
                out,
                "prism_front_dropped_datagrams_total{{front=\"{}\",reason=\"{}\"}} {}",
                f.kind, d.reason, d.count
            );
        }
    }
}
