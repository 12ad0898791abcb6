//! The owner's cluster side without sockets or an engine: what it asks
//! the engine, and what its members get, in which order.

use super::*;
use crate::id::ShardId;
use crate::router::Router;

#[test]
fn message_ids_carry_the_node_and_never_collide_across_nodes() {
    let router = Router::new(ShardId(0), 2);
    let mut seen = std::collections::HashSet::new();
    for node in [1u64, 12, 61, 62, 3843, 1_000_000] {
        let mut local = 0;
        for _ in 0..500 {
            let (buf, len) = message_id(node, &mut local, router);
            assert!(buf[..len].iter().all(|c| c.is_ascii_alphanumeric()));
            assert!(seen.insert(buf[..len].to_vec()));
        }
    }
}

use crate::access::Keys;
use crate::cluster::secret::ClusterSecret;
use crate::cluster::wire::{encode_presence, Presence};
use crate::cluster::{Cluster, EngineEvent, EngineState, JoinReply, Snapshot};
use crate::id::UidCipher;
use crate::outcome::UpgradeRefusal;
use crate::pubsub::envelope;
use crate::shard::join::KeyCheck;
use crate::shard::message::ShardMsg;

const ME: NodeNo = 7;
const OTHER: NodeNo = 9;

/// The owner is shard 0 of 1, on node `ME`, connected.
fn owner() -> (Owner, Arc<Cluster>) {
    let secret = ClusterSecret::new(b"unit-test-secret-0123").unwrap();
    let (cluster, _wakes) = Cluster::new("redis://x".into(), secret, 5000, [0; 32], 1).unwrap();
    let cluster = Arc::new(cluster);
    cluster.set_state(EngineState::Up, ME);
    let router = Router::new(ShardId(0), 1);
    let owner = Owner::new(router, UidCipher::new(1), crate::metrics::new(1))
        .with_cluster(ClusterSide::new(cluster.clone()));
    (owner, cluster)
}

fn uid(c: u8) -> Uid {
    Uid([c; 6])
}

fn request(conn: u64, u: Uid, list: bool) -> JoinRequest {
    JoinRequest {
        channel: "room".into(),
        conn: ConnId(conn),
        uid: u,
        alias_json: None,
        announce: true,
        list,
        keys: KeyCheck::Ephemeral(Keys::default()),
        deflate: None,
    }
}

fn h(cluster: &Cluster) -> ChannelHash {
    cluster.secret.channel_hash("room")
}

fn join_event(seq: u64, total: u64, node: NodeNo, u: Uid) -> EngineEvent {
    let event = Presence {
        seq,
        total,
        node,
        uid: u,
    };
    let frame = envelope::join(None, total as usize, 1);
    let payload = encode_presence(b'J', &event, true, None, &frame);
    EngineEvent::Stream {
        h: crate::cluster::secret::ChannelHash([b'0'; 32]),
        payload: Bytes::from(payload),
    }
}

fn stream(cluster: &Cluster, e: EngineEvent) -> EngineEvent {
    match e {
        EngineEvent::Stream { payload, .. } => EngineEvent::Stream {
            h: h(cluster),
            payload,
        },
        e => e,
    }
}

fn admitted(
    cluster: &Cluster,
    conn: u64,
    seq: u64,
    total: u64,
    table: Option<Vec<(NodeNo, Uid)>>,
) -> EngineEvent {
    let members = table.map(|t| Snapshot {
        seq,
        members: t
            .into_iter()
            .map(|(node, u)| {
                (
                    node,
                    MemberRecord {
                        uid: u,
                        announce: true,
                        alias_json: None,
                    },
                )
            })
            .collect(),
        held: HeldKeys::default(),
    });
    EngineEvent::Joined {
        h: h(cluster),
        conn: ConnId(conn),
        reply: JoinReply::Admitted {
            seq,
            total,
            may_send: true,
            held: HeldKeys::default(),
            members,
        },
    }
}

fn text(frame: &Bytes) -> String {
    String::from_utf8_lossy(&frame[2..]).into_owned()
}

/// What the members got, in order: "joined:<conn>:<total>" for a
/// joiner's own event, "fanout:<total>" for an event to the others.
fn deliveries(fx: &mut Effects) -> Vec<String> {
    fx.drain()
        .filter_map(|(_, m)| match m {
            ShardMsg::Joined { conn, frame, .. } => {
                let v: serde_json::Value = serde_json::from_str(&text(&frame)).unwrap();
                Some(format!("joined:{}:{}", conn.0, v["total"]))
            }
            ShardMsg::FanOut { frames, .. } => {
                let v: serde_json::Value = serde_json::from_str(&text(&frames.plain)).unwrap();
                Some(format!("fanout:{}", v["total"]))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_first_join_subscribes_then_asks_for_the_table() {
    let (mut o, _c) = owner();
    let mut fx = Effects::default();
    o.join(request(0, uid(b'a'), false), 1, &mut fx);
    let cmds = fx.engine_cmds();
    assert!(matches!(cmds[0], EngineCmd::Subscribe(_)));
    assert!(matches!(&cmds[1], EngineCmd::Join(j) if j.want_members));
    assert!(
        fx.iter().next().is_none(),
        "not a member before the engine says so"
    );
}

#[test]
fn a_joiner_misses_nothing_after_its_own_event_whatever_arrives_first() {
    let (mut o, c) = owner();
    let mut fx = Effects::default();
    o.join(request(0, uid(b'a'), false), 1, &mut fx);
    fx.drain_engine().for_each(drop);
    // Its own event comes back before the answer, then someone else's.
    o.engine_event(stream(&c, join_event(5, 2, ME, uid(b'a'))), 1, &mut fx);
    o.engine_event(stream(&c, join_event(6, 3, OTHER, uid(b'z'))), 1, &mut fx);
    assert!(deliveries(&mut fx).is_empty(), "the table has not come yet");
    let table = vec![(OTHER, uid(b'y')), (ME, uid(b'a'))];
    o.engine_event(admitted(&c, 0, 5, 2, Some(table)), 1, &mut fx);
    assert_eq!(deliveries(&mut fx), ["joined:0:2", "fanout:3"]);
}

#[test]
fn a_second_join_here_waits_for_its_answer_while_its_event_is_applied() {
    let (mut o, c) = owner();
    let mut fx = Effects::default();
    o.join(request(0, uid(b'a'), false), 1, &mut fx);
    o.engine_event(
        admitted(&c, 0, 5, 1, Some(vec![(ME, uid(b'a'))])),
        1,
        &mut fx,
    );
    assert_eq!(deliveries(&mut fx), ["joined:0:1"]);
    fx.drain_engine().for_each(drop);
    o.join(request(1, uid(b'b'), true), 1, &mut fx);
    let cmds: Vec<_> = fx.drain_engine().collect();
    assert!(matches!(&cmds[..], [EngineCmd::Join(j)] if !j.want_members));
    // Its event first: member 0 hears of it; then a later event waits.
    o.engine_event(stream(&c, join_event(6, 2, ME, uid(b'b'))), 1, &mut fx);
    o.engine_event(stream(&c, join_event(7, 3, OTHER, uid(b'z'))), 1, &mut fx);
    assert_eq!(deliveries(&mut fx), ["fanout:2"]);
    o.engine_event(admitted(&c, 1, 6, 2, None), 1, &mut fx);
    // The joiner's own event, then the later one to both.
    let got: Vec<_> = fx
        .drain()
        .map(|(_, m)| match m {
            ShardMsg::Joined { frame, .. } => {
                let v: serde_json::Value = serde_json::from_str(&text(&frame)).unwrap();
                assert_eq!(v["users"].as_array().unwrap().len(), 2, "{v}");
                "joined".to_owned()
            }
            ShardMsg::FanOut { .. } => "fanout".to_owned(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(got, ["joined", "fanout"]);
}

#[test]
fn an_event_already_in_the_table_is_not_delivered_twice() {
    let (mut o, c) = owner();
    let mut fx = Effects::default();
    o.join(request(0, uid(b'a'), false), 1, &mut fx);
    o.engine_event(
        admitted(&c, 0, 9, 2, Some(vec![(OTHER, uid(b'y')), (ME, uid(b'a'))])),
        1,
        &mut fx,
    );
    deliveries(&mut fx);
    o.engine_event(stream(&c, join_event(8, 1, OTHER, uid(b'y'))), 1, &mut fx);
    o.engine_event(stream(&c, join_event(9, 2, ME, uid(b'a'))), 1, &mut fx);
    assert!(deliveries(&mut fx).is_empty());
}

#[test]
fn cut_off_joins_get_503_leaves_are_told_here_and_the_reconnect_asserts() {
    let (mut o, c) = owner();
    let mut fx = Effects::default();
    o.join(request(0, uid(b'a'), false), 1, &mut fx);
    o.engine_event(
        admitted(&c, 0, 5, 1, Some(vec![(ME, uid(b'a'))])),
        1,
        &mut fx,
    );
    o.join(request(1, uid(b'b'), false), 1, &mut fx);
    o.engine_event(stream(&c, join_event(6, 2, ME, uid(b'b'))), 1, &mut fx);
    o.engine_event(admitted(&c, 1, 6, 2, None), 1, &mut fx);
    o.join(request(2, uid(b'c'), false), 1, &mut fx);
    fx.drain().for_each(drop);
    fx.drain_engine().for_each(drop);
    c.set_state(EngineState::Down, ME);
    o.engine_event(EngineEvent::Down, 1, &mut fx);
    assert!(fx.iter().any(|(_, m)| matches!(
        m,
        ShardMsg::JoinRefused {
            conn: ConnId(2),
            why: UpgradeRefusal::BackplaneUnavailable
        }
    )));
    fx.drain().for_each(drop);
    let token = o.registry.find("room").unwrap().0;
    o.leave(token, ConnId(1), 1, &mut fx);
    assert_eq!(
        deliveries(&mut fx),
        ["fanout:1"],
        "told here, with the known count"
    );
    assert!(
        fx.engine_cmds().is_empty(),
        "nothing for an unreachable engine"
    );
    c.set_state(EngineState::Up, ME);
    o.engine_event(EngineEvent::Up { node: ME }, 1, &mut fx);
    let asserted = fx.engine_cmds().iter().find_map(|cmd| match cmd {
        EngineCmd::Assert(a) => a.members.as_ref().map(|m| m.len()),
        _ => None,
    });
    assert_eq!(asserted, Some(1), "exactly the member still here");
}
