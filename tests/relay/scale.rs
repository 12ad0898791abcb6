//! Many connections at once: the owner serializes joins, and nothing is
//! left behind when everyone leaves.

use crate::support::*;
use std::time::Duration;

#[test]
fn concurrent_joins_get_every_total_exactly_once() {
    let relay = relay();
    let channel = unique("race");
    let addr = relay.addr;
    let joiners: Vec<_> = (0..40)
        .map(|_| {
            let channel = channel.clone();
            std::thread::spawn(move || {
                let mut raw = Raw::upgrade(addr, &format!("/c/{channel}"));
                let own = raw.read_json();
                (own["total"].as_u64().unwrap(), raw)
            })
        })
        .collect();
    let mut results: Vec<_> = joiners.into_iter().map(|j| j.join().unwrap()).collect();
    let mut totals: Vec<u64> = results.iter().map(|(t, _)| *t).collect();
    totals.sort();
    assert_eq!(
        totals,
        (1..=40).collect::<Vec<_>>(),
        "the owner ordered the joins one by one"
    );
    results.clear();
}

#[test]
fn thousands_of_connections_leave_nothing_behind() {
    let relay = relay();
    let prefix = unique("many");
    let mut clients = Vec::new();
    for i in 0..2000 {
        let mut raw = Raw::upgrade(relay.addr, &format!("/c/{prefix}-{}?echo=true", i % 100));
        assert_eq!(raw.read_json()["type"], "join");
        clients.push(raw);
    }
    assert_eq!(relay.metric_sum("itty_connections_open"), 2000);
    assert_eq!(relay.metric_sum("itty_channels"), 100);
    // Everyone publishes once; with echo, each of the 20 members of a
    // channel receives the 20 messages of its channel.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&format!("{i}"));
    }
    for c in clients.iter_mut() {
        let mut messages = 0;
        while messages < 20 {
            let v = c.read_json();
            if v.get("message").is_some() {
                messages += 1;
            }
        }
    }
    drop(clients);
    relay.wait_until_empty(Duration::from_secs(10));
}
