//! Admission on a shard: whether an upgrade or a push from a client IP may
//! go on (its ban, its per-IP bucket, the shard's connection cap), and the
//! ban after a kick (PROTOCOL.md section 8). The buckets and the ban list
//! are this shard's own; nothing here is seen by another shard.

use super::Shard;
use crate::metrics::UpgradeRefusal;
use crate::ratelimit::{IpKey, Refused};

/// Why an upgrade or a push is refused before anything else happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    pub status: u16,
    pub retry_after_secs: Option<u64>,
    pub body: &'static str,
}

impl Shard {
    /// Whether a WebSocket upgrade from `ip` may go on: not banned, within
    /// its rate, and the shard not full (PROTOCOL.md section 8).
    pub fn admit_upgrade(&self, ip: IpKey) -> Result<(), Admission> {
        let now = self.now_ns();
        let checked = self
            .bans
            .borrow()
            .check(ip, now)
            .and_then(|()| self.upgrade_buckets.borrow_mut().take(ip, now));
        let c = self.counters();
        match checked {
            Err(Refused::Banned { retry_after_secs }) => {
                c.count_upgrade_refused(UpgradeRefusal::Banned);
                Err(Admission {
                    status: 429,
                    retry_after_secs: Some(retry_after_secs),
                    body: "banned for going on over the message rate limit\n",
                })
            }
            Err(refused) => {
                c.count_upgrade_refused(UpgradeRefusal::RateLimited);
                Err(Admission {
                    status: 429,
                    retry_after_secs: Some(retry_after(refused)),
                    body: "too many connections from this address\n",
                })
            }
            Ok(()) if self.open_conns() >= self.config.connections_per_shard_max => {
                c.count_upgrade_refused(UpgradeRefusal::ShardFull);
                Err(Admission {
                    status: 503,
                    retry_after_secs: Some(1),
                    body: "server is full\n",
                })
            }
            Ok(()) => Ok(()),
        }
    }

    /// Takes a push token for `ip`; `Err(retry_after_secs)` when over.
    pub fn admit_push(&self, ip: IpKey) -> Result<(), u64> {
        self.push_buckets
            .borrow_mut()
            .take(ip, self.now_ns())
            .map_err(retry_after)
    }

    /// Bans `ip` on this shard for `ban_duration_ms` (after a kick).
    pub fn ban(&self, ip: IpKey) {
        let now = self.now_ns();
        let until = now + self.config.ban_duration_ms * 1_000_000;
        self.bans.borrow_mut().ban(ip, until, now);
        self.counters().bans.incr();
    }
}

/// `Retry-After` seconds for a refusal.
fn retry_after(refused: Refused) -> u64 {
    match refused {
        Refused::RateLimited { retry_after_secs } | Refused::Banned { retry_after_secs } => {
            retry_after_secs
        }
        Refused::TableFull => 1,
    }
}
