//! CONTINUOUS tables on the flink engine: a streaming Flink job keeps the PostgreSQL table up to
//! date, writing its changes through the JDBC connector (upserting by the query's key when it
//! has one: engine::flink::tables::upsert_key), with a checkpoint every freshness period. Flink
//! can run such a job only over sources that keep producing (datagen, Kafka, files with
//! monitoring, ...); a JDBC source is read once.
//!
//! - CREATE: the table is created and committed first (status INITIALIZING, with a unique index
//!   on the key), then the job is started; once it runs the table is ACTIVATED with the job's id.
//!   If the job cannot start, the table and its catalog row are removed again.
//! - SUSPEND stops the job with a savepoint (path and query recorded); RESUME starts it again
//!   from that savepoint, only into the same query, with RESUME WITH options as the job's
//!   configuration. A freshness change restarts the job the same way with the new checkpoint
//!   interval. DROP cancels the job.
//! - The watch (every few seconds, every gateway): the state of each table's job, and its
//!   latest checkpoint as the table's data time (so lag and freshness_met hold for it). A job
//!   that ended by itself (failed, lost) is recorded once as a FAILED history row with Flink's
//!   reason, and shown in `dyngate.dynamic_tables` (engine_job_state); RESUME starts it again.
//!   Jobs named as this catalog's whose table does not know them (a gateway killed between
//!   starting a job and recording it) are cancelled: no orphan keeps writing. After a restart a
//!   gateway finds its tables' jobs by their ids: nothing is started twice.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_postgres::Transaction;

use super::FlinkEngine;
use crate::catalog::{self, DtRow, FlinkColumn};
use crate::core::names::new_job_id;
use crate::core::{Error, QualifiedName, Status, quote_ident};
use crate::engine;
use crate::engine::NewTable;
use crate::engine::flink::client::FlinkError;
use crate::engine::flink::client::cluster::{CancelOutcome, JobState};
use crate::engine::flink::client::gateway::JobId;
use crate::engine::flink::runtime::FlinkRuntime;
use crate::engine::flink::tables;

/// Cancels a job and waits until it has ended (an ended or unknown job is fine).
async fn cancel_and_wait(engine: &FlinkRuntime, job: &JobId) -> Result<(), Error> {
    let cluster = engine.cluster()?;
    match cluster.cancel(job).await {
        Ok(CancelOutcome::AlreadyTerminal(_)) | Err(FlinkError::JobNotFound(_)) => Ok(()),
        Ok(CancelOutcome::Cancelling) => match cluster.wait_terminal(job, engine.deadline()).await {
            Ok(_) | Err(FlinkError::JobNotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// How often the watch looks at the streaming jobs (and so how late a table's data time is).
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// A continuously maintained table's sink: its columns (PostgreSQL's names) and key.
#[derive(Debug, Clone)]
pub struct Continuous {
    pub columns: Vec<FlinkColumn>,
    pub key: Vec<String>,
}

impl FlinkEngine {
    /// In CREATE's transaction: the table created as the requester (declared columns, else the
    /// query's), with a unique index on the key; the catalog row INITIALIZING and marked as
    /// Flink's. The sink writes the table's columns unquoted, so their names must read so.
    pub(crate) async fn continuous_create_in(
        &self,
        tx: &Transaction<'_>,
        new: &NewTable<'_>,
        id: i64,
        described: &[FlinkColumn],
    ) -> Result<Continuous, Error> {
        let (who, query) = (new.owner, new.query);
        let target = super::full::create_table(tx, new, described).await?;
        let names: Vec<String> = catalog::columns_of(tx, &target).await?.into_iter().map(|(n, _)| n).collect();
        let columns = tables::sink_columns(&names, described).map_err(Error::InvalidDefinition)?;
        let key = tables::upsert_key(query, &columns)
            .map_err(Error::InvalidDefinition)?
            .unwrap_or_default();
        if !key.is_empty() {
            let cols: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
            let sql = format!("CREATE UNIQUE INDEX ON {target} ({}) NULLS NOT DISTINCT", cols.join(", "));
            engine::postgres::run_as::run_as(tx, who, &sql).await?;
        }
        let stored = serde_json::to_string(&columns).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "UPDATE dyngate.dynamic_table
                SET engine = 'flink', status = 'INITIALIZING', flink_columns = $2::text::jsonb, refresh_action = 'FULL',
                    refresh_action_reason = 'kept up to date by a streaming Flink job'
              WHERE id = $1",
            &[&id, &stored],
        )
        .await?;
        Ok(Continuous { columns, key })
    }

    /// The name of table `dt_id`'s streaming job: the catalog's identity and the table's id, by
    /// which the watch tells this catalog's jobs from others'.
    async fn job_name(&self, dt_id: i64, name: &QualifiedName) -> Result<String, Error> {
        Ok(format!("dyngate:{}:{dt_id}:{name}", self.catalog_id.get(&self.pool).await?))
    }

    /// Starts a table's streaming job (from `savepoint` if given).
    #[allow(clippy::too_many_arguments)]
    async fn start_job(
        &self,
        dt_id: i64,
        name: &QualifiedName,
        query: &str,
        continuous: &Continuous,
        freshness: Duration,
        savepoint: Option<&str>,
        options: &BTreeMap<String, String>,
    ) -> Result<JobId, Error> {
        let engine = self.runtime()?;
        let job_name = self.job_name(dt_id, name).await?;
        let client = self.pool.get().await?;
        // Until the job is recorded, the watch must not take it for an orphan.
        client
            .execute(
                "UPDATE dyngate.dynamic_table SET flink_job_state = 'STARTING' WHERE id = $1",
                &[&dt_id],
            )
            .await?;
        let session = engine.session(&*client).await?;
        drop(client);
        Ok(engine
            .start_streaming(
                &session,
                &continuous.columns,
                &continuous.key,
                &name.quoted(),
                query,
                &job_name,
                freshness,
                savepoint,
                options,
            )
            .await?)
    }

    /// After CREATE's commit: starts the job and activates the table; if the job cannot start,
    /// removes the table and its catalog row again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn continuous_start(
        &self,
        who: &str,
        name: &QualifiedName,
        id: i64,
        query: &str,
        continuous: &Continuous,
        freshness: Duration,
        creation_job: &str,
    ) -> Result<(), Error> {
        let started = self.start_job(id, name, query, continuous, freshness, None, &BTreeMap::new()).await;
        let recorded = match &started {
            Ok(job) => self.activate(id, job, creation_job).await,
            Err(_) => Ok(()),
        };
        if started.is_err() || recorded.is_err() {
            if let (Ok(job), Ok(engine)) = (&started, self.runtime()) {
                cancel_and_wait(engine, job).await.ok();
            }
            self.undo_create(who, name, id).await;
        }
        started.map(drop).and(recorded)
    }

    async fn activate(&self, id: i64, job: &JobId, creation_job: &str) -> Result<(), Error> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE dyngate.dynamic_table SET status = 'ACTIVATED', flink_job_id = $2, flink_job_state = 'RUNNING' WHERE id = $1",
                &[&id, &job.as_str()],
            )
            .await?;
        self.record_engine_job(&*client, id, creation_job, job.as_str()).await?;
        Ok(())
    }

    /// Removes a table whose CREATE could not start its job.
    async fn undo_create(&self, who: &str, name: &QualifiedName, id: i64) {
        let undone = async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute("SELECT set_config('dyngate.dropping', $1, true)", &[&id.to_string()])
                .await?;
            engine::postgres::run_as::run_as(&tx, who, &format!("DROP TABLE IF EXISTS {}", name.quoted())).await?;
            catalog::delete(&tx, id).await?;
            tx.commit().await?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = undone {
            tracing::error!(table = %name, error = %e, "removing a dynamic table whose Flink job did not start");
        }
    }

    /// The sink of a table from its catalog row.
    pub(crate) fn continuous_of(dt: &DtRow) -> Result<Continuous, Error> {
        let key = tables::upsert_key(&dt.query, &dt.flink_columns)
            .map_err(Error::InvalidDefinition)?
            .unwrap_or_default();
        Ok(Continuous {
            columns: dt.flink_columns.clone(),
            key,
        })
    }

    /// SUSPEND of a continuously maintained Flink table: stops its job with a savepoint, then
    /// records the savepoint and the status. A job that had ended already leaves the last
    /// savepoint in place.
    pub(crate) async fn suspend_job(&self, dt: &DtRow) -> Result<(), Error> {
        let savepoint = self.stop_job(dt).await?;
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE dyngate.dynamic_table
                    SET status = 'SUSPENDED', altered_at = now(), flink_job_id = NULL, flink_job_state = NULL,
                        savepoint_path = coalesce($2, savepoint_path),
                        savepoint_query = CASE WHEN $2 IS NULL THEN savepoint_query ELSE query END
                  WHERE id = $1",
                &[&dt.id, &savepoint],
            )
            .await?;
        tracing::info!(table = %dt.name, savepoint = savepoint.as_deref().unwrap_or("none"), "streaming job stopped");
        Ok(())
    }

    /// Stops a table's job with a savepoint: its path, or None when the job had ended already.
    pub(crate) async fn stop_job(&self, dt: &DtRow) -> Result<Option<String>, Error> {
        let engine = self.runtime()?;
        let cluster = engine.cluster()?;
        Ok(match &dt.flink_job_id {
            Some(job) => match cluster.stop_with_savepoint(&JobId(job.clone()), None, engine.deadline()).await {
                Ok(path) => Some(path),
                Err(FlinkError::NotRunning { .. } | FlinkError::JobNotFound(_)) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        })
    }

    /// Starts a table's job without a savepoint (its query changed, or it became CONTINUOUS) and
    /// records it; a job that cannot start is recorded as a FAILED refresh with the reason.
    pub(crate) async fn start_fresh(&self, dt: &DtRow) -> Result<(), Error> {
        let continuous = Self::continuous_of(dt)?;
        let freshness = Duration::from_secs(dt.freshness_seconds() as u64);
        let started = self
            .start_job(dt.id, &dt.name, &dt.query, &continuous, freshness, None, &dt.refresh_options)
            .await;
        let client = self.pool.get().await?;
        match started {
            Ok(job) => {
                client
                    .execute(
                        "UPDATE dyngate.dynamic_table SET flink_job_id = $2, flink_job_state = 'RUNNING' WHERE id = $1",
                        &[&dt.id, &job.as_str()],
                    )
                    .await?;
                tracing::info!(table = %dt.name, job = %job, "streaming job started");
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                let job_id = new_job_id();
                catalog::record_refresh(
                    &*client,
                    &catalog::RefreshRow {
                        ended: true,
                        error_code: Some(e.sqlstate()),
                        error_message: Some(&message),
                        ..catalog::RefreshRow::of(dt, &job_id, "MANUAL", "FAILED")
                    },
                )
                .await?;
                client
                    .execute(
                        "UPDATE dyngate.dynamic_table SET flink_job_id = NULL, flink_job_state = 'FAILED' WHERE id = $1",
                        &[&dt.id],
                    )
                    .await?;
                Err(e)
            }
        }
    }

    /// RESUME of a continuously maintained Flink table (suspended, or active with a job that
    /// ended): starts its job again, from the savepoint if it belongs to the same query, with
    /// `options` as the job's configuration. Returns a notice when the savepoint could not be
    /// used.
    pub(crate) async fn resume_job(&self, dt: &DtRow, options: &BTreeMap<String, String>) -> Result<Vec<String>, Error> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT savepoint_path, savepoint_query FROM dyngate.dynamic_table WHERE id = $1",
                &[&dt.id],
            )
            .await?;
        drop(client);
        let (path, query): (Option<String>, Option<String>) = (row.get(0), row.get(1));
        let mut notices = Vec::new();
        let savepoint = match (path, query) {
            (Some(p), Some(q)) if q == dt.query => Some(p),
            (Some(_), _) => {
                notices.push(format!(
                    "the savepoint of {} belongs to another query; its job starts without it",
                    dt.name
                ));
                None
            }
            _ => None,
        };
        let continuous = Self::continuous_of(dt)?;
        let freshness = Duration::from_secs(dt.freshness_seconds() as u64);
        let job = self
            .start_job(dt.id, &dt.name, &dt.query, &continuous, freshness, savepoint.as_deref(), options)
            .await?;
        let options = (!options.is_empty()).then(|| serde_json::to_string(options).unwrap_or_default());
        let updated = async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "UPDATE dyngate.dynamic_table
                        SET status = 'ACTIVATED', altered_at = now(), flink_job_id = $2, flink_job_state = 'RUNNING',
                            refresh_options = coalesce($3::text::jsonb, refresh_options)
                      WHERE id = $1",
                    &[&dt.id, &job.as_str(), &options],
                )
                .await?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = updated {
            // Not recorded: the job must not run unknown to the catalog.
            if let Ok(cluster) = self.runtime()?.cluster() {
                cluster.cancel(&job).await.ok();
            }
            return Err(e);
        }
        tracing::info!(table = %dt.name, job = %job, from_savepoint = savepoint.is_some(), "streaming job started");
        Ok(notices)
    }

    /// A new freshness for a continuously maintained Flink table: its job restarts from a
    /// savepoint with the new checkpoint interval.
    pub(crate) async fn restart(&self, dt: &DtRow) -> Result<(), Error> {
        if dt.status != Status::Activated {
            return Ok(());
        }
        self.suspend_job(dt).await?;
        let Some(reloaded) = catalog::load_by_id(&*self.pool.get().await?, dt.id).await? else {
            return Err(Error::NotFound(dt.name.to_string()));
        };
        self.resume_job(&reloaded, &reloaded.refresh_options).await.map(drop)
    }

    /// DROP: the table's job is cancelled first (an ended or unknown job is fine), and has
    /// ended before the table goes: a cancelled JDBC sink still flushes what it holds, and one
    /// whose table is gone fails while closing, which takes its whole TaskManager down
    /// (docs/flink-facts.md).
    pub(crate) async fn cancel_job(&self, dt: &DtRow) -> Result<(), Error> {
        let Some(job) = &dt.flink_job_id else { return Ok(()) };
        let engine = self.runtime()?;
        cancel_and_wait(engine, &JobId(job.clone())).await
    }

    /// Every `interval` until `stop`: [`FlinkEngine::watch_jobs`].
    pub async fn run_watch(&self, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        if self.runtime.as_ref().is_none_or(|r| r.cluster().is_err()) {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => break,
            }
            if let Err(e) = self.watch_jobs().await {
                tracing::warn!(error = %e, "watching the Flink jobs; tried again next round");
            }
        }
    }

    /// One look at the streaming jobs (see the module's doc).
    pub async fn watch_jobs(&self) -> Result<(), Error> {
        let engine = self.runtime()?;
        let cluster = engine.cluster()?;
        let jobs = cluster.jobs().await?;
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, flink_job_id, flink_job_state, status, extract(epoch FROM now() - altered_at)::float8
                   FROM dyngate.dynamic_table
                  WHERE engine = 'flink' AND refresh_mode = 'CONTINUOUS'",
                &[],
            )
            .await?;
        // Each table's id, streaming job, the job state last seen, and status.
        type Known = (i64, Option<String>, Option<String>, Option<Status>);
        let known: Vec<Known> = rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), Status::parse(r.get(3))))
            .collect();
        let start_grace = engine.config().timeout + Duration::from_secs(60);
        // A table left INITIALIZING longer than a start may take: its CREATE was cut off between
        // the commit and the job's start (the gateway killed, the client gone). It is removed, as
        // that CREATE would have done.
        for r in &rows {
            let (id, age): (i64, f64) = (r.get(0), r.get(4));
            if Status::parse(r.get(3)) == Some(Status::Initializing)
                && age > start_grace.as_secs_f64()
                && let Some(dt) = catalog::load_by_id(&*client, id).await?
            {
                tracing::warn!(table = %dt.name, "removing a dynamic table whose CREATE never started its Flink job");
                // Its job, if one was started after all, ends before the table goes (a sink
                // closing over a dropped table takes the TaskManager down).
                let name = self.job_name(id, &dt.name).await?;
                for j in jobs.iter().filter(|j| j.name == name && !j.state.is_terminal()) {
                    cancel_and_wait(engine, &j.id).await?;
                }
                self.undo_create(&dt.owner, &dt.name, id).await;
            }
        }
        for (id, job, seen, status) in &known {
            let Some(job) = job else { continue };
            if *status != Some(Status::Activated) || seen.as_deref() == Some("STARTING") {
                continue;
            }
            let state = jobs.iter().find(|j| j.id.as_str() == job).map(|j| j.state.clone());
            match state {
                Some(JobState::Running) => {
                    let at = cluster.latest_checkpoint(&JobId(job.clone())).await.ok().flatten();
                    client
                        .execute(
                            "UPDATE dyngate.dynamic_table
                                SET flink_job_state = 'RUNNING',
                                    flink_data_time = greatest(flink_data_time, to_timestamp($2::float8 / 1000))
                              WHERE id = $1 AND flink_job_id = $3",
                            &[id, &at.map(|ms| ms as f64), job],
                        )
                        .await?;
                }
                Some(s) if !s.is_terminal() => {
                    let name = format!("{s:?}").to_uppercase();
                    client
                        .execute(
                            "UPDATE dyngate.dynamic_table SET flink_job_state = $2 WHERE id = $1 AND flink_job_id = $3",
                            &[id, &name, job],
                        )
                        .await?;
                }
                ended => {
                    let name = ended.as_ref().map_or("LOST".to_string(), |s| format!("{s:?}").to_uppercase());
                    if seen.as_deref() == Some(name.as_str()) {
                        continue;
                    }
                    let reason = match &ended {
                        Some(JobState::Finished) => "its sources ended: a streaming job over bounded sources (a JDBC table is read once, a datagen with number-of-rows) finishes, and the table no longer follows them".into(),
                        Some(_) => match cluster.job_failure(&JobId(job.clone())).await {
                            Ok(Some(cause)) => cause.message,
                            _ => "no cause recorded".into(),
                        },
                        None => "the Flink cluster no longer knows the job".into(),
                    };
                    self.record_job_end(&client, *id, job, &name, &reason).await?;
                }
            }
        }
        // Orphans: this catalog's running jobs that no table knows. A table whose job is being
        // started knows it only once it runs: its jobs are spared for as long as a start may
        // take (after that, the gateway that started it is taken to have died).
        let prefix = format!("dyngate:{}:", self.catalog_id.get(&self.pool).await?);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let start_grace = start_grace.as_millis() as i64;
        for j in jobs.iter().filter(|j| j.state == JobState::Running) {
            let Some(rest) = j.name.strip_prefix(&prefix) else { continue };
            let table_id: Option<i64> = rest.split(':').next().and_then(|t| t.parse().ok());
            let owner = known.iter().find(|(id, ..)| Some(*id) == table_id);
            let young = j.start_time.is_some_and(|t| now_ms - t < start_grace);
            let orphan = match owner {
                Some((_, job, seen, status)) => {
                    let starting = *status == Some(Status::Initializing) || seen.as_deref() == Some("STARTING");
                    job.as_deref() != Some(j.id.as_str()) && !(starting && young)
                }
                None => true,
            };
            if orphan {
                tracing::warn!(job = %j.id, name = j.name, "cancelling a Flink job of this catalog that no dynamic table knows");
                cluster.cancel(&j.id).await.ok();
            }
        }
        Ok(())
    }

    /// Records that a table's streaming job ended by itself: a FAILED history row with the reason,
    /// and the state, once.
    async fn record_job_end(&self, client: &tokio_postgres::Client, id: i64, job: &str, state: &str, reason: &str) -> Result<(), Error> {
        let Some(dt) = catalog::load_by_id(client, id).await? else {
            return Ok(());
        };
        let job_id = new_job_id();
        let message = format!("the streaming Flink job {job} ended {state}: {reason}");
        catalog::record_refresh(
            client,
            &catalog::RefreshRow {
                ended: true,
                error_code: Some("58000"),
                error_message: Some(&message),
                ..catalog::RefreshRow::of(&dt, &job_id, "SCHEDULED", "FAILED")
            },
        )
        .await?;
        self.record_engine_job(client, id, &job_id, job).await?;
        client
            .execute(
                "UPDATE dyngate.dynamic_table SET flink_job_state = $2 WHERE id = $1 AND flink_job_id = $3",
                &[&id, &state, &job],
            )
            .await?;
        tracing::warn!(table = %dt.name, job, state, reason, "a streaming Flink job ended");
        Ok(())
    }
}
