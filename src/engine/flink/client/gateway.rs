//! A typed client of Flink's SQL Gateway REST API, version 4 (Flink 2.x): sessions, statements,
//! operations and their results, over the project's small HTTP client
//! ([`crate::http_client`]).
//!
//! How the gateway behaves (measured on Flink 2.3, `docs/flink-facts.md`): a statement is
//! submitted and answered with an operation handle, always HTTP 200; its result (or its error) is
//! fetched page by page from `result/{token}`, following `nextResultUri`. Pages are `NOT_READY`
//! (same token again), `PAYLOAD` (possibly empty while a query job runs) or `EOS`. Errors are HTTP
//! 500 with a Java stack whose last `Caused by:` says what went wrong; an unknown session is a 500
//! too, recognised by `Session '<id>' does not exist`. [`Session`] reopens a lost session and
//! replays its set-up statements (the gateway's catalog is in memory, per session).
//!
//! It must not decide what to run: that is the Flink engine's business.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::types::{LogicalType, decode_field};
use super::{Cause, FlinkError, error_cause, hide, missing_session};
use crate::http_client::{Auth, Body, Endpoint, Response, scrub};

/// A SQL Gateway session (a UUID).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionHandle(pub String);

/// An operation (one submitted statement) of a session (a UUID).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OperationHandle(pub String);

/// A Flink job id (32 hex digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub String);

impl std::fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for OperationHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl JobId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `GET /v4/info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub product_name: String,
    pub version: String,
}

/// An operation's status (`GET .../operations/{op}/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationStatus {
    Initialized,
    Pending,
    Running,
    Finished,
    Canceled,
    Closed,
    Error,
    Timeout,
    Other(String),
}

impl OperationStatus {
    pub fn parse(s: &str) -> OperationStatus {
        match s {
            "INITIALIZED" => OperationStatus::Initialized,
            "PENDING" => OperationStatus::Pending,
            "RUNNING" => OperationStatus::Running,
            "FINISHED" => OperationStatus::Finished,
            "CANCELED" => OperationStatus::Canceled,
            "CLOSED" => OperationStatus::Closed,
            "ERROR" => OperationStatus::Error,
            "TIMEOUT" => OperationStatus::Timeout,
            other => OperationStatus::Other(other.to_string()),
        }
    }

    /// Whether the operation is over (its result, if any, can be fetched to the end).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            OperationStatus::Finished
                | OperationStatus::Canceled
                | OperationStatus::Closed
                | OperationStatus::Error
                | OperationStatus::Timeout
        )
    }
}

/// A result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub logical_type: LogicalType,
}

/// How a row changes the result (a streaming query's result is a changelog).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    Insert,
    UpdateBefore,
    UpdateAfter,
    Delete,
}

impl RowKind {
    pub fn parse(s: &str) -> Option<RowKind> {
        Some(match s {
            "INSERT" => RowKind::Insert,
            "UPDATE_BEFORE" => RowKind::UpdateBefore,
            "UPDATE_AFTER" => RowKind::UpdateAfter,
            "DELETE" => RowKind::Delete,
            _ => return None,
        })
    }
}

/// A result row. Fields are JSON values as Flink encodes them (see [`super::types`]); DECIMALs are
/// strings with the exact digits. [`super::types::pg_text`] renders a field for PostgreSQL.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub kind: RowKind,
    pub fields: Vec<Value>,
}

/// `resultKind`: `SUCCESS` (DDL, SET ...) or `SUCCESS_WITH_CONTENT` (queries, INSERT's job id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultKind {
    Success,
    SuccessWithContent,
    Other(String),
}

impl ResultKind {
    fn parse(s: &str) -> ResultKind {
        match s {
            "SUCCESS" => ResultKind::Success,
            "SUCCESS_WITH_CONTENT" => ResultKind::SuccessWithContent,
            other => ResultKind::Other(other.to_string()),
        }
    }
}

/// A statement's whole result.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultSet {
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
    /// The job the statement ran (SELECT, INSERT, STATEMENT SET).
    pub job_id: Option<JobId>,
    pub result_kind: ResultKind,
    /// True for a query (SELECT), false for DDL, DML, SET, SHOW ...
    pub is_query_result: bool,
}

impl ResultSet {
    /// The index of the column called `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The rows' fields in PostgreSQL's text format (None for NULL), ignoring row kinds.
    pub fn pg_text_rows(&self) -> Vec<Vec<Option<String>>> {
        self.rows
            .iter()
            .map(|r| {
                r.fields
                    .iter()
                    .zip(&self.columns)
                    .map(|(v, c)| super::types::pg_text(v, &c.logical_type))
                    .collect()
            })
            .collect()
    }
}

/// One result page as the gateway sends it, fields kept as raw JSON until the column types are
/// known (see [`decode_field`]).
#[derive(Deserialize)]
struct RawPage {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(rename = "isQueryResult")]
    is_query_result: Option<bool>,
    #[serde(rename = "jobID")]
    job_id: Option<String>,
    #[serde(rename = "resultKind")]
    result_kind: Option<String>,
    results: Option<RawResults>,
    #[serde(rename = "nextResultUri")]
    next_result_uri: Option<String>,
}

#[derive(Deserialize)]
struct RawResults {
    #[serde(default)]
    columns: Vec<RawColumn>,
    #[serde(default)]
    data: Vec<RawRow>,
}

#[derive(Deserialize)]
struct RawColumn {
    name: String,
    #[serde(rename = "logicalType")]
    logical_type: Value,
}

#[derive(Deserialize)]
struct RawRow {
    kind: String,
    fields: Vec<Box<RawValue>>,
}

/// How an error answer is read: statement errors are the user's SQL errors, other 500s are the
/// gateway's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Errors {
    Statement,
    Api,
}

/// The first wait after a NOT_READY or empty page, doubled up to [`MAX_BACKOFF`]: short enough
/// for a DDL's result (ready within milliseconds), without spinning on a running query
/// (hundreds of requests per second were seen without a pause).
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// The SQL Gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    endpoint: Endpoint,
    secrets: Vec<String>,
}

impl Gateway {
    pub fn new(endpoint: Endpoint) -> Gateway {
        Gateway {
            endpoint,
            secrets: Vec::new(),
        }
    }

    /// Texts (passwords in DDL, tokens) never to appear in an error this client returns.
    pub fn with_secrets<I, S>(mut self, secrets: I) -> Gateway
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.secrets
            .extend(secrets.into_iter().map(Into::into).filter(|s: &String| !s.is_empty()));
        self
    }

    /// One request; a 2xx answer's JSON body, or the error it means.
    async fn call(&self, method: &str, path: &str, body: Option<&Value>, errors: Errors) -> Result<Value, FlinkError> {
        let body = body.map_or(Body::None, Body::Json);
        let r = self.endpoint.send(method, path, &Auth::None, body).await?;
        if (200..300).contains(&r.status) {
            return r.json().map_err(|e| self.unexpected(method, path, &r, Some(e.to_string())));
        }
        Err(self.error(method, path, &r, errors))
    }

    fn error(&self, method: &str, path: &str, r: &Response, errors: Errors) -> FlinkError {
        let text = String::from_utf8_lossy(&r.body);
        if let Some(session) = missing_session(&text) {
            return FlinkError::SessionNotFound(session);
        }
        match error_cause(&text) {
            Some(cause) if errors == Errors::Statement && r.status == 500 => FlinkError::Sql(Cause {
                exception: cause.exception,
                message: hide(&cause.message, &self.secrets),
            }),
            Some(cause) => self.unexpected(method, path, r, Some(cause.to_string())),
            None => self.unexpected(method, path, r, None),
        }
    }

    fn unexpected(&self, method: &str, path: &str, r: &Response, detail: Option<String>) -> FlinkError {
        let secrets: Vec<&str> = self.secrets.iter().map(String::as_str).collect();
        FlinkError::Unexpected {
            service: self.endpoint.service,
            method: method.to_string(),
            path: path.to_string(),
            status: r.status,
            detail: match detail {
                Some(d) => scrub(&d, &secrets),
                None => r.snippet_without(&secrets),
            },
        }
    }

    fn missing(&self, what: &str, path: &str, v: &Value) -> FlinkError {
        FlinkError::Unexpected {
            service: self.endpoint.service,
            method: "GET".into(),
            path: path.to_string(),
            status: 200,
            detail: format!("no {what} in {}", scrub(&v.to_string(), &[])),
        }
    }

    /// `GET /v4/info`: product name and version (a liveness check).
    pub async fn info(&self) -> Result<Info, FlinkError> {
        let path = "/v4/info";
        let v = self.call("GET", path, None, Errors::Api).await?;
        match (v["productName"].as_str(), v["version"].as_str()) {
            (Some(p), Some(ver)) => Ok(Info {
                product_name: p.to_string(),
                version: ver.to_string(),
            }),
            _ => Err(self.missing("productName/version", path, &v)),
        }
    }

    /// Opens a session whose configuration is `properties` (e.g. `execution.runtime-mode`).
    pub async fn open_session(&self, name: &str, properties: &BTreeMap<String, String>) -> Result<SessionHandle, FlinkError> {
        let body = serde_json::json!({"sessionName": name, "properties": properties});
        let v = self.call("POST", "/v4/sessions", Some(&body), Errors::Api).await?;
        v["sessionHandle"]
            .as_str()
            .map(|s| SessionHandle(s.to_string()))
            .ok_or_else(|| self.missing("sessionHandle", "/v4/sessions", &v))
    }

    /// Keeps an idle session alive (sessions expire after `sql-gateway.session.idle-timeout`,
    /// 10 min by default).
    pub async fn heartbeat(&self, session: &SessionHandle) -> Result<(), FlinkError> {
        self.call("POST", &format!("/v4/sessions/{session}/heartbeat"), None, Errors::Api)
            .await
            .map(drop)
    }

    /// The session's effective configuration (all keys, as strings).
    pub async fn session_config(&self, session: &SessionHandle) -> Result<BTreeMap<String, String>, FlinkError> {
        let path = format!("/v4/sessions/{session}");
        let v = self.call("GET", &path, None, Errors::Api).await?;
        let props = v["properties"].as_object().ok_or_else(|| self.missing("properties", &path, &v))?;
        Ok(props
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect())
    }

    /// Closes the session (its operations too; jobs it started keep running).
    pub async fn close_session(&self, session: &SessionHandle) -> Result<(), FlinkError> {
        self.call("DELETE", &format!("/v4/sessions/{session}"), None, Errors::Api)
            .await
            .map(drop)
    }

    /// Runs a statement that sets the session up (`SET`, `RESET`, `ADD JAR`, `CREATE TABLE`,
    /// `USE` ...) synchronously: errors come back at once as [`FlinkError::Sql`].
    pub async fn configure(&self, session: &SessionHandle, statement: &str) -> Result<(), FlinkError> {
        let body = serde_json::json!({"statement": statement});
        self.call(
            "POST",
            &format!("/v4/sessions/{session}/configure-session"),
            Some(&body),
            Errors::Statement,
        )
        .await
        .map(drop)
    }

    /// Submits a statement; `execution_config` applies to it alone (e.g. `execution.runtime-mode`,
    /// `execution.checkpointing.interval`, `execution.state-recovery.path`, `pipeline.name`).
    /// SQL errors surface when its result is fetched.
    pub async fn execute(
        &self,
        session: &SessionHandle,
        statement: &str,
        execution_config: &BTreeMap<String, String>,
    ) -> Result<OperationHandle, FlinkError> {
        let mut body = serde_json::json!({"statement": statement});
        if !execution_config.is_empty() {
            body["executionConfig"] = serde_json::json!(execution_config);
        }
        let path = format!("/v4/sessions/{session}/statements");
        let v = self.call("POST", &path, Some(&body), Errors::Statement).await?;
        v["operationHandle"]
            .as_str()
            .map(|s| OperationHandle(s.to_string()))
            .ok_or_else(|| self.missing("operationHandle", &path, &v))
    }

    /// The operation's status.
    pub async fn operation_status(&self, session: &SessionHandle, op: &OperationHandle) -> Result<OperationStatus, FlinkError> {
        let path = format!("/v4/sessions/{session}/operations/{op}/status");
        let v = self.call("GET", &path, None, Errors::Api).await?;
        v["status"]
            .as_str()
            .map(OperationStatus::parse)
            .ok_or_else(|| self.missing("status", &path, &v))
    }

    /// Cancels a running operation (a finished one cannot be: Flink answers 500 "Failed to
    /// convert the Operation Status from FINISHED to CANCELED", given as
    /// [`FlinkError::Unexpected`]).
    pub async fn cancel_operation(&self, session: &SessionHandle, op: &OperationHandle) -> Result<OperationStatus, FlinkError> {
        let path = format!("/v4/sessions/{session}/operations/{op}/cancel");
        let v = self.call("POST", &path, None, Errors::Api).await?;
        Ok(v["status"].as_str().map_or(OperationStatus::Canceled, OperationStatus::parse))
    }

    /// Closes the operation and frees its result; a running query's job is cancelled.
    pub async fn close_operation(&self, session: &SessionHandle, op: &OperationHandle) -> Result<(), FlinkError> {
        self.call(
            "DELETE",
            &format!("/v4/sessions/{session}/operations/{op}/close"),
            None,
            Errors::Api,
        )
        .await
        .map(drop)
    }

    /// A cursor over the operation's result, page by page (for long or endless queries).
    pub fn cursor(&self, session: &SessionHandle, op: &OperationHandle) -> ResultCursor<'_> {
        ResultCursor {
            gateway: self,
            next: Some(format!("/v4/sessions/{session}/operations/{op}/result/0?rowFormat=JSON")),
            op: op.clone(),
            columns: Vec::new(),
            job_id: None,
            result_kind: None,
            is_query_result: None,
            backoff: FIRST_BACKOFF,
        }
    }

    /// The operation's whole result, read to its end (the operation stays open).
    pub async fn fetch_all(&self, session: &SessionHandle, op: &OperationHandle, deadline: Instant) -> Result<ResultSet, FlinkError> {
        let mut cursor = self.cursor(session, op);
        let mut rows = Vec::new();
        while let Some(page) = cursor.next_page(deadline).await? {
            rows.extend(page);
        }
        Ok(cursor.into_result_set(rows))
    }

    /// Submits a statement, reads its whole result and closes the operation.
    pub async fn execute_and_fetch(
        &self,
        session: &SessionHandle,
        statement: &str,
        execution_config: &BTreeMap<String, String>,
        deadline: Instant,
    ) -> Result<ResultSet, FlinkError> {
        let op = self.execute(session, statement, execution_config).await?;
        let result = self.fetch_all(session, &op, deadline).await;
        // The result is read (or failed); closing only frees it on the gateway.
        let _ = self.close_operation(session, &op).await;
        result
    }

    /// Submits an `INSERT` or `EXECUTE STATEMENT SET` and returns the job it started. Without
    /// `table.dml-sync` the answer comes when the job is submitted: follow it on the cluster
    /// ([`super::cluster::Cluster`]); a job that fails later does not show here.
    pub async fn submit_job(
        &self,
        session: &SessionHandle,
        statement: &str,
        execution_config: &BTreeMap<String, String>,
        deadline: Instant,
    ) -> Result<JobId, FlinkError> {
        let rs = self.execute_and_fetch(session, statement, execution_config, deadline).await?;
        job_id_of(&rs).ok_or_else(|| FlinkError::Unexpected {
            service: self.endpoint.service,
            method: "GET".into(),
            path: format!("/v4/sessions/{session}/operations/.../result"),
            status: 200,
            detail: "the statement's result names no job (is it an INSERT or a STATEMENT SET?)".into(),
        })
    }
}

/// The job a result names: its `job id` column (INSERT, STATEMENT SET), else its `jobID`.
pub fn job_id_of(rs: &ResultSet) -> Option<JobId> {
    let from_column = rs
        .column("job id")
        .and_then(|i| rs.rows.first().and_then(|r| r.fields.get(i)))
        .and_then(Value::as_str)
        .map(|s| JobId(s.to_string()));
    from_column.or_else(|| rs.job_id.clone())
}

/// A statement's result read page by page, following `nextResultUri`.
pub struct ResultCursor<'a> {
    gateway: &'a Gateway,
    op: OperationHandle,
    /// The next page's path; None after EOS.
    next: Option<String>,
    columns: Vec<Column>,
    job_id: Option<JobId>,
    result_kind: Option<ResultKind>,
    is_query_result: Option<bool>,
    backoff: Duration,
}

impl ResultCursor<'_> {
    /// The next rows: `Some` with at least one row, `None` at the end. NOT_READY and empty pages
    /// are waited out with a backoff until `deadline` ([`FlinkError::Timeout`]; the cursor stays
    /// usable, e.g. for an endless streaming query).
    pub async fn next_page(&mut self, deadline: Instant) -> Result<Option<Vec<Row>>, FlinkError> {
        let started = Instant::now();
        loop {
            let Some(path) = self.next.clone() else {
                return Ok(None);
            };
            let r = self.gateway.endpoint.send("GET", &path, &Auth::None, Body::None).await?;
            if r.status != 200 {
                return Err(self.gateway.error("GET", &path, &r, Errors::Statement));
            }
            let page: RawPage = serde_json::from_slice(&r.body)
                .map_err(|e| self.gateway.unexpected("GET", &path, &r, Some(format!("not a result page: {e}"))))?;
            let rows = self.absorb(&page).map_err(|e| self.gateway.unexpected("GET", &path, &r, Some(e)))?;
            match page.result_type.as_str() {
                "EOS" => {
                    self.next = None;
                    return Ok((!rows.is_empty()).then_some(rows));
                }
                "PAYLOAD" => {
                    self.next = page.next_result_uri;
                    if !rows.is_empty() {
                        self.backoff = FIRST_BACKOFF;
                        return Ok(Some(rows));
                    }
                }
                "NOT_READY" => {
                    if let Some(next) = page.next_result_uri {
                        self.next = Some(next);
                    }
                }
                other => {
                    let detail = format!("unknown resultType {other:?}");
                    return Err(self.gateway.unexpected("GET", &path, &r, Some(detail)));
                }
            }
            if self.next.is_none() {
                return Ok(None);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(FlinkError::Timeout {
                    what: format!("the result of Flink SQL Gateway operation {}", self.op),
                    secs: now.duration_since(started).as_secs(),
                });
            }
            tokio::time::sleep(self.backoff.min(deadline - now)).await;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Takes the page's metadata and decodes its rows.
    fn absorb(&mut self, page: &RawPage) -> Result<Vec<Row>, String> {
        if let Some(j) = &page.job_id {
            self.job_id = Some(JobId(j.clone()));
        }
        if let Some(k) = &page.result_kind {
            self.result_kind = Some(ResultKind::parse(k));
        }
        if page.is_query_result.is_some() {
            self.is_query_result = page.is_query_result;
        }
        let Some(results) = &page.results else {
            return Ok(Vec::new());
        };
        if !results.columns.is_empty() {
            self.columns = results
                .columns
                .iter()
                .map(|c| Column {
                    name: c.name.clone(),
                    logical_type: LogicalType::from_json(&c.logical_type),
                })
                .collect();
        }
        let mut rows = Vec::with_capacity(results.data.len());
        for raw in &results.data {
            let kind = RowKind::parse(&raw.kind).ok_or_else(|| format!("unknown row kind {:?}", raw.kind))?;
            if raw.fields.len() != self.columns.len() {
                return Err(format!("a row of {} fields for {} columns", raw.fields.len(), self.columns.len()));
            }
            let fields = raw
                .fields
                .iter()
                .zip(&self.columns)
                .map(|(f, c)| decode_field(f, &c.logical_type))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("a field that is not JSON: {e}"))?;
            rows.push(Row { kind, fields });
        }
        Ok(rows)
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    pub fn job_id(&self) -> Option<&JobId> {
        self.job_id.as_ref()
    }

    pub fn result_kind(&self) -> Option<&ResultKind> {
        self.result_kind.as_ref()
    }

    pub fn is_query_result(&self) -> Option<bool> {
        self.is_query_result
    }

    /// Whether EOS was read.
    pub fn is_done(&self) -> bool {
        self.next.is_none()
    }

    fn into_result_set(self, rows: Vec<Row>) -> ResultSet {
        ResultSet {
            columns: self.columns,
            rows,
            job_id: self.job_id,
            result_kind: self.result_kind.unwrap_or(ResultKind::Success),
            is_query_result: self.is_query_result.unwrap_or(false),
        }
    }
}

/// A session that survives its own loss: it remembers its configuration and the set-up
/// statements run into it (ADD JAR, CREATE TABLE, SET ...), and when the gateway says the session
/// does not exist (expired, gateway restarted) it opens a new one, replays them, and retries the
/// submission once. A statement is never resubmitted after it was accepted: a session lost while
/// its result is read is reported, since the statement may have run (an INSERT's job).
pub struct Session {
    gateway: Gateway,
    name: String,
    properties: BTreeMap<String, String>,
    state: tokio::sync::Mutex<SessionState>,
}

struct SessionState {
    handle: Option<SessionHandle>,
    setup: Vec<String>,
}

impl Session {
    /// Opens a session and runs `setup` into it, in order.
    pub async fn open(
        gateway: Gateway,
        name: &str,
        properties: BTreeMap<String, String>,
        setup: Vec<String>,
    ) -> Result<Session, FlinkError> {
        let session = Session {
            gateway,
            name: name.to_string(),
            properties,
            state: tokio::sync::Mutex::new(SessionState { handle: None, setup }),
        };
        {
            let mut state = session.state.lock().await;
            session.reopen(&mut state).await?;
        }
        Ok(session)
    }

    /// A new gateway session with the set-up replayed.
    async fn reopen(&self, state: &mut SessionState) -> Result<SessionHandle, FlinkError> {
        if let Some(old) = state.handle.take() {
            let _ = self.gateway.close_session(&old).await;
        }
        let handle = self.gateway.open_session(&self.name, &self.properties).await?;
        for statement in &state.setup {
            if let Err(e) = self.gateway.configure(&handle, statement).await {
                let _ = self.gateway.close_session(&handle).await;
                return Err(e);
            }
        }
        state.handle = Some(handle.clone());
        Ok(handle)
    }

    /// The current gateway session (opening one if the last reopening failed).
    pub async fn handle(&self) -> Result<SessionHandle, FlinkError> {
        let mut state = self.state.lock().await;
        match &state.handle {
            Some(h) => Ok(h.clone()),
            None => self.reopen(&mut state).await,
        }
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// After `handle` was found gone: the session to retry with (a new one, set up again, unless
    /// another task reopened it already).
    async fn replacement(&self, handle: &SessionHandle) -> Result<SessionHandle, FlinkError> {
        let mut state = self.state.lock().await;
        match &state.handle {
            Some(h) if h != handle => Ok(h.clone()),
            _ => self.reopen(&mut state).await,
        }
    }

    // The retrying methods below are written out rather than sharing an async closure: a future
    // holding an `AsyncFn` borrow is not provably `Send` for every lifetime, which spawned
    // sessions need.

    /// Runs a set-up statement and remembers it for replay (only if it succeeded).
    pub async fn configure(&self, statement: &str) -> Result<(), FlinkError> {
        let handle = self.handle().await?;
        match self.gateway.configure(&handle, statement).await {
            Err(e) if e.is_session_not_found() => {
                let fresh = self.replacement(&handle).await?;
                self.gateway.configure(&fresh, statement).await?
            }
            other => other?,
        }
        self.state.lock().await.setup.push(statement.to_string());
        Ok(())
    }

    /// The set-up statements replayed into a new session.
    pub async fn setup(&self) -> Vec<String> {
        self.state.lock().await.setup.clone()
    }

    /// Heartbeats the session, reopening it if it was gone.
    pub async fn heartbeat(&self) -> Result<(), FlinkError> {
        let handle = self.handle().await?;
        match self.gateway.heartbeat(&handle).await {
            Err(e) if e.is_session_not_found() => {
                let fresh = self.replacement(&handle).await?;
                self.gateway.heartbeat(&fresh).await
            }
            other => other,
        }
    }

    /// Submits a statement: the session it ran in and its operation.
    pub async fn execute(
        &self,
        statement: &str,
        execution_config: &BTreeMap<String, String>,
    ) -> Result<(SessionHandle, OperationHandle), FlinkError> {
        let handle = self.handle().await?;
        match self.gateway.execute(&handle, statement, execution_config).await {
            Err(e) if e.is_session_not_found() => {
                let fresh = self.replacement(&handle).await?;
                let op = self.gateway.execute(&fresh, statement, execution_config).await?;
                Ok((fresh, op))
            }
            Ok(op) => Ok((handle, op)),
            Err(e) => Err(e),
        }
    }

    /// [`Gateway::execute_and_fetch`] in this session.
    pub async fn execute_and_fetch(
        &self,
        statement: &str,
        execution_config: &BTreeMap<String, String>,
        deadline: Instant,
    ) -> Result<ResultSet, FlinkError> {
        let (h, op) = self.execute(statement, execution_config).await?;
        let result = self.gateway.fetch_all(&h, &op, deadline).await;
        let _ = self.gateway.close_operation(&h, &op).await;
        result
    }

    /// [`Gateway::submit_job`] in this session.
    pub async fn submit_job(
        &self,
        statement: &str,
        execution_config: &BTreeMap<String, String>,
        deadline: Instant,
    ) -> Result<JobId, FlinkError> {
        let rs = self.execute_and_fetch(statement, execution_config, deadline).await?;
        job_id_of(&rs).ok_or_else(|| FlinkError::Unexpected {
            service: self.gateway.endpoint.service,
            method: "GET".into(),
            path: "/v4/sessions/.../result".into(),
            status: 200,
            detail: "the statement's result names no job (is it an INSERT or a STATEMENT SET?)".into(),
        })
    }

    /// Closes the gateway session.
    pub async fn close(self) -> Result<(), FlinkError> {
        match self.state.into_inner().handle {
            Some(h) => self.gateway.close_session(&h).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(json: &str) -> RawPage {
        serde_json::from_str(json).unwrap()
    }

    fn cursor(g: &Gateway) -> ResultCursor<'_> {
        g.cursor(&SessionHandle("s".into()), &OperationHandle("o".into()))
    }

    #[test]
    fn pages_are_absorbed() {
        let ep = Endpoint::parse("Flink SQL Gateway", "http://127.0.0.1:1", Duration::from_secs(1)).unwrap();
        let g = Gateway::new(ep);
        let mut c = cursor(&g);
        // As the gateway sent them (docs/flink-facts.md).
        assert!(
            c.absorb(&page(r#"{"resultType":"NOT_READY","nextResultUri":"/v4/x"}"#))
                .unwrap()
                .is_empty()
        );
        let rows = c
            .absorb(&page(
                r#"{"resultType":"PAYLOAD","isQueryResult":true,"jobID":"f82277d4","resultKind":"SUCCESS_WITH_CONTENT",
                "results":{"columns":[{"name":"id","logicalType":{"type":"INTEGER","nullable":false},"comment":null},
                {"name":"v","logicalType":{"type":"DECIMAL","nullable":true,"precision":38,"scale":10},"comment":null}],
                "rowFormat":"JSON","data":[{"kind":"INSERT","fields":[11,12345678901234567890.0123456789]},
                {"kind":"UPDATE_BEFORE","fields":[12,null]}]},"nextResultUri":"/v4/y"}"#,
            ))
            .unwrap();
        assert_eq!(
            rows,
            vec![
                Row {
                    kind: RowKind::Insert,
                    fields: vec![serde_json::json!(11), serde_json::json!("12345678901234567890.0123456789")]
                },
                Row {
                    kind: RowKind::UpdateBefore,
                    fields: vec![serde_json::json!(12), Value::Null]
                },
            ]
        );
        assert_eq!(c.columns().iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["id", "v"]);
        assert_eq!(c.job_id(), Some(&JobId("f82277d4".into())));
        assert_eq!(c.is_query_result(), Some(true));
        assert_eq!(c.result_kind(), Some(&ResultKind::SuccessWithContent));
        // A row that does not fit the columns, an unknown row kind.
        let bad = [
            r#"{"resultType":"PAYLOAD","results":{"columns":[],"data":[{"kind":"INSERT","fields":[1,2,3]}]}}"#,
            r#"{"resultType":"PAYLOAD","results":{"columns":[],"data":[{"kind":"UPSERT","fields":[1,2]}]}}"#,
        ];
        for json in bad {
            assert!(c.absorb(&page(json)).is_err(), "{json}");
        }
        let rs = c.into_result_set(rows);
        assert_eq!(
            rs.pg_text_rows(),
            vec![
                vec![Some("11".to_string()), Some("12345678901234567890.0123456789".to_string())],
                vec![Some("12".to_string()), None]
            ]
        );
    }

    /// A stand-in for the gateway's result paging (the real one is exercised by
    /// tests/flink_client.rs; this one makes the page sequence and the timing deterministic).
    async fn fake_results() -> Gateway {
        use axum::extract::Path;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, Ordering};
        let not_ready = Arc::new(AtomicU32::new(0));
        let app = axum::Router::new().route(
            "/v4/sessions/{s}/operations/{o}/result/{token}",
            axum::routing::get(move |Path((_s, o, token)): Path<(String, String, u32)>| {
                let not_ready = not_ready.clone();
                async move {
                    let cols = r#"{"columns":[{"name":"id","logicalType":{"type":"INTEGER","nullable":false}}],"rowFormat":"JSON""#;
                    let next = |t: u32| format!("/v4/sessions/s/operations/{o}/result/{t}?rowFormat=JSON");
                    let body = match (o.as_str(), token) {
                        ("endless", _) => format!(r#"{{"resultType":"NOT_READY","nextResultUri":"{}"}}"#, next(0)),
                        (_, 0) if not_ready.fetch_add(1, Ordering::SeqCst) < 2 => {
                            format!(r#"{{"resultType":"NOT_READY","nextResultUri":"{}"}}"#, next(0))
                        }
                        (_, 0) => format!(
                            r#"{{"resultType":"PAYLOAD","isQueryResult":true,"jobID":"j1","resultKind":"SUCCESS_WITH_CONTENT","results":{cols},"data":[]}},"nextResultUri":"{}"}}"#,
                            next(1)
                        ),
                        (_, 1) => format!(
                            r#"{{"resultType":"PAYLOAD","isQueryResult":true,"jobID":"j1","resultKind":"SUCCESS_WITH_CONTENT","results":{cols},"data":[{{"kind":"INSERT","fields":[1]}},{{"kind":"DELETE","fields":[2]}}]}},"nextResultUri":"{}"}}"#,
                            next(2)
                        ),
                        _ => format!(
                            r#"{{"resultType":"EOS","isQueryResult":true,"jobID":"j1","resultKind":"SUCCESS_WITH_CONTENT","results":{cols},"data":[]}}}}"#
                        ),
                    };
                    ([("content-type", "application/json")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Gateway::new(Endpoint::parse("Flink SQL Gateway", &format!("http://{addr}"), Duration::from_secs(5)).unwrap())
    }

    #[tokio::test]
    async fn paging_waits_out_not_ready_and_empty_pages() {
        let g = fake_results().await;
        let s = SessionHandle("s".into());
        let rs = g
            .fetch_all(&s, &OperationHandle("o".into()), Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            rs.rows.iter().map(|r| r.kind).collect::<Vec<_>>(),
            [RowKind::Insert, RowKind::Delete]
        );
        assert_eq!((rs.job_id, rs.is_query_result), (Some(JobId("j1".into())), true));
        assert_eq!(rs.columns.len(), 1);
        // A result that never comes: a timeout, and the cursor can go on waiting.
        let mut c = g.cursor(&s, &OperationHandle("endless".into()));
        let t0 = Instant::now();
        let e = c.next_page(Instant::now() + Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(e, FlinkError::Timeout { .. }), "{e}");
        assert!(t0.elapsed() >= Duration::from_millis(300) && t0.elapsed() < Duration::from_secs(2));
        assert!(!c.is_done());
    }

    #[test]
    fn job_ids_of_results() {
        let col = |name: &str| Column {
            name: name.into(),
            logical_type: LogicalType::from_json(&serde_json::json!({"type":"VARCHAR"})),
        };
        let rs = |columns: Vec<Column>, rows: Vec<Vec<Value>>, job_id: Option<&str>| ResultSet {
            columns,
            rows: rows
                .into_iter()
                .map(|fields| Row {
                    kind: RowKind::Insert,
                    fields,
                })
                .collect(),
            job_id: job_id.map(|j| JobId(j.into())),
            result_kind: ResultKind::SuccessWithContent,
            is_query_result: false,
        };
        let cases = [
            (rs(vec![col("job id")], vec![vec!["abc".into()]], None), Some("abc")),
            (rs(vec![col("job id")], vec![vec!["abc".into()]], Some("def")), Some("abc")),
            (rs(vec![col("result")], vec![vec!["OK".into()]], Some("def")), Some("def")),
            (rs(vec![col("result")], vec![vec!["OK".into()]], None), None),
            (rs(vec![col("job id")], vec![], None), None),
        ];
        for (rs, want) in cases {
            assert_eq!(job_id_of(&rs).as_ref().map(JobId::as_str), want);
        }
    }

    #[test]
    fn operation_statuses() {
        let cases = [
            ("RUNNING", OperationStatus::Running, false),
            ("FINISHED", OperationStatus::Finished, true),
            ("ERROR", OperationStatus::Error, true),
            ("CANCELED", OperationStatus::Canceled, true),
            ("PENDING", OperationStatus::Pending, false),
            ("NEW", OperationStatus::Other("NEW".into()), false),
        ];
        for (s, status, terminal) in cases {
            assert_eq!(OperationStatus::parse(s), status);
            assert_eq!(status.is_terminal(), terminal, "{s}");
        }
    }
}
