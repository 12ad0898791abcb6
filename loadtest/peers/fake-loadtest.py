#!/usr/bin/env python3
"""A stand-in for itty-loadtest with the flags side-by-side.sh plans on
(`--proto`, `--sweep`, `rooms`), to test the script's plumbing before the
generator has them:

    GEN=loadtest/peers/fake-loadtest.py loadtest/side-by-side.sh --no-build \\
        --scenarios "fanout-100 rooms"

It does a small real run with smoke.mjs (pinned to --cpus) against the
server, reads the server's cpu time from /proc/PID/stat, and prints JSON with
the generator's field names, the chosen run under "best" as a sweep would.
The figures are the Node client's, not a benchmark.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = ["--url", "--proto", "--members", "--publishers", "--payload-bytes", "--duration",
         "--cpus", "--relay-pid", "--sweep", "--json", "--rooms", "--room-members"]


def cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    if len(sys.argv) > 2 and sys.argv[2] in ("-h", "--help"):
        print(f"Usage: fake-loadtest {sys.argv[1]} [OPTIONS]\n")
        for f in FLAGS:
            print(f"      {f} <X>")
            if f == "--proto":
                print("          [possible values: itty, nchan, nats]")
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=["fanout", "rooms"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--proto", required=True, choices=["itty", "nchan", "nats"])
    ap.add_argument("--members", type=int, default=100)
    ap.add_argument("--rooms", type=int, default=1)
    ap.add_argument("--room-members", type=int, default=10)
    ap.add_argument("--cpus", default="1")
    ap.add_argument("--relay-pid", type=int, required=True)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--json", action="store_true")
    a, _ = ap.parse_known_args()
    members = a.members if a.scenario == "fanout" else a.room_members
    rate, seconds = 20, 2
    before = cpu_s(a.relay_pid)
    out = subprocess.run(["taskset", "-c", a.cpus, "node", f"{HERE}/smoke.mjs", "--proto", a.proto, "--url", a.url,
                          "--members", str(members), "--rate", str(rate), "--seconds", str(seconds)],
                         capture_output=True, text=True, timeout=120)
    used = cpu_s(a.relay_pid) - before
    print(out.stderr, file=sys.stderr, end="")
    r = json.loads(out.stdout)
    best = {
        "scenario": a.scenario, "proto": a.proto, "members": members, "rate_msgs_per_s": rate,
        "expected": r["expected"], "received": r["received"], "lost": r["lost"],
        "deliveries_per_s": r["received"] / seconds,
        "latency_ms_p50": r["latency_ms_p50"], "latency_ms_p99": r["latency_ms_p99"],
        "relay_cpu_s_per_million_deliveries": used / max(r["received"], 1) * 1e6,
        "generator_saturated": False,
    }
    print(json.dumps({"sweep": [best], "best": best}))
    return 0 if r["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
