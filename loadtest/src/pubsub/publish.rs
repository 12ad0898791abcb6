//! The publishers, both on the open-loop schedule (`schedule.rs`): a
//! WebSocket publisher writes one frame per message; an HTTP push client
//! sends `POST /push/<channel>` on one keep-alive connection with at most
//! `--pipeline` requests awaiting their response, read by a second task
//! (status counted, `recipients` summed, latency recorded from the
//! request's scheduled time). Each returns when it is done; the executor
//! (`exec.rs`) spawns them.

use super::local::{wait_for_t0, Local};
use super::schedule::{Due, PayloadBuilder, Schedule, Timing};
use super::state::{ConnSpec, Shared};
use crate::sys;
use crate::tls::Conn;
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::sync::Semaphore;
use glommio::timer::sleep;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Publisher `p`'s schedule for a run publishing from `t0`.
fn schedule(shared: &Shared, t0: u64, p: u32) -> Schedule {
    let timing = Timing {
        rate: shared.rate,
        duration_ns: shared.duration_ns,
        grace_ns: shared.grace_ns,
    };
    Schedule::new(timing, t0, p, shared.plan.pub_channel.len())
}

/// Sleeps until `at` unless the run stops first; false when it stopped.
async fn sleep_until(shared: &Shared, at: u64) -> bool {
    let now = sys::now_ns();
    if now < at {
        sleep(Duration::from_nanos(at - now)).await;
    }
    !shared.stop.load(Relaxed)
}

/// The due time of the publisher's next message, once it has come; `None`
/// when the publisher is done: every message went out, it fell too far
/// behind (the rest counted as unsent), or the run stopped.
async fn next_due(local: &Local, sched: &Schedule) -> Option<u64> {
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

/// A WebSocket publisher (connection `spec`, publisher id `p`): one frame
/// per message, one write per frame.
pub async fn publish_ws(local: &Local, spec: ConnSpec, p: u32, mut writer: WriteHalf<Conn>) {
    let shared = &*local.shared;
    let Some(t0) = wait_for_t0(shared).await else {
        return;
    };
    let channel = &shared.plan.channels[spec.channel as usize];
    let mut sched = schedule(shared, t0, p);
    let mut payload = PayloadBuilder::new(shared.payload_bytes, shared.payload_fill);
    let mut frame = Vec::with_capacity(shared.payload_bytes + 64);
    loop {
        let Some(at) = next_due(local, &sched).await else {
            break;
        };
        frame.clear();
        let body = payload.payload(p as u64, sched.k, at);
        shared.wire.publish_frame(&channel.name, body, &mut frame);
        if let Err(e) = writer.write_all(&frame).await {
            let why = format!("publisher write: {e}");
            local.stats.borrow_mut().disconnect(why);
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

/// One parsed response: bytes it took, status, `recipients` when present.
#[derive(Debug, PartialEq, Eq)]
pub struct PushResponse {
    pub len: usize,
    pub status: u16,
    pub recipients: Option<u64>,
}

/// Parses one complete response at the start of `buf`; `Ok(None)` when more
/// bytes are needed.
pub fn parse_push_response(buf: &[u8]) -> Result<Option<PushResponse>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(n)) => n,
        Err(e) => return Err(format!("unparsable response: {e}")),
    };
    let body_len = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or("response without content-length")?;
    let status = response.code.unwrap_or(0);
    if buf.len() < head_len + body_len {
        return Ok(None);
    }
    let body = &buf[head_len..head_len + body_len];
    let key = b"\"recipients\":";
    let recipients = body
        .windows(key.len())
        .position(|w| w == key)
        .and_then(|at| {
            let digits: Vec<u8> = body[at + key.len()..]
                .iter()
                .copied()
                .skip_while(|b| *b == b' ')
                .take_while(u8::is_ascii_digit)
                .collect();
            std::str::from_utf8(&digits).ok()?.parse().ok()
        });
    Ok(Some(PushResponse {
        len: head_len + body_len,
        status,
        recipients,
    }))
}

/// What a push client's writer and its response reader share: the window
/// of requests in flight (`--pipeline`), and the scheduled times of the
/// requests awaiting their response, oldest first.
pub struct Pipeline {
    window: Semaphore,
    in_flight: RefCell<VecDeque<u64>>,
}

impl Pipeline {
    pub fn new(depth: usize) -> Pipeline {
        Pipeline {
            window: Semaphore::new(depth as u64),
            in_flight: RefCell::new(VecDeque::new()),
        }
    }
}

/// An HTTP push client (publisher `p`) writing its requests to `writer`;
/// its responses are read by `read_responses` on the same `pipeline`.
pub async fn publish_push(local: &Local, p: u32, mut writer: WriteHalf<Conn>, pipeline: &Pipeline) {
    let shared = &*local.shared;
    let spec = shared.plan.push.clone().expect("push plan");
    let Some(t0) = wait_for_t0(shared).await else {
        return;
    };
    let ch = shared.plan.pub_channel[p as usize] as usize;
    let channel = &shared.plan.channels[ch];
    let mut sched = schedule(shared, t0, p);
    let mut payload = PayloadBuilder::new(shared.payload_bytes, shared.payload_fill);
    let mut request = Vec::with_capacity(shared.payload_bytes + 256);
    loop {
        let Some(at) = next_due(local, &sched).await else {
            break;
        };
        // A full window holds the request back; it counts as late, not lost.
        // (`acquire` takes the unit for good; the reader `signal`s it back.)
        if pipeline.window.acquire(1).await.is_err() {
            break;
        }
        request.clear();
        let body = payload.payload(p as u64, sched.k, at);
        shared.wire.push_request(
            &shared.target,
            &channel.name,
            &spec.send_key,
            body,
            &mut request,
        );
        pipeline.in_flight.borrow_mut().push_back(at);
        if let Err(e) = writer.write_all(&request).await {
            local
                .stats
                .borrow_mut()
                .disconnect(format!("push write: {e}"));
            break;
        }
        let owed = shared.receivers_on[ch].load(Relaxed);
        local.published(at, owed as u64);
        sched.k += 1;
    }
    shared.publishers_done.fetch_add(1, Relaxed);
}

/// Reads a push client's responses until its connection ends: status
/// counted, `recipients` summed, latency from the request's scheduled time;
/// each response gives its unit of the window back.
pub async fn read_responses(local: Rc<Local>, mut reader: ReadHalf<Conn>, pipeline: Rc<Pipeline>) {
    let mut buf = vec![0u8; 16 * 1024];
    let (mut start, mut filled) = (0usize, 0usize);
    let why = loop {
        match parse_push_response(&buf[start..filled]) {
            Ok(Some(r)) => {
                start += r.len;
                let now = sys::now_ns();
                let at = pipeline.in_flight.borrow_mut().pop_front();
                let mut st = local.stats.borrow_mut();
                *st.push_status.entry(r.status).or_default() += 1;
                st.push_recipients += r.recipients.unwrap_or(0);
                if let Some(at) = at {
                    st.push_latency
                        .saturating_record(now.saturating_sub(at) / 1000);
                }
                drop(st);
                pipeline.window.signal(1);
                continue;
            }
            Ok(None) => {}
            Err(e) => break e,
        }
        crate::ws::compact(&mut buf, &mut start, &mut filled);
        if filled == buf.len() {
            break "response too large".to_owned();
        }
        match reader.read(&mut buf[filled..]).await {
            Ok(0) => break "eof".to_owned(),
            Ok(n) => filled += n,
            Err(e) => break format!("read: {e}"),
        }
    };
    if !local.shared.stop.load(Relaxed) {
        local.stats.borrow_mut().disconnect(format!("push: {why}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_responses() {
        let one = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 29\r\n\r\n{\"ok\":true,\"recipients\":1000}";
        let mut two = one.to_vec();
        two.extend_from_slice(
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\nRetry-After: 1\r\n\r\n{}",
        );
        let r = parse_push_response(&two).unwrap().unwrap();
        assert_eq!(
            r,
            PushResponse {
                len: one.len(),
                status: 200,
                recipients: Some(1000)
            }
        );
        let r2 = parse_push_response(&two[r.len..]).unwrap().unwrap();
        assert_eq!((r2.status, r2.recipients), (429, None));
        assert_eq!(parse_push_response(&one[..one.len() - 1]), Ok(None));
        assert_eq!(parse_push_response(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        assert!(parse_push_response(b"garbage\r\n\r\n").is_err());
    }
}
