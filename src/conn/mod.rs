//! A client connection on the shard that accepted it: the HTTP phase
//! (request heads, info endpoints, refusals) and, after an upgrade, the
//! WebSocket session (`session`) with its writer (`writer`).
//!
//! Every path ends the connection only: errors are answered with a status
//! or a close code, never propagated to the accept loop.

pub mod handle;
mod session;
mod writer;

use crate::http::{self, HeadError, HeadLimits, RequestHead, Route};
use crate::shard::Shard;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use std::rc::Rc;
use std::time::Duration;

/// The Prometheus text exposition format, version 0.0.4.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bytes read per `recv` while a request head arrives.
const HEAD_READ_BYTES: usize = 1024;

/// The version `/version` reports (no leading `v`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Serves one accepted TCP connection until it closes.
pub async fn serve(shard: Rc<Shard>, mut stream: TcpStream) {
    let _tracked = shard.track_socket();
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let head = match read_head(&shard, &mut stream, &mut buf).await {
            Ok(Some(head)) => head,
            Ok(None) => return, // closed or timed out between requests
            Err(status) => {
                let body: &[u8] = match status {
                    431 => b"request head too large\n",
                    _ => b"malformed request\n",
                };
                respond(&mut stream, status, body, false).await;
                return;
            }
        };
        shard.counters().http_requests.incr();
        let keep_alive = head.keep_alive();
        let head_only = head.method == "HEAD";
        match http::route(&head) {
            Err(refusal) => {
                let _ = stream.write_all(&http::refusal_response(&refusal)).await;
                return;
            }
            Ok(Route::Join {
                channel,
                options,
                accept_key,
            }) => {
                if shard.draining() {
                    respond(&mut stream, 503, b"server is shutting down\n", false).await;
                    return;
                }
                return session::run(
                    shard,
                    stream,
                    buf,
                    session::Mode::Channel(channel, options),
                    accept_key,
                )
                .await;
            }
            Ok(Route::Echo { accept_key }) if shard.config().echo_endpoint && !shard.draining() => {
                return session::run(shard, stream, buf, session::Mode::Echo, accept_key).await;
            }
            Ok(Route::Echo { .. }) => {
                respond(&mut stream, 404, b"not found\n", false).await;
                return;
            }
            Ok(Route::Push { .. }) => {
                // Push needs a namespace with a send key; none exist yet.
                respond(
                    &mut stream,
                    404,
                    b"no namespace with a send key covers this channel\n",
                    false,
                )
                .await;
                return;
            }
            Ok(Route::Version) => {
                respond_to(&mut stream, 200, VERSION.as_bytes(), keep_alive, head_only).await
            }
            Ok(Route::Health) if shard.draining() => {
                respond_to(&mut stream, 503, b"draining\n", keep_alive, head_only).await
            }
            Ok(Route::Health) => respond_to(&mut stream, 200, b"ok\n", keep_alive, head_only).await,
            Ok(Route::Metrics) => {
                let text = crate::metrics::render(shard.metrics());
                let reply = Reply {
                    status: 200,
                    content_type: METRICS_CONTENT_TYPE,
                    body: text.as_bytes(),
                };
                reply.send(&mut stream, keep_alive, head_only).await
            }
        }
        if !keep_alive {
            return;
        }
    }
}

/// Reads one request head within the handshake timeout. `Ok(None)`: the
/// peer closed or was too slow; `Err(status)`: answer with that status.
/// On success, `buf` keeps only the bytes after the head.
async fn read_head(
    shard: &Shard,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<RequestHead>, u16> {
    let config = shard.config();
    let limits = HeadLimits {
        head_bytes_max: config.request_head_bytes_max,
        headers_max: config.request_headers_max,
    };
    let deadline = Duration::from_millis(config.handshake_timeout_ms);
    let read = async {
        loop {
            match http::parse_head(buf, &limits) {
                Ok(Some((head, consumed))) => {
                    buf.drain(..consumed);
                    return Ok(Ok(Some(head)));
                }
                Ok(None) => {}
                Err(HeadError::TooLarge) | Err(HeadError::TooManyHeaders) => return Ok(Err(431)),
                Err(HeadError::Malformed) => return Ok(Err(400)),
            }
            // Grow a little at a time: most heads fit the first read, and a
            // connection should not hold the whole limit while it waits.
            let start = buf.len();
            buf.resize(
                (start + HEAD_READ_BYTES)
                    .min(limits.head_bytes_max)
                    .max(start + 1),
                0,
            );
            let n = stream.read(&mut buf[start..]).await.unwrap_or(0);
            buf.truncate(start + n);
            shard.counters().bytes_in.add(n as u64);
            if n == 0 {
                return Ok(Ok(None));
            }
        }
    };
    glommio::timer::timeout(deadline, read)
        .await
        .unwrap_or(Ok(None))
}

async fn respond(stream: &mut TcpStream, status: u16, body: &[u8], keep_alive: bool) {
    respond_to(stream, status, body, keep_alive, false).await
}

async fn respond_to(
    stream: &mut TcpStream,
    status: u16,
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
) {
    let reply = Reply {
        status,
        content_type: "text/plain; charset=utf-8",
        body,
    };
    reply.send(stream, keep_alive, head_only).await
}

/// A complete response to a plain HTTP request.
struct Reply<'a> {
    status: u16,
    content_type: &'a str,
    body: &'a [u8],
}

impl Reply<'_> {
    /// Writes it; a HEAD request gets the head only.
    async fn send(&self, stream: &mut TcpStream, keep_alive: bool, head_only: bool) {
        let mut bytes = http::response(self.status, self.content_type, &[], self.body, keep_alive);
        if head_only {
            bytes.truncate(bytes.len() - self.body.len());
        }
        let _ = stream.write_all(&bytes).await;
    }
}
