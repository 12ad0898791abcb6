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
