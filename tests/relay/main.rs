//! Integration tests: the real server (2 shards, ephemeral port) and real
//! clients over loopback. One binary; the shared boot helper is `support`.

mod support;

mod binary;
mod cross_shard;
mod endpoints;
mod faults;
mod node_client;
mod protocol;
mod scale;
