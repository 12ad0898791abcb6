//! The join, whole: how `GET /c/<channel>` becomes a member (a `101` and
//! its own join event) or a refusal (a status instead of the `101`).
//!
//! ```text
//! client          home shard (accepted the socket)           owner shard (hashes the channel)
//!   |--GET /c/room-->| 1. admit_join: draining, IP ban, IP
//!   |                |    rate, shard cap (Shard::admit_upgrade),
//!   |                |    a namespace's join key        --refused--> 4xx/503 now, no 101
//!   |                | 2. open the connection, queue the 101
//!   |                |    (unsent: the writer starts later)
//!   |                | 3. Shard::join ----ShardMsg::Join-------->| 4. Owner::join: decide()
//!   |                |                                           |    ephemeral keys: a wrong
//!   |                |<---ShardMsg::JoinRefused-----------------|    join key refuses;
//!   |                | 5a. join_refused: the 101 is replaced     |    else add the member, build
//!   |<-----403-------|     by the 403, the connection ends       |    its own event and the
//!   |                |<---ShardMsg::Joined (own event)-----------|    others' event (once)
//!   |                | 5b. joined: subscribe, queue the event,   |---ShardMsg::FanOut------->
//!   |<--101, event---|     wake the session (its writer starts)  |   every home with members
//! ```
//!
//! A namespace's keys are checked at home (step 1, against the shard's
//! snapshot of the namespaces); a channel without a namespace may carry
//! ephemeral keys, which only its owner knows (step 4). A connection that
//! ends while its join is in flight is joined and then left at once (5b),
//! so the owner's member list never keeps it.

use super::message::ShardMsg;
use super::Shard;
use crate::access::Keys;
use crate::conn::handle::ConnHandle;
use crate::http::JoinOptions;
use crate::id::{ChannelToken, ConnId, Uid};
use crate::outcome::{Refused, UpgradeRefusal};
use crate::pubsub::envelope;
use crate::ratelimit::IpKey;
use bytes::Bytes;
use std::rc::Rc;

/// Step 3: what the home shard asks of the owner.
#[derive(Debug)]
pub struct JoinRequest {
    pub channel: Box<str>,
    pub conn: ConnId,
    /// The uid its home gave it.
    pub uid: Uid,
    pub alias_json: Option<Box<str>>,
    pub announce: bool,
    pub list: bool,
    pub keys: KeyCheck,
    /// The window of its compressed frames, if it negotiated deflate.
    pub deflate: Option<u8>,
}

/// What the owner checks about a join's keys.
#[derive(Debug)]
pub enum KeyCheck {
    /// A namespace covers the channel: the home shard checked its join key
    /// and decided whether the connection may send. Ephemeral keys are
    /// never set or checked.
    Namespace { may_send: bool },
    /// No namespace covers it: the owner checks these offered keys against
    /// the channel's ephemeral keys, or sets them when the join creates it.
    Ephemeral(Keys),
}

/// Step 1, on the home shard: everything decided before the connection
/// opens, in order: the upgrade's admission, then a namespace's join key.
/// What is left for the owner (ephemeral keys) comes back as the
/// `KeyCheck`.
pub fn admit_join(
    shard: &Shard,
    ip: IpKey,
    channel: &str,
    options: &JoinOptions,
) -> Result<KeyCheck, Refused> {
    shard.admit_upgrade(ip)?;
    if !shard.backplane_ready() {
        let why = UpgradeRefusal::BackplaneUnavailable;
        shard.counters().count_upgrade_refused(why);
        return Err(Refused {
            why,
            retry_after_secs: Some(1),
        });
    }
    let namespaces = shard.namespaces();
    match namespaces.covering(channel) {
        Some(keys) if !keys.may_join(options.join_key.as_deref()) => {
            let why = UpgradeRefusal::JoinKey;
            shard.counters().count_upgrade_refused(why);
            Err(Refused {
                why,
                retry_after_secs: None,
            })
        }
        Some(keys) => Ok(KeyCheck::Namespace {
            may_send: keys.may_send(options.send_key.as_deref()),
        }),
        None => Ok(KeyCheck::Ephemeral(Keys {
            join_key: options.join_key.as_deref().map(Into::into),
            send_key: options.send_key.as_deref().map(Into::into),
        })),
    }
}

/// Step 4's rule, on the owner: what a join's keys allow. (Not
/// `PartialEq`: it holds keys.)
#[derive(Debug)]
pub enum Decision {
    /// The join key did not open the channel's ephemeral keys.
    Refuse,
    /// Join; `keys_if_new` become the channel's keys if this join creates
    /// it. Keys are checked first: a refused join neither creates nor
    /// changes a channel.
    Admit { may_send: bool, keys_if_new: Keys },
}

/// Decides a join against the channel's ephemeral keys (`existing`: `None`
/// when the join creates the channel). The creator sets the keys it
/// offered, and may send.
pub fn decide(existing: Option<&Keys>, keys: KeyCheck) -> Decision {
    match (keys, existing) {
        (KeyCheck::Namespace { may_send }, _) => Decision::Admit {
            may_send,
            keys_if_new: Keys::default(),
        },
        (KeyCheck::Ephemeral(offered), Some(held)) => {
            if !held.may_join(offered.join_key.as_deref()) {
                Decision::Refuse
            } else {
                Decision::Admit {
                    may_send: held.may_send(offered.send_key.as_deref()),
                    keys_if_new: Keys::default(),
                }
            }
        }
        (KeyCheck::Ephemeral(offered), None) => Decision::Admit {
            may_send: true,
            keys_if_new: offered,
        },
    }
}

impl Shard {
    /// Step 3: asks the channel's owner to add `conn`; the answer arrives
    /// as `Joined` or `JoinRefused`.
    pub fn join(
        &self,
        channel: &str,
        conn: &Rc<ConnHandle>,
        options: &JoinOptions,
        keys: KeyCheck,
    ) {
        self.home.await_join(conn);
        let request = Box::new(JoinRequest {
            channel: channel.into(),
            conn: conn.id(),
            uid: conn.uid(),
            alias_json: options.alias.as_deref().map(envelope::alias_json),
            announce: options.announce,
            list: options.list,
            keys,
            deflate: conn.deflate_window(),
        });
        self.send(self.router.channel_owner(channel), ShardMsg::Join(request));
        self.dispatch();
    }

    /// Step 5b: the owner added the member.
    pub(super) fn joined(
        &self,
        conn_id: ConnId,
        token: ChannelToken,
        frame: Bytes,
        may_send: bool,
    ) {
        match self.home.joined(conn_id) {
            Some(conn) if conn.ended().is_none() => {
                self.home.subscribe(token, &conn);
                self.deliver(&conn, frame);
                conn.set_joined(token, may_send);
            }
            // It ended while the join was in flight: undo the join.
            _ => self.send(
                self.router.token_owner(token),
                ShardMsg::Leave {
                    token,
                    conn: conn_id,
                },
            ),
        }
    }

    /// Step 5a: the owner refused the join key (or, in a cluster, could
    /// not ask the engine: 503 with `Retry-After`).
    pub(super) fn join_refused(&self, conn: ConnId, why: UpgradeRefusal) {
        if let Some(conn) = self.home.joined(conn) {
            let retry_after = (why != UpgradeRefusal::JoinKey).then_some(1);
            conn.refuse(why.response(retry_after).to_bytes(false));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(join: Option<&str>, send: Option<&str>) -> Keys {
        Keys {
            join_key: join.map(Into::into),
            send_key: send.map(Into::into),
        }
    }

    #[test]
    fn a_namespace_decided_at_home_is_never_checked_again() {
        let held = keys(Some("j"), None);
        let d = decide(Some(&held), KeyCheck::Namespace { may_send: false });
        assert!(
            matches!(d, Decision::Admit { may_send: false, keys_if_new } if keys_if_new.join_key.is_none())
        );
    }

    #[test]
    fn the_creator_sets_the_keys_and_may_send() {
        let d = decide(None, KeyCheck::Ephemeral(keys(Some("j"), Some("s"))));
        match d {
            Decision::Admit {
                may_send,
                keys_if_new,
            } => {
                assert!(may_send);
                assert!(keys_if_new.may_join(Some("j")) && !keys_if_new.may_join(None));
            }
            Decision::Refuse => panic!("the creator is admitted"),
        }
    }

    #[test]
    fn later_joins_need_the_join_key_and_the_send_key_to_send() {
        let held = keys(Some("j"), Some("s"));
        let ephemeral = |j, s| KeyCheck::Ephemeral(keys(j, s));
        assert!(matches!(
            decide(Some(&held), ephemeral(None, None)),
            Decision::Refuse
        ));
        assert!(matches!(
            decide(Some(&held), ephemeral(Some("x"), None)),
            Decision::Refuse
        ));
        assert!(matches!(
            decide(Some(&held), ephemeral(Some("j"), None)),
            Decision::Admit {
                may_send: false,
                ..
            }
        ));
        assert!(matches!(
            decide(Some(&held), ephemeral(Some("j"), Some("s"))),
            Decision::Admit { may_send: true, .. }
        ));
    }
}
