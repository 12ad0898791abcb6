//! What crosses the engine on a channel's pub/sub channel: one payload per
//! message or presence event, a short ASCII header and then the WebSocket
//! frame exactly as its builder made it (the owner shard of the origin node
//! for messages, the engine's script for joins and leaves). Receivers slice
//! the frame out of the payload and fan it out unchanged: bytes built once,
//! cluster-wide.
//!
//! ```text
//! M <origin node> <sent ms>\n<frame>                       a message or a push
//! D <origin node> <to uid>\n<frame>                        a direct message
//! J <seq> <total> <node> <uid> <announce> <alias bytes>\n<alias json><frame>
//! L <seq> <total> <node> <uid>\n<frame>
//! ```
//!
//! `seq` is the engine's event counter (one order for every join and leave
//! of the cluster), `total` the channel's member count after the event.
//! Pure and sans-IO: the same decoder runs on every payload, so a payload
//! that does not parse (or whose frame is not one whole unmasked text
//! frame) is dropped, never delivered.

use crate::id::Uid;
use bytes::Bytes;

/// A node's number, assigned by the engine (`INCR`), unique while the
/// engine keeps its data.
pub type NodeNo = u64;

/// One decoded payload. Frames are slices of the payload: no copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Message {
        origin: NodeNo,
        sent_ms: u64,
        frame: Bytes,
    },
    Direct {
        origin: NodeNo,
        to: Uid,
        frame: Bytes,
    },
    Join {
        event: Presence,
        announce: bool,
        alias_json: Option<Box<str>>,
        frame: Bytes,
    },
    Leave {
        event: Presence,
        frame: Bytes,
    },
}

/// What a join or leave event says about whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence {
    pub seq: u64,
    pub total: u64,
    pub node: NodeNo,
    pub uid: Uid,
}

/// A payload header built on the stack (a message's `M` or `D` line):
/// carried inline in the command, so a message to other nodes allocates
/// nothing besides its frame.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    buf: [u8; 46],
    len: u16,
}

impl Header {
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    fn push(&mut self, bytes: &[u8]) {
        let at = self.len as usize;
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len() as u16;
    }

    fn number(&mut self, n: u64) {
        self.push(itoa::Buffer::new().format(n).as_bytes());
    }
}

/// The header of a message (or push) from `origin`.
pub fn message_header(origin: NodeNo, sent_ms: u64) -> Header {
    let mut h = Header {
        buf: [0; 46],
        len: 0,
    };
    h.push(b"M ");
    h.number(origin);
    h.push(b" ");
    h.number(sent_ms);
    h.push(b"\n");
    h
}

/// The header of a direct message from `origin` to `to`.
pub fn direct_header(origin: NodeNo, to: &Uid) -> Header {
    let mut h = Header {
        buf: [0; 46],
        len: 0,
    };
    h.push(b"D ");
    h.number(origin);
    h.push(b" ");
    h.push(to.as_str().as_bytes());
    h.push(b"\n");
    h
}

/// Decodes one payload; `None` if it is not one of ours or is damaged.
pub fn decode(payload: Bytes) -> Option<Item> {
    let newline = payload.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&payload[..newline]).ok()?;
    let mut fields = head.split(' ');
    let kind = fields.next()?;
    let mut number = || fields.next()?.parse::<u64>().ok();
    let item = match kind {
        "M" => {
            let (origin, sent_ms) = (number()?, number()?);
            Item::Message {
                origin,
                sent_ms,
                frame: payload.slice(newline + 1..),
            }
        }
        "D" => {
            let origin = number()?;
            let to = Uid::parse(head.split(' ').nth(2)?.as_bytes())?;
            Item::Direct {
                origin,
                to,
                frame: payload.slice(newline + 1..),
            }
        }
        "J" => {
            let (seq, total, node) = (number()?, number()?, number()?);
            let mut rest = head.split(' ').skip(4);
            let uid = Uid::parse(rest.next()?.as_bytes())?;
            let announce = rest.next()? == "1";
            let alias_len: usize = rest.next()?.parse().ok()?;
            let alias_end = newline + 1 + alias_len;
            let alias = std::str::from_utf8(payload.get(newline + 1..alias_end)?).ok()?;
            Item::Join {
                event: Presence {
                    seq,
                    total,
                    node,
                    uid,
                },
                announce,
                alias_json: (!alias.is_empty()).then(|| alias.into()),
                frame: payload.slice(alias_end..),
            }
        }
        "L" => {
            let (seq, total, node) = (number()?, number()?, number()?);
            let uid = Uid::parse(head.split(' ').nth(4)?.as_bytes())?;
            Item::Leave {
                event: Presence {
                    seq,
                    total,
                    node,
                    uid,
                },
                frame: payload.slice(newline + 1..),
            }
        }
        _ => return None,
    };
    whole_text_frame(item_frame(&item)).then_some(item)
}

fn item_frame(item: &Item) -> &Bytes {
    match item {
        Item::Message { frame, .. }
        | Item::Direct { frame, .. }
        | Item::Join { frame, .. }
        | Item::Leave { frame, .. } => frame,
    }
}

/// Whether `frame` is exactly one unmasked, final text frame.
pub fn whole_text_frame(frame: &[u8]) -> bool {
    let (len, start) = match frame {
        [0x81, n @ 0..=125, ..] => (*n as usize, 2),
        [0x81, 126, a, b, ..] => (u16::from_be_bytes([*a, *b]) as usize, 4),
        [0x81, 127, rest @ ..] if rest.len() >= 8 => (
            u64::from_be_bytes(rest[..8].try_into().expect("8 bytes")) as usize,
            10,
        ),
        _ => return false,
    };
    frame.len().checked_sub(start) == Some(len)
}

/// A presence event's payload as the engine's scripts write it (for tests
/// of the decoder and of the scripts).
pub fn encode_presence(
    kind: u8,
    event: &Presence,
    announce: bool,
    alias_json: Option<&str>,
    frame: &[u8],
) -> Vec<u8> {
    let mut out = format!(
        "{} {} {} {} {}",
        kind as char,
        event.seq,
        event.total,
        event.node,
        event.uid.as_str()
    )
    .into_bytes();
    if kind == b'J' {
        let alias = alias_json.unwrap_or("");
        out.extend_from_slice(
            format!(" {} {}\n{alias}", u8::from(announce), alias.len()).as_bytes(),
        );
    } else {
        out.push(b'\n');
    }
    out.extend_from_slice(frame);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::envelope;

    fn uid() -> Uid {
        Uid(*b"abC123")
    }

    #[test]
    fn a_message_round_trips_and_its_frame_is_a_slice() {
        let frame = envelope::message(b"1", None, 5, b"[1]");
        let mut payload = message_header(7, 99).as_bytes().to_vec();
        payload.extend_from_slice(&frame);
        let payload = Bytes::from(payload);
        match decode(payload.clone()).unwrap() {
            Item::Message {
                origin,
                sent_ms,
                frame: f,
            } => {
                assert_eq!((origin, sent_ms), (7, 99));
                assert_eq!(f, frame);
                assert_eq!(f.as_ptr(), payload[payload.len() - frame.len()..].as_ptr());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_direct_message_names_its_recipient() {
        let frame = envelope::message(b"1", None, 5, b"2");
        let mut payload = direct_header(3, &uid()).as_bytes().to_vec();
        payload.extend_from_slice(&frame);
        assert_eq!(
            decode(Bytes::from(payload)),
            Some(Item::Direct {
                origin: 3,
                to: uid(),
                frame
            })
        );
    }

    #[test]
    fn presence_events_round_trip_with_and_without_alias() {
        let alias = envelope::alias_json("A b\"\n c");
        let event = Presence {
            seq: 41,
            total: 3,
            node: 9,
            uid: uid(),
        };
        let frame = envelope::join(None, 3, 1);
        let p = encode_presence(b'J', &event, true, Some(&alias), &frame);
        assert_eq!(
            decode(Bytes::from(p)),
            Some(Item::Join {
                event,
                announce: true,
                alias_json: Some(alias.clone()),
                frame: frame.clone()
            })
        );
        let p = encode_presence(b'J', &event, false, None, &frame);
        assert!(matches!(
            decode(Bytes::from(p)),
            Some(Item::Join {
                announce: false,
                alias_json: None,
                ..
            })
        ));
        let frame = envelope::leave(None, 2, 1);
        let p = encode_presence(b'L', &event, false, None, &frame);
        assert_eq!(decode(Bytes::from(p)), Some(Item::Leave { event, frame }));
    }

    #[test]
    fn damaged_payloads_are_refused() {
        let frame = envelope::message(b"1", None, 5, b"2");
        let good = {
            let mut p = message_header(1, 2).as_bytes().to_vec();
            p.extend_from_slice(&frame);
            p
        };
        assert!(decode(Bytes::from(good.clone())).is_some());
        for bad in [
            &good[..good.len() - 1],
            &b"M 1 2"[..],
            &b"X 1 2\n\x81\x00"[..],
            &b"M x 2\n\x81\x00"[..],
            &b"D 1 nouid\n\x81\x00"[..],
            &b"J 1 2 3 abC123 1 99\n\x81\x00"[..],
            &b"M 1 2\n\x82\x00"[..],
        ] {
            assert!(decode(Bytes::copy_from_slice(bad)).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn frame_check_covers_every_length_form() {
        for n in [0usize, 125, 126, 65535, 65536] {
            let f = crate::ws::frame::text_frame(&vec![b'x'; n]);
            assert!(whole_text_frame(&f), "{n}");
            assert!(!whole_text_frame(&f[..f.len() - 1]), "{n}");
        }
    }
}
