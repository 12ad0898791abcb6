//! The open-loop schedule and the payload: when each publisher's next
//! message is due, and the bytes that carry its stamp. Pure arithmetic and
//! formatting (no clock, no I/O, no executor), so both publishers (WebSocket
//! and HTTP push) share it and its tests need no sockets.

use super::config::PayloadFill;

/// The open-loop schedule of one publisher: message k of publisher p (of
/// P) is due at `t0 + (k*P + p) / rate`, so P publishers together send
/// `rate` messages a second, evenly spaced. A publisher that is behind sends
/// late (latency still counts from the due time); past `give_up` (half the
/// grace after the end) it stops and counts the rest as unsent.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub t0: u64,
    pub end: u64,
    pub give_up: u64,
    pub publisher: u64,
    pub publishers: u64,
    pub ns_per_msg: f64,
    /// The next message's sequence number.
    pub k: u64,
}

/// What a publisher does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    /// Send message `k` due at this time (sleep until then if early).
    At(u64),
    /// Every message due before the end went out.
    Done,
    /// Behind past `give_up`: these many were never sent.
    GiveUp(u64),
}

/// The run's timing, as every publisher's schedule sees it (ns, and
/// messages per second over all publishers).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub rate: f64,
    pub duration_ns: u64,
    pub grace_ns: u64,
}

impl Schedule {
    /// Publisher `publisher` of `publishers`, publishing from `t0`.
    pub fn new(timing: Timing, t0: u64, publisher: u32, publishers: usize) -> Schedule {
        let end = t0 + timing.duration_ns;
        Schedule {
            t0,
            end,
            give_up: end + timing.grace_ns / 2,
            publisher: publisher as u64,
            publishers: publishers as u64,
            ns_per_msg: 1e9 / timing.rate,
            k: 0,
        }
    }

    pub fn at(&self, k: u64) -> u64 {
        self.t0 + ((k * self.publishers + self.publisher) as f64 * self.ns_per_msg) as u64
    }

    pub fn next(&self, now: u64) -> Due {
        let at = self.at(self.k);
        if at >= self.end {
            return Due::Done;
        }
        if now >= self.give_up {
            let mut unsent = 0;
            while self.at(self.k + unsent) < self.end {
                unsent += 1;
            }
            return Due::GiveUp(unsent);
        }
        Due::At(at)
    }
}

/// Builds `[<publisher>,<seq>,<scheduled_ns>,"<padding>"]` padded to the
/// target size.
pub struct PayloadBuilder {
    pub target: usize,
    pub payload: Vec<u8>,
    /// `--payload-fill json`: records to fill with, comma-separated, each
    /// ending at an offset in `record_ends` (empty: pad with x's).
    records: Vec<u8>,
    record_ends: Vec<usize>,
}

/// Words the `json` fill draws from.
const WORDS: [&str; 12] = [
    "sensor", "north", "pump", "valve", "ok", "warn", "idle", "east", "boiler", "fan", "west",
    "meter",
];

impl PayloadBuilder {
    pub fn new(target: usize, fill: PayloadFill) -> PayloadBuilder {
        let mut b = PayloadBuilder {
            target,
            payload: Vec::with_capacity(target + 64),
            records: Vec::new(),
            record_ends: Vec::new(),
        };
        if fill == PayloadFill::Json {
            b.make_records();
        }
        b
    }

    /// Records of varied numbers and words, as a dashboard would publish
    /// (`{"id":17,"name":"pump-3","value":21.375,"state":"ok","t":...}`),
    /// from a fixed-seed generator: enough to fill `target`.
    fn make_records(&mut self) {
        use std::io::Write;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut id = 0;
        while self.records.len() < self.target {
            id += 1;
            let (a, b, c) = (next(), next(), next());
            let _ = write!(
                self.records,
                "{}{{\"id\":{id},\"name\":\"{}-{}\",\"value\":{}.{:03},\"state\":\"{}\",\"t\":{}}}",
                if self.records.is_empty() { "" } else { "," },
                WORDS[(a % 12) as usize],
                a % 97,
                b % 1000,
                c % 1000,
                WORDS[(c >> 20) as usize % 12],
                1_764_600_000 + (b >> 32) % 100_000,
            );
            self.record_ends.push(self.records.len());
        }
    }

    pub fn payload(&mut self, publisher: u64, seq: u64, scheduled_ns: u64) -> &[u8] {
        use std::io::Write;
        self.payload.clear();
        let _ = write!(self.payload, "[{publisher},{seq},{scheduled_ns},");
        // Whole records while they fit (with room for `,""]`), then x's.
        let room = self.target.saturating_sub(self.payload.len() + 4);
        let fits = self.record_ends.partition_point(|&end| end <= room);
        if fits > 0 {
            let end = self.record_ends[fits - 1];
            self.payload.extend_from_slice(&self.records[..end]);
            self.payload.push(b',');
        }
        self.payload.push(b'"');
        let pad = self.target.saturating_sub(self.payload.len() + 2);
        self.payload.resize(self.payload.len() + pad, b'x');
        self.payload.extend_from_slice(b"\"]");
        &self.payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// One second, in ns (as `state::NS`; this module imports nothing).
    const NS: u64 = 1_000_000_000;

    #[test]
    fn payloads_have_the_asked_size_and_a_stamp() {
        let mut b = PayloadBuilder::new(64, PayloadFill::X);
        let body = b.payload(3, 12345, 987_654_321_000).to_vec();
        assert_eq!(body.len(), 64);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v[0], 3);
        assert_eq!(v[1], 12345);
        assert_eq!(v[2], 987_654_321_000u64);
        // As the relay would embed it.
        let mut env = br#"{"id":"x1","uid":"abcdef","date":1,"message":"#.to_vec();
        env.extend_from_slice(&body);
        env.push(b'}');
        assert_eq!(
            crate::proto::find_stamp(&env, 64),
            Some((3, 12345, 987_654_321_000))
        );
    }

    #[test]
    fn json_fill_is_valid_json_of_the_asked_size_with_the_stamp() {
        for target in [64, 130, 1024, 4000] {
            let mut b = PayloadBuilder::new(target, PayloadFill::Json);
            let body = b.payload(7, 99, 123_456_789).to_vec();
            assert_eq!(body.len(), target, "{}", String::from_utf8_lossy(&body));
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!((v[0].as_u64(), v[1].as_u64()), (Some(7), Some(99)));
            if target >= 1024 {
                assert!(v[3]["value"].is_number(), "{v}");
            }
            assert_eq!(
                crate::proto::stamp_at_start(&body),
                Some((7, 99, 123_456_789))
            );
        }
    }

    #[test]
    fn tiny_payloads_stay_valid_json() {
        let mut b = PayloadBuilder::new(1, PayloadFill::X);
        assert_eq!(b.payload(0, 0, 5), br#"[0,0,5,""]"#);
    }

    fn schedule(publisher: u64, publishers: u64, rate: f64) -> Schedule {
        Schedule {
            t0: 1_000,
            end: 1_000 + NS,
            give_up: 1_000 + NS + NS / 2,
            publisher,
            publishers,
            ns_per_msg: 1e9 / rate,
            k: 0,
        }
    }

    #[test]
    fn publishers_interleave_evenly() {
        // 4 publishers at 400 msg/s in all: one message every 2.5 ms overall.
        let times: Vec<u64> = (0..4).map(|p| schedule(p, 4, 400.0).at(1)).collect();
        assert_eq!(
            times,
            vec![1_000 + 10_000_000, 12_501_000, 15_001_000, 17_501_000]
        );
        // 100 messages each within the second.
        let mut s = schedule(3, 4, 400.0);
        let mut sent = 0;
        while let Due::At(_) = s.next(0) {
            s.k += 1;
            sent += 1;
        }
        assert_eq!(sent, 100);
        assert_eq!(s.next(0), Due::Done);
    }

    #[test]
    fn a_publisher_far_behind_gives_up_and_counts_the_rest() {
        let mut s = schedule(0, 1, 10.0);
        s.k = 4;
        assert_eq!(s.next(s.give_up), Due::GiveUp(6));
        assert_eq!(s.next(s.give_up - 1), Due::At(1_000 + 400_000_000));
    }

    #[test]
    fn new_spreads_the_grace_and_the_rate() {
        let timing = Timing {
            rate: 400.0,
            duration_ns: NS,
            grace_ns: NS,
        };
        let s = Schedule::new(timing, 1_000, 3, 4);
        assert_eq!((s.end, s.give_up), (1_000 + NS, 1_000 + NS + NS / 2));
        assert_eq!(s.at(1), schedule(3, 4, 400.0).at(1));
    }
}
