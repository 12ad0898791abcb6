//! What the relay must never write down: no channel name, uid, key,
//! payload or client address in its logs at the default level (docs/PROTOCOL.md
//! section 8). What it must never list is in `no_listing.rs`.
//!
//! The logs are checked twice. `the_log_names_nothing_from_a_scenario_that_
//! reaches_every_log_path` runs the real binary at its default level from
//! distinctive client addresses through every path that can log, with every
//! name, key and payload carrying one marker, and greps every line it
//! writes until it exits. `the_log_of_the_whole_test_run_names_nothing`
//! (ignored; `.ci/run` runs it after the suite) greps the log of every relay
//! the suite booted against what the tests handed it (see `run_log.rs`).

use crate::run_log;
use crate::support::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// In every channel name, alias, key and payload of the binary scenario.
const MARKER: &str = "qx9m";
/// Where the scenario's clients connect from: loopback answers to all of
/// 127/8, and no legitimate log line (the listen address is 127.0.0.1)
/// contains these.
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 77);
const FLOODER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 78);
const PUSHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 79);

const NS: &str = "qx9m-ns-chan";
const NS_JOIN: &str = "qx9m-ns-join-key";
const NS_SEND: &str = "qx9m-ns-send-key";

fn tcp_from(addr: SocketAddr, source: Ipv4Addr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    stream
}

/// Joins `path` from `source` and reads the own join event.
fn join_from(relay: &Relay, source: Ipv4Addr, path: &str) -> Client {
    let stream = Conn::Plain(tcp_from(relay.addr, source));
    let (ws, _) = tungstenite::client::client(relay.url(path), stream).expect("handshake");
    let mut client = Client {
        ws,
        uid: String::new(),
        join_event: Value::Null,
        // Not tracked: these tests never depend on placement.
        shard: itty_relay::id::ShardId(0),
    };
    client.join_event = client.recv();
    assert_eq!(client.join_event["type"], "join", "{}", client.join_event);
    client.uid = client.join_event["uid"].as_str().unwrap().to_owned();
    client
}

/// Sends raw bytes from `source`; returns the status and the whole answer.
fn http_from(relay: &Relay, source: Ipv4Addr, request: &[u8]) -> (u16, String) {
    let mut stream = tcp_from(relay.addr, source);
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn upgrade_from(relay: &Relay, source: Ipv4Addr, path: &str) -> (u16, String) {
    http_from(relay, source, Raw::handshake_request(path).as_bytes())
}

fn push_from(relay: &Relay, source: Ipv4Addr, channel: &str, key: Option<&str>, body: &str) -> u16 {
    let key = key.map_or(String::new(), |k| format!("x-send-key: {k}\r\n"));
    let request = format!(
        "POST /push/{channel} HTTP/1.1\r\nHost: t\r\n{key}Content-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    http_from(relay, source, request.as_bytes()).0
}

/// Reads log lines into `lines` up to one containing `needle`.
fn wait_for_log(log: &Receiver<String>, lines: &mut Vec<String>, needle: &str) {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = log
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log line with {needle:?}: {lines:#?}"));
        let found = line.contains(needle);
        lines.push(line);
        if found {
            return;
        }
    }
}

fn config_file(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("itty-security-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// The relay binary at its default log level through every path that can
/// log: joins with aliases and keys, broadcasts, both direct-message forms
/// and one to an unknown uid, invalid JSON, binary frames, a frame over the
/// limit (1009), a protocol violation, refused handshakes (400, 403 for
/// namespace and ephemeral keys, 404, 426, 431), a send without the send
/// key, pushes (200, 400, 401, 403, 404, 405, 413, 429), a half-sent head
/// cut at the deadline, a client that vanishes, a slow consumer cut off,
/// the rate-limit warning, kick and ban, SIGHUP with a good file and two
/// broken ones, and SIGTERM. Then every line it wrote, stdout and stderr,
/// is searched for the marker, every uid it handed out, and the client
/// addresses.
#[test]
fn the_log_names_nothing_from_a_scenario_that_reaches_every_log_path() {
    let namespaces = format!(
        "[[namespace]]\nprefix = \"{NS}\"\njoin_key = \"{NS_JOIN}\"\nsend_key = \"{NS_SEND}\"\n"
    );
    let file = config_file(&namespaces);
    let mut process = spawn_relay(&[
        "--config",
        file.to_str().unwrap(),
        "--message-bytes-max",
        "16384",
        "--outgoing-queue-bytes-max",
        "32768",
        "--messages-per-conn-per-sec",
        "1",
        "--messages-per-conn-burst",
        "300",
        "--rate-limit-warnings",
        "1",
        "--upgrades-per-ip-burst",
        "1000",
        "--pushes-per-ip-per-sec",
        "1",
        "--pushes-per-ip-burst",
        "10",
        "--handshake-timeout-ms",
        "1000",
        "--close-timeout-ms",
        "300",
    ]);
    let relay = Relay {
        server: None,
        addr: process.relay.addr,
        shards: 2,
    };
    let mut uids = Vec::new();
    let room = format!("/c/{NS}:room");

    // Members with aliases and keys; broadcasts and direct messages.
    let mut a = join_from(
        &relay,
        CLIENT,
        &format!("{room}?as={MARKER}-alias-a&announce=true&list=true&echo=true&joinKey={NS_JOIN}&sendKey={NS_SEND}"),
    );
    let mut b = join_from(
        &relay,
        CLIENT,
        &format!("{room}?alias={MARKER}-alias-b&announce=true&joinKey={NS_JOIN}&sendKey={MARKER}-wrong-send"),
    );
    uids.extend([a.uid.clone(), b.uid.clone()]);
    assert_eq!(a.recv_event("join")["uid"], b.uid.as_str());
    b.send(&format!("{{\"{MARKER}\":\"no send key\"}}"));
    assert_eq!(
        b.recv_event("error")["message"],
        "a send key is required to send on this channel"
    );
    a.send(&format!("{{\"text\":\"{MARKER}-broadcast\"}}"));
    assert_eq!(
        b.recv_message()["message"]["text"],
        format!("{MARKER}-broadcast")
    );
    a.recv_message();
    a.send(&format!("\u{1F}{}\u{1F}\"{MARKER}-dm\"", b.uid));
    a.send(&format!("@@{}@@\"{MARKER}-dm-legacy\"", b.uid));
    assert_eq!(b.recv_message()["message"], format!("{MARKER}-dm"));
    assert_eq!(b.recv_message()["message"], format!("{MARKER}-dm-legacy"));
    a.send(&format!("\u{1F}{MARKER}ZZ\u{1F}\"{MARKER}-dm-nobody\""));
    assert_eq!(
        a.recv_event("error")["message"],
        format!("no user {MARKER}ZZ on this channel")
    );
    a.send(&format!("{MARKER}-not-json{{"));
    assert_eq!(
        a.recv_event("error")["message"],
        "message is not valid JSON"
    );
    a.ws.send(Message::binary(format!("{MARKER}-binary").into_bytes()))
        .unwrap();
    assert_eq!(
        a.recv_event("error")["message"],
        "binary frames are not supported"
    );

    // Refused handshakes.
    let long = "x".repeat(300);
    for (path, status) in [
        (format!("{room}?joinKey={MARKER}-wrong-join"), 403),
        (format!("/c/{MARKER}-bad%zz"), 400),
        (format!("/c/{MARKER}-{long}"), 400),
        (format!("/c/{MARKER}-chan?as={MARKER}-{long}"), 400),
        (format!("/{MARKER}-nowhere"), 404),
    ] {
        assert_eq!(upgrade_from(&relay, CLIENT, &path).0, status, "{path}");
    }
    let eph = format!("/c/{MARKER}-eph-chan");
    let creator = join_from(&relay, CLIENT, &format!("{eph}?joinKey={MARKER}-eph-key"));
    uids.push(creator.uid.clone());
    let refused = upgrade_from(&relay, CLIENT, &format!("{eph}?joinKey={MARKER}-eph-wrong"));
    assert_eq!(refused.0, 403);
    for (request, status) in [
        (
            format!("GET /c/{MARKER}-plain HTTP/1.1\r\nHost: t\r\n\r\n"),
            426,
        ),
        (
            Raw::handshake_request(&format!("/c/{MARKER}-v8")).replace("Version: 13", "Version: 8"),
            426,
        ),
        (
            format!(
                "GET /c/{MARKER}-big HTTP/1.1\r\nX-{MARKER}: {}\r\n\r\n",
                "v".repeat(9000)
            ),
            431,
        ),
        (format!("GET /c/{MARKER} HTTP/1.1\r\n{MARKER}\r\n\r\n"), 400),
    ] {
        assert_eq!(
            http_from(&relay, CLIENT, request.as_bytes()).0,
            status,
            "{request:.60}"
        );
    }

    // Closes by the server: over the size limit, a protocol violation.
    for (frame, code) in [
        (
            Raw::frame(true, 1, MARKER.repeat(4200).as_bytes(), Some([1, 2, 3, 4])),
            1009,
        ),
        (
            Raw::frame(true, 1, format!("\"{MARKER}\"").as_bytes(), None),
            1002,
        ),
    ] {
        let mut raw = Raw {
            stream: Conn::Plain(tcp_from(relay.addr, CLIENT)),
        };
        raw.stream
            .write_all(Raw::handshake_request(&format!("/c/{MARKER}-close-chan")).as_bytes())
            .unwrap();
        raw.read_head();
        uids.push(raw.read_json()["uid"].as_str().unwrap().to_owned());
        raw.stream.write_all(&frame).unwrap();
        assert_eq!(raw.read_close_code(), code);
    }

    // Pushes, good and bad.
    let pushed = format!("{{\"{MARKER}\":\"pushed\"}}");
    let ns_room = format!("{NS}:room");
    let big = format!("\"{}\"", MARKER.repeat(4200));
    for (channel, key, body, status) in [
        (ns_room.as_str(), Some(NS_SEND), pushed.as_str(), 200),
        (&ns_room, None, "1", 401),
        (&ns_room, Some("qx9m-wrong-push-key"), "1", 403),
        ("qx9m-no-namespace", Some(NS_SEND), "1", 404),
        (&ns_room, Some(NS_SEND), &big, 413),
        (&ns_room, Some(NS_SEND), "qx9m-not-json", 400),
    ] {
        assert_eq!(
            push_from(&relay, CLIENT, channel, key, body),
            status,
            "{channel}"
        );
    }
    assert_eq!(a.recv_message()["message"][MARKER], "pushed");
    let get_push = format!("GET /push/{ns_room} HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(http_from(&relay, CLIENT, get_push.as_bytes()).0, 405);
    let throttled = (0..40).any(|_| push_from(&relay, PUSHER, &ns_room, Some(NS_SEND), "1") == 429);
    assert!(throttled, "pushes from one address were never throttled");

    // A head that never completes, and a member that vanishes.
    let mut slow_head = Raw {
        stream: Conn::Plain(tcp_from(relay.addr, CLIENT)),
    };
    slow_head
        .stream
        .write_all(format!("GET /c/{MARKER}-slow-head HTTP/1.1\r\nHost: t\r\n").as_bytes())
        .unwrap();
    let vanishing = join_from(
        &relay,
        CLIENT,
        &format!("{room}?as={MARKER}-alias-gone&announce=true&joinKey={NS_JOIN}"),
    );
    uids.push(vanishing.uid.clone());
    drop(vanishing);
    assert_eq!(
        a.recv_event("leave")["alias"],
        format!("{MARKER}-alias-gone")
    );
    assert!(slow_head.closed_by_server(), "the half-sent head was cut");

    // A slow consumer: a small receive buffer, never read after its join.
    let slow_chan = format!("/c/{MARKER}-slow-chan");
    let mut slow = {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::from((CLIENT, 0)).into()).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&relay.addr.into()).unwrap();
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        let mut raw = Raw {
            stream: Conn::Plain(stream),
        };
        let path = format!("{slow_chan}?as={MARKER}-alias-slow&announce=true");
        raw.stream
            .write_all(Raw::handshake_request(&path).as_bytes())
            .unwrap();
        raw.read_head();
        uids.push(raw.read_json()["uid"].as_str().unwrap().to_owned());
        raw
    };
    let mut publisher = join_from(&relay, CLIENT, &slow_chan);
    uids.push(publisher.uid.clone());
    let payload = format!("\"{}\"", MARKER.repeat(4000));
    let mut sent = 0;
    loop {
        let leave = publisher
            .ws
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(20)));
        leave.unwrap();
        match publisher.ws.read() {
            Ok(Message::Text(t)) if t.contains("\"leave\"") => break,
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("publisher: {e}"),
        }
        assert!(sent < 250, "the slow consumer was never cut off");
        for _ in 0..10 {
            publisher.send(&payload);
        }
        sent += 10;
    }
    assert_eq!(slow.read_close_code(), 1008);

    // A flood: the warning, the kick and the ban, from its own address.
    let flood_chan = format!("/c/{MARKER}-flood-chan?as={MARKER}-alias-flood");
    let mut flooder = join_from(&relay, FLOODER, &flood_chan);
    uids.push(flooder.uid.clone());
    for _ in 0..302 {
        flooder
            .ws
            .write(Message::text(format!("\"{MARKER}-flood\"")))
            .unwrap();
    }
    flooder.ws.flush().unwrap();
    assert_eq!(
        flooder.recv_event("error")["message"],
        "rate limit exceeded (warning 1 of 1)"
    );
    assert_eq!(flooder.recv_close().0, 1008);
    let banned = (0..64).any(|_| upgrade_from(&relay, FLOODER, &flood_chan).0 == 429);
    assert!(
        banned,
        "no upgrade from the kicked address landed on its banning shard"
    );

    // Reloads: a good file, then two broken ones holding markers.
    let mut lines = Vec::new();
    std::fs::write(
        &file,
        format!("{namespaces}\n[[namespace]]\nprefix = \"{MARKER}-ns2\"\nsend_key = \"{MARKER}-ns2-key\"\n"),
    )
    .unwrap();
    process.signal(libc::SIGHUP);
    wait_for_log(&process.log, &mut lines, "namespaces reloaded");
    for broken in [
        format!("{namespaces}\n[[namespace]]\nprefix = \"{MARKER}-ns3\"\njoin_key = \"{MARKER}-unterminated\n"),
        format!("{namespaces}\n[[namespace]]\nprefix = \"{MARKER}-ns4:\"\njoin_key = \"{MARKER}-k\"\n"),
    ] {
        std::fs::write(&file, broken).unwrap();
        process.signal(libc::SIGHUP);
        wait_for_log(&process.log, &mut lines, "reload refused");
    }

    // SIGTERM: members get 1001, the process exits; read its log to the end.
    process.signal(libc::SIGTERM);
    assert_eq!(a.recv_close().0, 1001);
    assert_eq!(b.recv_close().0, 1001);
    let status = process.wait_exit(Duration::from_secs(10));
    std::fs::remove_file(&file).ok();
    assert!(status.success(), "{status:?}");
    lines.extend(process.log.iter());
    assert!(lines.iter().any(|l| l.contains("stopped")), "{:#?}", lines);

    let addresses = [CLIENT, FLOODER, PUSHER].map(|ip| ip.to_string());
    let offending: Vec<&String> = lines
        .iter()
        .filter(|line| {
            line.to_ascii_lowercase().contains(MARKER)
                || addresses.iter().any(|ip| line.contains(ip.as_str()))
                || words(line).any(|w| uids.iter().any(|uid| uid == w))
        })
        .collect();
    assert!(
        offending.is_empty(),
        "log lines name a channel, alias, key, payload, uid or client address:\n{offending:#?}"
    );
}

/// The alphanumeric words of a line (a uid leaks as one).
fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// The log of every relay the suite booted, in process or as a binary,
/// against every identifier the support helpers recorded (`run_log.rs`).
/// Ignored in a plain `cargo test`: it reads what the other tests left, so
/// `.ci/run` runs it once they are done. Fails if there is nothing to read.
#[test]
#[ignore = "run by .ci/run after the whole suite"]
fn the_log_of_the_whole_test_run_names_nothing() {
    let dir = run_log::dir();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run the suite first", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    let read = |ext: &str| -> Vec<String> {
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .flat_map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let lines = read("log");
    let ids = read("ids");
    let listening = lines.iter().filter(|l| l.contains("listening")).count();
    assert!(
        listening >= 20 && ids.len() >= 100,
        "too little to check ({listening} relays logged, {} identifiers): run the suite first",
        ids.len()
    );
    let (mut uids, mut texts) = (std::collections::HashSet::new(), Vec::new());
    for id in &ids {
        match id.split_once(' ') {
            Some(("Uid", uid)) => {
                uids.insert(uid);
            }
            Some(("Text", text)) => texts.push(text),
            _ => panic!("unreadable identifier line {id:?}"),
        }
    }
    // Only lines holding a text's first bytes are searched for it.
    let window = run_log::TEXT_BYTES_MIN;
    let windows: std::collections::HashSet<&[u8]> = lines
        .iter()
        .flat_map(|l| l.as_bytes().windows(window))
        .collect();
    let mut offending = std::collections::BTreeSet::new();
    for text in texts {
        if windows.contains(&text.as_bytes()[..window]) {
            offending.extend(lines.iter().filter(|l| l.contains(text)).map(|l| (l, text)));
        }
    }
    for line in &lines {
        for word in words(line).filter(|w| uids.contains(w)) {
            offending.insert((line, word));
        }
    }
    assert!(
        offending.is_empty(),
        "log lines name what a test used (line, identifier):\n{offending:#?}"
    );
}
