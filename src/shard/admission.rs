//! Admission on a shard: whether an upgrade or a push from a client IP may
//! go on (its ban, its per-IP bucket, the shard's connection cap), the ban
//! after a kick, and the namespaces in force (docs/PROTOCOL.md sections 6
//! and 8). The buckets, the ban list and the namespace snapshot are this
//! shard's own; nothing here is seen by another shard. The clock is passed
//! in.

use crate::access::Namespaces;
use crate::config::Config;
use crate::limits::{BAN_LIST_ENTRIES_MAX, IP_BUCKETS_ENTRIES_MAX};
use crate::outcome::{Refused, UpgradeRefusal};
use crate::ratelimit::{BanList, IpBuckets, IpKey, OverLimit, Rate};
use std::cell::RefCell;
use std::sync::Arc;

pub struct Admission {
    /// The namespaces in force: this shard's snapshot, swapped whole when
    /// the operator reloads.
    namespaces: RefCell<Arc<Namespaces>>,
    /// Per-IP upgrade buckets, push buckets and bans.
    upgrade_buckets: RefCell<IpBuckets>,
    push_buckets: RefCell<IpBuckets>,
    bans: RefCell<BanList>,
    /// The per-connection message rate (sessions keep the buckets).
    message_rate: Rate,
    ban_duration_ns: u64,
    connections_max: usize,
}

impl Admission {
    pub fn new(config: &Config, namespaces: Arc<Namespaces>) -> Admission {
        let upgrade_rate = Rate::new(config.upgrades_per_ip_per_sec, config.upgrades_per_ip_burst);
        let push_rate = Rate::new(config.pushes_per_ip_per_sec, config.pushes_per_ip_burst);
        Admission {
            namespaces: RefCell::new(namespaces),
            upgrade_buckets: RefCell::new(IpBuckets::new(upgrade_rate, IP_BUCKETS_ENTRIES_MAX)),
            push_buckets: RefCell::new(IpBuckets::new(push_rate, IP_BUCKETS_ENTRIES_MAX)),
            bans: RefCell::new(BanList::new(BAN_LIST_ENTRIES_MAX)),
            message_rate: Rate::new(
                config.messages_per_conn_per_sec,
                config.messages_per_conn_burst,
            ),
            ban_duration_ns: config.ban_duration_ms * 1_000_000,
            connections_max: config.connections_per_shard_max,
        }
    }

    /// Whether an upgrade from `ip` may go on: not banned, within its rate,
    /// and the shard (serving `open_conns`) not full.
    pub fn admit_upgrade(&self, ip: IpKey, open_conns: usize, now_ns: u64) -> Result<(), Refused> {
        let checked = self
            .bans
            .borrow()
            .check(ip, now_ns)
            .and_then(|()| self.upgrade_buckets.borrow_mut().take(ip, now_ns));
        let (why, retry_after_secs) = match checked {
            Err(OverLimit::Banned { retry_after_secs }) => {
                (UpgradeRefusal::Banned, Some(retry_after_secs))
            }
            Err(refused) => (UpgradeRefusal::RateLimited, Some(retry_after(refused))),
            Ok(()) if open_conns >= self.connections_max => (UpgradeRefusal::ShardFull, Some(1)),
            Ok(()) => return Ok(()),
        };
        Err(Refused {
            why,
            retry_after_secs,
        })
    }

    /// Whether an upgrade from `ip` would pass the ban list and its bucket
    /// now, taking nothing: checked at accept before a TLS handshake, so a
    /// banned or flooding IP costs no TLS work.
    pub fn would_admit_upgrade(&self, ip: IpKey, now_ns: u64) -> bool {
        self.bans.borrow().check(ip, now_ns).is_ok()
            && self.upgrade_buckets.borrow().would_take(ip, now_ns)
    }

    /// Takes a push token for `ip`; `Err(retry_after_secs)` when over.
    pub fn admit_push(&self, ip: IpKey, now_ns: u64) -> Result<(), u64> {
        self.push_buckets
            .borrow_mut()
            .take(ip, now_ns)
            .map_err(retry_after)
    }

    /// Bans `ip` on this shard for `ban_duration_ms` (after a kick).
    pub fn ban(&self, ip: IpKey, now_ns: u64) {
        self.bans
            .borrow_mut()
            .ban(ip, now_ns + self.ban_duration_ns, now_ns);
    }

    /// Forgets expired buckets and bans (the sweep).
    pub fn prune(&self, now_ns: u64) {
        self.upgrade_buckets.borrow_mut().prune(now_ns);
        self.push_buckets.borrow_mut().prune(now_ns);
        self.bans.borrow_mut().prune(now_ns);
    }

    pub fn message_rate(&self) -> Rate {
        self.message_rate
    }

    /// The namespaces in force now.
    pub fn namespaces(&self) -> Arc<Namespaces> {
        self.namespaces.borrow().clone()
    }

    /// Puts a reloaded namespace table in force for joins and pushes from
    /// now on; connections already joined keep what they were granted.
    pub fn set_namespaces(&self, namespaces: Arc<Namespaces>) {
        *self.namespaces.borrow_mut() = namespaces;
    }
}

/// `Retry-After` seconds for a refusal.
fn retry_after(refused: OverLimit) -> u64 {
    match refused {
        OverLimit::RateLimited { retry_after_secs } | OverLimit::Banned { retry_after_secs } => {
            retry_after_secs
        }
        OverLimit::TableFull => 1,
    }
}
