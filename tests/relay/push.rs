//! `POST /push/<channel>` (docs/PROTOCOL.md section 7): every status, chunked
//! bodies split over TCP segments, keep-alive, and delivery to members on
//! both shards through the owner.

use crate::support::*;
use itty_relay::id::ShardId;
use serde_json::Value;
use std::io::{Read, Write};
use std::time::Duration;

fn push_relay() -> Relay {
    relay_with(|c| {
        c.message_bytes_max = 1000;
        c.namespace = vec![
            namespace("hooks", None, Some("hook-key")),
            namespace("joinonly", Some("j"), None),
        ];
    })
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Reads one HTTP response (head and Content-Length body) from `stream`.
fn read_response(stream: &mut impl Read) -> (u16, String, String) {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed in the head");
        data.push(byte[0]);
    }
    let head = String::from_utf8(data).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

crate::over_tls_too! {
    #[test]
    fn a_push_reaches_every_member_on_both_shards_without_uid_or_alias() {
        let relay = push_relay();
        for owner in [ShardId(0), ShardId(1)] {
            let channel = relay.channel_owned_by(owner, "hooks:orders");
            let mut a = relay.join_on(ShardId(0), &format!("/c/{channel}"));
            let mut b = relay.join_on(ShardId(1), &format!("/c/{channel}"));
            let (status, head, body) = relay.push(&channel, Some("hook-key"), r#"{"order":7}"#);
            assert_eq!(status, 200, "{head}{body}");
            assert!(head.contains("application/json"), "{head}");
            assert_eq!(json(&body), json(r#"{"ok":true,"recipients":2}"#));
            for member in [&mut a, &mut b] {
                let got = member.recv_message();
                assert_eq!(got["message"]["order"], 7);
                assert!(got["id"].is_string() && got["date"].is_u64(), "{got}");
                assert!(
                    got.get("uid").is_none() && got.get("alias").is_none(),
                    "{got}"
                );
            }
        }
    }

    #[test]
    fn a_push_to_an_empty_channel_is_fine() {
        let relay = push_relay();
        let (status, _, body) = relay.push("hooks:nobody-here", Some("hook-key"), "[1,2]");
        assert_eq!(status, 200);
        assert_eq!(json(&body), json(r#"{"ok":true,"recipients":0}"#));
    }

    #[test]
    fn every_refusal_has_its_status_and_a_json_body() {
        let relay = push_relay();
        let big = format!("\"{}\"", "x".repeat(1000));
        for (channel, key, body, status) in [
            ("plain", Some("hook-key"), "1", 404),    // no namespace
            ("joinonly:x", Some("j"), "1", 404),      // namespace without send key
            ("hooks:a", None, "1", 401),              // no key
            ("hooks:a", Some("hook-keY"), "1", 403),  // wrong key
            ("hooks:a", Some("hook-key"), &big, 413), // over message_bytes_max
            ("hooks:a", Some("hook-key"), "{nope", 400),
            ("hooks:a", Some("hook-key"), "", 400),
        ] {
            let (got, head, text) = relay.push(channel, key, body);
            assert_eq!(got, status, "{channel} {key:?}: {head}\n{text}");
            let reply = json(&text);
            assert_eq!(reply["ok"], false, "{text}");
            assert!(reply["error"].is_string(), "{text}");
        }
        let (status, head, _) =
            relay.http("GET /push/hooks:a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        assert_eq!(status, 405);
        assert!(head.contains("Allow: POST"), "{head}");
        assert_eq!(
            relay.metric_labelled("push_requests_total", "status", "404"),
            2
        );
        assert_eq!(
            relay.metric_labelled("push_requests_total", "status", "405"),
            1
        );
        assert_eq!(
            relay.metric_labelled("push_requests_total", "status", "413"),
            1
        );
    }

    #[test]
    fn pushes_over_the_per_ip_rate_get_429_with_retry_after() {
        let relay = relay_with(|c| {
            c.pushes_per_ip_per_sec = 1;
            c.pushes_per_ip_burst = 2;
            c.namespace = vec![namespace("hooks", None, Some("k"))];
        });
        // Buckets are per shard: at most 2 per shard pass in the first second.
        let statuses: Vec<u16> = (0..8)
            .map(|_| relay.push("hooks:a", Some("k"), "1").0)
            .collect();
        let ok = statuses.iter().filter(|&&s| s == 200).count();
        assert!((2..=6).contains(&ok), "{statuses:?}");
        assert!(statuses.contains(&429), "{statuses:?}");
        // The rate is checked before the key: a bad key is throttled too.
        let (status, head, body) = loop {
            let reply = relay.push("hooks:a", Some("wrong"), "1");
            if reply.0 == 429 {
                break reply;
            }
        };
        assert_eq!(status, 429);
        let retry: u64 = head
            .lines()
            .find_map(|l| l.strip_prefix("Retry-After: "))
            .expect("Retry-After")
            .trim()
            .parse()
            .unwrap();
        assert!(retry >= 1, "{head}");
        assert_eq!(json(&body)["ok"], false);
    }

    #[test]
    fn a_chunked_body_in_many_segments_and_keep_alive_requests_on_one_connection() {
        let relay = push_relay();
        let channel = "hooks:chunked";
        let mut member = relay.join(&format!("/c/{channel}"));
        let mut stream = Conn::connect(relay.addr);
        stream.tcp().set_nodelay(true).unwrap();
        let pieces: [&[u8]; 7] = [
            b"POST /push/hooks:chunked HTTP/1.1\r\nHost: t\r\nx-send-key: hook-key\r\n",
            b"Transfer-Encoding: chunked\r\n\r\n",
            b"5\r\n{\"a\":",
            b"\r\n5;note=x\r\n[1,",
            b"2]\r\n1\r\n}\r",
            b"\n0\r\n",
            b"\r\n",
        ];
        for piece in pieces {
            stream.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        let (status, head, body) = read_response(&mut stream);
        assert_eq!(status, 200, "{head}{body}");
        assert!(!head.contains("Connection: close"), "{head}");
        assert_eq!(member.recv_message()["message"], json(r#"{"a":[1,2]}"#));

        // The same connection: a second push (Content-Length, Expect:
        // 100-continue), a bad one, then a plain GET.
        stream
            .write_all(
                b"POST /push/hooks:chunked HTTP/1.1\r\nHost: t\r\nx-send-key: hook-key\r\n\
                  Expect: 100-continue\r\nContent-Length: 4\r\n\r\n",
            )
            .unwrap();
        let (status, _, _) = read_response(&mut stream);
        assert_eq!(status, 100);
        stream.write_all(b"true").unwrap();
        let (status, _, body) = read_response(&mut stream);
        assert_eq!(status, 200, "{body}");
        assert_eq!(member.recv_message()["message"], true);
        stream
            .write_all(
                b"POST /push/hooks:chunked HTTP/1.1\r\nHost: t\r\nx-send-key: hook-key\r\n\
                  Content-Length: 3\r\n\r\nbad",
            )
            .unwrap();
        assert_eq!(read_response(&mut stream).0, 400);
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let (status, _, body) = read_response(&mut stream);
        assert_eq!((status, body.as_str()), (200, "ok\n"));
    }

    /// JSON is UTF-8 (RFC 8259 section 8.1): a body that is JSON in shape
    /// but not UTF-8 inside a string would reach members as a text frame
    /// their client must reject (1007), so it is refused here. A member on
    /// the channel gets the good push after it, and nothing before.
    #[test]
    fn a_body_that_is_not_utf8_is_refused_with_400() {
        let relay = push_relay();
        let mut member = relay.join("/c/hooks:bytes");
        for body in [&b"\"\xff\""[..], b"[\"\xc3\"]", b"{\"a\":\"\xed\xa0\x80\"}"] {
            let mut stream = Conn::connect(relay.addr);
            let head = format!(
                "POST /push/hooks:bytes HTTP/1.1\r\nHost: t\r\nx-send-key: hook-key\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(&[head.as_bytes(), body].concat()).unwrap();
            let (status, _, text) = read_response(&mut stream);
            assert_eq!(status, 400, "{body:?}: {text}");
            assert_eq!(json(&text)["ok"], false, "{text}");
        }
        let (status, _, _) = relay.push("hooks:bytes", Some("hook-key"), r#""\u00ff""#);
        assert_eq!(status, 200);
        assert_eq!(member.recv_message()["message"], "\u{ff}");
    }

    #[test]
    fn a_chunked_body_over_the_limit_is_refused_with_413() {
        let relay = push_relay();
        let mut stream = Conn::connect(relay.addr);
        stream
            .write_all(
                b"POST /push/hooks:big HTTP/1.1\r\nHost: t\r\nx-send-key: hook-key\r\n\
                  Transfer-Encoding: chunked\r\n\r\n",
            )
            .unwrap();
        let chunk = format!("200\r\n{}\r\n", "7".repeat(0x200));
        for _ in 0..3 {
            if stream.write_all(chunk.as_bytes()).is_err() {
                break;
            }
        }
        let (status, head, body) = read_response(&mut stream);
        assert_eq!(status, 413, "{head}{body}");
        assert!(head.contains("Connection: close"));
    }
}
