#!/usr/bin/env bash
# pgbench select-only (`-S`) through dyngate, compared with PostgreSQL directly and with PgBouncer
# (session pooling), all in the same run against the same throwaway PostgreSQL.
#
# For every protocol mode (-M simple, -M extended) and client count (1, 8) it runs pgbench against
#   direct    PostgreSQL on 127.0.0.1 (TCP, like the two proxies' own backend connections)
#   dyngate   `dyngate serve --postgres ...` (release build), one backend connection per client
#   pgbouncer PgBouncer 1.x, pool_mode = session
# and prints throughput (tps), mean and p99 latency (p99 exact, from pgbench's per-transaction log),
# the proxy's CPU time per transaction, and the ratios dyngate/direct and dyngate/pgbouncer.
# Goal: dyngate >= PgBouncer's throughput and >= 0.85x direct.
#
# Run from anywhere, as root (installs pgbouncer with apt-get if missing) or as a user who has
# pgbouncer, pgbench and the PostgreSQL server binaries already:
#
#   bench/pgbench.sh
#   BENCH_SECONDS=5 bench/pgbench.sh                 # shorter runs
#
# Settings (environment):
#   BENCH_SECONDS  duration of each pgbench run (default 15)
#   BENCH_CLIENTS  client counts (default "1 8"); pgbench -j is min(clients, 2)
#   BENCH_MODES    pgbench -M modes (default "simple extended"; "prepared" also works)
#   BENCH_TARGETS  targets (default "direct dyngate pgbouncer")
#   BENCH_ROUNDS   repetitions of the whole matrix; the table shows the median (default 1)
#   BENCH_SCALE    pgbench -i scale (default 10: 1M accounts, ~160 MB, held in memory by
#                  shared_buffers and the page cache, so runs measure the protocol path, not the disk)
#   BENCH_MAX_OTHER  a run during which other processes used more than this share of the machine
#                  (percent, default 5) is repeated, up to BENCH_ATTEMPTS runs (default 3); before
#                  each run the script waits up to BENCH_QUIET_WAIT s (default 120) for a quiet second
#   BENCH_KEEP     1 to keep the work directory (results.tsv, pgbench and proxy logs) after the run
#   BENCH_DYNGATE_BIN  a dyngate binary to use instead of building this checkout
#   BENCH_BASE_BIN  a second dyngate binary (another build), run as the target "base" in the same
#                  run; the report adds the ratios dyngate/base (to compare builds)
# dyngate inherits the environment, so e.g. TOKIO_WORKER_THREADS=1 bench/pgbench.sh tries a
# one-thread runtime.
#
# Everything runs on loopback ports chosen at run time; everything started is stopped on exit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
secs=${BENCH_SECONDS:-15}
clients_list=${BENCH_CLIENTS:-"1 8"}
modes=${BENCH_MODES:-"simple extended"}
targets=${BENCH_TARGETS:-"direct dyngate pgbouncer${BENCH_BASE_BIN:+ base}"}
rounds=${BENCH_ROUNDS:-1}
scale=${BENCH_SCALE:-10}

# shellcheck source=bench/lib.sh
. bench/lib.sh
is_root() { [ "$(id -u)" = 0 ]; }
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- prerequisites --------------------------------------------------------------------------------
apt_install() {
  is_root || { log "missing $*; install with: sudo apt-get install $*"; exit 1; }
  log "installing $*"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "$@" >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
}
pkgs=()
scripts/pg-bindir >/dev/null 2>&1 || pkgs+=(postgresql)
command -v psql >/dev/null 2>&1 || pkgs+=(postgresql-client)
command -v pgbench >/dev/null 2>&1 || pkgs+=(postgresql-contrib)
[ ${#pkgs[@]} -eq 0 ] || apt_install "${pkgs[@]}"
pgbouncer_bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
if [ ! -x "$pgbouncer_bin" ]; then
  apt_install pgbouncer
  pgbouncer_bin=/usr/sbin/pgbouncer
  # Debian's package may start its own service (on 127.0.0.1:6432); this benchmark runs its own.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet pgbouncer 2>/dev/null; then
    systemctl stop pgbouncer || true
  elif [ -x /etc/init.d/pgbouncer ]; then
    /etc/init.d/pgbouncer stop >/dev/null 2>&1 || true
  fi
fi

bench_dyngate_bin

# --- set-up ---------------------------------------------------------------------------------------
work=$(mktemp -d /tmp/dyngate-bench.XXXXXX)
chmod 755 "$work"
dyngate_pid=
base_pid=
pgbouncer_pid=
cleanup() {
  set +e
  # Started in a subshell (start_dyngate), so not this shell's children: waited for by polling.
  for p in $dyngate_pid $base_pid; do
    kill "$p" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  [ -n "$pgbouncer_pid" ] && kill "$pgbouncer_pid" 2>/dev/null && wait "$pgbouncer_pid" 2>/dev/null
  scripts/pg-temp stop "$work/pg"
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting a throwaway PostgreSQL"
eval "$(scripts/pg-temp start "$work/pg")"
pg_url=$DYNGATE_TEST_PG
pg_pw=$(cat "$work/pg/pw")
pg_port=${pg_url##*:}
pg_port=${pg_port%%/*}
export PGPASSWORD=$pg_pw PGUSER=postgres PGDATABASE=postgres PGHOST=127.0.0.1 PGSSLMODE=disable

log "initialising pgbench data (scale $scale)"
pgbench -i -q -s "$scale" -p "$pg_port" >"$work/init.log" 2>&1 || { cat "$work/init.log" >&2; exit 1; }

# Starts a dyngate binary; prints "pid port".
start_dyngate() {
  local bin=$1 name=$2 pid port
  "$bin" serve --postgres "$pg_url" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --ready-file "$work/$name.ready" --log warn >"$work/$name.log" 2>&1 &
  pid=$!
  port=$(wait_ready "$pid" "$work/$name.ready" "$work/$name.log") || return 1
  echo "$pid $port"
}
log "starting dyngate"
read -r dyngate_pid dyngate_port < <(start_dyngate "$dyngate_bin" dyngate)
[ -n "$dyngate_port" ] || exit 1
if [ -n "${BENCH_BASE_BIN:-}" ]; then
  log "starting the baseline build $BENCH_BASE_BIN"
  read -r base_pid base_port < <(start_dyngate "$BENCH_BASE_BIN" base)
  [ -n "$base_port" ] || exit 1
  psql -p "$base_port" -Atc 'SELECT 1' >/dev/null
fi

# PgBouncer authenticates clients with SCRAM against the secret PostgreSQL itself stores (copied
# from pg_authid), and then logs in to PostgreSQL with SCRAM pass-through: the same password check
# dyngate relays. Authentication happens once per pgbench client, outside the measured steady state.
log "starting PgBouncer (session pooling)"
pb_dir=$work/pgbouncer
mkdir -p "$pb_dir"
pgbouncer_port=$(free_port)
secret=$(psql -p "$pg_port" -Atc "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'")
printf '"postgres" "%s"\n' "$secret" >"$pb_dir/userlist.txt"
cat >"$pb_dir/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$pg_port dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pgbouncer_port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $pb_dir/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = $pb_dir/pgbouncer.log
pidfile = $pb_dir/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
INI
chmod 600 "$pb_dir/userlist.txt"
if is_root; then
  chown -R postgres: "$pb_dir"
  "$pgbouncer_bin" -u postgres "$pb_dir/pgbouncer.ini" >"$pb_dir/stdout.log" 2>&1 &
else
  "$pgbouncer_bin" "$pb_dir/pgbouncer.ini" >"$pb_dir/stdout.log" 2>&1 &
fi
pgbouncer_pid=$!
for _ in $(seq 100); do
  psql -p "$pgbouncer_port" -Atc 'SELECT 1' >/dev/null 2>&1 && break
  kill -0 "$pgbouncer_pid" 2>/dev/null || { cat "$pb_dir"/*.log >&2; exit 1; }
  sleep 0.1
done
psql -p "$dyngate_port" -Atc 'SELECT 1' >/dev/null
psql -p "$pgbouncer_port" -Atc 'SELECT 1' >/dev/null

port_of() {
  case $1 in
    direct) echo "$pg_port" ;; dyngate) echo "$dyngate_port" ;; base) echo "$base_port" ;; pgbouncer) echo "$pgbouncer_port" ;;
  esac
}
pid_of() {
  case $1 in dyngate) echo "$dyngate_pid" ;; base) echo "$base_pid" ;; pgbouncer) echo "$pgbouncer_pid" ;; *) echo "" ;; esac
}
# utime + stime of a process, in clock ticks.
cpu_ticks() { [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
# CPU time of a whole PostgreSQL cluster: the postmaster's own and its reaped children's (utime,
# stime, cutime, cstime), plus that of the children still running.
pg_ticks() {
  local pm
  pm=$(head -1 "$work/pg/data/postmaster.pid")
  { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pm/stat"
    for c in $(cat /proc/"$pm"/task/*/children 2>/dev/null); do
      awk '{ print $14 + $15 }' "/proc/$c/stat" 2>/dev/null
    done; } | awk '{ s += $1 } END { print s + 0 }'
}

# --- runs -----------------------------------------------------------------------------------------
hz=$(getconf CLK_TCK)
ncpu=$(nproc)
max_other=${BENCH_MAX_OTHER:-5}
attempts=${BENCH_ATTEMPTS:-3}
# Busy and stolen time of the whole machine, in ticks.
machine_ticks() { awk '/^cpu /{ print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat; }
# Waits (up to BENCH_QUIET_WAIT s) for a second in which the machine is at most max_other% busy:
# between runs nothing of the benchmark's own uses CPU, so anything busy is someone else's job.
wait_quiet() {
  local deadline=$((SECONDS + ${BENCH_QUIET_WAIT:-120})) a b busy
  while :; do
    read -r a _ < <(machine_ticks); sleep 1; read -r b _ < <(machine_ticks)
    busy=$(((b - a) * 100 / (hz * ncpu)))
    [ "$busy" -le "$max_other" ] && return 0
    [ "$SECONDS" -ge "$deadline" ] && { log "the machine is still ${busy}% busy with other work; running anyway"; return 0; }
  done
}
# One pgbench run; prints its results.tsv line.
measure() {
  local t=$1 mode=$2 c=$3 round=$4 run=$5 pid p0 p1 g0 g1 m0 m1 s0 s1
  local j=$((c < 2 ? c : 2))
  rm -rf "$run"; mkdir -p "$run"
  pid=$(pid_of "$t")
  p0=$(cpu_ticks "$pid"); g0=$(pg_ticks); read -r m0 s0 < <(machine_ticks)
  { time pgbench -n -S -M "$mode" -c "$c" -j "$j" -T "$secs" -p "$(port_of "$t")" \
      -l --log-prefix="$run/tx" >"$run/out.txt" 2>&1; } 2>"$run/time.txt" \
    || { cat "$run/out.txt" >&2; return 1; }
  sleep 0.3  # let the backends of pgbench's closed connections exit and be reaped
  p1=$(cpu_ticks "$pid"); g1=$(pg_ticks); read -r m1 s1 < <(machine_ticks)
  python3 - "$run" "$t" "$mode" "$c" "$round" "$((p1 - p0))" "$((g1 - g0))" "$((m1 - m0))" \
    "$((s1 - s0))" "$hz" "$secs" "$ncpu" <<'PY'
import glob, math, re, sys
run, t, mode, c, rnd = sys.argv[1:6]
pticks, gticks, mticks, sticks, hz, secs, ncpu = (float(x) for x in sys.argv[6:])
out = open(f"{run}/out.txt").read()
tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
lat = []
for f in glob.glob(f"{run}/tx.*"):
    with open(f) as fh:
        lat.extend(int(line.split()[2]) for line in fh)
lat.sort()
n = len(lat)
p99 = lat[max(0, math.ceil(0.99 * n) - 1)] / 1000.0
mean = sum(lat) / n / 1000.0
# CPU time per transaction, in microseconds, of the proxy, of PostgreSQL and of pgbench.
bench_s = sum(float(x) for x in open(f"{run}/time.txt").read().split())
ptx = pticks / hz * 1e6 / n
gtx = gticks / hz * 1e6 / n
btx = bench_s * 1e6 / n
# CPU the machine spent on anything else (other jobs: noise), and time the hypervisor stole, each
# as a share of the machine over the run.
other = (mticks / hz - pticks / hz - gticks / hz - bench_s) / (secs * ncpu) * 100
steal = sticks / hz / (secs * ncpu) * 100
print(f"{t}\t{mode}\t{c}\t{rnd}\t{tps:.1f}\t{mean:.3f}\t{p99:.3f}\t{ptx:.1f}\t{gtx:.1f}\t{max(other, 0):.1f}\t{steal:.1f}\t{btx:.1f}\t{n}")
PY
  rm -f "$run"/tx.*
}

results=$work/results.tsv
: >"$results"
log "machine: $ncpu CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
log "$secs s per run; modes: $modes; clients: $clients_list; rounds: $rounds"
TIMEFORMAT='%U %S'
for round in $(seq "$rounds"); do
  for mode in $modes; do
    for c in $clients_list; do
      # Targets take turns within each (mode, clients) cell, so drift hits all of them alike.
      for t in $targets; do
        # A run during which other jobs used more than max_other% of the machine is repeated (up to
        # `attempts` times in all); the least disturbed attempt counts.
        best=
        for attempt in $(seq "$attempts"); do
          wait_quiet
          line=$(measure "$t" "$mode" "$c" "$round" "$work/runs/$t-$mode-$c-$round-$attempt")
          other=$(cut -f10 <<<"$line")
          log "$(awk -F'\t' '{printf "%-9s %-8s c=%-2s round %s: %9s tps  p99 %s ms  other CPU %s%%", $1, $2, $3, $4, $5, $7, $10}' <<<"$line")"
          if [ -z "$best" ] || awk -v a="$other" -v b="$(cut -f10 <<<"$best")" 'BEGIN { exit !(a < b) }'; then
            best=$line
          fi
          awk -v a="$other" -v m="$max_other" 'BEGIN { exit !(a <= m) }' && break
        done
        printf '%s\n' "$best" >>"$results"
      done
    done
  done
done

# --- report ---------------------------------------------------------------------------------------
python3 - "$results" "$secs" "$rounds" "$ncpu" "$build" "$("$pgbouncer_bin" -V | head -1)" \
  "$(pgbench --version)" "${BENCH_BASE_BIN:-}" <<'PY'
import statistics, sys
from collections import defaultdict
path, secs, rounds, ncpu, build, pgb, pgbench, base = sys.argv[1:]
rows = defaultdict(list)
for line in open(path):
    f = line.rstrip("\n").split("\t")
    rows[(f[1], int(f[2]), f[0])].append(tuple(float(x) for x in f[4:12]))
med = {k: tuple(statistics.median(x[i] for x in v) for i in range(8)) for k, v in rows.items()}
worst_other = {k: max(x[5] for x in v) for k, v in rows.items()}
cells = sorted({(m, c) for (m, c, _) in med}, key=lambda x: (x[0] != "simple", x[0], x[1]))
targets = [t for t in ("direct", "dyngate", "pgbouncer", "base") if any(k[2] == t for k in med)]
print()
print(f"pgbench -S, {secs} s per run, median of {rounds} round(s), {ncpu} CPUs shared by pgbench, proxy and PostgreSQL")
print(f"dyngate {build}; {pgb}; {pgbench}")
print("us columns: CPU time per transaction (microseconds) of the proxy, of PostgreSQL and of pgbench;")
print("other%: share of the machine used by unrelated processes during the run (worst round; noise)")
print()
print(f"{'mode':<9}{'clients':>7}  {'target':<10}{'tps':>10}{'mean ms':>9}{'p99 ms':>9}{'proxy us':>10}{'pg us':>8}{'pgbench us':>12}{'other%':>8}")
for m, c in cells:
    for t in targets:
        if (m, c, t) not in med:
            continue
        tps, mean, p99, ptx, gtx, _, _, btx = med[(m, c, t)]
        pc = "-" if t == "direct" else f"{ptx:.1f}"
        print(f"{m:<9}{c:>7}  {t:<10}{tps:>10.0f}{mean:>9.3f}{p99:>9.3f}{pc:>10}{gtx:>8.1f}{btx:>12.1f}{worst_other[(m, c, t)]:>8.1f}")
print()
print(f"{'mode':<9}{'clients':>7}  {'tps dyngate/direct':>19}{'tps dyngate/pgbouncer':>22}{'p99 dyngate/direct':>19}{'p99 dyngate/pgbouncer':>22}")
ok = True
nan = float("nan")
for m, c in cells:
    d, g, b = (med.get((m, c, t)) for t in ("direct", "dyngate", "pgbouncer"))
    if not g:
        continue
    rd = g[0] / d[0] if d else nan
    rb = g[0] / b[0] if b else nan
    pd = g[2] / d[2] if d else nan
    pb = g[2] / b[2] if b else nan
    flag = "" if (rd >= 0.85 and rb >= 1.0) else "  goal missed"
    ok = ok and not flag
    print(f"{m:<9}{c:>7}  {rd:>19.3f}{rb:>22.3f}{pd:>19.3f}{pb:>22.3f}{flag}")
print()
print("goal (dyngate >= PgBouncer's tps and >= 0.85x direct):", "met" if ok else "NOT met")
if "base" in targets:
    print()
    print(f"against the baseline build ({base}):")
    print(f"{'mode':<9}{'clients':>7}  {'tps dyngate/base':>17}{'proxy us dyngate/base':>22}{'p99 dyngate/base':>17}")
    for m, c in cells:
        g, b = med.get((m, c, "dyngate")), med.get((m, c, "base"))
        if g and b:
            print(f"{m:<9}{c:>7}  {g[0] / b[0]:>17.3f}{g[3] / b[3]:>22.3f}{g[2] / b[2]:>17.3f}")
PY
