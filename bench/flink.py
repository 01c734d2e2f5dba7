"""The Flink engine's benchmark (run by bench/flink.sh, which starts everything it talks to).

Three parts, each printed with the figures it is judged by:

  first-rows   CONTINUOUS: time from sending CREATE DYNAMIC TABLE (over an endless datagen source)
               to its first rows in PostgreSQL, against the table's freshness.
  visibility   CONTINUOUS: time from a change of the source (a new CSV file in a directory a
               Flink filesystem source watches every second) to the change in the table, against
               the freshness.
  overhead     FULL: a refresh through dyngate (REFRESH DYNAMIC TABLE) against the same batch
               INSERT submitted to Flink's SQL Gateway directly and followed on the cluster's
               REST API until FINISHED, both writing the aggregate of a PostgreSQL table read
               through the JDBC connector; the ratio is dyngate / direct.
"""

import argparse
import json
import os
import statistics
import time
import urllib.request

import psycopg


def log(msg):
    print(f"[bench] {msg}", flush=True)


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"{}")


def wait_until(check, timeout, poll=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(poll)
    raise TimeoutError("gave up waiting")


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True, help="libpq URL of dyngate")
    ap.add_argument("--postgres", required=True, help="libpq URL of the backing PostgreSQL")
    ap.add_argument("--jdbc-url", required=True)
    ap.add_argument("--pg-password", required=True)
    ap.add_argument("--flink-gateway", required=True)
    ap.add_argument("--flink-rest", required=True)
    ap.add_argument("--jars", required=True, help="comma-separated")
    ap.add_argument("--work", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--freshness", type=int, default=5, help="seconds")
    ap.add_argument("--parts", default="first-rows visibility overhead")
    a = ap.parse_args()
    gw = psycopg.connect(a.gateway, autocommit=True)
    pg = psycopg.connect(a.postgres, autocommit=True)
    f = a.freshness
    results = []

    if "first-rows" in a.parts:
        gw.execute(
            "CREATE TABLE flink.ticks (id BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '200', "
            "'fields.id.kind' = 'sequence', 'fields.id.start' = '1', 'fields.id.end' = '1000000')"
        )
        create_s, first_s = [], []
        for r in range(a.rounds):
            t0 = time.monotonic()
            gw.execute(
                f"CREATE DYNAMIC TABLE ticks_{r} FRESHNESS = INTERVAL '{f}' SECOND WITH ('engine' = 'flink') "
                f"AS SELECT id % 10 AS k, count(*) AS n FROM flink.ticks GROUP BY id % 10"
            )
            t1 = time.monotonic()
            t2 = wait_until(lambda: pg.execute(f"SELECT count(*) FROM ticks_{r}").fetchone()[0] > 0, 120)
            create_s.append(t1 - t0)
            first_s.append(t2 - t0)
            log(f"first-rows round {r + 1}: CREATE returned after {t1 - t0:.2f} s, first rows after {t2 - t0:.2f} s")
            gw.execute(f"DROP DYNAMIC TABLE ticks_{r}")
        results.append(
            f"CONTINUOUS, CREATE to first rows (freshness {f} s, median of {a.rounds}): CREATE returns after "
            f"{statistics.median(create_s):.2f} s, first rows after {statistics.median(first_s):.2f} s "
            f"(max {max(first_s):.2f} s) = {statistics.median(first_s) / f:.2f}x the freshness"
        )

    if "visibility" in a.parts:
        events = os.path.join(a.work, "events")
        os.makedirs(events, exist_ok=True)
        gw.execute(
            f"CREATE TABLE flink.events (id BIGINT, k STRING) WITH ('connector' = 'filesystem', "
            f"'path' = 'file://{events}', 'format' = 'csv', 'source.monitor-interval' = '1s')"
        )
        gw.execute(
            f"CREATE DYNAMIC TABLE by_key FRESHNESS = INTERVAL '{f}' SECOND WITH ('engine' = 'flink') "
            f"AS SELECT k, count(*) AS n, max(id) AS top FROM flink.events GROUP BY k"
        )
        time.sleep(3)
        lat = []
        n = max(a.rounds * 2, 10)
        for r in range(n):
            tmp = os.path.join(events, f".part-{r}.csv")
            with open(tmp, "w") as fh:
                fh.write(f"{r},m{r}\n")
            t0 = time.monotonic()
            os.rename(tmp, os.path.join(events, f"part-{r}.csv"))
            t1 = wait_until(lambda: pg.execute("SELECT 1 FROM by_key WHERE k = %s", (f"m{r}",)).fetchone() is not None, 120)
            lat.append(t1 - t0)
            log(f"visibility round {r + 1}: {t1 - t0:.2f} s")
            time.sleep(0.3)
        gw.execute("DROP DYNAMIC TABLE by_key")
        results.append(
            f"CONTINUOUS, source change to visible (freshness {f} s, {n} changes): p50 {pct(lat, 50):.2f} s, "
            f"p90 {pct(lat, 90):.2f} s, max {max(lat):.2f} s = {pct(lat, 50) / f:.2f}x the freshness at p50"
        )

    if "overhead" in a.parts:
        rows = 200_000
        pg.execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, amount numeric(10,2) NOT NULL)")
        pg.execute(f"INSERT INTO orders SELECT g, g % 1000, (g % 997) / 10.0 FROM generate_series(1, {rows}) g")
        pg.execute("CREATE TABLE direct_sink (c1 int, c2 bigint, c3 numeric(38,2))")
        src = (
            "(id BIGINT, customer_id INT, amount DECIMAL(10, 2)) WITH ('connector' = 'jdbc', "
            f"'url' = '{a.jdbc_url}', 'table-name' = 'orders', 'username' = 'postgres', 'password' = '{a.pg_password}')"
        )
        query = "SELECT customer_id AS c, count(*) AS n, sum(amount) AS total FROM {} GROUP BY customer_id"
        gw.execute(f"CREATE TABLE flink.orders {src}")
        gw.execute(
            f"CREATE DYNAMIC TABLE per_customer FRESHNESS = INTERVAL '1' DAY WITH ('engine' = 'flink') AS {query.format('flink.orders')}"
        )
        # Direct: a session of its own with the same jars and tables, the INSERT submitted and
        # its job followed on /jobs until FINISHED, as dyngate does.
        s = http("POST", f"{a.flink_gateway}/v4/sessions", {"sessionName": "bench", "properties": {"execution.runtime-mode": "batch"}})[
            "sessionHandle"
        ]
        setup = [f"ADD JAR '{j}'" for j in a.jars.split(",")] + [
            f"CREATE TABLE orders {src}",
            "CREATE TABLE direct_sink (c1 INT, c2 BIGINT, c3 DECIMAL(38, 2)) WITH ('connector' = 'jdbc', "
            f"'url' = '{a.jdbc_url}', 'table-name' = 'direct_sink', 'username' = 'postgres', 'password' = '{a.pg_password}')",
        ]
        for st in setup:
            http("POST", f"{a.flink_gateway}/v4/sessions/{s}/configure-session", {"statement": st})

        def direct():
            pg.execute("TRUNCATE direct_sink")
            t0 = time.monotonic()
            op = http(
                "POST",
                f"{a.flink_gateway}/v4/sessions/{s}/statements",
                {"statement": f"INSERT INTO direct_sink {query.format('orders')}"},
            )["operationHandle"]
            uri = f"/v4/sessions/{s}/operations/{op}/result/0?rowFormat=JSON"
            job = None
            while job is None:
                page = http("GET", f"{a.flink_gateway}{uri}")
                if page.get("resultType") == "PAYLOAD" and page["results"]["data"]:
                    job = page["results"]["data"][0]["fields"][0]
                else:
                    uri = page.get("nextResultUri", uri)
                    time.sleep(0.01)
            http("DELETE", f"{a.flink_gateway}/v4/sessions/{s}/operations/{op}/close")

            def finished():
                jobs = http("GET", f"{a.flink_rest}/jobs")["jobs"]
                state = next((j["status"] for j in jobs if j["id"] == job), None)
                if state in ("FAILED", "CANCELED"):
                    raise RuntimeError(f"direct job {job} {state}")
                return state == "FINISHED"

            wait_until(finished, 300, poll=0.1)
            return time.monotonic() - t0

        def through_dyngate():
            t0 = time.monotonic()
            gw.execute("REFRESH DYNAMIC TABLE per_customer")
            return time.monotonic() - t0

        d_s, g_s = [], []
        for r in range(a.rounds):
            order = [("direct", direct), ("dyngate", through_dyngate)]
            if r % 2:
                order.reverse()
            for name, fn in order:
                (d_s if name == "direct" else g_s).append(fn())
            log(f"overhead round {r + 1}: direct {d_s[-1]:.2f} s, through dyngate {g_s[-1]:.2f} s")
        http("DELETE", f"{a.flink_gateway}/v4/sessions/{s}")
        got = pg.execute("SELECT count(*), sum(n), sum(total) FROM per_customer").fetchone()
        want = pg.execute("SELECT count(*), sum(c2), sum(c3) FROM direct_sink").fetchone()
        assert got == want, f"the two refreshes disagree: {got} vs {want}"
        gm, dm = statistics.median(g_s), statistics.median(d_s)
        results.append(
            f"FULL refresh of a {got[0]}-row aggregate over {rows} PostgreSQL rows (median of {a.rounds}): "
            f"through dyngate {gm:.2f} s, submitted directly {dm:.2f} s: dyngate / direct = {gm / dm:.2f} "
            f"(+{(gm - dm) * 1000:.0f} ms)"
        )

    print()
    for line in results:
        print(line)


if __name__ == "__main__":
    main()
