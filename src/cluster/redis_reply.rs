//! The Redis engine's replies, decoded: what each command's reply becomes
//! (`Expect`) and the RESP values of joins, snapshots and member records
//! read into the cluster's types. Pure; the engine (`redis_engine`) sends
//! the commands.

use super::secret::ChannelHash;
use super::wire::NodeNo;
use super::{EngineEvent, HeldKeys, JoinReply, MemberRecord, Snapshot};
use crate::id::Uid;
use redis::Value;

/// What a command's reply becomes.
pub(super) enum Expect {
    Nothing,
    Join {
        h: ChannelHash,
        conn: crate::id::ConnId,
    },
    Push {
        home: crate::id::ShardId,
        request: u64,
    },
    Assert {
        h: ChannelHash,
    },
    UidBlock,
}

impl Expect {
    pub(super) fn answer(self, value: Value) -> Option<EngineEvent> {
        Some(match self {
            Expect::Nothing => return None,
            Expect::Join { h, conn } => EngineEvent::Joined {
                h,
                conn,
                reply: join_reply(value),
            },
            Expect::Push { home, request } => EngineEvent::Pushed {
                home,
                request,
                recipients: int(&value).map(|n| n as u32),
            },
            Expect::Assert { h } => {
                let items = array(value);
                EngineEvent::Asserted {
                    h,
                    snapshot: Snapshot {
                        seq: items.first().and_then(int).unwrap_or(0),
                        members: items.get(1).map(members).unwrap_or_default(),
                        held: HeldKeys {
                            join: items.get(2).and_then(digest),
                            send: items.get(3).and_then(digest),
                        },
                    },
                }
            }
            Expect::UidBlock => EngineEvent::UidBlock {
                end: int(&value).unwrap_or(0),
            },
        })
    }
}

fn join_reply(value: Value) -> JoinReply {
    let items = array(value);
    match items.first().and_then(text).as_deref() {
        Some("refused") => JoinReply::Refused,
        Some("ok") => {
            let held = HeldKeys {
                join: items.get(4).and_then(digest),
                send: items.get(5).and_then(digest),
            };
            let seq = items.get(1).and_then(int).unwrap_or(0);
            JoinReply::Admitted {
                seq,
                total: items.get(2).and_then(int).unwrap_or(0),
                may_send: items.get(3).and_then(text).as_deref() == Some("1"),
                members: items.get(6).map(|m| Snapshot {
                    seq,
                    members: members(m),
                    held: held.clone(),
                }),
                held,
            }
        }
        _ => JoinReply::Unavailable,
    }
}

pub(super) fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

pub(super) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

pub(super) fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

fn digest(value: &Value) -> Option<[u8; 32]> {
    match value {
        Value::BulkString(b) if b.len() == 32 => b[..].try_into().ok(),
        _ => None,
    }
}

/// A member table: flat uid, record pairs (`HGETALL`).
fn members(value: &Value) -> Vec<(NodeNo, MemberRecord)> {
    let items: &[Value] = match value {
        Value::Array(items) => items,
        Value::Map(_) => return map_members(value),
        _ => return Vec::new(),
    };
    items
        .chunks(2)
        .filter_map(|pair| match pair {
            [Value::BulkString(uid), Value::BulkString(rec)] => record(uid, rec),
            _ => None,
        })
        .collect()
}

fn map_members(value: &Value) -> Vec<(NodeNo, MemberRecord)> {
    let Value::Map(pairs) = value else {
        return Vec::new();
    };
    pairs
        .iter()
        .filter_map(|pair| match pair {
            (Value::BulkString(uid), Value::BulkString(rec)) => record(uid, rec),
            _ => None,
        })
        .collect()
}

/// A member record: `<node> <announce> <alias json>`.
fn record(uid: &[u8], rec: &[u8]) -> Option<(NodeNo, MemberRecord)> {
    let rec = std::str::from_utf8(rec).ok()?;
    let mut parts = rec.splitn(3, ' ');
    let node = parts.next()?.parse().ok()?;
    let announce = parts.next()? == "1";
    let alias = parts.next().unwrap_or("");
    Some((
        node,
        MemberRecord {
            uid: Uid::parse(uid)?,
            announce,
            alias_json: (!alias.is_empty()).then(|| alias.into()),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_records_parse_with_and_without_alias() {
        let (node, m) = record(b"abC123", b"7 1 \"A b\"").unwrap();
        assert_eq!(node, 7);
        assert!(m.announce);
        assert_eq!(m.alias_json.as_deref(), Some("\"A b\""));
        let (_, m) = record(b"abC123", b"7 0 ").unwrap();
        assert!(!m.announce && m.alias_json.is_none());
        assert!(record(b"bad", b"7 0 ").is_none());
    }

    #[test]
    fn join_replies_parse() {
        let b = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert!(matches!(
            join_reply(Value::Array(vec![b("refused")])),
            JoinReply::Refused
        ));
        assert!(matches!(
            join_reply(Value::Array(vec![b("duplicate")])),
            JoinReply::Unavailable
        ));
        let ok = Value::Array(vec![
            b("ok"),
            Value::Int(5),
            Value::Int(2),
            b("0"),
            b(""),
            b(""),
            Value::Array(vec![b("abC123"), b("3 1 ")]),
        ]);
        match join_reply(ok) {
            JoinReply::Admitted {
                seq,
                total,
                may_send,
                members: Some(s),
                ..
            } => {
                assert_eq!((seq, total, may_send), (5, 2, false));
                assert_eq!(s.members.len(), 1);
                assert_eq!(s.members[0].0, 3);
            }
            other => panic!("{other:?}"),
        }
    }
}
