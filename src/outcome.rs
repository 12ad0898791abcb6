//! Outcomes that a client sees and metrics count: why a message was not
//! relayed (`DropReason`), why an upgrade was refused (`UpgradeRefusal`),
//! and how a push was answered (`PushAnswer`, counted by `PushStatus`).
//! Each owns everything about itself: the text the client gets, its
//! status, and its metrics label; counters are indexed by the variant, so a
//! new variant is counted (and rendered) without touching `metrics.rs`.
//! Close reasons live in `error.rs` and follow the same rule (`CloseKind`).
//! Pure values; never user data in a label.

use crate::http::body::BodyError;
use crate::http::response::Response;

/// A fieldless enum whose variants each carry a metrics label; `ALL` lists
/// them in counter order.
macro_rules! labelled {
    ($(#[$meta:meta])* pub enum $name:ident {
        $( $(#[doc = $doc:literal])* $variant:ident = $label:literal, )*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $( $(#[doc = $doc])* $variant, )* }

        impl $name {
            /// Every variant, in counter order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];
            /// The number of variants: the length of their counter array.
            pub const COUNT: usize = Self::ALL.len();

            /// The metrics label. Never user data.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label,)* }
            }

            /// The index of this variant's counter.
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}
pub(crate) use labelled;

labelled! {
    /// Why a client's message (or frame) was not relayed.
    pub enum DropReason {
        /// Over the sender's message rate (a warning went out).
        RateLimited = "rate_limited",
        /// The sender lacks the channel's send key.
        NoSendKey = "no_send_key",
        /// Not one JSON value (or an unterminated direct-message prefix).
        InvalidJson = "invalid_json",
        /// A binary frame.
        Binary = "binary",
        /// A direct message to a uid not on the channel.
        NoRecipient = "no_recipient",
        /// A forward to another shard whose backlog was full.
        ForwardBacklogFull = "forward_backlog_full",
    }
}

impl DropReason {
    /// The error event's text for the reasons whose text is fixed.
    pub fn error_text(self) -> Option<&'static str> {
        match self {
            DropReason::NoSendKey => Some("a send key is required to send on this channel"),
            DropReason::InvalidJson => Some("message is not valid JSON"),
            DropReason::Binary => Some("binary frames are not supported"),
            // Texts with a detail: see the two functions below.
            DropReason::RateLimited | DropReason::NoRecipient => None,
            // The sender is not told: the owner's shard is overloaded.
            DropReason::ForwardBacklogFull => None,
        }
    }

    /// `RateLimited`'s text: which warning of how many this is.
    pub fn rate_limit_warning(warning: u32, warnings_max: u32) -> String {
        format!("rate limit exceeded (warning {warning} of {warnings_max})")
    }

    /// `NoRecipient`'s text, naming the uid the client wrote (its own text,
    /// sent back to it only).
    pub fn no_recipient(shown: &str) -> String {
        format!("no user {shown} on this channel")
    }
}

labelled! {
    /// Why a WebSocket upgrade was refused before it became a connection.
    pub enum UpgradeRefusal {
        /// Over the per-IP upgrade rate.
        RateLimited = "rate_limited",
        /// The IP is banned after a kick.
        Banned = "banned",
        /// The shard serves `connections_per_shard_max` already.
        ShardFull = "shard_full",
        /// A wrong or missing join key, namespace or ephemeral.
        JoinKey = "join_key",
        /// The server is draining.
        Draining = "draining",
        /// In a cluster: the engine is unreachable (or did not answer the
        /// join in time), so no join can be decided.
        BackplaneUnavailable = "backplane_unavailable",
    }
}

impl UpgradeRefusal {
    pub fn status(self) -> u16 {
        match self {
            UpgradeRefusal::RateLimited | UpgradeRefusal::Banned => 429,
            UpgradeRefusal::ShardFull
            | UpgradeRefusal::Draining
            | UpgradeRefusal::BackplaneUnavailable => 503,
            UpgradeRefusal::JoinKey => 403,
        }
    }

    /// The response body: one line, no user data.
    pub fn text(self) -> &'static str {
        match self {
            UpgradeRefusal::RateLimited => "too many connections from this address\n",
            UpgradeRefusal::Banned => "banned for going on over the message rate limit\n",
            UpgradeRefusal::ShardFull => "server is full\n",
            UpgradeRefusal::JoinKey => "join key required or wrong\n",
            UpgradeRefusal::Draining => "server is shutting down\n",
            UpgradeRefusal::BackplaneUnavailable => "cluster backplane unavailable\n",
        }
    }

    /// The response, with `Retry-After` when the client may retry later.
    pub fn response(self, retry_after_secs: Option<u64>) -> Response {
        let response = Response::text(self.status(), self.text().as_bytes());
        match retry_after_secs {
            Some(secs) => response.with_header("Retry-After", secs.to_string()),
            None => response,
        }
    }
}

/// An upgrade refused, with the `Retry-After` it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub why: UpgradeRefusal,
    pub retry_after_secs: Option<u64>,
}

impl Refused {
    pub fn response(self) -> Response {
        self.why.response(self.retry_after_secs)
    }
}

labelled! {
    /// Push statuses, as `push_requests` counts them (label: the code).
    pub enum PushStatus {
        Ok = "200",
        BadRequest = "400",
        Unauthorized = "401",
        Forbidden = "403",
        NotFound = "404",
        MethodNotAllowed = "405",
        RequestTimeout = "408",
        ContentTooLarge = "413",
        TooManyRequests = "429",
        NotImplemented = "501",
        Unavailable = "503",
    }
}

impl PushStatus {
    pub fn code(self) -> u16 {
        self.label().parse().expect("labels are status codes")
    }
}

/// How a `POST /push/<channel>` was answered, in the order it is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushAnswer {
    /// Published; it went to this many members.
    Published {
        recipients: u32,
    },
    /// Not `POST`.
    MethodNotAllowed,
    Draining,
    /// Over the per-IP push rate.
    RateLimited {
        retry_after_secs: u64,
    },
    /// No namespace with a send key covers the channel.
    NotCovered,
    KeyMissing,
    WrongKey,
    /// The body's framing or size (checked from the head, or while read).
    Body(BodyError),
    /// The body ended before its announced end.
    EndedEarly,
    /// The body did not arrive within the handshake timeout.
    BodyTimeout,
    InvalidJson,
    /// The channel's owner shard did not answer in time.
    OwnerTimeout,
    /// In a cluster: the engine could not be asked for the channel.
    BackplaneUnavailable,
}

impl PushAnswer {
    pub fn status(self) -> PushStatus {
        match self {
            PushAnswer::Published { .. } => PushStatus::Ok,
            PushAnswer::MethodNotAllowed => PushStatus::MethodNotAllowed,
            PushAnswer::Draining | PushAnswer::OwnerTimeout | PushAnswer::BackplaneUnavailable => {
                PushStatus::Unavailable
            }
            PushAnswer::RateLimited { .. } => PushStatus::TooManyRequests,
            PushAnswer::NotCovered => PushStatus::NotFound,
            PushAnswer::KeyMissing => PushStatus::Unauthorized,
            PushAnswer::WrongKey => PushStatus::Forbidden,
            PushAnswer::EndedEarly | PushAnswer::InvalidJson => PushStatus::BadRequest,
            PushAnswer::Body(e) => PushStatus::ALL
                .iter()
                .copied()
                .find(|s| s.code() == e.status())
                .expect("every body error's status is a push status"),
            PushAnswer::BodyTimeout => PushStatus::RequestTimeout,
        }
    }

    /// The `error` text of a refusal (fixed sentences, no user data).
    pub fn error_text(self) -> Option<&'static str> {
        Some(match self {
            PushAnswer::Published { .. } => return None,
            PushAnswer::MethodNotAllowed => "method not allowed",
            PushAnswer::Draining => "server is shutting down",
            PushAnswer::RateLimited { .. } => "too many push requests from this address",
            PushAnswer::NotCovered => "no namespace with a send key covers this channel",
            PushAnswer::KeyMissing => "the x-send-key header is missing",
            PushAnswer::WrongKey => "wrong send key",
            PushAnswer::Body(BodyError::TooLarge) => "the body is over the message size limit",
            PushAnswer::Body(BodyError::Malformed) => "the body's framing is malformed",
            PushAnswer::Body(BodyError::UnsupportedCoding) => {
                "only the chunked transfer coding is supported"
            }
            PushAnswer::EndedEarly => "the body ended early",
            PushAnswer::BodyTimeout => "the body did not arrive in time",
            PushAnswer::InvalidJson => "the body is not valid JSON",
            PushAnswer::OwnerTimeout => "the channel's shard did not answer in time",
            PushAnswer::BackplaneUnavailable => "the cluster backplane is unavailable",
        })
    }

    /// Whether the connection may carry another request after it: only
    /// when the whole body was read.
    pub fn reusable(self) -> bool {
        matches!(self, PushAnswer::Published { .. } | PushAnswer::InvalidJson)
    }

    /// The JSON response (`keep_alive` only where `reusable`).
    pub fn response(self, keep_alive: bool) -> Response {
        let body = match (self, self.error_text()) {
            (PushAnswer::Published { recipients }, _) => {
                format!(r#"{{"ok":true,"recipients":{recipients}}}"#)
            }
            (_, Some(text)) => format!(r#"{{"ok":false,"error":"{text}"}}"#),
            (_, None) => unreachable!("every refusal has a text"),
        };
        let response =
            Response::json(self.status().code(), body).keep_alive(keep_alive && self.reusable());
        match self {
            PushAnswer::RateLimited { retry_after_secs } => {
                response.with_header("Retry-After", retry_after_secs.to_string())
            }
            _ => response,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique(labels: impl Iterator<Item = &'static str>) -> bool {
        let mut seen = std::collections::HashSet::new();
        labels.into_iter().all(|l| seen.insert(l))
    }

    #[test]
    fn labels_are_unique_and_indexes_follow_all() {
        assert!(unique(DropReason::ALL.iter().map(|r| r.label())));
        assert!(unique(UpgradeRefusal::ALL.iter().map(|r| r.label())));
        assert!(unique(PushStatus::ALL.iter().map(|r| r.label())));
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        for (i, r) in PushStatus::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn push_answers_carry_their_status_and_json_text() {
        let ok = PushAnswer::Published { recipients: 3 }.response(true);
        assert_eq!((ok.status, ok.keep_alive), (200, true));
        assert_eq!(&ok.body[..], br#"{"ok":true,"recipients":3}"#);
        let wrong = PushAnswer::WrongKey.response(true);
        assert_eq!((wrong.status, wrong.keep_alive), (403, false));
        assert_eq!(&wrong.body[..], br#"{"ok":false,"error":"wrong send key"}"#);
        let limited = PushAnswer::RateLimited {
            retry_after_secs: 7,
        }
        .response(false);
        assert_eq!(limited.headers, vec![("Retry-After", "7".to_string())]);
        assert_eq!(
            PushAnswer::Body(BodyError::UnsupportedCoding)
                .status()
                .code(),
            501
        );
        assert_eq!(PushStatus::Unavailable.code(), 503);
    }

    #[test]
    fn upgrade_refusals_carry_status_text_and_retry_after() {
        let r = Refused {
            why: UpgradeRefusal::Banned,
            retry_after_secs: Some(60),
        }
        .response();
        assert_eq!(r.status, 429);
        assert_eq!(
            &r.body[..],
            b"banned for going on over the message rate limit\n"
        );
        assert_eq!(r.headers, vec![("Retry-After", "60".to_string())]);
        assert_eq!(UpgradeRefusal::JoinKey.response(None).status, 403);
    }
}
