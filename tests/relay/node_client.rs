//! The stock `itty-sockets` npm client (0.6.1, Node, `ws` as its
//! WebSocket) against the real server with its default limits: runs
//! tests/node/itty_client.test.mjs.

use crate::support::*;
use std::path::Path;
use std::process::Command;

#[test]
fn stock_itty_sockets_client_works_unchanged() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/itty-sockets").exists(),
        "the npm packages are missing: run `npm ci --prefix tests/node` (.ci/run does)"
    );
    // The suite paces itself inside the default limits, which it checks.
    let relay = relay_with(|c| {
        let defaults = itty_relay::Config::default();
        c.upgrades_per_ip_per_sec = defaults.upgrades_per_ip_per_sec;
        c.upgrades_per_ip_burst = defaults.upgrades_per_ip_burst;
        c.messages_per_conn_per_sec = defaults.messages_per_conn_per_sec;
        c.messages_per_conn_burst = defaults.messages_per_conn_burst;
        c.namespace = vec![namespace("nodens", Some("nk"), Some("ns"))];
    });
    let output = Command::new("node")
        .arg("--test-reporter=spec")
        .arg(dir.join("itty_client.test.mjs"))
        .env("RELAY_URL", format!("ws://{}", relay.addr))
        .output()
        .expect("node is installed (Node 20)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node tests failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("pass"), "no node test ran:\n{stdout}");
    assert!(
        !stdout.contains("fail 1") && !stdout.contains("# fail 1"),
        "{stdout}"
    );
}

/// The same suite over `wss://`: a relay with a certificate from the test
/// CA, which Node trusts through NODE_EXTRA_CA_CERTS (nothing else changes
/// for the client: the URL's scheme).
#[test]
fn stock_itty_sockets_client_works_unchanged_over_wss() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    let leaf = crate::support::tls::localhost_leaf();
    let relay = relay_with(|c| {
        let defaults = itty_relay::Config::default();
        c.upgrades_per_ip_per_sec = defaults.upgrades_per_ip_per_sec;
        c.upgrades_per_ip_burst = defaults.upgrades_per_ip_burst;
        c.messages_per_conn_per_sec = defaults.messages_per_conn_per_sec;
        c.messages_per_conn_burst = defaults.messages_per_conn_burst;
        c.namespace = vec![namespace("nodens", Some("nk"), Some("ns"))];
        c.tls_cert = Some(leaf.cert.clone());
        c.tls_key = Some(leaf.key.clone());
    });
    let output = Command::new("node")
        .arg("--test-reporter=spec")
        .arg(dir.join("itty_client.test.mjs"))
        .env(
            "RELAY_URL",
            format!("wss://localhost:{}", relay.addr.port()),
        )
        .env("NODE_EXTRA_CA_CERTS", crate::support::tls::ca().pem_file())
        .output()
        .expect("node is installed (Node 20)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node tests over wss failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("pass"), "no node test ran:\n{stdout}");
    assert!(
        relay.server.as_ref().unwrap().metrics()[0]
            .tls_handshakes
            .get()
            + relay.server.as_ref().unwrap().metrics()[1]
                .tls_handshakes
                .get()
            > 0
    );
}

/// The same client with `ws`' default permessage-deflate offer against a
/// relay with compression on: tests/node/deflate.test.mjs.
#[test]
fn stock_itty_sockets_client_with_permessage_deflate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    let relay = relay_with(|c| c.compression = itty_relay::config::Switch::On);
    let output = Command::new("node")
        .arg("--test-reporter=spec")
        .arg(dir.join("deflate.test.mjs"))
        .env("RELAY_URL", format!("ws://{}", relay.addr))
        .output()
        .expect("node is installed (Node 20)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node deflate tests failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("pass 1"),
        "the node test did not run:\n{stdout}"
    );
}
