//! The log of a whole test run, for the check that the relay logs no
//! channel name, uid, key or payload at its default level (docs/PROTOCOL.md
//! section 8; `security::the_log_of_the_whole_test_run_names_nothing`).
//!
//! Once per test process, the first relay booted installs a tracing
//! subscriber at the binary's default filter (`Config::default().log`,
//! RUST_LOG ignored) that writes every line to `<dir>/<pid>.log`; the lines
//! of relay binaries started by `spawn_relay` (at their default level
//! unless a test says otherwise) are appended there too. The
//! support helpers record what tests hand the relay and what it hands back
//! (channel names and query values from paths, payloads sent, uids received)
//! in `<dir>/<pid>.ids`. After the whole suite, `.ci/run` runs the ignored
//! check, which greps every log against every recorded identifier.
//!
//! Identifiers shorter than [`TEXT_BYTES_MIN`] bytes or made of digits only
//! are not recorded: "a", "room" or "42" would match innocent log text.
//! Uids are matched as whole words. The client address cannot be checked
//! here (in-process tests share 127.0.0.1 with the listen address); the
//! binary test in `security.rs` does that from 127.0.0.77.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// Shortest text recorded as an identifier.
pub const TEXT_BYTES_MIN: usize = 6;

/// Longest prefix of a text recorded: a leak shows its start.
const TEXT_BYTES_RECORDED: usize = 64;

/// Where each test process writes its log and identifiers.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("relay-run-log")
}

/// What an identifier is, as written at the start of its line in `.ids`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Matched as a whole word.
    Uid,
    /// Matched anywhere in a line.
    Text,
}

struct Recorder {
    seen: HashSet<(Kind, String)>,
    /// `<pid>.ids`.
    file: File,
    /// `<pid>.log`, for the lines of relay binaries the tests start.
    children: File,
}

fn recorder() -> &'static Mutex<Recorder> {
    static RECORDER: OnceLock<Mutex<Recorder>> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let dir = dir();
        std::fs::create_dir_all(&dir).unwrap();
        let open = |ext: &str| {
            File::options()
                .create(true)
                .append(true)
                .open(dir.join(format!("{}.{ext}", std::process::id())))
                .unwrap()
        };
        let filter = tracing_subscriber::EnvFilter::new(itty_relay::Config::default().log);
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_target(false)
            .with_writer(Mutex::new(open("log")))
            .try_init()
            .expect("no other tracing subscriber in the test process");
        Mutex::new(Recorder {
            seen: HashSet::new(),
            file: open("ids"),
            children: open("log"),
        })
    })
}

/// Starts capturing this process's relay log (idempotent).
pub fn capture() {
    recorder();
}

/// Adds a line a relay binary started by a test logged (`spawn_relay`).
pub fn record_child_line(line: &str) {
    let mut recorder = recorder().lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(recorder.children, "{line}");
}

/// Records one identifier, if it is distinctive enough to grep for.
pub fn record(kind: Kind, text: &str) {
    let mut end = text.len().min(TEXT_BYTES_RECORDED);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text[..end];
    if text.len() < TEXT_BYTES_MIN
        || text.bytes().all(|b| b.is_ascii_digit())
        || text.chars().any(char::is_control)
    {
        return;
    }
    let mut recorder = recorder().lock().unwrap_or_else(|e| e.into_inner());
    if recorder.seen.insert((kind, text.to_owned())) {
        let _ = writeln!(recorder.file, "{kind:?} {text}");
    }
}

/// Records the channel and the alias and key values in a request path
/// (`/c/<channel>?as=..`, `/r/..`, `/push/..`), raw and decoded.
pub fn record_path(path: &str) {
    use itty_relay::http::request::percent_decode;
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let decoded = |raw: &str, form| {
        percent_decode(raw, form).map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    if let Some(channel) = ["/c/", "/r/", "/push/"]
        .iter()
        .find_map(|p| path.strip_prefix(p))
    {
        record(Kind::Text, channel);
        if let Some(channel) = decoded(channel, false) {
            record(Kind::Text, &channel);
        }
    }
    for pair in query.split('&') {
        if let Some((key, value)) = pair.split_once('=') {
            if ["as", "alias", "joinKey", "sendKey"].contains(&key) {
                record(Kind::Text, value);
                if let Some(value) = decoded(value, true) {
                    record(Kind::Text, &value);
                }
            }
        }
    }
}

/// Records a text frame a test sent: a direct message's parts apart.
pub fn record_sent(text: &str) {
    for part in text.split('\u{1F}') {
        record(Kind::Text, part);
    }
}

/// Records the uids in a frame the relay sent (its own, a sender's, and
/// those in `users`).
pub fn record_uids(frame: &serde_json::Value) {
    let users = frame["users"].as_array().into_iter().flatten();
    for uid in std::iter::once(frame)
        .chain(users)
        .filter_map(|v| v["uid"].as_str())
    {
        record(Kind::Uid, uid);
    }
}
