#!/usr/bin/env python3
"""The report of loadtest/tls-side-by-side.sh: reads OUT/raw.jsonl (one
line per run) and prints, in Markdown, each target's median and range over
the rounds, then the ratios computed within each round (same round, same
box), with their median and range.

    tls-report.py OUT
"""

import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
rows = [json.loads(l) for l in (out / "raw.jsonl").read_text().splitlines() if l.strip()]
env = (out / "env.txt").read_text().strip()

FIELDS = [
    ("deliveries/s", "deliveries_per_s", "{:,.0f}"),
    ("p99 ms", "latency_ms_p99", "{:.2f}"),
    ("lost", "lost", "{:.0f}"),
    ("server cpu-s per M deliveries", "relay_cpu_s_per_million_deliveries", "{:.3f}"),
    ("server util", "relay_util", "{:.2f}"),
    ("generator util", "generator_util_avg", "{:.2f}"),
    ("generator TLS cpu-s", "generator_tls_cpu_s", "{:.2f}"),
]


def value(row, key):
    r = row.get("result") or {}
    v = r.get(key)
    return v if isinstance(v, (int, float)) else None


def cell(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "?"
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))} to {fmt.format(max(values))})"


targets = []
for r in rows:
    if r["target"] not in targets:
        targets.append(r["target"])
print("```")
print(env)
print("```")
print()
print("| target | " + " | ".join(f[0] for f in FIELDS) + " |")
print("|---|" + "---|" * len(FIELDS))
for t in targets:
    mine = [r for r in rows if r["target"] == t]
    print(f"| {t} | " + " | ".join(cell([value(r, k) for r in mine], fmt) for _, k, fmt in FIELDS) + " |")
print()
print("Ratios within each round (median, range over rounds):")
print()
print("| ratio | deliveries/s | server cpu-s per M deliveries |")
print("|---|---|---|")
rounds = sorted({r["round"] for r in rows})
for a, b in [("wss", "ws"), ("wss", "nginx"), ("wss", "nats")]:
    dr, cr = [], []
    for n in rounds:
        ra = next((r for r in rows if r["round"] == n and r["target"] == a), None)
        rb = next((r for r in rows if r["round"] == n and r["target"] == b), None)
        if not ra or not rb:
            continue
        da, db = value(ra, "deliveries_per_s"), value(rb, "deliveries_per_s")
        if da and db:
            dr.append(da / db)
        ca, cb = value(ra, "relay_cpu_s_per_million_deliveries"), value(rb, "relay_cpu_s_per_million_deliveries")
        if ca and cb:
            cr.append(cb / ca)
    print(f"| {a} / {b} | {cell(dr, '{:.2f}x')} | {b} costs {cell(cr, '{:.2f}x')} of {a} |")
print()
print("Load and cpu pressure at each run:")
print()
for r in rows:
    print(f"- round {r['round']} {r['target']}: load {r['load']}, {r['psi_cpu']}")
