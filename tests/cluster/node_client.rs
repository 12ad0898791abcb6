//! The stock `itty-sockets` client under Node, on three nodes of one
//! cluster: runs tests/node/cluster.test.mjs.

use crate::harness::TestCluster;
use std::path::Path;
use std::process::Command;

#[test]
fn stock_itty_sockets_clients_on_three_nodes_see_one_channel() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/itty-sockets").exists(),
        "the npm packages are missing: run `npm ci --prefix tests/node` (.ci/run does)"
    );
    let c = TestCluster::start(3);
    let urls: Vec<String> = c.nodes.iter().map(|n| format!("ws://{}", n.addr)).collect();
    let output = Command::new("node")
        .arg("--test-reporter=spec")
        .arg(dir.join("cluster.test.mjs"))
        .env("RELAY_URLS", urls.join(","))
        .output()
        .expect("node is installed (Node 20)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node tests failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("pass 1"), "no node test ran:\n{stdout}");
}
