//! Prism on a host behind NAT, as on a cloud VM: its public address is on no interface of
//! its own; a NAT in front maps it to the private one.
//!
//! Three network namespaces: the client's (LiveKit's Python SDK, two participants), the
//! NAT's (forwarding, a DNAT rule from the public address 203.0.113.77 to Prism's private
//! 10.77.2.2, and a filter that drops anything from the client side that was not sent to
//! the public address), and Prism's. Signaling and media both go to the public address.
//!
//! What passing proves: with `--node-ip 203.0.113.77`, both participants publish and
//! decode each other's video and audio through the NAT. Without it (Prism advertises its
//! private address, as it would by default), the same clients get no media: the test can
//! fail, and the advertised address is what made the difference.

mod common;

use std::time::Duration;

use common::netns::{veth, Netns, NsServer};
use common::{client_under, python, serial, token, Client};
use serde_json::Value;

const PUBLIC: &str = "203.0.113.77";
const PRIVATE: &str = "10.77.2.2";

/// The three namespaces, wired.
struct Site {
    client: Netns,
    _nat: Netns,
    server: Netns,
}

fn site(tag: &str) -> Site {
    let client = Netns::new(&format!("{tag}-c"));
    let nat = Netns::new(&format!("{tag}-n"));
    let server = Netns::new(&format!("{tag}-s"));
    veth(&client, "c0", "10.77.1.2/24", &nat, "n0", "10.77.1.1/24");
    veth(
        &nat,
        "n1",
        "10.77.2.1/24",
        &server,
        "s0",
        &format!("{PRIVATE}/24"),
    );
    client.exec(&["ip", "route", "add", "default", "via", "10.77.1.1"]);
    server.exec(&["ip", "route", "add", "default", "via", "10.77.2.1"]);
    nat.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    nat.nft(&format!(
        "table ip prism_nat {{
           chain prerouting_nat {{ type nat hook prerouting priority -100; ip daddr {PUBLIC} dnat to {PRIVATE}; }}
           chain forward_filter {{
             type filter hook forward priority 0; policy accept;
             ct status dnat accept;
             iifname \"n0\" drop;
           }}
         }}"
    ));
    Site {
        client,
        _nat: nat,
        server,
    }
}

fn participant(site: &Site, py: &std::path::Path, room: &str, who: &str, secs: u64) -> Client {
    let duration = secs.to_string();
    let url = format!("ws://{PUBLIC}:7880");
    let tok = token(room, who, &[]);
    client_under(
        &site.client.prefix(),
        py,
        who,
        "lk_client.py",
        &[
            "--url",
            &url,
            "--token",
            &tok,
            "--publish",
            "--want-frames",
            "30",
            "--peers",
            "1",
            "--duration",
            &duration,
        ],
    )
    // The SDK gives up on a transport that never connects only after about a minute;
    // without media within the duration, the client is stopped there.
    .timeout(Duration::from_secs(secs + 5))
}

fn most(v: &Value) -> u64 {
    v.as_object()
        .map(|m| m.values().filter_map(Value::as_u64).max().unwrap_or(0))
        .unwrap_or(0)
}

fn skip() -> Option<std::path::PathBuf> {
    if let Some(why) = Netns::available() {
        eprintln!("NAT test skipped: {why}");
        return None;
    }
    python("livekit")
}

#[test]
fn behind_nat_media_flows_through_the_advertised_address() {
    let Some(py) = skip() else { return };
    let _g = serial();
    let site = site("nat");
    let _prism = NsServer::start(
        &site.server,
        &["--media-ip", "0.0.0.0", "--node-ip", PUBLIC],
    );
    let a = participant(&site, &py, "nat", "alice", 60);
    let b = participant(&site, &py, "nat", "bob", 60);
    let (a, b) = (a.finish(), b.finish());
    for (me, o) in [("alice", &a), ("bob", &b)] {
        assert_eq!(o.summary["connected"], true, "{me}: {o}");
        assert!(
            most(&o.summary["video_frames"]) >= 30,
            "{me} decoded too little video through the NAT: {o}"
        );
        assert!(
            most(&o.summary["audio_frames"]) > 0,
            "{me} got no audio: {o}"
        );
    }
}

#[test]
fn behind_nat_without_the_node_ip_no_media_flows() {
    let Some(py) = skip() else { return };
    let _g = serial();
    let site = site("nonat");
    // The private address is advertised: the client cannot reach it through the NAT.
    let _prism = NsServer::start(&site.server, &["--media-ip", PRIVATE]);
    let a = participant(&site, &py, "nonat", "alice", 20);
    let b = participant(&site, &py, "nonat", "bob", 20);
    let (a, b) = (a.finish(), b.finish());
    for (me, o) in [("alice", &a), ("bob", &b)] {
        assert_eq!(
            most(&o.summary["video_frames"]),
            0,
            "{me} got media without the advertised address: the NAT is not in the way: {o}"
        );
    }
}
