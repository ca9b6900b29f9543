//! `prism-bench load`: steady media load on one `prism serve` node, for as long as asked.
//!
//! Why: some checks need a node that is busy in the way the cluster measures it (packets
//! per second in and out of its media cores), such as placement under load (a loaded node
//! must not get new rooms). This puts real WebRTC traffic through the node rather than
//! faking its figures.
//!
//! How: the recording bench's load side, unpinned and unmeasured: one WHIP publisher of N
//! VP8 tracks (ICE, DTLS-SRTP, paced frames, keyframe requests honoured) and V WHEP
//! viewers of every track, all in one thread. The node forwards about `tracks × fps × 4`
//! packets per second in and `viewers` times that out. One JSON line is printed once
//! every peer is connected (`{"event":"ready",…}`), and one with the counts at the end.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::record::http;
use crate::record::load::{ssrc_of, Load};
use crate::record::peer::{video_offer, Local, Peer};

const USAGE: &str = "\
prism-bench load: a WHIP publisher and WHEP viewers on one prism serve node (dev keys)

OPTIONS:
    --http ADDR        the node's HTTP address, ip:port (required)
    --room NAME        the room (default prism-bench-load)
    --tracks N         VP8 tracks published (default 2)
    --viewers N        WHEP viewers of every track (default 10)
    --fps F            frames per second of every track (default 30; 4 packets a frame)
    --secs S           how long to send (default 60)
";

/// `prism-bench load …`.
pub fn main(args: &[String]) -> Result<()> {
    let mut http_addr: Option<SocketAddr> = None;
    let mut room = "prism-bench-load".to_string();
    let (mut tracks, mut viewers, mut fps, mut secs) = (2usize, 10usize, 30.0f64, 60.0f64);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--http" => http_addr = Some(val()?.parse().context("--http ip:port")?),
            "--room" => room = val()?.clone(),
            "--tracks" => tracks = val()?.parse()?,
            "--viewers" => viewers = val()?.parse()?,
            "--fps" => fps = val()?.parse()?,
            "--secs" => secs = val()?.parse()?,
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    let http_addr = http_addr.context("--http is required")?;
    if tracks == 0 || fps <= 0.0 {
        bail!("--tracks and --fps must be positive");
    }
    let local = Local::new()?;
    let ssrcs: Vec<u32> = (0..tracks).map(ssrc_of).collect();
    let answer = http::post_sdp(
        http_addr,
        "whip",
        &room,
        "load-publisher",
        &video_offer(&local, tracks, &ssrcs),
    )?;
    let publisher = Peer::connect(&local, &answer).context("publisher")?;
    let mut peers = Vec::new();
    for i in 0..viewers {
        let local = Local::new()?;
        let answer = http::post_sdp(
            http_addr,
            "whep",
            &room,
            &format!("load-viewer-{i}"),
            &video_offer(&local, tracks, &[]),
        )?;
        peers.push(Peer::connect(&local, &answer).with_context(|| format!("viewer {i}"))?);
    }
    let mut load = Load::new(publisher, tracks, fps, peers)?;
    println!(
        "{}",
        serde_json::json!({"event": "ready", "room": room, "tracks": tracks, "viewers": viewers})
    );
    let start = Instant::now();
    load.run(true, start + Duration::from_secs_f64(secs))?;
    let c = load.counts;
    let took = start.elapsed().as_secs_f64().max(0.001);
    println!(
        "{}",
        serde_json::json!({
            "event": "done",
            "sent": c.sent,
            "received": c.received,
            "sent_pps": (c.sent as f64 / took).round(),
            "received_pps": (c.received as f64 / took).round(),
            "plis": c.plis,
        })
    );
    Ok(())
}
