#!/usr/bin/env python3
"""Byte-level checks of what PROTOCOLS.md says about nchan and nats-server,
and of what the uWebSockets relays (peers/uws/) must do for the generator.

Each test starts its peer with start.sh on a free loopback port, pinned to
the cpus in PEERS_TEST_CPUS (default 0), and stops it afterwards. Run:

    python3 loadtest/peers/test_peers.py          (needs install.sh first)

The uws classes are skipped when the relays are not built
(peers/uws/build.sh needs checkouts of uWebSockets and uSockets); run only
them with `python3 loadtest/peers/test_peers.py UwsItty UwsRaw`.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from wsprobe import Conn  # noqa: E402

CPUS = os.environ.get("PEERS_TEST_CPUS", "0")
UWS_BIN_DIR = os.environ.get("UWS_BIN_DIR", os.path.join(HERE, "..", "..", "target", "uws"))
UWS_BUILT = all(os.access(os.path.join(UWS_BIN_DIR, b), os.X_OK) for b in ("uws-itty-relay", "uws-raw-relay"))
UWS_SKIP = "uWebSockets relays not built: loadtest/peers/uws/build.sh UWS_SRC [USOCKETS_SRC]"
STAMP = re.compile(rb"\[(\d+),(\d+),(\d+),")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Peer:
    def __init__(self, name):
        self.name, self.port = name, free_port()

    def __enter__(self):
        out = subprocess.run([f"{HERE}/start.sh", self.name, str(self.port), CPUS],
                             check=True, capture_output=True, text=True)
        self.pid = int(out.stdout.strip())
        return self

    def __exit__(self, *exc):
        subprocess.run([f"{HERE}/stop.sh", self.name, str(self.port)], check=True)

    def conn(self, path, headers=()):
        return Conn("127.0.0.1", self.port, path, headers)


def payload(p, seq, pad=40):
    return f'[{p},{seq},1764000000000000000,"{"x" * pad}"]'


class Nchan(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.peer = Peer("nchan").__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.peer.__exit__()

    def info(self, channel):
        req = urllib.request.Request(f"http://127.0.0.1:{self.peer.port}/info/{channel}",
                                     headers={"Accept": "text/json"})
        with urllib.request.urlopen(req, timeout=2) as r:
            return json.loads(r.read())

    def test_handshake_is_plain_rfc6455_and_nothing_arrives_on_join(self):
        c = self.peer.conn("/c/hs")
        self.assertEqual(c.status, 101)
        self.assertIn("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", c.response_head)
        self.assertNotIn("Sec-WebSocket-Extensions", c.response_head)
        self.assertEqual(c.frames(0.3), [])

    def test_member_gets_the_published_frame_unchanged_and_the_publisher_its_echo(self):
        a, b = self.peer.conn("/c/raw"), self.peer.conn("/c/raw")
        sent = payload(0, 1)
        a.send(sent)
        for c in (a, b):  # on /c/ the publisher is a subscriber too: it gets its own message
            opcode, fin, data, header = c.frame()
            self.assertEqual((opcode, fin, data), ("text", 1, sent.encode()))
            self.assertEqual(header, bytes([0x81, len(sent)]))  # unmasked text frame, no metadata
            self.assertEqual(STAMP.match(data).groups(), (b"0", b"1", b"1764000000000000000"))

    def test_binary_frames_are_relayed_as_binary(self):
        a, b = self.peer.conn("/c/bin"), self.peer.conn("/c/bin")
        a.send(b"[1,2,3]", opcode=2)
        self.assertEqual(b.frame()[:3], ("binary", 1, b"[1,2,3]"))

    def test_publisher_only_location_answers_each_publish_with_channel_info(self):
        sub, pub = self.peer.conn("/sub/po"), self.peer.conn("/pub/po")
        pub.send(payload(3, 7))
        self.assertEqual(sub.frame()[2], payload(3, 7).encode())
        opcode, _, reply, _ = pub.frame()
        self.assertEqual(opcode, "text")
        self.assertTrue(reply.startswith(b"queued messages: 0\r\n"), reply)
        self.assertIn(b"active subscribers: 1\r\n", reply)

    def test_subscriber_is_registered_when_the_101_arrives(self):
        pub = self.peer.conn("/pub/race")
        for i in range(100):
            s = self.peer.conn("/c/race")
            pub.send(payload(9, i))
            pub.frame()
            self.assertEqual(s.frame(1)[2], payload(9, i).encode(), f"publish {i} missed the new subscriber")
            s.close()

    def test_info_location_counts_subscribers(self):
        conns = [self.peer.conn("/c/count") for _ in range(5)]
        self.assertEqual(self.info("count")["subscribers"], 5)
        del conns

    def test_no_replay_of_messages_published_before_joining(self):
        a = self.peer.conn("/c/replay")
        a.send(payload(0, 1))
        a.frame()
        late = self.peer.conn("/c/replay")
        self.assertEqual(late.frames(0.3), [])

    def test_frames_are_never_batched_one_message_per_frame(self):
        subs = [self.peer.conn("/c/burst") for _ in range(2)]
        pub = self.peer.conn("/pub/burst")
        for k in range(500):
            pub.send(payload(0, k))
        for s in subs:
            frames = s.frames(0.5)
            self.assertEqual([f[2] for f in frames], [payload(0, k).encode() for k in range(500)])

    def test_ping_gets_pong_and_close_is_answered(self):
        c = self.peer.conn("/c/ctl")
        c.send(b"hi", opcode=9)
        self.assertEqual(c.frame()[:3], ("pong", 1, b"hi"))
        c.send(b"\x03\xe8", opcode=8)
        self.assertEqual(c.frame()[:3], ("close", 1, b"\x03\xe8"))


class Nats(unittest.TestCase):
    CONNECT = 'CONNECT {"verbose":false,"pedantic":false,"echo":false,"headers":false,"protocol":1}\r\n'

    @classmethod
    def setUpClass(cls):
        cls.peer = Peer("nats").__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.peer.__exit__()

    def member(self, subject, sid=1):
        c = self.peer.conn("/")
        opcode, _, info, _ = c.frame()
        self.assertEqual(opcode, "binary")
        self.assertTrue(info.startswith(b"INFO {") and info.endswith(b"}\r\n") or info.endswith(b"} \r\n"), info)
        c.send(f"{self.CONNECT}SUB {subject} {sid}\r\nPING\r\n", opcode=2)
        self.assertEqual(c.frame()[2], b"PONG\r\n")  # SUB is in effect once PONG arrives
        return c

    def test_handshake_any_path_no_compression(self):
        c = self.peer.conn("/any/path?x=1", ["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"])
        self.assertEqual(c.status, 101)
        self.assertNotIn("Sec-WebSocket-Extensions", c.response_head)
        info = json.loads(c.frame()[2][5:].strip())
        self.assertEqual(info["max_payload"], 1048576)
        self.assertGreaterEqual(info["proto"], 1)

    def test_msg_carries_the_payload_unchanged_and_echo_false_skips_the_sender(self):
        a, b = self.member("room"), self.member("room", sid=7)
        body = payload(0, 1)
        a.send(f"PUB room {len(body)}\r\n{body}\r\n", opcode=2)
        opcode, fin, data, _ = b.frame()
        self.assertEqual((opcode, fin), ("binary", 1))
        self.assertEqual(data, f"MSG room 7 {len(body)}\r\n{body}\r\n".encode())
        self.assertEqual([f for f in a.frames(0.3) if f[2] != b"PING\r\n"], [])

    def test_text_frames_from_the_client_are_accepted_too(self):
        a, b = self.member("txt"), self.member("txt")
        a.send("PUB txt 3\r\n[1]\r\n", opcode=1)
        self.assertEqual(b.frame()[2], b"MSG txt 1 3\r\n[1]\r\n")

    def test_one_frame_carries_many_msgs(self):
        sub = self.member("burst")
        pub = self.member("unused")
        pub.send("".join(f"PUB burst {len(payload(0, k))}\r\n{payload(0, k)}\r\n" for k in range(2000)), opcode=2)
        frames = sub.frames(0.5)
        stream = b"".join(f[2] for f in frames)
        seqs = [int(m[1]) for m in STAMP.findall(stream)]
        self.assertEqual(seqs, list(range(2000)))
        self.assertLess(len(frames), 200, "MSGs are coalesced into few frames")

    def test_a_browser_user_agent_gets_msgs_split_across_4k_frames(self):
        c = self.peer.conn("/", ["User-Agent: Mozilla/5.0 (Macintosh) AppleWebKit/605 Safari/605"])
        c.frame()
        c.send(self.CONNECT.replace('"echo":false', '"echo":true') + "SUB big 1\r\nPING\r\n", opcode=2)
        self.assertEqual(c.frame()[2], b"PONG\r\n")
        body = payload(0, 1, pad=20000)
        c.send(f"PUB big {len(body)}\r\n{body}\r\n", opcode=2)
        frames = c.frames(0.5)
        self.assertEqual(b"".join(f[2] for f in frames), f"MSG big 1 {len(body)}\r\n{body}\r\n".encode())
        self.assertGreater(len(frames), 1)
        self.assertLessEqual(max(len(f[2]) for f in frames), 4096)

    def test_server_pings_about_two_seconds_after_connect(self):
        c = self.member("pinged")
        t0 = time.monotonic()
        self.assertEqual(c.frame(5)[2], b"PING\r\n")
        self.assertLess(time.monotonic() - t0, 4)
        c.send("PONG\r\n", opcode=2)

    def test_protocol_error_is_err_then_close(self):
        c = self.member("err")
        c.send("BOGUS\r\n", opcode=2)
        frames = [f for f in c.frames(0.5) if f[2] != b"PING\r\n"]
        self.assertEqual(frames[0][2], b"-ERR 'Unknown Protocol Operation'\r\n")
        self.assertEqual(frames[1][:3], ("close", 1, b"\x03\xeaProtocol Violation"))


@unittest.skipUnless(UWS_BUILT, UWS_SKIP)
class UwsItty(unittest.TestCase):
    """peers/uws/itty_relay.cpp: what `--proto itty` reads (PROTOCOL.md 5)."""

    @classmethod
    def setUpClass(cls):
        cls.peer = Peer("uws").__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.peer.__exit__()

    def join(self, path):
        c = self.peer.conn(path)
        self.assertEqual(c.status, 101)
        own = json.loads(c.frame()[2])
        return c, own

    def test_own_join_is_the_first_frame_and_others_hear_of_it(self):
        a, own_a = self.join("/c/j?as=Al%22ice&announce=true")
        self.assertEqual(list(own_a), ["type", "uid", "alias", "self", "total", "date"])
        self.assertEqual((own_a["type"], own_a["alias"], own_a["self"], own_a["total"]), ("join", 'Al"ice', True, 1))
        self.assertRegex(own_a["uid"], r"^[A-Za-z0-9]{6}$")
        b, own_b = self.join("/c/j")
        self.assertEqual(own_b["total"], 2)
        self.assertNotEqual(own_b["uid"], own_a["uid"])
        other = json.loads(a.frame()[2])
        self.assertEqual(list(other), ["type", "total", "date"])  # b did not announce
        self.assertEqual(other["total"], 2)
        b.close()
        self.assertEqual(json.loads(a.frame()[2])["type"], "leave")

    def test_message_is_enveloped_with_the_payload_last_and_not_echoed(self):
        a, own_a = self.join("/c/env?alias=Bob")
        b, _ = self.join("/c/env")
        a.frame()  # b's join
        sent = payload(0, 1)
        a.send(sent)
        opcode, fin, data, header = b.frame()
        self.assertEqual((opcode, fin), ("text", 1))
        self.assertTrue(data.endswith(b',"message":' + sent.encode() + b"}"), data)
        env = json.loads(data)
        self.assertEqual(list(env), ["id", "uid", "alias", "date", "message"])
        self.assertEqual((env["uid"], env["alias"]), (own_a["uid"], "Bob"))
        self.assertEqual(STAMP.search(data).groups(), (b"0", b"1", b"1764000000000000000"))
        self.assertEqual(a.frames(0.3), [])  # no echo without echo=true

    def test_echo_true_gets_its_own_message(self):
        a, _ = self.join("/c/echo?echo=true")
        a.send("[7]")
        self.assertTrue(a.frame()[2].endswith(b',"message":[7]}'))

    def test_binary_frames_get_an_error_event(self):
        a, _ = self.join("/c/bin")
        a.send(b"[1]", opcode=2)
        self.assertEqual(json.loads(a.frame()[2])["message"], "binary frames are not supported")


@unittest.skipUnless(UWS_BUILT, UWS_SKIP)
class UwsRaw(unittest.TestCase):
    """peers/uws/raw_relay.cpp: what `--proto nchan` reads (PROTOCOLS.md, nchan)."""

    @classmethod
    def setUpClass(cls):
        cls.peer = Peer("uws-raw").__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.peer.__exit__()

    def test_nothing_on_join_and_the_frame_unchanged_to_the_others_only(self):
        a, b, other = self.peer.conn("/c/raw"), self.peer.conn("/c/raw"), self.peer.conn("/c/elsewhere")
        self.assertEqual(a.frames(0.2), [])
        sent = payload(0, 1)
        a.send(sent)
        self.assertEqual(b.frame()[:3], ("text", 1, sent.encode()))
        self.assertEqual(STAMP.match(sent.encode()).groups(), (b"0", b"1", b"1764000000000000000"))
        self.assertEqual(a.frames(0.2) + other.frames(0.1), [])

    def test_subscribed_when_the_101_arrives(self):
        pub = self.peer.conn("/c/race")
        for i in range(100):
            s = self.peer.conn("/c/race")
            pub.send(payload(9, i))
            self.assertEqual(s.frame(1)[2], payload(9, i).encode(), f"publish {i} missed the new subscriber")
            s.close()

    def test_binary_is_relayed_as_binary(self):
        a, b = self.peer.conn("/c/bin"), self.peer.conn("/c/bin")
        a.send(b"[1,2,3]", opcode=2)
        self.assertEqual(b.frame()[:3], ("binary", 1, b"[1,2,3]"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
