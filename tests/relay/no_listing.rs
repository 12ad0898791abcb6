//! No way to list channels or users beyond what the protocol gives
//! (docs/PROTOCOL.md sections 1 and 6): `total`, and announced members in
//! `users`.

use crate::support::*;
use serde_json::json;

/// The obvious ways to enumerate channels or users get nothing the
/// protocol does not give: fixed answers on every other path, the same
/// answer for a live channel as for one that never existed, `users` with
/// announced members only, and the same error for a uid on another channel
/// as for one that does not exist.
#[test]
fn nothing_lists_channels_or_users_beyond_the_protocol() {
    let relay = relay_with(|c| c.namespace = vec![namespace("hooks", None, Some("hook-key"))]);
    let channel = unique("hidden-room");
    let other = unique("other-room");
    let mut shy = relay.join(&format!("/c/{channel}?as=shy-alias-zz"));
    let loud = relay.join(&format!("/c/{channel}?as=loud-alias-zz&announce=true"));
    let elsewhere = relay.join(&format!("/c/{other}?as=far-alias-zz&announce=true"));
    let pushed = relay.join("/c/hooks:live-room");
    let secrets = [
        channel.clone(),
        other.clone(),
        "live-room".to_owned(),
        "alias-zz".to_owned(),
        shy.uid.clone(),
        loud.uid.clone(),
        elsewhere.uid.clone(),
        pushed.uid.clone(),
    ];
    let assert_names_nothing = |what: &str, text: &str| {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} gives away {secret:?}: {text}"
            );
        }
    };

    let version = env!("CARGO_PKG_VERSION");
    for (path, status, body) in [
        ("/", 200, None),
        ("/status", 200, None),
        ("/status.json", 200, None),
        ("/channels", 404, Some("not found")),
        ("/users", 404, Some("not found")),
        ("/list", 404, Some("not found")),
        ("/c", 404, Some("not found")),
        ("/api/channels", 404, Some("not found")),
        (&format!("/{channel}"), 404, Some("not found")),
        ("/c/", 426, None),
        ("/c/*", 426, None),
        (&format!("/c/{channel}?list=true"), 426, None),
        ("/push/", 405, None),
        ("/push/*", 405, None),
        ("/health", 200, Some("ok")),
        ("/version", 200, Some(version)),
        ("/metrics", 200, None),
    ] {
        for method in ["GET", "HEAD", "OPTIONS"] {
            let (got, head, text) = relay.http(&format!(
                "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            ));
            let what = format!("{method} {path}");
            assert_names_nothing(&what, &head);
            assert_names_nothing(&what, &text);
            if method == "GET" {
                assert_eq!(got, status, "{what}: {head}");
                if let Some(body) = body {
                    assert_eq!(text.trim(), body, "{what}");
                }
            }
        }
    }

    // Pushes: a live channel and one that never existed get the same
    // answer; only a key holder learns a count (the protocol's recipients).
    let post = |channel: &str, key: Option<&str>| {
        let (status, _, body) = relay.push(channel, key, "1");
        (status, body)
    };
    assert_eq!(post(&channel, None), post(&unique("never-was"), None));
    assert_eq!(
        post(&channel, Some("x")),
        post(&unique("never-was"), Some("x"))
    );
    assert_eq!(post("hooks:live-room", None), post("hooks:never-was", None));
    assert_eq!(
        post("hooks:live-room", Some("bad")),
        post("hooks:never-was", Some("bad"))
    );
    assert_eq!(post("", None).0, 400);
    assert_eq!(
        post("hooks:live-room", Some("hook-key")),
        (200, r#"{"ok":true,"recipients":1}"#.to_owned())
    );

    // Wildcards and guessed uids as channel names are just channels.
    for path in [
        "/c/*?list=true".to_owned(),
        "/c/%2A?list=true".to_owned(),
        format!("/c/{}?list=true", shy.uid),
        format!("/c/{}?list=true", loud.uid),
    ] {
        let channels = relay.metric_sum("channels");
        let probe = relay.join(&path);
        assert_eq!(probe.join_event["total"], 1, "{path}: {}", probe.join_event);
        assert_eq!(
            probe.join_event["users"],
            json!([{"uid": probe.uid, "self": true}])
        );
        probe.close_and_wait();
        // Its leave goes to the channel's owner on a queue of its own, not
        // ordered with the next probe's join from another shard: wait until
        // the owner retired the channel, so the next probe finds it empty.
        relay.wait_until(
            std::time::Duration::from_secs(10),
            "the probe's channel was not retired",
            |r| r.metric_sum("channels") == channels,
        );
    }

    // list=true without announcing: the announced member and itself; the
    // shy member is counted in `total` and never named.
    let mut lister = relay.join(&format!("/c/{channel}?list=true"));
    assert_eq!(lister.join_event["total"], 3);
    let users = lister.join_event["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{users:?}");
    assert!(users.contains(&json!({"uid": loud.uid, "alias": "loud-alias-zz"})));
    assert!(users.contains(&json!({"uid": lister.uid, "self": true})));
    // Nor does a later join name the lister to the others.
    shy.recv_event("join"); // the loud member's
    let join = shy.recv_event("join");
    assert_eq!(
        join,
        json!({"type": "join", "total": 3, "date": join["date"]})
    );

    // A direct message to a uid elsewhere reads like one to nobody.
    for uid in [elsewhere.uid.as_str(), "Zz9Zz9"] {
        lister.send(&format!("\u{1F}{uid}\u{1F}1"));
        assert_eq!(
            lister.recv_event("error")["message"],
            format!("no user {uid} on this channel")
        );
    }
    let text = relay.metrics();
    assert_names_nothing("/metrics", &text);
}
