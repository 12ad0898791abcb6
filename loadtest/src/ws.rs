//! The minimum of WebSocket a load generator needs, written by hand so that
//! the generator spends its cycles on the relay's traffic and not on a
//! general-purpose library: the client handshake with a fixed key, masked
//! client frames, and a scanner that walks server frame headers in a read
//! buffer without parsing the JSON inside.

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::net::{SocketAddr, ToSocketAddrs};

/// A fixed `Sec-WebSocket-Key` (RFC 6455's own example) and the accept value
/// the server must answer with, so no SHA-1 is needed here.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The fixed mask of every client frame. RFC 6455 wants an unpredictable mask
/// against cache poisoning by intermediaries; a load generator talking to its
/// own relay does not need that, and a fixed one lets frames be precomputed.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xa;

/// Where the relay is: `ws://host[:port][/prefix]` or `wss://...`.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `wss://`: TLS to the relay.
    pub tls: bool,
    /// The host without its port (the TLS server name).
    pub server_name: String,
    /// The `Host` header: as written in the URL.
    pub host: String,
    /// A path prefix before `/c/<channel>` (empty for a relay at the root).
    pub prefix: String,
}

impl Target {
    pub fn parse(url: &str) -> anyhow::Result<Target> {
        let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => anyhow::bail!("only ws:// and wss:// URLs are supported (got {url:?})"),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            anyhow::bail!("no host in {url:?}");
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:{}", if tls { 443 } else { 80 })
        };
        let server_name = match authority.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => host,
            _ => authority,
        }
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| anyhow::anyhow!("cannot resolve {authority:?}: {e}"))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{authority:?} resolves to no address"))?;
        Ok(Target {
            addr,
            tls,
            server_name,
            host: authority.to_owned(),
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// Why a connection did not become a member.
#[derive(Debug)]
pub enum SetupError {
    Connect(String),
    Io(String),
    /// The relay answered, but not with `101`: the status line.
    Refused(String),
    BadHandshake(String),
    Timeout(&'static str),
    /// The connection ended before the member's own join event.
    ClosedBeforeJoin(String),
}

impl SetupError {
    /// A short label to group failures by in the report.
    pub fn label(&self) -> String {
        match self {
            SetupError::Connect(e) => format!("connect: {e}"),
            SetupError::Io(e) => format!("i/o during handshake: {e}"),
            SetupError::Refused(status) => format!("refused: {status}"),
            SetupError::BadHandshake(why) => format!("bad handshake: {why}"),
            SetupError::Timeout(phase) => format!("timeout: {phase}"),
            SetupError::ClosedBeforeJoin(why) => format!("closed before own join: {why}"),
        }
    }
}

/// Sends the upgrade request and reads the response head into `buf`.
/// Returns `(head_len, filled)`: bytes `buf[head_len..filled]` are already
/// WebSocket frames (the join event often rides in the same segment).
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    buf: &mut [u8],
) -> Result<(usize, usize), SetupError> {
    stream
        .write_all(request)
        .await
        .map_err(|e| SetupError::Io(e.to_string()))?;
    let mut filled = 0;
    loop {
        if filled == buf.len() || filled > 16 * 1024 {
            return Err(SetupError::BadHandshake("response head too large".into()));
        }
        let n = stream
            .read(&mut buf[filled..])
            .await
            .map_err(|e| SetupError::Io(e.to_string()))?;
        if n == 0 {
            return Err(SetupError::BadHandshake(
                "connection closed during the handshake".into(),
            ));
        }
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[..filled]) {
            Ok(httparse::Status::Partial) => continue,
            Err(e) => {
                return Err(SetupError::BadHandshake(format!(
                    "unparsable response: {e}"
                )))
            }
            Ok(httparse::Status::Complete(head_len)) => {
                let code = response.code.unwrap_or(0);
                if code != 101 {
                    return Err(SetupError::Refused(format!(
                        "{} {}",
                        code,
                        response.reason.unwrap_or("")
                    )));
                }
                let accept = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                    .map(|h| h.value);
                if accept != Some(ACCEPT.as_bytes()) {
                    return Err(SetupError::BadHandshake(
                        "missing or wrong Sec-WebSocket-Accept".into(),
                    ));
                }
                return Ok((head_len, filled));
            }
        }
    }
}

/// Appends one complete masked client frame (FIN set) to `out`.
/// Makes room in a read buffer holding unread bytes at `start..filled`:
/// forgets them all when everything was read, and moves them to the front
/// when the buffer is full. Still full afterwards: one frame is larger than
/// the buffer.
pub fn compact(buf: &mut [u8], start: &mut usize, filled: &mut usize) {
    if *start == *filled {
        (*start, *filled) = (0, 0);
    } else if *filled == buf.len() {
        buf.copy_within(*start..*filled, 0);
        *filled -= *start;
        *start = 0;
    }
}

pub fn client_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    client_frame_parts(opcode, &[payload], out);
}

/// Appends one masked client frame whose payload is `parts` one after the
/// other (no intermediate buffer).
pub fn client_frame_parts(opcode: u8, parts: &[&[u8]], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    let start = out.len();
    for p in parts {
        out.extend_from_slice(p);
    }
    mask_in_place(&mut out[start..]);
}

/// Appends one unmasked server frame (FIN set): for the `ceiling` server.
pub fn server_frame(opcode: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// XORs `data` with the fixed mask, starting at mask offset 0.
pub fn mask_in_place(data: &mut [u8]) {
    let word = u32::from_ne_bytes(MASK);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= MASK[i];
    }
}

/// One frame header found in a buffer.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub opcode: u8,
    /// RSV1: the message is compressed (permessage-deflate, RFC 7692).
    pub rsv1: bool,
    pub header_len: usize,
    pub payload_len: usize,
    /// A masked server frame is a protocol violation, but unmask it anyway.
    pub mask: Option<[u8; 4]>,
}

/// Reads a frame header at the start of `b`, or `None` if `b` holds less
/// than the whole header. Server frames have 2, 4 or 10-byte headers.
#[inline]
pub fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (mut header_len, payload_len) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return None;
            }
            (4, u16::from_be_bytes([b[2], b[3]]) as usize)
        }
        127 => {
            if b.len() < 10 {
                return None;
            }
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (10, u64::from_be_bytes(n) as usize)
        }
        n => (2, n as usize),
    };
    let mask = if masked {
        if b.len() < header_len + 4 {
            return None;
        }
        let m = [
            b[header_len],
            b[header_len + 1],
            b[header_len + 2],
            b[header_len + 3],
        ];
        header_len += 4;
        Some(m)
    } else {
        None
    };
    Some(Header {
        opcode,
        rsv1: b[0] & 0x40 != 0,
        header_len,
        payload_len,
        mask,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_headers_round_trip() {
        for len in [0usize, 5, 125, 126, 1000, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            client_frame(OP_TEXT, &payload, &mut out);
            let h = parse_header(&out).unwrap();
            assert_eq!(h.opcode, OP_TEXT);
            assert_eq!(h.payload_len, len);
            assert_eq!(h.mask, Some(MASK));
            let mut body = out[h.header_len..].to_vec();
            mask_in_place(&mut body);
            assert_eq!(body, payload);
        }
    }
}
