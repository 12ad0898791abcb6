//! What the engine holds: no channel name in clear, nothing left behind
//! once everyone has left.

use crate::harness::{eventually, node_metric, TestCluster};
use crate::support::*;
use std::time::Duration;

#[test]
fn no_keys_or_subscriptions_are_left_once_everyone_has_left_and_no_name_in_clear() {
    let c = TestCluster::start(3);
    let ch = unique("hygiene-visible-name");
    let mut clients = Vec::new();
    for i in 0..6 {
        clients.push(
            c.node(i % 3)
                .join(&format!("/c/{ch}?joinKey=some-key-text")),
        );
    }
    clients[0].send_json(&serde_json::json!("hello"));
    let keys = c.engine.keys();
    assert!(keys.iter().any(|k| k.ends_with("}:m")), "{keys:?}");
    for k in keys.iter().chain(c.engine.channels().iter()) {
        assert!(!k.contains("hygiene") && !k.contains("some-key"), "{k}");
    }
    for client in clients {
        client.close_and_wait();
    }
    // Channels linger subscribed 2 s after their last member here.
    eventually(Duration::from_secs(6), "keys or subscriptions left", || {
        let left: Vec<String> = c
            .engine
            .keys()
            .into_iter()
            .filter(|k| k.starts_with("itty:{") || k.ends_with(":ch"))
            .collect();
        left.is_empty() && c.engine.channels().is_empty()
    });
}

#[test]
fn nodes_with_different_namespaces_are_counted() {
    let c = TestCluster::start(1);
    let url = c.engine.url();
    let secret = crate::harness::secret_file();
    let odd = relay_with(|cfg| {
        crate::harness::node_config(cfg, &url, &secret);
        cfg.namespace = vec![namespace("other", Some("k"), None)];
    });
    crate::harness::wait_healthy(&odd, Duration::from_secs(10));
    eventually(Duration::from_secs(5), "the mismatch is counted", || {
        node_metric(c.node(0), "itty_backplane_config_mismatched_nodes") == 1
            && node_metric(&odd, "itty_backplane_config_mismatched_nodes") == 1
    });
    assert_eq!(node_metric(c.node(0), "itty_backplane_live_nodes"), 2);
}
