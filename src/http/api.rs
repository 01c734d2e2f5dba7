//! The dynamic-table HTTP API (`/v3/...`), as workflow schedulers call it:
//!
//! - `POST /v3/dynamic-tables/refresh` `{"tables": [...], "scheduleTime": "...", "configuration":
//!   {...}, "wait": false}` -> 200 `{"jobId": "...", "clusterInfo": {...}}`. Also DolphinScheduler's
//!   flat form (`"tables": "a,b"`, `"configuration": "{}"`). Idempotent per (table,
//!   scheduleTime): a repeated call answers the first call's jobId and refreshes nothing. By
//!   default the call returns once the refreshes are recorded (state SCHEDULED/EXECUTING; follow
//!   them with `GET /v3/jobs/{jobId}`); with `"wait": true` it returns when they have finished,
//!   200 if all succeeded, 500 with each table's outcome otherwise.
//! - `GET /v3/dynamic-tables`, `GET /v3/dynamic-tables/{name}`, `GET /v3/jobs/{jobId}`.
//!
//! Errors are JSON `{"error": "...", "sqlstate": "..."}` with the status of
//! [`Error::http_status`]. A bearer token (`--http-token`) protects these routes when set.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::core::Error;
use crate::core::time::{ScheduleTime, parse_schedule_time};
use crate::http::AppState;
use crate::sql::dynamic::{TableName, parse_table_name};

/// A parsed refresh request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshBody {
    pub tables: Vec<TableName>,
    pub schedule_time: ScheduleTime,
    pub wait: bool,
    /// The scheduler's run, from `configuration`: `airflow.run_id` (what dyngate's Airflow DAGs
    /// send) or `scheduler.run_id` (for any other scheduler).
    pub scheduler_run_id: Option<String>,
}

/// A comma-separated list of table names, split at the commas outside double quotes (a quoted
/// name may hold one: `"Sales, EU"`).
pub fn split_names(s: &str) -> Vec<String> {
    let (mut names, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => names.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    names.push(cur);
    names.into_iter().map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect()
}

/// Reads a refresh request body; the error says what is wrong with it.
pub fn parse_refresh_body(body: &[u8]) -> Result<RefreshBody, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("the body must be a JSON object")?;
    let names: Vec<String> = match obj.get("tables") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_str().map(str::to_string).ok_or("tables must be strings"))
            .collect::<Result<_, _>>()?,
        Some(Value::String(s)) => split_names(s),
        _ => return Err("tables is required: a list of table names, or a comma-separated string".into()),
    };
    if names.is_empty() {
        return Err("tables is empty".into());
    }
    let tables = names
        .iter()
        .map(|n| parse_table_name(n).map_err(|e| format!("invalid table name '{n}': {e}")))
        .collect::<Result<_, _>>()?;
    let schedule_time = match obj.get("scheduleTime") {
        Some(Value::String(s)) => parse_schedule_time(s)?,
        _ => return Err("scheduleTime is required (e.g. \"2024-01-02 00:00:00\")".into()),
    };
    let configuration = match obj.get("configuration") {
        None | Some(Value::Null) => Value::Null,
        Some(c @ Value::Object(_)) => c.clone(),
        Some(Value::String(s)) if s.trim().is_empty() => Value::Null,
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(c @ Value::Object(_)) => c,
            _ => return Err("configuration must be a JSON object (or a string holding one)".into()),
        },
        Some(_) => return Err("configuration must be a JSON object (or a string holding one)".into()),
    };
    let scheduler_run_id = ["airflow.run_id", "scheduler.run_id"]
        .iter()
        .find_map(|k| configuration.get(k).and_then(Value::as_str))
        .map(str::to_string);
    let wait = match obj.get("wait") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("wait must be true or false".into()),
    };
    Ok(RefreshBody {
        tables,
        schedule_time,
        wait,
        scheduler_run_id,
    })
}

fn error(status: StatusCode, message: impl Into<String>, sqlstate: Option<&str>) -> Response {
    let mut body = json!({"error": message.into()});
    if let Some(s) = sqlstate {
        body["sqlstate"] = json!(s);
    }
    (status, Json(body)).into_response()
}

fn manager_error(e: Error) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, e.to_string(), Some(e.sqlstate()))
}

/// Checks the bearer token, when one is configured (compared in constant time): the 401 answer
/// when it is missing or wrong.
pub fn unauthorized(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &state.token else { return None };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same = given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
    if same {
        None
    } else {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token", None);
        r.headers_mut()
            .insert("www-authenticate", "Bearer".parse().expect("static header value"));
        Some(r)
    }
}

pub async fn refresh(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = unauthorized(&state, &headers) {
        return r;
    }
    let req = match parse_refresh_body(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e, None),
    };
    let job = match state
        .manager
        .refresh_api(&req.tables, req.schedule_time, req.wait, req.scheduler_run_id.as_deref())
        .await
    {
        Ok(j) => j,
        Err(e) => return manager_error(e),
    };
    let mut body = json!({
        "jobId": job.job_id,
        "clusterInfo": job.cluster_info,
    });
    if job.repeated {
        body["repeated"] = json!(true);
    }
    let mut status = StatusCode::OK;
    if let Some(results) = job.results {
        if results.iter().any(|r| r.state != "SUCCEEDED") {
            status = StatusCode::INTERNAL_SERVER_ERROR;
            body["error"] = json!("a refresh failed");
        }
        body["results"] = results
            .into_iter()
            .map(|r| json!({"table": r.table, "state": r.state, "rowsWritten": r.rows, "error": r.error}))
            .collect();
    }
    (status, Json(body)).into_response()
}

pub async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = unauthorized(&state, &headers) {
        return r;
    }
    match state.manager.list_json(None).await {
        Ok(rows) => Json(json!({"dynamicTables": rows})).into_response(),
        Err(e) => manager_error(e),
    }
}

pub async fn one(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = unauthorized(&state, &headers) {
        return r;
    }
    let name = match parse_table_name(&name) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid table name: {e}"), None),
    };
    match state.manager.list_json(Some(&name)).await {
        Ok(mut rows) if !rows.is_empty() => Json(rows.remove(0)).into_response(),
        Ok(_) => {
            let q = format!("{}.{}", name.schema.as_deref().unwrap_or("public"), name.name);
            manager_error(Error::NotFound(q))
        }
        Err(e) => manager_error(e),
    }
}

pub async fn job(State(state): State<Arc<AppState>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = unauthorized(&state, &headers) {
        return r;
    }
    match state.manager.job(&id).await {
        Ok(parts) if parts.is_empty() => error(StatusCode::NOT_FOUND, format!("no job {id}"), None),
        Ok(parts) => Json(json!({"jobId": id, "refreshes": parts})).into_response(),
        Err(e) => manager_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_outside_quotes() {
        let cases: [(&str, &[&str]); 6] = [
            ("a, b", &["a", "b"]),
            ("a,,b,", &["a", "b"]),
            (r#""s"."Sales, EU""#, &[r#""s"."Sales, EU""#]),
            (r#""a,b",c"#, &[r#""a,b""#, "c"]),
            (r#""say ""hi"", ok",x"#, &[r#""say ""hi"", ok""#, "x"]),
            ("", &[]),
        ];
        for (s, want) in cases {
            assert_eq!(split_names(s), want, "{s}");
        }
        let ok = parse_refresh_body(br#"{"tables":"\"s\".\"Sales, EU\"","scheduleTime":"2024-01-02 00:00:00"}"#).unwrap();
        assert_eq!(
            ok.tables,
            [TableName {
                schema: Some("s".into()),
                name: "Sales, EU".into()
            }]
        );
    }

    #[test]
    fn refresh_bodies() {
        let t = |s: &str| TableName {
            schema: None,
            name: s.into(),
        };
        let ok = parse_refresh_body(br#"{"tables":["a","s.B"],"scheduleTime":"2024-01-02 00:00:00","configuration":{}}"#).unwrap();
        assert_eq!(
            ok.tables,
            [
                t("a"),
                TableName {
                    schema: Some("s".into()),
                    name: "b".into()
                }
            ]
        );
        assert_eq!(ok.schedule_time, ScheduleTime::Local(1_704_153_600));
        assert!(!ok.wait);
        // DolphinScheduler's flat form.
        let ok = parse_refresh_body(br#"{"tables":"a, b","scheduleTime":"2024-01-02T00:00:00+00:00","configuration":"{}","wait":true}"#)
            .unwrap();
        assert_eq!(ok.tables, [t("a"), t("b")]);
        assert!(ok.wait);
        assert_eq!(ok.scheduler_run_id, None);
        // What dyngate's DolphinScheduler task sends once DolphinScheduler has filled in
        // `${system.datetime}` and `${system.workflow.instance.id}`.
        let ok = parse_refresh_body(
            br#"{"configuration":"{\"dolphinscheduler.workflow\":\"w\",\"scheduler.run_id\":\"42\"}","scheduleTime":"20240102000000","tables":"\"s\".\"T\""}"#,
        )
        .unwrap();
        assert_eq!(
            ok.tables,
            [TableName {
                schema: Some("s".into()),
                name: "T".into()
            }]
        );
        assert_eq!(
            ok.schedule_time,
            ScheduleTime::Local(1_704_153_600),
            "the wall clock of the table's zone"
        );
        assert_eq!(ok.scheduler_run_id.as_deref(), Some("42"));
        // A scheduler's run id, in either form.
        let runs = [
            (
                r#"{"airflow.run_id":"scheduled__2024-01-02T00:00:00+00:00","x":"y"}"#,
                Some("scheduled__2024-01-02T00:00:00+00:00"),
            ),
            (r#""{\"scheduler.run_id\":\"4711\"}""#, Some("4711")),
            (r#"{"airflow.run_id":7}"#, None),
        ];
        for (conf, want) in runs {
            let body = format!(r#"{{"tables":["a"],"scheduleTime":"2024-01-02 00:00:00","configuration":{conf}}}"#);
            assert_eq!(
                parse_refresh_body(body.as_bytes()).unwrap().scheduler_run_id.as_deref(),
                want,
                "{conf}"
            );
        }
        let bad: &[(&[u8], &str)] = &[
            (b"nope", "not JSON"),
            (b"[]", "JSON object"),
            (br#"{"scheduleTime":"2024-01-02 00:00:00"}"#, "tables is required"),
            (br#"{"tables":[],"scheduleTime":"2024-01-02 00:00:00"}"#, "tables is empty"),
            (br#"{"tables":[1],"scheduleTime":"2024-01-02 00:00:00"}"#, "strings"),
            (br#"{"tables":["a"]}"#, "scheduleTime is required"),
            (br#"{"tables":["a"],"scheduleTime":"soon"}"#, "not a time"),
            (br#"{"tables":["a"],"scheduleTime":"$[yyyy-MM-dd]"}"#, "placeholder"),
            (
                br#"{"tables":["a"],"scheduleTime":"2024-01-02 00:00:00","configuration":"{x"}"#,
                "configuration",
            ),
            (br#"{"tables":["a"],"scheduleTime":"2024-01-02 00:00:00","wait":"yes"}"#, "wait"),
            (
                br#"{"tables":["a b c"],"scheduleTime":"2024-01-02 00:00:00"}"#,
                "invalid table name",
            ),
        ];
        for (body, text) in bad {
            let e = parse_refresh_body(body).unwrap_err();
            assert!(e.contains(text), "{}: {e}", String::from_utf8_lossy(body));
        }
    }
}
