//! The request-head parser (`http::head`) on raw bytes, and what is read
//! from a parsed head: header lookups, body framing (`http::body::framing`)
//! and the client IP behind trusted proxies (`http::client_ip`).
//!
//! Input: byte 0 picks the limits, byte 1 the split points, byte 2 the
//! peer and the trusted proxies; the rest is what a client sent. Checks:
//! - the head arriving in pieces gives, at the first piece that decides,
//!   the same answer as the whole buffer; every cut before the end of a
//!   complete head is "incomplete"; bytes after the head change nothing;
//! - a parsed head is within the byte and header limits, its names are
//!   lower case, and `consumed` ends with CRLFCRLF;
//! - `has_token` only finds tokens that are there;
//! - body framing: a length is what every Content-Length says, chunked
//!   only with Transfer-Encoding and no Content-Length;
//! - the client IP is the peer unless the peer is a trusted proxy, and
//!   otherwise an address written in X-Forwarded-For or X-Real-IP.
#![no_main]

use itty_relay::http::body::{framing, Framing};
use itty_relay::http::client_ip::{client_ip, Cidr};
use itty_relay::http::{parse_head, HeadError, HeadLimits, RequestHead};
use itty_relay_fuzz::{chunk_lengths, cut_points};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let [limits, split, peer, buf @ ..] = data else {
        return;
    };
    let limits = HeadLimits {
        head_bytes_max: [8192, 64, 512, 1024][usize::from(limits & 3)],
        headers_max: [64, 0, 1, 4, 128, 200, 2, 16][usize::from(limits >> 2 & 7)],
    };
    let whole = parse_head(buf, &limits);
    check_pieces(buf, &limits, &whole, *split);
    match whole {
        Ok(Some((head, consumed))) => {
            check_head(&head, consumed, buf, &limits, *split);
            check_framing(&head);
            check_client_ip(&head, *peer);
        }
        Ok(None) => assert!(buf.len() < limits.head_bytes_max),
        Err(HeadError::TooLarge) => assert!(buf.len() >= limits.head_bytes_max),
        Err(HeadError::TooManyHeaders | HeadError::Malformed) => {}
    }
});

type Parsed = Result<Option<(RequestHead, usize)>, HeadError>;

/// Reads the buffer as a connection does, growing it piece by piece until
/// the parser decides.
fn check_pieces(buf: &[u8], limits: &HeadLimits, whole: &Parsed, split: u8) {
    let mut end = 0;
    for size in chunk_lengths(split, buf.len()) {
        end += size;
        let partial = parse_head(&buf[..end], limits);
        if partial != Ok(None) {
            assert_eq!(&partial, whole, "decided at {end} of {}", buf.len());
            return;
        }
    }
    assert_eq!(whole, &Ok(None));
}

fn check_head(head: &RequestHead, consumed: usize, buf: &[u8], limits: &HeadLimits, split: u8) {
    assert!(consumed <= limits.head_bytes_max && consumed <= buf.len());
    assert!(buf[..consumed].ends_with(b"\n"), "head ends at a line end");
    assert!(head.headers().len() <= limits.headers_max.min(128));
    assert!(!head.method().is_empty() && !head.target().is_empty());
    assert!(head.version_minor <= 1);
    for (name, _) in head.headers() {
        assert!(!name.is_empty());
        assert_eq!(name, name.to_ascii_lowercase());
    }
    for cut in cut_points(split, consumed) {
        assert_eq!(parse_head(&buf[..cut], limits), Ok(None), "cut at {cut}");
    }
    let exact = parse_head(&buf[..consumed], limits)
        .expect("complete")
        .expect("complete");
    assert_eq!(exact, (head.clone(), consumed));
    // Lookups never panic, and a token found is really in a value.
    for (name, value) in head.headers() {
        let token = String::from_utf8_lossy(value.split(|&b| b == b',').next().unwrap_or(&[]));
        let token = token.trim_matches([' ', '\t']);
        if !token.is_empty() && !token.contains('\u{FFFD}') {
            assert!(head.has_token(name, token), "{name}: {token:?}");
        }
        assert!(head.header(name).is_some());
        let _ = head.header_str(name);
    }
    if head.has_token("connection", "close") {
        assert!(head.headers().any(|(n, v)| n == "connection"
            && String::from_utf8_lossy(v)
                .to_ascii_lowercase()
                .contains("close")));
    }
    let _ = head.keep_alive();
}

fn check_framing(head: &RequestHead) {
    let values = |name: &str| -> Vec<Vec<u8>> {
        head.headers()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.to_vec())
            .collect()
    };
    let lengths = values("content-length");
    let codings = values("transfer-encoding");
    match framing(head) {
        Ok(Framing::Chunked) => {
            assert!(lengths.is_empty());
            assert!(!codings.is_empty());
        }
        Ok(Framing::Length(n)) => {
            for value in &lengths {
                for item in value.split(|&b| b == b',') {
                    let item = String::from_utf8_lossy(item);
                    assert_eq!(item.trim_matches([' ', '\t']).parse::<u64>(), Ok(n));
                }
            }
            if lengths.is_empty() {
                assert_eq!(n, 0);
            }
        }
        Err(_) => {}
    }
}

fn check_client_ip(head: &RequestHead, selector: u8) {
    const PEERS: [&str; 4] = ["127.0.0.1", "10.1.2.3", "8.8.8.8", "::ffff:127.0.0.1"];
    const PROXIES: [&[&str]; 4] = [
        &[],
        &["127.0.0.1"],
        &["10.0.0.0/8", "127.0.0.0/8"],
        &["0.0.0.0/0", "::/0"],
    ];
    let peer: IpAddr = PEERS[usize::from(selector & 3)].parse().unwrap();
    let proxies: Vec<Cidr> = PROXIES[usize::from(selector >> 2 & 3)]
        .iter()
        .map(|c| c.parse().unwrap())
        .collect();
    let ip = client_ip(peer, head, &proxies);
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let peer_trusted = proxies.iter().any(|c| c.contains(peer));
    if !peer_trusted {
        assert_eq!(ip, peer, "headers from an untrusted peer are ignored");
        return;
    }
    if ip == peer {
        return;
    }
    // Every address-looking word of the forwarding headers.
    let mut written = Vec::new();
    for (name, value) in head.headers() {
        if name == "x-forwarded-for" || name == "x-real-ip" {
            let value = String::from_utf8_lossy(value);
            for word in value.split([',', ' ', '\t', '[', ']']) {
                let host = match word.rsplit_once(':') {
                    Some((host, port)) if host.contains('.') && port.parse::<u16>().is_ok() => host,
                    _ => word,
                };
                written.extend(host.parse::<IpAddr>().ok().map(canonical));
            }
        }
    }
    assert!(
        written.contains(&ip),
        "{ip} is not in the forwarding headers"
    );
    assert_eq!(ip, canonical(ip));
}
