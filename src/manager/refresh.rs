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
    async fn refresh_with(&self, dt: &DtRow, trigger: Trigger, job_id: String, partition: &Options) -> Result<RefreshRecord, ManagerError> {
        // EXECUTING is written outside the refresh's transaction (on a pooled connection), so it
        // is visible while the refresh runs; SUCCEEDED inside it, so it commits with the new
        // content; FAILED outside again, after the rollback.
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The job id marks the connection, so a refresh orphaned by a killed gateway can be told
        // from one still running (see catalog::cancel_orphaned_refreshes).
        // One round trip: mark the connection, take the table's refresh lock (a scheduled refresh
        // does not wait for it), and read the data time (the transaction's start).
        let wait = !matches!(trigger, Trigger::Scheduled { .. });
        let start = tx
            .query_typed_one(
                "SELECT set_config('application_name', $1, true),
                        CASE WHEN $2 THEN (SELECT true FROM pg_advisory_xact_lock($3, $4)) ELSE pg_try_advisory_xact_lock($3, $4) END,
                        now()::text",
                &[
                    (&format!("dyngate:{job_id}"), Type::TEXT),
                    (&wait, Type::BOOL),
                    (&TABLE_LOCK_SPACE, Type::INT4),
                    (&(dt.id as i32), Type::INT4),
                ],
            )
            .await?;
        let (locked, data_time): (bool, String) = (start.get(1), start.get(2));
        if !locked {
            drop(tx);
            let reason = "the previous refresh was still running";
            catalog::refresh_started(
                &*self.pool.get().await?,
                dt,
                &job_id,
                trigger.name(),
                trigger.schedule_time(),
                Some(reason),
            )
            .await?;
            tracing::info!(table = %dt.name, job_id, "scheduled refresh skipped: the previous one is still running");
            return Ok(RefreshRecord {
                job_id,
                state: "SKIPPED",
                rows: 0,
            });
        }
        let hist_id = match trigger {
            Trigger::Api { claimed, .. } => {
                catalog::refresh_executing(&*self.pool.get().await?, claimed).await?;
                claimed
            }
            _ => catalog::refresh_started(&*self.pool.get().await?, dt, &job_id, trigger.name(), trigger.schedule_time(), None).await?,
        };
        let result = async {
            let spec = self.partition_of(&tx, dt, trigger, partition).await?;
            if !spec.is_empty() {
                catalog::set_refresh_partition(&*self.pool.get().await?, hist_id, &spec).await?;
            }
            let done = engine::postgres::refresh_partition(&tx, &dt.owner, &dt.name.quoted(), dt.refresh_query(), &spec).await?;
            catalog::refresh_finished(&tx, hist_id, Ok((done.action.as_str(), &data_time, done.rows as i64))).await?;
            tx.commit().await?;
            Ok::<_, ManagerError>(done)
        }
        .await;
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
                catalog::refresh_finished(&*self.pool.get().await?, hist_id, Err((e.sqlstate(), &msg))).await?;
                tracing::warn!(table = %dt.name, job_id, error = %msg, trigger = trigger.name(), "refresh failed");
                Err(e)
            }
        }
    }
}
