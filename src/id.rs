//! Identifiers: shards, connections, channels, uids and message ids.
//!
//! A connection's number is unique for the life of the process without any
//! cross-shard coordination: each shard counts on its own and interleaves
//! with the others (`n = local_count * shards + shard`). Its public uid is
//! that number passed through a keyed bijection on 62^6 (a Feistel network
//! with cycle walking), so uids are never reused, never collide across
//! shards, and do not reveal their sequence. The owner of a channel turns a
//! uid back into the connection number with the inverse bijection.

use crate::limits::{UID_CHARS, UID_SPACE};

/// One executor and everything it owns, pinned to one cpu.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A connection, unique while the server runs. Its home shard (the one that
/// accepted it and owns its socket) is derived from the number
/// (`router::Router::home_of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A channel instance, named by its owner when the channel is created and
/// retired when it empties. Unique across shards like `ConnId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelToken(pub u64);

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn base62_value(c: u8) -> Option<u64> {
    Some(match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'Z' => c - b'A' + 10,
        b'a'..=b'z' => c - b'a' + 36,
        _ => return None,
    } as u64)
}

/// A uid as it appears on the wire: 6 base62 characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uid(pub [u8; UID_CHARS]);

impl Uid {
    pub fn as_str(&self) -> &str {
        // SAFETY: built only from BASE62 characters (ASCII), here or in `parse`.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// Reads a uid from client text; `None` if it is not 6 base62 chars.
    pub fn parse(text: &[u8]) -> Option<Uid> {
        if text.len() != UID_CHARS || !text.iter().all(|&c| base62_value(c).is_some()) {
            return None;
        }
        let mut out = [0u8; UID_CHARS];
        out.copy_from_slice(text);
        Some(Uid(out))
    }

    fn from_value(mut v: u64) -> Uid {
        let mut out = [b'0'; UID_CHARS];
        for slot in out.iter_mut().rev() {
            *slot = BASE62[(v % 62) as usize];
            v /= 62;
        }
        Uid(out)
    }

    fn value(&self) -> u64 {
        self.0
            .iter()
            .fold(0, |acc, &c| acc * 62 + base62_value(c).unwrap_or(0))
    }
}

const HALF_BITS: u32 = 18; // 2^36 > 62^6: the Feistel domain covers the uid space
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;
const ROUNDS: usize = 4;

/// The keyed bijection between connection numbers and uids. Every shard
/// holds a copy made from the same seed, so any shard can map either way.
#[derive(Debug, Clone)]
pub struct UidCipher {
    keys: [u64; ROUNDS],
}

impl UidCipher {
    pub fn new(seed: u64) -> UidCipher {
        let mut keys = [0u64; ROUNDS];
        let mut s = seed;
        for k in keys.iter_mut() {
            s = splitmix64(s);
            *k = s;
        }
        UidCipher { keys }
    }

    pub fn uid(&self, conn: ConnId) -> Uid {
        debug_assert!(conn.0 < UID_SPACE);
        let mut x = conn.0;
        // Cycle walking: re-encrypt until the value lands in the uid space.
        // The domain is 2^36 / 62^6 = 1.21 times larger, so ~1.2 rounds.
        loop {
            x = self.encrypt(x);
            if x < UID_SPACE {
                return Uid::from_value(x);
            }
        }
    }

    pub fn conn(&self, uid: &Uid) -> ConnId {
        let mut x = uid.value();
        loop {
            x = self.decrypt(x);
            if x < UID_SPACE {
                return ConnId(x);
            }
        }
    }

    fn round(&self, half: u64, key: u64) -> u64 {
        splitmix64(half ^ key) & HALF_MASK
    }

    fn encrypt(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> HALF_BITS, x & HALF_MASK);
        for &k in &self.keys {
            (l, r) = (r, l ^ self.round(r, k));
        }
        (l << HALF_BITS) | r
    }

    fn decrypt(&self, x: u64) -> u64 {
        let (mut l, mut r) = (x >> HALF_BITS, x & HALF_MASK);
        for &k in self.keys.iter().rev() {
            (l, r) = (r ^ self.round(l, k), l);
        }
        (l << HALF_BITS) | r
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A message id: short base62 of a number unique while the server runs
/// (each owner shard counts on its own, interleaved like `ConnId`).
pub fn message_id(local: u64, shard: ShardId, shards: usize, out: &mut [u8; 12]) -> usize {
    let mut v = local * shards as u64 + shard.0 as u64;
    let mut len = 0;
    loop {
        out[len] = BASE62[(v % 62) as usize];
        len += 1;
        v /= 62;
        if v == 0 {
            break;
        }
    }
    out[..len].reverse();
    len
}

/// A seed for the uid cipher that differs on every start: uids must not be
/// predictable from one run to the next.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn uids_are_six_base62_chars_and_unique() {
        let cipher = UidCipher::new(42);
        let mut seen = HashSet::new();
        for n in 0..200_000u64 {
            let uid = cipher.uid(ConnId(n));
            assert_eq!(uid.as_str().len(), 6);
            assert!(uid.as_str().bytes().all(|c| c.is_ascii_alphanumeric()));
            assert!(seen.insert(uid), "uid reused for {n}");
        }
    }

    #[test]
    fn uid_maps_back_to_its_connection() {
        let cipher = UidCipher::new(7);
        for n in (0..UID_SPACE)
            .step_by(9_999_991)
            .chain([UID_SPACE - 1, 0, 1])
        {
            let uid = cipher.uid(ConnId(n));
            assert_eq!(
                cipher.conn(&Uid::parse(uid.as_str().as_bytes()).unwrap()),
                ConnId(n)
            );
        }
    }

    #[test]
    fn consecutive_connections_get_unrelated_uids() {
        let cipher = UidCipher::new(1);
        let a = cipher.uid(ConnId(1000)).as_str().to_owned();
        let b = cipher.uid(ConnId(1001)).as_str().to_owned();
        let shared = a.bytes().zip(b.bytes()).filter(|(x, y)| x == y).count();
        assert!(shared < 4, "{a} and {b} look sequential");
    }

    #[test]
    fn different_seeds_give_different_uids() {
        assert_ne!(
            UidCipher::new(1).uid(ConnId(5)),
            UidCipher::new(2).uid(ConnId(5))
        );
    }

    #[test]
    fn uid_parse_rejects_bad_text() {
        assert!(Uid::parse(b"abc12").is_none());
        assert!(Uid::parse(b"abc1234").is_none());
        assert!(Uid::parse(b"abc-12").is_none());
        assert!(Uid::parse(b"abC123").is_some());
    }

    #[test]
    fn message_ids_are_short_and_unique_across_shards() {
        let mut seen = HashSet::new();
        let mut buf = [0u8; 12];
        for shard in 0..2u16 {
            for local in 0..10_000 {
                let n = message_id(local, ShardId(shard), 2, &mut buf);
                assert!(n <= 4);
                assert!(seen.insert(buf[..n].to_vec()));
            }
        }
    }
}
