//! Reconciliation of the catalog with the external workflow schedulers, run periodically
//! (`--scheduler-reconcile-interval`) by every gateway, and once at start-up. One round:
//!
//! 1. **Queued removals** (`dyngate.scheduler_cleanup`): schedules of dropped or moved tables whose
//!    removal failed at the time are removed again, with backoff, until the scheduler confirms.
//! 2. **Drift**: for each FULL table of an external scheduler, the plug-in makes the scheduler hold
//!    what the catalog says ([`Plugin::reconcile`]): a schedule deleted behind dyngate's back is
//!    created again, a paused or changed one is put right.
//! 3. **Strays**: every schedule the scheduler holds for this catalog (marked with its identity)
//!    that no catalog row knows is removed: a schedule whose table's DROP committed while its
//!    queue entry did not, or one left by a crash between a registration and its undo.
//!
//! Concurrency (several gateways on one catalog, statements running meanwhile): step 2 works on a
//! table only under its schedule lock, taken with a try-lock (a table being altered is skipped
//! this round); step 3 runs only under the exclusive registry lock, which every statement that
//! registers a schedule holds shared until its commit, so a schedule whose catalog row is not yet
//! committed is never taken for a stray. See [`super::external`].

use std::collections::HashSet;
use std::sync::Arc;

use crate::catalog;
use crate::core::{Error, SchedulerKind, Status};
use crate::manager::Manager;
use crate::manager::external::{self, SCHEDULE_LOCK_SPACE, Scheduled, schedule_lock_key};
use crate::scheduler::{Plugin, PluginError, Repair};

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// Queued removals done.
    pub removed: Vec<String>,
    /// Schedules corrected or created again.
    pub repaired: Vec<String>,
    /// Stray schedules removed.
    pub strays: Vec<String>,
    /// What failed (left for the next round).
    pub errors: Vec<String>,
}

impl Report {
    pub fn is_quiet(&self) -> bool {
        self.removed.is_empty() && self.repaired.is_empty() && self.strays.is_empty() && self.errors.is_empty()
    }
}

impl Manager {
    /// Runs a round at once and then every `interval`, until `stop` changes.
    pub async fn run_reconcile_loop(self: Arc<Self>, interval: std::time::Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut wait = std::time::Duration::ZERO;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
            wait = interval;
            match self.reconcile().await {
                Ok(report) if report.errors.is_empty() => {}
                Ok(report) => tracing::warn!(errors = ?report.errors, "reconciling with the schedulers; retried next round"),
                Err(e) => tracing::warn!(error = %e, "reconciling with the schedulers; retried next round"),
            }
        }
    }

    /// One reconciliation round (see the module's doc). Errors of a scheduler are collected in the
    /// report; the round goes on with the next one.
    pub async fn reconcile(&self) -> Result<Report, Error> {
        let mut report = Report::default();
        self.retry_removals(&mut report).await?;
        let externals: Vec<Arc<dyn Plugin>> = self
            .plugins
            .iter()
            .filter(|p| p.kind() != SchedulerKind::Embedded)
            .cloned()
            .collect();
        for plugin in externals {
            if let Err(e) = self.repair_schedules(&plugin, &mut report).await {
                report.errors.push(e.to_string());
                continue;
            }
            if let Err(e) = self.remove_strays(&plugin, &mut report).await {
                report.errors.push(e.to_string());
            }
        }
        Ok(report)
    }

    /// Step 1: queued removals that are due.
    async fn retry_removals(&self, report: &mut Report) -> Result<(), Error> {
        let due = {
            let client = self.pool.get().await?;
            client
                .query(
                    "SELECT id, scheduler, handle::text, table_name FROM dyngate.scheduler_cleanup
                      WHERE next_attempt_at <= now() ORDER BY id LIMIT 100",
                    &[],
                )
                .await?
        };
        for row in due {
            let (id, scheduler, handle, table): (i64, String, String, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
            let handle = serde_json::from_str(&handle).map(crate::scheduler::Handle);
            let outcome = match (SchedulerKind::parse(&scheduler).map(|k| self.plugin(k)), handle) {
                (Some(Ok(plugin)), Ok(handle)) => plugin.unregister(&handle).await.map_err(|e| e.to_string()),
                (Some(Err(e)), _) => Err(e.to_string()),
                (None, _) => Err(format!("unknown scheduler {scheduler:?}")),
                (_, Err(e)) => Err(format!("unreadable handle: {e}")),
            };
            match outcome {
                Ok(()) => {
                    self.cleanup_done(id).await?;
                    tracing::info!(
                        table,
                        scheduler,
                        "removed the schedule of a table the catalog no longer schedules there"
                    );
                    report.removed.push(format!("{scheduler}: {table}"));
                }
                Err(e) => {
                    self.cleanup_failed(id, &e).await?;
                    report.errors.push(format!("removing the {scheduler} schedule of {table}: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Step 2: each table the plug-in schedules, checked and put right.
    async fn repair_schedules(&self, plugin: &Arc<dyn Plugin>, report: &mut Report) -> Result<(), Error> {
        let kind = plugin.kind();
        let ids: Vec<i64> = {
            let client = self.pool.get().await?;
            client
                .query(
                    "SELECT id FROM dyngate.dynamic_table WHERE scheduler = $1 ORDER BY id",
                    &[&kind.name()],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect()
        };
        if ids.is_empty() {
            return Ok(());
        }
        let catalog_id = self.catalog_id().await?;
        for id in ids {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let locked: bool = tx
                .query_one(
                    "SELECT pg_try_advisory_xact_lock($1, $2)",
                    &[&SCHEDULE_LOCK_SPACE, &schedule_lock_key(id)],
                )
                .await?
                .get(0);
            if !locked {
                continue; // being altered right now: next round
            }
            let Some(dt) = catalog::load_by_id(&tx, id).await? else { continue };
            let Some((k, handle)) = external::schedule_of(&dt) else { continue };
            if k != kind {
                continue;
            }
            let start = external::now_iso(&tx).await?;
            let scheduled = Scheduled {
                catalog: catalog_id,
                database: &self.database,
                dt: &dt,
                freshness: dt.freshness,
                start: &start,
            };
            let target = scheduled.target();
            let active = dt.status == Status::Activated;
            let outcome = if handle.is_none() {
                plugin.register(&target, active).await.map(Repair::Recreated)
            } else {
                plugin.reconcile(&handle, &target, active).await
            };
            match outcome {
                Ok(Repair::InPlace(fixes)) => {
                    for fix in fixes {
                        tracing::warn!(table = %dt.name, scheduler = kind.name(), fix, "schedule drifted from the catalog; put right");
                        report.repaired.push(format!("{}: {fix}", dt.name));
                    }
                }
                Ok(Repair::Updated { handle: new, fixes }) => {
                    catalog::set_scheduler(&tx, id, Some(kind), external::handle_json(&new).as_deref()).await?;
                    for fix in fixes {
                        tracing::warn!(table = %dt.name, scheduler = kind.name(), fix, "schedule drifted from the catalog; put right");
                        report.repaired.push(format!("{}: {fix}", dt.name));
                    }
                }
                Ok(Repair::Recreated(new)) => {
                    let json = external::handle_json(&new);
                    if let Err(e) = catalog::set_scheduler(&tx, id, Some(kind), json.as_deref()).await {
                        plugin.unregister(&new).await.ok();
                        return Err(e.into());
                    }
                    tracing::warn!(table = %dt.name, scheduler = kind.name(), "schedule was missing; created again");
                    report
                        .repaired
                        .push(format!("{}: schedule created again ({})", dt.name, plugin.summary(&new)));
                }
                // The scheduler is down or refusing: the other tables would fail the same way.
                Err(PluginError::Failed(e)) => return Err(Error::Scheduler(e)),
                Err(PluginError::Unschedulable(e) | PluginError::Conflict(e)) => report.errors.push(format!("{}: {e}", dt.name)),
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Step 3: this catalog's schedules that no catalog row knows.
    async fn remove_strays(&self, plugin: &Arc<dyn Plugin>, report: &mut Report) -> Result<(), Error> {
        let kind = plugin.kind();
        let catalog_id = self.catalog_id().await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1, 0)", &[&SCHEDULE_LOCK_SPACE])
            .await?
            .get(0);
        if !locked {
            return Ok(()); // a schedule is being registered: next round
        }
        let listed = plugin.list(catalog_id).await.map_err(external::plugin_error)?;
        if listed.is_empty() {
            return Ok(());
        }
        let known: HashSet<String> = tx
            .query(
                "SELECT scheduler_handle::text FROM dyngate.dynamic_table WHERE scheduler = $1 AND scheduler_handle IS NOT NULL
                 UNION ALL
                 SELECT handle::text FROM dyngate.scheduler_cleanup WHERE scheduler = $1",
                &[&kind.name()],
            )
            .await?
            .iter()
            .filter_map(|r| serde_json::from_str(r.get::<_, &str>(0)).ok())
            .map(|h| plugin.key(&crate::scheduler::Handle(h)))
            .collect();
        for handle in listed {
            let key = plugin.key(&handle);
            if key.is_empty() || known.contains(&key) {
                continue;
            }
            match plugin.unregister(&handle).await {
                Ok(()) => {
                    tracing::warn!(
                        scheduler = kind.name(),
                        schedule = key,
                        "removed a stray schedule no dynamic table owns"
                    );
                    report.strays.push(format!("{}: {}", kind.name(), plugin.summary(&handle)));
                }
                Err(e) => report.errors.push(format!("removing stray {key}: {e}")),
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
