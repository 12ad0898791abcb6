#!/usr/bin/env python3
"""One client that floods a channel: joins ws://HOST:PORT/c/CHANNEL, waits
--delay seconds, writes --count text frames ({"flood":i}) as fast as the
socket takes them, then reads until the relay closes (bounded by --timeout).
Prints one JSON line: frames written, write time, the error events it got
(rate-limit warnings), and the close code and reason.

Used by flood-cost.sh to measure what a flood costs the other members of
its channel (issue 3's closing note). Loopback only; stdlib only.
"""
import argparse
import json
import os
import socket
import struct
import threading
import time


def frame(payload: bytes) -> bytes:
    # Masked client text frame with a zero mask key (valid, and the payload
    # stays as is, so building 100,000 of them is cheap).
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    else:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    return head + b"\0\0\0\0" + payload


def read_frames(sock, out):
    buf = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            at = 2
            if n == 126:
                if len(buf) < 4:
                    break
                n = struct.unpack("!H", buf[2:4])[0]
                at = 4
            elif n == 127:
                if len(buf) < 10:
                    break
                n = struct.unpack("!Q", buf[2:10])[0]
                at = 10
            if len(buf) < at + n:
                break
            opcode, payload = buf[0] & 0x0F, buf[at:at + n]
            buf = buf[at + n:]
            if opcode == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                out["close"] = [code, payload[2:].decode(errors="replace")]
            elif opcode == 1:
                try:
                    event = json.loads(payload)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("type") == "error":
                    out["errors"].append(event["message"])
                else:
                    out["other_frames"] += 1


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--channel", required=True)
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--timeout", type=float, default=30.0)
    a = p.parse_args()
    assert a.host.startswith("127."), "loopback only"

    sock = socket.create_connection((a.host, a.port), timeout=a.timeout)
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(
        f"GET /c/{a.channel} HTTP/1.1\r\nHost: {a.host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise SystemExit("closed during the handshake")
        head += chunk
    status = head.split(b" ")[1].decode()
    if status != "101":
        raise SystemExit(f"handshake refused: {head.decode(errors='replace')}")

    out = {"errors": [], "other_frames": 0, "close": None}
    reader = threading.Thread(target=read_frames, args=(sock, out), daemon=True)
    reader.start()
    time.sleep(a.delay)
    data = b"".join(frame(b'{"flood":%d}' % i) for i in range(a.count))
    started = time.monotonic()
    written = 0
    try:
        sock.sendall(data)
        written = a.count
    except OSError as e:
        out["write_error"] = str(e)
    write_s = time.monotonic() - started
    reader.join(a.timeout)
    print(json.dumps({
        "pid": os.getpid(),
        "frames_written": written,
        "bytes_written": len(data) if written else None,
        "write_s": round(write_s, 3),
        "error_events": len(out["errors"]),
        "first_errors": out["errors"][:4],
        "frames_received": out["other_frames"],
        "close": out["close"],
    }))


if __name__ == "__main__":
    main()
