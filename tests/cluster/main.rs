//! Cluster tests: a real `redis-server` (started here on an ephemeral
//! loopback port, stopped after) and several relay nodes with two shards
//! each, with clients on different nodes. One binary; the relay tests'
//! boot helper and run log are shared with `tests/relay`.

#[path = "../relay/run_log.rs"]
mod run_log;
#[path = "../relay/support/mod.rs"]
#[allow(unused_imports)]
mod support;

mod engine;
mod harness;
mod proxy;

mod faults;
mod hygiene;
mod no_loss;
mod node_client;
mod protocol;
