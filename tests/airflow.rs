//! Airflow as the scheduler of FULL tables, against a real Apache Airflow 3 (started by
//! `scripts/test` with `scripts/airflow-temp`). First the plug-in's parts with a stand-in refresh
//! endpoint that records the calls: a DAG file written from the template shows up in Airflow, a
//! run of it calls the endpoint with the table, the schedule time and the run's id, pausing and
//! unpausing work, a rewritten file changes the schedule, deleting file and DAG removes it. Then
//! through the gateway: CREATE registers, Airflow fires and the gateway refreshes, SUSPEND /
//! RESUME / SET FRESHNESS / DROP follow, and an unreachable Airflow leaves nothing behind.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{exec, one};
use dyngate::http_client::Endpoint;
use dyngate::scheduler::airflow::{self, Api, ApiError, DagSpec};
use serde_json::Value;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests with scripts/test, which starts Airflow"))
}

fn api(password: &str) -> Api {
    let ep = Endpoint::parse("Airflow", &env("DYNGATE_TEST_AIRFLOW_URL"), Duration::from_secs(30)).unwrap();
    Api::new(ep, api_version(), &env("DYNGATE_TEST_AIRFLOW_USER"), password)
}

/// The REST API of the Airflow under test (`scripts/airflow-temp` says which).
fn api_version() -> airflow::ApiVersion {
    std::env::var("DYNGATE_TEST_AIRFLOW_API")
        .ok()
        .and_then(|v| airflow::ApiVersion::parse(&v))
        .unwrap_or(airflow::ApiVersion::V2)
}

/// The DAG's cron as the API shows it (`timetable_summary` on /api/v2, `schedule_interval` on
/// Airflow 2's /api/v1).
fn cron_of(dag: &Value) -> Value {
    match api_version() {
        airflow::ApiVersion::V2 => dag["timetable_summary"].clone(),
        airflow::ApiVersion::V1 => dag["schedule_interval"]["value"].clone(),
    }
}

/// The field naming when the DAG's next run starts. Not the logical date: on Airflow 2 a cron
/// DAG's logical date is the start of its data interval, one tick before the run.
fn next_field() -> &'static str {
    match api_version() {
        airflow::ApiVersion::V2 => "next_dagrun_run_after",
        airflow::ApiVersion::V1 => "next_dagrun_create_after",
    }
}

/// A stand-in for the refresh endpoint: records each call's body and answers like dyngate.
async fn recorder() -> (String, Arc<Mutex<Vec<Value>>>) {
    let calls: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/v3/dynamic-tables/refresh",
        axum::routing::post(move |body: axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(body.0);
                axum::Json(serde_json::json!({"jobId": "dyngate-test", "clusterInfo": {}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v3/dynamic-tables/refresh"), calls)
}

async fn until<T>(what: &str, secs: u64, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Now, as ISO 8601 with an offset (from the test PostgreSQL's clock).
async fn now_iso() -> String {
    let pg = common::pg();
    pg.admin()
        .await
        .query_one_scalar(
            "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')",
            &[],
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn a_dag_file_in_real_airflow() {
    let api = api(&env("DYNGATE_TEST_AIRFLOW_PASSWORD"));
    let dags = std::path::PathBuf::from(env("DYNGATE_TEST_AIRFLOW_DAGS"));
    let (url, calls) = recorder().await;
    let table = format!("{}.\"we'ird \\ \"\"\" ✓\"", common::unique("s"));
    let spec = DagSpec {
        dag_id: airflow::dag_id("test", "test", "s", &table, 1),
        table: table.clone(),
        // Once a year: only the manual run below fires while the test runs.
        cron: "0 0 1 1 *".into(),
        timezone: "Europe/Berlin".into(),
        // The creation time: with an earlier one, Airflow would fire the last tick at once.
        start_date: now_iso().await,
        url,
        token_conn_id: None,
        configuration: [("from".to_string(), "test".to_string())].into(),
        paused_on_create: false,
        retries: 0,
        retry_delay_s: 1,
        timeout_s: 30,
        tags: vec!["dyngate".into()],
    };
    let id = spec.dag_id.clone();
    let file = airflow::write_dag_file(&dags, &spec).unwrap();

    let dag = until("the DAG to show up", 60, async || api.dag(&id).await.unwrap()).await;
    assert_eq!(dag["is_paused"], false, "{dag}");
    assert_eq!(cron_of(&dag), "0 0 1 1 *", "{dag}");
    let imports = api.call("GET", "/importErrors", None).await.unwrap().json().unwrap();
    assert_eq!(imports["total_entries"], 0, "{imports}");

    // A run calls the endpoint with the table, a schedule time and the run's id.
    // Airflow 3 wants logical_date present (null: now); Airflow 2 wants it left out for that.
    let mut run = serde_json::json!({"dag_run_id": "dyngate-test-run", "conf": {"extra": "yes"}});
    if api_version() == airflow::ApiVersion::V2 {
        run["logical_date"] = Value::Null;
    }
    let r = api.call("POST", &format!("/dags/{id}/dagRuns"), Some(&run)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.snippet());
    let call = until("the run's call to the refresh endpoint", 90, async || {
        calls.lock().unwrap().first().cloned()
    })
    .await;
    assert_eq!(calls.lock().unwrap().len(), 1, "no other run (none at registration)");
    assert_eq!(call["tables"], serde_json::json!([table]), "{call}");
    assert_eq!(call["configuration"]["airflow.run_id"], "dyngate-test-run", "{call}");
    assert_eq!(call["configuration"]["from"], "test", "{call}");
    assert_eq!(call["configuration"]["extra"], "yes", "{call}");
    let when = call["scheduleTime"].as_str().unwrap();
    assert!(
        when.starts_with("20") && (when.ends_with("+01:00") || when.ends_with("+02:00")),
        "in Berlin time: {when}"
    );

    // Suspend and resume; a rewritten file changes the schedule.
    api.set_paused(&id, true).await.unwrap();
    assert_eq!(api.dag(&id).await.unwrap().unwrap()["is_paused"], true);
    api.set_paused(&id, false).await.unwrap();
    assert_eq!(api.dag(&id).await.unwrap().unwrap()["is_paused"], false);
    airflow::write_dag_file(
        &dags,
        &DagSpec {
            cron: "*/5 * * * *".into(),
            ..spec.clone()
        },
    )
    .unwrap();
    until("the new schedule", 60, async || {
        let dag = api.dag(&id).await.unwrap()?;
        (cron_of(&dag) == "*/5 * * * *").then_some(())
    })
    .await;

    // Dropping: the file first, then the DAG; it does not come back.
    std::fs::remove_file(&file).unwrap();
    assert!(api.delete_dag(&id).await.unwrap());
    assert!(api.dag(&id).await.unwrap().is_none());
    assert!(!api.delete_dag(&id).await.unwrap(), "deleting twice finds nothing");
}

#[tokio::test]
async fn a_wrong_password_is_a_login_error_without_the_password() {
    let e = api("not-the-password").dag("anything").await.unwrap_err();
    assert!(matches!(e, ApiError::Login { .. }), "{e}");
    assert!(!e.to_string().contains("not-the-password"), "{e}");
}

/// A gateway whose FULL tables Airflow schedules, with a bearer token on its refresh endpoint.
async fn airflow_gateway(airflow_url: &str, dags: &str) -> (common::Pg, String, common::Dyngate, tokio_postgres::Client) {
    let pg = common::pg();
    let db = pg.fresh_db().await;
    let gw = gateway_on(&pg, &db, airflow_url, dags, &["--scheduler", "airflow"]);
    let c = common::connect(&gw.url("postgres", &pg.password, &db)).await;
    c.batch_execute("CREATE TABLE src (v int NOT NULL); INSERT INTO src VALUES (1)")
        .await
        .unwrap();
    (pg, db, gw, c)
}

/// A gateway on catalog `db` that knows the Airflow at `airflow_url`.
fn gateway_on(pg: &common::Pg, db: &str, airflow_url: &str, dags: &str, extra: &[&str]) -> common::Dyngate {
    let password = env("DYNGATE_TEST_AIRFLOW_PASSWORD");
    let user = env("DYNGATE_TEST_AIRFLOW_USER");
    let api = std::env::var("DYNGATE_TEST_AIRFLOW_API").unwrap_or_else(|_| "v2".into());
    let mut args = vec![
        "--airflow-url",
        airflow_url,
        "--airflow-api",
        &api,
        "--airflow-user",
        &user,
        "--airflow-password",
        &password,
        "--airflow-dags-folder",
        dags,
        "--http-token",
        "s3cret-token",
    ];
    args.extend_from_slice(extra);
    common::Dyngate::for_db(pg, db, &args)
}

/// A port nothing listens on: an Airflow that is down.
fn dead_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}

fn epoch_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// CREATE puts a FULL table's schedule into Airflow; Airflow fires it and the history shows the
/// refresh as SCHEDULED with Airflow's run id; SUSPEND / RESUME pause the DAG; SET FRESHNESS
/// changes its schedule, or moves the table off Airflow (CONTINUOUS) and back; DROP removes it.
#[tokio::test]
async fn full_tables_scheduled_by_airflow() {
    let api = api(&env("DYNGATE_TEST_AIRFLOW_PASSWORD"));
    let (_pg, _db, gw, c) = airflow_gateway(&env("DYNGATE_TEST_AIRFLOW_URL"), &env("DYNGATE_TEST_AIRFLOW_DAGS")).await;
    c.batch_execute("CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '1' MINUTE REFRESH_MODE = FULL AS SELECT sum(v)::int AS s FROM src")
        .await
        .unwrap();
    let (scheduler, handle): (String, String) = {
        let r = c
            .query_one(
                "SELECT scheduler, scheduler_handle::text FROM dyngate.dynamic_table WHERE table_name = 't'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(scheduler, "airflow");
    let handle: Value = serde_json::from_str(&handle).unwrap();
    let id = handle["dag_id"].as_str().unwrap().to_string();
    let file = std::path::PathBuf::from(handle["file"].as_str().unwrap());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("s3cret-token"), "the token is not in the DAG file");
    let dag = api.dag(&id).await.unwrap().expect("visible once CREATE returns");
    assert_eq!(
        (dag["is_paused"].clone(), cron_of(&dag)),
        (Value::Bool(false), Value::from("* * * * *"))
    );
    let described = c.simple_query("DESCRIBE DYNAMIC TABLE t").await.unwrap();
    let shows_dag = described.iter().any(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0) == Some("scheduler_handle") && r.get(1).is_some_and(|v| v.contains(&id)),
        _ => false,
    });
    assert!(shows_dag, "DESCRIBE shows the DAG");

    // Airflow fires at the next minute; the call carries the token and the run id.
    c.batch_execute("INSERT INTO src VALUES (41)").await.unwrap();
    let run_id: String = until("Airflow's scheduled refresh", 150, async || {
        c.query_opt(
            "SELECT scheduler_run_id FROM dyngate.refresh_history WHERE trigger = 'SCHEDULED' AND state = 'SUCCEEDED'",
            &[],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
    })
    .await;
    assert!(run_id.starts_with("scheduled__"), "{run_id}");
    assert_eq!(one::<i32>(&c, "SELECT s FROM t").await, 42);

    c.batch_execute("ALTER DYNAMIC TABLE t SUSPEND").await.unwrap();
    assert_eq!(api.dag(&id).await.unwrap().unwrap()["is_paused"], true);
    let scheduled = "SELECT count(*) FROM dyngate.refresh_history WHERE trigger = 'SCHEDULED'";
    // A run Airflow started just before the pause may still arrive.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let at_suspend: i64 = one(&c, scheduled).await;
    // A tick passes while suspended (Airflow's next run then points at it) ...
    let next_run = async |key: &str| {
        let dag = api.dag(&id).await.unwrap().unwrap();
        dag[key].as_str().map(|t| dyngate::core::time::parse_instant(t).unwrap())
    };
    until("a tick missed while suspended", 90, async || {
        next_run(next_field()).await.filter(|t| *t < epoch_now()).map(|_| ())
    })
    .await;
    let before: i64 = one(&c, scheduled).await;
    assert_eq!(before, at_suspend, "no run while suspended, though a tick passed");
    // ... and RESUME goes on from the next tick, like the embedded scheduler: no run for it.
    c.batch_execute("ALTER DYNAMIC TABLE t RESUME").await.unwrap();
    let resumed_at = epoch_now();
    assert_eq!(api.dag(&id).await.unwrap().unwrap()["is_paused"], false);
    let next = next_run(next_field()).await.expect("a next run");
    assert!(next >= resumed_at, "next run {next} is not before the resume at {resumed_at}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    if epoch_now() < next {
        assert_eq!(one::<i64>(&c, scheduled).await, before, "the missed tick was not run");
    }

    c.batch_execute("ALTER DYNAMIC TABLE t SET FRESHNESS = INTERVAL '5' MINUTE")
        .await
        .unwrap();
    until("the new schedule", 60, async || {
        (cron_of(&api.dag(&id).await.unwrap()?) == "*/5 * * * *").then_some(())
    })
    .await;
    // Seconds cannot be scheduled by Airflow: refused, nothing changes.
    let e = c
        .batch_execute("ALTER DYNAMIC TABLE t SET FRESHNESS = INTERVAL '30' SECOND")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), Some("22023"), "{e:?}");
    assert_eq!(one::<String>(&c, "SELECT freshness FROM dyngate.dynamic_tables").await, "5 MINUTE");

    // DROP removes the DAG and its file.
    assert!(
        !gw.log().contains(&env("DYNGATE_TEST_AIRFLOW_PASSWORD")),
        "Airflow's password is not logged"
    );
    drop(gw);
    let (_pg2, _db2, _gw2, c2) = airflow_gateway(&env("DYNGATE_TEST_AIRFLOW_URL"), &env("DYNGATE_TEST_AIRFLOW_DAGS")).await;
    c2.batch_execute("CREATE DYNAMIC TABLE gone FRESHNESS = INTERVAL '1' HOUR AS SELECT v FROM src")
        .await
        .unwrap();
    // Becoming CONTINUOUS takes the table off Airflow (the engine keeps it fresh); FULL again
    // puts it back.
    let first_id = one::<String>(&c2, "SELECT scheduler_handle ->> 'dag_id' FROM dyngate.dynamic_table").await;
    assert!(api.dag(&first_id).await.unwrap().is_some());
    c2.batch_execute("ALTER DYNAMIC TABLE gone SET FRESHNESS = INTERVAL '10' SECOND")
        .await
        .unwrap();
    assert!(api.dag(&first_id).await.unwrap().is_none(), "the DAG went with the FULL mode");
    assert_eq!(
        one::<Option<String>>(&c2, "SELECT scheduler FROM dyngate.dynamic_table").await,
        None
    );
    c2.batch_execute("ALTER DYNAMIC TABLE gone SET FRESHNESS = INTERVAL '2' HOUR")
        .await
        .unwrap();
    let gone_id = one::<String>(&c2, "SELECT scheduler_handle ->> 'dag_id' FROM dyngate.dynamic_table").await;
    let gone_file = one::<String>(&c2, "SELECT scheduler_handle ->> 'file' FROM dyngate.dynamic_table").await;
    assert_eq!(cron_of(&api.dag(&gone_id).await.unwrap().unwrap()), "0 */2 * * *");
    c2.batch_execute("DROP DYNAMIC TABLE gone").await.unwrap();
    assert!(api.dag(&gone_id).await.unwrap().is_none());
    assert!(!std::path::Path::new(&gone_file).exists());
}

/// Airflow unreachable during CREATE: a clear error, and nothing left behind (no table, no
/// catalog row, no DAG file). A freshness in seconds cannot go to Airflow at all.
#[tokio::test]
async fn airflow_unreachable_during_create_leaves_nothing() {
    let dags = common::tmp_dir().join(common::unique("dags"));
    std::fs::create_dir_all(&dags).unwrap();
    let (_pg, _db, _gw, c) = airflow_gateway(&dead_url(), dags.to_str().unwrap()).await;
    let e = c
        .batch_execute("CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '1' HOUR AS SELECT v FROM src")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), Some("58000"), "{e:?}");
    assert!(common::message(&e).contains("Airflow"), "{e:?}");
    assert!(!common::message(&e).contains("password"), "{e:?}");
    assert_eq!(one::<i64>(&c, "SELECT count(*) FROM pg_class WHERE relname = 't'").await, 0);
    assert_eq!(one::<i64>(&c, "SELECT count(*) FROM dyngate.dynamic_tables").await, 0);
    assert_eq!(std::fs::read_dir(&dags).unwrap().count(), 0, "no DAG file left");

    let e = c
        .batch_execute("CREATE DYNAMIC TABLE fast FRESHNESS = INTERVAL '30' SECOND REFRESH_MODE = FULL AS SELECT v FROM src")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), Some("22023"), "{e:?}");
    assert!(common::message(&e).contains("no seconds field"), "{e:?}");
    // CONTINUOUS tables are the engine's business: no scheduler involved.
    c.batch_execute("CREATE DYNAMIC TABLE live FRESHNESS = INTERVAL '30' SECOND AS SELECT v FROM src")
        .await
        .unwrap();

    // Moving a table to the unreachable Airflow fails and changes nothing.
    c.batch_execute("CREATE DYNAMIC TABLE here FRESHNESS = INTERVAL '1' HOUR WITH ('scheduler' = 'embedded') AS SELECT v FROM src")
        .await
        .unwrap();
    let e = c
        .batch_execute("ALTER DYNAMIC TABLE here SET ('scheduler' = 'airflow')")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), Some("58000"), "{e:?}");
    let row = c
        .query_one(
            "SELECT scheduler, scheduler_handle IS NULL, options ->> 'scheduler' FROM dyngate.dynamic_table WHERE table_name = 'here'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1), row.get::<_, String>(2)),
        ("embedded".to_string(), true, "embedded".to_string())
    );
    assert_eq!(std::fs::read_dir(&dags).unwrap().count(), 0, "no DAG file left");
}

/// `SET ('scheduler' = ...)` moves a FULL table between the embedded scheduler and Airflow
/// without recreating it; RESET goes back to the server's default; a suspended table arrives
/// paused.
#[tokio::test]
async fn tables_move_between_schedulers() {
    let api = api(&env("DYNGATE_TEST_AIRFLOW_PASSWORD"));
    let pg = common::pg();
    let db = pg.fresh_db().await;
    let _gw = gateway_on(&pg, &db, &env("DYNGATE_TEST_AIRFLOW_URL"), &env("DYNGATE_TEST_AIRFLOW_DAGS"), &[]);
    let c = common::connect(&_gw.url("postgres", &pg.password, &db)).await;
    exec(
        &c,
        &[
            "CREATE TABLE src (v int NOT NULL); INSERT INTO src VALUES (1)",
            "CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '1' HOUR AS SELECT sum(v)::int AS s FROM src",
        ],
    )
    .await;
    let schedule = async || {
        let r = c
            .query_one(
                "SELECT scheduler, scheduler_handle ->> 'dag_id', status FROM dyngate.dynamic_table",
                &[],
            )
            .await
            .unwrap();
        (r.get::<_, String>(0), r.get::<_, Option<String>>(1), r.get::<_, String>(2))
    };
    assert_eq!(schedule().await.0, "embedded", "the server's default");

    c.batch_execute("ALTER DYNAMIC TABLE t SET ('scheduler' = 'airflow')")
        .await
        .unwrap();
    let (kind, dag, _) = schedule().await;
    let dag = dag.expect("a DAG");
    assert_eq!(kind, "airflow");
    assert_eq!(api.dag(&dag).await.unwrap().expect("in Airflow")["is_paused"], false);
    // The table's content and history stay: it was not recreated.
    exec(&c, &["INSERT INTO src VALUES (2)", "REFRESH DYNAMIC TABLE t"]).await;
    assert_eq!(one::<i32>(&c, "SELECT s FROM t").await, 3);
    assert_eq!(one::<i64>(&c, "SELECT count(*) FROM dyngate.refresh_history").await, 2);

    c.batch_execute("ALTER DYNAMIC TABLE t SET ('scheduler' = 'embedded')")
        .await
        .unwrap();
    assert_eq!(schedule().await, ("embedded".to_string(), None, "ACTIVATED".to_string()));
    assert!(api.dag(&dag).await.unwrap().is_none(), "the DAG is gone");
    assert_eq!(one::<i64>(&c, "SELECT count(*) FROM dyngate.scheduler_cleanup").await, 0);

    // Suspended on the embedded scheduler: paused on Airflow.
    exec(
        &c,
        &[
            "ALTER DYNAMIC TABLE t SUSPEND",
            "ALTER DYNAMIC TABLE t SET ('scheduler' = 'airflow')",
        ],
    )
    .await;
    let (_, dag, status) = schedule().await;
    assert_eq!(status, "SUSPENDED");
    let dag = dag.expect("a DAG");
    assert_eq!(api.dag(&dag).await.unwrap().unwrap()["is_paused"], true);
    c.batch_execute("ALTER DYNAMIC TABLE t RESUME WITH ('team' = 'sales')")
        .await
        .unwrap();
    assert_eq!(api.dag(&dag).await.unwrap().unwrap()["is_paused"], false);
    // The RESUME options are the configuration the DAG sends.
    let file = one::<String>(&c, "SELECT scheduler_handle ->> 'file' FROM dyngate.dynamic_table").await;
    let spec = airflow::spec_in_file(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(spec["configuration"], serde_json::json!({"team": "sales"}));

    // RESET: back to the default (embedded here).
    c.batch_execute("ALTER DYNAMIC TABLE t RESET ('scheduler')").await.unwrap();
    assert_eq!(schedule().await.0, "embedded");
    assert!(api.dag(&dag).await.unwrap().is_none());

    // Unknown schedulers are refused.
    let e = c
        .batch_execute("ALTER DYNAMIC TABLE t SET ('scheduler' = 'cron')")
        .await
        .unwrap_err();
    assert_eq!(common::code(&e), Some("22023"), "{e:?}");
    assert!(common::message(&e).contains("dolphinscheduler"), "{e:?}");
}

/// The reconciliation loop puts drift right: a DAG paused or deleted behind dyngate's back comes
/// back as the catalog says, a stray DAG of this catalog is removed (another catalog's is not),
/// and a DAG whose removal failed at DROP (Airflow down) is removed once Airflow answers again.
#[tokio::test]
async fn reconciliation_repairs_drift_and_removes_strays() {
    let api = api(&env("DYNGATE_TEST_AIRFLOW_PASSWORD"));
    let dags = env("DYNGATE_TEST_AIRFLOW_DAGS");
    let url = env("DYNGATE_TEST_AIRFLOW_URL");
    let pg = common::pg();
    let db = pg.fresh_db().await;
    let fast = ["--scheduler", "airflow", "--scheduler-reconcile-interval", "1s"];
    let mut gw = gateway_on(&pg, &db, &url, &dags, &fast);
    let c = common::connect(&gw.url("postgres", &pg.password, &db)).await;
    exec(
        &c,
        &[
            "CREATE TABLE src (v int NOT NULL)",
            "CREATE DYNAMIC TABLE kept FRESHNESS = INTERVAL '1' HOUR AS SELECT v FROM src",
            "CREATE DYNAMIC TABLE dropped FRESHNESS = INTERVAL '1' HOUR AS SELECT v FROM src",
        ],
    )
    .await;
    let dag_of = async |t: &str| {
        c.query_one(
            "SELECT scheduler_handle ->> 'dag_id', scheduler_handle ->> 'file' FROM dyngate.dynamic_table WHERE table_name = $1",
            &[&t],
        )
        .await
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .unwrap()
    };
    let (kept, kept_file) = dag_of("kept").await;
    let (dropped, dropped_file) = dag_of("dropped").await;

    // Paused behind dyngate's back: unpaused again.
    api.set_paused(&kept, true).await.unwrap();
    until("the DAG unpaused", 30, async || {
        (api.dag(&kept).await.unwrap()?["is_paused"] == false).then_some(())
    })
    .await;
    // File and DAG deleted behind dyngate's back: both back.
    std::fs::remove_file(&kept_file).unwrap();
    api.delete_dag(&kept).await.unwrap();
    until("the DAG back in Airflow", 90, async || api.dag(&kept).await.unwrap()).await;
    assert!(std::path::Path::new(&kept_file).exists());

    // Strays: a DAG file of this catalog no table owns goes; another catalog's stays.
    let catalog: String = one(&c, "SELECT catalog_id::text FROM dyngate.identity").await;
    let stray_spec = |catalog: &str, table: &str| DagSpec {
        dag_id: airflow::dag_id(catalog, &db, "public", table, 9999),
        table: format!("public.{table}"),
        cron: "0 0 * * *".into(),
        timezone: "UTC".into(),
        start_date: "2026-01-01T00:00:00+00:00".into(),
        url: "http://127.0.0.1:9/v3/dynamic-tables/refresh".into(),
        token_conn_id: None,
        configuration: Default::default(),
        paused_on_create: true,
        retries: 0,
        retry_delay_s: 1,
        timeout_s: 1,
        tags: vec!["dyngate".into(), airflow::catalog_tag(catalog)],
    };
    let ours = stray_spec(&catalog, "stray");
    let theirs = stray_spec("another-catalog", "theirs");
    let ours_file = airflow::write_dag_file(std::path::Path::new(&dags), &ours).unwrap();
    let theirs_file = airflow::write_dag_file(std::path::Path::new(&dags), &theirs).unwrap();
    until("the stray DAG file removed", 60, async || (!ours_file.exists()).then_some(())).await;
    assert!(theirs_file.exists(), "another catalog's DAG is left alone");
    assert!(api.dag(&kept).await.unwrap().is_some(), "a DAG of a table is no stray");

    // DROP while Airflow is down: the table goes, the removal waits in the queue ...
    gw.stop();
    let mut down = gateway_on(&pg, &db, &dead_url(), &dags, &["--scheduler", "airflow"]);
    let c = common::connect(&down.url("postgres", &pg.password, &db)).await;
    c.batch_execute("DROP DYNAMIC TABLE dropped").await.unwrap();
    assert_eq!(
        one::<i64>(&c, "SELECT count(*) FROM dyngate.dynamic_tables WHERE table_name = 'dropped'").await,
        0
    );
    let (reason, error): (String, String) = {
        let r = c
            .query_one("SELECT reason, coalesce(last_error, '') FROM dyngate.scheduler_cleanup", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(reason, "dropped");
    assert!(error.contains("unreachable"), "{error}");
    assert!(!std::path::Path::new(&dropped_file).exists(), "the file went at once");
    down.stop();
    // ... and is done once Airflow answers.
    let _gw = gateway_on(&pg, &db, &url, &dags, &fast);
    until("the queued removal", 60, async || {
        let c = common::connect(&_gw.url("postgres", &pg.password, &db)).await;
        let left: i64 = one(&c, "SELECT count(*) FROM dyngate.scheduler_cleanup").await;
        (left == 0).then_some(())
    })
    .await;
    assert!(api.dag(&dropped).await.unwrap().is_none(), "the dropped table's DAG is gone");
    std::fs::remove_file(&theirs_file).ok();
    api.delete_dag(&theirs.dag_id).await.unwrap();
}
