//! docs/PROTOCOL.md across nodes: clients of one channel on different
//! nodes see each other's messages, one `total` sequence, direct
//! messages, lists, keys and pushes as on one relay.

use crate::harness::TestCluster;
use crate::support::*;
use serde_json::{json, Value};
use std::collections::HashSet;

fn path(channel: &str, query: &str) -> String {
    format!("/c/{channel}?{query}")
}

#[test]
fn members_on_three_nodes_see_one_total_sequence_and_each_others_messages() {
    let c = TestCluster::start(3);
    let ch = unique("across");
    let mut a = c.node(0).join(&path(&ch, "as=A&announce=true"));
    assert_eq!(a.join_event["total"], 1);
    let mut b = c.node(1).join(&path(&ch, "as=B&announce=true"));
    assert_eq!(b.join_event["total"], 2);
    let seen = a.recv_event("join");
    assert_eq!(
        (seen["uid"].as_str(), seen["total"].as_u64()),
        (Some(&*b.uid), Some(2))
    );
    assert_eq!(seen["alias"], "B");
    let mut d = c.node(2).join(&path(&ch, "as=C"));
    assert_eq!(d.join_event["total"], 3);
    for other in [&mut a, &mut b] {
        let j = other.recv_event("join");
        assert_eq!(j["total"], 3);
        assert!(j.get("uid").is_none(), "C did not announce: {j}");
    }
    a.send_json(&json!({"n": 1}));
    for other in [&mut b, &mut d] {
        let m = other.recv_message();
        assert_eq!(m["message"], json!({"n": 1}));
        assert_eq!(
            (m["uid"].as_str(), m["alias"].as_str()),
            (Some(&*a.uid), Some("A"))
        );
    }
    d.send_json(&json!("from C"));
    for other in [&mut a, &mut b] {
        assert_eq!(other.recv_message()["message"], "from C");
    }
    let b_uid = b.uid.clone();
    b.close();
    for other in [&mut a, &mut d] {
        let l = other.recv_event("leave");
        assert_eq!(
            (l["total"].as_u64(), l["uid"].as_str()),
            (Some(2), Some(&*b_uid))
        );
    }
}

#[test]
fn echo_and_list_span_the_cluster() {
    let c = TestCluster::start(3);
    let ch = unique("list");
    let mut a = c.node(0).join(&path(&ch, "as=Ann&announce=true&echo=true"));
    let b = c.node(1).join(&path(&ch, "as=Bob&announce=true"));
    let _hidden = c.node(1).join(&path(&ch, "as=Hid"));
    a.recv_event("join");
    a.recv_event("join");
    let d = c.node(2).join(&path(&ch, "list=true"));
    let users: HashSet<(String, Option<String>, bool)> = d.join_event["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["uid"].as_str().unwrap().to_owned(),
                u["alias"].as_str().map(str::to_owned),
                u["self"] == true,
            )
        })
        .collect();
    let expected: HashSet<_> = [
        (a.uid.clone(), Some("Ann".to_owned()), false),
        (b.uid.clone(), Some("Bob".to_owned()), false),
        (d.uid.clone(), None, true),
    ]
    .into();
    assert_eq!(users, expected, "{}", d.join_event);
    assert_eq!(d.join_event["total"], 4);
    a.recv_event("join");
    a.send_json(&json!({"echo": true}));
    assert_eq!(a.recv_message()["message"], json!({"echo": true}));
}

#[test]
fn direct_messages_reach_a_member_on_any_node_and_unknown_uids_get_the_error() {
    let c = TestCluster::start(2);
    let ch = unique("dm");
    let mut a = c.node(0).join(&path(&ch, "as=A"));
    let mut b = c.node(1).join(&path(&ch, "as=B"));
    let mut a2 = c.node(0).join(&path(&ch, ""));
    a.send(&format!("\u{1F}{}\u{1F}{{\"secret\":1}}", b.uid));
    let m = b.recv_message();
    assert_eq!(
        (m["message"].clone(), m["uid"].as_str()),
        (json!({"secret": 1}), Some(&*a.uid))
    );
    b.send(&format!("@@{}@@\"back\"", a.uid));
    assert_eq!(a.recv_message()["message"], "back");
    // a2 (same node as a) saw neither.
    a2.send_json(&json!("marker"));
    assert_eq!(a.recv_message()["message"], "marker");
    assert_eq!(b.recv_message()["message"], "marker");
    // A uid nobody has, and one that left: the same error as one relay.
    a.send("\u{1F}zzzzzz\u{1F}1");
    assert_eq!(
        a.recv_event("error")["message"],
        "no user zzzzzz on this channel"
    );
    let gone = b.uid.clone();
    b.close_and_wait();
    a.recv_event("leave");
    a.send(&format!("\u{1F}{gone}\u{1F}1"));
    assert_eq!(
        a.recv_event("error")["message"],
        format!("no user {gone} on this channel")
    );
}

#[test]
fn ephemeral_keys_set_on_one_node_hold_on_the_others_and_go_with_the_channel() {
    let c = TestCluster::start(3);
    let ch = unique("keys");
    let mut creator = c
        .node(0)
        .join(&path(&ch, "joinKey=open-sesame&sendKey=speak-now"));
    let (status, _, _) = c.node(1).upgrade(&path(&ch, ""));
    assert_eq!(status, 403, "no join key");
    let (status, _, _) = c.node(1).upgrade(&path(&ch, "joinKey=wrong-one"));
    assert_eq!(status, 403, "wrong join key");
    let mut listener = c.node(1).join(&path(&ch, "joinKey=open-sesame"));
    creator.recv_event("join");
    listener.send_json(&json!("may I"));
    assert_eq!(
        listener.recv_event("error")["message"],
        "a send key is required to send on this channel"
    );
    let mut speaker = c
        .node(2)
        .join(&path(&ch, "joinKey=open-sesame&sendKey=speak-now"));
    speaker.send_json(&json!("I may"));
    assert_eq!(creator.recv_message()["message"], "I may");
    for client in [creator, listener, speaker] {
        client.close_and_wait();
    }
    // Gone with the channel: a new creator sets its own.
    crate::harness::eventually(EVENT_TIMEOUT, "the channel's keys are gone", || {
        !c.engine.keys().iter().any(|k| k.ends_with(":k"))
    });
    let fresh = c.node(2).join(&path(&ch, "joinKey=another-key"));
    let (status, _, _) = c.node(0).upgrade(&path(&ch, "joinKey=open-sesame"));
    assert_eq!(status, 403, "the old key no longer opens it");
    drop(fresh);
}

#[test]
fn a_push_on_any_node_reaches_every_node_with_the_cluster_recipients() {
    let c = TestCluster::start_with(3, |cfg| {
        cfg.namespace = vec![namespace("alerts", None, Some("push-key"))];
    });
    let ch = format!("alerts/{}", unique("p"));
    let mut a = c.node(0).join(&path(&ch, ""));
    let mut b = c.node(1).join(&path(&ch, ""));
    a.recv_event("join");
    // Node 2 has no member on the channel: the engine counts and publishes.
    let (status, _, body) = c.node(2).push(&ch, Some("push-key"), r#"{"level":"red"}"#);
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"ok":true,"recipients":2}"#)
    );
    for client in [&mut a, &mut b] {
        let m = client.recv_message();
        assert_eq!(m["message"], json!({"level": "red"}));
        assert!(m.get("uid").is_none());
    }
    // Node 0 has one: it delivers and publishes.
    let (status, _, body) = c.node(0).push(&ch, Some("push-key"), "[1]");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"ok":true,"recipients":2}"#)
    );
    assert_eq!(b.recv_message()["message"], json!([1]));
    assert_eq!(a.recv_message()["message"], json!([1]));
    let (status, _, body) =
        c.node(1)
            .push(&format!("alerts/{}", unique("none")), Some("push-key"), "1");
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"ok":true,"recipients":0}"#)
    );
}

#[test]
fn uids_and_message_ids_are_unique_across_nodes() {
    let c = TestCluster::start(3);
    let ch = unique("ids");
    let mut uids = HashSet::new();
    let mut clients = Vec::new();
    for i in 0..30 {
        let client = c.node(i % 3).join(&path(&ch, ""));
        assert!(uids.insert(client.uid.clone()), "uid {} twice", client.uid);
        clients.push(client);
    }
    let mut ids = HashSet::new();
    let mut reader = c.node(0).join(&path(&ch, ""));
    for client in clients.iter_mut().take(9) {
        client.send_json(&json!(1));
    }
    let mut got = 0;
    while got < 9 {
        let v: Value = reader.recv();
        if v.get("id").is_some() {
            assert!(
                ids.insert(v["id"].as_str().unwrap().to_owned()),
                "id {v} twice"
            );
            got += 1;
        }
    }
}

#[test]
fn a_message_crosses_plain_and_is_compressed_once_on_the_node_whose_member_negotiated_deflate() {
    use flate2::{Decompress, FlushDecompress};
    use std::io::{Read, Write};
    let c = TestCluster::start_with(2, |cfg| cfg.compression = itty_relay::config::Switch::On);
    let ch = unique("deflate");
    // A member on node 1 that offers permessage-deflate.
    let mut raw = Raw::connect(c.node(1).addr);
    let request = Raw::handshake_request(&path(&ch, "")).replace(
        "\r\n\r\n",
        "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    );
    raw.stream.write_all(request.as_bytes()).unwrap();
    assert!(raw.read_head().contains("permessage-deflate"));
    // The next frame (no pings come within the test): (compressed, JSON).
    let mut next = || {
        let mut head = [0u8; 2];
        raw.stream.read_exact(&mut head).unwrap();
        let len = match head[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                raw.stream.read_exact(&mut b).unwrap();
                u16::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        raw.stream.read_exact(&mut payload).unwrap();
        if head[0] & 0x40 == 0 {
            return (false, serde_json::from_slice::<Value>(&payload).unwrap());
        }
        payload.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(1 << 16);
        Decompress::new(false)
            .decompress_vec(&payload, &mut out, FlushDecompress::Sync)
            .unwrap();
        (true, serde_json::from_slice::<Value>(&out).unwrap())
    };
    assert_eq!(next().1["type"], "join");
    let mut sender = c.node(0).join(&path(&ch, ""));
    assert_eq!(next().1["total"], 2);
    let rows: Vec<Value> = (0..80)
        .map(|i| json!({"id": i, "name": format!("row {i}")}))
        .collect();
    sender.send_json(&json!({ "rows": rows }));
    let (compressed, envelope) = next();
    assert!(
        compressed,
        "compressed on the receiving node for its deflate member"
    );
    assert_eq!(envelope["message"]["rows"][79]["id"], 79);
    assert_eq!(envelope["uid"].as_str(), Some(&*sender.uid));
}
