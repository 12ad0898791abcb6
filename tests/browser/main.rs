//! In headless Chromium (Debian's `/usr/bin/chromium`, driven by
//! playwright-core from this folder): the stock `itty-sockets` client in
//! real pages, and the relay's own pages (`/status` under load, `/`).
//! Each test boots the real relay with two shards (the `tests/relay`
//! helper) and runs one Node script; a failure shows the pages' console.
//!
//! A test binary of its own: cargo runs test binaries one after another,
//! so Chromium never takes the two cpus from the relay suite's
//! timing-sensitive tests (the no-loss ledger, the fault tests), and the
//! two tests here take turns (`ONE_BROWSER_AT_A_TIME`).

#[path = "../relay/run_log.rs"]
mod run_log;
// The process helpers (`spawn_relay`) are not needed here.
#[allow(unused_imports)]
#[path = "../relay/support/mod.rs"]
mod support;

use itty_relay::id::ShardId;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::*;

/// One Chromium at a time: the status test measures while it loads.
static ONE_BROWSER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Upper bound on one script (each runs in about 10 to 30 s).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(150);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Runs `script` (in tests/browser) under Node with `env`; fails with its
/// output (which includes the pages' console) unless it passes.
fn run_script(script: &str, env: &[(&str, String)]) {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").exists()
            && dir.join("node_modules/itty-sockets").exists(),
        "the npm packages are missing: run `npm ci --prefix tests/browser` (.ci/run does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists() || std::env::var_os("CHROMIUM").is_some(),
        "Chromium is missing: apt-get install chromium (.ci/run does)"
    );
    let _turn = ONE_BROWSER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut command = Command::new("node");
    command
        .arg("--test-reporter=spec")
        .arg(dir.join(script))
        .current_dir(&dir);
    for (name, value) in env {
        command.env(name, value);
    }
    let started = Instant::now();
    let output = command.output().expect("node is installed (Node 20)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    // The spec reporter's closing counts: something passed, nothing else.
    let count = |what: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("\u{2139} {what} ")))
            .and_then(|n| n.trim().parse::<u32>().ok())
    };
    assert!(
        count("pass").is_some_and(|n| n > 0)
            && [count("fail"), count("cancelled"), count("skipped")] == [Some(0); 3],
        "{script}: no test ran, or one failed or was skipped:\n{stdout}\n{stderr}"
    );
    assert!(
        started.elapsed() < SCRIPT_TIMEOUT,
        "{script} took {:?}",
        started.elapsed()
    );
}

/// The stock client in Chromium: messages between pages, alias, echo,
/// presence, a direct message, a wrong join key, the rate-limit error
/// event, pages closed and crashed, channels owned by the other shard.
#[test]
fn stock_client_in_chromium_pages() {
    // The default message burst (100) and warnings (3), refilled at 1 a
    // second instead of 40: the rate-limit test's 102 messages then always
    // put some over, however slowly a loaded machine lets the browser send
    // them (at 40/s, 50 ms of spread refilled both). No other test sends
    // more than a few messages per page. The per-IP upgrade rate lifted, as
    // every page connects from 127.0.0.1.
    let relay = relay_with(|c| {
        let defaults = itty_relay::Config::default();
        c.messages_per_conn_per_sec = 1;
        c.messages_per_conn_burst = defaults.messages_per_conn_burst;
        c.rate_limit_warnings = defaults.rate_limit_warnings;
        c.namespace = vec![namespace("browserns", Some("bk"), None)];
    });
    let owned_by = |shard| relay.channel_owned_by(ShardId(shard), &unique("browser-owned"));
    run_script(
        "client.test.mjs",
        &[
            ("RELAY_HTTP", format!("http://{}", relay.addr)),
            ("NAMESPACE", "browserns".into()),
            ("JOIN_KEY", "bk".into()),
            ("OWNED_BY_0", owned_by(0)),
            ("OWNED_BY_1", owned_by(1)),
        ],
    );
}

/// permessage-deflate with Chromium's own WebSocket and the stock client,
/// against a relay with compression on: the offer accepted without context
/// takeover, a large message compressed once for every page (the relay's
/// counter) and intact at each, a small one plain, what Chromium sends
/// compressed inflated; on a channel owned by each shard.
#[test]
fn compressed_messages_in_chromium() {
    let relay = relay_with(|c| c.compression = itty_relay::config::Switch::On);
    let owned_by = |shard| relay.channel_owned_by(ShardId(shard), &unique("browser-deflate"));
    run_script(
        "deflate.test.mjs",
        &[
            ("RELAY_HTTP", format!("http://{}", relay.addr)),
            ("OWNED_BY_0", owned_by(0)),
            ("OWNED_BY_1", owned_by(1)),
        ],
    );
}

/// The status page in Chromium: renders with no traffic, follows a load
/// applied by a page, agrees with `/metrics` within a second's drift and
/// exactly once the load stops, logs no error; the landing page shows this
/// host's URL. Screenshots go to target/browser/.
#[test]
fn status_and_landing_pages_in_chromium() {
    let relay = relay();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
    std::fs::create_dir_all(&shots).unwrap();
    run_script(
        "status.test.mjs",
        &[
            ("RELAY_HTTP", format!("http://{}", relay.addr)),
            ("LOAD_CHANNEL", unique("browser-load")),
            ("SCREENSHOTS", shots.display().to_string()),
        ],
    );
}
