//! Listening sockets: one per shard, all bound to the same address with
//! SO_REUSEPORT so the kernel spreads incoming connections over the shards.
//! Created on the main thread (so the first bind fixes the port, even for
//! port 0) and handed to each shard.

use crate::limits::LISTEN_BACKLOG;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{SocketAddr, TcpListener};

/// Binds `count` listeners on `addr`; with port 0 the first one picks the
/// port and the others join it.
pub fn bind_all(addr: SocketAddr, count: usize) -> std::io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let listener = bind_one(addr)?;
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    // The shard's accept loop accepts without waiting, and waits for an
    // empty backlog with a readiness poll.
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
