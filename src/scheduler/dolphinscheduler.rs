//! The Apache DolphinScheduler plug-in (3.2.x and 3.3.x): a FULL-mode table's schedule is a
//! workflow in one DolphinScheduler project (default `dyngate`) holding a single HTTP task that
//! POSTs to dyngate's refresh endpoint, released ONLINE, and a Quartz schedule on it. Suspending
//! puts the schedule offline, resuming online; dropping takes schedule and workflow offline and
//! deletes both. Everything goes through DolphinScheduler's v1 REST API (form-urlencoded
//! parameters, header `token`, envelope `{"code","msg","data"}`).
//!
//! What this module relies on, as read in apache/dolphinscheduler's source (3.2-era
//! `ProcessDefinitionController`, `SchedulerController`, `ProjectController`,
//! `TaskDefinitionController`, `HttpTask`; 3.3-era `WorkflowDefinitionController`,
//! `WorkflowDefinitionServiceImpl`, `SchedulerServiceImpl`, `HttpTask`, `HttpParameters`,
//! `CuringParamsServiceImpl`, `QuartzCornTriggerBuilder`, `BusinessTimeUtils`, `Status`):
//! - Paths: `/projects` (GET paginated with `searchVal`, POST `projectName`), `/projects/{pc}/
//!   task-definition/gen-task-codes?genNum=1`, `/projects/{pc}/process-definition` (3.2) or
//!   `/projects/{pc}/workflow-definition` (3.3) with `/{code}`, `/{code}/release` (`releaseState`)
//!   and `/query-by-name`, `/projects/{pc}/schedules` (POST with `processDefinitionCode` (3.2) or
//!   `workflowDefinitionCode` (3.3), GET paginated by the same parameter), `/schedules/{id}` (PUT,
//!   DELETE), `/schedules/{id}/online|offline`. The tenant is a schedule parameter (`tenantCode`)
//!   in both versions; neither version takes it when creating a workflow.
//! - Order: a schedule needs a released workflow (50004); an online schedule can be neither updated
//!   (10023) nor deleted (50023); an ONLINE workflow cannot be deleted (50021) nor edited (50008);
//!   taking a workflow OFFLINE takes its schedule offline too; deleting a workflow deletes its
//!   offline schedule. Gone things answer 10018 (project), 10022 / 10203 (schedule), 50003
//!   (workflow); 3.2 answers 10126 to a schedule put into the state it is in, 3.3 succeeds.
//! - Time: the schedule's `startTime` / `endTime` strings are read as wall-clock time in the
//!   schedule's `timezoneId` (`QuartzCornTriggerBuilder` converts them), and a start before now is
//!   moved to now when the schedule goes online, "to avoid misfires" (the trigger ignores
//!   misfires). dyngate has no time-zone database, so [`start_time`] sends the UTC wall clock of
//!   the target's start twelve hours early: before now in every zone (UTC-12 is the westernmost),
//!   so DolphinScheduler starts the trigger when the schedule goes online, never earlier.
//! - The task: `${system.datetime}` is the schedule time as `yyyyMMddHHmmss` in the schedule's
//!   time zone (the command of a scheduled run carries `schedule_timezone`), and
//!   `${system.workflow.instance.id}` the workflow instance's id, in both versions. The 3.2-era
//!   HTTP task (Apache HttpClient) builds its JSON body from the `BODY` entries of `httpParams`
//!   (string values); a raw `httpBody` came with PR #15531 (January 2024; which 3.2.x releases
//!   carry it the stored sources do not say), so for 3.2 [`task_params`] sends the same flat
//!   fields both ways. The 3.3 task (OkHttp, DSIP-60, PR #16413) reads the raw `httpBody`,
//!   parses it with `JSONUtils.toMap` into string pairs (nested values fail: issue #17389) and
//!   ignores `BODY` entries for POST. The 3.3 source names the Java fields
//!   `httpRequestMethod`, `httpRequestParams`, `httpRequestBody` and (on the dev branch) maps them
//!   to the JSON names `httpMethod`, `httpParams`, `httpBody`, so for 3.3 [`task_params`] sends
//!   both spellings: DolphinScheduler ignores unknown properties. Only status 200 counts as
//!   success; the 3.3 task uses `connectTimeout` for connecting, reading and writing.
//!
//! DolphinScheduler has no secret store for HTTP tasks: the refresh endpoint's bearer token
//! (`Config::refresh_token`) is a header parameter of the task, visible to every DolphinScheduler
//! user who can read the workflow.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{BoxFuture, Handle, Plugin, PluginError, Repair, Target};
use crate::core::rules::Freshness;
use crate::core::{SchedulerKind, rules};
use crate::http_client::{self as client, Auth, Body, Endpoint, Response};

const SERVICE: &str = "DolphinScheduler";

/// The DolphinScheduler line the API speaks: 3.3.0 renamed "process" to "workflow" in paths and
/// parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    V3_2,
    V3_3,
}

impl Version {
    /// `3.2`, `3.3`, or a release of them (`3.2.2`, `3.3.0`).
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.trim().split('.');
        let (major, minor) = (parts.next()?, parts.next()?);
        let patch_ok = match (parts.next(), parts.next()) {
            (None, _) => true,
            (Some(p), None) => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
            _ => false,
        };
        match (major, minor, patch_ok) {
            ("3", "2", true) => Some(Version::V3_2),
            ("3", "3", true) => Some(Version::V3_3),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Version::V3_2 => "3.2",
            Version::V3_3 => "3.3",
        }
    }

    /// The path segment of workflow definitions under a project.
    pub fn workflows(self) -> &'static str {
        match self {
            Version::V3_2 => "process-definition",
            Version::V3_3 => "workflow-definition",
        }
    }

    /// The parameter naming a workflow in the schedule endpoints.
    pub fn code_param(self) -> &'static str {
        match self {
            Version::V3_2 => "processDefinitionCode",
            Version::V3_3 => "workflowDefinitionCode",
        }
    }

    /// The key of the definition in a workflow's detail (`DagData`).
    fn definition_key(self) -> &'static str {
        match self {
            Version::V3_2 => "processDefinition",
            Version::V3_3 => "workflowDefinition",
        }
    }
}

/// How dyngate reaches DolphinScheduler and what it creates there.
#[derive(Clone)]
pub struct Config {
    /// The API server's base URL, `http://host:12345/dolphinscheduler`.
    pub endpoint: Endpoint,
    /// An access token (Security > Token manage), sent as the `token` header.
    pub token: String,
    /// The project holding dyngate's workflows, created when missing (default `dyngate`).
    pub project: String,
    pub version: Version,
    /// dyngate's `POST /v3/dynamic-tables/refresh` as DolphinScheduler's workers reach it.
    pub refresh_url: String,
    /// The refresh endpoint's bearer token, if it has one. DolphinScheduler has no secret store
    /// for HTTP tasks: it is an `Authorization` header parameter of the task, visible to every
    /// DolphinScheduler user who can read the workflow.
    pub refresh_token: Option<String>,
    /// The worker group running the HTTP tasks (default `default`).
    pub worker_group: String,
    /// The tenant the schedules run as (`tenantCode`, a schedule parameter in 3.2 and 3.3;
    /// default `default`).
    pub tenant: String,
}

impl Config {
    /// A configuration with the defaults: project `dyngate`, worker group and tenant `default`,
    /// no refresh token.
    pub fn new(endpoint: Endpoint, token: impl Into<String>, version: Version, refresh_url: impl Into<String>) -> Config {
        Config {
            endpoint,
            token: token.into(),
            project: "dyngate".into(),
            version,
            refresh_url: refresh_url.into(),
            refresh_token: None,
            worker_group: "default".into(),
            tenant: "default".into(),
        }
    }
}

/// Never prints the tokens.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("endpoint", &self.endpoint)
            .field("token", &"***")
            .field("project", &self.project)
            .field("version", &self.version)
            .field("refresh_url", &self.refresh_url)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .field("worker_group", &self.worker_group)
            .field("tenant", &self.tenant)
            .finish()
    }
}

/// What the catalog keeps of a table's workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowHandle {
    pub project_code: i64,
    pub workflow_code: i64,
    pub workflow_name: String,
    pub task_code: i64,
    /// None while a listed workflow has no schedule.
    pub schedule_id: Option<i64>,
    /// The DolphinScheduler line it was made with ("3.2", "3.3").
    pub version: String,
}

// ---------------------------------------------------------------------------------------------
// Pure parts.

/// The Quartz cron of a freshness (seconds first, 7 fields), as DolphinScheduler schedules it.
pub fn cron(f: Freshness) -> Result<String, PluginError> {
    rules::full_mode_cron(f).map_err(|e| PluginError::Unschedulable(e.to_string()))
}

/// The marker in a workflow's description naming the catalog that owns it.
pub const CATALOG_MARK: &str = "dyngate-catalog:";

/// Every schedule ends here (DolphinScheduler needs an end).
pub const END_TIME: &str = "2100-01-01 00:00:00";

/// What DolphinScheduler substitutes with the schedule time (`yyyyMMddHHmmss`, the schedule's
/// time zone) and with the workflow instance's id.
pub const SCHEDULE_TIME: &str = "${system.datetime}";
pub const RUN_ID: &str = "${system.workflow.instance.id}";

/// The name of the task in each workflow.
pub const TASK_NAME: &str = "refresh";

/// DolphinScheduler's description limit (`checkDescriptionLength`).
const DESCRIPTION_MAX: usize = 255;

/// A schedule's `startTime` for a target starting at `start` (ISO 8601 with an offset): the UTC
/// wall clock twelve hours earlier, `yyyy-MM-dd HH:mm:ss` (see the module's doc: DolphinScheduler
/// reads it in the schedule's time zone and starts a past start when the schedule goes online).
pub fn start_time(start: &str) -> Result<String, PluginError> {
    let t = crate::core::time::parse_instant(start).ok_or_else(|| PluginError::Failed(format!("{SERVICE}: bad start time {start:?}")))?;
    Ok(wall_clock(t - 12 * 3600))
}

/// Seconds since the epoch as `yyyy-MM-dd HH:mm:ss`, UTC.
pub fn wall_clock(t: i64) -> String {
    crate::core::time::wall_clock_utc(t)
}

/// A table's workflow name: `dyngate__<database>__<schema>__<table>__<hash>`, the names cleaned
/// (characters other than ASCII letters, digits, `_` and `-` become `_`) and shortened, with 8 hex
/// digits of a hash of the catalog, the exact names and the table's id: tables whose names differ
/// only in cleaned characters, catalogs sharing one project and a table created again under an
/// old name all get workflows of their own. At most 113 characters.
pub fn workflow_name(catalog: &str, database: &str, schema: &str, table: &str, table_id: i64) -> String {
    super::schedule_name(catalog, database, schema, table, table_id, [20, 30, 40])
}

/// A workflow's description: the catalog marker first (so that [`owned_by`] finds it however
/// long the rest is), then the table; at most DolphinScheduler's 255 characters.
pub fn description(catalog: &str, table: &str) -> String {
    let text = format!("{CATALOG_MARK}{catalog} table {table} (managed by dyngate: do not edit)");
    text.chars().take(DESCRIPTION_MAX).collect()
}

/// Whether a workflow's description marks it as `catalog`'s.
pub fn owned_by(description: &str, catalog: &str) -> bool {
    !catalog.is_empty()
        && description
            .split_whitespace()
            .any(|w| w.strip_prefix(CATALOG_MARK) == Some(catalog))
}

/// The refresh call's body fields, flat (string values only: the 3.3 task parses the body into
/// string pairs, the 3.2 task sends string pairs): the table as the endpoint names it, the
/// schedule time placeholder, and `configuration` as a JSON object in a string holding the
/// target's configuration plus `dolphinscheduler.workflow`, `dolphinscheduler.time_zone` (the
/// zone `scheduleTime` is wall-clock time in) and `scheduler.run_id` (the workflow instance's id,
/// recorded as the history row's run id), which win over the target's keys of the same names.
pub fn refresh_fields(t: &Target<'_>, workflow: &str) -> Vec<(&'static str, String)> {
    let mut conf: BTreeMap<String, String> = t.configuration.clone();
    conf.insert("dolphinscheduler.workflow".into(), workflow.into());
    conf.insert("dolphinscheduler.time_zone".into(), t.time_zone.into());
    conf.insert("scheduler.run_id".into(), RUN_ID.into());
    vec![
        ("tables", t.endpoint_name()),
        ("scheduleTime", SCHEDULE_TIME.into()),
        // A map of strings always serializes.
        ("configuration", serde_json::to_string(&conf).unwrap_or_default()),
    ]
}

/// The raw JSON body of `fields` (keys in the order given).
pub fn raw_body(fields: &[(&str, String)]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{}", Value::from(*k), Value::from(v.as_str())))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// Refuses a target whose text DolphinScheduler would take for its own placeholders (`${...}`,
/// `$[...]`): it substitutes them in the task's URL, parameters and body.
pub fn check_placeholders(t: &Target<'_>, refresh_url: &str) -> Result<(), PluginError> {
    let name = t.endpoint_name();
    let texts = std::iter::once(name.as_str())
        .chain(std::iter::once(refresh_url))
        .chain(t.configuration.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]));
    for text in texts {
        if text.contains("${") || text.contains("$[") {
            return Err(PluginError::Unschedulable(format!(
                "{SERVICE} would replace '{text}' in the refresh task: it reads ${{...}} and $[...] as its own placeholders"
            )));
        }
    }
    Ok(())
}

/// The HTTP task's `taskParams` (see the module's doc for the two shapes).
pub fn task_params(version: Version, url: &str, refresh_token: Option<&str>, fields: &[(&str, String)]) -> Value {
    let headers: Vec<Value> = refresh_token
        .map(|tk| json!({"prop": "Authorization", "httpParametersType": "HEADERS", "value": format!("Bearer {tk}")}))
        .into_iter()
        .collect();
    let body = raw_body(fields);
    let mut p = json!({
        "localParams": [],
        "resourceList": [],
        "url": url,
        "httpMethod": "POST",
        "httpBody": body,
        "httpCheckCondition": "STATUS_CODE_DEFAULT",
        "condition": "",
        "connectTimeout": 60000,
        "socketTimeout": 60000,
    });
    match version {
        Version::V3_2 => {
            let mut params = headers;
            params.extend(
                fields
                    .iter()
                    .map(|(k, v)| json!({"prop": k, "httpParametersType": "BODY", "value": v})),
            );
            p["httpParams"] = Value::Array(params);
        }
        Version::V3_3 => {
            p["httpRequestMethod"] = json!("POST");
            p["httpParams"] = Value::Array(headers.clone());
            p["httpRequestParams"] = Value::Array(headers);
            p["httpRequestBody"] = json!(body);
        }
    }
    p
}

/// What of a task's parameters dyngate sets (URL, method, parameters, body), to compare the
/// task DolphinScheduler holds with the one wanted whatever defaults it added.
fn task_fingerprint(p: &Value) -> Value {
    let pick = |a: &str, b: &str| {
        p.get(a)
            .filter(|v| !v.is_null())
            .or_else(|| p.get(b))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let params: Vec<Value> = pick("httpRequestParams", "httpParams")
        .as_array()
        .map(|a| a.iter().map(|i| json!([i["prop"], i["httpParametersType"], i["value"]])).collect())
        .unwrap_or_default();
    json!({
        "url": p["url"],
        "method": pick("httpRequestMethod", "httpMethod"),
        "params": params,
        "body": pick("httpRequestBody", "httpBody"),
    })
}

/// The workflow's `taskDefinitionJson`: one HTTP task, retried twice a minute apart (the
/// endpoint is idempotent per table and schedule time).
pub fn task_definition_json(task_code: i64, params: &Value, worker_group: &str) -> String {
    json!([{
        "code": task_code,
        "name": TASK_NAME,
        "description": "dyngate: refresh the dynamic table",
        "taskType": "HTTP",
        "taskParams": params,
        "flag": "YES",
        "taskPriority": "MEDIUM",
        "workerGroup": worker_group,
        "environmentCode": -1,
        "failRetryTimes": 2,
        "failRetryInterval": 1,
        "timeoutFlag": "CLOSE",
        "timeout": 0,
        "delayTime": 0,
        "isCache": "NO",
        "taskExecuteType": "BATCH",
    }])
    .to_string()
}

/// The workflow's `taskRelationJson`: the task has no predecessor.
pub fn task_relation_json(task_code: i64) -> String {
    json!([{
        "name": "",
        "preTaskCode": 0,
        "preTaskVersion": 0,
        "postTaskCode": task_code,
        "postTaskVersion": 0,
        "conditionType": "NONE",
        "conditionParams": {},
    }])
    .to_string()
}

/// Where the UI draws the task.
pub fn locations_json(task_code: i64) -> String {
    json!([{"taskCode": task_code, "x": 120, "y": 120}]).to_string()
}

/// A schedule's `schedule` parameter.
pub fn schedule_json(cron: &str, time_zone: &str, start: &str) -> String {
    json!({"startTime": start, "endTime": END_TIME, "timezoneId": time_zone, "crontab": cron}).to_string()
}

/// A DolphinScheduler answer that is not a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Not reached, or no answer in time (the client's message names the address, never the
    /// token).
    #[error("{0}")]
    Unreachable(String),
    #[error("it refused the access token (HTTP 401): check the token dyngate is configured with")]
    Unauthorized,
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("an answer that is not its envelope (HTTP {status}): {body}")]
    NotEnvelope { status: u16, body: String },
    /// A business error: the envelope's `code` and `msg`.
    #[error("code {code}: {msg}")]
    Refused { code: i64, msg: String },
}

impl ApiError {
    fn code(&self) -> Option<i64> {
        match self {
            ApiError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The thing acted on is gone: project (10018), schedule (10022, 10203), workflow (50003).
    fn gone(&self) -> bool {
        matches!(self.code(), Some(10018 | 10022 | 10203 | 50003))
    }
}

/// The `data` of a successful answer (200, or 201 from a create), else what went wrong, with
/// `secrets` hidden: DolphinScheduler's validation errors repeat the parameters they were sent
/// (a task definition holds the refresh endpoint's token).
pub fn envelope(r: &Response, secrets: &[&str]) -> Result<Value, ApiError> {
    match r.status {
        200 | 201 => {}
        401 => return Err(ApiError::Unauthorized),
        status => {
            return Err(ApiError::Status {
                status,
                body: r.snippet_without(secrets),
            });
        }
    }
    let not = || ApiError::NotEnvelope {
        status: r.status,
        body: r.snippet_without(secrets),
    };
    let v = r.json().map_err(|_| not())?;
    let code = v.get("code").and_then(Value::as_i64).ok_or_else(not)?;
    if code != 0 {
        return Err(ApiError::Refused {
            code,
            msg: client::scrub(v.get("msg").and_then(Value::as_str).unwrap_or(""), secrets),
        });
    }
    Ok(v.get("data").cloned().unwrap_or(Value::Null))
}

/// A step's failure as the plug-in reports it.
fn failed(step: &str, e: ApiError) -> PluginError {
    PluginError::Failed(format!("{SERVICE}: {step} failed: {e}"))
}

/// A code in DolphinScheduler's JSON (a number; a string in some answers).
fn as_code(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// A release state (`ONLINE`, or 1 in old answers).
fn is_online(v: &Value) -> bool {
    v.as_str() == Some("ONLINE") || v.as_i64() == Some(1)
}

// ---------------------------------------------------------------------------------------------
// The REST calls.

/// A workflow as DolphinScheduler shows it.
#[derive(Debug, Clone)]
struct WorkflowInfo {
    online: bool,
    task_code: Option<i64>,
    task_params: Option<Value>,
}

/// A schedule as DolphinScheduler shows it.
#[derive(Debug, Clone)]
struct ScheduleInfo {
    id: i64,
    crontab: String,
    time_zone: String,
    online: bool,
}

/// The schedule a target wants.
struct Wanted {
    cron: String,
    time_zone: String,
    start: String,
}

/// The DolphinScheduler plug-in.
pub struct DolphinScheduler {
    cfg: Config,
}

impl DolphinScheduler {
    pub fn new(cfg: Config) -> DolphinScheduler {
        DolphinScheduler { cfg }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    async fn call(&self, method: &str, path: &str, form: &[(&str, String)]) -> Result<Value, ApiError> {
        let body = if form.is_empty() { Body::None } else { Body::Form(form) };
        let r = self
            .cfg
            .endpoint
            .send(method, path, &Auth::Header("token", self.cfg.token.clone()), body)
            .await
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        envelope(&r, &[&self.cfg.token, self.cfg.refresh_token.as_deref().unwrap_or_default()])
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ApiError> {
        self.call("GET", &format!("{path}?{}", client::form(query)), &[]).await
    }

    /// Every item of a paginated list (`data.totalList`, `data.total`).
    async fn pages(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<Value>, ApiError> {
        const SIZE: usize = 100;
        let mut items = Vec::new();
        for page in 1..=1000 {
            let mut q = query.to_vec();
            q.push(("pageNo", page.to_string()));
            q.push(("pageSize", SIZE.to_string()));
            let data = self.get(path, &q).await?;
            let list = data.get("totalList").and_then(Value::as_array).cloned().unwrap_or_default();
            let total = data.get("total").and_then(Value::as_u64).unwrap_or(0) as usize;
            let n = list.len();
            items.extend(list);
            if n < SIZE || items.len() >= total {
                break;
            }
        }
        Ok(items)
    }

    fn workflows(&self, pc: i64) -> String {
        format!("/projects/{pc}/{}", self.cfg.version.workflows())
    }

    /// The project's code, if it exists.
    async fn find_project(&self) -> Result<Option<i64>, ApiError> {
        let items = self.pages("/projects", &[("searchVal", self.cfg.project.clone())]).await?;
        Ok(items
            .iter()
            .find(|p| p["name"].as_str() == Some(self.cfg.project.as_str()))
            .and_then(|p| as_code(&p["code"])))
    }

    /// The project's code, creating the project when missing.
    async fn ensure_project(&self) -> Result<i64, PluginError> {
        let step = format!("looking up project {}", self.cfg.project);
        if let Some(pc) = self.find_project().await.map_err(|e| failed(&step, e))? {
            return Ok(pc);
        }
        let form = [
            ("projectName", self.cfg.project.clone()),
            ("description", "Dynamic tables' refresh workflows, managed by dyngate".to_string()),
        ];
        match self.call("POST", "/projects", &form).await {
            Ok(data) => as_code(&data["code"]).ok_or_else(|| {
                failed(
                    &format!("creating project {}", self.cfg.project),
                    ApiError::NotEnvelope {
                        status: 201,
                        body: "no project code in the answer".into(),
                    },
                )
            }),
            // Created meanwhile by another gateway.
            Err(ApiError::Refused { code: 10019, .. }) => self.find_project().await.map_err(|e| failed(&step, e))?.ok_or_else(|| {
                PluginError::Failed(format!(
                    "{SERVICE}: project {} exists but is not visible to dyngate's user",
                    self.cfg.project
                ))
            }),
            Err(e) => Err(failed(&format!("creating project {}", self.cfg.project), e)),
        }
    }

    async fn gen_task_code(&self, pc: i64) -> Result<i64, ApiError> {
        let data = self
            .get(&format!("/projects/{pc}/task-definition/gen-task-codes"), &[("genNum", "1".into())])
            .await?;
        data.get(0).and_then(as_code).ok_or(ApiError::NotEnvelope {
            status: 200,
            body: "no task code in the answer".into(),
        })
    }

    fn workflow_form(&self, name: &str, desc: &str, task_code: i64, params: &Value) -> Vec<(&'static str, String)> {
        vec![
            ("name", name.to_string()),
            ("description", desc.to_string()),
            ("globalParams", "[]".to_string()),
            ("locations", locations_json(task_code)),
            ("timeout", "0".to_string()),
            ("taskRelationJson", task_relation_json(task_code)),
            (
                "taskDefinitionJson",
                task_definition_json(task_code, params, &self.cfg.worker_group),
            ),
            ("executionType", "PARALLEL".to_string()),
        ]
    }

    async fn create_workflow(&self, pc: i64, name: &str, desc: &str, task_code: i64, params: &Value) -> Result<i64, ApiError> {
        let data = self
            .call("POST", &self.workflows(pc), &self.workflow_form(name, desc, task_code, params))
            .await?;
        as_code(&data["code"]).ok_or(ApiError::NotEnvelope {
            status: 201,
            body: "no workflow code in the answer".into(),
        })
    }

    async fn release(&self, pc: i64, code: i64, name: &str, online: bool) -> Result<(), ApiError> {
        let state = if online { "ONLINE" } else { "OFFLINE" };
        let form = [("name", name.to_string()), ("releaseState", state.to_string())];
        self.call("POST", &format!("{}/{code}/release", self.workflows(pc)), &form)
            .await
            .map(|_| ())
    }

    /// A workflow's detail (`DagData`), None when it (or its project) is gone.
    async fn workflow(&self, pc: i64, code: i64) -> Result<Option<WorkflowInfo>, ApiError> {
        match self.get(&format!("{}/{code}", self.workflows(pc)), &[]).await {
            Ok(data) => Ok(Some(workflow_info(&data, self.cfg.version))),
            Err(e) if e.gone() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The schedule of a workflow, None when it has none (or is gone).
    async fn schedule_of(&self, pc: i64, code: i64) -> Result<Option<ScheduleInfo>, ApiError> {
        let param = self.cfg.version.code_param();
        let q = [(param, code.to_string()), ("pageNo", "1".into()), ("pageSize", "10".into())];
        let data = match self.get(&format!("/projects/{pc}/schedules"), &q).await {
            Ok(d) => d,
            Err(e) if e.gone() => return Ok(None),
            Err(e) => return Err(e),
        };
        let list = data.get("totalList").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(list
            .iter()
            .find(|s| {
                let c = s
                    .get(param)
                    .or_else(|| s.get("processDefinitionCode"))
                    .or_else(|| s.get("workflowDefinitionCode"));
                // Only a schedule that names the workflow: never another's.
                c.and_then(as_code) == Some(code)
            })
            .and_then(|s| {
                Some(ScheduleInfo {
                    id: as_code(&s["id"])?,
                    crontab: s["crontab"].as_str().unwrap_or("").to_string(),
                    time_zone: s["timezoneId"].as_str().unwrap_or("").to_string(),
                    online: is_online(&s["releaseState"]),
                })
            }))
    }

    fn schedule_form(&self, w: &Wanted) -> Vec<(&'static str, String)> {
        vec![
            ("schedule", schedule_json(&w.cron, &w.time_zone, &w.start)),
            ("warningType", "NONE".into()),
            ("warningGroupId", "0".into()),
            ("failureStrategy", "END".into()),
            ("workerGroup", self.cfg.worker_group.clone()),
            ("tenantCode", self.cfg.tenant.clone()),
            ("environmentCode", "-1".into()),
        ]
    }

    async fn create_schedule(&self, pc: i64, code: i64, w: &Wanted) -> Result<i64, ApiError> {
        let mut form = vec![(self.cfg.version.code_param(), code.to_string())];
        form.extend(self.schedule_form(w));
        let data = self.call("POST", &format!("/projects/{pc}/schedules"), &form).await?;
        as_code(&data["id"]).ok_or(ApiError::NotEnvelope {
            status: 201,
            body: "no schedule id in the answer".into(),
        })
    }

    async fn update_schedule(&self, pc: i64, id: i64, w: &Wanted) -> Result<(), ApiError> {
        self.call("PUT", &format!("/projects/{pc}/schedules/{id}"), &self.schedule_form(w))
            .await
            .map(|_| ())
    }

    /// Gives schedule `s` the wanted cron and time zone, taking it offline first when it is
    /// `online` (DolphinScheduler changes only offline schedules). It is left offline.
    async fn change_schedule(&self, pc: i64, s: &ScheduleInfo, w: &Wanted, online: bool) -> Result<(), PluginError> {
        if online {
            self.schedule_state(pc, s.id, false)
                .await
                .map_err(|e| failed(&format!("putting schedule {} offline to change it", s.id), e))?;
        }
        self.update_schedule(pc, s.id, w)
            .await
            .map_err(|e| failed(&format!("updating schedule {}", s.id), e))
    }

    /// Puts a schedule online or offline; already so is fine (3.2 answers 10126).
    async fn schedule_state(&self, pc: i64, id: i64, online: bool) -> Result<(), ApiError> {
        let what = if online { "online" } else { "offline" };
        match self.call("POST", &format!("/projects/{pc}/schedules/{id}/{what}"), &[]).await {
            Ok(_) | Err(ApiError::Refused { code: 10126, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Updates the workflow's task: OFFLINE (which takes the schedule offline too), update,
    /// ONLINE again. On failure the workflow is released again (best effort) so that it keeps
    /// running its old task.
    async fn update_task(&self, h: &WorkflowHandle, desc: &str, params: &Value) -> Result<(), PluginError> {
        let (pc, code, name) = (h.project_code, h.workflow_code, h.workflow_name.as_str());
        self.release(pc, code, name, false)
            .await
            .map_err(|e| failed(&format!("taking workflow {name} OFFLINE to update its task"), e))?;
        let form = self.workflow_form(name, desc, h.task_code, params);
        let updated = self.call("PUT", &format!("{}/{code}", self.workflows(pc)), &form).await;
        let released = self.release(pc, code, name, true).await;
        updated.map_err(|e| failed(&format!("updating the task of workflow {name}"), e))?;
        released.map_err(|e| failed(&format!("releasing workflow {name} ONLINE"), e))
    }

    /// Removes a workflow and its schedule; what is gone already counts as removed. Every step is
    /// tried even after one failed (an undo must remove what it can); the first failure is
    /// reported.
    async fn remove(&self, h: &WorkflowHandle) -> Result<(), PluginError> {
        let (pc, code, name) = (h.project_code, h.workflow_code, h.workflow_name.as_str());
        let mut first: Option<PluginError> = None;
        let mut note = |step: String, r: Result<(), ApiError>| match r {
            Err(e) if !e.gone() => {
                first.get_or_insert(failed(&step, e));
            }
            _ => {}
        };
        let schedule = match h.schedule_id {
            Some(id) => Some(id),
            None => match self.schedule_of(pc, code).await {
                Ok(s) => s.map(|s| s.id),
                Err(e) => {
                    note(format!("looking up the schedule of workflow {name}"), Err(e));
                    None
                }
            },
        };
        if let Some(id) = schedule {
            note(format!("putting schedule {id} offline"), self.schedule_state(pc, id, false).await);
            let deleted = self.call("DELETE", &format!("/projects/{pc}/schedules/{id}"), &[]).await;
            note(format!("deleting schedule {id}"), deleted.map(|_| ()));
        }
        note(format!("taking workflow {name} OFFLINE"), self.release(pc, code, name, false).await);
        let deleted = self.call("DELETE", &format!("{}/{code}", self.workflows(pc)), &[]).await;
        note(format!("deleting workflow {name}"), deleted.map(|_| ()));
        first.map_or(Ok(()), Err)
    }

    /// A workflow left under `name` by an earlier attempt (a failed undo, a catalog change that
    /// did not commit): removed when this catalog owns it, else reported.
    async fn remove_leftover(&self, pc: i64, name: &str, catalog: &str) -> Result<(), PluginError> {
        let step = format!("looking up the existing workflow {name}");
        let data = self
            .get(&format!("{}/query-by-name", self.workflows(pc)), &[("name", name.to_string())])
            .await
            .map_err(|e| failed(&step, e))?;
        let def = definition(&data, self.cfg.version);
        let desc = def["description"].as_str().unwrap_or("");
        let code = as_code(&def["code"]).ok_or_else(|| {
            failed(
                &step,
                ApiError::NotEnvelope {
                    status: 200,
                    body: "no workflow code in the answer".into(),
                },
            )
        })?;
        if !owned_by(desc, catalog) {
            return Err(PluginError::Conflict(format!(
                "{SERVICE}: project {} already has a workflow named {name} that this catalog does not own",
                self.cfg.project
            )));
        }
        let leftover = WorkflowHandle {
            project_code: pc,
            workflow_code: code,
            workflow_name: name.to_string(),
            task_code: 0,
            schedule_id: None,
            version: self.cfg.version.name().into(),
        };
        self.remove(&leftover).await
    }

    fn wanted(&self, t: &Target<'_>) -> Result<Wanted, PluginError> {
        check_placeholders(t, &self.cfg.refresh_url)?;
        Ok(Wanted {
            cron: cron(t.freshness)?,
            time_zone: t.time_zone.to_string(),
            start: start_time(t.start)?,
        })
    }

    fn params(&self, t: &Target<'_>, name: &str) -> Value {
        task_params(
            self.cfg.version,
            &self.cfg.refresh_url,
            self.cfg.refresh_token.as_deref(),
            &refresh_fields(t, name),
        )
    }

    async fn register_workflow(&self, t: &Target<'_>, active: bool) -> Result<WorkflowHandle, PluginError> {
        let w = self.wanted(t)?;
        let pc = self.ensure_project().await?;
        let task_code = self.gen_task_code(pc).await.map_err(|e| failed("generating a task code", e))?;
        let name = workflow_name(t.catalog, t.database, t.schema, t.table, t.table_id);
        let desc = description(t.catalog, &t.endpoint_name());
        let params = self.params(t, &name);
        let step = format!("creating workflow {name} in project {}", self.cfg.project);
        let workflow_code = match self.create_workflow(pc, &name, &desc, task_code, &params).await {
            Ok(c) => c,
            Err(ApiError::Refused { code: 10168, .. }) => {
                self.remove_leftover(pc, &name, t.catalog).await?;
                self.create_workflow(pc, &name, &desc, task_code, &params)
                    .await
                    .map_err(|e| failed(&step, e))?
            }
            Err(e) => return Err(failed(&step, e)),
        };
        let mut h = WorkflowHandle {
            project_code: pc,
            workflow_code,
            workflow_name: name,
            task_code,
            schedule_id: None,
            version: self.cfg.version.name().into(),
        };
        if let Err(e) = self.schedule_new(&mut h, &w, active).await {
            // Undo what was made (best effort): the error is the one to report.
            let _ = self.remove(&h).await;
            return Err(e);
        }
        Ok(h)
    }

    /// Releases a new workflow, creates its schedule, online if `active`.
    async fn schedule_new(&self, h: &mut WorkflowHandle, w: &Wanted, active: bool) -> Result<(), PluginError> {
        let (pc, code) = (h.project_code, h.workflow_code);
        self.release(pc, code, &h.workflow_name, true)
            .await
            .map_err(|e| failed(&format!("releasing workflow {} ONLINE", h.workflow_name), e))?;
        let id = self
            .create_schedule(pc, code, w)
            .await
            .map_err(|e| failed(&format!("creating the schedule of workflow {}", h.workflow_name), e))?;
        h.schedule_id = Some(id);
        if active {
            self.schedule_state(pc, id, true)
                .await
                .map_err(|e| failed(&format!("putting schedule {id} online"), e))?;
        }
        Ok(())
    }

    /// Gives the workflow the target's task and schedule, keeping the schedule's online state. A
    /// failure part-way leaves a changed part changed (the caller's transaction then rolls back,
    /// and reconciliation puts the schedule back to what the catalog says).
    async fn reschedule_workflow(&self, h: &WorkflowHandle, t: &Target<'_>) -> Result<WorkflowHandle, PluginError> {
        let w = self.wanted(t)?;
        let (pc, code, name) = (h.project_code, h.workflow_code, h.workflow_name.as_str());
        let wf = self
            .workflow(pc, code)
            .await
            .map_err(|e| failed(&format!("reading workflow {name}"), e))?
            .ok_or_else(|| PluginError::Failed(format!("{SERVICE}: workflow {name} is gone (reconciliation creates it again)")))?;
        let s = self
            .schedule_of(pc, code)
            .await
            .map_err(|e| failed(&format!("looking up the schedule of workflow {name}"), e))?
            .ok_or_else(|| {
                PluginError::Failed(format!(
                    "{SERVICE}: the schedule of workflow {name} is gone (reconciliation creates it again)"
                ))
            })?;
        let changed = async {
            let mut online = s.online;
            let params = self.params(t, name);
            if wf.task_params.as_ref().map(task_fingerprint) != Some(task_fingerprint(&params)) {
                // (Taking the workflow OFFLINE for this takes the schedule offline too.)
                self.update_task(h, &description(t.catalog, &t.endpoint_name()), &params).await?;
                online = false;
            }
            if s.crontab != w.cron || s.time_zone != w.time_zone {
                self.change_schedule(pc, &s, &w, online).await?;
                online = false;
            }
            if s.online && !online {
                self.schedule_state(pc, s.id, true)
                    .await
                    .map_err(|e| failed(&format!("putting schedule {} online again", s.id), e))?;
            }
            Ok::<_, PluginError>(())
        }
        .await;
        if let Err(e) = changed {
            // Whatever step failed, an active table's schedule stays online (best effort; the
            // reconciliation loop puts the rest right).
            if s.online {
                let _ = self.schedule_state(pc, s.id, true).await;
            }
            return Err(e);
        }
        Ok(WorkflowHandle {
            schedule_id: Some(s.id),
            ..h.clone()
        })
    }

    async fn set_schedule_active(&self, h: &WorkflowHandle, active: bool) -> Result<(), PluginError> {
        let id = match h.schedule_id {
            Some(id) => id,
            None => {
                self.schedule_of(h.project_code, h.workflow_code)
                    .await
                    .map_err(|e| failed(&format!("looking up the schedule of workflow {}", h.workflow_name), e))?
                    .ok_or_else(|| PluginError::Failed(format!("{SERVICE}: workflow {} has no schedule", h.workflow_name)))?
                    .id
            }
        };
        let what = if active { "online" } else { "offline" };
        self.schedule_state(h.project_code, id, active)
            .await
            .map_err(|e| failed(&format!("putting schedule {id} {what}"), e))
    }

    async fn reconcile_workflow(&self, h: &WorkflowHandle, t: &Target<'_>, active: bool) -> Result<Repair, PluginError> {
        let w = self.wanted(t)?;
        let (pc, code, name) = (h.project_code, h.workflow_code, h.workflow_name.as_str());
        let Some(wf) = self
            .workflow(pc, code)
            .await
            .map_err(|e| failed(&format!("reading workflow {name}"), e))?
        else {
            let new = self.register_workflow(t, active).await?;
            return Ok(Repair::Recreated(Handle::of(&new)));
        };
        let found = self
            .schedule_of(pc, code)
            .await
            .map_err(|e| failed(&format!("looking up the schedule of workflow {name}"), e))?;
        let mut notes = Vec::new();
        let params = self.params(t, name);
        if wf.task_params.as_ref().map(task_fingerprint) != Some(task_fingerprint(&params)) {
            self.update_task(h, &description(t.catalog, &t.endpoint_name()), &params).await?;
            notes.push("task updated".to_string());
        } else if !wf.online {
            self.release(pc, code, name, true)
                .await
                .map_err(|e| failed(&format!("releasing workflow {name} ONLINE"), e))?;
            notes.push("workflow released ONLINE".to_string());
        }
        let Some(s) = found else {
            let mut new = h.clone();
            new.task_code = wf.task_code.unwrap_or(h.task_code);
            let id = self
                .create_schedule(pc, code, &w)
                .await
                .map_err(|e| failed(&format!("creating the schedule of workflow {name} again"), e))?;
            new.schedule_id = Some(id);
            if active {
                self.schedule_state(pc, id, true)
                    .await
                    .map_err(|e| failed(&format!("putting schedule {id} online"), e))?;
            }
            // Updated, not Recreated: the workflow is the one the catalog names, and must not be
            // removed should the catalog fail to record the new schedule (the next round finds it).
            notes.push(format!("schedule {id} created again"));
            return Ok(Repair::Updated {
                handle: Handle::of(&new),
                fixes: notes,
            });
        };
        // Taking the workflow OFFLINE took the schedule offline.
        let mut online = s.online && notes.is_empty();
        if s.crontab != w.cron || s.time_zone != w.time_zone {
            self.change_schedule(pc, &s, &w, online).await?;
            online = false;
            notes.push(format!("schedule {} {} -> {} {}", s.crontab, s.time_zone, w.cron, w.time_zone));
        }
        if online != active {
            self.schedule_state(pc, s.id, active).await.map_err(|e| {
                failed(
                    &format!("putting schedule {} {}", s.id, if active { "online" } else { "offline" }),
                    e,
                )
            })?;
        }
        if s.online != active {
            notes.push(format!("schedule put {}", if active { "online" } else { "offline" }));
        }
        if h.schedule_id != Some(s.id) {
            // The catalog's handle named another schedule: keep the one found.
            notes.push(format!("the catalog now names schedule {}", s.id));
            return Ok(Repair::Updated {
                handle: Handle::of(&WorkflowHandle {
                    schedule_id: Some(s.id),
                    ..h.clone()
                }),
                fixes: notes,
            });
        }
        Ok(Repair::InPlace(notes))
    }

    async fn list_workflows(&self, catalog: &str) -> Result<Vec<Handle>, PluginError> {
        let step = format!("listing the workflows of project {}", self.cfg.project);
        let Some(pc) = self
            .find_project()
            .await
            .map_err(|e| failed(&format!("looking up project {}", self.cfg.project), e))?
        else {
            return Ok(vec![]);
        };
        let items = self.pages(&self.workflows(pc), &[]).await.map_err(|e| failed(&step, e))?;
        let mut handles = Vec::new();
        for item in items {
            if !owned_by(item["description"].as_str().unwrap_or(""), catalog) {
                continue;
            }
            let (Some(code), Some(name)) = (as_code(&item["code"]), item["name"].as_str()) else {
                continue;
            };
            let task_code = match self.workflow(pc, code).await.map_err(|e| failed(&step, e))? {
                Some(wf) => wf.task_code.unwrap_or(0),
                // Deleted meanwhile.
                None => continue,
            };
            let schedule_id = self.schedule_of(pc, code).await.map_err(|e| failed(&step, e))?.map(|s| s.id);
            handles.push(Handle::of(&WorkflowHandle {
                project_code: pc,
                workflow_code: code,
                workflow_name: name.to_string(),
                task_code,
                schedule_id,
                version: self.cfg.version.name().into(),
            }));
        }
        Ok(handles)
    }
}

/// The definition in a workflow's detail, under its version's key (or the other's).
fn definition(data: &Value, v: Version) -> Value {
    [v.definition_key(), "processDefinition", "workflowDefinition"]
        .iter()
        .find_map(|k| data.get(*k).filter(|d| d.is_object()))
        .cloned()
        .unwrap_or(Value::Null)
}

fn workflow_info(data: &Value, v: Version) -> WorkflowInfo {
    let def = definition(data, v);
    let task = data
        .get("taskDefinitionList")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|t| t["name"].as_str() == Some(TASK_NAME)).or_else(|| a.first()))
        .cloned()
        .unwrap_or(Value::Null);
    // taskParams is an object in answers; a string holding one in some.
    let params = match &task["taskParams"] {
        Value::String(s) => serde_json::from_str(s).ok(),
        Value::Null => None,
        other => Some(other.clone()),
    };
    WorkflowInfo {
        online: is_online(&def["releaseState"]),
        task_code: as_code(&task["code"]),
        task_params: params,
    }
}

impl Plugin for DolphinScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::DolphinScheduler
    }

    fn check(&self, f: Freshness) -> Result<(), PluginError> {
        cron(f).map(|_| ())
    }

    fn register<'a>(&'a self, t: &'a Target<'a>, active: bool) -> BoxFuture<'a, Result<Handle, PluginError>> {
        Box::pin(async move { self.register_workflow(t, active).await.map(|h| Handle::of(&h)) })
    }

    fn reschedule<'a>(&'a self, h: &'a Handle, t: &'a Target<'a>) -> BoxFuture<'a, Result<Handle, PluginError>> {
        Box::pin(async move {
            let h: WorkflowHandle = h.parse(SERVICE)?;
            self.reschedule_workflow(&h, t).await.map(|h| Handle::of(&h))
        })
    }

    fn set_active<'a>(&'a self, h: &'a Handle, active: bool) -> BoxFuture<'a, Result<(), PluginError>> {
        Box::pin(async move { self.set_schedule_active(&h.parse(SERVICE)?, active).await })
    }

    fn unregister<'a>(&'a self, h: &'a Handle) -> BoxFuture<'a, Result<(), PluginError>> {
        Box::pin(async move { self.remove(&h.parse(SERVICE)?).await })
    }

    fn reconcile<'a>(&'a self, h: &'a Handle, t: &'a Target<'a>, active: bool) -> BoxFuture<'a, Result<Repair, PluginError>> {
        Box::pin(async move { self.reconcile_workflow(&h.parse(SERVICE)?, t, active).await })
    }

    fn list<'a>(&'a self, catalog: &'a str) -> BoxFuture<'a, Result<Vec<Handle>, PluginError>> {
        Box::pin(self.list_workflows(catalog))
    }

    fn key(&self, h: &Handle) -> String {
        h.0.get("workflowCode").and_then(as_code).map(|c| c.to_string()).unwrap_or_default()
    }

    fn summary(&self, h: &Handle) -> String {
        match h.parse::<WorkflowHandle>(SERVICE) {
            Ok(w) => format!(
                "{SERVICE} workflow {} (project {}, schedule {})",
                w.workflow_name,
                w.project_code,
                w.schedule_id.map_or("none".to_string(), |id| id.to_string())
            ),
            Err(e) => e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rules::Unit;
    use bytes::Bytes;

    fn target<'a>(conf: &'a BTreeMap<String, String>) -> Target<'a> {
        Target {
            catalog: "0b7e7c1e-5d3a-4d2b-9a55-3f1f6c0a9e21",
            database: "shop",
            table_id: 7,
            schema: "public",
            table: "Daily \"Revenue\"",
            freshness: Freshness { n: 5, unit: Unit::Minute },
            time_zone: "Europe/Berlin",
            start: "2026-11-24T10:00:00+00:00",
            configuration: conf,
        }
    }

    #[test]
    fn versions() {
        let ok = [
            ("3.2", Version::V3_2),
            ("3.2.2", Version::V3_2),
            (" 3.3 ", Version::V3_3),
            ("3.3.0", Version::V3_3),
            ("3.3.10", Version::V3_3),
        ];
        for (s, v) in ok {
            assert_eq!(Version::parse(s), Some(v), "{s}");
        }
        for s in ["", "3", "3.1", "3.4", "2.0.9", "3.2.", "3.2.x", "3.2.1.1", "v3.2", "33"] {
            assert_eq!(Version::parse(s), None, "{s}");
        }
        assert_eq!(
            (Version::V3_2.workflows(), Version::V3_3.workflows()),
            ("process-definition", "workflow-definition")
        );
        assert_eq!(
            (Version::V3_2.code_param(), Version::V3_3.code_param()),
            ("processDefinitionCode", "workflowDefinitionCode")
        );
    }

    #[test]
    fn crons_and_times() {
        let f = |n, unit| Freshness { n, unit };
        let ok = [
            (f(10, Unit::Second), "0/10 * * * * ? *"),
            (f(5, Unit::Minute), "0 0/5 * * * ? *"),
            (f(2, Unit::Hour), "0 0 0/2 * * ? *"),
            (f(1, Unit::Day), "0 0 0 * * ? *"),
        ];
        for (fr, want) in ok {
            assert_eq!(cron(fr).as_deref(), Ok(want), "{fr}");
        }
        assert!(matches!(cron(f(7, Unit::Minute)), Err(PluginError::Unschedulable(_))));
        let times = [
            ("2026-11-24T10:00:00+00:00", "2026-11-23 22:00:00"),
            ("2026-11-24T10:00:00+01:00", "2026-11-23 21:00:00"),
            ("2024-03-01T05:30:00Z", "2024-02-29 17:30:00"),
            ("2000-01-01T00:00:00-05:00", "1999-12-31 17:00:00"),
        ];
        for (iso, want) in times {
            assert_eq!(start_time(iso).as_deref(), Ok(want), "{iso}");
        }
        assert!(start_time("now").is_err());
        assert_eq!(wall_clock(0), "1970-01-01 00:00:00");
        assert_eq!(wall_clock(1_709_209_815), "2024-02-29 12:30:15");
        assert_eq!(wall_clock(-1), "1969-12-31 23:59:59");
        assert_eq!(
            schedule_json("0 0/5 * * * ? *", "UTC", "2024-01-01 00:00:00"),
            r#"{"crontab":"0 0/5 * * * ? *","endTime":"2100-01-01 00:00:00","startTime":"2024-01-01 00:00:00","timezoneId":"UTC"}"#
        );
    }

    #[test]
    fn names_and_descriptions() {
        let c = "cat-1";
        let n = workflow_name(c, "shop", "public", "daily_revenue", 7);
        assert!(n.starts_with("dyngate__shop__public__daily_revenue__"), "{n}");
        assert_eq!(n, workflow_name(c, "shop", "public", "daily_revenue", 7), "stable");
        let others = [
            workflow_name(c, "shop", "public", "daily_revenue", 8),
            workflow_name("cat-2", "shop", "public", "daily_revenue", 7),
            workflow_name(c, "shop2", "public", "daily_revenue", 7),
            workflow_name(c, "shop", "public", "Daily Revenue", 7),
            workflow_name(c, "shop", "public", "daily revenue", 7),
            workflow_name(c, "shop", "a.b", "c", 7),
            workflow_name(c, "shop", "a", "b.c", 7),
        ];
        let mut seen = std::collections::HashSet::from([n.clone()]);
        for o in others {
            assert!(o.chars().all(|ch| ch.is_ascii_alphanumeric() || "_-".contains(ch)), "{o}");
            assert!(seen.insert(o.clone()), "{o} collides");
        }
        assert!(workflow_name(&"c".repeat(99), &"d".repeat(63), &"s".repeat(63), &"t".repeat(63), i64::MAX).len() <= 113);

        let d = description(c, "\"public\".\"t\"");
        assert_eq!(d, "dyngate-catalog:cat-1 table \"public\".\"t\" (managed by dyngate: do not edit)");
        assert!(owned_by(&d, c));
        assert!(!owned_by(&d, "cat"), "a prefix of the catalog is another catalog");
        assert!(!owned_by(&d, "cat-12"));
        assert!(!owned_by(&d, ""));
        assert!(!owned_by("made by hand", c));
        let long = description(c, &"x".repeat(400));
        assert_eq!(long.chars().count(), 255);
        assert!(owned_by(&long, c));
    }

    #[test]
    fn refresh_bodies() {
        let conf = BTreeMap::from([
            ("spark.x".to_string(), "1".to_string()),
            ("scheduler.run_id".to_string(), "spoofed".to_string()),
        ]);
        let t = target(&conf);
        let fields = refresh_fields(&t, "wf");
        let body = raw_body(&fields);
        assert_eq!(
            body,
            r#"{"tables":"\"public\".\"Daily \"\"Revenue\"\"\"","scheduleTime":"${system.datetime}","configuration":"{\"dolphinscheduler.time_zone\":\"Europe/Berlin\",\"dolphinscheduler.workflow\":\"wf\",\"scheduler.run_id\":\"${system.workflow.instance.id}\",\"spark.x\":\"1\"}"}"#
        );
        // Flat: every value a string, as the 3.3 task's JSONUtils.toMap needs.
        let v: serde_json::Map<String, Value> = serde_json::from_str(&body).unwrap();
        assert!(v.values().all(Value::is_string));
        // What dyngate's endpoint makes of it once DolphinScheduler filled the placeholders in.
        let sent = body.replace(SCHEDULE_TIME, "20261124100500").replace(RUN_ID, "4711");
        let req = crate::http::api::parse_refresh_body(sent.as_bytes()).unwrap();
        assert_eq!(req.tables.len(), 1);
        assert_eq!(req.tables[0].name, "Daily \"Revenue\"");
        // 2026-11-24 10:05:00 read as UTC: the endpoint does not know yet that DolphinScheduler's
        // wall clock is in `dolphinscheduler.time_zone` (here Europe/Berlin, 09:05 UTC).
        assert_eq!(req.schedule_time, crate::core::time::ScheduleTime::Local(1_795_514_700));
        assert_eq!(req.scheduler_run_id.as_deref(), Some("4711"));

        assert!(check_placeholders(&t, "http://gw:8432/v3/dynamic-tables/refresh").is_ok());
        let mut odd = target(&conf);
        odd.table = "t${x}";
        assert!(matches!(check_placeholders(&odd, "http://x"), Err(PluginError::Unschedulable(_))));
        let bad = BTreeMap::from([("k".to_string(), "$[yyyyMMdd]".to_string())]);
        assert!(check_placeholders(&target(&bad), "http://x").is_err());
    }

    #[test]
    fn task_shapes() {
        let fields = vec![("tables", "t".to_string()), ("scheduleTime", SCHEDULE_TIME.to_string())];
        let v2 = task_params(Version::V3_2, "http://gw/r", Some("s3cret"), &fields);
        assert_eq!(v2["httpMethod"], "POST");
        assert_eq!(
            v2["httpParams"],
            json!([
                {"prop": "Authorization", "httpParametersType": "HEADERS", "value": "Bearer s3cret"},
                {"prop": "tables", "httpParametersType": "BODY", "value": "t"},
                {"prop": "scheduleTime", "httpParametersType": "BODY", "value": "${system.datetime}"},
            ])
        );
        assert_eq!(v2["httpBody"], r#"{"tables":"t","scheduleTime":"${system.datetime}"}"#);
        assert!(v2.get("httpRequestBody").is_none());
        let v3 = task_params(Version::V3_3, "http://gw/r", None, &fields);
        for (a, b) in [
            ("httpMethod", "httpRequestMethod"),
            ("httpParams", "httpRequestParams"),
            ("httpBody", "httpRequestBody"),
        ] {
            assert_eq!(v3[a], v3[b], "{a}");
        }
        assert_eq!(v3["httpRequestParams"], json!([]));
        assert_eq!(v3["httpRequestBody"], v2["httpBody"]);
        assert_eq!(v3["httpCheckCondition"], "STATUS_CODE_DEFAULT");
        assert!(
            v3["connectTimeout"].as_i64().unwrap() > 0,
            "3.3 refuses a task without connectTimeout"
        );

        // The same task whatever the spelling or defaults DolphinScheduler adds.
        let mut shown = v3.clone();
        shown.as_object_mut().unwrap().remove("httpRequestBody");
        shown["varPool"] = json!([]);
        assert_eq!(task_fingerprint(&shown), task_fingerprint(&v3));
        assert_ne!(
            task_fingerprint(&v2),
            task_fingerprint(&v3),
            "3.2 carries the fields as BODY parameters"
        );
        let other = task_params(Version::V3_3, "http://gw/other", None, &fields);
        assert_ne!(task_fingerprint(&other), task_fingerprint(&v3));

        let defs: Value = serde_json::from_str(&task_definition_json(42, &v3, "wg")).unwrap();
        assert_eq!(defs[0]["code"], 42);
        assert_eq!(defs[0]["taskType"], "HTTP");
        assert_eq!(defs[0]["workerGroup"], "wg");
        assert_eq!(defs[0]["taskParams"], v3);
        let rel: Value = serde_json::from_str(&task_relation_json(42)).unwrap();
        assert_eq!(
            (rel[0]["preTaskCode"].clone(), rel[0]["postTaskCode"].clone()),
            (json!(0), json!(42))
        );
        assert_eq!(locations_json(42), r#"[{"taskCode":42,"x":120,"y":120}]"#);
    }

    #[test]
    fn envelopes() {
        let r = |status, body: &str| Response {
            status,
            body: Bytes::from(body.to_string()),
        };
        assert_eq!(
            envelope(
                &r(200, r#"{"code":0,"msg":"success","data":{"code":5},"success":true,"failed":false}"#),
                &[]
            ),
            Ok(json!({"code": 5}))
        );
        assert_eq!(envelope(&r(201, r#"{"code":0,"msg":"success","data":null}"#), &[]), Ok(Value::Null));
        assert_eq!(envelope(&r(401, ""), &[]), Err(ApiError::Unauthorized));
        let e = envelope(
            &r(
                200,
                r#"{"code":10168,"msg":"process definition name x already exists","data":null}"#,
            ),
            &[],
        )
        .unwrap_err();
        assert_eq!(e.code(), Some(10168));
        assert!(!e.gone());
        assert_eq!(e.to_string(), "code 10168: process definition name x already exists");
        for code in [10018, 10022, 10203, 50003] {
            assert!(
                envelope(&r(200, &format!(r#"{{"code":{code},"msg":"gone"}}"#)), &[])
                    .unwrap_err()
                    .gone(),
                "{code}"
            );
        }
        assert!(matches!(envelope(&r(500, "boom"), &[]), Err(ApiError::Status { status: 500, .. })));
        assert!(matches!(envelope(&r(200, "<html>"), &[]), Err(ApiError::NotEnvelope { .. })));
        assert!(matches!(envelope(&r(200, r#"{"data":1}"#), &[]), Err(ApiError::NotEnvelope { .. })));
        // Validation errors repeat what was sent: the tokens never reach a message, not even in
        // part where the message is cut.
        let secret = "s3cr3t-refresh-token";
        let echoed = format!(
            r#"{{"code":10001,"msg":"request parameter taskDefinitionJson {{\"Authorization\": \"Bearer {secret}\"}} is not valid"}}"#
        );
        let e = envelope(&r(200, &echoed), &[secret, "api-token"]).unwrap_err().to_string();
        assert!(e.contains("Bearer ***") && !e.contains(secret), "{e}");
        let long = format!("{}{secret}", "x".repeat(290));
        for bad in [r(500, &long), r(200, &long)] {
            let e = envelope(&bad, &[secret]).unwrap_err().to_string();
            assert!(!e.contains("s3cr"), "{e}");
        }
        let f = failed("creating workflow w", ApiError::Unauthorized);
        assert!(
            f.to_string()
                .starts_with("DolphinScheduler: creating workflow w failed: it refused the access token"),
            "{f}"
        );
    }

    #[test]
    fn details() {
        let v2 = json!({
            "processDefinition": {"code": 9, "releaseState": "ONLINE"},
            "taskDefinitionList": [{"code": 11, "name": "refresh", "taskParams": "{\"url\":\"u\"}"}],
        });
        let i = workflow_info(&v2, Version::V3_2);
        assert!(i.online);
        assert_eq!(i.task_code, Some(11));
        assert_eq!(i.task_params, Some(json!({"url": "u"})));
        let v3 = json!({
            "workflowDefinition": {"code": 9, "releaseState": "OFFLINE"},
            "taskDefinitionList": [{"code": "12", "name": "refresh", "taskParams": {"url": "u"}}],
        });
        let i = workflow_info(&v3, Version::V3_3);
        assert!(!i.online);
        assert_eq!(i.task_code, Some(12));
        assert_eq!(i.task_params, Some(json!({"url": "u"})));
        let p = DolphinScheduler::new(Config::new(
            Endpoint::parse(
                "DolphinScheduler",
                "http://127.0.0.1:1/dolphinscheduler",
                std::time::Duration::from_secs(1),
            )
            .unwrap(),
            "t0k3n",
            Version::V3_3,
            "http://gw/r",
        ));
        let h = Handle::of(&WorkflowHandle {
            project_code: 1,
            workflow_code: 22,
            workflow_name: "w".into(),
            task_code: 3,
            schedule_id: Some(4),
            version: "3.3".into(),
        });
        assert_eq!(h.0["scheduleId"], 4);
        assert_eq!(p.key(&h), "22");
        assert_eq!(p.summary(&h), "DolphinScheduler workflow w (project 1, schedule 4)");
        assert!(!format!("{:?}", p.config()).contains("t0k3n"));
    }
}
