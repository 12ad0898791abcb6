//! Parsing of an HTTP/1.x request head (request line and headers) with
//! `httparse`, under the caller's size and header-count limits
//! (docs/PROTOCOL.md section 8: 8 KiB and 64 headers by default).
//!
//! Pure: it looks at a byte buffer the caller has read so far and says
//! "incomplete", "here is the head", or why the peer must be dropped. No I/O,
//! and it never panics on peer input.

/// Limits on a request head, chosen by the caller's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Largest head accepted, counting the final CRLFCRLF.
    pub head_bytes_max: usize,
    /// Most headers accepted. Capped at [`HEADERS_MAX_SUPPORTED`].
    pub headers_max: usize,
}

/// Ceiling on `HeadLimits::headers_max`: the header slots live on the stack,
/// so a configured value above this is treated as this.
pub const HEADERS_MAX_SUPPORTED: usize = 128;

/// Why a request head was refused; every case ends the connection.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum HeadError {
    TooLarge,
    TooManyHeaders,
    Malformed,
}

impl HeadError {
    /// The status it is answered with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Malformed => 400,
        }
    }

    /// The response body: a fixed sentence, no user data.
    pub fn text(self) -> &'static [u8] {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => b"request head too large\n",
            HeadError::Malformed => b"malformed request\n",
        }
    }
}

/// An owned, parsed request head: one copy of its bytes and where each
/// part lies in them (two allocations, however many headers it has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The head's bytes, header names lower-cased in place.
    raw: Box<[u8]>,
    method: Span,
    target: Span,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub version_minor: u8,
    /// Each header's name and value, in the order sent.
    headers: Vec<(Span, Span)>,
}

/// Where a part of the head lies in `RequestHead::raw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    /// The span of `part`, a slice of `within` (an empty part may point
    /// anywhere, so it is given as empty at the start).
    fn of(part: &[u8], within: &[u8]) -> Span {
        if part.is_empty() {
            return Span { start: 0, end: 0 };
        }
        let start = part.as_ptr() as usize - within.as_ptr() as usize;
        debug_assert!(start + part.len() <= within.len());
        Span {
            start,
            end: start + part.len(),
        }
    }
}

impl RequestHead {
    /// A head from its parts, as `parse_head` would return it for the same
    /// request: names lower-cased, values as given.
    pub fn new(method: &str, target: &str, version_minor: u8, headers: &[(&str, &[u8])]) -> Self {
        let mut raw = Vec::new();
        let mut push = |part: &[u8]| {
            let start = raw.len();
            raw.extend_from_slice(part);
            Span {
                start,
                end: raw.len(),
            }
        };
        let method = push(method.as_bytes());
        let target = push(target.as_bytes());
        let headers = headers
            .iter()
            .map(|(name, value)| (push(name.to_ascii_lowercase().as_bytes()), push(value)))
            .collect();
        RequestHead {
            raw: raw.into(),
            method,
            target,
            version_minor,
            headers,
        }
    }

    /// The method as sent, e.g. `GET` (methods are case-sensitive).
    pub fn method(&self) -> &str {
        self.text(self.method)
    }

    /// The raw request target, still percent-encoded, query included.
    pub fn target(&self) -> &str {
        self.text(self.target)
    }

    /// Every header: its name lower-cased, its value as raw bytes (HTTP does
    /// not promise UTF-8 there), in the order sent.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> {
        self.headers
            .iter()
            .map(|&(name, value)| (self.text(name), self.bytes(value)))
    }

    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers_named(name).next()
    }

    /// The first header called `name`, trimmed, if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        let value = std::str::from_utf8(self.header(name)?).ok()?;
        Some(value.trim_matches(|c| c == ' ' || c == '\t'))
    }

    /// Whether `token` appears (case-insensitive) in the comma-separated
    /// lists of every header called `name`. Repeated headers count as one
    /// list, as RFC 9110 5.3 allows a sender to split a list that way.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers_named(name).any(|value| {
            value
                .split(|&b| b == b',')
                .any(|item| trim_ows(item).eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    /// Whether the client wants the connection kept open after the response
    /// (RFC 9112 9.3): persistent by default from HTTP/1.1 on, opt-in before.
    pub fn keep_alive(&self) -> bool {
        if self.version_minor >= 1 {
            !self.has_token("connection", "close")
        } else {
            self.has_token("connection", "keep-alive")
        }
    }

    /// The values of every header called `name` (case-insensitive), in the
    /// order sent.
    pub fn headers_named<'s, 'n>(&'s self, name: &'n str) -> impl Iterator<Item = &'s [u8]> + 'n
    where
        's: 'n,
    {
        self.headers
            .iter()
            .filter(move |(n, _)| self.bytes(*n).eq_ignore_ascii_case(name.as_bytes()))
            .map(|&(_, v)| self.bytes(v))
    }

    fn bytes(&self, span: Span) -> &[u8] {
        &self.raw[span.start..span.end]
    }

    /// A part httparse gave as `str` (the method, the target, a name), or
    /// that `new` took as one: UTF-8 by construction, so the fallback is
    /// never taken.
    fn text(&self, span: Span) -> &str {
        std::str::from_utf8(self.bytes(span)).unwrap_or_default()
    }
}

fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// Parses the request head at the start of `buf`.
///
/// `Ok(None)`: incomplete and still under the limit, read more.
/// `Ok(Some((head, consumed)))`: `consumed` is the head's length including
/// the final CRLFCRLF; whatever follows (a body, early WebSocket frames)
/// starts at `buf[consumed..]`.
///
/// Errors: [`HeadError::TooLarge`] when the head is not complete within
/// `head_bytes_max` bytes, [`HeadError::TooManyHeaders`] past
/// `headers_max`, [`HeadError::Malformed`] for anything else httparse
/// rejects.
pub fn parse_head(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    // Parsing only the first `head_bytes_max` bytes bounds the work per call
    // and makes "complete but too long" the same case as "incomplete at the
    // limit".
    let window = &buf[..buf.len().min(limits.head_bytes_max)];
    // Uninitialised: httparse writes the slots it fills, so a parse does
    // not first zero 4 KiB of them (each read of a head parses again).
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; HEADERS_MAX_SUPPORTED];
    let slots = &mut slots[..limits.headers_max.min(HEADERS_MAX_SUPPORTED)];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(window, slots) {
        Ok(httparse::Status::Complete(consumed)) => {
            let method = req.method.ok_or(HeadError::Malformed)?;
            let target = req.path.ok_or(HeadError::Malformed)?;
            let version_minor = req.version.ok_or(HeadError::Malformed)?;
            let within = &window[..consumed];
            let headers: Vec<(Span, Span)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        Span::of(h.name.as_bytes(), within),
                        Span::of(h.value, within),
                    )
                })
                .collect();
            let mut raw: Box<[u8]> = within.into();
            for (name, _) in &headers {
                raw[name.start..name.end].make_ascii_lowercase();
            }
            let head = RequestHead {
                raw,
                method: Span::of(method.as_bytes(), within),
                target: Span::of(target.as_bytes(), within),
                version_minor,
                headers,
            };
            Ok(Some((head, consumed)))
        }
        Ok(httparse::Status::Partial) if window.len() >= limits.head_bytes_max => {
            Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
        Err(_) => Err(HeadError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        head_bytes_max: 8192,
        headers_max: 64,
    };

    const UPGRADE: &[u8] = b"GET /c/my%20chan?as=Al&echo=true HTTP/1.1\r\n\
        Host: example.com\r\n\
        Upgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn parse_ok(bytes: &[u8]) -> RequestHead {
        parse_head(bytes, &LIMITS).unwrap().unwrap().0
    }

    fn head_with(version_minor: u8, headers: &[(&str, &str)]) -> RequestHead {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        RequestHead::new("GET", "/", version_minor, &headers)
    }

    #[test]
    fn complete_head_in_one_buffer_is_parsed() {
        let (head, consumed) = parse_head(UPGRADE, &LIMITS).unwrap().unwrap();
        assert_eq!(consumed, UPGRADE.len());
        assert_eq!(head.method(), "GET");
        assert_eq!(head.target(), "/c/my%20chan?as=Al&echo=true");
        assert_eq!(head.version_minor, 1);
        assert_eq!(head.headers().len(), 5);
        assert_eq!(head.headers().nth(1), Some(("upgrade", &b"websocket"[..])));
    }

    #[test]
    fn names_are_lower_cased_values_kept_and_empty_values_read() {
        let head = parse_ok(b"GET / HTTP/1.1\r\nX-Mixed: VaLue\r\nX-Empty:\r\nX-Last: z\r\n\r\n");
        let headers: Vec<_> = head.headers().collect();
        assert_eq!(
            headers,
            [
                ("x-mixed", &b"VaLue"[..]),
                ("x-empty", &b""[..]),
                ("x-last", &b"z"[..])
            ]
        );
        assert_eq!(head.header("X-EMPTY"), Some(&b""[..]));
    }

    #[test]
    fn head_split_at_every_offset_is_incomplete_until_whole() {
        let whole = parse_head(UPGRADE, &LIMITS);
        assert!(matches!(whole, Ok(Some(_))));
        for cut in 0..UPGRADE.len() {
            assert_eq!(
                parse_head(&UPGRADE[..cut], &LIMITS),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert_eq!(parse_head(UPGRADE, &LIMITS), whole);
    }

    #[test]
    fn bytes_after_the_head_are_not_consumed() {
        let mut buf = UPGRADE.to_vec();
        buf.extend_from_slice(&[0x81, 0x85, 1, 2, 3, 4]);
        let (_, consumed) = parse_head(&buf, &LIMITS).unwrap().unwrap();
        assert_eq!(consumed, UPGRADE.len());
        assert_eq!(&buf[consumed..], &[0x81, 0x85, 1, 2, 3, 4]);
    }

    #[test]
    fn incomplete_head_at_the_limit_is_too_large() {
        let limits = HeadLimits {
            head_bytes_max: 64,
            headers_max: 64,
        };
        let mut buf = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
        buf.resize(63, b'a');
        assert_eq!(parse_head(&buf, &limits), Ok(None));
        buf.push(b'a');
        assert_eq!(parse_head(&buf, &limits), Err(HeadError::TooLarge));
    }

    #[test]
    fn complete_head_longer_than_the_limit_is_too_large() {
        let limits = HeadLimits {
            head_bytes_max: UPGRADE.len() - 1,
            headers_max: 64,
        };
        assert_eq!(parse_head(UPGRADE, &limits), Err(HeadError::TooLarge));
        let exact = HeadLimits {
            head_bytes_max: UPGRADE.len(),
            headers_max: 64,
        };
        assert!(parse_head(UPGRADE, &exact).unwrap().is_some());
    }

    #[test]
    fn more_headers_than_the_limit_is_refused() {
        let build = |n: usize| {
            let mut buf = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..n {
                buf.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
            }
            buf.extend_from_slice(b"\r\n");
            buf
        };
        assert_eq!(parse_ok(&build(64)).headers().len(), 64);
        assert_eq!(
            parse_head(&build(65), &LIMITS),
            Err(HeadError::TooManyHeaders)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET /\xff\xfe HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse_head(bad, &LIMITS),
                Err(HeadError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn header_lookup_is_case_insensitive() {
        let head = parse_ok(UPGRADE);
        assert_eq!(head.header("SEC-WEBSOCKET-VERSION"), Some(&b"13"[..]));
        assert_eq!(
            head.header_str("sec-websocket-key"),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );
        assert_eq!(head.header("x-missing"), None);
    }

    #[test]
    fn header_str_trims_and_rejects_invalid_utf8() {
        let head = RequestHead::new(
            "GET",
            "/",
            1,
            &[("X-A", b" \tpadded\t "), ("x-b", &[0xff, 0xfe])],
        );
        assert_eq!(head.header_str("x-a"), Some("padded"));
        assert_eq!(head.header_str("x-b"), None);
        assert_eq!(head.header("x-b"), Some(&[0xff, 0xfe][..]));
    }

    #[test]
    fn has_token_reads_lists_and_repeated_headers() {
        let head = head_with(
            1,
            &[
                ("Connection", "keep-alive , UPGRADE"),
                ("Connection", "x"),
                ("Upgrade", "h2c"),
            ],
        );
        assert!(head.has_token("connection", "upgrade"));
        assert!(head.has_token("Connection", "Keep-Alive"));
        assert!(head.has_token("connection", "x"));
        assert!(!head.has_token("connection", "close"));
        assert!(!head.has_token("connection", "keep"));
        assert!(!head.has_token("upgrade", "websocket"));

        let repeated = head_with(1, &[("Upgrade", "h2c"), ("upgrade", "websocket")]);
        assert!(repeated.has_token("upgrade", "websocket"));
    }

    #[test]
    fn keep_alive_follows_version_defaults() {
        assert!(head_with(1, &[]).keep_alive());
        assert!(head_with(1, &[("Connection", "keep-alive")]).keep_alive());
        assert!(!head_with(1, &[("Connection", "Close")]).keep_alive());
        assert!(!head_with(1, &[("Connection", "keep-alive, close")]).keep_alive());
        assert!(!head_with(0, &[]).keep_alive());
        assert!(head_with(0, &[("Connection", "Keep-Alive")]).keep_alive());
    }
}
