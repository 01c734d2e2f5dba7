//! Incremental refresh on the PostgreSQL engine: a dynamic table refreshed by applying what
//! changed in its sources since its last refresh, instead of recomputing its query.
//!
//! - [`analyze`] decides, from the resolved query, whether and how a table can be refreshed
//!   incrementally, or why not (the reason users see).
//! - [`capture`] logs the changes of the sources: statement triggers with transition tables, or
//!   [`stream`] copies them from the WAL by logical decoding over a replication connection
//!   ([`replication`]; [`wal`] reads its messages; [`collect`] has the parts the refresh shares).
//! - [`delta`] writes the SQL that applies a plan's delta to a table of rows; [`groups`] that of
//!   a grouped table, whose aggregates are kept as state in a side table; [`in_place`] that of
//!   a grouped table that is its own state (count(*) and sums that a delta can be added to).
//!
//! This module ties them together for the manager: [`decide`] at CREATE and ALTER ... AS,
//! [`prepare`] and [`record`] around the first fill, and, at each refresh (run by the manager in
//! one REPEATABLE READ transaction, so the log and the sources are read as of one snapshot),
//! [`pending`], [`prefer_full`] (the cost guard), [`analyze_logs`], [`shape`] and [`apply`];
//! [`discard_applied`] afterwards.
//!
//! Which snapshot a table is up to date with is recorded in `dyngate.applied` (catalog V4); no
//! row means the next refresh is full (a table altered while suspended, or just switched to
//! incremental).

pub mod analyze;
pub mod capture;
pub mod collect;
pub mod delta;
pub mod groups;
pub mod in_place;
pub mod refresh;
pub mod replication;
pub mod stream;
pub mod wal;

use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::core::{RefreshAction, quote_literal};
use crate::engine::postgres::incremental::analyze::Plan;
use crate::engine::postgres::incremental::capture::SourceTable;

/// The option that asks for a refresh action: `auto` (the default: incremental when the query
/// allows it), `incremental` (an error names what keeps the query from it) or `full`.
pub const ACTION_OPTION: &str = "refresh.action";

/// What a table's options ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    Auto,
    Incremental,
    Full,
}

/// Reads the `refresh.action` option (case-insensitive).
pub fn requested(options: &[(String, String)]) -> Result<Requested, String> {
    match options.iter().find(|(k, _)| k == ACTION_OPTION) {
        None => Ok(Requested::Auto),
        Some((_, v)) => match v.to_ascii_lowercase().as_str() {
            "auto" => Ok(Requested::Auto),
            "incremental" => Ok(Requested::Incremental),
            "full" => Ok(Requested::Full),
            _ => Err(format!(
                "invalid value for option '{ACTION_OPTION}': '{v}' (expected 'auto', 'incremental' or 'full')"
            )),
        },
    }
}

/// How a table is refreshed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Incremental {
        sources: Vec<SourceTable>,
        plan: Plan,
        /// The query's columns (what a grouped table's state is laid out by).
        columns: Vec<delta::Column>,
    },
    /// Why not incrementally.
    Full { reason: String },
}

impl Decision {
    pub fn action(&self) -> RefreshAction {
        match self {
            Decision::Incremental { .. } => RefreshAction::Incremental,
            Decision::Full { .. } => RefreshAction::Full,
        }
    }

    /// The storage parameters of a table made from its query (CREATE ... AS, no column list):
    /// a table that will be its own state is made with the fillfactor its in-place updates
    /// need, so that even its first rows leave room on their pages (refill_state sets it on
    /// the other tables that are their own state, for the pages written after).
    pub fn storage(&self) -> Option<String> {
        let Decision::Incremental { sources, plan, columns } = self else {
            return None;
        };
        in_place::own_state_keys(plan, columns, columns, sources).map(|_| format!("fillfactor = {}", groups::STATE_FILLFACTOR))
    }
}

/// How the query bound in view `dyngate.<view>` (printed as `resolved`) is to be refreshed. An
/// explicit request for `incremental` that cannot be met is `Err(reason)`.
pub async fn decide(
    tx: &Transaction<'_>,
    view: &str,
    resolved: &str,
    requested: Requested,
    partitioned: bool,
) -> Result<Result<Decision, String>, tokio_postgres::Error> {
    if requested == Requested::Full {
        return Ok(Ok(Decision::Full {
            reason: format!("'{ACTION_OPTION}' = 'full' was asked for"),
        }));
    }
    let why = if partitioned {
        // A partition's refresh replaces that partition alone (Flink's rule); an incremental
        // table is up to date as a whole.
        Err("a partitioned table's refreshes replace whole partitions (PARTITIONED BY)".to_string())
    } else {
        why_not(tx, view, resolved).await?
    };
    let reason = match why {
        Ok((sources, plan, columns)) => return Ok(Ok(Decision::Incremental { sources, plan, columns })),
        Err(reason) => reason,
    };
    Ok(match requested {
        Requested::Incremental => Err(reason),
        _ => Ok(Decision::Full { reason }),
    })
}

/// The sources to capture and the plan, or why the query cannot be refreshed incrementally.
async fn why_not(
    tx: &Transaction<'_>,
    view: &str,
    resolved: &str,
) -> Result<Result<(Vec<SourceTable>, Plan, Vec<delta::Column>), String>, tokio_postgres::Error> {
    let plan = match analyze::analyze(resolved) {
        Ok(p) => p,
        Err(reason) => return Ok(Err(reason)),
    };
    if let Some(reason) = capture::function_reason(tx, view, &analyze::called_functions(resolved)).await? {
        return Ok(Err(reason));
    }
    let sources = match capture::sources_of(tx, view).await? {
        Ok(s) => s,
        Err(reason) => return Ok(Err(reason)),
    };
    if let Err(reason) = check_sources(&plan, &sources) {
        return Ok(Err(reason));
    }
    if let Plan::Groups { .. } = plan {
        let version: i32 = tx.query_one("SELECT current_setting('server_version_num')::int", &[]).await?.get(0);
        if version < 150_000 {
            return Ok(Err(
                "GROUP BY is refreshed incrementally from PostgreSQL 15 on (UNIQUE NULLS NOT DISTINCT)".into(),
            ));
        }
    }
    let columns = query_columns(tx, view).await?;
    if let Some(reason) = groups::float_reason(&plan, &columns) {
        return Ok(Err(reason));
    }
    Ok(Ok((sources, plan, columns)))
}

/// The columns of the query bound in view `dyngate.<view>`: names and types.
pub async fn query_columns(c: &impl GenericClient, view: &str) -> Result<Vec<delta::Column>, tokio_postgres::Error> {
    table_columns(c, &format!("dyngate.{}", crate::core::quote_ident(view))).await
}

/// Checks that the tables the plan reads (those of its subqueries too) are the captured
/// `sources`: an error when what the query reads and what the plan names differ.
pub fn check_sources(plan: &Plan, sources: &[SourceTable]) -> Result<(), String> {
    let tables: Vec<&analyze::Source> = plan.froms().iter().flat_map(|f| f.tables()).collect();
    let find = |t: &analyze::Source| sources.iter().find(|s| s.schema == t.schema && s.name == t.name);
    let covered = sources
        .iter()
        .all(|s| tables.iter().any(|t| find(t).is_some_and(|f| f.oid == s.oid)));
    if !covered || tables.iter().any(|t| find(t).is_none()) {
        let named: Vec<String> = tables.iter().map(|t| format!("{}.{}", t.schema, t.name)).collect();
        return Err(format!(
            "the query reads {} relations where {} was expected",
            sources.len(),
            named.join(", ")
        ));
    }
    Ok(())
}

/// Locks an incremental table's sources against writers until the transaction ends, before
/// the fill: no change can then fall between the fill's snapshot and the start of the capture
/// ([`record`], after the fill).
pub async fn prepare(tx: &Transaction<'_>, decision: &Decision) -> Result<(), tokio_postgres::Error> {
    if let Decision::Incremental { sources, .. } = decision {
        for s in sources {
            capture::lock(tx, s).await?;
        }
    }
    Ok(())
}

/// Starts capturing the changes of an incremental table's sources (read by `owner`; new
/// captures by `method`) and records the decision for table `id` (`target`, quoted), after its
/// content was made from the current sources (`filled`) or not (a suspended table altered: its
/// next refresh is full, and makes its state).
pub async fn record(
    tx: &Transaction<'_>,
    id: i64,
    target: &str,
    decision: &Decision,
    owner: &str,
    filled: bool,
    method: capture::Method,
) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(&groups::drop_state_sql(id)).await?;
    if let Decision::Incremental { sources, plan, columns } = decision {
        for s in sources {
            capture::install(tx, s, owner, method).await?;
        }
        if filled {
            refill_state(tx, owner, plan, id, columns, target, sources).await?;
        }
    }
    let reason = match decision {
        Decision::Incremental { .. } => None,
        Decision::Full { reason } => Some(reason.as_str()),
    };
    tx.execute(
        "UPDATE dyngate.dynamic_table SET refresh_action = $2, refresh_action_reason = $3 WHERE id = $1",
        &[&id, &decision.action().name(), &reason],
    )
    .await?;
    mark_applied(tx, id, decision.action() == RefreshAction::Incremental && filled).await
}

/// Records that table `id`'s content is up to date with the caller's snapshot (`applied`), or
/// that its next refresh must be full.
pub async fn mark_applied(c: &impl GenericClient, id: i64, applied: bool) -> Result<(), tokio_postgres::Error> {
    // Typed statements: one round trip each, nothing prepared (this runs with every refresh).
    if applied {
        c.query_typed(
            "INSERT INTO dyngate.applied (dynamic_table_id, snapshot) VALUES ($1, pg_catalog.pg_current_snapshot())
             ON CONFLICT (dynamic_table_id) DO UPDATE SET snapshot = excluded.snapshot",
            &[(&id, Type::INT8)],
        )
        .await?;
    } else {
        c.query_typed("DELETE FROM dyngate.applied WHERE dynamic_table_id = $1", &[(&id, Type::INT8)])
            .await?;
    }
    Ok(())
}

/// The snapshot table `id` is up to date with (None: the next refresh is full).
pub async fn applied_snapshot(c: &impl GenericClient, id: i64) -> Result<Option<String>, tokio_postgres::Error> {
    Ok(c.query_typed_opt(
        "SELECT snapshot::text FROM dyngate.applied WHERE dynamic_table_id = $1",
        &[(&id, Type::INT8)],
    )
    .await?
    .map(|r| r.get(0)))
}

/// What the sources logged since the snapshot `applied`, read in the caller's snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Logged rows (an UPDATE logs two).
    pub changes: i64,
    /// Some source was truncated.
    pub truncated: bool,
    /// The sources' estimated rows (planner statistics, or the live rows counted by the
    /// statistics system when the table was not analyzed yet).
    pub source_rows: f64,
    /// The sources whose logs hold many changes but have no planner statistics yet (see
    /// [`analyze_logs`]).
    pub unanalyzed: Vec<u32>,
}

/// From this many changes pending in one log, a log with no statistics is analyzed before the
/// apply (below, the delta is small whatever plan reads it).
pub const ANALYZE_FROM: i64 = 1000;

/// Counts what `sources` logged since `applied`, and whether one was truncated; records each
/// source's count ([`SourceTable::changes`]) for [`apply`] in the same snapshot. One statement
/// for all the sources (a round trip is a good part of a small refresh's time).
pub async fn pending(tx: &Transaction<'_>, sources: &mut [SourceTable], applied: &str) -> Result<Pending, tokio_postgres::Error> {
    let mut p = Pending {
        changes: 0,
        truncated: false,
        source_rows: 0.0,
        unanalyzed: Vec::new(),
    };
    if sources.is_empty() {
        return Ok(p);
    }
    // Source i is parameter $(i + 2); the applied snapshot is $1.
    let parts: Vec<String> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "SELECT {i}, (SELECT count(*) FROM ({}) AS pending),
                        EXISTS (SELECT 1 FROM dyngate.truncation
                                 WHERE source = ${n} AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot)),
                        (SELECT greatest(reltuples, pg_stat_get_live_tuples(oid), 0)::float8 FROM pg_class WHERE oid = ${n}),
                        pg_catalog.to_regclass({log})::oid",
                delta::pending_changes(s, applied),
                n = i + 2,
                log = quote_literal(&capture::log_relation(s.oid)),
            )
        })
        .collect();
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(&applied, Type::TEXT)];
    params.extend(sources.iter().map(|s| (&s.oid as &(dyn ToSql + Sync), Type::OID)));
    let rows = tx.query_typed(&parts.join(" UNION ALL "), &params).await?;
    let mut counted = Vec::new();
    for row in rows {
        let (i, changes, truncated): (i32, i64, bool) = (row.get(0), row.get(1), row.get(2));
        let (rows, log): (Option<f64>, Option<u32>) = (row.get(3), row.get(4));
        let s = &mut sources[i as usize];
        s.changes = Some(changes);
        p.changes += changes;
        p.truncated |= truncated;
        p.source_rows += rows.unwrap_or(0.0);
        if changes >= ANALYZE_FROM && !log.is_some_and(known_analyzed) {
            counted.push((s.oid, log));
        }
    }
    // Asked only then: pg_stats is a view that takes half a millisecond to plan.
    for (oid, log) in counted {
        let analyzed: bool = tx
            .query_typed_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = 'dyngate' AND tablename = $1)",
                &[(&capture::log_table(oid), Type::TEXT)],
            )
            .await?
            .get(0);
        if !analyzed {
            p.unanalyzed.push(oid);
        } else if let Some(log) = log {
            analyzed_logs().get_or_insert_with(Default::default).insert(log);
        }
    }
    Ok(p)
}

/// The logs (by relation oid) seen with planner statistics: they keep them (an ANALYZE of an
/// empty log keeps the old ones, and a TRUNCATE does not remove them), so pg_stats is asked once
/// per log and process. A log dropped and made again has another oid.
static ANALYZED_LOGS: std::sync::Mutex<Option<std::collections::HashSet<u32>>> = std::sync::Mutex::new(None);

fn analyzed_logs() -> std::sync::MutexGuard<'static, Option<std::collections::HashSet<u32>>> {
    ANALYZED_LOGS.lock().unwrap_or_else(|e| e.into_inner())
}

fn known_analyzed(log: u32) -> bool {
    analyzed_logs().as_ref().is_some_and(|s| s.contains(&log))
}

/// Gives the logs of `sources` planner statistics, in the refresh's transaction, before its
/// apply reads them. A log is a queue: it fills between refreshes and empties after each, and
/// until it is first analyzed (autovacuum comes within a minute or so of its first changes) the
/// planner knows nothing of its columns. It then takes a join key of the changes for one of a
/// few values, and hashes the other side of the join instead: in bench/incremental.sh, V2 built
/// its hash on customers' 100k rows rather than on the 14k changes, 4-5 ms more per refresh.
/// The statistics persist across the log's emptying (an ANALYZE of an empty table keeps them),
/// and their shape (how distinct a column's values are) is what the plans need. A sample of
/// 3000 rows (statistics target 10) takes 1-2 ms for 14k changes, against 10 ms with the
/// default target. A log being analyzed or vacuumed meanwhile is skipped (SKIP_LOCKED), so
/// refreshes never wait for one another here.
pub async fn analyze_logs(tx: &Transaction<'_>, sources: &[u32]) -> Result<(), tokio_postgres::Error> {
    if sources.is_empty() {
        return Ok(());
    }
    let logs: Vec<String> = sources.iter().map(|oid| capture::log_relation(*oid)).collect();
    tx.batch_execute(&format!(
        "SET LOCAL default_statistics_target = 10; ANALYZE (SKIP_LOCKED) {}",
        logs.join(", ")
    ))
    .await
}

/// The share of the sources' rows beyond which a refresh recomputes instead of applying the
/// changes: applying costs a few times more per row than recomputing (bench/incremental).
pub const FULL_ABOVE_SHARE: f64 = 0.25;

/// The cost guard: whether recomputing is cheaper than applying `changes`.
pub fn prefer_full(changes: i64, source_rows: f64) -> bool {
    changes as f64 > FULL_ABOVE_SHARE * source_rows.max(1.0)
}

/// Makes the state a plan keeps (a grouped table's) again, as `owner`, after the table
/// (`target`, quoted) was filled from the sources: after a fill, and with every full refresh of
/// an incremental table (so a state laid out by an earlier version of dyngate is laid out anew).
/// A table that can be its own state (in_place) gets the unique index its applies need, if it
/// has none, the fillfactor of tables updated in place (groups::STATE_FILLFACTOR), if it has
/// no fillfactor, and no state table; any other grouped table a state table computed from the
/// sources. Should the index fail (a key type with no btree operator class), the table keeps a
/// state table.
pub async fn refill_state(
    tx: &Transaction<'_>,
    owner: &str,
    plan: &Plan,
    id: i64,
    query: &[delta::Column],
    target: &str,
    sources: &[SourceTable],
) -> Result<(), tokio_postgres::Error> {
    let Plan::Groups { .. } = plan else {
        return Ok(());
    };
    tx.batch_execute(&groups::drop_state_sql(id)).await?;
    let table = table_columns(tx, target).await?;
    if let Some(keys) = in_place::own_state_keys(plan, &table, query, sources) {
        let row = tx
            .query_typed_one(
                &format!("SELECT {KEY_INDEX}, {OWN_FILLFACTOR}"),
                &[(&target, Type::TEXT), (&keys, Type::TEXT_ARRAY)],
            )
            .await?;
        let (indexed, tuned): (bool, bool) = (row.get(0), row.get(1));
        if indexed || make_key_index(tx, owner, id, target, &keys).await? {
            if !tuned {
                // New pages get it: the next full refresh's rows, and the versions the applies
                // write meanwhile.
                let sql = format!("ALTER TABLE {target} SET (fillfactor = {})", groups::STATE_FILLFACTOR);
                crate::engine::postgres::run_as::run_as(tx, owner, &sql).await?;
            }
            return Ok(());
        }
    }
    if let Some(create) = groups::create_state_sql(plan, id, owner, query) {
        tx.batch_execute(&create).await?;
    }
    if let Some(fill) = groups::fill_state_sql(plan, id, query) {
        crate::engine::postgres::run_as::run_as(tx, owner, &fill).await?;
    }
    Ok(())
}

/// Drops the key index dyngate made on table `id` (`target`, quoted) for in-place applies, if
/// it has one, as `owner`: before the table is filled by a new query (ALTER ... AS), whose
/// groups it may not fit; the fill's refill_state makes the one the new query needs.
pub async fn drop_key_index(tx: &Transaction<'_>, owner: &str, id: i64, target: &str) -> Result<(), tokio_postgres::Error> {
    let index: Option<String> = tx
        .query_opt(
            "SELECT format('%I.%I', n.nspname, i.relname) FROM pg_catalog.pg_index x
               JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid JOIN pg_catalog.pg_namespace n ON n.oid = i.relnamespace
              WHERE x.indrelid = $1::text::pg_catalog.regclass AND i.relname = $2",
            &[&target, &in_place::key_index(id)],
        )
        .await?
        .map(|r| r.get(0));
    if let Some(index) = index {
        crate::engine::postgres::run_as::run_as(tx, owner, &format!("DROP INDEX {index}")).await?;
    }
    Ok(())
}

/// The columns of table `target` (quoted): names and types.
async fn table_columns(c: &impl GenericClient, target: &str) -> Result<Vec<delta::Column>, tokio_postgres::Error> {
    Ok(crate::catalog::columns_of(c, target)
        .await?
        .into_iter()
        .map(|(name, ty)| delta::Column { name, ty })
        .collect())
}

/// Whether `$1` (a quoted table) has a unique index on exactly the columns `$2`, NULLs not
/// distinct: what an in-place apply's `ON CONFLICT` needs (a user may have dropped it).
const KEY_INDEX: &str = "EXISTS (SELECT 1 FROM pg_catalog.pg_index x
          WHERE x.indrelid = $1::text::pg_catalog.regclass AND x.indisunique AND x.indisvalid AND x.indnullsnotdistinct
            AND x.indpred IS NULL AND x.indexprs IS NULL AND x.indnatts = pg_catalog.cardinality($2::text[])
            AND (SELECT pg_catalog.array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = x.indrelid AND a.attnum = ANY (x.indkey::int2[]))
              = (SELECT pg_catalog.array_agg(k ORDER BY k) FROM pg_catalog.unnest($2::text[]) AS k))";

/// Whether `$1` (a quoted table) has a fillfactor set: dyngate's, or its owner's, which an
/// in-place table keeps.
const OWN_FILLFACTOR: &str = "EXISTS (SELECT 1 FROM pg_catalog.pg_class c, pg_catalog.unnest(c.reloptions) AS o
          WHERE c.oid = $1::text::pg_catalog.regclass AND o LIKE 'fillfactor=%')";

/// Makes the key index of table `id` (`target`, quoted) on `keys` as `owner`; false if it
/// cannot be made (a key type with no btree operator class), the transaction unharmed.
async fn make_key_index(tx: &Transaction<'_>, owner: &str, id: i64, target: &str, keys: &[String]) -> Result<bool, tokio_postgres::Error> {
    tx.batch_execute("SAVEPOINT dyngate_key_index").await?;
    match crate::engine::postgres::run_as::run_as(tx, owner, &in_place::key_index_sql(id, target, keys)).await {
        Ok(_) => {
            tx.batch_execute("RELEASE SAVEPOINT dyngate_key_index").await?;
            Ok(true)
        }
        Err(e) => {
            tracing::info!(table = target, error = %e, "no unique index on the group keys; the table keeps a state table");
            tx.batch_execute("ROLLBACK TO SAVEPOINT dyngate_key_index").await?;
            Ok(false)
        }
    }
}

/// How a table's changes are applied: its rows, or a grouped table's state table, or the
/// grouped table as its own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Rows,
    State,
    InPlace,
}

/// What an apply needs to know of its table, read in the refresh's transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub layout: Layout,
    /// The table's columns, and its query's.
    pub table: Vec<delta::Column>,
    pub query: Vec<delta::Column>,
}

/// The shape of table `id` (`target`, quoted; its query bound in view `dyngate.<view>`) for an
/// apply; None when its layout must be made again by a full refresh: a grouped table with no
/// state table that can no longer be its own state (a source column's NOT NULL was dropped), or
/// has lost its key index.
pub async fn shape(
    tx: &Transaction<'_>,
    plan: &Plan,
    id: i64,
    target: &str,
    view: &str,
    sources: &[SourceTable],
) -> Result<Option<Shape>, tokio_postgres::Error> {
    // The two lists in one round trip (pipelined).
    let (table, query) = tokio::try_join!(table_columns(tx, target), query_columns(tx, view))?;
    let layout = match plan {
        Plan::Rows { .. } => Layout::Rows,
        Plan::Groups { .. } => {
            let keys = in_place::key_columns(plan, &table).unwrap_or_default();
            // Whether it has a state table, and the key index: one round trip.
            let row = tx
                .query_typed_one(
                    &format!("SELECT pg_catalog.to_regclass(format('dyngate.%I', $3::text)) IS NOT NULL, {KEY_INDEX}"),
                    &[
                        (&target, Type::TEXT),
                        (&keys, Type::TEXT_ARRAY),
                        (&groups::state_table(id), Type::TEXT),
                    ],
                )
                .await?;
            let (state, indexed): (bool, bool) = (row.get(0), row.get(1));
            if state {
                Layout::State
            } else if indexed && in_place::check(plan, &table, &query, sources).is_ok() {
                Layout::InPlace
            } else {
                return Ok(None);
            }
        }
    };
    Ok(Some(Shape { layout, table, query }))
}

/// Removes what table `id` kept for its incremental refreshes (DROP).
pub async fn forget(tx: &Transaction<'_>, id: i64) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(&groups::drop_state_sql(id)).await?;
    capture::remove_unused(tx).await
}

/// Applies the changes since `applied` to table `id` (`target`, quoted, of `shape`) as `owner`;
/// the rows it wrote (a grouped table's: the groups written less those deleted in place). In a
/// transaction with JIT off (the refresh's): the planner's costs count the sources' whole size
/// (it cannot know a delta is small), which turns on JIT compilation: measured, 260 of 330 ms
/// for 14k changes joined with 100k rows.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    tx: &Transaction<'_>,
    owner: &str,
    plan: &Plan,
    id: i64,
    sources: &[SourceTable],
    applied: &str,
    target: &str,
    shape: &Shape,
) -> Result<u64, ApplyError> {
    check_sources(plan, sources).map_err(ApplyError::Plan)?;
    let no_apply = || ApplyError::Plan("no apply for this plan".into());
    let sql = match shape.layout {
        Layout::Rows => delta::apply_sql(plan, sources, applied, target, &shape.table),
        Layout::State => groups::apply_sql(plan, id, sources, applied, target, &shape.table, &shape.query),
        Layout::InPlace => {
            let [upsert, delete] = in_place::apply_sql(plan, sources, applied, target, &shape.table).ok_or_else(no_apply)?;
            let written = crate::engine::postgres::run_as::run_as(tx, owner, &upsert).await?;
            let deleted = crate::engine::postgres::run_as::run_as(tx, owner, &delete).await?;
            return Ok(written.saturating_sub(deleted));
        }
    }
    .ok_or_else(no_apply)?;
    Ok(crate::engine::postgres::run_as::run_as(tx, owner, &sql).await?)
}

/// Why applying failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The recorded query no longer plans (it was planned when recorded): a bug.
    #[error("the incremental plan could not be made: {0}")]
    Plan(String),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

/// The incremental tables reading source `$1`, with the snapshot each is up to date with.
const READERS: &str = "SELECT a.snapshot AS applied_snapshot FROM dyngate.dynamic_table t
      JOIN dyngate.applied a ON a.dynamic_table_id = t.id
      JOIN pg_rewrite rw ON rw.ev_class = to_regclass(format('dyngate.%I', t.query_view))
      JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
                      AND d.refclassid = 'pg_class'::regclass AND d.refobjid = $1
     WHERE t.refresh_action = 'INCREMENTAL'";

/// That every reader (the CTE `readers`, of [`READERS`]) has applied the change of transaction
/// `xid` (an SQL expression): what the discard deletes, and what a log must hold only of to be
/// truncated.
fn applied_by_every_reader(xid: &str) -> String {
    format!("NOT EXISTS (SELECT 1 FROM readers r WHERE NOT pg_visible_in_snapshot({xid}, r.applied_snapshot))")
}

/// Discards the logged changes of `sources` that every incremental reader has applied (those
/// whose next refresh is full need none); how many. Run on its own connection (READ COMMITTED)
/// after a refresh committed; two running at once discard disjoint or equal rows, never wait
/// long. A log is a queue: a log that holds nothing any reader needs is emptied with TRUNCATE
/// when nobody uses it at that moment (`truncate_drained`), else its rows are deleted.
pub async fn discard_applied(c: &mut Client, sources: &[SourceTable]) -> Result<u64, tokio_postgres::Error> {
    let xid = crate::core::quote_ident(capture::XID);
    let mut n = 0;
    for s in sources {
        let log = capture::log_relation(s.oid);
        n += match truncate_drained(c, s.oid).await? {
            Some(rows) => rows,
            None => c
                .query_typed_raw(
                    &format!(
                        "WITH readers AS MATERIALIZED ({READERS})
                         DELETE FROM {log} AS l WHERE {}",
                        applied_by_every_reader(&format!("l.{xid}"))
                    ),
                    [(&s.oid as &(dyn ToSql + Sync), Type::OID)],
                )
                .await?
                .rows_affected()
                .unwrap_or(0),
        };
        c.query_typed(
            &format!(
                "WITH readers AS MATERIALIZED ({READERS})
                 DELETE FROM dyngate.truncation AS l WHERE l.source = $1 AND {}",
                applied_by_every_reader("l.xid")
            ),
            &[(&s.oid, Type::OID)],
        )
        .await?;
    }
    Ok(n)
}

/// How long the check of a log's rows may keep its writers waiting, in milliseconds (a log of
/// one refresh's changes, 14k rows in bench/incremental.sh, takes 2-3).
const DRAIN_CHECK_MS: u32 = 20;

/// Empties the log of source `oid` with TRUNCATE if no row in it is needed by any reader; the
/// rows it held, or None when it did not (some row is needed, or the log is in use).
///
/// A DELETE leaves the rows dead until a vacuum and the file at its largest, which every
/// refresh's reads of the log then scan (measured: a log left at 4.8k pages by a stalled
/// autovacuum doubled V1's refresh in bench/incremental.sh's data); TRUNCATE gives the file
/// back, and writes no row's WAL. It needs the log's ACCESS EXCLUSIVE lock: taken only if free
/// (NOWAIT: a writer with changes not committed yet, the stream copying changes in, or a
/// refresh reading the log holds a weaker lock), and held while the rows are checked, at most
/// [`DRAIN_CHECK_MS`] (writers wait that long at worst). Under the lock no change can commit
/// into the log, so the check sees all of them. A refresh whose snapshot was taken before the
/// TRUNCATE and reads the log after it sees it empty: it needs only rows its applied snapshot
/// does not see, and a log holding any such row is not emptied.
async fn truncate_drained(c: &mut Client, oid: u32) -> Result<Option<u64>, tokio_postgres::Error> {
    let log = capture::log_relation(oid);
    let xid = crate::core::quote_ident(capture::XID);
    // Dropped unfinished, the transaction rolls back.
    let tx = c.transaction().await?;
    let checked = async {
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {DRAIN_CHECK_MS}; LOCK TABLE {log} IN ACCESS EXCLUSIVE MODE NOWAIT"
        ))
        .await?;
        tx.query_typed_one(
            &format!(
                "WITH readers AS MATERIALIZED ({READERS})
                 SELECT count(*), coalesce(bool_and({}), true) FROM {log} AS l",
                applied_by_every_reader(&format!("l.{xid}"))
            ),
            &[(&oid, Type::OID)],
        )
        .await
    }
    .await;
    let row = match checked {
        Ok(row) => row,
        Err(e) if matches!(e.code(), Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::QUERY_CANCELED) => {
            tx.rollback().await?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let (rows, drained): (i64, bool) = (row.get(0), row.get(1));
    if !drained {
        tx.rollback().await?;
        return Ok(None);
    }
    tx.batch_execute(&format!("TRUNCATE {log}")).await?;
    tx.commit().await?;
    Ok(Some(rows as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_actions() {
        let opt = |v: &str| vec![(ACTION_OPTION.to_string(), v.to_string())];
        assert_eq!(requested(&[]), Ok(Requested::Auto));
        assert_eq!(requested(&opt("AUTO")), Ok(Requested::Auto));
        assert_eq!(requested(&opt("Incremental")), Ok(Requested::Incremental));
        assert_eq!(requested(&opt("full")), Ok(Requested::Full));
        let err = requested(&opt("fast")).unwrap_err();
        assert!(err.contains("'fast'") && err.contains("'incremental'"), "{err}");
    }

    #[test]
    fn cost_guard() {
        let cases = [
            (0, 0.0, false),
            (1, 0.0, true),
            (10, 100.0, false),
            (25, 100.0, false),
            (26, 100.0, true),
            (10_000, 10_000_000.0, false),
            (3_000_000, 10_000_000.0, true),
        ];
        for (changes, rows, full) in cases {
            assert_eq!(prefer_full(changes, rows), full, "{changes} changes, {rows} rows");
        }
    }
}
