//! The refresh loop and the embedded scheduler: CONTINUOUS tables are kept within their freshness
//! and FULL tables fire on their cron slots, durably (schedules live in the catalog), never twice
//! for one slot even with two gateways on one catalog, never two refreshes of one table at once
//! (SKIPPED), and a gateway killed mid-refresh leaves nothing EXECUTING for ever.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio_postgres::Client;

/// Polls `sql` (one bool) until it is true; panics with `what` after `secs`.
async fn eventually(c: &Client, sql: &str, secs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if c.query_one(sql, &[]).await.map(|r| r.get::<_, bool>(0)).unwrap_or(false) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn setup(extra: &[&str]) -> (Pg, String, Dyngate, Client) {
    catalog_setup(extra, &[SRC]).await
}

#[tokio::test]
async fn continuous_and_full_tables_stay_fresh() {
    let (_pg, _db, _gw, c) = setup(&[]).await;
    c.batch_execute("CREATE DYNAMIC TABLE cont FRESHNESS = INTERVAL '1' SECOND AS SELECT sum(v) AS s FROM src")
        .await
        .unwrap();
    c.batch_execute("CREATE DYNAMIC TABLE full_t FRESHNESS = INTERVAL '2' SECOND REFRESH_MODE = FULL AS SELECT sum(v) AS s FROM src")
        .await
        .unwrap();
    c.batch_execute("INSERT INTO src VALUES (41)").await.unwrap();
    eventually(&c, "SELECT s = 42 FROM cont", 10, "the continuous table caught up").await;
    eventually(&c, "SELECT s = 42 FROM full_t", 10, "the full table caught up").await;
    let rows = c
        .query(
            "SELECT table_name, extract(epoch FROM schedule_time)::bigint FROM dyngate.refresh_history
              WHERE trigger = 'SCHEDULED' AND state = 'SUCCEEDED'",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for r in &rows {
        let (t, slot): (String, i64) = (r.get(0), r.get(1));
        if t == "full_t" {
            assert_eq!(slot % 2, 0, "FULL fires on its cron: every 2 seconds on the second");
        }
    }
    let met: bool = one(&c, "SELECT bool_and(freshness_met) FROM dyngate.dynamic_tables").await;
    assert!(met, "both within their freshness");
}

#[tokio::test]
async fn a_refresh_still_running_makes_the_next_slot_skipped() {
    let (_pg, _db, _gw, c) = setup(&[]).await;
    // Each refresh takes ~2.5 s; the table fires every second.
    c.batch_execute("CREATE DYNAMIC TABLE slow FRESHNESS = INTERVAL '1' SECOND REFRESH_MODE = FULL AS SELECT v FROM src, pg_sleep(2.5) s")
        .await
        .unwrap();
    eventually(
        &c,
        "SELECT count(*) > 0 FROM dyngate.refresh_history WHERE state = 'SKIPPED'",
        15,
        "a SKIPPED slot",
    )
    .await;
    let r = c
        .query_one(
            "SELECT error_message FROM dyngate.refresh_history WHERE state = 'SKIPPED' LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert!(r.get::<_, String>(0).contains("still running"));
    // Never two at once: no two SUCCEEDED refreshes overlap in time.
    let overlaps: i64 = one(
        &c,
        "SELECT count(*) FROM dyngate.refresh a JOIN dyngate.refresh b ON a.id < b.id
              WHERE a.state = 'SUCCEEDED' AND b.state = 'SUCCEEDED' AND a.table_name = 'slow' AND b.table_name = 'slow'
                AND a.trigger = 'SCHEDULED' AND b.trigger = 'SCHEDULED'
                AND tstzrange(a.data_time, a.ended_at) && tstzrange(b.data_time, b.ended_at)",
    )
    .await;
    assert_eq!(overlaps, 0);
}

#[tokio::test]
async fn two_gateways_on_one_catalog_fire_each_slot_once() {
    let (pg, db, _a, c) = setup(&[]).await;
    let _b = Dyngate::for_db(&pg, &db, &[]);
    c.batch_execute("CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '1' SECOND REFRESH_MODE = FULL AS SELECT count(*) AS n FROM src")
        .await
        .unwrap();
    eventually(
        &c,
        "SELECT count(*) >= 5 FROM dyngate.refresh_history WHERE trigger = 'SCHEDULED'",
        15,
        "five scheduled refreshes",
    )
    .await;
    let dup: i64 = one(
        &c,
        "SELECT count(*) FROM (SELECT schedule_time FROM dyngate.refresh_history WHERE trigger = 'SCHEDULED'
                                    GROUP BY schedule_time HAVING count(*) > 1) d",
    )
    .await;
    assert_eq!(dup, 0, "no slot fired twice");
}

#[tokio::test]
async fn a_killed_gateway_leaves_nothing_executing_and_schedules_resume() {
    let (pg, db, gw, c) = setup(&[]).await;
    c.batch_execute("CREATE DYNAMIC TABLE slow FRESHNESS = INTERVAL '2' SECOND REFRESH_MODE = FULL AS SELECT v FROM src, pg_sleep(3) s")
        .await
        .unwrap();
    let direct = connect(&pg.url_for("postgres", &pg.password, &db)).await;
    eventually(
        &direct,
        "SELECT count(*) > 0 FROM dyngate.refresh_history WHERE state = 'EXECUTING'",
        10,
        "a refresh running",
    )
    .await;
    drop(c);
    gw.signal(libc::SIGKILL);
    drop(gw);
    // A refresh is one statement: PostgreSQL would finish it (and record it) on its own. As when
    // the gateway's machine goes down, its connections go too.
    direct
        .batch_execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'dyngate:%'")
        .await
        .unwrap();
    let _gw = Dyngate::for_db(&pg, &db, &[]);
    eventually(
        &direct,
        "SELECT count(*) > 0 FROM dyngate.refresh_history WHERE state = 'CANCELLED'",
        15,
        "the orphan is CANCELLED",
    )
    .await;
    eventually(
        &direct,
        "SELECT count(*) > 0 FROM dyngate.refresh_history WHERE state = 'SUCCEEDED' AND trigger = 'SCHEDULED'",
        20,
        "schedules resumed after the restart",
    )
    .await;
    let dup: i64 = one(
        &direct,
        "SELECT count(*) FROM (SELECT schedule_time FROM dyngate.refresh_history WHERE trigger = 'SCHEDULED' AND state <> 'SKIPPED'
                                    GROUP BY schedule_time HAVING count(*) > 1) d",
    )
    .await;
    assert_eq!(dup, 0, "no slot ran twice across the restart");
}
