//! One refresh of one dynamic table, however it was asked for (manual now; scheduled by the
//! refresh loop; through the HTTP endpoint): run with the table owner's privileges under a per-table
//! lock, so two refreshes of one table never run at once, and recorded in the history as
//! EXECUTING, then SUCCEEDED (with the data time and rows) or FAILED (with PostgreSQL's error).
//! A scheduled refresh that finds the previous one still running is recorded as SKIPPED.

use crate::engine;
use crate::manager::catalog::{self, DtRow};
use crate::manager::drop::TABLE_LOCK_SPACE;
use crate::manager::rules;
use crate::manager::{Manager, ManagerError, Requester, new_job_id};
use crate::sql::dynamic::{Options, TableName};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Transaction;
use tokio_postgres::types::Type;

/// A refresh, as the history records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub job_id: String,
    pub state: &'static str,
    pub rows: i64,
}

/// Why a refresh runs, and what it does when another refresh of the table is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Asked for by a statement: waits for the running refresh.
    Manual,
    /// A schedule slot (seconds since the epoch): skipped if a refresh is running.
    Scheduled { slot: i64 },
    /// The refresh endpoint, for a schedule time, already claimed as this history row: waits
    /// for the running refresh.
    Api { schedule_time: i64, claimed: i64 },
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Manual => "MANUAL",
            Trigger::Scheduled { .. } => "SCHEDULED",
            Trigger::Api { .. } => "API",
        }
    }
    fn schedule_time(self) -> Option<i64> {
        match self {
            Trigger::Manual => None,
            Trigger::Scheduled { slot } => Some(slot),
            Trigger::Api { schedule_time, .. } => Some(schedule_time),
        }
    }
}

impl Manager {
    /// REFRESH DYNAMIC TABLE / ALTER DYNAMIC TABLE ... REFRESH, by a member of the owner's role.
    pub async fn refresh_manual(&self, who: &Requester<'_>, name: &TableName, partition: &Options) -> Result<RefreshRecord, ManagerError> {
        self.check_database(who)?;
        if who.in_transaction {
            return Err(ManagerError::InTransaction("REFRESH DYNAMIC TABLE"));
        }
        let mut client = self.pool.get().await?;
        let dt = self.load_existing(&mut client, who, name).await?;
        Self::require_member(&client, who, &dt, "refresh").await?;
        if !partition.is_empty() {
            rules::check_partition_spec(partition, &dt.partitioned_by, &dt.name.to_string()).map_err(ManagerError::InvalidOption)?;
        }
        self.refresh_with(&dt, Trigger::Manual, new_job_id(), partition).await
    }

    /// The partition a refresh replaces: the one asked for, else, for a refresh with a schedule
    /// time of a table with date-formatted partition columns, the one of the schedule time minus
    /// the freshness, formatted in the table's time zone (Flink's rule); else the whole table.
    async fn partition_of(&self, tx: &Transaction<'_>, dt: &DtRow, trigger: Trigger, explicit: &Options) -> Result<Options, ManagerError> {
        if !explicit.is_empty() {
            return Ok(explicit.clone());
        }
        let Some(at) = trigger.schedule_time() else {
            return Ok(Vec::new());
        };
        let options: Options = dt
            .options
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let formatters = rules::partition_formatters(&options, &dt.partitioned_by).map_err(ManagerError::InvalidOption)?;
        let mut spec = Vec::new();
        for (col, pattern) in formatters {
            let value: String = tx
                .query_one(
                    "SELECT to_char((to_timestamp($1::bigint) - make_interval(secs => $2::bigint)) AT TIME ZONE $3, $4)",
                    &[&at, &dt.freshness_seconds(), &dt.time_zone, &pattern],
                )
                .await?
                .get(0);
            spec.push((col, value));
        }
        Ok(spec)
    }

    /// Runs one refresh of `dt` and records it. A failure of the refresh itself is recorded and
    /// returned as the error PostgreSQL gave.
    pub(crate) async fn run_refresh(&self, dt: &DtRow, trigger: Trigger, job_id: String) -> Result<RefreshRecord, ManagerError> {
        self.refresh_with(dt, trigger, job_id, &Vec::new()).await
    }

    /// [`run_refresh`](Self::run_refresh) of one partition, when `partition` names one.
    ///
    /// The history row: a refresh that ends quickly writes its one row (SUCCEEDED) inside its
    /// own transaction, so it commits with the new content and costs no extra round trip or
    /// commit; one still running after [`SHOW_RUNNING_AFTER`] gets an EXECUTING row (outside
    /// the transaction, visible to all) that the end then updates; a failure is written after the
    /// rollback. A refresh endpoint call has claimed its row already and updates it.
    async fn refresh_with(&self, dt: &DtRow, trigger: Trigger, job_id: String, partition: &Options) -> Result<RefreshRecord, ManagerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // One round trip: mark the connection with the job id (so a refresh orphaned by a killed
        // gateway can be told from one still running, see catalog::cancel_orphaned_refreshes),
        // take the table's refresh lock (a scheduled refresh does not wait for it), and read the
        // data time (the transaction's start) and the start time.
        let wait = !matches!(trigger, Trigger::Scheduled { .. });
        let start = tx
            .query_typed_one(
                "SELECT set_config('application_name', $1, true),
                        CASE WHEN $2 THEN (SELECT true FROM pg_advisory_xact_lock($3, $4)) ELSE pg_try_advisory_xact_lock($3, $4) END,
                        now()::text, clock_timestamp()::text",
                &[
                    (&format!("dyngate:{job_id}"), Type::TEXT),
                    (&wait, Type::BOOL),
                    (&TABLE_LOCK_SPACE, Type::INT4),
                    (&(dt.id as i32), Type::INT4),
                ],
            )
            .await?;
        let (locked, data_time, started_at): (bool, String, String) = (start.get(1), start.get(2), start.get(3));
        let row = |state: &'static str| catalog::RefreshRow {
            dt_id: dt.id,
            schema: &dt.name.schema,
            table: &dt.name.name,
            job_id: &job_id,
            trigger: trigger.name(),
            state,
            schedule_time: trigger.schedule_time(),
            started_at: Some(started_at.clone()),
            ..Default::default()
        };
        if !locked {
            drop(tx);
            let reason = "the previous refresh was still running";
            catalog::record_refresh(
                &*self.pool.get().await?,
                &catalog::RefreshRow {
                    ended: true,
                    error_message: Some(reason),
                    ..row("SKIPPED")
                },
            )
            .await?;
            tracing::info!(table = %dt.name, job_id, "scheduled refresh skipped: the previous one is still running");
            return Ok(RefreshRecord {
                job_id,
                state: "SKIPPED",
                rows: 0,
            });
        }
        let shown = Arc::new(tokio::sync::Mutex::new(Shown::default()));
        let mut timer = None;
        match trigger {
            Trigger::Api { claimed, .. } => {
                catalog::refresh_executing(&*self.pool.get().await?, claimed).await?;
                shown.lock().await.id = Some(claimed);
            }
            _ => {
                let (pool, shown) = (self.pool.clone(), shown.clone());
                let (id, schema, table, job, started) = (
                    dt.id,
                    dt.name.schema.clone(),
                    dt.name.name.clone(),
                    job_id.clone(),
                    started_at.clone(),
                );
                timer = Some(tokio::spawn(async move {
                    tokio::time::sleep(SHOW_RUNNING_AFTER).await;
                    let mut s = shown.lock().await;
                    if s.finished {
                        return;
                    }
                    let running = catalog::RefreshRow {
                        dt_id: id,
                        schema: &schema,
                        table: &table,
                        job_id: &job,
                        trigger: trigger.name(),
                        state: "EXECUTING",
                        schedule_time: trigger.schedule_time(),
                        started_at: Some(started),
                        ..Default::default()
                    };
                    match pool.get().await {
                        Ok(c) => match catalog::record_refresh(&*c, &running).await {
                            Ok(id) => s.id = Some(id),
                            Err(e) => tracing::warn!(error = %e, "recording a running refresh"),
                        },
                        Err(e) => tracing::warn!(error = %e, "recording a running refresh"),
                    }
                }));
            }
        }
        let result = async {
            let spec = self.partition_of(&tx, dt, trigger, partition).await?;
            let done = engine::postgres::refresh_partition(&tx, &dt.owner, &dt.name.quoted(), dt.refresh_query(), &spec).await?;
            // From here on the running refresh's row is this function's business alone.
            let mut s = shown.lock().await;
            s.finished = true;
            match s.id {
                Some(id) => {
                    if !spec.is_empty() {
                        catalog::set_refresh_partition(&tx, id, &spec).await?;
                    }
                    catalog::refresh_finished(&tx, id, Ok((done.action.as_str(), &data_time, done.rows as i64))).await?;
                }
                None => {
                    catalog::record_refresh(
                        &tx,
                        &catalog::RefreshRow {
                            ended: true,
                            action: Some(done.action.as_str()),
                            data_time: Some(&data_time),
                            rows: Some(done.rows as i64),
                            partition: &spec,
                            ..row("SUCCEEDED")
                        },
                    )
                    .await?;
                }
            }
            tx.commit().await?;
            Ok::<_, ManagerError>(done)
        }
        .await;
        if let Some(t) = timer {
            t.abort();
        }
        match result {
            Ok(done) => {
                tracing::info!(table = %dt.name, job_id, rows = done.rows, trigger = trigger.name(), "refresh succeeded");
                Ok(RefreshRecord {
                    job_id,
                    state: "SUCCEEDED",
                    rows: done.rows as i64,
                })
            }
            Err(e) => {
                let msg = e.to_string();
                let mut s = shown.lock().await;
                s.finished = true;
                let history = self.pool.get().await?;
                match s.id {
                    Some(id) => catalog::refresh_finished(&*history, id, Err((e.sqlstate(), &msg))).await?,
                    None => {
                        catalog::record_refresh(
                            &*history,
                            &catalog::RefreshRow {
                                ended: true,
                                error_code: Some(e.sqlstate()),
                                error_message: Some(&msg),
                                ..row("FAILED")
                            },
                        )
                        .await?;
                    }
                }
                tracing::warn!(table = %dt.name, job_id, error = %msg, trigger = trigger.name(), "refresh failed");
                Err(e)
            }
        }
    }
}

/// How long a refresh runs before its EXECUTING row is written (see `refresh_with`).
const SHOW_RUNNING_AFTER: Duration = Duration::from_secs(1);

/// The history row of a running refresh, shared with the timer that may write it.
#[derive(Debug, Default)]
struct Shown {
    /// Its id, once written (or claimed by a refresh endpoint call).
    id: Option<i64>,
    /// The refresh has ended: the timer must not write the row any more.
    finished: bool,
}
