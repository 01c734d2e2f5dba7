//! Real clients through the gateway, checked the way their users would check them: psql (catalog
//! describes, `\copy`, COPY, transactions, errors, large objects), psycopg 3 and pgJDBC (driven by
//! the scripts in tests/clients/), and tokio-postgres (pipelining, cancel, typed prepared
//! statements, COPY). Wherever a client shows something, what it shows through the gateway is
//! compared with what it shows straight from PostgreSQL, and every test ends by checking that no
//! backend session outlives its client.

mod common;
use common::*;

use std::future::Future;
use std::path::Path;
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::{SinkExt, TryStreamExt};
use tokio::process::Command;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// A database of its own for one test, owned by `role` so the role may create objects in it.
async fn owned_db(pg: &Pg, role: &str) -> String {
    let db = pg.fresh_db().await;
    pg.admin()
        .await
        .batch_execute(&format!("ALTER DATABASE {db} OWNER TO {role}"))
        .await
        .unwrap();
    db
}

/// Runs a client program to completion; a hang fails the test instead of stalling the run.
async fn run(cmd: &mut Command, limit: Duration) -> std::process::Output {
    cmd.kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        // What the tests compare must not depend on the caller's libpq settings.
        .env_remove("PGOPTIONS")
        .env_remove("PGTZ")
        .env_remove("PGDATESTYLE")
        .env_remove("PGCLIENTENCODING")
        .env_remove("PGSERVICE");
    match tokio::time::timeout(limit, cmd.output()).await {
        Ok(out) => out.unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}")),
        Err(_) => panic!("{cmd:?} did not finish within {limit:?}"),
    }
}

fn env_path(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run the tests with scripts/test, which installs the clients"))
}

fn client_script(name: &str) -> String {
    format!("{}/tests/clients/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Fails with everything needed to see why a client program failed.
fn assert_success(what: &str, out: &std::process::Output, gw: &Dyngate, done_marker: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The marker guards against a script that exits 0 without reaching its end.
    assert!(
        out.status.success() && stdout.contains(done_marker),
        "{what} failed ({})\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}\n--- gateway log:\n{}",
        out.status,
        gw.log()
    );
}

/// Column names and text values of every row, via the simple query protocol.
type TextRows = (Vec<String>, Vec<Vec<Option<String>>>);

async fn text_rows(c: &Client, sql: &str) -> TextRows {
    let mut names = Vec::new();
    let mut rows = Vec::new();
    for m in c.simple_query(sql).await.unwrap() {
        if let SimpleQueryMessage::Row(r) = m {
            names = r.columns().iter().map(|c| c.name().to_string()).collect();
            rows.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
        }
    }
    (names, rows)
}

fn db_error(e: &tokio_postgres::Error) -> &tokio_postgres::error::DbError {
    e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e:?}"))
}

// ---------------------------------------------------------------------------------------------
// psql

/// Run by psql once straight against PostgreSQL and once through the gateway, each in a fresh
/// database. Relative file names resolve in each run's own directory.
const PSQL_SCRIPT: &str = r##"\set VERBOSITY verbose
\echo === schema
CREATE TABLE items (
    id int PRIMARY KEY,
    name text NOT NULL,
    price numeric(10,2) CHECK (price >= 0),
    tags text[],
    added timestamptz NOT NULL DEFAULT '2024-01-02 03:04:05+00'
);
CREATE INDEX items_name_idx ON items (name);
CREATE VIEW cheap_items AS SELECT id, name FROM items WHERE price < 10;
COMMENT ON TABLE items IS 'things for sale';
\d
\d items
\d cheap_items
\dt+ items
\echo === copy in
\copy items (id, name, price, tags) FROM 'items_in.csv' WITH (FORMAT csv, HEADER true)
\copy items (id, name, price) FROM stdin
20	twenty	20.00
21	twenty-one	\N
\.
COPY items (id, name, price) FROM STDIN;
30	thirty	0.30
\.
SELECT * FROM items ORDER BY id;
\echo === copy out
\copy (SELECT id, name, price, tags FROM items ORDER BY id) TO 'items_out.csv' WITH (FORMAT csv, HEADER true)
COPY (SELECT id, name FROM items WHERE id >= 20 ORDER BY id) TO STDOUT;
\echo === transactions
BEGIN;
INSERT INTO items (id, name, price) VALUES (40, 'committed', 4);
COMMIT;
BEGIN;
DELETE FROM items;
SELECT count(*) AS inside FROM items;
ROLLBACK;
SELECT count(*) AS after_rollback FROM items;
BEGIN;
INSERT INTO items (id, name) VALUES (1, 'duplicate');
SELECT 'ignored';
\echo tx state :LAST_ERROR_SQLSTATE
COMMIT;
SELECT count(*) AS after_failed_commit FROM items WHERE name = 'duplicate';
BEGIN;
SAVEPOINT s1;
INSERT INTO items (id, name, price) VALUES (50, 'negative', -1);
ROLLBACK TO SAVEPOINT s1;
INSERT INTO items (id, name, price) VALUES (51, 'kept', 5);
COMMIT;
SELECT id, name FROM items WHERE id >= 50 ORDER BY id;
\echo === errors
SELECT nme FROM items;
\echo :LAST_ERROR_SQLSTATE
SELECT 1/0;
\echo :LAST_ERROR_SQLSTATE
DO $$ BEGIN RAISE EXCEPTION 'custom failure' USING ERRCODE = '22023', DETAIL = 'the detail', HINT = 'the hint'; END $$;
DO $$ BEGIN RAISE NOTICE 'a notice with %', 'args'; END $$;
SELECT * FROM no_such_table;
\echo === extended protocol
PREPARE by_id(int) AS SELECT name, price FROM items WHERE id = $1;
EXECUTE by_id(2);
SELECT id, name, price, tags, added FROM items \gdesc
SELECT max(id) AS top FROM items \gset
\echo top is :top
\x on
SELECT * FROM items WHERE id = 1;
\x off
SELECT '{"a": [1, 2, null]}'::jsonb AS j, '\xdeadbeef'::bytea AS b, NULL::int AS n, 'infinity'::timestamptz AS t;
\echo === large objects
\set QUIET on
\lo_import 'lo_in.txt'
\set QUIET off
SELECT convert_from(lo_get(:LASTOID), 'UTF8') AS lo_text;
\lo_export :LASTOID 'lo_out.txt'
SELECT lo_unlink(:LASTOID);
\echo === end
"##;

const ITEMS_IN_CSV: &str = "id,name,price,tags\n1,one,1.50,\"{a,b}\"\n2,\"two, with comma\",2.00,{}\n3,three,,\n";
const LO_TEXT: &str = "large object\npayload with a tab\there\n";

struct PsqlRun {
    stdout: String,
    stderr: String,
    copy_out: String,
    lo_out: String,
}

async fn run_psql(dir: &Path, port: u16, role: &str, password: &str, db: &str) -> PsqlRun {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("script.sql"), PSQL_SCRIPT).unwrap();
    std::fs::write(dir.join("items_in.csv"), ITEMS_IN_CSV).unwrap();
    std::fs::write(dir.join("lo_in.txt"), LO_TEXT).unwrap();
    let out = run(
        Command::new("psql")
            .current_dir(dir)
            .env("PGPASSWORD", password)
            .args(["-X", "-v", "ON_ERROR_STOP=0", "-h", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .args(["-U", role, "-d", db, "-f", "script.sql"]),
        Duration::from_secs(120),
    )
    .await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    // Without ON_ERROR_STOP, psql exits 0 even though the script has failing statements.
    assert!(
        out.status.success(),
        "psql on port {port} failed ({})\n{stdout}\n{stderr}",
        out.status
    );
    PsqlRun {
        stdout: stdout.replace(db, "<db>"),
        stderr: stderr.replace(db, "<db>"),
        copy_out: std::fs::read_to_string(dir.join("items_out.csv")).unwrap_or_default(),
        lo_out: std::fs::read_to_string(dir.join("lo_out.txt")).unwrap_or_default(),
    }
}

#[tokio::test]
async fn psql_script_reads_the_same_as_direct() {
    let pg = pg();
    let role = pg.fresh_role("psqlpw").await;
    let direct_db = owned_db(&pg, &role).await;
    let gw_db = owned_db(&pg, &role).await;
    let gw = Dyngate::with_backend(&pg, &[]);
    let dir = tmp_dir();

    let direct = run_psql(&dir.join("direct"), pg.port, &role, "psqlpw", &direct_db).await;
    let through = run_psql(&dir.join("gateway"), gw.pg_port, &role, "psqlpw", &gw_db).await;

    // Byte for byte what psql shows, including every error's fields under VERBOSITY verbose.
    assert_eq!(through.stdout, direct.stdout, "psql's output differs through the gateway");
    assert_eq!(through.stderr, direct.stderr, "psql's messages differ through the gateway");
    assert_eq!(through.copy_out, direct.copy_out);
    assert_eq!(through.lo_out, direct.lo_out);

    // And it is what the script should have done, not the same failure twice.
    let out = &through.stdout;
    let err = &through.stderr;
    for section in [
        "schema",
        "copy in",
        "copy out",
        "transactions",
        "errors",
        "extended protocol",
        "large objects",
        "end",
    ] {
        assert!(out.contains(&format!("=== {section}\n")), "{section}:\n{out}");
    }
    assert!(out.contains(&format!(" public | cheap_items | view  | {role}")), "{out}");
    assert!(out.contains(&format!(" public | items       | table | {role}")), "{out}");
    assert!(out.contains("Table \"public.items\""), "{out}");
    assert!(out.contains("\"items_pkey\" PRIMARY KEY, btree (id)"), "{out}");
    assert!(out.contains("\"items_price_check\" CHECK (price >= 0::numeric)"), "{out}");
    assert!(out.contains("View \"public.cheap_items\""), "{out}");
    assert!(out.contains("things for sale"), "\\dt+ shows the comment:\n{out}");
    assert!(out.contains("COPY 3\nCOPY 2\nCOPY 1\n"), "{out}");
    assert!(out.contains("(6 rows)"), "{out}");
    assert!(out.contains("COPY 6\n20\ttwenty\n21\ttwenty-one\n30\tthirty\n"), "{out}");
    // 6 copied rows + 1 committed; the DELETE was rolled back, the failed transaction's insert lost.
    assert!(out.contains("after_rollback \n----------------\n              7\n"), "{out}");
    assert!(out.contains("tx state 25P02\n"), "{out}");
    assert!(
        out.contains("after_failed_commit \n---------------------\n                   0\n"),
        "{out}"
    );
    assert!(out.contains(" 51 | kept\n(1 row)"), "{out}");
    assert!(out.contains("=== errors\n42703\n22012\n"), "{out}");
    assert!(out.contains(" two, with comma |  2.00\n"), "{out}");
    assert!(out.contains(" price  | numeric(10,2)\n"), "\\gdesc:\n{out}");
    assert!(out.contains("top is 51\n"), "{out}");
    assert!(out.contains(" {\"a\": [1, 2, null]} | \\xdeadbeef |   | infinity\n"), "{out}");
    assert!(out.contains(" large object ") && out.contains(" payload with a tab"), "{out}");

    assert!(err.contains("ERROR:  23505: duplicate key value violates unique constraint \"items_pkey\"\nDETAIL:  Key (id)=(1) already exists.\nSCHEMA NAME:  public\nTABLE NAME:  items\nCONSTRAINT NAME:  items_pkey\n"), "{err}");
    assert!(
        err.contains("ERROR:  25P02: current transaction is aborted, commands ignored until end of transaction block\n"),
        "{err}"
    );
    assert!(
        err.contains("ERROR:  23514: new row for relation \"items\" violates check constraint \"items_price_check\"\n"),
        "{err}"
    );
    assert!(err.contains("ERROR:  42703: column \"nme\" does not exist\nLINE 1: SELECT nme FROM items;\n               ^\nHINT:  Perhaps you meant to reference the column \"items.name\".\n"), "{err}");
    assert!(err.contains("ERROR:  22012: division by zero\n"), "{err}");
    assert!(
        err.contains("ERROR:  22023: custom failure\nDETAIL:  the detail\nHINT:  the hint\n"),
        "{err}"
    );
    assert!(err.contains("NOTICE:  00000: a notice with args\n"), "{err}");
    assert!(err.contains("ERROR:  42P01: relation \"no_such_table\" does not exist\n"), "{err}");
    assert_eq!(err.matches("ERROR:").count(), 7, "{err}");

    // The input rows, as COPY writes CSV.
    assert_eq!(
        through.copy_out,
        "id,name,price,tags\n1,one,1.50,\"{a,b}\"\n2,\"two, with comma\",2.00,{}\n3,three,,\n\
         20,twenty,20.00,\n21,twenty-one,,\n30,thirty,0.30,\n"
    );
    assert_eq!(through.lo_out, LO_TEXT);

    pg.assert_no_backends(&gw_db).await;
    pg.assert_no_backends(&direct_db).await;
}

// ---------------------------------------------------------------------------------------------
// psycopg 3 and pgJDBC: the scripts compare the gateway with PostgreSQL themselves.

#[tokio::test]
async fn psycopg() {
    let pg = pg();
    let role = pg.fresh_role("pypw").await;
    let db = owned_db(&pg, &role).await;
    let gw = Dyngate::with_backend(&pg, &[]);
    let out = run(
        Command::new(env_path("DYNGATE_TEST_PYTHON"))
            .arg(client_script("psycopg_check.py"))
            .arg(gw.url(&role, "pypw", &db))
            .arg(pg.url_for(&role, "pypw", &db)),
        Duration::from_secs(180),
    )
    .await;
    assert_success("psycopg_check.py", &out, &gw, "psycopg: all checks passed");
    pg.assert_no_backends(&db).await;
}

#[tokio::test]
async fn pgjdbc() {
    let pg = pg();
    let role = pg.fresh_role("jdbcpw").await;
    let db = owned_db(&pg, &role).await;
    let gw = Dyngate::with_backend(&pg, &[]);
    let out = run(
        Command::new("java")
            .arg("-cp")
            .arg(env_path("DYNGATE_TEST_JDBC_JAR"))
            .arg(client_script("JdbcCheck.java"))
            .arg(format!("jdbc:postgresql://{}/{db}", gw.addr()))
            .arg(format!("jdbc:postgresql://{}:{}/{db}", pg.host, pg.port))
            .args([&role, "jdbcpw"]),
        Duration::from_secs(240),
    )
    .await;
    assert_success("JdbcCheck.java", &out, &gw, "jdbc: all checks passed");
    pg.assert_no_backends(&db).await;
}

/// The README's session through psql (tests/clients/dynamic_tables.psql): what psql prints must
/// be exactly tests/clients/dynamic_tables.psql.out, errors included.
#[tokio::test]
async fn psql_dynamic_tables_session() {
    let pg = pg();
    let role = pg.fresh_role("psqldt").await;
    let db = owned_db(&pg, &role).await;
    let gw = Dyngate::for_db(&pg, &db, &[]);
    let out = run(
        Command::new("psql")
            .current_dir(client_script(""))
            .env("PGPASSWORD", "psqldt")
            .env("PGTZ", "UTC")
            .args(["-X", "-v", "ON_ERROR_STOP=0", "-h", "127.0.0.1", "-p"])
            .arg(gw.pg_port.to_string())
            .args(["-U", &role, "-d", &db, "-f", "dynamic_tables.psql"]),
        Duration::from_secs(60),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let got = format!(
        "{}--- stderr\n{}",
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap()
    );
    let want = std::fs::read_to_string(client_script("dynamic_tables.psql.out")).unwrap_or_default();
    if std::env::var_os("DYNGATE_BLESS").is_some() {
        std::fs::write(client_script("dynamic_tables.psql.out"), &got).unwrap();
    }
    assert_eq!(
        got, want,
        "psql's output differs from dynamic_tables.psql.out (DYNGATE_BLESS=1 rewrites it)"
    );
}

#[tokio::test]
async fn pgjdbc_dynamic_tables() {
    let pg = pg();
    let role = pg.fresh_role("jdbcdt").await;
    let db = owned_db(&pg, &role).await;
    let gw = Dyngate::for_db(&pg, &db, &[]);
    let out = run(
        Command::new("java")
            .arg("-cp")
            .arg(env_path("DYNGATE_TEST_JDBC_JAR"))
            .arg(client_script("DynamicTablesJdbc.java"))
            .arg(format!("jdbc:postgresql://{}/{db}", gw.addr()))
            .args([&role, "jdbcdt"]),
        Duration::from_secs(240),
    )
    .await;
    assert_success("DynamicTablesJdbc.java", &out, &gw, "jdbc dynamic tables: all checks passed");
}

// ---------------------------------------------------------------------------------------------
// tokio-postgres

#[tokio::test]
async fn tokio_postgres_pipelining() {
    let pg = pg();
    let role = pg.fresh_role("tppw").await;
    let db = owned_db(&pg, &role).await;
    let gw = Dyngate::with_backend(&pg, &[]);
    let c = connect(&gw.url(&role, "tppw", &db)).await;
    c.batch_execute("CREATE TABLE log (id serial PRIMARY KEY, n int NOT NULL, at_id int)")
        .await
        .unwrap();

    // All of these are written before the first reply is read: each statement's Bind/Execute/Sync
    // goes out as soon as its future is first polled, and join polls them in order.
    let insert = c.prepare("INSERT INTO log (n) VALUES ($1) RETURNING id, n").await.unwrap();
    let inserted = tokio::time::timeout(
        Duration::from_secs(30),
        join_in_order((0..200).map(|i| {
            let (c, insert) = (&c, &insert);
            async move { c.query_one(insert, &[&i]).await.unwrap() }
        })),
    )
    .await
    .expect("pipelined inserts finish");
    for (i, row) in inserted.iter().enumerate() {
        // The serial shows the backend ran them in the order they were sent, and the reply each
        // future got is its own.
        assert_eq!(row.get::<_, i32>(0), i as i32 + 1);
        assert_eq!(row.get::<_, i32>(1), i as i32);
    }

    // Different kinds of statements in flight together; an error in the middle fails only its
    // own statement.
    let div = c.prepare("SELECT 100 / $1::int AS q").await.unwrap();
    let (series, text, zero, simple, after, count) = tokio::join!(
        c.query("SELECT g, repeat('x', g % 50) AS pad FROM generate_series(1, 5000) g", &[]),
        c.query_one("SELECT $1::text || '!' AS shout", &[&"hey"]),
        c.query_one(&div, &[&0i32]),
        c.simple_query("SELECT 'one' AS a; SELECT 'two' AS b"),
        c.query_one(&div, &[&4i32]),
        c.query_one("SELECT count(*) FROM log", &[]),
    );
    let series = series.unwrap();
    assert_eq!(series.len(), 5000);
    assert!(
        series
            .iter()
            .enumerate()
            .all(|(i, r)| r.get::<_, i32>(0) == i as i32 + 1 && r.get::<_, &str>(1).len() == (i + 1) % 50)
    );
    assert_eq!(text.unwrap().get::<_, String>("shout"), "hey!");
    assert_eq!(db_error(&zero.unwrap_err()).code().code(), "22012");
    let simple: Vec<String> = simple
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(format!("{}={}", r.columns()[0].name(), r.get(0)?)),
            _ => None,
        })
        .collect();
    assert_eq!(simple, ["a=one", "b=two"]);
    assert_eq!(after.unwrap().get::<_, i32>("q"), 25);
    assert_eq!(count.unwrap().get::<_, i64>(0), 200);

    // Large parameters going up while large results come down: the relay has to move both
    // directions at once or the two sides block on full socket buffers.
    let big = "p".repeat(256 * 1024);
    let echo = c
        .prepare("SELECT length($1::text) AS len, repeat('r', 256 * 1024) AS payload")
        .await
        .unwrap();
    let echoed = tokio::time::timeout(
        Duration::from_secs(60),
        join_in_order((0..40).map(|_| {
            let (c, echo, big) = (&c, &echo, &big);
            async move { c.query_one(echo, &[big]).await.unwrap() }
        })),
    )
    .await
    .expect("large pipelined exchanges finish");
    assert!(
        echoed
            .iter()
            .all(|r| r.get::<_, i32>("len") == 256 * 1024 && r.get::<_, &str>("payload").len() == 256 * 1024)
    );

    // What the client is told about the result columns, and the rows, match PostgreSQL's own.
    let direct = connect(&pg.url_for(&role, "tppw", &db)).await;
    let q = "SELECT id, n, at_id, n::numeric / 3 AS third FROM log ORDER BY id";
    let (gw_stmt, direct_stmt) = (c.prepare(q).await.unwrap(), direct.prepare(q).await.unwrap());
    assert_eq!(columns(&gw_stmt), columns(&direct_stmt));
    assert_eq!(
        columns(&gw_stmt)[..2],
        [("id".to_string(), Type::INT4, 1, -1), ("n".to_string(), Type::INT4, 2, -1)]
    );
    assert_eq!(text_rows(&c, q).await, text_rows(&direct, q).await);

    drop((c, direct));
    pg.assert_no_backends(&db).await;
}

/// Runs futures concurrently, polling them in the order given, so a tokio-postgres client sends
/// their requests in that order (each goes out when its future is first polled) before reading
/// any reply.
async fn join_in_order<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none()
                && let Poll::Ready(v) = f.as_mut().poll(cx)
            {
                *o = Some(v);
            }
        }
        if out.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// Name, type, column number in its table, and type modifier of each result column.
fn columns(s: &tokio_postgres::Statement) -> Vec<(String, Type, i16, i32)> {
    s.columns()
        .iter()
        .map(|c| {
            (
                c.name().to_string(),
                c.type_().clone(),
                c.column_id().unwrap_or(0),
                c.type_modifier(),
            )
        })
        .collect()
}

/// Waits until PostgreSQL shows `n` sessions of `db` running `query`.
async fn wait_running(pg: &Pg, db: &str, query: &str, n: i64) {
    let admin = pg.admin().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running: i64 = admin
            .query_one_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'active' AND query = $2",
                &[&db, &query],
            )
            .await
            .unwrap();
        if running == n {
            return;
        }
        assert!(Instant::now() < deadline, "{running} sessions run {query}, not {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn tokio_postgres_cancel() {
    let pg = pg();
    let role = pg.fresh_role("cancelpw").await;
    let db = owned_db(&pg, &role).await;
    let gw = Dyngate::with_backend(&pg, &[]);
    let url = gw.url(&role, "cancelpw", &db);
    let a = connect(&url).await;
    let b = connect(&url).await;
    let sleep = "SELECT pg_sleep(30)";

    // Both sessions sleep; cancelling a's query must stop a's and only a's.
    let timed = |f| async move {
        let r = tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("cancelled query returns within seconds");
        (r, Instant::now())
    };
    // a's cancel is sent once both sleep; b's only after a's query has returned to the client
    // (not merely after a's backend went idle: the error still has to cross the gateway).
    let (a_returned, a_has_returned) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let ((ra, _), (rb, b_done), b_cancelled) = tokio::join!(
        async {
            let r = timed(a.simple_query(sleep)).await;
            a_returned.send(()).unwrap();
            r
        },
        timed(b.simple_query(sleep)),
        async {
            wait_running(&pg, &db, sleep, 2).await;
            a.cancel_token().cancel_query(NoTls).await.unwrap();
            tokio::time::timeout(Duration::from_secs(10), a_has_returned)
                .await
                .expect("a's query returns within seconds of its cancel")
                .unwrap();
            // b's backend goes on sleeping.
            wait_running(&pg, &db, sleep, 1).await;
            let t = Instant::now();
            b.cancel_token().cancel_query(NoTls).await.unwrap();
            t
        }
    );
    for r in [ra, rb] {
        let err = r.expect_err("the query was cancelled");
        let e = db_error(&err);
        assert_eq!(e.code().code(), "57014");
        assert_eq!(e.message(), "canceling statement due to user request");
    }
    assert!(b_done >= b_cancelled, "b's query was cancelled by a's cancel");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The session is still usable. (Not checked here: that a cancel sent with nothing running
    // cannot hit the next statement. tokio-postgres returns from cancel_query without waiting
    // for the server to act on it, so that race is the client's; psycopg_check.py checks it with
    // libpq, which does wait.)
    assert_eq!(one::<i32>(&a, "SELECT 1 + 1").await, 2);

    // An extended-protocol statement inside a transaction: the cancel aborts the transaction.
    a.batch_execute("BEGIN").await.unwrap();
    let token = a.cancel_token();
    let canceller = tokio::spawn({
        let pg = pg.clone();
        let db = db.clone();
        async move {
            wait_running(&pg, &db, "SELECT pg_sleep($1)", 1).await;
            token.cancel_query(NoTls).await.unwrap();
        }
    });
    let err = tokio::time::timeout(Duration::from_secs(15), a.query("SELECT pg_sleep($1)", &[&30f64]))
        .await
        .expect("cancelled query returns within seconds")
        .unwrap_err();
    canceller.await.unwrap();
    assert_eq!(db_error(&err).code().code(), "57014");
    let err = a.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(db_error(&err).code().code(), "25P02");
    a.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(one::<i32>(&a, "SELECT 3").await, 3);

    drop((a, b));
    pg.assert_no_backends(&db).await;
}

#[tokio::test]
async fn tokio_postgres_prepared_statements() {
    let pg = pg();
    let role = pg.fresh_role("preppw").await;
    let db = owned_db(&pg, &role).await;
    let gw = Dyngate::with_backend(&pg, &[]);
    let c = connect(&gw.url(&role, "preppw", &db)).await;
    let direct = connect(&pg.url_for(&role, "preppw", &db)).await;
    c.batch_execute(
        "CREATE TABLE typed (id int8 PRIMARY KEY, name varchar(20) NOT NULL, score float8, ok bool,
         data bytea, at timestamptz, tags text[], nums int4[])",
    )
    .await
    .unwrap();

    let types = [
        Type::INT8,
        Type::VARCHAR,
        Type::FLOAT8,
        Type::BOOL,
        Type::BYTEA,
        Type::TIMESTAMPTZ,
        Type::TEXT_ARRAY,
        Type::INT4_ARRAY,
    ];
    let insert = c
        .prepare_typed("INSERT INTO typed VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", &types)
        .await
        .unwrap();
    assert_eq!(insert.params(), types);
    assert!(insert.columns().is_empty());

    type Rec = (
        i64,
        String,
        Option<f64>,
        Option<bool>,
        Option<Vec<u8>>,
        Option<SystemTime>,
        Option<Vec<Option<String>>>,
        Option<Vec<i32>>,
    );
    let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_709_251_199_123_456);
    let recs: Vec<Rec> = vec![
        (
            1,
            "first".into(),
            Some(0.1 + 0.2),
            Some(true),
            Some((0..=255).collect()),
            Some(at),
            Some(vec![Some("a,b".into()), None, Some("\"q\"".into())]),
            Some(vec![i32::MIN, 0, i32::MAX]),
        ),
        (2, "nulls".into(), None, None, None, None, None, None),
        (
            i64::MAX,
            "\u{2603} snow".into(),
            Some(f64::NEG_INFINITY),
            Some(false),
            Some(vec![]),
            Some(SystemTime::UNIX_EPOCH),
            Some(vec![]),
            Some(vec![]),
        ),
    ];
    // One statement, executed once per row: Bind/Execute against the same named statement.
    for r in &recs {
        let n = c.execute(&insert, &[&r.0, &r.1, &r.2, &r.3, &r.4, &r.5, &r.6, &r.7]).await.unwrap();
        assert_eq!(n, 1);
    }

    let select = c
        .prepare_typed(
            "SELECT id, name, score, ok, data, at, tags, nums FROM typed WHERE id >= $1 ORDER BY id",
            &[Type::INT8],
        )
        .await
        .unwrap();
    let got: Vec<Rec> = c
        .query(&select, &[&0i64])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7)))
        .collect();
    assert_eq!(got, recs);

    // Result columns: names, types and origin, as PostgreSQL describes them directly.
    let want: Vec<(String, Type, i16, i32)> = [
        ("id", Type::INT8, -1),
        ("name", Type::VARCHAR, 24), // varchar(20): 20 + the 4-byte header
        ("score", Type::FLOAT8, -1),
        ("ok", Type::BOOL, -1),
        ("data", Type::BYTEA, -1),
        ("at", Type::TIMESTAMPTZ, -1),
        ("tags", Type::TEXT_ARRAY, -1),
        ("nums", Type::INT4_ARRAY, -1),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (n, t, m))| (n.to_string(), t, i as i16 + 1, m))
    .collect();
    assert_eq!(columns(&select), want);
    let direct_select = direct
        .prepare_typed(
            "SELECT id, name, score, ok, data, at, tags, nums FROM typed WHERE id >= $1 ORDER BY id",
            &[Type::INT8],
        )
        .await
        .unwrap();
    assert_eq!(columns(&select), columns(&direct_select));
    let table_oid: u32 = one(&direct, "SELECT 'typed'::regclass::oid").await;
    assert!(select.columns().iter().all(|c| c.table_oid() == Some(table_oid)));

    // Parameter types PostgreSQL infers are relayed too.
    let inferred = c
        .prepare("SELECT $1 + 1 AS next, $2::text[] AS arr, $3 = name FROM typed")
        .await
        .unwrap();
    assert_eq!(inferred.params()[..2], [Type::INT4, Type::TEXT_ARRAY]);
    let inferred_direct = direct
        .prepare("SELECT $1 + 1 AS next, $2::text[] AS arr, $3 = name FROM typed")
        .await
        .unwrap();
    assert_eq!(inferred.params(), inferred_direct.params());
    assert_eq!(columns(&inferred), columns(&inferred_direct));

    // Many statements prepared and reused on one session.
    let stmts = join_in_order((0..50).map(|i| {
        let c = &c;
        async move {
            c.prepare_typed(&format!("SELECT $1::int8 * {i} AS v"), &[Type::INT8])
                .await
                .unwrap()
        }
    }))
    .await;
    for round in 0..3i64 {
        for (i, s) in stmts.iter().enumerate() {
            let v: i64 = c.query_one(s, &[&round]).await.unwrap().get("v");
            assert_eq!(v, round * i as i64);
        }
    }
    let named: i64 = one(
        &c,
        "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT $1::int8 * % AS v'",
    )
    .await;
    assert_eq!(named, 50, "each statement parsed once, under its own name");

    // Errors at Parse and at Execute carry the same fields as straight from PostgreSQL (the Debug
    // form lists every field, down to the server's source file and line).
    for q in ["SELECT nme FROM typed", "SELEC 1", "SELECT id FROM typed WHERE id = $1 AND"] {
        let g = c.prepare(q).await.unwrap_err();
        let d = direct.prepare(q).await.unwrap_err();
        assert_eq!(format!("{:?}", db_error(&g)), format!("{:?}", db_error(&d)), "{q}");
    }
    let e = c.prepare("SELECT nme FROM typed").await.unwrap_err();
    let e = db_error(&e);
    assert_eq!(e.code().code(), "42703");
    assert!(matches!(e.position(), Some(tokio_postgres::error::ErrorPosition::Original(8))));
    assert_eq!(e.hint(), Some("Perhaps you meant to reference the column \"typed.name\"."));
    let dup = c
        .execute(
            &insert,
            &[
                &1i64,
                &"again",
                &None::<f64>,
                &None::<bool>,
                &None::<Vec<u8>>,
                &None::<SystemTime>,
                &None::<Vec<String>>,
                &None::<Vec<i32>>,
            ],
        )
        .await
        .unwrap_err();
    let dup_direct = direct
        .execute("INSERT INTO typed (id, name) VALUES ($1, $2)", &[&1i64, &"again"])
        .await
        .unwrap_err();
    let (g, d) = (db_error(&dup), db_error(&dup_direct));
    assert_eq!(g.code().code(), "23505");
    assert_eq!(g.detail(), Some("Key (id)=(1) already exists."));
    assert_eq!(g.constraint(), Some("typed_pkey"));
    assert_eq!(format!("{g:?}"), format!("{d:?}"));

    // A transaction rolled back leaves nothing; one aborted by an error refuses statements.
    let mut c = c;
    let tx = c.transaction().await.unwrap();
    tx.execute("DELETE FROM typed", &[]).await.unwrap();
    assert_eq!(tx.query_one("SELECT count(*) FROM typed", &[]).await.unwrap().get::<_, i64>(0), 0);
    tx.rollback().await.unwrap();
    let tx = c.transaction().await.unwrap();
    tx.execute("INSERT INTO typed (id, name) VALUES (10, 'ten')", &[]).await.unwrap();
    assert!(tx.execute("INSERT INTO typed (id, name) VALUES (10, 'ten')", &[]).await.is_err());
    let e = tx.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(db_error(&e).code().code(), "25P02");
    // COMMIT of an aborted transaction is not an error: PostgreSQL rolls back instead.
    tx.commit().await.unwrap();
    let ten: i64 = one(&c, "SELECT count(*) FROM typed WHERE id = 10").await;
    assert_eq!(ten, 0);
    let q = "SELECT * FROM typed ORDER BY id";
    let rows = text_rows(&c, q).await;
    assert_eq!(rows.1.len(), 3);
    assert_eq!(rows, text_rows(&direct, q).await);

    drop((c, direct));
    pg.assert_no_backends(&db).await;
}

#[tokio::test]
async fn tokio_postgres_copy() {
    let pg = pg();
    let role = pg.fresh_role("copypw").await;
    let db = owned_db(&pg, &role).await;
    let gw = Dyngate::with_backend(&pg, &[]);
    let c = connect(&gw.url(&role, "copypw", &db)).await;
    let direct = connect(&pg.url_for(&role, "copypw", &db)).await;
    c.batch_execute("CREATE TABLE t (id int PRIMARY KEY, name text, data bytea, at timestamptz)")
        .await
        .unwrap();

    // Text COPY, in many CopyData messages of odd sizes that split rows.
    let text: String = (1..=20_000)
        .map(|i| format!("{i}\tname {i}\t\\\\x{i:08x}\t2024-01-01 00:00:00+00\n"))
        .collect();
    let sink = c.copy_in::<_, Bytes>("COPY t FROM STDIN").await.unwrap();
    let mut sink = pin!(sink);
    for chunk in text.as_bytes().chunks(7777) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 20_000);

    // Binary COPY.
    let sink = c.copy_in("COPY t (id, name, data, at) FROM STDIN (FORMAT binary)").await.unwrap();
    let mut writer = pin!(BinaryCopyInWriter::new(
        sink,
        &[Type::INT4, Type::TEXT, Type::BYTEA, Type::TIMESTAMPTZ]
    ));
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for i in 100_001..=105_000i32 {
        let name = (i % 3 != 0).then(|| format!("bin {i}"));
        let data = i.to_be_bytes().to_vec();
        writer.as_mut().write(&[&i, &name, &data, &at]).await.unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), 5_000);

    let row = c
        .query_one("SELECT count(*), sum(id)::int8, count(name), sum(length(data))::int8 FROM t", &[])
        .await
        .unwrap();
    let binary_ids: i64 = (100_001..=105_000i64).sum();
    assert_eq!(row.get::<_, i64>(0), 25_000);
    assert_eq!(row.get::<_, i64>(1), 20_000 * 20_001 / 2 + binary_ids);
    let binary_names = (100_001..=105_000).filter(|i| i % 3 != 0).count() as i64;
    assert_eq!(row.get::<_, i64>(2), 20_000 + binary_names);
    assert_eq!(row.get::<_, i64>(3), 20_000 * 4 + 5_000 * 4);

    // Bad data: the COPY fails with PostgreSQL's error and nothing is inserted.
    let sink = c.copy_in::<_, Bytes>("COPY t FROM STDIN").await.unwrap();
    let mut sink = pin!(sink);
    sink.send(Bytes::from_static(b"900000\tok\t\\N\t\\N\nnot-a-number\tbad\t\\N\t\\N\n"))
        .await
        .unwrap();
    let err = sink.finish().await.unwrap_err();
    let e = db_error(&err);
    assert_eq!(e.code().code(), "22P02");
    assert!(e.where_().is_some_and(|w| w.contains("COPY t, line 2")), "{e:?}");
    // Abandoning a COPY (the sink dropped unfinished) sends CopyFail; the session goes on.
    {
        let sink = c.copy_in::<_, Bytes>("COPY t FROM STDIN").await.unwrap();
        let mut sink = pin!(sink);
        sink.send(Bytes::from_static(b"900001\tabandoned\t\\N\t\\N\n")).await.unwrap();
    }
    let n: i64 = one(&c, "SELECT count(*) FROM t WHERE id >= 900000").await;
    assert_eq!(n, 0);

    // COPY OUT reads the same bytes as straight from PostgreSQL, text and binary.
    for q in [
        "COPY (SELECT * FROM t ORDER BY id) TO STDOUT",
        "COPY (SELECT * FROM t ORDER BY id) TO STDOUT (FORMAT binary)",
        "COPY t TO STDOUT (FORMAT csv, HEADER)",
    ] {
        let via_gw = copy_out(&c, q).await;
        let via_direct = copy_out(&direct, q).await;
        assert!(via_gw.len() > 500_000, "{q}: {} bytes", via_gw.len());
        assert!(via_gw == via_direct, "{q}: COPY OUT differs through the gateway");
    }
    // Text COPY OUT gives back what text COPY IN wrote. (Only the first three columns:
    // timestamptz is written in the session's TimeZone.)
    let ids_names = |s: &str| -> Vec<String> { s.lines().map(|l| l.split('\t').take(3).collect::<Vec<_>>().join("\t")).collect() };
    let back = String::from_utf8(copy_out(&c, "COPY (SELECT * FROM t WHERE id <= 20000 ORDER BY id) TO STDOUT").await).unwrap();
    assert_eq!(ids_names(&back), ids_names(&text));

    drop((c, direct));
    pg.assert_no_backends(&db).await;
}

async fn copy_out(c: &Client, q: &str) -> Vec<u8> {
    let mut stream = pin!(c.copy_out(q).await.unwrap());
    let mut out = Vec::new();
    while let Some(chunk) = stream.try_next().await.unwrap() {
        out.extend_from_slice(&chunk);
    }
    out
}
