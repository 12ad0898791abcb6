//! Slow consumers, silent clients, slow handshakes and shutdown.

use crate::support::*;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn slow_consumer_is_dropped_while_the_others_get_every_message() {
    let relay = relay_with(|c| {
        c.message_bytes_max = 4096;
        c.outgoing_queue_bytes_max = 64 * 1024;
    });
    let channel = unique("slow");
    // The slow member: a raw socket with a small receive buffer that never
    // reads after its join.
    let slow = {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.connect(&relay.addr.into()).unwrap();
        let mut stream: std::net::TcpStream = socket.into();
        stream
            .write_all(Raw::handshake_request(&format!("/c/{channel}?announce=true")).as_bytes())
            .unwrap();
        let mut raw = Raw { stream };
        raw.stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
        raw.read_head();
        raw.read_json();
        raw
    };
    let mut reader = relay.join(&format!("/c/{channel}"));
    let mut publisher = relay.join(&format!("/c/{channel}"));
    reader.recv_event("join");

    // Publish until the slow member is dropped (the kernel's socket buffers
    // absorb some first), keeping the good reader drained as we go.
    let payload = format!("\"{}\"", "x".repeat(1000));
    let (mut sent, mut received, mut saw_leave) = (0usize, 0usize, false);
    while !saw_leave && sent < 50_000 {
        for _ in 0..50 {
            publisher.send(&payload);
            sent += 1;
        }
        while received < sent {
            let v = reader.recv();
            match v["type"].as_str() {
                Some("leave") => saw_leave = true,
                Some(_) => {}
                None => received += 1,
            }
        }
    }
    assert_eq!(received, sent, "the reader got every message");
    assert!(saw_leave, "the slow consumer's leave went out");
    // What the slow member still finds in its socket ends with 1008 (the
    // writer waits up to the close timeout for room to send it).
    let mut slow = slow;
    assert_eq!(slow.read_close_code(), 1008);
    // Counted once the socket is gone (after the close handshake timeout).
    let deadline = Instant::now() + Duration::from_secs(10);
    let dropped = loop {
        let text = relay.metrics();
        let dropped: u64 = text
            .lines()
            .filter(|l| {
                l.starts_with("itty_connections_closed_total") && l.contains("slow_consumer")
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        if dropped > 0 || Instant::now() > deadline {
            break dropped;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        dropped,
        1,
        "{}",
        relay
            .metrics()
            .lines()
            .filter(|l| l.starts_with("itty_connections_closed") && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn silent_client_is_pinged_then_dropped_and_its_leave_goes_out() {
    let relay = relay_with(|c| {
        c.ping_interval_ms = 300;
        c.idle_timeout_ms = 1500;
    });
    let channel = unique("idle");
    let mut watcher = relay.join(&format!("/c/{channel}"));
    let mut silent = Raw::upgrade(relay.addr, &format!("/c/{channel}?announce=true"));
    let uid = silent.read_json()["uid"].as_str().unwrap().to_owned();
    assert_eq!(watcher.recv_event("join")["uid"], uid.as_str());
    // The silent client reads its ping but never answers.
    assert_eq!(silent.read_frame().0, 9, "a ping after the ping interval");
    let started = Instant::now();
    // The watcher answers pings (tungstenite does, while reading), so only
    // the silent client leaves.
    let leave = watcher.recv_event("leave");
    assert_eq!(leave["uid"], uid.as_str());
    assert!(started.elapsed() < Duration::from_secs(4));
    watcher.send("\"still here\"");
    let again = relay.join(&format!("/c/{channel}"));
    assert_eq!(again.join_event["total"], 2, "the watcher was not dropped");
    again.close();
}

#[test]
fn slow_handshake_is_cut_at_the_deadline() {
    let relay = relay_with(|c| c.handshake_timeout_ms = 300);
    let mut raw = Raw::connect(relay.addr);
    raw.stream
        .write_all(b"GET /c/room HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let started = Instant::now();
    assert!(raw.closed_by_server());
    assert!(started.elapsed() < Duration::from_secs(3));
    // Normal clients still connect meanwhile.
    relay.join(&format!("/c/{}", unique("after-slowloris")));
}

#[test]
fn shutdown_sends_1001_turns_health_503_and_exits_in_time() {
    let mut relay = relay_with(|c| {
        c.close_timeout_ms = 1500;
        c.shutdown_timeout_ms = 3000;
    });
    let channel = unique("shutdown");
    let mut a = relay.join(&format!("/c/{channel}"));
    // A member that will not answer the close keeps the drain open.
    let mut lingering = Raw::upgrade(relay.addr, &format!("/c/{channel}"));
    lingering.read_json();
    let addr = relay.addr;
    let server = relay.server.take().unwrap();
    let started = Instant::now();
    let stopper = std::thread::spawn(move || server.shutdown());
    assert_eq!(a.recv_close(), (1001, "server shutting down".to_owned()));
    let mut saw_503 = false;
    while started.elapsed() < Duration::from_secs(3) && !stopper.is_finished() {
        let st = http_request(addr, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n").0;
        if st == 503 {
            saw_503 = true;
            break;
        }
    }
    assert!(saw_503, "health turned 503 while draining");
    assert_eq!(lingering.read_close_code(), 1001);
    stopper.join().unwrap().expect("shutdown succeeds");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exited within the drain bound"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer listening"
    );
}

#[test]
fn hostile_bytes_never_take_a_shard_down() {
    let relay = relay_with(|c| c.handshake_timeout_ms = 500);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..300 {
        let mut raw = Raw::connect(relay.addr);
        let len = (next() % 2048) as usize;
        let mut junk: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 1 {
            // Half of them upgrade first, then send random frames.
            let mut upgraded =
                Raw::handshake_request(&format!("/c/{}", unique("junk"))).into_bytes();
            upgraded.append(&mut junk);
            junk = upgraded;
        } else if i % 4 == 0 {
            // A plausible head with random header bytes.
            let mut head = b"GET /c/x HTTP/1.1\r\nUpgrade: websocket\r\n".to_vec();
            head.append(&mut junk);
            head.extend_from_slice(b"\r\n\r\n");
            junk = head;
        }
        let _ = raw.stream.write_all(&junk);
        drop(raw);
    }
    // Both shards still serve: a pair with one member on each talks, and
    // every junk connection is gone.
    let channel = unique("after-junk");
    let mut a = relay.join_on(itty_relay::id::ShardId(0), &format!("/c/{channel}"));
    let mut b = relay.join_on(itty_relay::id::ShardId(1), &format!("/c/{channel}"));
    a.recv_event("join");
    b.send("\"still fine\"");
    assert_eq!(a.recv_message()["message"], "still fine");
    let deadline = Instant::now() + Duration::from_secs(10);
    while relay.metric_sum("itty_connections_open") > 2 {
        assert!(
            Instant::now() < deadline,
            "junk connections left open:\n{}",
            relay.metrics()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
