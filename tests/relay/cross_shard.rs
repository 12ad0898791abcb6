//! Channels whose owner is not the shard a client landed on. Where each
//! client landed is read from the per-shard connection gauge, and channels
//! are picked by their owner, so the cross-shard path runs by
//! construction; the forward counters prove it ran.

use crate::support::*;
use itty_relay::id::ShardId;

crate::over_tls_too! {
    #[test]
    fn member_on_other_shard_receives_publish() {
        let relay = relay();
        let probe = relay.join(&format!("/c/{}", unique("probe")));
        let home = probe.shard;
        let remote_owner = ShardId(1 - home.0);
        probe.close();
        let channel = relay.channel_owned_by(remote_owner, &unique("remote"));

        let mut a = relay.join_on(home, &format!("/c/{channel}?as=A"));
        let mut b = relay.join_on(home, &format!("/c/{channel}"));
        a.recv_event("join");
        let forwards_before = relay.metric("forwards_total", home.index())
            + relay.metric("forwards_total", remote_owner.index());
        b.send("{\"via\":\"owner\"}");
        let got = a.recv_message();
        assert_eq!(got["message"]["via"], "owner");
        assert_eq!(got["uid"], b.uid.as_str());
        let forwards_after = relay.metric("forwards_total", home.index())
            + relay.metric("forwards_total", remote_owner.index());
        // At least the publish (home to owner) and its fan-out (owner to home).
        assert!(
            forwards_after >= forwards_before + 2,
            "{forwards_before} -> {forwards_after}"
        );
        assert_eq!(
            relay.metric("messages_published_total", remote_owner.index()),
            1
        );
        assert_eq!(relay.metric("messages_published_total", home.index()), 0);
    }

    #[test]
    fn members_on_both_shards_see_each_other() {
        let relay = relay();
        for owner in [ShardId(0), ShardId(1)] {
            let channel = relay.channel_owned_by(owner, &unique("both"));
            let mut on0 = relay.join_on(ShardId(0), &format!("/c/{channel}?announce=true"));
            let mut on1 = relay.join_on(ShardId(1), &format!("/c/{channel}?announce=true"));
            // on0 may see extra joins/leaves from placement attempts, and one
            // of those may still be leaving when on1 joins (its leave and on1's
            // join reach the owner from different shards, in either order).
            let join = loop {
                let e = on0.recv_event("join");
                if e["uid"] == on1.uid.as_str() {
                    break e;
                }
            };
            assert!(join["total"] == 2 || join["total"] == 3, "{join}");
            on0.send("\"from 0\"");
            assert_eq!(on1.recv_message()["message"], "from 0");
            on1.send(&format!("\u{1F}{}\u{1F}\"dm from 1\"", on0.uid));
            assert_eq!(on0.recv_message()["message"], "dm from 1");
            let uid1 = on1.uid.clone();
            on1.close();
            let leave = loop {
                let e = on0.recv_event("leave");
                if e["uid"] == uid1.as_str() {
                    break e;
                }
            };
            assert_eq!(leave["total"], 1);
        }
    }

    #[test]
    fn error_for_unknown_recipient_returns_from_a_remote_owner() {
        let relay = relay();
        let mut a = relay.join(&format!("/c/{}", unique("probe")));
        let channel = relay.channel_owned_by(ShardId(1 - a.shard.0), &unique("remote-err"));
        a = {
            let home = a.shard;
            a.close();
            relay.join_on(home, &format!("/c/{channel}"))
        };
        a.send("\u{1F}AAAAAA\u{1F}{}");
        assert!(a.recv_event("error")["message"]
            .as_str()
            .unwrap()
            .contains("AAAAAA"));
    }

    #[test]
    fn a_flood_through_a_congested_forward_queue_loses_nothing() {
        // One queue slot and the smallest backlog allowed: without backpressure
        // on the publisher's socket, this flood would overflow the backlog from
        // the owner back to the members' shard and drop messages.
        let relay = relay_with(|c| {
            c.forward_queue_slots = 1;
            c.forward_backlog_max = itty_relay::limits::forward_backlog_floor(1);
            // The member reads in a debug build; it must not count as slow.
            c.outgoing_queue_bytes_max = 64 * 1024 * 1024;
        });
        let probe = relay.join(&format!("/c/{}", unique("probe")));
        let home = probe.shard;
        probe.close();
        let channel = relay.channel_owned_by(ShardId(1 - home.0), &unique("flood"));
        let mut member = relay.join_on(home, &format!("/c/{channel}"));
        let mut publisher = relay.join_on(home, &format!("/c/{channel}"));
        member.recv_event("join");

        const COUNT: usize = 30_000;
        let reader = std::thread::spawn(move || {
            let mut next = 0;
            while next < COUNT {
                let v = member.recv_message();
                assert_eq!(v["message"], next, "lost or reordered");
                next += 1;
            }
        });
        for i in 0..COUNT {
            publisher
                .ws
                .write(tungstenite::Message::text(i.to_string()))
                .unwrap();
            if i % 500 == 499 {
                publisher.ws.flush().unwrap();
            }
        }
        publisher.ws.flush().unwrap();
        if reader.join().is_err() {
            // What the relay counted, for the diagnosis.
            let metrics = relay.metrics();
            let moved: Vec<_> = metrics
                .lines()
                .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
                .collect();
            panic!("the member did not get every message in order: {moved:#?}");
        }
        assert_eq!(relay.metric_sum("messages_dropped_total"), 0);
    }
}
