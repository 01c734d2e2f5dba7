//! The pure parts of the Apache Airflow plug-in: a table's schedule as an Airflow cron (five
//! fields: Airflow has no seconds), its DAG id, and its DAG file, rendered from
//! `contrib/airflow/dyngate_dag.py.tmpl`.
//!
//! The template has one placeholder, filled with a Python string literal holding the spec as
//! JSON (the JSON text encoded once more as a JSON string: JSON string escapes are a subset of
//! Python's), which the file parses with `json.loads`. Nothing of a table's name ever becomes
//! Python code.

use serde::Serialize;

use super::{BoxFuture, Handle, Plugin, PluginError, Repair, Target};
use crate::core::{SchedulerKind, rules};
use crate::http_client::{Auth, Body, percent};

use crate::core::rules::{Freshness, RuleError, Unit};

/// The DAG file template (see its header for the spec's fields).
pub const TEMPLATE: &str = include_str!("../../contrib/airflow/dyngate_dag.py.tmpl");

/// The placeholder in [`TEMPLATE`].
const PLACEHOLDER: &str = "__DYNGATE_SPEC_JSON__";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// The freshness breaks the FULL-mode rules themselves.
    #[error(transparent)]
    Rule(#[from] RuleError),
    /// A freshness in seconds: Airflow's cron has no seconds field.
    #[error(
        "Airflow cannot schedule a freshness of {0}: its cron has no seconds field; use the embedded scheduler or a freshness in minutes"
    )]
    Seconds(Freshness),
}

/// The five-field cron that fires where the Quartz cron FULL mode derives from `f` fires
/// ([`rules::full_mode_cron`]): every n minutes or hours from midnight, or daily at midnight, in
/// the table's time zone (given to Airflow beside the cron).
pub fn cron(f: Freshness) -> Result<String, CronError> {
    rules::full_mode_cron(f)?;
    Ok(match (f.unit, f.n) {
        (Unit::Second, _) => return Err(CronError::Seconds(f)),
        (Unit::Minute, 1) => "* * * * *".to_string(),
        (Unit::Minute, n) => format!("*/{n} * * * *"),
        (Unit::Hour, 1) => "0 * * * *".to_string(),
        (Unit::Hour, n) => format!("0 */{n} * * *"),
        (Unit::Day, _) => "0 0 * * *".to_string(),
    })
}

/// A table's DAG id: `dyngate__<database>__<schema>__<table>__<hash>`, with characters Airflow
/// does not accept in ids replaced by `_` and the names shortened, and 8 hex digits of a hash of
/// the catalog's identity, the exact names and the table's id: names differing only in such
/// characters (or in case, for a case-insensitive file system), other catalogs sharing one Airflow,
/// and a table created again under an old name all get DAGs of their own.
pub fn dag_id(catalog: &str, database: &str, schema: &str, table: &str, table_id: i64) -> String {
    super::schedule_name(catalog, database, schema, table, table_id, [40, 63, 100])
}

/// What the DAG file needs (the template's header describes each field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DagSpec {
    pub dag_id: String,
    /// The table as the refresh endpoint is to name it.
    pub table: String,
    pub cron: String,
    pub timezone: String,
    /// ISO 8601 with offset: the creation time, so that no earlier tick fires.
    pub start_date: String,
    /// The refresh endpoint's URL.
    pub url: String,
    /// The Airflow Connection whose password is the bearer token, if the endpoint has one.
    pub token_conn_id: Option<String>,
    pub configuration: std::collections::BTreeMap<String, String>,
    pub paused_on_create: bool,
    pub retries: u32,
    pub retry_delay_s: u32,
    pub timeout_s: u32,
    pub tags: Vec<String>,
}

/// The spec in a DAG file rendered from the template, as JSON (None for any other file).
pub fn spec_in_file(text: &str) -> Option<serde_json::Value> {
    let line = text.lines().find(|l| l.starts_with("SPEC = json.loads("))?;
    let literal = line.strip_prefix("SPEC = json.loads(")?.strip_suffix(')')?;
    let json: String = serde_json::from_str(literal).ok()?;
    serde_json::from_str(&json).ok()
}

/// Whether two specs schedule the same: the start date and pausing on creation aside, which only
/// count when Airflow first sees a DAG (rewriting a live DAG's start date could make it run a
/// missed tick).
pub fn same_schedule(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("start_date");
            o.remove("paused_on_create");
        }
        v
    };
    strip(a) == strip(b)
}

/// The DAG file for `spec`.
pub fn render(spec: &impl Serialize) -> String {
    // Serializing plain strings, numbers and maps cannot fail.
    let json = serde_json::to_string(spec).unwrap_or_default();
    let literal = serde_json::to_string(&json).unwrap_or_default();
    TEMPLATE.replacen(PLACEHOLDER, &literal, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(n: u32, unit: Unit) -> Freshness {
        Freshness { n, unit }
    }

    #[test]
    fn crons() {
        let ok = [
            (f(1, Unit::Minute), "* * * * *"),
            (f(5, Unit::Minute), "*/5 * * * *"),
            (f(30, Unit::Minute), "*/30 * * * *"),
            (f(1, Unit::Hour), "0 * * * *"),
            (f(8, Unit::Hour), "0 */8 * * *"),
            (f(1, Unit::Day), "0 0 * * *"),
        ];
        for (fr, want) in ok {
            assert_eq!(cron(fr).as_deref(), Ok(want), "{fr}");
        }
        assert_eq!(cron(f(10, Unit::Second)), Err(CronError::Seconds(f(10, Unit::Second))));
        assert!(matches!(cron(f(7, Unit::Minute)), Err(CronError::Rule(_))));
        assert!(matches!(cron(f(2, Unit::Day)), Err(CronError::Rule(_))));
        assert!(cron(f(10, Unit::Second)).unwrap_err().to_string().contains("no seconds field"));
    }

    #[test]
    fn dag_ids() {
        let c = "0b5e8f0e-3c1a-4d6e-9a43-6f1f2e9b7c10";
        let id = dag_id(c, "postgres", "public", "daily_revenue", 7);
        assert!(id.starts_with("dyngate__postgres__public__daily_revenue__"), "{id}");
        assert_eq!(id, dag_id(c, "postgres", "public", "daily_revenue", 7), "stable");
        assert_eq!(id, "dyngate__postgres__public__daily_revenue__f1490219", "the same in every build");
        assert_ne!(id, dag_id(c, "postgres", "public", "daily_revenue", 8), "a table created again");
        assert_ne!(id, dag_id(c, "other", "public", "daily_revenue", 7), "another database");
        assert_ne!(
            id,
            dag_id("another catalog", "postgres", "public", "daily_revenue", 7),
            "another catalog"
        );
        let odd = [
            ("public", "Daily Revenue"),
            ("public", "daily revenue"),
            ("a.b", "c"),
            ("a", "b.c"),
            ("s", "we'ird \"✓\""),
        ];
        let mut seen = std::collections::HashSet::new();
        for (s, t) in odd {
            let id = dag_id(c, "db", s, t, 1);
            assert!(
                id.len() <= 250 && id.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)),
                "{id}"
            );
            assert!(seen.insert(id.to_ascii_lowercase()), "{id} collides");
        }
        assert!(dag_id(c, &"d".repeat(63), &"s".repeat(63), &"t".repeat(63), i64::MAX).len() <= 250);
    }

    #[test]
    fn dag_files() {
        let spec = DagSpec {
            dag_id: dag_id("c", "db", "s", "t", 1),
            table: r#"s."we'ird \ """ ✓""#.to_string(),
            cron: "*/5 * * * *".into(),
            timezone: "Europe/Berlin".into(),
            start_date: "2026-11-24T10:00:00+01:00".into(),
            url: "http://127.0.0.1:8432/v3/dynamic-tables/refresh".into(),
            token_conn_id: None,
            configuration: Default::default(),
            paused_on_create: false,
            retries: 3,
            retry_delay_s: 30,
            timeout_s: 60,
            tags: vec!["dyngate".into()],
        };
        let file = render(&spec);
        assert!(!file.contains(PLACEHOLDER));
        let line = file.lines().find(|l| l.starts_with("SPEC = json.loads(")).unwrap();
        // The literal, read back as JSON (a subset of Python's string syntax), is the spec.
        let literal = line.trim_start_matches("SPEC = json.loads(").trim_end_matches(')');
        let json: String = serde_json::from_str(literal).unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, serde_json::to_value(&spec).unwrap());
        assert_eq!(TEMPLATE.matches(PLACEHOLDER).count(), 1);

        // And as Python reads it: the literal is a Python string whose json.loads is the spec.
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import ast, json, sys; print(json.dumps(json.loads(ast.literal_eval(sys.argv[1])), sort_keys=True))",
                literal,
            ])
            .output()
            .expect("python3 runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let from_python: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(from_python, back);
    }
}

/// Writes a table's DAG file into Airflow's DAGs folder atomically (a temporary file in the same
/// folder, synced, then renamed over the old one), so the DAG processor never reads half a file.
pub fn write_dag_file(folder: &std::path::Path, spec: &DagSpec) -> std::io::Result<std::path::PathBuf> {
    write_rendered(folder, &spec.dag_id, &render(spec))
}

/// Writes `text` as DAG `dag_id`'s file, atomically.
fn write_rendered(folder: &std::path::Path, dag_id: &str, text: &str) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write as _;
    let path = folder.join(format!("{dag_id}.py"));
    let tmp = folder.join(format!(".{dag_id}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Which REST API Airflow serves: Airflow 3's `/api/v2` (a JWT from `/auth/token`) or Airflow 2's
/// `/api/v1` (HTTP basic authentication, with the `basic_auth` auth backend enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V2,
}

impl ApiVersion {
    pub fn parse(s: &str) -> Option<ApiVersion> {
        match s {
            "v1" | "1" | "2" | "2.x" => Some(ApiVersion::V1),
            "v2" | "3" | "3.x" => Some(ApiVersion::V2),
            _ => None,
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            ApiVersion::V1 => "/api/v1",
            ApiVersion::V2 => "/api/v2",
        }
    }
}

/// Airflow's REST API, as the plug-in uses it. On `/api/v2` a JWT from `/auth/token` is fetched
/// on first use and again when Airflow refuses it (401 without one, 403 for an expired or bad
/// one); on `/api/v1` every request carries the user and password.
pub struct Api {
    endpoint: crate::http_client::Endpoint,
    version: ApiVersion,
    user: String,
    password: String,
    token: tokio::sync::Mutex<Option<String>>,
}

/// An answer Airflow should not have given.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Client(#[from] crate::http_client::ClientError),
    #[error("Airflow refused the login of user {user:?}: {status}")]
    Login { user: String, status: u16 },
    #[error("Airflow answered {method} {path} with {status}: {body}")]
    Status {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
}

impl Api {
    pub fn new(endpoint: crate::http_client::Endpoint, version: ApiVersion, user: &str, password: &str) -> Api {
        Api {
            endpoint,
            version,
            user: user.to_string(),
            password: password.to_string(),
            token: tokio::sync::Mutex::new(None),
        }
    }

    async fn login(&self) -> Result<String, ApiError> {
        let body = serde_json::json!({"username": self.user, "password": self.password});
        let r = self.endpoint.send("POST", "/auth/token", &Auth::None, Body::Json(&body)).await?;
        let token = r.json().ok().and_then(|v| v["access_token"].as_str().map(str::to_string));
        match (r.status, token) {
            (200 | 201, Some(t)) => Ok(t),
            (status, _) => Err(ApiError::Login {
                user: self.user.clone(),
                status,
            }),
        }
    }

    /// One call under the version's prefix (`path` starts after it, e.g. `/dags/x`), logging in
    /// (again) when needed; any status is returned.
    pub async fn call(&self, method: &str, path: &str, body: Option<&serde_json::Value>) -> Result<crate::http_client::Response, ApiError> {
        let path = format!("{}{path}", self.version.prefix());
        let body = body.map_or(Body::None, Body::Json);
        if self.version == ApiVersion::V1 {
            let auth = Auth::Basic {
                user: self.user.clone(),
                password: self.password.clone(),
            };
            let r = self.endpoint.send(method, &path, &auth, body).await?;
            // Airflow 2 answers a wrong password with 403 (as it answers missing permissions).
            if r.status == 401 || r.status == 403 {
                return Err(ApiError::Login {
                    user: self.user.clone(),
                    status: r.status,
                });
            }
            return Ok(r);
        }
        let mut token = self.token.lock().await;
        if token.is_none() {
            *token = Some(self.login().await?);
        }
        let r = self.endpoint.send(method, &path, &bearer(&token), body).await?;
        if r.status != 401 && r.status != 403 {
            return Ok(r);
        }
        *token = Some(self.login().await?);
        Ok(self.endpoint.send(method, &path, &bearer(&token), body).await?)
    }

    /// A call that must answer one of `ok`.
    async fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        ok: &[u16],
    ) -> Result<crate::http_client::Response, ApiError> {
        let r = self.call(method, path, body).await?;
        if ok.contains(&r.status) {
            Ok(r)
        } else {
            Err(ApiError::Status {
                method: method.to_string(),
                path: format!("{}{path}", self.version.prefix()),
                status: r.status,
                body: r.snippet_without(&[&self.password]),
            })
        }
    }

    /// The DAG as Airflow shows it (`is_paused`, `timetable_summary`, `next_dagrun_run_after`,
    /// ...), or None when Airflow does not know it (yet: a new file shows up once the DAG
    /// processor lists the folder again).
    pub async fn dag(&self, dag_id: &str) -> Result<Option<serde_json::Value>, ApiError> {
        let r = self.expect("GET", &format!("/dags/{}", percent(dag_id)), None, &[200, 404]).await?;
        Ok(if r.status == 404 { None } else { r.json().ok() })
    }

    /// The ids of the DAGs carrying `tag`, stale ones (file gone) included.
    pub async fn dags_tagged(&self, tag: &str) -> Result<Vec<String>, ApiError> {
        let mut ids = Vec::new();
        loop {
            // Stale DAGs (file gone) too: Airflow 2 calls them inactive, Airflow 3 stale; Airflow
            // 2 refuses query parameters it does not know.
            let stale = match self.version {
                ApiVersion::V1 => "only_active=false",
                ApiVersion::V2 => "exclude_stale=false",
            };
            let path = format!("/dags?tags={}&limit=100&offset={}&{stale}", percent(tag), ids.len());
            let page = self.expect("GET", &path, None, &[200]).await?.json().unwrap_or_default();
            let dags = page["dags"].as_array().cloned().unwrap_or_default();
            let before = ids.len();
            ids.extend(dags.iter().filter_map(|d| d["dag_id"].as_str().map(str::to_string)));
            let total = page["total_entries"].as_u64().unwrap_or(0) as usize;
            if ids.len() >= total || ids.len() == before {
                return Ok(ids);
            }
        }
    }

    /// Pauses (suspend) or unpauses (resume) a DAG.
    pub async fn set_paused(&self, dag_id: &str, paused: bool) -> Result<(), ApiError> {
        let body = serde_json::json!({"is_paused": paused});
        self.expect("PATCH", &format!("/dags/{}", percent(dag_id)), Some(&body), &[200])
            .await?;
        Ok(())
    }

    /// Creates (or updates) the Connection whose password the DAGs send as the refresh endpoint's
    /// bearer token: the token is never written into a DAG file.
    pub async fn put_token_connection(&self, id: &str, token: &str) -> Result<(), ApiError> {
        let body = serde_json::json!({"connection_id": id, "conn_type": "generic", "password": token});
        let r = self.call("POST", "/connections", Some(&body)).await?;
        if r.status == 409 {
            self.expect("PATCH", &format!("/connections/{}", percent(id)), Some(&body), &[200])
                .await?;
        } else if !(200..300).contains(&r.status) {
            return Err(ApiError::Status {
                method: "POST".into(),
                path: format!("{}/connections", self.version.prefix()),
                status: r.status,
                body: r.snippet_without(&[&self.password, token]),
            });
        }
        Ok(())
    }

    /// Deletes a DAG and its runs (after its file is gone, or it comes back); false when Airflow
    /// did not know it.
    pub async fn delete_dag(&self, dag_id: &str) -> Result<bool, ApiError> {
        let r = self
            .expect("DELETE", &format!("/dags/{}", percent(dag_id)), None, &[204, 404])
            .await?;
        Ok(r.status == 204)
    }
}

fn bearer(token: &Option<String>) -> Auth {
    token.clone().map_or(Auth::None, Auth::Bearer)
}

/// The Airflow Connection whose password is the refresh endpoint's bearer token.
pub const TOKEN_CONNECTION: &str = "dyngate_refresh_token";

/// The tag marking the DAGs of one catalog (see [`super::Target::catalog`]).
pub fn catalog_tag(catalog: &str) -> String {
    format!("dyngate-catalog:{catalog}")
}

/// What the catalog keeps of a table's DAG (`dynamic_table.scheduler_handle`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DagHandle {
    pub dag_id: String,
    pub file: std::path::PathBuf,
    /// The DAG's start date as written (absent in handles from before reconciliation): a file
    /// rewritten by reconciliation keeps it, so it renders the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
}

/// The Airflow plug-in: a table's schedule is a DAG file in Airflow's DAGs folder whose task
/// calls the refresh endpoint; pausing the DAG suspends it.
pub struct Airflow {
    pub api: Api,
    pub dags: std::path::PathBuf,
    /// The refresh endpoint, as Airflow's workers reach it.
    pub refresh_url: String,
    /// The refresh endpoint's bearer token, when it has one: kept in an Airflow Connection
    /// ([`TOKEN_CONNECTION`]) that the DAGs read, never in a DAG file.
    pub token: Option<String>,
    /// How long a new DAG file may take to show up in Airflow.
    pub register_timeout: std::time::Duration,
}

fn failed(e: impl std::fmt::Display) -> PluginError {
    PluginError::Failed(format!("Airflow: {e}"))
}

impl Airflow {
    fn spec(&self, dag_id: &str, start_date: &str, t: &Target<'_>, active: bool) -> Result<DagSpec, PluginError> {
        Ok(DagSpec {
            dag_id: dag_id.to_string(),
            table: t.endpoint_name(),
            cron: cron(t.freshness).map_err(|e| PluginError::Unschedulable(e.to_string()))?,
            timezone: t.time_zone.to_string(),
            start_date: start_date.to_string(),
            url: self.refresh_url.clone(),
            token_conn_id: self.token.as_ref().map(|_| TOKEN_CONNECTION.to_string()),
            configuration: t.configuration.clone(),
            paused_on_create: !active,
            retries: 3,
            retry_delay_s: 30,
            timeout_s: 600,
            tags: vec!["dyngate".into(), catalog_tag(t.catalog)],
        })
    }

    fn write(&self, spec: &DagSpec) -> Result<std::path::PathBuf, PluginError> {
        write_dag_file(&self.dags, spec).map_err(|e| failed(format_args!("DAGs folder {}: {e}", self.dags.display())))
    }

    /// The DAG files in the folder that carry `catalog`'s tag (Airflow may not have parsed them).
    fn files_of(&self, catalog: &str) -> Vec<DagHandle> {
        let tag = serde_json::to_string(&catalog_tag(catalog)).unwrap_or_default();
        // The spec is JSON inside a JSON string in the file: the tag appears with escaped quotes.
        let needle = serde_json::to_string(&tag).unwrap_or_default();
        let needle = needle.trim_matches('"');
        let Ok(entries) = std::fs::read_dir(&self.dags) else {
            return vec![];
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let dag_id = name
                    .strip_prefix("dyngate__")?
                    .strip_suffix(".py")
                    .map(|_| name.trim_end_matches(".py").to_string())?;
                let text = std::fs::read_to_string(e.path()).ok()?;
                text.contains(needle).then(|| DagHandle {
                    dag_id,
                    file: e.path(),
                    start_date: None,
                })
            })
            .collect()
    }

    async fn register_dag(&self, t: &Target<'_>, active: bool) -> Result<Handle, PluginError> {
        let dag_id = dag_id(t.catalog, t.database, t.schema, t.table, t.table_id);
        let spec = self.spec(&dag_id, t.start, t, active)?;
        if let Some(token) = &self.token {
            self.api.put_token_connection(TOKEN_CONNECTION, token).await.map_err(failed)?;
        }
        let handle = DagHandle {
            dag_id,
            file: self.write(&spec)?,
            start_date: Some(t.start.to_string()),
        };
        let shown = self.wait_for(&handle).await;
        // A DAG id is new for each table, so is_paused_upon_creation decides; checked anyway.
        let paused = match shown {
            Ok(dag) => match dag["is_paused"].as_bool() {
                Some(p) if p == active => self.api.set_paused(&handle.dag_id, !active).await.map_err(failed),
                _ => Ok(()),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = paused {
            self.remove(&handle).await.ok();
            return Err(e);
        }
        Ok(Handle::of(&handle))
    }

    /// Waits until Airflow shows the DAG of a new file.
    async fn wait_for(&self, handle: &DagHandle) -> Result<serde_json::Value, PluginError> {
        let deadline = std::time::Instant::now() + self.register_timeout;
        loop {
            match self.api.dag(&handle.dag_id).await.map_err(failed)? {
                Some(dag) => return Ok(dag),
                None if std::time::Instant::now() < deadline => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
                None => {
                    return Err(failed(format_args!(
                        "DAG {} did not show up within {} s (is the DAG processor running and reading the DAGs folder dyngate writes to?)",
                        handle.dag_id,
                        self.register_timeout.as_secs()
                    )));
                }
            }
        }
    }

    /// Removes the DAG file, then the DAG (in that order, or Airflow parses it back).
    async fn remove(&self, handle: &DagHandle) -> Result<(), PluginError> {
        match std::fs::remove_file(&handle.file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(format_args!("removing {}: {e}", handle.file.display()))),
        }
        self.api.delete_dag(&handle.dag_id).await.map_err(failed)?;
        Ok(())
    }

    async fn reconcile_dag(&self, h: &Handle, t: &Target<'_>, active: bool) -> Result<Repair, PluginError> {
        let handle: DagHandle = h.parse("Airflow")?;
        let start = handle.start_date.clone().unwrap_or_else(|| t.start.to_string());
        let spec = self.spec(&handle.dag_id, &start, t, active)?;
        let mut fixed = Vec::new();
        let on_disk = std::fs::read_to_string(&handle.file).ok();
        let want = serde_json::to_value(&spec).unwrap_or_default();
        if !on_disk
            .as_deref()
            .and_then(spec_in_file)
            .is_some_and(|have| same_schedule(&have, &want))
        {
            self.write(&spec)?;
            fixed.push(if on_disk.is_none() {
                format!("DAG file {} written again", handle.file.display())
            } else {
                format!("DAG file {} rewritten", handle.file.display())
            });
        }
        match self.api.dag(&handle.dag_id).await.map_err(failed)? {
            // Gone from Airflow (deleted through its UI or API) with its file in place: the file
            // was rewritten above or is now; a fresh mtime makes the DAG processor read it again.
            None => {
                if fixed.is_empty() {
                    self.write(&spec)?;
                }
                fixed.push(format!(
                    "DAG {} was unknown to Airflow: file touched for the DAG processor",
                    handle.dag_id
                ));
            }
            Some(dag) => {
                if dag["is_paused"].as_bool() == Some(active) {
                    self.api.set_paused(&handle.dag_id, !active).await.map_err(failed)?;
                    fixed.push(format!("DAG {} {}", handle.dag_id, if active { "unpaused" } else { "paused" }));
                }
            }
        }
        Ok(Repair::InPlace(fixed))
    }

    /// Before a paused DAG is unpaused: its file rewritten with the start date now, and a wait
    /// (up to 45 s) until Airflow's next run is no longer a past tick. Otherwise Airflow runs the
    /// latest tick missed while paused, at once (see docs/airflow-facts.md).
    async fn restart_from_now(&self, handle: &DagHandle) -> Result<(), PluginError> {
        const RESTART_PARSE_WAIT: std::time::Duration = std::time::Duration::from_secs(45);
        let Some(mut spec) = std::fs::read_to_string(&handle.file).ok().as_deref().and_then(spec_in_file) else {
            return Ok(()); // no file of ours: reconciliation writes it
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        spec["start_date"] = serde_json::Value::String(crate::core::time::iso_utc(now));
        write_rendered(&self.dags, &handle.dag_id, &render(&spec))
            .map_err(|e| failed(format_args!("DAGs folder {}: {e}", self.dags.display())))?;
        // Unpaused before Airflow parsed the new start, the DAG would run the tick it missed.
        // A file is parsed again within Airflow's min_file_process_interval (30 s by default),
        // sooner on an idle machine.
        let deadline = std::time::Instant::now() + RESTART_PARSE_WAIT;
        loop {
            if std::time::Instant::now() >= deadline {
                tracing::warn!(
                    dag = handle.dag_id,
                    "Airflow has not parsed the DAG's new start yet; unpausing it anyway (it may run the tick it missed)"
                );
                break;
            }
            let Some(dag) = self.api.dag(&handle.dag_id).await.map_err(failed)? else {
                break;
            };
            let next = ["next_dagrun_run_after", "next_dagrun_create_after", "next_dagrun"]
                .iter()
                .find_map(|k| dag[*k].as_str())
                .and_then(crate::core::time::parse_instant);
            match next {
                Some(t) if t < now => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
                _ => break,
            }
        }
        Ok(())
    }

    async fn list_dags(&self, catalog: &str) -> Result<Vec<Handle>, PluginError> {
        let mut found = self.files_of(catalog);
        for dag_id in self.api.dags_tagged(&catalog_tag(catalog)).await.map_err(failed)? {
            if !found.iter().any(|h| h.dag_id == dag_id) {
                found.push(DagHandle {
                    file: self.dags.join(format!("{dag_id}.py")),
                    dag_id,
                    start_date: None,
                });
            }
        }
        Ok(found.iter().map(Handle::of).collect())
    }
}

impl Plugin for Airflow {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Airflow
    }

    fn check(&self, f: Freshness) -> Result<(), PluginError> {
        cron(f).map(|_| ()).map_err(|e| PluginError::Unschedulable(e.to_string()))
    }

    /// Writes the table's DAG and waits until Airflow shows it; undone on failure.
    fn register<'a>(&'a self, t: &'a Target<'a>, active: bool) -> BoxFuture<'a, Result<Handle, PluginError>> {
        Box::pin(self.register_dag(t, active))
    }

    /// Rewrites the table's DAG (a new schedule, from now); Airflow re-reads a changed file.
    fn reschedule<'a>(&'a self, h: &'a Handle, t: &'a Target<'a>) -> BoxFuture<'a, Result<Handle, PluginError>> {
        Box::pin(async move {
            let mut handle: DagHandle = h.parse("Airflow")?;
            // paused_on_create only counts when Airflow first sees a DAG: the pause state stays.
            let spec = self.spec(&handle.dag_id, t.start, t, true)?;
            self.write(&spec)?;
            handle.start_date = Some(t.start.to_string());
            Ok(Handle::of(&handle))
        })
    }

    /// Pauses the DAG, or unpauses it from now on: like the embedded scheduler, a resumed table
    /// is refreshed at its next tick, with no run for ticks missed while suspended.
    fn set_active<'a>(&'a self, h: &'a Handle, active: bool) -> BoxFuture<'a, Result<(), PluginError>> {
        Box::pin(async move {
            let handle: DagHandle = h.parse("Airflow")?;
            if active {
                self.restart_from_now(&handle).await?;
            }
            self.api.set_paused(&handle.dag_id, !active).await.map_err(failed)
        })
    }

    fn unregister<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), PluginError>> {
        Box::pin(async move { self.remove(&h.parse("Airflow")?).await })
    }

    fn reconcile<'a>(&'a self, h: &'a Handle, t: &'a Target<'a>, active: bool) -> BoxFuture<'a, Result<Repair, PluginError>> {
        Box::pin(self.reconcile_dag(h, t, active))
    }

    fn list<'a>(&'a self, catalog: &'a str) -> BoxFuture<'a, Result<Vec<Handle>, PluginError>> {
        Box::pin(self.list_dags(catalog))
    }

    fn key(&self, h: &Handle) -> String {
        h.0["dag_id"].as_str().unwrap_or_default().to_string()
    }

    fn summary(&self, h: &Handle) -> String {
        match h.parse::<DagHandle>("Airflow") {
            Ok(d) => format!("Airflow DAG {} ({})", d.dag_id, d.file.display()),
            Err(e) => e.to_string(),
        }
    }
}
