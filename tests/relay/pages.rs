//! The relay's own pages over HTTP: `/` (landing), `/status` and
//! `/status.json` (served wherever `/metrics` is): where each is served,
//! what the JSON says (the same counters as `/metrics`), and that none of
//! them names a channel, uid, alias, address or payload, whatever the
//! request carries. The pages in a browser: `browser.rs`.

use crate::support::*;
use itty_relay::config::MetricsEndpoint;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use tungstenite::Message;

/// Where the privacy test's clients connect from (loopback answers to all
/// of 127/8); no page may ever show it.
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 91);

fn get_from(addr: SocketAddr, request: &str) -> (u16, String, String) {
    http_request(addr, request)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    get_from(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
}

fn status_json(relay: &Relay) -> Value {
    let (status, head, body) = get(relay.addr, "/status.json");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    assert!(head.contains("Cache-Control: no-store"), "{head}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// `/metrics` sample for the JSON's `family` and `name` on `shard`.
fn metrics_sample(text: &str, family: &str, name: &str, shard: usize) -> u64 {
    let (metric, label) = match family {
        "gauges" => (format!("itty_{name}"), None),
        "counters" => (format!("itty_{name}_total"), None),
        "closed" => ("itty_connections_closed_total".into(), Some("reason")),
        "dropped" => ("itty_messages_dropped_total".into(), Some("reason")),
        "upgrades_refused" => ("itty_upgrades_refused_total".into(), Some("reason")),
        "push_requests" => ("itty_push_requests_total".into(), Some("status")),
        other => panic!("unknown family {other}"),
    };
    let sample = match label {
        None => format!("{metric}{{shard=\"{shard}\"}} "),
        Some(label) => format!("{metric}{{shard=\"{shard}\",{label}=\"{name}\"}} "),
    };
    let line = text
        .lines()
        .find(|l| l.starts_with(&sample))
        .unwrap_or_else(|| panic!("/metrics has no {sample}"));
    line[sample.len()..].parse().unwrap()
}

/// After traffic of every kind, the JSON and `/metrics` agree on every
/// counter of every shard; only the requests' own traffic (HTTP requests,
/// bytes) moves in between, by the scrape that follows.
#[test]
fn status_json_has_every_counter_of_metrics_per_shard() {
    let relay = relay_with(|c| c.namespace = vec![namespace("pagesns", Some("jk"), Some("sk"))]);
    let channel = relay.channel_owned_by(itty_relay::id::ShardId(1), &unique("pages"));
    let mut a = relay.join(&format!("/c/{channel}?as=A"));
    let mut b = relay.join(&format!("/c/{channel}"));
    a.send("{\"n\":1}");
    b.recv_message();
    a.ws.send(Message::binary(vec![1, 2, 3])).unwrap(); // dropped: binary
    a.recv_event("error");
    assert_eq!(relay.upgrade("/c/pagesns:x?joinKey=wrong").0, 403);
    assert_eq!(relay.push("pagesns:x", Some("sk"), "{}").0, 200);
    assert_eq!(relay.push("pagesns:x", None, "{}").0, 401);
    b.close_and_wait();
    // b's leave reaches a after b's socket is gone (the owner announces
    // it): taken here, so no delivery lands between the two reads below.
    a.recv_event("leave");
    relay.wait_until(EVENT_TIMEOUT, "b's close counted", |r| {
        r.metric_sum("itty_connections_open") == 1
    });

    let json = status_json(&relay);
    let text = relay.metrics();
    assert_eq!(json["shards"], 2);
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert!(json["rss_bytes"].as_u64().unwrap() > 1 << 20);
    assert!(json["time_ms"].as_u64().unwrap() > 1_700_000_000_000);
    let mut compared = 0;
    for family in [
        "gauges",
        "counters",
        "closed",
        "dropped",
        "upgrades_refused",
        "push_requests",
    ] {
        for (name, values) in json[family].as_object().unwrap() {
            let values = values.as_array().unwrap();
            assert_eq!(values.len(), 2, "{family}.{name}: one value per shard");
            for (shard, value) in values.iter().enumerate() {
                let shown = value.as_u64().unwrap();
                let scraped = metrics_sample(&text, family, name, shard);
                if matches!(name.as_str(), "http_requests" | "bytes_in" | "bytes_out") {
                    // The scrape after the snapshot is one more request.
                    assert!(scraped >= shown, "{family}.{name}[{shard}]");
                } else {
                    assert_eq!(shown, scraped, "{family}.{name}[{shard}]");
                }
                compared += 1;
            }
        }
    }
    // Every sample of /metrics is in the JSON.
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(compared, samples);
    // And the traffic is there.
    let total = |family: &str, name: &str| -> u64 {
        json[family][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum()
    };
    assert!(total("counters", "messages_published") >= 1);
    assert_eq!(total("dropped", "binary"), 1);
    assert_eq!(total("upgrades_refused", "join_key"), 1);
    assert_eq!(total("push_requests", "200"), 1);
    assert_eq!(total("push_requests", "401"), 1);
    assert_eq!(total("closed", "client_closed"), 1);
    assert_eq!(total("gauges", "connections_open"), 1);
    assert_eq!(json["gauges"]["channels"][1], 1, "shard 1 owns the channel");
    assert_eq!(json["limits"]["message_bytes_max"], 102_400);
}

/// `/status` and its JSON follow `--metrics`: on the main listener, off,
/// or on the metrics listener only; the landing page stays on the main
/// listener and says where the status page is.
#[test]
fn status_pages_follow_the_metrics_switch() {
    let main = relay();
    for path in ["/", "/status", "/status.json"] {
        let (status, head, body) = get(main.addr, path);
        assert_eq!(status, 200, "{path}: {head}");
        assert!(!body.is_empty());
        assert!(head.contains("X-Content-Type-Options: nosniff"), "{head}");
    }
    let (_, head, body) = get(main.addr, "/status");
    assert!(
        head.contains("Content-Type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("Content-Security-Policy: default-src 'none';"),
        "{head}"
    );
    assert!(body.contains("fetch('/status.json'"));
    assert!(get(main.addr, "/").2.contains("href=\"/status\""));
    // HEAD: the head alone, with the length of the page.
    let (status, head, body) = get_from(
        main.addr,
        "HEAD /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(head.contains("Content-Length: "), "{head}");
    // Keep-alive: a page polls on one connection.
    let mut stream = TcpStream::connect(main.addr).unwrap();
    stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let poll = b"GET /status.json HTTP/1.1\r\nHost: t\r\n\r\n";
    stream.write_all(poll).unwrap();
    stream.write_all(poll).unwrap();
    stream
        .write_all(b"GET /version HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answers = String::new();
    stream.read_to_string(&mut answers).unwrap();
    assert_eq!(answers.matches("HTTP/1.1 200 OK").count(), 3, "{answers}");

    let off = relay_with(|c| c.metrics = MetricsEndpoint::Off);
    assert_eq!(get(off.addr, "/status").0, 404);
    assert_eq!(get(off.addr, "/status.json").0, 404);
    let (status, _, landing) = get(off.addr, "/");
    assert_eq!(status, 200);
    assert!(landing.contains("turned off") && !landing.contains("href=\"/status\""));

    let moved = relay_with(|c| c.metrics = MetricsEndpoint::Listen("127.0.0.1:0".parse().unwrap()));
    let metrics_addr = moved.server.as_ref().unwrap().metrics_addr().unwrap();
    assert_eq!(
        get(moved.addr, "/status").0,
        404,
        "not on the main listener"
    );
    assert_eq!(get(moved.addr, "/status.json").0, 404);
    assert_eq!(get(metrics_addr, "/status").0, 200);
    let (status, _, body) = get(metrics_addr, "/status.json");
    assert_eq!(status, 200);
    assert!(body.starts_with("{\"version\""), "{body}");
    assert_eq!(
        get(metrics_addr, "/").0,
        404,
        "no landing page beside metrics"
    );
    let (status, _, landing) = get(moved.addr, "/");
    assert_eq!(status, 200);
    assert!(landing.contains("separate metrics address"));
    assert!(
        !landing.contains(&metrics_addr.port().to_string()),
        "{landing}"
    );
}

/// A client on `path` from `CLIENT`, its own join read.
fn join_from(relay: &Relay, path: &str) -> Client {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((CLIENT, 0)).into()).unwrap();
    socket.connect(&relay.addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    crate::run_log::record_path(path);
    let (ws, _) =
        tungstenite::client::client(relay.url(path), Conn::Plain(stream)).expect("handshake");
    let mut client = Client {
        ws,
        uid: String::new(),
        join_event: Value::Null,
        shard: itty_relay::id::ShardId(0),
    };
    client.join_event = client.recv();
    client.uid = client.join_event["uid"].as_str().unwrap().to_owned();
    client
}

/// No page, JSON or header names a channel, uid, alias, key, client
/// address or payload: not with live channels and members (announced,
/// listed, pushing), and not when the request itself carries them in its
/// path, query, Host or X-Forwarded-For (nothing is echoed).
#[test]
fn pages_name_no_channel_uid_alias_address_or_payload() {
    let relay = relay_with(|c| {
        c.namespace = vec![namespace(
            "pv9ns",
            Some("pv9-join-key"),
            Some("pv9-send-key"),
        )];
        c.trusted_proxies = "127.0.0.0/8".parse().unwrap();
    });
    let channel = unique("pv9-room");
    let mut loud = join_from(
        &relay,
        &format!("/c/{channel}?as=pv9-alias-loud&announce=true"),
    );
    let mut shy = join_from(&relay, &format!("/c/{channel}?as=pv9-alias-shy&list=true"));
    let keyed = join_from(
        &relay,
        "/c/pv9ns:pv9-keyed?joinKey=pv9-join-key&sendKey=pv9-send-key",
    );
    loud.send("{\"pv9\":\"pv9-payload\"}");
    shy.recv_message();
    assert_eq!(
        relay
            .push("pv9ns:pv9-keyed", Some("pv9-send-key"), "\"pv9-pushed\"")
            .0,
        200
    );
    let secrets = [
        "pv9",
        "pv9-room",
        &channel,
        &loud.uid,
        &shy.uid,
        &keyed.uid,
        "127.0.0.91",
        "203.0.113.9",
        "evil.example",
    ];
    for path in ["/", "/status", "/status.json"] {
        for request in [
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
            format!("HEAD {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
            format!(
                "GET {path}?c={channel}&u={}&pv9 HTTP/1.1\r\nHost: evil.example\r\n\
                 X-Forwarded-For: 203.0.113.9\r\nReferer: http://evil.example/{channel}\r\n\
                 Cookie: pv9=1\r\nConnection: close\r\n\r\n",
                loud.uid
            ),
        ] {
            let (status, head, body) = relay.http(&request);
            assert_eq!(status, 200, "{request}");
            for secret in secrets {
                assert!(
                    !head.contains(secret),
                    "{path} head names {secret:?}: {head}"
                );
                assert!(!body.contains(secret), "{path} names {secret:?}: {body}");
            }
        }
    }
    // The members are still there and were counted: the pages were not empty.
    let json = status_json(&relay);
    let open: u64 = json["gauges"]["connections_open"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(open, 3);
}
