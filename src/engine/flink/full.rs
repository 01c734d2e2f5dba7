//! Dynamic tables on the flink engine (`WITH ('engine' = 'flink')`, or `--engine flink`): the
//! table lives in the backing PostgreSQL like any other, Flink computes its rows
//! (engine::flink::tables has the design). What differs from the PostgreSQL engine is here:
//! CREATE's first fill and each FULL refresh run as a Flink batch job into a staging table, and
//! one PostgreSQL transaction then replaces the rows.
//!
//! CREATE: the query is described in Flink (a temporary view, nothing runs) to get its columns;
//! a staging table is created and committed (Flink writes over its own connection), the batch job
//! fills it, and once it has FINISHED the CREATE transaction creates the table as the requester,
//! moves the staged rows in and records everything. A failure anywhere leaves nothing behind: no
//! table, no catalog row, no staging table.
//!
//! A refresh takes the table's refresh lock at session level (it spans the job), writes its
//! EXECUTING history row, refills the staging table through a batch job (the row gets the Flink
//! job id as `engine_job_id`), and replaces the table's rows (or one partition's) in one
//! transaction with the SUCCEEDED row.
//!
//! Flink objects are shared by every user of the gateway (sql::flink): a table on the flink
//! engine reads what its query names with the credentials written in those objects' options, not
//! with its owner's PostgreSQL privileges. The rows are written by the gateway's service account.
//!
//! Not yet on this engine: CONTINUOUS mode (streaming jobs), ALTER ... AS, and incremental
//! refresh (`'refresh.action' = 'incremental'`); each is refused with 0A000.

use std::time::{Duration, Instant};

use tokio_postgres::Transaction;

use super::FlinkEngine;
use crate::backend::Pooled;
use crate::catalog::{self, DtRow, FlinkColumn, lock_for_refresh};
use crate::core::names::random_hex;
use crate::core::{Error, QualifiedName, RefreshAction, Trigger, quote_ident};
use crate::engine;
use crate::engine::flink::client::FlinkError;
use crate::engine::flink::client::gateway::JobId;
use crate::engine::flink::runtime::EngineError;
use crate::engine::flink::tables;
use crate::engine::postgres::incremental;
use crate::engine::{NewTable, Outcome, RefreshJob};

/// What a Flink first fill left for CREATE's transaction.
pub struct FlinkFill {
    pub columns: Vec<FlinkColumn>,
    /// The staging table holding the rows (quoted, schema-qualified).
    pub stage: String,
    pub job: JobId,
}

/// What the flink engine does not take (yet), as 0A000.
pub(crate) fn check_options(options: &[(String, String)]) -> Result<(), Error> {
    if options
        .iter()
        .any(|(k, v)| k == incremental::ACTION_OPTION && v.eq_ignore_ascii_case("incremental"))
    {
        return Err(Error::Unsupported(
            "the flink engine refreshes fully: 'refresh.action' = 'incremental' is for the postgres engine".into(),
        ));
    }
    Ok(())
}

/// In CREATE's transaction: the table, created as the requester with the declared columns, else
/// with `described` (the query's, as Flink types them); its quoted name.
pub(crate) async fn create_table(tx: &Transaction<'_>, new: &NewTable<'_>, described: &[FlinkColumn]) -> Result<String, Error> {
    let target = new.name.quoted();
    let columns = new.columns.map_or_else(|| tables::pg_columns(described), str::to_string);
    engine::postgres::run_as::run_as(tx, new.owner, &format!("CREATE TABLE {target} ({columns})")).await?;
    Ok(target)
}

impl FlinkEngine {
    /// What the flink engine does not take (yet), as 0A000.
    /// The query's columns, as Flink types them (described, not run).
    pub(crate) async fn describe_query(&self, query: &str) -> Result<Vec<FlinkColumn>, Error> {
        let engine = self.runtime()?;
        engine.cluster()?;
        let client = self.pool.get().await?;
        let session = engine.session(&*client).await?;
        let described = engine.describe(&session, query).await?;
        tables::table_columns(&described).map_err(Error::InvalidDefinition)
    }

    /// Before CREATE's transaction: the query's columns from Flink, and its rows in a committed
    /// staging table, written by a batch job that has FINISHED.
    pub(crate) async fn first_fill(&self, query: &str, name: &QualifiedName) -> Result<FlinkFill, Error> {
        let columns = self.describe_query(query).await?;
        self.stage_fill(query, columns, &format!("dyngate:{name}:create")).await
    }

    /// `query`'s rows (of `columns`) in a new committed staging table, written by a batch job
    /// named `job_name` that has FINISHED. A failure leaves no staging table.
    pub(crate) async fn stage_fill(&self, query: &str, columns: Vec<FlinkColumn>, job_name: &str) -> Result<FlinkFill, Error> {
        let engine = self.runtime()?;
        let client = self.pool.get().await?;
        let session = engine.session(&*client).await?;
        let stage = format!("dyngate.{}", quote_ident(&format!("flink_fill_{}", random_hex(6))));
        client
            .batch_execute(&format!("CREATE UNLOGGED TABLE {stage} ({})", tables::stage_columns(&columns)))
            .await?;
        let filled = async {
            let job = engine.submit_batch(&session, &columns, &stage, query, &[], job_name).await?;
            engine.wait_finished(&job).await?;
            Ok::<_, Error>(job)
        }
        .await;
        match filled {
            Ok(job) => Ok(FlinkFill { columns, stage, job }),
            Err(e) => {
                client.batch_execute(&format!("DROP TABLE IF EXISTS {stage}")).await.ok();
                Err(e)
            }
        }
    }

    /// In CREATE's transaction: the table created as the requester (with the declared columns,
    /// else the query's), the staged rows moved in (by position), the catalog row marked as
    /// Flink's. Returns the rows.
    pub(crate) async fn create_in(&self, tx: &Transaction<'_>, new: &NewTable<'_>, id: i64, fill: &FlinkFill) -> Result<u64, Error> {
        let target = create_table(tx, new, &fill.columns).await?;
        let rows = tx
            .execute(&format!("INSERT INTO {target} SELECT * FROM {}", fill.stage), &[])
            .await?;
        tx.batch_execute(&format!("DROP TABLE {}", fill.stage)).await?;
        let columns = serde_json::to_string(&fill.columns).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "UPDATE dyngate.dynamic_table
                SET engine = 'flink', flink_columns = $2::text::jsonb, refresh_action = 'FULL',
                    refresh_action_reason = 'refreshed by Flink batch jobs, which recompute the query'
              WHERE id = $1",
            &[&id, &columns],
        )
        .await?;
        Ok(rows)
    }

    /// Records the engine's job of a history row, and where it ran.
    pub(crate) async fn record_engine_job(
        &self,
        c: &impl tokio_postgres::GenericClient,
        dt_id: i64,
        job_id: &str,
        engine_job: &str,
    ) -> Result<(), tokio_postgres::Error> {
        // Jobs are only started by a gateway with a Flink engine.
        let Ok(runtime) = self.runtime() else { return Ok(()) };
        c.execute(
            "UPDATE dyngate.refresh SET engine_job_id = $3, cluster_info = $4::text::jsonb WHERE dynamic_table_id = $1 AND job_id = $2",
            &[&dt_id, &job_id, &engine_job, &runtime.cluster_info().to_string()],
        )
        .await
        .map(drop)
    }

    /// One refresh of a table on the flink engine; see the module's doc.
    pub(super) async fn refresh_full(&self, client: &mut Pooled, dt: &DtRow, job: &RefreshJob<'_>) -> Result<Outcome, Error> {
        if !lock_for_refresh(client, dt.id, job.trigger).await? {
            return Ok(Outcome::Locked);
        }
        // The connection names the refresh while it runs: the check for refreshes orphaned by a
        // killed gateway (catalog::cancel_orphaned_refreshes) sees that this one is alive.
        let named = client
            .execute(
                "SELECT set_config('application_name', $1, false)",
                &[&format!("dyngate:{}", job.job_id)],
            )
            .await;
        let result = match named {
            Ok(_) => self.refresh_locked(client, dt, job).await,
            Err(e) => Err(e.into()),
        };
        let released = client
            .batch_execute("RESET application_name; SELECT pg_advisory_unlock_all()")
            .await;
        if released.is_ok() {
            client.discard_on_drop(false);
        }
        result
    }

    async fn refresh_locked(&self, client: &mut Pooled, loaded: &DtRow, run: &RefreshJob<'_>) -> Result<Outcome, Error> {
        let (engine, spec) = (self.runtime()?, run.partition);
        // What the table is now: it may have been altered while this refresh waited.
        let Some(dt) = catalog::load_by_id(&**client, loaded.id).await? else {
            return Err(Error::NotFound(loaded.name.to_string()));
        };
        if dt.altered_at != loaded.altered_at {
            return Ok(Outcome::Stale);
        }
        catalog::record_refresh(&**client, &run.row(&dt, "EXECUTING")).await?;
        let stage = tables::stage_table(dt.id);
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {stage}; CREATE UNLOGGED TABLE {stage} ({})",
                tables::stage_columns(&dt.flink_columns)
            ))
            .await?;
        let data_time: String = client.query_one("SELECT now()::text", &[]).await?.get(0);
        let session = self.session_with_retry(client, &dt, run.trigger).await?;
        let job = engine
            .submit_batch(
                &session,
                &dt.flink_columns,
                &stage,
                &dt.query,
                spec,
                &format!("dyngate:{}:{}", dt.name, run.job_id),
            )
            .await?;
        self.record_engine_job(&**client, dt.id, run.job_id, job.as_str()).await?;
        tracing::info!(table = %dt.name, job_id = run.job_id, flink_job = %job, "Flink refresh job submitted");
        engine.wait_finished(&job).await?;

        let tx = client.transaction().await?;
        let target = dt.name.quoted();
        let filter: Vec<String> = spec
            .iter()
            .map(|(c, v)| format!("{} = {}", quote_ident(c), crate::core::quote_literal(v)))
            .collect();
        let filter = if filter.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", filter.join(" AND "))
        };
        tx.execute(&format!("DELETE FROM {target}{filter}"), &[]).await?;
        let rows = tx.execute(&format!("INSERT INTO {target} SELECT * FROM {stage}"), &[]).await?;
        tx.batch_execute(&format!("TRUNCATE {stage}")).await?;
        catalog::record_refresh(
            &tx,
            &catalog::RefreshRow {
                ended: true,
                action: Some(RefreshAction::Full.name()),
                data_time: Some(&data_time),
                rows: Some(rows as i64),
                ..run.row(&dt, "SUCCEEDED")
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Outcome::Done(rows as i64))
    }
}

/// Drops a Flink fill's staging table when the statement ends without a transaction that took it
/// (an error, or the statement's future dropped).
pub struct StageGuard {
    pub pool: crate::backend::ServicePool,
    pub stage: Option<String>,
}

impl Drop for StageGuard {
    fn drop(&mut self) {
        if let Some(stage) = self.stage.take() {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                if let Ok(c) = pool.get().await {
                    c.batch_execute(&format!("DROP TABLE IF EXISTS {stage}")).await.ok();
                }
            });
        }
    }
}

impl FlinkEngine {
    /// The engine's session for a refresh. A scheduled refresh that finds Flink unreachable tries
    /// again with a backoff (1 s doubling to 30 s) for up to half its freshness (at most 10
    /// minutes): a Flink restart does not cost a slot. A refresh someone waits for fails at once.
    async fn session_with_retry(
        &self,
        client: &Pooled,
        dt: &DtRow,
        trigger: Trigger,
    ) -> Result<std::sync::Arc<crate::engine::flink::client::gateway::Session>, Error> {
        let engine = self.runtime()?;
        let patience = Duration::from_secs((dt.freshness_seconds() as u64 / 2).min(600));
        let give_up = Instant::now() + patience;
        let mut delay = Duration::from_secs(1);
        loop {
            match engine.session(&**client).await {
                Err(EngineError::Flink(e @ (FlinkError::Unreachable(_) | FlinkError::SessionNotFound(_))))
                    if matches!(trigger, Trigger::Scheduled { .. }) && Instant::now() + delay < give_up =>
                {
                    tracing::warn!(table = %dt.name, error = %e, retry_in = ?delay, "Flink is unreachable for a scheduled refresh; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                r => return Ok(r?),
            }
        }
    }
}
