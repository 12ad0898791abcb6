//! Abuse limits (docs/PROTOCOL.md section 8) at their edges, and `/metrics`:
//! the connection rate, the message bucket with its warnings, kick and ban,
//! the connection cap, and counters that move without naming anything.

use crate::support::*;
use itty_relay::config::MetricsEndpoint;
use std::time::Instant;

fn retry_after(head: &str) -> u64 {
    head.lines()
        .find_map(|l| l.strip_prefix("Retry-After: "))
        .unwrap_or_else(|| panic!("no Retry-After: {head}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn upgrades_over_the_per_ip_rate_get_429_with_retry_after() {
    let relay = relay_with(|c| {
        c.upgrades_per_ip_per_sec = 1;
        c.upgrades_per_ip_burst = 3;
    });
    let started = Instant::now();
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..20 {
        let (status, head, raw) = relay.upgrade(&format!("/c/{}", unique("rate")));
        match status {
            101 => open.push(raw),
            429 => refused.push(head),
            other => panic!("unexpected {other}: {head}"),
        }
    }
    // Per shard: the burst, plus what refilled while the test ran.
    let refill = started.elapsed().as_secs() as usize + 1;
    assert!(
        open.len() >= 3 && open.len() <= relay.shards * (3 + refill),
        "{} upgrades passed",
        open.len()
    );
    assert!(!refused.is_empty());
    for head in &refused {
        assert!(retry_after(head) >= 1);
        assert!(
            head.contains("too many connections from this address"),
            "{head}"
        );
    }
    assert_eq!(
        relay.metric_labelled("upgrades_refused_total", "reason", "rate_limited"),
        refused.len() as u64
    );
}

#[test]
fn a_flood_gets_what_the_bucket_allows_then_warnings_then_the_kick_and_the_ban() {
    let relay = relay_with(|c| {
        c.messages_per_conn_per_sec = 1;
        c.messages_per_conn_burst = 5;
        c.upgrades_per_ip_per_sec = 1000;
        c.upgrades_per_ip_burst = 1000;
    });
    let channel = unique("flood");
    let mut member = relay.join(&format!("/c/{channel}"));
    let mut flooder = relay.join(&format!("/c/{channel}"));
    let flooder_shard = flooder.shard;
    // Burst 5, then 3 warnings, then the kick: 9 messages in one go.
    for i in 0..9 {
        flooder.send(&i.to_string());
    }
    for i in 0..5 {
        assert_eq!(member.recv_message()["message"], i, "the bucket's burst");
    }
    for n in 1..=3 {
        let warning = flooder.recv_event("error");
        assert_eq!(
            warning["message"],
            format!("rate limit exceeded (warning {n} of 3)")
        );
    }
    assert_eq!(
        flooder.recv_close(),
        (1008, "rate limit exceeded".to_owned())
    );
    let next = member.recv();
    assert_eq!(
        next["type"], "leave",
        "nothing but the burst reached the member: {next}"
    );

    // Banned on the shard that kicked it: upgrades landing there get 429.
    let mut banned = None;
    for _ in 0..64 {
        let (status, head, _) = relay.upgrade(&format!("/c/{}", unique("after-ban")));
        if status == 429 {
            banned = Some(head);
            break;
        }
        assert_eq!(status, 101, "{head}");
    }
    let head = banned.expect("an upgrade landed on the banning shard in 64 tries");
    assert!(head.contains("banned"), "{head}");
    let retry = retry_after(&head);
    assert!((55..=60).contains(&retry), "Retry-After {retry}");
    let kicks = relay.metric("kicks_total", flooder_shard.index());
    assert_eq!(kicks, 1);
    assert_eq!(relay.metric_sum("bans_total"), 1);
    assert_eq!(relay.metric_sum("rate_limit_warnings_total"), 3);
    assert_eq!(
        relay.metric_labelled("messages_dropped_total", "reason", "rate_limited"),
        4
    );
    drop(flooder);
    relay.wait_until(EVENT_TIMEOUT, "the kick was not counted as a close", |r| {
        r.metric_labelled("connections_closed_total", "reason", "rate_limited") == 1
    });
}

#[test]
fn each_shard_serves_at_most_its_connection_cap() {
    let relay = relay_with(|c| c.connections_per_shard_max = 2);
    let mut open = Vec::new();
    let mut full = None;
    for _ in 0..40 {
        let (status, head, raw) = relay.upgrade(&format!("/c/{}", unique("cap")));
        match status {
            101 => open.push(raw),
            503 => {
                full = Some(head);
                if open.len() == 4 {
                    break;
                }
            }
            other => panic!("{other}: {head}"),
        }
    }
    assert!(
        open.len() <= 4,
        "{} open with a cap of 2 per shard",
        open.len()
    );
    let head = full.expect("a 503 once a shard was full");
    assert!(head.contains("server is full"), "{head}");
    assert!(retry_after(&head) >= 1);
}

#[test]
fn metrics_move_with_traffic_and_name_no_channel_uid_or_address() {
    let relay = relay_with(|c| c.namespace = vec![namespace("mx", None, Some("k"))]);
    let channel = "mx:very-secret-channel-name";
    let before = relay.metrics();
    let mut a = relay.join_on(itty_relay::id::ShardId(0), &format!("/c/{channel}"));
    let mut b = relay.join_on(
        itty_relay::id::ShardId(1),
        &format!("/c/{channel}?sendKey=k"),
    );
    b.send("\"payload-text-xyz\"");
    assert_eq!(a.recv_message()["message"], "payload-text-xyz");
    a.send("\"not allowed\"");
    a.recv_event("error");
    assert_eq!(relay.push(channel, Some("k"), "\"pushed\"").0, 200);
    assert_eq!(a.recv_message()["message"], "pushed");
    let text = relay.metrics();
    for name in [
        "messages_published_total",
        "deliveries_total",
        "bytes_in_total",
        "bytes_out_total",
        "connections_accepted_total",
        "error_events_total",
    ] {
        let sum = |t: &str| {
            (0..relay.shards)
                .map(|s| metric_in(t, name, s))
                .sum::<u64>()
        };
        assert!(sum(&text) > sum(&before), "{name} did not move");
    }
    assert!(
        relay.metric_sum("forwards_total") > 0,
        "one of the two crossed shards"
    );
    assert_eq!(
        relay.metric_labelled("push_requests_total", "status", "200"),
        1
    );
    for secret in [
        channel,
        "very-secret",
        &a.uid,
        &b.uid,
        "127.0.0.1",
        "payload-text",
    ] {
        assert!(!text.contains(secret), "/metrics contains {secret:?}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("itty_"), "{line}");
        assert!(
            line.contains("{shard=\""),
            "every sample is per shard: {line}"
        );
    }
}

#[test]
fn metrics_can_be_turned_off_or_moved_to_their_own_listener() {
    let off = relay_with(|c| c.metrics = MetricsEndpoint::Off);
    assert_eq!(off.get("/metrics").0, 404);
    assert_eq!(off.get("/health").0, 200);

    let moved = relay_with(|c| {
        c.metrics = MetricsEndpoint::Listen("127.0.0.1:0".parse().unwrap());
    });
    let addr = moved.server.as_ref().unwrap().metrics_addr().unwrap();
    assert_eq!(moved.get("/metrics").0, 404, "not on the main listener");
    let get = |path: &str| {
        http_request(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        )
    };
    let (status, _, body) = get("/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("itty_connections_open"), "{body}");
    assert_eq!(get("/health").0, 200);
    assert_eq!(
        get("/c/room").0,
        404,
        "only metrics, health and version there"
    );
    assert_eq!(get("/push/x").0, 404);
}

#[test]
fn behind_a_trusted_proxy_limits_apply_to_the_forwarded_client_address() {
    let relay = relay_with(|c| {
        c.upgrades_per_ip_per_sec = 1;
        c.upgrades_per_ip_burst = 1;
        c.trusted_proxies = "127.0.0.1".parse().unwrap();
    });
    let upgrade_as = |client: &str| {
        let mut raw = Raw::connect(relay.addr);
        let request = Raw::handshake_request(&format!("/c/{}", unique("proxied"))).replace(
            "Host: t\r\n",
            &format!("Host: t\r\nX-Forwarded-For: {client}, 127.0.0.1\r\n"),
        );
        use std::io::Write;
        raw.stream.write_all(request.as_bytes()).unwrap();
        let head = raw.read_head();
        (head.split(' ').nth(1).unwrap().parse::<u16>().unwrap(), raw)
    };
    // Ten clients behind the proxy: each has its own bucket.
    let distinct: Vec<_> = (1..=10)
        .map(|i| upgrade_as(&format!("203.0.113.{i}")))
        .collect();
    assert!(distinct.iter().all(|(s, _)| *s == 101));
    // One client ten times: one per shard passes, plus what refills.
    let started = Instant::now();
    let same: Vec<u16> = (0..10).map(|_| upgrade_as("198.51.100.7").0).collect();
    let passed = same.iter().filter(|&&s| s == 101).count();
    let refill = started.elapsed().as_secs() as usize + 1;
    assert!(passed <= relay.shards * (1 + refill), "{same:?}");
    assert!(same.contains(&429), "{same:?}");
}
