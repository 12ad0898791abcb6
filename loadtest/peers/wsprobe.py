#!/usr/bin/env python3
"""A raw WebSocket client (Python stdlib only) that shows the exact bytes.

Used to find out and check what nchan and nats-server send and expect over
WebSocket (see PROTOCOLS.md). It writes a hand-made handshake, prints the
response head, and then prints every frame as `<opcode> fin=<0|1> <len>
<repr of payload>`; frames boundaries are kept, so it shows whether a peer
batches several messages into one frame or splits one.

As a library (`from wsprobe import Conn`) it is what test_peers.py uses.
"""

import base64
import os
import socket
import struct
import time

OPCODES = {0: "cont", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key


class Conn:
    """One WebSocket connection, blocking, with a receive buffer."""

    def __init__(self, host, port, path, headers=(), timeout=3.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {KEY}",
            "Sec-WebSocket-Version: 13",
            *headers,
        ]
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self.sock.sendall(self.request)
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed during handshake: {self.buf!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.response_head = head.decode("latin-1")
        self.status = int(self.response_head.split(" ", 2)[1])
        self.reads = []  # sizes of the recv() calls after the handshake
        self.closed = False  # the peer closed the TCP connection

    def send(self, payload, opcode=1, fin=True):
        """Writes one masked frame (text by default) with one write."""
        if isinstance(payload, str):
            payload = payload.encode()
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout as e:
            raise TimeoutError from e
        if not chunk:
            raise ConnectionError("closed by peer")
        self.reads.append(len(chunk))
        self.buf += chunk

    def frame(self, timeout=2.0):
        """The next frame as (opcode, fin, payload, raw_header); TimeoutError if none."""
        deadline = time.monotonic() + timeout
        while True:
            b = self.buf
            if len(b) >= 2:
                fin, opcode = b[0] >> 7, b[0] & 0x0F
                masked, n = b[1] >> 7, b[1] & 0x7F
                i = 2
                if n == 126 and len(b) >= 4:
                    n, i = struct.unpack(">H", b[2:4])[0], 4
                elif n == 127 and len(b) >= 10:
                    n, i = struct.unpack(">Q", b[2:10])[0], 10
                if n < 126 or i > 2:
                    if masked:
                        i += 4
                    if len(b) >= i + n:
                        self.buf = b[i + n:]
                        return OPCODES.get(opcode, opcode), fin, b[i:i + n], b[:i]
            self._fill(deadline)

    def frames(self, timeout=0.5):
        """Every frame that arrives until `timeout` passes without one, or
        until the peer closes the TCP connection (then `self.closed` is set)."""
        out = []
        while True:
            try:
                out.append(self.frame(timeout))
            except TimeoutError:
                return out
            except ConnectionError:
                self.closed = True
                return out

    def close(self):
        if hasattr(self, "sock"):
            self.sock.close()

    __del__ = close


def show(label, frames):
    for opcode, fin, payload, header in frames:
        shown = payload if len(payload) <= 160 else payload[:120] + b"..." + payload[-20:]
        print(f"  {label}: {opcode} fin={fin} hdr={header.hex()} len={len(payload)} {shown!r}")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url", help="ws://HOST:PORT/PATH")
    ap.add_argument("--header", action="append", default=[], help="extra request header")
    ap.add_argument("--send", action="append", default=[], help="text frame to send (\\r\\n escapes ok)")
    ap.add_argument("--binary", action="store_true", help="send binary frames instead of text")
    ap.add_argument("--wait", type=float, default=1.0)
    a = ap.parse_args()
    hostport, _, path = a.url.removeprefix("ws://").partition("/")
    host, _, port = hostport.partition(":")
    c = Conn(host, int(port or 80), "/" + path, a.header)
    print(c.response_head)
    print()
    show("recv", c.frames(a.wait))
    for s in a.send:
        c.send(s.encode().decode("unicode_escape"), opcode=2 if a.binary else 1)
        show("recv", c.frames(a.wait))
