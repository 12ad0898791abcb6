//! Who may join a channel and who may send on it (docs/PROTOCOL.md section 6):
//! namespaces from the config file, the keys they hold, ephemeral keys on
//! channels no namespace covers, and the constant-time key comparison.
//!
//! Every shard holds its own `Arc<Namespaces>` snapshot, swapped as a whole
//! when the operator reloads (SIGHUP); nothing here is mutated after it is
//! built. A lookup is one hash probe per boundary in the channel name (at
//! most a few), never a scan over the namespaces.

use crate::error::Error;
use ahash::AHashMap;
use serde::Deserialize;

/// One namespace as the config file gives it:
///
/// ```toml
/// [[namespace]]
/// prefix = "myapp"
/// join_key = "letmein"   # optional (also accepted as joinKey)
/// send_key = "s3cret"    # optional (also accepted as sendKey)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    pub prefix: String,
    #[serde(default, alias = "joinKey")]
    pub join_key: Option<String>,
    #[serde(default, alias = "sendKey")]
    pub send_key: Option<String>,
}

/// A namespace's keys; `None` means "not needed". Deliberately not
/// `PartialEq`: keys are compared only through [`keys_match`].
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub join_key: Option<Box<str>>,
    pub send_key: Option<Box<str>>,
}

impl Keys {
    /// Whether `offered` opens the join (always, when no join key is set).
    pub fn may_join(&self, offered: Option<&str>) -> bool {
        key_opens(self.join_key.as_deref(), offered)
    }

    /// Whether `offered` opens sending (always, when no send key is set).
    pub fn may_send(&self, offered: Option<&str>) -> bool {
        key_opens(self.send_key.as_deref(), offered)
    }
}

fn key_opens(required: Option<&str>, offered: Option<&str>) -> bool {
    match required {
        None => true,
        Some(required) => keys_match(offered.unwrap_or("").as_bytes(), required.as_bytes()),
    }
}

/// Characters that end a namespace prefix inside a channel name.
const BOUNDARIES: [u8; 2] = [b':', b'/'];

/// Longest key, in bytes: keys come in query strings and headers.
pub const KEY_BYTES_MAX: usize = 256;

/// The namespaces in force on a shard, by prefix.
#[derive(Debug, Default)]
pub struct Namespaces {
    by_prefix: AHashMap<Box<str>, Keys>,
}

impl Namespaces {
    /// Builds the table from the config file's list; refuses empty or
    /// duplicate prefixes, prefixes that end in a boundary, and keys that
    /// are empty or too long, naming the offending entry.
    pub fn build(list: &[NamespaceConfig]) -> Result<Namespaces, Error> {
        let mut by_prefix = AHashMap::with_capacity(list.len());
        for (i, ns) in list.iter().enumerate() {
            // By position only: a prefix names channels, and this text
            // goes to the log when a reload is refused.
            let fail = |why: &str| Err(Error::Config(format!("namespace {}: {why}", i + 1)));
            let p = ns.prefix.as_bytes();
            if p.is_empty() {
                return fail("the prefix is empty");
            }
            if p.len() > crate::limits::CHANNEL_BYTES_MAX {
                return fail("the prefix is longer than a channel name may be (256 bytes)");
            }
            if BOUNDARIES.contains(&p[p.len() - 1]) {
                return fail("the prefix must not end in ':' or '/' (the boundary is implied)");
            }
            for key in [&ns.join_key, &ns.send_key].into_iter().flatten() {
                if key.is_empty() || key.len() > KEY_BYTES_MAX {
                    return fail("keys must be 1 to 256 bytes");
                }
            }
            let keys = Keys {
                join_key: ns.join_key.as_deref().map(Into::into),
                send_key: ns.send_key.as_deref().map(Into::into),
            };
            if by_prefix.insert(ns.prefix.as_str().into(), keys).is_some() {
                return fail("the prefix is listed twice");
            }
        }
        Ok(Namespaces { by_prefix })
    }

    /// The keys of the longest namespace covering `channel`: the channel
    /// itself, or a prefix of it that ends just before a `:` or `/`.
    pub fn covering(&self, channel: &str) -> Option<&Keys> {
        if self.by_prefix.is_empty() {
            return None;
        }
        if let Some(keys) = self.by_prefix.get(channel) {
            return Some(keys);
        }
        let bytes = channel.as_bytes();
        (0..bytes.len())
            .rev()
            .filter(|&i| BOUNDARIES.contains(&bytes[i]))
            // A boundary byte is ASCII, so `i` is a char boundary.
            .find_map(|i| self.by_prefix.get(&channel[..i]))
    }

    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }
}

/// Compares a key offered by a client with the one required, in time that
/// depends on the lengths only, never on where the bytes differ.
pub fn keys_match(offered: &[u8], required: &[u8]) -> bool {
    let mut diff = u8::from(offered.len() != required.len());
    for (i, &r) in required.iter().enumerate() {
        // Index modulo the offered length: a shorter key still reads one
        // byte per required byte (and fails on the length above).
        let o = if offered.is_empty() {
            0
        } else {
            offered[i % offered.len()]
        };
        diff |= o ^ r;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(prefix: &str, join: Option<&str>, send: Option<&str>) -> NamespaceConfig {
        NamespaceConfig {
            prefix: prefix.into(),
            join_key: join.map(Into::into),
            send_key: send.map(Into::into),
        }
    }

    fn table() -> Namespaces {
        Namespaces::build(&[
            ns("myapp", Some("j"), None),
            ns("myapp/private", Some("p"), Some("s")),
            ns("feed:live", None, Some("f")),
        ])
        .unwrap()
    }

    #[test]
    fn a_namespace_covers_itself_and_what_follows_a_boundary() {
        let t = table();
        // Which namespace covers a channel, told by its join key.
        let join_key = |channel| t.covering(channel).map(|k| k.join_key.as_deref());
        assert_eq!(join_key("myapp"), Some(Some("j")));
        assert_eq!(join_key("myapp:feed"), Some(Some("j")));
        assert_eq!(join_key("myapp/chat/1"), Some(Some("j")));
        for outside in ["myapps", "myap", "other/myapp", "feed"] {
            assert!(t.covering(outside).is_none(), "{outside}");
        }
        assert_eq!(
            t.covering("feed:live:x").unwrap().send_key.as_deref(),
            Some("f")
        );
    }

    #[test]
    fn the_longest_namespace_wins() {
        let t = table();
        assert_eq!(
            t.covering("myapp/private/x").unwrap().join_key.as_deref(),
            Some("p")
        );
        assert_eq!(
            t.covering("myapp/private").unwrap().join_key.as_deref(),
            Some("p")
        );
        assert_eq!(
            t.covering("myapp/privatex").unwrap().join_key.as_deref(),
            Some("j")
        );
        assert_eq!(
            t.covering("myapp:private/x").unwrap().join_key.as_deref(),
            Some("j")
        );
    }

    #[test]
    fn bad_namespace_lists_are_refused_with_the_entry_named() {
        for (list, expect) in [
            (vec![ns("", None, None)], "empty"),
            (vec![ns("a:", None, None)], "must not end"),
            (vec![ns("a", None, None), ns("a", None, None)], "twice"),
            (vec![ns("a", Some(""), None)], "1 to 256"),
        ] {
            let err = Namespaces::build(&list).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
            assert!(err.contains("namespace"), "{err}");
        }
    }

    #[test]
    fn keys_may_be_256_bytes_and_no_longer() {
        let at = "k".repeat(KEY_BYTES_MAX);
        let over = "k".repeat(KEY_BYTES_MAX + 1);
        let built = Namespaces::build(&[ns("a", Some(&at), Some(&at))]).unwrap();
        assert!(built.covering("a").unwrap().may_join(Some(&at)));
        for list in [[ns("a", Some(&over), None)], [ns("a", None, Some(&over))]] {
            let err = Namespaces::build(&list).unwrap_err().to_string();
            assert!(err.contains("1 to 256"), "{err}");
        }
    }

    #[test]
    fn a_refused_namespace_is_named_by_position_not_by_prefix() {
        let list = [ns("fine", None, None), ns("secret-prefix:", None, None)];
        let err = Namespaces::build(&list).unwrap_err().to_string();
        assert!(err.contains("namespace 2"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn keys_open_only_when_equal() {
        assert!(keys_match(b"secret", b"secret"));
        assert!(!keys_match(b"secreT", b"secret"));
        assert!(!keys_match(b"secre", b"secret"));
        assert!(!keys_match(b"secrets", b"secret"));
        assert!(!keys_match(b"", b"secret"));
        assert!(!keys_match(b"secretsecret", b"secret"));
        let k = Keys {
            join_key: Some("j".into()),
            send_key: None,
        };
        assert!(k.may_join(Some("j")));
        assert!(!k.may_join(None));
        assert!(k.may_send(None));
    }

    #[test]
    fn many_namespaces_are_found_by_probing_boundaries_only() {
        let list: Vec<_> = (0..10_000)
            .map(|i| ns(&format!("app{i}"), None, Some("k")))
            .collect();
        let t = Namespaces::build(&list).unwrap();
        assert!(t.covering("app9999/room:1").is_some());
        assert!(t.covering("app10000/room").is_none());
    }
}
