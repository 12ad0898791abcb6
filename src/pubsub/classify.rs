//! What a client's text frame asks for: a broadcast, or a direct message in
//! the `\x1F<uid>\x1F<json>` form or the legacy `@@<uid>@@<json>` form
//! (docs/PROTOCOL.md section 4). Pure; runs on the connection's home shard.

/// The unit separator that opens and closes the recipient of a direct message.
const UNIT_SEPARATOR: u8 = 0x1F;
/// The legacy direct-message marker of clients up to 0.5.
const LEGACY_MARKER: &[u8] = b"@@";

#[derive(Debug, PartialEq, Eq)]
pub enum Classified<'a> {
    /// Relay `payload` to the whole channel.
    Broadcast(&'a [u8]),
    /// Relay `payload` to the member whose uid is `to` (unchecked text).
    Direct { to: &'a [u8], payload: &'a [u8] },
    /// A direct-message prefix without its closing separator: treated as
    /// invalid JSON, since neither prefix can begin a JSON value.
    Unterminated,
}

pub fn classify(text: &[u8]) -> Classified<'_> {
    if let Some(rest) = text.strip_prefix(&[UNIT_SEPARATOR]) {
        return match rest.iter().position(|&b| b == UNIT_SEPARATOR) {
            Some(end) => Classified::Direct {
                to: &rest[..end],
                payload: &rest[end + 1..],
            },
            None => Classified::Unterminated,
        };
    }
    if let Some(rest) = text.strip_prefix(LEGACY_MARKER) {
        return match rest.windows(2).position(|w| w == LEGACY_MARKER) {
            Some(end) => Classified::Direct {
                to: &rest[..end],
                payload: &rest[end + 2..],
            },
            None => Classified::Unterminated,
        };
    }
    Classified::Broadcast(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_json_is_a_broadcast() {
        assert_eq!(
            classify(br#"{"a":1}"#),
            Classified::Broadcast(br#"{"a":1}"#)
        );
        assert_eq!(classify(b""), Classified::Broadcast(b""));
    }

    #[test]
    fn unit_separator_form_is_a_direct_message() {
        assert_eq!(
            classify(b"\x1FabC123\x1F[1,2]"),
            Classified::Direct {
                to: b"abC123",
                payload: b"[1,2]"
            }
        );
    }

    #[test]
    fn legacy_form_is_a_direct_message() {
        assert_eq!(
            classify(b"@@abC123@@\"hi\""),
            Classified::Direct {
                to: b"abC123",
                payload: b"\"hi\""
            }
        );
    }

    #[test]
    fn unterminated_prefixes_are_invalid() {
        assert_eq!(classify(b"\x1FabC123[1]"), Classified::Unterminated);
        assert_eq!(classify(b"@@abC123"), Classified::Unterminated);
        assert_eq!(classify(b"@@abc@"), Classified::Unterminated);
    }

    #[test]
    fn separator_inside_the_payload_is_kept() {
        assert_eq!(
            classify(b"@@u@@\"@@x\""),
            Classified::Direct {
                to: b"u",
                payload: b"\"@@x\""
            }
        );
    }
}
