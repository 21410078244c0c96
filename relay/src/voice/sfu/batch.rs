//! Datagrams in batches: a forwarded packet's fan-out in one system call (`sendmmsg` to
//! several addresses from one socket, instead of one `sendto` each), and a room's reads
//! (`recvmmsg`, which also shows when the socket is empty without a read that fails).
//! A packet's whole fan-out is one `sendmmsg` per socket; reads are batches of 16 datagrams
//! of up to 2 KiB through `concord_svc::udp_batch::BatchReader`, and a short batch clears
//! tokio's readiness.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use concord_svc::udp_batch::BatchReader;
use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Reads what `socket` holds, up to one batch, into `reader`. Returns whether the socket
/// may hold more. A short batch means its queue was empty: tokio's readiness is cleared
/// then, sparing the read that would fail with EAGAIN (a new datagram still wakes the task:
/// epoll reports its arrival).
pub(super) fn read_all(socket: &UdpSocket, reader: &mut BatchReader) -> bool {
    let wanted = reader.batch();
    // try_io skips the read when tokio already knows the socket is empty.
    reader.clear();
    let read = socket.try_io(Interest::READABLE, || {
        if reader.recv(socket)? < wanted {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    // Short or failed, what was read (if anything) is in `reader.datagrams()`.
    read.is_ok()
}

/// Datagrams per call (the kernel's limit, UIO_MAXIOV, is 1024).
const MAX_BATCH: usize = 64;

/// One socket's datagrams of a fan-out, in buffers kept from one packet to the next (no
/// allocation per listener once the room has seen its largest fan-out).
#[derive(Default)]
pub(super) struct Datagrams {
    items: Vec<(SocketAddr, Vec<u8>)>,
    len: usize,
}

impl Datagrams {
    /// An empty buffer for the next datagram, to `to`.
    pub fn push(&mut self, to: SocketAddr) -> &mut Vec<u8> {
        if self.len == self.items.len() {
            self.items.push((to, Vec::new()));
        }
        let item = &mut self.items[self.len];
        self.len += 1;
        item.0 = to;
        item.1.clear();
        &mut item.1
    }

    /// Takes back the last datagram pushed (it could not be filled).
    pub fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
    }

    pub fn as_slice(&self) -> &[(SocketAddr, Vec<u8>)] {
        &self.items[..self.len]
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Sends each `(to, datagram)` from `socket` without waiting; returns how many the kernel
/// took (a full send buffer drops the rest, as the network would: audio does not wait).
pub(super) fn send_all<D: AsRef<[u8]>>(socket: &UdpSocket, datagrams: &[(SocketAddr, D)]) -> usize {
    let mut sent = 0;
    for chunk in datagrams.chunks(MAX_BATCH) {
        let addrs: Vec<Option<SockaddrStorage>> = chunk
            .iter()
            .map(|(to, _)| Some(SockaddrStorage::from(*to)))
            .collect();
        let slices: Vec<[IoSlice<'_>; 1]> = chunk
            .iter()
            .map(|(_, d)| [IoSlice::new(d.as_ref())])
            .collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(chunk.len(), None);
        let no_control: [ControlMessage<'_>; 0] = [];
        let taken = sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            &slices,
            &addrs,
            no_control,
            MsgFlags::MSG_DONTWAIT,
        )
        .map_or(0, |results| results.count());
        sent += taken;
        if taken < chunk.len() {
            break;
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_come_in_batches_and_an_empty_queue_ends_them() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = socket.local_addr().unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for i in 0..5u8 {
            sender.send_to(&[i; 3], to).await.unwrap();
        }
        socket.readable().await.unwrap();
        // Loopback delivers at once, but give the last datagrams a moment anyway.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut reader = BatchReader::new(4, 64);
        let got = |reader: &BatchReader| -> Vec<(SocketAddr, Vec<u8>)> {
            reader.datagrams().map(|(f, d)| (f, d.to_vec())).collect()
        };
        assert!(read_all(&socket, &mut reader), "four buffers full");
        let from = sender.local_addr().unwrap();
        let first: Vec<(SocketAddr, Vec<u8>)> = (0..4).map(|i| (from, vec![i; 3])).collect();
        assert_eq!(got(&reader), first);
        assert!(
            !read_all(&socket, &mut reader),
            "one left: the queue is empty"
        );
        assert_eq!(got(&reader), [(from, vec![4; 3])]);
        assert!(!read_all(&socket, &mut reader));
        assert!(got(&reader).is_empty());
        // Readiness was cleared; the next datagram still wakes a reader.
        sender.send_to(&[9; 3], to).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), socket.readable())
            .await
            .expect("woken")
            .unwrap();
        assert!(!read_all(&socket, &mut reader));
        assert_eq!(got(&reader), [(from, vec![9; 3])]);
    }

    #[tokio::test]
    async fn every_datagram_reaches_its_own_address() {
        let from = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut receivers = Vec::new();
        for _ in 0..3 {
            receivers.push(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        }
        let datagrams: Vec<(SocketAddr, bytes::BytesMut)> = (0..70)
            .map(|i| {
                let to = receivers[i % 3].local_addr().unwrap();
                (to, bytes::BytesMut::from(&[i as u8; 20][..]))
            })
            .collect();
        assert_eq!(send_all(&from, &datagrams), 70, "two calls: 64 and 6");
        let mut buf = [0u8; 64];
        for (i, (to, _)) in datagrams.iter().enumerate() {
            let receiver = receivers
                .iter()
                .find(|r| r.local_addr().unwrap() == *to)
                .unwrap();
            let (n, src) = receiver.recv_from(&mut buf).await.unwrap();
            assert_eq!((n, src), (20, from.local_addr().unwrap()));
            assert_eq!(buf[0], i as u8, "in order per receiver");
        }
    }
}
