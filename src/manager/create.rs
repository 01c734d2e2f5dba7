//! CREATE DYNAMIC TABLE: validate the freshness and mode, create and fill the table as the
//! requester, and record it, all in one transaction: if the first fill fails, nothing remains
//! (no table, no catalog row).

use crate::catalog::{self, NewDt};
use crate::core::EngineKind;
use crate::core::names::new_job_id;
use crate::core::{Error, QualifiedName, Requester};
use crate::core::{RefreshAction, Status};
use crate::core::{RefreshMode, quote_ident, quote_literal, rules};
use crate::engine;
use crate::engine::incremental;
use crate::manager::Manager;
use crate::manager::external;
use crate::scheduler::Target;
use crate::sql::dynamic::CreateDt;
use tokio_postgres::Transaction;

/// What a Flink table needs before CREATE's transaction.
enum FlinkPrep {
    /// FULL: the first fill, staged.
    Fill(crate::manager::flink_tables::FlinkFill),
    /// CONTINUOUS: the query's columns (the job starts after the commit).
    Continuous(Vec<crate::catalog::FlinkColumn>),
}

/// What CREATE did.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    /// Created and filled with this many rows.
    Created { rows: u64 },
    /// IF NOT EXISTS, and it existed.
    AlreadyExisted(String),
}

/// The option that sets the time zone of a table's schedule (default: the session's TimeZone).
pub const TIME_ZONE_OPTION: &str = "schedule.time-zone";

/// Refuses a time zone PostgreSQL does not know (22023, PostgreSQL's own message).
pub(crate) async fn check_time_zone(tx: &Transaction<'_>, tz: &str) -> Result<(), Error> {
    tx.query_one("SELECT now() AT TIME ZONE $1", &[&tz]).await?;
    Ok(())
}

/// The partition columns must be columns of the table; date-formatted ones must hold text.
async fn check_partition_columns(
    tx: &Transaction<'_>,
    name: &QualifiedName,
    partitioned_by: &[String],
    formatters: &[(String, String)],
) -> Result<(), Error> {
    let columns = catalog::columns_of(tx, &name.quoted()).await?;
    for p in partitioned_by {
        let Some((_, ty)) = columns.iter().find(|(c, _)| c == p) else {
            return Err(Error::InvalidDefinition(format!(
                "partition column \"{p}\" is not a column of dynamic table {name}"
            )));
        };
        let textual = ty == "text" || ty.starts_with("character");
        if formatters.iter().any(|(c, _)| c == p) && !textual {
            return Err(Error::InvalidDefinition(format!(
                "partition column \"{p}\" has a date formatter and must be of a string type, not {ty}"
            )));
        }
    }
    Ok(())
}

/// The error for an explicit request of an incremental refresh that the query rules out.
pub(crate) fn not_incremental(name: &QualifiedName, why: &str) -> Error {
    Error::Unsupported(format!(
        "dynamic table {name} cannot be refreshed incrementally: {why} (remove '{}' to have it refreshed fully)",
        incremental::ACTION_OPTION
    ))
}

impl Manager {
    /// Binds the query of table `id` to what it reads (engine::postgres::bind_query) and records
    /// the binding.
    pub(crate) async fn bind(
        &self,
        tx: &Transaction<'_>,
        search_path: &str,
        name: &QualifiedName,
        id: i64,
        query: &str,
    ) -> Result<engine::postgres::Bound, Error> {
        let mut view = rules::query_view_name(&name.schema, &name.name, id);
        let taken = QualifiedName {
            schema: "dyngate".into(),
            name: view.clone(),
        };
        if catalog::relation_exists(tx, &taken).await? {
            view = format!("dt_{id}");
        }
        let bound = engine::postgres::bind_query(tx, search_path, &view, query).await?;
        catalog::set_binding(tx, id, &bound.view, &bound.resolved).await?;
        Ok(bound)
    }

    pub async fn create(&self, who: &Requester<'_>, c: &CreateDt, definition: &str) -> Result<Created, Error> {
        self.check_database(who)?;
        if who.in_transaction {
            return Err(Error::InTransaction("CREATE DYNAMIC TABLE"));
        }
        if c.or_replace {
            return Err(Error::Unsupported(
                "CREATE OR REPLACE DYNAMIC TABLE is not supported yet; drop the table first".into(),
            ));
        }
        let formatters = rules::partition_formatters(&c.options, &c.partitioned_by).map_err(Error::InvalidOption)?;
        let engine_kind = self.engine_for(&c.options)?;
        let requested = incremental::requested(&c.options).map_err(Error::InvalidOption)?;
        let freshness = c.freshness.unwrap_or_else(|| rules::default_freshness(c.mode));
        let mode = rules::derive_mode(freshness, c.mode, self.threshold);
        if engine_kind == EngineKind::Flink {
            Self::check_flink_table(&c.options)?;
        }
        if mode == RefreshMode::Full {
            rules::full_mode_cron(freshness)?;
        }
        let scheduler = (mode == RefreshMode::Full).then(|| self.scheduler_for(&c.options)).transpose()?;
        let plugin = scheduler.map(|k| self.plugin_for(k, freshness)).transpose()?;
        let catalog_id = match plugin {
            Some(_) => self.catalog_id().await?,
            None => "",
        };

        let mut client = self.pool.get().await?;
        let _capture = self.prepare_capture().await?;
        let name = self.resolve(&mut client, who, &c.name).await?;
        let search_path = self.search_path_of(&mut client, who).await?;
        // A Flink table's rows are computed before the transaction (into a staging table the
        // guard drops unless the transaction took it); the cheap checks come first.
        let mut stage_guard = None;
        let fill = if engine_kind == EngineKind::Flink {
            if catalog::load(&*client, &name).await?.is_some() && c.if_not_exists {
                return Ok(Created::AlreadyExisted(name.to_string()));
            }
            if catalog::relation_exists(&*client, &name).await? && catalog::load(&*client, &name).await?.is_none() {
                return Err(Error::RelationExists(name.to_string()));
            }
            if mode == RefreshMode::Continuous {
                Some(FlinkPrep::Continuous(self.flink_describe(&c.query).await?))
            } else {
                let fill = self.flink_first_fill(c, &name).await?;
                stage_guard = Some(crate::manager::flink_tables::StageGuard {
                    pool: self.pool.clone(),
                    stage: Some(fill.stage.clone()),
                });
                Some(FlinkPrep::Fill(fill))
            }
        } else {
            None
        };
        let mut continuous = None;
        let tx = client.transaction().await?;
        if catalog::load(&tx, &name).await?.is_some() {
            return if c.if_not_exists {
                Ok(Created::AlreadyExisted(name.to_string()))
            } else {
                Err(Error::Exists(name.to_string()))
            };
        }
        if catalog::relation_exists(&tx, &name).await? {
            return Err(Error::RelationExists(name.to_string()));
        }
        let time_zone = match c.options.iter().find(|(k, _)| k == TIME_ZONE_OPTION) {
            Some((_, tz)) => tz.as_str(),
            None => who.time_zone,
        };
        check_time_zone(&tx, time_zone).await?;
        let options = serde_json::Value::Object(
            c.options
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        );
        let id = catalog::insert(
            &tx,
            &NewDt {
                name: &name,
                definition,
                query: &c.query,
                columns: c.columns.as_deref(),
                comment: c.comment.as_deref(),
                options,
                freshness,
                logical_mode: c.mode,
                refresh_mode: mode,
                status: Status::Activated,
                scheduler,
                owner: who.user,
                time_zone,
                partitioned_by: &c.partitioned_by,
            },
        )
        .await?;
        let (rows, action) = match &fill {
            Some(FlinkPrep::Fill(fill)) => (
                self.flink_create_in(&tx, who.user, &name, c.columns.as_deref(), id, fill).await?,
                RefreshAction::Full,
            ),
            Some(FlinkPrep::Continuous(described)) => {
                let prepared = self
                    .flink_continuous_create_in(&tx, who.user, &name, c.columns.as_deref(), id, &c.query, described)
                    .await?;
                continuous = Some(prepared);
                (0, RefreshAction::Full)
            }
            None => {
                let bound = self.bind(&tx, &search_path, &name, id, &c.query).await?;
                let decision = incremental::decide(&tx, &bound.view, &bound.resolved, requested, !c.partitioned_by.is_empty())
                    .await?
                    .map_err(|why| not_incremental(&name, &why))?;
                // The sources stay locked from before the fill until the commit, so the capture
                // that starts after the fill misses nothing.
                incremental::prepare(&tx, &decision).await?;
                // User SQL runs with the requester's privileges (see engine::postgres::run_as).
                // With no column list, the table has the query's columns, which the decision knows.
                let storage = c.columns.is_none().then(|| decision.storage()).flatten();
                let filled = engine::postgres::create(
                    &tx,
                    who.user,
                    &name.quoted(),
                    c.columns.as_deref(),
                    storage.as_deref(),
                    &bound.resolved,
                )
                .await?;
                incremental::record(&tx, id, &name.quoted(), &decision, who.user, true, self.capture()).await?;
                (filled.rows, decision.action())
            }
        };
        if !c.partitioned_by.is_empty() {
            check_partition_columns(&tx, &name, &c.partitioned_by, &formatters).await?;
            // A partition's refresh deletes by the partition columns.
            let cols: Vec<String> = c.partitioned_by.iter().map(|p| quote_ident(p)).collect();
            let sql = format!("CREATE INDEX ON {} ({})", name.quoted(), cols.join(", "));
            engine::postgres::run_as(&tx, who.user, &sql).await?;
        }
        if let Some(comment) = &c.comment {
            let sql = format!("COMMENT ON TABLE {} IS {}", name.quoted(), quote_literal(comment));
            engine::postgres::run_as(&tx, who.user, &sql).await?;
        }
        let job_id = new_job_id();
        catalog::creation_refresh(&tx, id, &name, &job_id, rows as i64).await?;
        if let (Some(FlinkPrep::Fill(fill)), Ok(flink)) = (&fill, self.flink()) {
            self.record_engine_job(&tx, id, &job_id, fill.job.as_str(), flink).await?;
        }
        // Last, the schedule: its failure undoes the whole CREATE (and it is removed again if the
        // commit fails).
        let registered = match &plugin {
            Some(plugin) => {
                external::lock_schedule(&tx, id).await?;
                let start = external::now_iso(&tx).await?;
                let target = Target {
                    catalog: catalog_id,
                    database: &self.database,
                    table_id: id,
                    schema: &name.schema,
                    table: &name.name,
                    freshness,
                    time_zone,
                    start: &start,
                    configuration: &external::NO_CONFIGURATION,
                };
                let handle = plugin.register(&target, true).await.map_err(external::plugin_error)?;
                let kind = plugin.kind();
                if let Err(e) = catalog::set_scheduler(&tx, id, Some(kind), external::handle_json(&handle).as_deref()).await {
                    plugin.unregister(&handle).await.ok();
                    return Err(e.into());
                }
                Some(handle)
            }
            None => None,
        };
        if let Err(e) = tx.commit().await {
            if let (Some(plugin), Some(handle)) = (&plugin, registered) {
                plugin.unregister(&handle).await.ok();
            }
            return Err(e.into());
        }
        // The committed transaction dropped the staging table.
        if let Some(g) = stage_guard.as_mut() {
            g.stage = None;
        }
        if let Some(continuous) = &continuous {
            self.flink_continuous_start(who.user, &name, id, &c.query, continuous, freshness.duration(), &job_id)
                .await?;
        }
        tracing::info!(table = %name, owner = who.user, mode = mode.name(), engine = engine_kind.name(), action = %action, rows, "dynamic table created");
        Ok(Created::Created { rows })
    }
}
