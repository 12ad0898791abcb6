#!/usr/bin/env bash
# TLS side by side (issue 12): fan-out to MEMBERS at a fixed offered rate,
# interleaved rounds, every server on cpu SERVER_CPU and the generator on
# GEN_CPU, the same ECDSA P-256 certificate (made here with openssl; TLS
# 1.3) for every TLS target:
#   ws      ours, plain                      (--url ws://)
#   wss     ours, --tls-cert                 (--url wss://)
#   nginx   ours plain behind nginx terminating TLS (one worker, same cpu)
#   nats    nats-server's websocket listener with TLS (GOMAXPROCS=1)
# Each round runs every target once, in order; the report (stdout, Markdown)
# gives each cell's median and range over the rounds and the ratios
# computed within each round. Raw JSON lines go to $OUT/raw.jsonl.
#
#   loadtest/tls-side-by-side.sh [ROUNDS] [RATE] [MEMBERS]
#
# Needs: target/release/itty-relay and itty-loadtest, nginx, nats-server
# (loadtest/peers/install.sh), openssl (the CLI, for the certificate only).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
RATE=${2:-2000}
MEMBERS=${3:-1000}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
DURATION=${DURATION:-6}
TARGETS=${TARGETS:-"ws wss nginx nats"}
OUT=${OUT:-/tmp/itty-tls-bench}
rm -rf "$OUT"
mkdir -p "$OUT"

# The certificate: a CA and a leaf for localhost (P-256).
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
        --outgoing-queue-bytes-max 4194304 --log warn --shards 1 --pin false)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  exit 1
}

# ours, plain (18601) and TLS (18602); ours plain for nginx (18603).
taskset -c "$SERVER_CPU" $relay --listen 127.0.0.1:18601 "${limits[@]}" >"$OUT/ws.log" 2>&1 &
pid_ws=$!; pids+=($pid_ws)
taskset -c "$SERVER_CPU" $relay --listen 127.0.0.1:18602 "${limits[@]}" \
  --tls-cert "$OUT/leaf.pem" --tls-key "$OUT/leaf.key" >"$OUT/wss.log" 2>&1 &
pid_wss=$!; pids+=($pid_wss)
taskset -c "$SERVER_CPU" $relay --listen 127.0.0.1:18603 "${limits[@]}" \
  --trusted-proxies 127.0.0.1 >"$OUT/behind-nginx.log" 2>&1 &
pid_behind=$!; pids+=($pid_behind)
mkdir -p "$OUT/nginx/tmp" "$OUT/nginx/logs"
sed -e "s|@PORT@|18604|" -e "s|@UPSTREAM@|18603|" -e "s|@CERT@|$OUT/leaf.pem|" \
  -e "s|@KEY@|$OUT/leaf.key|" loadtest/peers/nginx-tls/nginx.conf >"$OUT/nginx/nginx.conf"
taskset -c "$SERVER_CPU" nginx -p "$OUT/nginx" -c nginx.conf -g 'daemon off;' >"$OUT/nginx.log" 2>&1 &
pid_nginx=$!; pids+=($pid_nginx)
NATS_WS_PORT=18605 NATS_TLS_CERT="$OUT/leaf.pem" NATS_TLS_KEY="$OUT/leaf.key" GOMAXPROCS=1 \
  taskset -c "$SERVER_CPU" nats-server -c loadtest/peers/nats/nats-tls.conf >"$OUT/nats.log" 2>&1 &
pid_nats=$!; pids+=($pid_nats)
for p in 18601 18602 18603 18604 18605; do wait_port $p; done
nginx_worker=$(pgrep -P "$pid_nginx" | head -1)

args=(fanout --members "$MEMBERS" --rate "$RATE" --payload-bytes 64 --duration "$DURATION"
      --warmup 1 --grace 2 --cpus "$GEN_CPU" --json)
run() {
  case $1 in
    ws) $gen "${args[@]}" --url ws://127.0.0.1:18601 --relay-pid $pid_ws ;;
    wss) $gen "${args[@]}" --url wss://localhost:18602 --ca "$OUT/ca.pem" --relay-pid $pid_wss ;;
    nginx) $gen "${args[@]}" --url wss://localhost:18604 --ca "$OUT/ca.pem" \
             --relay-pid $pid_behind --relay-pid "$nginx_worker" ;;
    nats) $gen "${args[@]}" --proto nats --url wss://localhost:18605 --ca "$OUT/ca.pem" \
            --relay-pid $pid_nats ;;
  esac
}

{
  echo "# rounds=$ROUNDS rate=$RATE members=$MEMBERS duration=$DURATION server_cpu=$SERVER_CPU gen_cpu=$GEN_CPU"
  echo "# $(date -u +%FT%TZ) $(uname -r) nproc=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "# cpu pressure before: $(head -1 /proc/pressure/cpu 2>/dev/null || echo n/a)"
} >"$OUT/env.txt"
for round in $(seq "$ROUNDS"); do
  for t in $TARGETS; do
    line=$(run "$t" 2>"$OUT/$t-$round.err" | tail -1) || true
    echo "{\"round\":$round,\"target\":\"$t\",\"load\":\"$(cut -d' ' -f1 /proc/loadavg)\",\"psi_cpu\":\"$(head -1 /proc/pressure/cpu | sed 's/ /,/g')\",\"result\":${line:-null}}" >>"$OUT/raw.jsonl"
    echo "round $round $t done" >&2
  done
done
echo "# cpu pressure after: $(head -1 /proc/pressure/cpu 2>/dev/null || echo n/a)" >>"$OUT/env.txt"
python3 loadtest/tls-report.py "$OUT"
