//! The refresh of a table refreshed incrementally (engine::postgres::incremental). Unlike the
//! one-statement refresh of a FULL table (refresh.rs), it is a REPEATABLE READ transaction of
//! several statements: the changes counted, the changes applied and the snapshot recorded as
//! applied must all be one snapshot. So the table's refresh lock is taken before the
//! transaction, at session level: a snapshot taken before waiting for the lock would miss what
//! the previous refresh committed, and apply its changes a second time.
//!
//! Its history row is written as EXECUTING first (in its own statement, before the snapshot),
//! then turned into the outcome by the transaction. In the transaction: reload the table; check
//! that the owner may still read the sources; copy what sources captured from the WAL changed
//! in batches the snapshot does not see (engine::postgres::incremental::collect::fetch_gap: batches
//! forgotten meanwhile make the transaction start again); count what the sources logged since
//! the applied snapshot;
//! recompute instead when a source was truncated, the table has no applied snapshot, or the cost
//! guard says so (engine::postgres::incremental::prefer_full); else apply the changes as the owner
//! (analyzing first a log full of changes that has no planner statistics yet:
//! engine::postgres::incremental::analyze_logs), or record NO_DATA when there were none; record the new
//! applied snapshot and the history row (action and changes). After the commit, the logged rows
//! every reader has applied are discarded (engine::postgres::incremental::discard_applied: a log that
//! nobody needs any more is truncated). (Partitioned tables are never incremental: their
//! refreshes replace partitions.)

use tokio_postgres::IsolationLevel;
use tokio_postgres::types::Type;

use crate::backend::Pooled;
use crate::catalog::{self, DtRow, lock_for_refresh, unlock_refresh};
use crate::core::{Error, RefreshAction};
use crate::engine;
use crate::engine::postgres::PostgresEngine;
use crate::engine::postgres::incremental::{self, capture, collect};
use crate::engine::{Outcome, RefreshJob};

impl PostgresEngine {
    /// Refreshes `dt` (loaded as INCREMENTAL) and records it; see the module's doc.
    pub(in crate::engine::postgres) async fn incremental_refresh(
        &self,
        client: &mut Pooled,
        dt: &DtRow,
        job: &RefreshJob<'_>,
    ) -> Result<Outcome, Error> {
        if !lock_for_refresh(client, dt.id, job.trigger).await? {
            return Ok(Outcome::Locked);
        }
        if self.capture() == collect::Method::Wal {
            // Everything committed so far is brought into the logs first: the transaction then
            // copies only what committed since (collect::fetch_gap), little.
            if let Err(e) = collect::sync(client).await {
                unlock_refresh(client, dt.id).await;
                return Err(e.into());
            }
        }
        // Shown as running from now on; the transaction turns the row into its outcome.
        if let Err(e) = catalog::record_refresh(&**client, &job.row(dt, "EXECUTING")).await {
            unlock_refresh(client, dt.id).await;
            return Err(e.into());
        }
        let result = match self.incremental_transaction(client, dt, job).await {
            // A REPEATABLE READ transaction may meet a concurrent update; it is run again.
            Err(Error::Postgres { code, message, .. }) if code == "40001" || code == "40P01" => {
                tracing::warn!(table = %dt.name, code, message, "the refresh's transaction met a concurrent update; it starts again");
                Ok((Outcome::Stale, Vec::new()))
            }
            r => r,
        };
        if unlock_refresh(client, dt.id).await {
            client.discard_on_drop(false);
        }
        let (outcome, sources) = result?;
        if let Err(e) = incremental::discard_applied(client, &sources).await {
            // The next refresh tries again; until then the log only grows.
            tracing::warn!(table = %dt.name, error = %e, "discarding applied changes");
        }
        Ok(outcome)
    }

    /// The refresh transaction: the outcome, and the sources whose logs may be cleaned.
    async fn incremental_transaction(
        &self,
        client: &mut Pooled,
        loaded: &DtRow,
        job: &RefreshJob<'_>,
    ) -> Result<(Outcome, Vec<capture::SourceTable>), Error> {
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .start()
            .await?;
        // The job id names the connection (catalog::cancel_orphaned_refreshes). The statements
        // before the apply, and the apply, read little, but the planner costs them by the
        // sources' size: JIT would compile them (5-11 ms each in bench/incremental.sh); a full
        // recompute turns it back on. The data's time is the transaction's. With the table
        // loaded again and its applied snapshot: three statements pipelined, one round trip
        // (the refresh's fixed work is mostly round trips).
        let name = format!("dyngate:{}", job.job_id);
        let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] = [(&name, Type::TEXT)];
        let (settings, dt, applied) = tokio::try_join!(
            tx.query_typed_one(
                "SELECT set_config('application_name', $1, true), set_config('jit', 'off', true), now()::text",
                &params,
            ),
            catalog::load_by_id(&tx, loaded.id),
            incremental::applied_snapshot(&tx, loaded.id),
        )?;
        let data_time: String = settings.get(2);
        let Some(dt) = dt else {
            return Err(Error::NotFound(loaded.name.to_string()));
        };
        if dt.altered_at != loaded.altered_at {
            return Ok((Outcome::Stale, Vec::new()));
        }
        let target = dt.name.quoted();
        let query = dt.refresh_query();
        let mut sources = Vec::new();
        let mut changes = None;
        let mut unanalyzed = Vec::new();
        let mut action = RefreshAction::Full;
        // Planned again from the recorded query (it was planned when recorded).
        let plan = (dt.incremental()).then(|| incremental::analyze::analyze(query).ok()).flatten();
        // The owner must still be allowed to read the sources: the changes are read from logs
        // the owner may read, and no change at all reads nothing. Planning the query (no row
        // fetched) checks it, with PostgreSQL's own error. Pipelined with the read of the sources:
        // both are awaited, and the check's error is the one returned when it fails (the read,
        // sent after it in the same transaction, then fails with 25P02; try_join! would return
        // whichever error it polled first).
        let view = dt.query_view.as_deref().filter(|_| applied.is_some() && plan.is_some());
        let probe = format!("SELECT * FROM ({query}) AS dyngate_query LIMIT 0");
        let (checked, found) = tokio::join!(engine::postgres::run_as::run_as(&tx, &dt.owner, &probe), async {
            match view {
                Some(view) => capture::sources_of(&tx, view).await.map(Some),
                None => Ok(None),
            }
        });
        checked?;
        let found = found?;
        if let (Some(applied), Some(Ok(s))) = (&applied, found) {
            sources = s;
            let truncated = match collect::fetch_gap(&tx, &self.pool, &mut sources, &dt.owner, applied).await? {
                collect::Peeked::Gap => {
                    tracing::info!(table = %dt.name, "the changes after this refresh's snapshot are not all remembered; it starts again");
                    return Ok((Outcome::Stale, Vec::new()));
                }
                collect::Peeked::Ready { truncated } => truncated,
            };
            let pending = incremental::pending(&tx, &mut sources, applied).await?;
            changes = Some(pending.changes);
            unanalyzed = pending.unanalyzed;
            action = if truncated || pending.truncated || incremental::prefer_full(pending.changes, pending.source_rows) {
                RefreshAction::Full
            } else if pending.changes == 0 {
                RefreshAction::NoData
            } else {
                RefreshAction::Incremental
            };
        }
        // How the changes are applied; a table whose layout must be made again is recomputed.
        let mut shape = None;
        if let (RefreshAction::Incremental, Some(plan), Some(view)) = (action, &plan, &dt.query_view) {
            shape = incremental::shape(&tx, plan, dt.id, &target, view, &sources).await?;
            if shape.is_none() {
                action = RefreshAction::Full;
            }
        }
        let rows = match (action, &plan, &shape) {
            (RefreshAction::NoData, ..) => 0,
            (RefreshAction::Incremental, Some(plan), Some(shape)) => {
                incremental::analyze_logs(&tx, &unanalyzed).await?;
                let applied = applied.as_deref().unwrap_or_default();
                incremental::apply(&tx, &dt.owner, plan, dt.id, &sources, applied, &target, shape)
                    .await
                    .map_err(|e| match e {
                        incremental::ApplyError::Postgres(e) => Error::from(e),
                        incremental::ApplyError::Plan(why) => {
                            tracing::error!(table = %dt.name, why, "incremental plan");
                            Error::Internal
                        }
                    })?
            }
            _ => {
                tx.batch_execute("SET LOCAL jit TO DEFAULT").await?;
                let rows = engine::postgres::run_as::full_refresh(&tx, &dt.owner, &target, query).await?.rows;
                // The state is made after the table's rows: a table that is its own state gets
                // its key index on rows already unique by the keys.
                if let (Some(plan), Some(view)) = (&plan, &dt.query_view) {
                    let sources = capture::sources_of(&tx, view).await?.unwrap_or_default();
                    let query_columns = incremental::query_columns(&tx, view).await?;
                    incremental::refill_state(&tx, &dt.owner, plan, dt.id, &query_columns, &target, &sources).await?;
                }
                rows
            }
        };
        let outcome = catalog::RefreshRow {
            ended: true,
            action: Some(action.name()),
            data_time: Some(&data_time),
            rows: Some(rows as i64),
            changes,
            ..job.row(&dt, "SUCCEEDED")
        };
        // Pipelined: one round trip.
        tokio::try_join!(
            incremental::mark_applied(&tx, dt.id, dt.incremental()),
            catalog::record_refresh(&tx, &outcome),
        )?;
        tx.commit().await?;
        Ok((Outcome::Done(rows as i64), sources))
    }
}
