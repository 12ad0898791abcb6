//! Faults: the engine unreachable, killed and restarted empty; one node
//! cut off from it; a node killed or stopped.

use crate::engine::{free_port, RedisServer};
use crate::harness::{
    eventually, node_config, node_metric, secret_file, wait_health, wait_healthy, TestCluster,
};
use crate::proxy::Proxy;
use crate::support::*;
use itty_relay::id::ShardId;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn a_node_without_its_engine_answers_503_to_health_and_joins() {
    let port = free_port();
    let secret = secret_file();
    let node = relay_with(|c| node_config(c, &format!("redis://127.0.0.1:{port}"), &secret));
    let (status, body) = node.get("/health");
    assert_eq!((status, body.as_str()), (503, "backplane unavailable\n"));
    let (status, head, _) = node.upgrade("/c/nobody-home");
    assert_eq!(status, 503);
    assert!(head.contains("Retry-After: 1"), "{head}");
    // The engine comes up on that port: the node connects by itself.
    let engine = RedisServer::start_on(port);
    wait_healthy(&node, Duration::from_secs(10));
    let client = node.join("/c/now-it-works");
    assert_eq!(client.join_event["total"], 1);
    drop(engine);
    wait_health(&node, 503, Duration::from_secs(10));
}

/// A relay binary on `url` (its own process: it can be killed).
fn node_process(url: &str) -> RelayProcess {
    let file = std::env::temp_dir().join(format!(
        "itty-node-{}-{}.toml",
        std::process::id(),
        free_port()
    ));
    let secret = secret_file();
    std::fs::write(
        &file,
        format!(
            "backplane = \"{url}\"\ncluster_secret_file = \"{}\"\n\
             messages_per_conn_per_sec = 1000000\nmessages_per_conn_burst = 1000000\n\
             upgrades_per_ip_per_sec = 1000000\nupgrades_per_ip_burst = 1000000\n",
            secret.display()
        ),
    )
    .unwrap();
    let process = spawn_relay(&["--config", file.to_str().unwrap()]);
    wait_healthy(&process.relay, Duration::from_secs(10));
    process
}

/// `k` members on the doomed node, watched from a node that stays: after
/// `end`, exactly `k` leaves arrive within `bound`, totals counting down.
/// Returns how many of its members the survivors did not have to reap.
fn members_leave_when_their_node_ends(end: impl FnOnce(&mut RelayProcess), bound: Duration) -> u64 {
    let c = TestCluster::start(2);
    let mut doomed = node_process(&c.engine.url());
    // On the doomed node, the channel's owner is shard 0 and its members
    // are all on shard 1: shard 0 has nothing of its own to drain, and its
    // members' leaves reach it from shard 1 (they must before it stops).
    let ch = doomed.relay.channel_owned_by(ShardId(0), &unique("doomed"));
    let mut watcher = c.node(0).join(&format!("/c/{ch}?announce=true"));
    let _other = c.node(1).join(&format!("/c/{ch}"));
    watcher.recv_event("join");
    let k = 5;
    let mut uids = Vec::new();
    let mut doomed_clients = Vec::new();
    let mut next_event_of = |kind: &str, uid: &str| loop {
        if watcher.recv_event(kind)["uid"] == uid {
            break;
        }
    };
    while doomed_clients.len() < k {
        // The kernel spreads connections: one that lands on shard 0 leaves.
        let client = doomed.relay.join(&format!("/c/{ch}?announce=true"));
        next_event_of("join", &client.uid);
        if client.shard != ShardId(1) {
            let uid = client.uid.clone();
            client.close_and_wait();
            next_event_of("leave", &uid);
            continue;
        }
        uids.push(client.uid.clone());
        doomed_clients.push(client);
    }
    let reaped = || {
        c.nodes
            .iter()
            .map(|n| node_metric(n, "itty_backplane_reaped_members_total"))
            .sum::<u64>()
    };
    let reaped_before = reaped();
    let started = Instant::now();
    end(&mut doomed);
    let mut left = Vec::new();
    for expected_total in (2..2 + k).rev() {
        let l = watcher.recv_event("leave");
        assert_eq!(l["total"], expected_total as u64, "{l}");
        left.push(l["uid"].as_str().unwrap().to_owned());
    }
    let took = started.elapsed();
    if took > bound {
        // The ended node's own account (timestamps, drain, goodbye).
        let log: Vec<String> = doomed.log.try_iter().collect();
        panic!(
            "the leaves took {took:?}, over {bound:?}: {left:?}\nthe ended node's log:\n{}",
            log.join("\n")
        );
    }
    left.sort();
    uids.sort();
    assert_eq!(left, uids, "exactly one leave per member");
    // Nothing more: a marker from the other node comes next.
    let mut other = c.node(1).join(&format!("/c/{ch}"));
    assert_eq!(watcher.recv_event("join")["total"], 3);
    other.send_json(&json!("marker"));
    assert_eq!(
        watcher.recv()["message"],
        "marker",
        "no extra event before the marker"
    );
    eprintln!("leaves of {k} members took {took:?} (bound {bound:?})");
    reaped_before + k as u64 - reaped()
}

#[test]
fn a_killed_node_s_members_leave_within_5_s_exactly_once() {
    let not_reaped = members_leave_when_their_node_ends(
        |node| {
            let _ = node.child.kill();
            let _ = node.child.wait();
        },
        Duration::from_secs(5),
    );
    assert_eq!(
        not_reaped, 0,
        "the survivors reaped every member (counted once)"
    );
}

#[test]
fn a_stopped_node_s_members_leave_within_1_s() {
    let not_reaped = members_leave_when_their_node_ends(
        |node| node.signal(libc::SIGTERM),
        Duration::from_secs(1),
    );
    assert_eq!(not_reaped, 5, "a stopped node's members leave on their own");
}

#[test]
fn the_engine_killed_and_restarted_empty_converges_totals_users_and_keys() {
    let mut c = TestCluster::start(2);
    let ch = unique("restart");
    let mut a = c
        .node(0)
        .join(&format!("/c/{ch}?announce=true&as=A&joinKey=the-key"));
    let mut a2 = c.node(0).join(&format!("/c/{ch}?joinKey=the-key"));
    let mut b = c
        .node(1)
        .join(&format!("/c/{ch}?announce=true&as=B&joinKey=the-key"));
    a.recv_event("join");
    a.recv_event("join");
    a2.recv_event("join");
    c.engine.kill();
    for node in &c.nodes {
        wait_health(node, 503, Duration::from_secs(5));
    }
    // Local delivery never stops.
    a2.send_json(&json!("still here"));
    assert_eq!(a.recv_message()["message"], "still here");
    c.engine.restart_empty();
    for node in &c.nodes {
        wait_healthy(node, Duration::from_secs(10));
    }
    // Every member is back in the engine; a newcomer sees them all.
    let newcomer = c
        .node(1)
        .join(&format!("/c/{ch}?list=true&joinKey=the-key"));
    assert_eq!(newcomer.join_event["total"], 4, "{}", newcomer.join_event);
    let users = newcomer.join_event["users"].as_array().unwrap().len();
    assert_eq!(users, 3, "A, B and itself: {}", newcomer.join_event);
    let (status, _, _) = c.node(1).upgrade(&format!("/c/{ch}?joinKey=wrong"));
    assert_eq!(status, 403, "the channel's key came back with its members");
    // Messages cross again.
    b.send_json(&json!("after"));
    assert_eq!(a.recv_message()["message"], "after");
}

#[test]
fn a_node_cut_off_from_the_engine_is_reaped_serves_locally_and_comes_back() {
    let engine = RedisServer::start();
    let proxy = Proxy::start(engine.port);
    let secret = secret_file();
    let direct = engine.url();
    let stays = relay_with(|c| node_config(c, &direct, &secret));
    let cut = relay_with(|c| node_config(c, &proxy.url(), &secret));
    wait_healthy(&stays, Duration::from_secs(10));
    wait_healthy(&cut, Duration::from_secs(10));
    let ch = unique("partition");
    let mut s = stays.join(&format!("/c/{ch}?announce=true"));
    let mut x = cut.join(&format!("/c/{ch}?announce=true"));
    let mut y = cut.join(&format!("/c/{ch}"));
    s.recv_event("join");
    s.recv_event("join");
    x.recv_event("join");
    proxy.freeze();
    wait_health(&cut, 503, Duration::from_secs(5));
    // The others see the cut node's members leave (its node timeout is 2 s).
    assert_eq!(s.recv_event("leave")["total"], 2);
    assert_eq!(s.recv_event("leave")["total"], 1);
    // The cut node still serves its own members.
    y.send_json(&json!("local"));
    assert_eq!(x.recv_message()["message"], "local");
    proxy.thaw();
    wait_healthy(&cut, Duration::from_secs(10));
    // Its members are back: the others see them join again.
    assert_eq!(s.recv_event("join")["total"], 2);
    assert_eq!(s.recv_event("join")["total"], 3);
    // Its members hear of everyone they missed (here: nobody left or
    // joined elsewhere), and messages cross again.
    s.send_json(&json!("welcome back"));
    assert_eq!(x.recv_message()["message"], "welcome back");
    let newcomer = stays.join(&format!("/c/{ch}"));
    assert_eq!(newcomer.join_event["total"], 4);
    eventually(
        Duration::from_secs(5),
        "totals agree on the cut node",
        || x.recv_event("join")["total"] == 4,
    );
}
