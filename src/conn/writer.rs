//! Sending a connection's queued frames: many frames per system call
//! (small ones packed into one buffer, large ones gathered), and the close
//! frame when the connection ends. Runs on the connection's home shard.
//!
//! A plain connection has no task of its own while its socket takes what
//! it is given: the shard's flush task calls `flush_marked` for each
//! connection a round of deliveries marked in the `Outbox`. Only when the
//! socket is full does the connection get a task (`run_blocked`), parked
//! until the socket is writable and gone once the queue is empty. A TLS
//! connection keeps a writer task (`run_writer`), which seals what is
//! queued; the closing session sends a plain connection's last frames
//! itself (`finish_plain`).
//!
//! glommio 0.9 has no vectored write for TCP (its `poll_write` sends one
//! buffer), so we call `sendmsg(MSG_DONTWAIT)` on the socket ourselves,
//! exactly as glommio's own first attempt does. When the socket is full,
//! `run_blocked` parks on one io_uring poll until it is writable
//! (`glommio::net::wait_writable`, vendor/glommio/PATCHED.md change 5); a
//! closing connection's `finish` uses its stream's `poll_write`.

use super::handle::ConnHandle;
use super::Stream;
use crate::error::CloseReason;
use crate::limits::{SEND_PACKED_BYTES_MAX, WRITE_BATCH_FRAMES};
use crate::shard::Shard;
use crate::ws::frame::close_frame;
use futures_lite::future;
use std::cell::RefCell;
use std::future::poll_fn;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

/// The flush task's part for one marked connection: gathered `sendmsg`s
/// until its queue is empty; a full socket hands it to a task of its own.
pub fn flush_marked(shard: &Rc<Shard>, conn: &Rc<ConnHandle>) {
    if !conn.take_mark() || conn.ended().is_some() {
        return;
    }
    loop {
        match send_gathered(conn, conn.socket_fd()) {
            Ok(n) => {
                advance(shard, conn, n);
                if conn.queue().borrow().is_empty() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.block();
                glommio::spawn_local(run_blocked(shard.clone(), conn.clone())).detach();
                return;
            }
            Err(e) => return write_failed(conn, e),
        }
    }
}

/// A plain connection whose socket was full: waits until it is writable
/// and sends until the queue is empty, or until the connection ends (then
/// `finish` sends what must still go out; nothing more may start a frame).
async fn run_blocked(shard: Rc<Shard>, conn: Rc<ConnHandle>) {
    let w = Writer {
        out: Out::Plain(conn.socket_fd()),
        conn,
        shard,
    };
    while w.conn.ended().is_none() && !w.conn.queue().borrow().is_empty() {
        if let Err(e) = w.flush_plain(w.conn.socket_fd()).await {
            write_failed(&w.conn, e);
        }
    }
    w.conn.unblock();
}

fn write_failed(conn: &ConnHandle, e: io::Error) {
    if e.kind() != io::ErrorKind::BrokenPipe && e.kind() != io::ErrorKind::ConnectionReset {
        tracing::debug!(error = %e, "write failed");
    }
    conn.end(CloseReason::WriteFailed);
}

/// The closing session's part for a plain connection: once nothing else
/// sends, what must still go out, the close frame and FIN, within the close
/// timeout. Then `linger` (the wait for the client's own close, if any)
/// runs for at most the close timeout again, and whatever did not fit
/// into a full socket keeps going out beside it: a client that reads late
/// still gets its close frame, not a frame cut off by FIN.
pub async fn finish_plain(
    shard: &Rc<Shard>,
    conn: &Rc<ConnHandle>,
    fd: RawFd,
    reason: CloseReason,
    linger: Option<impl Future<Output = ()>>,
) {
    conn.hold_output().await;
    let mut w = Writer {
        conn: conn.clone(),
        out: Out::Plain(fd),
        shard: shard.clone(),
    };
    w.queue_close(reason);
    let sent = glommio::timer::timeout(w.close_timeout(), async {
        w.send_rest().await;
        Ok(())
    })
    .await
    .is_ok();
    let close_timeout = w.close_timeout();
    if let Some(linger) = linger {
        let rest = async {
            if !sent {
                w.send_rest().await;
            }
        };
        let _ = glommio::timer::timeout(close_timeout, async {
            future::zip(rest, linger).await;
            Ok(())
        })
        .await;
    }
    w.shutdown();
}

/// `finish_plain` for a peer that is gone, once its output is held and no
/// frame is half sent: its queue is dropped and nothing is sent
/// (`CloseReason::PeerGone` neither flushes nor has a close frame), so only
/// FIN is left and nothing waits.
pub fn finish_gone(shard: &Rc<Shard>, conn: &Rc<ConnHandle>, fd: RawFd) {
    let w = Writer {
        conn: conn.clone(),
        out: Out::Plain(fd),
        shard: shard.clone(),
    };
    w.queue_close(CloseReason::PeerGone);
    debug_assert!(conn.queue().borrow().is_empty());
    w.shutdown();
}

/// Where a connection's bytes go.
enum Out {
    /// A plain socket: `sendmsg` on it directly.
    Plain(RawFd),
    /// A TLS stream, which seals them first.
    Tls(Rc<RefCell<Stream>>),
}

/// A connection's output with what sends it.
struct Writer {
    conn: Rc<ConnHandle>,
    out: Out,
    shard: Rc<Shard>,
}

/// A TLS connection's writer task: seals and sends what is queued until
/// the connection ends, then finishes it.
pub async fn run_writer(shard: Rc<Shard>, conn: Rc<ConnHandle>, stream: Rc<RefCell<Stream>>) {
    let mut w = Writer {
        conn,
        out: Out::Tls(stream),
        shard,
    };
    loop {
        w.conn.output_or_end().await;
        if let Some(reason) = w.conn.ended() {
            // Boxed: the end runs once, so its state should not make every
            // idle connection's writer larger.
            Box::pin(w.finish(reason)).await;
            return;
        }
        // Boxed: sealing's and a full socket's state should not make every
        // idle connection's writer larger.
        if let Err(e) = Box::pin(w.flush_once()).await {
            write_failed(&w.conn, e);
        }
    }
}

impl Writer {
    /// One gathered write of what is queued; parks until writable if the
    /// socket is full.
    async fn flush_once(&mut self) -> io::Result<()> {
        match &self.out {
            Out::Plain(fd) => self.flush_plain(*fd).await,
            Out::Tls(stream) => self.flush_sealed(&stream.clone()).await,
        }
    }

    /// TLS: seals what is queued (if no sealed batch still waits), then
    /// sends the records; parks until writable if the socket is full.
    async fn flush_sealed(&self, stream: &RefCell<Stream>) -> io::Result<()> {
        let sealed = {
            let mut stream = stream.borrow_mut();
            let Stream::Tls(tls) = &mut *stream else {
                unreachable!("flush_sealed on a plain stream")
            };
            if tls.has_sealed() {
                0
            } else {
                self.seal_gathered(tls)?
            }
        };
        if sealed > 0 {
            advance(&self.shard, &self.conn, sealed);
        }
        let send = poll_fn(|cx| match &mut *stream.borrow_mut() {
            Stream::Tls(tls) => tls.poll_send_sealed(cx),
            Stream::Plain(_) => std::task::Poll::Ready(Ok(())),
        });
        // As in `flush_plain`: an end must not wait for a full socket.
        if self.conn.ended().is_some() {
            send.await
        } else {
            let ended = async {
                self.conn.ended_while_blocked().await;
                Ok(())
            };
            future::or(send, ended).await
        }
    }

    /// Hands up to `WRITE_BATCH_FRAMES` queued frames to rustls in one
    /// vectored write (one record per 16 KiB); returns the plaintext bytes
    /// it took.
    fn seal_gathered(&self, tls: &mut super::tls::TlsStream) -> io::Result<usize> {
        let queue = self.conn.queue().borrow();
        let mut slices = [io::IoSlice::new(&[]); WRITE_BATCH_FRAMES];
        let mut count = 0;
        for (i, frame) in queue.iter().take(WRITE_BATCH_FRAMES).enumerate() {
            let start = if i == 0 { self.conn.head_written() } else { 0 };
            slices[i] = io::IoSlice::new(&frame[start..]);
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        let n = tls.seal(&slices[..count])?;
        let c = self.shard.counters();
        c.tls_records_sealed
            .add(n.div_ceil(crate::limits::TLS_RECORD_PLAINTEXT_BYTES) as u64);
        c.tls_frames_sealed.add(count as u64);
        Ok(n)
    }

    /// Plain TCP: one `sendmsg` of what is queued; if the socket is full,
    /// parks until it is writable (the next call sends).
    async fn flush_plain(&self, fd: RawFd) -> io::Result<()> {
        match send_gathered(&self.conn, fd) {
            Ok(n) => {
                advance(&self.shard, &self.conn, n);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let writable = glommio::net::wait_writable(fd);
                // An end (slow consumer, shutdown) must not wait for a
                // client that stopped reading; `finish` bounds its own wait.
                if self.conn.ended().is_some() {
                    writable.await
                } else {
                    let ended = async {
                        self.conn.ended_while_blocked().await;
                        Ok(())
                    };
                    future::or(writable, ended).await
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Writes what must still go out, then the close frame, then FIN; all
    /// within the close timeout, after which FIN goes anyway.
    async fn finish(&mut self, reason: CloseReason) {
        self.queue_close(reason);
        let _ = glommio::timer::timeout(self.close_timeout(), async {
            self.send_rest().await;
            Ok(())
        })
        .await;
        self.shutdown();
    }

    /// Drops what an end does not flush (keeping a partly written head
    /// frame, so the stream stays well-formed) and queues the close frame.
    fn queue_close(&self, reason: CloseReason) {
        if !reason.flushes_queue() {
            let dropped = self.conn.discard_queue();
            self.shard.note_discarded(dropped);
        }
        if let Some((code, text)) = reason.close_frame() {
            self.conn.deliver_final(close_frame(code, text));
        }
    }

    fn close_timeout(&self) -> Duration {
        Duration::from_millis(self.shard.config().close_timeout_ms)
    }

    /// Sends the queue to its end (over TLS, close_notify after it), then
    /// FIN; gives up on a write error.
    async fn send_rest(&mut self) {
        while !self.conn.queue().borrow().is_empty() {
            if self.flush_once().await.is_err() {
                return;
            }
        }
        if let Out::Tls(stream) = &self.out {
            stream.borrow_mut().queue_close_notify();
            let _ = poll_fn(|cx| match &mut *stream.borrow_mut() {
                Stream::Tls(tls) => tls.poll_send_sealed(cx),
                Stream::Plain(_) => std::task::Poll::Ready(Ok(())),
            })
            .await;
        }
        self.shutdown();
    }

    /// FIN: shuts down the write side of the socket (again is harmless).
    fn shutdown(&self) {
        let fd = match &self.out {
            Out::Plain(fd) => *fd,
            Out::Tls(stream) => stream.borrow().as_raw_fd(),
        };
        // SAFETY: shutting down the write side of a socket we own.
        unsafe {
            libc::shutdown(fd, libc::SHUT_WR);
        }
    }
}

/// One system call sends up to `WRITE_BATCH_FRAMES` queued frames on
/// `fd`, without waiting: `sendto` of one frame, or of several packed into
/// one buffer up to `SEND_PACKED_BYTES_MAX` bytes; `sendmsg` of a larger
/// batch, gathered.
fn send_gathered(conn: &ConnHandle, fd: std::os::fd::RawFd) -> io::Result<usize> {
    let queue = conn.queue().borrow();
    // Left uninitialised: zeroing 64 vectors (1 KiB) was a `memset` per
    // send, 2% of the shard's user time at light load; only the first
    // `count` are written and read.
    let mut iov = [const { std::mem::MaybeUninit::<libc::iovec>::uninit() }; WRITE_BATCH_FRAMES];
    let mut count = 0;
    let mut total = 0;
    for (i, frame) in queue.iter().take(WRITE_BATCH_FRAMES).enumerate() {
        let bytes = if i == 0 {
            &frame[conn.head_written()..]
        } else {
            &frame[..]
        };
        iov[i].write(libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        });
        count += 1;
        total += bytes.len();
    }
    if count == 0 {
        return Ok(0);
    }
    // SAFETY: the first `count` were written above.
    let iov = unsafe {
        &mut *(&mut iov[..count] as *mut [std::mem::MaybeUninit<libc::iovec>]
            as *mut [libc::iovec])
    };
    // Small frames are copied into one buffer and go by one `sendto`, as
    // uWebSockets corks them: the kernel's per-segment cost of a vector
    // (`import_iovec`, one `copy_from_iter` per frame) is more than the
    // copy. Larger batches go gathered, without the copy.
    let mut packed = [std::mem::MaybeUninit::<u8>::uninit(); SEND_PACKED_BYTES_MAX];
    let one_buffer = if count == 1 {
        Some((iov[0].iov_base as *const u8, iov[0].iov_len))
    } else if total <= SEND_PACKED_BYTES_MAX {
        let mut at = 0;
        for v in iov.iter() {
            // SAFETY: each iovec is a live slice of the queue; `total`
            // bytes fit in `packed`, which does not overlap the queue.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    v.iov_base as *const u8,
                    packed.as_mut_ptr().add(at).cast::<u8>(),
                    v.iov_len,
                );
            }
            at += v.iov_len;
        }
        Some((packed.as_ptr().cast::<u8>(), total))
    } else {
        None
    };
    // Raw system calls: libc's wrappers are cancellation points, which
    // cost two calls per send around the trap, and no thread here is ever
    // cancelled.
    const FLAGS: libc::c_long = (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as libc::c_long;
    // SAFETY: `base..base+len` is one frame's slice or `packed`, and iov
    // points at `count` live slices borrowed from the queue, which is not
    // touched until the call returns; a zeroed msghdr is valid.
    let sent = unsafe {
        if let Some((base, len)) = one_buffer {
            libc::syscall(
                libc::SYS_sendto,
                fd as libc::c_long,
                base,
                len,
                FLAGS,
                0usize,
                0usize,
            )
        } else {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = count;
            libc::syscall(
                libc::SYS_sendmsg,
                fd as libc::c_long,
                &msg as *const libc::msghdr,
                FLAGS,
            )
        }
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// `n` bytes went out: they leave the queue, and are counted.
fn advance(shard: &Shard, conn: &ConnHandle, n: usize) {
    conn.written(n);
    shard.counters().bytes_out.add(n as u64);
}
