//! `push`: a publisher that is an HTTP client on one keep-alive connection,
//! sending `POST /push/<channel>` on the open-loop schedule, with at most
//! `--pipeline` requests awaiting their response. Responses are read by a
//! second task: status counted, `recipients` summed, latency recorded from
//! the request's scheduled time.

use super::exec::{next_due, timed, wait_for_t0, PayloadBuilder, Schedule};
use super::state::*;
use crate::net;
use crate::sys;
use futures_lite::io::ReadHalf;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::spawn_local;
use glommio::sync::Semaphore;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

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

/// Scheduled times of requests awaiting their response, oldest first.
type InFlight = Rc<RefCell<VecDeque<u64>>>;

pub async fn push_publisher(local: Rc<Local>, p: u32) {
    let shared = local.shared.clone();
    let spec = shared.plan.push.clone().expect("push plan");
    let source = shared
        .sources
        .for_conn(shared.plan.conns.len() + p as usize);
    let connected = {
        let _permit = local.connect.acquire_static_permit(1).await;
        timed(
            shared.join_timeout,
            net::connect(shared.target.addr, source, shared.join_timeout),
        )
        .await
    };
    local.settled.set(local.settled.get() + 1);
    let stream = match connected {
        Some(Ok(s)) => s,
        Some(Err(e)) => return shared.fail(&e),
        None => return shared.fail(&crate::ws::SetupError::Timeout("connect")),
    };
    let _ = stream.set_nodelay(true);
    shared.publishers_joined.fetch_add(1, Relaxed);
    let (reader, mut writer) = futures_lite::io::split(stream);
    let window = Rc::new(Semaphore::new(spec.pipeline as u64));
    let in_flight: InFlight = Rc::new(RefCell::new(VecDeque::new()));
    spawn_local(read_responses(
        local.clone(),
        reader,
        window.clone(),
        in_flight.clone(),
    ))
    .detach();

    let Some(t0) = wait_for_t0(&shared).await else {
        return;
    };
    let ch = shared.plan.pub_channel[p as usize] as usize;
    let channel = &shared.plan.channels[ch];
    let mut sched = Schedule::new(&shared, t0, p);
    let mut payload = PayloadBuilder::new(shared.payload_bytes);
    let mut request = Vec::with_capacity(shared.payload_bytes + 256);
    loop {
        let Some(at) = next_due(&local, &sched).await else {
            break;
        };
        // A full window holds the request back; it counts as late, not lost.
        // (`acquire` takes the unit for good; the reader `signal`s it back.)
        if window.acquire(1).await.is_err() {
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
        in_flight.borrow_mut().push_back(at);
        if let Err(e) = writer.write_all(&request).await {
            *local
                .stats
                .borrow_mut()
                .disconnects
                .entry(format!("push write: {e}"))
                .or_default() += 1;
            break;
        }
        let owed = shared.receivers_on[ch].load(Relaxed);
        local.published(at, owed as u64);
        sched.k += 1;
    }
    shared.publishers_done.fetch_add(1, Relaxed);
}

async fn read_responses(
    local: Rc<Local>,
    mut reader: ReadHalf<TcpStream>,
    window: Rc<Semaphore>,
    in_flight: InFlight,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let (mut start, mut filled) = (0usize, 0usize);
    let why = loop {
        match parse_push_response(&buf[start..filled]) {
            Ok(Some(r)) => {
                start += r.len;
                let now = sys::now_ns();
                let at = in_flight.borrow_mut().pop_front();
                let mut st = local.stats.borrow_mut();
                *st.push_status.entry(r.status).or_default() += 1;
                st.push_recipients += r.recipients.unwrap_or(0);
                if let Some(at) = at {
                    st.push_latency
                        .saturating_record(now.saturating_sub(at) / 1000);
                }
                drop(st);
                window.signal(1);
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
        *local
            .stats
            .borrow_mut()
            .disconnects
            .entry(format!("push: {why}"))
            .or_default() += 1;
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
