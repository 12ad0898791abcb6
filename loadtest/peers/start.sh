#!/usr/bin/env bash
# Start one relay under test, pinned with taskset, in the background; print
# the pid whose cpu to measure (give it to `itty-loadtest --relay-pid`).
#
#   loadtest/peers/start.sh PEER PORT CPUS [EXTRA...]   start; prints the pid to measure
#   loadtest/peers/start.sh --fg PEER PORT CPUS [EXTRA...]   run in the foreground instead
#   loadtest/peers/stop.sh PEER PORT                    stop it (SIGTERM, then SIGKILL after 5 s)
#
# PEER is one of:
#   itty    our relay, target/release/itty-relay (ITTY_RELAY overrides the path);
#           EXTRA goes to it, default `--shards 1`
#   nchan   nginx + nchan, one worker (peers/nchan/nginx.conf); the pid printed
#           is the worker's (the master only supervises)
#   nats    nats-server with GOMAXPROCS=1 (GOMAXPROCS overrides), WebSocket
#           listener on PORT (peers/nats/nats.conf)
#   node    the Node relay on ws (peers/node-relay/relay.mjs)
#   uws     uWebSockets speaking itty (peers/uws/itty_relay.cpp; one thread):
#           target/uws/uws-itty-relay, built by peers/uws/build.sh from
#           checkouts of uWebSockets and uSockets (UWS_BIN_DIR overrides)
#   uws-raw uWebSockets, plain pub/sub read as nchan (peers/uws/raw_relay.cpp)
#
# Everything listens on 127.0.0.1:PORT only. State (pids, the server's log,
# nginx's prefix dir) lives in ${PEERS_STATE:-/tmp/itty-peers}/PEER-PORT/.
# The script returns once the port accepts connections (at most 15 s), or
# fails with the server's log.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

foreground=0
if [[ ${1:-} == --fg ]]; then foreground=1; shift; fi
if [[ $# -lt 3 ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
  exit 2
fi
peer=$1 port=$2 cpus=$3
shift 3
state=${PEERS_STATE:-/tmp/itty-peers}/$peer-$port
mkdir -p "$state"
log=$state/log

# File descriptors for 10,000+ members (the hard limit permitting).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

case $peer in
  itty)
    bin=${ITTY_RELAY:-$repo/target/release/itty-relay}
    [[ -x $bin ]] || { echo "start.sh: no relay binary at $bin (cargo build --release -p itty-relay)" >&2; exit 1; }
    [[ $# -gt 0 ]] || set -- --shards 1
    cmd=(env "$bin" --listen "127.0.0.1:$port" --log warn "$@")
    ;;
  nchan)
    command -v nginx >/dev/null || { echo "start.sh: nginx missing: run loadtest/peers/install.sh" >&2; exit 1; }
    mkdir -p "$state/prefix/tmp" "$state/prefix/logs"
    sed "s/@PORT@/$port/" "$here/nchan/nginx.conf" > "$state/prefix/nginx.conf"
    cmd=(env nginx -p "$state/prefix" -c nginx.conf -g 'daemon off;' "$@")
    ;;
  nats)
    command -v nats-server >/dev/null || { echo "start.sh: nats-server missing: run loadtest/peers/install.sh" >&2; exit 1; }
    cmd=(env GOMAXPROCS="${GOMAXPROCS:-1}" NATS_WS_PORT="$port" nats-server -c "$here/nats/nats.conf" "$@")
    ;;
  node)
    [[ -d $here/node-relay/node_modules/ws ]] || { echo "start.sh: run loadtest/peers/install.sh (npm ci)" >&2; exit 1; }
    cmd=(env node "$here/node-relay/relay.mjs" "127.0.0.1:$port" "$@")
    ;;
  uws|uws-raw)
    bin=${UWS_BIN_DIR:-$repo/target/uws}/uws-itty-relay
    [[ $peer == uws-raw ]] && bin=${UWS_BIN_DIR:-$repo/target/uws}/uws-raw-relay
    [[ -x $bin ]] || { echo "start.sh: no $bin: build it with loadtest/peers/uws/build.sh UWS_SRC [USOCKETS_SRC]" >&2; exit 1; }
    cmd=(env "$bin" "127.0.0.1:$port" "$@")
    ;;
  *)
    echo "start.sh: unknown peer '$peer' (itty, nchan, nats, node, uws, uws-raw)" >&2
    exit 2
    ;;
esac

if (( foreground )); then
  exec taskset -c "$cpus" "${cmd[@]}"
fi

if [[ -f $state/pid ]] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
  echo "start.sh: $peer on port $port already runs (pid $(cat "$state/pid")); stop it first: loadtest/peers/stop.sh $peer $port" >&2
  exit 1
fi

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "start.sh: something already listens on 127.0.0.1:$port" >&2
  exit 1
fi

taskset -c "$cpus" "${cmd[@]}" >"$log" 2>&1 </dev/null &
pid=$!
echo "$pid" > "$state/pid"

# Ready when the port accepts a TCP connection.
for _ in $(seq 150); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "start.sh: $peer exited at start; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    break
  fi
  sleep 0.1
done
(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "start.sh: $peer not listening on $port after 15 s; log in $log" >&2; exit 1; }

measure=$pid
if [[ $peer == nchan ]]; then
  # The worker does all the work; the master only supervises.
  measure=$(pgrep -P "$pid" | head -1)
  [[ -n $measure ]] || { echo "start.sh: no nginx worker under master $pid" >&2; exit 1; }
fi
echo "$measure" > "$state/measure_pid"
echo "$measure"
