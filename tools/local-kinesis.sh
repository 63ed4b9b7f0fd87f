#!/bin/sh
# local-kinesis.sh - a local Kinesis (kinesis-local, from npm) in one command.
# Installs it when node_modules lacks it, starts it from its own folder (it
# loads server.json from the working directory, so node_modules/.bin/kinesis-local
# run from elsewhere crashes), and prints the environment lines that point
# lua-kinesis at it: on stdout as shell code, explained on stderr.
#
#   sh tools/local-kinesis.sh                 foreground on 4568 (TLS 4567); Ctrl-C stops it
#   sh tools/local-kinesis.sh --background    detached; pid in build/local-kinesis.pid
#   sh tools/local-kinesis.sh --stop          stops the detached one (make local-kinesis-stop)
#   sh tools/local-kinesis.sh --env           prints the environment lines only
#   options: --port N, --tls-port N, --free-ports (any two free ones), --pid-file FILE
#   (or KINESIS_LOCAL_PORT, KINESIS_LOCAL_TLS_PORT, KINESIS_LOCAL_PID_FILE)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${KINESIS_LOCAL_PORT:-4568}
TLS_PORT=${KINESIS_LOCAL_TLS_PORT:-4567}
PID_FILE=${KINESIS_LOCAL_PID_FILE:-$ROOT/build/local-kinesis.pid}
MODE=foreground

usage() {
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit "$1"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --background|-b) MODE=background ;;
    --stop) MODE=stop ;;
    --env) MODE=env ;;
    --port) PORT=$2; shift ;;
    --port=*) PORT=${1#--port=} ;;
    --tls-port) TLS_PORT=$2; shift ;;
    --tls-port=*) TLS_PORT=${1#--tls-port=} ;;
    --free-ports) FREE=1 ;;
    --pid-file) PID_FILE=$2; shift ;;
    --pid-file=*) PID_FILE=${1#--pid-file=} ;;
    -h|--help) usage 0 ;;
    *) echo "local-kinesis: unknown argument '$1'" >&2; usage 2 ;;
  esac
  shift
done
LOG_FILE=${PID_FILE%.pid}.log

free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}
if [ -n "$FREE" ]; then
  PORT=$(free_port) && TLS_PORT=$(free_port) || exit 1
  while [ "$TLS_PORT" = "$PORT" ]; do TLS_PORT=$(free_port) || exit 1; done
fi

say() { echo "$@" >&2; }

# Shell code for the caller: eval "$(sh tools/local-kinesis.sh --background)"
# sets all of it at once.
env_lines() {
  cat <<EOF
export AWS_ENDPOINT_URL_KINESIS=http://127.0.0.1:$PORT
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
export LUA_PATH="$ROOT/lua/?.lua;$ROOT/lua/?/init.lua;;"
export LUA_CPATH="$ROOT/build/5.4/?.so;;"
EOF
}

explain() {
  say "kinesis-local is listening on http://127.0.0.1:$PORT (TLS with a self-signed certificate on $TLS_PORT)."
  say "It accepts any access key (it does not check signatures) and keeps streams in memory."
  say "Paste these lines into the shell that runs your Lua scripts:"
  env_lines | sed 's/^/    /' >&2
}

# Any HTTP answer, even an error, means something listens on the port.
listening() {
  curl -s -o /dev/null --noproxy '*' --max-time 2 "http://127.0.0.1:$1/"
  rc=$?
  [ $rc -ne 7 ] && [ $rc -ne 28 ]
}

stop() {
  if [ ! -f "$PID_FILE" ]; then
    say "local-kinesis: no $PID_FILE: nothing started with --background"
    return 0
  fi
  pid=$(cat "$PID_FILE")
  # started with setsid: the pid is also its process group
  kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$PID_FILE"
  say "kinesis-local (pid $pid) stopped"
}

case "$MODE" in
  env) env_lines; exit 0 ;;
  stop) stop; exit 0 ;;
esac

DIR="$ROOT/node_modules/kinesis-local"
if [ ! -f "$DIR/main.js" ]; then
  command -v npm >/dev/null 2>&1 || { say "local-kinesis: npm is needed (Debian: apt-get install npm)"; exit 1; }
  say "installing kinesis-local (npm ci) ..."
  (cd "$ROOT" && npm ci --no-audit --no-fund >&2) || exit 1
fi

if listening "$PORT"; then
  say "local-kinesis: port $PORT is already taken (a kinesis-local started earlier? make local-kinesis-stop),"
  say "or choose another: sh tools/local-kinesis.sh --port 4600 --tls-port 4599"
  exit 1
fi

# Streams become ACTIVE after half a second instead of the service's minutes.
export KINESIS_MOCK_PLAIN_PORT="$PORT" KINESIS_MOCK_TLS_PORT="$TLS_PORT"
export CREATE_STREAM_DURATION="${CREATE_STREAM_DURATION:-500ms}"
export DELETE_STREAM_DURATION="${DELETE_STREAM_DURATION:-500ms}"
export REGISTER_STREAM_CONSUMER_DURATION="${REGISTER_STREAM_CONSUMER_DURATION:-500ms}"
export LOG_LEVEL="${LOG_LEVEL:-WARN}"

if [ "$MODE" = foreground ]; then
  env_lines
  explain
  say "Ctrl-C stops it."
  cd "$DIR" && exec node main.js
fi

mkdir -p "$(dirname "$PID_FILE")"
if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
  say "local-kinesis: already running (pid $(cat "$PID_FILE"), $PID_FILE); make local-kinesis-stop first"
  exit 1
fi
(cd "$DIR" && exec setsid node main.js >"$LOG_FILE" 2>&1 </dev/null) &
pid=$!
echo "$pid" >"$PID_FILE"
i=0
until listening "$PORT"; do
  if ! kill -0 "$pid" 2>/dev/null || [ $i -ge 300 ]; then
    say "local-kinesis: kinesis-local did not start; the end of $LOG_FILE:"
    tail -20 "$LOG_FILE" >&2
    kill -KILL "$pid" 2>/dev/null
    rm -f "$PID_FILE"
    exit 1
  fi
  sleep 0.1
  i=$((i + 1))
done
env_lines
explain
say "It runs in the background (pid $pid, log $LOG_FILE); stop it with: make local-kinesis-stop"
