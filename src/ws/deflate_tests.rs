//! Negotiation against real browsers' offers, compression that inflates
//! back exactly, and the inflater's bounds.

use super::*;

fn offer(value: &str) -> Option<Negotiated> {
    negotiate([value], None)
}

#[test]
fn browsers_offers_get_the_fixed_answer() {
    let chrome = offer("permessage-deflate; client_max_window_bits").unwrap();
    assert_eq!(
        chrome.response_header(),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    assert_eq!(chrome.window_bits(), 15);
    assert!(offer("permessage-deflate").is_some(), "Firefox, Safari");
    // ws (Node)'s default offer.
    assert!(offer("permessage-deflate; client_max_window_bits").is_some());
}

#[test]
fn server_max_window_bits_is_honoured_and_8_compresses_with_9() {
    let n = offer("permessage-deflate; server_max_window_bits=10").unwrap();
    assert_eq!(n.window_bits(), 10);
    assert!(n.response_header().ends_with("; server_max_window_bits=10"));
    let eight = offer("permessage-deflate; server_max_window_bits=8").unwrap();
    assert_eq!(eight.window_bits(), 9);
    assert!(eight.response_header().ends_with("=8"));
}

#[test]
fn offers_it_cannot_honour_are_declined_and_the_next_is_taken() {
    for bad in [
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=abc",
        "permessage-deflate; unknown_param",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "x-webkit-deflate-frame",
        "",
    ] {
        assert_eq!(offer(bad), None, "{bad:?}");
    }
    let second = negotiate(
        ["permessage-deflate; foo, permessage-deflate; server_max_window_bits=12"],
        None,
    );
    assert_eq!(second.unwrap().server_max_window_bits, Some(12));
    let quoted = offer("permessage-deflate; client_max_window_bits=\"10\"");
    assert!(quoted.is_some());
}

#[test]
fn broken_safari_gets_no_deflate_and_others_do() {
    let ua = |v: &str| {
        format!("Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/{v} Safari/605.1.15")
    };
    for v in ["15.0", "15.1", "15.2", "15.3"] {
        assert_eq!(negotiate(["permessage-deflate"], Some(&ua(v))), None, "{v}");
    }
    for v in ["15.4", "16.0", "14.1", "15.10"] {
        assert!(
            negotiate(["permessage-deflate"], Some(&ua(v))).is_some(),
            "{v}"
        );
    }
    let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36";
    assert!(negotiate(["permessage-deflate"], Some(chrome)).is_some());
}

fn json(len: usize) -> Vec<u8> {
    let mut v = b"{\"state\":[".to_vec();
    let mut i = 0;
    while v.len() < len {
        v.extend_from_slice(format!("{{\"x\":{i},\"y\":{}}},", i * 7 % 13).as_bytes());
        i += 1;
    }
    v.extend_from_slice(b"0]}");
    v
}

/// The payload of a server frame and whether RSV1 is set.
fn payload(frame: &[u8]) -> (&[u8], bool) {
    let rsv1 = frame[0] & 0x40 != 0;
    let (start, len) = match frame[1] {
        126 => (4, u16::from_be_bytes([frame[2], frame[3]]) as usize),
        127 => (
            10,
            u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
        ),
        n => (2, n as usize),
    };
    assert_eq!(frame.len(), start + len);
    (&frame[start..], rsv1)
}

#[test]
fn a_compressed_frame_inflates_back_exactly_for_every_window() {
    let mut compressor = Compressor::default();
    let mut inflater = Inflater::default();
    for len in [600, 1024, 5000, 100_000] {
        let text = json(len);
        for bits in 9..=15 {
            let frame = compressor.text_frame(&text, bits).expect("JSON compresses");
            let (compressed, rsv1) = payload(&frame);
            assert!(rsv1);
            assert!(
                compressed.len() < text.len() / 2,
                "{len} bytes, {bits} bits"
            );
            assert_eq!(inflater.inflate(compressed, 200_000).unwrap(), &text[..]);
        }
    }
}

#[test]
fn what_does_not_shrink_is_not_compressed() {
    let mut compressor = Compressor::default();
    assert_eq!(compressor.text_frame(b"\"x\"", 15), None);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let random: Vec<u8> = (0..2000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    assert_eq!(compressor.text_frame(&random, 15), None);
}

#[test]
fn a_zip_bomb_is_refused_at_the_limit_and_the_limit_itself_passes() {
    let mut compressor = Compressor::default();
    let mut inflater = Inflater::default();
    let limit = 100 * 1024;
    let exact = vec![b'a'; limit];
    let frame = compressor.text_frame(&exact, 15).unwrap();
    assert_eq!(
        inflater.inflate(payload(&frame).0, limit).unwrap().len(),
        limit
    );
    let over = vec![b'a'; limit + 1];
    let frame = compressor.text_frame(&over, 15).unwrap();
    assert_eq!(
        inflater.inflate(payload(&frame).0, limit),
        Err(InflateError::TooBig)
    );
    // 8 MiB of zeros in ~8 KB: refused once the output passes the limit.
    let bomb = vec![0u8; 8 << 20];
    let frame = compressor.text_frame(&bomb, 15).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(
        inflater.inflate(payload(&frame).0, limit),
        Err(InflateError::TooBig)
    );
    assert!(inflater.out.capacity() <= limit + 2 * INFLATE_STEP_BYTES);
    eprintln!("bomb refused in {:?}", started.elapsed());
}

#[test]
fn invalid_deflate_data_is_refused() {
    let mut inflater = Inflater::default();
    assert_eq!(
        inflater.inflate(&[0xff; 40], 1000),
        Err(InflateError::Invalid)
    );
    // And the inflater is usable again afterwards.
    let mut compressor = Compressor::default();
    let text = json(800);
    let frame = compressor.text_frame(&text, 15).unwrap();
    assert_eq!(
        inflater.inflate(payload(&frame).0, 10_000).unwrap(),
        &text[..]
    );
}
