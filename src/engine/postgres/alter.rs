//! The PostgreSQL engine's side of ALTER: a new query (ALTER ... AS), and a new refresh action
//! (SET / RESET of `refresh.action`).
//!
//! ALTER ... AS may only append columns ([`rules::appended_columns`]); anything else is refused
//! and leaves the table as it was. One transaction does it all, under the table's refresh lock:
//! bind the new query, compare its columns with the current query's, add the new columns to the
//! table (nullable), record the query, and (for an ACTIVATED table) refresh with it, so the
//! content always matches the definition. Flink instead changes only the catalog and leaves the
//! new columns empty until the next run; a failing new query would then surface only later. If
//! the refresh fails, the whole ALTER is undone and the user gets PostgreSQL's error.

use tokio_postgres::Transaction;

use super::incremental::{self, collect::Method};
use super::{not_incremental, run_as};
use crate::backend::ServicePool;
use crate::catalog::{self, DtRow};
use crate::core::names::new_job_id;
use crate::core::{Error, RefreshAction, Requester, Status, quote_ident, rules};

/// ALTER ... AS of `dt` (see the module's doc); notices.
pub async fn alter_query(
    pool: &ServicePool,
    who: &Requester<'_>,
    dt: &DtRow,
    query: &str,
    search_path: &str,
    capture: Method,
) -> Result<Vec<String>, Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    catalog::lock_table(&tx, dt.id).await?;
    // Reloaded under the lock: a concurrent ALTER may have changed it.
    let Some(dt) = catalog::load_by_id(&tx, dt.id).await? else {
        return Err(Error::NotFound(dt.name.to_string()));
    };
    let staged = format!("dt_{}_new", dt.id);
    let bound = run_as::bind_query(&tx, search_path, &staged, query).await?;
    // Compared with the current query's columns (its view); tables from before catalog
    // version 2 have none, and are compared with the table's own columns.
    let current = match &dt.query_view {
        Some(v) => catalog::columns_of(&tx, &format!("dyngate.{}", quote_ident(v))).await?,
        None => catalog::columns_of(&tx, &dt.name.quoted()).await?,
    };
    let proposed = catalog::columns_of(&tx, &format!("dyngate.{}", quote_ident(&staged))).await?;
    let added = rules::appended_columns(&current, &proposed).map_err(|why| Error::InvalidDefinition(format!("{why}.")))?;

    // Swap the views: the old one goes (telling the drop guard it is ours), the staged one
    // takes its place.
    tx.execute("SELECT set_config('dyngate.dropping', $1, true)", &[&dt.id.to_string()])
        .await?;
    if let Some(old) = &dt.query_view {
        run_as::unbind_query(&tx, old).await?;
    }
    let view = dt
        .query_view
        .clone()
        .unwrap_or_else(|| rules::query_view_name(&dt.name.schema, &dt.name.name, dt.id));
    tx.batch_execute(&format!(
        "ALTER VIEW dyngate.{} RENAME TO {}",
        quote_ident(&staged),
        quote_ident(&view)
    ))
    .await?;
    catalog::set_binding(&tx, dt.id, &view, &bound.resolved).await?;
    catalog::set_query(&tx, dt.id, query).await?;
    for (col, ty) in &added {
        // `ty` is PostgreSQL's own format_type output.
        let sql = format!("ALTER TABLE {} ADD COLUMN {} {ty}", dt.name.quoted(), quote_ident(col));
        run_as::run_as(&tx, &dt.owner, &sql).await?;
    }
    // The old query's key index may not fit the new query's groups (refill_state makes the
    // new one after the fill).
    incremental::drop_key_index(&tx, &dt.owner, dt.id, &dt.name.quoted()).await?;
    // Refreshed incrementally if the new query allows it (capture from before the refill).
    let requested = incremental::requested(&dt.option_pairs()).map_err(Error::InvalidOption)?;
    let decision = incremental::decide(&tx, &view, &bound.resolved, requested, !dt.partitioned_by.is_empty())
        .await?
        .map_err(|why| not_incremental(&dt.name, &why))?;
    incremental::prepare(&tx, &decision).await?;
    let activated = dt.status == Status::Activated;
    let mut notices = Vec::new();
    if activated {
        let job_id = new_job_id();
        let start = tx
            .query_one("SELECT now()::text, extract(epoch FROM clock_timestamp())::float8", &[])
            .await?;
        let (data_time, started_at): (String, f64) = (start.get(0), start.get(1));
        let done = run_as::full_refresh(&tx, &dt.owner, &dt.name.quoted(), &bound.resolved).await?;
        let refreshed = catalog::RefreshRow {
            started_at: Some(started_at),
            ended: true,
            action: Some(done.action.name()),
            data_time: Some(&data_time),
            rows: Some(done.rows as i64),
            ..catalog::RefreshRow::of(&dt, &job_id, "MANUAL", "SUCCEEDED")
        };
        catalog::record_refresh(&tx, &refreshed).await?;
    } else if !added.is_empty() {
        notices.push(format!(
            "dynamic table {} is suspended: the new columns stay empty until it is resumed and refreshed",
            dt.name
        ));
    }
    incremental::record(&tx, dt.id, &dt.name.quoted(), &decision, &dt.owner, activated, capture).await?;
    incremental::capture::remove_unused(&tx).await?;
    tx.commit().await?;
    tracing::info!(table = %dt.name, by = who.user, added = added.len(), action = %decision.action(), "dynamic table query replaced");
    Ok(notices)
}

/// In SET / RESET's transaction, with the options written: the refresh action they now ask for
/// (the next refresh is full; from then on, the action decided here). Notices.
pub async fn action_changed(tx: &Transaction<'_>, cur: &DtRow, capture: Method) -> Result<Vec<String>, Error> {
    let mut notices = Vec::new();
    let Some(view) = &cur.query_view else {
        return Ok(notices);
    };
    let requested = incremental::requested(&cur.option_pairs()).map_err(Error::InvalidOption)?;
    let decision = incremental::decide(tx, view, cur.refresh_query(), requested, !cur.partitioned_by.is_empty())
        .await?
        .map_err(|why| not_incremental(&cur.name, &why))?;
    incremental::record(tx, cur.id, &cur.name.quoted(), &decision, &cur.owner, false, capture).await?;
    incremental::capture::remove_unused(tx).await?;
    if decision.action() != cur.refresh_action {
        notices.push(format!(
            "dynamic table {} is now refreshed {}",
            cur.name,
            if decision.action() == RefreshAction::Incremental {
                "incrementally"
            } else {
                "fully"
            }
        ));
    }
    Ok(notices)
}
