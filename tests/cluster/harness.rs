//! A cluster for one test: its own engine and `n` in-process nodes (two
//! shards each), sharing a secret from a file (`cluster_secret_file`).

use crate::engine::RedisServer;
use crate::support::{relay_with, Relay};
use itty_relay::config::Backplane;
use itty_relay::Config;
use std::time::{Duration, Instant};

pub struct TestCluster {
    pub nodes: Vec<Relay>,
    pub engine: RedisServer,
}

/// A secret file for this test process.
pub fn secret_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("itty-cluster-secret-{}", std::process::id()));
    std::fs::write(&path, "a-test-cluster-secret-of-enough-bytes\n").unwrap();
    path
}

/// Settings for a node of a cluster on `url`.
pub fn node_config(c: &mut Config, url: &str, secret: &std::path::Path) {
    c.backplane = Backplane::Redis(url.to_owned());
    c.cluster_secret_file = Some(secret.to_owned());
    c.node_timeout_ms = 2_000;
}

impl TestCluster {
    pub fn start(n: usize) -> TestCluster {
        TestCluster::start_with(n, |_| {})
    }

    pub fn start_with(n: usize, adjust: impl Fn(&mut Config)) -> TestCluster {
        let engine = RedisServer::start();
        let secret_file = secret_file();
        let url = engine.url();
        let nodes = (0..n)
            .map(|_| {
                relay_with(|c| {
                    node_config(c, &url, &secret_file);
                    adjust(c);
                })
            })
            .collect();
        let cluster = TestCluster { nodes, engine };
        for node in &cluster.nodes {
            wait_healthy(node, Duration::from_secs(10));
        }
        cluster
    }

    pub fn node(&self, i: usize) -> &Relay {
        &self.nodes[i]
    }
}

/// Waits until `/health` answers 200 (the node reached the engine).
pub fn wait_healthy(node: &Relay, within: Duration) {
    wait_health(node, 200, within)
}

pub fn wait_health(node: &Relay, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (got, body) = node.get("/health");
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/health stayed {got} {body:?}, expected {status}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `done` every 20 ms; fails after `within`, naming `what`.
pub fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A node-wide metric (the backplane's have no shard label).
pub fn node_metric(node: &Relay, name: &str) -> u64 {
    let text = node.metrics();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}
