//! ALTER DYNAMIC TABLE: SUSPEND stops the refreshes and RESUME restarts them (suspending twice is
//! an error, as in Flink), SET FRESHNESS re-derives the mode and the schedule without recreating
//! the table (which Flink cannot), SET / RESET change options; failed changes change nothing.

mod common;

use std::time::Duration;

use common::*;
use tokio_postgres::Client;

async fn scheduled(c: &Client) -> i64 {
    one(
        c,
        "SELECT count(*) FROM dyngate.refresh_history WHERE trigger = 'SCHEDULED' AND table_name = 't'",
    )
    .await
}

async fn status(c: &Client) -> (String, String, String) {
    let r = c
        .query_one(
            "SELECT status, refresh_mode, freshness FROM dyngate.dynamic_tables WHERE table_name = 't'",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

#[tokio::test]
async fn suspend_resume_and_set_freshness() {
    let (_pg, _db, _gw, c) = catalog_setup(
        &[],
        &[
            SRC,
            "CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '1' SECOND AS SELECT sum(v) AS s FROM src",
        ],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(scheduled(&c).await > 0, "refreshing while active");

    c.batch_execute("ALTER DYNAMIC TABLE t SUSPEND").await.unwrap();
    assert_eq!(status(&c).await.0, "SUSPENDED");
    tokio::time::sleep(Duration::from_millis(500)).await; // a refresh already started may finish
    let before = scheduled(&c).await;
    c.batch_execute("INSERT INTO src VALUES (41)").await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(scheduled(&c).await, before, "no refresh while suspended");
    assert_eq!(one::<i32>(&c, "SELECT s::int FROM t").await, 1);
    let err = c.batch_execute("ALTER DYNAMIC TABLE t SUSPEND").await.unwrap_err();
    assert_eq!(code(&err), Some("55000"));
    assert!(err.as_db_error().unwrap().message().contains("already suspended"));

    c.batch_execute("ALTER DYNAMIC TABLE t RESUME").await.unwrap();
    assert_eq!(status(&c).await.0, "ACTIVATED");
    let mut caught_up = false;
    for _ in 0..50 {
        if one::<i32>(&c, "SELECT s::int FROM t").await == 42 {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(caught_up, "refreshing again after RESUME");
    // RESUME of an active table is not an error; its options become the table's refresh
    // options (the configuration its scheduler sends), shown by DESCRIBE.
    c.batch_execute("ALTER DYNAMIC TABLE t RESUME WITH ('k' = 'v')").await.unwrap();
    let kept: String = one(&c, "SELECT refresh_options::text FROM dyngate.dynamic_table").await;
    assert_eq!(kept, r#"{"k": "v"}"#);
    let described = c.simple_query("DESCRIBE DYNAMIC TABLE t").await.unwrap();
    assert!(
        described.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r)
            if r.get(0) == Some("refresh_options") && r.get(1) == Some(r#"{"k":"v"}"#))),
        "DESCRIBE shows the refresh options"
    );
    assert_eq!(status(&c).await.0, "ACTIVATED");

    // SET FRESHNESS re-derives the mode and keeps the table and its content.
    c.batch_execute("ALTER DYNAMIC TABLE t SET FRESHNESS = INTERVAL '1' HOUR")
        .await
        .unwrap();
    assert_eq!(status(&c).await, ("ACTIVATED".into(), "FULL".into(), "1 HOUR".into()));
    assert_eq!(one::<i32>(&c, "SELECT s::int FROM t").await, 42);
    let err = c
        .batch_execute("ALTER DYNAMIC TABLE t SET FRESHNESS = INTERVAL '45' MINUTE")
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        Some("22023"),
        "45 minutes is FULL mode, whose cron needs a factor of 60"
    );
    assert_eq!(status(&c).await.2, "1 HOUR", "the failed change changed nothing");
    c.batch_execute("ALTER DYNAMIC TABLE t SET FRESHNESS = INTERVAL '5' SECOND")
        .await
        .unwrap();
    assert_eq!(status(&c).await, ("ACTIVATED".into(), "CONTINUOUS".into(), "5 SECOND".into()));
}

#[tokio::test]
async fn options_and_permissions() {
    let (pg, db, gw, c) = catalog_setup(&[], &["CREATE DYNAMIC TABLE t WITH ('a' = '1') AS SELECT 1 AS one"]).await;
    c.batch_execute("ALTER DYNAMIC TABLE t SET ('b' = '2', 'a' = '3')").await.unwrap();
    c.batch_execute("ALTER DYNAMIC TABLE t RESET ('b')").await.unwrap();
    let opts: String = one(&c, "SELECT options::text FROM dyngate.dynamic_tables WHERE table_name = 't'").await;
    assert_eq!(opts, r#"{"a": "3"}"#);
    let err = c.batch_execute("ALTER DYNAMIC TABLE t SET ('engine' = 'flink')").await.unwrap_err();
    assert_eq!(code(&err), Some("0A000"));
    let err = c.batch_execute("ALTER DYNAMIC TABLE nope SUSPEND").await.unwrap_err();
    assert_eq!(code(&err), Some("42P01"));
    let err = c.batch_execute("BEGIN; ALTER DYNAMIC TABLE t SUSPEND").await;
    assert!(err.is_err());
    c.batch_execute("ROLLBACK").await.unwrap();

    let bob = pg.fresh_role("pw").await;
    c.batch_execute(&format!("GRANT SELECT ON t TO {bob}")).await.unwrap();
    let b = connect(&gw.url(&bob, "pw", &db)).await;
    let err = b.batch_execute("ALTER DYNAMIC TABLE t SUSPEND").await.unwrap_err();
    assert_eq!(code(&err), Some("42501"), "reading is not operating");
    assert_eq!(one::<String>(&c, "SELECT status FROM dyngate.dynamic_tables").await, "ACTIVATED");
}
