#!/usr/bin/env bash
# The storm with a gateway killed: starts a fresh `herald serve --dev` (NATS,
# dispatcher and a gateway) and a second gateway process on the same NATS,
# runs `herald bench storm --kill-pid` with the devices spread over both, so
# the second gateway is killed (SIGKILL) with half of them, then stops
# everything it started.
#
#   DEVICES=18000 MISSED=10 scripts/bench-storm-kill.sh [more bench storm flags]
#
# Only loopback addresses are used; every process started here is stopped
# by PID on exit (the killed one is already gone).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${DEVICES:-18000}
MISSED=${MISSED:-10}
BASE=${BASE_PORT:-29000}

source scripts/lib.sh

API=127.0.0.1:$((BASE+1)); NATS=127.0.0.1:$((BASE+2)); GW1=127.0.0.1:$((BASE+3)); GW2=127.0.0.1:$((BASE+4))
"$BIN" serve --dev --data "$TMP/data" --http "$API" --tcp "$GW1" --ws '' --nats-listen "$NATS" \
  >"$TMP/serve.out" 2>"$TMP/serve.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q "herald is running" "$TMP/serve.out" 2>/dev/null && break; sleep 0.1; done
grep -q "herald is running" "$TMP/serve.out" || { cat "$TMP/serve.err" >&2; exit 1; }
"$BIN" gateway --nats "nats://$NATS" --tcp "$GW2" --ws '' --metrics 127.0.0.1:$((BASE+5)) >"$TMP/gw.out" 2>"$TMP/gw.err" &
GWPID=$!
PIDS+=("$GWPID")
for _ in $(seq 100); do grep -q "herald is running" "$TMP/gw.out" 2>/dev/null && break; sleep 0.1; done
grep -q "herald is running" "$TMP/gw.out" || { cat "$TMP/gw.err" >&2; exit 1; }
echo "# storm: $DEVICES devices over $GW1 (herald serve) and $GW2 (pid $GWPID, killed)"
"$BIN" bench storm --devices "$DEVICES" --missed "$MISSED" --api "http://$API" --gateways "$GW1,$GW2" \
  --kill-pid "$GWPID" --kill-addr "$GW2" "$@"
