#!/usr/bin/env bash
# Where the CPU goes during a unicast run: starts a fresh `herald serve --dev`
# (its own store, the default loopback ports), runs `herald bench unicast`
# with the flags given, and samples the server's and the bench's CPU time
# (user and system, from /proc) and the whole machine's over the middle of
# the run (from 40% to 80% of DURATION).
#
#   DURATION=20s scripts/bench-cpu.sh --publishers 8 --per-request 100 --rate 20000 --ack-delay 500ms
#
# Linux only. Loopback only; the bench stops by itself, and every process
# started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20s}
DEVICES=${DEVICES:-1000}
secs=${DURATION%s}
[[ "$secs" =~ ^[0-9]+$ && "$secs" -ge 5 ]] || { echo "DURATION must be whole seconds, at least 5s, like 20s" >&2; exit 2; }

source scripts/lib.sh

"$BIN" serve --dev --data "$TMP/data" >"$TMP/serve.out" 2>"$TMP/serve.err" &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 100); do grep -q "herald is running" "$TMP/serve.out" 2>/dev/null && break; sleep 0.1; done
grep -q "herald is running" "$TMP/serve.out" || { cat "$TMP/serve.err" >&2; exit 1; }

"$BIN" bench unicast --devices "$DEVICES" --duration "$DURATION" "$@" >"$TMP/bench.out" 2>&1 &
BENCH=$!
PIDS+=("$BENCH")

ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }             # user, system (clock ticks)
machine() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9; exit}' /proc/stat; }  # busy, total
# The bench connects its devices first; its run starts when it prints progress.
for _ in $(seq 600); do grep -q "unicast:" "$TMP/bench.out" 2>/dev/null && break; sleep 0.1; done
sleep $((secs * 4 / 10))
read -r su1 ss1 < <(ticks "$SERVER"); read -r bu1 bs1 < <(ticks "$BENCH"); read -r mb1 mt1 < <(machine)
window=$((secs * 4 / 10))
sleep "$window"
read -r su2 ss2 < <(ticks "$SERVER"); read -r bu2 bs2 < <(ticks "$BENCH"); read -r mb2 mt2 < <(machine)
wait "$BENCH" || true
tr '\r' '\n' <"$TMP/bench.out" | grep -E "^(devices|accepted|delivered|acknowledged|end-to-end)" || true
hz=$(getconf CLK_TCK)
pct() { echo $(( ($2 - $1) * 100 / (hz * window) )); }
echo "CPU over ${window}s mid-run, % of one core: server user $(pct "$su1" "$su2") system $(pct "$ss1" "$ss2"); bench user $(pct "$bu1" "$bu2") system $(pct "$bs1" "$bs2"); machine busy $(( (mb2 - mb1) * 100 / (mt2 - mt1) ))% of $(nproc) cores"
