//! Nothing lost, duplicated or reordered under load: every message carries
//! its publisher's id and a sequence number, and every reader accounts for
//! every one. The only loss allowed is a reader that stopped reading and
//! was cut off (1008), reported apart.

use crate::support::*;
use itty_relay::id::ShardId;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PUBLISHERS_PER_SHARD: usize = 2;
const READERS_PER_SHARD: usize = 3;
const MESSAGES_PER_PUBLISHER: u64 = 10_000;
/// Each publisher's pace: 4 publishers make 10,000 messages a second, each
/// about 200 bytes, so the stalled reader passes its bound within two
/// seconds while the others keep up.
const MESSAGES_PER_SEC: u64 = 2_500;
/// The relay's outgoing queue bound here. The default 1 MiB is half a
/// second of this stream: on a two-cpu box running the rest of the suite
/// beside it, the test's own readers (a debug build parsing every frame)
/// were sometimes starved that long and cut as slow consumers, which is the
/// bound doing its job, not a loss. 4 MiB tolerates two seconds of lag; the
/// stalled reader still passes it well before the end (10 MB each).
const QUEUE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// What one reader saw of every publisher's sequence.
#[derive(Default)]
struct Tally {
    received: u64,
    duplicated: u64,
    reordered: u64,
    /// Per publisher: the next sequence number expected, and every one seen.
    next: BTreeMap<u64, u64>,
    seen: BTreeMap<u64, Vec<bool>>,
}

impl Tally {
    fn record(&mut self, publisher: u64, seq: u64) {
        self.received += 1;
        let seen = self
            .seen
            .entry(publisher)
            .or_insert_with(|| vec![false; MESSAGES_PER_PUBLISHER as usize]);
        if std::mem::replace(&mut seen[seq as usize], true) {
            self.duplicated += 1;
        }
        let next = self.next.entry(publisher).or_insert(0);
        if seq < *next {
            self.reordered += 1;
        }
        *next = (*next).max(seq + 1);
    }

    /// Sequences missing from publishers whose later messages arrived: for
    /// the stalled reader, the messages it lost before its cut.
    fn gaps(&self) -> u64 {
        self.seen
            .iter()
            .map(|(p, seen)| {
                seen[..self.next[p] as usize]
                    .iter()
                    .filter(|s| !**s)
                    .count() as u64
            })
            .sum()
    }
}

fn record_frame(tally: &mut Tally, v: &serde_json::Value) {
    if let Some(m) = v.get("message") {
        tally.record(m["p"].as_u64().unwrap(), m["s"].as_u64().unwrap());
    }
}

#[test]
fn under_load_every_reader_gets_every_message_once_and_in_order() {
    let relay = relay_with(|c| c.outgoing_queue_bytes_max = QUEUE_BYTES_MAX);
    let channel = unique("ledger");
    let path = format!("/c/{channel}");
    let publishers = PUBLISHERS_PER_SHARD * 2;
    let expected_each = publishers as u64 * MESSAGES_PER_PUBLISHER;

    // Readers and publishers on both shards (the channel's owner is one of
    // them, so half of each crosses a forward queue).
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    for shard in [ShardId(0), ShardId(1)] {
        for _ in 0..READERS_PER_SHARD {
            readers.push(relay.join_on(shard, &path));
        }
        for _ in 0..PUBLISHERS_PER_SHARD {
            senders.push(relay.join_on(shard, &path));
        }
    }
    // A reader that stops reading: cut off once QUEUE_BYTES_MAX is queued.
    let mut stalled = stalled_member(relay.addr, &path);

    let readers: Vec<_> = readers
        .into_iter()
        .map(|mut reader| {
            std::thread::spawn(move || {
                let mut tally = Tally::default();
                // Until every message came, or nothing came for 5 s.
                while tally.received < expected_each {
                    match reader.ws.read() {
                        Ok(tungstenite::Message::Text(text)) => {
                            record_frame(&mut tally, &serde_json::from_str(&text).unwrap())
                        }
                        Ok(_) => {}
                        Err(e) => {
                            eprintln!("reader {}: {e}", reader.uid);
                            break;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let started = Instant::now();
    let senders: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(p, sender)| {
            // A publisher is a member too: a second thread drains what it
            // receives, or it would be cut off as a slow consumer itself.
            let mut writer = sender.ws.get_ref().try_clone().unwrap();
            let mut drain = sender.ws.get_ref().try_clone().unwrap();
            std::thread::spawn(move || {
                let mut sink = [0u8; 65536];
                while matches!(std::io::Read::read(&mut drain, &mut sink), Ok(n) if n > 0) {}
            });
            std::thread::spawn(move || {
                let pad = "x".repeat(150);
                let started = Instant::now();
                for s in 0..MESSAGES_PER_PUBLISHER {
                    let due = started + Duration::from_micros(s * 1_000_000 / MESSAGES_PER_SEC);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let text = format!("{{\"p\":{p},\"s\":{s},\"pad\":\"{pad}\"}}");
                    let frame = Raw::frame(true, 1, text.as_bytes(), Some([7, 1, 2, 3]));
                    std::io::Write::write_all(&mut writer, &frame).unwrap();
                }
                sender
            })
        })
        .collect();
    let _senders: Vec<Client> = senders.into_iter().map(|s| s.join().unwrap()).collect();
    let tallies: Vec<Tally> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let took = started.elapsed();

    // The stalled reader: what it holds, up to its close frame.
    let mut cut = Tally::default();
    let code = loop {
        let (opcode, payload) = stalled.read_frame();
        match opcode {
            8 => break u16::from_be_bytes([payload[0], payload[1]]),
            1 => record_frame(&mut cut, &serde_json::from_slice(&payload).unwrap()),
            _ => {}
        }
    };

    let expected = expected_each * tallies.len() as u64;
    let received: u64 = tallies.iter().map(|t| t.received).sum();
    let duplicated: u64 = tallies.iter().map(|t| t.duplicated).sum();
    let reordered: u64 = tallies.iter().map(|t| t.reordered).sum();
    eprintln!(
        "no-loss: {publishers} publishers x {MESSAGES_PER_PUBLISHER} messages, {} readers over \
         2 shards, {:.2} s: expected {expected}, received {received}, lost {}, duplicated \
         {duplicated}, reordered {reordered}; apart: the stalled reader was cut with {code} \
         after {} of {expected_each} ({} missing before its last, {} duplicated, {} reordered)",
        tallies.len(),
        took.as_secs_f64(),
        expected - received.min(expected),
        cut.received,
        cut.gaps(),
        cut.duplicated,
        cut.reordered,
    );
    assert_eq!(
        (received, duplicated, reordered),
        (expected, 0, 0),
        "every reader got every message once, in each publisher's order"
    );
    assert!(tallies.iter().all(|t| t.gaps() == 0));
    assert_eq!(
        code, 1008,
        "the stalled reader was cut off as a slow consumer"
    );
    assert!(cut.received < expected_each, "it was cut before the end");
    assert_eq!(
        (cut.gaps(), cut.duplicated, cut.reordered),
        (0, 0, 0),
        "what it did get is each publisher's prefix, once and in order"
    );
}
