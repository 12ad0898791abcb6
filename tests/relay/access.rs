//! Namespaces, join keys, send keys and ephemeral keys (docs/PROTOCOL.md
//! section 6) against the real server with two shards.

use crate::support::*;
use itty_relay::id::ShardId;
use std::sync::{Arc, Barrier};

fn relay_with_namespaces() -> Relay {
    relay_with(|c| {
        c.namespace = vec![
            namespace("acme", Some("acme-join"), None),
            namespace("acme/private", Some("private-join"), Some("private-send")),
            namespace("feed:live", None, Some("feed-send")),
            namespace("open", None, None),
        ]
    })
}

crate::over_tls_too! {
    #[test]
    fn a_namespace_covers_itself_and_channels_after_a_boundary_only() {
        let relay = relay_with_namespaces();
        for (path, status) in [
            ("/c/acme", 403),
            ("/c/acme?joinKey=acme-join", 101),
            ("/c/acme:feed", 403),
            ("/c/acme:feed?joinKey=acme-join", 101),
            ("/c/acme/chat/1", 403),
            ("/c/acme/chat/1?joinKey=acme-join", 101),
            ("/c/acme%2Fchat", 403), // percent-decoded before matching
            ("/c/acmes", 101),
            ("/c/acm", 101),
            ("/c/x/acme", 101),
            ("/c/acme?joinKey=wrong", 403),
            ("/c/acme?joinKey=acme-join-longer", 403),
        ] {
            let (got, head, _) = relay.upgrade(path);
            assert_eq!(got, status, "{path}: {head}");
            if got == 403 {
                assert!(head.contains("join key required or wrong"), "{head}");
                assert!(!head.to_ascii_lowercase().contains("upgrade: websocket"));
            }
        }
    }

    #[test]
    fn the_longest_namespace_wins() {
        let relay = relay_with_namespaces();
        for (path, status) in [
            ("/c/acme/private/x?joinKey=acme-join", 403),
            ("/c/acme/private/x?joinKey=private-join", 101),
            ("/c/acme/private?joinKey=private-join", 101),
            ("/c/acme/privatex?joinKey=acme-join", 101),
            ("/c/acme:private/x?joinKey=acme-join", 101),
        ] {
            assert_eq!(relay.upgrade(path).0, status, "{path}");
        }
    }

    #[test]
    fn a_refused_join_never_becomes_a_member_and_is_counted() {
        let relay = relay_with_namespaces();
        let channel = "acme:room";
        let mut member = relay.join(&format!("/c/{channel}?joinKey=acme-join&announce=true"));
        for _ in 0..4 {
            assert_eq!(relay.upgrade(&format!("/c/{channel}")).0, 403);
        }
        let mut second = relay.join(&format!("/c/{channel}?joinKey=acme-join"));
        assert_eq!(
            second.join_event["total"], 2,
            "refused joins were not counted"
        );
        assert_eq!(member.recv_event("join")["total"], 2);
        assert_eq!(
            relay.metric_labelled("upgrades_refused_total", "reason", "join_key"),
            4
        );
        second.send("\"hi\"");
        assert_eq!(member.recv_message()["message"], "hi");
    }

    #[test]
    fn without_the_send_key_a_member_listens_but_its_sends_get_an_error_event() {
        let relay = relay_with_namespaces();
        let channel = relay.channel_owned_by(ShardId(0), "feed:live:prices");
        // The listener and the sender on different shards, so the refusal and
        // the relay both cross shards.
        let mut listener = relay.join_on(ShardId(1), &format!("/c/{channel}"));
        let mut sender = relay.join_on(ShardId(0), &format!("/c/{channel}?sendKey=feed-send"));
        let mut wrong = relay.join_on(ShardId(0), &format!("/c/{channel}?sendKey=nope"));

        listener.send("{\"n\":1}");
        let err = listener.recv_event("error");
        assert_eq!(
            err["message"],
            "a send key is required to send on this channel"
        );
        wrong.send(&format!("\u{1F}{}\u{1F}\"dm\"", listener.uid));
        assert_eq!(
            wrong.recv_event("error")["message"],
            "a send key is required to send on this channel",
            "a direct message needs the send key too"
        );

        sender.send("{\"price\":42}");
        let got = listener.recv_message();
        assert_eq!(got["message"]["price"], 42);
        assert_eq!(got["uid"], sender.uid.as_str());
        assert_eq!(wrong.recv_message()["message"]["price"], 42);
        assert_eq!(
            relay.metric_labelled("messages_dropped_total", "reason", "no_send_key"),
            2
        );
    }

    #[test]
    fn ephemeral_keys_are_set_by_the_creator_and_held_until_the_channel_empties() {
        let relay = relay();
        let channel = unique("eph");
        let mut creator = relay.join(&format!("/c/{channel}?joinKey=door&sendKey=pen"));
        // Later keys are checked, never change the channel's.
        assert_eq!(relay.upgrade(&format!("/c/{channel}")).0, 403);
        assert_eq!(relay.upgrade(&format!("/c/{channel}?joinKey=other")).0, 403);
        let mut reader = relay.join(&format!("/c/{channel}?joinKey=door&sendKey=other"));
        let mut writer = relay.join(&format!("/c/{channel}?joinKey=door&sendKey=pen"));
        reader.send("1");
        assert_eq!(
            reader.recv_event("error")["message"],
            "a send key is required to send on this channel"
        );
        writer.send("2");
        assert_eq!(reader.recv_message()["message"], 2);
        creator.send("3");
        assert_eq!(reader.recv_message()["message"], 3);

        // Everyone leaves: the keys go with the channel.
        creator.close();
        reader.close();
        writer.close();
        let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
        while relay.upgrade(&format!("/c/{channel}")).0 != 101 {
            assert!(
                std::time::Instant::now() < deadline,
                "the keys outlived the channel"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    #[test]
    fn keys_offered_on_a_namespace_channel_never_become_ephemeral_keys() {
        let relay = relay_with_namespaces();
        let _first = relay.join("/c/open:room?joinKey=mine&sendKey=mine");
        let mut second = relay.join("/c/open:room");
        let mut third = relay.join("/c/open:room");
        second.send("\"free\"");
        assert_eq!(third.recv_message()["message"], "free");
    }

    #[test]
    fn two_connections_racing_to_create_a_channel_end_with_exactly_one_key_set() {
        let relay = relay();
        for round in 0..20 {
            // Alternate owners, and let the kernel place the two racers.
            let owner = ShardId(round % 2);
            let channel = relay.channel_owned_by(owner, &unique("race"));
            let barrier = Arc::new(Barrier::new(2));
            let racers: Vec<_> = ["alpha", "beta"]
                .into_iter()
                .map(|key| {
                    let barrier = barrier.clone();
                    let addr = relay.addr;
                    let path = format!("/c/{channel}?joinKey={key}");
                    let tls = over_tls();
                    std::thread::spawn(move || {
                        crate::support::tls::inherit(tls);
                        let mut raw = Raw::connect(addr);
                        let request = Raw::handshake_request(&path);
                        barrier.wait();
                        use std::io::Write;
                        raw.stream.write_all(request.as_bytes()).unwrap();
                        let head = raw.read_head();
                        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
                        (key, status, raw)
                    })
                })
                .collect();
            let results: Vec<_> = racers.into_iter().map(|t| t.join().unwrap()).collect();
            let winners: Vec<_> = results.iter().filter(|r| r.1 == 101).collect();
            let losers: Vec<_> = results.iter().filter(|r| r.1 == 403).collect();
            assert_eq!(
                (winners.len(), losers.len()),
                (1, 1),
                "round {round}: {:?}",
                results.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>()
            );
            let (won, lost) = (winners[0].0, losers[0].0);
            assert_eq!(
                relay.upgrade(&format!("/c/{channel}?joinKey={won}")).0,
                101,
                "round {round}: the winner's key is the channel's"
            );
            assert_eq!(
                relay.upgrade(&format!("/c/{channel}?joinKey={lost}")).0,
                403,
                "round {round}"
            );
        }
    }
}
