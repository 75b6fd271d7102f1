# Sourced by the bench scripts (after cd to the repository): builds herald,
# makes a temporary directory and, on exit, stops by PID every process the
# script added to PIDS and removes the directory.
make -s build
BIN=$PWD/bin/herald
TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
