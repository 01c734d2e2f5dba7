//! The Flink client layer (`dyngate::engine::flink`) against a real Flink 2.3 cluster and SQL
//! Gateway (started by `scripts/test` with `scripts/flink-temp`) and a real PostgreSQL (from
//! `scripts/pg-temp`): batch queries give the right rows, names and PostgreSQL types and texts (the
//! texts compared with PostgreSQL's own for the same values), SQL errors and lost sessions are
//! typed, a batch INSERT into a JDBC table reaches FINISHED and its rows are in PostgreSQL, a
//! streaming job stopped with a savepoint resumes from it without loss or duplicates, jobs are
//! cancelled, and a failing job says why.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dyngate::engine::flink::client::FlinkError;
use dyngate::engine::flink::client::cluster::{CancelOutcome, Cluster, JobState};
use dyngate::engine::flink::client::gateway::{Gateway, OperationHandle, RowKind, Session, SessionHandle};
use dyngate::engine::flink::client::types::{TypeKind, pg_type};
use dyngate::http_client::Endpoint;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test, which starts Flink (scripts/flink-temp)"))
}

fn gateway() -> Gateway {
    let url = env("DYNGATE_TEST_FLINK_GATEWAY");
    Gateway::new(Endpoint::parse("Flink SQL Gateway", &url, Duration::from_secs(30)).unwrap())
}

fn cluster() -> Cluster {
    let url = env("DYNGATE_TEST_FLINK_REST");
    Cluster::new(Endpoint::parse("Flink", &url, Duration::from_secs(30)).unwrap())
}

fn within(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn batch() -> BTreeMap<String, String> {
    config(&[("execution.runtime-mode", "batch")])
}

fn streaming() -> BTreeMap<String, String> {
    config(&[("execution.runtime-mode", "streaming")])
}

/// `ADD JAR` of the JDBC connector, its PostgreSQL dialect and the driver (what flink-dist puts in
/// DYNGATE_TEST_FLINK_CONNECTORS).
fn add_jars() -> Vec<String> {
    let dir = env("DYNGATE_TEST_FLINK_CONNECTORS");
    let mut jars: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".jar") && !p.contains("postgres-cdc"))
        .collect();
    jars.sort();
    assert_eq!(jars.len(), 3, "jdbc-core, jdbc-postgres and the driver in {dir}: {jars:?}");
    jars.iter().map(|j| format!("ADD JAR '{j}'")).collect()
}

/// A Flink JDBC table over the PostgreSQL table `pg_table` of the test's PostgreSQL.
fn jdbc_table(name: &str, columns: &str, pg_table: &str) -> String {
    let pg = common::pg();
    format!(
        "CREATE TABLE {name} ({columns}) WITH ('connector'='jdbc', \
         'url'='jdbc:postgresql://{}:{}/postgres', 'table-name'='{pg_table}', \
         'username'='postgres', 'password'='{}', 'sink.max-retries'='0')",
        pg.host, pg.port, pg.password
    )
}

async fn postgres() -> tokio_postgres::Client {
    common::pg().admin().await
}

async fn count(pg: &tokio_postgres::Client, table: &str) -> (i64, i64, Option<i64>, Option<i64>) {
    let row = pg
        .query_one(
            &format!("SELECT count(*), count(DISTINCT id), min(id)::bigint, max(id)::bigint FROM {table}"),
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

#[tokio::test]
async fn batch_select_gives_rows_names_and_postgres_types() {
    let gw = gateway();
    let info = gw.info().await.unwrap();
    assert_eq!(info.product_name, "Apache Flink");
    assert!(info.version.starts_with("2."), "{info:?}");
    let overview = cluster().overview().await.unwrap();
    assert_eq!(overview.taskmanagers, 1, "{overview:?}");

    let s = gw.open_session("dyngate-test-select", &batch()).await.unwrap();
    assert_eq!(gw.session_config(&s).await.unwrap()["execution.runtime-mode"], "batch");

    // The same values through Flink and through PostgreSQL: the texts a pgwire client would see
    // must be PostgreSQL's own.
    let flink_sql = "SELECT i, b, d38, d5, d100, dbl, tiny, flt, c, s, bo, dt, ts, tsl, bin, iv, ym, n FROM (VALUES \
        (1, CAST(9223372036854775807 AS BIGINT), CAST('12345678901234567890.0123456789' AS DECIMAL(38,10)), \
         CAST(0.10 AS DECIMAL(5,2)), CAST(100 AS DECIMAL(10,2)), CAST(1e300 AS DOUBLE), CAST(1.5e-5 AS DOUBLE), \
         CAST(0.1 AS FLOAT), CAST('ab' AS CHAR(3)), 'x', TRUE, DATE '2024-02-29', \
         TIMESTAMP '2024-01-02 03:04:05.123456', CAST(TIMESTAMP '2024-01-02 03:04:00' AS TIMESTAMP_LTZ(3)), X'0102ff', \
         INTERVAL '-1 02:03:04.5' DAY TO SECOND, INTERVAL '14' MONTH, CAST(NULL AS INT)), \
        (2, CAST(-1 AS BIGINT), CAST('-0.5' AS DECIMAL(38,10)), CAST(-1.5 AS DECIMAL(5,2)), CAST(0 AS DECIMAL(10,2)), \
         CAST(123456789.125 AS DOUBLE), CAST(-0.0001 AS DOUBLE), CAST(-2.5 AS FLOAT), CAST('abc' AS CHAR(3)), 'yz', FALSE, \
         DATE '1999-12-31', TIMESTAMP '1999-12-31 23:59:59', CAST(TIMESTAMP '2000-01-01 00:00:00.5' AS TIMESTAMP_LTZ(3)), X'ab', \
         INTERVAL '2' DAY, INTERVAL '1' MONTH, 7)) \
        AS t(i, b, d38, d5, d100, dbl, tiny, flt, c, s, bo, dt, ts, tsl, bin, iv, ym, n) ORDER BY i";
    // Flink's TIMESTAMP_LTZ renders in UTC: PostgreSQL's session is set to UTC for the comparison.
    let pg_sql = "SELECT 1::int4 i, 9223372036854775807::int8 b, '12345678901234567890.0123456789'::numeric(38,10) d38, \
        0.10::numeric(5,2) d5, 100::numeric(10,2) d100, 1e300::float8 dbl, 1.5e-5::float8 tiny, 0.1::float4 flt, \
        'ab'::char(3) c, 'x'::varchar(2) s, true bo, '2024-02-29'::date dt, '2024-01-02 03:04:05.123456'::timestamp(6) ts, \
        '2024-01-02 03:04:00+00'::timestamptz(3) tsl, '\\x0102ff'::bytea bin, interval '-1 day -02:03:04.5' iv, \
        interval '14 months' ym, NULL::int4 n \
        UNION ALL SELECT 2, -1, -0.5::numeric(38,10), -1.5::numeric(5,2), 0::numeric(10,2), 123456789.125, -0.0001, -2.5, \
        'abc'::char(3), 'yz'::varchar(2), false, '1999-12-31', '1999-12-31 23:59:59'::timestamp(6), \
        '2000-01-01 00:00:00.5+00'::timestamptz(3), '\\xab', interval '2 days', interval '1 month', 7 ORDER BY i";
    let t0 = Instant::now();
    let rs = gw.execute_and_fetch(&s, flink_sql, &BTreeMap::new(), within(60)).await.unwrap();
    eprintln!("batch SELECT of 2 rows: {:.1} s", t0.elapsed().as_secs_f64());
    assert!(rs.is_query_result);
    assert!(rs.job_id.is_some(), "a query runs a job");
    let names: Vec<&str> = rs.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "i", "b", "d38", "d5", "d100", "dbl", "tiny", "flt", "c", "s", "bo", "dt", "ts", "tsl", "bin", "iv", "ym", "n"
        ]
    );
    assert_eq!(rs.columns[2].logical_type.kind, TypeKind::Decimal { precision: 38, scale: 10 });
    assert!(!rs.columns[0].logical_type.nullable);
    assert!(rs.columns[17].logical_type.nullable);
    assert!(rs.rows.iter().all(|r| r.kind == RowKind::Insert));
    // DECIMAL(38,10) arrives exactly (not through an f64), 0.10 comes back as 0.10.
    assert_eq!(rs.rows[0].fields[2], serde_json::json!("12345678901234567890.0123456789"));
    let flink_text = rs.pg_text_rows();
    assert_eq!(flink_text[0][3].as_deref(), Some("0.10"));
    assert_eq!(flink_text[0][17], None);

    let pg = postgres().await;
    pg.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let stmt = pg.prepare(pg_sql).await.unwrap();
    let pg_types: Vec<(String, u32)> = stmt
        .columns()
        .iter()
        .map(|c| (c.type_().name().to_string(), c.type_().oid()))
        .collect();
    let flink_types: Vec<(String, u32)> = rs
        .columns
        .iter()
        .map(|c| {
            let t = pg_type(&c.logical_type);
            (t.name.to_string(), t.oid)
        })
        .collect();
    assert_eq!(flink_types, pg_types);
    let mut pg_text_rows = Vec::new();
    for msg in pg.simple_query(pg_sql).await.unwrap() {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
            pg_text_rows.push((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect::<Vec<_>>());
        }
    }
    for (i, (f, p)) in flink_text.iter().zip(&pg_text_rows).enumerate() {
        for (c, (fv, pv)) in f.iter().zip(p).enumerate() {
            assert_eq!(fv, pv, "row {i}, column {}", rs.columns[c].name);
        }
    }
    assert_eq!(flink_text.len(), pg_text_rows.len());

    // A bounded datagen, read page by page with a cursor in streaming mode.
    gw.configure(
        &s,
        "CREATE TABLE gen (id BIGINT NOT NULL) WITH ('connector'='datagen', 'number-of-rows'='200', \
         'fields.id.kind'='sequence', 'fields.id.start'='1', 'fields.id.end'='200')",
    )
    .await
    .unwrap();
    let agg = gw
        .execute_and_fetch(&s, "SELECT count(*) AS n, sum(id) AS total FROM gen", &BTreeMap::new(), within(60))
        .await
        .unwrap();
    assert_eq!(agg.pg_text_rows(), [[Some("200".to_string()), Some("20100".to_string())]]);
    assert_eq!(pg_type(&agg.columns[0].logical_type).name, "int8");
    let op = gw.execute(&s, "SELECT id FROM gen", &streaming()).await.unwrap();
    let mut cursor = gw.cursor(&s, &op);
    let mut ids = Vec::new();
    while let Some(page) = cursor.next_page(within(60)).await.unwrap() {
        assert!(!page.is_empty());
        ids.extend(page.iter().map(|r| r.fields[0].as_i64().unwrap()));
    }
    assert!(cursor.is_done());
    assert_eq!(cursor.columns()[0].name, "id");
    ids.sort();
    assert_eq!(ids, (1..=200).collect::<Vec<_>>());
    gw.close_operation(&s, &op).await.unwrap();
    gw.close_session(&s).await.unwrap();
}

#[tokio::test]
async fn sql_errors_are_typed_and_readable() {
    let gw = gateway().with_secrets(["no_such_secret_table"]);
    let s = gw.open_session("dyngate-test-errors", &batch()).await.unwrap();
    let cases = [
        ("SELEC 1", "CalciteException", "Non-query expression encountered in illegal context"),
        (
            "SELECT * FROM no_such_table",
            "SqlValidatorException",
            "Object 'no_such_table' not found",
        ),
        // A registered secret never shows, even when Flink echoes it.
        (
            "SELECT * FROM no_such_secret_table",
            "SqlValidatorException",
            "Object '***' not found",
        ),
    ];
    for (sql, exception, reason) in cases {
        match gw.execute_and_fetch(&s, sql, &BTreeMap::new(), within(30)).await {
            Err(FlinkError::Sql(cause)) => {
                assert_eq!(cause.short_exception(), exception, "{sql}");
                assert_eq!(cause.message, reason, "{sql}");
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    // The operation of a failed statement says ERROR.
    let op = gw.execute(&s, "SELECT * FROM no_such_table", &BTreeMap::new()).await.unwrap();
    let status = poll_status(&gw, &s, &op).await;
    assert_eq!(status, dyngate::engine::flink::client::gateway::OperationStatus::Error);
    gw.close_operation(&s, &op).await.unwrap();
    // configure-session answers at once.
    match gw.configure(&s, "CREATE TABLE x (").await {
        Err(FlinkError::Sql(cause)) => {
            assert_eq!(cause.short_exception(), "ParseException");
            assert!(
                cause.message.starts_with("Encountered \"<EOF>\" at line 1, column 16."),
                "{}",
                cause.message
            );
        }
        other => panic!("{other:?}"),
    }
    // A JDBC table without its jars in the session: planning fails, saying why.
    gw.configure(&s, &jdbc_table("j", "id INT", "nothing")).await.unwrap();
    match gw.execute_and_fetch(&s, "SELECT * FROM j", &BTreeMap::new(), within(30)).await {
        Err(FlinkError::Sql(cause)) => {
            assert!(
                cause.message.starts_with("Could not find any factory for identifier 'jdbc'"),
                "{cause}"
            );
            assert!(!cause.message.contains(&common::pg().password));
        }
        other => panic!("{other:?}"),
    }
    // Cancelling a finished operation is refused (typed as an unexpected answer, not a SQL error).
    let op = gw.execute(&s, "SET 'k.x' = 'y'", &BTreeMap::new()).await.unwrap();
    gw.fetch_all(&s, &op, within(30)).await.unwrap();
    assert!(matches!(
        gw.cancel_operation(&s, &op).await,
        Err(FlinkError::Unexpected { status: 500, .. })
    ));
    gw.close_session(&s).await.unwrap();
}

async fn poll_status(gw: &Gateway, s: &SessionHandle, op: &OperationHandle) -> dyngate::engine::flink::client::gateway::OperationStatus {
    let deadline = within(30);
    loop {
        let status = gw.operation_status(s, op).await.unwrap();
        if status.is_terminal() || Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn lost_sessions_are_recognised_and_reopened() {
    let gw = gateway();
    let unknown = SessionHandle("00000000-0000-0000-0000-000000000000".into());
    for result in [
        gw.heartbeat(&unknown).await,
        gw.close_session(&unknown).await,
        gw.configure(&unknown, "SET 'a' = 'b'").await,
        gw.execute(&unknown, "SELECT 1", &BTreeMap::new()).await.map(drop),
        gw.session_config(&unknown).await.map(drop),
    ] {
        match result {
            Err(FlinkError::SessionNotFound(id)) => assert_eq!(id, unknown.0),
            other => panic!("{other:?}"),
        }
    }

    // A session whose set-up (DDL) is replayed into a new one when it is gone.
    let setup = vec!["CREATE TEMPORARY VIEW v AS SELECT * FROM (VALUES (1, 'one'), (2, 'two')) AS t(id, name)".to_string()];
    let session = Session::open(gw.clone(), "dyngate-test-reopen", batch(), setup).await.unwrap();
    session.configure("SET 'pipeline.name' = 'dyngate-test-reopen'").await.unwrap();
    let first = session.handle().await.unwrap();
    let query = "SELECT id, name FROM v ORDER BY id";
    let rows = session
        .execute_and_fetch(query, &BTreeMap::new(), within(60))
        .await
        .unwrap()
        .pg_text_rows();
    assert_eq!(rows.len(), 2);
    // The gateway loses it (as after idle-timeout or a gateway restart).
    gw.close_session(&first).await.unwrap();
    assert!(gw.heartbeat(&first).await.unwrap_err().is_session_not_found());
    let again = session
        .execute_and_fetch(query, &BTreeMap::new(), within(60))
        .await
        .unwrap()
        .pg_text_rows();
    assert_eq!(again, rows, "the view was replayed into the new session");
    let second = session.handle().await.unwrap();
    assert_ne!(first, second);
    assert_eq!(gw.session_config(&second).await.unwrap()["pipeline.name"], "dyngate-test-reopen");
    assert_eq!(session.setup().await.len(), 2);
    session.heartbeat().await.unwrap();
    session.close().await.unwrap();
    assert!(gw.heartbeat(&second).await.unwrap_err().is_session_not_found());
}

#[tokio::test]
async fn batch_insert_into_postgres_finishes_with_the_rows() {
    let pg = postgres().await;
    let table = common::unique("flink_batch");
    pg.batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY, name text, v numeric(38,10))"))
        .await
        .unwrap();
    let gw = gateway().with_secrets([common::pg().password]);
    let mut setup = add_jars();
    setup.push(jdbc_table(
        "dst",
        "id INT NOT NULL, name STRING, v DECIMAL(38,10), PRIMARY KEY (id) NOT ENFORCED",
        &table,
    ));
    setup.push(
        "CREATE TABLE gen (id INT NOT NULL) WITH ('connector'='datagen', 'number-of-rows'='500', \
         'fields.id.kind'='sequence', 'fields.id.start'='1', 'fields.id.end'='500')"
            .to_string(),
    );
    let session = Session::open(gw.clone(), "dyngate-test-batch-insert", batch(), setup)
        .await
        .unwrap();
    let name = common::unique("dyngate-test-batch");
    let t0 = Instant::now();
    let job = session
        .submit_job(
            "INSERT INTO dst SELECT id, CONCAT('n', CAST(id AS STRING)), \
             CAST('12345678901234567890.0123456789' AS DECIMAL(38,10)) FROM gen",
            &config(&[("pipeline.name", &name)]),
            within(60),
        )
        .await
        .unwrap();
    assert_eq!(job.as_str().len(), 32, "{job}");
    let cl = cluster();
    let state = cl.wait_terminal(&job, within(60)).await.unwrap();
    eprintln!("batch INSERT of 500 rows: FINISHED after {:.1} s", t0.elapsed().as_secs_f64());
    assert_eq!(state, JobState::Finished, "{:?}", cl.job_failure(&job).await);
    let summary = cl.job(&job).await.unwrap().expect("the job is listed");
    assert_eq!((summary.name.as_str(), &summary.state), (name.as_str(), &JobState::Finished));
    assert_eq!(summary.job_type.as_deref(), Some("BATCH"));
    assert!(summary.end_time >= summary.start_time && summary.end_time.is_some(), "{summary:?}");
    assert_eq!(count(&pg, &table).await, (500, 500, Some(1), Some(500)));
    let row = pg
        .query_one(&format!("SELECT name, v::text FROM {table} WHERE id = 7"), &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1)),
        ("n7".into(), "12345678901234567890.0123456789".into())
    );
    // Read back through Flink: the exact DECIMAL again.
    let back = session
        .execute_and_fetch("SELECT v FROM dst WHERE id = 7", &BTreeMap::new(), within(60))
        .await
        .unwrap();
    assert_eq!(back.pg_text_rows(), [[Some("12345678901234567890.0123456789".to_string())]]);
    // Cancelling a finished job is a typed outcome, an unknown job a typed error.
    assert_eq!(cl.cancel(&job).await.unwrap(), CancelOutcome::AlreadyTerminal(JobState::Finished));
    let unknown = dyngate::engine::flink::client::gateway::JobId("0123456789abcdef0123456789abcdef".into());
    assert!(matches!(cl.cancel(&unknown).await, Err(FlinkError::JobNotFound(_))));
    assert!(matches!(
        cl.stop_with_savepoint(&unknown, None, within(30)).await,
        Err(FlinkError::JobNotFound(_))
    ));
    assert_eq!(cl.job_state(&unknown).await.unwrap(), None);
    session.close().await.unwrap();
    pg.batch_execute(&format!("DROP TABLE {table}")).await.unwrap();
}

#[tokio::test]
async fn streaming_job_stopped_with_savepoint_resumes_without_loss_or_duplicates() {
    const N: i64 = 2000;
    let pg = postgres().await;
    let table = common::unique("flink_stream");
    pg.batch_execute(&format!("CREATE TABLE {table} (id bigint, payload text)"))
        .await
        .unwrap();
    let gw = gateway().with_secrets([common::pg().password]);
    let mut setup = add_jars();
    setup.push(jdbc_table("app", "id BIGINT, payload STRING", &table));
    setup.push(format!(
        "CREATE TABLE seq (id BIGINT NOT NULL, payload STRING) WITH ('connector'='datagen', \
         'fields.id.kind'='sequence', 'fields.id.start'='1', 'fields.id.end'='{N}', \
         'fields.payload.length'='8', 'rows-per-second'='400')"
    ));
    let session = Session::open(gw.clone(), "dyngate-test-savepoint", batch(), setup).await.unwrap();
    let insert = "INSERT INTO app SELECT id, payload FROM seq";
    let mut job_config = config(&[
        ("execution.runtime-mode", "streaming"),
        ("execution.checkpointing.interval", "1s"),
        ("pipeline.name", "dyngate-test-savepoint"),
    ]);
    let cl = cluster();
    let job = session.submit_job(insert, &job_config, within(60)).await.unwrap();
    cl.wait_for(&job, within(60), |s| *s == JobState::Running).await.unwrap();
    let summary = cl.job(&job).await.unwrap().unwrap();
    assert_eq!(summary.job_type.as_deref(), Some("STREAMING"));
    // Some rows are written (the sink flushes on checkpoints), far from all.
    let deadline = within(60);
    while count(&pg, &table).await.0 == 0 {
        assert!(Instant::now() < deadline, "no rows reached PostgreSQL");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t0 = Instant::now();
    let savepoint = cl.stop_with_savepoint(&job, None, within(60)).await.unwrap();
    eprintln!("stop with savepoint: {:.1} s -> {savepoint}", t0.elapsed().as_secs_f64());
    assert!(savepoint.starts_with("file:") && savepoint.contains("savepoint-"), "{savepoint}");
    let state = cl.wait_terminal(&job, within(30)).await.unwrap();
    assert_eq!(state, JobState::Finished);
    let (written, distinct, _, _) = count(&pg, &table).await;
    assert!(written > 0 && written < N, "{written} of {N} rows before the resumption");
    assert_eq!(written, distinct);

    // The same statement resumed from the savepoint ends with the whole sequence, once.
    job_config.insert("execution.state-recovery.path".into(), savepoint.clone());
    let resumed = session.submit_job(insert, &job_config, within(60)).await.unwrap();
    assert_ne!(resumed, job);
    let state = cl.wait_terminal(&resumed, within(90)).await.unwrap();
    assert_eq!(state, JobState::Finished, "{:?}", cl.job_failure(&resumed).await);
    assert_eq!(
        count(&pg, &table).await,
        (N, N, Some(1), Some(N)),
        "{written} rows were written before the stop"
    );
    session.close().await.unwrap();
    pg.batch_execute(&format!("DROP TABLE {table}")).await.unwrap();
}

#[tokio::test]
async fn jobs_are_cancelled_and_failures_explained() {
    let gw = gateway();
    let cl = cluster();
    let mut setup = add_jars();
    setup.push("CREATE TABLE endless (id BIGINT) WITH ('connector'='datagen', 'rows-per-second'='10')".into());
    setup.push("CREATE TABLE sink (id BIGINT) WITH ('connector'='blackhole')".into());
    let missing = common::unique("flink_missing");
    setup.push(jdbc_table("nowhere", "id BIGINT", &missing));
    let session = Session::open(gw.clone(), "dyngate-test-cancel", streaming(), setup).await.unwrap();

    // A running streaming job, cancelled.
    let job = session
        .submit_job("INSERT INTO sink SELECT id FROM endless", &BTreeMap::new(), within(60))
        .await
        .unwrap();
    cl.wait_for(&job, within(60), |s| *s == JobState::Running).await.unwrap();
    assert!(!JobState::Running.is_terminal());
    // Submitting closed the INSERT's operation: the job runs on regardless.
    assert_eq!(cl.job_state(&job).await.unwrap(), Some(JobState::Running));
    assert_eq!(cl.job_failure(&job).await.unwrap(), None);
    assert_eq!(cl.cancel(&job).await.unwrap(), CancelOutcome::Cancelling);
    assert_eq!(cl.wait_terminal(&job, within(30)).await.unwrap(), JobState::Canceled);
    assert_eq!(cl.cancel(&job).await.unwrap(), CancelOutcome::AlreadyTerminal(JobState::Canceled));
    // Stopping a job that is over is a typed error too.
    match cl.stop_with_savepoint(&job, None, within(30)).await {
        Err(FlinkError::NotRunning { state, .. }) => assert_eq!(state, "CANCELED"),
        other => panic!("{other:?}"),
    }

    // A job whose sink table does not exist in PostgreSQL fails at run time; the gateway only
    // gave its id, the cluster says why. (Bounded: when an unbounded job's JDBC sink fails in its
    // timed flush, the sink's close throws again and the TaskManager exits, see
    // docs/flink-facts.md.)
    let failing = session
        .submit_job(
            "INSERT INTO nowhere VALUES (CAST(1 AS BIGINT))",
            &config(&[("restart-strategy.type", "none"), ("execution.runtime-mode", "batch")]),
            within(60),
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    assert_eq!(cl.wait_terminal(&failing, within(60)).await.unwrap(), JobState::Failed);
    eprintln!("failing JDBC job FAILED after {:.1} s", t0.elapsed().as_secs_f64());
    let cause = cl.job_failure(&failing).await.unwrap().expect("a failure cause");
    assert!(cause.message.contains(&format!("relation \"{missing}\" does not exist")), "{cause}");
    assert_eq!(cl.cancel(&failing).await.unwrap(), CancelOutcome::AlreadyTerminal(JobState::Failed));
    session.close().await.unwrap();
}
