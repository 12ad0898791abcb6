//! Every limit at its edge: exactly at the limit is accepted, one over is
//! refused with the documented status, close code or reason. Through the
//! network for what a client can reach; the internal tables are unit-tested
//! in their modules. Rates are checked per shard (buckets are per shard),
//! placing each attempt by the per-shard counter that moved.
//!
//! The audit (`e::` = this file; other files named; "unit" = the module's
//! own tests, for the internal tables and pure parsers):
//!
//! | limit | value (default) | accepted at the edge | refused one over |
//! |---|---|---|---|
//! | `message_bytes_max` (WS) | 102400 B | `e::a_message_of_message_bytes_max_is_relayed_..` (whole and fragmented) | same test: 1009, whole and fragmented; `protocol::protocol_violations_close_with_the_rfc_codes` |
//! | `message_bytes_max` (push body) | 102400 B | `e::a_push_body_of_message_bytes_max_is_relayed_..` (length and chunked) | same test: 413; `push::a_chunked_body_over_the_limit_is_refused_with_413` |
//! | `outgoing_queue_bytes_max` | 1 MiB | unit `conn::handle::push_queues_until_the_bound_then_ends_as_slow_consumer` (exactly the bound queued) | same unit test; `faults::a_reader_that_stops_is_cut_at_its_queue_bound_..` (1008 over the network) |
//! | `request_head_bytes_max` | 8192 B | `e::a_head_of_request_head_bytes_max_is_served_..`; unit `http::head` | same test: 431 at 8193; unit `http::head` |
//! | `request_headers_max` | 64 | `e::request_headers_max_headers_are_served_..`; unit `http::head` | same test: 431 at 65 |
//! | `handshake_timeout_ms` | 10000 ms | `e::a_head_completed_within_handshake_timeout_..` (head dribbled over a third of it) | same test (unfinished head cut; push body 408); `faults::hundreds_of_slowloris_handshakes_are_cut_at_the_deadline_..` |
//! | `ping_interval_ms` / `idle_timeout_ms` | 30000 / 75000 ms | `faults::clients_that_vanish_leave_within_the_liveness_timeout_..` (the watcher answering pings stays) | same test: the silent client is pinged, then dropped with its leave |
//! | `close_timeout_ms` | 2000 ms | `protocol::client_close_is_answered_..` (an answered close ends cleanly) | `e::after_its_close_frame_the_server_waits_close_timeout_..` |
//! | `shutdown_timeout_ms` | 5000 ms | `binary::sigterm_drains_with_1001_..` | `faults::shutdown_sends_1001_..` (a lingering client cannot hold the drain) |
//! | `connections_per_shard_max` | 100000 | `e::each_shard_serves_exactly_connections_per_shard_max` (2 per shard) | same test: 503 on each shard at the 3rd |
//! | `upgrades_per_ip_per_sec` / `_burst` | 10 / 20 | `e::each_shard_takes_its_upgrade_burst_..`; unit `ratelimit::bucket_starts_full_..` | same: 429 with Retry-After; `limits::upgrades_over_the_per_ip_rate_..` |
//! | `pushes_per_ip_per_sec` / `_burst` | 100 / 200 | `e::each_shard_takes_its_push_burst_..` | same: 429; `push::pushes_over_the_per_ip_rate_..` |
//! | `messages_per_conn_per_sec` / `_burst` | 40 / 100 | `limits::a_flood_gets_what_the_bucket_allows_..` (exactly the burst relayed) | same test: the next one warned |
//! | `rate_limit_warnings` | 3 | `limits::a_flood_..` (warnings 1 to 3, still open) | same test: the 4th closes 1008 |
//! | `ban_duration_ms` | 60000 ms | `e::a_ban_refuses_upgrades_for_ban_duration_..` (101 once it ran out); unit `ratelimit::bans_hold_until_they_expire` | same test: 429 "banned" within it; `limits::a_flood_..` (Retry-After 55..60) |
//! | `forward_queue_slots` / `forward_backlog_max` | 64 / 262144 | `cross_shard::a_flood_through_a_congested_forward_queue_loses_nothing` (1 slot, the floor) | `e::config_validation_..` (floor - 1 refused at startup) |
//! | every other validated setting (`shards` 1024, `io_memory_bytes` 65536, rates 1..=1e9, head bytes 256..=1 MiB, headers 1..=128, timeouts > 0) | | `e::config_validation_accepts_each_setting_at_its_edge_..` | same test |
//! | channel name | 256 B decoded | `e::a_channel_name_of_256_bytes_..` (ASCII, 2-byte UTF-8, push) | same test: 400 "channel name is longer than 256 bytes" |
//! | alias | 64 B decoded | `e::an_alias_of_64_bytes_..` (ASCII, 2-byte UTF-8) | same test: 400; `endpoints::bad_channel_names_and_aliases_get_400` |
//! | namespace key (`KEY_BYTES_MAX`) | 256 B | unit `access::keys_may_be_256_bytes_and_no_longer` | same unit test (config refused) |
//! | uid | 6 base62 chars, never reused | `protocol::own_join_is_the_first_frame_..`; unit `id::uids_are_six_base62_chars_and_unique` | unit `id::uid_parse_rejects_bad_text` |
//! | chunk-size line / trailer | 4096 / 8192 B | unit `http::body::chunk_lines_and_trailers_may_reach_their_limits_..` | same unit test (400) |
//! | `IP_BUCKETS_ENTRIES_MAX` | 100000 per shard | unit `ratelimit::a_full_ip_table_refuses_new_addresses_..` (table of 2: the 2nd admitted) | same: the 3rd address refused (429) |
//! | `BAN_LIST_ENTRIES_MAX` | 100000 per shard | unit `ratelimit::a_full_ban_list_drops_the_ban_closest_to_expiry` | same |
//! | WebSocket control frames, close reasons | 125 B | unit `ws::codec_tests` (other engineer's area) | `protocol::protocol_violations_..` (1002) |
//!
//! Not refusal limits, so no edge to test: `WRITE_BATCH_FRAMES`,
//! `SHARD_READ_BUFFER_BYTES` and `READ_CHUNK_BYTES` (sizes of work; a
//! message at the 100 KiB limit crosses them in `e::a_message_..`),
//! `SWEEP_INTERVAL_MS`, `LISTEN_BACKLOG`, `PUSH_ANSWER_TIMEOUT_MS` (503 only
//! when an owner is stuck; not reachable from a client), `UID_SPACE`.
//! Keys a client offers (`joinKey`, `sendKey`, `x-send-key`) have no limit
//! of their own beyond the request head's: a longer key simply fails to
//! match a namespace key, and an ephemeral key a creator sets is bounded by
//! the head; refusing them at 256 bytes would be a protocol change.

use crate::support::*;
use itty_relay::Config;
use std::io::Write;
use std::time::{Duration, Instant};

/// A `name{shard="i",...label...}` value from a metrics text.
fn sample(text: &str, name: &str, shard: usize, label: &str) -> u64 {
    let prefix = format!("itty_{name}{{shard=\"{shard}\"");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(label))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Runs `attempt` until every shard has refused once (at most `tries`);
/// returns, per shard, how many attempts it accepted before its first
/// refusal. `accepted` and `refused` name the per-shard counters
/// (metric, label) that tell which shard took each attempt.
fn accepted_before_refusal(
    relay: &Relay,
    tries: usize,
    accepted: (&str, &str),
    refused: (&str, &str),
    mut attempt: impl FnMut() -> u16,
) -> Vec<usize> {
    let counts = |text: &str, (name, label): (&str, &str)| -> Vec<u64> {
        (0..relay.shards)
            .map(|s| sample(text, name, s, label))
            .collect()
    };
    let mut before: Option<Vec<usize>> = None;
    let mut taken = vec![0usize; relay.shards];
    let mut first_refusal: Vec<Option<usize>> = vec![None; relay.shards];
    for _ in 0..tries {
        let text = relay.metrics();
        let (a0, r0) = (counts(&text, accepted), counts(&text, refused));
        let status = attempt();
        let text = relay.metrics();
        let (a1, r1) = (counts(&text, accepted), counts(&text, refused));
        let shard = (0..relay.shards)
            .find(|&s| a1[s] > a0[s] || r1[s] > r0[s])
            .unwrap_or_else(|| panic!("no shard counted an attempt answered {status}"));
        if r1[shard] > r0[shard] {
            first_refusal[shard].get_or_insert(taken[shard]);
        } else {
            taken[shard] += 1;
        }
        if first_refusal.iter().all(Option::is_some) {
            before = Some(first_refusal.iter().map(|r| r.unwrap()).collect());
            break;
        }
    }
    before.unwrap_or_else(|| panic!("not every shard refused in {tries} tries: {first_refusal:?}"))
}

/// Asserts `burst` per shard passed before the first refusal; a run slower
/// than the refill interval (1 s at rate 1) may let one more through per
/// second that passed.
fn assert_burst(per_shard: &[usize], burst: usize, started: Instant) {
    let refilled = started.elapsed().as_secs() as usize;
    for (shard, &n) in per_shard.iter().enumerate() {
        assert!(
            (burst..=burst + refilled).contains(&n),
            "shard {shard} accepted {n} before refusing, burst {burst} ({refilled} s of refill)"
        );
    }
}

#[test]
fn a_channel_name_of_256_bytes_is_served_and_257_is_refused_with_400() {
    let relay = relay_with(|c| c.namespace = vec![namespace("ns", None, Some("k"))]);
    let ascii = "c".repeat(256);
    // 128 two-byte characters, percent-encoded: 256 bytes once decoded.
    let wide = "%C3%A9".repeat(128);
    for channel in [&ascii, &wide] {
        let client = relay.join(&format!("/c/{channel}"));
        assert_eq!(client.join_event["total"], 1);
        let (status, head, _) = relay.upgrade(&format!("/c/{channel}x"));
        assert_eq!(status, 400, "{head}");
        assert!(
            head.contains("channel name is longer than 256 bytes"),
            "{head}"
        );
    }
    let ns_channel = format!("ns:{}", "p".repeat(253));
    assert_eq!(relay.push(&ns_channel, Some("k"), "1").0, 200);
    let (status, _, body) = relay.push(&format!("{ns_channel}p"), Some("k"), "1");
    assert_eq!(status, 400, "{body}");
}

#[test]
fn an_alias_of_64_bytes_is_kept_and_65_is_refused_with_400() {
    let relay = relay();
    let channel = unique("alias-edge");
    for (alias, decoded) in [
        ("a".repeat(64), "a".repeat(64)),
        ("%C3%A9".repeat(32), "é".repeat(32)),
    ] {
        let client = relay.join(&format!("/c/{channel}?as={alias}"));
        assert_eq!(client.join_event["alias"], decoded.as_str());
        let (status, head, _) = relay.upgrade(&format!("/c/{channel}?as={alias}b"));
        assert_eq!(status, 400, "{head}");
        assert!(head.contains("alias is longer than 64 bytes"), "{head}");
    }
}

#[test]
fn a_message_of_message_bytes_max_is_relayed_and_one_byte_more_closes_1009() {
    // The default limit (100 KiB) is larger than the shard's read buffer,
    // so the message at the edge also crosses reads.
    let relay = relay();
    let limit = Config::default().message_bytes_max;
    let channel = unique("size-edge");
    let mut member = relay.join(&format!("/c/{channel}"));
    let mut raw = Raw::upgrade(relay.addr, &format!("/c/{channel}"));
    raw.read_json();
    member.recv_event("join");
    let at = format!("\"{}\"", "s".repeat(limit - 2));
    raw.send_text(&at);
    assert_eq!(
        member.recv_message()["message"].as_str().unwrap().len(),
        limit - 2
    );
    // The same size in two fragments.
    raw.send_frame(false, 1, &at.as_bytes()[..limit / 2]);
    raw.send_frame(true, 0, &at.as_bytes()[limit / 2..]);
    assert_eq!(
        member.recv_message()["message"].as_str().unwrap().len(),
        limit - 2
    );
    let over = format!("\"{}\"", "s".repeat(limit - 1));
    raw.send_frame(false, 1, &over.as_bytes()[..limit / 2]);
    raw.send_frame(true, 0, &over.as_bytes()[limit / 2..]);
    assert_eq!(raw.read_close_code(), 1009);
    let mut raw = Raw::upgrade(relay.addr, &format!("/c/{channel}"));
    raw.read_json();
    raw.send_text(&over);
    assert_eq!(raw.read_close_code(), 1009);
}

#[test]
fn a_push_body_of_message_bytes_max_is_relayed_and_one_byte_more_is_413() {
    let relay = relay_with(|c| {
        c.message_bytes_max = 1000;
        c.namespace = vec![namespace("hooks", None, Some("k"))];
    });
    let at = format!("\"{}\"", "b".repeat(998));
    let over = format!("\"{}\"", "b".repeat(999));
    assert_eq!(relay.push("hooks:edge", Some("k"), &at).0, 200);
    assert_eq!(relay.push("hooks:edge", Some("k"), &over).0, 413);
    let chunked = |body: &str| {
        let (half1, half2) = body.split_at(500);
        relay.http(&format!(
            "POST /push/hooks:edge HTTP/1.1\r\nx-send-key: k\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n{:x}\r\n{half1}\r\n{:x}\r\n{half2}\r\n0\r\n\r\n",
            half1.len(),
            half2.len()
        ))
    };
    assert_eq!(chunked(&at).0, 200);
    assert_eq!(chunked(&over).0, 413);
}

/// `GET /version` padded with one header to exactly `len` bytes of head.
fn head_of(len: usize) -> String {
    let start = "GET /version HTTP/1.1\r\nHost: t\r\nX-Pad: ";
    let end = "\r\nConnection: close\r\n\r\n";
    format!("{start}{}{end}", "p".repeat(len - start.len() - end.len()))
}

#[test]
fn a_head_of_request_head_bytes_max_is_served_and_one_byte_more_is_431() {
    let relay = relay();
    let limit = Config::default().request_head_bytes_max;
    assert_eq!(head_of(limit).len(), limit);
    assert_eq!(relay.http(&head_of(limit)).0, 200);
    assert_eq!(relay.http(&head_of(limit + 1)).0, 431);
}

#[test]
fn request_headers_max_headers_are_served_and_one_more_is_431() {
    let relay = relay();
    let limit = Config::default().request_headers_max;
    let request = |headers: usize| {
        // Host and Connection count: the rest are fillers.
        let fillers: String = (2..headers).map(|i| format!("X-H{i}: v\r\n")).collect();
        format!("GET /version HTTP/1.1\r\nHost: t\r\n{fillers}Connection: close\r\n\r\n")
    };
    assert_eq!(relay.http(&request(limit)).0, 200);
    assert_eq!(relay.http(&request(limit + 1)).0, 431);
}

#[test]
fn each_shard_takes_its_upgrade_burst_then_answers_429() {
    let relay = relay_with(|c| {
        c.upgrades_per_ip_per_sec = 1;
        c.upgrades_per_ip_burst = 3;
    });
    let started = Instant::now();
    let mut open = Vec::new();
    let per_shard = accepted_before_refusal(
        &relay,
        60,
        ("connections_accepted_total", ""),
        ("upgrades_refused_total", "rate_limited"),
        || {
            let (status, head, raw) = relay.upgrade(&format!("/c/{}", unique("burst")));
            assert!(status == 101 || status == 429, "{head}");
            open.push(raw);
            status
        },
    );
    assert_burst(&per_shard, 3, started);
}

#[test]
fn each_shard_takes_its_push_burst_then_answers_429() {
    let relay = relay_with(|c| {
        c.pushes_per_ip_per_sec = 1;
        c.pushes_per_ip_burst = 2;
        c.namespace = vec![namespace("hooks", None, Some("k"))];
    });
    let started = Instant::now();
    let per_shard = accepted_before_refusal(
        &relay,
        60,
        ("push_requests_total", "status=\"200\""),
        ("push_requests_total", "status=\"429\""),
        || relay.push("hooks:burst", Some("k"), "1").0,
    );
    assert_burst(&per_shard, 2, started);
}

#[test]
fn each_shard_serves_exactly_connections_per_shard_max() {
    let relay = relay_with(|c| c.connections_per_shard_max = 2);
    let mut open = Vec::new();
    let per_shard = accepted_before_refusal(
        &relay,
        60,
        ("connections_accepted_total", ""),
        ("upgrades_refused_total", "shard_full"),
        || {
            let (status, head, raw) = relay.upgrade(&format!("/c/{}", unique("cap")));
            assert!(status == 101 || status == 503, "{head}");
            open.push(raw);
            status
        },
    );
    assert_eq!(per_shard, vec![2, 2]);
}

#[test]
fn a_ban_refuses_upgrades_for_ban_duration_then_lets_them_through() {
    let relay = relay_with(|c| {
        c.messages_per_conn_per_sec = 1;
        c.messages_per_conn_burst = 1;
        c.rate_limit_warnings = 0;
        c.ban_duration_ms = 1500;
    });
    let channel = unique("ban-edge");
    let mut flooder = relay.join(&format!("/c/{channel}"));
    let banning = flooder.shard;
    flooder.send("1");
    flooder.send("2");
    assert_eq!(
        flooder.recv_close(),
        (1008, "rate limit exceeded".to_owned())
    );
    let banned_at = Instant::now();
    let on_banning_shard = || loop {
        let before = relay.metric("upgrades_refused_total", banning.index())
            + relay.metric("connections_accepted_total", banning.index());
        let (status, head, _) = relay.upgrade(&format!("/c/{}", unique("after-ban")));
        let after = relay.metric("upgrades_refused_total", banning.index())
            + relay.metric("connections_accepted_total", banning.index());
        if after > before {
            break (status, head);
        }
    };
    let (status, head) = on_banning_shard();
    assert!(
        banned_at.elapsed() < Duration::from_millis(1500),
        "too slow to see the ban"
    );
    assert_eq!(status, 429, "{head}");
    assert!(head.contains("banned"), "{head}");
    std::thread::sleep(Duration::from_millis(1600).saturating_sub(banned_at.elapsed()));
    assert_eq!(
        on_banning_shard().0,
        101,
        "the ban outlived ban_duration_ms"
    );
}

#[test]
fn a_head_completed_within_handshake_timeout_is_served_and_one_never_completed_is_cut() {
    let relay = relay_with(|c| c.handshake_timeout_ms = 1500);
    let mut slow = Raw::connect(relay.addr);
    let request = Raw::handshake_request(&format!("/c/{}", unique("dribble")));
    // About a third of the deadline spent sending the head.
    for piece in request.as_bytes().chunks(request.len() / 5 + 1) {
        slow.stream.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(slow.read_head().starts_with("HTTP/1.1 101"));
    let mut stuck = Raw::connect(relay.addr);
    stuck.stream.write_all(&request.as_bytes()[..20]).unwrap();
    assert!(stuck.closed_by_server(), "the unfinished head was not cut");
    // A push body gets the same deadline: 408.
    let relay = relay_with(|c| {
        c.handshake_timeout_ms = 300;
        c.namespace = vec![namespace("hooks", None, Some("k"))];
    });
    let (status, _, body) = relay
        .http("POST /push/hooks:late HTTP/1.1\r\nx-send-key: k\r\nContent-Length: 10\r\n\r\n12");
    assert_eq!(status, 408, "{body}");
}

#[test]
fn after_its_close_frame_the_server_waits_close_timeout_then_drops_the_socket() {
    let relay = relay_with(|c| {
        c.message_bytes_max = 100;
        c.outgoing_queue_bytes_max = 2048;
        c.close_timeout_ms = 300;
    });
    let mut raw = Raw::upgrade(relay.addr, &format!("/c/{}", unique("close-edge")));
    raw.read_json();
    raw.send_text(&"1".repeat(101));
    assert_eq!(raw.read_close_code(), 1009);
    // The client never answers the close: the server drops the socket.
    assert!(
        raw.closed_by_server(),
        "the socket outlived close_timeout_ms"
    );
}

#[test]
fn config_validation_accepts_each_setting_at_its_edge_and_refuses_it_past() {
    let floor = itty_relay::limits::forward_backlog_floor(Config::default().forward_queue_slots);
    let ceiling = itty_relay::limits::HEADERS_MAX_CEILING;
    type Edit = Box<dyn Fn(&mut Config)>;
    let cases: Vec<(&str, Edit, Edit)> = vec![
        (
            "message_bytes_max",
            Box::new(|c| c.message_bytes_max = 1),
            Box::new(|c| c.message_bytes_max = 0),
        ),
        (
            "message_bytes_max",
            Box::new(|c| {
                c.message_bytes_max = 64 << 20;
                c.outgoing_queue_bytes_max = (64 << 20) + 1024;
            }),
            Box::new(|c| {
                c.message_bytes_max = (64 << 20) + 1;
                c.outgoing_queue_bytes_max = (65 << 20) + 1024;
            }),
        ),
        (
            "outgoing_queue_bytes_max",
            Box::new(|c| c.outgoing_queue_bytes_max = c.message_bytes_max + 1024),
            Box::new(|c| c.outgoing_queue_bytes_max = c.message_bytes_max + 1023),
        ),
        (
            "request_headers_max",
            Box::new(move |c| c.request_headers_max = ceiling),
            Box::new(move |c| c.request_headers_max = ceiling + 1),
        ),
        (
            "request_headers_max",
            Box::new(|c| c.request_headers_max = 1),
            Box::new(|c| c.request_headers_max = 0),
        ),
        (
            "request_head_bytes_max",
            Box::new(|c| c.request_head_bytes_max = 256),
            Box::new(|c| c.request_head_bytes_max = 255),
        ),
        (
            "request_head_bytes_max",
            Box::new(|c| c.request_head_bytes_max = 1 << 20),
            Box::new(|c| c.request_head_bytes_max = (1 << 20) + 1),
        ),
        (
            "idle_timeout_ms",
            Box::new(|c| c.idle_timeout_ms = c.ping_interval_ms + 1),
            Box::new(|c| c.idle_timeout_ms = c.ping_interval_ms),
        ),
        (
            "forward_backlog_max",
            Box::new(move |c| c.forward_backlog_max = floor),
            Box::new(move |c| c.forward_backlog_max = floor - 1),
        ),
        (
            "shards",
            Box::new(|c| c.shards = 1024),
            Box::new(|c| c.shards = 1025),
        ),
        (
            "io_memory_bytes",
            Box::new(|c| c.io_memory_bytes = 64 * 1024),
            Box::new(|c| c.io_memory_bytes = 64 * 1024 - 1),
        ),
        (
            "messages_per_conn_per_sec",
            Box::new(|c| c.messages_per_conn_per_sec = 1_000_000_000),
            Box::new(|c| c.messages_per_conn_per_sec = 1_000_000_001),
        ),
        (
            "upgrades_per_ip_burst",
            Box::new(|c| c.upgrades_per_ip_burst = 1),
            Box::new(|c| c.upgrades_per_ip_burst = 0),
        ),
        (
            "connections_per_shard_max",
            Box::new(|c| c.connections_per_shard_max = 1),
            Box::new(|c| c.connections_per_shard_max = 0),
        ),
        (
            "handshake_timeout_ms",
            Box::new(|c| c.handshake_timeout_ms = 1),
            Box::new(|c| c.handshake_timeout_ms = 0),
        ),
    ];
    for (name, at, past) in cases {
        let mut config = Config::default();
        at(&mut config);
        config
            .validate()
            .unwrap_or_else(|e| panic!("{name} at its edge: {e}"));
        let mut config = Config::default();
        past(&mut config);
        let err = config.validate().expect_err(name).to_string();
        assert!(err.contains(name), "{name}: {err}");
    }
}
