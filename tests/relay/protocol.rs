//! docs/PROTOCOL.md sections 2 to 5 and 9 with real WebSocket clients.
//!
//! "Does not receive" is proven with a fence, never a sleep: the channel's
//! owner orders every message, so if a frame had been sent to a client it
//! would arrive before a later fence message from another member.

use crate::support::*;
use serde_json::json;
use std::io::Read;
use std::time::Duration;

crate::over_tls_too! {
    #[test]
    fn own_join_is_the_first_frame_with_uid_and_total() {
        let relay = relay();
        let channel = unique("join");
        let a = relay.join(&format!("/c/{channel}"));
        let uid = a.join_event["uid"].as_str().unwrap();
        assert_eq!(uid.len(), 6);
        assert!(uid.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(a.join_event["total"], 1);
        assert!(a.join_event.get("users").is_none());
        assert!(a.join_event.get("alias").is_none());
        assert!(a.join_event["date"].is_u64());
    }

    #[test]
    fn uids_differ_per_connection_and_on_reconnect() {
        let relay = relay();
        let channel = unique("uids");
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let c = relay.join(&format!("/c/{channel}"));
            assert!(seen.insert(c.uid.clone()));
            c.close();
        }
    }

    #[test]
    fn alias_as_wins_over_alias_and_empty_means_none() {
        let relay = relay();
        let channel = unique("alias");
        let mut a = relay.join(&format!("/c/{channel}?as=Al+ice&alias=Other&echo=true"));
        assert_eq!(a.join_event["alias"], "Al ice");
        a.send("1");
        assert_eq!(a.recv_message()["alias"], "Al ice");
        let mut b = relay.join(&format!("/c/{channel}?as=&echo=true"));
        assert!(b.join_event.get("alias").is_none());
        b.send("2");
        assert!(b.recv_message().get("alias").is_none());
        let c = relay.join(&format!("/c/{channel}?alias=Zo%C3%AB"));
        assert_eq!(c.join_event["alias"], "Zoë");
    }

    #[test]
    fn echo_true_returns_own_broadcasts_and_otherwise_not() {
        let relay = relay();
        let channel = unique("echo");
        let mut echoer = relay.join(&format!("/c/{channel}?echo=true"));
        let mut quiet = relay.join(&format!("/c/{channel}?echo=false"));
        echoer.recv_event("join");
        echoer.send("\"e\"");
        assert_eq!(echoer.recv_message()["message"], "e");
        assert_eq!(quiet.recv_message()["message"], "e");

        quiet.send("\"not for me\"");
        // The owner ordered quiet's message before the fence that echoer sends
        // only after receiving it.
        assert_eq!(echoer.recv_message()["message"], "not for me");
        echoer.send("\"fence\"");
        assert_eq!(echoer.recv_message()["message"], "fence");
        assert_eq!(
            quiet.recv_message()["message"],
            "fence",
            "quiet got its own message back"
        );
    }

    #[test]
    fn flags_are_on_only_for_exactly_true() {
        let relay = relay();
        let channel = unique("flags");
        let mut a = relay.join(&format!("/c/{channel}?echo=TRUE&list=1"));
        assert!(a.join_event.get("users").is_none());
        let mut b = relay.join(&format!("/c/{channel}"));
        a.recv_event("join");
        a.send("\"mine\"");
        assert_eq!(b.recv_message()["message"], "mine");
        b.send("\"fence\"");
        assert_eq!(a.recv_message()["message"], "fence");
    }

    #[test]
    fn announce_names_the_member_in_join_and_leave_events() {
        let relay = relay();
        let channel = unique("announce");
        let mut watcher = relay.join(&format!("/c/{channel}"));
        let bob = relay.join(&format!("/c/{channel}?as=Bob&announce=true"));
        let join = watcher.recv_event("join");
        assert_eq!(join["uid"], bob.uid.as_str());
        assert_eq!(join["alias"], "Bob");
        assert_eq!(join["total"], 2);
        assert!(join.get("self").is_none());

        let hidden = relay.join(&format!("/c/{channel}?as=Hidden"));
        let join = watcher.recv_event("join");
        assert_eq!(join, json!({"type":"join","total":3,"date":join["date"]}));

        let bob_uid = bob.uid.clone();
        bob.close();
        let leave = watcher.recv_event("leave");
        assert_eq!(leave["uid"], bob_uid.as_str());
        assert_eq!(leave["alias"], "Bob");
        assert_eq!(leave["total"], 2);
        hidden.close();
        let leave = watcher.recv_event("leave");
        assert_eq!(
            leave,
            json!({"type":"leave","total":1,"date":leave["date"]})
        );
    }

    #[test]
    fn list_gives_announced_members_and_self() {
        let relay = relay();
        let channel = unique("list");
        let ann = relay.join(&format!("/c/{channel}?as=Ann&announce=true"));
        let _shy = relay.join(&format!("/c/{channel}?as=Shy"));
        let me = relay.join(&format!("/c/{channel}?list=true"));
        let users = me.join_event["users"].as_array().unwrap();
        assert_eq!(users.len(), 2, "{users:?}");
        assert!(users.contains(&json!({"uid": ann.uid, "alias": "Ann"})));
        assert!(users.contains(&json!({"uid": me.uid, "self": true})));
        assert_eq!(me.join_event["total"], 3);
    }

    #[test]
    fn envelope_embeds_the_payload_exactly_as_sent() {
        let relay = relay();
        let channel = unique("envelope");
        let mut a = relay.join(&format!("/c/{channel}"));
        let mut b = relay.join(&format!("/c/{channel}?as=Bee"));
        a.recv_event("join");
        let payloads = [
            r#"{ "type" : "chat",  "text":"h\u00e9 🔥" }"#,
            "[1, 2, 3]",
            "\"hello world\"",
            "42",
            "null",
            "123456789012345678901234567890",
        ];
        let mut ids = std::collections::HashSet::new();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for p in payloads {
            b.send(p);
            let raw = a.recv_raw();
            assert!(raw.ends_with(&format!(",\"message\":{p}}}")), "{raw}");
            let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
            assert_eq!(v["uid"], b.uid.as_str());
            assert_eq!(v["alias"], "Bee");
            assert!(
                v.get("type").is_none(),
                "a relayed message has no top-level type"
            );
            assert!(v["date"].as_u64().unwrap() >= before);
            assert!(
                ids.insert(v["id"].as_str().unwrap().to_owned()),
                "ids are unique"
            );
        }
    }

    #[test]
    fn direct_messages_reach_only_the_recipient_in_both_forms() {
        let relay = relay();
        let channel = unique("dm");
        let mut a = relay.join(&format!("/c/{channel}?echo=true"));
        let mut b = relay.join(&format!("/c/{channel}"));
        let mut c = relay.join(&format!("/c/{channel}"));
        a.recv_event("join");
        a.recv_event("join");
        b.recv_event("join");
        for form in [
            format!("\u{1F}{}\u{1F}{{\"secret\":1}}", b.uid),
            format!("@@{}@@{{\"secret\":1}}", b.uid),
        ] {
            a.send(&form);
            let got = b.recv_message();
            assert_eq!(got["message"], json!({"secret": 1}));
            assert_eq!(got["uid"], a.uid.as_str());
            a.send("\"fence\"");
            assert_eq!(
                a.recv_message()["message"],
                "fence",
                "a DM is not echoed to its sender"
            );
            assert_eq!(
                c.recv_message()["message"],
                "fence",
                "a third member never sees the DM"
            );
            assert_eq!(b.recv_message()["message"], "fence");
        }
    }

    #[test]
    fn direct_message_to_an_unknown_uid_gets_an_error_naming_it() {
        let relay = relay();
        let channel = unique("dm-unknown");
        let mut a = relay.join(&format!("/c/{channel}?echo=true"));
        a.send("\u{1F}ZZZZZZ\u{1F}1");
        let err = a.recv_event("error");
        assert!(err["message"].as_str().unwrap().contains("ZZZZZZ"), "{err}");
        a.send("@@not a uid@@1");
        let err = a.recv_event("error");
        assert_eq!(err["message"], "no user not a uid on this channel");
        // A member of another channel is not on this one.
        let other = relay.join(&format!("/c/{}", unique("elsewhere")));
        a.send(&format!("\u{1F}{}\u{1F}1", other.uid));
        assert!(a.recv_event("error")["message"]
            .as_str()
            .unwrap()
            .contains(&other.uid));
        a.send("\"still open\"");
        assert_eq!(a.recv_message()["message"], "still open");
    }

    #[test]
    fn bad_input_gets_error_events_and_the_connection_stays_open() {
        let relay = relay();
        let channel = unique("bad-input");
        let mut a = relay.join(&format!("/c/{channel}?echo=true"));
        let mut b = relay.join(&format!("/c/{channel}"));
        a.recv_event("join");
        for bad in ["undefined", "{", "", "\u{1F}abcdef[1]", "@@abcdef"] {
            a.send(bad);
            assert_eq!(a.recv()["message"], "message is not valid JSON", "{bad:?}");
        }
        a.ws.send(tungstenite::Message::binary(vec![])).unwrap();
        assert_eq!(a.recv()["message"], "binary frames are not supported");
        a.send("\"ok\"");
        assert_eq!(a.recv_message()["message"], "ok");
        assert_eq!(
            b.recv_message()["message"],
            "ok",
            "nothing invalid was relayed"
        );
    }

    #[test]
    fn total_counts_every_connection() {
        let relay = relay();
        let channel = unique("total");
        let clients: Vec<_> = (0..5)
            .map(|_| relay.join(&format!("/c/{channel}")))
            .collect();
        for (i, c) in clients.iter().enumerate() {
            assert_eq!(c.join_event["total"], i + 1);
        }
    }

    #[test]
    fn leave_goes_out_when_the_socket_vanishes_without_a_close() {
        let relay = relay();
        let channel = unique("vanish");
        let mut watcher = relay.join(&format!("/c/{channel}"));
        let gone = relay.join(&format!("/c/{channel}?announce=true"));
        watcher.recv_event("join");
        let uid = gone.uid.clone();
        drop(gone); // TCP FIN without a close frame
        let leave = watcher.recv_event("leave");
        assert_eq!(leave["uid"], uid.as_str());
        assert_eq!(leave["total"], 1);
    }

    #[test]
    fn a_client_that_half_closes_is_ended_as_gone_and_gets_fin() {
        let relay = relay();
        let channel = unique("halfclose");
        let mut watcher = relay.join(&format!("/c/{channel}"));
        let mut raw = Raw::upgrade(relay.addr, &format!("/c/{channel}?announce=true"));
        assert_eq!(raw.read_json()["type"], "join");
        watcher.recv_event("join");
        raw.stream.shutdown(std::net::Shutdown::Write).unwrap(); // FIN, no close frame
        assert_eq!(watcher.recv_event("leave")["total"], 1);
        // The relay answers with FIN (nothing else: a gone peer is sent
        // nothing), then forgets the connection.
        raw.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut rest = Vec::new();
        raw.stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{rest:?}");
        relay.wait_until(Duration::from_secs(10), "not counted as gone", |r| {
            r.metric_labelled("connections_closed_total", "reason", "peer_gone") == 1
        });
        assert_eq!(relay.metric_sum("connections_open"), 1);
    }

    #[test]
    fn frames_sent_before_the_join_event_are_processed_after_it() {
        let relay = relay();
        let channel = unique("early");
        let mut raw = Raw::connect(relay.addr);
        let mut bytes = Raw::handshake_request(&format!("/c/{channel}?echo=true")).into_bytes();
        bytes.extend(Raw::frame(true, 1, b"\"early\"", Some([9, 9, 9, 9])));
        std::io::Write::write_all(&mut raw.stream, &bytes).unwrap();
        raw.read_head();
        assert_eq!(raw.read_json()["type"], "join");
        assert_eq!(raw.read_json()["message"], "early");
    }

    #[test]
    fn pings_get_pongs_and_fragments_are_reassembled() {
        let relay = relay();
        let channel = unique("frames");
        let mut raw = Raw::upgrade(relay.addr, &format!("/c/{channel}?echo=true"));
        assert_eq!(raw.read_json()["type"], "join");
        raw.send_frame(true, 9, b"hi");
        assert_eq!(raw.read_frame(), (10, b"hi".to_vec()));
        raw.send_frame(false, 1, b"[1,");
        raw.send_frame(true, 9, b"");
        raw.send_frame(false, 0, b"2,");
        raw.send_frame(true, 0, b"3]");
        assert_eq!(
            raw.read_frame().0,
            10,
            "the ping between fragments is answered first"
        );
        assert_eq!(raw.read_json()["message"], json!([1, 2, 3]));
    }

    #[test]
    fn client_close_is_answered_with_its_code_and_the_member_leaves() {
        let relay = relay();
        let channel = unique("close");
        let mut watcher = relay.join(&format!("/c/{channel}"));
        let mut raw = Raw::upgrade(relay.addr, &format!("/c/{channel}"));
        raw.read_json();
        watcher.recv_event("join");
        raw.send_frame(true, 8, &[0x0F, 0xA0]); // 4000
        assert_eq!(raw.read_close_code(), 4000);
        assert!(raw.closed_by_server());
        assert_eq!(watcher.recv_event("leave")["total"], 1);
    }

    #[test]
    fn protocol_violations_close_with_the_rfc_codes() {
        let relay = relay_with(|c| {
            c.message_bytes_max = 1000;
            c.outgoing_queue_bytes_max = 4096;
        });
        let channel = unique("violations");
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (Raw::frame(true, 1, b"\"unmasked\"", None), 1002),
            (Raw::frame(true, 3, b"", Some([1, 1, 1, 1])), 1002),
            (
                Raw::frame(true, 1, &[0x22, 0xFF, 0x22], Some([1, 1, 1, 1])),
                1007,
            ),
            (Raw::frame(true, 1, &[b'1'; 1001], Some([1, 1, 1, 1])), 1009),
            (Raw::frame(false, 9, b"", Some([1, 1, 1, 1])), 1002),
            (Raw::frame(true, 0, b"x", Some([1, 1, 1, 1])), 1002),
        ];
        for (frame, code) in cases {
            let mut raw = Raw::upgrade(relay.addr, &format!("/c/{channel}"));
            raw.read_json();
            std::io::Write::write_all(&mut raw.stream, &frame).unwrap();
            assert_eq!(raw.read_close_code(), code, "frame {:?}", &frame[..2]);
        }
        // A fragmented message over the limit is closed as well.
        let mut raw = Raw::upgrade(relay.addr, &format!("/c/{channel}"));
        raw.read_json();
        raw.send_frame(false, 1, &[b'1'; 600]);
        raw.send_frame(true, 0, &[b'1'; 600]);
        assert_eq!(raw.read_close_code(), 1009);
    }

    #[test]
    fn ordering_is_the_same_for_every_member() {
        let relay = relay();
        let channel = unique("order");
        let mut members: Vec<_> = (0..4)
            .map(|_| relay.join(&format!("/c/{channel}?echo=true")))
            .collect();
        for (i, m) in members.iter_mut().enumerate() {
            for _ in i + 1..4 {
                m.recv_event("join");
            }
        }
        let (mut p1, rest) = members.split_first_mut().unwrap();
        let (p2, _) = rest.split_first_mut().unwrap();
        for i in 0..200 {
            p1.send(&format!("\"a{i}\""));
            p2.send(&format!("\"b{i}\""));
        }
        let _ = &mut p1;
        let sequences: Vec<Vec<String>> = members
            .iter_mut()
            .map(|m| {
                (0..400)
                    .map(|_| m.recv_message()["message"].as_str().unwrap().to_owned())
                    .collect()
            })
            .collect();
        for s in &sequences[1..] {
            assert_eq!(s, &sequences[0]);
        }
        let a_only: Vec<_> = sequences[0]
            .iter()
            .filter(|m| m.starts_with('a'))
            .cloned()
            .collect();
        assert_eq!(
            a_only,
            (0..200).map(|i| format!("a{i}")).collect::<Vec<_>>(),
            "a publisher's order is kept"
        );
    }

    #[test]
    fn frames_split_across_many_reads_arrive_whole() {
        let relay = relay();
        let channel = unique("split");
        let mut raw = Raw::upgrade(relay.addr, &format!("/c/{channel}?echo=true"));
        assert_eq!(raw.read_json()["type"], "join");
        let big = format!("\"{}\"", "y".repeat(30_000));
        let mut bytes = Raw::frame(true, 1, big.as_bytes(), Some([7, 7, 7, 7]));
        bytes.extend(Raw::frame(true, 1, b"[1]", Some([5, 6, 7, 8])));
        // Dribble the two frames out in small pieces, split inside headers too.
        for piece in bytes.chunks(997) {
            std::io::Write::write_all(&mut raw.stream, piece).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(raw.read_json()["message"].as_str().unwrap().len(), 30_000);
        assert_eq!(raw.read_json()["message"], json!([1]));
    }
}
