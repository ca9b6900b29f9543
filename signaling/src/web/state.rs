//! `GET /api/state`: one JSON snapshot of what this node holds, for the status page.
//!
//! Two sources, read one after the other, not atomically: the rooms (participants of every
//! kind, tracks, subscriptions; each room read on its own task, so each room's snapshot is
//! consistent), and the media plane's counters per core and per
//! transport (`GetStats`, a blocking control request, run off the async threads). The
//! counters are totals since start: the page derives rates from two snapshots and the
//! `now_ms` they carry, so the server keeps no history.

use std::collections::HashMap;
use std::time::Duration;

use prism_proto::control as pb;
use prism_proto::livekit as lk;
use serde_json::{json, Value};

use crate::app::AppState;
use crate::rtc::node::candidates;
use crate::rtc::{Participant, Room};

/// A participant as its room knows it, with its transports to look up in the stats.
struct PartRow {
    info: Value,
    transports: Vec<u64>,
}

struct RoomRow {
    info: Value,
    participants: Vec<PartRow>,
}

fn enum_name<E: TryFrom<i32> + std::fmt::Debug>(v: i32) -> String {
    E::try_from(v).map_or_else(|_| v.to_string(), |e| format!("{e:?}").to_lowercase())
}

fn participant_row(p: &Participant) -> PartRow {
    let tracks: Vec<Value> = p
        .tracks
        .iter()
        .map(|t| {
            let i = &t.info;
            json!({
                "sid": i.sid,
                "name": i.name,
                "kind": enum_name::<lk::TrackType>(i.r#type),
                "source": enum_name::<lk::TrackSource>(i.source),
                "mime": i.mime_type,
                "muted": i.muted,
                "simulcast": i.simulcast,
                "width": i.width,
                "height": i.height,
                "layers": i.layers.iter().map(|l| json!({
                    "quality": enum_name::<lk::VideoQuality>(l.quality),
                    "width": l.width,
                    "height": l.height,
                    "bitrate": l.bitrate,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    PartRow {
        info: json!({
            "sid": p.sid.as_str(),
            "identity": p.identity.as_str(),
            "name": p.name,
            "state": enum_name::<lk::participant_info::State>(p.state as i32),
            "kind": enum_name::<lk::participant_info::Kind>(p.kind as i32),
            "joined_at_ms": p.joined_at_ms,
            "client_protocol": p.client_protocol,
            "tracks": tracks,
            "subscribed": p.subscribed_track_sids(),
        }),
        transports: p.transport_ids().iter().map(|t| t.0).collect(),
    }
}

fn room_row(r: &Room) -> RoomRow {
    RoomRow {
        info: json!({
            "name": r.name.as_str(),
            "sid": r.sid,
            "created_at_ms": r.created_at,
            "metadata": r.metadata,
            "max_participants": r.max_participants,
        }),
        participants: r.participants.iter().map(participant_row).collect(),
    }
}

fn counters_json(c: &pb::Counters) -> Value {
    let drops: serde_json::Map<String, Value> = c
        .drops
        .iter()
        .map(|d| (d.reason.clone(), json!(d.count)))
        .collect();
    json!({
        "packets_in": c.packets_in,
        "bytes_in": c.bytes_in,
        "packets_out": c.packets_out,
        "bytes_out": c.bytes_out,
        "nacks_received": c.nacks_received,
        "nacks_sent": c.nacks_sent,
        "retransmits": c.retransmits_sent,
        "keyframe_requests": c.keyframe_requests,
        "dropped": c.drops.iter().map(|d| d.count).sum::<u64>(),
        "drops": drops,
    })
}

/// Adds `b`'s counters into `a` (a participant's transports, summed).
fn add_counters(a: &mut pb::Counters, b: &pb::Counters) {
    a.packets_in += b.packets_in;
    a.bytes_in += b.bytes_in;
    a.packets_out += b.packets_out;
    a.bytes_out += b.bytes_out;
    a.nacks_received += b.nacks_received;
    a.nacks_sent += b.nacks_sent;
    a.retransmits_sent += b.retransmits_sent;
    a.keyframe_requests += b.keyframe_requests;
    for d in &b.drops {
        match a.drops.iter_mut().find(|x| x.reason == d.reason) {
            Some(x) => x.count += d.count,
            None => a.drops.push(d.clone()),
        }
    }
}

/// The whole snapshot.
pub async fn snapshot(state: &AppState) -> Result<Value, String> {
    // Read before the rooms: a node whose hold on its rooms lapsed (cluster) shows them
    // fenced until its next check has closed those another node took.
    let fenced = state.cluster.as_ref().is_some_and(|c| c.lapsed());
    let mut rooms = state.rooms.each(room_row).await;
    rooms.sort_by(|a, b| a.info["name"].as_str().cmp(&b.info["name"].as_str()));
    let control = state.rooms.control().clone();
    let stats = tokio::task::spawn_blocking(move || {
        control.request(
            pb::command::Body::GetStats(pb::GetStats {}),
            Duration::from_secs(5),
        )
    })
    .await
    .map_err(|_| "internal error".to_owned())?
    .map_err(|e| format!("media plane: {e:?}"))?;
    let Some(pb::event::Body::Stats(stats)) = stats.body else {
        return Err("media plane: unexpected answer".into());
    };
    let by_transport: HashMap<u64, &pb::TransportStats> = stats
        .transports
        .iter()
        .map(|t| (t.transport_id, t))
        .collect();

    let mut n_participants = 0;
    let mut n_tracks = 0;
    let rooms: Vec<Value> = rooms
        .into_iter()
        .map(|r| {
            let parts: Vec<Value> = r
                .participants
                .into_iter()
                .map(|p| {
                    n_participants += 1;
                    n_tracks += p.info["tracks"].as_array().map_or(0, Vec::len);
                    let mut sum = pb::Counters::default();
                    let mut remote = None;
                    for t in p.transports.iter().filter_map(|id| by_transport.get(id)) {
                        if let Some(c) = &t.counters {
                            add_counters(&mut sum, c);
                        }
                        if remote.is_none() && !t.remote.is_empty() {
                            remote = Some(t.remote.clone());
                        }
                    }
                    let mut v = p.info;
                    v["transports"] = json!(p.transports.len());
                    v["remote"] = json!(remote);
                    v["media"] = counters_json(&sum);
                    v
                })
                .collect();
            let mut v = r.info;
            v["fenced"] = json!(fenced);
            v["participants"] = Value::Array(parts);
            v
        })
        .collect();
    let addrs = state.forwarder.core_addrs();
    let cores: Vec<Value> = stats
        .cores
        .iter()
        .map(|c| {
            let local = addrs.get(c.core as usize).copied();
            let advertised: Vec<String> = local
                .map(|a| candidates(&state.candidate_ips, a))
                .unwrap_or_default()
                .iter()
                .map(|a| a.to_string())
                .collect();
            json!({
                "core": c.core,
                "local": local.map(|a| a.to_string()),
                "advertised": advertised,
                "driver": c.driver,
                "rooms": c.rooms,
                "transports": c.transports,
                "tracks": c.tracks,
                "down_tracks": c.down_tracks,
                "loop_turns": c.loop_turns,
                "max_recv_batch": c.max_recv_batch,
                "max_send_batch": c.max_send_batch,
                "send_errors": c.send_errors,
                "counters": counters_json(&c.counters.clone().unwrap_or_default()),
            })
        })
        .collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(json!({
        "now_ms": now_ms,
        "dev": state.dev,
        "totals": {
            "rooms": rooms.len(),
            "participants": n_participants,
            "tracks": n_tracks,
        },
        "rooms": rooms,
        "cores": cores,
    }))
}
