//! The in-memory, datagram-preserving transport that OpenSSL's `SslStream` runs over.
//!
//! OpenSSL's DTLS code believes it talks to a datagram socket: every `write` it issues is one
//! datagram (it packs records up to the MTU itself and flushes per datagram), and every `read`
//! must return exactly one datagram. `DatagramPipe` keeps both directions as queues of whole
//! datagrams so that boundaries survive; an empty inbound queue reads as `WouldBlock`, which
//! OpenSSL reports as `WANT_READ`. The pipe also remembers which datagrams were written since
//! the endpoint last looked, which is how the endpoint learns what its latest flight was.

use std::collections::VecDeque;
use std::io;

/// Most datagrams the pipe buffers in either direction; past that the oldest inbound
/// datagram is refused and outbound writes fail, so a stuck peer cannot grow memory.
pub const MAX_QUEUED: usize = 256;

#[derive(Debug, Default)]
pub struct DatagramPipe {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
    /// Datagrams written since the last `take_recent`.
    recent: Vec<Vec<u8>>,
}

impl DatagramPipe {
    /// Queues one received datagram for OpenSSL to read. Returns false if the queue is full.
    pub fn push_incoming(&mut self, datagram: &[u8]) -> bool {
        if self.incoming.len() >= MAX_QUEUED {
            return false;
        }
        self.incoming.push_back(datagram.to_vec());
        true
    }

    /// Queues a datagram for the network without OpenSSL writing it (a flight resend).
    pub fn push_outgoing(&mut self, datagram: Vec<u8>) {
        if self.outgoing.len() < MAX_QUEUED {
            self.outgoing.push_back(datagram);
        }
    }

    /// The next datagram to send.
    pub fn pop_outgoing(&mut self) -> Option<Vec<u8>> {
        self.outgoing.pop_front()
    }

    /// The datagrams OpenSSL wrote since the previous call.
    pub fn take_recent(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.recent)
    }

    /// Forgets the record of recent writes (application data is not a flight).
    pub fn clear_recent(&mut self) {
        self.recent.clear();
    }

    /// Drops inbound datagrams OpenSSL did not consume.
    pub fn clear_incoming(&mut self) {
        self.incoming.clear();
    }
}

impl io::Read for DatagramPipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(datagram) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        // Datagram semantics: a short buffer truncates, exactly like recv(2).
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl io::Write for DatagramPipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.outgoing.len() >= MAX_QUEUED {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.outgoing.push_back(buf.to_vec());
        self.recent.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn keeps_datagram_boundaries() {
        let mut p = DatagramPipe::default();
        p.write_all(&[1, 2, 3]).unwrap();
        p.write_all(&[4]).unwrap();
        assert_eq!(p.take_recent().len(), 2);
        assert!(p.take_recent().is_empty());
        assert_eq!(p.pop_outgoing(), Some(vec![1, 2, 3]));
        assert_eq!(p.pop_outgoing(), Some(vec![4]));
        assert_eq!(p.pop_outgoing(), None);

        let mut buf = [0u8; 2];
        assert_eq!(
            p.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert!(p.push_incoming(&[9, 8, 7]));
        assert!(p.push_incoming(&[6]));
        assert_eq!(p.read(&mut buf).unwrap(), 2);
        assert_eq!(buf, [9, 8]);
        assert_eq!(p.read(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 6);
    }

    #[test]
    fn bounded() {
        let mut p = DatagramPipe::default();
        for _ in 0..MAX_QUEUED {
            assert!(p.push_incoming(&[1]));
        }
        assert!(!p.push_incoming(&[1]));
    }
}
