//! Steady state across nodes: every message arrives once, in each
//! sender's order, on every node; a slow reader on one node costs the
//! others nothing.

use crate::harness::{node_metric, TestCluster};
use crate::support::*;
use serde_json::json;
use std::time::{Duration, Instant};

const PER_PUBLISHER: u64 = 2_000;

#[test]
fn a_ledger_across_three_nodes_loses_nothing_duplicates_nothing_and_keeps_each_senders_order() {
    let c = TestCluster::start(3);
    let ch = unique("ledger");
    let path = format!("/c/{ch}");
    let mut readers: Vec<Client> = (0..3).map(|i| c.node(i).join(&path)).collect();
    let mut publishers: Vec<Client> = (0..3).map(|i| c.node(i).join(&path)).collect();
    let members = readers.len() + publishers.len();
    // Every reader has seen every join before the ledger starts.
    for (i, r) in readers.iter_mut().enumerate() {
        let own = r.join_event["total"].as_u64().unwrap() as usize;
        for _ in own..members {
            r.recv_event("join");
        }
        let _ = i;
    }
    let started = Instant::now();
    let senders: Vec<_> = publishers
        .drain(..)
        .enumerate()
        .map(|(p, mut client)| {
            std::thread::spawn(move || {
                for seq in 0..PER_PUBLISHER {
                    client.send_json(&json!({"p": p, "s": seq}));
                }
                client
            })
        })
        .collect();
    let receivers: Vec<_> = readers
        .into_iter()
        .map(|mut r| {
            std::thread::spawn(move || {
                let mut next = [0u64; 3];
                let (mut got, mut reordered) = (0u64, 0u64);
                while got < 3 * PER_PUBLISHER {
                    let m = r.recv_message();
                    let (p, s) = (
                        m["message"]["p"].as_u64().unwrap() as usize,
                        m["message"]["s"].as_u64().unwrap(),
                    );
                    if s != next[p] {
                        reordered += 1;
                    }
                    next[p] = s + 1;
                    got += 1;
                }
                (got, reordered, next)
            })
        })
        .collect();
    let _publishers: Vec<Client> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    for (node, r) in receivers.into_iter().enumerate() {
        let (got, reordered, next) = r.join().unwrap();
        assert_eq!(got, 3 * PER_PUBLISHER, "node {node}");
        assert_eq!(reordered, 0, "node {node}: out of order or lost");
        assert_eq!(next, [PER_PUBLISHER; 3], "node {node}");
    }
    eprintln!(
        "ledger: 3 publishers x {PER_PUBLISHER} messages to readers on 3 nodes: 0 lost, 0 duplicated, 0 reordered, {:?}",
        started.elapsed()
    );
}

#[test]
fn a_slow_reader_on_one_node_is_cut_alone_and_costs_the_others_nothing() {
    let c = TestCluster::start(2);
    let ch = unique("slow");
    let path = format!("/c/{ch}");
    let mut fast_here = c.node(1).join(&path);
    let mut fast_there = c.node(0).join(&path);
    let _stalled = stalled_member(c.node(1).addr, &path);
    let mut publisher = c.node(0).join(&path);
    for r in [&mut fast_here, &mut fast_there] {
        let own = r.join_event["total"].as_u64().unwrap();
        for _ in own..4 {
            r.recv_event("join");
        }
    }
    // Both fast readers read at once, each in its own thread.
    let readers: Vec<_> = [fast_here, fast_there]
        .into_iter()
        .map(|mut r| {
            std::thread::spawn(move || {
                let mut seq = 0;
                while seq < 400 {
                    let m = r.recv();
                    if m["type"] == "leave" {
                        continue; // the stalled reader, cut
                    }
                    assert_eq!(m["message"]["s"], seq);
                    seq += 1;
                }
            })
        })
        .collect();
    let payload = "x".repeat(16 << 10);
    // ~6.5 MB: past the stalled reader's 1 MiB bound and any socket buffer.
    let n = 400u64;
    for seq in 0..n {
        publisher.send_json(&json!({"s": seq, "pad": payload}));
        // Paced (3 MB/s), so only the reader that stopped falls behind.
        std::thread::sleep(Duration::from_millis(5));
    }
    for r in readers {
        r.join()
            .expect("every fast reader got every message, in order");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while c
        .node(1)
        .metric_labelled("connections_closed_total", "reason", "slow_consumer")
        == 0
    {
        assert!(Instant::now() < deadline, "the stalled reader was not cut");
        std::thread::sleep(Duration::from_millis(20));
    }
    for node in &c.nodes {
        assert_eq!(node_metric(node, "itty_backplane_reconnects_total"), 0);
        assert_eq!(node_metric(node, "itty_backplane_up"), 1);
    }
}
