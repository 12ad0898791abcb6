//! Clocks, cpu accounting and pinning: the small pieces of the OS the
//! generator needs to say whether its own figures can be trusted.

use std::sync::OnceLock;
use std::time::Instant;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Sets the process-wide time origin; call once before any executor starts.
pub fn init_clock() {
    BASE.get_or_init(Instant::now);
}

/// Monotonic nanoseconds since `init_clock`, the same on every thread, so a
/// time stamped by a publisher on one core compares with a receive time on
/// another.
#[inline]
pub fn now_ns() -> u64 {
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn timeval_ns(tv: libc::timeval) -> u64 {
    tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1_000
}

fn rusage_ns(who: libc::c_int) -> u64 {
    // SAFETY: rusage is plain data; getrusage only writes into it.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(who, &mut ru) != 0 {
            return 0;
        }
        timeval_ns(ru.ru_utime) + timeval_ns(ru.ru_stime)
    }
}

/// User + system cpu time of the calling thread, in ns.
pub fn thread_cpu_ns() -> u64 {
    rusage_ns(libc::RUSAGE_THREAD)
}

/// User + system cpu time of the whole process, in ns.
pub fn process_cpu_ns() -> u64 {
    rusage_ns(libc::RUSAGE_SELF)
}

/// User + system cpu time of another process (all its threads), in ns, from
/// `/proc/PID/stat` (clock-tick resolution, usually 10 ms).
pub fn pid_cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| anyhow::anyhow!("cannot read /proc/{pid}/stat: {e}"))?;
    // The command name (field 2) may hold spaces: fields after the last ')'.
    let after = text
        .rsplit_once(')')
        .map(|(_, a)| a)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("unexpected /proc/{pid}/stat"))
    };
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(total * 1_000_000_000 / hz)
}

/// The cpus this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins the calling thread to `cpus` (the main thread, so that its little
/// work stays off the relay's cpus).
pub fn pin_current_thread(cpus: &[usize]) -> anyhow::Result<()> {
    // SAFETY: as above; sched_setaffinity reads the set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            anyhow::bail!(
                "sched_setaffinity({cpus:?}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// A list of cpus as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses a cpu list: `1`, `0,1`, `0-3`, `0,2-3`.
pub fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad cpu list {s:?}: expected e.g. 1 or 0,1 or 0-3");
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err(format!("empty cpu list {s:?}"));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = out.iter().find(|c| !seen.insert(**c)) {
        return Err(format!("cpu {dup} listed twice in {s:?}"));
    }
    Ok(CpuList(out))
}

/// Machine load averages (1, 5, 15 min) from /proc/loadavg.
pub fn loadavg() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// A plain HTTP/1.1 GET from the main thread (2 s timeouts): the body of a
/// `200` response, else `None`. For the relay's `/metrics`.
pub fn http_get(addr: std::net::SocketAddr, host: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(2);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: itty-loadtest\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.take(16 << 20).read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The values of one Prometheus metric family, by its `shard` label (in
/// label order as printed), e.g. `itty_forwards_total`.
pub fn metric_values(text: &str, name: &str) -> Vec<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            l.rsplit(' ').next()?.parse::<f64>().ok().map(|v| v as u64)
        })
        .collect()
}

/// Resident memory of a process, in bytes (`VmRSS` of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// From /proc/net/sockstat: TCP sockets in use and TCP memory in pages
/// (the whole host's, both ends of every loopback connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SockStat {
    pub tcp_inuse: u64,
    pub tcp_mem_pages: u64,
}

pub fn sockstat() -> Option<SockStat> {
    parse_sockstat(&std::fs::read_to_string("/proc/net/sockstat").ok()?)
}

pub fn parse_sockstat(text: &str) -> Option<SockStat> {
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == name)?;
        words.get(i + 1)?.parse().ok()
    };
    Some(SockStat {
        tcp_inuse: field("inuse")?,
        tcp_mem_pages: field("mem")?,
    })
}

/// The page size (sockstat counts memory in pages).
pub fn page_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("1"), Ok(CpuList(vec![1])));
        assert_eq!(parse_cpu_list("0,1"), Ok(CpuList(vec![0, 1])));
        assert_eq!(parse_cpu_list("0,2-4"), Ok(CpuList(vec![0, 2, 3, 4])));
        assert!(parse_cpu_list("1,1").is_err());
        assert!(parse_cpu_list("").is_err());
        assert!(parse_cpu_list("x").is_err());
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let pid = std::process::id();
        assert!(pid_cpu_ns(pid).is_ok());
    }

    #[test]
    fn sockstat_and_metrics_parse() {
        let text =
            "sockets: used 300\nTCP: inuse 12 orphan 0 tw 3 alloc 15 mem 7\nUDP: inuse 1 mem 0\n";
        assert_eq!(
            parse_sockstat(text),
            Some(SockStat {
                tcp_inuse: 12,
                tcp_mem_pages: 7
            })
        );
        let m = "# TYPE itty_forwards_total counter\nitty_forwards_total{shard=\"0\"} 5\n\
                 itty_forwards_total{shard=\"1\"} 7\nitty_forwards_totalx 9\n";
        assert_eq!(metric_values(m, "itty_forwards_total"), vec![5, 7]);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
