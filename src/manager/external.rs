//! The manager's side of the workflow schedulers ([`crate::scheduler`]): which scheduler a FULL
//! table gets, the plug-ins this gateway has, turning their errors into the manager's, and the
//! steps every operation shares.
//!
//! The rules the operations follow (CREATE, SUSPEND / RESUME, SET FRESHNESS, SET ('scheduler'),
//! DROP):
//! - A schedule is created or changed inside the operation's transaction, before the commit: if
//!   the scheduler fails, the catalog is untouched; if the commit fails, the new schedule is
//!   removed again.
//! - A schedule the catalog stops needing is queued for removal in `dyngate.scheduler_cleanup` in
//!   the same transaction, and removed right after the commit; a removal that fails then (the
//!   scheduler is down) stays queued, and the reconciliation loop ([`super::reconcile`]) retries it.
//! - Each such operation holds two advisory locks until it commits: the table's
//!   ([`SCHEDULE_LOCK_SPACE`], id), so it never interleaves with the reconciliation of that table,
//!   and a shared lock on ([`SCHEDULE_LOCK_SPACE`], 0), so that reconciliation's search for stray
//!   schedules never sees a schedule whose catalog row is not committed yet.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_postgres::GenericClient;

use crate::catalog::DtRow;
use crate::core::rules::Freshness;
use crate::core::{Error, QualifiedName, SchedulerKind};
use crate::manager::Manager;
use crate::scheduler::{Handle, Plugin, PluginError, Target};

/// The option naming a table's scheduler.
pub const SCHEDULER_OPTION: &str = "scheduler";

/// Key space of the advisory locks that serialize schedule changes with reconciliation.
pub const SCHEDULE_LOCK_SPACE: i32 = 0x6473_6368; // "dsch"

/// No configuration beyond the scheduler's own run id.
pub static NO_CONFIGURATION: BTreeMap<String, String> = BTreeMap::new();

pub fn plugin_error(e: PluginError) -> Error {
    match e {
        PluginError::Unschedulable(m) => Error::InvalidOption(m),
        PluginError::Failed(m) | PluginError::Conflict(m) => Error::Scheduler(m),
    }
}

fn known_schedulers() -> &'static str {
    "embedded, airflow, dolphinscheduler"
}

/// Parses a scheduler's name as `WITH ('scheduler' = ...)` gives it.
pub fn parse_kind(v: &str) -> Result<SchedulerKind, Error> {
    SchedulerKind::parse(v).ok_or_else(|| Error::InvalidOption(format!("unknown scheduler '{v}' (known: {})", known_schedulers())))
}

/// Now, as ISO 8601 with an offset, on the database's clock: a new schedule's start.
pub async fn now_iso(c: &impl GenericClient) -> Result<String, Error> {
    Ok(c.query_one(
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"')",
        &[],
    )
    .await?
    .get(0))
}

/// A FULL table's scheduler and its handle (none for the embedded one); None for a CONTINUOUS
/// table, which no scheduler holds.
pub fn schedule_of(dt: &DtRow) -> Option<(SchedulerKind, Handle)> {
    let kind = dt.scheduler?;
    let handle = dt
        .scheduler_handle
        .as_deref()
        .and_then(|h| serde_json::from_str(h).ok())
        .unwrap_or_else(Handle::none);
    Some((kind, handle))
}

/// The handle as the catalog keeps it (NULL for none).
pub fn handle_json(h: &Handle) -> Option<String> {
    (!h.is_none()).then(|| h.0.to_string())
}

/// Takes the schedule locks of table `id` (see the module's doc) for the rest of `tx`.
pub async fn lock_schedule(tx: &impl GenericClient, id: i64) -> Result<(), Error> {
    tx.execute(
        "SELECT pg_advisory_xact_lock_shared($1, 0), pg_advisory_xact_lock($1, $2)",
        &[&SCHEDULE_LOCK_SPACE, &schedule_lock_key(id)],
    )
    .await?;
    Ok(())
}

/// The per-table lock's key: table ids from 1 up, folded into a positive i32 (0 is the registry's).
pub fn schedule_lock_key(id: i64) -> i32 {
    (id.rem_euclid(i32::MAX as i64 - 1) + 1) as i32
}

/// The scheduler-independent description of a table's schedule.
pub struct Scheduled<'a> {
    pub catalog: &'a str,
    pub database: &'a str,
    pub dt: &'a DtRow,
    pub freshness: Freshness,
    pub start: &'a str,
}

impl<'a> Scheduled<'a> {
    pub fn target(&self) -> Target<'a> {
        Target {
            catalog: self.catalog,
            database: self.database,
            table_id: self.dt.id,
            schema: &self.dt.name.schema,
            table: &self.dt.name.name,
            freshness: self.freshness,
            time_zone: &self.dt.time_zone,
            start: self.start,
            configuration: &self.dt.refresh_options,
        }
    }
}

impl Manager {
    /// The scheduler a FULL table asks for (`WITH ('scheduler' = ...)`), else the default.
    pub(crate) fn scheduler_for(&self, options: &[(String, String)]) -> Result<SchedulerKind, Error> {
        match options.iter().find(|(k, _)| k == SCHEDULER_OPTION) {
            None => Ok(self.default_scheduler),
            Some((_, v)) => parse_kind(v),
        }
    }

    /// The plug-in of `kind`, or why this gateway has none.
    pub(crate) fn plugin(&self, kind: SchedulerKind) -> Result<Arc<dyn Plugin>, Error> {
        self.plugins.iter().find(|p| p.kind() == kind).cloned().ok_or_else(|| {
            let flags = match kind {
                SchedulerKind::Embedded => "",
                SchedulerKind::Airflow => " (--airflow-url, --airflow-dags-folder)",
                SchedulerKind::DolphinScheduler => " (--dolphinscheduler-url, --dolphinscheduler-token)",
            };
            Error::Unsupported(format!("the {} scheduler is not configured on this gateway{flags}", kind.name()))
        })
    }

    /// The plug-in of `kind`, checked to schedule `f`.
    pub(crate) fn plugin_for(&self, kind: SchedulerKind, f: Freshness) -> Result<Arc<dyn Plugin>, Error> {
        let plugin = self.plugin(kind)?;
        plugin.check(f).map_err(plugin_error)?;
        Ok(plugin)
    }

    /// This catalog's identity (`dyngate.identity`), read once.
    pub(crate) async fn catalog_id(&self) -> Result<&str, Error> {
        self.catalog_id.get(&self.pool).await
    }

    /// What DESCRIBE shows of a table's schedule.
    pub(crate) fn schedule_summary(&self, dt: &DtRow) -> Option<String> {
        let (kind, handle) = schedule_of(dt).filter(|(_, h)| !h.is_none())?;
        Some(match self.plugin(kind) {
            Ok(plugin) => plugin.summary(&handle),
            Err(_) => format!("{} (not configured on this gateway): {}", kind.name(), handle.0),
        })
    }

    /// Queues the removal of a schedule the catalog no longer needs, in the operation's
    /// transaction; [`Manager::remove_queued`] does it after the commit.
    pub(crate) async fn queue_removal(
        &self,
        tx: &impl GenericClient,
        kind: SchedulerKind,
        handle: &Handle,
        table: &QualifiedName,
        reason: &str,
    ) -> Result<Option<i64>, Error> {
        if handle.is_none() {
            return Ok(None);
        }
        let id: i64 = tx
            .query_one(
                "INSERT INTO dyngate.scheduler_cleanup (scheduler, handle, table_name, reason) VALUES ($1, $2::text::jsonb, $3, $4) RETURNING id",
                &[&kind.name(), &handle.0.to_string(), &table.to_string(), &reason],
            )
            .await?
            .get(0);
        Ok(Some(id))
    }

    /// Removes a queued schedule now; a failure is logged and left to the reconciliation loop.
    pub(crate) async fn remove_queued(&self, queued: Option<i64>, kind: SchedulerKind, handle: &Handle, table: &QualifiedName) {
        let Some(id) = queued else { return };
        let removed = match self.plugin(kind) {
            Ok(plugin) => plugin.unregister(handle).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let result = match &removed {
            Ok(()) => self.cleanup_done(id).await,
            Err(e) => {
                tracing::warn!(table = %table, scheduler = kind.name(), error = %e, "removing a schedule failed; reconciliation retries it");
                self.cleanup_failed(id, e).await
            }
        };
        if let Err(e) = result {
            tracing::warn!(table = %table, error = %e, "recording a schedule removal");
        }
    }

    pub(crate) async fn cleanup_done(&self, id: i64) -> Result<(), Error> {
        let client = self.pool.get().await?;
        client
            .execute("DELETE FROM dyngate.scheduler_cleanup WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    /// Records a failed removal and when to try again: 5 s after the first failure, doubling up
    /// to 10 minutes.
    pub(crate) async fn cleanup_failed(&self, id: i64, error: &str) -> Result<(), Error> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE dyngate.scheduler_cleanup
                    SET attempts = attempts + 1, last_error = $2,
                        next_attempt_at = now() + least(interval '10 minutes', interval '5 seconds' * power(2, least(attempts, 10)))
                  WHERE id = $1",
                &[&id, &error],
            )
            .await?;
        Ok(())
    }
}
