//! The owner's rules without sockets: joins and their keys, presence
//! totals, direct messages, pushes, and where each frame goes.

use super::*;
use crate::access::Keys;
use crate::shard::join::KeyCheck;

/// The owner is shard 0 of 2; even connection ids live on shard 0, odd on
/// shard 1.
fn owner() -> Owner {
    Owner::new(
        Router::new(ShardId(0), 2),
        UidCipher::new(7),
        crate::metrics::new(2),
    )
}

fn join_request(conn: u64, keys: KeyCheck) -> JoinRequest {
    JoinRequest {
        channel: "room".into(),
        conn: ConnId(conn),
        uid: UidCipher::new(7).uid(ConnId(conn)),
        alias_json: None,
        announce: true,
        list: false,
        keys,
        deflate: None,
    }
}

fn open() -> KeyCheck {
    KeyCheck::Ephemeral(Keys::default())
}

fn join(owner: &mut Owner, conn: u64, keys: KeyCheck) -> Effects {
    let mut fx = Effects::default();
    owner.join(join_request(conn, keys), 1, &mut fx);
    fx
}

fn text(frame: &Bytes) -> String {
    // Server frames here are short: a 2-byte header, then the payload.
    String::from_utf8_lossy(&frame[2..]).into_owned()
}

fn token_of(fx: &Effects) -> ChannelToken {
    fx.iter()
        .find_map(|(_, m)| match m {
            ShardMsg::Joined { token, .. } => Some(*token),
            _ => None,
        })
        .expect("a Joined")
}

#[test]
fn a_join_answers_the_home_first_then_fans_the_event_out_to_every_home() {
    let mut o = owner();
    let first = join(&mut o, 0, open());
    assert_eq!(first.len(), 1, "alone: only its own event");
    let fx = join(&mut o, 3, open());
    assert!(matches!(
        fx.iter().next(),
        Some((ShardId(1), ShardMsg::Joined { .. }))
    ));
    // The others' event goes to both homes, each excluding the joiner.
    let fan_outs: Vec<_> = fx
        .iter()
        .filter_map(|(s, m)| match m {
            ShardMsg::FanOut { except, frames, .. } => Some((s.0, *except, text(&frames.plain))),
            _ => None,
        })
        .collect();
    assert_eq!(fan_outs.len(), 2);
    assert!(fan_outs
        .iter()
        .all(|(_, e, t)| *e == Some(ConnId(3)) && t.contains("\"total\":2")));
    assert_eq!(o.channels(), 1);
}

#[test]
fn a_wrong_ephemeral_join_key_is_refused_and_changes_nothing() {
    let mut o = owner();
    let keys = Keys {
        join_key: Some("secret".into()),
        send_key: None,
    };
    join(&mut o, 0, KeyCheck::Ephemeral(keys));
    let fx = join(&mut o, 1, open());
    assert!(matches!(
        fx.iter().collect::<Vec<_>>()[..],
        [(
            ShardId(1),
            ShardMsg::JoinRefused {
                conn: ConnId(1),
                why: UpgradeRefusal::JoinKey
            }
        )]
    ));
    let right = Keys {
        join_key: Some("secret".into()),
        send_key: None,
    };
    let fx = join(&mut o, 1, KeyCheck::Ephemeral(right));
    assert!(matches!(
        fx.iter().next(),
        Some((_, ShardMsg::Joined { may_send: true, .. }))
    ));
    assert_eq!(
        o.counters().upgrades_refused[UpgradeRefusal::JoinKey.index()].get(),
        1
    );
}

#[test]
fn ephemeral_keys_go_when_the_channel_empties() {
    let mut o = owner();
    let keys = Keys {
        join_key: Some("secret".into()),
        send_key: None,
    };
    let token = token_of(&join(&mut o, 0, KeyCheck::Ephemeral(keys)));
    o.leave(token, ConnId(0), 2, &mut Effects::default());
    assert_eq!(o.channels(), 0);
    let fx = join(&mut o, 2, open());
    assert!(matches!(
        fx.iter().next(),
        Some((_, ShardMsg::Joined { .. }))
    ));
}

#[test]
fn totals_follow_joins_and_leaves() {
    let mut o = owner();
    let token = token_of(&join(&mut o, 0, open()));
    join(&mut o, 1, open());
    join(&mut o, 2, open());
    let mut fx = Effects::default();
    o.leave(token, ConnId(1), 3, &mut fx);
    // Members left on shard 0 only: one FanOut, total 2.
    let frames: Vec<_> = fx
        .iter()
        .map(|(s, m)| match m {
            ShardMsg::FanOut { frames, .. } => (s.0, text(&frames.plain)),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, 0);
    assert!(frames[0].1.contains("\"type\":\"leave\"") && frames[0].1.contains("\"total\":2"));
    // A second leave of the same member changes nothing.
    let mut again = Effects::default();
    o.leave(token, ConnId(1), 4, &mut again);
    assert!(again.is_empty());
}

#[test]
fn a_direct_message_goes_to_its_recipients_home_or_back_as_an_error() {
    let mut o = owner();
    let token = token_of(&join(&mut o, 0, open()));
    join(&mut o, 1, open());
    let to = o.cipher.uid(ConnId(1));
    let publish = |to| Publish {
        token,
        from: ConnId(0),
        echo: false,
        to: Some(to),
        payload: b"1",
    };
    let mut fx = Effects::default();
    o.publish(publish(to), 5, &mut fx);
    assert!(matches!(
        fx.iter().collect::<Vec<_>>()[..],
        [(
            ShardId(1),
            ShardMsg::Deliver {
                conn: ConnId(1),
                ..
            }
        )]
    ));
    let stranger = o.cipher.uid(ConnId(9));
    let mut fx = Effects::default();
    o.publish(publish(stranger), 5, &mut fx);
    match &fx.iter().collect::<Vec<_>>()[..] {
        [(ShardId(0), ShardMsg::Deliver { conn, frame })] => {
            assert_eq!(*conn, ConnId(0));
            let expected = format!("no user {} on this channel", stranger.as_str());
            assert!(text(frame).contains(&expected), "{}", text(frame));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        o.counters().dropped[DropReason::NoRecipient.index()].get(),
        1
    );
}

#[test]
fn a_broadcast_skips_the_sender_unless_it_asked_for_echo_and_ids_are_unique() {
    let mut o = owner();
    let token = token_of(&join(&mut o, 0, open()));
    let mut ids = std::collections::HashSet::new();
    for echo in [false, true] {
        let mut fx = Effects::default();
        let publish = Publish {
            token,
            from: ConnId(0),
            echo,
            to: None,
            payload: b"{}",
        };
        o.publish(publish, 5, &mut fx);
        match &fx.iter().collect::<Vec<_>>()[..] {
            [(ShardId(0), ShardMsg::FanOut { except, frames, .. })] => {
                assert_eq!(*except, (!echo).then_some(ConnId(0)));
                let t = text(&frames.plain);
                let id = t.split('"').nth(3).unwrap().to_owned();
                assert!(ids.insert(id), "message ids are unique");
            }
            other => panic!("{other:?}"),
        }
    }
    // A publish from a connection that already left is dropped.
    let mut fx = Effects::default();
    let stale = Publish {
        token,
        from: ConnId(4),
        echo: true,
        to: None,
        payload: b"{}",
    };
    o.publish(stale, 5, &mut fx);
    assert!(fx.is_empty());
}

#[test]
fn a_push_answers_its_home_with_the_recipients() {
    let mut o = owner();
    join(&mut o, 0, open());
    join(&mut o, 1, open());
    let push = |channel| Push {
        channel,
        payload: b"{}",
        home: ShardId(1),
        request: 42,
    };
    let mut fx = Effects::default();
    o.push(push("room"), 5, &mut fx);
    let answer = fx.iter().last().unwrap();
    assert!(matches!(
        answer,
        (
            ShardId(1),
            ShardMsg::Pushed {
                request: 42,
                recipients: Some(2)
            }
        )
    ));
    assert_eq!(fx.len(), 3, "two homes, then the answer");
    let mut fx = Effects::default();
    o.push(push("nobody-here"), 5, &mut fx);
    assert!(matches!(
        fx.iter().collect::<Vec<_>>()[..],
        [(
            ShardId(1),
            ShardMsg::Pushed {
                recipients: Some(0),
                ..
            }
        )]
    ));
}
