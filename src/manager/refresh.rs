//! One refresh of one dynamic table, however it was asked for (a statement, the refresh loop, the
//! HTTP endpoint): the partition it replaces, the table's engine run on it (engine::Engine::refresh:
//! with the table owner's privileges under a per-table lock, so two refreshes of one table never
//! run at once, and recorded in the history as SUCCEEDED with the data time and rows), reloaded
//! and run again when its definition changed meanwhile, and recorded here when it fails (FAILED
//! with the engine's error, CANCELLED for a job cancelled from outside) or finds the previous
//! refresh still running (a scheduled one: SKIPPED).

use tokio_postgres::GenericClient;

use crate::catalog::{self, DtRow};
use crate::core::names::new_job_id;
use crate::core::{Error, Requester, Trigger, rules};
use crate::engine::{Engine, Outcome, RefreshJob};
use crate::manager::Manager;
use crate::sql::dynamic::{Options, TableName};

/// How many times a refresh reloads a table whose definition changed under it before it gives up.
const STALE_RETRIES: usize = 5;

/// A refresh, as the history records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRecord {
    pub job_id: String,
    pub state: &'static str,
    pub rows: i64,
}

impl Manager {
    /// REFRESH DYNAMIC TABLE / ALTER DYNAMIC TABLE ... REFRESH, by a member of the owner's role.
    pub async fn refresh_manual(&self, who: &Requester<'_>, name: &TableName, partition: &Options) -> Result<RefreshRecord, Error> {
        self.check_database(who)?;
        if who.in_transaction {
            return Err(Error::InTransaction("REFRESH DYNAMIC TABLE"));
        }
        let mut client = self.pool.get().await?;
        let dt = self.load_existing(&mut client, who, name).await?;
        Self::require_member(&*client, who, &dt, "refresh").await?;
        if !partition.is_empty() {
            rules::check_partition_spec(partition, &dt.partitioned_by, &dt.name.to_string()).map_err(Error::InvalidOption)?;
        }
        self.refresh_with(&dt, Trigger::Manual, new_job_id(), partition).await
    }

    /// The partition a refresh replaces: the one asked for, else, for a refresh with a schedule
    /// time of a table with date-formatted partition columns, the one of the schedule time minus
    /// the freshness, formatted in the table's time zone (Flink's rule); else the whole table.
    async fn partition_of(&self, tx: &impl GenericClient, dt: &DtRow, trigger: Trigger, explicit: &Options) -> Result<Options, Error> {
        if !explicit.is_empty() {
            return Ok(explicit.clone());
        }
        let Some(at) = trigger.schedule_time() else {
            return Ok(Vec::new());
        };
        let options: Options = dt.option_pairs();
        let formatters = rules::partition_formatters(&options, &dt.partitioned_by).map_err(Error::InvalidOption)?;
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
    pub(crate) async fn run_refresh(&self, dt: &DtRow, trigger: Trigger, job_id: String) -> Result<RefreshRecord, Error> {
        self.refresh_with(dt, trigger, job_id, &Vec::new()).await
    }

    /// [`run_refresh`](Self::run_refresh) of one partition, when `partition` names one (see the
    /// module's doc); a failure is written after the engine's rollback.
    async fn refresh_with(&self, dt: &DtRow, trigger: Trigger, job_id: String, partition: &Options) -> Result<RefreshRecord, Error> {
        let mut client = self.pool.get().await?;
        let spec = self.partition_of(&*client, dt, trigger, partition).await?;
        // When the refresh began, for the rows written before or without its statement's own.
        let began = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .ok();
        if let Trigger::Api { claimed, .. } = trigger {
            catalog::refresh_executing(&*client, claimed).await?;
        }
        let job = RefreshJob {
            trigger,
            job_id: &job_id,
            partition: &spec,
            began,
        };
        // A table altered since it was loaded is loaded again: the refresh runs what it is now.
        let mut current = std::borrow::Cow::Borrowed(dt);
        let mut result = Ok(Outcome::Stale);
        for _ in 0..STALE_RETRIES {
            result = match current.engine {
                crate::core::EngineKind::Postgres => self.postgres.refresh(&mut client, &current, &job).await,
                crate::core::EngineKind::Flink => self.flink.refresh(&mut client, &current, &job).await,
            };
            if !matches!(result, Ok(Outcome::Stale)) {
                break;
            }
            match catalog::load_by_id(&*client, dt.id).await {
                Ok(Some(reloaded)) => current = std::borrow::Cow::Owned(reloaded),
                Ok(None) => result = Err(Error::NotFound(dt.name.to_string())),
                Err(e) => result = Err(e.into()),
            }
        }
        if matches!(result, Ok(Outcome::Stale)) {
            tracing::error!(table = %dt.name, "every refresh attempt met a change of the table's definition or concurrent work (see the log)");
            result = Err(Error::Internal);
        }
        match result {
            Ok(Outcome::Done(rows)) => {
                tracing::info!(table = %dt.name, job_id, rows, trigger = trigger.name(), "refresh succeeded");
                Ok(RefreshRecord {
                    job_id,
                    state: "SUCCEEDED",
                    rows,
                })
            }
            Ok(Outcome::Stale) => Err(Error::Internal),
            Ok(Outcome::Locked) => {
                let reason = "the previous refresh was still running";
                catalog::record_refresh(
                    &*client,
                    &catalog::RefreshRow {
                        ended: true,
                        error_message: Some(reason),
                        ..job.row(dt, "SKIPPED")
                    },
                )
                .await?;
                tracing::info!(table = %dt.name, job_id, "scheduled refresh skipped: the previous one is still running");
                Ok(RefreshRecord {
                    job_id,
                    state: "SKIPPED",
                    rows: 0,
                })
            }
            Err(e) => {
                let msg = e.to_string();
                // A Flink job cancelled from outside ends the refresh CANCELLED, not FAILED.
                let state = match &e {
                    Error::Cancelled(_) => "CANCELLED",
                    _ => "FAILED",
                };
                catalog::record_refresh(
                    &*self.pool.get().await?,
                    &catalog::RefreshRow {
                        ended: true,
                        error_code: Some(e.sqlstate()),
                        error_message: Some(&msg),
                        ..job.row(dt, state)
                    },
                )
                .await?;
                tracing::warn!(table = %dt.name, job_id, error = %msg, trigger = trigger.name(), "refresh failed");
                Err(e)
            }
        }
    }
}
