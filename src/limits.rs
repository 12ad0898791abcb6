//! Named limits that are not operator settings: fixed by the protocol or by
//! the shape of the code. Operator-tunable limits live in `config.rs` with
//! their defaults; everything here says why it has its value.

/// A uid is 6 characters of `[A-Za-z0-9]` (docs/PROTOCOL.md section 3).
pub const UID_CHARS: usize = 6;

/// The number of distinct uids: 62^6. The server never reuses one while it
/// runs, so this is also the number of connections one process may accept.
pub const UID_SPACE: u64 = 56_800_235_584;

/// Longest channel name after percent-decoding (docs/PROTOCOL.md section 1).
pub const CHANNEL_BYTES_MAX: usize = crate::http::request::CHANNEL_BYTES_MAX;

/// Longest alias (docs/PROTOCOL.md section 2).
pub const ALIAS_BYTES_MAX: usize = crate::http::request::ALIAS_BYTES_MAX;

/// Frames gathered into one `sendmsg`. 64 was where the design check saw
/// fan-out reach ~4.8 M deliveries/s; more buys little and costs stack.
pub const WRITE_BATCH_FRAMES: usize = 64;

/// A send's frames up to this many bytes in all are copied into one buffer
/// (on the flush's stack) and sent by one `sendto`; more go gathered by
/// `sendmsg`, uncopied.
pub const SEND_PACKED_BYTES_MAX: usize = 4096;

/// The shard's shared read buffer: every WebSocket read lands here, so one
/// `recv` can carry many small frames and no connection keeps a buffer of
/// its own while idle.
pub const SHARD_READ_BUFFER_BYTES: usize = 64 * 1024;

/// How much a connection's own buffer grows per read while it completes a
/// frame that did not arrive whole (never past one frame at the limit).
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Most messages in one cross-shard batch (one queue slot). A batch is one
/// wake of the receiving shard; the cap bounds a full queue's memory to
/// `forward_queue_slots` x this.
pub const FORWARD_BATCH_MAX: usize = 1024;

/// A link whose backlog reaches this many messages is congested: the
/// shard's readers pause until it drains (see `shard::links`).
pub const FORWARD_CONGESTED: usize = 8 * FORWARD_BATCH_MAX;

/// The smallest safe `forward_backlog_max`: when readers pause, what is
/// already in flight toward a shard still arrives and may each produce one
/// forward on the congested link: a backlog at the mark plus one full read
/// of minimal (7-byte) frames, plus a full queue of batches.
pub const fn forward_backlog_floor(queue_slots: usize) -> usize {
    2 * FORWARD_CONGESTED + SHARD_READ_BUFFER_BYTES / 7 + 1 + queue_slots * FORWARD_BATCH_MAX
}

/// Ready sockets the shard's reader takes from one `epoll_wait` (each is
/// read once) before it lets the round's flush and other tasks run.
pub const READY_EVENTS_MAX: usize = 256;

/// Rounds the shard's reader may poll its sockets directly (busy: each
/// round found some ready) before it waits through the runtime once, which
/// reaps the runtime's own completions (accepts, timers, links' wake-ups).
pub const DIRECT_ROUNDS_MAX: u32 = 16;

/// Sockets a round must have found ready for the reader to poll again
/// directly; after a smaller round it waits through the runtime.
pub const DIRECT_ROUND_READY_MIN: usize = 2;

/// How often each shard sweeps its connections for liveness (pings and idle
/// drops). Pings and idle drops are therefore late by at most this much.
pub const SWEEP_INTERVAL_MS: u64 = 1000;

/// Sockets a shard closes before its sweep hands free memory back to the
/// kernel (`malloc_trim`, 8-12 ms for a 60 MB heap here), and only once at
/// most half of the peak is still open: memory follows a crowd that left,
/// while steady churn (which reuses the freed memory) never pays for it.
pub const TRIM_AFTER_SOCKETS_CLOSED: usize = 1024;

/// Bytes of slow consumers' dropped backlogs after which the sweep also
/// hands free memory back: four of the default 1 MiB queues.
pub const TRIM_AFTER_BYTES_DISCARDED: usize = 4 << 20;

/// Upper bound on HTTP headers the parser can hold (the configured
/// `request_headers_max` is checked against it at startup).
pub const HEADERS_MAX_CEILING: usize = crate::http::head::HEADERS_MAX_SUPPORTED;

/// Pending connections the kernel may hold per listener before accepting
/// (capped by `net.core.somaxconn`; see tuning/).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Client IPs one shard keeps a bucket for, per kind (upgrades, pushes).
/// Buckets that refilled are forgotten every sweep, so this is only reached
/// by a flood from this many addresses within a burst's refill time; new
/// addresses are then refused (429) rather than let through unlimited.
pub const IP_BUCKETS_ENTRIES_MAX: usize = 100_000;

/// Live bans one shard keeps; past it the ban closest to expiry goes.
pub const BAN_LIST_ENTRIES_MAX: usize = 100_000;

/// How long an HTTP push waits for its channel's owner to answer before
/// it is answered 503: only an overloaded or stopping owner takes long.
pub const PUSH_ANSWER_TIMEOUT_MS: u64 = 5_000;

/// TLS: ciphertext read per `recv` (one full record: 16 KiB of plaintext
/// plus its header and tag). Lives on the stack of one poll, so an idle
/// TLS connection holds no read buffer either.
pub const TLS_READ_BYTES: usize = 16 * 1024 + 256;

/// TLS: handshakes in progress on one shard at most. Beyond it a new
/// connection is closed at accept, before any TLS work: a reconnect storm
/// or a flood of half-open handshakes (each ~0.2 ms of cpu and a few KiB)
/// must not crowd out the established connections. 256, as the study of
/// doing TLS on this shape proposed (shared/research/tls-and-deflate.md A4).
pub const TLS_HANDSHAKES_IN_PROGRESS_MAX: usize = 256;

/// TLS: the cpu shares of the handshake task queue, against glommio's
/// default queue (1000 shares) where established connections run: under a
/// storm, handshakes get about a tenth of a busy shard.
pub const TLS_HANDSHAKE_SHARES: usize = 100;

/// TLS: the most plaintext one record carries (RFC 8446 section 5.1;
/// rustls' default fragment size), for counting records sealed.
pub const TLS_RECORD_PLAINTEXT_BYTES: usize = 16 * 1024;
