//! One executor's tasks: members joining, publishers on their schedule, and
//! a tick to the main thread every second.

use super::recv::{epoll_pump, EpollSet, Receiver};
use super::state::*;
use crate::sys;
use crate::ws::{self, SetupError};
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use glommio::spawn_local;
use glommio::sync::Semaphore;
use glommio::timer::sleep;
use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// One executor: its share of members and publishers, then a tick per second.
pub async fn executor(
    shared: Arc<Shared>,
    exec: usize,
    n_exec: usize,
    concurrency: usize,
    ticks: mpsc::Sender<Tick>,
) -> ExecStats {
    let local = Rc::new(Local {
        shared: shared.clone(),
        exec,
        stats: RefCell::new(ExecStats::new()),
        connect: Rc::new(Semaphore::new(concurrency as u64)),
        settled: Cell::new(0),
        epoll: match shared.recv {
            RecvMode::Uring => None,
            RecvMode::Epoll => match EpollSet::new() {
                Ok(set) => Some(RefCell::new(set)),
                Err(e) => {
                    eprintln!("WARNING: epoll_create1 failed ({e}); reading through io_uring");
                    None
                }
            },
        },
    });
    if local.epoll.is_some() {
        spawn_local(epoll_pump(local.clone())).detach();
    }
    let my_members = (exec..shared.members).step_by(n_exec).count();
    let my_publishers: Vec<usize> = (exec..shared.publishers).step_by(n_exec).collect();
    for _ in 0..my_members {
        spawn_local(member(local.clone())).detach();
    }
    // Publishers join after the members, so that their join events are the
    // last ones the members see before the messages.
    while local.settled.get() < my_members {
        if shared.abort.load(Relaxed) {
            return local.stats.replace(ExecStats::new());
        }
        sleep(Duration::from_millis(5)).await;
    }
    // Publishers share the executor's default task queue with the members.
    // (A separate `Latency::Matters` queue cut their lag under load, but
    // once stalled glommio's timers for 20 s: not worth it.)
    for &p in &my_publishers {
        spawn_local(publisher(local.clone(), p)).detach();
    }
    while local.settled.get() < my_members + my_publishers.len() {
        if shared.abort.load(Relaxed) {
            return local.stats.replace(ExecStats::new());
        }
        sleep(Duration::from_millis(5)).await;
    }
    shared.setup_done.fetch_add(1, Relaxed);

    let Some(t0) = wait_for_t0(&shared).await else {
        return local.stats.replace(ExecStats::new());
    };
    let mut sec = 0u64;
    'ticks: loop {
        let at = t0 + sec * NS;
        loop {
            if shared.stop.load(Relaxed) {
                break 'ticks;
            }
            let now = sys::now_ns();
            if now >= at {
                break;
            }
            sleep(Duration::from_nanos((at - now).min(20_000_000))).await;
        }
        let tick = {
            let mut st = local.stats.borrow_mut();
            let h = st.tick.clone();
            st.tick.reset();
            Tick {
                exec,
                sec,
                delivered: st.delivered,
                published: st.published,
                tick: h,
                cpu_ns: sys::thread_cpu_ns(),
            }
        };
        if ticks.send(tick).is_err() {
            break;
        }
        sec += 1;
    }
    local.stats.replace(ExecStats::new())
}

pub async fn wait_for_t0(shared: &Shared) -> Option<u64> {
    loop {
        if shared.abort.load(Relaxed) || shared.stop.load(Relaxed) {
            return None;
        }
        let t0 = shared.t0.load(Relaxed);
        if t0 != 0 {
            return Some(t0);
        }
        sleep(Duration::from_millis(1)).await;
    }
}

pub type Reader = ReadHalf<TcpStream>;
pub type Writer = WriteHalf<TcpStream>;

pub async fn member(local: Rc<Local>) {
    if let Some((reader, writer, rx)) = join(&local, Role::Member).await {
        match &local.epoll {
            Some(set) => set.borrow_mut().add(rx, reader, writer),
            None => rx.run(reader, Some(writer)).await,
        }
    }
}

/// Connects, handshakes and waits for the connection's own join event, with
/// a permit of the executor's connect semaphore held throughout. Counts the
/// connection as settled either way.
pub async fn join(local: &Rc<Local>, role: Role) -> Option<(Reader, Writer, Receiver)> {
    let shared = &local.shared;
    let result = {
        let _permit = local.connect.acquire_static_permit(1).await.ok()?;
        try_join(local, role).await
    };
    local.settled.set(local.settled.get() + 1);
    match result {
        Ok(joined) => {
            match role {
                Role::Member => shared.members_joined.fetch_add(1, Relaxed),
                Role::Publisher => shared.publishers_joined.fetch_add(1, Relaxed),
            };
            Some(joined)
        }
        Err(e) => {
            shared.fail(&e);
            None
        }
    }
}

pub async fn try_join(
    local: &Rc<Local>,
    role: Role,
) -> Result<(Reader, Writer, Receiver), SetupError> {
    let shared = &local.shared;
    let deadline = sys::now_ns() + shared.join_timeout.as_nanos() as u64;
    let remaining = || Duration::from_nanos(deadline.saturating_sub(sys::now_ns()).max(1));
    let mut stream = TcpStream::connect_timeout(shared.target.addr, remaining())
        .await
        .map_err(|e| SetupError::Connect(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let mut rx = Receiver::new(local.clone(), role, stream.as_raw_fd());
    let (head_len, filled) = timed(
        remaining(),
        ws::handshake(&mut stream, &shared.request, &mut rx.buf),
    )
    .await
    .ok_or(SetupError::Timeout("handshake"))??;
    rx.start = head_len;
    rx.filled = filled;
    let (mut reader, writer) = futures_lite::io::split(stream);
    loop {
        rx.process();
        if rx.joined {
            return Ok((reader, writer, rx));
        }
        if let Some(why) = rx.closed.take() {
            return Err(SetupError::ClosedBeforeJoin(why));
        }
        match timed(remaining(), rx.read(&mut reader)).await {
            None => return Err(SetupError::Timeout("own join event")),
            Some(Ok(0)) => return Err(SetupError::ClosedBeforeJoin("eof".into())),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(SetupError::ClosedBeforeJoin(e.to_string())),
        }
    }
}

/// `f`, or `None` after `d`.
pub async fn timed<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(f.await) }, async {
        sleep(d).await;
        None
    })
    .await
}

pub async fn publisher(local: Rc<Local>, idx: usize) {
    let Some((reader, mut writer, rx)) = join(&local, Role::Publisher).await else {
        return;
    };
    // Publishers are members too: drain what the relay sends them.
    spawn_local(rx.run(reader, None)).detach();
    let shared = local.shared.clone();
    let Some(t0) = wait_for_t0(&shared).await else {
        return;
    };
    let end = t0 + shared.duration_ns;
    // Late messages still go out (open loop), but not past half the grace.
    let give_up = end + shared.grace_ns / 2;
    let p = shared.publishers as f64;
    let ns_per_msg = 1e9 / shared.rate;
    let sched = |k: u64| t0 + ((k as f64 * p + idx as f64) * ns_per_msg) as u64;
    let mut payload = PayloadBuilder::new(shared.payload_bytes);
    let mut k = 0u64;
    loop {
        let at = sched(k);
        if at >= end {
            break;
        }
        let mut now = sys::now_ns();
        if now >= give_up {
            // Still behind well after the end: what is left was never sent.
            let mut unsent = 0;
            while sched(k + unsent) < end {
                unsent += 1;
            }
            local.stats.borrow_mut().unsent += unsent;
            break;
        }
        if now < at {
            sleep(Duration::from_nanos(at - now)).await;
            if shared.stop.load(Relaxed) {
                break;
            }
        }
        let frame = payload.frame(idx as u64, k, at);
        if let Err(e) = writer.write_all(frame).await {
            local
                .stats
                .borrow_mut()
                .disconnects
                .entry(format!("publisher write: {e}"))
                .and_modify(|n| *n += 1)
                .or_insert(1);
            break;
        }
        now = sys::now_ns();
        {
            let mut st = local.stats.borrow_mut();
            st.published += 1;
            st.lag.saturating_record(now.saturating_sub(at) / 1000);
        }
        shared.published.fetch_add(1, Relaxed);
        k += 1;
    }
    shared.publishers_done.fetch_add(1, Relaxed);
}

/// Builds `[<publisher>,<seq>,<scheduled_ns>,"<padding>"]` padded to the
/// target size, as one masked frame.
pub struct PayloadBuilder {
    pub target: usize,
    pub payload: Vec<u8>,
    pub frame: Vec<u8>,
}

impl PayloadBuilder {
    pub fn new(target: usize) -> PayloadBuilder {
        PayloadBuilder {
            target,
            payload: Vec::with_capacity(target + 64),
            frame: Vec::with_capacity(target + 80),
        }
    }

    fn frame(&mut self, publisher: u64, seq: u64, scheduled_ns: u64) -> &[u8] {
        use std::io::Write;
        self.payload.clear();
        let _ = write!(self.payload, "[{publisher},{seq},{scheduled_ns},\"");
        let pad = self.target.saturating_sub(self.payload.len() + 2);
        self.payload.resize(self.payload.len() + pad, b'x');
        self.payload.extend_from_slice(b"\"]");
        self.frame.clear();
        ws::client_frame(ws::OP_TEXT, &self.payload, &mut self.frame);
        &self.frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn payloads_have_the_asked_size_and_a_stamp() {
        let mut b = PayloadBuilder::new(64);
        let frame = b.frame(3, 12345, 987_654_321_000).to_vec();
        let h = ws::parse_header(&frame).unwrap();
        let mut body = frame[h.header_len..].to_vec();
        ws::mask_in_place(&mut body);
        assert_eq!(body.len(), 64);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v[0], 3);
        assert_eq!(v[1], 12345);
        assert_eq!(v[2], 987_654_321_000u64);
        // As the relay would embed it.
        let mut env = br#"{"id":"x1","uid":"abcdef","date":1,"message":"#.to_vec();
        env.extend_from_slice(&body);
        env.push(b'}');
        assert_eq!(ws::find_stamp(&env, 64), Some((3, 12345, 987_654_321_000)));
    }

    #[test]
    fn tiny_payloads_stay_valid_json() {
        let mut b = PayloadBuilder::new(1);
        let frame = b.frame(0, 0, 5).to_vec();
        let h = ws::parse_header(&frame).unwrap();
        let mut body = frame[h.header_len..].to_vec();
        ws::mask_in_place(&mut body);
        assert_eq!(body, br#"[0,0,5,""]"#);
    }
}
