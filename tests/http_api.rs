//! The HTTP API schedulers call: POST /v3/dynamic-tables/refresh refreshes tables for a schedule
//! time, once per (table, scheduleTime); the shapes Airflow and DolphinScheduler send are
//! accepted; bad input gets a 4xx with a JSON error; a bearer token protects it; jobs and tables
//! can be looked up; /openapi.json describes it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio_postgres::Client;

fn post(gw: &Dyngate, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, text) = http("POST", &gw.http("/v3/dynamic-tables/refresh"), headers, body).unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text}: {e}")),
    )
}

async fn setup(extra: &[&str]) -> (Dyngate, Client) {
    let (_pg, _db, gw, c) = catalog_setup(
        extra,
        &[
            SRC,
            "CREATE DYNAMIC TABLE t FRESHNESS = INTERVAL '1' DAY AS SELECT sum(v)::int AS s FROM src",
            "CREATE DYNAMIC TABLE u FRESHNESS = INTERVAL '1' DAY AS SELECT count(*)::int AS n FROM src",
        ],
    )
    .await;
    (gw, c)
}

async fn api_rows(c: &Client) -> i64 {
    one(c, "SELECT count(*) FROM dyngate.refresh_history WHERE trigger = 'API'").await
}

#[tokio::test]
async fn refresh_is_idempotent_per_table_and_schedule_time() {
    let (gw, c) = setup(&[]).await;
    c.batch_execute("INSERT INTO src VALUES (41)").await.unwrap();
    let body = r#"{"tables":["t","u"],"scheduleTime":"2024-01-02 00:00:00","configuration":{},"wait":true}"#;
    let (status, v) = post(&gw, body, &[]);
    assert_eq!(status, 200, "{v}");
    let job = v["jobId"].as_str().unwrap().to_string();
    assert_eq!(v["clusterInfo"]["execution.target"], "postgres");
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    assert_eq!(one::<i32>(&c, "SELECT s FROM t").await, 42);
    let r = c
        .query_one("SELECT state, schedule_time = '2024-01-02 00:00:00+00', job_id FROM dyngate.refresh_history WHERE trigger = 'API' AND table_name = 't'", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, &str>(0), "SUCCEEDED");
    assert!(r.get::<_, bool>(1), "the schedule time is recorded");
    assert_eq!(r.get::<_, &str>(2), job);

    // A retried task: same answer, no second refresh. Airflow's ISO shape of the same time.
    c.batch_execute("INSERT INTO src VALUES (100)").await.unwrap();
    let (status, v) = post(
        &gw,
        r#"{"tables":["t","u"],"scheduleTime":"2024-01-02T00:00:00+00:00","configuration":{}}"#,
        &[],
    );
    assert_eq!(status, 200);
    assert_eq!(v["jobId"], job.as_str());
    assert_eq!(v["repeated"], true);
    assert_eq!(api_rows(&c).await, 2);
    assert_eq!(one::<i32>(&c, "SELECT s FROM t").await, 42);

    // The job can be looked up.
    let (status, text) = http_get(&gw.http(&format!("/v3/jobs/{job}"))).unwrap();
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    let parts = v["refreshes"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert!(parts.iter().all(|p| p["state"] == "SUCCEEDED" && p["trigger"] == "API"));
    let (status, _) = http_get(&gw.http("/v3/jobs/nope")).unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn dolphinscheduler_flat_form_and_asynchronous_calls() {
    let (gw, c) = setup(&[]).await;
    c.batch_execute("INSERT INTO src VALUES (1)").await.unwrap();
    // DolphinScheduler: tables as a string, configuration as a string, Java Date.toString().
    let (status, v) = post(
        &gw,
        r#"{"tables":"t, u","scheduleTime":"Tue Jan 02 00:00:00 UTC 2024","configuration":"{}"}"#,
        &[],
    );
    assert_eq!(status, 200, "{v}");
    assert!(v.get("results").is_none(), "without wait the call does not wait");
    let job = v["jobId"].as_str().unwrap().to_string();
    let mut done = false;
    for _ in 0..100 {
        let (_, text) = http_get(&gw.http(&format!("/v3/jobs/{job}"))).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["refreshes"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|p| p["state"] == "SUCCEEDED"))
        {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "the refreshes finished in the background");
    assert_eq!(one::<i32>(&c, "SELECT s FROM t").await, 2);
}

/// A scheduler's call carries its run's id in the configuration: the history records the refresh
/// as SCHEDULED with that id, and a retried task (same table and time) refreshes nothing again.
#[tokio::test]
async fn a_schedulers_run_is_recorded_as_scheduled() {
    let (gw, c) = setup(&[]).await;
    let body = r#"{"tables":["t"],"scheduleTime":"2024-01-02T01:00:00+01:00","configuration":{"airflow.run_id":"scheduled__2024-01-02T00:00:00+00:00"},"wait":true}"#;
    let (status, first) = post(&gw, body, &[]);
    assert_eq!(status, 200, "{first}");
    let (status, again) = post(&gw, body, &[]);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["jobId"], first["jobId"], "the retry finds the first call's job");
    let rows: Vec<(String, String, Option<String>)> = c
        .query(
            "SELECT trigger, state, scheduler_run_id FROM dyngate.refresh_history WHERE table_name = 't' AND trigger <> 'CREATION'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        [(
            "SCHEDULED".to_string(),
            "SUCCEEDED".to_string(),
            Some("scheduled__2024-01-02T00:00:00+00:00".to_string())
        )]
    );
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_change_nothing() {
    let (gw, c) = setup(&[]).await;
    let cases = [
        (r#"{"tables":["nope"],"scheduleTime":"2024-01-02 00:00:00"}"#, 404, "does not exist"),
        (r#"{"tables":["t","nope"],"scheduleTime":"2024-01-02 00:00:00"}"#, 404, "nope"),
        (r#"{"tables":["t"],"scheduleTime":"tomorrow"}"#, 400, "not a time"),
        (r#"{"tables":["t"],"scheduleTime":"$[yyyy-MM-dd HH:mm:ss]"}"#, 400, "placeholder"),
        (r#"{"scheduleTime":"2024-01-02 00:00:00"}"#, 400, "tables is required"),
        ("not json", 400, "not JSON"),
    ];
    for (body, status, text) in cases {
        let (s, v) = post(&gw, body, &[]);
        assert_eq!(s, status, "{body}: {v}");
        assert!(v["error"].as_str().unwrap().contains(text), "{body}: {v}");
    }
    c.batch_execute("ALTER DYNAMIC TABLE t SUSPEND").await.unwrap();
    let (s, v) = post(&gw, r#"{"tables":["t"],"scheduleTime":"2024-01-02 00:00:00"}"#, &[]);
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["sqlstate"], "55000");
    assert_eq!(api_rows(&c).await, 0, "nothing refreshed, nothing recorded");

    let (s, text) = http_get(&gw.http("/v3/dynamic-tables")).unwrap();
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["dynamicTables"].as_array().unwrap().len(), 2);
    let (s, text) = http_get(&gw.http("/v3/dynamic-tables/u")).unwrap();
    assert_eq!(s, 200);
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["table_name"], "u");
    let (s, _) = http_get(&gw.http("/v3/dynamic-tables/nope")).unwrap();
    assert_eq!(s, 404);
    let (s, text) = http_get(&gw.http("/openapi.json")).unwrap();
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["paths"]["/v3/dynamic-tables/refresh"]["post"].is_object());
}

#[tokio::test]
async fn a_bearer_token_protects_the_api() {
    let (gw, _c) = setup(&["--http-token", "s3cret-token"]).await;
    let body = r#"{"tables":["t"],"scheduleTime":"2024-01-02 00:00:00"}"#;
    let (s, v) = post(&gw, body, &[]);
    assert_eq!(s, 401, "{v}");
    let (s, _) = post(&gw, body, &[("Authorization", "Bearer wrong")]);
    assert_eq!(s, 401);
    let (s, v) = post(&gw, body, &[("Authorization", "Bearer s3cret-token")]);
    assert_eq!(s, 200, "{v}");
    let (s, _) = http_get(&gw.http("/v3/dynamic-tables")).unwrap();
    assert_eq!(s, 401);
    let (s, _) = http_get(&gw.http("/healthz")).unwrap();
    assert_eq!(s, 200, "health stays open");
    assert!(!gw.log().contains("s3cret-token"), "the token is not logged");
}
