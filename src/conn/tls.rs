//! A connection's byte stream: plain TCP, or TLS over it (rustls'
//! buffered `ServerConnection`, driven sans-IO from our own tasks: it never
//! touches the socket, we feed it what we read and send what it seals).
//! Lives on the connection's home shard, shared by its session (reads) and
//! its writer (writes) like the `TcpStream` it wraps.
//!
//! The plain path pays one `match` per read or write and nothing else.
//! The writer's gathered sends keep their shape under TLS: it hands the
//! queued frames to `seal` as one vectored write, which rustls turns into
//! one record per 16 KiB, so a record's fixed cost (~300 ns) is spread
//! over the batch; only what is already queued is sealed, never waiting
//! for more. Sealed records wait in `sealed` (at most one batch) until the
//! socket takes them; the slow-consumer bound stays on the frame queue.
//!
//! What rustls queues on its own after a read (a KeyUpdate answer, an
//! alert) goes out with the writer's next send: the session does not wake
//! the writer for it (a ping goes out at least every `ping_interval_ms`,
//! and an alert is followed by the connection's end, which flushes).

use crate::limits::{TLS_READ_BYTES, TLS_RECORD_PLAINTEXT_BYTES};
use futures_lite::{ready, AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::ServerConnection;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A client connection's bytes, plain or over TLS.
pub enum Stream {
    Plain(TcpStream),
    /// Boxed: a session's state is a few hundred bytes, and a plain
    /// connection should not carry it.
    Tls(Box<TlsStream>),
}

/// TLS over one TCP socket.
pub struct TlsStream {
    tcp: TcpStream,
    session: ServerConnection,
    /// Records sealed and not yet sent (freed once sent, so an idle
    /// connection holds none).
    sealed: Vec<u8>,
    /// How much of `sealed` went out.
    sealed_sent: usize,
    /// Plaintext `poll_write` took whose records are still in `sealed`.
    accepted: usize,
    /// Whether our close_notify is queued.
    closing: bool,
    /// Ciphertext read but not yet taken by rustls (see `take_in`);
    /// empty, and unallocated, almost always.
    ciphertext_left: Vec<u8>,
}

impl Stream {
    /// A TLS stream whose handshake is done (`conn::handshake`).
    pub fn tls(tcp: TcpStream, session: ServerConnection) -> Stream {
        Stream::Tls(Box::new(TlsStream {
            tcp,
            session,
            sealed: Vec::new(),
            sealed_sent: 0,
            accepted: 0,
            closing: false,
            ciphertext_left: Vec::new(),
        }))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.tcp,
        }
    }

    /// Queues a TLS close_notify (nothing for plain TCP); the next send or
    /// flush writes it.
    pub fn queue_close_notify(&mut self) {
        if let Stream::Tls(tls) = self {
            if !tls.closing {
                tls.closing = true;
                tls.session.send_close_notify();
            }
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl TlsStream {
    /// Seals `frames` (one vectored write: one record per 16 KiB) and
    /// returns how many plaintext bytes rustls took: fewer than offered
    /// when its outgoing buffer limit is reached. Call only when
    /// `has_sealed` is false, so at most one batch waits.
    pub fn seal(&mut self, frames: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = self.session.writer().write_vectored(frames)?;
        self.take_records()?;
        Ok(n)
    }

    /// Whether sealed records still wait for the socket.
    pub fn has_sealed(&self) -> bool {
        self.sealed_sent < self.sealed.len() || self.session.wants_write()
    }

    /// Moves what rustls has ready (records, alerts, tickets) into `sealed`.
    fn take_records(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            self.session.write_tls(&mut self.sealed)?;
        }
        Ok(())
    }

    /// Sends every sealed record; `Pending` while the socket is full.
    pub fn poll_send_sealed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.take_records()?;
        while self.sealed_sent < self.sealed.len() {
            let n =
                ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.sealed[self.sealed_sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sealed_sent += n;
        }
        self.sealed = Vec::new();
        self.sealed_sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Feeds ciphertext to rustls and processes it; an error (a bad record,
    /// an alert) leaves rustls' own alert queued for the writer.
    ///
    /// rustls refuses more ciphertext while it holds over 16 KiB of
    /// plaintext (it can, when a read completes a record begun in the
    /// previous one and then holds a second whole record); the rest then
    /// waits in `ciphertext_left` until the session read that plaintext.
    fn take_in(&mut self, mut ciphertext: &[u8]) -> io::Result<()> {
        while !ciphertext.is_empty() {
            if self.session.read_tls(&mut ciphertext)? == 0 {
                break; // after the client's close_notify: the rest is ignored
            }
            let state = self
                .session
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if state.plaintext_bytes_to_read() > TLS_RECORD_PLAINTEXT_BYTES
                && !ciphertext.is_empty()
            {
                self.ciphertext_left.extend_from_slice(ciphertext);
                break;
            }
        }
        Ok(())
    }

    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.session.reader().read(buf) {
                // 0: the client's close_notify, a clean end.
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if !self.ciphertext_left.is_empty() {
                let left = std::mem::take(&mut self.ciphertext_left);
                self.take_in(&left)?;
                continue;
            }
            let mut ciphertext = [0u8; TLS_READ_BYTES];
            let n = ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut ciphertext))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            self.take_in(&ciphertext[..n])?;
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_send_sealed(cx))?;
            if self.accepted > 0 {
                return Poll::Ready(Ok(std::mem::take(&mut self.accepted)));
            }
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            self.accepted = self.session.writer().write(buf)?;
            self.take_records()?;
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => tls.poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => tls.poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => {
                ready!(tls.poll_send_sealed(cx))?;
                Pin::new(&mut tls.tcp).poll_flush(cx)
            }
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.queue_close_notify();
        match this {
            Stream::Plain(tcp) => Pin::new(tcp).poll_close(cx),
            Stream::Tls(tls) => {
                ready!(tls.poll_send_sealed(cx))?;
                Pin::new(&mut tls.tcp).poll_close(cx)
            }
        }
    }
}
