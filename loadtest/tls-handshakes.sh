#!/usr/bin/env bash
# TLS handshakes, a reconnect storm and idle memory (issue 12), ours over
# ws:// and wss:// (one shard on SERVER_CPU, the generator on GEN_CPU,
# ECDSA P-256, TLS 1.3), interleaved rounds:
#   connect   closed loop, 64 workers connecting, joining and closing for
#             DURATION s: joins/s and the relay's cpu ms per join; over wss
#             every join is a full TLS handshake (the generator keeps no
#             session), so 1000 / (ms per join) bounds the full handshakes
#             a shard does per second of cpu, the WebSocket join included.
#   storm     1,000 members on one channel at 500 msg/s for 8 s while a
#             second generator opens 2,000 new connections (1,000/s, from
#             t=2 s): the members' p99 and losses.
#   idle      IDLE connections joined and held: relay RSS per connection.
#
#   loadtest/tls-handshakes.sh [ROUNDS] [IDLE]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
IDLE=${2:-5000}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
DURATION=${DURATION:-5}
OUT=${OUT:-/tmp/itty-tls-handshakes}
rm -rf "$OUT"
mkdir -p "$OUT"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=itty bench CA" -days 2 -keyout "$OUT/ca.key" -out "$OUT/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout "$OUT/leaf.key" -out "$OUT/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$OUT/ext.cnf"
openssl x509 -req -in "$OUT/leaf.csr" -CA "$OUT/ca.pem" -CAkey "$OUT/ca.key" \
  -CAcreateserial -days 2 -extfile "$OUT/ext.cnf" -out "$OUT/leaf.pem" 2>/dev/null

relay=target/release/itty-relay
gen=target/release/itty-loadtest
limits=(--upgrades-per-ip-per-sec 1000000 --upgrades-per-ip-burst 1000000
        --messages-per-conn-per-sec 1000000 --messages-per-conn-burst 1000000
        --log warn --shards 1 --pin false)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
taskset -c "$SERVER_CPU" $relay --listen 127.0.0.1:18611 "${limits[@]}" >"$OUT/ws.log" 2>&1 &
pid_ws=$!; pids+=($pid_ws)
taskset -c "$SERVER_CPU" $relay --listen 127.0.0.1:18612 "${limits[@]}" \
  --tls-cert "$OUT/leaf.pem" --tls-key "$OUT/leaf.key" >"$OUT/wss.log" 2>&1 &
pid_wss=$!; pids+=($pid_wss)
sleep 1
url() { if [[ $1 == ws ]]; then echo ws://127.0.0.1:18611; else echo wss://localhost:18612; fi; }
pid() { if [[ $1 == ws ]]; then echo $pid_ws; else echo $pid_wss; fi; }
record() { echo "{\"round\":$1,\"test\":\"$2\",\"target\":\"$3\",\"load\":\"$(cut -d' ' -f1 /proc/loadavg)\",\"psi_cpu\":\"$(head -1 /proc/pressure/cpu | sed 's/ /,/g')\",\"result\":${4:-null}}" >>"$OUT/raw.jsonl"; }
{
  echo "# rounds=$ROUNDS idle=$IDLE duration=$DURATION server_cpu=$SERVER_CPU gen_cpu=$GEN_CPU"
  echo "# $(date -u +%FT%TZ) $(uname -r) nproc=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# cpu pressure before: $(head -1 /proc/pressure/cpu)"
} >"$OUT/env.txt"
for round in $(seq "$ROUNDS"); do
  for t in ws wss; do
    line=$($gen connect --url "$(url $t)" --ca "$OUT/ca.pem" --concurrency 64 --duration "$DURATION" \
      --channels 100 --cpus "$GEN_CPU" --relay-pid "$(pid $t)" --json 2>>"$OUT/err" | tail -1) || true
    record "$round" connect "$t" "$line"
    # The storm: members first, then 2,000 connections at 1,000/s.
    $gen fanout --url "$(url $t)" --ca "$OUT/ca.pem" --members 1000 --rate 500 --duration 8 \
      --warmup 1 --grace 2 --cpus "$GEN_CPU" --relay-pid "$(pid $t)" --json \
      >"$OUT/storm-fanout.json" 2>>"$OUT/err" &
    fan=$!
    sleep 4 # setup (about 1-2 s) and the first seconds of publishing
    storm=$($gen connect --url "$(url $t)" --ca "$OUT/ca.pem" --rate 1000 --duration 2 \
      --channels 100 --cpus "$GEN_CPU" --json 2>>"$OUT/err" | tail -1) || true
    wait $fan || true
    record "$round" storm-members "$t" "$(tail -1 "$OUT/storm-fanout.json")"
    record "$round" storm-connect "$t" "$storm"
    echo "round $round $t done" >&2
  done
done
for t in ws wss; do
  line=$($gen idle --url "$(url $t)" --ca "$OUT/ca.pem" --connections "$IDLE" --channels 100 \
    --hold 3 --cpus "$GEN_CPU" --relay-pid "$(pid $t)" --json 2>>"$OUT/err" | tail -1) || true
  record 1 idle "$t" "$line"
done
echo "# cpu pressure after: $(head -1 /proc/pressure/cpu)" >>"$OUT/env.txt"
python3 - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [json.loads(l) for l in (out / "raw.jsonl").read_text().splitlines() if l.strip()]
print("```"); print((out / "env.txt").read_text().strip()); print("```\n")
def vals(test, target, key):
    return [r["result"][key] for r in rows if r["test"] == test and r["target"] == target
            and r["result"] and isinstance(r["result"].get(key), (int, float))]
def cell(v, fmt="{:.2f}"):
    if not v: return "?"
    m = statistics.median(v)
    return fmt.format(m) if len(v) == 1 else f"{fmt.format(m)} ({fmt.format(min(v))} to {fmt.format(max(v))})"
print("| measure | ws | wss |\n|---|---|---|")
for label, test, key, fmt in [
    ("connect: joins/s (64 workers)", "connect", "joined_per_s", "{:,.0f}"),
    ("connect: relay cpu ms per join", "connect", "relay_cpu_ms_per_join", "{:.3f}"),
    ("connect: handshake ms p99", "connect", "handshake_ms_p99", "{:.1f}"),
    ("connect: generator util", "connect", "generator_util_avg", "{:.2f}"),
    ("storm: members' deliveries/s", "storm-members", "deliveries_per_s", "{:,.0f}"),
    ("storm: members' p99 ms", "storm-members", "latency_ms_p99", "{:.2f}"),
    ("storm: members' messages lost", "storm-members", "lost", "{:.0f}"),
    ("storm: reconnects joined", "storm-connect", "joined", "{:.0f}"),
    ("storm: reconnect join ms p99", "storm-connect", "join_ms_p99", "{:.1f}"),
    ("idle: relay RSS bytes per connection", "idle", "relay_rss_bytes_per_connection", "{:,.0f}"),
]:
    print(f"| {label} | {cell(vals(test, 'ws', key), fmt)} | {cell(vals(test, 'wss', key), fmt)} |")
ws = vals("connect", "ws", "relay_cpu_ms_per_join"); wss = vals("connect", "wss", "relay_cpu_ms_per_join")
if ws and wss:
    print(f"\nFull TLS handshakes per second of one shard's cpu, the WebSocket join included: "
          f"{1000 / statistics.median(wss):,.0f}; the TLS part alone (wss minus ws per join): "
          f"{1000 / max(1e-9, statistics.median(wss) - statistics.median(ws)):,.0f}/s.")
print("\nLoad and cpu pressure at each run:\n")
for r in rows:
    print(f"- round {r['round']} {r['test']} {r['target']}: load {r['load']}, {r['psi_cpu']}")
PY
