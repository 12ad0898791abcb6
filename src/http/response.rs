//! The server's HTTP/1.1 responses: one `Response` value for everything
//! answered in the HTTP phase (info endpoints, refusals, push answers), and
//! the `101 Switching Protocols` that starts a WebSocket.
//!
//! Pure: it only builds bytes; `conn::respond` is the one writer.

use std::borrow::Cow;

/// A complete response to a plain HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Headers besides `Content-Type`, `Content-Length` and `Connection`.
    pub headers: Vec<(&'static str, String)>,
    pub body: Cow<'static, [u8]>,
    /// Whether the connection stays open for another request.
    pub keep_alive: bool,
}

const TEXT: &str = "text/plain; charset=utf-8";

impl Response {
    /// A plain-text response that closes the connection.
    pub fn text(status: u16, body: impl Into<Cow<'static, [u8]>>) -> Response {
        Response {
            status,
            content_type: TEXT,
            headers: Vec::new(),
            body: body.into(),
            keep_alive: false,
        }
    }

    /// A JSON response that closes the connection.
    pub fn json(status: u16, body: String) -> Response {
        Response {
            content_type: "application/json",
            ..Response::text(status, body.into_bytes())
        }
    }

    pub fn with_content_type(self, content_type: &'static str) -> Response {
        Response {
            content_type,
            ..self
        }
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    pub fn keep_alive(self, keep_alive: bool) -> Response {
        Response { keep_alive, ..self }
    }

    /// The wire bytes; a `HEAD` request gets the head only.
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        let mut bytes = response(
            self.status,
            self.content_type,
            &headers,
            &self.body,
            self.keep_alive,
        );
        if head_only && self.status >= 200 && self.status != 204 {
            bytes.truncate(bytes.len() - self.body.len());
        }
        bytes
    }
}

/// The standard reason phrase for the statuses this server sends; empty for
/// others, which RFC 9112 4 allows.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A complete HTTP/1.1 response: status line, `Content-Type`,
/// `Content-Length`, `extra_headers`, `Connection: close` unless
/// `keep_alive`, a blank line, then `body`.
///
/// 1xx and 204 responses carry neither body nor content headers (RFC 9110
/// 8.6, 15.3.5). An extra header whose name or value holds CR or LF is left
/// out rather than let it split the response.
pub fn response(
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let bodyless = status < 200 || status == 204;
    // One allocation: room for the fixed parts, every header and the body.
    let headers_len: usize = extra_headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 4)
        .sum();
    let body_len = if bodyless { 0 } else { body.len() };
    let mut out = Vec::with_capacity(128 + content_type.len() + headers_len + body_len);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !bodyless {
        push_header(&mut out, "Content-Type", content_type);
        push_header(
            &mut out,
            "Content-Length",
            itoa::Buffer::new().format(body.len()),
        );
    }
    for (name, value) in extra_headers {
        push_header(&mut out, name, value);
    }
    if !keep_alive {
        push_header(&mut out, "Connection", "close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body[..body_len]);
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    let splits = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n');
    if splits(name) || splits(value) {
        return;
    }
    for part in [name, ": ", value, "\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
}

/// The `101` answer to an accepted WebSocket handshake (RFC 6455 4.2.2),
/// with the extensions agreed, if any (RFC 7692).
pub fn switching_protocols(accept_key: &str, extensions: Option<&str>) -> Vec<u8> {
    let headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key),
        ("Sec-WebSocket-Extensions", extensions.unwrap_or_default()),
    ];
    let agreed = if extensions.is_some() { 4 } else { 3 };
    response(101, "", &headers[..agreed], b"", true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn response_has_status_line_headers_and_exact_content_length() {
        let out = response(200, "text/plain", &[("X-A", "1")], b"0.1.0", true);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n0.1.0"
        );
    }

    #[test]
    fn content_length_counts_bytes_not_characters() {
        let body = "café ✓".as_bytes();
        let out = response(200, "text/plain; charset=utf-8", &[], body, false);
        assert!(text(&out).contains("Content-Length: 9\r\n"));
        assert!(out.ends_with(b"Connection: close\r\n\r\ncaf\xc3\xa9 \xe2\x9c\x93"));
    }

    #[test]
    fn keep_alive_leaves_out_connection_close() {
        let open = response(200, "text/plain", &[], b"", true);
        let closed = response(200, "text/plain", &[], b"", false);
        assert!(!text(&open).contains("Connection"));
        assert!(text(&closed).ends_with("Content-Length: 0\r\nConnection: close\r\n\r\n"));
    }

    #[test]
    fn no_content_has_no_body_or_length() {
        let out = response(204, "text/plain", &[], b"ignored", false);
        assert_eq!(
            text(&out),
            "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn header_with_a_line_break_is_dropped() {
        let out = response(
            200,
            "text/plain",
            &[("X-A", "1\r\nX-B: 2"), ("X-C", "3")],
            b"",
            true,
        );
        assert!(!text(&out).contains("X-A") && !text(&out).contains("X-B"));
        assert!(text(&out).contains("X-C: 3\r\n"));
    }

    #[test]
    fn refusal_response_includes_its_headers_and_closes() {
        let refusal = super::super::request::Refusal {
            status: 405,
            body: "method not allowed",
            headers: vec![("Allow", "POST".to_string())],
        };
        assert_eq!(
            text(&refusal.response().to_bytes(false)),
            "HTTP/1.1 405 Method Not Allowed\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 19\r\n\
             Allow: POST\r\n\
             Connection: close\r\n\
             \r\n\
             method not allowed\n"
        );
    }

    #[test]
    fn a_head_request_gets_the_head_only() {
        let r = Response::text(200, &b"ok\n"[..]).keep_alive(true);
        assert_eq!(
            text(&r.to_bytes(true)),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\r\n"
        );
        assert!(r.to_bytes(false).ends_with(b"\r\n\r\nok\n"));
    }

    #[test]
    fn switching_protocols_is_exact_for_the_rfc_sample() {
        let accept = tungstenite::handshake::derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(
            text(&switching_protocols(&accept, None)),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             \r\n"
        );
    }

    #[test]
    fn every_listed_status_has_a_reason_phrase() {
        for status in [
            101, 200, 204, 400, 401, 403, 404, 405, 408, 413, 426, 429, 431, 500, 503,
        ] {
            assert!(!reason_phrase(status).is_empty(), "{status}");
        }
        assert_eq!(reason_phrase(299), "");
    }
}
