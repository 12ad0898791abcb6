//! Opening connections: from a chosen source address (so that many
//! connections to one relay port pass the ephemeral-port limit of one source
//! IP, and per-IP limits see many IPs), and the open-file limit they need.

use crate::ws::SetupError;
use glommio::net::TcpStream;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::FromRawFd;
use std::time::Duration;

/// Source addresses given with `--source-ips`: connection i binds
/// `ips[i % len]` before connecting; empty = let the kernel choose.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceIps(pub Vec<Ipv4Addr>);

impl SourceIps {
    pub fn for_conn(&self, i: usize) -> Option<Ipv4Addr> {
        (!self.0.is_empty()).then(|| self.0[i % self.0.len()])
    }

    /// `127.0.0.1`, `127.0.0.2-127.0.0.9`, or a count `N` for
    /// `127.0.0.1..=127.0.0.N` (at most 254).
    pub fn describe(&self) -> String {
        match self.0.as_slice() {
            [] => "kernel's choice".to_owned(),
            [one] => one.to_string(),
            [first, .., last] => format!("{first}-{last} ({})", self.0.len()),
        }
    }

    /// Enough loopback source addresses for `conns` connections to one
    /// port, at `per_ip` each (`auto`): one per `per_ip`, at least `min`.
    pub fn auto(conns: usize, per_ip: usize, min: usize) -> SourceIps {
        let n = conns.div_ceil(per_ip.max(1)).max(min).clamp(1, 254);
        SourceIps((1..=n as u8).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect())
    }
}

/// `--source-ips` as given: `auto`, or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Auto,
    Ips(SourceIps),
}

/// Parses `--source-ips`: `auto`, a count, an address, or a range of
/// addresses that differ in their last byte.
pub fn parse_source_ips(s: &str) -> Result<SourceSpec, String> {
    let s = s.trim();
    if s == "auto" {
        return Ok(SourceSpec::Auto);
    }
    if let Ok(n) = s.parse::<u8>() {
        if n == 0 || n == 255 {
            return Err("a count of source IPs must be 1 to 254".into());
        }
        return Ok(SourceSpec::Ips(SourceIps::auto(n as usize, 1, 1)));
    }
    let bad = || format!("bad --source-ips {s:?}: expected auto, N, A.B.C.D or A.B.C.D-A.B.C.E");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
    let b: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
    let (oa, ob) = (a.octets(), b.octets());
    if oa[..3] != ob[..3] || oa[3] > ob[3] {
        return Err(bad());
    }
    Ok(SourceSpec::Ips(SourceIps(
        (oa[3]..=ob[3])
            .map(|d| Ipv4Addr::new(oa[0], oa[1], oa[2], d))
            .collect(),
    )))
}

/// Connects to `to`, from `from` when given (bound with
/// `IP_BIND_ADDRESS_NO_PORT`, so the port is chosen per destination at
/// connect time and the 4-tuple, not the source port alone, must be unique).
pub async fn connect(
    to: SocketAddr,
    from: Option<Ipv4Addr>,
    timeout: Duration,
) -> Result<TcpStream, SetupError> {
    let Some(from) = from else {
        return TcpStream::connect_timeout(to, timeout)
            .await
            .map_err(|e| SetupError::Connect(e.to_string()));
    };
    let SocketAddr::V4(to) = to else {
        return Err(SetupError::Connect(
            "--source-ips needs an IPv4 relay address".into(),
        ));
    };
    // A blocking socket whose connect is started non-blocking: io_uring
    // then waits for the connection on the first send (the handshake).
    let fd = bind_and_start_connect(from, to).map_err(|e| SetupError::Connect(e.to_string()))?;
    // SAFETY: fd is a fresh TCP socket that we own.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    Ok(stream)
}

fn bind_and_start_connect(from: Ipv4Addr, to: std::net::SocketAddrV4) -> std::io::Result<i32> {
    let err = std::io::Error::last_os_error;
    // SAFETY: plain syscalls on a socket we create and close on error.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(err());
        }
        let fail = |fd: i32| {
            let e = err();
            libc::close(fd);
            Err(e)
        };
        let one: libc::c_int = 1;
        let optlen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let opt = (&one as *const libc::c_int).cast();
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            opt,
            optlen,
        );
        libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, opt, optlen);
        let local = sockaddr(from, 0);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return fail(fd);
        }
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        let remote = sockaddr(*to.ip(), to.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0
            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINPROGRESS)
        {
            return fail(fd);
        }
        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        Ok(fd)
    }
}

fn sockaddr(ip: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    }
}

/// Raises the open-file limit: the soft limit to the hard one, and the hard
/// one too when `needed` exceeds it and the process may (root). Returns the
/// soft limit now in force; a run that needs more fails later, by reason.
pub fn raise_fd_limit(needed: u64) -> u64 {
    // SAFETY: rlimit is plain data; get/setrlimit read or write it.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_max < needed {
            let mut more = lim;
            more.rlim_max = needed;
            more.rlim_cur = needed;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &more) == 0 {
                return needed;
            }
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

/// Raises the limit and says on stderr what the run got; warns when it is
/// less than `needed`.
pub fn ensure_fd_limit(needed: u64) -> u64 {
    let got = raise_fd_limit(needed);
    if got < needed {
        eprintln!(
            "WARNING: open-file limit is {got}, the run needs about {needed}: connections past \
             it fail with `Too many open files` (raise it: ulimit -Hn, or run as root)"
        );
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ip_specs() {
        assert_eq!(parse_source_ips("auto"), Ok(SourceSpec::Auto));
        let ips = |s| match parse_source_ips(s).unwrap() {
            SourceSpec::Ips(ips) => ips,
            SourceSpec::Auto => panic!("auto"),
        };
        let three = ips("3");
        assert_eq!(three.0.len(), 3);
        assert_eq!(three.for_conn(4), Some(Ipv4Addr::new(127, 0, 0, 2)));
        let range = ips("127.0.0.10-127.0.0.12");
        assert_eq!(range.describe(), "127.0.0.10-127.0.0.12 (3)");
        assert!(parse_source_ips("127.0.0.9-127.0.0.1").is_err());
        assert!(parse_source_ips("127.0.0.1-127.0.1.1").is_err());
        assert!(parse_source_ips("0").is_err());
        assert_eq!(SourceIps::default().for_conn(3), None);
    }

    #[test]
    fn auto_source_ips_cover_the_ports() {
        assert_eq!(SourceIps::auto(100_000, 20_000, 1).0.len(), 5);
        assert_eq!(SourceIps::auto(10, 20_000, 8).0.len(), 8);
        assert_eq!(SourceIps::auto(10_000_000, 1, 1).0.len(), 254);
    }
}
