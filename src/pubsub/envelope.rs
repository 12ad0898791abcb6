//! Server frames, built once: the envelope of a relayed message and the
//! join, leave and error events (docs/PROTOCOL.md section 5). Each function
//! writes the JSON straight into complete WebSocket frame bytes; server
//! frames are unmasked, so the same `Bytes` goes to every receiver.
//!
//! Invariants (tested below): every frame holds exactly one JSON value; a
//! relayed message never has a top-level `type`; the payload is embedded as
//! it came; `alias` appears only when set.

use crate::id::Uid;
use crate::ws::frame::{finish_frame, start_frame};
use bytes::Bytes;
use tungstenite::protocol::frame::coding::{Data, OpCode};

const TEXT: OpCode = OpCode::Data(Data::Text);

/// A member as events show it: its uid and, when set, its alias already
/// encoded as a JSON string literal (quotes included), so building a frame
/// is only copying bytes.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub uid: &'a Uid,
    pub alias_json: Option<&'a str>,
}

/// Encodes an alias as a JSON string literal, once, when a client connects.
pub fn alias_json(alias: &str) -> Box<str> {
    serde_json::to_string(alias)
        .unwrap_or_else(|_| "\"\"".to_owned())
        .into_boxed_str()
}

struct Json(Vec<u8>);

impl Json {
    fn new(capacity: usize) -> Json {
        Json(start_frame(capacity))
    }
    fn raw(&mut self, s: &[u8]) -> &mut Self {
        self.0.extend_from_slice(s);
        self
    }
    fn string(&mut self, s: &str) -> &mut Self {
        // Infallible for a Vec writer; a str always serializes.
        let _ = serde_json::to_writer(&mut self.0, s);
        self
    }
    fn number(&mut self, n: u64) -> &mut Self {
        self.raw(itoa::Buffer::new().format(n).as_bytes())
    }
    fn who(&mut self, who: &Who<'_>) -> &mut Self {
        self.raw(b"\"uid\":\"")
            .raw(who.uid.as_str().as_bytes())
            .raw(b"\",");
        if let Some(alias) = who.alias_json {
            self.raw(b"\"alias\":").raw(alias.as_bytes()).raw(b",");
        }
        self
    }
    fn finish(self) -> Bytes {
        finish_frame(self.0, TEXT)
    }
}

/// A relayed message (5.1): `from` is `None` for an HTTP push.
pub fn message(id: &[u8], from: Option<Who<'_>>, date_ms: u64, payload: &[u8]) -> Bytes {
    let mut j = Json::new(payload.len() + 96);
    j.raw(b"{\"id\":\"").raw(id).raw(b"\",");
    if let Some(who) = &from {
        j.who(who);
    }
    j.raw(b"\"date\":")
        .number(date_ms)
        .raw(b",\"message\":")
        .raw(payload)
        .raw(b"}");
    j.finish()
}

/// The joiner's own join event (5.2): always its uid, `users` when it asked
/// for the list (`users` yields every announced member, itself included).
pub fn join_self<'a>(
    me: Who<'_>,
    users: Option<impl Iterator<Item = Who<'a>>>,
    total: usize,
    date_ms: u64,
) -> Bytes {
    let mut j = Json::new(128);
    j.raw(b"{\"type\":\"join\",")
        .who(&me)
        .raw(b"\"self\":true,");
    if let Some(users) = users {
        j.raw(b"\"users\":[");
        let mut first = true;
        for user in users {
            if !first {
                j.raw(b",");
            }
            first = false;
            j.raw(b"{\"uid\":\"")
                .raw(user.uid.as_str().as_bytes())
                .raw(b"\"");
            if let Some(alias) = user.alias_json {
                j.raw(b",\"alias\":").raw(alias.as_bytes());
            }
            if user.uid == me.uid {
                j.raw(b",\"self\":true");
            }
            j.raw(b"}");
        }
        j.raw(b"],");
    }
    j.raw(b"\"total\":")
        .number(total as u64)
        .raw(b",\"date\":")
        .number(date_ms)
        .raw(b"}");
    j.finish()
}

/// A join or leave event as the other members see it: `who` only when the
/// member announced.
fn presence(kind: &[u8], who: Option<Who<'_>>, total: usize, date_ms: u64) -> Bytes {
    let mut j = Json::new(96);
    j.raw(b"{\"type\":\"").raw(kind).raw(b"\",");
    if let Some(who) = &who {
        j.who(who);
    }
    j.raw(b"\"total\":")
        .number(total as u64)
        .raw(b",\"date\":")
        .number(date_ms)
        .raw(b"}");
    j.finish()
}

pub fn join(who: Option<Who<'_>>, total: usize, date_ms: u64) -> Bytes {
    presence(b"join", who, total, date_ms)
}

pub fn leave(who: Option<Who<'_>>, total: usize, date_ms: u64) -> Bytes {
    presence(b"leave", who, total, date_ms)
}

/// An error event (5.4).
pub fn error(message: &str, date_ms: u64) -> Bytes {
    let mut j = Json::new(64 + message.len());
    j.raw(b"{\"type\":\"error\",\"message\":")
        .string(message)
        .raw(b",\"date\":")
        .number(date_ms)
        .raw(b"}");
    j.finish()
}

/// Milliseconds since the Unix epoch, for `date`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Strips the (unmasked, FIN text) frame header and parses the JSON.
    fn parse(frame: &Bytes) -> Value {
        assert_eq!(frame[0], 0x81, "FIN + text");
        let (len, start) = match frame[1] {
            126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        assert_eq!(frame.len(), start + len);
        serde_json::from_slice(&frame[start..]).expect("one valid JSON value")
    }

    fn uid() -> Uid {
        Uid(*b"abC123")
    }

    #[test]
    fn message_embeds_payload_untouched() {
        let payload = br#"{ "type" : "chat",  "text":"h\u00e9" }"#;
        let alias = alias_json("Alice");
        let f = message(
            b"2Vx",
            Some(Who {
                uid: &uid(),
                alias_json: Some(&alias),
            }),
            1754659171196,
            payload,
        );
        let text = std::str::from_utf8(&f[2..]).unwrap();
        assert!(text.contains(std::str::from_utf8(payload).unwrap()));
        let v = parse(&f);
        assert_eq!(v["id"], "2Vx");
        assert_eq!(v["uid"], "abC123");
        assert_eq!(v["alias"], "Alice");
        assert_eq!(v["date"], 1754659171196u64);
        assert_eq!(v["message"]["type"], "chat");
        assert!(
            v.get("type").is_none(),
            "a relayed message never has a top-level type"
        );
    }

    #[test]
    fn alias_only_when_set_and_none_for_push() {
        let v = parse(&message(
            b"1",
            Some(Who {
                uid: &uid(),
                alias_json: None,
            }),
            1,
            b"1",
        ));
        assert!(v.get("alias").is_none());
        let v = parse(&message(b"1", None, 1, b"[1]"));
        assert!(v.get("uid").is_none() && v.get("alias").is_none());
        assert_eq!(v["message"], serde_json::json!([1]));
    }

    #[test]
    fn hostile_alias_stays_valid_json() {
        for alias in [
            "\"},{\"type\":\"x",
            "a\\b",
            "line\nbreak\u{0}",
            "\u{2028}\u{1F525}",
        ] {
            let a = alias_json(alias);
            let v = parse(&message(
                b"1",
                Some(Who {
                    uid: &uid(),
                    alias_json: Some(&a),
                }),
                1,
                b"0",
            ));
            assert_eq!(v["alias"], alias);
            assert!(v.get("type").is_none());
        }
    }

    #[test]
    fn large_payload_uses_extended_length() {
        let payload = format!("\"{}\"", "x".repeat(70_000));
        let v = parse(&message(b"1", None, 1, payload.as_bytes()));
        assert_eq!(v["message"].as_str().unwrap().len(), 70_000);
    }

    #[test]
    fn self_join_lists_users_with_self_only_on_the_joiner() {
        let me = uid();
        let other = Uid(*b"zzzzzz");
        let bob = alias_json("Bob");
        let users = [
            Who {
                uid: &other,
                alias_json: Some(&bob),
            },
            Who {
                uid: &me,
                alias_json: None,
            },
        ];
        let v = parse(&join_self(
            Who {
                uid: &me,
                alias_json: None,
            },
            Some(users.into_iter()),
            2,
            7,
        ));
        assert_eq!(v["type"], "join");
        assert_eq!(v["self"], true);
        assert_eq!(v["uid"], "abC123");
        assert_eq!(v["total"], 2);
        assert_eq!(
            v["users"][0],
            serde_json::json!({"uid":"zzzzzz","alias":"Bob"})
        );
        assert_eq!(
            v["users"][1],
            serde_json::json!({"uid":"abC123","self":true})
        );
    }

    #[test]
    fn self_join_without_list_has_no_users() {
        let v = parse(&join_self(
            Who {
                uid: &uid(),
                alias_json: None,
            },
            None::<std::iter::Empty<Who>>,
            1,
            7,
        ));
        assert!(v.get("users").is_none());
        assert_eq!(v["total"], 1);
    }

    #[test]
    fn presence_events_name_only_announced_members() {
        let v = parse(&join(None, 7, 1));
        assert_eq!(v, serde_json::json!({"type":"join","total":7,"date":1}));
        let a = alias_json("Bob");
        let v = parse(&leave(
            Some(Who {
                uid: &uid(),
                alias_json: Some(&a),
            }),
            5,
            1,
        ));
        assert_eq!(
            v,
            serde_json::json!({"type":"leave","uid":"abC123","alias":"Bob","total":5,"date":1})
        );
    }

    #[test]
    fn error_event_escapes_its_message() {
        let v = parse(&error("no user \"x\n on this channel", 3));
        assert_eq!(v["type"], "error");
        assert_eq!(v["message"], "no user \"x\n on this channel");
    }
}
