//! FULL tables scheduled by DolphinScheduler, through the gateway, against a FAKE of
//! DolphinScheduler's HTTP API (`common::dolphin`: its Java server cannot be had on these
//! machines; the fake enforces its order rules and error codes and runs the HTTP task as a
//! worker does). For 3.2 and 3.3: CREATE registers workflow and schedule; a fired run refreshes
//! the table once per schedule time and is recorded as SCHEDULED with the instance id; SUSPEND /
//! RESUME / SET FRESHNESS / moves / DROP follow; reconciliation recreates a deleted schedule; an
//! unreachable DolphinScheduler leaves nothing behind.

mod common;

use std::time::{Duration, Instant};

use common::dolphin::{FakeDolphin, Fire, Version, both};
use common::{exec, one};

const TOKEN: &str = "ds-t0ken-secret";

fn gateway(pg: &common::Pg, db: &str, fake_url: &str, v: Version, extra: &[&str]) -> common::Dyngate {
    let version = match v {
        Version::V3_2 => "3.2",
        Version::V3_3 => "3.3",
    };
    let mut args = vec![
        "--dolphinscheduler-url",
        fake_url,
        "--dolphinscheduler-token",
        TOKEN,
        "--dolphinscheduler-version",
        version,
        "--http-token",
        "s3cret-token",
    ];
    args.extend_from_slice(extra);
    common::Dyngate::for_db(pg, db, &args)
}

/// The table's workflow code and schedule id, from the catalog.
async fn handle(c: &tokio_postgres::Client, table: &str) -> Option<(i64, i64)> {
    let r = c
        .query_one(
            "SELECT (scheduler_handle ->> 'workflowCode')::bigint, (scheduler_handle ->> 'scheduleId')::bigint
               FROM dyngate.dynamic_table WHERE table_name = $1",
            &[&table],
        )
        .await
        .unwrap();
    Some((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
}

both!(
    full_tables_on_dolphinscheduler,
    unreachable_during_create_leaves_nothing,
    reconciliation_recreates_a_deleted_schedule
);

async fn full_tables_on_dolphinscheduler(v: Version) {
    let fake = FakeDolphin::start(v, TOKEN).await;
    let pg = common::pg();
    let db = pg.fresh_db().await;
    let gw = gateway(&pg, &db, &fake.url(), v, &[]);
    let c = common::connect(&gw.url("postgres", &pg.password, &db)).await;
    exec(
        &c,
        &[
            "CREATE TABLE src (v int NOT NULL); INSERT INTO src VALUES (1)",
            "CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '5' MINUTE REFRESH_MODE = FULL
               WITH ('scheduler' = 'dolphinscheduler', 'schedule.time-zone' = 'Europe/Berlin')
               AS SELECT sum(v)::int AS s FROM src",
        ],
    )
    .await;
    assert_eq!(
        one::<String>(&c, "SELECT scheduler FROM dyngate.dynamic_table").await,
        "dolphinscheduler"
    );
    let (workflow, schedule) = handle(&c, "t").await.expect("a workflow and a schedule");
    let st = fake.state();
    let w = st.workflow(workflow).expect("the workflow");
    assert!(w.online, "released");
    let s = st.schedule_of(workflow).expect("its schedule");
    assert_eq!(
        (s.id, s.online, s.crontab.as_str(), s.timezone_id.as_str()),
        (schedule, true, "0 0/5 * * * ? *", "Europe/Berlin")
    );
    let described = c.simple_query("DESCRIBE DYNAMIC TABLE t").await.unwrap();
    assert!(
        described.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r)
            if r.get(0) == Some("scheduler_handle") && r.get(1).is_some_and(|v| v.contains("DolphinScheduler workflow")))),
        "DESCRIBE shows the workflow"
    );

    // DolphinScheduler fires 10:05 Berlin time: the table refreshes, SCHEDULED, with the
    // instance id; a retried task (the same schedule time) refreshes nothing more.
    exec(&c, &["INSERT INTO src VALUES (41)"]).await;
    let fired = fake.fire(Fire::Schedule(schedule), "2026-11-24 10:05:00").await.unwrap();
    assert!(fired.success, "{fired:?}");
    let refreshed = async || {
        c.query_opt(
            "SELECT scheduler_run_id, to_char(schedule_time AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM dyngate.refresh_history
              WHERE trigger = 'SCHEDULED' AND state = 'SUCCEEDED'",
            &[],
        )
        .await
        .unwrap()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (run_id, at) = loop {
        if let Some(r) = refreshed().await {
            break r;
        }
        assert!(Instant::now() < deadline, "no scheduled refresh recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((run_id, at.as_str()), (fired.instance_id.to_string(), "2026-11-24 09:05"));
    assert_eq!(one::<i32>(&c, "SELECT s FROM t").await, 42);
    let again = fake.fire(Fire::Schedule(schedule), "2026-11-24 10:05:00").await.unwrap();
    assert!(again.success, "a retry is answered 200: {again:?}");
    assert_eq!(
        one::<i64>(&c, "SELECT count(*) FROM dyngate.refresh_history WHERE trigger = 'SCHEDULED'").await,
        1
    );

    // SUSPEND / RESUME: the schedule goes offline and online.
    exec(&c, &["ALTER DYNAMIC TABLE t SUSPEND"]).await;
    assert!(!fake.state().schedule_of(workflow).unwrap().online);
    assert!(
        fake.fire(Fire::Schedule(schedule), "2026-11-24 10:10:00").await.is_err(),
        "an offline schedule does not fire"
    );
    // RESUME WITH: the options go into the task's configuration before it runs again.
    exec(&c, &["ALTER DYNAMIC TABLE t RESUME WITH ('team' = 'sales')"]).await;
    assert!(fake.state().schedule_of(workflow).unwrap().online);
    let fired = fake.fire(Fire::Schedule(schedule), "2026-11-24 10:15:00").await.unwrap();
    assert!(fired.success, "{fired:?}");
    let sent: serde_json::Value = serde_json::from_str(&fired.sent_body).unwrap();
    let configuration: serde_json::Value = serde_json::from_str(sent["configuration"].as_str().unwrap()).unwrap();
    assert_eq!(configuration["team"], "sales", "{configuration}");

    // SET FRESHNESS: a new cron, still online.
    exec(&c, &["ALTER DYNAMIC TABLE t SET FRESHNESS = INTERVAL '1' HOUR"]).await;
    let s = fake.state().schedule_of(workflow).cloned().unwrap();
    assert_eq!((s.crontab.as_str(), s.online), ("0 0 0/1 * * ? *", true));

    // Moved to the embedded scheduler and back: the workflow goes, a new one comes.
    exec(&c, &["ALTER DYNAMIC TABLE t SET ('scheduler' = 'embedded')"]).await;
    assert!(fake.state().workflows.is_empty(), "the workflow is gone");
    assert_eq!(handle(&c, "t").await, None);
    exec(&c, &["ALTER DYNAMIC TABLE t SET ('scheduler' = 'dolphinscheduler')"]).await;
    let (moved, _) = handle(&c, "t").await.expect("a new workflow");
    assert!(fake.state().workflow(moved).is_some_and(|w| w.online));

    // Quartz has seconds: a FULL table every 10 s can be on DolphinScheduler (unlike Airflow).
    exec(&c, &["ALTER DYNAMIC TABLE t SET FRESHNESS = INTERVAL '10' SECOND"]).await;
    assert_eq!(fake.state().schedule_of(moved).unwrap().crontab, "0/10 * * * * ? *");
    // Becoming CONTINUOUS takes a table off DolphinScheduler; DROP removes a FULL one's workflow.
    exec(
        &c,
        &[
            "CREATE DYNAMIC TABLE d FRESHNESS = INTERVAL '1' DAY WITH ('scheduler' = 'dolphinscheduler') AS SELECT v FROM src",
            "CREATE DYNAMIC TABLE e FRESHNESS = INTERVAL '1' HOUR WITH ('scheduler' = 'dolphinscheduler') AS SELECT v FROM src",
        ],
    )
    .await;
    assert_eq!(fake.state().workflows.len(), 3);
    exec(&c, &["ALTER DYNAMIC TABLE e SET FRESHNESS = INTERVAL '1' MINUTE"]).await;
    assert_eq!(
        one::<String>(&c, "SELECT refresh_mode FROM dyngate.dynamic_tables WHERE table_name = 'e'").await,
        "CONTINUOUS"
    );
    assert_eq!(fake.state().workflows.len(), 2);
    exec(&c, &["DROP DYNAMIC TABLE d", "DROP DYNAMIC TABLE t"]).await;
    let st = fake.state();
    assert!(st.workflows.is_empty() && st.schedules.is_empty(), "{st:?}");
    assert_eq!(one::<i64>(&c, "SELECT count(*) FROM dyngate.scheduler_cleanup").await, 0);
    assert!(!gw.log().contains(TOKEN), "the token is not logged");
}

async fn unreachable_during_create_leaves_nothing(v: Version) {
    let fake = FakeDolphin::start(v, TOKEN).await;
    let pg = common::pg();
    let db = pg.fresh_db().await;
    let gw = gateway(&pg, &db, &fake.url(), v, &["--scheduler", "dolphinscheduler"]);
    let c = common::connect(&gw.url("postgres", &pg.password, &db)).await;
    exec(&c, &["CREATE TABLE src (v int NOT NULL)"]).await;
    fake.down().await;
    let e = c
        .batch_execute("CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '1' HOUR AS SELECT v FROM src")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), Some("58000"), "{e:?}");
    assert!(common::message(&e).contains("DolphinScheduler"), "{e:?}");
    assert!(!common::message(&e).contains(TOKEN), "{e:?}");
    assert_eq!(one::<i64>(&c, "SELECT count(*) FROM pg_class WHERE relname = 't'").await, 0);
    assert_eq!(one::<i64>(&c, "SELECT count(*) FROM dyngate.dynamic_tables").await, 0);
    // Failing half-way (the schedule refused): what was created is removed again.
    fake.up().await;
    fake.fail("POST", "/schedules", 500, None);
    let e = c
        .batch_execute("CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '1' HOUR AS SELECT v FROM src")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), Some("58000"), "{e:?}");
    assert_eq!(one::<i64>(&c, "SELECT count(*) FROM dyngate.dynamic_tables").await, 0);
    let st = fake.state();
    assert!(st.workflows.is_empty() && st.schedules.is_empty(), "nothing left: {st:?}");
    fake.clear_failures();
    exec(&c, &["CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '1' HOUR AS SELECT v FROM src"]).await;
    assert_eq!(fake.state().workflows.len(), 1);
}

async fn reconciliation_recreates_a_deleted_schedule(v: Version) {
    let fake = FakeDolphin::start(v, TOKEN).await;
    let pg = common::pg();
    let db = pg.fresh_db().await;
    let gw = gateway(
        &pg,
        &db,
        &fake.url(),
        v,
        &["--scheduler", "dolphinscheduler", "--scheduler-reconcile-interval", "1s"],
    );
    let c = common::connect(&gw.url("postgres", &pg.password, &db)).await;
    exec(
        &c,
        &[
            "CREATE TABLE src (v int NOT NULL)",
            "CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '1' HOUR AS SELECT v FROM src",
        ],
    )
    .await;
    let (workflow, _) = handle(&c, "t").await.unwrap();
    // Deleted behind dyngate's back (schedule and workflow): created again, and the catalog
    // follows the new workflow.
    fake.tamper(|s| {
        s.schedules.clear();
        s.workflows.clear();
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = handle(&c, "t").await;
        if let Some((w, id)) = now
            && w != workflow
        {
            let st = fake.state();
            assert!(st.workflow(w).is_some_and(|w| w.online));
            assert!(st.schedules.iter().any(|s| s.id == id && s.online));
            break;
        }
        assert!(Instant::now() < deadline, "the workflow was not created again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A workflow of this catalog that no catalog row knows (here: the row deleted by hand) is a
    // stray, and removed.
    c.batch_execute("DELETE FROM dyngate.dynamic_table").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fake.state().workflows.is_empty() {
        assert!(Instant::now() < deadline, "the stray workflow was not removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
