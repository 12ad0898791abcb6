//! Integration tests: the real server (2 shards, ephemeral port) and real
//! clients over loopback. One binary; the shared boot helper is `support`.

mod run_log;
mod support;

mod access;
mod binary;
mod cross_shard;
mod deflate;
mod edges;
mod endpoints;
mod faults;
mod limits;
mod no_listing;
mod no_loss;
mod node_client;
mod pages;
mod protocol;
mod push;
mod scale;
mod security;
mod tls;
