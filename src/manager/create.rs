//! CREATE DYNAMIC TABLE: validate the freshness and mode, create and fill the table as the
//! requester, and record it, all in one transaction: if the first fill fails, nothing remains
//! (no table, no catalog row). The table's engine does what is its own in three phases (before
//! the transaction, the fill in it, and after the commit: engine::Engine); the rest is here: the
//! name, the catalog row, partition columns, the comment, the creation's history row, and last
//! the schedule.

use tokio_postgres::Transaction;

use crate::catalog::{self, NewDt};
use crate::core::names::new_job_id;
use crate::core::{EngineKind, Error, QualifiedName, RefreshMode, Requester, Status, quote_ident, quote_literal, rules};
use crate::engine::{Engine, NewTable};
use crate::manager::{Manager, external};
use crate::scheduler::Target;
use crate::sql::dynamic::CreateDt;

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

impl Manager {
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
        match self.engine_for(&c.options)? {
            EngineKind::Postgres => self.create_on(&self.postgres, who, c, definition).await,
            EngineKind::Flink => self.create_on(&self.flink, who, c, definition).await,
        }
    }

    /// CREATE on `engine` (see the module's doc).
    async fn create_on<E: Engine>(&self, engine: &E, who: &Requester<'_>, c: &CreateDt, definition: &str) -> Result<Created, Error> {
        let formatters = rules::partition_formatters(&c.options, &c.partitioned_by).map_err(Error::InvalidOption)?;
        engine.check_options(&c.options)?;
        let freshness = c.freshness.unwrap_or_else(|| rules::default_freshness(c.mode));
        let mode = rules::derive_mode(freshness, c.mode, self.threshold);
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
        let _held = engine.prepare_change().await?;
        let name = self.resolve(&mut client, who, &c.name).await?;
        let search_path = self.search_path_of(&mut client, who).await?;
        let new = NewTable {
            name: &name,
            owner: who.user,
            query: &c.query,
            search_path: &search_path,
            columns: c.columns.as_deref(),
            options: &c.options,
            partitioned: !c.partitioned_by.is_empty(),
            mode,
            freshness,
        };
        // The cheap checks come before the engine's preparation (a Flink table's rows are
        // computed before the transaction), and again in the transaction.
        let existing = catalog::load(&*client, &name).await?;
        if existing.is_some() && c.if_not_exists {
            return Ok(Created::AlreadyExisted(name.to_string()));
        }
        if existing.is_none() && catalog::relation_exists(&*client, &name).await? {
            return Err(Error::RelationExists(name.to_string()));
        }
        let mut creation = engine.prepare_create(&new).await?;
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
        let filled = engine.fill(&tx, &new, id, &mut creation).await?;
        if !c.partitioned_by.is_empty() {
            check_partition_columns(&tx, &name, &c.partitioned_by, &formatters).await?;
            // A partition's refresh deletes by the partition columns.
            let cols: Vec<String> = c.partitioned_by.iter().map(|p| quote_ident(p)).collect();
            let sql = format!("CREATE INDEX ON {} ({})", name.quoted(), cols.join(", "));
            run_as(&tx, who.user, &sql).await?;
        }
        if let Some(comment) = &c.comment {
            let sql = format!("COMMENT ON TABLE {} IS {}", name.quoted(), quote_literal(comment));
            run_as(&tx, who.user, &sql).await?;
        }
        let job_id = new_job_id();
        catalog::creation_refresh(&tx, id, &name, &job_id, filled.rows as i64).await?;
        engine.record_fill(&tx, id, &job_id, &creation).await?;
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
        engine.created(&new, id, creation, &job_id).await?;
        let rows = filled.rows;
        tracing::info!(table = %name, owner = who.user, mode = mode.name(), action = %filled.action, rows, "dynamic table created");
        Ok(Created::Created { rows })
    }
}

/// Runs one statement of the requester's with their privileges (engine::postgres::run_as).
async fn run_as(tx: &Transaction<'_>, role: &str, sql: &str) -> Result<(), Error> {
    crate::engine::postgres::run_as::run_as(tx, role, sql).await?;
    Ok(())
}
