#!/usr/bin/env bash
# The Flink engine's benchmark (bench/flink.py has what each part measures): a throwaway
# PostgreSQL (scripts/pg-temp), a throwaway Flink 2.3 cluster with its SQL Gateway
# (scripts/flink-temp) and a release build of dyngate, all on loopback ports chosen at run time
# and stopped on exit.
#
#   bench/flink.sh
#   BENCH_ROUNDS=7 BENCH_FRESHNESS=10 bench/flink.sh
#   BENCH_PARTS=overhead bench/flink.sh
#
# Settings (environment):
#   BENCH_PARTS      "first-rows visibility overhead" (default: all three)
#   BENCH_ROUNDS     rounds per part; medians are shown (default 5)
#   BENCH_FRESHNESS  the CONTINUOUS tables' freshness, in seconds (default 5)
#   BENCH_DYNGATE_BIN  a dyngate binary to use instead of building this checkout
#   BENCH_KEEP       1 to keep the work directory
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
# shellcheck source=bench/lib.sh
. bench/lib.sh

scripts/deps
python=${DYNGATE_CACHE:-$HOME/.cache/dyngate}/venv/bin/python
bench_dyngate_bin

work=$(mktemp -d /tmp/dyngate-bench-flink.XXXXXX)
chmod 755 "$work"
dyngate_pid=
cleanup() {
  set +e
  [ -n "$dyngate_pid" ] && kill "$dyngate_pid" 2>/dev/null && wait "$dyngate_pid" 2>/dev/null
  scripts/flink-temp stop "$work/flink"
  scripts/pg-temp stop "$work/pg"
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting a throwaway PostgreSQL and Flink"
eval "$(scripts/pg-temp start "$work/pg")"
eval "$(scripts/flink-temp start "$work/flink")"
pg_url=$DYNGATE_TEST_PG
pg_port=${pg_url##*:}
pg_port=${pg_port%%/*}
pg_password=$(cat "$work/pg/pw")
jars=$(find "$DYNGATE_TEST_FLINK_CONNECTORS" -name '*.jar' ! -name '*cdc*' | sort | paste -sd, -)

"$dyngate_bin" serve --postgres "$pg_url" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
  --ready-file "$work/dyngate.ready" --log warn --flink-gateway "$DYNGATE_TEST_FLINK_GATEWAY" \
  --flink-rest "$DYNGATE_TEST_FLINK_REST" --flink-jar "$jars" >"$work/dyngate.log" 2>&1 &
dyngate_pid=$!
dyngate_port=$(wait_ready "$dyngate_pid" "$work/dyngate.ready" "$work/dyngate.log")
log "dyngate $build on port $dyngate_port"

"$python" bench/flink.py \
  --gateway "host=127.0.0.1 port=$dyngate_port user=postgres password=$pg_password dbname=postgres sslmode=disable" \
  --postgres "host=127.0.0.1 port=$pg_port user=postgres password=$pg_password dbname=postgres sslmode=disable" \
  --jdbc-url "jdbc:postgresql://127.0.0.1:$pg_port/postgres" --pg-password "$pg_password" \
  --flink-gateway "$DYNGATE_TEST_FLINK_GATEWAY" --flink-rest "$DYNGATE_TEST_FLINK_REST" --jars "$jars" \
  --work "$work" --rounds "${BENCH_ROUNDS:-5}" --freshness "${BENCH_FRESHNESS:-5}" \
  --parts "${BENCH_PARTS:-first-rows visibility overhead}"
echo "(build $build, $(nproc) cores, $(date -u +%F))"
