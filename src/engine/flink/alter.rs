//! ALTER DYNAMIC TABLE ... AS, and SET FRESHNESS across modes, for tables on the flink engine.
//!
//! ALTER ... AS may only append columns (as on the PostgreSQL engine; the query is described in
//! Flink to know its columns).
//! - FULL: the new query's rows are computed by a batch job into a staging table first; one
//!   transaction then adds the columns, replaces the rows and records the query. A suspended
//!   table only records the query (its new columns stay empty until its next refresh).
//! - CONTINUOUS (Flink's rule): suspend, change, start fresh. The job is stopped with a
//!   savepoint; one transaction keeps the rows aside, empties the table, adds the columns and
//!   records the new query; the new job starts without state and recomputes the table. If it
//!   cannot start, everything is rolled back: the columns, the rows and the query as they were,
//!   and the old job restarted from its savepoint. The key (grouping columns) must stay the same.
//!
//! SET FRESHNESS may move a table between the modes, which Flink cannot do: to FULL, the job is
//! stopped with a savepoint and the schedule registered; to CONTINUOUS, the schedule goes, the
//! table is emptied and a job started fresh (its key and column names checked before anything
//! changes).

use tokio_postgres::Transaction;

use super::FlinkEngine;
use crate::catalog::{self, DtRow, FlinkColumn};
use crate::core::names::new_job_id;
use crate::core::{Error, RefreshMode, Requester, Status, quote_ident, rules};
use crate::engine;
use crate::engine::flink::client::types::{LogicalType, pg_ddl_type};
use crate::engine::flink::full::StageGuard;
use crate::engine::flink::tables;

/// The columns `proposed` adds to `current`; 42P16 unless it only appends.
fn appended(current: &[FlinkColumn], proposed: &[FlinkColumn]) -> Result<Vec<FlinkColumn>, Error> {
    let pairs = |cols: &[FlinkColumn]| -> Vec<(String, String)> { cols.iter().map(|c| (c.name.clone(), c.flink_type.clone())).collect() };
    rules::appended_columns(&pairs(current), &pairs(proposed)).map_err(|why| Error::InvalidDefinition(format!("{why}.")))?;
    Ok(proposed[current.len()..].to_vec())
}

/// Adds `added` to the table, as its owner.
async fn add_columns(tx: &Transaction<'_>, dt: &DtRow, added: &[FlinkColumn]) -> Result<(), Error> {
    for c in added {
        let ty = pg_ddl_type(&LogicalType::from_sql(&c.flink_type));
        let sql = format!("ALTER TABLE {} ADD COLUMN {} {ty}", dt.name.quoted(), quote_ident(&c.name));
        engine::postgres::run_as::run_as(tx, &dt.owner, &sql).await?;
    }
    Ok(())
}

/// Records the query and its columns.
async fn set_flink_query(tx: &Transaction<'_>, id: i64, query: &str, columns: &[FlinkColumn]) -> Result<(), Error> {
    catalog::set_query(tx, id, query).await?;
    let stored = serde_json::to_string(columns).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "UPDATE dyngate.dynamic_table SET flink_columns = $2::text::jsonb WHERE id = $1",
        &[&id, &stored],
    )
    .await?;
    Ok(())
}

/// Locks the table against refreshes and other changes, and checks that it is still as loaded.
async fn lock_unchanged(tx: &Transaction<'_>, dt: &DtRow) -> Result<(), Error> {
    catalog::lock_table(tx, dt.id).await?;
    let cur = catalog::load_by_id(tx, dt.id)
        .await?
        .ok_or_else(|| Error::NotFound(dt.name.to_string()))?;
    if cur.altered_at != dt.altered_at {
        return Err(Error::WrongState(format!(
            "Dynamic table {} changed concurrently; try again.",
            dt.name
        )));
    }
    Ok(())
}

impl FlinkEngine {
    /// In SET FRESHNESS's transaction, for a Flink table becoming FULL (its job was stopped with
    /// `savepoint`).
    pub(crate) async fn to_full_in(&self, tx: &Transaction<'_>, dt: &DtRow, savepoint: Option<&str>) -> Result<(), Error> {
        tx.execute(
            "UPDATE dyngate.dynamic_table
                SET flink_job_id = NULL, flink_job_state = NULL,
                    savepoint_path = coalesce($2, savepoint_path),
                    savepoint_query = CASE WHEN $2 IS NULL THEN savepoint_query ELSE query END,
                    refresh_action_reason = 'refreshed by Flink batch jobs, which recompute the query'
              WHERE id = $1",
            &[&dt.id, &savepoint],
        )
        .await?;
        Ok(())
    }

    /// ALTER ... AS of a table on the flink engine; see the module's doc.
    pub(crate) async fn alter_query_flink(&self, who: &Requester<'_>, dt: &DtRow, query: &str) -> Result<Vec<String>, Error> {
        let proposed = self.describe_query(query).await?;
        if dt.refresh_mode == RefreshMode::Continuous {
            return self.alter_continuous(who, dt, query, proposed).await;
        }
        let added = appended(&dt.flink_columns, &proposed)?;
        let activated = dt.status == Status::Activated;
        let mut guard = None;
        let fill = if activated {
            let fill = self
                .stage_fill(query, proposed.clone(), &format!("dyngate:{}:alter", dt.name))
                .await?;
            guard = Some(StageGuard {
                pool: self.pool.clone(),
                stage: Some(fill.stage.clone()),
            });
            Some(fill)
        } else {
            None
        };
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        lock_unchanged(&tx, dt).await?;
        add_columns(&tx, dt, &added).await?;
        set_flink_query(&tx, dt.id, query, &proposed).await?;
        let mut notices = Vec::new();
        if let Some(fill) = &fill {
            let target = dt.name.quoted();
            let data_time: String = tx.query_one("SELECT now()::text", &[]).await?.get(0);
            tx.execute(&format!("DELETE FROM {target}"), &[]).await?;
            let rows = tx
                .execute(&format!("INSERT INTO {target} SELECT * FROM {}", fill.stage), &[])
                .await?;
            tx.batch_execute(&format!("DROP TABLE {}", fill.stage)).await?;
            let job_id = new_job_id();
            catalog::record_refresh(
                &tx,
                &catalog::RefreshRow {
                    ended: true,
                    action: Some("FULL"),
                    data_time: Some(&data_time),
                    rows: Some(rows as i64),
                    ..catalog::RefreshRow::of(dt, &job_id, "MANUAL", "SUCCEEDED")
                },
            )
            .await?;
            self.record_engine_job(&tx, dt.id, &job_id, fill.job.as_str()).await?;
        } else if !added.is_empty() {
            notices.push(format!(
                "dynamic table {} is suspended: the new columns stay empty until it is resumed and refreshed",
                dt.name
            ));
        }
        tx.commit().await?;
        if let Some(g) = guard.as_mut() {
            g.stage = None;
        }
        tracing::info!(table = %dt.name, by = who.user, added = added.len(), "dynamic table query replaced");
        Ok(notices)
    }

    /// The sink columns a continuously maintained table has with `proposed` as its query's
    /// columns: the table's own names, then the appended ones (names PostgreSQL reads unquoted).
    async fn continuous_columns(&self, dt: &DtRow, proposed: &[FlinkColumn]) -> Result<(Vec<FlinkColumn>, Vec<FlinkColumn>), Error> {
        let client = self.pool.get().await?;
        let existing = catalog::columns_of(&*client, &dt.name.quoted()).await?;
        let current: Vec<FlinkColumn> = dt.flink_columns.clone();
        // Compared by type and position: the table's names may be declared ones.
        let renamed: Vec<FlinkColumn> = proposed
            .iter()
            .zip(current.iter().map(|c| c.name.clone()).chain(std::iter::repeat(String::new())))
            .map(|(p, n)| FlinkColumn {
                name: if n.is_empty() { p.name.clone() } else { n },
                flink_type: p.flink_type.clone(),
            })
            .collect();
        appended(&current, &renamed)?;
        let mut columns = Vec::with_capacity(renamed.len());
        for (i, c) in renamed.iter().enumerate() {
            let name = match existing.get(i) {
                Some((n, _)) if i < current.len() => n.clone(),
                _ => tables::plain_column_name(&c.name).map_err(Error::InvalidDefinition)?,
            };
            columns.push(FlinkColumn {
                name,
                flink_type: c.flink_type.clone(),
            });
        }
        let added = columns[current.len()..].to_vec();
        Ok((columns, added))
    }

    async fn alter_continuous(
        &self,
        who: &Requester<'_>,
        dt: &DtRow,
        query: &str,
        proposed: Vec<FlinkColumn>,
    ) -> Result<Vec<String>, Error> {
        let (columns, added) = self.continuous_columns(dt, &proposed).await?;
        let old_key = Self::continuous_of(dt)?.key;
        let new_key = tables::upsert_key(query, &columns)
            .map_err(Error::InvalidDefinition)?
            .unwrap_or_default();
        if new_key != old_key {
            return Err(Error::InvalidDefinition(format!(
                "the new query's key ({}) differs from the table's ({}); ALTER DYNAMIC TABLE ... AS keeps a continuously maintained table's key",
                new_key.join(", "),
                old_key.join(", ")
            )));
        }
        let activated = dt.status == Status::Activated && dt.flink_job_id.is_some();
        // Suspend: the savepoint lets a failed change go back.
        let savepoint = if activated { self.stop_job(dt).await? } else { None };
        let keep = format!("dyngate.{}", quote_ident(&format!("flink_keep_{}", dt.id)));
        let changed = async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            lock_unchanged(&tx, dt).await?;
            let target = dt.name.quoted();
            tx.batch_execute(&format!(
                "DROP TABLE IF EXISTS {keep}; CREATE TABLE {keep} AS SELECT * FROM {target}; DELETE FROM {target}"
            ))
            .await?;
            add_columns(&tx, dt, &added).await?;
            set_flink_query(&tx, dt.id, query, &columns).await?;
            tx.execute(
                "UPDATE dyngate.dynamic_table
                    SET flink_job_id = NULL, flink_job_state = NULL,
                        savepoint_path = coalesce($2, savepoint_path),
                        savepoint_query = CASE WHEN $2 IS NULL THEN savepoint_query ELSE $3 END
                  WHERE id = $1",
                &[&dt.id, &savepoint, &dt.query],
            )
            .await?;
            tx.commit().await?;
            Ok::<_, Error>(())
        }
        .await;
        if let Err(e) = changed {
            if activated {
                self.restart_after_failed_alter(dt).await;
            }
            return Err(e);
        }
        let Some(now) = catalog::load_by_id(&*self.pool.get().await?, dt.id).await? else {
            return Err(Error::NotFound(dt.name.to_string()));
        };
        if activated && let Err(e) = self.start_fresh(&now).await {
            // Back to the former query, columns and rows, and the old job from its savepoint.
            self.roll_back_alter(dt, &added, &keep).await;
            return Err(e);
        }
        if let Ok(client) = self.pool.get().await {
            client.batch_execute(&format!("DROP TABLE IF EXISTS {keep}")).await.ok();
        }
        tracing::info!(table = %dt.name, by = who.user, added = added.len(), "dynamic table query replaced; its job started fresh");
        let notices = if activated {
            vec![format!(
                "the job of {} started fresh with the new query: the table fills again from its sources",
                dt.name
            )]
        } else {
            vec![format!(
                "dynamic table {} is suspended: its job starts fresh with the new query on RESUME",
                dt.name
            )]
        };
        Ok(notices)
    }

    /// Undoes a continuous ALTER ... AS whose new job did not start.
    async fn roll_back_alter(&self, old: &DtRow, added: &[FlinkColumn], keep: &str) {
        let undone = async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let target = old.name.quoted();
            tx.batch_execute(&format!("DELETE FROM {target}")).await?;
            for c in added {
                let sql = format!("ALTER TABLE {target} DROP COLUMN {}", quote_ident(&c.name));
                engine::postgres::run_as::run_as(&tx, &old.owner, &sql).await?;
            }
            tx.batch_execute(&format!("INSERT INTO {target} SELECT * FROM {keep}; DROP TABLE {keep}"))
                .await?;
            set_flink_query(&tx, old.id, &old.query, &old.flink_columns).await?;
            tx.commit().await?;
            Ok::<_, Error>(())
        }
        .await;
        match undone {
            Ok(()) => self.restart_after_failed_alter(old).await,
            Err(e) => tracing::error!(table = %old.name, error = %e, "rolling back a failed ALTER ... AS"),
        }
    }

    /// Restarts a table's former job from its savepoint after a failed change.
    pub(crate) async fn restart_after_failed_alter(&self, old: &DtRow) {
        let reloaded = match self.pool.get().await {
            Ok(c) => catalog::load_by_id(&*c, old.id).await.ok().flatten(),
            Err(_) => None,
        };
        let Some(reloaded) = reloaded else { return };
        if let Err(e) = self.resume_job(&reloaded, &reloaded.refresh_options).await {
            tracing::error!(table = %old.name, error = %e, "restarting the former job after a failed ALTER ... AS");
        }
    }

    /// Before SET FRESHNESS moves a Flink table to CONTINUOUS: its sink columns, checked (names
    /// PostgreSQL reads unquoted, a key) before anything changes.
    pub(crate) async fn plan_continuous(&self, dt: &DtRow) -> Result<Vec<FlinkColumn>, Error> {
        let client = self.pool.get().await?;
        let names: Vec<String> = catalog::columns_of(&*client, &dt.name.quoted())
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let columns = tables::sink_columns(&names, &dt.flink_columns).map_err(Error::InvalidDefinition)?;
        tables::upsert_key(&dt.query, &columns).map_err(Error::InvalidDefinition)?;
        Ok(columns)
    }

    /// In SET FRESHNESS's transaction, for a Flink table becoming CONTINUOUS: the sink columns
    /// recorded, the key's unique index, the table emptied (its job starts fresh after the
    /// commit).
    pub(crate) async fn to_continuous_in(&self, tx: &Transaction<'_>, dt: &DtRow, columns: &[FlinkColumn]) -> Result<(), Error> {
        let target = dt.name.quoted();
        let key = tables::upsert_key(&dt.query, columns)
            .map_err(Error::InvalidDefinition)?
            .unwrap_or_default();
        if !key.is_empty() {
            let cols: Vec<String> = key.iter().map(|k| quote_ident(k)).collect();
            let index = quote_ident(&format!("dyngate_key_{}", dt.id));
            let sql = format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {target} ({}) NULLS NOT DISTINCT",
                cols.join(", ")
            );
            engine::postgres::run_as::run_as(tx, &dt.owner, &sql).await?;
        }
        let stored = serde_json::to_string(columns).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "UPDATE dyngate.dynamic_table SET flink_columns = $2::text::jsonb, savepoint_path = NULL, savepoint_query = NULL,
                    refresh_action_reason = 'kept up to date by a streaming Flink job' WHERE id = $1",
            &[&dt.id, &stored],
        )
        .await?;
        tx.batch_execute(&format!("DELETE FROM {target}")).await?;
        Ok(())
    }
}
