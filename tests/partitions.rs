//! Partitioned dynamic tables and schedule time zones: `REFRESH ... PARTITION (...)` replaces
//! only the partition named; a refresh for a schedule time replaces the partition of the schedule
//! time minus the freshness, formatted with `partition.fields.<col>.date-formatter` in the table's
//! time zone (the session's, or `schedule.time-zone`); bad specs and options are refused with
//! 22023 / 42P16 and leave nothing behind.

mod common;

use common::*;
use serde_json::Value;
use tokio_postgres::Client;

/// Ten orders a day, each of amount 1.
async fn setup() -> (Dyngate, Client) {
    let (_pg, _db, gw, c) = catalog_setup(&[], &[&orders(30), "UPDATE orders SET amount = 1"]).await;
    (gw, c)
}

const DAILY: &str = "SELECT to_char(day, 'YYYY-MM-DD') AS ds, sum(amount) AS total FROM orders GROUP BY 1";

async fn totals(c: &Client, table: &str) -> Vec<(String, String)> {
    c.query(&format!("SELECT ds, total::text FROM {table} ORDER BY ds"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

async fn last_partition(c: &Client, table: &str) -> Option<String> {
    c.query_one_scalar(
        "SELECT partition_spec::text FROM dyngate.refresh_history WHERE table_name = $1 ORDER BY started_at DESC NULLS LAST LIMIT 1",
        &[&table],
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn partitions_refresh_alone() {
    let (gw, c) = setup().await;
    c.batch_execute(&format!(
        "CREATE DYNAMIC TABLE daily PARTITIONED BY (ds) WITH ('partition.fields.ds.date-formatter' = 'yyyy-MM-dd',
           'schedule.time-zone' = 'UTC') FRESHNESS = INTERVAL '1' DAY AS {DAILY}"
    ))
    .await
    .unwrap();
    let initial = pairs(&[("2024-01-01", "10"), ("2024-01-02", "10"), ("2024-01-03", "10")]);
    assert_eq!(totals(&c, "daily").await, initial);

    // Every day changes; a manual refresh of one partition takes only that day's change.
    c.batch_execute("UPDATE orders SET amount = 2").await.unwrap();
    let r = c
        .query_one("REFRESH DYNAMIC TABLE daily PARTITION (ds = '2024-01-02')", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, &str>(1), "SUCCEEDED");
    assert_eq!(r.get::<_, i64>(2), 1, "one row written");
    assert_eq!(
        totals(&c, "daily").await,
        pairs(&[("2024-01-01", "10"), ("2024-01-02", "20"), ("2024-01-03", "10")])
    );
    assert_eq!(last_partition(&c, "daily").await.as_deref(), Some(r#"{"ds": "2024-01-02"}"#));

    // A scheduler's run for 2024-01-04 00:00 refreshes the day before (scheduleTime - freshness).
    let body = r#"{"tables":["daily"],"scheduleTime":"2024-01-04 00:00:00","configuration":{},"wait":true}"#;
    let (status, text) = http("POST", &gw.http("/v3/dynamic-tables/refresh"), &[], body).unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        totals(&c, "daily").await,
        pairs(&[("2024-01-01", "10"), ("2024-01-02", "20"), ("2024-01-03", "20")])
    );
    assert_eq!(last_partition(&c, "daily").await.as_deref(), Some(r#"{"ds": "2024-01-03"}"#));

    // A partition that has no rows any more is emptied; a refresh without PARTITION does all.
    c.batch_execute("DELETE FROM orders WHERE day = '2024-01-01'").await.unwrap();
    c.query_one("ALTER DYNAMIC TABLE daily REFRESH PARTITION (ds = '2024-01-01')", &[])
        .await
        .unwrap();
    assert_eq!(totals(&c, "daily").await, pairs(&[("2024-01-02", "20"), ("2024-01-03", "20")]));
    c.batch_execute("INSERT INTO orders VALUES (100, '2024-01-05', 7)").await.unwrap();
    c.query_one("REFRESH DYNAMIC TABLE daily", &[]).await.unwrap();
    assert_eq!(
        totals(&c, "daily").await,
        pairs(&[("2024-01-02", "20"), ("2024-01-03", "20"), ("2024-01-05", "7")])
    );

    let shown: String = one(&c, "SHOW CREATE DYNAMIC TABLE daily").await;
    assert!(shown.contains("PARTITIONED BY (\"ds\")"), "{shown}");
}

#[tokio::test]
async fn schedule_time_zones() {
    let (gw, c) = setup().await;
    // The session's time zone is the default, as Flink uses the session's.
    c.batch_execute("SET TimeZone = 'America/New_York'").await.unwrap();
    c.batch_execute(&format!(
        "CREATE DYNAMIC TABLE ny PARTITIONED BY (ds) WITH ('partition.fields.ds.date-formatter' = 'yyyy-MM-dd')
           FRESHNESS = INTERVAL '1' DAY AS {DAILY}"
    ))
    .await
    .unwrap();
    c.batch_execute(&format!(
        "CREATE DYNAMIC TABLE kolkata PARTITIONED BY (ds) WITH ('partition.fields.ds.date-formatter' = 'yyyy-MM-dd',
           'schedule.time-zone' = 'Asia/Kolkata') FRESHNESS = INTERVAL '1' DAY AS {DAILY}"
    ))
    .await
    .unwrap();
    let zones: Vec<(String, String)> = c
        .query("SELECT table_name, time_zone FROM dyngate.dynamic_tables ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(zones, pairs(&[("kolkata", "Asia/Kolkata"), ("ny", "America/New_York")]));

    // 2024-01-03 20:00 UTC minus one day is 2024-01-02 20:00 UTC: 2024-01-03 01:30 in Kolkata,
    // 2024-01-02 15:00 in New York.
    let body = r#"{"tables":["ny","kolkata"],"scheduleTime":"2024-01-03T20:00:00Z","configuration":{},"wait":true}"#;
    let (status, text) = http("POST", &gw.http("/v3/dynamic-tables/refresh"), &[], body).unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(last_partition(&c, "kolkata").await.as_deref(), Some(r#"{"ds": "2024-01-03"}"#));
    assert_eq!(last_partition(&c, "ny").await.as_deref(), Some(r#"{"ds": "2024-01-02"}"#));

    // A time without a zone (DolphinScheduler's ${system.datetime}, or yyyy-MM-dd HH:mm:ss) is
    // the wall clock of each table's own zone: midnight there, the day before is the partition.
    for when in ["20240105000000", "2024-01-05 00:00:00"] {
        let body = format!(r#"{{"tables":"ny,kolkata","scheduleTime":"{when}","configuration":{{}},"wait":true}}"#);
        let (status, text) = http("POST", &gw.http("/v3/dynamic-tables/refresh"), &[], &body).unwrap();
        assert_eq!(status, 200, "{text}");
        assert_eq!(last_partition(&c, "kolkata").await.as_deref(), Some(r#"{"ds": "2024-01-04"}"#));
        assert_eq!(last_partition(&c, "ny").await.as_deref(), Some(r#"{"ds": "2024-01-04"}"#));
    }
    let recorded: Vec<(String, String)> = c
        .query(
            "SELECT table_name, to_char(schedule_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')
               FROM dyngate.refresh_history WHERE trigger = 'API' ORDER BY schedule_time DESC, table_name LIMIT 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        recorded,
        pairs(&[("ny", "2024-01-05 05:00"), ("kolkata", "2024-01-04 18:30")]),
        "the same run twice is one refresh per table, at the instant of its zone's midnight"
    );

    // ALTER ... SET moves the schedule to another zone; a zone PostgreSQL does not know, or a
    // formatter for a column that is not a partition column, is refused and changes nothing.
    c.batch_execute("ALTER DYNAMIC TABLE ny SET ('schedule.time-zone' = 'Asia/Tokyo')")
        .await
        .unwrap();
    for bad in [
        "ALTER DYNAMIC TABLE ny SET ('schedule.time-zone' = 'Nowhere/Special')",
        "ALTER DYNAMIC TABLE ny SET ('partition.fields.total.date-formatter' = 'yyyy')",
    ] {
        let e = c.batch_execute(bad).await.unwrap_err();
        assert_eq!(code(&e), Some("22023"), "{bad}: {e:?}");
    }
    let tz: String = one(&c, "SELECT time_zone FROM dyngate.dynamic_tables WHERE table_name = 'ny'").await;
    assert_eq!(tz, "Asia/Tokyo");
}

#[tokio::test]
async fn bad_partitions_and_options_are_refused() {
    let (gw, c) = setup().await;
    c.batch_execute(&format!(
        "CREATE DYNAMIC TABLE daily PARTITIONED BY (ds) WITH ('partition.fields.ds.date-formatter' = 'yyyy-MM-dd')
           FRESHNESS = INTERVAL '1' DAY AS {DAILY}"
    ))
    .await
    .unwrap();
    c.batch_execute(&format!("CREATE DYNAMIC TABLE plain FRESHNESS = INTERVAL '1' DAY AS {DAILY}"))
        .await
        .unwrap();
    let refused = [
        ("REFRESH DYNAMIC TABLE daily PARTITION (day = '2024-01-01')", "22023"),
        ("REFRESH DYNAMIC TABLE daily PARTITION (ds = 'a', ds = 'b')", "42601"),
        ("REFRESH DYNAMIC TABLE plain PARTITION (ds = '2024-01-01')", "22023"),
        (
            "CREATE DYNAMIC TABLE d2 PARTITIONED BY (ds) WITH ('partition.fields.total.date-formatter' = 'yyyy') FRESHNESS = INTERVAL '1' DAY AS SELECT 'x' AS ds, 1 AS total",
            "22023",
        ),
        (
            "CREATE DYNAMIC TABLE d2 PARTITIONED BY (ds) WITH ('partition.fields.ds.date-formatter' = 'EEE yyyy') FRESHNESS = INTERVAL '1' DAY AS SELECT 'x' AS ds",
            "22023",
        ),
        (
            "CREATE DYNAMIC TABLE d2 PARTITIONED BY (day) WITH ('partition.fields.day.date-formatter' = 'yyyy-MM-dd') FRESHNESS = INTERVAL '1' DAY AS SELECT day FROM orders",
            "42P16",
        ),
        (
            "CREATE DYNAMIC TABLE d2 PARTITIONED BY (region) FRESHNESS = INTERVAL '1' DAY AS SELECT day FROM orders",
            "42P16",
        ),
        (
            "CREATE DYNAMIC TABLE d2 WITH ('schedule.time-zone' = 'Mars/Olympus') FRESHNESS = INTERVAL '1' DAY AS SELECT day FROM orders",
            "22023",
        ),
    ];
    for (sql, want) in refused {
        let e = c.batch_execute(sql).await.unwrap_err();
        assert_eq!(code(&e), Some(want), "{sql}: {e:?}");
    }
    let left: i64 = one(&c, "SELECT count(*) FROM pg_class WHERE relname = 'd2'").await;
    assert_eq!(left, 0, "no table left behind");
    let history: Vec<String> = c
        .query_scalar("SELECT trigger FROM dyngate.refresh_history WHERE table_name = 'daily'", &[])
        .await
        .unwrap();
    assert_eq!(history, ["CREATION"], "refused refreshes are not recorded");

    // Over HTTP, an unknown table in the same call is a 404 and refreshes nothing.
    let body = r#"{"tables":["daily","nope"],"scheduleTime":"2024-01-04 00:00:00","configuration":{},"wait":true}"#;
    let (status, text) = http("POST", &gw.http("/v3/dynamic-tables/refresh"), &[], body).unwrap();
    assert_eq!(status, 404, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["error"].as_str().unwrap_or_default().contains("nope"), "{v}");
}
