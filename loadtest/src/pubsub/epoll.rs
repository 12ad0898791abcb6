//! `--recv epoll`: after the join, member sockets leave glommio's io_uring
//! and are read by one pump per executor that polls an epoll set without
//! blocking. Nobody ever sleeps on these sockets, so the relay's sends wake
//! no one: no wake-up IPI, no io_uring task work, per delivery.
//!
//! The executor owns its set (`exec.rs`); the set owns the receivers and
//! their sockets, which hold nothing of the executor but its counters, so
//! the members' sockets close when the executor lets go of the set.

use super::local::Local;
use super::recv::{Reader, Receiver, Writer};
use super::state::Role;
use glommio::timer::sleep;
use std::cell::RefCell;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// One executor's epoll set and the connections in it, by slot (the epoll
/// event's `u64`).
pub struct EpollSet {
    pub epfd: RawFd,
    pub slots: Vec<Option<Slot>>,
}

pub struct Slot {
    pub fd: RawFd,
    pub rx: Receiver,
    /// Keeps the socket open (glommio owns the fd).
    pub _halves: (Reader, Option<Writer>),
}

impl EpollSet {
    pub fn new() -> std::io::Result<EpollSet> {
        // SAFETY: plain syscall.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(EpollSet {
            epfd,
            slots: Vec::new(),
        })
    }

    pub fn add(&mut self, rx: Receiver, reader: Reader, writer: Option<Writer>) {
        let fd = rx.fd;
        let idx = self.slots.len();
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: idx as u64,
        };
        // SAFETY: epfd and fd are open; ev is valid.
        if unsafe { libc::epoll_ctl(self.epfd, libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
            rx.record_disconnect(&format!("epoll_ctl: {}", std::io::Error::last_os_error()));
            return;
        }
        self.slots.push(Some(Slot {
            fd,
            rx,
            _halves: (reader, writer),
        }));
    }

    pub fn remove(&mut self, idx: usize) {
        if let Some(slot) = self.slots[idx].take() {
            // SAFETY: as above; a null event is allowed for DEL.
            unsafe {
                libc::epoll_ctl(
                    self.epfd,
                    libc::EPOLL_CTL_DEL,
                    slot.fd,
                    std::ptr::null_mut(),
                )
            };
        }
    }
}

impl EpollSet {
    /// One recv on each socket epoll found readable, and the frames walked;
    /// returns the reads that carried data.
    pub fn read_ready(&mut self, events: &[libc::epoll_event]) -> u64 {
        let mut reads = 0u64;
        for ev in events {
            let idx = ev.u64 as usize;
            let Some(slot) = self.slots.get_mut(idx).and_then(|s| s.as_mut()) else {
                continue;
            };
            let fd = slot.fd;
            let end = match slot.rx.recv_now(fd) {
                Ok(None) => None,
                Ok(Some(0)) => Some("eof".to_owned()),
                Ok(Some(_)) => {
                    reads += (slot.rx.role == Role::Member) as u64;
                    slot.rx.process();
                    if !slot.rx.pong.is_empty() {
                        // Rare (a ping after 30 s of client silence): one
                        // best-effort non-blocking send.
                        // SAFETY: pong is valid memory of its length.
                        unsafe {
                            libc::send(
                                fd,
                                slot.rx.pong.as_ptr().cast(),
                                slot.rx.pong.len(),
                                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                            )
                        };
                        slot.rx.pong.clear();
                    }
                    slot.rx.closed.take()
                }
                Err(e) => Some(format!("read: {e}")),
            };
            if let Some(why) = end {
                slot.rx.record_disconnect(&why);
                self.remove(idx);
            }
        }
        reads
    }
}

impl Drop for EpollSet {
    fn drop(&mut self) {
        // SAFETY: epfd is ours.
        unsafe { libc::close(self.epfd) };
    }
}

/// How long the pump sleeps when its epoll set has nothing ready: the
/// receive side's added latency, at most, while traffic flows.
pub const EPOLL_IDLE: Duration = Duration::from_micros(50);
/// The pause after a round that read data: long enough that the timer is
/// not already due when first polled, so the pump really yields.
pub const EPOLL_ROUND_YIELD: Duration = Duration::from_micros(5);
/// Empty polls in a row after which the pump blocks instead (in glommio's
/// helper thread, pinned to the same cpu), so an idle generator sleeps.
pub const EPOLL_SPINS: u32 = 8;

/// Reads the set's sockets until the run stops: polls without blocking
/// while traffic flows, sleeps `EPOLL_IDLE` between empty polls, and blocks
/// (up to 20 ms) after `EPOLL_SPINS` of them. The executor awaits its end:
/// its last blocking wait must finish while the executor is still there.
pub async fn pump(set: Rc<RefCell<EpollSet>>, local: Rc<Local>) {
    let epfd = set.borrow().epfd;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut empty = 0u32;
    while !local.shared.stop.load(Relaxed) {
        // SAFETY: events is valid for its length; timeout 0 never blocks.
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), events.len() as i32, 0) };
        if n <= 0 {
            empty += 1;
            if empty < EPOLL_SPINS {
                sleep(EPOLL_IDLE).await;
            } else {
                // Idle: wait for the first readable socket (level-triggered,
                // so the pump's next poll still sees it), at most 20 ms.
                empty = 0;
                glommio::executor()
                    .spawn_blocking(move || {
                        let mut ev = libc::epoll_event { events: 0, u64: 0 };
                        // SAFETY: ev is valid; epfd outlives the run.
                        unsafe { libc::epoll_wait(epfd, &mut ev, 1, 20) };
                    })
                    .await;
            }
            continue;
        }
        empty = 0;
        let reads = set.borrow_mut().read_ready(&events[..n as usize]);
        local.stats.borrow_mut().reads += reads;
        // Through the reactor once per round, so timers (publishers, ticks)
        // and other I/O keep their turn. (A zero sleep would not do: glommio
        // completes an expired timer without yielding, and under constant
        // traffic the pump then starves every other task of the executor.)
        sleep(EPOLL_ROUND_YIELD).await;
    }
}
