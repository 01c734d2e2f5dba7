//! The Flink engine's state in a gateway: the one SQL Gateway session it works in, kept in step
//! with the catalog's Flink objects, and the cluster it follows jobs on.
//!
//! Flink's default catalog lives in the memory of a session. dyngate keeps the Flink objects
//! users declare (`dyngate.flink_statement`) and a version number bumped with every change
//! (`dyngate.flink_catalog_version`). Before each use the engine compares the version its session
//! was set up with against the catalog's: on a difference (another gateway changed the objects,
//! or a change of this one's failed to commit) it opens a new session and replays, in order, the
//! jars (`ADD JAR`), the Flink database (`CREATE DATABASE IF NOT EXISTS`) and every kept
//! statement. A session that Flink lost (expired, SQL Gateway restarted) is reopened and replayed
//! by [`Session`] itself.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_postgres::GenericClient;

use super::client::FlinkError;
use super::client::cluster::{Cluster, JobState};
use super::client::gateway::{Gateway, JobId, ResultSet, RowKind, Session};
use super::tables::{SinkTarget, flink_ident, insert_sql, named_sink_ddl, sink_ddl};
use crate::catalog::FlinkColumn;
use crate::core::names::random_hex;
use crate::core::quote_literal;

/// The Flink engine's configuration.
#[derive(Debug, Clone)]
pub struct FlinkConfig {
    pub gateway: Gateway,
    pub cluster: Option<Cluster>,
    /// `ADD JAR` paths, as the SQL Gateway reads them.
    pub jars: Vec<String>,
    /// The Flink database that marks statements as Flink's.
    pub database: String,
    pub sink: SinkTarget,
    /// The longest a query or a batch job for a statement may take.
    pub timeout: Duration,
}

/// The Flink engine of one gateway.
pub struct FlinkRuntime {
    config: FlinkConfig,
    /// The session and the catalog version it was set up with.
    session: tokio::sync::Mutex<Option<(Arc<Session>, i64)>>,
}

/// The SQL that reads the Flink catalog's version.
const VERSION_SQL: &str = "SELECT version FROM dyngate.flink_catalog_version";

/// A query's rows: the columns, the rows read so far and, while Flink still produces, a channel
/// with the rest, page by page.
#[derive(Debug)]
pub struct QueryRows {
    pub columns: Vec<super::client::gateway::Column>,
    pub first: Vec<Vec<Option<String>>>,
    pub rest: Option<tokio::sync::mpsc::Receiver<RowBatch>>,
}

/// A page of a query's rows in PostgreSQL's text form, or the error that ended the result.
pub type RowBatch = Result<Vec<Vec<Option<String>>>, FlinkError>;

/// A query's rows, folded from Flink's changelog into a table.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<super::client::gateway::Column>,
    /// Each row's fields in PostgreSQL's text format.
    pub rows: Vec<Vec<Option<String>>>,
    pub job_id: Option<String>,
}

impl FlinkRuntime {
    pub fn new(config: FlinkConfig) -> FlinkRuntime {
        FlinkRuntime {
            config,
            session: tokio::sync::Mutex::new(None),
        }
    }

    pub fn database(&self) -> &str {
        &self.config.database
    }

    pub fn config(&self) -> &FlinkConfig {
        &self.config
    }

    pub fn deadline(&self) -> Instant {
        Instant::now() + self.config.timeout
    }

    /// The statements every session starts with: the jars, then the Flink database.
    fn base_setup(&self) -> Vec<String> {
        let mut setup: Vec<String> = self.config.jars.iter().map(|j| format!("ADD JAR {}", quote_literal(j))).collect();
        setup.push(format!(
            "CREATE DATABASE IF NOT EXISTS `{}`",
            self.config.database.replace('`', "``")
        ));
        setup
    }

    /// The session, set up with the catalog's current Flink objects (read through `catalog`,
    /// which may be a transaction holding the version row's lock).
    pub async fn session(&self, catalog: &impl GenericClient) -> Result<Arc<Session>, EngineError> {
        let version: i64 = catalog.query_one(VERSION_SQL, &[]).await?.get(0);
        let mut current = self.session.lock().await;
        if let Some((s, v)) = current.as_ref()
            && *v == version
        {
            return Ok(s.clone());
        }
        let rows = catalog
            .query("SELECT statement FROM dyngate.flink_statement ORDER BY id", &[])
            .await?;
        let mut setup = self.base_setup();
        setup.extend(rows.iter().map(|r| r.get::<_, String>(0)));
        let properties = BTreeMap::from([("execution.runtime-mode".to_string(), "batch".to_string())]);
        let session = Arc::new(Session::open(self.config.gateway.clone(), "dyngate", properties, setup).await?);
        tracing::info!(catalog_version = version, "opened a Flink SQL Gateway session");
        if let Some((old, _)) = current.replace((session.clone(), version)) {
            // Operations running in the old session keep their own handle; jobs outlive sessions.
            if let Ok(old) = Arc::try_unwrap(old) {
                let _ = old.close().await;
            }
        }
        Ok(session)
    }

    /// Records that the session now matches catalog version `version` (after a change made
    /// through it committed).
    pub async fn advance(&self, from: i64, to: i64) {
        let mut current = self.session.lock().await;
        if let Some((_, v)) = current.as_mut()
            && *v == from
        {
            *v = to;
        }
    }

    /// Forgets the session: the next use sets up a new one from the catalog (after a change that
    /// ran in Flink but did not commit).
    pub async fn invalidate(&self) {
        self.session.lock().await.take();
    }

    /// Runs a query. In batch mode its rows are passed on page by page as Flink produces them
    /// ([`QueryRows::rest`]: a task reads the pages into a small channel, so a slow client holds
    /// Flink back instead of the gateway's memory filling, and a client that goes away closes
    /// the operation, which cancels the job). A query over an unbounded source is run again in
    /// streaming mode (it must end by itself, e.g. with LIMIT): its result is a changelog, folded
    /// into the rows it ends with, and so passed on whole.
    pub async fn query(&self, session: &Session, sql: &str) -> Result<QueryRows, FlinkError> {
        match self.query_pages(session, sql).await {
            Err(FlinkError::Sql(c)) if c.message.contains("in batch mode is not allowed") => {
                let streaming = BTreeMap::from([("execution.runtime-mode".to_string(), "streaming".to_string())]);
                let folded = fold(session.execute_and_fetch(sql, &streaming, self.deadline()).await?);
                Ok(QueryRows {
                    columns: folded.columns,
                    first: folded.rows,
                    rest: None,
                })
            }
            other => other,
        }
    }

    /// A batch query's first page, and a channel for the rest (see [`FlinkRuntime::query`]).
    async fn query_pages(&self, session: &Session, sql: &str) -> Result<QueryRows, FlinkError> {
        let deadline = self.deadline();
        let batch = BTreeMap::from([("execution.runtime-mode".to_string(), "batch".to_string())]);
        let (handle, op) = session.execute(sql, &batch).await?;
        let gateway = session.gateway().clone();
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let (rest_tx, rest_rx) = tokio::sync::mpsc::channel::<RowBatch>(2);
        tokio::spawn(async move {
            let mut cursor = gateway.cursor(&handle, &op);
            let first = cursor.next_page(deadline).await;
            let columns = cursor.columns().to_vec();
            let texts = |rows: Vec<super::client::gateway::Row>| -> Vec<Vec<Option<String>>> {
                rows.iter()
                    .map(|r| {
                        r.fields
                            .iter()
                            .zip(&columns)
                            .map(|(v, c)| super::client::types::pg_text(v, &c.logical_type))
                            .collect()
                    })
                    .collect()
            };
            let more = match first {
                Err(e) => {
                    let _ = first_tx.send(Err(e));
                    false
                }
                Ok(page) => {
                    let done = cursor.is_done();
                    let _ = first_tx.send(Ok((columns.clone(), texts(page.unwrap_or_default()), done)));
                    !done
                }
            };
            if more {
                loop {
                    match cursor.next_page(deadline).await {
                        Ok(Some(page)) => {
                            if rest_tx.send(Ok(texts(page))).await.is_err() {
                                break; // the client went away
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = rest_tx.send(Err(e)).await;
                            break;
                        }
                    }
                }
            }
            // Frees the result; a query still running (its reader gone) is cancelled.
            let _ = gateway.close_operation(&handle, &op).await;
        });
        let (columns, first, done) = first_rx.await.map_err(|_| FlinkError::Timeout {
            what: "the first page of a query (its reader ended)".into(),
            secs: 0,
        })??;
        Ok(QueryRows {
            columns,
            first,
            rest: (!done).then_some(rest_rx),
        })
    }
}

impl FlinkRuntime {
    /// The query's columns (name, type as `DESCRIBE` prints it), without running it: described
    /// through a temporary view.
    pub async fn describe(&self, session: &Session, query: &str) -> Result<Vec<(String, String)>, FlinkError> {
        let deadline = self.deadline();
        // Streaming mode takes bounded and unbounded sources alike (batch mode refuses the
        // latter); the types are the same.
        let none = BTreeMap::from([("execution.runtime-mode".to_string(), "streaming".to_string())]);
        let view = flink_ident(&format!("dyngate_probe_{}", random_hex(8)));
        session
            .execute_and_fetch(&format!("CREATE TEMPORARY VIEW {view} AS {query}"), &none, deadline)
            .await?;
        let described = session.execute_and_fetch(&format!("DESCRIBE {view}"), &none, deadline).await;
        let _ = session
            .execute_and_fetch(&format!("DROP TEMPORARY VIEW IF EXISTS {view}"), &none, deadline)
            .await;
        let rs = described?;
        let (Some(n), Some(t)) = (rs.column("name"), rs.column("type")) else {
            return Err(FlinkError::Unexpected {
                service: "Flink SQL Gateway",
                method: "DESCRIBE".into(),
                path: "(a temporary view)".into(),
                status: 200,
                detail: "no name and type columns".into(),
            });
        };
        Ok(rs
            .rows
            .iter()
            .map(|r| {
                let text = |i: usize| r.fields.get(i).and_then(|v| v.as_str()).unwrap_or_default().to_string();
                (text(n), text(t))
            })
            .collect())
    }

    /// Submits a batch job writing `query`'s rows (one partition's, if `partition` names one)
    /// into the PostgreSQL table `pg_table` (quoted, schema-qualified) through a temporary JDBC
    /// sink; returns the job. `job_name` becomes its `pipeline.name`.
    pub async fn submit_batch(
        &self,
        session: &Session,
        columns: &[FlinkColumn],
        pg_table: &str,
        query: &str,
        partition: &[(String, String)],
        job_name: &str,
    ) -> Result<JobId, FlinkError> {
        let deadline = self.deadline();
        let none = BTreeMap::new();
        let sink = format!("dyngate_sink_{}", random_hex(8));
        session
            .execute_and_fetch(&sink_ddl(&sink, columns, &self.config.sink, pg_table), &none, deadline)
            .await?;
        let config = BTreeMap::from([
            ("execution.runtime-mode".to_string(), "batch".to_string()),
            ("pipeline.name".to_string(), job_name.to_string()),
        ]);
        let job = session.submit_job(&insert_sql(&sink, query, partition), &config, deadline).await;
        let _ = session
            .execute_and_fetch(&format!("DROP TEMPORARY TABLE IF EXISTS {}", flink_ident(&sink)), &none, deadline)
            .await;
        job
    }

    /// Starts the streaming job of a continuously maintained table: `query`'s changes written
    /// into `pg_table` (quoted; its columns named as `columns`, upserted by `key`), with a
    /// checkpoint every `checkpoint_interval`, restored from `savepoint` if given; `options`
    /// (RESUME WITH) become the job's configuration. Returns once the job runs, or with its
    /// failure.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_streaming(
        &self,
        session: &Session,
        columns: &[FlinkColumn],
        key: &[String],
        pg_table: &str,
        query: &str,
        job_name: &str,
        checkpoint_interval: Duration,
        savepoint: Option<&str>,
        options: &BTreeMap<String, String>,
    ) -> Result<JobId, FlinkError> {
        let deadline = self.deadline();
        let none = BTreeMap::new();
        let sink = format!("dyngate_sink_{}", random_hex(8));
        session
            .execute_and_fetch(&named_sink_ddl(&sink, columns, key, &self.config.sink, pg_table), &none, deadline)
            .await?;
        let mut config = options.clone();
        config.insert("execution.runtime-mode".into(), "streaming".into());
        config.insert("pipeline.name".into(), job_name.into());
        config.insert(
            "execution.checkpointing.interval".into(),
            format!("{}ms", checkpoint_interval.as_millis().max(1)),
        );
        if let Some(path) = savepoint {
            config.insert("execution.state-recovery.path".into(), path.into());
        }
        let job = session.submit_job(&insert_sql(&sink, query, &[]), &config, deadline).await;
        let _ = session
            .execute_and_fetch(&format!("DROP TEMPORARY TABLE IF EXISTS {}", flink_ident(&sink)), &none, deadline)
            .await;
        let job = job?;
        let cluster = self.cluster()?;
        let state = cluster.wait_tasks_running(&job, deadline).await?;
        if state != JobState::Running {
            let reason = match cluster.job_failure(&job).await {
                Ok(Some(cause)) => cause.message,
                _ => "no cause recorded".to_string(),
            };
            return Err(FlinkError::JobFailed {
                job: job.to_string(),
                state: format!("{state:?}").to_uppercase(),
                reason: super::client::hide(&reason, std::slice::from_ref(&self.config.sink.password)),
            });
        }
        Ok(job)
    }

    /// The cluster, which the engine's tables need to follow their jobs.
    pub fn cluster(&self) -> Result<&Cluster, FlinkError> {
        self.config.cluster.as_ref().ok_or_else(|| FlinkError::Unexpected {
            service: "Flink",
            method: "-".into(),
            path: "-".into(),
            status: 0,
            detail: "the gateway was started without --flink-rest, so it cannot follow Flink jobs".into(),
        })
    }

    /// Waits for a batch job to end: FINISHED is Ok; FAILED or CANCELED is the job's failure
    /// with Flink's reason. A job still running at the deadline is cancelled.
    pub async fn wait_finished(&self, job: &JobId) -> Result<(), FlinkError> {
        let cluster = self.cluster()?;
        let state = match cluster.wait_terminal(job, self.deadline()).await {
            Err(e @ FlinkError::Timeout { .. }) => {
                let _ = cluster.cancel(job).await;
                return Err(e);
            }
            other => other?,
        };
        if state == JobState::Finished {
            return Ok(());
        }
        let reason = match cluster.job_failure(job).await {
            Ok(Some(cause)) => cause.message,
            _ => "no cause recorded".to_string(),
        };
        Err(FlinkError::JobFailed {
            job: job.to_string(),
            state: format!("{state:?}").to_uppercase(),
            reason: super::client::hide(&reason, std::slice::from_ref(&self.config.sink.password)),
        })
    }

    /// What the refresh endpoint tells schedulers about where a job runs.
    pub fn cluster_info(&self) -> serde_json::Value {
        let mut info = serde_json::json!({"engine": "flink", "execution.target": "remote"});
        if let Some((host, port)) = self.config.cluster.as_ref().and_then(|c| c.address().rsplit_once(':')) {
            info["rest.address"] = host.into();
            info["rest.port"] = port.into();
        }
        info
    }
}

/// Folds a result's changelog into its final rows: INSERT and UPDATE_AFTER add a row,
/// UPDATE_BEFORE and DELETE remove one equal row.
pub fn fold(rs: ResultSet) -> QueryResult {
    let texts = rs.pg_text_rows();
    let mut rows: Vec<Vec<Option<String>>> = Vec::with_capacity(texts.len());
    for (row, text) in rs.rows.iter().zip(texts) {
        match row.kind {
            RowKind::Insert | RowKind::UpdateAfter => rows.push(text),
            RowKind::UpdateBefore | RowKind::Delete => {
                if let Some(i) = rows.iter().rposition(|r| *r == text) {
                    rows.remove(i);
                }
            }
        }
    }
    QueryResult {
        columns: rs.columns,
        rows,
        job_id: rs.job_id.map(|j| j.0),
    }
}

/// What went wrong in the engine: Flink's error, or the catalog's.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Flink(#[from] FlinkError),
    #[error(transparent)]
    Catalog(#[from] tokio_postgres::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::flink::client::gateway::{Column, ResultKind, Row};
    use crate::engine::flink::client::types::LogicalType;
    use serde_json::json;

    #[test]
    fn changelog_folds_into_rows() {
        let col = |n: &str, t: &str| Column {
            name: n.into(),
            logical_type: LogicalType::from_sql(t),
        };
        let row = |kind, k: &str, n: i64| Row {
            kind,
            fields: vec![json!(k), json!(n)],
        };
        let rs = ResultSet {
            columns: vec![col("k", "STRING"), col("n", "BIGINT")],
            rows: vec![
                row(RowKind::Insert, "a", 1),
                row(RowKind::Insert, "b", 1),
                row(RowKind::UpdateBefore, "a", 1),
                row(RowKind::UpdateAfter, "a", 2),
                row(RowKind::Delete, "b", 1),
                row(RowKind::Insert, "c", 1),
                row(RowKind::Insert, "c", 1),
                row(RowKind::Delete, "c", 1),
            ],
            job_id: None,
            result_kind: ResultKind::SuccessWithContent,
            is_query_result: true,
        };
        let folded = fold(rs);
        let s = |v: &str| Some(v.to_string());
        assert_eq!(folded.rows, vec![vec![s("a"), s("2")], vec![s("c"), s("1")]]);
    }
}
