#!/bin/sh
# Installs what the build, the tests and the demo need, and only what is
# missing: Debian packages (as root) and the npm test peers into ./node_modules.
set -e
PKGS="lua5.4 liblua5.4-dev libcurl4-openssl-dev libssl-dev lua-cjson lua-busted lua-socket
luarocks libluajit2-5.1-dev luajit2 nginx libnginx-mod-http-lua curl openssl
pkg-config gcc make nodejs npm strace"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
# nodejs may come from outside Debian (then npm is bundled with it)
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  missing=$(echo "$missing" | tr ' ' '\n' | grep -v -x -e nodejs -e npm | tr '\n' ' ')
fi
if [ -n "$(echo "$missing" | tr -d ' ')" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages:$missing (run as root, or install them)" >&2
    exit 1
  fi
  echo "installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
