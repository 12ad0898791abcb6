//! Token buckets, with the time passed in (no clock inside), and the
//! per-shard tables built on them: one bucket per client IP for upgrades
//! and for pushes, and the ban list. Everything here lives on one shard and
//! is never touched from another: with N shards an IP's limits are per
//! shard (docs/PROTOCOL.md section 8).
//!
//! A bucket is the GCRA form of a token bucket: instead of a token count
//! and a refill time it keeps one number, the "theoretical arrival time"
//! (TAT) at which the bucket will be full again. A take conforms when
//! `now >= tat - (burst - 1) * interval`, and then pushes the TAT one
//! interval later. Same behaviour as counting tokens (starts full, refills
//! continuously, holds at most `burst`), in 8 bytes and without division
//! on the hot path.

use ahash::AHashMap;
use std::net::IpAddr;

/// A rate and burst, as intervals in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Time to earn one token.
    interval_ns: u64,
    /// How far ahead of now the TAT may run: `(burst - 1) * interval`.
    tolerance_ns: u64,
}

impl Rate {
    /// `per_sec` tokens a second, holding at most `burst` (both at least 1;
    /// `config.rs` validates them).
    pub fn new(per_sec: u32, burst: u32) -> Rate {
        let interval_ns = 1_000_000_000 / u64::from(per_sec.max(1));
        Rate {
            interval_ns,
            tolerance_ns: interval_ns * u64::from(burst.max(1) - 1),
        }
    }
}

/// One token bucket. Starts full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    /// When the bucket is full again, in ns on the caller's clock.
    tat_ns: u64,
}

impl Bucket {
    /// Takes one token at `now_ns`; `Err(wait_ns)` when none is left, with
    /// the time until the next one.
    #[inline]
    pub fn take(&mut self, rate: Rate, now_ns: u64) -> Result<(), u64> {
        let tat = self.tat_ns.max(now_ns);
        let earliest = tat.saturating_sub(rate.tolerance_ns);
        if now_ns < earliest {
            return Err(earliest - now_ns);
        }
        self.tat_ns = tat + rate.interval_ns;
        Ok(())
    }

    /// Whether `take` would succeed now, without taking.
    pub fn would_take(&self, rate: Rate, now_ns: u64) -> bool {
        now_ns >= self.tat_ns.max(now_ns).saturating_sub(rate.tolerance_ns)
    }

    /// Whether the bucket has refilled completely by `now_ns` (and so can
    /// be forgotten: a new one starts full too).
    pub fn is_full(&self, now_ns: u64) -> bool {
        self.tat_ns <= now_ns
    }
}

/// The key under which an address is limited: IPv4 addresses as they are,
/// IPv6 addresses by their /64 (one host usually holds a whole /64, so
/// per-address buckets would be free to dodge), IPv4-mapped IPv6 as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpKey {
    V4(u32),
    /// The first 64 bits.
    V6(u64),
}

impl IpKey {
    pub fn of(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => IpKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey::V4(u32::from(v4)),
                None => IpKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Why an IP was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverLimit {
    /// Over its rate: retry after this many seconds (at least 1).
    RateLimited { retry_after_secs: u64 },
    /// Banned: retry after this many seconds (at least 1).
    Banned { retry_after_secs: u64 },
    /// The table is full of other IPs' buckets (a flood from many
    /// addresses): refused without a bucket, retry after 1 second.
    TableFull,
}

/// One bucket per IP, for one kind of request, on one shard. Bounded:
/// buckets that refilled are forgotten by `prune`, and at `entries_max`
/// new IPs are refused rather than let through without a limit.
pub struct IpBuckets {
    rate: Rate,
    buckets: AHashMap<IpKey, Bucket>,
    entries_max: usize,
}

impl IpBuckets {
    pub fn new(rate: Rate, entries_max: usize) -> IpBuckets {
        IpBuckets {
            rate,
            buckets: AHashMap::new(),
            entries_max,
        }
    }

    /// Takes a token for `ip`.
    pub fn take(&mut self, ip: IpKey, now_ns: u64) -> Result<(), OverLimit> {
        if self.buckets.len() >= self.entries_max && !self.buckets.contains_key(&ip) {
            self.prune(now_ns);
            if self.buckets.len() >= self.entries_max {
                return Err(OverLimit::TableFull);
            }
        }
        let rate = self.rate;
        self.buckets
            .entry(ip)
            .or_default()
            .take(rate, now_ns)
            .map_err(|wait_ns| OverLimit::RateLimited {
                retry_after_secs: secs_ceil(wait_ns),
            })
    }

    /// Whether `take` would succeed now for `ip`, without taking (a TLS
    /// handshake is checked at accept; its upgrade takes the token).
    pub fn would_take(&self, ip: IpKey, now_ns: u64) -> bool {
        self.buckets
            .get(&ip)
            .is_none_or(|b| b.would_take(self.rate, now_ns))
    }

    /// Forgets the buckets that are full again (they carry no state).
    pub fn prune(&mut self, now_ns: u64) {
        self.buckets.retain(|_, b| !b.is_full(now_ns));
        if self.buckets.capacity() > 4 * self.buckets.len().max(64) {
            self.buckets.shrink_to_fit();
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// IPs banned until a time, on one shard. Bounded like `IpBuckets`: at
/// `entries_max` live bans, the one closest to expiry makes room (a ban
/// list full of live bans means a flood from many addresses; the newest
/// offender matters more than the oldest).
pub struct BanList {
    until_ns: AHashMap<IpKey, u64>,
    entries_max: usize,
}

impl BanList {
    pub fn new(entries_max: usize) -> BanList {
        BanList {
            until_ns: AHashMap::new(),
            entries_max,
        }
    }

    /// Bans `ip` until `until_ns` (extending a shorter ban).
    pub fn ban(&mut self, ip: IpKey, until_ns: u64, now_ns: u64) {
        if self.until_ns.len() >= self.entries_max && !self.until_ns.contains_key(&ip) {
            self.prune(now_ns);
            if self.until_ns.len() >= self.entries_max {
                if let Some(soonest) = self
                    .until_ns
                    .iter()
                    .min_by_key(|(_, &t)| t)
                    .map(|(k, _)| *k)
                {
                    self.until_ns.remove(&soonest);
                }
            }
        }
        let entry = self.until_ns.entry(ip).or_insert(0);
        *entry = (*entry).max(until_ns);
    }

    /// `Err` while `ip` is banned.
    pub fn check(&self, ip: IpKey, now_ns: u64) -> Result<(), OverLimit> {
        match self.until_ns.get(&ip) {
            Some(&until) if until > now_ns => Err(OverLimit::Banned {
                retry_after_secs: secs_ceil(until - now_ns),
            }),
            _ => Ok(()),
        }
    }

    /// Forgets bans that ran out.
    pub fn prune(&mut self, now_ns: u64) {
        self.until_ns.retain(|_, &mut until| until > now_ns);
    }

    pub fn len(&self) -> usize {
        self.until_ns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until_ns.is_empty()
    }
}

/// Whole seconds, rounded up, at least 1 (for `Retry-After`).
fn secs_ceil(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn ip(last: u8) -> IpKey {
        IpKey::of(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn bucket_starts_full_then_refills_at_the_rate() {
        let rate = Rate::new(40, 100);
        let mut b = Bucket::default();
        let t0 = 5 * SEC;
        for i in 0..100 {
            assert!(b.take(rate, t0).is_ok(), "burst token {i}");
        }
        let wait = b.take(rate, t0).unwrap_err();
        assert_eq!(wait, SEC / 40);
        // One token per 25 ms afterwards.
        assert!(b.take(rate, t0 + SEC / 40).is_ok());
        assert!(b.take(rate, t0 + SEC / 40).is_err());
        // After a quiet while the bucket is full again, not fuller.
        let later = t0 + 10 * SEC;
        assert!(b.is_full(later));
        for _ in 0..100 {
            assert!(b.take(rate, later).is_ok());
        }
        assert!(b.take(rate, later).is_err());
    }

    #[test]
    fn steady_rate_at_the_limit_always_conforms() {
        let rate = Rate::new(10, 1);
        let mut b = Bucket::default();
        for i in 0..1000 {
            assert!(b.take(rate, SEC + i * SEC / 10).is_ok(), "take {i}");
        }
    }

    #[test]
    fn a_burst_of_one_allows_one_per_interval() {
        let rate = Rate::new(2, 1);
        let mut b = Bucket::default();
        assert!(b.take(rate, SEC).is_ok());
        assert_eq!(b.take(rate, SEC), Err(SEC / 2));
        assert!(b.take(rate, SEC + SEC / 2).is_ok());
    }

    #[test]
    fn ip_buckets_limit_each_address_apart() {
        let mut t = IpBuckets::new(Rate::new(10, 20), 1000);
        for _ in 0..20 {
            t.take(ip(1), SEC).unwrap();
        }
        assert_eq!(
            t.take(ip(1), SEC),
            Err(OverLimit::RateLimited {
                retry_after_secs: 1
            })
        );
        t.take(ip(2), SEC).unwrap();
        t.prune(SEC);
        assert_eq!(t.len(), 2);
        t.prune(10 * SEC);
        assert!(t.is_empty());
    }

    #[test]
    fn a_full_ip_table_refuses_new_addresses_until_buckets_refill() {
        let mut t = IpBuckets::new(Rate::new(1, 5), 2);
        t.take(ip(1), SEC).unwrap();
        t.take(ip(2), SEC).unwrap();
        assert_eq!(t.take(ip(3), SEC), Err(OverLimit::TableFull));
        t.take(ip(1), SEC).unwrap();
        assert!(t.take(ip(3), 3 * SEC).is_ok());
    }

    #[test]
    fn bans_hold_until_they_expire() {
        let mut bans = BanList::new(10);
        bans.ban(ip(1), 61 * SEC, SEC);
        assert_eq!(
            bans.check(ip(1), SEC),
            Err(OverLimit::Banned {
                retry_after_secs: 60
            })
        );
        assert!(bans.check(ip(2), SEC).is_ok());
        assert!(bans.check(ip(1), 61 * SEC).is_ok());
        bans.prune(61 * SEC);
        assert!(bans.is_empty());
    }

    #[test]
    fn a_full_ban_list_drops_the_ban_closest_to_expiry() {
        let mut bans = BanList::new(2);
        bans.ban(ip(1), 10 * SEC, 0);
        bans.ban(ip(2), 20 * SEC, 0);
        bans.ban(ip(3), 30 * SEC, 0);
        assert_eq!(bans.len(), 2);
        assert!(bans.check(ip(1), 0).is_ok());
        assert!(bans.check(ip(3), 0).is_err());
    }

    #[test]
    fn ipv6_is_limited_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(IpKey::of(a), IpKey::of(b));
        assert_ne!(IpKey::of(a), IpKey::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(IpKey::of(mapped), ip(1));
    }
}
