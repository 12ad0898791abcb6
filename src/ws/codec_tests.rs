//! Unit tests of the frame decoder: valid, truncated and hostile input.

use super::*;

const MAX: usize = 1 << 20;
const CONTINUE: u8 = 0x00;
const LAST: u8 = 0x80; // final continuation frame
const TEXT: u8 = 0x81;
const BINARY: u8 = 0x82;
const CLOSE: u8 = 0x88;
const PING: u8 = 0x89;
const PONG: u8 = 0x8A;
const NOT_FIN: u8 = 0x7F;

/// A masked client frame; `first` is the first header byte (FIN, RSV bits, opcode).
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xFA, 0x21, 0x3D];
    let mut out = vec![first];
    match payload.len() {
        len @ 0..=125 => out.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

/// Decodes `bytes` with a fresh decoder and checks the outcome of the first call.
fn check(bytes: &[u8], consumed: usize, message: Option<Message>) {
    let mut buf = bytes.to_vec();
    let expected = Ok(Decoded { consumed, message });
    assert_eq!(Decoder::new(MAX).decode(&mut buf), expected);
}

/// Checks that `bytes` decode to exactly one message.
fn check_message(bytes: &[u8], message: Message) {
    check(bytes, bytes.len(), Some(message));
}

fn violation(max: usize, bytes: &[u8]) -> Violation {
    let mut decoder = Decoder::new(max);
    decoder
        .decode(&mut bytes.to_vec())
        .expect_err("expected a violation")
}

fn protocol(reason: &'static str) -> Violation {
    Violation::protocol(reason)
}

#[test]
fn decodes_single_masked_text_frame() {
    check_message(&frame(TEXT, b"hello"), Message::Text(b"hello"));
}

#[test]
fn decodes_back_to_back_frames_one_message_per_call() {
    let first = frame(TEXT, b"one");
    let mut buf = [first.clone(), frame(BINARY, b"two!")].concat();
    let total = buf.len();
    let mut decoder = Decoder::new(MAX);
    let message = Some(Message::Text(b"one"));
    let expected = Ok(Decoded {
        consumed: first.len(),
        message,
    });
    assert_eq!(decoder.decode(&mut buf), expected);
    let message = Some(Message::Binary(b"two!"));
    let expected = Ok(Decoded {
        consumed: total - first.len(),
        message,
    });
    assert_eq!(decoder.decode(&mut buf[first.len()..]), expected);
}

#[test]
fn incomplete_input_at_every_split_consumes_only_whole_frames() {
    let first = frame(TEXT & NOT_FIN, &[b'a'; 200]);
    let whole = [first.clone(), frame(LAST, b"bc")].concat();
    for split in 0..whole.len() {
        let consumed = if split >= first.len() { first.len() } else { 0 };
        check(&whole[..split], consumed, None);
    }
    let expected = [&[b'a'; 200][..], b"bc"].concat();
    check_message(&whole, Message::Text(&expected));
}

#[test]
fn decodes_16_and_64_bit_lengths() {
    for len in [126, 300, 0xFFFF, 0x10000, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        check_message(&frame(BINARY, &payload), Message::Binary(&payload));
    }
}

#[test]
fn reassembles_fragmented_text_returning_interleaved_ping() {
    let head = [frame(TEXT & NOT_FIN, b"hel"), frame(PING, b"p")].concat();
    let tail = [frame(CONTINUE, b"lo "), frame(LAST, b"world")].concat();
    let mut buf = [head.clone(), tail.clone()].concat();
    let mut decoder = Decoder::new(MAX);
    let message = Some(Message::Ping(b"p"));
    let expected = Ok(Decoded {
        consumed: head.len(),
        message,
    });
    assert_eq!(decoder.decode(&mut buf), expected);
    assert!(decoder.in_fragment());
    let message = Some(Message::Text(b"hello world"));
    let expected = Ok(Decoded {
        consumed: tail.len(),
        message,
    });
    assert_eq!(decoder.decode(&mut buf[head.len()..]), expected);
    assert!(!decoder.in_fragment());
}

#[test]
fn accepts_empty_message_and_empty_fragments() {
    check_message(&frame(TEXT, b""), Message::Text(b""));
    let parts = [
        frame(TEXT & NOT_FIN, b""),
        frame(CONTINUE, b""),
        frame(LAST, b""),
    ];
    check_message(&parts.concat(), Message::Text(b""));
}

#[test]
fn rejects_unmasked_frame() {
    let unmasked = [TEXT, 0x02, b'h', b'i'];
    assert_eq!(violation(MAX, &unmasked), protocol("unmasked client frame"));
}

#[test]
fn rejects_reserved_bits() {
    for rsv in [0x40, 0x20, 0x10] {
        let bytes = frame(TEXT | rsv, b"x");
        assert_eq!(violation(MAX, &bytes), protocol("reserved bits set"));
    }
}

#[test]
fn rejects_reserved_opcodes() {
    for opcode in (0x3..=0x7).chain(0xB..=0xF) {
        let bytes = frame(0x80 | opcode, b"");
        assert_eq!(violation(MAX, &bytes), protocol("invalid opcode"));
    }
}

#[test]
fn rejects_fragmented_ping() {
    let bytes = frame(PING & NOT_FIN, b"");
    assert_eq!(violation(MAX, &bytes), protocol("fragmented control frame"));
}

#[test]
fn rejects_ping_over_125_bytes() {
    let bytes = frame(PING, &[0; 126]);
    assert_eq!(violation(MAX, &bytes), protocol("control frame too long"));
}

#[test]
fn rejects_continuation_without_start() {
    let bytes = frame(LAST, b"x");
    assert_eq!(
        violation(MAX, &bytes),
        protocol("unexpected continuation frame")
    );
}

#[test]
fn rejects_new_data_frame_during_fragmented_message() {
    let bytes = [frame(TEXT & NOT_FIN, b"a"), frame(BINARY, b"b")].concat();
    assert_eq!(
        violation(MAX, &bytes),
        protocol("expected continuation frame")
    );
}

#[test]
fn rejects_64_bit_length_with_top_bit_set() {
    let header = [BINARY, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
    assert_eq!(violation(MAX, &header), protocol("invalid frame length"));
}

#[test]
fn rejects_oversized_frame_from_header_alone() {
    let header = &frame(BINARY, &[0; 1001])[..8];
    assert_eq!(violation(1000, header), Violation::TOO_BIG);
    let (mut decoder, mut buf) = (Decoder::new(1001), header.to_vec());
    let result = decoder.decode(&mut buf);
    assert_eq!(
        result,
        Ok(Decoded {
            consumed: 0,
            message: None
        })
    );
}

#[test]
fn rejects_reassembly_over_limit_from_continuation_header() {
    let mut decoder = Decoder::new(1000);
    let first = frame(BINARY & NOT_FIN, &[0; 600]);
    let mut at_limit = [first.clone(), frame(LAST, &[0; 400])].concat();
    assert!(decoder.decode(&mut at_limit).unwrap().message.is_some());
    let mut first = first;
    let len = first.len();
    assert_eq!(decoder.decode(&mut first), Ok(Decoded::need_more(len)));
    let over = &mut frame(LAST, &[0; 401])[..8];
    assert_eq!(decoder.decode(over), Err(Violation::TOO_BIG));
}

#[test]
fn rejects_invalid_utf8_text() {
    let bytes = frame(TEXT, b"ok\xFF");
    assert_eq!(violation(MAX, &bytes), Violation::INVALID_UTF8);
    let truncated = [frame(TEXT & NOT_FIN, b"\xE2\x82"), frame(LAST, b"")].concat();
    assert_eq!(violation(MAX, &truncated), Violation::INVALID_UTF8);
}

#[test]
fn accepts_utf8_sequence_split_across_fragments() {
    let euro = "€".as_bytes();
    let parts = [
        frame(TEXT & NOT_FIN, &euro[..1]),
        frame(CONTINUE, &euro[1..2]),
        frame(LAST, &euro[2..]),
    ];
    check_message(&parts.concat(), Message::Text(euro));
}

#[test]
fn invalid_utf8_fails_at_its_fragment_before_the_message_ends() {
    // Autobahn 6.4.2: "κόσμε" and a 0xF4, then 0x90 (0xF4 0x90 starts no
    // character); the last fragment never needs to arrive.
    let kosme = b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5";
    let first = frame(TEXT & NOT_FIN, &[&kosme[..], b"\xF4"].concat());
    let mut decoder = Decoder::new(MAX);
    let mut buf = first.clone();
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Decoded::need_more(first.len()))
    );
    let mut buf = frame(CONTINUE, b"\x90");
    assert_eq!(decoder.decode(&mut buf), Err(Violation::INVALID_UTF8));
    // Invalid in the very first fragment.
    assert_eq!(
        violation(MAX, &frame(TEXT & NOT_FIN, b"ok\xFF")),
        Violation::INVALID_UTF8
    );
    // A binary message is not text: the same bytes pass.
    let binary = [frame(BINARY & NOT_FIN, b"\xFF"), frame(LAST, b"\xFF")].concat();
    check_message(&binary, Message::Binary(b"\xFF\xFF"));
}

#[test]
fn utf8_checked_by_fragment_still_rejects_what_the_last_fragment_breaks() {
    // A cut character completed wrongly by the last fragment.
    let parts = [
        frame(TEXT & NOT_FIN, b"a\xE2"),
        frame(CONTINUE, b"\x82"),
        frame(LAST, b"A"),
    ];
    assert_eq!(violation(MAX, &parts.concat()), Violation::INVALID_UTF8);
    // A next message starts its check afresh.
    let mut decoder = Decoder::new(MAX);
    let mut first = [frame(TEXT & NOT_FIN, "€".as_bytes()), frame(LAST, b"!")].concat();
    let message = Some(Message::Text("€!".as_bytes()));
    let consumed = first.len();
    assert_eq!(
        decoder.decode(&mut first),
        Ok(Decoded { consumed, message })
    );
    let mut second = [frame(TEXT & NOT_FIN, b"\x82"), frame(LAST, b"")].concat();
    assert_eq!(decoder.decode(&mut second), Err(Violation::INVALID_UTF8));
}

#[test]
fn decodes_close_and_pong_payloads() {
    check_message(&frame(CLOSE, b""), Message::Close(None));
    check_message(&frame(CLOSE, b"\x03\xE8"), Message::Close(Some((1000, ""))));
    check_message(
        &frame(CLOSE, b"\x0F\xA0bye"),
        Message::Close(Some((4000, "bye"))),
    );
    check_message(&frame(PONG, b"p"), Message::Pong(b"p"));
}

#[test]
fn rejects_bad_close_payloads() {
    let one_byte = frame(CLOSE, &[0x03]);
    assert_eq!(violation(MAX, &one_byte), protocol("invalid close payload"));
    for code in [0u16, 999, 1004, 1005, 1006, 1012, 1015, 2000, 2999, 5000] {
        let bytes = frame(CLOSE, &code.to_be_bytes());
        assert_eq!(
            violation(MAX, &bytes),
            protocol("invalid close code"),
            "{code}"
        );
    }
    let bad_reason = frame(CLOSE, b"\x03\xE8\xC3\x28");
    assert_eq!(violation(MAX, &bad_reason), Violation::INVALID_UTF8);
}

#[test]
fn close_codes_are_tungstenites_minus_later_iana_registrations() {
    use tungstenite::protocol::frame::coding::CloseCode;
    for code in 0..=u16::MAX {
        let expected = CloseCode::from(code).is_allowed() && !matches!(code, 1012 | 1013);
        assert_eq!(close_code_allowed(code), expected, "code {code}");
    }
}

#[test]
fn large_fragment_buffer_is_freed_on_next_call() {
    let parts = [frame(BINARY & NOT_FIN, &[7; 70_000]), frame(LAST, b"")];
    let mut decoder = Decoder::new(MAX);
    assert!(decoder
        .decode(&mut parts.concat())
        .unwrap()
        .message
        .is_some());
    assert!(decoder.buffer.capacity() > FRAGMENT_RETAIN_BYTES);
    let result = decoder.decode(&mut []);
    assert_eq!(
        result,
        Ok(Decoded {
            consumed: 0,
            message: None
        })
    );
    assert_eq!(decoder.buffer.capacity(), 0);
}

#[test]
fn unmask_matches_naive_for_all_lengths_and_alignments() {
    let mask = [0xA1, 0x02, 0x5C, 0xFF];
    let data: Vec<u8> = (0..48u8).map(|i| i.wrapping_mul(37)).collect();
    for offset in 0..8 {
        for len in 0..=40 {
            let mut fast = data.clone();
            unmask(&mut fast[offset..offset + len], mask);
            let mut naive = data.clone();
            for (i, byte) in naive[offset..offset + len].iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
            assert_eq!(fast, naive, "offset {offset} len {len}");
        }
    }
}

#[test]
fn hostile_random_input_never_panics() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut messages = 0;
    for _ in 0..5000 {
        let len = (next() % 96) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Mostly a known opcode and the mask bit, so frames get past the first checks.
        if len > 1 && next() % 4 != 0 {
            let opcodes = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA];
            buf[0] = (buf[0] & 0x80) | opcodes[(next() % 6) as usize];
            buf[1] = (buf[1] | 0x80) & !(next() as u8 & 0x40);
        }
        let mut decoder = Decoder::new(64);
        while let Ok(decoded) = decoder.decode(&mut buf) {
            assert!(decoded.consumed <= len);
            let (consumed, done) = (decoded.consumed, decoded.message.is_none());
            buf.drain(..consumed);
            if done {
                break;
            }
            messages += 1;
        }
    }
    assert!(messages > 100, "only {messages} messages decoded");
}
