//! Dynamic tables on the PostgreSQL engine, as a user sees them through the gateway: CREATE fills
//! an ordinary table (or leaves nothing when the fill fails), REFRESH replaces the content
//! atomically without blocking readers, DROP removes it, SHOW / DESCRIBE / SHOW CREATE and the
//! catalog views tell the truth, errors carry their SQLSTATEs, and PostgreSQL's privileges apply
//! (refreshes run as the owner).

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio_postgres::Client;

async fn setup() -> (Pg, String, Dyngate, Client) {
    catalog_setup(&[], &[&orders(300)]).await
}

async fn totals(c: &Client, table: &str) -> Vec<(String, String)> {
    c.query(&format!("SELECT day::text, total::text FROM {table} ORDER BY day"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

const DAILY: &str = "SELECT day, sum(amount) AS total FROM orders GROUP BY day";

#[tokio::test]
async fn create_fills_refresh_replaces_drop_removes() {
    let (_pg, _db, _gw, c) = setup().await;
    // Full refreshes (the incremental ones are tests/incremental.rs's).
    c.batch_execute(&format!(
        "CREATE DYNAMIC TABLE daily WITH ('refresh.action' = 'full') FRESHNESS = INTERVAL '1' HOUR AS {DAILY}"
    ))
    .await
    .unwrap();
    let expected = totals(&c, &format!("({DAILY}) q")).await;
    assert_eq!(totals(&c, "daily").await, expected, "filled at creation");
    // Column names and types come from the query.
    let cols = c.prepare("SELECT * FROM daily").await.unwrap();
    let cols: Vec<(&str, String)> = cols.columns().iter().map(|c| (c.name(), c.type_().name().to_string())).collect();
    assert_eq!(cols, [("day", "date".to_string()), ("total", "numeric".to_string())]);

    c.batch_execute("INSERT INTO orders VALUES (1000, '2024-01-01', 1000.5)")
        .await
        .unwrap();
    assert_eq!(totals(&c, "daily").await, expected, "not refreshed yet");
    let r = c.query_one("REFRESH DYNAMIC TABLE daily", &[]).await.unwrap();
    assert_eq!(r.get::<_, &str>("state"), "SUCCEEDED");
    assert_eq!(r.get::<_, i64>("rows_written"), 3);
    let job: String = r.get("job_id");
    assert_eq!(totals(&c, "daily").await, totals(&c, &format!("({DAILY}) q")).await);
    // ALTER ... REFRESH is the same operation.
    c.simple_query("ALTER DYNAMIC TABLE daily REFRESH").await.unwrap();

    let hist = c
        .query("SELECT trigger, state, action, rows_written, job_id FROM dyngate.refresh_history WHERE table_name = 'daily' ORDER BY started_at", &[])
        .await
        .unwrap();
    let h: Vec<(String, String, String, i64)> = hist.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        h,
        [
            (s("CREATION"), s("SUCCEEDED"), s("FULL"), 3),
            (s("MANUAL"), s("SUCCEEDED"), s("FULL"), 3),
            (s("MANUAL"), s("SUCCEEDED"), s("FULL"), 3)
        ]
    );
    assert_eq!(
        hist[1].get::<_, String>(4),
        job,
        "the job id the statement returned is the history's"
    );

    let v = c
        .query_one(
            "SELECT refresh_mode, status, freshness, freshness_met, lag < interval '1 minute' FROM dyngate.dynamic_tables",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(v.get::<_, &str>(0), "FULL");
    assert_eq!(v.get::<_, &str>(1), "ACTIVATED");
    assert_eq!(v.get::<_, &str>(2), "1 HOUR");
    assert!(v.get::<_, bool>(3));
    assert!(v.get::<_, bool>(4));

    c.batch_execute("DROP DYNAMIC TABLE daily").await.unwrap();
    let err = c.query("SELECT * FROM daily", &[]).await.unwrap_err();
    assert_eq!(code(&err), Some("42P01"), "the table is gone");
    let n: i64 = one(&c, "SELECT count(*) FROM dyngate.dynamic_tables").await;
    assert_eq!(n, 0, "and so is its catalog row");
    let n: i64 = one(&c, "SELECT count(*) FROM dyngate.refresh_history WHERE table_name = 'daily'").await;
    assert_eq!(n, 3, "its history stays");
}

#[tokio::test]
async fn a_failed_create_leaves_nothing() {
    let (_pg, _db, _gw, c) = setup().await;
    // The query fails at run time, after the table was created: all of it is undone.
    let err = c
        .batch_execute("CREATE DYNAMIC TABLE broken AS SELECT id / (id - 7) AS x FROM orders")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("22012"), "PostgreSQL's own error: division by zero");
    let err = c
        .batch_execute("CREATE DYNAMIC TABLE missing AS SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("42P01"));
    assert!(err.as_db_error().unwrap().message().contains("no_such_table"));
    let rels: i64 = one(&c, "SELECT count(*) FROM pg_class WHERE relname IN ('broken', 'missing')").await;
    assert_eq!(rels, 0);
    let rows: i64 = one(&c, "SELECT count(*) FROM dyngate.dynamic_tables").await;
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn errors_have_their_sqlstates_and_change_nothing() {
    let (_pg, _db, _gw, c) = setup().await;
    c.batch_execute(&format!("CREATE DYNAMIC TABLE daily AS {DAILY}")).await.unwrap();
    let cases = [
        (format!("CREATE DYNAMIC TABLE daily AS {DAILY}"), "42P07", "already exists"),
        (
            "CREATE DYNAMIC TABLE orders AS SELECT 1".to_string(),
            "42P07",
            "is not a dynamic table",
        ),
        (
            "CREATE DYNAMIC TABLE x FRESHNESS = INTERVAL '1' MONTH AS SELECT 1".into(),
            "22023",
            "SECOND, MINUTE, HOUR, DAY",
        ),
        (
            "CREATE DYNAMIC TABLE x FRESHNESS = INTERVAL '0' SECOND AS SELECT 1".into(),
            "22023",
            "positive",
        ),
        (
            "CREATE DYNAMIC TABLE x FRESHNESS = INTERVAL '45' MINUTE AS SELECT 1".into(),
            "22023",
            "factors of 60",
        ),
        (
            "CREATE DYNAMIC TABLE x FRESHNESS = INTERVAL '2' DAY AS SELECT 1".into(),
            "22023",
            "must be 1 when the time unit is DAY",
        ),
        (
            "CREATE DYNAMIC TABLE x FRESHNESS = INTERVAL '5' HOUR REFRESH_MODE = FULL AS SELECT 1".into(),
            "22023",
            "factors of 24",
        ),
        ("CREATE DYNAMIC TABLE x AS".into(), "42601", "expected a query"),
        (
            "REFRESH DYNAMIC TABLE nope".into(),
            "42P01",
            "Dynamic table with identifier public.nope does not exist.",
        ),
        ("DROP DYNAMIC TABLE nope".into(), "42P01", "does not exist"),
        (
            "DROP DYNAMIC TABLE orders".into(),
            "42809",
            "Table public.orders is not a dynamic table",
        ),
        ("REFRESH DYNAMIC TABLE orders".into(), "42809", "is not a dynamic table"),
        ("DESCRIBE DYNAMIC TABLE orders".into(), "42809", "is not a dynamic table"),
        ("SHOW CREATE DYNAMIC TABLE nope".into(), "42P01", "does not exist"),
    ];
    for (sql, state, text) in cases {
        let err = c.simple_query(&sql).await.unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err:?}"));
        assert_eq!(db.code().code(), state, "{sql}: {}", db.message());
        assert!(db.message().contains(text), "{sql}: {}", db.message());
    }
    // A long freshness in CONTINUOUS mode is fine: the cron rules are FULL mode's.
    c.batch_execute("CREATE DYNAMIC TABLE x FRESHNESS = INTERVAL '45' MINUTE REFRESH_MODE = CONTINUOUS AS SELECT 1 AS one")
        .await
        .unwrap();
    let names: Vec<String> = c
        .query_scalar("SELECT table_name FROM dyngate.dynamic_tables ORDER BY 1", &[])
        .await
        .unwrap();
    assert_eq!(names, ["daily", "x"], "no failed statement left anything");
    // IF [NOT] EXISTS: a notice, no error.
    c.batch_execute(&format!("CREATE DYNAMIC TABLE IF NOT EXISTS daily AS {DAILY}"))
        .await
        .unwrap();
    c.batch_execute("DROP DYNAMIC TABLE IF EXISTS nope").await.unwrap();
}

#[tokio::test]
async fn mode_follows_freshness_and_show_tells() {
    let (_pg, _db, _gw, c) = setup().await;
    for (name, clause, mode) in [
        ("a", "FRESHNESS = INTERVAL '3' MINUTE", "CONTINUOUS"),
        ("b", "FRESHNESS = INTERVAL '29' MINUTE", "CONTINUOUS"),
        ("c", "FRESHNESS = INTERVAL '30' MINUTE", "FULL"),
        ("d", "FRESHNESS = INTERVAL '1' DAY", "FULL"),
        ("e", "FRESHNESS = INTERVAL '1' HOUR REFRESH_MODE = CONTINUOUS", "CONTINUOUS"),
        ("f", "FRESHNESS = INTERVAL '10' SECOND REFRESH_MODE = FULL", "FULL"),
        ("g", "", "CONTINUOUS"),
        ("h", "REFRESH_MODE = FULL", "FULL"),
    ] {
        c.batch_execute(&format!("CREATE DYNAMIC TABLE {name} {clause} AS SELECT 1 AS one"))
            .await
            .unwrap();
        let row = c
            .query_one(
                "SELECT refresh_mode, freshness FROM dyngate.dynamic_tables WHERE table_name = $1",
                &[&name],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, &str>(0), mode, "{name}: {clause}");
        if name == "g" {
            assert_eq!(row.get::<_, &str>(1), "3 MINUTE", "Flink's default freshness for continuous");
        }
        if name == "h" {
            assert_eq!(row.get::<_, &str>(1), "1 HOUR", "Flink's default freshness for full");
        }
    }
    let rows = c.simple_query("SHOW DYNAMIC TABLES LIKE '_'").await.unwrap();
    let n = rows
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(n, 8);
    let rows = c.query("SHOW DYNAMIC TABLES LIKE 'c'", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, &str>("refresh_mode"), "FULL");
    assert!(rows[0].get::<_, bool>("freshness_met"));
}

#[tokio::test]
async fn describe_and_show_create() {
    let (_pg, _db, _gw, c) = setup().await;
    c.batch_execute(&format!(
        "CREATE DYNAMIC TABLE \"Daily Sales\" (day date PRIMARY KEY, total numeric) COMMENT 'per day' WITH ('k' = 'it''s')
         FRESHNESS = INTERVAL '2' HOUR AS {DAILY}"
    ))
    .await
    .unwrap();
    let props: Vec<(String, Option<String>)> = c
        .query("DESCRIBE DYNAMIC TABLE \"Daily Sales\"", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let get = |k: &str| props.iter().find(|(p, _)| p == k).and_then(|(_, v)| v.clone());
    assert_eq!(get("name").as_deref(), Some("public.Daily Sales"));
    assert_eq!(get("columns").as_deref(), Some("day date, total numeric"));
    assert_eq!(get("refresh_mode").as_deref(), Some("FULL"));
    assert_eq!(get("comment").as_deref(), Some("per day"));
    assert_eq!(get("owner").as_deref(), Some("postgres"));
    // The declared primary key is there.
    let pk: i64 = one(
        &c,
        "SELECT count(*) FROM pg_constraint WHERE conrelid = '\"Daily Sales\"'::regclass AND contype = 'p'",
    )
    .await;
    assert_eq!(pk, 1);

    // SHOW CREATE gives a statement that recreates the same table.
    let create: String = one(&c, "SHOW CREATE DYNAMIC TABLE \"Daily Sales\"").await;
    assert!(
        create.starts_with("CREATE DYNAMIC TABLE \"public\".\"Daily Sales\" (day date PRIMARY KEY, total numeric)"),
        "{create}"
    );
    // The schedule's time zone is the session's (the test cluster's default: UTC here, GMT elsewhere).
    let tz: String = one(&c, "SHOW TimeZone").await;
    assert!(
        create.contains(&format!("WITH ('k' = 'it''s', 'schedule.time-zone' = '{tz}')")),
        "{create}"
    );
    c.batch_execute("DROP DYNAMIC TABLE \"Daily Sales\"").await.unwrap();
    c.batch_execute(&create).await.unwrap();
    let again: String = one(&c, "SHOW CREATE DYNAMIC TABLE \"Daily Sales\"").await;
    assert_eq!(again, create);
}

#[tokio::test]
async fn statements_inside_a_transaction_block() {
    let (_pg, _db, _gw, c) = setup().await;
    c.batch_execute(&format!("CREATE DYNAMIC TABLE daily AS {DAILY}")).await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    for sql in [
        format!("CREATE DYNAMIC TABLE d2 AS {DAILY}"),
        "REFRESH DYNAMIC TABLE daily".into(),
        "DROP DYNAMIC TABLE daily".into(),
    ] {
        let err = c.simple_query(&sql).await.unwrap_err();
        assert_eq!(code(&err), Some("25001"), "{sql}");
        assert!(
            err.as_db_error()
                .unwrap()
                .message()
                .contains("cannot run inside a transaction block")
        );
    }
    // Looking is fine, and the transaction itself is untouched.
    let rows = c.query("SHOW DYNAMIC TABLES", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    c.query("DESCRIBE DYNAMIC TABLE daily", &[]).await.unwrap();
    c.batch_execute("INSERT INTO orders VALUES (5000, '2024-01-01', 1); COMMIT")
        .await
        .unwrap();
    let n: i64 = one(&c, "SELECT count(*) FROM orders WHERE id = 5000").await;
    assert_eq!(n, 1);
}

#[tokio::test]
async fn privileges_are_postgresqls() {
    let (pg, db, gw, c) = setup().await;
    let alice = pg.fresh_role("pw").await;
    let bob = pg.fresh_role("pw").await;
    c.batch_execute(&format!("CREATE TABLE secret (v int); INSERT INTO secret VALUES (42); GRANT CREATE ON SCHEMA public TO {alice}, {bob}; GRANT SELECT ON orders TO {alice}"))
        .await
        .unwrap();
    let a = connect(&gw.url(&alice, "pw", &db)).await;
    // Alice cannot read `secret` directly, so not through a dynamic table either.
    let err = a
        .batch_execute("CREATE DYNAMIC TABLE leak AS SELECT * FROM secret")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("42501"), "{err:?}");
    a.batch_execute(&format!("CREATE DYNAMIC TABLE mine AS {DAILY}")).await.unwrap();
    let owner: String = one(&c, "SELECT tableowner::text FROM pg_tables WHERE tablename = 'mine'").await;
    assert_eq!(owner, alice, "the table belongs to its creator");

    // Bob cannot see, refresh or drop Alice's table.
    let b = connect(&gw.url(&bob, "pw", &db)).await;
    assert!(b.query("SHOW DYNAMIC TABLES", &[]).await.unwrap().is_empty());
    let err = b.query("REFRESH DYNAMIC TABLE mine", &[]).await.unwrap_err();
    assert_eq!(code(&err), Some("42501"), "{err:?}");
    let err = b.batch_execute("DROP DYNAMIC TABLE mine").await.unwrap_err();
    assert_eq!(code(&err), Some("42501"), "{err:?}");

    // Refreshes run as the owner: when Alice loses access to the source, her refresh fails
    // (recorded as FAILED), even when a superuser asks for it.
    c.batch_execute(&format!("REVOKE SELECT ON orders FROM {alice}")).await.unwrap();
    let err = c.query("REFRESH DYNAMIC TABLE mine", &[]).await.unwrap_err();
    assert_eq!(code(&err), Some("42501"), "{err:?}");
    let (state, ecode): (String, Option<String>) = {
        let r = c
            .query_one(
                "SELECT state, error_code FROM dyngate.refresh_history WHERE table_name = 'mine' ORDER BY started_at DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((state.as_str(), ecode.as_deref()), ("FAILED", Some("42501")));
}

#[tokio::test]
async fn refresh_is_atomic_and_does_not_block_readers() {
    let (_pg, db, gw, c) = setup().await;
    // A query that takes about a second to run.
    c.batch_execute(&format!(
        "CREATE DYNAMIC TABLE slow AS SELECT day, total FROM ({DAILY}) q, pg_sleep(0.4) s"
    ))
    .await
    .unwrap();
    let before = totals(&c, "slow").await;
    c.batch_execute("INSERT INTO orders VALUES (7000, '2024-01-02', 7)").await.unwrap();
    let reader = connect(&gw.url("postgres", &pg().password, &db)).await;
    let refresh = tokio::spawn(async move {
        let r = c.query_one("REFRESH DYNAMIC TABLE slow", &[]).await;
        (r, c)
    });
    let t0 = Instant::now();
    let mut seen_new = false;
    while t0.elapsed() < Duration::from_secs(5) && !seen_new {
        let t = Instant::now();
        let now = totals(&reader, "slow").await;
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "a read waited {:?} for the refresh",
            t.elapsed()
        );
        assert_eq!(now.len(), 3, "never empty, never partial: {now:?}");
        if now != before {
            seen_new = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (r, _c) = refresh.await.unwrap();
    assert_eq!(r.unwrap().get::<_, &str>("state"), "SUCCEEDED");
    assert!(seen_new || totals(&reader, "slow").await != before, "the new content arrived");
}

#[tokio::test]
async fn dynamic_tables_live_in_the_gateways_database() {
    let (pg, _db, gw, _c) = setup().await;
    let other = pg.fresh_db().await;
    let c = connect(&gw.url("postgres", &pg.password, &other)).await;
    let err = c.batch_execute("CREATE DYNAMIC TABLE x AS SELECT 1").await.unwrap_err();
    assert_eq!(code(&err), Some("0A000"));
    assert!(
        err.as_db_error().unwrap().message().contains("dynamic tables live in database"),
        "{err:?}"
    );
}

/// The gateway's service session is a superuser's. A query that tries to take that identity back
/// (`set_config('role', ...)`, as SET ROLE allows whenever the session user is a superuser) must
/// fail, at creation and at refresh.
#[tokio::test]
async fn a_query_cannot_take_the_service_accounts_identity() {
    let (pg, db, gw, c) = setup().await;
    let mallory = pg.fresh_role("pw").await;
    c.batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {mallory}"))
        .await
        .unwrap();
    let m = connect(&gw.url(&mallory, "pw", &db)).await;
    m.batch_execute(&format!(
        "CREATE FUNCTION escalate() RETURNS int LANGUAGE plpgsql AS $$
         BEGIN PERFORM set_config('role', 'postgres', true); EXECUTE 'ALTER ROLE {mallory} SUPERUSER'; RETURN 1; END $$"
    ))
    .await
    .unwrap();
    let err = m
        .batch_execute("CREATE DYNAMIC TABLE x AS SELECT escalate() AS one")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("42501"), "{err:?}");
    let err = m
        .batch_execute("CREATE DYNAMIC TABLE y AS SELECT set_config('session_authorization', 'postgres', true) AS s")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some("42501"), "{err:?}");

    // At refresh: a harmless function at creation, replaced by the escalating one afterwards.
    m.batch_execute("CREATE FUNCTION later() RETURNS int LANGUAGE sql AS 'SELECT 1'")
        .await
        .unwrap();
    m.batch_execute("CREATE DYNAMIC TABLE z AS SELECT later() AS one").await.unwrap();
    m.batch_execute("CREATE OR REPLACE FUNCTION later() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN escalate(); END $$")
        .await
        .unwrap();
    let err = m.query("REFRESH DYNAMIC TABLE z", &[]).await.unwrap_err();
    assert_eq!(code(&err), Some("42501"), "{err:?}");

    let su: bool = c
        .query_one_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&mallory])
        .await
        .unwrap();
    assert!(!su, "still not a superuser");
    // And the helper that runs user SQL is not callable by others.
    let err = m.query("SELECT dyngate.run_as_10('SELECT 1')", &[]).await.unwrap_err();
    assert!(matches!(code(&err), Some("42501") | Some("42883")), "{err:?}");
}

#[tokio::test]
async fn a_renamed_role_does_not_lend_its_identity_to_its_namesake() {
    let (_pg, db, gw, c) = setup().await;
    let name = unique("lender");
    c.batch_execute(&format!(
        "CREATE ROLE {name} LOGIN PASSWORD 'pw'; GRANT CREATE ON SCHEMA public TO {name}; GRANT SELECT ON orders TO {name}"
    ))
    .await
    .unwrap();
    let first = connect(&gw.url(&name, "pw", &db)).await;
    first
        .batch_execute("CREATE DYNAMIC TABLE who_first AS SELECT current_user::text AS who, count(*) AS n FROM orders")
        .await
        .unwrap();
    // Refreshed twice, so the gateway knows this role's runner by now.
    for _ in 0..2 {
        first.query_one("REFRESH DYNAMIC TABLE who_first", &[]).await.unwrap();
    }
    drop(first);
    c.batch_execute(&format!(
        "ALTER ROLE {name} RENAME TO {name}_old; CREATE ROLE {name} LOGIN PASSWORD 'pw';
         GRANT CREATE ON SCHEMA public TO {name}; GRANT SELECT ON orders TO {name}"
    ))
    .await
    .unwrap();
    let second = connect(&gw.url(&name, "pw", &db)).await;
    second
        .batch_execute("CREATE DYNAMIC TABLE who_second AS SELECT current_user::text AS who FROM orders LIMIT 1")
        .await
        .unwrap();
    let who: String = one(&c, "SELECT who FROM who_second").await;
    assert_eq!(who, name, "the new role's query ran as the new role");
}
