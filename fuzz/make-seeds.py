#!/usr/bin/env python3
"""Writes the hand-made seed corpus to seeds/<target>/ (run from fuzz/).

Seeds are small valid and edge inputs, one file each; crash inputs found
while fuzzing are added beside them by hand (named crash-*). Targets that
read a structure (ws_frames) seed from minimized fuzzing output instead.
"""
import os

MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def frame(first, payload, mask=MASK, wide=0):
    n = len(payload)
    bit = 0x80 if mask else 0
    if n <= 125 and wide == 0:
        head = bytes([first, bit | n])
    elif n <= 0xFFFF and wide <= 1:
        head = bytes([first, bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def write(target, name, data):
    os.makedirs(f"seeds/{target}", exist_ok=True)
    with open(f"seeds/{target}/{name}", "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


UPGRADE = (
    "GET /c/my%20chan?as=Al&echo=true HTTP/1.1\r\n"
    "Host: relay.example\r\n"
    "Upgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)
BROWSER = (
    "GET /r/myapp%2Fchat%3A1?alias=Bob&announce=true&list=true&joinKey=j%26k HTTP/1.1\r\n"
    "Host: 127.0.0.1:8080\r\n"
    "Connection: Upgrade\r\n"
    "Pragma: no-cache\r\n"
    "Upgrade: websocket\r\n"
    "Origin: http://localhost:3000\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "User-Agent: Mozilla/5.0\r\n"
    "Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
)
ECHO = UPGRADE.replace("/c/my%20chan?as=Al&echo=true", "/__echo")
PUSH = (
    "POST /push/myapp:feed HTTP/1.1\r\nHost: relay\r\nX-Send-Key: s3cret\r\n"
    "Content-Type: application/json\r\nContent-Length: 7\r\n\r\n"
)
CHUNKED_PUSH = (
    "POST /push/feed HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n"
    "X-Forwarded-For: 6.6.6.6, 1.2.3.4, 10.0.0.7\r\nX-Real-IP: 5.6.7.8\r\n\r\n"
)
HEADS = {
    "upgrade": UPGRADE,
    "browser-upgrade": BROWSER,
    "echo-upgrade": ECHO,
    "push-length": PUSH,
    "push-chunked-forwarded": CHUNKED_PUSH,
    "health-1.0": "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "metrics-head": "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "version-lf-only": "GET /version HTTP/1.1\nHost: x\n\n",
    "old-version": UPGRADE.replace("Version: 13", "Version: 8"),
    "bad-key": UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="),
    "no-connection-upgrade": UPGRADE.replace("keep-alive, Upgrade", "keep-alive"),
    "conflicting-lengths": PUSH.replace("\r\n\r\n", "\r\nContent-Length: 8\r\n\r\n"),
    "length-and-chunked": PUSH.replace("\r\n\r\n", "\r\nTransfer-Encoding: chunked\r\n\r\n"),
    "forwarded-v6": "GET / HTTP/1.1\r\nX-Forwarded-For: [2001:db8::5]:443\r\n"
    "X-Forwarded-For: ::ffff:1.2.3.4\r\n\r\n",
    "tls-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "upgrade-then-frame": UPGRADE.encode() + frame(0x81, b'{"a":1}'),
}
# http_head: limits, split, peer/proxies, then the head.
for i, (name, head) in enumerate(HEADS.items()):
    head = head.encode() if isinstance(head, str) else head
    write("http_head", name, bytes([i * 4 % 256, i * 37 % 256, (i * 5) % 16]) + head)
# upgrade: the request itself.
for name in ["upgrade", "browser-upgrade", "echo-upgrade", "old-version", "bad-key",
             "no-connection-upgrade", "push-length", "health-1.0"]:
    head = HEADS[name]
    write("upgrade", name, head)
write("upgrade", "upgrade-1.0", UPGRADE.replace("HTTP/1.1", "HTTP/1.0"))
write("upgrade", "post-upgrade", UPGRADE.replace("GET", "POST"))
write("upgrade", "long-channel", UPGRADE.replace("my%20chan", "%61" * 257))

# ws_codec: limit selector, split seed, then client frames.
TEXT, BINARY, CLOSE, PING, PONG = 0x81, 0x82, 0x88, 0x89, 0x8A
FRAMES = {
    "text": frame(TEXT, b'{"type":"chat","text":"hi"}'),
    "binary": frame(BINARY, bytes(range(40))),
    "ping-pong": frame(PING, b"p") + frame(PONG, b""),
    "close-empty": frame(CLOSE, b""),
    "close-reason": frame(CLOSE, b"\x03\xe8bye"),
    "close-utf8-reason": frame(CLOSE, b"\x0f\xa0" + "caf\u00e9 \u2713".encode()),
    "close-bad-code": frame(CLOSE, b"\x03\xed"),
    "close-one-byte": frame(CLOSE, b"\x03"),
    "fragmented-text": frame(0x01, b'{"a"') + frame(PING, b"x") + frame(0x00, b":1")
    + frame(0x80, b"}"),
    "fragmented-utf8-split": frame(0x01, "\u2713".encode()[:1]) + frame(0x80, "\u2713".encode()[1:]),
    "fragmented-binary-empty": frame(0x02, b"") + frame(0x00, b"") + frame(0x80, b"z"),
    "len16": frame(TEXT, b"x" * 200),
    "len64-small": frame(BINARY, b"abc", wide=2),
    "dm-unit-separator": frame(TEXT, b"\x1fabC123\x1f[1,2]"),
    "dm-legacy": frame(TEXT, b'@@abC123@@"hi"'),
    "unmasked": frame(TEXT, b"hi", mask=None),
    "rsv1": frame(0xC1, b"hi"),
    "reserved-opcode": frame(0x83, b"hi"),
    "continuation-first": frame(0x80, b"hi"),
    "fragmented-ping": frame(0x09, b""),
    "long-ping": frame(PING, b"p" * 126),
    "invalid-utf8": frame(TEXT, b"\xff\xfe"),
    "huge-length": bytes([0x82, 0xFF]) + (2**63 - 1).to_bytes(8, "big") + MASK,
    "top-bit-length": bytes([0x82, 0xFF]) + (2**63).to_bytes(8, "big") + MASK,
    "truncated": frame(TEXT, b"hello world")[:9],
}
for i, (name, wire) in enumerate(FRAMES.items()):
    write("ws_codec", name, bytes([i % 8, i * 29 % 256]) + wire)

# query_channel: a path segment or query string.
for i, q in enumerate([
    "my%20chan", "myapp%2Fchat%3a1", "caf%C3%A9-%E2%9C%93", "a+b", "%zz", "ab%4", "%FF",
    "%61" * 257, "as=Al+B%2B&echo=true&announce=true&list=true",
    "alias=Bob&as=Al", "as=&joinKey=j%26k&sendKey=s+k", "foo=bar&t=%zz&%zz=1&echo=true",
    "echo=TRUE&echo=true", "as=" + "%E2%9C%93" * 22, "&&", "",
]):
    write("query_channel", f"q{i:02}", q)

# classify: client texts.
for i, t in enumerate([
    b'{"a":1}', b"\x1fabC123\x1f[1,2]", b'@@abC123@@"hi"', b"\x1fabC123[1]", b"@@abc@",
    b'@@u@@"@@x"', b"@@@@", b"\x1f\x1f", b"", b"1e400", b'"\\ud800"',
    b"123456789012345678901234567890", b"[" * 200 + b"]" * 200, b'{"a":"\x01"}',
    b"[1,]", b" {\"a\" : [ ] } ", "\"h\u00e9llo\"".encode(), b'"\xff"',
]):
    write("classify", f"t{i:02}", t)
# What fuzzing found (simd-json accepted these): see pubsub/json.rs tests.
write("classify", "crash-nul-after-number", b"140" + b"\0" * 100)
write("classify", "crash-long-number-garbage", b"4444444444444444444444444444444404441e20!")
write("classify", "crash-19-digits-garbage", b"4444444444444444444<44444444440!")

# push_body: framing/limit byte, split seed, then the body bytes.
CHUNKED, LENGTH_HALF = 0, 3
for i, (config, body) in enumerate([
    (CHUNKED, b'3\r\n{"a\r\n4;ext=1\r\n":1}\r\n0\r\nX-T: 1\r\n\r\nNEXT'),
    (CHUNKED, b"A\r\n0123456789\r\n0\r\n\r\n"),
    (CHUNKED, b"FFFFFFFFFFFFFFFFFFFF\r\n"),
    (CHUNKED, b"3\nabc"),
    # Found by fuzzing: a bare LF inside a chunk extension (body.rs tests).
    (CHUNKED, b"1;a\nb\r\nx\r\n0\r\n\r\n"),
    (CHUNKED, b"0\r\nbad\rx"),
    (CHUNKED | 4 * 3, b"40\r\n" + b"x" * 64 + b"\r\n0\r\n\r\n"),
    (LENGTH_HALF, b'{"a":1}{"a":1}'),
    (2 | 0x70, b"hello GET /"),
]):
    write("push_body", f"b{i:02}", bytes([config, i * 41 % 256]) + body)
