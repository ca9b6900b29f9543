//! The server side of one RTMP publishing connection, sans-IO: bytes from the socket go in
//! ([`Session::receive`]), bytes for the socket ([`Session::take_output`]) and
//! [`Event`]s come out. The owner decides whether a publish is allowed (stream key check)
//! and calls [`Session::accept_publish`] or [`Session::reject_publish`]; everything else
//! (the handshake, protocol control, the command exchange) is answered here, so unit tests
//! drive whole OBS and FFmpeg sessions from byte fixtures without a socket.
//!
//! Handshake: C0 must be version 3 (6, RTMPE, is refused as unsupported). C1 is accepted
//! with or without the Flash Player 9 digest (a non-zero version in bytes 4–7); S1 carries
//! a zero version, which makes digest-capable clients (librtmp in OBS, FFmpeg) fall back to
//! the plain handshake, and S2 echoes C1.
//!
//! Commands answered as Adobe's media servers do, in the order OBS and FFmpeg send them:
//! `connect` (Window Acknowledgement Size, Set Peer Bandwidth, Set Chunk Size, `_result`
//! with `NetConnection.Connect.Success`), `releaseStream` and `FCPublish` (`_result`),
//! `createStream` (`_result` with stream id 1), `publish` (Stream Begin and `onStatus`
//! `NetStream.Publish.Start`, or `NetStream.Publish.BadName` with a reason when refused),
//! `FCUnpublish`/`deleteStream`/`closeStream` (the publish ends).

use std::collections::VecDeque;

use super::amf0::{self, Amf};
use super::chunk::{self, ChunkReader};

/// Size of C1/C2/S1/S2.
pub const HANDSHAKE_SIZE: usize = 1536;
/// The chunk size this server writes with (announced by Set Chunk Size).
const OUT_CHUNK_SIZE: usize = 4096;
/// The acknowledgement window and peer bandwidth the server announces.
const WINDOW: u32 = 2_500_000;
/// The message stream id `createStream` returns.
const STREAM_ID: u32 = 1;

/// What a session tells its owner.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `connect`: the application (the URL path's first segment), its tcUrl and the
    /// client's flashVer (OBS: "FMLE/3.0 (compatible; FMSc/1.0)", FFmpeg: "FMLE/3.0 …").
    Connected {
        app: String,
        tc_url: String,
        flash_ver: String,
    },
    /// `publish`: answer with [`Session::accept_publish`] or [`Session::reject_publish`].
    Publish { app: String, stream_key: String },
    /// An FLV video tag body (after a publish was accepted).
    Video { timestamp: u32, data: Vec<u8> },
    /// An FLV audio tag body.
    Audio { timestamp: u32, data: Vec<u8> },
    /// `@setDataFrame`/`onMetaData`: the encoder's description of the stream.
    Metadata(Amf),
    /// The client ended the publish (`FCUnpublish`, `deleteStream`, `closeStream`).
    Unpublished,
}

/// Why a connection is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// Not an RTMP handshake (garbage, HTTP, TLS, RTMPE).
    Handshake(String),
    /// A chunk stream or command that cannot be read.
    Protocol(String),
}

impl SessionError {
    /// The reason label it is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            SessionError::Handshake(_) => "bad_handshake",
            SessionError::Protocol(_) => "protocol_error",
        }
    }
}

impl std::fmt::Display for SessionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionError::Handshake(m) => write!(f, "RTMP handshake: {m}"),
            SessionError::Protocol(m) => write!(f, "RTMP protocol: {m}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for C0 and C1.
    Hello,
    /// S0–S2 sent, waiting for C2.
    Echo,
    Chunks,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Publish {
    None,
    /// `publish` received, the owner has not answered.
    Asked,
    Live,
}

/// One RTMP server connection.
#[derive(Debug)]
pub struct Session {
    phase: Phase,
    input: Vec<u8>,
    output: Vec<u8>,
    events: VecDeque<Event>,
    reader: ChunkReader,
    s1_random: Vec<u8>,
    app: String,
    publish: Publish,
    publish_stream: u32,
    /// Bytes received, for acknowledgements.
    received: u64,
    acked: u64,
    peer_window: u32,
}

impl Session {
    /// A session whose S1 carries `random` (1528 bytes; shorter is padded with zeros).
    pub fn new(random: &[u8]) -> Self {
        let mut s1_random = random.to_vec();
        s1_random.resize(HANDSHAKE_SIZE - 8, 0);
        Self {
            phase: Phase::Hello,
            input: Vec::new(),
            output: Vec::new(),
            events: VecDeque::new(),
            reader: ChunkReader::new(),
            s1_random,
            app: String::new(),
            publish: Publish::None,
            publish_stream: STREAM_ID,
            received: 0,
            acked: 0,
            peer_window: 0,
        }
    }

    /// Whether the handshake is complete.
    pub fn handshaken(&self) -> bool {
        self.phase == Phase::Chunks
    }

    /// Whether a publish was accepted and media flows.
    pub fn publishing(&self) -> bool {
        self.publish == Publish::Live
    }

    /// Bytes for the socket, in order.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Feeds bytes from the socket. An error means the connection must close (after the
    /// output is written, if any).
    pub fn receive(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        self.received += bytes.len() as u64;
        self.input.extend_from_slice(bytes);
        loop {
            match self.phase {
                Phase::Hello => {
                    let Some(&c0) = self.input.first() else {
                        return Ok(());
                    };
                    match c0 {
                        3 => {}
                        6 | 8 => {
                            return Err(SessionError::Handshake(format!(
                                "encrypted RTMP (RTMPE, version {c0}) is not supported"
                            )))
                        }
                        v => {
                            return Err(SessionError::Handshake(format!(
                                "version byte {v:#04x} is not RTMP's 3 (not an RTMP client?)"
                            )))
                        }
                    }
                    if self.input.len() < 1 + HANDSHAKE_SIZE {
                        return Ok(());
                    }
                    let c1: Vec<u8> = self.input.drain(..1 + HANDSHAKE_SIZE).skip(1).collect();
                    self.output.push(3);
                    self.output.extend_from_slice(&[0; 8]);
                    self.output.extend_from_slice(&self.s1_random);
                    // S2 echoes C1: its time, then our time of reading it (zero), then
                    // its random bytes.
                    self.output.extend_from_slice(&c1[..4]);
                    self.output.extend_from_slice(&[0; 4]);
                    self.output.extend_from_slice(&c1[8..]);
                    self.phase = Phase::Echo;
                }
                Phase::Echo => {
                    if self.input.len() < HANDSHAKE_SIZE {
                        return Ok(());
                    }
                    self.input.drain(..HANDSHAKE_SIZE);
                    self.phase = Phase::Chunks;
                }
                Phase::Chunks => {
                    self.read_chunks()?;
                    self.acknowledge();
                    return Ok(());
                }
            }
        }
    }

    fn read_chunks(&mut self) -> Result<(), SessionError> {
        let mut at = 0;
        let result = loop {
            match self.reader.read_chunk(&self.input[at..]) {
                Ok(None) => break Ok(()),
                Ok(Some((used, msg))) => {
                    at += used;
                    if let Some(m) = msg {
                        if let Err(e) = self.on_message(m) {
                            break Err(e);
                        }
                    }
                }
                Err(e) => break Err(SessionError::Protocol(e.0)),
            }
        };
        self.input.drain(..at);
        result
    }

    /// Sends an Acknowledgement each time the peer's window has been received.
    fn acknowledge(&mut self) {
        if self.peer_window > 0 && self.received - self.acked >= u64::from(self.peer_window) {
            self.acked = self.received;
            let seq = (self.received as u32).to_be_bytes();
            self.control(3, &seq);
        }
    }

    fn control(&mut self, type_id: u8, payload: &[u8]) {
        chunk::write_message(&mut self.output, 2, OUT_CHUNK_SIZE, type_id, 0, 0, payload);
    }

    fn command(&mut self, stream_id: u32, values: &[Amf]) {
        let body = amf0::encode_all(values);
        let csid = if stream_id == 0 { 3 } else { 5 };
        chunk::write_message(
            &mut self.output,
            csid,
            OUT_CHUNK_SIZE,
            20,
            stream_id,
            0,
            &body,
        );
    }

    fn on_message(&mut self, m: chunk::Message) -> Result<(), SessionError> {
        let be32 = |p: &[u8]| -> Result<u32, SessionError> {
            p.get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| SessionError::Protocol("truncated control message".into()))
        };
        match m.type_id {
            1 => self
                .reader
                .set_chunk_size(be32(&m.payload)?)
                .map_err(|e| SessionError::Protocol(e.0))?,
            2 => self.reader.abort(be32(&m.payload)?),
            5 => self.peer_window = be32(&m.payload)?,
            3 | 4 | 6 => {}
            8 | 9 if self.publish == Publish::Live => {
                let data = m.payload;
                self.events.push_back(if m.type_id == 8 {
                    Event::Audio {
                        timestamp: m.timestamp,
                        data,
                    }
                } else {
                    Event::Video {
                        timestamp: m.timestamp,
                        data,
                    }
                });
            }
            8 | 9 => {}
            15 | 18 => {
                let body = if m.type_id == 15 {
                    m.payload.get(1..).unwrap_or_default()
                } else {
                    &m.payload
                };
                let values = amf0::decode_all(body)
                    .map_err(|e| SessionError::Protocol(format!("data message: {e}")))?;
                let mut it = values.into_iter().skip_while(|v| {
                    matches!(v.as_str(), Some("@setDataFrame") | Some("onMetaData"))
                });
                if let Some(meta) = it.next() {
                    if self.publish == Publish::Live {
                        self.events.push_back(Event::Metadata(meta));
                    }
                }
            }
            17 | 20 => {
                let body = if m.type_id == 17 {
                    m.payload.get(1..).unwrap_or_default()
                } else {
                    &m.payload
                };
                let values = amf0::decode_all(body)
                    .map_err(|e| SessionError::Protocol(format!("command: {e}")))?;
                self.on_command(m.stream_id, &values)?;
            }
            // Anything else (shared objects, aggregates) is not used by encoders.
            _ => {}
        }
        Ok(())
    }

    fn on_command(&mut self, stream_id: u32, v: &[Amf]) -> Result<(), SessionError> {
        let name = v.first().and_then(Amf::as_str).unwrap_or("");
        let txn = v.get(1).and_then(Amf::as_f64).unwrap_or(0.0);
        match name {
            "connect" => {
                let obj = v.get(2).cloned().unwrap_or(Amf::Null);
                let text = |k: &str| obj.get(k).and_then(Amf::as_str).unwrap_or("").to_owned();
                self.app = text("app").trim_end_matches('/').to_owned();
                let encoding = obj
                    .get("objectEncoding")
                    .and_then(Amf::as_f64)
                    .unwrap_or(0.0);
                self.control(5, &WINDOW.to_be_bytes());
                let mut bw = WINDOW.to_be_bytes().to_vec();
                bw.push(2);
                self.control(6, &bw);
                self.control(1, &(OUT_CHUNK_SIZE as u32).to_be_bytes());
                self.command(
                    0,
                    &[
                        Amf::String("_result".into()),
                        Amf::Number(txn),
                        Amf::object(&[
                            ("fmsVer", Amf::String("FMS/3,0,1,123".into())),
                            ("capabilities", Amf::Number(31.0)),
                        ]),
                        Amf::object(&[
                            ("level", Amf::String("status".into())),
                            ("code", Amf::String("NetConnection.Connect.Success".into())),
                            ("description", Amf::String("Connection succeeded.".into())),
                            ("objectEncoding", Amf::Number(encoding)),
                        ]),
                    ],
                );
                self.events.push_back(Event::Connected {
                    app: self.app.clone(),
                    tc_url: text("tcUrl"),
                    flash_ver: text("flashVer"),
                });
            }
            "releaseStream" | "FCPublish" => {
                self.command(
                    0,
                    &[
                        Amf::String("_result".into()),
                        Amf::Number(txn),
                        Amf::Null,
                        Amf::Undefined,
                    ],
                );
            }
            "createStream" => {
                self.command(
                    0,
                    &[
                        Amf::String("_result".into()),
                        Amf::Number(txn),
                        Amf::Null,
                        Amf::Number(f64::from(STREAM_ID)),
                    ],
                );
            }
            "publish" => {
                if self.publish != Publish::None {
                    return Err(SessionError::Protocol("a second publish".into()));
                }
                let raw = v.get(3).and_then(Amf::as_str).unwrap_or("");
                // Encoders may append a query ("key?param=…"); the key is before it.
                let key = raw.split('?').next().unwrap_or("").to_owned();
                self.publish = Publish::Asked;
                self.publish_stream = if stream_id == 0 { STREAM_ID } else { stream_id };
                self.events.push_back(Event::Publish {
                    app: self.app.clone(),
                    stream_key: key,
                });
            }
            "FCUnpublish" | "deleteStream" | "closeStream" if self.publish == Publish::Live => {
                self.publish = Publish::None;
                self.events.push_back(Event::Unpublished);
            }
            // getStreamLength, _checkbw, play and the rest: nothing to say.
            _ => {}
        }
        Ok(())
    }

    fn on_status(&mut self, level: &str, code: &str, description: &str) {
        let stream = self.publish_stream;
        self.command(
            stream,
            &[
                Amf::String("onStatus".into()),
                Amf::Number(0.0),
                Amf::Null,
                Amf::object(&[
                    ("level", Amf::String(level.into())),
                    ("code", Amf::String(code.into())),
                    ("description", Amf::String(description.into())),
                ]),
            ],
        );
    }

    /// The publish asked for is allowed: media events follow.
    pub fn accept_publish(&mut self) {
        if self.publish != Publish::Asked {
            return;
        }
        self.publish = Publish::Live;
        let mut begin = vec![0, 0];
        begin.extend_from_slice(&self.publish_stream.to_be_bytes());
        self.control(4, &begin);
        self.on_status("status", "NetStream.Publish.Start", "Start publishing");
    }

    /// The publish is refused with `description`; the owner closes the connection after
    /// writing the output.
    pub fn reject_publish(&mut self, description: &str) {
        self.publish = Publish::None;
        self.on_status("error", "NetStream.Publish.BadName", description);
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
