//! Joins: many signaling sessions (no media) joining at once, and a neighbour that keeps
//! joining and leaving while another room is measured.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Barrier};

use super::measure::Measured;
use super::session::Session;
use super::token::dev_token;

/// `rooms × per_room` sessions released together by a barrier; the rate is joins over the
/// time from the release to the last `JoinResponse`. Every session leaves afterwards.
pub async fn burst(http: SocketAddr, tag: &str, rooms: usize, per_room: usize) -> Measured {
    let n = rooms * per_room;
    let barrier = Arc::new(Barrier::new(n));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        // Minted before the release: only the join itself is timed.
        let tok = dev_token(&format!("{tag}-r{}", i % rooms), &format!("{tag}-p{i}"));
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let released = Instant::now();
            let r = Session::join(http, &tok).await;
            (released, Instant::now(), r)
        }));
    }
    let mut m = Measured::default();
    let mut sessions = Vec::with_capacity(n);
    let (mut first, mut last) = (None::<Instant>, None::<Instant>);
    for t in tasks {
        let Ok((released, done, r)) = t.await else {
            m.fail("join task panicked");
            continue;
        };
        first = Some(first.map_or(released, |f| f.min(released)));
        match r {
            Ok((s, latency)) => {
                m.events += 1;
                m.latency.record(latency);
                last = Some(last.map_or(done, |l| l.max(done)));
                sessions.push(s);
            }
            Err(e) => m.fail(format!("join: {e:#}")),
        }
    }
    if let (Some(f), Some(l)) = (first, last) {
        m.span = l.saturating_duration_since(f);
    }
    leave_all(sessions).await;
    m
}

/// Every session leaves, concurrently.
pub async fn leave_all(sessions: Vec<Session>) {
    let leaving: Vec<_> = sessions
        .into_iter()
        .map(|s| tokio::spawn(s.leave()))
        .collect();
    for l in leaving {
        let _ = l.await;
    }
}

/// A busy neighbour: `workers` sessions each joining `room` and leaving at once, in a loop,
/// until told to stop. Returns the joins and the time they took.
#[derive(Debug)]
pub struct Churn {
    stop: watch::Sender<bool>,
    joins: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Churn {
    pub fn start(http: SocketAddr, room: &str, workers: usize) -> Churn {
        let (stop, stopped) = watch::channel(false);
        let joins = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let tasks = (0..workers)
            .map(|w| {
                let (stopped, joins, failures) = (stopped.clone(), joins.clone(), failures.clone());
                let room = room.to_string();
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !*stopped.borrow() {
                        let tok = dev_token(&room, &format!("{room}-w{w}-{i}"));
                        i += 1;
                        match Session::join(http, &tok).await {
                            Ok((s, _)) => {
                                joins.fetch_add(1, Ordering::Relaxed);
                                s.leave().await;
                            }
                            Err(_) => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Churn {
            stop,
            joins,
            failures,
            started: Instant::now(),
            tasks,
        }
    }

    /// Stops the loop; returns (joins, failures, seconds).
    pub async fn stop(self) -> (u64, u64, f64) {
        let _ = self.stop.send(true);
        let secs = self.started.elapsed().as_secs_f64();
        let joins = self.joins.load(Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        (joins, self.failures.load(Ordering::Relaxed), secs)
    }
}
