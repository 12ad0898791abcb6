#!/usr/bin/env python3
"""Splits a relay profile into the read path, the owner, the fan-out and the
write path, by the outermost relay frame of each sample's stack.

    perf record -e cpu-clock -F 2000 -g --call-graph dwarf,16384 -p PID -- sleep 6
    perf script -F comm,tid,ip,sym | loadtest/profile/split.py

Each sample is assigned by the first rule (in the order below) that one of
its frames matches; kernel frames under a relay frame count for that relay
frame (a `sendmsg` under the writer is the write path). The second table
splits each phase into kernel and user time. Samples with no relay frame
(glommio's loop, the kernel alone) are "runtime and other".
"""
import collections
import re
import sys

# (phase, regex on a frame's symbol); the first that matches any frame wins.
RULES = [
    ("write path: writer task (gather, sendmsg, kernel tcp)", r"conn::writer::"),
    ("fan out: owner's frame into members' queues", r"Home::fan_out|ConnHandle::deliver|shard::.*fan_out"),
    ("owner: order, envelope once, route", r"shard::owner::|pubsub::envelope|Owner::"),
    ("forward: cross-shard links", r"shard::links::|PeerLink"),
    ("read path: read, unmask, decode, classify, JSON check", r"conn::session::|ws::codec::|pubsub::json|pubsub::classify|Decoder::decode"),
    ("sweep, timers, status", r"shard::sweep|status::|metrics::"),
    ("accept, upgrade, HTTP", r"conn::serve|http::|shard::run::accept|listener"),
]
KERNEL = re.compile(r"^ffffffff")


def samples(lines):
    stack = []
    for line in lines:
        if not line.strip():
            if stack:
                yield stack
            stack = []
            continue
        if line[0] not in " \t":
            if stack:
                yield stack
            stack = []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            stack.append((parts[0], parts[1]))
    if stack:
        yield stack


def main():
    phases = collections.Counter()
    kernel = collections.Counter()
    leaf_user = collections.defaultdict(collections.Counter)
    total = 0
    for stack in samples(sys.stdin):
        total += 1
        phase = "runtime and other (glommio loop, io_uring, kernel alone)"
        for name, rx in RULES:
            if any(re.search(rx, sym) for _, sym in stack):
                phase = name
                break
        phases[phase] += 1
        ip, sym = stack[0]
        if KERNEL.match(ip):
            kernel[phase] += 1
        else:
            leaf_user[phase][re.sub(r"\s*\(inlined\)", "", sym)[:90]] += 1
    if not total:
        sys.exit("no samples")
    print(f"{total} samples\n")
    print("| phase | share | of it in the kernel |")
    print("|---|---|---|")
    for phase, n in phases.most_common():
        print(f"| {phase} | {100 * n / total:.1f}% | {100 * kernel[phase] / n:.0f}% |")
    print("\nTop user-space leaf functions per phase (share of all samples):\n")
    for phase, n in phases.most_common():
        top = leaf_user[phase].most_common(5)
        if top:
            print(f"- {phase}: " + "; ".join(f"`{s}` {100 * c / total:.1f}%" for s, c in top))


if __name__ == "__main__":
    main()
