//! `POST /push/<channel>` (PROTOCOL.md section 7): a backend publishes one
//! JSON value to a channel covered by a namespace with a send key. Checked
//! in the protocol's order (method, rate limit, coverage, key present, key
//! right, size, JSON), then published through the channel's owner like any
//! other message, without `uid` or `alias`. Every answer is a short JSON
//! body; runs on the shard that accepted the connection.

use crate::http::body::{framing, BodyDecoder, BodyError};
use crate::http::{self, RequestHead};
use crate::ratelimit::IpKey;
use crate::shard::Shard;
use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::net::IpAddr;
use std::time::Duration;

/// What a lingering close reads beyond one body before giving up.
const LINGER_EXTRA_BYTES: usize = 64 * 1024;

/// Bytes read per `recv` while a body arrives.
const BODY_READ_BYTES: usize = 16 * 1024;

/// An answer: status, JSON body, and whether the connection may carry
/// another request (only when the whole body was read).
struct Answer {
    status: u16,
    body: String,
    reusable: bool,
    retry_after_secs: Option<u64>,
}

impl Answer {
    fn error(status: u16, message: &str, reusable: bool) -> Answer {
        Answer {
            status,
            body: format!(r#"{{"ok":false,"error":"{message}"}}"#),
            reusable,
            retry_after_secs: None,
        }
    }
}

/// Serves one push request; returns whether the connection may go on to
/// its next request.
pub async fn serve(
    shard: &Shard,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    channel: &str,
    ip: IpAddr,
) -> bool {
    let answer = answer(shard, stream, buf, head, channel, ip).await;
    shard.counters().count_push(answer.status);
    let keep_alive = answer.reusable && head.keep_alive();
    let retry = answer.retry_after_secs.map(|s| s.to_string());
    let headers: Vec<(&str, &str)> = retry.iter().map(|s| ("Retry-After", s.as_str())).collect();
    let reply = http::response(
        answer.status,
        "application/json",
        &headers,
        answer.body.as_bytes(),
        keep_alive,
    );
    let written = stream.write_all(&reply).await.is_ok();
    if written && !keep_alive {
        linger(shard, stream).await;
    }
    written && keep_alive
}

/// After an answer that ends the connection before its body was read:
/// half-close, then read and discard what the client was still sending,
/// within bounds. Closing with unread bytes would make the kernel send a
/// reset, and the client could lose the answer to it.
async fn linger(shard: &Shard, stream: &mut TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutting down the write side of a socket we own.
    unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) };
    let budget = shard.config().message_bytes_max + LINGER_EXTRA_BYTES;
    let deadline = Duration::from_millis(shard.config().close_timeout_ms);
    let _ = glommio::timer::timeout(deadline, async {
        let mut scratch = [0u8; 4096];
        let mut read = 0;
        while read < budget {
            match stream.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
        }
        Ok(())
    })
    .await;
}

async fn answer(
    shard: &Shard,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    channel: &str,
    ip: IpAddr,
) -> Answer {
    if shard.draining() {
        return Answer::error(503, "server is shutting down", false);
    }
    if let Err(retry_after_secs) = shard.admit_push(IpKey::of(ip)) {
        return Answer {
            retry_after_secs: Some(retry_after_secs),
            ..Answer::error(429, "too many push requests from this address", false)
        };
    }
    let namespaces = shard.namespaces();
    let Some(send_key) = namespaces
        .covering(channel)
        .and_then(|keys| keys.send_key.as_deref())
    else {
        return Answer::error(
            404,
            "no namespace with a send key covers this channel",
            false,
        );
    };
    let Some(offered) = head.header("x-send-key") else {
        return Answer::error(401, "the x-send-key header is missing", false);
    };
    if !crate::access::keys_match(offered, send_key.as_bytes()) {
        return Answer::error(403, "wrong send key", false);
    }
    let limit = shard.config().message_bytes_max;
    let decoder = match framing(head).and_then(|f| BodyDecoder::new(f, limit)) {
        Ok(decoder) => decoder,
        Err(e) => return body_error(e),
    };
    if head.has_token("expect", "100-continue") {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
    }
    let body = match read_body(shard, stream, buf, decoder).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    if !shard.validator().borrow_mut().is_valid(&body) {
        return Answer::error(400, "the body is not valid JSON", true);
    }
    match shard.push(channel, Bytes::from(body)).await {
        Some(recipients) => Answer {
            status: 200,
            body: format!(r#"{{"ok":true,"recipients":{recipients}}}"#),
            reusable: true,
            retry_after_secs: None,
        },
        None => Answer::error(503, "the channel's shard did not answer in time", false),
    }
}

fn body_error(e: BodyError) -> Answer {
    let message = match e {
        BodyError::TooLarge => "the body is over the message size limit",
        BodyError::Malformed => "the body's framing is malformed",
        BodyError::UnsupportedCoding => "only the chunked transfer coding is supported",
    };
    Answer::error(e.status(), message, false)
}

/// Reads the body (the bytes after the head in `buf` first) within the
/// handshake timeout; leaves in `buf` whatever follows it.
async fn read_body(
    shard: &Shard,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    mut decoder: BodyDecoder,
) -> Result<Vec<u8>, Answer> {
    let deadline = Duration::from_millis(shard.config().handshake_timeout_ms);
    let read = async {
        loop {
            let consumed = decoder.feed(buf).map_err(body_error)?;
            buf.drain(..consumed);
            if decoder.is_done() {
                return Ok(());
            }
            buf.resize(BODY_READ_BYTES, 0);
            let n = stream.read(buf).await.unwrap_or(0);
            buf.truncate(n);
            shard.counters().bytes_in.add(n as u64);
            if n == 0 {
                return Err(Answer::error(400, "the body ended early", false));
            }
        }
    };
    match glommio::timer::timeout(deadline, async { Ok(read.await) }).await {
        Ok(Ok(())) => Ok(decoder.into_body()),
        Ok(Err(answer)) => Err(answer),
        Err(_) => Err(Answer::error(408, "the body did not arrive in time", false)),
    }
}
