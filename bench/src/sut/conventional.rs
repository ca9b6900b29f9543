//! The conventional forwarder: what a typical Rust SFU does per packet.
//!
//! A tokio `UdpSocket` on a current-thread runtime, one `recv_from` per packet, the
//! subscriber list looked up by SSRC under a lock and cloned (so no lock is held across an
//! await), and for each subscriber a freshly allocated copy of the packet with its SSRC and
//! sequence number rewritten, sent with its own `send_to`. No batching, no zero-copy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};

use super::routes::RouteCommand;
use super::server;

/// One subscriber of an SSRC.
#[derive(Clone, Copy, Debug)]
struct Subscriber {
    to: SocketAddr,
    out_ssrc: u32,
    seq_offset: u16,
}

type Routes = Arc<RwLock<HashMap<u32, Vec<Subscriber>>>>;

/// Runs the conventional forwarder until SIGTERM/SIGINT.
pub fn serve(port: u16, control: &Path) -> Result<()> {
    let routes: Routes = Arc::default();
    let r = routes.clone();
    let _control = server::listen(control, move |c| {
        let Ok(mut map) = r.write() else { return };
        match c {
            RouteCommand::Route { ssrc, to, out_ssrc } => {
                map.entry(ssrc).or_default().push(Subscriber {
                    to,
                    out_ssrc,
                    seq_offset: out_ssrc as u16,
                })
            }
            RouteCommand::Unroute { ssrc, to } => {
                if let Some(v) = map.get_mut(&ssrc) {
                    v.retain(|s| s.to != to);
                }
            }
        }
    })?;
    let stop = super::reflector::stop_flag()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(async move {
        let std = std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
        let _ = socket2::SockRef::from(&std).set_recv_buffer_size(8 << 20);
        let _ = socket2::SockRef::from(&std).set_send_buffer_size(8 << 20);
        std.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(std)?;
        let mut buf = vec![0u8; 2048];
        let mut ticker = tokio::time::interval(std::time::Duration::from_millis(100));
        loop {
            tokio::select! {
                r = socket.recv_from(&mut buf) => {
                    let (n, _from) = r?;
                    forward(&socket, &routes, &buf[..n]).await;
                }
                _ = ticker.tick() => {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return Ok::<(), anyhow::Error>(());
                    }
                }
            }
        }
    })
}

async fn forward(socket: &tokio::net::UdpSocket, routes: &Routes, packet: &[u8]) {
    if packet.len() < 12 {
        return;
    }
    let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
    let subs = match routes.read() {
        Ok(map) => match map.get(&ssrc) {
            Some(v) => v.clone(),
            None => return,
        },
        Err(_) => return,
    };
    let seq = u16::from_be_bytes([packet[2], packet[3]]);
    for s in subs {
        let mut out = packet.to_vec();
        out[2..4].copy_from_slice(&seq.wrapping_add(s.seq_offset).to_be_bytes());
        out[8..12].copy_from_slice(&s.out_ssrc.to_be_bytes());
        let _ = socket.send_to(&out, s.to).await;
    }
}
