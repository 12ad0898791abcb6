//! A client connection on the shard that accepted it: the HTTP phase
//! (request heads, info endpoints, refusals) and, after an upgrade, the
//! WebSocket session (`session`) with its writer (`writer`).
//!
//! Every path ends the connection only: errors are answered with a status
//! or a close code, never propagated to the accept loop.

pub mod handle;
mod push;
mod session;
mod writer;

use crate::config::MetricsEndpoint;
use crate::http::{self, HeadError, HeadLimits, RequestHead, Route};
use crate::metrics::UpgradeRefusal;
use crate::ratelimit::IpKey;
use crate::shard::forward::KeyCheck;
use crate::shard::{Admission, Shard};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
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
    /// The main listener: everything PROTOCOL.md section 1 lists.
    Main,
    /// The separate metrics listener (`--metrics ADDR`): `/metrics`,
    /// `/health` and `/version` only.
    Metrics,
}

/// Serves one accepted TCP connection until it closes.
pub async fn serve(shard: Rc<Shard>, mut stream: TcpStream, listener: Listener) {
    let _tracked = shard.track_socket();
    let _ = stream.set_nodelay(true);
    let peer = match stream.peer_addr() {
        Ok(addr) => addr.ip(),
        Err(_) => return, // already gone
    };
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
                respond(&mut stream, status, b"", body, false).await;
                return;
            }
        };
        shard.counters().http_requests.incr();
        let keep_alive = head.keep_alive();
        let head_only = head.method == "HEAD";
        let route = match (listener, http::route(&head)) {
            (Listener::Metrics, Ok(r @ (Route::Version | Route::Health | Route::Metrics))) => Ok(r),
            (Listener::Metrics, _) => Err(http::Refusal::not_found()),
            (_, Ok(Route::Metrics)) if !serves_metrics(&shard, listener) => {
                Err(http::Refusal::not_found())
            }
            (_, route) => route,
        };
        match route {
            Err(refusal) => {
                if refusal.status == 405 && head.target.starts_with("/push/") {
                    shard.counters().count_push(405);
                }
                let _ = stream.write_all(&http::refusal_response(&refusal)).await;
                return;
            }
            Ok(Route::Join {
                channel,
                options,
                accept_key,
            }) => {
                let ip = client_ip(&shard, peer, &head);
                match admit_join(&shard, ip, &channel, &options) {
                    Err(admission) => refuse(&mut stream, admission).await,
                    Ok(keys) => {
                        // The head's strings are not needed by the session:
                        // free them before it starts.
                        drop(head);
                        let mode = session::Mode::Channel(channel, options, keys);
                        session::run(shard, stream, buf, mode, accept_key, IpKey::of(ip)).await
                    }
                }
                return;
            }
            Ok(Route::Echo { accept_key }) if shard.config().echo_endpoint => {
                // Admitted like a join (there is no channel, so no key).
                let ip = client_ip(&shard, peer, &head);
                match admit_upgrade(&shard, ip) {
                    Err(admission) => refuse(&mut stream, admission).await,
                    Ok(()) => {
                        drop(head);
                        let mode = session::Mode::Echo;
                        session::run(shard, stream, buf, mode, accept_key, IpKey::of(ip)).await
                    }
                }
                return;
            }
            Ok(Route::Echo { .. }) => {
                respond(&mut stream, 404, b"", b"not found\n", false).await;
                return;
            }
            Ok(Route::Push { channel }) => {
                let ip = client_ip(&shard, peer, &head);
                // Boxed: a push's state (body reading, lingering close) must
                // not make every WebSocket connection's future larger.
                let push = push::serve(&shard, &mut stream, &mut buf, &head, &channel, ip);
                if !Box::pin(push).await {
                    return;
                }
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
                    headers: &[],
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

/// Whether `/metrics` is served on this listener (PROTOCOL.md section 1;
/// `--metrics`).
fn serves_metrics(shard: &Shard, listener: Listener) -> bool {
    match shard.config().metrics {
        MetricsEndpoint::Main => listener == Listener::Main,
        MetricsEndpoint::Off => false,
        MetricsEndpoint::Listen(_) => listener == Listener::Metrics,
    }
}

/// The client's IP for limits and bans (trusted proxies considered).
fn client_ip(shard: &Shard, peer: IpAddr, head: &RequestHead) -> IpAddr {
    http::client_ip::client_ip(peer, head, &shard.config().trusted_proxies.0)
}

/// Whether any upgrade (a join or the echo endpoint) may go on, in order:
/// draining, the IP's ban and rate, the shard's cap.
fn admit_upgrade(shard: &Shard, ip: IpAddr) -> Result<(), Admission> {
    if shard.draining() {
        shard
            .counters()
            .count_upgrade_refused(UpgradeRefusal::Draining);
        return Err(Admission {
            status: 503,
            retry_after_secs: None,
            body: "server is shutting down\n",
        });
    }
    shard.admit_upgrade(IpKey::of(ip))
}

/// Answers a refused upgrade with its status (and `Retry-After`).
async fn refuse(stream: &mut TcpStream, admission: Admission) {
    let retry = admission.retry_after_secs.map(|s| s.to_string());
    let headers: Vec<(&str, &str)> = retry.iter().map(|s| ("Retry-After", s.as_str())).collect();
    let reply = http::response(
        admission.status,
        "text/plain; charset=utf-8",
        &headers,
        admission.body.as_bytes(),
        false,
    );
    let _ = stream.write_all(&reply).await;
}

/// Everything decided about a join before its connection opens, in order:
/// the upgrade's admission, and a namespace's join key (checked here,
/// against this shard's snapshot). What is left for the owner (ephemeral
/// keys) comes back as the `KeyCheck`.
fn admit_join(
    shard: &Shard,
    ip: IpAddr,
    channel: &str,
    options: &http::JoinOptions,
) -> Result<KeyCheck, Admission> {
    admit_upgrade(shard, ip)?;
    let namespaces = shard.namespaces();
    match namespaces.covering(channel) {
        Some(keys) if !keys.may_join(options.join_key.as_deref()) => {
            shard
                .counters()
                .count_upgrade_refused(UpgradeRefusal::JoinKey);
            Err(Admission {
                status: 403,
                retry_after_secs: None,
                body: "join key required or wrong\n",
            })
        }
        Some(keys) => Ok(KeyCheck::Namespace {
            may_send: keys.may_send(options.send_key.as_deref()),
        }),
        None => Ok(KeyCheck::Ephemeral(crate::access::Keys {
            join_key: options.join_key.as_deref().map(Into::into),
            send_key: options.send_key.as_deref().map(Into::into),
        })),
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

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &[u8],
    body: &[u8],
    keep_alive: bool,
) {
    let content_type = std::str::from_utf8(content_type)
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or("text/plain; charset=utf-8");
    let reply = Reply {
        status,
        content_type,
        headers: &[],
        body,
    };
    reply.send(stream, keep_alive, false).await
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
        headers: &[],
        body,
    };
    reply.send(stream, keep_alive, head_only).await
}

/// A complete response to a plain HTTP request.
struct Reply<'a> {
    status: u16,
    content_type: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: &'a [u8],
}

impl Reply<'_> {
    /// Writes it; a HEAD request gets the head only.
    async fn send(&self, stream: &mut TcpStream, keep_alive: bool, head_only: bool) {
        let mut bytes = http::response(
            self.status,
            self.content_type,
            self.headers,
            self.body,
            keep_alive,
        );
        if head_only {
            bytes.truncate(bytes.len() - self.body.len());
        }
        let _ = stream.write_all(&bytes).await;
    }
}
