//! A typed client of the Flink cluster's REST API (the JobManager's, `rest.port`): the jobs'
//! states, cancelling, stop-with-savepoint and why a job failed.
//!
//! Job state is read from `/jobs` and `/jobs/overview`, which are current, never from
//! `/jobs/{id}`, which is served from a cache lagging up to `web.refresh-interval` (3 s) behind
//! (`docs/flink-facts.md`). A job submitted through the SQL Gateway is only followed here: a job
//! that fails at run time shows nowhere in the gateway.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::gateway::JobId;
use super::{Cause, FlinkError, error_cause, last_cause};
use crate::http_client::{Auth, Body, Endpoint, Response};

/// A job's state (Flink's `JobStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Initializing,
    Created,
    Running,
    Failing,
    Failed,
    Cancelling,
    Canceled,
    Finished,
    Restarting,
    Suspended,
    Reconciling,
    Other(String),
}

impl JobState {
    pub fn parse(s: &str) -> JobState {
        match s {
            "INITIALIZING" => JobState::Initializing,
            "CREATED" => JobState::Created,
            "RUNNING" => JobState::Running,
            "FAILING" => JobState::Failing,
            "FAILED" => JobState::Failed,
            "CANCELLING" => JobState::Cancelling,
            "CANCELED" => JobState::Canceled,
            "FINISHED" => JobState::Finished,
            "RESTARTING" => JobState::Restarting,
            "SUSPENDED" => JobState::Suspended,
            "RECONCILING" => JobState::Reconciling,
            other => JobState::Other(other.to_string()),
        }
    }

    /// Whether the job is over for good (Flink's globally terminal states). A stopped-with-
    /// savepoint streaming job ends FINISHED, a cancelled one CANCELED.
    pub fn is_terminal(&self) -> bool {
        matches!(self, JobState::Failed | JobState::Canceled | JobState::Finished)
    }
}

/// A job as `/jobs/overview` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSummary {
    pub id: JobId,
    /// `insert-into_<catalog>.<db>.<table>` by default, or `pipeline.name`.
    pub name: String,
    pub state: JobState,
    /// `BATCH` or `STREAMING`.
    pub job_type: Option<String>,
    /// Milliseconds since the epoch.
    pub start_time: Option<i64>,
    /// None while the job runs.
    pub end_time: Option<i64>,
    /// Its tasks: how many run, of how many.
    pub tasks_running: u64,
    pub tasks_total: u64,
}

/// `GET /overview`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    pub taskmanagers: u64,
    pub slots_total: u64,
    pub slots_available: u64,
    pub jobs_running: u64,
    pub jobs_finished: u64,
    pub jobs_cancelled: u64,
    pub jobs_failed: u64,
    pub flink_version: String,
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Accepted: the job is being cancelled (CANCELED within about a second).
    Cancelling,
    /// The job had already ended in this state (Flink answers 409).
    AlreadyTerminal(JobState),
}

/// The cluster's REST API.
#[derive(Debug, Clone)]
pub struct Cluster {
    endpoint: Endpoint,
}

/// Savepoint status polls: 100 ms apart (a tiny savepoint takes 0.2-1.6 s).
const SAVEPOINT_POLL: Duration = Duration::from_millis(100);
const STATE_POLL: Duration = Duration::from_millis(100);

impl Cluster {
    pub fn new(endpoint: Endpoint) -> Cluster {
        Cluster { endpoint }
    }

    /// The REST endpoint's `host:port`.
    pub fn address(&self) -> &str {
        &self.endpoint.addr
    }

    async fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Response, FlinkError> {
        Ok(self
            .endpoint
            .send(method, path, &Auth::None, body.map_or(Body::None, Body::Json))
            .await?)
    }

    fn unexpected(&self, method: &str, path: &str, r: &Response) -> FlinkError {
        let text = String::from_utf8_lossy(&r.body);
        FlinkError::Unexpected {
            service: self.endpoint.service,
            method: method.to_string(),
            path: path.to_string(),
            status: r.status,
            detail: error_cause(&text).map_or_else(|| r.snippet(), |c| c.message),
        }
    }

    /// A 2xx answer's JSON; 404 is [`FlinkError::JobNotFound`] for `job`.
    async fn json(&self, method: &str, path: &str, body: Option<&Value>, job: Option<&JobId>) -> Result<Value, FlinkError> {
        let r = self.send(method, path, body).await?;
        match (r.status, job) {
            (200..=299, _) => r.json().map_err(|_| self.unexpected(method, path, &r)),
            (404, Some(job)) => Err(FlinkError::JobNotFound(job.to_string())),
            _ => Err(self.unexpected(method, path, &r)),
        }
    }

    /// `GET /overview`: task managers, slots, job counts.
    pub async fn overview(&self) -> Result<Overview, FlinkError> {
        let v = self.json("GET", "/overview", None, None).await?;
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Ok(Overview {
            taskmanagers: n("taskmanagers"),
            slots_total: n("slots-total"),
            slots_available: n("slots-available"),
            jobs_running: n("jobs-running"),
            jobs_finished: n("jobs-finished"),
            jobs_cancelled: n("jobs-cancelled"),
            jobs_failed: n("jobs-failed"),
            flink_version: v["flink-version"].as_str().unwrap_or("").to_string(),
        })
    }

    /// Every job the cluster knows (running and ended), from `/jobs/overview`.
    pub async fn jobs(&self) -> Result<Vec<JobSummary>, FlinkError> {
        let path = "/jobs/overview";
        let v = self.json("GET", path, None, None).await?;
        let Some(jobs) = v["jobs"].as_array() else {
            return Err(FlinkError::Unexpected {
                service: self.endpoint.service,
                method: "GET".into(),
                path: path.into(),
                status: 200,
                detail: "no jobs list".into(),
            });
        };
        Ok(jobs.iter().filter_map(job_summary).collect())
    }

    /// One job of [`Cluster::jobs`].
    pub async fn job(&self, id: &JobId) -> Result<Option<JobSummary>, FlinkError> {
        Ok(self.jobs().await?.into_iter().find(|j| j.id == *id))
    }

    /// The job's current state (from `/jobs`); None if the cluster does not know it.
    pub async fn job_state(&self, id: &JobId) -> Result<Option<JobState>, FlinkError> {
        let v = self.json("GET", "/jobs", None, None).await?;
        Ok(v["jobs"].as_array().and_then(|jobs| {
            jobs.iter()
                .find(|j| j["id"].as_str() == Some(id.as_str()))
                .and_then(|j| j["status"].as_str())
                .map(JobState::parse)
        }))
    }

    /// Polls the job's state until `done` holds for it, or `deadline`.
    pub async fn wait_for(&self, id: &JobId, deadline: Instant, done: impl Fn(&JobState) -> bool) -> Result<JobState, FlinkError> {
        let started = Instant::now();
        loop {
            let state = self.job_state(id).await?.ok_or_else(|| FlinkError::JobNotFound(id.to_string()))?;
            if done(&state) {
                return Ok(state);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(FlinkError::Timeout {
                    what: format!("Flink job {id} (still {state:?})"),
                    secs: now.duration_since(started).as_secs(),
                });
            }
            tokio::time::sleep(STATE_POLL.min(deadline - now)).await;
        }
    }

    /// Polls `/jobs/overview` until every task of the job runs (Ok with RUNNING), or the job has
    /// ended (Ok with its state), or `deadline`. A job is RUNNING before its tasks are: one whose
    /// sink cannot open fails only then.
    pub async fn wait_tasks_running(&self, id: &JobId, deadline: Instant) -> Result<JobState, FlinkError> {
        let started = Instant::now();
        loop {
            let job = self.job(id).await?.ok_or_else(|| FlinkError::JobNotFound(id.to_string()))?;
            if job.state.is_terminal() || (job.state == JobState::Running && job.tasks_total > 0 && job.tasks_running == job.tasks_total) {
                return Ok(job.state);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(FlinkError::Timeout {
                    what: format!(
                        "the tasks of Flink job {id} (still {:?}, {}/{} running)",
                        job.state, job.tasks_running, job.tasks_total
                    ),
                    secs: now.duration_since(started).as_secs(),
                });
            }
            tokio::time::sleep(STATE_POLL.min(deadline - now)).await;
        }
    }

    /// Polls until the job has ended ([`JobState::is_terminal`]).
    pub async fn wait_terminal(&self, id: &JobId, deadline: Instant) -> Result<JobState, FlinkError> {
        self.wait_for(id, deadline, JobState::is_terminal).await
    }

    /// Cancels a job (`PATCH /jobs/{id}?mode=cancel`); a job that already ended is
    /// [`CancelOutcome::AlreadyTerminal`], an unknown one [`FlinkError::JobNotFound`]. The state
    /// is looked at first: Flink answers a cancel of a FINISHED or FAILED job with 409, but
    /// accepts one of a CANCELED job again (202).
    pub async fn cancel(&self, id: &JobId) -> Result<CancelOutcome, FlinkError> {
        if let Some(state) = self.job_state(id).await?.filter(JobState::is_terminal) {
            return Ok(CancelOutcome::AlreadyTerminal(state));
        }
        let path = format!("/jobs/{id}?mode=cancel");
        let r = self.send("PATCH", &path, None).await?;
        match r.status {
            200..=299 => Ok(CancelOutcome::Cancelling),
            404 => Err(FlinkError::JobNotFound(id.to_string())),
            409 => {
                let text = String::from_utf8_lossy(&r.body);
                match terminal_state_in(&text) {
                    Some(state) => Ok(CancelOutcome::AlreadyTerminal(state)),
                    None => match self.job_state(id).await? {
                        Some(state) if state.is_terminal() => Ok(CancelOutcome::AlreadyTerminal(state)),
                        _ => Err(self.unexpected("PATCH", &path, &r)),
                    },
                }
            }
            _ => Err(self.unexpected("PATCH", &path, &r)),
        }
    }

    /// Stops a job with a savepoint (`POST /jobs/{id}/stop`, then polls the trigger) and returns
    /// the savepoint's location (`file:/.../savepoint-...`), to be given to a later job as
    /// `execution.state-recovery.path`. The job ends FINISHED. `target_dir` defaults to the
    /// cluster's `execution.checkpointing.savepoint-dir`. A job that already ended is
    /// [`FlinkError::NotRunning`].
    pub async fn stop_with_savepoint(&self, id: &JobId, target_dir: Option<&str>, deadline: Instant) -> Result<String, FlinkError> {
        let started = Instant::now();
        let mut body = serde_json::json!({"drain": false});
        if let Some(dir) = target_dir {
            body["targetDirectory"] = Value::String(dir.to_string());
        }
        let v = self.json("POST", &format!("/jobs/{id}/stop"), Some(&body), Some(id)).await?;
        let Some(trigger) = v["request-id"].as_str() else {
            return Err(FlinkError::Unexpected {
                service: self.endpoint.service,
                method: "POST".into(),
                path: format!("/jobs/{id}/stop"),
                status: 200,
                detail: "no request-id".into(),
            });
        };
        let path = format!("/jobs/{id}/savepoints/{trigger}");
        loop {
            let v = self.json("GET", &path, None, Some(id)).await?;
            match savepoint_status(&v) {
                SavepointStatus::InProgress => {}
                SavepointStatus::Completed(location) => return Ok(location),
                // Flink accepts a stop of a job that is not running (ended, or unknown) and fails
                // the trigger later with FlinkJobNotFoundException.
                SavepointStatus::Failed(reason) if reason.starts_with("FlinkJobNotFoundException") => {
                    return Err(match self.job_state(id).await? {
                        Some(state) => FlinkError::NotRunning {
                            job: id.to_string(),
                            state: format!("{state:?}").to_uppercase(),
                        },
                        None => FlinkError::JobNotFound(id.to_string()),
                    });
                }
                SavepointStatus::Failed(reason) => {
                    return Err(FlinkError::Savepoint {
                        job: id.to_string(),
                        reason,
                    });
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(FlinkError::Timeout {
                    what: format!("the savepoint of Flink job {id}"),
                    secs: now.duration_since(started).as_secs(),
                });
            }
            tokio::time::sleep(SAVEPOINT_POLL.min(deadline - now)).await;
        }
    }

    /// When the job's latest checkpoint completed (milliseconds since the epoch): the rows it
    /// wrote up to then are in their sink (`/jobs/{id}/checkpoints`, `latest.completed`).
    pub async fn latest_checkpoint(&self, id: &JobId) -> Result<Option<i64>, FlinkError> {
        let v = self.json("GET", &format!("/jobs/{id}/checkpoints"), None, Some(id)).await?;
        let completed = &v["latest"]["completed"];
        Ok(completed["latest_ack_timestamp"]
            .as_i64()
            .or_else(|| completed["trigger_timestamp"].as_i64()))
    }

    /// Why the job failed: the last `Caused by:` of its most recent exception
    /// (`/jobs/{id}/exceptions`); None when it has none.
    pub async fn job_failure(&self, id: &JobId) -> Result<Option<Cause>, FlinkError> {
        let v = self.json("GET", &format!("/jobs/{id}/exceptions"), None, Some(id)).await?;
        Ok(failure_of(&v))
    }
}

/// A `/jobs/overview` entry.
fn job_summary(j: &Value) -> Option<JobSummary> {
    let time = |k: &str| j[k].as_i64().filter(|t| *t >= 0);
    Some(JobSummary {
        id: JobId(j["jid"].as_str()?.to_string()),
        name: j["name"].as_str().unwrap_or("").to_string(),
        state: JobState::parse(j["state"].as_str()?),
        job_type: j["jobType"].as_str().map(str::to_string),
        start_time: time("start-time"),
        end_time: time("end-time"),
        tasks_running: j["tasks"]["running"].as_u64().unwrap_or(0),
        tasks_total: j["tasks"]["total"].as_u64().unwrap_or(0),
    })
}

/// The state named in a 409 answer to a cancel: `... another terminal state (FAILED).`
fn terminal_state_in(body: &str) -> Option<JobState> {
    let at = body.find("terminal state (")? + "terminal state (".len();
    let end = body[at..].find(')')?;
    let state = JobState::parse(&body[at..at + end]);
    state.is_terminal().then_some(state)
}

#[derive(Debug, PartialEq, Eq)]
enum SavepointStatus {
    InProgress,
    Completed(String),
    Failed(String),
}

/// A savepoint trigger's status: `{"status":{"id":"COMPLETED"},"operation":{"location":..}}` or
/// `{"operation":{"failure-cause":{"class":..,"stack-trace":..}}}`.
fn savepoint_status(v: &Value) -> SavepointStatus {
    if v["status"]["id"].as_str() != Some("COMPLETED") {
        return SavepointStatus::InProgress;
    }
    let op = &v["operation"];
    if let Some(location) = op["location"].as_str() {
        return SavepointStatus::Completed(location.to_string());
    }
    let cause = &op["failure-cause"];
    let reason = cause["stack-trace"]
        .as_str()
        .and_then(last_cause)
        .map(|c| c.to_string())
        .or_else(|| cause["class"].as_str().map(str::to_string))
        .unwrap_or_else(|| "no location and no failure cause in the answer".to_string());
    SavepointStatus::Failed(reason)
}

/// The last `Caused by:` of `exceptionHistory.entries[0].stacktrace`.
fn failure_of(v: &Value) -> Option<Cause> {
    v["exceptionHistory"]["entries"][0]["stacktrace"].as_str().and_then(last_cause)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_states() {
        let cases = [
            ("RUNNING", JobState::Running, false),
            ("FINISHED", JobState::Finished, true),
            ("CANCELED", JobState::Canceled, true),
            ("FAILED", JobState::Failed, true),
            ("CANCELLING", JobState::Cancelling, false),
            ("SUSPENDED", JobState::Suspended, false),
            ("RESTARTING", JobState::Restarting, false),
            ("WHATEVER", JobState::Other("WHATEVER".into()), false),
        ];
        for (s, state, terminal) in cases {
            assert_eq!(JobState::parse(s), state);
            assert_eq!(state.is_terminal(), terminal, "{s}");
        }
    }

    #[test]
    fn job_summaries() {
        // An entry of /jobs/overview as Flink 2.3 sent it.
        let j = json!({"jid":"e560ad16424903e3e241fc88e33b3286","name":"insert-into_default_catalog.default_database.bh",
            "jobType":"STREAMING","schedulerType":"Adaptive","start-time":1764000000000i64,"end-time":-1,"duration":5,
            "state":"RUNNING","last-modification":1764000000001i64,"tasks":{"running":2,"total":2},"pending-operators":0});
        assert_eq!(
            job_summary(&j),
            Some(JobSummary {
                id: JobId("e560ad16424903e3e241fc88e33b3286".into()),
                name: "insert-into_default_catalog.default_database.bh".into(),
                state: JobState::Running,
                job_type: Some("STREAMING".into()),
                start_time: Some(1764000000000),
                end_time: None,
                tasks_running: 2,
                tasks_total: 2,
            })
        );
        assert_eq!(job_summary(&json!({"name": "no id"})), None);
    }

    #[test]
    fn cancel_conflicts() {
        let cases = [
            (
                r#"{"errors":["org.apache.flink.runtime.rest.handler.RestHandlerException: Job cancellation failed because the job has already reached another terminal state (FAILED)."]}"#,
                Some(JobState::Failed),
            ),
            ("... another terminal state (FINISHED).", Some(JobState::Finished)),
            ("... another terminal state (RUNNING).", None),
            ("something else", None),
        ];
        for (body, want) in cases {
            assert_eq!(terminal_state_in(body), want, "{body}");
        }
    }

    #[test]
    fn savepoint_statuses() {
        let cases = [
            (json!({"status":{"id":"IN_PROGRESS"}}), SavepointStatus::InProgress),
            (
                json!({"status":{"id":"COMPLETED"},"operation":{"location":"file:/d/savepoints/savepoint-13879e-f0810d6c3eba"}}),
                SavepointStatus::Completed("file:/d/savepoints/savepoint-13879e-f0810d6c3eba".into()),
            ),
            (
                json!({"status":{"id":"COMPLETED"},"operation":{"failure-cause":{"class":"java.util.concurrent.CompletionException",
                    "stack-trace":"java.util.concurrent.CompletionException: x\n\tat a.b(C.java:1)\nCaused by: org.apache.flink.runtime.checkpoint.CheckpointException: Task local checkpoint failure.\n\tat d.e(F.java:2)\n"}}}),
                SavepointStatus::Failed("CheckpointException: Task local checkpoint failure.".into()),
            ),
            (
                json!({"status":{"id":"COMPLETED"},"operation":{}}),
                SavepointStatus::Failed("no location and no failure cause in the answer".into()),
            ),
        ];
        for (v, want) in cases {
            assert_eq!(savepoint_status(&v), want, "{v}");
        }
    }

    #[test]
    fn failures() {
        let v = json!({"exceptionHistory":{"entries":[{"exceptionName":"org.apache.flink.runtime.JobException",
            "stacktrace":"org.apache.flink.runtime.JobException: Recovery is suppressed by FixedDelayRestartBackoffTimeStrategy(maxNumberRestartAttempts=2, backoffTimeMS=1000)\n\tat a.b(C.java:1)\nCaused by: java.io.IOException: x\n\tat c.d(E.java:2)\nCaused by: org.postgresql.util.PSQLException: ERROR: relation \"smoke_no_such\" does not exist\n  Position: 13\n\tat f.g(H.java:3)\n",
            "timestamp":1,"failureLabels":{}}],"truncated":false}});
        let cause = failure_of(&v).unwrap();
        assert_eq!(cause.exception, "org.postgresql.util.PSQLException");
        assert_eq!(cause.message, "ERROR: relation \"smoke_no_such\" does not exist\n  Position: 13");
        assert_eq!(failure_of(&json!({"exceptionHistory":{"entries":[],"truncated":false}})), None);
    }
}
