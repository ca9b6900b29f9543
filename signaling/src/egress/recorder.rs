//! The recorder's I/O: one thread per recording, off the forwarding cores, with a UDP
//! socket on loopback that the forwarder's plain transport sends to.
//!
//! Why a thread per recording rather than a pool or a process: a recording costs a few
//! hundred packets a second and one file; the thread blocks on its socket with a short
//! timeout, drives the sans-IO [`Session`], and writes the file itself, so a slow or full
//! disk stalls only that recording, never a forwarding core or a room's task. The
//! forwarder cannot tell it from any other plain-RTP subscriber.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::session::{Container, Outcome, Session, Sink, StreamSpec};
use super::webm::Patch;

/// How long a receive waits, which bounds how late timers run.
const TICK: Duration = Duration::from_millis(10);

/// A file on local storage (none for HLS, which writes whole files).
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
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(TICK))?;
    let addr = socket.local_addr()?;
    let (tx, rx) = mpsc::channel();
    let forwarder = if forwarder.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], forwarder.port()))
    } else {
        forwarder
    };
    std::thread::Builder::new()
        .name("recorder".into())
        .spawn(move || {
            let session = Session::new(
                Instant::now(),
                &spec.streams,
                spec.container,
                FileSink { file },
            );
            let outcome = run(session, &socket, forwarder, &rx);
            on_end(outcome);
        })?;
    Ok(Recorder { addr, stop: tx })
}

fn run(
    mut session: Session<FileSink>,
    socket: &UdpSocket,
    forwarder: SocketAddr,
    stop: &mpsc::Receiver<()>,
) -> Outcome {
    let mut buf = vec![0u8; 2048];
    loop {
        match stop.try_recv() {
            Ok(()) | Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            if from.port() == forwarder.port() {
                session.on_datagram(Instant::now(), wall_now(), &buf[..n]);
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
    let (outcome, sink) = session.finish(wall_now());
    if let Some(f) = &sink.file {
        let _ = f.sync_all();
    }
    outcome
}
