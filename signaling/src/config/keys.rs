//! Which configuration keys are Prism's, which are LiveKit's, and what happens to each.
//!
//! A LiveKit operator should be able to start Prism on the `livekit.yaml` they already
//! have. So before the file is read into [`Config`](super::Config), its tree is sifted:
//! - a key Prism implements is kept, and the typed structs check its value;
//! - a key LiveKit has and Prism does not is removed, with one warning line naming it (a
//!   whole section LiveKit has, such as `signal_relay`, gets one line per key inside it);
//! - any other key is an error, because a misspelt setting would otherwise be silently
//!   ignored — unless strict checking is off (LiveKit's `--disable-strict-config`), then
//!   it is a warning too.
//!
//! The lists are data, not code, so that implementing a LiveKit key is moving one line
//! from [`LIVEKIT_ONLY`] to [`PRISM`]; a unit test keeps [`PRISM`] and the structs in step.

use serde_norway::{Mapping, Value};

/// Every key Prism reads, as dotted paths. A path names a leaf (its value is checked by
/// the typed structs, whatever its shape); its parents are sections.
pub(super) const PRISM: &[&str] = &[
    "port",
    "bind_address",
    "bind_addresses",
    "keys",
    "key_file",
    "log_level",
    "development",
    "rtc.ip",
    "rtc.node_ip",
    "rtc.udp_port",
    "rtc.tcp_port",
    "rtc.port_range_start",
    "rtc.port_range_end",
    "rtc.use_external_ip",
    "rtc.advertise_internal_ip",
    "rtc.stun_servers",
    "rtc.turn_servers",
    "rtc.use_ice_lite",
    "rtc.packet_buffer_size_video",
    "rtc.packet_buffer_size_audio",
    "rtc.cores",
    "rtc.driver",
    "rtc.interface",
    "rtc.xdp_first_queue",
    "rtc.xdp_bind",
    "logging.level",
    "logging.json",
    "room.empty_timeout",
    "room.departure_timeout",
    "room.enable_remote_unmute",
    "room.max_participants",
    "ingress.rtmp_port",
    "ingress.rtmp_base_url",
    "ingress.whip_base_url",
    "recording.directory",
    "turn.enabled",
    "turn.domain",
    "turn.cert_file",
    "turn.key_file",
    "turn.tls_port",
    "turn.udp_port",
    "turn.relay_range_start",
    "turn.relay_range_end",
    "turn.external_tls",
    "turn.ttl_seconds",
    "turn.per_user_relay_allocation_limit",
    "turn.allow_restricted_peer_cidrs",
    "turn.deny_peer_cidrs",
    "turn.bind_addresses",
    "redis.address",
    "redis.username",
    "redis.password",
    "redis.db",
    "redis.use_tls",
    "redis.sentinel_master_name",
    "redis.sentinel_addresses",
    "redis.sentinel_username",
    "redis.sentinel_password",
    "redis.cluster_addresses",
    "cluster.secret",
    "cluster.internal_address",
    "cluster.capacity_pps",
    "cluster.region",
    "cluster.drain_timeout",
    "cluster.relay_ip",
    "cluster.relay_srtp",
    "cluster.span_rooms",
];

/// LiveKit's keys that Prism accepts and ignores (from LiveKit's `pkg/config/config.go`
/// and `config-sample.yaml`). A path that is a section covers every key inside it.
pub(super) const LIVEKIT_ONLY: &[&str] = &[
    "prometheus_port",
    "prometheus",
    "debug_handler",
    "debug_handler_port",
    "redis.tls",
    "redis.dial_timeout",
    "redis.read_timeout",
    "redis.write_timeout",
    "redis.max_redirects",
    "redis.pool_timeout",
    "redis.pool_size",
    "audio",
    "video",
    "sip",
    "webhook",
    "node_selector",
    "region",
    "signal_relay",
    "psrpc",
    "limit",
    "agents",
    "metric",
    "trace",
    "node_stats",
    "enable_data_tracks",
    "enable_participant_data_blob",
    "api",
    "rtc.skip_external_ip_validation",
    "rtc.external_ip_only",
    "rtc.enable_loopback_candidate",
    "rtc.interfaces",
    "rtc.ips",
    "rtc.use_mdns",
    "rtc.strict_acks",
    "rtc.batch_io",
    "rtc.congestion_control",
    "rtc.allow_tcp_fallback",
    "rtc.tcp_fallback_rtt_threshold",
    "rtc.allow_udp_unstable_fallback",
    "rtc.pli_throttle",
    "rtc.packet_buffer_size",
    "rtc.data_channel_max_buffered_amount",
    "rtc.datachannel_slow_threshold",
    "rtc.datachannel_lossy_target_latency",
    "rtc.datachannel_data_track_target_latency",
    "rtc.enable_warp",
    "rtc.reconnect_on_publication_error",
    "rtc.reconnect_on_subscription_error",
    "rtc.reconnect_on_data_channel_error",
    "rtc.forward_stats",
    "rtc.enable_rtp_stream_restart_detection",
    "logging.pion_level",
    "logging.sample",
    "logging.component_levels",
    "room.auto_create",
    "room.enabled_codecs",
    "room.playout_delay",
    "room.sync_streams",
    "room.create_room_timeout",
    "room.create_room_attempts",
    "room.enable_full_room_in_webhooks",
    "room.update_batch_target_size",
    "room.max_metadata_size",
    "room.max_room_name_length",
    "room.max_participant_identity_length",
    "room.room_configurations",
];

/// What sifting found wrong: keys that are nobody's.
#[derive(Debug, Default)]
pub(super) struct Sifted {
    /// One line per ignored key.
    pub warnings: Vec<String>,
    /// Keys neither Prism's nor LiveKit's (errors when strict).
    pub unknown: Vec<String>,
}

/// Removes every key Prism does not implement from `root` (a YAML mapping), and reports
/// what it removed. Unknown keys are removed too and listed in `unknown`.
pub(super) fn sift(root: &mut Value, strict: bool) -> Sifted {
    let mut out = Sifted::default();
    if let Value::Mapping(m) = root {
        sift_map(m, "", strict, &mut out);
    }
    out
}

fn sift_map(m: &mut Mapping, prefix: &str, strict: bool, out: &mut Sifted) {
    let keys: Vec<Value> = m.keys().cloned().collect();
    for key in keys {
        let name = match &key {
            Value::String(s) => s.clone(),
            other => serde_norway::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        };
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}.{name}")
        };
        if PRISM.contains(&path.as_str()) {
            continue;
        }
        if is_section(PRISM, &path) {
            if let Some(Value::Mapping(inner)) = m.get_mut(&key) {
                sift_map(inner, &path, strict, out);
                continue;
            }
            // A Prism section with a scalar in it: leave it to the typed structs to refuse.
            continue;
        }
        let value = m.remove(&key).unwrap_or(Value::Null);
        if covered(LIVEKIT_ONLY, &path) {
            let mut leaves = Vec::new();
            leaf_paths(&value, &path, &mut leaves);
            for leaf in leaves {
                out.warnings.push(format!(
                    "config key `{leaf}` is LiveKit's and Prism does not implement it: ignored"
                ));
            }
        } else if strict {
            out.unknown.push(path);
        } else {
            out.warnings.push(format!(
                "config key `{path}` is neither Prism's nor LiveKit's: ignored \
                 (strict checking is off)"
            ));
        }
    }
}

/// Whether `path` is a strict parent of some listed path.
fn is_section(list: &[&str], path: &str) -> bool {
    list.iter()
        .any(|p| p.len() > path.len() && p.starts_with(path) && p.as_bytes()[path.len()] == b'.')
}

/// Whether `path` is listed, or lies inside a listed section.
fn covered(list: &[&str], path: &str) -> bool {
    list.iter().any(|p| {
        *p == path
            || (path.len() > p.len() && path.starts_with(p) && path.as_bytes()[p.len()] == b'.')
    })
}

/// The dotted paths of the leaves under `v` (a sequence counts as one leaf).
fn leaf_paths(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            for (k, inner) in m {
                let name = match k {
                    Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                leaf_paths(inner, &format!("{path}.{name}"), out);
            }
        }
        _ => out.push(path.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> Value {
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn livekit_keys_are_removed_with_a_warning_each() {
        let mut v = tree(
            "port: 1\nrtc:\n  udp_port: 2\n  congestion_control:\n    enabled: true\n    \
             allow_pause: false\n  use_mdns: true\nsignal_relay:\n  retry_timeout: 30s\n\
             region: x\n",
        );
        let s = sift(&mut v, true);
        assert!(s.unknown.is_empty(), "{:?}", s.unknown);
        let names: Vec<&str> = s
            .warnings
            .iter()
            .map(|w| w.split('`').nth(1).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "rtc.congestion_control.enabled",
                "rtc.congestion_control.allow_pause",
                "rtc.use_mdns",
                "signal_relay.retry_timeout",
                "region"
            ]
        );
        assert_eq!(v, tree("port: 1\nrtc:\n  udp_port: 2\n"));
    }

    #[test]
    fn keys_that_are_nobodys_are_unknown_unless_strictness_is_off() {
        let mut v = tree("prot: 1\nrtc:\n  node_iq: 1.2.3.4\n");
        let s = sift(&mut v, true);
        assert_eq!(s.unknown, ["prot", "rtc.node_iq"]);
        assert!(s.warnings.is_empty());
        let mut v = tree("prot: 1\n");
        let s = sift(&mut v, false);
        assert!(s.unknown.is_empty());
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].contains("`prot`"));
    }

    #[test]
    fn no_key_is_both_prisms_and_ignored() {
        for p in PRISM {
            assert!(!covered(LIVEKIT_ONLY, p), "{p} is in both lists");
        }
    }
}
