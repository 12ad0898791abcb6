//! Slow consumers, silent and vanished clients, slow handshakes, hostile
//! bytes and shutdown. Each prints its figure (`--nocapture` shows it).

use crate::support::*;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn a_reader_that_stops_is_cut_at_its_queue_bound_its_memory_released_and_no_one_else_loses() {
    // 8 MiB of queue, 32 KiB messages at 200 a second (6.25 MiB/s): the
    // stalled member's queue passes its bound about 1.3 s after it stops,
    // while the other reader (a debug build on a busy machine) keeps up.
    const QUEUE_MAX: usize = 8 << 20;
    const MESSAGE: usize = 32 << 10;
    const RATE: u64 = 200;
    let process = spawn_relay(&[
        "--outgoing-queue-bytes-max",
        &QUEUE_MAX.to_string(),
        "--messages-per-conn-per-sec",
        "1000000",
        "--messages-per-conn-burst",
        "1000000",
    ]);
    let relay = &process.relay;
    let channel = unique("stall");
    let path = format!("/c/{channel}?announce=true");
    let mut stalled = stalled_member(relay.addr, &path);
    let mut reader = relay.join(&format!("/c/{channel}"));
    let mut publisher = relay.join(&format!("/c/{channel}"));
    reader.recv_event("join");
    let baseline = process.rss_kib();

    // Publish at a steady pace from another thread; the reader keeps up.
    let payload = format!("\"{}\"", "x".repeat(MESSAGE - 2));
    let started = Instant::now();
    let pacer = std::thread::spawn(move || {
        let mut sent = 0u64;
        while started.elapsed() < Duration::from_secs(3) {
            let due = started + Duration::from_micros(sent * 1_000_000 / RATE);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            publisher.send(&payload);
            sent += 1;
        }
        (sent, publisher)
    });
    let (mut received, mut cut_after, mut peak) = (0u64, None, baseline);
    while !pacer.is_finished() || received < 1 {
        let v = reader.recv();
        match v["type"].as_str() {
            Some("leave") => cut_after = Some(started.elapsed()),
            Some(_) => {}
            None => received += 1,
        }
        if cut_after.is_none() && received % 16 == 0 {
            peak = peak.max(process.rss_kib());
        }
    }
    let (sent, _publisher) = pacer.join().unwrap();
    while received < sent {
        if reader.recv().get("message").is_some() {
            received += 1;
        }
    }
    let cut_after = cut_after.expect("the stalled member's leave went out");
    // The lowest RSS over the next 2.5 s: the sweep (once a second) hands
    // the dropped backlog's memory back to the kernel.
    let released = (0..25)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            process.rss_kib()
        })
        .min()
        .unwrap();
    eprintln!(
        "stalled reader: cut {:.2} s after publishing began (bound {QUEUE_MAX} bytes at {} bytes/s: \
         {:.2} s); relay RSS {baseline} KiB before, {peak} KiB at most while it stalled, \
         {released} KiB after the cut; the other reader got {received} of {sent}",
        cut_after.as_secs_f64(),
        RATE as usize * MESSAGE,
        QUEUE_MAX as f64 / (RATE as usize * MESSAGE) as f64,
    );
    assert_eq!(received, sent, "the other member lost nothing");
    let expected = QUEUE_MAX as f64 / (RATE as usize * MESSAGE) as f64;
    assert!(
        cut_after.as_secs_f64() < expected + 2.0,
        "cut within the time its bound allows, give or take the kernel's buffers (+2 s)"
    );
    assert!(
        peak > baseline + (QUEUE_MAX / 1024 / 2) as u64,
        "the queue was held while it stalled"
    );
    assert!(
        released < baseline + (QUEUE_MAX / 1024 / 4) as u64,
        "the queue's memory was released"
    );
    assert_eq!(stalled.read_close_code(), 1008);
    // Counted once the socket is gone (after the close handshake timeout).
    relay.wait_until(
        Duration::from_secs(10),
        "the slow consumer was not counted",
        |r| r.metric_labelled("connections_closed_total", "reason", "slow_consumer") > 0,
    );
    assert_eq!(
        relay.metric_labelled("connections_closed_total", "reason", "slow_consumer"),
        1
    );
}

#[test]
fn clients_that_vanish_leave_within_the_liveness_timeout_and_their_leaves_go_out() {
    const PING_MS: u64 = 300;
    const IDLE_MS: u64 = 1500;
    let relay = relay_with(|c| {
        c.ping_interval_ms = PING_MS;
        c.idle_timeout_ms = IDLE_MS;
    });
    let channel = unique("vanish");
    let path = format!("/c/{channel}?announce=true");
    let mut watcher = relay.join(&format!("/c/{channel}"));
    let joined = |watcher: &mut Client| {
        watcher.recv_event("join")["uid"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // 1. A socket reset: SO_LINGER 0, then closed, so the kernel sends RST.
    let reset = Raw::upgrade(relay.addr, &path);
    let reset_uid = joined(&mut watcher);
    socket2::SockRef::from(&reset.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    let started = Instant::now();
    drop(reset);
    assert_eq!(watcher.recv_event("leave")["uid"], reset_uid.as_str());
    let reset_took = started.elapsed();

    // 2. A process killed (SIGKILL) with the join event unread in its
    // socket: its kernel tears the connection down.
    let handshake = Raw::handshake_request(&path);
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import socket, sys, time\n\
             s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
             s.sendall(sys.argv[2].encode())\n\
             s.recv(1)\n\
             print('joined', flush=True)\n\
             time.sleep(60)\n",
        )
        .arg(relay.addr.port().to_string())
        .arg(&handshake)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "joined");
    let killed_uid = joined(&mut watcher);
    let started = Instant::now();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(watcher.recv_event("leave")["uid"], killed_uid.as_str());
    let killed_took = started.elapsed();

    // 3. A peer that goes silent (a host gone, a cable pulled): no FIN, no
    // RST. It is pinged after the ping interval and dropped at the idle
    // timeout.
    let mut silent = Raw::upgrade(relay.addr, &path);
    silent.read_json();
    let silent_uid = joined(&mut watcher);
    let started = Instant::now();
    assert_eq!(silent.read_frame().0, 9, "a ping after the ping interval");
    // The watcher answers pings (tungstenite does, while reading), so only
    // the silent client leaves.
    assert_eq!(watcher.recv_event("leave")["uid"], silent_uid.as_str());
    let silent_took = started.elapsed();

    eprintln!(
        "vanished clients: reset left after {:.1} ms, killed process after {:.1} ms, \
         silent peer after {:.2} s (ping {PING_MS} ms, idle timeout {IDLE_MS} ms, sweep 1 s)",
        reset_took.as_secs_f64() * 1000.0,
        killed_took.as_secs_f64() * 1000.0,
        silent_took.as_secs_f64()
    );
    assert!(reset_took < Duration::from_secs(1));
    assert!(killed_took < Duration::from_secs(1));
    assert!(silent_took >= Duration::from_millis(IDLE_MS - 100));
    assert!(silent_took < Duration::from_millis(IDLE_MS + 2000));
    watcher.send("\"still here\"");
    let again = relay.join(&format!("/c/{channel}"));
    assert_eq!(again.join_event["total"], 2, "only the watcher stayed");
    again.close();
}

#[test]
fn hundreds_of_slowloris_handshakes_are_cut_at_the_deadline_while_others_connect() {
    const TRICKLERS: usize = 300;
    const DEADLINE_MS: u64 = 1500;
    let relay = relay_with(|c| c.handshake_timeout_ms = DEADLINE_MS);
    // Each trickler sends a head one byte every 100 ms: never whole before
    // the deadline.
    let head = b"GET /c/slow HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let mut tricklers: Vec<(std::net::TcpStream, Instant, Option<Duration>)> = (0..TRICKLERS)
        .map(|_| {
            let stream = std::net::TcpStream::connect(relay.addr).unwrap();
            stream.set_nonblocking(true).unwrap();
            (stream, Instant::now(), None)
        })
        .collect();
    let addr = relay.addr;
    let channel = unique("beside-slowloris");
    let normal = std::thread::spawn(move || {
        // Normal clients join meanwhile, one every 50 ms.
        let relay = Relay {
            server: None,
            addr,
            shards: 2,
        };
        let mut slowest = Duration::ZERO;
        for _ in 0..40 {
            let started = Instant::now();
            relay.join(&format!("/c/{channel}")).close();
            slowest = slowest.max(started.elapsed());
            std::thread::sleep(Duration::from_millis(50));
        }
        slowest
    });
    let started = Instant::now();
    let mut byte = 0;
    while tricklers.iter().any(|t| t.2.is_none()) && started.elapsed() < Duration::from_secs(6) {
        for (stream, opened, cut) in tricklers.iter_mut().filter(|t| t.2.is_none()) {
            let mut probe = [0u8; 1];
            let closed = match std::io::Read::read(stream, &mut probe) {
                Ok(0) => true,
                Ok(_) => panic!("the relay answered a head that never ended"),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    stream.write(&head[byte % head.len()..][..1]).is_err()
                }
                Err(_) => true,
            };
            if closed {
                *cut = Some(opened.elapsed());
            }
        }
        byte += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let slowest_join = normal.join().unwrap();
    let cuts: Vec<Duration> = tricklers.iter().filter_map(|t| t.2).collect();
    let (first, last) = (cuts.iter().min().unwrap(), cuts.iter().max().unwrap());
    eprintln!(
        "slowloris: {} of {TRICKLERS} trickling handshakes cut between {:.2} s and {:.2} s \
         (deadline {:.1} s); 40 normal joins meanwhile, the slowest took {:.1} ms",
        cuts.len(),
        first.as_secs_f64(),
        last.as_secs_f64(),
        DEADLINE_MS as f64 / 1000.0,
        slowest_join.as_secs_f64() * 1000.0
    );
    assert_eq!(cuts.len(), TRICKLERS, "every trickler was cut");
    assert!(
        first.as_millis() as u64 >= DEADLINE_MS - 100,
        "none cut before the deadline"
    );
    assert!(
        last.as_millis() as u64 <= DEADLINE_MS + 1500,
        "all cut soon after the deadline"
    );
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
fn sigterm_under_load_gives_every_client_1001_and_exits_within_the_drain() {
    const CHANNELS: usize = 10;
    const READERS_PER_CHANNEL: usize = 20;
    const DRAIN_MS: u64 = 3000;
    let mut process = spawn_relay(&[
        "--upgrades-per-ip-per-sec",
        "1000000",
        "--upgrades-per-ip-burst",
        "1000000",
        "--messages-per-conn-per-sec",
        "1000000",
        "--messages-per-conn-burst",
        "1000000",
        "--close-timeout-ms",
        "1000",
        "--shutdown-timeout-ms",
        &DRAIN_MS.to_string(),
    ]);
    let addr = process.relay.addr;
    let prefix = unique("term");
    let mut readers: Vec<Raw> = (0..CHANNELS * READERS_PER_CHANNEL)
        .map(|i| {
            let mut raw = Raw::upgrade(addr, &format!("/c/{prefix}-{}", i % CHANNELS));
            raw.read_json();
            raw
        })
        .collect();
    // One publisher per channel, each sending 500 messages a second until
    // its socket fails, then reading what is left up to its close frame.
    let publishers: Vec<_> = (0..CHANNELS)
        .map(|c| {
            let mut raw = Raw::upgrade(addr, &format!("/c/{prefix}-{c}"));
            raw.read_json();
            std::thread::spawn(move || {
                let mut sent = 0u64;
                let started = Instant::now();
                loop {
                    let frame = Raw::frame(
                        true,
                        1,
                        format!("{{\"n\":{sent}}}").as_bytes(),
                        Some([1, 2, 3, 4]),
                    );
                    if raw.stream.write_all(&frame).is_err() {
                        break;
                    }
                    sent += 1;
                    let due = started + Duration::from_millis(sent * 2);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    if started.elapsed() > Duration::from_secs(10) {
                        break;
                    }
                }
                (sent, raw.read_close_code())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let open_before = process.relay.metric_sum("itty_connections_open");
    let signalled = Instant::now();
    process.signal(libc::SIGTERM);
    let status = process.wait_exit(Duration::from_millis(DRAIN_MS + 2000));
    let exited_after = signalled.elapsed();

    let mut codes = std::collections::BTreeMap::new();
    let mut delivered = 0u64;
    for reader in &mut readers {
        let code = loop {
            let (opcode, payload) = reader.read_frame();
            match opcode {
                8 => break u16::from_be_bytes([payload[0], payload[1]]),
                1 => delivered += 1,
                _ => {}
            }
        };
        *codes.entry(code).or_insert(0usize) += 1;
    }
    let mut published = 0;
    for publisher in publishers {
        let (sent, code) = publisher.join().unwrap();
        published += sent;
        *codes.entry(code).or_insert(0usize) += 1;
    }
    let log = process.rest_of_log();
    eprintln!(
        "SIGTERM under load: {open_before} connections open, {published} messages published, \
         {delivered} delivered; close codes {codes:?}; exited {:.2} s after the signal \
         (drain bound {:.1} s), {status}",
        exited_after.as_secs_f64(),
        DRAIN_MS as f64 / 1000.0
    );
    assert_eq!(open_before, (CHANNELS * (READERS_PER_CHANNEL + 1)) as u64);
    assert_eq!(
        codes.into_iter().collect::<Vec<_>>(),
        vec![(1001, CHANNELS * (READERS_PER_CHANNEL + 1))],
        "every client got 1001"
    );
    assert!(delivered > 0, "messages were flowing");
    assert!(status.success(), "{status}");
    assert!(!log.iter().any(|l| l.contains("panicked")), "{log:?}");
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
    relay.wait_until(Duration::from_secs(10), "junk connections left open", |r| {
        r.metric_sum("itty_connections_open") <= 2
    });
}

#[test]
fn an_idle_relay_sleeps_between_its_sweeps() {
    // A shard with nothing to do wakes for its timers only: the liveness
    // sweep (SWEEP_INTERVAL_MS, once a second). A runtime whose own
    // preemption timer outlived a turn woke an idle shard every 100 ms
    // (a version of vendor/glommio/PATCHED.md 6, since reverted); allow a
    // few more than the sweeps.
    const WINDOW: Duration = Duration::from_secs(3);
    const SLEEPS_PER_SHARD_PER_SEC_MAX: u64 = 4;
    let process = spawn_relay(&[]);
    let relay = &process.relay;
    let channel = unique("idle");
    let mut a = relay.join(&format!("/c/{channel}"));
    let mut b = relay.join(&format!("/c/{channel}"));
    a.recv_event("join");
    b.send("\"wake everyone once\"");
    assert_eq!(a.recv_message()["message"], "wake everyone once");
    std::thread::sleep(Duration::from_millis(300));
    let before = process.shard_sleeps();
    std::thread::sleep(WINDOW);
    let slept = process.shard_sleeps() - before;
    let allowed = SLEEPS_PER_SHARD_PER_SEC_MAX * WINDOW.as_secs() * relay.shards as u64;
    println!(
        "idle: {slept} shard sleeps in {WINDOW:?} ({} shards)",
        relay.shards
    );
    assert!(
        slept <= allowed,
        "idle shards went to sleep {slept} times in {WINDOW:?} (at most {allowed})"
    );
    assert!(slept > 0, "the shard threads were found and counted");
}
