//! Sending a connection's queued frames in one system call: gathered
//! (`sendmsg` with one iovec per frame) against packed (the frames copied
//! into one buffer, one `sendto`), over a real loopback TCP connection.
//!
//! `conn::writer::send_gathered` packs a batch of up to
//! `limits::SEND_PACKED_BYTES_MAX` bytes and gathers a larger one; this is
//! where that bound comes from. Most sends in a busy relay carry a few
//! envelopes of ~150 bytes (rooms: about 4 frames per send), and the
//! kernel's cost per iovec (importing the vector, one `copy_from_iter` per
//! segment) is paid on every one of them.
//!
//! Each iteration sends one batch and reads it back on the other end, in
//! the same thread: loopback TCP delivers within the send, so the figure
//! is one core's cost of a send and its receipt, with no scheduling
//! between threads in it. The receipt is the same for both ways; the last
//! batch read is checked against the frames.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

/// (frames per send, bytes per frame): a rooms round, a fan-out round, and
/// the packing bound made of 1 KiB frames.
const BATCHES: [(usize, usize); 6] = [
    (2, 150),
    (4, 150),
    (16, 150),
    (64, 150),
    (4, 1024),
    (16, 1024),
];

fn send_all(fd: i32, mut base: *const u8, mut len: usize) {
    while len > 0 {
        // SAFETY: base..base+len is a live buffer of the caller's.
        let n = unsafe { libc::send(fd, base.cast(), len, libc::MSG_NOSIGNAL) };
        assert!(n > 0, "send failed: {}", std::io::Error::last_os_error());
        // SAFETY: n <= len.
        base = unsafe { base.add(n as usize) };
        len -= n as usize;
    }
}

fn gathered(fd: i32, frames: &[Vec<u8>]) {
    let mut iov: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut _,
            iov_len: f.len(),
        })
        .collect();
    let total: usize = frames.iter().map(Vec::len).sum();
    // SAFETY: a zeroed msghdr is valid; iov points at live frames.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = iov.len();
    // SAFETY: as above.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    assert!(n > 0, "sendmsg failed: {}", std::io::Error::last_os_error());
    if (n as usize) < total {
        // A short send (rare on a blocking socket): the rest, packed.
        let rest: Vec<u8> = frames.concat();
        send_all(fd, rest[n as usize..].as_ptr(), total - n as usize);
    }
}

fn packed(fd: i32, frames: &[Vec<u8>]) {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1 << 14];
    let mut at = 0;
    for f in frames {
        // SAFETY: the batches above fit in 16 KiB.
        unsafe {
            std::ptr::copy_nonoverlapping(f.as_ptr(), buf.as_mut_ptr().add(at).cast(), f.len())
        };
        at += f.len();
    }
    send_all(fd, buf.as_ptr().cast(), at);
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("send");
    for (count, size) in BATCHES {
        let frames: Vec<Vec<u8>> = (0..count).map(|i| vec![b'a' + i as u8; size]).collect();
        let id = format!("{count}x{size}");
        group.throughput(Throughput::Elements(count as u64));
        for (way, send) in [
            ("gathered", gathered as fn(i32, &[Vec<u8>])),
            ("packed", packed),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            tx.set_nodelay(true).unwrap();
            let (mut rx, _) = listener.accept().unwrap();
            let mut buf = vec![0u8; count * size];
            group.bench_function(BenchmarkId::new(way, &id), |b| {
                b.iter(|| {
                    send(tx.as_raw_fd(), &frames);
                    rx.read_exact(&mut buf).unwrap();
                })
            });
            assert_eq!(
                buf,
                frames.concat(),
                "the receiver read the frames in order"
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
