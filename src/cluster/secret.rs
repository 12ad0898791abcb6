//! The cluster secret and what it keys: channel names become `ChannelHash`es
//! before they reach the engine (so its keyspace, `MONITOR` and slow log name
//! no channel), offered join and send keys become digests compared inside
//! the engine, and every node derives the same uid cipher from it (so uids
//! drawn from the engine's counter stay unique across nodes).
//!
//! The secret comes from the environment (`ITTY_CLUSTER_SECRET`) or a file
//! (`cluster_secret_file`), never a flag: flags show in `ps`. Pure; shared
//! read-only by every shard and the bridge.

use crate::error::Error;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The environment variable that holds the cluster secret.
pub const SECRET_ENV: &str = "ITTY_CLUSTER_SECRET";

/// Shortest secret accepted, in bytes: it keys every name sent to the
/// engine, so it must not be guessable.
pub const SECRET_BYTES_MIN: usize = 16;

/// A channel name as the engine sees it: 32 lowercase hex digits of
/// HMAC-SHA256(secret, name), truncated to 128 bits. Stable across nodes
/// and runs that share the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelHash(pub [u8; 32]);

impl ChannelHash {
    pub fn as_str(&self) -> &str {
        // SAFETY: built only from ASCII hex digits (here or in `parse`).
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// Reads a hash back from an engine channel name's hex part.
    pub fn parse(text: &[u8]) -> Option<ChannelHash> {
        let hex = |c: &u8| c.is_ascii_digit() || (b'a'..=b'f').contains(c);
        if text.len() != 32 || !text.iter().all(hex) {
            return None;
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(text);
        Some(ChannelHash(out))
    }
}

impl std::fmt::Debug for ChannelHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A hash names nothing; still, keep logs short.
        write!(f, "ChannelHash({}..)", &self.as_str()[..6])
    }
}

/// The secret every node of a cluster shares.
#[derive(Clone)]
pub struct ClusterSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    pub fn new(key: &[u8]) -> Result<ClusterSecret, Error> {
        let key = trim_line_end(key);
        if key.len() < SECRET_BYTES_MIN {
            return Err(Error::Config(format!(
                "the cluster secret must be at least {SECRET_BYTES_MIN} bytes"
            )));
        }
        Ok(ClusterSecret { key: key.to_vec() })
    }

    /// The secret from `ITTY_CLUSTER_SECRET`, else from `file`; an error
    /// says where it was looked for (never what it holds).
    pub fn load(file: Option<&std::path::Path>) -> Result<ClusterSecret, Error> {
        if let Some(value) = std::env::var_os(SECRET_ENV) {
            use std::os::unix::ffi::OsStrExt;
            return ClusterSecret::new(value.as_bytes());
        }
        match file {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    Error::Config(format!(
                        "cannot read cluster_secret_file {}: {e}",
                        path.display()
                    ))
                })?;
                ClusterSecret::new(&bytes)
            }
            None => Err(Error::Config(format!(
                "--backplane needs a cluster secret: set {SECRET_ENV} or cluster_secret_file \
                 in the config file (never a flag: flags show in ps)"
            ))),
        }
    }

    fn mac(&self, domain: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(domain);
        for part in parts {
            // Length-prefixed, so no two part lists give the same input.
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The engine's name for channel `name`.
    pub fn channel_hash(&self, name: &str) -> ChannelHash {
        ChannelHash(hex16(&self.mac(b"channel", &[name.as_bytes()])))
    }

    /// A digest of a join or send key offered on channel `h`, compared
    /// inside the engine. Keyed and salted by the channel, so equal keys on
    /// two channels give unrelated digests.
    pub fn key_digest(&self, h: &ChannelHash, kind: KeyKind, key: &str) -> [u8; 32] {
        let kind: &[u8] = match kind {
            KeyKind::Join => b"j",
            KeyKind::Send => b"s",
        };
        hex16(&self.mac(b"key", &[&h.0, kind, key.as_bytes()]))
    }

    /// A digest of the settings every node must share (the namespaces):
    /// nodes publish it, and a mismatch is a warning and a metric.
    pub fn config_digest(&self, namespaces: &[crate::access::NamespaceConfig]) -> [u8; 32] {
        let mut parts: Vec<Vec<u8>> = namespaces
            .iter()
            .map(|n| {
                let mut p = n.prefix.as_bytes().to_vec();
                for key in [&n.join_key, &n.send_key] {
                    p.push(0);
                    if let Some(key) = key {
                        p.push(1);
                        p.extend_from_slice(key.as_bytes());
                    }
                }
                p
            })
            .collect();
        parts.sort();
        let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
        hex16(&self.mac(b"config", &refs))
    }

    /// The seed of the uid cipher, the same on every node.
    pub fn uid_seed(&self) -> u64 {
        let mac = self.mac(b"uid", &[]);
        u64::from_le_bytes(mac[..8].try_into().expect("8 bytes"))
    }
}

/// Which key a digest is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Join,
    Send,
}

/// The first 16 bytes as 32 lowercase hex digits.
fn hex16(mac: &[u8; 32]) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, b) in mac[..16].iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
    out
}

/// A secret file usually ends in a newline that is not part of it.
fn trim_line_end(key: &[u8]) -> &[u8] {
    let mut key = key;
    while let [rest @ .., b'\n' | b'\r'] = key {
        key = rest;
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> ClusterSecret {
        ClusterSecret::new(b"0123456789abcdef-test").unwrap()
    }

    #[test]
    fn channel_hashes_are_stable_keyed_and_name_nothing() {
        let s = secret();
        let h = s.channel_hash("room");
        assert_eq!(h, s.channel_hash("room"));
        assert_ne!(h, s.channel_hash("room2"));
        let other = ClusterSecret::new(b"another-secret-of-16").unwrap();
        assert_ne!(h, other.channel_hash("room"));
        assert!(!h.as_str().contains("room"));
        assert_eq!(ChannelHash::parse(h.as_str().as_bytes()), Some(h));
        assert_eq!(ChannelHash::parse(b"room"), None);
    }

    #[test]
    fn key_digests_depend_on_channel_kind_and_key() {
        let s = secret();
        let (a, b) = (s.channel_hash("a"), s.channel_hash("b"));
        let d = s.key_digest(&a, KeyKind::Join, "k");
        assert_eq!(d, s.key_digest(&a, KeyKind::Join, "k"));
        assert_ne!(d, s.key_digest(&b, KeyKind::Join, "k"));
        assert_ne!(d, s.key_digest(&a, KeyKind::Send, "k"));
        assert_ne!(d, s.key_digest(&a, KeyKind::Join, "k2"));
    }

    #[test]
    fn short_secrets_are_refused_and_a_trailing_newline_is_not_part_of_it() {
        assert!(ClusterSecret::new(b"short").is_err());
        let a = ClusterSecret::new(b"0123456789abcdef\n").unwrap();
        let b = ClusterSecret::new(b"0123456789abcdef").unwrap();
        assert_eq!(a.channel_hash("x"), b.channel_hash("x"));
    }

    #[test]
    fn config_digest_ignores_order_but_not_keys() {
        use crate::access::NamespaceConfig;
        let ns = |p: &str, j: Option<&str>| NamespaceConfig {
            prefix: p.into(),
            join_key: j.map(Into::into),
            send_key: None,
        };
        let s = secret();
        let d = s.config_digest(&[ns("a", None), ns("b", Some("k"))]);
        assert_eq!(d, s.config_digest(&[ns("b", Some("k")), ns("a", None)]));
        assert_ne!(d, s.config_digest(&[ns("a", None), ns("b", Some("x"))]));
        assert_ne!(d, s.config_digest(&[ns("a", None)]));
    }
}
