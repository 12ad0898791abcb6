//! `POST /push/<channel>` (docs/PROTOCOL.md section 7): a backend publishes one
//! JSON value to a channel covered by a namespace with a send key. Checked
//! in the protocol's order (method, rate limit, coverage, key present, key
//! right, size, JSON), then published through the channel's owner like any
//! other message, without `uid` or `alias`. Every answer is a short JSON
//! body; runs on the shard that accepted the connection.

use super::Stream;
use crate::http::body::{framing, BodyDecoder};
use crate::http::{RequestHead, Response};
use crate::outcome::PushAnswer;
use crate::ratelimit::IpKey;
use crate::shard::Shard;
use bytes::Bytes;
use futures_lite::AsyncReadExt;
use std::net::IpAddr;
use std::time::Duration;

/// What a lingering close reads beyond one body before giving up.
const LINGER_EXTRA_BYTES: usize = 64 * 1024;

/// Bytes read per `recv` while a body arrives.
const BODY_READ_BYTES: usize = 16 * 1024;

/// Serves one push request; returns whether the connection may go on to
/// its next request.
pub async fn serve_push(
    shard: &Shard,
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    channel: &str,
    ip: IpAddr,
) -> bool {
    let answer = answer(shard, stream, buf, head, channel, ip).await;
    shard.counters().count_push(answer.status());
    let response = answer.response(head.keep_alive());
    let keep_alive = response.keep_alive;
    let written = super::respond(stream, &response, false).await;
    if written && !keep_alive {
        linger(shard, stream).await;
    }
    written && keep_alive
}
/// After an answer that ends the connection before its body was read:
/// half-close, then read and discard what the client was still sending,
/// within bounds. Closing with unread bytes would make the kernel send a
/// reset, and the client could lose the answer to it.
async fn linger(shard: &Shard, stream: &mut Stream) {
    use std::os::fd::AsRawFd;
    // Over TLS the close_notify goes first, then the FIN.
    stream.queue_close_notify();
    let _ = futures_lite::AsyncWriteExt::flush(stream).await;
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
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    head: &RequestHead,
    channel: &str,
    ip: IpAddr,
) -> PushAnswer {
    if shard.draining() {
        return PushAnswer::Draining;
    }
    if let Err(retry_after_secs) = shard.admit_push(IpKey::of(ip)) {
        return PushAnswer::RateLimited { retry_after_secs };
    }
    let namespaces = shard.namespaces();
    let Some(send_key) = namespaces
        .covering(channel)
        .and_then(|keys| keys.send_key.as_deref())
    else {
        return PushAnswer::NotCovered;
    };
    let Some(offered) = head.header("x-send-key") else {
        return PushAnswer::KeyMissing;
    };
    if !crate::access::keys_match(offered, send_key.as_bytes()) {
        return PushAnswer::WrongKey;
    }
    let limit = shard.config().message_bytes_max;
    let decoder = match framing(head).and_then(|f| BodyDecoder::new(f, limit)) {
        Ok(decoder) => decoder,
        Err(e) => return PushAnswer::Body(e),
    };
    if head.has_token("expect", "100-continue") {
        let go_on = Response::text(100, &b""[..]).keep_alive(true);
        super::respond(stream, &go_on, false).await;
    }
    let body = match read_body(shard, stream, buf, decoder).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    if !shard.validator().borrow_mut().is_valid(&body) {
        return PushAnswer::InvalidJson;
    }
    match shard.push(channel, Bytes::from(body)).await {
        Ok(recipients) => PushAnswer::Published { recipients },
        Err(answer) => answer,
    }
}

/// Reads the body (the bytes after the head in `buf` first) within the
/// handshake timeout; leaves in `buf` whatever follows it.
async fn read_body(
    shard: &Shard,
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    mut decoder: BodyDecoder,
) -> Result<Vec<u8>, PushAnswer> {
    let deadline = Duration::from_millis(shard.config().handshake_timeout_ms);
    let read = async {
        loop {
            let consumed = decoder.feed(buf).map_err(PushAnswer::Body)?;
            buf.drain(..consumed);
            if decoder.is_done() {
                return Ok(());
            }
            buf.resize(BODY_READ_BYTES, 0);
            let n = stream.read(buf).await.unwrap_or(0);
            buf.truncate(n);
            shard.counters().bytes_in.add(n as u64);
            if n == 0 {
                return Err(PushAnswer::EndedEarly);
            }
        }
    };
    match glommio::timer::timeout(deadline, async { Ok(read.await) }).await {
        Ok(Ok(())) => Ok(decoder.into_body()),
        Ok(Err(answer)) => Err(answer),
        Err(_) => Err(PushAnswer::BodyTimeout),
    }
}
