//! Joining: a connection connects (from its source address), hands its
//! upgrade request over, and reads until its own join event, with a permit
//! of its executor's connect semaphore held throughout; a `429` is retried
//! without the permit. An HTTP push client only connects. Either way the
//! connection counts as settled, and as joined or failed; what a joined
//! connection then does is the executor's business (`exec.rs`).

use super::local::{timed, Local};
use super::recv::{Reader, Receiver, Writer};
use super::state::Role;
use crate::net;
use crate::sys;
use crate::tls::Conn;
use crate::ws::{self, SetupError};
use futures_lite::AsyncWriteExt;
use glommio::timer::sleep;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// How long a connection refused with `429` keeps retrying (once a second).
pub const RETRY_429_FOR: Duration = Duration::from_secs(30);

/// A connection that saw its own join event: its socket's halves, and its
/// receive side with whatever arrived after the join already buffered.
pub struct Joined {
    pub reader: Reader,
    pub writer: Writer,
    pub rx: Receiver,
}

/// Joins connection `i` of the plan (a member when it receives, otherwise a
/// publisher) and counts it as settled either way; `None` when it failed
/// (counted by reason in `Shared`).
pub async fn join(local: &Local, i: usize) -> Option<Joined> {
    let shared = &local.shared;
    let role = if shared.plan.conns[i].receives {
        Role::Member
    } else {
        Role::Publisher
    };
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

/// One attempt: connect, upgrade, send the protocol's join frames, read
/// until the own join event; all within `join_timeout`.
async fn try_join(local: &Local, i: usize, role: Role) -> Result<Joined, SetupError> {
    let shared = &local.shared;
    let spec = shared.plan.conns[i];
    let channel = &shared.plan.channels[spec.channel as usize];
    let deadline = sys::now_ns() + shared.join_timeout.as_nanos() as u64;
    let remaining = || Duration::from_nanos(deadline.saturating_sub(sys::now_ns()).max(1));
    let stream = timed(
        remaining(),
        net::connect(shared.addr_for(i), shared.sources.for_conn(i), remaining()),
    )
    .await
    .ok_or(SetupError::Timeout("connect"))??;
    let _ = stream.set_nodelay(true);
    let mut stream = match &shared.tls {
        None => Conn::Plain(stream),
        Some(tls) => timed(remaining(), tls.connect(stream))
            .await
            .ok_or(SetupError::Timeout("TLS handshake"))??,
    };
    let mut rx = Receiver::new(local, role, stream.as_raw_fd(), channel, spec.publisher);
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
    let (reader, writer) = futures_lite::io::split(stream);
    own_join(reader, writer, rx, remaining).await
}

/// Reads (answering pings) until the connection's own join event; a close
/// or the end of `remaining` first is a failure.
async fn own_join(
    mut reader: Reader,
    mut writer: Writer,
    mut rx: Receiver,
    remaining: impl Fn() -> Duration,
) -> Result<Joined, SetupError> {
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
            return Ok(Joined { reader, writer, rx });
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

/// The connection of HTTP push client `p`: connected with a permit of the
/// connect semaphore (no upgrade: each request stands alone), counted as
/// settled and as joined or failed.
pub async fn connect_push(local: &Local, p: u32) -> Option<Conn> {
    let shared = &local.shared;
    let i = shared.plan.conns.len() + p as usize;
    let source = shared.sources.for_conn(i);
    let connected = {
        let _permit = local.connect.acquire_static_permit(1).await;
        timed(
            shared.join_timeout,
            net::connect(shared.addr_for(i), source, shared.join_timeout),
        )
        .await
    };
    local.settled.set(local.settled.get() + 1);
    let stream = match connected {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            shared.fail(&e);
            return None;
        }
        None => {
            shared.fail(&SetupError::Timeout("connect"));
            return None;
        }
    };
    let _ = stream.set_nodelay(true);
    let stream = match &shared.tls {
        None => Conn::Plain(stream),
        Some(tls) => match timed(shared.join_timeout, tls.connect(stream)).await {
            Some(Ok(conn)) => conn,
            Some(Err(e)) => {
                shared.fail(&e);
                return None;
            }
            None => {
                shared.fail(&SetupError::Timeout("TLS handshake"));
                return None;
            }
        },
    };
    shared.publishers_joined.fetch_add(1, Relaxed);
    Some(stream)
}
