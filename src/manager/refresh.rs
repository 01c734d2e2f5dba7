//! One refresh of one dynamic table, however it was asked for (manual now; scheduled by the
//! refresh loop; through the HTTP endpoint): run with the table owner's privileges under a per-table
//! lock, so two refreshes of one table never run at once, and recorded in the history as
//! EXECUTING, then SUCCEEDED (with the data time and rows) or FAILED (with PostgreSQL's error).
//! A scheduled refresh that finds the previous one still running is recorded as SKIPPED.

use crate::engine;
use crate::manager::catalog::{self, DtRow};
use crate::manager::drop::TABLE_LOCK_SPACE;
use crate::manager::{Manager, ManagerError, Requester, new_job_id};
use crate::sql::dynamic::{Options, TableName};

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
        if !partition.is_empty() {
            return Err(ManagerError::Unsupported(
                "REFRESH ... PARTITION is not supported yet by the PostgreSQL engine".into(),
            ));
        }
        let mut client = self.pool.get().await?;
        let dt = self.load_existing(&mut client, who, name).await?;
        Self::require_member(&client, who, &dt, "refresh").await?;
        self.run_refresh(&dt, Trigger::Manual, new_job_id()).await
    }

    /// Runs one refresh of `dt` and records it. A failure of the refresh itself is recorded and
    /// returned as the error PostgreSQL gave.
    pub(crate) async fn run_refresh(&self, dt: &DtRow, trigger: Trigger, job_id: String) -> Result<RefreshRecord, ManagerError> {
        // Two connections: the history is written outside the refresh's transaction, so that
        // EXECUTING is visible while it runs and FAILED survives its rollback.
        let history = self.pool.get().await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The job id marks the connection, so a refresh orphaned by a killed gateway can be told
        // from one still running (see catalog::cancel_orphaned_refreshes).
        tx.batch_execute(&format!("SET LOCAL application_name = 'dyngate:{job_id}'"))
            .await?;
        let locked: bool = match trigger {
            Trigger::Manual | Trigger::Api { .. } => {
                tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&TABLE_LOCK_SPACE, &(dt.id as i32)])
                    .await?;
                true
            }
            Trigger::Scheduled { .. } => tx
                .query_one("SELECT pg_try_advisory_xact_lock($1, $2)", &[&TABLE_LOCK_SPACE, &(dt.id as i32)])
                .await?
                .get(0),
        };
        if !locked {
            drop(tx);
            let reason = "the previous refresh was still running";
            catalog::refresh_started(&*history, dt, &job_id, trigger.name(), trigger.schedule_time(), Some(reason)).await?;
            tracing::info!(table = %dt.name, job_id, "scheduled refresh skipped: the previous one is still running");
            return Ok(RefreshRecord {
                job_id,
                state: "SKIPPED",
                rows: 0,
            });
        }
        let hist_id = match trigger {
            Trigger::Api { claimed, .. } => {
                catalog::refresh_executing(&*history, claimed).await?;
                claimed
            }
            _ => catalog::refresh_started(&*history, dt, &job_id, trigger.name(), trigger.schedule_time(), None).await?,
        };
        let result = async {
            let data_time: String = tx.query_one("SELECT now()::text", &[]).await?.get(0);
            let done = engine::postgres::full_refresh(&tx, &dt.owner, &dt.name.quoted(), dt.refresh_query()).await?;
            tx.commit().await?;
            Ok::<_, ManagerError>((done, data_time))
        }
        .await;
        match result {
            Ok((done, data_time)) => {
                catalog::refresh_finished(&*history, hist_id, Ok((done.action.as_str(), &data_time, done.rows as i64))).await?;
                tracing::info!(table = %dt.name, job_id, rows = done.rows, trigger = trigger.name(), "refresh succeeded");
                Ok(RefreshRecord {
                    job_id,
                    state: "SUCCEEDED",
                    rows: done.rows as i64,
                })
            }
            Err(e) => {
                let msg = e.to_string();
                catalog::refresh_finished(&*history, hist_id, Err((e.sqlstate(), &msg))).await?;
                tracing::warn!(table = %dt.name, job_id, error = %msg, trigger = trigger.name(), "refresh failed");
                Err(e)
            }
        }
    }
}
