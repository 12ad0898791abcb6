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
    // Linux copies TCP_NODELAY to every socket accepted from this one, so
    // no connection sets it again (a system call per join saved).
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    // The shard's accept loop accepts without waiting, and waits for an
    // empty backlog with a readiness poll.
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    #[test]
    fn accepted_sockets_inherit_nodelay_and_the_listener_does_not_block() {
        let listeners = bind_all("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        assert_eq!(listeners[1].local_addr().unwrap(), addr, "one port");
        let err = listeners[0].accept().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        let _client = TcpStream::connect(addr).unwrap();
        let accepted = (0..200)
            .find_map(|_| {
                let got = listeners.iter().find_map(|l| l.accept().ok());
                if got.is_none() {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                got
            })
            .expect("the connection was accepted");
        assert!(accepted.0.nodelay().unwrap(), "TCP_NODELAY inherited");
    }
}
