//! Offer latency: fresh participants, one at a time, each joining a quiet room, sending a
//! data-only publisher offer and timing the answer (from queueing the offer to reading the
//! answer on the WebSocket). Run idle, then with a busy neighbour room, so that the two
//! distributions of one build can be compared.

use std::net::SocketAddr;

use anyhow::{anyhow, Result};

use super::joins::Churn;
use super::measure::Measured;
use super::peer::LocalPeer;
use super::sdp::{data_offer, parse_answer};
use super::session::Session;
use super::token::dev_token;

async fn one(
    http: SocketAddr,
    room: &str,
    i: usize,
    local: &LocalPeer,
    m: &mut Measured,
) -> Result<()> {
    let (mut s, _) = Session::join(http, &dev_token(room, &format!("{room}-p{i}"))).await?;
    let offer = data_offer(&local.offer, 2000 + i as u64);
    let r = s.offer(offer, 1).await;
    let (answer, latency) = match r {
        Ok(a) => a,
        Err(e) => {
            s.leave().await;
            return Err(e);
        }
    };
    parse_answer(&answer).map_err(|e| anyhow!("{e}"))?;
    m.events += 1;
    m.latency.record(latency);
    s.leave().await;
    Ok(())
}

/// `n` offers in `room`; with `busy`, a neighbour room churns meanwhile.
pub async fn offers(http: SocketAddr, tag: &str, n: usize, busy: Option<usize>) -> Measured {
    let mut m = Measured::default();
    // One certificate for every offer: no DTLS follows, only its fingerprint is sent.
    let local = match LocalPeer::new() {
        Ok(l) => l,
        Err(e) => {
            m.fail(e);
            return m;
        }
    };
    let churn = busy.map(|workers| Churn::start(http, &format!("{tag}-busy"), workers));
    if churn.is_some() {
        // Let the neighbour reach its stride before measuring.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let room = format!("{tag}-quiet");
    let t0 = std::time::Instant::now();
    for i in 0..n {
        if let Err(e) = one(http, &room, i, &local, &mut m).await {
            m.fail(format!("offer {i}: {e:#}"));
        }
    }
    m.span = t0.elapsed();
    if let Some(c) = churn {
        let (joins, failures, secs) = c.stop().await;
        m.extra.insert("neighbour_joins".into(), joins as f64);
        m.extra.insert("neighbour_failures".into(), failures as f64);
        m.extra.insert("neighbour_s".into(), secs);
    }
    m
}
