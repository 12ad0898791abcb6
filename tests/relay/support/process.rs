//! The relay binary as its own process, for signals, exit codes, RSS and
//! the log; and this process's open-files limit.

use super::{Relay, EVENT_TIMEOUT};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Raises this process's soft open-files limit to the hard one; returns it.
pub fn raise_nofile_to_hard() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_max
}

/// The `itty-relay` binary.
pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_itty-relay"))
}

/// The relay binary as its own process (two shards, unpinned, an ephemeral
/// port on 127.0.0.1, log level `info` unless `args` say otherwise): for
/// signals, exit codes, RSS and the log. Killed when dropped.
pub struct RelayProcess {
    pub child: Child,
    pub relay: Relay,
    /// Every line it writes, stdout and stderr, in arrival order per stream.
    pub log: Receiver<String>,
}

pub fn spawn_relay(args: &[&str]) -> RelayProcess {
    let mut child = binary()
        .args(["--listen", "127.0.0.1:0", "--shards", "2", "--pin", "false"])
        .args(["--io-memory-bytes", "65536"])
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, log) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let forward = |stream: Box<dyn Read + Send>, tx: std::sync::mpsc::Sender<String>| {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                crate::run_log::record_child_line(&line);
                if tx.send(line).is_err() {
                    return;
                }
            }
        })
    };
    forward(Box::new(stdout), tx.clone());
    forward(Box::new(stderr), tx);
    let addr = loop {
        let line = log
            .recv_timeout(Duration::from_secs(30))
            .expect("the relay logs its address");
        if let Some(rest) = line.split("local_addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let relay = Relay {
        server: None,
        addr,
        shards: 2,
    };
    RelayProcess { child, relay, log }
}

impl RelayProcess {
    pub fn signal(&self, signal: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .log
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The rest of the log once the process has exited.
    pub fn rest_of_log(&self) -> Vec<String> {
        self.log.iter().collect()
    }

    /// How many times its shards' threads have gone to sleep so far: the
    /// sum of `voluntary_ctxt_switches` over the threads named `shard-*`.
    pub fn shard_sleeps(&self) -> u64 {
        let tasks = format!("/proc/{}/task", self.child.id());
        let mut sleeps = 0;
        for task in std::fs::read_dir(tasks).unwrap().map_while(Result::ok) {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with("shard-") {
                continue;
            }
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            sleeps += status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        sleeps
    }

    /// Resident memory in KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
