//! The shard's reader: one task reads every joined plain connection of its
//! shard, as uWebSockets' event loop does. The sockets are registered in
//! one epoll instance (level-triggered); glommio waits for that instance to
//! become readable (one io_uring poll for the whole shard); the task then
//! takes the ready sockets from `epoll_wait` and reads each once, into the
//! shard's shared buffer, handling what it read there (`conn::inbound`).
//!
//! So a silent connection holds no task, no future and no glommio `Source`
//! (432 bytes, with its poll in flight): only its reading state, in a table
//! here, and the kernel's epoll entry. Sending is the flush task's
//! (`conn::outbox`). A connection that ends (whoever ended it) is handed
//! back by the flush task (`release`): out of epoll, and closed in a task
//! of its own (`session::close_read`), on the socket itself.
//!
//! glommio 0.9 has no readiness API for a descriptor it does not wrap; the
//! patched copy (vendor/glommio/PATCHED.md, change 5) adds
//! `glommio::net::wait_readable` and `TcpStream`'s `IntoRawFd`.

use super::handle::ConnHandle;
use super::inbound::Inbound;
use super::session::close_read;
use crate::error::CloseReason;
use crate::id::ConnId;
use crate::limits::READY_EVENTS_MAX;
use crate::shard::{Shard, SocketGuard};
use glommio::net::TcpStream;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;

/// What the reader keeps of one connection.
struct Reading {
    conn: Rc<ConnHandle>,
    socket: OwnedFd,
    inbound: Inbound,
    /// Counts the socket as open until it is closed.
    tracked: SocketGuard,
}

pub struct Reader {
    epoll: OwnedFd,
    reading: RefCell<HashMap<ConnId, Reading, ahash::RandomState>>,
}

impl Reader {
    pub fn new() -> io::Result<Reader> {
        // SAFETY: epoll_create1 has no memory arguments.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Reader {
            // SAFETY: a new descriptor, owned by nothing else.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            reading: RefCell::new(HashMap::default()),
        })
    }

    /// Takes over reading a joined plain connection; its session's task
    /// ends. Frames the client already sent are read at the next turn.
    pub fn adopt(
        &self,
        shard: &Rc<Shard>,
        conn: Rc<ConnHandle>,
        tcp: TcpStream,
        inbound: Inbound,
        tracked: SocketGuard,
    ) {
        // SAFETY: the stream gave the descriptor up to us.
        let socket = unsafe { OwnedFd::from_raw_fd(tcp.into_raw_fd()) };
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: conn.id().0,
        };
        // SAFETY: both descriptors are open; `event` outlives the call.
        let added = unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut event,
            )
        };
        if added < 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "epoll_ctl add failed");
            conn.end(CloseReason::PeerGone);
            return close_read(shard, conn, socket, tracked);
        }
        conn.set_read_by_shard();
        let reading = Reading {
            conn: conn.clone(),
            socket,
            inbound,
            tracked,
        };
        self.reading.borrow_mut().insert(conn.id(), reading);
    }

    /// Reads a ready connection once and handles what came; an end is
    /// recorded on the connection (the flush task releases it).
    fn read_ready(&self, shard: &Shard, id: ConnId) {
        let mut table = self.reading.borrow_mut();
        let Some(r) = table.get_mut(&id) else {
            return; // released earlier in this turn
        };
        if r.conn.ended().is_some() {
            return;
        }
        let fd = r.socket.as_raw_fd();
        let outcome = match r.inbound.carry_room(shard) {
            None => {
                let mut shared = shard.read_buffer().borrow_mut();
                match recv(fd, &mut shared) {
                    Ok(n) => r
                        .inbound
                        .received_shared(shard, &r.conn, &mut shared[..n])
                        .map(|()| n),
                    Err(None) => return,
                    Err(Some(reason)) => Err(reason),
                }
            }
            Some((start, room)) => match recv(fd, room) {
                Ok(n) => r
                    .inbound
                    .received_carried(shard, &r.conn, start, n)
                    .map(|()| n),
                Err(None) => return r.inbound.unread(start),
                Err(Some(reason)) => Err(reason),
            },
        };
        match outcome {
            Ok(n) => {
                shard.counters().bytes_in.add(n as u64);
                r.conn.heard_from(shard.clock_ms());
            }
            Err(reason) => {
                r.conn.end(reason);
            }
        }
    }

    /// Hands an ended connection back: out of epoll, then closed in a task
    /// of its own. For the flush task, which the end woke.
    pub fn release(&self, shard: &Rc<Shard>, id: ConnId) {
        let Some(r) = self.reading.borrow_mut().remove(&id) else {
            return;
        };
        // SAFETY: both descriptors are open. A failure leaves nothing to
        // undo: closing the socket removes it anyway.
        unsafe {
            libc::epoll_ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                r.socket.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        close_read(shard, r.conn, r.socket, r.tracked);
    }

    /// Frees what a crowd made the table grow to, once it left (the sweep).
    pub fn shrink_idle(&self) {
        crate::shard::shrink_map(&mut self.reading.borrow_mut());
    }
}

/// The shard's reader task: waits until a socket is readable, reads each
/// ready one once per turn, and pauses while a forward link is congested.
pub async fn run(shard: Rc<Shard>) {
    let reader = shard.reader();
    let epoll = reader.epoll.as_raw_fd();
    let mut ready = vec![libc::epoll_event { events: 0, u64: 0 }; READY_EVENTS_MAX];
    loop {
        // Backpressure: read no more while a forward queue is congested.
        shard.forward_room().await;
        if let Err(e) = glommio::net::wait_readable(epoll).await {
            tracing::warn!(error = %e, "waiting for readable sockets failed");
            glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        }
        loop {
            let n = wait(epoll, &mut ready);
            for event in &ready[..n] {
                if !shard.has_forward_room() {
                    break; // level-triggered: the rest come back next turn
                }
                reader.read_ready(&shard, ConnId(event.u64));
            }
            if n < ready.len() || !shard.has_forward_room() {
                break;
            }
            // More are ready than one turn takes: let this round's flush
            // and the other tasks run first.
            futures_lite::future::yield_now().await;
        }
    }
}

/// The ready sockets, without waiting.
fn wait(epoll: RawFd, ready: &mut [libc::epoll_event]) -> usize {
    // SAFETY: `ready` is valid for `len` events.
    let n = unsafe { libc::epoll_wait(epoll, ready.as_mut_ptr(), ready.len() as i32, 0) };
    n.max(0) as usize
}

/// One `recv` without waiting: `Err(None)` if nothing was there, `Err(Some)`
/// if the peer is gone.
pub(super) fn recv(fd: RawFd, buf: &mut [u8]) -> Result<usize, Option<CloseReason>> {
    // SAFETY: `buf` is valid for `len` bytes.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    match n {
        0 => Err(Some(CloseReason::PeerGone)),
        n if n > 0 => Ok(n as usize),
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Err(None),
            _ => Err(Some(CloseReason::PeerGone)),
        },
    }
}
