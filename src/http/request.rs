//! What a parsed request asks for: the endpoint table of docs/PROTOCOL.md
//! section 1, the WebSocket handshake checks of RFC 6455 4.2.1, channel-name
//! decoding, and the connection options of section 2.
//!
//! Pure: a [`RequestHead`] in, a [`Endpoint`] or a [`Refusal`] out. No I/O,
//! and it never panics on peer input. Refusal bodies are fixed sentences so
//! that no user data is ever echoed back or logged from here.

use super::head::RequestHead;

/// Longest channel name, in bytes after percent-decoding.
pub const CHANNEL_BYTES_MAX: usize = 256;
/// Longest alias, in bytes after decoding.
pub const ALIAS_BYTES_MAX: usize = 64;

/// The options a joining connection chose in its query string.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JoinOptions {
    pub alias: Option<String>,
    pub echo: bool,
    pub announce: bool,
    pub list: bool,
    pub join_key: Option<String>,
    pub send_key: Option<String>,
}

/// A request the server will serve.
#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A valid WebSocket upgrade on `/c/<channel>` or `/r/<channel>`.
    Join {
        channel: String,
        options: JoinOptions,
        accept_key: String,
    },
    /// A valid WebSocket upgrade on exactly `/__echo`; whether echo is
    /// enabled is the caller's decision.
    Echo {
        accept_key: String,
    },
    /// `POST /push/<channel>`; the body is the caller's to read.
    Push {
        channel: String,
    },
    Version,
    Health,
    Metrics,
    /// One of the relay's own pages: `/`, `/status`, `/status.json`.
    Page(crate::status::Page),
}

/// A request the server answers with an error and then closes.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// A one-line, lower-case, plain-text reason without user data.
    pub body: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

impl Refusal {
    fn new(status: u16, body: &'static str) -> Self {
        Refusal {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// `404 not found`.
    pub fn not_found() -> Self {
        Refusal::new(404, "not found")
    }

    /// The response. Always closes: a refused peer gets no second request
    /// on the same connection, which also spares reading any body it may
    /// have sent.
    pub fn response(&self) -> super::Response {
        let mut body = String::with_capacity(self.body.len() + 1);
        body.push_str(self.body);
        body.push('\n');
        let mut response = super::Response::text(self.status, body.into_bytes());
        response.headers = self.headers.clone();
        response
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn bad_request(body: &'static str) -> Self {
        Refusal::new(400, body)
    }

    fn method_not_allowed(allow: &str) -> Self {
        Refusal::new(405, "method not allowed").with_header("Allow", allow)
    }
}

/// Decides what `head` asks for, or why it is refused.
pub fn endpoint(head: &RequestHead) -> Result<Endpoint, Refusal> {
    let (path, query) = head.target().split_once('?').unwrap_or((head.target(), ""));

    if let Some(raw) = path
        .strip_prefix("/c/")
        .or_else(|| path.strip_prefix("/r/"))
    {
        let accept_key = accept_upgrade(head)?;
        let channel = decode_channel(raw)?;
        let options = parse_join_options(query)?;
        return Ok(Endpoint::Join {
            channel,
            options,
            accept_key,
        });
    }

    if let Some(page) = crate::status::Page::at(path) {
        return plain_get(head, Endpoint::Page(page));
    }
    match path {
        "/__echo" => accept_upgrade(head).map(|accept_key| Endpoint::Echo { accept_key }),
        "/version" => plain_get(head, Endpoint::Version),
        "/health" => plain_get(head, Endpoint::Health),
        "/metrics" => plain_get(head, Endpoint::Metrics),
        _ => match path.strip_prefix("/push/") {
            // Section 7 checks the method before anything about the channel.
            Some(_) if head.method() != "POST" => Err(Refusal::method_not_allowed("POST")),
            Some(raw) => decode_channel(raw).map(|channel| Endpoint::Push { channel }),
            None => Err(Refusal::not_found()),
        },
    }
}

fn plain_get(head: &RequestHead, endpoint: Endpoint) -> Result<Endpoint, Refusal> {
    match head.method() {
        "GET" | "HEAD" => Ok(endpoint),
        _ => Err(Refusal::method_not_allowed("GET")),
    }
}

/// Checks a WebSocket endpoint's request (RFC 6455 4.2.1) and returns the
/// `Sec-WebSocket-Accept` value for it.
fn accept_upgrade(head: &RequestHead) -> Result<String, Refusal> {
    if !head.has_token("upgrade", "websocket") {
        // A plain request to a WebSocket-only path: tell the client how to
        // get there instead of a bare 404 (RFC 9110 15.5.22).
        return Err(match head.method() {
            "GET" | "HEAD" => {
                Refusal::new(426, "upgrade required").with_header("Upgrade", "websocket")
            }
            _ => Refusal::method_not_allowed("GET"),
        });
    }
    if head.method() != "GET" {
        return Err(Refusal::method_not_allowed("GET"));
    }
    if head.version_minor < 1 {
        return Err(Refusal::bad_request("websocket upgrade requires http/1.1"));
    }
    if !head.has_token("connection", "upgrade") {
        return Err(Refusal::bad_request(
            "connection header lacks the upgrade token",
        ));
    }
    if head.header_str("sec-websocket-version") != Some("13") {
        // RFC 6455 4.4: name the version we do speak so the client can retry.
        return Err(Refusal::new(426, "unsupported websocket version")
            .with_header("Sec-WebSocket-Version", "13"));
    }
    match head.header_str("sec-websocket-key") {
        Some(key) if is_websocket_key(key) => {
            Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
        }
        _ => Err(Refusal::bad_request("invalid sec-websocket-key")),
    }
}

/// A nonce of 16 bytes in base64 is always 22 alphabet characters and `==`.
fn is_websocket_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24
        && bytes.ends_with(b"==")
        && bytes[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Decodes the raw path segment after `/c/`, `/r/` or `/push/` into a
/// channel name. `+` stays a `+`: form rules belong to the query only.
pub fn decode_channel(raw: &str) -> Result<String, Refusal> {
    let bytes = percent_decode(raw, false).ok_or(Refusal::bad_request(
        "channel name has an invalid percent escape",
    ))?;
    if bytes.is_empty() {
        return Err(Refusal::bad_request("channel name is empty"));
    }
    if bytes.len() > CHANNEL_BYTES_MAX {
        return Err(Refusal::bad_request(
            "channel name is longer than 256 bytes",
        ));
    }
    String::from_utf8(bytes).map_err(|_| Refusal::bad_request("channel name is not valid utf-8"))
}

/// Reads the connection options from a query string (without its `?`).
///
/// Only known keys are decoded and checked; unknown keys are skipped whole so
/// that a cache-buster or a newer client's extra parameter never refuses a
/// join. A repeated key keeps its first value, as `URLSearchParams.get` does.
/// An empty value (`as=`, `joinKey=`) means the option is not set.
pub fn parse_join_options(query: &str) -> Result<JoinOptions, Refusal> {
    const KEYS: [&str; 7] = [
        "as", "alias", "echo", "announce", "list", "joinKey", "sendKey",
    ];
    let mut values: [Option<String>; 7] = Default::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(key) = percent_decode(raw_key, true) else {
            continue;
        };
        let Some(index) = KEYS.iter().position(|k| k.as_bytes() == key) else {
            continue;
        };
        if values[index].is_none() {
            values[index] = Some(decode_value(raw_value)?);
        }
    }
    let [as_, alias, echo, announce, list, join_key, send_key] = values;

    // `as` wins whenever it is present, even empty: the client that sent it
    // asked for that name, not for the other parameter's.
    let alias = as_.or(alias).and_then(non_empty);
    if alias.as_ref().is_some_and(|a| a.len() > ALIAS_BYTES_MAX) {
        return Err(Refusal::bad_request("alias is longer than 64 bytes"));
    }
    let flag = |value: Option<String>| value.as_deref() == Some("true");
    Ok(JoinOptions {
        alias,
        echo: flag(echo),
        announce: flag(announce),
        list: flag(list),
        join_key: join_key.and_then(non_empty),
        send_key: send_key.and_then(non_empty),
    })
}

fn decode_value(raw: &str) -> Result<String, Refusal> {
    let bytes = percent_decode(raw, true).ok_or(Refusal::bad_request(
        "query string has an invalid percent escape",
    ))?;
    String::from_utf8(bytes).map_err(|_| Refusal::bad_request("query value is not valid utf-8"))
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// Percent-decodes `input`; with `plus_is_space`, `+` becomes a space first
/// (form rules). `None` when a `%` is not followed by two hex digits.
pub fn percent_decode(input: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let bytes = input.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|&b| (b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        out.push(match b {
            // Two hex digits make at most 0xFF, so the cast is lossless.
            b'%' => (hex(i)? << 4 | hex(i + 1)?) as u8,
            b'+' if plus_is_space => b' ',
            _ => b,
        });
        if b == b'%' {
            i += 2;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    const UPGRADE_HEADERS: [(&str, &str); 4] = [
        ("Upgrade", "websocket"),
        ("Connection", "keep-alive, Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
    ];

    type Headers = Vec<(&'static str, String)>;

    fn head(method: &str, target: &str, minor: u8, headers: &[(&str, &str)]) -> RequestHead {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        RequestHead::new(method, target, minor, &headers)
    }

    fn req(method: &str, target: &str) -> RequestHead {
        head(method, target, 1, &[])
    }

    fn upgrade(target: &str) -> RequestHead {
        head("GET", target, 1, &UPGRADE_HEADERS)
    }

    /// An upgrade on `target` with header `name` replaced by `value`, or dropped.
    fn upgrade_with(target: &str, name: &str, value: Option<&str>) -> RequestHead {
        let mut headers: Vec<(&str, &str)> = UPGRADE_HEADERS
            .iter()
            .copied()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(name))
            .collect();
        headers.extend(value.map(|v| (name, v)));
        head("GET", target, 1, &headers)
    }

    fn refused(head: &RequestHead) -> (u16, Headers) {
        let refusal = endpoint(head).expect_err("a refusal");
        (refusal.status, refusal.headers)
    }

    fn one(name: &'static str, value: &str) -> Headers {
        vec![(name, value.into())]
    }

    fn opts(query: &str) -> JoinOptions {
        parse_join_options(query).expect("valid options")
    }

    #[test]
    fn valid_upgrade_on_c_or_r_joins_with_the_rfc_accept_key() {
        let options = JoinOptions {
            alias: Some("Al".into()),
            echo: true,
            ..JoinOptions::default()
        };
        let expected = Endpoint::Join {
            channel: "my chan".into(),
            options,
            accept_key: SAMPLE_ACCEPT.into(),
        };
        for path in ["/c/", "/r/"] {
            let target = format!("{path}my%20chan?as=Al&echo=true");
            assert_eq!(
                endpoint(&upgrade(&target)).as_ref(),
                Ok(&expected),
                "{path}"
            );
        }
    }

    #[test]
    fn echo_upgrades_only_on_the_exact_path() {
        let accept_key = SAMPLE_ACCEPT.to_string();
        assert_eq!(
            endpoint(&upgrade("/__echo")),
            Ok(Endpoint::Echo { accept_key })
        );
        assert_eq!(refused(&upgrade("/__echo/x")).0, 404);
    }

    #[test]
    fn each_handshake_refusal_has_its_status_and_header() {
        let key = |k| upgrade_with("/c/x", "Sec-WebSocket-Key", k);
        let version = |v| upgrade_with("/c/x", "Sec-WebSocket-Version", v);
        let allow_get = one("Allow", "GET");
        let ws_13 = one("Sec-WebSocket-Version", "13");
        #[rustfmt::skip]
        let cases = [
            (head("POST", "/c/x", 1, &UPGRADE_HEADERS), 405, allow_get.clone()),
            (req("PUT", "/c/x"), 405, allow_get),
            (head("GET", "/c/x", 0, &UPGRADE_HEADERS), 400, vec![]),
            (upgrade_with("/c/x", "Connection", Some("keep-alive")), 400, vec![]),
            (upgrade_with("/c/x", "Connection", None), 400, vec![]),
            (version(Some("8")), 426, ws_13.clone()),
            (version(Some("13, 8")), 426, ws_13.clone()),
            (version(None), 426, ws_13.clone()),
            (key(None), 400, vec![]),
            (key(Some("dGhlIHNhbXBsZSBub25jZQ=")), 400, vec![]),
            (key(Some("dGhlIHNhbXBsZSBub25jZQ===")), 400, vec![]),
            (key(Some("dGhlIHNhbXBsZSBub25jZQAA")), 400, vec![]),
            (key(Some("dGhlIHNhbXBsZSBub25jZ!==")), 400, vec![]),
            (key(Some("dGhlIHNhbXBsZQ==")), 400, vec![]),
            (req("GET", "/c/x"), 426, one("Upgrade", "websocket")),
            (head("GET", "/c/x", 1, &[("Upgrade", "h2c")]), 426, one("Upgrade", "websocket")),
            // The handshake is judged before the channel name.
            (upgrade_with("/c/%zz", "Sec-WebSocket-Version", None), 426, ws_13),
            (upgrade("/c/"), 400, vec![]),
        ];
        for (i, (head, status, headers)) in cases.into_iter().enumerate() {
            assert_eq!(refused(&head), (status, headers), "case {i}");
        }
        assert_eq!(
            endpoint(&req("GET", "/c/x")).unwrap_err().body,
            "upgrade required"
        );
    }

    #[test]
    fn channel_names_are_percent_decoded_keeping_separators() {
        let a256 = "a".repeat(256);
        for (raw, decoded) in [
            ("my%20chan", "my chan"),
            ("a+b", "a+b"),
            ("myapp/chat:1", "myapp/chat:1"),
            ("myapp%2Fchat%3a1", "myapp/chat:1"),
            ("caf%C3%A9-%E2%9C%93", "café-✓"),
            (&a256, &a256),
        ] {
            assert_eq!(decode_channel(raw).as_deref(), Ok(decoded), "{raw}");
        }
    }

    #[test]
    fn bad_channel_names_are_400_with_a_reason() {
        for (raw, body) in [
            ("", "channel name is empty"),
            (&"a".repeat(257), "channel name is longer than 256 bytes"),
            (&"%61".repeat(257), "channel name is longer than 256 bytes"),
            ("%FF", "channel name is not valid utf-8"),
            ("%zz", "channel name has an invalid percent escape"),
            ("ab%4", "channel name has an invalid percent escape"),
        ] {
            assert_eq!(decode_channel(raw), Err(Refusal::new(400, body)), "{raw}");
        }
    }

    #[test]
    fn alias_follows_form_rules_and_as_wins() {
        let a64 = format!("as={}", "a".repeat(64));
        for (query, alias) in [
            ("as=Al+B%2B", Some("Al B+")),
            ("alias=Bob&as=Al", Some("Al")),
            ("alias=Bob", Some("Bob")),
            ("as=Al&as=Bo", Some("Al")),
            ("as=", None),
            ("as", None),
            (&a64, Some(&a64[3..])),
        ] {
            assert_eq!(opts(query).alias.as_deref(), alias, "{query}");
        }
    }

    #[test]
    fn bad_or_long_values_are_400() {
        let a65 = format!("as={}", "a".repeat(65));
        // 22 three-byte characters: 66 bytes though only 22 characters.
        let checks22 = format!("alias={}", "%E2%9C%93".repeat(22));
        for query in [
            &a65,
            &checks22,
            "as=%zz",
            "as=%FF",
            "echo=%4",
            "sendKey=%C3",
        ] {
            assert_eq!(
                parse_join_options(query).unwrap_err().status,
                400,
                "{query}"
            );
        }
    }

    #[test]
    fn flags_are_on_only_for_exactly_true() {
        for off in ["echo=TRUE", "echo=1", "echo=false", "echo", "echo=true%20"] {
            assert!(!opts(off).echo, "{off}");
        }
        let on = opts("echo=true&announce=true&list=true");
        assert!(on.echo && on.announce && on.list);
    }

    #[test]
    fn keys_are_decoded_and_empty_keys_are_none() {
        let keys = opts("joinKey=j%26k&sendKey=s+k");
        assert_eq!(keys.join_key.as_deref(), Some("j&k"));
        assert_eq!(keys.send_key.as_deref(), Some("s k"));
        assert_eq!(opts("joinKey=&sendKey"), JoinOptions::default());
    }

    #[test]
    fn unknown_keys_empty_queries_and_lone_question_mark_are_fine() {
        assert!(opts("foo=bar&t=%zz&%zz=1&echo=true").echo);
        assert_eq!(opts(""), JoinOptions::default());
        assert_eq!(opts("&&"), JoinOptions::default());
        let joined = endpoint(&upgrade("/c/x?")).unwrap();
        assert!(matches!(joined, Endpoint::Join { channel, options, .. }
            if channel == "x" && options == JoinOptions::default()));
    }

    #[test]
    fn push_is_post_only() {
        let channel = "myapp:feed".to_string();
        let push = endpoint(&req("POST", "/push/myapp%3Afeed"));
        assert_eq!(push, Ok(Endpoint::Push { channel }));
        assert_eq!(refused(&req("GET", "/push/x")), (405, one("Allow", "POST")));
        assert_eq!(refused(&req("POST", "/push/")).0, 400);
    }

    #[test]
    fn info_endpoints_are_get_only() {
        assert_eq!(endpoint(&req("GET", "/version")), Ok(Endpoint::Version));
        assert_eq!(endpoint(&req("HEAD", "/health?x=1")), Ok(Endpoint::Health));
        assert_eq!(
            endpoint(&head("GET", "/metrics", 0, &[])),
            Ok(Endpoint::Metrics)
        );
        assert_eq!(
            refused(&req("POST", "/version")),
            (405, one("Allow", "GET"))
        );
    }

    #[test]
    fn own_pages_are_plain_gets() {
        use crate::status::Page;
        assert_eq!(
            endpoint(&req("GET", "/")),
            Ok(Endpoint::Page(Page::Landing))
        );
        assert_eq!(
            endpoint(&req("HEAD", "/status")),
            Ok(Endpoint::Page(Page::Status))
        );
        assert_eq!(
            endpoint(&req("GET", "/status.json?t=1")),
            Ok(Endpoint::Page(Page::StatusJson))
        );
        assert_eq!(refused(&req("POST", "/")), (405, one("Allow", "GET")));
    }

    #[test]
    fn unknown_paths_are_404() {
        for target in ["/c", "/version/", "/push", "/x/c/y", "*"] {
            let refusal = endpoint(&req("GET", target)).unwrap_err();
            assert_eq!(refusal, Refusal::new(404, "not found"), "{target}");
        }
    }

    #[test]
    fn percent_decode_rejects_bad_escapes() {
        let decode = |s, plus| percent_decode(s, plus).map(String::from_utf8);
        assert_eq!(decode("a%20b+c", false), Some(Ok("a b+c".into())));
        assert_eq!(decode("a%20b+c", true), Some(Ok("a b c".into())));
        for bad in ["%zz", "%4", "%", "a%g1", "%+1"] {
            assert_eq!(percent_decode(bad, true), None, "{bad}");
        }
    }
}
