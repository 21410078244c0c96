//! Batched reads from a UDP socket: one `recvmmsg` returns up to [`RECV_BATCH`] datagrams.
//! The socket's options are left as they are (no control messages asked for, no GRO).

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};

/// Datagrams read per call.
pub const RECV_BATCH: usize = 32;

/// Room for the largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

pub struct BatchReader {
    storage: Vec<u8>,
    /// Source and length of each datagram of the last read (no source: not UDP/IP, dropped).
    received: Vec<(Option<SocketAddr>, usize)>,
}

impl Default for BatchReader {
    fn default() -> Self {
        BatchReader {
            storage: vec![0; RECV_BATCH * MAX_DATAGRAM],
            received: Vec::with_capacity(RECV_BATCH),
        }
    }
}

impl BatchReader {
    /// Reads what is queued (without blocking), up to [`RECV_BATCH`] datagrams, into
    /// [`Self::datagrams`]; `WouldBlock` when nothing is.
    pub fn recv(&mut self, socket: &impl AsFd) -> io::Result<()> {
        self.received.clear();
        let mut bufs: Vec<[IoSliceMut<'_>; 1]> = self
            .storage
            .chunks_mut(MAX_DATAGRAM)
            .map(|chunk| [IoSliceMut::new(chunk)])
            .collect();
        // Made per call (two small allocations per batch): it holds raw pointers, so keeping
        // it would make the reader, and the task owning it, not `Send`.
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(RECV_BATCH, None);
        let results = recvmmsg(
            socket.as_fd().as_raw_fd(),
            &mut headers,
            bufs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for msg in results {
            let from = msg.address.as_ref().and_then(socket_addr);
            self.received.push((from, msg.bytes));
        }
        Ok(())
    }

    /// Each datagram of the last read with its source, in arrival order (an empty datagram
    /// included).
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.received
            .iter()
            .enumerate()
            .filter_map(|(i, &(from, len))| {
                let len = len.min(MAX_DATAGRAM);
                Some((from?, &self.storage[i * MAX_DATAGRAM..][..len]))
            })
    }
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};

    fn read_all(
        reader: &mut BatchReader,
        socket: &UdpSocket,
        want: usize,
    ) -> (Vec<(SocketAddr, Vec<u8>)>, usize) {
        let mut got = Vec::new();
        let mut reads = 0;
        while got.len() < want {
            reads += 1;
            assert!(reads < 1_000, "datagrams missing: {} of {want}", got.len());
            match reader.recv(socket) {
                Ok(()) => got.extend(reader.datagrams().map(|(from, d)| (from, d.to_vec()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        (got, reads)
    }

    #[test]
    fn a_batch_holds_every_queued_datagram_with_its_source() {
        let listener = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let to = listener.local_addr().unwrap();
        let mut reader = BatchReader::default();
        let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut expected = Vec::new();
        for i in 0..40u8 {
            let (from, len) = if i % 2 == 0 {
                (&a, 1 + usize::from(i))
            } else {
                (&b, 1200)
            };
            let data = vec![i; len];
            from.send_to(&data, to).unwrap();
            expected.push((from.local_addr().unwrap(), data));
        }
        a.send_to(&[], to).unwrap();
        expected.push((a.local_addr().unwrap(), Vec::new()));
        b.send_to(&vec![7; 65_000], to).unwrap();
        expected.push((b.local_addr().unwrap(), vec![7; 65_000]));

        let (got, reads) = read_all(&mut reader, &listener, expected.len());
        assert_eq!(got, expected);
        // Batched: 42 datagrams did not take 42 reads.
        assert!(reads < expected.len(), "{reads} reads");
        assert_eq!(
            reader.recv(&listener).err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock)
        );
        assert_eq!(reader.datagrams().count(), 0);
    }

    #[test]
    fn ipv6_sources_are_kept() {
        let Ok(listener) = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)) else {
            return; // no IPv6 loopback on this machine
        };
        let to = listener.local_addr().unwrap();
        let peer = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        peer.send_to(b"hello", to).unwrap();
        let mut reader = BatchReader::default();
        let (got, _) = read_all(&mut reader, &listener, 1);
        assert_eq!(got, vec![(peer.local_addr().unwrap(), b"hello".to_vec())]);
    }

    #[test]
    fn reading_leaves_the_socket_options_alone() {
        let listener = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let before = rustix::net::sockopt::ip_mtu_discover(&listener).unwrap();
        let mut reader = BatchReader::default();
        let _ = reader.recv(&listener);
        assert_eq!(
            rustix::net::sockopt::ip_mtu_discover(&listener).unwrap(),
            before
        );
    }
}
