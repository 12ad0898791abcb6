// Unless explicitly stated otherwise all files in this repository are licensed
// under the MIT/Apache-2.0 License, at your convenience
//
// This product includes software developed at Datadog (https://www.datadoghq.com/). Copyright 2020 Datadog, Inc.
//
//! This module provides glommio's networking support.
use crate::sys;
use nix::sys::socket::{MsgFlags, SockaddrLike};
use std::{io, os::unix::io::RawFd};

fn yolo_accept(fd: RawFd) -> Option<io::Result<RawFd>> {
    let flags =
        nix::fcntl::OFlag::from_bits(nix::fcntl::fcntl(fd, nix::fcntl::F_GETFL).unwrap()).unwrap();
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let r = sys::accept_syscall(fd);
    nix::fcntl::fcntl(fd, nix::fcntl::F_SETFL(flags)).unwrap();
    match r {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_send(fd: RawFd, buf: &[u8]) -> Option<io::Result<usize>> {
    match sys::send_syscall(fd, buf.as_ptr(), buf.len(), MsgFlags::MSG_DONTWAIT.bits()) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_peek(fd: RawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    match sys::recv_syscall(
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        (MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_PEEK).bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_recv(fd: RawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    match sys::recv_syscall(
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        MsgFlags::MSG_DONTWAIT.bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_recvmsg<T: SockaddrLike>(
    fd: RawFd,
    buf: &mut [u8],
    flags: MsgFlags,
) -> Option<io::Result<(usize, T)>> {
    match sys::recvmsg_syscall(
        fd,
        buf.as_mut_ptr(),
        buf.len(),
        (flags | MsgFlags::MSG_DONTWAIT).bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

fn yolo_sendmsg(
    fd: RawFd,
    buf: &[u8],
    addr: &impl nix::sys::socket::SockaddrLike,
) -> Option<io::Result<usize>> {
    match sys::sendmsg_syscall(
        fd,
        buf.as_ptr(),
        buf.len(),
        addr,
        MsgFlags::MSG_DONTWAIT.bits(),
    ) {
        Ok(x) => Some(Ok(x)),
        Err(err) => match err.kind() {
            io::ErrorKind::WouldBlock => None,
            _ => Some(Err(err)),
        },
    }
}

/// Patched (PATCHED.md, change 5): resolves once `fd` is readable (or
/// hung up), through one io_uring poll; for descriptors glommio does not
/// wrap, such as an epoll instance.
pub async fn wait_readable(fd: RawFd) -> io::Result<()> {
    let source = crate::executor().reactor().poll_read_ready(fd);
    source.collect_rw().await.map(drop)
}

/// Patched (PATCHED.md, change 11): `fd`'s readability as a run of
/// wake-ups through one multishot io_uring poll, which stays armed between
/// them (no request to submit per wait). It is woken by the descriptor's
/// readiness wake-ups, not by its level: readiness that is left unconsumed
/// wakes it no more, so the caller waits on it only once it has taken what
/// was ready (for anything left, `wait_readable` polls the level).
#[derive(Debug)]
pub struct ReadableWatch {
    fd: RawFd,
    source: Option<crate::sys::Source>,
}

impl ReadableWatch {
    /// Watches `fd`; the poll is armed at the first wait.
    pub fn new(fd: RawFd) -> Self {
        Self { fd, source: None }
    }

    /// Resolves once `fd` had a readiness wake-up since the previous wait
    /// resolved (or was readable when the poll was armed).
    pub async fn readable(&mut self) -> io::Result<()> {
        futures_lite::future::poll_fn(|cx| {
            let source = self.source.get_or_insert_with(|| {
                crate::executor().reactor().poll_read_ready_multishot(self.fd)
            });
            if let Some(result) = source.take_result() {
                if !source.in_flight() {
                    self.source = None; // ended by the kernel: armed again next wait
                }
                return std::task::Poll::Ready(result.map(drop));
            }
            source.add_waiter_single(cx.waker());
            std::task::Poll::Pending
        })
        .await
    }
}

/// Patched (PATCHED.md, change 5): resolves once `fd` is writable (or hung
/// up), through one io_uring poll.
pub async fn wait_writable(fd: RawFd) -> io::Result<()> {
    let source = crate::executor().reactor().poll_write_ready(fd);
    source.collect_rw().await.map(drop)
}

mod datagram;
mod stream;
mod tcp_socket;
mod udp_socket;
mod unix;
pub use self::{
    stream::{Buffered, Preallocated},
    tcp_socket::{AcceptedTcpStream, TcpListener, TcpStream},
    udp_socket::UdpSocket,
    unix::{AcceptedUnixStream, UnixDatagram, UnixListener, UnixStream},
};
