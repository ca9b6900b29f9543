//! RTMP, the server side of what broadcast encoders (OBS, FFmpeg, hardware encoders) speak,
//! sans-IO: [`amf0`] values, the [`chunk`] stream, and a publishing [`session`] (handshake,
//! protocol control, commands). The socket lives in [`super::server`].

pub mod amf0;
pub mod chunk;
pub mod session;
