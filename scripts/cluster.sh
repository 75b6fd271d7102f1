#!/usr/bin/env bash
# make cluster / make cluster-stop: herald's cluster topology as local
# processes on loopback — 3 NATS nodes (JetStream, routes), 2 dispatchers
# and 2 gateways — from the config files in deploy/local. State (NATS data,
# logs, pid files) goes to $CLUSTER_DIR (default ./cluster).
#
#   scripts/cluster.sh start   build, start everything, wait until ready, print the addresses
#   scripts/cluster.sh stop    stop what start started (by pid), keep the data
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${CLUSTER_DIR:-$ROOT/cluster}"
BIN="${HERALD_BIN:-$ROOT/bin/herald}"
CONF="$ROOT/deploy/local"
mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/data"

# http_ok PORT PATH: 200 from 127.0.0.1:PORT (bash's /dev/tcp: no curl needed).
http_ok() {
  exec 3<>"/dev/tcp/127.0.0.1/$1" 2>/dev/null || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  local status; IFS= read -r status <&3 || true
  exec 3<&- 3>&-
  [[ "$status" == *" 200 "* ]]
}

running() { [ -f "$DIR/pids/$1.pid" ] && kill -0 "$(cat "$DIR/pids/$1.pid")" 2>/dev/null; }

launch() { # name, herald arguments...
  local name=$1; shift
  if running "$name"; then echo "$name is already running (pid $(cat "$DIR/pids/$name.pid"))"; return; fi
  (cd "$DIR" && exec "$BIN" "$@" >"$DIR/logs/$name.log" 2>&1) &
  echo $! >"$DIR/pids/$name.pid"
}

wait_log() { # name, text
  for _ in $(seq 1 300); do
    if grep -q "$2" "$DIR/logs/$1.log" 2>/dev/null; then return 0; fi
    if ! running "$1"; then echo "$1 exited; its log:"; cat "$DIR/logs/$1.log"; return 1; fi
    sleep 0.1
  done
  echo "$1 not ready after 30 s; its log:"; cat "$DIR/logs/$1.log"; return 1
}

start() {
  [ -x "$BIN" ] || (cd "$ROOT" && go build -o "$BIN" ./cmd/herald)
  for i in 1 2 3; do launch "nats-$i" nats --config "$CONF/nats-$i.conf"; done
  for i in 1 2 3; do wait_log "nats-$i" "herald nats is running"; done
  # Streams can be made once every node says JetStream is ready (its
  # monitoring /healthz: routes up, meta leader known, caught up).
  for i in 1 2 3; do
    for _ in $(seq 1 300); do
      if http_ok $((8221 + i)) /healthz; then break; fi
      sleep 0.1
    done
  done
  # One dispatcher at a time: the first creates the replicated stream and
  # buckets; JetStream may leave concurrent creations of the same stream
  # unanswered (nats-io/nats.go#949).
  for i in 1 2; do launch "dispatcher-$i" dispatcher --config "$CONF/dispatcher-$i.yaml"; wait_log "dispatcher-$i" "herald is running"; done
  for i in 1 2; do launch "gateway-$i" gateway --config "$CONF/gateway-$i.yaml"; done
  for i in 1 2; do wait_log "gateway-$i" "herald is running"; done
  cat <<INFO
herald cluster is running (logs in $DIR/logs):
  NATS        nats://127.0.0.1:4222  nats://127.0.0.1:4223  nats://127.0.0.1:4224  (cluster "herald", JetStream R3)
  dispatchers http://127.0.0.1:8080  http://127.0.0.1:8081  (dashboard: /ui/, admin key local-cluster-admin-key)
  gateways    tcp://127.0.0.1:7070 ws://127.0.0.1:7071 (gw-1)  tcp://127.0.0.1:7080 ws://127.0.0.1:7081 (gw-2)
  metrics     http://127.0.0.1:9091/metrics (gw-1)  http://127.0.0.1:9092/metrics (gw-2)
Stop it with: make cluster-stop
INFO
}

stop() {
  # Gateways first (they drain on SIGTERM), then dispatchers, then NATS.
  for name in gateway-1 gateway-2 dispatcher-1 dispatcher-2 nats-1 nats-2 nats-3; do
    if running "$name"; then kill -TERM "$(cat "$DIR/pids/$name.pid")"; fi
  done
  for name in gateway-1 gateway-2 dispatcher-1 dispatcher-2 nats-1 nats-2 nats-3; do
    for _ in $(seq 1 300); do running "$name" || break; sleep 0.1; done
    if running "$name"; then echo "$name did not stop in 30 s; killing it"; kill -KILL "$(cat "$DIR/pids/$name.pid")"; fi
    rm -f "$DIR/pids/$name.pid"
  done
  echo "herald cluster stopped (data kept in $DIR/data)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
