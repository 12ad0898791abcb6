//! permessage-deflate (RFC 7692) on the wire: negotiation, a message
//! compressed once for the members that negotiated it and plain for the
//! others, compressed client messages (whole and fragmented), and the
//! refusals (a zip bomb, invalid data, RSV1 without the extension).

use crate::support::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use itty_relay::config::Switch;
use std::io::{Read, Write};

const OFFER: &str = "permessage-deflate; client_max_window_bits";

fn deflate_relay() -> Relay {
    relay_with(|c| c.compression = Switch::On)
}

/// Upgrades on `path` offering `offer`; returns the 101's head and the
/// connection.
fn upgrade_offering(relay: &Relay, path: &str, offer: &str) -> (String, Raw) {
    let mut raw = Raw::connect(relay.addr);
    let request = Raw::handshake_request(path).replace(
        "\r\n\r\n",
        &format!("\r\nSec-WebSocket-Extensions: {offer}\r\n\r\n"),
    );
    raw.stream.write_all(request.as_bytes()).unwrap();
    let head = raw.read_head();
    (head, raw)
}

/// One server frame: (RSV1, opcode, payload), skipping pings.
fn read_frame_rsv1(raw: &mut Raw) -> (bool, u8, Vec<u8>) {
    loop {
        let mut head = [0u8; 2];
        raw.stream.read_exact(&mut head).unwrap();
        let len = match head[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                raw.stream.read_exact(&mut b).unwrap();
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                raw.stream.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        raw.stream.read_exact(&mut payload).unwrap();
        if head[0] & 0x0F != 9 {
            return (head[0] & 0x40 != 0, head[0] & 0x0F, payload);
        }
    }
}

fn inflate(compressed: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = compressed.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

fn deflate(text: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(text.len() + 64);
    c.compress_vec(text, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

/// A masked client frame with RSV1 set when `compressed`.
fn client_frame(fin: bool, opcode: u8, compressed: bool, payload: &[u8]) -> Vec<u8> {
    let mut frame = Raw::frame(fin, opcode, payload, Some([9, 8, 7, 6]));
    if compressed {
        frame[0] |= 0x40;
    }
    frame
}

/// A JSON value of about `len` bytes that compresses well.
fn big_json(len: usize) -> String {
    let mut s = String::from("{\"rows\":[");
    let mut i = 0;
    while s.len() < len {
        s.push_str(&format!("{{\"id\":{i},\"name\":\"row {i}\",\"ok\":true}},"));
        i += 1;
    }
    s.push_str("null]}");
    s
}

/// The next text frame, inflated if compressed: (compressed, JSON).
fn read_message(raw: &mut Raw) -> (bool, serde_json::Value) {
    let (rsv1, opcode, payload) = read_frame_rsv1(raw);
    assert_eq!(opcode, 1, "a text frame");
    let text = if rsv1 { inflate(&payload) } else { payload };
    (rsv1, serde_json::from_slice(&text).unwrap())
}

/// The next relayed message (skipping join and leave events).
fn read_envelope(raw: &mut Raw) -> (bool, serde_json::Value) {
    loop {
        let (rsv1, frame) = read_message(raw);
        if frame.get("message").is_some() {
            return (rsv1, frame);
        }
    }
}

#[test]
fn an_offer_is_answered_with_no_context_takeover_and_off_declines_it() {
    let on = deflate_relay();
    let relay = &on;
    let (head, _raw) = upgrade_offering(relay, &format!("/c/{}", unique("neg")), OFFER);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"),
        "{head}"
    );
    let (head, _raw) = upgrade_offering(
        relay,
        &format!("/c/{}", unique("neg")),
        "permessage-deflate; server_max_window_bits=10",
    );
    assert!(head.contains("; server_max_window_bits=10\r\n"), "{head}");
    let (head, _raw) = upgrade_offering(
        relay,
        &format!("/c/{}", unique("neg")),
        "permessage-deflate; bogus",
    );
    assert!(
        head.starts_with("HTTP/1.1 101") && !head.contains("Extensions"),
        "{head}"
    );

    let off = crate::support::relay();
    let (head, _raw) = upgrade_offering(&off, &format!("/c/{}", unique("neg")), OFFER);
    assert!(
        head.starts_with("HTTP/1.1 101") && !head.contains("Extensions"),
        "{head}"
    );
}

#[test]
fn a_large_message_is_compressed_once_for_deflate_members_and_plain_for_others() {
    let relay = deflate_relay();
    // The channel's owner is shard 0; members on both shards.
    let channel = relay.channel_owned_by(itty_relay::id::ShardId(0), "mix");
    let path = format!("/c/{channel}");
    let mut deflaters = Vec::new();
    for _ in 0..3 {
        let (_, mut raw) = upgrade_offering(&relay, &path, OFFER);
        read_message(&mut raw); // its own join event
        deflaters.push(raw);
    }
    let mut plain = relay.join(&path);
    let mut sender = relay.join(&path);
    plain.recv_event("join");
    let compressed_before = relay.metric_sum("itty_messages_compressed_total");

    let big = big_json(2000);
    sender.send(&big);
    let want: serde_json::Value = serde_json::from_str(&big).unwrap();
    for raw in &mut deflaters {
        let (rsv1, envelope) = read_envelope(raw);
        assert!(rsv1, "a deflate member gets the compressed frame");
        assert_eq!(envelope["message"], want);
    }
    let envelope = plain.recv_message();
    assert_eq!(
        envelope["message"], want,
        "a plain member gets the same JSON"
    );
    assert_eq!(
        relay.metric_sum("itty_messages_compressed_total") - compressed_before,
        1,
        "compressed once for every member"
    );

    // Below the threshold (512 bytes by default): plain for everyone.
    sender.send("{\"short\":1}");
    for raw in &mut deflaters {
        let (rsv1, envelope) = read_envelope(raw);
        assert!(!rsv1, "small messages go out plain");
        assert_eq!(envelope["message"]["short"], 1);
    }
    assert_eq!(
        relay.metric_sum("itty_messages_compressed_total") - compressed_before,
        1
    );
}

#[test]
fn compressed_client_messages_whole_and_fragmented_are_relayed() {
    let relay = deflate_relay();
    let path = format!("/c/{}", unique("inbound"));
    let (_, mut sender) = upgrade_offering(&relay, &path, OFFER);
    read_message(&mut sender);
    let mut reader = relay.join(&path);
    read_message(&mut sender); // the reader's join
    let big = big_json(3000);
    let compressed = deflate(big.as_bytes());
    sender
        .stream
        .write_all(&client_frame(true, 1, true, &compressed))
        .unwrap();
    assert_eq!(
        reader.recv_message()["message"],
        serde_json::from_str::<serde_json::Value>(&big).unwrap()
    );
    // Fragmented: RSV1 on the first frame only.
    let (a, b) = compressed.split_at(compressed.len() / 2);
    sender
        .stream
        .write_all(&client_frame(false, 1, true, a))
        .unwrap();
    sender
        .stream
        .write_all(&client_frame(true, 0, false, b))
        .unwrap();
    assert_eq!(
        reader.recv_message()["message"],
        serde_json::from_str::<serde_json::Value>(&big).unwrap()
    );
    // A small compressed message too (the client chooses per message).
    let small = deflate(b"{\"x\":1}");
    sender
        .stream
        .write_all(&client_frame(true, 1, true, &small))
        .unwrap();
    assert_eq!(reader.recv_message()["message"]["x"], 1);
}

#[test]
fn a_zip_bomb_gets_1009_invalid_data_1007_and_rsv1_without_the_extension_1002() {
    let relay = deflate_relay();
    let path = format!("/c/{}", unique("bomb"));
    // 8 MiB of one character inflates far past the 100 KiB limit.
    let bomb = deflate(&vec![b' '; 8 << 20]);
    assert!(bomb.len() < 100 * 1024);
    let (_, mut raw) = upgrade_offering(&relay, &path, OFFER);
    read_message(&mut raw);
    raw.stream
        .write_all(&client_frame(true, 1, true, &bomb))
        .unwrap();
    assert_eq!(raw.read_close_code(), 1009);

    let (_, mut raw) = upgrade_offering(&relay, &path, OFFER);
    read_message(&mut raw);
    raw.stream
        .write_all(&client_frame(true, 1, true, &[0xff; 64]))
        .unwrap();
    assert_eq!(raw.read_close_code(), 1007);

    // Valid deflate of invalid UTF-8 in a text message.
    let (_, mut raw) = upgrade_offering(&relay, &path, OFFER);
    read_message(&mut raw);
    raw.stream
        .write_all(&client_frame(true, 1, true, &deflate(&[0xc3, 0x28])))
        .unwrap();
    assert_eq!(raw.read_close_code(), 1007);

    // RSV1 on a connection that did not negotiate deflate.
    let mut raw = Raw::upgrade(relay.addr, &path);
    raw.read_json();
    raw.stream
        .write_all(&client_frame(true, 1, true, &deflate(b"1")))
        .unwrap();
    assert_eq!(raw.read_close_code(), 1002);

    // RSV1 on a control frame, even with deflate negotiated.
    let (_, mut raw) = upgrade_offering(&relay, &path, OFFER);
    read_message(&mut raw);
    raw.stream
        .write_all(&client_frame(true, 9, true, b""))
        .unwrap();
    assert_eq!(raw.read_close_code(), 1002);
}
