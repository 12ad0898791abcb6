//! Server frames: unmasked, FIN set, built straight into the bytes that go
//! on the wire. A frame is built once and the same `Bytes` is queued to
//! every receiver. Pure; runs on any shard.

use super::codec::CONTROL_PAYLOAD_MAX;
use bytes::{Buf, Bytes};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// Longest server (unmasked) frame header: 2 bytes plus a 64-bit extended length.
pub const HEADER_BYTES_MAX: usize = 10;

const CLOSE_REASON_BYTES_MAX: usize = CONTROL_PAYLOAD_MAX - 2;

/// Starts a server frame: a Vec holding `HEADER_BYTES_MAX` placeholder bytes, with capacity for
/// the payload the caller appends before calling [`finish_frame`].
pub fn start_frame(payload_capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_BYTES_MAX.saturating_add(payload_capacity));
    buf.resize(HEADER_BYTES_MAX, 0);
    buf
}

/// Writes the real (unmasked, FIN set) header just before the payload of a buffer from
/// [`start_frame`] and returns the frame without copying the payload.
pub fn finish_frame(buf: Vec<u8>, opcode: OpCode) -> Bytes {
    finish_frame_with(buf, opcode, false)
}

/// `finish_frame`, with RSV1 set when `compressed` (RFC 7692 6: the first
/// frame of a compressed message; ours are never fragmented).
pub fn finish_frame_with(mut buf: Vec<u8>, opcode: OpCode, compressed: bool) -> Bytes {
    assert!(
        buf.len() >= HEADER_BYTES_MAX,
        "finish_frame needs a buffer from start_frame"
    );
    let len = buf.len() - HEADER_BYTES_MAX;
    let mut header = [0u8; HEADER_BYTES_MAX];
    header[0] = 0x80 | if compressed { 0x40 } else { 0 } | u8::from(opcode);
    let header_len = match len {
        0..=CONTROL_PAYLOAD_MAX => {
            header[1] = len as u8;
            2
        }
        126..=0xFFFF => {
            header[1] = 126;
            header[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            header[1] = 127;
            header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    let start = HEADER_BYTES_MAX - header_len;
    buf[start..HEADER_BYTES_MAX].copy_from_slice(&header[..header_len]);
    let mut frame = Bytes::from(buf);
    // Unlike `slice`, advancing does not clone (and so never promotes to a shared allocation).
    frame.advance(start);
    frame
}

/// The payload of a server frame (unmasked, built here).
pub fn payload_of(frame: &[u8]) -> &[u8] {
    let start = match frame.get(1) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(start..).unwrap_or(&[])
}

fn frame_from(payload: &[u8], opcode: OpCode) -> Bytes {
    let mut buf = start_frame(payload.len());
    buf.extend_from_slice(payload);
    finish_frame(buf, opcode)
}

pub fn text_frame(payload: &[u8]) -> Bytes {
    frame_from(payload, OpCode::Data(Data::Text))
}

pub fn pong_frame(payload: &[u8]) -> Bytes {
    debug_assert!(payload.len() <= CONTROL_PAYLOAD_MAX);
    frame_from(payload, OpCode::Control(Control::Pong))
}

pub fn ping_frame(payload: &[u8]) -> Bytes {
    debug_assert!(payload.len() <= CONTROL_PAYLOAD_MAX);
    frame_from(payload, OpCode::Control(Control::Ping))
}

/// Close frame with a status code and a reason, truncated on a char boundary so the payload
/// stays within the 125 bytes allowed for control frames.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let reason = &reason[..reason.floor_char_boundary(CLOSE_REASON_BYTES_MAX)];
    let mut buf = start_frame(2 + reason.len());
    buf.extend_from_slice(&code.to_be_bytes());
    buf.extend_from_slice(reason.as_bytes());
    finish_frame(buf, OpCode::Control(Control::Close))
}

pub fn empty_close_frame() -> Bytes {
    Bytes::from_static(&[0x88, 0x00])
}

pub fn binary_frame(payload: &[u8]) -> Bytes {
    frame_from(payload, OpCode::Data(Data::Binary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::FrameHeader;

    #[test]
    fn finish_frame_header_matches_tungstenite() {
        let opcode = OpCode::Data(Data::Binary);
        for len in [0usize, 1, 125, 126, 65535, 65536] {
            let mut buf = start_frame(len);
            buf.resize(HEADER_BYTES_MAX + len, 0xAB);
            let frame = finish_frame(buf, opcode);
            let mut header = Vec::new();
            let expected = FrameHeader {
                opcode,
                ..FrameHeader::default()
            };
            expected.format(len as u64, &mut header).unwrap();
            assert_eq!(frame[..header.len()], header[..], "length {len}");
            assert_eq!(frame.len(), header.len() + len);
            assert!(frame[header.len()..].iter().all(|&b| b == 0xAB));
        }
    }

    #[test]
    fn convenience_builders_produce_expected_frames() {
        assert_eq!(text_frame(b"hi")[..], b"\x81\x02hi"[..]);
        assert_eq!(ping_frame(b"p")[..], b"\x89\x01p"[..]);
        assert_eq!(pong_frame(b"")[..], b"\x8A\x00"[..]);
        assert_eq!(close_frame(1000, "bye")[..], b"\x88\x05\x03\xE8bye"[..]);
        assert_eq!(empty_close_frame()[..], b"\x88\x00"[..]);
    }

    #[test]
    fn close_frame_truncates_reason_on_char_boundary() {
        // 121 + 3 bytes would be 124 > 123, so the first euro sign is dropped whole.
        let reason = "a".repeat(121) + "€€";
        let frame = close_frame(1001, &reason);
        assert_eq!(frame[..4], [0x88, 2 + 121, 0x03, 0xE9]);
        assert_eq!(frame[4..], reason.as_bytes()[..121]);
        let frame = close_frame(1001, &"b".repeat(200));
        assert_eq!((frame[1], frame.len()), (125, 127));
    }
}
