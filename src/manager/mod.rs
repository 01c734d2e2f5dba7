//! The dynamic-table manager: the operations behind each statement (create, refresh, drop, show,
//! describe, alter, suspend, resume), independent of how they were asked for (pgwire, or the
//! HTTP refresh endpoint). It knows nothing of the wire protocol, and no engine's SQL: what
//! differs by engine is a method of the table's engine ([`crate::engine::Engine`], chosen by its
//! typed kind with `on_engine!`); the schedule is a scheduler plug-in's.
//!
//! Every operation runs on a service-account connection but executes the SQL that touches user
//! data with the requester's privileges (or, for a refresh, the table owner's), so PostgreSQL's
//! privileges apply: nobody reads through a dynamic table what they could not read directly. Catalog writes
//! happen in the same transaction, so a failed statement changes nothing.

pub mod alter;
pub mod alter_query;
pub mod api;
pub mod create;
pub mod drop;
pub mod external;
pub mod reconcile;
pub mod refresh;
pub mod scheduler;
pub mod show;

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::{Client, Transaction};

use crate::backend::ServicePool;
use crate::catalog::{self, DtRow, Identity};
use crate::core::{EngineKind, Error, QualifiedName, Requester, SchedulerKind, quote_ident, quote_literal};
use crate::engine::flink::FlinkEngine;
use crate::engine::flink::runtime::FlinkRuntime;
use crate::engine::flink::statements::FlinkOutcome;
use crate::engine::postgres::PostgresEngine;
use crate::engine::postgres::incremental::collect::{self, Method};
use crate::scheduler::Plugin;
use crate::sql::dynamic::{Options, TableName};
use crate::sql::flink::FlinkStatement;

/// The option that names a table's engine.
pub const ENGINE_OPTION: &str = "engine";

/// Runs `$body` with `$engine` bound to the engine of kind `$kind`: where the manager chooses an
/// engine for a table's operation.
macro_rules! on_engine {
    ($manager:expr, $kind:expr, |$engine:ident| $body:expr) => {
        match $kind {
            $crate::core::EngineKind::Postgres => {
                let $engine = &$manager.postgres;
                $body
            }
            $crate::core::EngineKind::Flink => {
                let $engine = &$manager.flink;
                $body
            }
        }
    };
}
pub(crate) use on_engine;

/// The manager of one catalog.
pub struct Manager {
    pool: ServicePool,
    /// The database holding the catalog; dynamic tables live there.
    database: String,
    /// Freshness below which AUTOMATIC mode derives CONTINUOUS.
    threshold: Duration,
    /// Who schedules FULL tables that do not name a scheduler.
    default_scheduler: SchedulerKind,
    /// The scheduler plug-ins this gateway has: the embedded one always, external ones when
    /// configured.
    plugins: Vec<Arc<dyn Plugin>>,
    /// This catalog's identity (`dyngate.identity`), read on first use.
    catalog_id: Arc<Identity>,
    /// The engines. Flink's needs a runtime (--flink-gateway) for all but catalog work.
    postgres: PostgresEngine,
    flink: FlinkEngine,
    /// The engine of new tables that do not name one.
    default_engine: EngineKind,
}

impl Manager {
    pub fn new(pool: ServicePool, database: String, threshold: Duration) -> Manager {
        let catalog_id = Arc::new(Identity::new());
        Manager {
            postgres: PostgresEngine::new(pool.clone(), catalog_id.clone()),
            flink: FlinkEngine::new(pool.clone(), None, catalog_id.clone()),
            pool,
            database,
            threshold,
            default_scheduler: SchedulerKind::Embedded,
            plugins: vec![Arc::new(crate::scheduler::embedded::Embedded)],
            catalog_id,
            default_engine: EngineKind::Postgres,
        }
    }

    /// Adds the Flink engine and sets the default engine of new tables.
    pub fn with_engines(mut self, default: EngineKind, flink: Option<Arc<FlinkRuntime>>) -> Manager {
        self.default_engine = default;
        self.flink = FlinkEngine::new(self.pool.clone(), flink, self.catalog_id.clone());
        self
    }

    /// Decides how new change captures are made, from `--capture` and what the backing
    /// PostgreSQL allows (once, at start-up, after the migrations).
    pub async fn set_capture(&self, setting: collect::Capture) -> Result<Method, collect::CaptureError> {
        self.postgres.set_capture(setting).await
    }

    /// Until `stop`: streams the changes of sources captured from the WAL into their logs.
    pub async fn run_wal_stream(self: Arc<Self>, interval: Duration, stop: tokio::sync::watch::Receiver<bool>) {
        self.postgres.run_wal_stream(interval, stop).await
    }

    /// Until `stop`: watches the Flink engine's streaming jobs, when this gateway has one.
    pub async fn run_flink_watch(self: Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        self.flink.run_watch(crate::engine::flink::continuous::WATCH_INTERVAL, stop).await
    }

    /// The Flink database of this gateway, if it has Flink.
    pub fn flink_database(&self) -> Option<&str> {
        self.flink.database()
    }

    /// Runs a statement that names the Flink database, for `who`, in Flink.
    pub async fn flink_statement(&self, who: &Requester<'_>, stmt: &FlinkStatement) -> Result<FlinkOutcome, Error> {
        self.flink.statement(who, stmt).await
    }

    /// The engine of a new table: its `engine` option, else the gateway's default.
    pub(crate) fn engine_for(&self, options: &Options) -> Result<EngineKind, Error> {
        let engine = match options.iter().find(|(k, _)| k == ENGINE_OPTION) {
            Some((_, v)) => EngineKind::parse(v)
                .ok_or_else(|| Error::InvalidOption(format!("unknown engine '{v}' (the engines are 'postgres' and 'flink')")))?,
            None => self.default_engine,
        };
        if engine == EngineKind::Flink {
            self.flink.runtime()?;
        }
        Ok(engine)
    }

    /// Sets the default scheduler of FULL tables and adds external schedulers' plug-ins.
    pub fn with_schedulers(mut self, default: SchedulerKind, external: Vec<Arc<dyn Plugin>>) -> Manager {
        self.default_scheduler = default;
        self.plugins.extend(external);
        self
    }

    fn check_database(&self, who: &Requester<'_>) -> Result<(), Error> {
        if who.database != self.database {
            return Err(Error::WrongDatabase {
                expected: self.database.clone(),
                actual: who.database.to_string(),
            });
        }
        Ok(())
    }

    /// Resolves an unqualified name to the requester's current schema (where CREATE puts it).
    async fn resolve(&self, client: &mut Client, who: &Requester<'_>, name: &TableName) -> Result<QualifiedName, Error> {
        self.resolve_in(client, who, name, "SELECT current_schema()::text").await
    }

    /// Resolves an unqualified name as PostgreSQL finds a relation: in the first schema of the
    /// requester's search_path that has one of that name (else the current schema, for the
    /// "does not exist" message).
    async fn resolve_existing(&self, client: &mut Client, who: &Requester<'_>, name: &TableName) -> Result<QualifiedName, Error> {
        let sql = format!(
            "SELECT coalesce((SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = to_regclass({})), current_schema()::text)",
            quote_literal(&quote_ident(&name.name))
        );
        let mut q = self.resolve_in(client, who, name, &sql).await?;
        // regnamespace prints a name quoted when it needs quotes.
        if q.schema.starts_with('"') {
            q.schema = q.schema[1..q.schema.len() - 1].replace("\"\"", "\"");
        }
        Ok(q)
    }

    async fn resolve_in(&self, client: &mut Client, who: &Requester<'_>, name: &TableName, sql: &str) -> Result<QualifiedName, Error> {
        if let Some(schema) = &name.schema {
            return Ok(QualifiedName {
                schema: schema.clone(),
                name: name.name.clone(),
            });
        }
        let tx = begin_as(client, who.user).await?;
        let schema: Option<String> = tx.query_one(sql, &[]).await?.get(0);
        tx.rollback().await?;
        let schema = schema.ok_or_else(|| Error::Postgres {
            code: "3F000".into(),
            message: "no schema has been selected to create in".into(),
            detail: None,
            hint: None,
        })?;
        Ok(QualifiedName {
            schema,
            name: name.name.clone(),
        })
    }
}

impl Manager {
    /// The requester's search_path, expanded (`$user` replaced, missing schemas left out) and
    /// quoted, for binding a query to what the requester's session would see.
    async fn search_path_of(&self, client: &mut Client, who: &Requester<'_>) -> Result<String, Error> {
        let tx = begin_as(client, who.user).await?;
        let path: String = tx
            .query_one(
                "SELECT coalesce(string_agg(quote_ident(s), ', ' ORDER BY n), '') FROM unnest(current_schemas(false)) WITH ORDINALITY AS u(s, n)",
                &[],
            )
            .await?
            .get(0);
        tx.rollback().await?;
        Ok(path)
    }

    /// Resolves `name` for `who` and loads its catalog row: 42P01 when there is no such
    /// relation, 42809 when it is not a dynamic table.
    async fn load_existing(&self, client: &mut Client, who: &Requester<'_>, name: &TableName) -> Result<DtRow, Error> {
        let name = self.resolve_existing(client, who, name).await?;
        match catalog::load(&*client, &name).await? {
            Some(dt) => Ok(dt),
            None if catalog::relation_exists(&*client, &name).await? => Err(Error::NotDynamic(name.to_string())),
            None => Err(Error::NotFound(name.to_string())),
        }
    }

    /// Operating a table (refresh, suspend, alter) takes membership in its owner's role.
    async fn require_member(
        client: &impl tokio_postgres::GenericClient,
        who: &Requester<'_>,
        dt: &DtRow,
        action: &'static str,
    ) -> Result<(), Error> {
        let member: bool = client
            .query_one("SELECT pg_has_role($1, $2, 'MEMBER')", &[&who.user, &dt.owner])
            .await?
            .get(0);
        if !member {
            return Err(Error::NotOwner {
                owner: dt.owner.clone(),
                action,
                table: dt.name.to_string(),
            });
        }
        Ok(())
    }
}

/// Starts a transaction that runs as `role` until `RESET ROLE`: only for SQL of the gateway's own
/// that reads the role's settings (its current schema). User SQL never runs this way, since a
/// superuser session's SET ROLE can be undone from SQL; it goes through
/// [`engine::postgres::run_as::run_as`](crate::engine::postgres::run_as::run_as).
async fn begin_as<'c>(client: &'c mut Client, role: &str) -> Result<Transaction<'c>, Error> {
    let tx = client.transaction().await?;
    set_role(&tx, role).await?;
    Ok(tx)
}

/// Takes `role`'s identity for the rest of the transaction (or until `RESET ROLE`).
async fn set_role(tx: &Transaction<'_>, role: &str) -> Result<(), Error> {
    tx.batch_execute(&format!("SET LOCAL ROLE {}", quote_ident(role))).await?;
    Ok(())
}
