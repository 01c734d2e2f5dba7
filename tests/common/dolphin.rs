//! A FAKE of Apache DolphinScheduler's HTTP API, for the DolphinScheduler plug-in's tests. It is
//! NOT DolphinScheduler: DolphinScheduler's Java server cannot be had on these machines (PyPI's
//! `apache-dolphinscheduler` is only the Python SDK; nothing on apt or npm), so this serves the
//! part of its v1 REST contract the plug-in uses, as read in DolphinScheduler's source (3.2-era
//! `ProcessDefinitionController` / `SchedulerController` / `ProjectController` / `HttpTask`,
//! 3.3-era `WorkflowDefinitionController` / `WorkflowDefinitionServiceImpl` /
//! `SchedulerServiceImpl` / `HttpTask`, `Status` codes) and summed up in
//! /work/shared/reference/schedulers.md. Where it is a guess it says so.
//!
//! What it enforces:
//! - the `token` header (401 with an empty body when missing or wrong); parameters only from the
//!   query string and `application/x-www-form-urlencoded` bodies (a JSON body is not read, so
//!   its parameters are missing: code 10001); the envelope `{"code","msg","data","success",
//!   "failed"}`; 201 for successful creates; 404 (Spring's JSON) for unknown paths, including the
//!   other version's (`process-definition` for 3.3, `workflow-definition` for 3.2);
//! - the order rules: a schedule for an unreleased workflow (50004); updating an online schedule
//!   (10023); deleting an online schedule (50023); deleting an ONLINE workflow (50021); editing an
//!   ONLINE workflow (50008); taking a workflow OFFLINE takes its schedule offline; deleting a
//!   workflow deletes its offline schedule (and refuses while it is online: 50023); project exists
//!   (10019); project not found (10018); workflow name exists (10168); workflow not found (50003);
//!   schedule exists for the workflow (10204); schedule not found (10203; 10022 on 3.2's
//!   online/offline, where 3.3 answers success); schedule already in the state asked (3.2: 10126,
//!   3.3: success); an invalid HTTP task (50020); bad or missing parameters (10001); an unknown
//!   tenant (10017).
//!
//! Business errors are answered with HTTP 200 (DolphinScheduler answers some of them with the
//! create handler's 201; the plug-in reads the envelope's code either way).
//!
//! Its state is open to tests ([`FakeDolphin::state`], [`FakeDolphin::tamper`]); it can fail
//! chosen requests ([`FakeDolphin::fail`]), answer 500 to everything ([`FakeDolphin::fail_all`])
//! or go down ([`FakeDolphin::down`]); and it runs a workflow's HTTP task the way a worker does
//! ([`FakeDolphin::fire`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use dyngate::http_client::{Auth, Body, Endpoint};
pub use dyngate::scheduler::dolphinscheduler::Version;

/// A project.
#[derive(Debug, Clone)]
pub struct Project {
    pub code: i64,
    pub name: String,
    pub description: String,
}

/// A workflow definition.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub project_code: i64,
    pub code: i64,
    pub name: String,
    pub description: String,
    pub online: bool,
    pub version: i64,
    /// `taskDefinitionJson` as received (each with `taskParams`).
    pub tasks: Vec<Value>,
    pub relations: Vec<Value>,
}

impl Workflow {
    /// The first task's `taskParams`.
    pub fn task_params(&self) -> Value {
        self.tasks.first().map(|t| t["taskParams"].clone()).unwrap_or(Value::Null)
    }
}

/// A schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: i64,
    pub project_code: i64,
    pub workflow_code: i64,
    pub crontab: String,
    pub timezone_id: String,
    pub start_time: String,
    pub end_time: String,
    pub online: bool,
    pub tenant_code: String,
    pub worker_group: String,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub params: Vec<(String, String)>,
}

/// A request the fake is told to fail: `method` and a part of the path (without the query).
#[derive(Debug, Clone)]
pub struct Failure {
    pub method: String,
    pub path_contains: String,
    /// The HTTP status answered.
    pub status: u16,
    /// With status 200: the envelope's business code.
    pub code: Option<i64>,
}

/// Everything the fake holds.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub projects: Vec<Project>,
    pub workflows: Vec<Workflow>,
    pub schedules: Vec<Schedule>,
    pub requests: Vec<Request>,
    /// Tenants besides `default`.
    pub tenants: Vec<String>,
    pub failures: Vec<Failure>,
    pub fail_all: bool,
    next_code: i64,
    next_id: i64,
}

impl State {
    pub fn workflow(&self, code: i64) -> Option<&Workflow> {
        self.workflows.iter().find(|w| w.code == code)
    }

    pub fn schedule_of(&self, workflow: i64) -> Option<&Schedule> {
        self.schedules.iter().find(|s| s.workflow_code == workflow)
    }

    fn code(&mut self) -> i64 {
        self.next_code += 1;
        14_000_000_000_000 + self.next_code
    }

    fn id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }
}

struct App {
    version: Version,
    token: String,
    state: Mutex<State>,
}

/// What to run: the workflow of a schedule (a scheduled run: the schedule must be online), or a
/// workflow (a manual run).
#[derive(Debug, Clone, Copy)]
pub enum Fire {
    Schedule(i64),
    Workflow(i64),
}

/// A task run: what was sent and what came back.
#[derive(Debug, Clone)]
pub struct Fired {
    pub status: u16,
    pub body: String,
    /// DolphinScheduler's verdict (by default: status 200 exactly).
    pub success: bool,
    /// The request body sent.
    pub sent_body: String,
    /// The `Authorization` header sent, if any.
    pub authorization: Option<String>,
    pub instance_id: i64,
}

/// The fake, listening on 127.0.0.1 (port chosen at start).
pub struct FakeDolphin {
    pub version: Version,
    addr: SocketAddr,
    app: Arc<App>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl FakeDolphin {
    /// Starts a fake of `version` accepting `token`.
    pub async fn start(version: Version, token: &str) -> FakeDolphin {
        let app = Arc::new(App {
            version,
            token: token.to_string(),
            state: Mutex::new(State::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeDolphin {
            version,
            addr,
            app,
            server: Mutex::new(None),
        };
        fake.serve(listener);
        fake
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let router = Router::new().fallback(handle).with_state(self.app.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        *self.server.lock().unwrap() = Some(task);
    }

    /// The API's base URL, `http://127.0.0.1:<port>/dolphinscheduler`.
    pub fn url(&self) -> String {
        format!("http://{}/dolphinscheduler", self.addr)
    }

    /// A copy of the state.
    pub fn state(&self) -> State {
        self.app.state.lock().unwrap().clone()
    }

    /// Changes the state behind the plug-in's back.
    pub fn tamper<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.app.state.lock().unwrap())
    }

    /// Fails every `method` request whose path contains `path_contains` from now on: with
    /// `status`, or with HTTP 200 and business `code`.
    pub fn fail(&self, method: &str, path_contains: &str, status: u16, code: Option<i64>) {
        self.tamper(|s| {
            s.failures.push(Failure {
                method: method.to_string(),
                path_contains: path_contains.to_string(),
                status,
                code,
            })
        });
    }

    pub fn clear_failures(&self) {
        self.tamper(|s| s.failures.clear());
    }

    /// Answers 500 to every request (as a server whose database is gone).
    pub fn fail_all(&self, on: bool) {
        self.tamper(|s| s.fail_all = on);
    }

    /// Stops listening: connections are refused until [`FakeDolphin::up`].
    pub async fn down(&self) {
        let task = self.server.lock().unwrap().take();
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listens again on the same port.
    pub async fn up(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Runs a workflow's HTTP task as a worker does: fills in the placeholders
    /// (`${system.datetime}` is `schedule_time` — `yyyy-MM-dd HH:mm:ss`, the schedule's wall
    /// clock — as `yyyyMMddHHmmss`; `${system.workflow.instance.id}` a new instance id; `$[...]`
    /// date patterns of `schedule_time`), builds the body as the version's task does (3.2.0: a JSON
    /// object of the `BODY` parameters, `httpBody` unread; 3.3: the raw body read into string
    /// pairs, `BODY` parameters unread), sends it, and
    /// judges the answer by the task's check condition. The fake sends at most one header
    /// (`Authorization`).
    pub async fn fire(&self, what: Fire, schedule_time: &str) -> Result<Fired, String> {
        let (wf, instance_id, project_code) = {
            let mut st = self.app.state.lock().unwrap();
            let code = match what {
                Fire::Workflow(c) => c,
                Fire::Schedule(id) => {
                    let s = st.schedules.iter().find(|s| s.id == id).ok_or(format!("no schedule {id}"))?;
                    if !s.online {
                        return Err(format!("schedule {id} is offline: it does not fire"));
                    }
                    s.workflow_code
                }
            };
            let wf = st.workflow(code).cloned().ok_or(format!("no workflow {code}"))?;
            if !wf.online {
                return Err(format!("workflow {code} is not online: it cannot run"));
            }
            let id = st.id();
            (wf.clone(), id, wf.project_code)
        };
        let task = wf.tasks.first().cloned().ok_or("the workflow has no task")?;
        if task["taskType"] != "HTTP" {
            return Err(format!("task type {} is not HTTP", task["taskType"]));
        }
        let p = task["taskParams"].clone();
        let compact: String = schedule_time.chars().filter(|c| c.is_ascii_digit()).collect();
        if compact.len() != 14 {
            return Err(format!("schedule time {schedule_time:?} is not yyyy-MM-dd HH:mm:ss"));
        }
        let builtins = [
            ("system.datetime", compact.clone()),
            ("system.biz.curdate", compact[..8].to_string()),
            ("system.workflow.instance.id", instance_id.to_string()),
            ("system.workflow.definition.code", wf.code.to_string()),
            ("system.workflow.definition.name", wf.name.clone()),
            ("system.project.code", project_code.to_string()),
            ("system.task.definition.code", task["code"].to_string()),
            ("system.task.definition.name", task["name"].as_str().unwrap_or("").to_string()),
            ("system.task.instance.id", (instance_id * 10).to_string()),
        ];
        let fill = |text: &str| fill_placeholders(text, &builtins, &compact);
        let pick = |a: &str, b: &str| -> Value {
            match self.version {
                Version::V3_2 => p.get(b).cloned().unwrap_or(Value::Null),
                // 3.3's Java fields are httpRequest*; their JSON names are one spelling or the
                // other depending on @JsonProperty (see the plug-in's doc): either is read here.
                Version::V3_3 => p
                    .get(a)
                    .filter(|v| !v.is_null())
                    .or_else(|| p.get(b))
                    .cloned()
                    .unwrap_or(Value::Null),
            }
        };
        let method = pick("httpRequestMethod", "httpMethod").as_str().unwrap_or("").to_string();
        if method.is_empty() {
            return Err("the task has no HTTP method: 'http task params is not valid'".into());
        }
        // 3.2 fills placeholders into each parameter's JSON text, as HttpTask does.
        let props: Vec<Value> = pick("httpRequestParams", "httpParams")
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|prop| serde_json::from_str(&fill(&prop.to_string())).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let kind = |prop: &Value| prop["httpParametersType"].as_str().unwrap_or("").to_ascii_uppercase();
        let headers: Vec<(String, String)> = props
            .iter()
            .filter(|prop| kind(prop) == "HEADERS")
            .map(|prop| {
                (
                    prop["prop"].as_str().unwrap_or("").to_string(),
                    prop["value"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let body: serde_json::Map<String, Value> = match self.version {
            Version::V3_2 => props
                .iter()
                .filter(|prop| kind(prop) == "BODY")
                .map(|prop| {
                    (
                        prop["prop"].as_str().unwrap_or("").to_string(),
                        json!(prop["value"].as_str().unwrap_or("")),
                    )
                })
                .collect(),
            Version::V3_3 => {
                let raw = fill(pick("httpRequestBody", "httpBody").as_str().unwrap_or(""));
                // JSONUtils.toMap(body): Map<String, String>; nested values fail.
                let parsed: serde_json::Map<String, Value> =
                    serde_json::from_str(&raw).map_err(|e| format!("json to map exception: {e}: {raw}"))?;
                parsed
                    .into_iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => Ok((k, Value::String(s))),
                        Value::Object(_) | Value::Array(_) => Err(format!("json to map exception: {k} is not a string")),
                        other => Ok((k, Value::String(other.to_string()))),
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        let url = fill(p["url"].as_str().unwrap_or(""));
        let auth = match headers.as_slice() {
            [] => Auth::None,
            [(name, value)] if name.eq_ignore_ascii_case("authorization") => Auth::Header("authorization", value.clone()),
            other => return Err(format!("the fake sends only an Authorization header, not {other:?}")),
        };
        let timeout = p["connectTimeout"].as_u64().unwrap_or(60_000).max(1000);
        let ep = Endpoint::parse("refresh endpoint", &url, Duration::from_millis(timeout)).map_err(|e| e.to_string())?;
        let body = Value::Object(body);
        let r = ep.send(&method, "", &auth, Body::Json(&body)).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&r.body).to_string();
        let condition = p["condition"].as_str().unwrap_or("");
        let success = match p["httpCheckCondition"].as_str().unwrap_or("STATUS_CODE_DEFAULT") {
            "STATUS_CODE_CUSTOM" => condition == r.status.to_string(),
            "BODY_CONTAINS" => text.contains(condition),
            "BODY_NOT_CONTAINS" => !text.contains(condition),
            _ => r.status == 200,
        };
        let authorization = match auth {
            Auth::Header(_, v) => Some(v),
            _ => None,
        };
        Ok(Fired {
            status: r.status,
            body: text,
            success,
            sent_body: body.to_string(),
            authorization,
            instance_id,
        })
    }
}

/// `${name}` of the built-ins (others stay, as DolphinScheduler leaves unresolved ones), then
/// `$[pattern]` as `yyyy`, `MM`, `dd`, `HH`, `mm`, `ss` of the schedule time (no arithmetic).
fn fill_placeholders(text: &str, builtins: &[(&str, String)], compact: &str) -> String {
    let mut out = text.to_string();
    for (k, v) in builtins {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    let mut result = String::new();
    let mut rest = out.as_str();
    while let Some(i) = rest.find("$[") {
        result.push_str(&rest[..i]);
        let Some(j) = rest[i..].find(']') else { break };
        let pattern = &rest[i + 2..i + j];
        result.push_str(
            &pattern
                .replace("yyyy", &compact[..4])
                .replace("MM", &compact[4..6])
                .replace("dd", &compact[6..8])
                .replace("HH", &compact[8..10])
                .replace("mm", &compact[10..12])
                .replace("ss", &compact[12..14]),
        );
        rest = &rest[i + j + 1..];
    }
    result.push_str(rest);
    result
}

/// `application/x-www-form-urlencoded` decoding.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The request's parameters, as Spring's `@RequestParam` sees them.
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn req(&self, k: &str) -> Result<&str, Reply> {
        self.get(k).ok_or_else(|| bad(k))
    }

    fn num(&self, k: &str) -> Result<i64, Reply> {
        self.req(k)?.parse().map_err(|_| bad(k))
    }
}

/// An answer: status and envelope (or a raw body).
enum Reply {
    Ok(Value),
    Created(Value),
    Err(i64, String),
    Raw(u16, String),
}

fn bad(param: &str) -> Reply {
    Reply::Err(10001, format!("request parameter {param} is not valid"))
}

fn not_found() -> Reply {
    Reply::Raw(
        404,
        json!({"timestamp": "2024-01-01T00:00:00.000+00:00", "status": 404, "error": "Not Found"}).to_string(),
    )
}

fn page(items: Vec<Value>, p: &Params) -> Result<Reply, Reply> {
    let no = p.num("pageNo")?;
    let size = p.num("pageSize")?;
    if no < 1 || size < 1 {
        return Err(Reply::Err(10001, "request parameter pageNo/pageSize is not valid".into()));
    }
    let total = items.len() as i64;
    let list: Vec<Value> = items.into_iter().skip(((no - 1) * size) as usize).take(size as usize).collect();
    Ok(Reply::Ok(json!({
        "totalList": list,
        "total": total,
        "totalPage": (total + size - 1) / size,
        "pageSize": size,
        "currentPage": no,
        "pageNo": no,
    })))
}

async fn handle(AxState(app): AxState<Arc<App>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let reply = {
        let mut st = app.state.lock().unwrap();
        answer(&app, &mut st, method.as_str(), &uri, &headers, &body)
    };
    match reply {
        Reply::Ok(data) => envelope(StatusCode::OK, 0, "success", data),
        Reply::Created(data) => envelope(StatusCode::CREATED, 0, "success", data),
        Reply::Err(code, msg) => envelope(StatusCode::OK, code, &msg, Value::Null),
        Reply::Raw(status, text) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if text.is_empty() {
                status.into_response()
            } else {
                (status, [("content-type", "application/json")], text).into_response()
            }
        }
    }
}

fn envelope(status: StatusCode, code: i64, msg: &str, data: Value) -> Response {
    let body = json!({"code": code, "msg": msg, "data": data, "success": code == 0, "failed": code != 0});
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

fn answer(app: &App, st: &mut State, method: &str, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Reply {
    let Some(path) = uri.path().strip_prefix("/dolphinscheduler") else {
        return not_found();
    };
    let mut params = uri.query().map(pairs).unwrap_or_default();
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if form {
        params.extend(pairs(&String::from_utf8_lossy(body)));
    }
    st.requests.push(Request {
        method: method.to_string(),
        target: uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        params: params.clone(),
    });
    if st.fail_all {
        return Reply::Raw(500, json!({"status": 500, "error": "Internal Server Error"}).to_string());
    }
    if headers.get("token").and_then(|v| v.to_str().ok()) != Some(app.token.as_str()) {
        return Reply::Raw(401, String::new());
    }
    if let Some(f) = st.failures.iter().find(|f| f.method == method && path.contains(&f.path_contains)) {
        return match f.code {
            Some(code) if f.status == 200 => Reply::Err(code, "failure injected by the test".into()),
            _ => Reply::Raw(f.status, json!({"status": f.status, "error": "injected"}).to_string()),
        };
    }
    let p = Params(params);
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let r = match (method, segs.as_slice()) {
        ("GET", ["projects"]) => {
            let search = p.get("searchVal").unwrap_or("").to_string();
            let items = st
                .projects
                .iter()
                .filter(|pr| pr.name.contains(&search))
                .map(|pr| json!({"code": pr.code, "name": pr.name, "description": pr.description}))
                .collect();
            page(items, &p)
        }
        ("POST", ["projects"]) => create_project(st, &p),
        (_, ["projects", pc, rest @ ..]) => {
            let Ok(pc) = pc.parse::<i64>() else {
                return bad("projectCode");
            };
            if !st.projects.iter().any(|pr| pr.code == pc) {
                return Reply::Err(10018, format!("project {pc} not found "));
            }
            match (method, rest) {
                ("GET", ["task-definition", "gen-task-codes"]) => p.num("genNum").and_then(|n| {
                    if !(1..=100).contains(&n) {
                        return Err(bad("genNum"));
                    }
                    Ok(Reply::Ok(Value::Array((0..n).map(|_| json!(st.code())).collect())))
                }),
                (_, [wf, rest @ ..]) if *wf == app.version.workflows() => workflows(app, st, method, pc, rest, &p),
                (_, ["schedules", rest @ ..]) => schedules(app, st, method, pc, rest, &p),
                _ => Ok(not_found()),
            }
        }
        _ => Ok(not_found()),
    };
    r.unwrap_or_else(|e| e)
}

fn create_project(st: &mut State, p: &Params) -> Result<Reply, Reply> {
    let name = p.req("projectName")?.to_string();
    if name.trim().is_empty() {
        return Err(bad("projectName"));
    }
    if st.projects.iter().any(|pr| pr.name == name) {
        return Err(Reply::Err(10019, format!("project {name} already exists")));
    }
    let code = st.code();
    let description = p.get("description").unwrap_or("").to_string();
    st.projects.push(Project {
        code,
        name: name.clone(),
        description: description.clone(),
    });
    Ok(Reply::Created(
        json!({"id": st.projects.len(), "code": code, "name": name, "description": description}),
    ))
}

/// The workflow's definition as answers show it.
fn definition(w: &Workflow, st: &State) -> Value {
    json!({
        "code": w.code,
        "name": w.name,
        "description": w.description,
        "projectCode": w.project_code,
        "version": w.version,
        "releaseState": if w.online { "ONLINE" } else { "OFFLINE" },
        "scheduleReleaseState": st.schedule_of(w.code).map(|s| if s.online { "ONLINE" } else { "OFFLINE" }),
    })
}

fn dag(app: &App, w: &Workflow, st: &State) -> Value {
    let (def_key, rel_key) = match app.version {
        Version::V3_2 => ("processDefinition", "processTaskRelationList"),
        Version::V3_3 => ("workflowDefinition", "workflowTaskRelationList"),
    };
    json!({def_key: definition(w, st), rel_key: w.relations, "taskDefinitionList": w.tasks})
}

/// Reads and checks a workflow's form: name, description, tasks, relations.
fn workflow_form(app: &App, p: &Params) -> Result<(String, String, Vec<Value>, Vec<Value>), Reply> {
    let name = p.req("name")?.to_string();
    if name.trim().is_empty() || name.len() > 255 {
        return Err(bad("name"));
    }
    let description = p.get("description").unwrap_or("").to_string();
    if description.chars().count() > 255 {
        return Err(Reply::Err(10001, "description is too long".into()));
    }
    let arr = |k: &str| -> Result<Vec<Value>, Reply> {
        serde_json::from_str::<Vec<Value>>(p.req(k)?).map_err(|_| Reply::Err(10001, format!("request parameter {k} is not valid json")))
    };
    let tasks = arr("taskDefinitionJson")?;
    let relations = arr("taskRelationJson")?;
    if tasks.is_empty() {
        return Err(Reply::Err(10001, "taskDefinitionJson is empty".into()));
    }
    for t in &tasks {
        let name = t["name"].as_str().unwrap_or("");
        if t["code"].as_i64().is_none() || name.is_empty() || t["taskType"].as_str().is_none() {
            return Err(Reply::Err(10001, format!("task definition {t} is not valid")));
        }
        if t["taskType"] == "HTTP" && !http_params_valid(app.version, &t["taskParams"]) {
            return Err(Reply::Err(50020, format!("process node {name} parameter invalid")));
        }
    }
    for r in &relations {
        let post = r["postTaskCode"].as_i64();
        if !tasks.iter().any(|t| t["code"].as_i64() == post) {
            return Err(Reply::Err(10001, format!("task relation {r} names no task")));
        }
    }
    Ok((name, description, tasks, relations))
}

/// `HttpParameters.checkParameters`: a URL (3.3: also a method and a connect timeout).
fn http_params_valid(v: Version, p: &Value) -> bool {
    let url = p["url"].as_str().is_some_and(|u| !u.is_empty());
    match v {
        Version::V3_2 => url,
        Version::V3_3 => {
            let method = p.get("httpRequestMethod").or_else(|| p.get("httpMethod")).and_then(Value::as_str);
            url && matches!(method, Some("GET" | "POST" | "PUT" | "DELETE")) && p["connectTimeout"].as_i64().unwrap_or(0) > 0
        }
    }
}

fn workflows(app: &App, st: &mut State, method: &str, pc: i64, rest: &[&str], p: &Params) -> Result<Reply, Reply> {
    let find = |st: &State, code: &str| -> Result<usize, Reply> {
        let code: i64 = code.parse().map_err(|_| bad("code"))?;
        st.workflows
            .iter()
            .position(|w| w.code == code && w.project_code == pc)
            .ok_or(Reply::Err(50003, format!("process definition {code} does not exist")))
    };
    match (method, rest) {
        ("GET", []) => {
            let search = p.get("searchVal").unwrap_or("").to_string();
            let items = st
                .workflows
                .iter()
                .filter(|w| w.project_code == pc && w.name.contains(&search))
                .map(|w| definition(w, st))
                .collect();
            page(items, p)
        }
        ("POST", []) => {
            let (name, description, tasks, relations) = workflow_form(app, p)?;
            if st.workflows.iter().any(|w| w.project_code == pc && w.name == name) {
                return Err(Reply::Err(10168, format!("process definition name {name} already exists")));
            }
            let code = st.code();
            let w = Workflow {
                project_code: pc,
                code,
                name,
                description,
                online: false,
                version: 1,
                tasks,
                relations,
            };
            let def = definition(&w, st);
            st.workflows.push(w);
            Ok(Reply::Created(def))
        }
        ("GET", ["query-by-name"]) => {
            let name = p.req("name")?;
            let w = st
                .workflows
                .iter()
                .find(|w| w.project_code == pc && w.name == name)
                .ok_or(Reply::Err(50003, format!("process definition {name} does not exist")))?;
            Ok(Reply::Ok(dag(app, w, st)))
        }
        ("GET", [code]) => {
            let i = find(st, code)?;
            Ok(Reply::Ok(dag(app, &st.workflows[i], st)))
        }
        ("PUT", [code]) => {
            let i = find(st, code)?;
            if st.workflows[i].online {
                return Err(Reply::Err(
                    50008,
                    format!("process definition {} does not allow edit", st.workflows[i].name),
                ));
            }
            let (name, description, tasks, relations) = workflow_form(app, p)?;
            let wcode = st.workflows[i].code;
            if st
                .workflows
                .iter()
                .any(|w| w.project_code == pc && w.name == name && w.code != wcode)
            {
                return Err(Reply::Err(10168, format!("process definition name {name} already exists")));
            }
            let w = &mut st.workflows[i];
            (w.name, w.description, w.tasks, w.relations) = (name, description, tasks, relations);
            w.version += 1;
            let w = st.workflows[i].clone();
            Ok(Reply::Ok(definition(&w, st)))
        }
        ("POST", [code, "release"]) => {
            let i = find(st, code)?;
            let online = match p.req("releaseState")? {
                "ONLINE" => true,
                "OFFLINE" => false,
                _ => return Err(bad("releaseState")),
            };
            st.workflows[i].online = online;
            if !online {
                let wcode = st.workflows[i].code;
                for s in st.schedules.iter_mut().filter(|s| s.workflow_code == wcode) {
                    s.online = false;
                }
            }
            Ok(Reply::Ok(Value::Null))
        }
        ("DELETE", [code]) => {
            let i = find(st, code)?;
            let w = &st.workflows[i];
            if w.online {
                return Err(Reply::Err(50021, format!("process definition [{}] is already online", w.name)));
            }
            let wcode = w.code;
            if let Some(s) = st.schedule_of(wcode)
                && s.online
            {
                return Err(Reply::Err(50023, format!("the status of schedule {} is already online", s.id)));
            }
            st.schedules.retain(|s| s.workflow_code != wcode);
            st.workflows.remove(i);
            Ok(Reply::Ok(Value::Null))
        }
        _ => Ok(not_found()),
    }
}

/// Reads and checks a `schedule` parameter: start, end, crontab, time zone.
fn schedule_param(p: &Params) -> Result<(String, String, String, String), Reply> {
    let v: Value = serde_json::from_str(p.req("schedule")?).map_err(|_| bad("schedule"))?;
    let time = |k: &str| -> Result<String, Reply> {
        let s = v[k].as_str().unwrap_or("");
        let shape = s.len() == 19
            && s.char_indices().all(|(i, c)| {
                if [4, 7].contains(&i) {
                    c == '-'
                } else if i == 10 {
                    c == ' '
                } else if [13, 16].contains(&i) {
                    c == ':'
                } else {
                    c.is_ascii_digit()
                }
            });
        if shape {
            Ok(s.to_string())
        } else {
            Err(bad(&format!("schedule.{k}")))
        }
    };
    let (start, end) = (time("startTime")?, time("endTime")?);
    if start == end {
        return Err(Reply::Err(10141, "The start time must not be the same as the end".into()));
    }
    if start > end {
        return Err(Reply::Err(10001, "start time bigger than end time".into()));
    }
    let cron = v["crontab"].as_str().unwrap_or("").to_string();
    let fields: Vec<&str> = cron.split_whitespace().collect();
    if !(6..=7).contains(&fields.len()) || !(fields[3] == "?" || fields[5] == "?") {
        return Err(Reply::Err(10001, format!("request parameter {cron} is not valid")));
    }
    let tz = v["timezoneId"].as_str().unwrap_or("").to_string();
    if tz.is_empty() {
        return Err(bad("schedule.timezoneId"));
    }
    Ok((start, end, cron, tz))
}

fn schedule_vo(app: &App, s: &Schedule) -> Value {
    json!({
        "id": s.id,
        app.version.code_param(): s.workflow_code,
        "crontab": s.crontab,
        "timezoneId": s.timezone_id,
        "startTime": s.start_time,
        "endTime": s.end_time,
        "releaseState": if s.online { "ONLINE" } else { "OFFLINE" },
        "tenantCode": s.tenant_code,
        "workerGroup": s.worker_group,
    })
}

fn schedules(app: &App, st: &mut State, method: &str, pc: i64, rest: &[&str], p: &Params) -> Result<Reply, Reply> {
    let find = |st: &State, id: &str| -> Result<usize, Reply> {
        let id: i64 = id.parse().map_err(|_| bad("id"))?;
        st.schedules
            .iter()
            .position(|s| s.id == id)
            .ok_or(Reply::Err(10203, format!("schedule {id} does not exist")))
    };
    let tenant = |st: &State| -> Result<String, Reply> {
        let t = p.get("tenantCode").unwrap_or("default").to_string();
        if t == "default" || st.tenants.contains(&t) {
            Ok(t)
        } else {
            Err(Reply::Err(10017, "tenant not exists".into()))
        }
    };
    match (method, rest) {
        ("POST", []) => {
            let code = p.num(app.version.code_param())?;
            let (start, end, cron, tz) = schedule_param(p)?;
            let tenant_code = tenant(st)?;
            let w = st
                .workflows
                .iter()
                .find(|w| w.code == code && w.project_code == pc)
                .ok_or(Reply::Err(50003, format!("process definition {code} does not exist")))?;
            if !w.online {
                return Err(Reply::Err(
                    50004,
                    format!("process definition {} process version {} not online", w.code, w.version),
                ));
            }
            if let Some(s) = st.schedule_of(code) {
                return Err(Reply::Err(
                    10204,
                    format!("workflow {code} schedule {} already exist, please update or delete it", s.id),
                ));
            }
            let s = Schedule {
                id: st.id(),
                project_code: pc,
                workflow_code: code,
                crontab: cron,
                timezone_id: tz,
                start_time: start,
                end_time: end,
                online: false,
                tenant_code,
                worker_group: p.get("workerGroup").unwrap_or("default").to_string(),
            };
            let vo = schedule_vo(app, &s);
            st.schedules.push(s);
            Ok(Reply::Created(vo))
        }
        ("GET", []) => {
            let code = match p.get(app.version.code_param()) {
                Some(c) => c.parse::<i64>().map_err(|_| bad(app.version.code_param()))?,
                None => 0,
            };
            if code != 0 && !st.workflows.iter().any(|w| w.code == code && w.project_code == pc) {
                return Err(Reply::Err(50003, format!("process definition {code} does not exist")));
            }
            let items = st
                .schedules
                .iter()
                .filter(|s| s.project_code == pc && (code == 0 || s.workflow_code == code))
                .map(|s| schedule_vo(app, s))
                .collect();
            page(items, p)
        }
        ("PUT", [id]) => {
            let i = find(st, id)?;
            if st.schedules[i].online {
                return Err(Reply::Err(10023, "online status does not allow update operations".into()));
            }
            let (start, end, cron, tz) = schedule_param(p)?;
            let tenant_code = tenant(st)?;
            let s = &mut st.schedules[i];
            (s.start_time, s.end_time, s.crontab, s.timezone_id, s.tenant_code) = (start, end, cron, tz, tenant_code);
            if let Some(wg) = p.get("workerGroup") {
                s.worker_group = wg.to_string();
            }
            let s = st.schedules[i].clone();
            Ok(Reply::Ok(schedule_vo(app, &s)))
        }
        ("POST", [id, state @ ("online" | "offline")]) => {
            let online = *state == "online";
            let i = match find(st, id) {
                Ok(i) => i,
                // 3.3's doOnlineScheduler / doOfflineScheduler return on a missing schedule.
                Err(_) if app.version == Version::V3_3 => return Ok(Reply::Ok(Value::Null)),
                Err(_) => return Err(Reply::Err(10022, format!("scheduler crontab {id} does not exist"))),
            };
            if st.schedules[i].online == online {
                return match app.version {
                    Version::V3_2 => Err(Reply::Err(10126, format!("schedule release is already {}", state.to_uppercase()))),
                    Version::V3_3 => Ok(Reply::Ok(Value::Null)),
                };
            }
            if online {
                let code = st.schedules[i].workflow_code;
                let w = st
                    .workflow(code)
                    .ok_or(Reply::Err(50003, format!("process definition {code} does not exist")))?;
                if !w.online {
                    return Err(Reply::Err(
                        50004,
                        format!("process definition {} process version {} not online", w.code, w.version),
                    ));
                }
            }
            st.schedules[i].online = online;
            Ok(Reply::Ok(Value::Null))
        }
        ("DELETE", [id]) => {
            let i = find(st, id)?;
            if st.schedules[i].online {
                return Err(Reply::Err(50023, format!("the status of schedule {id} is already online")));
            }
            st.schedules.remove(i);
            Ok(Reply::Ok(Value::Null))
        }
        _ => Ok(not_found()),
    }
}

/// Runs each named test `async fn name(v: Version)` for 3.2 and for 3.3 (the test file imports
/// `Version`).
#[allow(unused_macros)]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn v3_2() {
                    super::$name(super::Version::V3_2).await
                }
                #[tokio::test]
                async fn v3_3() {
                    super::$name(super::Version::V3_3).await
                }
            }
        )*
    };
}
#[allow(unused_imports)]
pub(crate) use both;
