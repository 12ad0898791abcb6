//! The `itty-relay` binary itself: flags, the config file, and SIGTERM.

use crate::support::*;
use std::time::Duration;

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
    let mut process = spawn_relay(&[]);
    let mut client = process.relay.join(&format!("/c/{}", unique("sigterm")));
    process.signal(libc::SIGTERM);
    assert_eq!(client.recv_close().0, 1001);
    let status = process.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let rest = process.rest_of_log();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
    assert!(!rest.iter().any(|l| l.contains("panicked")), "{rest:?}");
}

#[test]
fn sighup_reloads_namespaces_keeps_clients_and_refuses_a_broken_file() {
    let path = std::env::temp_dir().join(format!("itty-reload-{}.toml", std::process::id()));
    let write = |text: &str| std::fs::write(&path, text).unwrap();
    write("[[namespace]]\nprefix = \"team\"\njoin_key = \"one\"\n");
    let mut process = spawn_relay(&["--config", path.to_str().unwrap()]);
    let relay = &process.relay;

    let mut early = relay.join("/c/team:room?joinKey=one");
    let mut outside = relay.join("/c/elsewhere");
    assert_eq!(relay.upgrade("/c/team:room?joinKey=two").0, 403);

    // A new key (the TOML's camelCase spelling works too) and a new namespace.
    write(
        "[[namespace]]\nprefix = \"team\"\njoinKey = \"two\"\n\n\
         [[namespace]]\nprefix = \"elsewhere\"\njoin_key = \"x\"\n",
    );
    process.signal(libc::SIGHUP);
    process.wait_for_log("namespaces reloaded");
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
    process.signal(libc::SIGHUP);
    let refused = process.wait_for_log("reload refused");
    assert!(refused.contains("must not end"), "{refused}");
    assert_eq!(relay.upgrade("/c/team:room?joinKey=two").0, 101);
    write("this is = = not toml");
    process.signal(libc::SIGHUP);
    process.wait_for_log("reload refused");
    assert_eq!(relay.upgrade("/c/team:room?joinKey=one").0, 403);
    early.send("\"after the bad reloads\"");
    assert_eq!(late.recv_message()["message"], "after the bad reloads");

    process.signal(libc::SIGTERM);
    assert_eq!(early.recv_close().0, 1001);
    let status = process.wait_exit(Duration::from_secs(10));
    std::fs::remove_file(&path).ok();
    assert!(status.success(), "{status:?}");
}
