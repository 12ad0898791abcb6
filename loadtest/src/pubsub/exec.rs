//! One executor's tasks: its share of the plan's connections joining
//! (receivers first), publishers on their schedule, and a tick to the main
//! thread every second.

use super::push::push_publisher;
use super::recv::{epoll_pump, EpollSet, Receiver};
use super::state::*;
use crate::net;
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

/// How long a connection refused with `429` keeps retrying (once a second).
pub const RETRY_429_FOR: Duration = Duration::from_secs(30);

/// One executor: its share of connections and publishers, then a tick per
/// second.
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
    let pump = local
        .epoll
        .is_some()
        .then(|| spawn_local(epoll_pump(local.clone())));
    let stats = run_executor(&local, n_exec, ticks).await;
    // The pump may be blocked in glommio's helper thread (at most 20 ms):
    // the executor must outlive that call, or the helper thread panics.
    local.shared.stop.store(true, Relaxed);
    if let Some(pump) = pump {
        pump.await;
    }
    // The epoll set's receivers hold `local` (a cycle): drop them here, or
    // their sockets stay open after the run (a sweep's steps then add up
    // to the open-file limit).
    if let Some(set) = &local.epoll {
        set.borrow_mut().slots.clear();
    }
    stats
}

async fn run_executor(local: &Rc<Local>, n_exec: usize, ticks: mpsc::Sender<Tick>) -> ExecStats {
    let shared = local.shared.clone();
    let exec = local.exec;
    let plan = &shared.plan;
    let mine: Vec<usize> = (exec..plan.conns.len()).step_by(n_exec).collect();
    let (receivers, others): (Vec<usize>, Vec<usize>) =
        mine.iter().partition(|&&i| plan.conns[i].receives);
    for &i in &receivers {
        spawn_local(connection(local.clone(), i)).detach();
    }
    // Publisher-only connections join after the receivers, so that their
    // join events are the last ones the receivers see before the messages.
    if !wait_settled(local, receivers.len()).await {
        return local.stats.replace(ExecStats::new());
    }
    for &i in &others {
        spawn_local(connection(local.clone(), i)).detach();
    }
    let mut pushers = 0;
    if plan.push.is_some() {
        for p in (exec..plan.pub_channel.len()).step_by(n_exec) {
            spawn_local(push_publisher(local.clone(), p as u32)).detach();
            pushers += 1;
        }
    }
    if !wait_settled(local, mine.len() + pushers).await {
        return local.stats.replace(ExecStats::new());
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
                disconnected: st.disconnected(),
            }
        };
        if ticks.send(tick).is_err() {
            break;
        }
        sec += 1;
    }
    local.stats.replace(ExecStats::new())
}

/// Waits until `n` of this executor's connections have joined or failed;
/// false when the run was abandoned.
async fn wait_settled(local: &Local, n: usize) -> bool {
    while local.settled.get() < n {
        if local.shared.abort.load(Relaxed) {
            return false;
        }
        sleep(Duration::from_millis(5)).await;
    }
    true
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

/// Connection `i` of the plan: joins, hands its reading to the epoll pump
/// (or reads it here), and publishes when it is a publisher.
pub async fn connection(local: Rc<Local>, i: usize) {
    let spec = local.shared.plan.conns[i];
    let role = if spec.receives {
        Role::Member
    } else {
        Role::Publisher
    };
    let Some((reader, writer, rx)) = join(&local, i, role).await else {
        return;
    };
    match spec.publisher {
        Some(p) => {
            match &local.epoll {
                Some(set) => set.borrow_mut().add(rx, reader, None),
                None => {
                    spawn_local(rx.run(reader, None)).detach();
                }
            }
            publish_ws(local, spec, p, writer).await;
        }
        None => match &local.epoll {
            Some(set) => set.borrow_mut().add(rx, reader, Some(writer)),
            None => rx.run(reader, Some(writer)).await,
        },
    }
}

/// Connects, handshakes and waits for the connection's own join event, with
/// a permit of the executor's connect semaphore held throughout. Counts the
/// connection as settled either way.
pub async fn join(local: &Rc<Local>, i: usize, role: Role) -> Option<(Reader, Writer, Receiver)> {
    let shared = &local.shared;
    let give_up = sys::now_ns() + RETRY_429_FOR.as_nanos() as u64;
    let result = loop {
        let result = {
            let _permit = local.connect.acquire_static_permit(1).await.ok()?;
            try_join(local, i, role).await
        };
        // A relay's per-IP upgrade limit answers 429: wait (without holding
        // a permit) and try again, for a while; the summary counts retries.
        match &result {
            Err(SetupError::Refused(status))
                if status.starts_with("429") && sys::now_ns() < give_up =>
            {
                shared.retried_429.fetch_add(1, Relaxed);
                sleep(Duration::from_secs(1)).await;
            }
            _ => break result,
        }
    };
    local.settled.set(local.settled.get() + 1);
    match result {
        Ok(joined) => {
            match role {
                Role::Member => {
                    let ch = shared.plan.conns[i].channel as usize;
                    shared.receivers_on[ch].fetch_add(1, Relaxed);
                    shared.members_joined.fetch_add(1, Relaxed)
                }
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
    i: usize,
    role: Role,
) -> Result<(Reader, Writer, Receiver), SetupError> {
    let shared = &local.shared;
    let spec = shared.plan.conns[i];
    let channel = &shared.plan.channels[spec.channel as usize];
    let deadline = sys::now_ns() + shared.join_timeout.as_nanos() as u64;
    let remaining = || Duration::from_nanos(deadline.saturating_sub(sys::now_ns()).max(1));
    let mut stream = timed(
        remaining(),
        net::connect(shared.target.addr, shared.sources.for_conn(i), remaining()),
    )
    .await
    .ok_or(SetupError::Timeout("connect"))??;
    let _ = stream.set_nodelay(true);
    let mut rx = Receiver::new(
        local.clone(),
        role,
        stream.as_raw_fd(),
        channel,
        spec.publisher,
    );
    let (head_len, filled) = timed(
        remaining(),
        ws::handshake(&mut stream, &channel.request, &mut rx.buf),
    )
    .await
    .ok_or(SetupError::Timeout("handshake"))??;
    rx.start = head_len;
    rx.filled = filled;
    // NATS: CONNECT, SUB (receivers), PING; joined at the PONG.
    let mut join_frames = Vec::new();
    shared
        .wire
        .join_frames(&channel.name, spec.receives, &mut join_frames);
    if !join_frames.is_empty() {
        timed(remaining(), stream.write_all(&join_frames))
            .await
            .ok_or(SetupError::Timeout("join"))?
            .map_err(|e| SetupError::Io(e.to_string()))?;
    }
    let (mut reader, mut writer) = futures_lite::io::split(stream);
    loop {
        rx.process();
        if !rx.pong.is_empty() {
            // NATS pings during the setup, too.
            if let Err(e) = writer.write_all(&rx.pong).await {
                return Err(SetupError::ClosedBeforeJoin(format!("write: {e}")));
            }
            rx.pong.clear();
        }
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

/// The open-loop schedule of one publisher: message k of publisher p (of
/// P) is due at `t0 + (k*P + p) / rate`, so P publishers together send
/// `rate` messages a second, evenly spaced. A publisher that is behind sends
/// late (latency still counts from the due time); past `give_up` (half the
/// grace after the end) it stops and counts the rest as unsent.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub t0: u64,
    pub end: u64,
    pub give_up: u64,
    pub publisher: u64,
    pub publishers: u64,
    pub ns_per_msg: f64,
    /// The next message's sequence number.
    pub k: u64,
}

/// What a publisher does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Send message `k` due at this time (sleep until then if early).
    At(u64),
    /// Every message due before the end went out.
    Done,
    /// Behind past `give_up`: these many were never sent.
    GiveUp(u64),
}

impl Schedule {
    pub fn new(shared: &Shared, t0: u64, publisher: u32) -> Schedule {
        let end = t0 + shared.duration_ns;
        Schedule {
            t0,
            end,
            give_up: end + shared.grace_ns / 2,
            publisher: publisher as u64,
            publishers: shared.plan.pub_channel.len() as u64,
            ns_per_msg: 1e9 / shared.rate,
            k: 0,
        }
    }

    pub fn at(&self, k: u64) -> u64 {
        self.t0 + ((k * self.publishers + self.publisher) as f64 * self.ns_per_msg) as u64
    }

    pub fn next(&self, now: u64) -> Due {
        let at = self.at(self.k);
        if at >= self.end {
            return Due::Done;
        }
        if now >= self.give_up {
            let mut unsent = 0;
            while self.at(self.k + unsent) < self.end {
                unsent += 1;
            }
            return Due::GiveUp(unsent);
        }
        Due::At(at)
    }
}

/// Sleeps until `at` unless the run stops first; false when it stopped.
pub async fn sleep_until(shared: &Shared, at: u64) -> bool {
    let now = sys::now_ns();
    if now < at {
        sleep(Duration::from_nanos(at - now)).await;
    }
    !shared.stop.load(Relaxed)
}

/// The due time of the publisher's next message, once it has come; `None`
/// when the publisher is done: every message went out, it fell too far
/// behind (the rest counted as unsent), or the run stopped.
pub async fn next_due(local: &Local, sched: &Schedule) -> Option<u64> {
    let at = match sched.next(sys::now_ns()) {
        Due::At(at) => at,
        Due::Done => return None,
        Due::GiveUp(unsent) => {
            local.stats.borrow_mut().unsent += unsent;
            return None;
        }
    };
    sleep_until(&local.shared, at).await.then_some(at)
}

/// A WebSocket publisher: one frame per message, one write per frame.
pub async fn publish_ws(local: Rc<Local>, spec: ConnSpec, p: u32, mut writer: Writer) {
    let shared = local.shared.clone();
    let Some(t0) = wait_for_t0(&shared).await else {
        return;
    };
    let channel = &shared.plan.channels[spec.channel as usize];
    let mut sched = Schedule::new(&shared, t0, p);
    let mut payload = PayloadBuilder::new(shared.payload_bytes);
    let mut frame = Vec::with_capacity(shared.payload_bytes + 64);
    loop {
        let Some(at) = next_due(&local, &sched).await else {
            break;
        };
        frame.clear();
        let body = payload.payload(p as u64, sched.k, at);
        shared.wire.publish_frame(&channel.name, body, &mut frame);
        if let Err(e) = writer.write_all(&frame).await {
            *local
                .stats
                .borrow_mut()
                .disconnects
                .entry(format!("publisher write: {e}"))
                .or_default() += 1;
            break;
        }
        let owed = shared.receivers_on[spec.channel as usize]
            .load(Relaxed)
            .saturating_sub(spec.receives as u32);
        local.published(at, owed as u64);
        sched.k += 1;
    }
    shared.publishers_done.fetch_add(1, Relaxed);
}

impl Local {
    /// Counts one message written (due at `at`) that owes `owed` deliveries.
    pub fn published(&self, at: u64, owed: u64) {
        let now = sys::now_ns();
        {
            let mut st = self.stats.borrow_mut();
            st.published += 1;
            st.expected += owed;
            st.lag.saturating_record(now.saturating_sub(at) / 1000);
        }
        self.shared.published.fetch_add(1, Relaxed);
        self.shared.expected.fetch_add(owed, Relaxed);
    }
}

/// Builds `[<publisher>,<seq>,<scheduled_ns>,"<padding>"]` padded to the
/// target size.
pub struct PayloadBuilder {
    pub target: usize,
    pub payload: Vec<u8>,
}

impl PayloadBuilder {
    pub fn new(target: usize) -> PayloadBuilder {
        PayloadBuilder {
            target,
            payload: Vec::with_capacity(target + 64),
        }
    }

    pub fn payload(&mut self, publisher: u64, seq: u64, scheduled_ns: u64) -> &[u8] {
        use std::io::Write;
        self.payload.clear();
        let _ = write!(self.payload, "[{publisher},{seq},{scheduled_ns},\"");
        let pad = self.target.saturating_sub(self.payload.len() + 2);
        self.payload.resize(self.payload.len() + pad, b'x');
        self.payload.extend_from_slice(b"\"]");
        &self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn payloads_have_the_asked_size_and_a_stamp() {
        let mut b = PayloadBuilder::new(64);
        let body = b.payload(3, 12345, 987_654_321_000).to_vec();
        assert_eq!(body.len(), 64);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v[0], 3);
        assert_eq!(v[1], 12345);
        assert_eq!(v[2], 987_654_321_000u64);
        // As the relay would embed it.
        let mut env = br#"{"id":"x1","uid":"abcdef","date":1,"message":"#.to_vec();
        env.extend_from_slice(&body);
        env.push(b'}');
        assert_eq!(
            crate::proto::find_stamp(&env, 64),
            Some((3, 12345, 987_654_321_000))
        );
    }

    #[test]
    fn tiny_payloads_stay_valid_json() {
        let mut b = PayloadBuilder::new(1);
        assert_eq!(b.payload(0, 0, 5), br#"[0,0,5,""]"#);
    }

    fn schedule(publisher: u64, publishers: u64, rate: f64) -> Schedule {
        Schedule {
            t0: 1_000,
            end: 1_000 + NS,
            give_up: 1_000 + NS + NS / 2,
            publisher,
            publishers,
            ns_per_msg: 1e9 / rate,
            k: 0,
        }
    }

    #[test]
    fn publishers_interleave_evenly() {
        // 4 publishers at 400 msg/s in all: one message every 2.5 ms overall.
        let times: Vec<u64> = (0..4).map(|p| schedule(p, 4, 400.0).at(1)).collect();
        assert_eq!(
            times,
            vec![1_000 + 10_000_000, 12_501_000, 15_001_000, 17_501_000]
        );
        // 100 messages each within the second.
        let mut s = schedule(3, 4, 400.0);
        let mut sent = 0;
        while let Due::At(_) = s.next(0) {
            s.k += 1;
            sent += 1;
        }
        assert_eq!(sent, 100);
        assert_eq!(s.next(0), Due::Done);
    }

    #[test]
    fn a_publisher_far_behind_gives_up_and_counts_the_rest() {
        let mut s = schedule(0, 1, 10.0);
        s.k = 4;
        assert_eq!(s.next(s.give_up), Due::GiveUp(6));
        assert_eq!(s.next(s.give_up - 1), Due::At(1_000 + 400_000_000));
    }
}
