#!/usr/bin/env bash
# Rounds of the bench issue's two unicast targets, each run against a fresh
# `herald serve --dev` (its own store, the default loopback ports):
#
#   A  herald bench unicast --devices 1000 --duration 15s --publishers 16 --per-request 100 --ack-delay 500ms
#   B  herald bench unicast --devices 1000 --duration 15s --publishers 8 --per-request 100 --rate 20000 --ack-delay 500ms
#
# and, only when TARGETS names it, B's publishers each waiting for an
# answer before the next request (as the bench did before --in-flight;
# latency still counts from when each request was due):
#
#   C  the same as B with --in-flight 1
#
# One line per run (time, server, target, delivered and acknowledged per
# second, devices acknowledged, p50 and p99 ms, lost, the server's CPU over
# the middle of the run in % of one core; then where the latency goes, as
# p50/p99 ms: pub= each request's publish, due -> 200; api= the API's
# handling of it, request read -> 200 written; gw= the gateway's stored ->
# queued for the device), then the medians per server and target. This
# machine's speed drifts by a third within an hour, so compare servers
# only in turns: SERVERS="old/bin/herald bin/herald" runs each
# round's A and B on every server in turn (the load generator is always
# this repository's build).
#
#   ROUNDS=10 scripts/bench-unicast.sh
#   ROUNDS=8 SERVERS="/tmp/herald-before bin/herald" scripts/bench-unicast.sh
#   ROUNDS=8 TARGETS=B scripts/bench-unicast.sh     # only the latency target
#   ROUNDS=5 TARGETS="B C" scripts/bench-unicast.sh # B in turns with C
#   PROBE=1 ROUNDS=6 scripts/bench-unicast.sh       # the machine's speed before each round
#
# With PROBE=1 each round starts with a line from scripts/probe (a few
# seconds of one core: compute, memory and loopback TCP costs), to set the
# round's figures next to what the shared machine gave at the time.
#
# Linux only. Loopback only; every run stops by itself, and every process
# started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
TARGETS=${TARGETS:-A B}
source scripts/lib.sh
SERVERS=${SERVERS:-$BIN}
for s in $SERVERS; do [[ -x "$s" ]] || { echo "no executable server $s" >&2; exit 2; }; done

A=(--devices 1000 --duration 15s --publishers 16 --per-request 100 --ack-delay 500ms)
B=(--devices 1000 --duration 15s --publishers 8 --per-request 100 --rate 20000 --ack-delay 500ms)
C=("${B[@]}" --in-flight 1)
hz=$(getconf CLK_TCK)
RESULTS="$TMP/results"
: >"$RESULTS"

# run SERVER TARGET FLAGS...: one line on stdout and in $RESULTS.
run() {
  local server=$1 target=$2; shift 2
  local data="$TMP/data-$RANDOM$RANDOM"
  "$server" serve --dev --data "$data" >"$TMP/serve.out" 2>"$TMP/serve.err" &
  local sp=$!
  PIDS+=("$sp")
  for _ in $(seq 100); do grep -q "herald is running" "$TMP/serve.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "herald is running" "$TMP/serve.out" || { cat "$TMP/serve.err" >&2; exit 1; }
  "$BIN" bench unicast "$@" >"$TMP/bench.out" 2>&1 &
  local bp=$!
  PIDS+=("$bp")
  for _ in $(seq 600); do grep -q "unicast:" "$TMP/bench.out" 2>/dev/null && break; sleep 0.1; done
  sleep 5
  local c1 c2
  c1=$(awk '{print $14+$15}' "/proc/$sp/stat")
  sleep 6
  c2=$(awk '{print $14+$15}' "/proc/$sp/stat")
  wait "$bp" || true
  kill "$sp" 2>/dev/null || true
  wait "$sp" 2>/dev/null || true
  rm -rf "$data"
  local out tp acked p50 p99 lost pub gwl api
  out=$(tr '\r' '\n' <"$TMP/bench.out")
  tp=$(grep -oP 'delivered: \d+, \K\d+' <<<"$out" || echo -)
  acked=$(grep -oP 'acknowledged: \K\d+/\d+' <<<"$out" || echo -)
  p50=$(grep -oP 'end-to-end latency.* p50 \K[0-9.]+' <<<"$out" || echo -)
  p99=$(grep -oP 'end-to-end latency.* p99 \K[0-9.]+' <<<"$out" || echo -)
  lost=$(grep -oP 'lost \K\d+' <<<"$out" || echo -)
  # Where the latency goes, p50/p99: each request's publish (due -> 200),
  # the API's handling of it, the gateway's stored -> queued for the device.
  pub=$(grep -oP 'of it, publish .* p50 \K[0-9.]+ ms, p90 [0-9.]+, p99 [0-9.]+' <<<"$out" | sed 's/ ms, p90 [0-9.]*, p99 /\//' || echo -)
  gwl=$(grep -oP 'of it, gateway .* p50 \K[0-9.]+ ms, p90 [0-9.]+, p99 [0-9.]+' <<<"$out" | sed 's/ ms, p90 [0-9.]*, p99 /\//' || echo -)
  api=$(grep -oP "of that, the API's handling .* p50 \K[0-9.]+ ms, p90 [0-9.]+, p99 [0-9.]+" <<<"$out" | sed 's/ ms, p90 [0-9.]*, p99 /\//' || echo -)
  local line
  line="$(date -u +%H:%M:%S) $server $target ${tp}/s acked=$acked p50=$p50 p99=$p99 lost=$lost cpu=$(( (c2 - c1) * 100 / (hz * 6) ))% pub=${pub:--} api=${api:--} gw=${gwl:--}"
  echo "$line"
  echo "$line" >>"$RESULTS"
}

if [[ "${PROBE:-}" == 1 ]]; then go build -o "$TMP/probe" ./scripts/probe; fi
for r in $(seq "$ROUNDS"); do
  if [[ "${PROBE:-}" == 1 ]]; then "$TMP/probe"; fi
  if [[ " $TARGETS " == *" A "* ]]; then for s in $SERVERS; do run "$s" A "${A[@]}"; done; fi
  if [[ " $TARGETS " == *" B "* ]]; then for s in $SERVERS; do run "$s" B "${B[@]}"; done; fi
  if [[ " $TARGETS " == *" C "* ]]; then for s in $SERVERS; do run "$s" C "${C[@]}"; done; fi
done

echo "medians over $ROUNDS rounds:"
for s in $SERVERS; do
  for t in $TARGETS; do
    awk -v s="$s" -v t="$t" '
      function median(a, n,   i, j, x) {
        for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j+1] = a[j]; a[j+1] = x }
        return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
      }
      $2 == s && $3 == t {
        n++
        v = $4; sub("/s", "", v); tp[n] = v + 0
        v = $6; sub("p50=", "", v); p50[n] = v + 0
        v = $7; sub("p99=", "", v); p99[n] = v + 0
        v = $9; sub("cpu=", "", v); sub("%", "", v); cpu[n] = v + 0
      }
      END {
        if (t == "A") printf "%s  A: %d/s delivered and acknowledged, server CPU %d%% of a core\n", s, median(tp, n), median(cpu, n)
        else printf "%s  %s: p99 %.2f ms, p50 %.2f ms at %d/s, server CPU %d%% of a core\n", s, t, median(p99, n), median(p50, n), median(tp, n), median(cpu, n)
      }' "$RESULTS"
  done
done
