//! `/metrics` in the Prometheus text format: what signaling knows (rooms, sessions,
//! tracks) and what every core of the media plane counts (packets, bytes, drops by
//! reason, NACKs, retransmissions, keyframe requests, loop turns and batches), and each
//! transport's send-side bandwidth estimate once it has one.

use std::fmt::Write as _;
use std::time::Duration;

use prism_proto::control as pb;

use crate::whip::Whip;

/// One metric read from a core's counters: name, help, getter.
type CounterMetric = (&'static str, &'static str, fn(&pb::Counters) -> u64);
/// One metric read from a core's I/O statistics.
type CoreMetric = (&'static str, &'static str, fn(&pb::CoreStats) -> u64);

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// What the LiveKit hub holds, counted (see `livekit::Hub`).
#[derive(Clone, Copy, Debug, Default)]
pub struct HubGauges {
    pub rooms: usize,
    pub participants: usize,
    pub tracks: usize,
    pub transports: usize,
}

/// Renders the metrics page. Blocking: asks the media plane for its counters.
pub fn render(whip: &Whip, hub: HubGauges) -> Result<String, String> {
    let ev = whip
        .control
        .request(
            pb::command::Body::GetStats(pb::GetStats {}),
            Duration::from_secs(5),
        )
        .map_err(|e| format!("media plane: {e:?}"))?;
    let Some(pb::event::Body::Stats(stats)) = ev.body else {
        return Err("media plane: unexpected answer".into());
    };
    let (rooms, sessions, publishers, tracks) = {
        let r = whip
            .rooms
            .lock()
            .map_err(|_| "registry poisoned".to_string())?;
        let rooms: Vec<_> = r.iter().collect();
        (
            rooms.len(),
            rooms.iter().map(|r| r.sessions.len()).sum::<usize>(),
            rooms
                .iter()
                .map(|r| r.sessions.values().filter(|s| s.publisher).count())
                .sum::<usize>(),
            rooms.iter().map(|r| r.tracks.len()).sum::<usize>(),
        )
    };
    let mut out = String::new();
    header(&mut out, "prism_rooms", "gauge", "Rooms on this node.");
    let _ = writeln!(out, "prism_rooms {rooms}");
    header(
        &mut out,
        "prism_participants",
        "gauge",
        "Sessions (publishers and viewers).",
    );
    let _ = writeln!(out, "prism_participants {sessions}");
    header(
        &mut out,
        "prism_publishers",
        "gauge",
        "Publishing sessions.",
    );
    let _ = writeln!(out, "prism_publishers {publishers}");
    header(&mut out, "prism_tracks", "gauge", "Published tracks.");
    let _ = writeln!(out, "prism_tracks {tracks}");
    let lk: [(&str, &str, usize); 4] = [
        ("prism_livekit_rooms", "LiveKit rooms.", hub.rooms),
        (
            "prism_livekit_participants",
            "LiveKit participants.",
            hub.participants,
        ),
        (
            "prism_livekit_tracks",
            "Tracks published by LiveKit participants.",
            hub.tracks,
        ),
        (
            "prism_livekit_transports",
            "WebRTC transports of LiveKit participants.",
            hub.transports,
        ),
    ];
    for (name, help, v) in lk {
        header(&mut out, name, "gauge", help);
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
    Ok(out)
}
