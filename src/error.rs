//! Why a connection ended: one close code and one metrics label per reason.
//! A connection's error ends that connection only; it is counted under its
//! `CloseReason` and never reaches the accept loop or another connection.

use crate::outcome::labelled;
use crate::ws::codec::Violation;

/// Why the server ended (or is ending) a WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close frame; we answer with its code echoed.
    ClientClosed(Option<u16>),
    /// The TCP connection ended without a close frame (EOF or reset).
    PeerGone,
    /// A protocol violation (1002), bad UTF-8 (1007) or a message over the
    /// size limit (1009), as the codec decided.
    Violation(Violation),
    /// The connection's queue of unsent bytes passed its bound (1008).
    SlowConsumer,
    /// No frame and no pong within the idle timeout.
    IdleTimeout,
    /// The server is shutting down (1001, after draining).
    ServerShutdown,
    /// Writing to the socket failed.
    WriteFailed,
    /// Went on sending over its message rate after the last warning (1008;
    /// its IP is banned on this shard).
    RateLimited,
    /// The channel's owner refused the join key: the connection gets a
    /// `403` instead of its `101` and never becomes a WebSocket.
    JoinRefused,
}

impl CloseReason {
    /// The close frame the server sends for this reason, if any: `None` when
    /// the peer is gone or must not get one.
    pub fn close_frame(self) -> Option<(u16, &'static str)> {
        match self {
            CloseReason::ClientClosed(Some(code)) => Some((code, "")),
            CloseReason::ClientClosed(None) => Some((1000, "")),
            CloseReason::Violation(v) => Some((v.code, v.reason)),
            CloseReason::SlowConsumer => Some((1008, "slow consumer")),
            CloseReason::IdleTimeout => Some((1001, "idle timeout")),
            CloseReason::ServerShutdown => Some((1001, "server shutting down")),
            CloseReason::RateLimited => Some((1008, "rate limit exceeded")),
            CloseReason::PeerGone | CloseReason::WriteFailed | CloseReason::JoinRefused => None,
        }
    }

    /// What metrics count this reason as.
    pub fn kind(self) -> CloseKind {
        match self {
            CloseReason::ClientClosed(_) => CloseKind::ClientClosed,
            CloseReason::PeerGone => CloseKind::PeerGone,
            CloseReason::Violation(v) if v.code == 1009 => CloseKind::MessageTooBig,
            CloseReason::Violation(v) if v.code == 1007 => CloseKind::InvalidUtf8,
            CloseReason::Violation(_) => CloseKind::ProtocolViolation,
            CloseReason::SlowConsumer => CloseKind::SlowConsumer,
            CloseReason::IdleTimeout => CloseKind::IdleTimeout,
            CloseReason::ServerShutdown => CloseKind::ServerShutdown,
            CloseReason::WriteFailed => CloseKind::WriteFailed,
            CloseReason::RateLimited => CloseKind::RateLimited,
            CloseReason::JoinRefused => CloseKind::JoinRefused,
        }
    }

    /// The label under which metrics count this reason. Never user data.
    pub fn label(self) -> &'static str {
        self.kind().label()
    }

    /// Whether queued frames are still worth sending before the close frame.
    /// A slow consumer's backlog is what got it dropped: it is discarded.
    pub fn flushes_queue(self) -> bool {
        !matches!(
            self,
            CloseReason::SlowConsumer | CloseReason::PeerGone | CloseReason::WriteFailed
        )
    }
}

labelled! {
    /// `CloseReason`s as metrics count them (`connections_closed{reason}`).
    pub enum CloseKind {
        ClientClosed = "client_closed",
        PeerGone = "peer_gone",
        MessageTooBig = "message_too_big",
        InvalidUtf8 = "invalid_utf8",
        ProtocolViolation = "protocol_violation",
        SlowConsumer = "slow_consumer",
        IdleTimeout = "idle_timeout",
        ServerShutdown = "server_shutdown",
        WriteFailed = "write_failed",
        RateLimited = "rate_limited",
        JoinRefused = "join_refused",
    }
}

/// Errors at the library boundary: starting the server.
#[derive(Debug)]
pub enum Error {
    /// The configuration is invalid; the message says which option and why.
    Config(String),
    /// Binding or configuring a socket failed.
    Io(std::io::Error),
    /// An executor could not be started or ended abnormally.
    Executor(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Config(m) => write!(f, "configuration: {m}"),
            Error::Io(e) => write!(f, "io: {e}"),
            Error::Executor(m) => write!(f, "executor: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
