//! The PostgreSQL engine, the embedded default: a dynamic table is an ordinary table in the
//! backing database, filled and refreshed by SQL run as its owner ([`run_as`]). A refresh either
//! recomputes the query in one statement ([`refresh`]) or applies what changed in the sources
//! since the last refresh ([`incremental`]: which queries can be, the capture of changes by
//! triggers or from the WAL, and the SQL that applies them). ALTER ... AS and changes of the
//! refresh action are in [`alter`].

pub mod alter;
pub mod incremental;
pub mod refresh;
pub mod run_as;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_postgres::Transaction;

use crate::backend::{Pooled, ServicePool};
use crate::catalog::{self, DtRow, Identity};
use crate::core::{Error, QualifiedName, RefreshMode, Requester, rules};
use crate::engine::{Engine, Filled, NewTable, Outcome, RefreshJob};
use incremental::collect::{self, Method};

/// The PostgreSQL engine of a gateway.
pub struct PostgresEngine {
    pool: ServicePool,
    catalog_id: Arc<Identity>,
    /// How new change captures are made (incremental::collect): what `--capture` resolved to
    /// once the catalog was ready (triggers until then).
    capture: OnceLock<Method>,
}

impl PostgresEngine {
    pub fn new(pool: ServicePool, catalog_id: Arc<Identity>) -> PostgresEngine {
        PostgresEngine {
            pool,
            catalog_id,
            capture: OnceLock::new(),
        }
    }

    /// Decides how new change captures are made, from `--capture` and what the backing
    /// PostgreSQL allows (once, at start-up, after the migrations).
    pub async fn set_capture(&self, setting: collect::Capture) -> Result<Method, collect::CaptureError> {
        let client = self.pool.get().await?;
        let mut method = collect::resolve(&*client, setting).await?;
        if method == Method::Wal {
            // The streamer needs a replication connection (pg_hba.conf may refuse one).
            let tried = incremental::replication::Connection::connect(&self.pool.backend().service, "dyngate check").await;
            match (tried, setting) {
                (Ok(c), _) => c.close().await,
                (Err(e), collect::Capture::Wal) => return Err(collect::CaptureError::Replication(e)),
                (Err(e), _) => {
                    tracing::warn!(error = %e, "no replication connection to PostgreSQL: changes are captured by triggers");
                    method = Method::Trigger;
                }
            }
        }
        let _ = self.capture.set(method);
        Ok(method)
    }

    pub(crate) fn capture(&self) -> Method {
        self.capture.get().copied().unwrap_or(Method::Trigger)
    }

    /// Until `stop`: streams the changes of sources captured from the WAL into their logs
    /// (incremental::stream), batches at least every `interval`.
    pub async fn run_wal_stream(&self, interval: Duration, stop: tokio::sync::watch::Receiver<bool>) {
        incremental::stream::run(self.pool.clone(), interval, stop).await
    }
}

/// Binds the query of table `id` to what it reads (run_as::bind_query) and records the binding.
pub async fn bind(tx: &Transaction<'_>, search_path: &str, name: &QualifiedName, id: i64, query: &str) -> Result<run_as::Bound, Error> {
    let mut view = rules::query_view_name(&name.schema, &name.name, id);
    let taken = QualifiedName {
        schema: "dyngate".into(),
        name: view.clone(),
    };
    if catalog::relation_exists(tx, &taken).await? {
        view = format!("dt_{id}");
    }
    let bound = run_as::bind_query(tx, search_path, &view, query).await?;
    catalog::set_binding(tx, id, &bound.view, &bound.resolved).await?;
    Ok(bound)
}

/// The error for an explicit request of an incremental refresh that the query rules out.
pub fn not_incremental(name: &QualifiedName, why: &str) -> Error {
    Error::Unsupported(format!(
        "dynamic table {name} cannot be refreshed incrementally: {why} (remove '{}' to have it refreshed fully)",
        incremental::ACTION_OPTION
    ))
}

impl Engine for PostgresEngine {
    type Creation = ();
    type FreshnessChange = ();

    fn check_options(&self, options: &[(String, String)]) -> Result<(), Error> {
        incremental::requested(options).map_err(Error::InvalidOption)?;
        Ok(())
    }

    /// The WAL capture's slot must exist before the statement's transaction (see
    /// incremental::collect::ensure_slot). If it cannot be made (no replication slot free, say),
    /// new captures use triggers. The connection returned holds the slot in use until the
    /// statement drops it (it is closed then, which lets the lock go).
    async fn prepare_change(&self) -> Result<Option<Pooled>, Error> {
        if self.capture() != Method::Wal {
            return Ok(None);
        }
        let id = self.catalog_id.get(&self.pool).await?;
        let mut client = self.pool.get().await?;
        client.discard_on_drop(true);
        client
            .execute(
                "SELECT pg_advisory_lock_shared($1, $2)",
                &[&collect::SLOT_USE_LOCK.0, &collect::SLOT_USE_LOCK.1],
            )
            .await?;
        match collect::ensure_slot(&client, id).await {
            Ok(()) => incremental::stream::wake(),
            Err(e) => tracing::warn!(error = %e, "the WAL capture's slot cannot be made; new captures use triggers"),
        }
        Ok(Some(client))
    }

    async fn prepare_create(&self, _new: &NewTable<'_>) -> Result<(), Error> {
        Ok(())
    }

    /// Binds the query, decides how it is refreshed, creates and fills the table as the
    /// requester, and starts capturing its sources' changes if it is refreshed incrementally.
    async fn fill(&self, tx: &Transaction<'_>, new: &NewTable<'_>, id: i64, _: &mut ()) -> Result<Filled, Error> {
        let requested = incremental::requested(new.options).map_err(Error::InvalidOption)?;
        let bound = bind(tx, new.search_path, new.name, id, new.query).await?;
        let decision = incremental::decide(tx, &bound.view, &bound.resolved, requested, new.partitioned)
            .await?
            .map_err(|why| not_incremental(new.name, &why))?;
        // The sources stay locked from before the fill until the commit, so the capture that
        // starts after the fill misses nothing.
        incremental::prepare(tx, &decision).await?;
        // With no column list, the table has the query's columns, which the decision knows.
        let storage = new.columns.is_none().then(|| decision.storage()).flatten();
        let target = new.name.quoted();
        let filled = run_as::create(tx, new.owner, &target, new.columns, storage.as_deref(), &bound.resolved).await?;
        incremental::record(tx, id, &target, &decision, new.owner, true, self.capture()).await?;
        Ok(Filled {
            rows: filled.rows,
            action: decision.action(),
        })
    }

    async fn record_fill(&self, _tx: &Transaction<'_>, _id: i64, _job_id: &str, _: &()) -> Result<(), Error> {
        Ok(())
    }

    async fn created(&self, _new: &NewTable<'_>, _id: i64, _: (), _job_id: &str) -> Result<(), Error> {
        Ok(())
    }

    async fn refresh(&self, client: &mut Pooled, dt: &DtRow, job: &RefreshJob<'_>) -> Result<Outcome, Error> {
        if dt.incremental() {
            self.incremental_refresh(client, dt, job).await
        } else {
            refresh::refresh(&self.pool, client, dt, job).await
        }
    }

    async fn alter_query(&self, who: &Requester<'_>, dt: &DtRow, query: &str, search_path: &str) -> Result<Vec<String>, Error> {
        let _capture = self.prepare_change().await?;
        alter::alter_query(&self.pool, who, dt, query, search_path, self.capture()).await
    }

    async fn prepare_freshness(&self, _dt: &DtRow, _mode: RefreshMode) -> Result<(), Error> {
        Ok(())
    }

    async fn change_freshness(&self, _tx: &Transaction<'_>, _dt: &DtRow, _: &()) -> Result<(), Error> {
        Ok(())
    }

    async fn freshness_changed(&self, _dt: &DtRow, _: (), _committed: bool) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }

    async fn options_changed(&self, tx: &Transaction<'_>, cur: &DtRow, action_changed: bool) -> Result<Vec<String>, Error> {
        if !action_changed {
            return Ok(Vec::new());
        }
        alter::action_changed(tx, cur, self.capture()).await
    }

    /// Nothing runs by itself: the refresh loop reads the status.
    async fn suspend(&self, _dt: &DtRow) -> Result<bool, Error> {
        Ok(false)
    }

    async fn resume(&self, _dt: &DtRow, _options: Option<&BTreeMap<String, String>>) -> Result<Option<Vec<String>>, Error> {
        Ok(None)
    }

    async fn drop_before(&self, _tx: &Transaction<'_>, _dt: &DtRow) -> Result<(), Error> {
        Ok(())
    }

    /// The query's view goes, and the incremental state and change capture no other table needs.
    async fn drop_after(&self, tx: &Transaction<'_>, dt: &DtRow) -> Result<(), Error> {
        if let Some(view) = &dt.query_view {
            run_as::unbind_query(tx, view).await?;
        }
        incremental::forget(tx, dt.id).await?;
        Ok(())
    }

    fn describe(&self, _dt: &DtRow) -> Vec<(&'static str, Option<String>)> {
        Vec::new()
    }
}
