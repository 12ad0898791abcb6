//! The Redis engine: one RESP3 connection per node (the `redis` crate's
//! multiplexed connection) carrying pipelined commands, the node's
//! subscriptions and their pushes, in one stream. Scripts (`lua/`, each
//! with `prelude.lua` in front) are loaded at every connect and run with
//! `EVALSHA`. Runs on the bridge thread only.

use super::engine::{Batch, Engine, EngineError, Heartbeat, Inbox};
use super::redis_reply::{array, int, text, Expect};
use super::secret::ChannelHash;
use super::wire::NodeNo;
use super::{Cluster, EngineCmd, EngineEvent, KeyDigests};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, PushInfo, PushKind, RedisWrite, ToRedisArgs, Value};
use std::sync::Arc;
use std::time::Duration;

/// A connection attempt that takes longer has failed (the engine is
/// unreachable or a proxy in front of it is stuck).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);

/// A command (or pipeline) unanswered this long means the connection is
/// stalled: it is dropped and made again.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(2000);

/// Channels per `SUBSCRIBE` when resubscribing after a reconnect.
const SUBSCRIBE_BATCH: usize = 512;

const PRELUDE: &str = include_str!("lua/prelude.lua");

/// The scripts, by name, with their sources (prelude included).
struct Script {
    source: String,
    sha: String,
}

impl Script {
    fn new(body: &str) -> Script {
        Script {
            source: format!("{PRELUDE}\n{body}"),
            sha: String::new(),
        }
    }
}

struct Scripts {
    join: Script,
    leave: Script,
    assert: Script,
    push: Script,
    register: Script,
    heartbeat: Script,
    deregister: Script,
    uid: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            join: Script::new(include_str!("lua/join.lua")),
            leave: Script::new(include_str!("lua/leave.lua")),
            assert: Script::new(include_str!("lua/assert.lua")),
            push: Script::new(include_str!("lua/push.lua")),
            register: Script::new(include_str!("lua/register.lua")),
            heartbeat: Script::new(include_str!("lua/heartbeat.lua")),
            deregister: Script::new(include_str!("lua/deregister.lua")),
            uid: Script::new(include_str!("lua/uid.lua")),
        }
    }

    fn all(&mut self) -> [&mut Script; 8] {
        [
            &mut self.join,
            &mut self.leave,
            &mut self.assert,
            &mut self.push,
            &mut self.register,
            &mut self.heartbeat,
            &mut self.deregister,
            &mut self.uid,
        ]
    }
}

pub struct RedisEngine {
    /// The backplane URL with `protocol=resp3`.
    url: String,
    cluster: Arc<Cluster>,
    inbox: Arc<Inbox>,
    con: Option<MultiplexedConnection>,
    scripts: Scripts,
    node: NodeNo,
}

impl RedisEngine {
    pub fn new(cluster: Arc<Cluster>, inbox: Arc<Inbox>) -> RedisEngine {
        let url = &cluster.url;
        let sep = if url.contains('?') { '&' } else { '?' };
        RedisEngine {
            url: format!("{url}{sep}protocol=resp3"),
            cluster,
            inbox,
            con: None,
            scripts: Scripts::new(),
            node: 0,
        }
    }

    fn con(&mut self) -> Result<&mut MultiplexedConnection, EngineError> {
        self.con
            .as_mut()
            .ok_or_else(|| EngineError("not connected".into()))
    }
}

fn fail(e: redis::RedisError) -> EngineError {
    EngineError(e.to_string())
}

/// One argument made of several byte strings, written without joining
/// them first (a header and a frame, or `itty:{` + hash + `}`).
struct Concat<'a>(&'a [&'a [u8]]);

impl ToRedisArgs for Concat<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        let mut w = out.writer_for_next_arg();
        for part in self.0 {
            let _ = w.write_all(part);
        }
    }
}

fn pub_channel(h: &ChannelHash) -> String {
    format!("itty:{{{}}}", h.as_str())
}

fn digest_arg(d: &Option<[u8; 32]>) -> &[u8] {
    d.as_ref().map_or(&b""[..], |d| &d[..])
}

impl Engine for RedisEngine {
    async fn connect(&mut self, node: Option<NodeNo>) -> Result<NodeNo, EngineError> {
        self.disconnect();
        self.inbox.reset();
        let client = Client::open(self.url.as_str()).map_err(fail)?;
        let inbox = self.inbox.clone();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_push_sender(move |info: PushInfo| -> Result<(), ()> {
                on_push(&inbox, info);
                Ok(())
            });
        let connect = client.get_multiplexed_async_connection_with_config(&config);
        let mut con = tokio::time::timeout(CONNECT_TIMEOUT * 2, connect)
            .await
            .map_err(|_| EngineError("connect timed out".into()))?
            .map_err(fail)?;
        for script in self.scripts.all() {
            script.sha = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(&script.source)
                .query_async(&mut con)
                .await
                .map_err(fail)?;
        }
        let wanted = node.map_or(String::new(), |n| n.to_string());
        let base = crate::id::random_seed() % 1_000_000;
        let node: NodeNo = redis::cmd("EVALSHA")
            .arg(&self.scripts.register.sha)
            .arg(0)
            .arg(wanted)
            .arg(self.cluster.instance)
            .arg(base)
            .query_async(&mut con)
            .await
            .map_err(fail)?;
        con.subscribe(format!("itty:probe:{node}"))
            .await
            .map_err(fail)?;
        self.node = node;
        self.con = Some(con);
        Ok(node)
    }

    fn disconnect(&mut self) {
        self.con = None;
    }

    async fn subscribe(&mut self, hs: &[ChannelHash]) -> Result<(), EngineError> {
        let con = self.con()?;
        for chunk in hs.chunks(SUBSCRIBE_BATCH) {
            let names: Vec<String> = chunk.iter().map(pub_channel).collect();
            con.subscribe(names).await.map_err(fail)?;
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, hs: &[ChannelHash]) -> Result<(), EngineError> {
        let con = self.con()?;
        for chunk in hs.chunks(SUBSCRIBE_BATCH) {
            let names: Vec<String> = chunk.iter().map(pub_channel).collect();
            con.unsubscribe(names).await.map_err(fail)?;
        }
        Ok(())
    }

    async fn probe(&mut self, nonce: u64) -> Result<(), EngineError> {
        let node = self.node;
        let con = self.con()?;
        redis::cmd("PUBLISH")
            .arg(format!("itty:probe:{node}"))
            .arg(nonce)
            .query_async::<Value>(con)
            .await
            .map_err(fail)?;
        Ok(())
    }

    async fn run(&mut self, batch: Batch) -> Result<Vec<(usize, EngineEvent)>, EngineError> {
        let node = self.node;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut expect = Vec::with_capacity(batch.len());
        for (shard, cmd) in batch {
            let s = &self.scripts;
            match cmd {
                EngineCmd::Publish { h, header, frame } => {
                    let ch = [&b"itty:{"[..], h.as_str().as_bytes(), b"}"];
                    pipe.cmd("PUBLISH")
                        .arg(Concat(&ch))
                        .arg(Concat(&[header.as_bytes(), &frame]));
                    expect.push((shard, Expect::Nothing));
                }
                EngineCmd::Join(join) => {
                    let (mode, may_send, jd, sd) = match &join.keys {
                        KeyDigests::Namespace { may_send } => ("n", *may_send, &b""[..], &b""[..]),
                        KeyDigests::Ephemeral { join, send } => {
                            ("e", true, digest_arg(join), digest_arg(send))
                        }
                    };
                    let r = &join.record;
                    pipe.cmd("EVALSHA")
                        .arg(&s.join.sha)
                        .arg(0)
                        .arg(join.h.as_str())
                        .arg(r.uid.as_str())
                        .arg(node)
                        .arg(if r.announce { "1" } else { "0" })
                        .arg(r.alias_json.as_deref().unwrap_or(""))
                        .arg(join.date_ms)
                        .arg(mode)
                        .arg(if may_send { "1" } else { "0" })
                        .arg(jd)
                        .arg(sd)
                        .arg(if join.want_members { "1" } else { "0" });
                    expect.push((
                        shard,
                        Expect::Join {
                            h: join.h,
                            conn: join.conn,
                        },
                    ));
                }
                EngineCmd::Leave {
                    h,
                    uid,
                    last_local,
                    date_ms,
                } => {
                    pipe.cmd("EVALSHA")
                        .arg(&s.leave.sha)
                        .arg(0)
                        .arg(h.as_str())
                        .arg(uid.as_str())
                        .arg(node)
                        .arg(date_ms)
                        .arg(if last_local { "1" } else { "0" });
                    expect.push((shard, Expect::Nothing));
                }
                EngineCmd::Push {
                    h,
                    header,
                    frame,
                    home,
                    request,
                } => {
                    pipe.cmd("EVALSHA")
                        .arg(&s.push.sha)
                        .arg(0)
                        .arg(h.as_str())
                        .arg(Concat(&[header.as_bytes(), &frame]));
                    expect.push((shard, Expect::Push { home, request }));
                }
                EngineCmd::Assert(assert) => {
                    let c = pipe
                        .cmd("EVALSHA")
                        .arg(&s.assert.sha)
                        .arg(0)
                        .arg(assert.h.as_str())
                        .arg(node)
                        .arg(assert.date_ms)
                        .arg(digest_arg(&assert.held.join))
                        .arg(digest_arg(&assert.held.send));
                    let members = assert.members.as_deref();
                    match members {
                        Some(m) => c.arg(m.len()),
                        None => c.arg(-1),
                    };
                    for m in members.unwrap_or_default() {
                        c.arg(m.uid.as_str())
                            .arg(if m.announce { "1" } else { "0" })
                            .arg(m.alias_json.as_deref().unwrap_or(""));
                    }
                    expect.push((shard, Expect::Assert { h: assert.h }));
                }
                EngineCmd::UidBlock => {
                    let base = crate::id::random_seed() % crate::limits::UID_SPACE;
                    pipe.cmd("EVALSHA")
                        .arg(&s.uid.sha)
                        .arg(0)
                        .arg(base)
                        .arg(super::UID_BLOCK);
                    expect.push((shard, Expect::UidBlock));
                }
                EngineCmd::Subscribe(_) | EngineCmd::Unsubscribe(_) => {
                    debug_assert!(false, "the bridge handles subscriptions");
                }
            }
        }
        if expect.is_empty() {
            return Ok(Vec::new());
        }
        self.cluster.counters.commands(expect.len() as u64);
        let con = self.con()?;
        let values: Vec<Value> = pipe.query_async(con).await.map_err(fail)?;
        let mut events = Vec::new();
        for ((shard, expect), value) in expect.into_iter().zip(values) {
            if let Value::ServerError(e) = &value {
                // A script the engine forgot (it restarted under us) or a
                // broken engine: reconnect, which loads them again.
                return Err(EngineError(format!("engine error: {e:?}")));
            }
            if let Some(event) = expect.answer(value) {
                events.push((shard, event));
            }
        }
        Ok(events)
    }

    async fn heartbeat(&mut self) -> Result<Heartbeat, EngineError> {
        let node = self.node;
        let timeout = self.cluster.node_timeout_ms;
        let offset = timeout.saturating_sub(super::bridge::heartbeat_interval_ms(timeout));
        let (digest, instance) = (self.cluster.config_digest(), self.cluster.instance);
        let shards = self.cluster.shards();
        let sha = self.scripts.heartbeat.sha.clone();
        let con = self.con()?;
        let value: Value = redis::cmd("EVALSHA")
            .arg(sha)
            .arg(0)
            .arg(node)
            .arg(offset)
            .arg(&digest[..])
            .arg(instance)
            .arg(shards)
            .query_async(con)
            .await
            .map_err(fail)?;
        let items = array(value);
        if items.first().and_then(text).as_deref() != Some("ok") {
            return Err(EngineError(
                "this node's number was taken by another process".into(),
            ));
        }
        Ok(Heartbeat {
            reaped: items.get(1).and_then(int).unwrap_or(0),
            live_nodes: items.get(2).and_then(int).unwrap_or(0),
            mismatched: items.get(3).and_then(int).unwrap_or(0),
        })
    }

    async fn deregister(&mut self) -> Result<u64, EngineError> {
        let node = self.node;
        let sha = self.scripts.deregister.sha.clone();
        let con = self.con()?;
        redis::cmd("EVALSHA")
            .arg(sha)
            .arg(0)
            .arg(node)
            .query_async(con)
            .await
            .map_err(fail)
    }
}

/// A push from the engine: a subscribed payload, or the client saying the
/// connection is gone.
fn on_push(inbox: &Inbox, info: PushInfo) {
    match info.kind {
        PushKind::Message => {
            let mut data = info.data.into_iter();
            if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                (data.next(), data.next())
            {
                inbox.message(&channel, payload);
            }
        }
        PushKind::Disconnection => inbox.disconnect(),
        _ => {}
    }
}
