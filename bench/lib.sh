# Shared by the benchmark scripts (sourced, not run): logging, the dyngate binary under test, and
# waiting for a started dyngate to be ready. The caller has `set -euo pipefail` and is at the
# repository's root.

log() { printf '[bench] %s\n' "$*" >&2; }

# Sets dyngate_bin and build (how the binary is named in the output): BENCH_DYNGATE_BIN when set,
# else this checkout built in release mode (marked when src/, sql/ or the manifests have
# uncommitted changes).
bench_dyngate_bin() {
  if [ -n "${BENCH_DYNGATE_BIN:-}" ]; then
    dyngate_bin=$BENCH_DYNGATE_BIN
    build=$dyngate_bin
    return
  fi
  build=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  git diff --quiet HEAD -- src Cargo.toml Cargo.lock sql 2>/dev/null || build="$build + uncommitted changes"
  log "building dyngate $build (cargo build --release)"
  cargo build --release -q
  dyngate_bin=${CARGO_TARGET_DIR:-$PWD/target}/release/dyngate
}

# wait_ready PID READY_FILE LOG_FILE: waits (30 s at most) for the dyngate started as PID with
# `--ready-file READY_FILE` to be ready, and prints the port it listens on for PostgreSQL
# clients. Fails, with the log, if it exits first or is not ready in time.
wait_ready() {
  local pid=$1 ready=$2 logfile=$3
  for _ in $(seq 300); do
    [ -s "$ready" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$logfile" >&2; return 1; }
    sleep 0.1
  done
  [ -s "$ready" ] || { log "dyngate did not become ready"; cat "$logfile" >&2; return 1; }
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pg"].rsplit(":",1)[1])' "$ready"
}
