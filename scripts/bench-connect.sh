#!/usr/bin/env bash
# Measures idle-connection cost: starts a fresh herald (NATS + dispatcher),
# G fresh gateway processes sharing one device port (SO_REUSEPORT), runs
# `herald bench connect` against them and stops everything it started.
#
#   MODE=tcp|ws|baseline CONNS=18000 GATEWAYS=1 PROCS=3 HOLD=30s scripts/bench-connect.sh
#
# Only loopback addresses are used; every process started here is stopped
# by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${MODE:-tcp}
CONNS=${CONNS:-18000}
GATEWAYS=${GATEWAYS:-1}
PROCS=${PROCS:-3}
HOLD=${HOLD:-30s}
SOURCES=${SOURCES:-127.0.0.2-127.0.0.9}
JSON=${JSON:-}
BASE=${BASE_PORT:-27000}

source scripts/lib.sh

API=127.0.0.1:$((BASE+1)); NATS=127.0.0.1:$((BASE+2)); DEV=127.0.0.1:$((BASE+10)); WSDEV=127.0.0.1:$((BASE+11))
"$BIN" serve --dev --data "$TMP/data" --http "$API" --tcp 127.0.0.1:$((BASE+3)) --ws '' --nats-listen "$NATS" \
  >"$TMP/serve.out" 2>"$TMP/serve.err" &
PIDS+=($!)
for _ in $(seq 100); do grep -q "herald is running" "$TMP/serve.out" 2>/dev/null && break; sleep 0.1; done

METRICS=()
for i in $(seq "$GATEWAYS"); do
  M=127.0.0.1:$((BASE+100+i))
  if [ "$MODE" = baseline ]; then
    "$BIN" bench baseline-gateway --nats "nats://$NATS" --tcp "$DEV" --metrics "$M" >"$TMP/gw$i.out" 2>&1 &
  else
    "$BIN" gateway --nats "nats://$NATS" --tcp "$DEV" --ws "$WSDEV" --reuse-port --metrics "$M" >"$TMP/gw$i.out" 2>"$TMP/gw$i.err" &
  fi
  PIDS+=($!)
  METRICS+=("http://$M/metrics")
done
for m in "${METRICS[@]}"; do
  for _ in $(seq 100); do curl -sf "$m" >/dev/null 2>&1 && break; sleep 0.1; done
done
TARGET=$DEV
[ "$MODE" = ws ] && TARGET=ws://$WSDEV/
ARGS=(--conns "$CONNS" --procs "$PROCS" --hold "$HOLD" --gateways "$TARGET" --sources "$SOURCES"
      --metrics "$(IFS=,; echo "${METRICS[*]}")")
[ -n "$JSON" ] && ARGS+=(--json "$JSON")
echo "# $MODE: $CONNS devices, $GATEWAYS gateway process(es) on one port, $PROCS client processes"
"$BIN" bench connect "${ARGS[@]}"
