//! The shard's reader: one task reads every joined plain connection of its
//! shard, as uWebSockets' event loop does. The sockets are registered in
//! one epoll instance (level-triggered); glommio waits for that instance to
//! become readable (one multishot io_uring poll for the whole shard, armed
//! once); the task then
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
//! patched copy (vendor/glommio/PATCHED.md, changes 5 and 11) adds
//! `glommio::net::wait_readable`, `glommio::net::ReadableWatch` and
//! `TcpStream`'s `IntoRawFd`.

use super::handle::ConnHandle;
use super::inbound::Inbound;
use super::session::close_read;
use crate::error::CloseReason;
use crate::limits::{DIRECT_ROUNDS_MAX, DIRECT_ROUND_READY_MIN, READY_EVENTS_MAX};
use crate::shard::{Shard, SocketGuard};
use glommio::net::TcpStream;
use std::cell::RefCell;
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
    table: RefCell<Table<Reading>>,
}

/// Slots a chunk of the reader's table holds: 1,024 of 136 bytes, a little
/// over the allocator's mmap threshold, so each chunk is a mapping of its
/// own, handed back whole.
const CHUNK_SLOTS: usize = 1024;

/// The reader's table: slots in fixed chunks, so that it grows by a chunk
/// at a time (a hash map or a `Vec` doubles, and at 19,000 connections
/// held 1.7 slots per connection), addressed by the slot number that epoll
/// hands back.
struct Table<T> {
    chunks: Vec<Vec<Option<T>>>,
    /// Slots given back, taken first.
    free: Vec<u32>,
    used: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            chunks: Vec::new(),
            free: Vec::new(),
            used: 0,
        }
    }
}

impl<T> Table<T> {
    fn insert(&mut self, reading: T) -> u32 {
        self.used += 1;
        if let Some(slot) = self.free.pop() {
            self.chunks[slot as usize / CHUNK_SLOTS][slot as usize % CHUNK_SLOTS] = Some(reading);
            return slot;
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK_SLOTS) {
            self.chunks.push(Vec::with_capacity(CHUNK_SLOTS));
        }
        let chunk = self.chunks.len() - 1;
        let last = &mut self.chunks[chunk];
        last.push(Some(reading));
        (chunk * CHUNK_SLOTS + last.len() - 1) as u32
    }

    fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        let chunk = self.chunks.get_mut(slot as usize / CHUNK_SLOTS)?;
        chunk.get_mut(slot as usize % CHUNK_SLOTS)?.as_mut()
    }

    fn remove(&mut self, slot: u32) -> Option<T> {
        let chunk = self.chunks.get_mut(slot as usize / CHUNK_SLOTS)?;
        let reading = chunk.get_mut(slot as usize % CHUNK_SLOTS)?.take()?;
        self.used -= 1;
        self.free.push(slot);
        Some(reading)
    }

    /// Once every connection left: all chunks handed back.
    fn shrink_idle(&mut self) {
        if self.used == 0 && !self.chunks.is_empty() {
            *self = Table::default();
        }
    }
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
            table: RefCell::default(),
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
        let fd = socket.as_raw_fd();
        let reading = Reading {
            conn: conn.clone(),
            socket,
            inbound,
            tracked,
        };
        let slot = self.table.borrow_mut().insert(reading);
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: slot as u64,
        };
        // SAFETY: both descriptors are open; `event` outlives the call.
        let added =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if added < 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "epoll_ctl add failed");
            let r = self.table.borrow_mut().remove(slot).expect("just inserted");
            conn.end(CloseReason::PeerGone);
            return close_read(shard, conn, r.socket, r.tracked);
        }
        conn.set_read_slot(slot);
    }

    /// Reads a ready connection once and handles what came; an end is
    /// recorded on the connection (the flush task releases it). Returns
    /// whether the read filled its buffer (more may be waiting).
    fn read_ready(&self, shard: &Shard, slot: u32) -> bool {
        let mut table = self.table.borrow_mut();
        let Some(r) = table.get_mut(slot) else {
            return false;
        };
        if r.conn.ended().is_some() {
            return false;
        }
        let fd = r.socket.as_raw_fd();
        let mut full = false;
        let outcome = match r.inbound.carry_room(shard) {
            None => {
                let mut shared = shard.read_buffer().borrow_mut();
                match recv(fd, &mut shared) {
                    Ok(n) => {
                        full = n == shared.len();
                        r.inbound
                            .received_shared(shard, &r.conn, &mut shared[..n])
                            .map(|()| n)
                    }
                    Err(None) => return false,
                    Err(Some(reason)) => Err(reason),
                }
            }
            Some((start, room)) => match recv(fd, room) {
                Ok(n) => {
                    full = n == room.len();
                    r.inbound
                        .received_carried(shard, &r.conn, start, n)
                        .map(|()| n)
                }
                Err(None) => {
                    r.inbound.unread(start);
                    return false;
                }
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
        full
    }

    /// Hands an ended connection back: out of epoll, then closed in a task
    /// of its own. For the flush task, which the end woke.
    pub fn release(&self, shard: &Rc<Shard>, slot: u32) {
        let Some(r) = self.table.borrow_mut().remove(slot) else {
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
        self.table.borrow_mut().shrink_idle();
    }
}

/// The shard's reader task: waits until a socket is readable, reads each
/// ready one once per turn, and pauses while a forward link is congested.
pub async fn run(shard: Rc<Shard>) {
    let reader = shard.reader();
    let epoll = reader.epoll.as_raw_fd();
    let mut ready = vec![libc::epoll_event { events: 0, u64: 0 }; READY_EVENTS_MAX];
    // The runtime's wait: one multishot poll on the epoll set, armed once,
    // woken by every socket's new data; no request submitted per wake-up.
    let mut watch = glommio::net::ReadableWatch::new(epoll);
    let mut direct_rounds = 0;
    let mut last = 0;
    // Whether sockets may still be readable with no new wake-up coming: the
    // last round left some unread (a full read, a congested forward link,
    // more ready than one round takes).
    let mut left = false;
    loop {
        // Backpressure: read no more while a forward queue is congested.
        shard.forward_room().await;
        // While busy, the sockets are polled again after each round (one
        // `epoll_wait`, no runtime turn); the runtime's wait once nothing
        // was ready, after a round of fewer than `DIRECT_ROUND_READY_MIN`
        // sockets (light load: the direct poll would mostly find none, one
        // call wasted per wake-up), or after `DIRECT_ROUNDS_MAX` rounds, so
        // its own completions (accepts, timers, the links) are reaped no
        // later. The watch sees new data only: with some left unread, the
        // runtime's wait is a poll of the set's level (`wait_readable`).
        let mut n = 0;
        if polls_directly(direct_rounds, left, last) {
            n = wait(epoll, &mut ready);
            direct_rounds += 1;
            left &= n > 0;
        }
        if n == 0 {
            direct_rounds = 0;
            let waited = if left {
                glommio::net::wait_readable(epoll).await
            } else {
                watch.readable().await
            };
            if let Err(e) = waited {
                tracing::warn!(error = %e, "waiting for readable sockets failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
            n = wait(epoll, &mut ready);
        }
        last = n;
        left = n == READY_EVENTS_MAX;
        for event in &ready[..n] {
            if !shard.has_forward_room() {
                left = true; // level-triggered: the rest come back next turn
                break;
            }
            left |= reader.read_ready(&shard, event.u64 as u32);
        }
        // Let this round's flush and the other tasks run before a direct
        // poll. The runtime's wait lets them run by itself: at light load
        // (a round of one socket) that saves a turn of this task.
        if polls_directly(direct_rounds, left, last) {
            futures_lite::future::yield_now().await;
        }
    }
}

/// Whether the next round polls the sockets directly (`epoll_wait`, no
/// runtime turn) rather than through the runtime's wait.
fn polls_directly(direct_rounds: u32, left: bool, last: usize) -> bool {
    direct_rounds < DIRECT_ROUNDS_MAX && (left || last >= DIRECT_ROUND_READY_MIN)
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
    // A raw `recvfrom`: libc's `recv` is a cancellation point, two more
    // calls per read, and no thread here is ever cancelled.
    // SAFETY: `buf` is valid for `len` bytes.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd as libc::c_long,
            buf.as_mut_ptr(),
            buf.len(),
            libc::MSG_DONTWAIT as libc::c_long,
            0usize,
            0usize,
        )
    };
    match n {
        0 => Err(Some(CloseReason::PeerGone)),
        n if n > 0 => Ok(n as usize),
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Err(None),
            _ => Err(Some(CloseReason::PeerGone)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reuses_slots_grows_by_chunks_and_gives_them_back_once_empty() {
        let mut t = Table::default();
        let slots: Vec<u32> = (0..2500).map(|i| t.insert(i)).collect();
        assert_eq!(slots, (0..2500).collect::<Vec<u32>>());
        assert_eq!(t.chunks.len(), 3, "a chunk at a time");
        assert!(t.chunks.iter().all(|c| c.capacity() == CHUNK_SLOTS));
        assert_eq!(t.remove(1500), Some(1500));
        assert_eq!(t.remove(1500), None, "once");
        assert_eq!(t.get_mut(1500), None);
        assert_eq!(t.get_mut(99_999), None);
        assert_eq!(t.insert(7), 1500, "a free slot first");
        assert_eq!(t.get_mut(1500), Some(&mut 7));
        t.shrink_idle();
        assert_eq!(t.chunks.len(), 3, "not while anyone is left");
        for slot in 0..2500 {
            t.remove(slot);
        }
        t.shrink_idle();
        assert!(t.chunks.is_empty() && t.free.is_empty());
        assert_eq!(t.insert(1), 0);
    }
}
