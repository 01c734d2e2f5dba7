//! One refresh of one dynamic table, however it was asked for (a statement, the refresh loop, the
//! HTTP endpoint): run with the table owner's privileges under a per-table lock, so two refreshes
//! of one table never run at once, and recorded in the history as SUCCEEDED (with the data time
//! and rows) or FAILED (with PostgreSQL's error); one that runs longer than a second shows as
//! EXECUTING meanwhile. A scheduled refresh that finds the previous one still running is recorded
//! as SKIPPED. The whole refresh is one statement, for the scheduler's sake: at a thousand tables
//! firing at once, statements and round trips are what the refreshes cost (bench/refresh.sh).

use crate::catalog::TABLE_LOCK_SPACE;
use crate::catalog::{self, DtRow};
use crate::core::EngineKind;
use crate::core::names::new_job_id;
use crate::core::rules;
use crate::core::{Error, Requester};
use crate::core::{RefreshAction, Trigger};
use crate::engine;
use crate::manager::Manager;
use crate::sql::dynamic::{Options, TableName};
use std::time::Duration;

use tokio_postgres::GenericClient;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

/// How a refresh attempt ended (see `refresh_with`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Done and recorded: the rows written.
    Done(i64),
    /// The table's refresh lock was taken (a scheduled refresh only): nothing ran.
    Locked,
    /// The table's definition changed after it was loaded: nothing ran; reload and retry.
    Stale,
}

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

    /// [`run_refresh`](Self::run_refresh) of one partition, when `partition` names one.
    ///
    /// The refresh is one statement (so one implicit transaction and one round trip): mark the
    /// connection with the job id (a refresh orphaned by a killed gateway can then be told from
    /// one still running, see catalog::cancel_orphaned_refreshes), take the table's refresh lock
    /// (a scheduled refresh does not wait for it), replace the content as the owner, and write
    /// the history row SUCCEEDED, which commits with the new content. A refresh still running
    /// after [`SHOW_RUNNING_AFTER`] also gets an EXECUTING row, written beside it, which the end
    /// then updates (rows are unique per job and table); a failure is written after the rollback.
    async fn refresh_with(&self, dt: &DtRow, trigger: Trigger, job_id: String, partition: &Options) -> Result<RefreshRecord, Error> {
        let mut client = self.pool.get().await?;
        let spec = self.partition_of(&*client, dt, trigger, partition).await?;
        // When the refresh began, for the rows written before or without its statement's own.
        let began = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .ok();
        let row = |state: &'static str| catalog::RefreshRow {
            started_at: began,
            schedule_time: trigger.schedule_time(),
            partition: &spec,
            ..catalog::RefreshRow::of(dt, &job_id, trigger.name(), state)
        };
        let timer = match trigger {
            Trigger::Api { claimed, .. } => {
                catalog::refresh_executing(&*client, claimed).await?;
                None
            }
            // An incremental refresh writes its EXECUTING row itself, before its snapshot: a row
            // written beside it would collide with its REPEATABLE READ transaction's own.
            _ if dt.incremental() || dt.engine == EngineKind::Flink => None,
            _ => {
                let pool = self.pool.clone();
                let (id, schema, table, job) = (dt.id, dt.name.schema.clone(), dt.name.name.clone(), job_id.clone());
                Some(tokio::spawn(async move {
                    tokio::time::sleep(SHOW_RUNNING_AFTER).await;
                    let running = catalog::RefreshRow {
                        dt_id: id,
                        schema: &schema,
                        table: &table,
                        job_id: &job,
                        trigger: trigger.name(),
                        state: "EXECUTING",
                        schedule_time: trigger.schedule_time(),
                        started_at: began,
                        ..Default::default()
                    };
                    let written = match pool.get().await {
                        Ok(c) => catalog::record_refresh(&*c, &running).await.map(|_| ()),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = written {
                        tracing::warn!(error = %e, "recording a running refresh");
                    }
                }))
            }
        };
        // A table altered since it was loaded is loaded again: the refresh runs what it is now.
        let mut current = std::borrow::Cow::Borrowed(dt);
        let mut result = Ok(Outcome::Stale);
        for _ in 0..STALE_RETRIES {
            result = if current.engine == EngineKind::Flink {
                self.flink_refresh(&mut client, &current, trigger, &job_id, &spec, began).await
            } else if current.incremental() {
                self.incremental_refresh(&mut client, &current, trigger, &job_id, &spec, began)
                    .await
            } else {
                let sql = engine::postgres::replace_sql(&current.name.quoted(), current.refresh_query(), &spec);
                self.refresh_statement(&mut client, &current, trigger, &job_id, &sql, &spec).await
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
        if let Some(t) = timer {
            t.abort();
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
                        ..row("SKIPPED")
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
                        ..row(state)
                    },
                )
                .await?;
                tracing::warn!(table = %dt.name, job_id, error = %msg, trigger = trigger.name(), "refresh failed");
                Err(e)
            }
        }
    }

    /// Runs the refresh statement (see `refresh_with`). Whether the table was altered while the
    /// statement waited for its lock is read by `dyngate.altered_at`, with a snapshot taken after
    /// the wait (the statement's own predates it).
    async fn refresh_statement(
        &self,
        client: &mut tokio_postgres::Client,
        dt: &DtRow,
        trigger: Trigger,
        job_id: &str,
        sql: &str,
        spec: &Options,
    ) -> Result<Outcome, Error> {
        let wait = !matches!(trigger, Trigger::Scheduled { .. });
        let partition = (!spec.is_empty()).then(|| catalog::partition_json(spec));
        let app = format!("dyngate:{job_id}");
        // The runner's oid may be stale (the role renamed, its function gone): then once more.
        for attempt in 0..2 {
            let oid = engine::postgres::runner(client, &dt.owner).await?;
            let statement = format!(
                "WITH s AS MATERIALIZED (
                        SELECT set_config('application_name', $1, true) AS app,
                               CASE WHEN $2 THEN (SELECT true FROM pg_advisory_xact_lock($3, $4)) ELSE pg_try_advisory_xact_lock($3, $4) END
                                 AS locked,
                               now() AS data_time, clock_timestamp() AS started),
                      v AS MATERIALIZED (
                        SELECT s.locked AND dyngate.altered_at($7) IS DISTINCT FROM $15 AS stale FROM s),
                      r AS MATERIALIZED (SELECT CASE WHEN s.locked AND NOT v.stale THEN {call} END AS n FROM s, v),
                      h AS (INSERT INTO dyngate.refresh AS o (dynamic_table_id, schema_name, table_name, job_id, trigger, state,
                                                             schedule_time, started_at, ended_at, action, data_time, rows_written,
                                                             partition_spec)
                            SELECT $7, $8, $9, $10, $11, 'SUCCEEDED', to_timestamp($12), s.started, clock_timestamp(), $14, s.data_time,
                                   r.n, $13::jsonb
                              FROM s, r WHERE r.n IS NOT NULL
                            ON CONFLICT (job_id, dynamic_table_id) DO UPDATE
                               SET state = excluded.state, started_at = excluded.started_at, ended_at = excluded.ended_at,
                                   action = excluded.action, data_time = excluded.data_time, rows_written = excluded.rows_written,
                                   partition_spec = excluded.partition_spec)
                 SELECT s.locked, v.stale, r.n FROM s, v, r",
                call = engine::postgres::run_as_call(oid, 5, 6)
            );
            let result = client
                .query_typed_one(
                    &statement,
                    &[
                        (&app, Type::TEXT),
                        (&wait, Type::BOOL),
                        (&TABLE_LOCK_SPACE, Type::INT4),
                        (&(dt.id as i32), Type::INT4),
                        (&dt.owner, Type::TEXT),
                        (&sql, Type::TEXT),
                        (&dt.id, Type::INT8),
                        (&dt.name.schema, Type::TEXT),
                        (&dt.name.name, Type::TEXT),
                        (&job_id, Type::TEXT),
                        (&trigger.name(), Type::TEXT),
                        (&trigger.schedule_time(), Type::INT8),
                        (&partition, Type::TEXT),
                        (&RefreshAction::Full.name(), Type::TEXT),
                        (&dt.altered_at, Type::TEXT),
                    ],
                )
                .await;
            let row = match result {
                Ok(row) => row,
                Err(e) => {
                    if e.code() == Some(&SqlState::UNDEFINED_FUNCTION) {
                        engine::postgres::forget_runner(&dt.owner);
                    }
                    return Err(e.into());
                }
            };
            let (locked, stale, rows): (bool, bool, Option<i64>) = (row.get(0), row.get(1), row.get(2));
            match (locked, stale, rows) {
                (false, _, _) => return Ok(Outcome::Locked),
                (true, true, _) => return Ok(Outcome::Stale),
                (true, false, Some(n)) => return Ok(Outcome::Done(n)),
                (true, false, None) if attempt == 0 => engine::postgres::forget_runner(&dt.owner),
                (true, false, None) => break,
            }
        }
        tracing::error!(table = %dt.name, owner = dt.owner, "the owner's runner function did not match the owner twice in a row");
        Err(Error::Internal)
    }
}

/// How long a refresh runs before its EXECUTING row is written (see `refresh_with`).
const SHOW_RUNNING_AFTER: Duration = Duration::from_secs(1);
