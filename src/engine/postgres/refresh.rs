//! The refresh of a table the PostgreSQL engine recomputes (FULL): one statement, so one implicit
//! transaction and one round trip. It marks the connection with the job id (a refresh orphaned
//! by a killed gateway can then be told from one still running, see
//! catalog::cancel_orphaned_refreshes), takes the table's refresh lock (a scheduled refresh does
//! not wait for it), replaces the content as the owner (engine::postgres::run_as::replace_sql),
//! and writes the history row SUCCEEDED, which commits with the new content. For the scheduler's
//! sake: at a thousand tables firing at once, statements and round trips are what the refreshes
//! cost (bench/refresh.sh). A refresh still running after [`SHOW_RUNNING_AFTER`] also gets an
//! EXECUTING row, written beside it, which the end then updates (rows are unique per job and
//! table).

use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::run_as;
use crate::backend::ServicePool;
use crate::catalog::{self, DtRow, TABLE_LOCK_SPACE};
use crate::core::{Error, RefreshAction, Trigger};
use crate::engine::{Outcome, RefreshJob};

/// How long a refresh runs before its EXECUTING row is written.
pub const SHOW_RUNNING_AFTER: Duration = Duration::from_secs(1);

/// One FULL refresh of `dt`, or of one partition.
pub async fn refresh(pool: &ServicePool, client: &mut Client, dt: &DtRow, job: &RefreshJob<'_>) -> Result<Outcome, Error> {
    // The endpoint's claimed row is marked EXECUTING by the manager already.
    let timer = match job.trigger {
        Trigger::Api { .. } => None,
        trigger => {
            let running = Running {
                dt_id: dt.id,
                schema: dt.name.schema.clone(),
                table: dt.name.name.clone(),
                job_id: job.job_id.to_string(),
                trigger,
                began: job.began,
            };
            Some(tokio::spawn(show_running(pool.clone(), running)))
        }
    };
    let sql = run_as::replace_sql(&dt.name.quoted(), dt.refresh_query(), job.partition);
    let result = refresh_statement(client, dt, job, &sql).await;
    if let Some(t) = timer {
        t.abort();
    }
    result
}

/// What the EXECUTING row of a running refresh needs (owned: the timer outlives the borrow).
struct Running {
    dt_id: i64,
    schema: String,
    table: String,
    job_id: String,
    trigger: Trigger,
    began: Option<f64>,
}

/// After [`SHOW_RUNNING_AFTER`], the refresh's EXECUTING row.
async fn show_running(pool: ServicePool, r: Running) {
    tokio::time::sleep(SHOW_RUNNING_AFTER).await;
    let running = catalog::RefreshRow {
        dt_id: r.dt_id,
        schema: &r.schema,
        table: &r.table,
        job_id: &r.job_id,
        trigger: r.trigger.name(),
        state: "EXECUTING",
        schedule_time: r.trigger.schedule_time(),
        started_at: r.began,
        ..Default::default()
    };
    let written = match pool.get().await {
        Ok(c) => catalog::record_refresh(&*c, &running).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::warn!(error = %e, "recording a running refresh");
    }
}

/// Runs the refresh statement (see the module's doc). Whether the table was altered while the
/// statement waited for its lock is read by `dyngate.altered_at`, with a snapshot taken after the
/// wait (the statement's own predates it).
async fn refresh_statement(client: &mut Client, dt: &DtRow, job: &RefreshJob<'_>, sql: &str) -> Result<Outcome, Error> {
    let RefreshJob {
        trigger,
        job_id,
        partition: spec,
        ..
    } = *job;
    let wait = trigger.waits();
    let partition = (!spec.is_empty()).then(|| catalog::partition_json(spec));
    let app = format!("dyngate:{job_id}");
    // The runner's oid may be stale (the role renamed, its function gone): then once more.
    for attempt in 0..2 {
        let oid = run_as::runner(client, &dt.owner).await?;
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
            call = run_as::run_as_call(oid, 5, 6)
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
                    run_as::forget_runner(&dt.owner);
                }
                return Err(e.into());
            }
        };
        let (locked, stale, rows): (bool, bool, Option<i64>) = (row.get(0), row.get(1), row.get(2));
        match (locked, stale, rows) {
            (false, _, _) => return Ok(Outcome::Locked),
            (true, true, _) => return Ok(Outcome::Stale),
            (true, false, Some(n)) => return Ok(Outcome::Done(n)),
            (true, false, None) if attempt == 0 => run_as::forget_runner(&dt.owner),
            (true, false, None) => break,
        }
    }
    tracing::error!(table = %dt.name, owner = dt.owner, "the owner's runner function did not match the owner twice in a row");
    Err(Error::Internal)
}
