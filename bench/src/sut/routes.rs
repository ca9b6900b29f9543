//! The bench servers' control protocol: text lines over a Unix socket.
//!
//! The reflector and the conventional forwarder keep one table, SSRC → destinations, and
//! the runner edits it with `route SSRC ADDR OUT_SSRC` and `unroute SSRC ADDR`; each line is
//! answered `ok` (or `error …`) once queued. Text keeps both servers free of the forwarder's
//! protobuf control plane, which they do not model.

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// One edit of the routing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteCommand {
    /// Forward packets of `ssrc` to `to`, rewritten to `out_ssrc` where the server rewrites.
    Route {
        ssrc: u32,
        to: SocketAddr,
        out_ssrc: u32,
    },
    /// Stop forwarding packets of `ssrc` to `to`.
    Unroute { ssrc: u32, to: SocketAddr },
}

impl RouteCommand {
    pub fn parse(line: &str) -> Option<Self> {
        let mut w = line.split_whitespace();
        let cmd = w.next()?;
        let ssrc = w.next()?.parse().ok()?;
        let to = w.next()?.parse().ok()?;
        let c = match cmd {
            "route" => RouteCommand::Route {
                ssrc,
                to,
                out_ssrc: w.next()?.parse().ok()?,
            },
            "unroute" => RouteCommand::Unroute { ssrc, to },
            _ => return None,
        };
        w.next().is_none().then_some(c)
    }

    pub fn line(&self) -> String {
        match self {
            RouteCommand::Route { ssrc, to, out_ssrc } => format!("route {ssrc} {to} {out_ssrc}\n"),
            RouteCommand::Unroute { ssrc, to } => format!("unroute {ssrc} {to}\n"),
        }
    }
}

/// The runner's end of the control socket.
#[derive(Debug)]
pub struct RouteClient {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

impl RouteClient {
    /// Connects, retrying for up to `wait` while the server starts.
    pub fn connect(path: &Path, wait: Duration) -> io::Result<Self> {
        let deadline = Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends every command, then waits for every answer.
    pub fn apply(&mut self, cmds: &[RouteCommand]) -> io::Result<()> {
        let text: String = cmds.iter().map(RouteCommand::line).collect();
        self.writer.write_all(text.as_bytes())?;
        let mut line = String::new();
        for _ in cmds {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server gone"));
            }
            if line.trim() != "ok" {
                return Err(io::Error::other(format!("server said {}", line.trim())));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        for c in [
            RouteCommand::Route {
                ssrc: 7,
                to: "127.0.0.1:9".parse().unwrap(),
                out_ssrc: 0x2000_0001,
            },
            RouteCommand::Unroute {
                ssrc: u32::MAX,
                to: "127.0.0.1:65535".parse().unwrap(),
            },
        ] {
            assert_eq!(RouteCommand::parse(&c.line()), Some(c));
        }
        assert_eq!(RouteCommand::parse("route 1 nowhere 2"), None);
        assert_eq!(RouteCommand::parse("route 1 127.0.0.1:1 2 3"), None);
    }
}
