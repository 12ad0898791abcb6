//! The open-loop schedule and the payload: when each publisher's next
//! message is due, and the bytes that carry its stamp. Pure arithmetic and
//! formatting (no clock, no I/O, no executor), so both publishers (WebSocket
//! and HTTP push) share it and its tests need no sockets.

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
}

impl PayloadBuilder {
    pub fn new(target: usize) -> PayloadBuilder {
        PayloadBuilder {
            target,
            payload: Vec::with_capacity(target + 64),
        }
    }

    pub fn payload(&mut self, publisher: u64, seq: u64, scheduled_ns: u64) -> &[u8] {
        use std::io::Write;
        self.payload.clear();
        let _ = write!(self.payload, "[{publisher},{seq},{scheduled_ns},\"");
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
        let mut b = PayloadBuilder::new(64);
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
    fn tiny_payloads_stay_valid_json() {
        let mut b = PayloadBuilder::new(1);
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
