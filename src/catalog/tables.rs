//! Typed reads and writes of the dynamic tables' catalog rows (`dyngate.dynamic_table`), and of
//! the relations they name. Plain functions over a connection or transaction; the operations
//! decide the transactions.

use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::core::rules::{self, Freshness, Unit};
use crate::core::{EngineKind, LogicalMode, QualifiedName, RefreshAction, RefreshMode, SchedulerKind, Status};

/// A dynamic table's catalog row, typed: the catalog's CHECK constraints and dyngate's own writes
/// keep its kinds to the texts [`crate::core::kinds`] knows.
#[derive(Debug, Clone)]
pub struct DtRow {
    pub id: i64,
    pub name: QualifiedName,
    pub definition: String,
    pub query: String,
    pub columns: Option<String>,
    pub comment: Option<String>,
    pub options: serde_json::Value,
    pub freshness: Freshness,
    pub logical_mode: LogicalMode,
    pub refresh_mode: RefreshMode,
    pub status: Status,
    pub engine: EngineKind,
    /// Who schedules a FULL table (None: a CONTINUOUS one).
    pub scheduler: Option<SchedulerKind>,
    pub owner: String,
    pub created_at: String,
    pub altered_at: String,
    /// The query with names resolved (None for tables created before catalog version 2).
    pub resolved_query: Option<String>,
    /// The view in schema dyngate that holds the query (see engine::postgres::run_as::bind_query).
    pub query_view: Option<String>,
    pub time_zone: String,
    pub partitioned_by: Vec<String>,
    /// The external scheduler's handle (JSON), e.g. the Airflow DAG.
    pub scheduler_handle: Option<String>,
    /// RESUME WITH options: the configuration scheduled refresh calls carry.
    pub refresh_options: std::collections::BTreeMap<String, String>,
    /// How its refreshes are meant to go: INCREMENTAL or FULL (engine::postgres::incremental).
    pub refresh_action: RefreshAction,
    /// Why a table is refreshed fully.
    pub refresh_action_reason: Option<String>,
    /// A Flink-refreshed table's columns (engine::flink::tables).
    pub flink_columns: Vec<FlinkColumn>,
    /// A CONTINUOUS Flink table's streaming job, and its state as last seen.
    pub flink_job_id: Option<String>,
    pub flink_job_state: Option<String>,
}

/// A column of a dynamic table refreshed by Flink, as the catalog keeps it (`flink_columns`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlinkColumn {
    /// The name in PostgreSQL and in the sink (a plain lower-case identifier).
    pub name: String,
    /// Flink's type, as `DESCRIBE` printed it, without `NOT NULL` and time attribute markers.
    pub flink_type: String,
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

    /// The freshness in seconds.
    pub fn freshness_seconds(&self) -> i64 {
        self.freshness.duration().as_secs() as i64
    }

    /// The query a refresh runs: the resolved one when there is one.
    pub fn refresh_query(&self) -> &str {
        self.resolved_query.as_deref().unwrap_or(&self.query)
    }

    /// Whether its refreshes apply changes (engine::postgres::incremental) rather than recompute.
    pub fn incremental(&self) -> bool {
        self.refresh_action == RefreshAction::Incremental
    }
}

const COLUMNS: &str = "id, schema_name, table_name, definition, query, columns, comment, options::text, freshness_n, freshness_unit, \
     logical_mode, refresh_mode, status, engine, scheduler, owner_role, created_at::text, altered_at::text, resolved_query, query_view, \
     time_zone, partitioned_by, scheduler_handle::text, refresh_options::text, refresh_action, refresh_action_reason, \
     flink_columns::text, flink_job_id, flink_job_state";

/// A kind read from the catalog. The catalog's CHECK constraints hold these texts; a value they
/// let through anyway (a row edited by hand) is logged and read as `fallback`, the choice that
/// runs nothing by itself (a suspended table, a full refresh, the embedded scheduler).
fn kind<K>(id: i64, column: &str, text: &str, parse: fn(&str) -> Option<K>, fallback: K) -> K {
    parse(text).unwrap_or_else(|| {
        damaged(id, column, text);
        fallback
    })
}

fn damaged(id: i64, column: &str, value: &str) {
    tracing::error!(
        table_id = id,
        column,
        value,
        "a dynamic table's catalog row holds a value dyngate does not know; it is read as the safest one"
    );
}

fn row(r: &tokio_postgres::Row) -> DtRow {
    let id: i64 = r.get(0);
    DtRow {
        id,
        name: QualifiedName {
            schema: r.get(1),
            name: r.get(2),
        },
        definition: r.get(3),
        query: r.get(4),
        columns: r.get(5),
        comment: r.get(6),
        options: serde_json::from_str(r.get::<_, &str>(7)).unwrap_or_default(),
        freshness: rules::parse_freshness(&r.get::<_, i32>(8).to_string(), r.get(9)).unwrap_or_else(|e| {
            damaged(id, "freshness", &e.to_string());
            Freshness { n: 1, unit: Unit::Day }
        }),
        logical_mode: kind(id, "logical_mode", r.get(10), LogicalMode::parse, LogicalMode::Automatic),
        refresh_mode: kind(id, "refresh_mode", r.get(11), RefreshMode::parse, RefreshMode::Full),
        status: kind(id, "status", r.get(12), Status::parse, Status::Suspended),
        engine: kind(id, "engine", r.get(13), EngineKind::parse, EngineKind::Postgres),
        scheduler: r
            .get::<_, Option<&str>>(14)
            .map(|s| kind(id, "scheduler", s, SchedulerKind::parse, SchedulerKind::Embedded)),
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
        refresh_action: kind(id, "refresh_action", r.get(24), RefreshAction::parse, RefreshAction::Full),
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
    pub freshness: Freshness,
    pub logical_mode: LogicalMode,
    pub refresh_mode: RefreshMode,
    pub status: Status,
    pub scheduler: Option<SchedulerKind>,
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
                &(d.freshness.n as i32),
                &d.freshness.unit.name(),
                &(d.freshness.duration().as_secs() as i64),
                &d.logical_mode.name(),
                &d.refresh_mode.name(),
                &d.status.name(),
                &d.scheduler.map(SchedulerKind::name),
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
    scheduler: Option<SchedulerKind>,
    handle: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    c.execute(
        "UPDATE dyngate.dynamic_table SET scheduler = $2, scheduler_handle = $3::text::jsonb WHERE id = $1",
        &[&id, &scheduler.map(SchedulerKind::name), &handle],
    )
    .await?;
    Ok(())
}

/// Records the query's binding (engine::postgres::run_as::bind_query).
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
