//! Typed reads and writes of the catalog tables (`dyngate.dynamic_table`, `dyngate.refresh`).
//! Plain functions over a connection or transaction; the operations decide the transactions.

use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::core::QualifiedName;

/// A dynamic table's catalog row.
#[derive(Debug, Clone)]
pub struct DtRow {
    pub id: i64,
    pub name: QualifiedName,
    pub definition: String,
    pub query: String,
    pub columns: Option<String>,
    pub comment: Option<String>,
    pub options: serde_json::Value,
    pub freshness_n: i32,
    pub freshness_unit: String,
    pub logical_mode: String,
    pub refresh_mode: String,
    pub status: String,
    pub engine: String,
    pub scheduler: Option<String>,
    pub owner: String,
    pub created_at: String,
    pub altered_at: String,
    /// The query with names resolved (None for tables created before catalog version 2).
    pub resolved_query: Option<String>,
    /// The view in schema dyngate that holds the query (see engine::postgres::bind_query).
    pub query_view: Option<String>,
    pub time_zone: String,
    pub partitioned_by: Vec<String>,
    /// The external scheduler's handle (JSON), e.g. the Airflow DAG.
    pub scheduler_handle: Option<String>,
    /// RESUME WITH options: the configuration scheduled refresh calls carry.
    pub refresh_options: std::collections::BTreeMap<String, String>,
    /// INCREMENTAL or FULL (engine::incremental).
    pub refresh_action: String,
    /// Why a table is refreshed fully.
    pub refresh_action_reason: Option<String>,
    /// A Flink-refreshed table's columns (engine::flink::tables).
    pub flink_columns: Vec<crate::engine::flink::tables::FlinkColumn>,
    /// A CONTINUOUS Flink table's streaming job, and its state as last seen.
    pub flink_job_id: Option<String>,
    pub flink_job_state: Option<String>,
}

impl DtRow {
    /// The WITH options as (key, value) pairs.
    pub fn option_pairs(&self) -> Vec<(String, String)> {
        self.options
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The freshness, as recorded (the catalog only holds valid ones; a damaged row reads as
    /// one day).
    pub fn freshness(&self) -> crate::core::rules::Freshness {
        crate::core::rules::parse_freshness(&self.freshness_n.to_string(), &self.freshness_unit).unwrap_or(crate::core::rules::Freshness {
            n: 1,
            unit: crate::core::rules::Unit::Day,
        })
    }

    /// The freshness in seconds.
    pub fn freshness_seconds(&self) -> i64 {
        let unit = match self.freshness_unit.as_str() {
            "SECOND" => 1,
            "MINUTE" => 60,
            "HOUR" => 3600,
            _ => 86_400,
        };
        self.freshness_n as i64 * unit
    }

    /// The query a refresh runs: the resolved one when there is one.
    pub fn refresh_query(&self) -> &str {
        self.resolved_query.as_deref().unwrap_or(&self.query)
    }
}

const COLUMNS: &str = "id, schema_name, table_name, definition, query, columns, comment, options::text, freshness_n, freshness_unit, \
     logical_mode, refresh_mode, status, engine, scheduler, owner_role, created_at::text, altered_at::text, resolved_query, query_view, \
     time_zone, partitioned_by, scheduler_handle::text, refresh_options::text, refresh_action, refresh_action_reason, \
     flink_columns::text, flink_job_id, flink_job_state";

fn row(r: &tokio_postgres::Row) -> DtRow {
    DtRow {
        id: r.get(0),
        name: QualifiedName {
            schema: r.get(1),
            name: r.get(2),
        },
        definition: r.get(3),
        query: r.get(4),
        columns: r.get(5),
        comment: r.get(6),
        options: serde_json::from_str(r.get::<_, &str>(7)).unwrap_or_default(),
        freshness_n: r.get(8),
        freshness_unit: r.get(9),
        logical_mode: r.get(10),
        refresh_mode: r.get(11),
        status: r.get(12),
        engine: r.get(13),
        scheduler: r.get(14),
        owner: r.get(15),
        created_at: r.get(16),
        altered_at: r.get(17),
        resolved_query: r.get(18),
        query_view: r.get(19),
        time_zone: r.get(20),
        partitioned_by: r.get(21),
        scheduler_handle: r.get(22),
        refresh_options: r
            .get::<_, Option<String>>(23)
            .and_then(|t| serde_json::from_str::<std::collections::BTreeMap<String, String>>(&t).ok())
            .unwrap_or_default(),
        refresh_action: r.get(24),
        refresh_action_reason: r.get(25),
        flink_columns: r
            .get::<_, Option<String>>(26)
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
        flink_job_id: r.get(27),
        flink_job_state: r.get(28),
    }
}

/// The catalog row of `name`, if it is a dynamic table.
pub async fn load(c: &impl GenericClient, name: &QualifiedName) -> Result<Option<DtRow>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM dyngate.dynamic_table WHERE schema_name = $1 AND table_name = $2");
    Ok(c.query_opt(&sql, &[&name.schema, &name.name]).await?.as_ref().map(row))
}

/// Whether a relation (table, view, ...) of that name exists at all.
pub async fn relation_exists(c: &impl GenericClient, name: &QualifiedName) -> Result<bool, tokio_postgres::Error> {
    let r = c.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name.quoted()]).await?;
    Ok(r.get(0))
}

/// The values of a new catalog row.
pub struct NewDt<'a> {
    pub name: &'a QualifiedName,
    pub definition: &'a str,
    pub query: &'a str,
    pub columns: Option<&'a str>,
    pub comment: Option<&'a str>,
    pub options: serde_json::Value,
    pub freshness_n: i32,
    pub freshness_unit: &'a str,
    pub freshness_seconds: i64,
    pub logical_mode: &'a str,
    pub refresh_mode: &'a str,
    pub status: &'a str,
    pub scheduler: Option<&'a str>,
    pub owner: &'a str,
    pub time_zone: &'a str,
    pub partitioned_by: &'a [String],
}

pub async fn insert(c: &impl GenericClient, d: &NewDt<'_>) -> Result<i64, tokio_postgres::Error> {
    let r = c
        .query_one(
            "INSERT INTO dyngate.dynamic_table (schema_name, table_name, definition, query, columns, comment, options, freshness_n, \
             freshness_unit, freshness, logical_mode, refresh_mode, status, scheduler, owner_role, time_zone, partitioned_by, last_slot)
             VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, make_interval(secs => $10::bigint), $11, $12, $13, $14, $15,
                     $16, $17, now())
             RETURNING id",
            &[
                &d.name.schema,
                &d.name.name,
                &d.definition,
                &d.query,
                &d.columns,
                &d.comment,
                &d.options.to_string(),
                &d.freshness_n,
                &d.freshness_unit,
                &d.freshness_seconds,
                &d.logical_mode,
                &d.refresh_mode,
                &d.status,
                &d.scheduler,
                &d.owner,
                &d.time_zone,
                &d.partitioned_by,
            ],
        )
        .await?;
    Ok(r.get(0))
}

/// The dynamic tables whose query reads `name` (through their query views' dependencies).
pub async fn readers(c: &impl GenericClient, name: &QualifiedName) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT DISTINCT t.schema_name || '.' || t.table_name
               FROM pg_depend d
               JOIN pg_rewrite r ON r.oid = d.objid
               JOIN pg_class v ON v.oid = r.ev_class AND v.relnamespace = 'dyngate'::regnamespace
               JOIN dyngate.dynamic_table t ON t.query_view = v.relname
              WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
                AND d.refobjid = to_regclass($1) AND t.schema_name || '.' || t.table_name <> $2
              ORDER BY 1",
            &[&name.quoted(), &name.to_string()],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The columns of a relation (`name` quoted), in order: name and type.
pub async fn columns_of(c: &impl GenericClient, name: &str) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let rows = c
        .query_typed(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute
              WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[(&name, Type::TEXT)],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Replaces a table's query (ALTER ... AS); the binding is recorded by [`set_binding`].
pub async fn set_query(c: &impl GenericClient, id: i64, query: &str) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "UPDATE dyngate.dynamic_table SET query = $2, altered_at = now() WHERE id = $1",
        &[&id, &query],
    )
    .await?;
    Ok(())
}

/// Records who schedules a table and the scheduler's handle.
pub async fn set_scheduler(
    c: &impl GenericClient,
    id: i64,
    scheduler: Option<&str>,
    handle: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "UPDATE dyngate.dynamic_table SET scheduler = $2, scheduler_handle = $3::text::jsonb WHERE id = $1",
        &[&id, &scheduler, &handle],
    )
    .await?;
    Ok(())
}

/// Records the query's binding (engine::postgres::bind_query).
pub async fn set_binding(c: &impl GenericClient, id: i64, view: &str, resolved: &str) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "UPDATE dyngate.dynamic_table SET query_view = $2, resolved_query = $3 WHERE id = $1",
        &[&id, &view, &resolved],
    )
    .await?;
    Ok(())
}

pub async fn delete(c: &impl GenericClient, id: i64) -> Result<(), tokio_postgres::Error> {
    c.execute("DELETE FROM dyngate.dynamic_table WHERE id = $1", &[&id]).await?;
    Ok(())
}

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

/// Loads a dynamic table by id (the scheduler's view: it may have been dropped meanwhile).
pub async fn load_by_id(c: &impl GenericClient, id: i64) -> Result<Option<DtRow>, tokio_postgres::Error> {
    let sql = format!("SELECT {COLUMNS} FROM dyngate.dynamic_table WHERE id = $1");
    // Typed: one round trip (every refresh loads its table again in its transaction).
    Ok(c.query_typed_opt(&sql, &[(&id, Type::INT8)]).await?.as_ref().map(row))
}

/// Claims schedule slots: sets each table's `last_slot` to its slot where it is still ACTIVATED
/// and the slot not yet claimed (a compare-and-set, so gateways sharing the catalog fire a slot
/// once); returns the tables claimed.
pub async fn claim_slots(c: &impl GenericClient, ids: &[i64], slots: &[i64]) -> Result<Vec<DtRow>, tokio_postgres::Error> {
    let sql = format!(
        "UPDATE dyngate.dynamic_table t SET last_slot = to_timestamp(d.slot)
           FROM unnest($1::bigint[], $2::bigint[]) AS d(table_id, slot)
          WHERE t.id = d.table_id AND t.status = 'ACTIVATED' AND (t.last_slot IS NULL OR t.last_slot < to_timestamp(d.slot))
          RETURNING {COLUMNS}"
    );
    Ok(c.query(&sql, &[&ids, &slots]).await?.iter().map(row).collect())
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
