#!/usr/bin/env bash
# RFC 6455 conformance: the Autobahn test cases, run by kosoku (PyPI), against
# the release build with two shards, then compared with the committed expected
# outcomes (compare.py). Needs `kosoku` on PATH (.ci/run installs it).
#
#   1. /__echo, sections 1 to 10 (12 and 13 are permessage-deflate, which the
#      relay does not offer), two cases at a time: expected-echo.txt.
#   2. /c/autobahn?echo=true, the framing sections (2 pings and pongs,
#      3 reserved bits, 4 opcodes, 7 closing), one case at a time (every case
#      joins the same channel): expected-channel.txt.
#   3. permessage-deflate, sections 12 and 13, against /__echo of a second
#      relay with `--compression on` and a 256 KiB message limit (12's
#      largest messages are 128 KiB): expected-deflate.txt. CI runs the
#      first seven rows of every data set (84 cases, about a tenth of the
#      whole run's time); AUTOBAHN_DEFLATE=all runs all 216 (about 5
#      minutes here).
#   4. wss://: sections 1 to 10 against /__echo of a third relay with
#      `--tls-cert` (a P-256 certificate made here for localhost), through
#      tls_tunnel.py, because kosoku has no TLS: kosoku speaks ws:// to the
#      tunnel, which carries every byte unchanged over TLS to the relay.
#      The same expected outcomes as over plain TCP: expected-echo.txt.
#
# The relay runs with its defaults (the 100 KiB message limit included, so
# section 9's larger messages end in 1009 as they would for users) except two:
# the echo endpoint is on, and the per-IP upgrade rate is lifted, because the
# suite opens one connection per case from 127.0.0.1, far faster than a
# person (tests/relay/limits.rs checks that limit). The shards are not pinned:
# kosoku shares their cpus.
#
# Reports: target/autobahn/{echo,channel}/index.html. To accept a new outcome,
# run this, then `compare.py --write EXPECTED REPORT_DIR` and give each case
# that is not passing its reason.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/conformance
out=target/autobahn
# Generous: each run takes seconds.
kosoku_timeout_secs=300

# pip may put its scripts in the user base, which is not always on PATH.
kosoku=$(command -v kosoku || echo "$(python3 -m site --user-base)/bin/kosoku")
[ -x "$kosoku" ] || { echo "kosoku not found: python3 -m pip install kosoku" >&2; exit 1; }
cargo build --release --bin itty-relay
rm -rf "$out"
mkdir -p "$out"

# Created here, not by the background job's redirection, which may run
# after the first look for the address below.
: >"$out/relay.log"
NO_COLOR=1 RUST_LOG=info target/release/itty-relay \
  --listen 127.0.0.1:0 --shards 2 --pin false --echo-endpoint true \
  --upgrades-per-ip-per-sec 100000 --upgrades-per-ip-burst 100000 \
  >"$out/relay.log" 2>&1 &
relay=$!
trap 'kill "$relay" 2>/dev/null || true' EXIT

addr=
for _ in $(seq 100); do
  addr=$(sed -n 's/.*local_addr=\([0-9.:]*\).*/\1/p' "$out/relay.log" | head -n 1)
  [ -n "$addr" ] && break
  kill -0 "$relay" 2>/dev/null || { cat "$out/relay.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "the relay logged no local_addr" >&2; exit 1; }
case "$addr" in 127.*) ;; *) echo "not a loopback address: $addr" >&2; exit 1 ;; esac

# kosoku exits 1 when a case does not pass; compare.py judges the outcomes.
run_cases() {
  local name=$1 url=$2
  shift 2
  local started=$SECONDS status=0
  timeout "$kosoku_timeout_secs" "$kosoku" "$@" -o "$out/$name" "$url" >"$out/$name.log" 2>&1 || status=$?
  if [ "$status" -gt 1 ]; then
    tail -n 20 "$out/$name.log" >&2
    echo "kosoku ($name) ended with status $status" >&2
    exit 1
  fi
  echo "$name: kosoku ran in $((SECONDS - started)) s"
}
run_cases echo "ws://$addr/__echo" -p 2 -x '12.*' -x '13.*'
run_cases channel "ws://$addr/c/autobahn?echo=true" -p 1 -i '2.*' -i '3.*' -i '4.*' -i '7.*'

# Section 3: a second relay, compression on.
: >"$out/relay-deflate.log"
NO_COLOR=1 RUST_LOG=info target/release/itty-relay \
  --listen 127.0.0.1:0 --shards 2 --pin false --echo-endpoint true \
  --compression on --message-bytes-max 262144 \
  --upgrades-per-ip-per-sec 100000 --upgrades-per-ip-burst 100000 \
  >"$out/relay-deflate.log" 2>&1 &
deflate_relay=$!
trap 'kill "$relay" "$deflate_relay" 2>/dev/null || true' EXIT
deflate_addr=
for _ in $(seq 100); do
  deflate_addr=$(sed -n 's/.*local_addr=\([0-9.:]*\).*/\1/p' "$out/relay-deflate.log" | head -n 1)
  [ -n "$deflate_addr" ] && break
  sleep 0.1
done
[ -n "$deflate_addr" ] || { cat "$out/relay-deflate.log" >&2; exit 1; }
if [ "${AUTOBAHN_DEFLATE:-ci}" = all ]; then
  run_cases deflate "ws://$deflate_addr/__echo" -p 2 -i '12.*' -i '13.*'
else
  # kosoku's -i takes ids and `*` globs only: the rows are listed.
  rows=()
  for group in 12.1 12.2 12.3 12.4 12.5 13.1 13.2 13.3 13.4 13.5 13.6 13.7; do
    for row in 1 2 3 4 5 6 7; do rows+=(-i "$group.$row"); done
  done
  run_cases deflate "ws://$deflate_addr/__echo" -p 2 "${rows[@]}"
fi
kill -TERM "$deflate_relay"
wait "$deflate_relay" || { echo "the deflate relay did not exit cleanly" >&2; exit 1; }
if grep -qi panic "$out/relay-deflate.log"; then
  grep -i -m 5 panic "$out/relay-deflate.log" >&2
  exit 1
fi
trap 'kill "$relay" 2>/dev/null || true' EXIT

# Section 4: a third relay speaking TLS, reached through the tunnel.
tls_dir=$out/tls
mkdir -p "$tls_dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -days 2 \
  -keyout "$tls_dir/key.pem" -out "$tls_dir/cert.pem" 2>/dev/null
: >"$out/relay-tls.log"
NO_COLOR=1 RUST_LOG=info target/release/itty-relay \
  --listen 127.0.0.1:0 --shards 2 --pin false --echo-endpoint true \
  --tls-cert "$tls_dir/cert.pem" --tls-key "$tls_dir/key.pem" \
  --upgrades-per-ip-per-sec 100000 --upgrades-per-ip-burst 100000 \
  >"$out/relay-tls.log" 2>&1 &
tls_relay=$!
trap 'kill "$relay" "$tls_relay" 2>/dev/null || true' EXIT
tls_addr=
for _ in $(seq 100); do
  tls_addr=$(sed -n 's/.*local_addr=\([0-9.:]*\).*/\1/p' "$out/relay-tls.log" | head -n 1)
  [ -n "$tls_addr" ] && break
  kill -0 "$tls_relay" 2>/dev/null || { cat "$out/relay-tls.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$tls_addr" ] || { cat "$out/relay-tls.log" >&2; exit 1; }
: >"$out/tunnel.addr"
python3 "$here/tls_tunnel.py" "$tls_addr" "$tls_dir/cert.pem" >"$out/tunnel.addr" 2>"$out/tunnel.log" &
tunnel=$!
trap 'kill "$relay" "$tls_relay" "$tunnel" 2>/dev/null || true' EXIT
tunnel_addr=
for _ in $(seq 100); do
  tunnel_addr=$(head -n 1 "$out/tunnel.addr")
  [ -n "$tunnel_addr" ] && break
  kill -0 "$tunnel" 2>/dev/null || { cat "$out/tunnel.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$tunnel_addr" ] || { echo "the TLS tunnel printed no address" >&2; exit 1; }
run_cases echo-tls "ws://$tunnel_addr/__echo" -p 2 -x '12.*' -x '13.*'
kill "$tunnel" 2>/dev/null || true
kill -TERM "$tls_relay"
wait "$tls_relay" || { echo "the TLS relay did not exit cleanly" >&2; exit 1; }
if grep -qi panic "$out/relay-tls.log"; then
  grep -i -m 5 panic "$out/relay-tls.log" >&2
  exit 1
fi
trap 'kill "$relay" 2>/dev/null || true' EXIT

# It drains within shutdown_timeout_ms (5 s by default).
kill -TERM "$relay"
for _ in $(seq 100); do
  kill -0 "$relay" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$relay" 2>/dev/null; then
  kill -KILL "$relay"
  echo "the relay did not exit within 10 s of SIGTERM" >&2
  exit 1
fi
status=0
wait "$relay" || status=$?
trap - EXIT
if [ "$status" -ne 0 ]; then
  tail -n 20 "$out/relay.log" >&2
  echo "the relay exited with status $status after SIGTERM" >&2
  exit 1
fi
if grep -qi panic "$out/relay.log"; then
  grep -i -m 5 panic "$out/relay.log" >&2
  echo "the relay logged a panic" >&2
  exit 1
fi
echo "relay: stopped by SIGTERM, exit status 0, no panic logged"

ok=0
python3 "$here/compare.py" "$here/expected-echo.txt" "$out/echo" || ok=1
python3 "$here/compare.py" "$here/expected-echo.txt" "$out/echo-tls" || ok=1
python3 "$here/compare.py" "$here/expected-channel.txt" "$out/channel" \
  --same-framing-as "$out/echo" || ok=1
subset=--subset
[ "${AUTOBAHN_DEFLATE:-ci}" = all ] && subset=
python3 "$here/compare.py" "$here/expected-deflate.txt" "$out/deflate" $subset || ok=1
exit "$ok"
