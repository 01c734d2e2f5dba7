//! The refresh history (`dyngate.refresh`): a row per refresh of a table, written whole as the
//! refresh moves on (EXECUTING, then its end), the claims of the refresh endpoint, and the jobs
//! the endpoint reports.

use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::catalog::tables::DtRow;
use crate::core::QualifiedName;

/// A history row, written whole (see `refresh::refresh_with` for when).
#[derive(Debug, Default, Clone)]
pub struct RefreshRow<'a> {
    pub dt_id: i64,
    pub schema: &'a str,
    pub table: &'a str,
    pub job_id: &'a str,
    pub trigger: &'a str,
    pub state: &'a str,
    /// Seconds since the epoch.
    pub schedule_time: Option<i64>,
    /// Seconds since the epoch; None: now.
    pub started_at: Option<f64>,
    /// The refresh has ended (ended_at is now).
    pub ended: bool,
    pub action: Option<&'a str>,
    pub data_time: Option<&'a str>,
    pub rows: Option<i64>,
    /// Captured changes applied (an incremental table's refresh).
    pub changes: Option<i64>,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub partition: &'a [(String, String)],
}

impl<'a> RefreshRow<'a> {
    /// A row of `dt`'s in `state`, for `job_id` and `trigger`; the rest as the caller sets it.
    pub fn of(dt: &'a DtRow, job_id: &'a str, trigger: &'a str, state: &'a str) -> RefreshRow<'a> {
        RefreshRow {
            dt_id: dt.id,
            schema: &dt.name.schema,
            table: &dt.name.name,
            job_id,
            trigger,
            state,
            ..Default::default()
        }
    }
}

/// Writes a history row; returns its id, or None when an EXECUTING row found the refresh's row
/// written already. Rows are unique per job and table: a later state updates an earlier row (a
/// refresh's EXECUTING row, an endpoint call's claim), never the other way round. Typed: one
/// round trip, nothing to prepare (it runs for every refresh).
pub async fn record_refresh(c: &impl GenericClient, r: &RefreshRow<'_>) -> Result<Option<i64>, tokio_postgres::Error> {
    let partition = (!r.partition.is_empty()).then(|| partition_json(r.partition));
    let rows = c
        .query_typed(
            "INSERT INTO dyngate.refresh (dynamic_table_id, schema_name, table_name, job_id, trigger, state, schedule_time, started_at,
                                          ended_at, action, data_time, rows_written, error_code, error_message, partition_spec, changes)
             VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7), coalesce(to_timestamp($8), clock_timestamp()),
                     CASE WHEN $9 THEN clock_timestamp() END, $10, $11::timestamptz, $12, $13, $14, $15::jsonb, $16)
             ON CONFLICT (job_id, dynamic_table_id) DO UPDATE
                SET state = excluded.state, ended_at = excluded.ended_at, action = excluded.action, data_time = excluded.data_time,
                    rows_written = excluded.rows_written, error_code = excluded.error_code, error_message = excluded.error_message,
                    partition_spec = excluded.partition_spec, changes = excluded.changes
              WHERE excluded.state <> 'EXECUTING'
             RETURNING id",
            &[
                (&r.dt_id, Type::INT8),
                (&r.schema, Type::TEXT),
                (&r.table, Type::TEXT),
                (&r.job_id, Type::TEXT),
                (&r.trigger, Type::TEXT),
                (&r.state, Type::TEXT),
                (&r.schedule_time, Type::INT8),
                (&r.started_at, Type::FLOAT8),
                (&r.ended, Type::BOOL),
                (&r.action, Type::TEXT),
                (&r.data_time, Type::TEXT),
                (&r.rows, Type::INT8),
                (&r.error_code, Type::TEXT),
                (&r.error_message, Type::TEXT),
                (&partition, Type::TEXT),
                (&r.changes, Type::INT8),
            ],
        )
        .await?;
    Ok(rows.first().map(|r| r.get(0)))
}

/// A partition spec as the history's JSON object.
pub fn partition_json(spec: &[(String, String)]) -> String {
    let json: serde_json::Map<String, serde_json::Value> = spec
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(json).to_string()
}

/// Marks as CANCELLED the refreshes recorded as EXECUTING whose connection is gone (the gateway
/// running them was killed): a running refresh's connection carries its job id as
/// application_name. Returns how many were marked.
pub async fn cancel_orphaned_refreshes(c: &impl GenericClient) -> Result<u64, tokio_postgres::Error> {
    c.execute(
        "UPDATE dyngate.refresh r SET state = 'CANCELLED', ended_at = clock_timestamp(),
                error_message = 'the gateway running this refresh stopped before it finished'
          WHERE r.state = 'EXECUTING'
            AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.application_name = 'dyngate:' || r.job_id)",
        &[],
    )
    .await
}

/// Records the first fill, inside the creating transaction.
pub async fn creation_refresh(
    c: &impl GenericClient,
    dt_id: i64,
    name: &QualifiedName,
    job_id: &str,
    rows: i64,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "INSERT INTO dyngate.refresh (dynamic_table_id, schema_name, table_name, job_id, trigger, state, action, data_time,
                                      started_at, ended_at, rows_written)
         VALUES ($1, $2, $3, $4, 'CREATION', 'SUCCEEDED', 'FULL', now(), now(), clock_timestamp(), $5)",
        &[&dt_id, &name.schema, &name.name, &job_id, &rows],
    )
    .await?;
    Ok(())
}

/// The outcome of claiming a refresh endpoint call's refresh of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiClaim {
    /// Recorded as SCHEDULED under this history id.
    New(i64),
    /// An earlier call for the same table and schedule time started it: its job id.
    Existing(String),
}

/// Claims the API refresh of `dt` for `schedule_time` (seconds since the epoch), once.
/// A scheduler's run (`run_id`) is recorded with trigger SCHEDULED and the run's id.
pub async fn api_claim(
    c: &impl GenericClient,
    dt: &DtRow,
    job_id: &str,
    schedule_time: i64,
    run_id: Option<&str>,
) -> Result<ApiClaim, tokio_postgres::Error> {
    let trigger = if run_id.is_some() { "SCHEDULED" } else { "API" };
    let inserted = c
        .query_opt(
            "INSERT INTO dyngate.refresh (dynamic_table_id, schema_name, table_name, job_id, trigger, state, schedule_time, scheduler_run_id)
             VALUES ($1, $2, $3, $4, $6, 'SCHEDULED', to_timestamp($5::bigint), $7)
             ON CONFLICT (dynamic_table_id, schedule_time)
                WHERE (trigger = 'API' OR scheduler_run_id IS NOT NULL) AND state NOT IN ('FAILED', 'CANCELLED') DO NOTHING
             RETURNING id",
            &[&dt.id, &dt.name.schema, &dt.name.name, &job_id, &schedule_time, &trigger, &run_id],
        )
        .await?;
    if let Some(r) = inserted {
        return Ok(ApiClaim::New(r.get(0)));
    }
    let r = c
        .query_one(
            "SELECT job_id FROM dyngate.refresh WHERE dynamic_table_id = $1 AND schedule_time = to_timestamp($2::bigint)
                AND (trigger = 'API' OR scheduler_run_id IS NOT NULL) AND state NOT IN ('FAILED', 'CANCELLED')",
            &[&dt.id, &schedule_time],
        )
        .await?;
    Ok(ApiClaim::Existing(r.get(0)))
}

/// A claimed refresh starts running.
pub async fn refresh_executing(c: &impl GenericClient, id: i64) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "UPDATE dyngate.refresh SET state = 'EXECUTING', started_at = clock_timestamp() WHERE id = $1",
        &[&id],
    )
    .await?;
    Ok(())
}

/// One table's refresh within a job, for GET /v3/jobs/{id}.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobPart {
    pub table: String,
    pub trigger: String,
    pub state: String,
    pub schedule_time: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub rows_written: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
}

pub async fn job(c: &impl GenericClient, job_id: &str) -> Result<Vec<JobPart>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT schema_name || '.' || table_name, trigger, state, schedule_time::text, started_at::text, ended_at::text, rows_written,
                    error_code, error_message
               FROM dyngate.refresh WHERE job_id = $1 OR engine_job_id = $1 ORDER BY id",
            &[&job_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| JobPart {
            table: r.get(0),
            trigger: r.get(1),
            state: r.get(2),
            schedule_time: r.get(3),
            started_at: r.get(4),
            ended_at: r.get(5),
            rows_written: r.get(6),
            error_code: r.get(7),
            error_message: r.get(8),
        })
        .collect())
}
