#!/usr/bin/env bash
# Dynamic-table refresh benchmarks on the PostgreSQL engine, against a throwaway PostgreSQL, with
# baselines measured in the same run:
#
#   full       A FULL refresh of a 1M-row aggregate through dyngate (REFRESH DYNAMIC TABLE, sent
#              with psql through the gateway) vs the same INSERT ... SELECT run directly in psql
#              into an empty table, and vs DELETE + INSERT ... SELECT in one transaction run
#              directly (what the refresh does, by hand). Prints the median of BENCH_ROUNDS and the
#              ratios. Goal: dyngate / INSERT ... SELECT <= 1.1.
#   scheduler  BENCH_TABLES (1000) small FULL tables with a 10-second freshness on one gateway,
#              watched for BENCH_SCHED_SECONDS (60): lateness of each scheduled fire (start of the
#              refresh minus its slot) p50 / p99 / max, fires missed or skipped, and the CPU the
#              gateway and PostgreSQL used. Goal: p99 lateness < 500 ms.
#
#   bench/refresh.sh                       # both parts
#   BENCH_PARTS=full BENCH_ROUNDS=5 bench/refresh.sh
#
# Settings (environment):
#   BENCH_PARTS          "full scheduler" (default)
#   BENCH_ROUNDS         rounds of the full-refresh comparison; the median is shown (default 3)
#   BENCH_GROUPS         result rows of the aggregate (default 1000000); the source has twice as many
#   BENCH_TABLES         dynamic tables in the scheduler part (default 1000)
#   BENCH_SCHED_SECONDS  how long the scheduler part watches (default 60)
#   BENCH_ACTION         the scheduler part's tables: "auto" (default: incremental where the query
#                        allows, as users get them) or "full" ('refresh.action' = 'full')
#   BENCH_DYNGATE_ARGS   extra arguments for `dyngate serve` (e.g. "--refresh-concurrency 8")
#   BENCH_DYNGATE_BIN    a dyngate binary to use instead of building this checkout
#   BENCH_KEEP           1 to keep the work directory
#
# Everything runs on loopback ports chosen at run time; everything started is stopped on exit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
parts=${BENCH_PARTS:-"full scheduler"}
rounds=${BENCH_ROUNDS:-3}
groups=${BENCH_GROUPS:-1000000}
tables=${BENCH_TABLES:-1000}
sched_secs=${BENCH_SCHED_SECONDS:-60}
action=${BENCH_ACTION:-auto}

# shellcheck source=bench/lib.sh
. bench/lib.sh

scripts/pg-bindir >/dev/null 2>&1 || scripts/deps
bench_dyngate_bin

work=$(mktemp -d /tmp/dyngate-bench.XXXXXX)
chmod 755 "$work"
dyngate_pid=
cleanup() {
  set +e
  [ -n "$dyngate_pid" ] && kill "$dyngate_pid" 2>/dev/null && wait "$dyngate_pid" 2>/dev/null
  scripts/pg-temp stop "$work/pg"
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting a throwaway PostgreSQL"
eval "$(scripts/pg-temp start "$work/pg")"
pg_url=$DYNGATE_TEST_PG
pg_port=${pg_url##*:}
pg_port=${pg_port%%/*}
export PGPASSWORD=$(cat "$work/pg/pw") PGUSER=postgres PGDATABASE=postgres PGHOST=127.0.0.1 PGSSLMODE=disable PGTZ=UTC
direct() { psql -X -q -v ON_ERROR_STOP=1 -p "$pg_port" "$@"; }

start_dyngate() {
  rm -f "$work/dyngate.ready"
  # shellcheck disable=SC2086
  "$dyngate_bin" serve --postgres "$pg_url" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --ready-file "$work/dyngate.ready" --log warn ${BENCH_DYNGATE_ARGS:-} >"$work/dyngate.log" 2>&1 &
  dyngate_pid=$!
  dyngate_port=$(wait_ready "$dyngate_pid" "$work/dyngate.ready" "$work/dyngate.log")
}
gateway() { psql -X -q -v ON_ERROR_STOP=1 -p "$dyngate_port" "$@"; }

# Milliseconds one command takes.
ms() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
median() { tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# CPU seconds (user + system) a process and its reaped children used so far.
cpu_of() { awk '{printf "%.2f", ($14 + $15 + $16 + $17) / 100}' "/proc/$1/stat"; }
pg_cpu() {
  local pm total=0 p
  pm=$(head -1 "$work/pg/data/postmaster.pid")
  total=$(cpu_of "$pm")
  for p in $(pgrep -P "$pm"); do total=$(awk -v a="$total" -v b="$(cpu_of "$p" 2>/dev/null || echo 0)" 'BEGIN {printf "%.2f", a + b}'); done
  echo "$total"
}

start_dyngate
log "dyngate $build on port $dyngate_port"

if [[ " $parts " == *" full "* ]]; then
  log "loading $((groups * 2)) orders rows for $groups groups"
  direct -c "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, amount numeric NOT NULL)" \
    -c "INSERT INTO orders SELECT g, g % $groups, (g % 997) / 10.0 FROM generate_series(1, $((groups * 2))) g" \
    -c "VACUUM ANALYZE orders"
  query="SELECT customer_id, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer_id"
  # Refreshed fully: the aggregate qualifies for incremental refresh, whose refresh with nothing
  # changed (NO_DATA) is not what this part measures.
  gateway -c "CREATE DYNAMIC TABLE per_customer WITH ('refresh.action' = 'full') FRESHNESS = INTERVAL '1' DAY AS $query"
  direct -c "CREATE TABLE by_hand AS $query" -c "CREATE TABLE empty_copy AS $query WITH NO DATA"
  insert_ms=() refresh_ms=() by_hand_ms=()
  # Each measurement starts from the same state (vacuumed tables, a fresh checkpoint), and the
  # three take turns going first, so that background work left by one does not land on another.
  measure() {
    direct -c "TRUNCATE empty_copy" -c "VACUUM per_customer" -c "VACUUM by_hand" -c CHECKPOINT
    case $1 in
      insert) insert_ms+=("$(ms direct -c "INSERT INTO empty_copy $query")") ;;
      refresh) refresh_ms+=("$(ms gateway -c "REFRESH DYNAMIC TABLE per_customer")") ;;
      by_hand) by_hand_ms+=("$(ms direct -c "BEGIN" -c "DELETE FROM by_hand" -c "INSERT INTO by_hand $query" -c "COMMIT")") ;;
    esac
  }
  orders=("insert refresh by_hand" "refresh by_hand insert" "by_hand insert refresh")
  for r in $(seq "$rounds"); do
    for what in ${orders[$(((r - 1) % 3))]}; do measure "$what"; done
    log "round $r: INSERT ... SELECT ${insert_ms[-1]} ms, REFRESH through dyngate ${refresh_ms[-1]} ms, DELETE + INSERT by hand ${by_hand_ms[-1]} ms"
  done
  rows=$(direct -Atc "SELECT count(*) FROM per_customer")
  i=$(echo "${insert_ms[*]}" | median)
  f=$(echo "${refresh_ms[*]}" | median)
  h=$(echo "${by_hand_ms[*]}" | median)
  echo
  echo "FULL refresh of a $rows-row aggregate over $((groups * 2)) rows (median of $rounds rounds, build $build)"
  printf '  %-46s %8s ms\n' "INSERT ... SELECT into an empty table (direct)" "$i" \
    "DELETE + INSERT ... SELECT, one tx (direct)" "$h" "REFRESH DYNAMIC TABLE through dyngate" "$f"
  awk -v f="$f" -v i="$i" -v h="$h" 'BEGIN {
    printf "  dyngate / INSERT ... SELECT  %.2fx   (goal <= 1.1)\n", f / i
    printf "  dyngate / DELETE + INSERT    %.2fx\n", f / h }'
  gateway -c "DROP DYNAMIC TABLE per_customer"
fi

if [[ " $parts " == *" scheduler "* ]]; then
  log "creating $tables FULL dynamic tables with a 10-second freshness"
  direct -c "CREATE TABLE tiny (k int, v int)" -c "INSERT INTO tiny SELECT g % 10, g FROM generate_series(1, 100) g"
  with=""
  [ "$action" = full ] && with="WITH ('refresh.action' = 'full')"
  for t in $(seq "$tables"); do
    echo "CREATE DYNAMIC TABLE s_$t $with FRESHNESS = INTERVAL '10' SECOND REFRESH_MODE = FULL AS SELECT k, sum(v) AS s FROM tiny WHERE k <> $((t % 10)) GROUP BY k;"
  done >"$work/create.sql"
  gateway -f "$work/create.sql" >/dev/null
  # Watch whole slots only: from the next slot boundary for sched_secs.
  now=$(date +%s)
  from=$(((now / 10 + 1) * 10))
  until=$((from + sched_secs))
  sleep $((from - now))
  gw_cpu0=$(cpu_of "$dyngate_pid")
  pg_cpu0=$(pg_cpu)
  sleep "$sched_secs"
  gw_cpu1=$(cpu_of "$dyngate_pid")
  pg_cpu1=$(pg_cpu)
  sleep 5 # let the last slot's refreshes finish
  echo
  echo "Scheduler: $tables FULL tables, freshness 10 s, slots from $(date -ud "@$from" +%T) for $sched_secs s (build $build)"
  direct -c "
    WITH fires AS (
      SELECT r.state, extract(epoch FROM r.started_at - r.schedule_time) * 1000 AS late_ms
        FROM dyngate.refresh r
       WHERE r.trigger = 'SCHEDULED' AND r.schedule_time >= to_timestamp($from) AND r.schedule_time < to_timestamp($until))
    SELECT $tables * ($sched_secs / 10) AS expected_fires,
           count(*) FILTER (WHERE state = 'SUCCEEDED') AS succeeded,
           count(*) FILTER (WHERE state = 'SKIPPED') AS skipped,
           count(*) FILTER (WHERE state NOT IN ('SUCCEEDED', 'SKIPPED')) AS other,
           round(percentile_cont(0.5) WITHIN GROUP (ORDER BY late_ms)::numeric, 1) AS p50_late_ms,
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY late_ms)::numeric, 1) AS p99_late_ms,
           round(max(late_ms)::numeric, 1) AS max_late_ms
      FROM fires"
  awk -v a="$gw_cpu0" -v b="$gw_cpu1" -v c="$pg_cpu0" -v d="$pg_cpu1" -v s="$sched_secs" 'BEGIN {
    printf "  CPU over the window: dyngate %.1f%% of one core, PostgreSQL %.1f%% (goal: p99 lateness < 500 ms)\n", (b - a) * 100 / s, (d - c) * 100 / s }'
fi
