//! The client frame decoder (`ws::codec`) on sequences of frames built
//! from structured input, against RFC 6455 as written (`reference`), and
//! the server frame builders (`ws::frame`) round-tripped through it.
//!
//! Checks:
//! - every frame sequence (any opcode, RSV bits, mask or none, fragments,
//!   interleaved control frames, close frames with and without reasons,
//!   lengths in any of the three encodings, lengths past the limit)
//!   decodes to exactly the messages and first violation RFC 6455 gives,
//!   whatever the split points;
//! - a frame announcing more than the limit is refused with 1009 even
//!   though its payload never arrives;
//! - a server frame (text, binary, ping, pong, close), masked as a client
//!   would, decodes back to its payload; close reasons are cut on a
//!   character boundary within 125 bytes.
#![no_main]

use arbitrary::Arbitrary;
use itty_relay::ws::frame;
use itty_relay_fuzz::reference::{decode_stream, expected_events, Event, FrameSpec};
use itty_relay_fuzz::{chunk_lengths, client_frame, message_bytes_max};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    limit: u8,
    split: u8,
    frames: Vec<Frame>,
    server: Vec<ServerFrame>,
}

#[derive(Arbitrary, Debug)]
struct Frame {
    fin: bool,
    /// RSV1-3 in the low three bits; mostly clear.
    rsv: u8,
    opcode: Opcode,
    mask: Option<[u8; 4]>,
    payload: Payload,
    /// 0: shortest length encoding; 1: 16-bit; 2: 64-bit.
    wide: u8,
    /// Announce this much more than the limit instead of the payload.
    oversize: Option<u32>,
    huge: bool,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Opcode {
    Continue,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
    Any(u8),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Bytes(Vec<u8>),
    Text(String),
    Close {
        code: u16,
        reason: String,
    },
    CloseCode(CloseCode),
    /// Long payloads without long inputs.
    Repeat {
        byte: u8,
        len: u16,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum CloseCode {
    Normal,
    Policy,
    App(u16),
    /// The edges of the ranges RFC 6455 allows and forbids.
    Edge(u8),
}

const CLOSE_CODE_EDGES: [u16; 20] = [
    0, 999, 1000, 1003, 1004, 1005, 1006, 1007, 1010, 1011, 1012, 1013, 1014, 1015, 1016, 2999,
    3000, 4999, 5000, 65535,
];

#[derive(Arbitrary, Debug)]
struct ServerFrame {
    kind: u8,
    payload: String,
    code: u16,
    mask: [u8; 4],
}

impl Frame {
    fn spec(&self, max: usize) -> FrameSpec {
        let opcode = match self.opcode {
            Opcode::Continue => 0,
            Opcode::Text => 1,
            Opcode::Binary => 2,
            Opcode::Close => 8,
            Opcode::Ping => 9,
            Opcode::Pong => 10,
            Opcode::Any(op) => op & 0x0F,
        };
        let rsv = if self.rsv & 0xF0 == 0 {
            (self.rsv & 7) << 4
        } else {
            0
        };
        let fin = if self.fin { 0x80 } else { 0 };
        let payload = match &self.payload {
            Payload::Bytes(b) => b.clone(),
            Payload::Text(t) => t.clone().into_bytes(),
            Payload::Close { code, reason } => {
                [&code.to_be_bytes()[..], reason.as_bytes()].concat()
            }
            Payload::CloseCode(c) => {
                let code: u16 = match c {
                    CloseCode::Normal => 1000,
                    CloseCode::Policy => 1008,
                    CloseCode::App(n) => 3000 + n % 2000,
                    CloseCode::Edge(i) => {
                        CLOSE_CODE_EDGES[usize::from(*i) % CLOSE_CODE_EDGES.len()]
                    }
                };
                code.to_be_bytes().to_vec()
            }
            Payload::Repeat { byte, len } => vec![*byte; usize::from(*len)],
        };
        let declared_len = match (self.oversize, self.huge) {
            (_, true) => Some(u64::MAX - u64::from(self.rsv)),
            (Some(extra), false) => Some(max as u64 + 1 + u64::from(extra)),
            (None, false) => None,
        };
        FrameSpec {
            first: fin | rsv | opcode,
            masked: self.mask.is_some(),
            payload,
            declared_len,
        }
    }
}

fuzz_target!(|input: Input| {
    let max = message_bytes_max(input.limit);
    let specs: Vec<FrameSpec> = input.frames.iter().map(|f| f.spec(max)).collect();
    let mut wire = Vec::new();
    for (frame, spec) in input.frames.iter().zip(&specs) {
        let mask = frame.mask.unwrap_or_default();
        let mask = spec.masked.then_some(mask);
        wire.extend(client_frame(
            spec.first,
            mask,
            &spec.payload,
            spec.declared_len,
            frame.wide,
        ));
    }
    let expected = expected_events(&specs, max);
    let decoded = decode_stream(max, &wire, &chunk_lengths(input.split, wire.len()));
    assert_eq!(decoded.events, expected, "frames: {specs:?}");
    if !matches!(expected.last(), Some(Event::Violation(..))) {
        assert!(decoded.leftover.is_empty(), "whole frames left unconsumed");
    }

    for server in &input.server {
        round_trip(server);
    }
});

/// A server frame, masked the way a client masks, decodes to its payload.
fn round_trip(server: &ServerFrame) {
    let text = server.payload.as_bytes();
    let control = &text[..server.payload.floor_char_boundary(125)];
    let (bytes, expected) = match server.kind % 5 {
        0 => (frame::text_frame(text), Event::Text(text.to_vec())),
        1 => (frame::binary_frame(text), Event::Binary(text.to_vec())),
        2 => (frame::ping_frame(control), Event::Ping(control.to_vec())),
        3 => (frame::pong_frame(control), Event::Pong(control.to_vec())),
        _ => {
            let code = 3000 + server.code % 2000;
            let bytes = frame::close_frame(code, &server.payload);
            let payload_len = usize::from(bytes[1] & 0x7F);
            assert!(
                (2..=125).contains(&payload_len),
                "close payload {payload_len}"
            );
            let reason = std::str::from_utf8(&bytes[4..]).expect("reason cut on a char boundary");
            assert!(server.payload.starts_with(reason));
            if server.payload.len() <= 123 {
                assert_eq!(reason, server.payload);
            }
            let event = Event::Close(Some((code, reason.to_owned())));
            (bytes, event)
        }
    };
    // Unmasked, FIN set, shortest length encoding.
    assert_eq!(bytes[0] & 0xF0, 0x80);
    let (len, header) = match bytes[1] {
        126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
        127 => (
            u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    assert_eq!(
        header,
        match len {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        }
    );
    assert_eq!(bytes.len(), header + len);
    let masked = client_frame(bytes[0], Some(server.mask), &bytes[header..], None, 0);
    let decoded = decode_stream(1 << 20, &masked, &[masked.len()]);
    assert_eq!(decoded.events, vec![expected]);
}
