//! Recording (LiveKit's Egress): tracks of a room written to files without transcoding.
//!
//! An egress is a hidden subscriber of its room. The room (`rtc::egress`) gives it a
//! plain RTP transport on loopback with one down track per recorded track, so the
//! forwarder treats it like any subscriber (NACKs answered from its cache, keyframes
//! asked of the publisher, sender reports translated), and a recorder thread
//! ([`recorder`]) turns what arrives into files ([`session`], [`depack`], [`output`]:
//! [`webm`], [`ogg`], [`mp4`], [`hls`]).
//!
//! This module keeps every egress's [`lk::EgressInfo`] for ListEgress and StopEgress,
//! which outlive the room and the recorder: a recording that ended (stopped, its room
//! closed, its disk full) is still listed with its status, files and error.
//!
//! A recording ends when it is stopped (StopEgress), when its room closes, when what it
//! records goes away (a participant egress when the participant leaves, a track egress
//! when its tracks are unpublished), or when its recorder fails (a full disk, a panic):
//! the recorder always finalizes its file and reports, so no egress stays active with
//! nobody recording. Rooms can also start recordings by themselves ([`auto`]).

pub mod auto;
pub mod avc;
pub mod depack;
pub mod hls;
pub mod mp4;
pub mod ogg;
pub mod output;
pub mod recorder;
pub mod session;
pub mod webm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prism_proto::livekit as lk;
use tokio::sync::oneshot;

use crate::rtc::RoomHandle;
use session::Outcome;

/// Where recordings go unless a request names an absolute path (`recording.directory`).
pub const DEFAULT_DIRECTORY: &str = "recordings";

#[derive(Debug, Default)]
struct Entry {
    info: lk::EgressInfo,
    room: Option<RoomHandle>,
    waiters: Vec<oneshot::Sender<lk::EgressInfo>>,
}

#[derive(Debug)]
struct Inner {
    directory: PathBuf,
    entries: Mutex<HashMap<String, Entry>>,
}

/// Every egress of the node, running or ended. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Egresses {
    inner: Arc<Inner>,
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn is_active(info: &lk::EgressInfo) -> bool {
    use lk::EgressStatus as S;
    matches!(
        info.status(),
        S::EgressStarting | S::EgressActive | S::EgressEnding
    )
}

impl Egresses {
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                directory: directory.into(),
                entries: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The local directory relative file paths are under.
    pub fn directory(&self) -> &Path {
        &self.inner.directory
    }

    /// A request's path, templated as LiveKit's are (`{room_name}`, `{track_id}`,
    /// `{publisher_identity}`, `{time}`; `default` if empty), under the directory unless
    /// absolute.
    pub fn template(&self, requested: &str, vars: &[(&str, &str)], default: &str) -> PathBuf {
        let mut p = if requested.is_empty() {
            default.to_owned()
        } else {
            requested.to_owned()
        };
        let time = chrono_like_now();
        for (k, v) in vars.iter().chain(&[("time", time.as_str())]) {
            p = p.replace(&format!("{{{k}}}"), v);
        }
        let path = PathBuf::from(p);
        if path.is_absolute() {
            path
        } else {
            self.inner.directory.join(path)
        }
    }

    /// A request's file path ([`Egresses::template`]), with the container's extension
    /// added if it has none.
    pub fn file_path(&self, requested: &str, vars: &[(&str, &str)], ext: &str) -> PathBuf {
        let mut path = self.template(requested, vars, "{room_name}-{time}");
        if path.extension().is_none() {
            path.set_extension(ext);
        }
        path
    }

    /// Registers a started egress.
    pub(crate) fn begin(&self, info: lk::EgressInfo, room: RoomHandle) {
        self.entries().insert(
            info.egress_id.clone(),
            Entry {
                info,
                room: Some(room),
                waiters: Vec::new(),
            },
        );
    }

    /// The recorder finished: the file is final (complete, or cut short by `error`).
    pub(crate) fn ended(&self, id: &str, outcome: &Outcome) {
        let room = {
            let mut entries = self.entries();
            let Some(e) = entries.get_mut(id) else {
                return;
            };
            let now = now_ns();
            let info = &mut e.info;
            info.ended_at = now;
            info.updated_at = now;
            let duration = (outcome.duration * 1e9) as i64;
            for f in &mut info.file_results {
                f.ended_at = now;
                f.duration = duration;
                f.size = outcome.bytes as i64;
            }
            if let Some(f) = info.file_results.first() {
                info.result = Some(lk::egress_info::Result::File(f.clone()));
            }
            for s in &mut info.segment_results {
                s.ended_at = now;
                s.duration = duration;
                s.size = outcome.bytes as i64;
                s.segment_count = outcome.segments as i64;
            }
            if let Some(s) = info.segment_results.first() {
                info.result = Some(lk::egress_info::Result::Segments(s.clone()));
            }
            match &outcome.error {
                Some(err) => {
                    info.set_status(lk::EgressStatus::EgressFailed);
                    info.error = err.clone();
                    info.error_code = 500;
                }
                None => info.set_status(lk::EgressStatus::EgressComplete),
            }
            tracing::info!(
                egress = %id,
                status = ?info.status(),
                bytes = outcome.bytes,
                duration = outcome.duration,
                frames = outcome.frames,
                dropped = outcome.dropped,
                segments = outcome.segments,
                error = %info.error,
                "egress ended"
            );
            for w in e.waiters.drain(..) {
                let _ = w.send(info.clone());
            }
            e.room.take()
        };
        // The room forgets it (its transport goes), if it is still open.
        if let Some(room) = room {
            let id = id.to_owned();
            room.run(move |r| r.egress_ended(&id));
        }
    }

    /// Egresses, optionally of one room or one id, optionally only active ones.
    pub fn list(&self, room: &str, id: &str, active: bool) -> Vec<lk::EgressInfo> {
        let mut v: Vec<lk::EgressInfo> = self
            .entries()
            .values()
            .map(|e| &e.info)
            .filter(|i| room.is_empty() || i.room_name == room)
            .filter(|i| id.is_empty() || i.egress_id == id)
            .filter(|i| !active || is_active(i))
            .cloned()
            .collect();
        v.sort_by_key(|i| i.started_at);
        v
    }

    pub fn get(&self, id: &str) -> Option<lk::EgressInfo> {
        self.entries().get(id).map(|e| e.info.clone())
    }

    /// Asks a running egress to stop; the answer is its info once the file is final.
    /// Refused with the egress's info if it is not running (empty if unknown).
    pub(crate) fn stop(
        &self,
        id: &str,
    ) -> Result<(RoomHandle, oneshot::Receiver<lk::EgressInfo>), Box<lk::EgressInfo>> {
        let mut entries = self.entries();
        let Some(e) = entries.get_mut(id) else {
            return Err(Box::default());
        };
        let Some(room) = e.room.clone().filter(|_| is_active(&e.info)) else {
            return Err(Box::new(e.info.clone()));
        };
        e.info.set_status(lk::EgressStatus::EgressEnding);
        e.info.updated_at = now_ns();
        let (tx, rx) = oneshot::channel();
        e.waiters.push(tx);
        Ok((room, rx))
    }

    /// A running egress is ending by itself (what it records went away): listed as
    /// `EGRESS_ENDING` until its recorder has finalized the file.
    pub(crate) fn ending(&self, id: &str) {
        if let Some(e) = self.entries().get_mut(id).filter(|e| is_active(&e.info)) {
            e.info.set_status(lk::EgressStatus::EgressEnding);
            e.info.updated_at = now_ns();
        }
    }

    /// Waits (blocking, at most `limit`) until no egress is running: on shutdown, after
    /// the rooms have stopped theirs, so every file is final before the process exits.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if !self.entries().values().any(|e| is_active(&e.info)) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// UTC time as `YYYY-MM-DDTHHMMSS`, for `{time}` in file names.
fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(
        e: &Egresses,
        id: &str,
    ) -> tokio::sync::mpsc::UnboundedReceiver<crate::rtc::room::RoomMsg> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let room = RoomHandle {
            tx,
            name: crate::rtc::RoomName::new("r".to_owned()),
        };
        e.begin(
            lk::EgressInfo {
                egress_id: id.into(),
                status: lk::EgressStatus::EgressActive as i32,
                file_results: vec![lk::FileInfo::default()],
                ..Default::default()
            },
            room,
        );
        rx
    }

    #[test]
    fn a_recorder_that_failed_ends_its_egress_failed_and_tells_the_room() {
        let e = Egresses::new("/rec");
        let mut room = registered(&e, "EG_1");
        assert_eq!(e.list("", "", true).len(), 1);
        e.ended(
            "EG_1",
            &Outcome {
                bytes: 10,
                error: Some("the recorder failed: panicked: boom".into()),
                ..Outcome::default()
            },
        );
        let i = e.get("EG_1").unwrap();
        assert_eq!(i.status(), lk::EgressStatus::EgressFailed);
        assert!(i.error.contains("panicked: boom"), "{}", i.error);
        assert_eq!(i.file_results[0].size, 10);
        assert!(e.list("", "", true).is_empty());
        assert!(
            room.try_recv().is_ok(),
            "the room is told (its transport goes)"
        );
        assert!(e.wait_idle(Duration::ZERO));
    }

    #[test]
    fn an_egress_whose_subject_went_is_ending_then_complete() {
        let e = Egresses::new("/rec");
        let _room = registered(&e, "EG_2");
        e.ending("EG_2");
        assert_eq!(
            e.get("EG_2").unwrap().status(),
            lk::EgressStatus::EgressEnding
        );
        assert!(!e.wait_idle(Duration::ZERO), "still finalizing");
        e.ended("EG_2", &Outcome::default());
        assert_eq!(
            e.get("EG_2").unwrap().status(),
            lk::EgressStatus::EgressComplete
        );
        // An ended egress is not made ending again.
        e.ending("EG_2");
        assert_eq!(
            e.get("EG_2").unwrap().status(),
            lk::EgressStatus::EgressComplete
        );
    }

    #[test]
    fn paths_are_templated_and_placed_under_the_directory() {
        let e = Egresses::new("/rec");
        let p = e.file_path(
            "{room_name}/{track_id}",
            &[("room_name", "r"), ("track_id", "TR_1")],
            "ogg",
        );
        assert_eq!(p, PathBuf::from("/rec/r/TR_1.ogg"));
        let p = e.file_path("/tmp/x.webm", &[], "ogg");
        assert_eq!(p, PathBuf::from("/tmp/x.webm"));
        let p = e.file_path("", &[("room_name", "r")], "webm");
        assert!(p.to_string_lossy().starts_with("/rec/r-20"), "{p:?}");
    }
}
