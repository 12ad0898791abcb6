//! The `itty-relay` binary itself: flags, the config file, and SIGTERM.

use crate::support::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_itty-relay"))
}

#[test]
fn help_explains_every_option() {
    let out = binary().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--shards",
        "--config",
        "--message-bytes-max",
        "--outgoing-queue-bytes-max",
        "Default",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn a_bad_config_file_is_refused_with_its_reason() {
    let path = std::env::temp_dir().join(format!("itty-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "message_bytes_max = \"lots\"\n").unwrap();
    let out = binary().arg("--config").arg(&path).output().unwrap();
    std::fs::remove_file(&path).ok();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("message_bytes_max"), "{text}");
}

#[test]
fn sigterm_drains_with_1001_and_exits_cleanly() {
    let mut child = binary()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--pin",
            "false",
            "--io-memory-bytes",
            "65536",
        ])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines.next().expect("the relay logs its address").unwrap();
        if let Some(rest) = line.split("local_addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let relay = Relay {
        server: None,
        addr,
        shards: 2,
    };
    let mut client = relay.join(&format!("/c/{}", unique("sigterm")));
    let started = Instant::now();
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(client.recv_close().0, 1001);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the relay did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
    assert!(!rest.iter().any(|l| l.contains("panicked")), "{rest:?}");
}

/// The relay binary on an ephemeral port with `args`; its stdout lines
/// (the log) arrive on the returned channel.
fn spawn_relay(
    args: &[&str],
) -> (
    std::process::Child,
    Relay,
    std::sync::mpsc::Receiver<String>,
) {
    let mut child = binary()
        .args(["--listen", "127.0.0.1:0", "--shards", "2", "--pin", "false"])
        .args(["--io-memory-bytes", "65536"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the relay logs its address");
        if let Some(rest) = line.split("local_addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let relay = Relay {
        server: None,
        addr,
        shards: 2,
    };
    (child, relay, rx)
}

/// Waits for a log line containing `needle`.
fn wait_for_log(rx: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
}

fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, signal) };
}

#[test]
fn sighup_reloads_namespaces_keeps_clients_and_refuses_a_broken_file() {
    let path = std::env::temp_dir().join(format!("itty-reload-{}.toml", std::process::id()));
    let write = |text: &str| std::fs::write(&path, text).unwrap();
    write("[[namespace]]\nprefix = \"team\"\njoin_key = \"one\"\n");
    let (mut child, relay, log) = spawn_relay(&["--config", path.to_str().unwrap()]);

    let mut early = relay.join("/c/team:room?joinKey=one");
    let mut outside = relay.join("/c/elsewhere");
    assert_eq!(relay.upgrade("/c/team:room?joinKey=two").0, 403);

    // A new key (the TOML's camelCase spelling works too) and a new namespace.
    write(
        "[[namespace]]\nprefix = \"team\"\njoinKey = \"two\"\n\n\
         [[namespace]]\nprefix = \"elsewhere\"\njoin_key = \"x\"\n",
    );
    signal(&child, libc::SIGHUP);
    wait_for_log(&log, "namespaces reloaded");
    assert_eq!(relay.upgrade("/c/team:room?joinKey=one").0, 403);
    let mut late = relay.join("/c/team:room?joinKey=two");
    assert_eq!(relay.upgrade("/c/elsewhere").0, 403);

    // Nobody was dropped: the early member and the one now covered by a
    // new namespace still talk.
    early.send("\"still here\"");
    assert_eq!(late.recv_message()["message"], "still here");
    outside.send("\"me too\"");
    outside.send("1");

    // A broken file is refused with its reason; the running table stays.
    write("[[namespace]]\nprefix = \"team:\"\n");
    signal(&child, libc::SIGHUP);
    let refused = wait_for_log(&log, "reload refused");
    assert!(refused.contains("must not end"), "{refused}");
    assert_eq!(relay.upgrade("/c/team:room?joinKey=two").0, 101);
    write("this is = = not toml");
    signal(&child, libc::SIGHUP);
    wait_for_log(&log, "reload refused");
    assert_eq!(relay.upgrade("/c/team:room?joinKey=one").0, 403);
    early.send("\"after the bad reloads\"");
    assert_eq!(late.recv_message()["message"], "after the bad reloads");

    signal(&child, libc::SIGTERM);
    assert_eq!(early.recv_close().0, 1001);
    let status = child.wait().unwrap();
    std::fs::remove_file(&path).ok();
    assert!(status.success(), "{status:?}");
}
