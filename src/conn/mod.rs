//! A client connection on the shard that accepted it: the HTTP phase
//! (request heads, info endpoints, refusals) and, after an upgrade, the
//! WebSocket session (`session`) with its writer (`writer`).
//!
//! Every path ends the connection only: errors are answered with a status
//! or a close code, never propagated to the accept loop.

pub mod handle;
pub mod handshake;
mod inbound;
pub mod outbox;
mod push;
pub mod reader;
mod session;
mod tls;
mod writer;

pub use tls::Stream;
pub use writer::flush_marked;

use crate::config::{MetricsEndpoint, Switch};
use crate::http::{self, Endpoint, HeadError, HeadLimits, Refusal, RequestHead, Response};
use crate::outcome::PushAnswer;
use crate::ratelimit::IpKey;
use crate::shard::join::admit_join;
use crate::shard::Shard;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::future::Future;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

/// The Prometheus text exposition format, version 0.0.4.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bytes read per `recv` while a request head arrives.
const HEAD_READ_BYTES: usize = 1024;

/// The version `/version` reports (no leading `v`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Which listener accepted the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The main listener: everything docs/PROTOCOL.md section 1 lists.
    Main,
    /// The separate metrics listener (`--metrics ADDR`): `/metrics`,
    /// `/status`, `/status.json`, `/health` and `/version` only.
    Metrics,
}

/// What the HTTP phase does next with a request.
enum Next {
    /// Answer it (the head only for `HEAD`); then read the next request if
    /// the response keeps alive.
    Respond(Response),
    /// Refuse it: the whole response, then close.
    Refuse(Response),
    /// A push was served: read the next request only if `true`.
    Served(bool),
    /// Admitted: the connection becomes a WebSocket session.
    Upgrade(session::Mode, session::Upgrade, IpKey),
}

/// Serves one accepted TCP connection until it closes.
///
/// Memory: a silent session is most of what a relay holds, so the HTTP
/// phase runs boxed and is freed at the upgrade; a plain connection's task
/// ends once its join is confirmed (the shard's reader reads it from then
/// on), and a TLS one's future then holds only the session's state.
pub fn serve(
    shard: Rc<Shard>,
    stream: Stream,
    peer: IpAddr,
    listener: Listener,
) -> impl Future<Output = ()> {
    let tracked = shard.track_socket();
    let http = Box::pin(serve_http(shard.clone(), stream, peer, listener));
    async move {
        // `upgraded` (over 300 bytes) is scoped to the match, so it takes
        // no room in this future while the session runs.
        let session = match http.await {
            Some(upgraded) => session::run_session(shard, upgraded, tracked),
            None => return,
        };
        session.await;
    }
}

/// Reads requests and answers them until the connection closes (`None`)
/// or upgrades.
///
/// Written as an `async move` block rather than an `async fn`: an async
/// fn's future holds its arguments twice (as passed and as moved into its
/// body), which took this one past glibc's 1 KiB small-allocation classes.
#[allow(clippy::manual_async_fn)] // on purpose: see above
fn serve_http(
    shard: Rc<Shard>,
    mut stream: Stream,
    peer: IpAddr,
    listener: Listener,
) -> impl Future<Output = Option<session::Upgraded>> {
    async move {
        let mut buf = Vec::new();
        loop {
            let head = match read_head(&shard, &mut stream, &mut buf).await {
                Ok(Some(head)) => head,
                Ok(None) => {
                    // Closed or timed out between requests.
                    close(&shard, stream).await;
                    return None;
                }
                Err(e) => {
                    respond(&mut stream, &head_error_response(e), false).await;
                    close(&shard, stream).await;
                    return None;
                }
            };
            shard.counters().http_requests.incr();
            let head_only = head.method() == "HEAD";
            let next = match listener_endpoint(&shard, listener, &head) {
                Err(refusal) => {
                    if refusal.status == 405 && head.target().starts_with("/push/") {
                        shard
                            .counters()
                            .count_push(PushAnswer::MethodNotAllowed.status());
                    }
                    Next::Refuse(refusal.response())
                }
                Ok(endpoint) => {
                    let ip =
                        http::client_ip::client_ip(peer, &head, &shard.config().trusted_proxies.0);
                    match endpoint {
                        // Boxed: a push's state (body reading, lingering
                        // close) must not make every WebSocket connection's
                        // future larger.
                        Endpoint::Push { channel } => {
                            let push = push::serve_push(
                                &shard,
                                &mut stream,
                                &mut buf,
                                &head,
                                &channel,
                                ip,
                            );
                            Next::Served(Box::pin(push).await)
                        }
                        endpoint => answer(&shard, &head, endpoint, ip),
                    }
                }
            };
            // The head's strings are not needed by a session: free them first.
            drop(head);
            match next {
                Next::Respond(response) => {
                    respond(&mut stream, &response, head_only).await;
                    if !response.keep_alive {
                        close(&shard, stream).await;
                        return None;
                    }
                }
                Next::Refuse(response) => {
                    respond(&mut stream, &response, false).await;
                    close(&shard, stream).await;
                    return None;
                }
                Next::Served(true) => {}
                Next::Served(false) => {
                    close(&shard, stream).await;
                    return None;
                }
                Next::Upgrade(mode, upgrade, ip) => {
                    return Some(session::Upgraded {
                        stream,
                        leftover: buf,
                        mode,
                        upgrade,
                        ip,
                    })
                }
            }
        }
    }
}

/// Ends a connection after its HTTP phase: over TLS, a close_notify first
/// (bounded by the close timeout), so a client reading to the end sees a
/// clean end rather than a truncation. Plain TCP just closes.
/// The TLS part is boxed, so a plain connection's future has no room for
/// it: each of the HTTP phase's closes would otherwise take 350 bytes.
fn close(shard: &Shard, stream: Stream) -> impl Future<Output = ()> {
    let tls = match stream {
        Stream::Tls(_) => Some(Box::pin(close_tls(shard.config().close_timeout_ms, stream))),
        Stream::Plain(_) => None,
    };
    async move {
        if let Some(close) = tls {
            close.await;
        }
    }
}

async fn close_tls(timeout_ms: u64, mut stream: Stream) {
    let deadline = Duration::from_millis(timeout_ms);
    let _ = glommio::timer::timeout(deadline, async {
        stream.close().await?;
        Ok(())
    })
    .await;
}

/// What `head` asks of this listener.
fn listener_endpoint(
    shard: &Shard,
    listener: Listener,
    head: &RequestHead,
) -> Result<Endpoint, Refusal> {
    match (listener, http::endpoint(head)) {
        (Listener::Metrics, Ok(e @ (Endpoint::Version | Endpoint::Health | Endpoint::Metrics))) => {
            Ok(e)
        }
        (Listener::Metrics, Ok(Endpoint::Page(p))) if p.beside_metrics() => Ok(Endpoint::Page(p)),
        (Listener::Metrics, _) => Err(Refusal::not_found()),
        (_, Ok(Endpoint::Metrics)) if !serves_metrics(shard, listener) => Err(Refusal::not_found()),
        (_, Ok(Endpoint::Page(p))) if p.beside_metrics() && !serves_metrics(shard, listener) => {
            Err(Refusal::not_found())
        }
        (_, endpoint) => endpoint,
    }
}

/// Answers one endpoint but a push (served by `serve_http`, the one that
/// reads a body): an upgrade is admitted (or refused), the others answer at
/// once.
fn answer(shard: &Shard, head: &RequestHead, endpoint: Endpoint, ip: IpAddr) -> Next {
    let keep_alive = head.keep_alive();
    let text = |status, body: &'static [u8]| Response::text(status, body).keep_alive(keep_alive);
    let ip_key = IpKey::of(ip);
    match endpoint {
        Endpoint::Join {
            channel,
            options,
            accept_key,
        } => match admit_join(shard, ip_key, &channel, &options) {
            Err(refused) => Next::Refuse(refused.response()),
            Ok(keys) => Next::Upgrade(
                session::Mode::Channel(channel, options, keys),
                upgrade(shard, head, accept_key),
                ip_key,
            ),
        },
        // Admitted like a join (there is no channel, so no key).
        Endpoint::Echo { accept_key } if shard.config().echo_endpoint => {
            match shard.admit_upgrade(ip_key) {
                Err(refused) => Next::Refuse(refused.response()),
                Ok(()) => Next::Upgrade(
                    session::Mode::Echo,
                    upgrade(shard, head, accept_key),
                    ip_key,
                ),
            }
        }
        Endpoint::Echo { .. } => Next::Refuse(Response::text(404, &b"not found\n"[..])),
        Endpoint::Push { .. } => unreachable!("serve_http serves pushes"),
        Endpoint::Version => Next::Respond(text(200, VERSION.as_bytes())),
        Endpoint::Health => match shard.health() {
            Ok(()) => Next::Respond(text(200, b"ok\n")),
            Err(why) => Next::Respond(text(503, why.as_bytes())),
        },
        Endpoint::Metrics => {
            let mut body = crate::metrics::render(shard.metrics());
            if let Some(cluster) = shard.cluster() {
                cluster.counters.render(&mut body, cluster.queued_bytes());
            }
            let body = body.into_bytes();
            let response = Response::text(200, body).with_content_type(METRICS_CONTENT_TYPE);
            Next::Respond(response.keep_alive(keep_alive))
        }
        Endpoint::Page(page) => {
            let context = crate::status::Context {
                metrics: shard.metrics(),
                config: shard.config(),
                uptime_ms: shard.clock_ms(),
            };
            Next::Respond(crate::status::render(page, &context).keep_alive(keep_alive))
        }
    }
}

/// The handshake's answer: the accept key, and permessage-deflate when it
/// is on and the client offered something the relay can honour.
fn upgrade(shard: &Shard, head: &RequestHead, accept_key: String) -> session::Upgrade {
    let deflate = match shard.config().compression {
        Switch::Off => None,
        Switch::On => {
            let offers = head
                .headers_named("sec-websocket-extensions")
                .filter_map(|value| std::str::from_utf8(value).ok());
            crate::ws::deflate::negotiate(offers, head.header_str("user-agent"))
        }
    };
    session::Upgrade {
        accept_key,
        deflate,
    }
}

/// The one writer of the HTTP phase: sends `response` (its head only for a
/// `HEAD` request); returns whether it was written.
async fn respond(stream: &mut Stream, response: &Response, head_only: bool) -> bool {
    stream
        .write_all(&response.to_bytes(head_only))
        .await
        .is_ok()
}

/// A head that could not be read: its status and a fixed sentence.
fn head_error_response(e: HeadError) -> Response {
    Response::text(e.status(), e.text())
}

/// Whether `/metrics` is served on this listener (docs/PROTOCOL.md
/// section 1; `--metrics`).
fn serves_metrics(shard: &Shard, listener: Listener) -> bool {
    match shard.config().metrics {
        MetricsEndpoint::Main => listener == Listener::Main,
        MetricsEndpoint::Off => false,
        MetricsEndpoint::Listen(_) => listener == Listener::Metrics,
    }
}

/// Reads one request head within the handshake timeout. `Ok(None)`: the
/// peer closed or was too slow; `Err`: answer with its status.
/// On success, `buf` keeps only the bytes after the head.
async fn read_head(
    shard: &Shard,
    stream: &mut Stream,
    buf: &mut Vec<u8>,
) -> Result<Option<RequestHead>, HeadError> {
    let config = shard.config();
    let limits = HeadLimits {
        head_bytes_max: config.request_head_bytes_max,
        headers_max: config.request_headers_max,
    };
    // Most clients send the head at once: what a plain socket already
    // holds is read without waiting, so the common case sets no timer and
    // submits no read to the ring.
    if let Some(now) = read_head_now(shard, stream, buf, &limits) {
        return now;
    }
    let deadline = Duration::from_millis(config.handshake_timeout_ms);
    let read = async {
        loop {
            if let Some(parsed) = parse_into(buf, &limits) {
                return Ok(parsed);
            }
            let start = grow_for_head(buf, &limits);
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

/// `read_head` without waiting, on a plain socket: `Some` once the head is
/// complete or refused or the peer closed, `None` if the rest must be
/// waited for (or the socket failed: the waiting read then sees it).
fn read_head_now(
    shard: &Shard,
    stream: &Stream,
    buf: &mut Vec<u8>,
    limits: &HeadLimits,
) -> Option<Result<Option<RequestHead>, HeadError>> {
    let Stream::Plain(tcp) = stream else {
        return None;
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(tcp);
    loop {
        if let Some(parsed) = parse_into(buf, limits) {
            return Some(parsed);
        }
        // Read into the shard's buffer and keep only what came: a head of
        // a few hundred bytes then costs an allocation of its size, not a
        // zeroed `HEAD_READ_BYTES` one.
        let room = head_read_room(buf.len(), limits);
        let mut shared = shard.read_buffer().borrow_mut();
        match reader::recv(fd, &mut shared[..room]) {
            Ok(n) => {
                buf.extend_from_slice(&shared[..n]);
                shard.counters().bytes_in.add(n as u64);
            }
            // Gone (closed or failed): as the waiting read ends; nothing
            // there yet: wait for it.
            Err(gone) => return gone.map(|_| Ok(None)),
        }
    }
}

/// The head at the start of `buf`, taken out of it, or why it is refused;
/// `None` while it is incomplete.
fn parse_into(
    buf: &mut Vec<u8>,
    limits: &HeadLimits,
) -> Option<Result<Option<RequestHead>, HeadError>> {
    match http::parse_head(buf, limits) {
        Ok(Some((head, consumed))) => {
            buf.drain(..consumed);
            Some(Ok(Some(head)))
        }
        Ok(None) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Makes room in `buf` for the next read of a head; returns where it
/// starts. Grows a little at a time: most heads fit the first read, and a
/// connection should not hold the whole limit while it waits.
fn grow_for_head(buf: &mut Vec<u8>, limits: &HeadLimits) -> usize {
    let start = buf.len();
    buf.resize(start + head_read_room(start, limits), 0);
    start
}

/// How much the next read of a head may take, with `held` bytes of it
/// already read: `HEAD_READ_BYTES`, less near the limit, at least one
/// (past the limit, the parse refuses the head).
fn head_read_room(held: usize, limits: &HeadLimits) -> usize {
    (held + HEAD_READ_BYTES)
        .min(limits.head_bytes_max)
        .max(held + 1)
        - held
}
