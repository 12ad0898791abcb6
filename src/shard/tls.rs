//! A shard's side of TLS (`--tls-cert`): the configuration every shard
//! shares and the bound on this shard's handshakes in progress.

use super::Shard;
use crate::ratelimit::IpKey;
use std::cell::Cell;
use std::sync::Arc;

/// A shard's side of TLS: the configuration every shard shares (so a
/// session ticket sealed here opens on any shard) and this shard's
/// handshakes in progress.
pub struct ShardTls {
    server_config: Arc<rustls::ServerConfig>,
    handshakes_in_progress: Cell<usize>,
}

impl Shard {
    /// Makes the main listener speak TLS with `server_config`.
    pub fn with_tls(mut self, server_config: Arc<rustls::ServerConfig>) -> Shard {
        self.tls = Some(ShardTls {
            server_config,
            handshakes_in_progress: Cell::new(0),
        });
        self
    }

    /// The TLS configuration, when the main listener speaks TLS.
    pub fn tls_config(&self) -> Option<&Arc<rustls::ServerConfig>> {
        self.tls.as_ref().map(|t| &t.server_config)
    }

    /// At accept, before any TLS work: whether a handshake from `ip` may
    /// start (not draining, not banned, its upgrade bucket not empty, and
    /// this shard under `TLS_HANDSHAKES_IN_PROGRESS_MAX`). Counts it as in
    /// progress if so; `handshake_ended` must follow.
    pub fn admit_handshake(&self, ip: IpKey) -> bool {
        let Some(tls) = &self.tls else { return false };
        let in_progress = tls.handshakes_in_progress.get();
        let admitted = !self.draining()
            && in_progress < crate::limits::TLS_HANDSHAKES_IN_PROGRESS_MAX
            && self.admission.would_admit_upgrade(ip, self.now_ns());
        if admitted {
            tls.handshakes_in_progress.set(in_progress + 1);
            self.counters().tls_handshakes_in_progress.incr();
        } else {
            self.counters().tls_handshakes_refused.incr();
        }
        admitted
    }

    /// A handshake `admit_handshake` let in is over, done or failed.
    pub fn handshake_ended(&self, done: bool) {
        if let Some(tls) = &self.tls {
            tls.handshakes_in_progress
                .set(tls.handshakes_in_progress.get() - 1);
            let c = self.counters();
            c.tls_handshakes_in_progress.sub(1);
            match done {
                true => c.tls_handshakes.incr(),
                false => c.tls_handshake_failures.incr(),
            }
        }
    }
}
