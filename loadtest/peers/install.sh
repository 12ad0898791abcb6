#!/usr/bin/env bash
# Install what the side-by-side peers need, idempotently, and print versions:
# nginx + nchan and nats-server from Debian, jq, Node (Debian's, only if no
# node is on PATH) and the Node relay's dependencies (`npm ci`, only when
# node_modules is missing or older than package-lock.json).
#
#   loadtest/peers/install.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

need=()
for pkg in nginx libnginx-mod-nchan nats-server jq; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
command -v node >/dev/null && command -v npm >/dev/null || need+=(nodejs npm)
if ((${#need[@]})); then
  sudo=; [[ $(id -u) -eq 0 ]] || sudo=sudo
  echo "install.sh: apt-get install ${need[*]}" >&2
  $sudo apt-get update -qq
  # policy-rc.d or not, the Debian nginx service is never needed: start.sh
  # runs nginx from a prefix dir of its own.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

relay=$here/node-relay
if [[ ! -d $relay/node_modules/ws || $relay/package-lock.json -nt $relay/node_modules/.package-lock.json ]]; then
  echo "install.sh: npm ci in $relay" >&2
  (cd "$relay" && npm ci --no-audit --no-fund --loglevel=error)
fi

echo "nginx:       $(nginx -v 2>&1 | sed 's/^nginx version: //')"
echo "nchan:       $(dpkg-query -W -f='${Version}' libnginx-mod-nchan)"
echo "nats-server: $(nats-server --version | sed 's/^nats-server: //')"
echo "node:        $(node --version)"
echo "ws:          $(node -p "require('$relay/node_modules/ws/package.json').version")"
echo "jq:          $(jq --version)"
