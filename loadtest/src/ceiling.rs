//! Scenario `ceiling`: what the generator itself can receive when the
//! server is trivial. An in-process blast server on its own executor
//! (`--server-cpu`) accepts the members' upgrades (fixed key, no checks),
//! sends each its own join event, then writes batches of pre-built relayed
//! frames to every connection as fast as the sockets take them. Only a
//! frame's sequence number and time stamp are patched in place (fixed-width
//! digits). The generator's members (on `--cpus`) read them through the same
//! receive path as in every other scenario, so deliveries/s with the
//! generator's cores saturated is the generator's own ceiling.

use crate::net;
use crate::pubsub::state::{Channel, EXTERNAL_SEQ_BASE, IO_MEMORY};
use crate::pubsub::summary::{self, opt};
use crate::pubsub::{self, Common, Config, ConnSpec, Plan, Traffic};
use crate::report::{round3, Report};
use crate::sys;
use crate::ws;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::sleep;
use glommio::{spawn_local, LocalExecutorBuilder, Placement};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct CeilingArgs {
    /// Connections the server blasts to.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Frames per write on the server side.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// The cpu of the blast server's executor (default: the first cpu this
    /// process may use that is not a generator cpu, else the first).
    #[arg(long)]
    pub server_cpu: Option<usize>,
    #[command(flatten)]
    pub traffic: Traffic,
    #[command(flatten)]
    pub common: Common,
}

/// What the server shares with the main thread.
struct Control {
    go: AtomicBool,
    stop: AtomicBool,
    /// Frames written, over all connections.
    frames: AtomicU64,
}

pub fn run(a: CeilingArgs) -> anyhow::Result<()> {
    a.common.proto.require_itty("ceiling")?;
    if a.members == 0 || a.batch == 0 {
        anyhow::bail!("--members and --batch must be at least 1");
    }
    let allowed = sys::allowed_cpus();
    let gen_cpus = a
        .common
        .cpus
        .clone()
        .map(|c| c.0)
        .unwrap_or_else(|| vec![*allowed.last().unwrap_or(&0)]);
    let server_cpu = a.server_cpu.unwrap_or_else(|| {
        allowed
            .iter()
            .copied()
            .find(|c| !gen_cpus.contains(c))
            .unwrap_or(allowed[0])
    });
    sys::init_clock();
    let control = Arc::new(Control {
        go: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        frames: AtomicU64::new(0),
    });
    let (port_tx, port_rx) = mpsc::channel();
    let server = {
        let control = control.clone();
        let payload_bytes = a.traffic.payload_bytes;
        let batch = a.batch;
        LocalExecutorBuilder::new(Placement::Fixed(server_cpu))
            .name("blast-server")
            .io_memory(IO_MEMORY)
            .spawn(move || serve(control, port_tx, payload_bytes, batch))
            .map_err(|e| anyhow::anyhow!("starting the blast server on cpu {server_cpu}: {e}"))?
    };
    let port = port_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| anyhow::anyhow!("the blast server did not start"))??;

    let mut common = a.common.clone();
    common.url = vec![format!("ws://127.0.0.1:{port}")];
    common.source_ips = net::SourceSpec::Ips(net::SourceIps::default());
    let mut cfg = Config::new(&common, &a.traffic, 1.0, a.members)?;
    cfg.grace = 0.0;
    let name = "ceiling".to_owned();
    let plan = Plan {
        channels: vec![Channel {
            request: cfg.upgrade_request(&name),
            name,
            pub_base: 0,
            pub_count: 1,
        }],
        conns: vec![
            ConnSpec {
                channel: 0,
                receives: true,
                publisher: None,
            };
            a.members
        ],
        pub_channel: Vec::new(),
        push: None,
        external_source: true,
    };
    let running = match pubsub::start(&cfg, plan) {
        Ok(r) => r,
        Err(e) => {
            control.stop.store(true, Relaxed);
            return Err(e);
        }
    };
    control.go.store(true, Relaxed);
    let outcome = running.run();
    control.stop.store(true, Relaxed);
    // The server returns its busy share while blasting, in millionths.
    let busy = pubsub::join_all(vec![server]).pop().map(|b| b as f64 / 1e6);

    let mut r = Report::new();
    r.add("scenario", "ceiling");
    r.add("members", a.members);
    r.add("batch_frames_per_write", a.batch);
    r.add("server_cpu", server_cpu);
    let mut s = summary::summarize(r, &cfg, &outcome);
    s.report
        .add("server_frames_written", control.frames.load(Relaxed));
    s.report.add_with_text(
        "server_util",
        opt(busy.map(round3)),
        busy.map_or("?".into(), |b| format!("{:.1}%", b * 100.0)),
    );
    s.notes.retain(|n| !n.contains("saturated"));
    if s.key.saturated {
        s.notes.push(format!(
            "the generator's cores were saturated: {} deliveries/s is what this generator \
             (cpus {:?}, --recv {:?}) can receive.",
            s.key.deliveries_per_s.unwrap_or(0.0),
            cfg.cpus,
            cfg.recv
        ));
    } else if busy.is_some_and(|b| b > 0.9) {
        s.notes.push(
            "the blast server's core was the limit, not the generator: the generator can take \
             more than this."
                .to_owned(),
        );
    } else {
        s.notes.push(
            "neither the generator nor the server was saturated (the kernel's loopback path, or \
             another process, was the limit): the ceiling is at least this."
                .to_owned(),
        );
    }
    s.notes.push(
        "latency here is queueing in full socket buffers (the server always has data \
         waiting), not a property of the generator."
            .to_owned(),
    );
    summary::print(&s, a.common.json);
    Ok(())
}

/// The blast server: accepts until stopped; returns its thread's busy share
/// while blasting, in millionths.
async fn serve(
    control: Arc<Control>,
    port_tx: mpsc::Sender<anyhow::Result<u16>>,
    payload_bytes: usize,
    batch: usize,
) -> u64 {
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => {
            let _ = port_tx.send(Err(anyhow::anyhow!("blast server bind: {e}")));
            return 0;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let _ = port_tx.send(Ok(port));
    let template = Template::new(payload_bytes, batch);
    // The server's cpu while it blasts: from the first connection that
    // starts blasting to the stop (set by that connection's task: the
    // blasting tasks leave this loop little time).
    let blasting_from: Rc<Cell<Option<(u64, u64)>>> = Rc::new(Cell::new(None));
    while !control.stop.load(Relaxed) {
        let accepted = pubsub::timed(Duration::from_millis(10), listener.accept()).await;
        if let Some(Ok(stream)) = accepted {
            let _ = stream.set_nodelay(true);
            let from = blasting_from.clone();
            spawn_local(blast(control.clone(), stream, template.clone(), from)).detach();
        }
    }
    match blasting_from.get() {
        Some((cpu, wall)) => {
            let busy = (sys::thread_cpu_ns() - cpu) as f64 / (sys::now_ns() - wall).max(1) as f64;
            (busy * 1e6) as u64
        }
        None => 0,
    }
}

/// A batch of frames, with where to patch each frame's numbers.
#[derive(Clone)]
pub struct Template {
    pub bytes: Vec<u8>,
    /// Per frame: offset of its 12-digit seq and of its 18-digit stamp.
    pub spots: Vec<(usize, usize)>,
}

const SEQ_DIGITS: usize = 12;
const STAMP_DIGITS: usize = 18;

impl Template {
    pub fn new(payload_bytes: usize, batch: usize) -> Template {
        let mut bytes = Vec::new();
        let mut spots = Vec::new();
        let head = r#"{"id":"blast","date":0,"message":"#;
        for _ in 0..batch {
            let mut payload = format!("[0,{EXTERNAL_SEQ_BASE},{:0STAMP_DIGITS$},\"", 0);
            let pad = payload_bytes.saturating_sub(payload.len() + 2);
            payload.push_str(&"x".repeat(pad));
            payload.push_str("\"]");
            let envelope = format!("{head}{payload}}}");
            let mut frame = Vec::new();
            ws::server_frame(ws::OP_TEXT, envelope.as_bytes(), &mut frame);
            let payload_at = bytes.len() + frame.len() - 1 - payload.len();
            spots.push((payload_at + 3, payload_at + 4 + SEQ_DIGITS));
            bytes.extend_from_slice(&frame);
        }
        Template { bytes, spots }
    }

    /// Numbers the batch's frames `seq, seq+1, ...`, all stamped `now_ns`.
    pub fn patch(&mut self, seq: u64, now_ns: u64) {
        for (i, &(s, t)) in self.spots.iter().enumerate() {
            write_digits(&mut self.bytes[s..s + SEQ_DIGITS], seq + i as u64);
            write_digits(&mut self.bytes[t..t + STAMP_DIGITS], now_ns);
        }
    }
}

/// Writes `v` as zero-padded decimal filling `out`.
fn write_digits(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

async fn blast(
    control: Arc<Control>,
    mut stream: TcpStream,
    mut template: Template,
    blasting_from: Rc<Cell<Option<(u64, u64)>>>,
) {
    let mut buf = vec![0u8; 4096];
    let mut filled = 0;
    // The request head (anything up to the blank line).
    loop {
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        if buf[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if filled == buf.len() {
            return;
        }
    }
    let mut hello = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        ws::ACCEPT
    )
    .into_bytes();
    ws::server_frame(
        ws::OP_TEXT,
        br#"{"type":"join","uid":"blast0","self":true,"total":1,"date":0}"#,
        &mut hello,
    );
    if stream.write_all(&hello).await.is_err() {
        return;
    }
    while !control.go.load(Relaxed) {
        if control.stop.load(Relaxed) {
            return;
        }
        sleep(Duration::from_millis(1)).await;
    }
    if blasting_from.get().is_none() {
        blasting_from.set(Some((sys::thread_cpu_ns(), sys::now_ns())));
    }
    let n = template.spots.len() as u64;
    let mut seq = EXTERNAL_SEQ_BASE;
    while !control.stop.load(Relaxed) {
        template.patch(seq, sys::now_ns());
        if stream.write_all(&template.bytes).await.is_err() {
            return;
        }
        seq += n;
        control.frames.fetch_add(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patched_frames_carry_their_stamp() {
        let mut t = Template::new(64, 3);
        t.patch(EXTERNAL_SEQ_BASE + 5, 123_456_789);
        let mut at = 0;
        for i in 0..3u64 {
            let h = ws::parse_header(&t.bytes[at..]).unwrap();
            let payload = &t.bytes[at + h.header_len..at + h.header_len + h.payload_len];
            assert_eq!(
                crate::proto::find_stamp(payload, 64),
                Some((0, EXTERNAL_SEQ_BASE + 5 + i, 123_456_789))
            );
            at += h.header_len + h.payload_len;
        }
        assert_eq!(at, t.bytes.len());
    }
}
