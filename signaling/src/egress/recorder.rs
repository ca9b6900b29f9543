//! The recorder's I/O: one thread per recording, off the forwarding cores, with a UDP
//! socket on loopback that the forwarder's plain transport sends to.
//!
//! Why a thread per recording rather than a pool or a process: a recording costs a few
//! hundred packets a second and one file; the thread drives the sans-IO [`Session`] and
//! writes the file itself, so a slow or full disk stalls only that recording, never a
//! forwarding core or a room's task. The forwarder cannot tell it from any other
//! plain-RTP subscriber.
//!
//! The thread never blocks on its socket: it sleeps a [`TICK`], then takes everything
//! that arrived. A reader blocked in `recv` is woken by every datagram, and waking a
//! thread on another CPU costs the *sending* forwarding core an inter-processor
//! interrupt per packet (`prism-bench record` measured the core's CPU per delivered
//! packet 1.13–1.24× with recorders blocking, against 10 recordings); a sleeping reader
//! costs it nothing. Recording needs no lower latency than the tick.
//!
//! A panic in the recording loop (a bug in a muxer, say) is caught on the recorder's own
//! thread: what the session holds is finalized if it can be, and the egress ends failed
//! with the panic's message, so it never stays active with nobody recording. The room
//! and every other recording carry on.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::net::{SocketAddr, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::session::{Container, Outcome, Session, Sink, StreamSpec};
use super::webm::Patch;

/// How long the recorder sleeps between takes of its socket, which bounds how late its
/// timers run.
const TICK: Duration = Duration::from_millis(10);
/// Datagrams taken from the socket per tick at most (the rest wait for the next tick).
const MAX_PER_TICK: usize = 4096;

/// A file on local storage (none for HLS, which writes whole files), synced to disk when
/// the recording lets go of it (at the end, or while a panicking recorder unwinds).
#[derive(Debug)]
pub struct FileSink {
    file: Option<File>,
}

impl FileSink {
    fn file(&mut self) -> std::io::Result<&mut File> {
        self.file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("this recording has no single file"))
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            let _ = f.sync_all();
        }
    }
}

impl Sink for FileSink {
    /// Writes all of `bytes` or nothing: a write cut short (a full disk) is truncated
    /// away, so the file ends at its last whole cluster, fragment or page.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let file = self.file()?;
        let at = file.stream_position()?;
        let r = file.write_all(bytes);
        if r.is_err() {
            let _ = file.set_len(at);
            let _ = file.seek(SeekFrom::Start(at));
        }
        r
    }

    fn patch(&mut self, p: &Patch) -> std::io::Result<()> {
        let file = self.file()?;
        let end = file.stream_position()?;
        file.seek(SeekFrom::Start(p.offset))?;
        file.write_all(&p.bytes)?;
        file.seek(SeekFrom::Start(end))?;
        Ok(())
    }

    /// A temporary file beside `path`, renamed over it once whole: readers of a
    /// playlist see the old one or the new one. A failed write removes the temporary.
    fn file(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let r = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    }
}

/// Wall-clock seconds in NTP's era (as sender reports carry them).
pub fn wall_now() -> f64 {
    const NTP_UNIX_OFFSET: f64 = 2_208_988_800.0;
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
        + NTP_UNIX_OFFSET
}

/// A running recorder: its socket's address (the plain transport's remote) and how to
/// stop it.
#[derive(Debug)]
pub struct Recorder {
    pub addr: SocketAddr,
    stop: mpsc::Sender<()>,
}

impl Recorder {
    /// Asks the recorder to finish its file; `on_end` runs when it has.
    pub fn stop(&self) {
        let _ = self.stop.send(());
    }
}

/// What a recorder needs to start.
#[derive(Debug)]
pub struct RecorderSpec {
    pub path: PathBuf,
    pub streams: Vec<StreamSpec>,
    pub container: Container,
}

/// Opens the file and the socket, and starts the thread. `forwarder` is where RTCP goes
/// (the room's core). `on_end` gets the outcome once the file is finalized.
pub fn start(
    spec: RecorderSpec,
    forwarder: SocketAddr,
    on_end: Box<dyn FnOnce(Outcome) + Send>,
) -> std::io::Result<Recorder> {
    if let Some(dir) = spec.path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // HLS writes its segments and playlists whole; everything else is one file.
    let file = match spec.container {
        Container::Hls(_) => None,
        _ => Some(File::create(&spec.path)?),
    };
    let single = file.is_some();
    let path = spec.path.clone();
    // A recorder that failed before it could count its single file's bytes reports the
    // file's size (HLS counts what its segments hold).
    let on_end = Box::new(move |mut o: Outcome| {
        if single && o.error.is_some() && o.bytes == 0 {
            o.bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        }
        on_end(o);
    });
    spawn(
        FileSink { file },
        spec.streams,
        spec.container,
        forwarder,
        on_end,
    )
}

/// Starts a recorder thread writing into `sink`.
fn spawn<S: Sink + Send + 'static>(
    sink: S,
    streams: Vec<StreamSpec>,
    container: Container,
    forwarder: SocketAddr,
    on_end: Box<dyn FnOnce(Outcome) + Send>,
) -> std::io::Result<Recorder> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_nonblocking(true)?;
    let addr = socket.local_addr()?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("recorder".into())
        .spawn(move || {
            let session = Session::new(Instant::now(), &streams, container, sink);
            let outcome = run_guarded(session, |s| run(s, &socket, forwarder, &rx));
            on_end(outcome);
        })?;
    Ok(Recorder { addr, stop: tx })
}

/// Runs `body` (the recording loop), then finalizes the file. A panic in either ends the
/// recording with the panic's message as its error instead of unwinding through the
/// thread: after one in `body`, the file is still finalized if that can be done.
fn run_guarded<S: Sink>(mut session: Session<S>, body: impl FnOnce(&mut Session<S>)) -> Outcome {
    let panicked = catch_unwind(AssertUnwindSafe(|| body(&mut session)))
        .err()
        .map(|p| panic_message(p.as_ref()));
    let finished = catch_unwind(AssertUnwindSafe(move || session.finish(wall_now()).0));
    let failed = |why: String| format!("the recorder failed: {why}");
    match (finished, panicked) {
        (Ok(outcome), None) => outcome,
        (Ok(mut outcome), Some(why)) => {
            tracing::error!(error = %why, "recorder panicked; its file was finalized");
            outcome.error = Some(failed(why));
            outcome
        }
        (Err(p), first) => {
            let why = first.unwrap_or_else(|| panic_message(p.as_ref()));
            tracing::error!(error = %why, "recorder panicked; its file could not be finalized");
            Outcome {
                error: Some(failed(why)),
                ..Outcome::default()
            }
        }
    }
}

/// The text of a panic's payload (a `&str` or a `String`, as `panic!` makes them).
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let text = p
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    format!("panicked: {text}")
}

fn run<S: Sink>(
    session: &mut Session<S>,
    socket: &UdpSocket,
    forwarder: SocketAddr,
    stop: &mpsc::Receiver<()>,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        match stop.recv_timeout(TICK) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        // Everything that arrived during the tick, stamped with one arrival time.
        let (now, wall) = (Instant::now(), wall_now());
        for _ in 0..MAX_PER_TICK {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    if from.port() == forwarder.port() {
                        session.on_datagram(now, wall, &buf[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        session.poll(Instant::now(), wall_now());
        for p in session.drain_transmit() {
            let _ = socket.send_to(&p, forwarder);
        }
        if session.failed().is_some() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::session::MediaCodec;
    use std::sync::{Arc, Mutex};

    /// A whole file written: its path and bytes.
    type Whole = (PathBuf, Vec<u8>);

    /// A sink in memory that panics on chosen writes (appends and whole files, counted
    /// together from 0), as a bug in a muxer or a sink would.
    #[derive(Clone)]
    struct Panicky {
        data: Arc<Mutex<Vec<u8>>>,
        files: Arc<Mutex<Vec<Whole>>>,
        writes: Arc<Mutex<usize>>,
        panic_on: fn(usize) -> bool,
    }

    impl Panicky {
        fn new(panic_on: fn(usize) -> bool) -> Self {
            Self {
                data: Arc::default(),
                files: Arc::default(),
                writes: Arc::default(),
                panic_on,
            }
        }

        /// Counts a write; panics if it is one of the chosen.
        fn count(&self) {
            let n = {
                let mut w = self.writes.lock().unwrap_or_else(|p| p.into_inner());
                *w += 1;
                *w - 1
            };
            assert!(!(self.panic_on)(n), "write {n} went wrong");
        }
    }

    impl Sink for Panicky {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.count();
            self.data
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(bytes);
            Ok(())
        }
        fn patch(&mut self, _: &Patch) -> std::io::Result<()> {
            Ok(())
        }
        fn file(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
            self.count();
            self.files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((path.to_path_buf(), bytes.to_vec()));
            Ok(())
        }
    }

    /// Records ~3 s of Opus sent from a socket standing for the forwarder into `sink`
    /// (an Ogg file); the outcome, once the recorder has ended by itself or within 2 s of
    /// being told.
    fn record_opus(sink: Panicky) -> Outcome {
        record_opus_into(sink, Container::Ogg)
    }

    fn record_opus_into(sink: Panicky, container: Container) -> Outcome {
        let forwarder = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tx, rx) = mpsc::channel();
        let rec = spawn(
            sink,
            vec![StreamSpec {
                ssrc: 7,
                codec: MediaCodec::Opus,
                clock_rate: 48_000,
            }],
            container,
            forwarder.local_addr().unwrap(),
            Box::new(move |o| {
                let _ = tx.send(o);
            }),
        )
        .unwrap();
        for i in 0..150u16 {
            let mut p = vec![0x80, 0x80 | 111];
            p.extend_from_slice(&i.to_be_bytes());
            p.extend_from_slice(&(u32::from(i) * 960).to_be_bytes());
            p.extend_from_slice(&7u32.to_be_bytes());
            p.extend_from_slice(&[31 << 3, 1, 2, 3, 4, 5, 6, 7]);
            // A recorder that has already ended no longer reads: sends may fail.
            let _ = forwarder.send_to(&p, rec.addr);
        }
        if let Ok(o) = rx.recv_timeout(Duration::from_secs(2)) {
            return o;
        }
        rec.stop();
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the recorder reports its end")
    }

    #[test]
    fn a_panic_while_recording_fails_the_egress_and_the_file_is_finalized() {
        // The second page panics; the sink works again for the final pages.
        let sink = Panicky::new(|n| n == 2);
        let data = sink.data.clone();
        let o = record_opus(sink);
        let err = o.error.unwrap_or_default();
        assert!(
            err.contains("the recorder failed: panicked: write 2 went wrong"),
            "{err}"
        );
        let data = data.lock().unwrap().clone();
        assert_eq!(&data[..4], b"OggS");
        // Finalized: the last page carries the end-of-stream flag.
        let last = data.windows(4).rposition(|w| w == b"OggS").expect("a page");
        assert_eq!(data[last + 5] & 0x04, 0x04, "end of stream");
        assert_eq!(o.bytes, data.len() as u64);
    }

    #[test]
    fn a_panic_while_finalizing_still_ends_the_egress() {
        // Every write after the headers panics, the final ones too.
        let sink = Panicky::new(|n| n >= 2);
        let o = record_opus(sink);
        let err = o.error.unwrap_or_default();
        assert!(
            err.starts_with("the recorder failed: panicked: write 2 went wrong"),
            "{err}"
        );
    }

    #[test]
    fn a_panic_while_writing_an_hls_segment_fails_the_egress_and_the_playlist_is_ended() {
        use crate::egress::hls::HlsSpec;
        // Writes: the init segment (0), the first media segment (1) panics.
        let sink = Panicky::new(|n| n == 1);
        let files = sink.files.clone();
        let data = sink.data.clone();
        let o = record_opus_into(
            sink,
            Container::Hls(HlsSpec {
                prefix: "/r/seg".into(),
                playlist: "/r/index.m3u8".into(),
                live_playlist: None,
                segment_duration: 1.0,
            }),
        );
        let err = o.error.unwrap_or_default();
        assert!(
            err.contains("the recorder failed: panicked: write 1 went wrong"),
            "{err}"
        );
        let files = files.lock().unwrap().clone();
        assert!(data.lock().unwrap().is_empty(), "HLS appends to no file");
        assert_eq!(files[0].0, Path::new("/r/seg_init.mp4"));
        // Finalized: the last write is the playlist, ended.
        let (path, last) = files.last().expect("files written");
        assert_eq!(path, Path::new("/r/index.m3u8"));
        let last = String::from_utf8_lossy(last);
        assert!(last.ends_with("#EXT-X-ENDLIST\n"), "{last}");
    }

    #[test]
    fn panic_payloads_become_messages() {
        let p = catch_unwind(|| panic!("at {}", 3)).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "panicked: at 3");
        let p = catch_unwind(|| std::panic::panic_any(5u8)).unwrap_err();
        assert_eq!(
            panic_message(p.as_ref()),
            "panicked: a panic without a message"
        );
    }
}
