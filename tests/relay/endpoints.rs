//! docs/PROTOCOL.md section 1: the HTTP endpoints and handshake refusals.

use crate::support::*;

crate::over_tls_too! {
    #[test]
    fn version_is_plain_text_without_a_leading_v() {
        let relay = relay();
        let (status, body) = relay.get("/version");
        assert_eq!(status, 200);
        assert_eq!(body, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn health_is_ok_while_accepting() {
        let relay = relay();
        assert_eq!(relay.get("/health"), (200, "ok\n".to_owned()));
    }

    #[test]
    fn unknown_paths_get_404_with_a_body() {
        let relay = relay();
        let (status, body) = relay.get("/nope");
        assert_eq!(status, 404);
        assert!(!body.trim().is_empty());
    }

    #[test]
    fn plain_get_on_a_channel_gets_426() {
        let relay = relay();
        for path in ["/c/room", "/r/room"] {
            let (status, head, _) = relay.http(&format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
            assert_eq!(status, 426, "{path}");
            assert!(head.to_ascii_lowercase().contains("upgrade: websocket"));
        }
    }

    #[test]
    fn bad_channel_names_and_aliases_get_400() {
        let relay = relay();
        let long_channel = format!("/c/{}", "x".repeat(257));
        let long_alias = format!("/c/room?as={}", "a".repeat(65));
        for path in [
            "/c/",
            "/c/%FF",
            "/c/bad%zz",
            long_channel.as_str(),
            long_alias.as_str(),
        ] {
            let mut raw = Raw::connect(relay.addr);
            std::io::Write::write_all(&mut raw.stream, Raw::handshake_request(path).as_bytes())
                .unwrap();
            let head = raw.read_head();
            assert!(head.starts_with("HTTP/1.1 400"), "{path}: {head}");
        }
    }

    #[test]
    fn older_path_r_joins_the_same_channel_as_c() {
        let relay = relay();
        let channel = unique("r-path");
        let mut a = relay.join(&format!("/c/{channel}"));
        let mut b = relay.join(&format!("/r/{channel}"));
        assert_eq!(b.join_event["total"], 2);
        b.send("\"via r\"");
        assert_eq!(a.recv_message()["message"], "via r");
    }

    #[test]
    fn wrong_websocket_version_gets_426_with_the_supported_version() {
        let relay = relay();
        let request = Raw::handshake_request("/c/room").replace("Version: 13", "Version: 8");
        let (status, head, _) = relay.http(&request);
        assert_eq!(status, 426);
        assert!(head.contains("Sec-WebSocket-Version: 13"));
    }

    #[test]
    fn oversized_request_head_gets_431() {
        let relay = relay();
        let request = format!(
            "GET /version HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
            "a".repeat(9000)
        );
        assert_eq!(relay.http(&request).0, 431);
        let many: String = (0..70).map(|i| format!("X-H{i}: v\r\n")).collect();
        assert_eq!(
            relay
                .http(&format!("GET /version HTTP/1.1\r\n{many}\r\n"))
                .0,
            431
        );
    }

    #[test]
    fn keep_alive_serves_several_requests_on_one_connection() {
        let relay = relay();
        let one = "GET /version HTTP/1.1\r\nHost: t\r\n\r\n";
        let (status, _, body) = relay.http(&format!(
            "{one}{one}GET /health HTTP/1.1\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(status, 200);
        assert_eq!(
            body.matches("HTTP/1.1 200 OK").count(),
            2,
            "three responses in one stream: {body}"
        );
        assert!(body.ends_with("ok\n"));
    }

    #[test]
    fn push_without_a_namespace_is_404_and_other_methods_405() {
        let relay = relay();
        let (status, _, _) =
            relay.http("POST /push/room HTTP/1.1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        assert_eq!(status, 404);
        let (status, head, _) = relay.http("GET /push/room HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(status, 405);
        assert!(head.contains("Allow: POST"));
    }

    #[test]
    fn echo_endpoint_is_off_by_default_and_echoes_when_on() {
        let relay = relay();
        let mut raw = Raw::connect(relay.addr);
        std::io::Write::write_all(
            &mut raw.stream,
            Raw::handshake_request("/__echo").as_bytes(),
        )
        .unwrap();
        assert!(raw.read_head().starts_with("HTTP/1.1 404"));

        let relay = relay_with(|c| c.echo_endpoint = true);
        let mut raw = Raw::upgrade(relay.addr, "/__echo");
        raw.send_text("not even json");
        assert_eq!(raw.read_frame(), (1, b"not even json".to_vec()));
        raw.send_frame(true, 2, &[0, 1, 2]);
        assert_eq!(raw.read_frame(), (2, vec![0, 1, 2]));
    }

    #[test]
    fn echo_endpoint_is_admitted_like_a_join() {
        // The shard's cap stands for the whole admission (draining, the IP's
        // ban and rate, the cap): one function decides it for both routes.
        let relay = relay_with(|c| {
            c.echo_endpoint = true;
            c.connections_per_shard_max = 2;
        });
        let cap = 2 * relay.shards;
        let mut open = Vec::new();
        let mut refused = Vec::new();
        for _ in 0..40 {
            match relay.upgrade("/__echo") {
                (101, _, raw) => open.push(raw),
                (503, head, _) => {
                    refused.push(head);
                    if open.len() == cap {
                        break;
                    }
                }
                (other, head, _) => panic!("{other}: {head}"),
            }
        }
        assert!(open.len() <= cap, "{} echo sockets open", open.len());
        assert!(!refused.is_empty(), "no 503 once a shard was full");
        assert!(refused[0].contains("server is full"), "{}", refused[0]);
        assert_eq!(
            relay.metric_labelled("upgrades_refused_total", "reason", "shard_full"),
            refused.len() as u64
        );
    }

    #[test]
    fn metrics_name_no_channel_and_count_traffic() {
        let relay = relay();
        let channel = unique("secret-channel-name");
        let mut a = relay.join(&format!("/c/{channel}?as=SecretAlias"));
        let mut b = relay.join(&format!("/c/{channel}"));
        b.send("\"payload-marker\"");
        a.recv_message();
        let text = relay.metrics();
        for secret in [
            channel.as_str(),
            "SecretAlias",
            "payload-marker",
            a.uid.as_str(),
            "127.0.0.1",
        ] {
            assert!(!text.contains(secret), "metrics leak {secret}");
        }
        assert!(relay.metric_sum("messages_published_total") >= 1);
        assert!(relay.metric_sum("deliveries_total") >= 3);
        assert_eq!(relay.metric_sum("itty_channels"), 1);
    }
}
